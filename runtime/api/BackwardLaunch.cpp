//===- BackwardLaunch.cpp - the CUDA backward's plan ----------------------===//

#include "BackwardLaunch.h"

#include <algorithm>
#include <cmath>

using namespace tessera;
using namespace tessera::runtime;

std::string
tessera::runtime::cudaBackwardRefusal(const tessera_attention_desc &d,
                                      const LayerDesc &l) {
  const std::string layer = "layer " + std::to_string(l.index);
  if (d.block_table || d.q_start || d.k_start)
    return "the backward takes no block_table, q_start or k_start yet";
  if (!l.dynamicGroups.empty() &&
      (d.cu_seqlens_q || d.cu_seqlens_k || d.seq_lens_k || d.head_count))
    return layer + " has dynamic heads: their backward takes dense calls "
                   "only for now (desc sets cu_seqlens_q, cu_seqlens_k, "
                   "seq_lens_k or head_count)";
  bool dynamicKernels = true;
  for (const DynamicGroupDesc &g : l.dynamicGroups)
    dynamicKernels = dynamicKernels && !g.backwardDq.empty();
  if (!l.backward.present() || !dynamicKernels)
    return layer + " has no CUDA backward kernels in its bundle (head_dim " +
           std::to_string(l.headDim) +
           ": they exist for 64, 96 and 128; or a bundle emitted before "
           "them: emit it again with attn-translate)";
  return "";
}

namespace {

/// The heads of the call's queries (a head range's, or the layer's).
int64_t callHeads(const tessera_attention_desc &d, const LayerDesc &l) {
  return d.head_count ? d.head_count : l.numHeads;
}

/// The sequences of a call (dense queries: their batch entries).
int64_t sequences(const tessera_attention_desc &d) {
  return d.cu_seqlens_q ? d.num_seqs : d.q.batch;
}

/// Whether the call is per-sequence (packed or length).
bool perSequence(const tessera_attention_desc &d) {
  return d.cu_seqlens_q || d.cu_seqlens_k || d.seq_lens_k;
}

/// Bytes of the delta rows (the LSE's layout), then of the dynamic heads'
/// sums (0: none).
int64_t deltaBytes(const tessera_attention_desc &d, const LayerDesc &l) {
  return int64_t(sizeof(float)) * d.q.batch * callHeads(d, l) * d.q.seq;
}
int64_t sumsBytes(const tessera_attention_desc &d, const LayerDesc &l) {
  return l.dynamicGroups.empty() ? 0
                                 : int64_t(sizeof(float)) * d.q.batch *
                                       l.numKvHeads * d.k.seq * 2 * l.headDim;
}
int64_t sumsOffset(const tessera_attention_desc &d, const LayerDesc &l) {
  return (deltaBytes(d, l) + 15) / 16 * 16;
}
/// Then the dynamic groups' stops (an int per block of a chunk's grid,
/// DynArgs::bwdStop): the largest grid of any group's chunk.
int64_t stopsBytes(const tessera_attention_desc &d, const LayerDesc &l) {
  int64_t blocks = 0;
  for (const DynamicGroupDesc &g : l.dynamicGroups) {
    const int64_t gx = g.args.family == kernel::kRouting
                           ? kernel::routingTiles(g.args, d.q.seq)
                           : (d.q.seq + 63) / 64;
    const int64_t n = gx * int64_t(g.heads.size()) * d.q.batch;
    blocks = n > blocks ? n : blocks;
  }
  return int64_t(sizeof(int)) * blocks;
}
int64_t stopsOffset(const tessera_attention_desc &d, const LayerDesc &l) {
  return sumsOffset(d, l) + (sumsBytes(d, l) + 15) / 16 * 16;
}

} // namespace

int64_t
tessera::runtime::backwardWorkspaceBytes(const tessera_attention_desc &d,
                                         const LayerDesc &l) {
  const int64_t sums = sumsBytes(d, l);
  return sums ? stopsOffset(d, l) + stopsBytes(d, l) : deltaBytes(d, l);
}

int *tessera::runtime::backwardStops(const tessera_attention_desc &d,
                                     const LayerDesc &l, float *delta) {
  return sumsBytes(d, l)
             ? reinterpret_cast<int *>(reinterpret_cast<char *>(delta) +
                                       stopsOffset(d, l))
             : nullptr;
}

