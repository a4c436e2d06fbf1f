//===- Backward.h - the attention backward on the CPU -----------*- C++ -*-===//
//
// dQ, dK and dV of one layer's block-sparse attention, FlashAttention-2
// style: the probabilities are recomputed from Q, K and the forward's LSE,
// never stored. Two passes, so that no two threads add into the same rows:
//   1. key-block major (dK, dV): a task owns the key block kb of one batch
//      element and kv head; it visits, for every computed head of that kv
//      head's group, the query blocks that see kb (the transposed schedule),
//      and sums their dS^T Q and P^T dO;
//   2. query-block major (dQ): a task owns a query block of one head and
//      walks the forward's runs, summing dS K.
// Per tile, with s the softmax scale and D_i = sum_x dO[i][x] * O[i][x]:
//   P = exp(s * Q K^T - lse) on the allowed pairs, 0 elsewhere,
//   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D),
//   dK += s * dS^T Q,  dQ += s * dS K.
// A masked pair contributes nothing even where a value it would multiply is
// a NaN or an infinity (masked entries are skipped, not multiplied by 0),
// as in the forward. fp32 per tile, double across tiles. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_BACKWARD_H
#define TESSERA_CPU_BACKWARD_H

#include "tessera/cpu/Executor.h"

namespace tessera::cpu {

struct BackwardArgs {
  Tensor q, k, v; ///< the forward's inputs (read only)
  Tensor o;       ///< the forward's output (read only)
  Tensor dO;      ///< the gradient of the loss by o (read only)
  /// The forward's [batch, heads, Nq] fp32 natural-log LSE (required: P is
  /// recomputed from it). Rows with LSE = -inf saw no key: zero gradients.
  const float *lse = nullptr;
  /// Optional [batch, heads, Nq] fp32: the gradient of the loss by the
  /// forward's LSE (where the loss reads it, e.g. a log-sum-exp merge):
  /// it adds dLse_i * P to dS (D_i becomes rowsum(dO * O) - dLse_i).
  const float *dLse = nullptr;
  /// Written in full: dq like q (skipped heads and rows without keys get
  /// zeros), dk and dv like k and v (the sums over the query heads of each
  /// kv head; keys no row sees get zeros).
  Tensor dq, dk, dv;
  /// q, o, dO and dq hold the layer's heads [headStart, headStart +
  /// q.heads), k, v, dk and dv the kv heads those read, from headStart / G
  /// on (G = the layer's heads / numKvHeads); lse and dLse are then
  /// [batch, q.heads, Nq]. dk and dv sum over the range's query heads only.
  int64_t headStart = 0;
  int64_t numKvHeads = 0; ///< the layer's kv heads; 0: k.heads
  /// Per-token head routing, as the forward's LayerArgs::headActive:
  /// [batch, q.seq, q.heads] bytes, nonzero = active. Inactive pairs get
  /// dq = 0 and add nothing to dk and dv, at no cost: each query block's
  /// tiles compute its active rows only. Null: every pair active.
  const uint8_t *headActive = nullptr;
  float scale = 0; ///< 0: 1 / sqrt(head_dim), as in the forward
  int64_t blockQ = 64, blockK = 64;
  int numThreads = 0; ///< 0: all hardware threads
  ThreadPool *pool = nullptr; ///< the context's threads; null: per call
};

/// Tiles the two passes visited (each counted once per pass).
struct BackwardStats {
  int64_t keyMajorTiles = 0;   ///< pass 1: (head, query block, key block)
  int64_t queryMajorTiles = 0; ///< pass 2
};

/// Computes dq, dk and dv for the layer described by `table`. Returns "" on
/// success, else a message naming the problem (nothing is written then).
std::string runLayerBackward(const kernel::LayerTable &table,
                             const BackwardArgs &args,
                             BackwardStats *stats = nullptr);

} // namespace tessera::cpu

#endif // TESSERA_CPU_BACKWARD_H
