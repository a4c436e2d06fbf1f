//===- Permuted.h - a head group run in a permuted token order --*- C++ -*-===//
//
// The CPU executor for a head group with a layout (`#attn.period_transpose`,
// docs/patterns.md "Layouts"): Q, K and V rows are gathered into the permuted
// order, the permuted order's tiles are walked, and O and LSE are scattered
// back to the original rows. The pattern is evaluated on the original
// positions, so the result is the group's unpermuted attention. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_PERMUTED_H
#define TESSERA_CPU_PERMUTED_H

#include "tessera/cpu/Executor.h"

#include <cstdint>
#include <string>

namespace tessera::cpu {

/// Computes the heads of group `group` of `table` (the layer's launch
/// groups, as `--attn-schedule` numbers them) in the period transpose of
/// `period`: per sequence and head, the query rows and the key and value
/// rows are gathered into their permuted orders (each over its own length),
/// every tile of `args.blockQ` x `args.blockK` permuted slots is classified
/// EMPTY, PARTIAL or FULL by the group's predicate on the ORIGINAL
/// positions, the visited tiles are computed (fp32, online softmax, the
/// predicate applied on partial tiles only), and O and LSE are written to
/// the original rows. Heads of other groups are not touched.
///
/// The tile classes are found by evaluating every pair once per call
/// (O(Nq * Nk)): the closed-form runs of a permuted order are not derived
/// yet. Dense calls only (no packed, paged or positioned sequences,
/// headStart 0), one thread. Returns "" on success, else a message naming
/// the problem; nothing is written then.
std::string runPermutedGroup(const kernel::LayerTable &table, int64_t group,
                             int64_t period, const LayerArgs &args,
                             RunStats *stats = nullptr);

} // namespace tessera::cpu

#endif // TESSERA_CPU_PERMUTED_H
