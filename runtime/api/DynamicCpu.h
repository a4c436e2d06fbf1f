//===- DynamicCpu.h - dynamic head groups of bundles on the CPU -*- C++ -*-===//

#ifndef TESSERA_RUNTIME_DYNAMICCPU_H
#define TESSERA_RUNTIME_DYNAMICCPU_H

#include "Manifest.h"

#include "tessera/cpu/Backward.h"
#include "tessera/cpu/Dynamic.h"
#include "tessera/cpu/Executor.h"

#include <string>

namespace tessera::runtime {

/// Attention of the heads of dynamic group `g` (validated shapes in `args`,
/// every batch): the index built per (batch, head) on the CPU, then
/// attention over it. `centroids`: fp32 [numHeads][centroidStride][headDim]
/// (head h's first `clusters` rows) for routing with kmeans_iterations = 0,
/// else unused. Returns "" or an error.
/// `blockIndex`: the caller's lists for block_index groups (checked), else
/// null.
std::string runDynamicGroupCpu(const DynamicGroupDesc &g,
                               const cpu::LayerArgs &args, int64_t numHeads,
                               const float *centroids, int64_t centroidStride,
                               const cpu::BlockIndexCsr *blockIndex = nullptr);

/// The schedule of layer `l` for batch entry b of q and k (the whole layer's
/// heads and kv heads) with each dynamic head's index built from its rows
/// and added as a group of its own (the program the forward ran for it):
/// the table the backward runs for a layer with dynamic heads. Routing
/// groups are left out (their heads get dq = 0 and add nothing to dk, dv
/// there): routingBackwardCpu adds them ("" or an error).
/// `blockIndex`: the caller's lists of block_index heads (checked; a
/// whole-layer call), else null.
std::string
layerTableWithDynamicHeads(const LayerDesc &l, const cpu::Tensor &q,
                           const cpu::Tensor &k, int64_t b, float scale,
                           kernel::OwnedLayerTable &out,
                           const cpu::BlockIndexCsr *blockIndex = nullptr);

/// The backward of routing group `g`'s heads for batch entry b of a dense
/// call (`a` holds every head): each head's clusters rebuilt from its rows
/// as the forward built them (the selection carries no gradient), its pairs
/// those the forward attended, their gradients in double: dq of the heads
/// written, dk and dv added to what the static pass stored for their kv
/// heads (one rounding more where a 16-bit kv head is shared with other
/// heads). One thread; "" or an error.
std::string routingBackwardCpu(const DynamicGroupDesc &g,
                               const cpu::BackwardArgs &a, int64_t b,
                               int64_t numHeads, const float *centroids,
                               int64_t centroidStride);

/// The host memory (bytes) that dynamic group `g` needs per (batch, head)
/// on the CPU at Nq, Nk (docs/runtime.md gives the formula), in double so
/// that it never overflows.
double dynamicGroupCpuBytes(const kernel::DynArgs &a, int64_t nq, int64_t nk,
                            int64_t headDim);

/// The most a dynamic group may need (bytes): TESSERA_CPU_INDEX_MEMORY when
/// set to a positive number, else half the machine's physical memory.
double dynamicCpuMemoryLimit();

/// The most CUDA workspace (bytes) a dynamic group's launches may hold at
/// once (the budget of kernel::dynChunkPlan, docs/bundles.md):
/// TESSERA_DYNAMIC_WORKSPACE when set to a positive number of bytes, else
/// kDynamicWorkspaceDefault.
constexpr int64_t kDynamicWorkspaceDefault = int64_t(2) << 30;
int64_t dynamicWorkspaceBudget();

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_DYNAMICCPU_H
