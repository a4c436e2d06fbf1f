//===- Specialize.h - a built dynamic index as a static pattern -*- C++ -*-===//
//
// Once a dynamic pattern's index is built for one head and one input, the
// pairs it allows are a static pattern of the catalogue: a vertical-slash
// index is a union of key columns (a vertical stripe) and diagonals (a
// multi-diagonal with listed offsets), a block top-k index a block-sparse
// pattern. Specialised this way, the index runs through the same lowering,
// run enumeration and executors as every static pattern: full and partial
// tiles, O(runs) walks, memory O(index). MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SCHEDULE_SPECIALIZE_H
#define TESSERA_SCHEDULE_SPECIALIZE_H

#include "tessera/Semantics/Pattern.h"

#include <cstdint>
#include <vector>

namespace tessera::schedule {

/// Columns (ascending key indices) and diagonals (ascending offsets d <= 0)
/// as union<vertical_stripe, multi_diagonal>; an empty side is left out, an
/// empty index is skip.
semantics::Pattern verticalSlashPattern(const std::vector<int64_t> &columns,
                                        const std::vector<int64_t> &diagonals);

/// Block top-k's index as block_sparse<block_q = block, block_k = block>:
/// keyBlocks[i] (ascending) are the key blocks of position block
/// firstBlock + i. Exact for every Nq and Nk: both take query blocks of
/// positions p = q + Nk - Nq (firstBlock < 0 when Nq > Nk: the blocks of
/// rows before the first key, which the internal pattern holds as listed
/// blocks like any other).
semantics::Pattern
blockTopkPattern(int64_t block, int64_t firstBlock,
                 const std::vector<std::vector<int64_t>> &keyBlocks);

} // namespace tessera::schedule

#endif // TESSERA_SCHEDULE_SPECIALIZE_H
