//===- DynamicCpu.h - dynamic head groups of bundles on the CPU -*- C++ -*-===//

#ifndef TESSERA_RUNTIME_DYNAMICCPU_H
#define TESSERA_RUNTIME_DYNAMICCPU_H

#include "Manifest.h"

#include "tessera/cpu/Executor.h"

#include <string>

namespace tessera::runtime {

/// Attention of the heads of dynamic group `g` (validated shapes in `args`,
/// every batch): the index built per (batch, head) on the CPU, then
/// attention over it. `centroids`: fp32 [numHeads][centroidStride][headDim]
/// (head h's first `clusters` rows) for routing with kmeans_iterations = 0,
/// else unused. Returns "" or an error.
std::string runDynamicGroupCpu(const DynamicGroupDesc &g,
                               const cpu::LayerArgs &args, int64_t numHeads,
                               const float *centroids, int64_t centroidStride);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_DYNAMICCPU_H
