//===- RoutedWalk.h - head routing's tables for the CUDA kernel -*- C++ -*-===//
//
// Per-token head routing (tessera.h's head_active; docs/runtime.md,
// "Per-token head routing") on CUDA runs the permuted kernel
// (kernel/Permuted.cuh) with one table per (batch entry, launch slot): the
// slot's active query rows in row order, packed 64 to a query tile, each
// tile with the union of its rows' key tiles (the schedule's runs of each
// row, ProgramRuns at 64 x 64), a tile FULL where every row of it sees
// every key there, else masked by 64 x 64 bits evaluated at the rows' own
// positions (kernel::allowedPair); then the slot's inactive rows, which
// the tiles after its active ones zero. Built on the host, from the
// caller's head_active (host memory). MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_ROUTEDWALK_H
#define TESSERA_CPU_ROUTEDWALK_H

#include "tessera/kernel/Program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::cpu {

/// The device tables of a head-routed dense call, laid out as
/// kernel::PermArgs reads them (heads, tileStart, tileKey, tileMask, masks,
/// rowOf, keyOf, routed), launched over (gridX, launch slots, batch).
struct RoutedWalk {
  std::vector<int64_t> heads;  ///< launch slot y -> head (computedHead)
  std::vector<int64_t> tables; ///< per (b, y): row0, active, tile0, inactive
  std::vector<int64_t> rowOf;  ///< each table's active then inactive rows
  std::vector<int64_t> keyOf;  ///< the identity over [0, nk)
  std::vector<int> tileStart{0}, tileKey, tileMask;
  std::vector<uint64_t> masks; ///< 64 words per partial tile
  int64_t gridX = 0; ///< the most query tiles, then zero tiles, of a table
  int64_t fullTiles = 0, partialTiles = 0; ///< visited, for tests
};

/// Builds `w` for a dense call of the layer `table` at Nq = nq, Nk = nk over
/// `batch` entries: every computed head of the table is a launch slot, and
/// active[(b * nq + row) * table.numHeads + head] (nonzero: active) says
/// which rows it computes. The static heads' schedule programs only
/// (dynamic heads are the caller's to refuse). Returns "" or a message
/// naming the problem (lengths past 2^31 query or key tiles).
std::string routedWalk(const kernel::LayerTable &table, int64_t batch,
                       int64_t nq, int64_t nk, const uint8_t *active,
                       RoutedWalk &w);

} // namespace tessera::cpu

#endif // TESSERA_CPU_ROUTEDWALK_H
