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

#include <functional>
#include <string>

namespace tessera::runtime {

/// "" where a call of `desc` on layer `l` can run on the CUDA backward
/// kernels, else why not, in words (paged and positioned calls; packed,
/// length and head-range calls of layers with dynamic heads; bundles
/// without the kernels).
std::string cudaBackwardRefusal(const tessera_attention_desc &d,
                                const LayerDesc &l);

/// Bytes of the backward's f32 workspace: [batch, heads, Nq] delta (the
/// LSE's layout, heads the call's: [heads, T] packed), and for
/// layers with dynamic heads after it (16-byte aligned) their dK / dV sums,
/// [batch, kv heads, Nk, 2 head_dim], then (16-byte aligned) an int per
/// block of the largest chunk grid of a dynamic group, where its unguarded
/// dK / dV pass stopped (DynamicBackward.cuh).
int64_t backwardWorkspaceBytes(const tessera_attention_desc &d,
                               const LayerDesc &l);

/// The stops of the dynamic groups' dK / dV passes in the workspace at
/// `delta` (DynArgs::bwdStop); null for a layer without dynamic heads.
int *backwardStops(const tessera_attention_desc &d, const LayerDesc &l,
                   float *delta);

/// The kernels' arguments for a call (the workspace at `delta`: the delta
/// rows, then the dynamic heads' sums where the layer has some); for a
/// packed, length or head-range call also its sequence fields (the device
/// arrays, the sequences, the head range), which the `_seq` kernels read.
kernel::BwdParams makeBwdParams(const tessera_attention_desc &d,
                                const LayerDesc &l, const tessera_tensor &dO,
                                const float *dLse, const tessera_tensor &dq,
                                const tessera_tensor &dk,
                                const tessera_tensor &dv, float *delta);

/// The grids (BackwardEmit.cpp's kernels): the preprocess and the zero fill
/// a thread a row, 128 rows a block; the key-major pass a block per 64 keys
/// of a kv head; the query-major pass a block per 64 rows of a computed
/// head. Packed rows or keys: floor(T / 64) + num_seqs blocks in one grid
/// entry (bwdSeqBlock); a per-sequence call's preprocess covers max(Nq, Nk)
/// rows of max(q.batch, k.batch) entries (it zeroes what no sequence owns).
struct BackwardGrids {
  kernel::SeqGrid preprocess, keyMajor, queryMajor, zeroSkipped;
  /// The dynamic heads' sums zeroed and added: a thread a key of a kv head.
  kernel::SeqGrid dynamicSums;
};

/// Launches in place of a dynamic group's attention over its index (Api.cpp's
/// launchDynamicGroup): the chunk's arguments and batch entries; returns a
/// driver status (-1: a grid past CUDA's limits).
using DynamicAttend = std::function<int(kernel::DynArgs &, int64_t batches)>;
BackwardGrids backwardGrids(const tessera_attention_desc &d,
                            const LayerDesc &l);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_BACKWARDLAUNCH_H
