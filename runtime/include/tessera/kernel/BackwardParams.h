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
  const float *lse; ///< [batch, heads, Nq] natural-log LSE of the forward
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
};

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_BACKWARDPARAMS_H
