//===- BackwardLaunch.h - the CUDA backward's plan -------------*- C++ -*-===//
//
// What tessera_attention_backward needs on a CUDA context (docs/backward.md,
// "On CUDA"): whether a call can take the bundle's backward kernels, their
// arguments, grids and the f32 workspace of D = rowsum(dO * O). The
// launches themselves are Api.cpp's (its launchGrid and workspace rules).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_RUNTIME_BACKWARDLAUNCH_H
#define TESSERA_RUNTIME_BACKWARDLAUNCH_H

#include "Manifest.h"

#include "tessera/kernel/BackwardParams.h"
#include "tessera/kernel/SeqLaunch.h"
#include "tessera/tessera.h"

#include <string>

namespace tessera::runtime {

/// "" where a call of `desc` on layer `l` can run on the CUDA backward
/// kernels, else why not, in words (packed, paged, positioned, head-range
/// and dynamic-head calls, bundles without the kernels).
std::string cudaBackwardRefusal(const tessera_attention_desc &d,
                                const LayerDesc &l);

/// Bytes of the f32 [batch, heads, Nq] delta workspace.
int64_t backwardWorkspaceBytes(const tessera_attention_desc &d,
                               const LayerDesc &l);

/// The kernels' arguments for a dense call (the delta workspace at
/// `delta`).
kernel::BwdParams makeBwdParams(const tessera_attention_desc &d,
                                const LayerDesc &l, const tessera_tensor &dO,
                                const float *dLse, const tessera_tensor &dq,
                                const tessera_tensor &dk,
                                const tessera_tensor &dv, float *delta);

/// The grids (BackwardEmit.cpp's kernels): the preprocess and the zero fill
/// a thread a row, 128 rows a block; the key-major pass a block per 64 keys
/// of a kv head; the query-major pass a block per 64 rows of a computed
/// head.
struct BackwardGrids {
  kernel::SeqGrid preprocess, keyMajor, queryMajor, zeroSkipped;
};
BackwardGrids backwardGrids(const tessera_attention_desc &d,
                            const LayerDesc &l);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_BACKWARDLAUNCH_H
