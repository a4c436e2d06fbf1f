//===- CostModel.h - predicted time of a layer's schedule -------*- C++ -*-===//
//
// A hardware target (docs/cost-model.md) and the time a layer's block
// schedule takes on it. The schedule is the one the kernels and the CPU
// executor run: for every computed head and query block, the full and
// partial key tiles of the head group's runs. Each (batch, head, query
// block) is one work item costing
//
//   item = row_block_s + full * full_tile_s + partial * partial_tile_s
//
// (scaled to the layer's head_dim D: by f + (1 - f) * D / target.head_dim,
// f = tile_fixed_share, the part of a tile's time that does not grow with
// D: softmax, masks, bookkeeping); items are dispatched in launch
// order (query block fastest, then head, then batch) to `units *
// slots_per_unit` identical slots, each taking the next item when it frees
// up (list scheduling): that gives wave quantisation over SMs and the
// imbalance between heads of different density. The layer adds launch_s and
// group_s per head group. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_COST_COSTMODEL_H
#define TESSERA_COST_COSTMODEL_H

#include "tessera/Schedule/Lower.h"
#include "tessera/kernel/Program.h"
#include "tessera/kernel/DynamicArgs.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::cost {

struct Target {
  std::string name;
  std::string kind;   ///< "cpu" or "gpu"
  std::string source; ///< where the numbers come from (measured / published)
  int64_t units = 1;  ///< SMs, or CPU threads
  int64_t slotsPerUnit = 1; ///< resident thread blocks per SM (occupancy)
  int64_t blockQ = 64, blockK = 64;
  int64_t headDim = 128;   ///< the head_dim the tile times are for
  double tileFixedShare = 0; ///< share of a tile's time independent of D
  double fullTileS = 0;    ///< one full tile on one slot
  double partialTileS = 0; ///< one partial tile (mask work) on one slot
  double rowBlockS = 0;    ///< per work item: Q load, O and LSE store
  double launchS = 0;      ///< per layer launch
  double groupS = 0;       ///< per head group of a launch
  // Published figures the GPU tile times are derived from (0 when unused).
  double tensorFlops = 0;     ///< dense fp16/bf16 tensor rate, FLOP/s
  double memoryBandwidth = 0; ///< bytes/s
  double efficiency = 0;      ///< assumed share of the tensor rate reached
  /// One element of the dynamic patterns' index passes (a score read and
  /// updated, a sum, a comparison) on one slot; 0: derived from rowBlockS
  /// (a row block moves 2 x 64 x head_dim elements).
  double indexElementS = 0;
};

/// The built-in targets: "a100", "h100", "h200" (published specifications,
/// marked as such in `source` until measured on a GPU). Null if unknown.
const Target *builtinTarget(const std::string &name);

/// Reads a target file (JSON, docs/cost-model.md) or a built-in name.
/// False with `error` naming the file and the problem.
bool loadTarget(const std::string &nameOrPath, Target &out, std::string &error);

/// Checks that every number is finite and in range. "" or a message.
std::string validateTarget(const Target &t);

/// The target as JSON (the format loadTarget reads).
std::string targetToJson(const Target &t);

struct GroupCost {
  int64_t heads = 0;
  bool estimated = false;  ///< tiles estimated, not counted: a dynamic
                           ///< group (from its budgets), or a static one
                           ///< whose runs exceeded the walk's budget
  double indexS = 0;       ///< its index kernels' work (one slot's time)
  int64_t fullTiles = 0, partialTiles = 0; ///< over all its heads and batch
  double workS = 0; ///< the group's items summed (one slot's time)
};

struct LayerCost {
  double seconds = 0; ///< predicted time of the layer
  double workS = 0;   ///< all items summed
  int64_t items = 0;
  std::vector<GroupCost> groups; ///< in the order given (skipped: none)
};

/// Predicts one launch of a layer's head groups (Skip groups cost nothing
/// but their output fill, which is ignored) at Nq x Nk, `batch` sequences,
/// head_dim `headDim`, on `target`. False with `error` set for shapes out of
/// range or a pattern that cannot be lowered.
bool predictLayer(const Target &target,
                  const std::vector<schedule::HeadGroup> &groups,
                  int64_t numHeads, int64_t nq, int64_t nk, int64_t batch,
                  int64_t headDim, LayerCost &out, std::string &error);

/// The same layer with every head dense.
/// A dynamic head group: its leaf's family and parameters (DynArgs' fields)
/// and its pattern with the leaf read as dense (`with`) and as skip
/// (`without`), as semantics::splitDynamic gives them.
struct DynamicHeadGroup {
  kernel::DynArgs leaf{};
  semantics::Pattern with, without;
  std::vector<int64_t> heads;
};

/// predictLayer with dynamic groups too (after the static ones in `groups`
/// of the result). Their tiles are estimated from the budgets, not known
/// before the input (docs/cost-model.md, "Dynamic patterns"): vertical-slash
/// as its `slash` diagonals next to the query (a window, intersected with
/// `with`) plus `vertical` gathered columns per query block; block top-k as
/// top_k (else max_blocks, else every) key blocks per query block within
/// `with`; routing as balanced clusters; plus the static runs of `without`.
/// Their index kernels' work (score tiles at half a full tile, element
/// passes at indexElementS) runs on all slots before the attention.
bool predictLayer(const Target &target,
                  const std::vector<schedule::HeadGroup> &groups,
                  const std::vector<DynamicHeadGroup> &dynamicGroups,
                  int64_t numHeads, int64_t nq, int64_t nk, int64_t batch,
                  int64_t headDim, LayerCost &out, std::string &error);

bool predictDense(const Target &target, int64_t numHeads, int64_t nq,
                  int64_t nk, int64_t batch, int64_t headDim, LayerCost &out,
                  std::string &error);

} // namespace tessera::cost

#endif // TESSERA_COST_COSTMODEL_H
