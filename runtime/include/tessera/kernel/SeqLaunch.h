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

/// The grid of a `_seq` attention kernel of `blockQ` rows a block over
/// `slots` launch slots: dense queries, (ceil(Nq / blockQ), slots,
/// sequences); packed ones, (floor(T / blockQ) + sequences, slots, 1), the
/// blocks seqBlock spreads over the sequences.
inline SeqGrid seqAttentionGrid(const tessera_attention_desc &d,
                                int64_t numSeqs, int64_t blockQ,
                                int64_t slots) {
  if (d.cu_seqlens_q)
    return {d.q.seq / blockQ + numSeqs, slots, 1};
  return {(d.q.seq + blockQ - 1) / blockQ, slots, numSeqs};
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
