//===- SeqLaunch.h - per-sequence calls' kernel arguments -------*- C++ -*-===//
//
// How a per-sequence call of tessera_attention_run (packed, paged, length,
// position or head-range: docs/runtime.md, "Calls") reaches the `_seq`
// kernels (FlashForward.cuh's pipeForward with SEQ, fillSkippedSeq): the
// sequence fields of AttnParams and the launch grids. Host code, shared by
// the runtime (Api.cpp) and the emulator's tests, so that the tests run the
// runtime's own planning.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_SEQLAUNCH_H
#define TESSERA_KERNEL_SEQLAUNCH_H

#include "tessera/kernel/Program.h"
#include "tessera/tessera.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tessera {
namespace kernel {

/// A launch grid.
struct SeqGrid {
  int64_t x, y, z;
};

/// Sets p's sequence fields from a validated description of `numSeqs`
/// sequences (p's tensor fields already set: nq = q.seq, nk = k.seq).
inline void setSeqParams(AttnParams &p, const tessera_attention_desc &d,
                         int64_t numSeqs) {
  p.cuQ = d.cu_seqlens_q;
  p.cuK = d.cu_seqlens_k;
  p.lensK = d.seq_lens_k;
  p.pages = d.block_table;
  // int64_t and the kernels' i64 (long long) have one representation.
  static_assert(sizeof(int64_t) == sizeof(i64), "64-bit positions");
  p.qStart = reinterpret_cast<const i64 *>(d.q_start);
  p.kStart = reinterpret_cast<const i64 *>(d.k_start);
  p.pageStride =
      d.block_table_stride ? d.block_table_stride : d.max_pages_per_seq;
  p.maxPages = d.max_pages_per_seq;
  p.numPages = d.block_table ? d.k.batch : 0;
  p.pageSize = d.block_table ? static_cast<int>(d.k.seq) : 0;
  p.numSeqs = static_cast<int>(numSeqs);
  p.headStart = static_cast<int>(d.head_start);
  p.headCount = static_cast<int>(d.head_count);
}

/// The kernels' arguments for a validated call of a layer of `numHeads`
/// heads (`numKvHeads` kv heads) of `headDim`: the tensors, the scale, and
/// for a per-sequence call (numSeqs > 0) the sequence fields.
inline AttnParams makeAttnParams(const tessera_attention_desc &d,
                                 int64_t numHeads, int64_t numKvHeads,
                                 int64_t headDim, int64_t numSeqs) {
  bool vec = true;
  for (const tessera_tensor *t : {&d.q, &d.k, &d.v})
    vec = vec && reinterpret_cast<uintptr_t>(t->data) % 16 == 0 &&
          t->stride_batch % 8 == 0 && t->stride_seq % 8 == 0 &&
          t->stride_head % 8 == 0;
  AttnParams p{};
  if (numSeqs > 0)
    setSeqParams(p, d, numSeqs);
  p.q = static_cast<const u16 *>(d.q.data);
  p.k = static_cast<const u16 *>(d.k.data);
  p.v = static_cast<const u16 *>(d.v.data);
  p.o = static_cast<u16 *>(d.o.data);
  p.lse = d.lse;
  p.nq = d.q.seq;
  p.nk = d.k.seq;
  p.qStrideB = d.q.stride_batch, p.qStrideS = d.q.stride_seq,
  p.qStrideH = d.q.stride_head;
  p.kStrideB = d.k.stride_batch, p.kStrideS = d.k.stride_seq,
  p.kStrideH = d.k.stride_head;
  p.vStrideB = d.v.stride_batch, p.vStrideS = d.v.stride_seq,
  p.vStrideH = d.v.stride_head;
  p.oStrideB = d.o.stride_batch, p.oStrideS = d.o.stride_seq,
  p.oStrideH = d.o.stride_head;
  const float scale =
      d.scale > 0 ? d.scale : 1.0f / std::sqrt(float(headDim));
  p.scaleLog2 = scale * 1.4426950408889634f;
  p.numHeads = static_cast<int>(numHeads);
  p.numKvHeads = static_cast<int>(numKvHeads);
  p.vectorLoads = vec ? 1 : 0;
  return p;
}

/// The query blocks of a `_seq` attention kernel of `blockQ` rows a block
/// per launch slot and grid.z: dense queries ceil(Nq / blockQ) (grid.z the
/// sequences), packed ones floor(T / blockQ) + sequences (grid.z 1), the
/// blocks seqBlock spreads over the sequences.
inline int64_t seqQueryBlocks(const tessera_attention_desc &d, int64_t numSeqs,
                              int64_t blockQ) {
  return d.cu_seqlens_q ? d.q.seq / blockQ + numSeqs
                        : (d.q.seq + blockQ - 1) / blockQ;
}

/// Split-KV for decode (FlashForward.cuh's split fields): how many key
/// ranges each (sequence, head) is cut into, and their tiles.
struct SplitPlan {
  int64_t splits = 1, tiles = 0;
};

/// Blocks a split call aims for (twice an H100's 132 SMs, rounded).
constexpr int64_t kSplitTargetBlocks = 256;
/// The fewest key tiles a split walks (below that, the merge costs more
/// than the parallelism gives).
constexpr int64_t kSplitMinTiles = 4;
/// The most splits.
constexpr int64_t kSplitMax = 64;

/// The split of a call, from what the host knows without reading device
/// arrays: decode-like queries (at most 16 rows a sequence: Nq dense, T /
/// sequences packed) and a bound on each sequence's keys (Nk dense, Tk
/// packed, max_pages_per_seq * page_size paged); splits only where the
/// launch would have fewer than kSplitTargetBlocks blocks.
inline SplitPlan planSplitKv(const tessera_attention_desc &d, int64_t numSeqs,
                             int64_t blockQ, int64_t slots) {
  SplitPlan plan;
  const bool decode = d.cu_seqlens_q ? d.q.seq <= 16 * numSeqs : d.q.seq <= 16;
  if (!decode || numSeqs < 1 || slots < 1)
    return plan;
  const int64_t keys = d.block_table ? d.max_pages_per_seq * d.k.seq : d.k.seq;
  // The tiles a sequence's keys can meet (one more where k_start is not a
  // multiple of 64).
  const int64_t tiles = (keys + 63) / 64 + 1;
  const int64_t blocks = seqQueryBlocks(d, numSeqs, blockQ) * slots *
                         (d.cu_seqlens_q ? 1 : numSeqs);
  int64_t splits = std::min({(tiles + kSplitMinTiles - 1) / kSplitMinTiles,
                             (kSplitTargetBlocks + blocks - 1) / blocks,
                             kSplitMax});
  if (splits < 2)
    return plan;
  plan.tiles = (tiles + splits - 1) / splits;
  plan.splits = (tiles + plan.tiles - 1) / plan.tiles;
  return plan;
}

/// The rows of the split workspace: Nq per sequence dense, T packed.
inline int64_t splitRows(const tessera_attention_desc &d, int64_t numSeqs) {
  return d.cu_seqlens_q ? d.q.seq : numSeqs * d.q.seq;
}

/// The split workspace's bytes: partial O and LSE for every split, row and
/// tensor head.
inline int64_t splitWorkspaceBytes(const tessera_attention_desc &d,
                                   int64_t numSeqs, int64_t heads,
                                   int64_t headDim, const SplitPlan &plan) {
  return plan.splits * splitRows(d, numSeqs) * heads * (headDim + 1) * 4;
}

/// Sets p's split fields for `plan`, its workspace at `workspace` (of
/// splitWorkspaceBytes).
inline void setSplitParams(AttnParams &p, const tessera_attention_desc &d,
                           int64_t numSeqs, int64_t blockQ, int64_t heads,
                           int64_t headDim, const SplitPlan &plan,
                           void *workspace) {
  p.numSplits = static_cast<int>(plan.splits);
  p.splitTiles = static_cast<int>(plan.tiles);
  p.seqBlocks = static_cast<int>(seqQueryBlocks(d, numSeqs, blockQ));
  p.splitRows = splitRows(d, numSeqs);
  p.splitO = static_cast<float *>(workspace);
  p.splitLse = p.splitO + plan.splits * p.splitRows * heads * headDim;
}

/// The grid of a `_seq` attention kernel over `slots` launch slots, with
/// `splits` key ranges.
inline SeqGrid seqAttentionGrid(const tessera_attention_desc &d,
                                int64_t numSeqs, int64_t blockQ, int64_t slots,
                                int64_t splits = 1) {
  return {seqQueryBlocks(d, numSeqs, blockQ) * splits, slots,
          d.cu_seqlens_q ? 1 : numSeqs};
}

/// The grid of the merge kernel (128 threads a block) over a layer's
/// `computed` launch slots.
inline SeqGrid seqMergeGrid(const tessera_attention_desc &d, int64_t numSeqs,
                            int64_t computed) {
  return {(splitRows(d, numSeqs) * computed + 127) / 128, 1, 1};
}

/// The grid of a `_seq` fill kernel (128 rows a block) over `skipped`
/// heads.
inline SeqGrid seqFillGrid(const tessera_attention_desc &d, int64_t numSeqs,
                           int64_t skipped) {
  return {(d.q.seq + 127) / 128, skipped, d.cu_seqlens_q ? 1 : numSeqs};
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_SEQLAUNCH_H