namespace {

kernel::BwdStrides strides(const tessera_tensor &t) {
  return {t.stride_batch, t.stride_seq, t.stride_head};
}

/// Whether every row start of `t` is 16-byte aligned (the kernels' 16-byte
/// cp.async chunks; else they copy element by element).
bool rowsAligned16(const tessera_tensor &t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 &&
         t.stride_batch % 8 == 0 && t.stride_seq % 8 == 0 &&
         t.stride_head % 8 == 0;
}

const kernel::u16 *in(const tessera_tensor &t) {
  return static_cast<const kernel::u16 *>(t.data);
}
kernel::u16 *out(const tessera_tensor &t) {
  return static_cast<kernel::u16 *>(t.data);
}

} // namespace

kernel::BwdParams tessera::runtime::makeBwdParams(
    const tessera_attention_desc &d, const LayerDesc &l,
    const tessera_tensor &dO, const float *dLse, const tessera_tensor &dq,
    const tessera_tensor &dk, const tessera_tensor &dv, float *delta) {
  kernel::BwdParams p{};
  p.q = in(d.q);
  p.k = in(d.k);
  p.v = in(d.v);
  p.o = in(d.o);
  p.dO = in(dO);
  p.lse = d.lse;
  p.dLse = dLse;
  p.delta = delta;
  p.dq = out(dq);
  p.dk = out(dk);
  p.dv = out(dv);
  p.nq = d.q.seq;
  p.nk = d.k.seq;
  p.qs = strides(d.q);
  p.ks = strides(d.k);
  p.vs = strides(d.v);
  p.os = strides(d.o);
  p.dOs = strides(dO);
  p.dqs = strides(dq);
  p.dks = strides(dk);
  p.dvs = strides(dv);
  // The forward's scale rule: 0 selects 1 / sqrt(head_dim).
  p.scale = d.scale > 0 ? d.scale : 1.0f / std::sqrt(float(l.headDim));
  p.scaleLog2 = p.scale * 1.4426950408889634f;
  p.numHeads = static_cast<int>(l.numHeads);
  p.numKvHeads = static_cast<int>(l.numKvHeads);
  p.vectorLoads = rowsAligned16(d.q) && rowsAligned16(d.k) &&
                  rowsAligned16(d.v) && rowsAligned16(dO);
  p.dynKV = sumsBytes(d, l)
                ? reinterpret_cast<float *>(reinterpret_cast<char *>(delta) +
                                            sumsOffset(d, l))
                : nullptr;
  // Per-sequence calls: the device arrays (the kernels read and check
  // them), the sequences, the head range.
  p.cuQ = d.cu_seqlens_q;
  p.cuK = d.cu_seqlens_k;
  p.lensK = d.seq_lens_k;
  p.numSeqs = perSequence(d) ? static_cast<int>(sequences(d)) : 0;
  p.headStart = d.head_count ? static_cast<int>(d.head_start) : 0;
  p.headCount = static_cast<int>(d.head_count);
  return p;
}

BackwardGrids tessera::runtime::backwardGrids(const tessera_attention_desc &d,
                                              const LayerDesc &l) {
  const int64_t nq = d.q.seq, nk = d.k.seq, b = d.q.batch;
  const int64_t heads = callHeads(d, l);
  // The call's kv heads: those of its heads (tessera.h), or the layer's.
  const int64_t group = l.numHeads / l.numKvHeads;
  const int64_t kvHeads =
      d.head_count
          ? (d.head_start + d.head_count - 1) / group - d.head_start / group + 1
          : l.numKvHeads;
  BackwardGrids g;
  g.preprocess = {(nq + 127) / 128, heads, b};
  // Packed rows: a block index per 64 rows and one more per sequence
  // (bwdSeqBlock), one grid entry; dense rows: ceil(N / 64) per entry.
  const int64_t seqs = sequences(d);
  g.keyMajor = {d.cu_seqlens_k ? nk / 64 + seqs : (nk + 63) / 64, kvHeads,
                d.k.batch};
  g.queryMajor = {d.cu_seqlens_q ? nq / 64 + seqs : (nq + 63) / 64,
                  int64_t(l.computedHead.size()), b};
  g.zeroSkipped = {(nq + 127) / 128, int64_t(l.skippedHeads.size()), b};
  g.dynamicSums = {(nk + 127) / 128, l.numKvHeads, b};
  // A per-sequence call's preprocess also zeroes the rows and keys no
  // sequence owns: max(Nq, Nk) rows of max(q.batch, k.batch) entries.
  if (perSequence(d))
    g.preprocess = {(std::max(nq, nk) + 127) / 128, heads,
                    std::max(b, d.k.batch)};
  return g;
}
