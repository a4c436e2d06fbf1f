//===- BackwardParams.h - the backward kernels' arguments ------*- C++ -*-===//
//
// The arguments of the backward kernels (FlashBackward.cuh), host and
// device: the runtime fills them (runtime/api/BackwardLaunch.cpp) and
// passes them by value; bundles paste this file after Program.h and before
// FlashBackward.cuh.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_BACKWARDPARAMS_H
#define TESSERA_KERNEL_BACKWARDPARAMS_H

#ifndef TESSERA_KERNEL_PROGRAM_H // pasted before it in bundles
#include "tessera/kernel/Program.h"
#endif

namespace tessera {
namespace kernel {

/// A [batch, seq, heads, D] tensor's strides in elements (D contiguous).
struct BwdStrides {
  i64 b, s, h;
};

/// The backward kernels' arguments, passed by value.
struct BwdParams {
  const u16 *q, *k, *v, *o, *dO; ///< the forward's tensors and dL/dO
  /// [batch, heads, Nq] natural-log LSE of the forward (packed queries:
  /// [heads, T]; heads: the call's)
  const float *lse;
  /// Optional [batch, heads, Nq]: dL/dLSE where the loss reads the LSE (a
  /// log-sum-exp merge); it adds dLse_i P to dS, i.e. D_i -= dLse_i.
  const float *dLse;
  float *delta; ///< [batch, heads, Nq] D_i, written by bwdPreprocess
  u16 *dq, *dk, *dv;
  i64 nq, nk;
  BwdStrides qs, ks, vs, os, dOs, dqs, dks, dvs;
  float scale;     ///< the softmax scale s
  float scaleLog2; ///< s log2(e)
  int numHeads, numKvHeads;
  int vectorLoads; ///< 1: every row start of q, k, v, dO is 16-byte aligned
  /// Layers with dynamic heads (DynamicBackward.cuh): f32 [batch, kv heads,
  /// Nk, 2 D], the dynamic heads' sums of dK (times s) and dV per key,
  /// added to the static pass's dk and dv at the end; else null.
  float *dynKV;
  /// Per-sequence calls (docs/backward.md, "On CUDA"), AttnParams' fields
  /// of the same names (null / 0: a dense call of every head): the call's
  /// device arrays cu_seqlens_q, cu_seqlens_k and seq_lens_k, which the
  /// kernels read and check (bwdSeq); its sequences; its heads
  /// [headStart, headStart + headCount) (q, o, dO, dq, the LSE and D hold
  /// those, k, v, dk and dv the kv heads they read).
  const int *cuQ, *cuK, *lensK;
  int numSeqs;
  int headStart, headCount;
};

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_BACKWARDPARAMS_H
