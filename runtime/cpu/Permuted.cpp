//===- Permuted.cpp - a head group run in a permuted token order ----------===//
//
// Gather, walk, scatter: the rows of one (sequence, head) are copied into the
// permuted order once (an explicit gather pass rather than an index map in
// every tile load: each row is then read contiguously by every tile that
// needs it), the permuted tiles are computed as the executor computes
// original ones, and each output row goes back to its original position.
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/Permuted.h"
#include "tessera/cpu/Layout.h"

#include "TensorIO.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

using namespace tessera;
using namespace tessera::cpu;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// "" if the call is one runPermutedGroup takes, else why not.
std::string checkCall(const kernel::LayerTable &table, int64_t group,
                      int64_t period, const LayerArgs &a) {
  int64_t numGroups = 0;
  for (int64_t i = 0; i < table.numComputed; ++i)
    numGroups = std::max<int64_t>(numGroups, table.headGroup[i] + 1);
  if (group < 0 || group >= numGroups)
    return "group " + std::to_string(group) + " is not one of the layer's " +
           std::to_string(numGroups) + " computed groups";
  if (period < 2)
    return "period must be at least 2, got " + std::to_string(period);
  const Sequences &s = a.seqs;
  if (s.count != 0 || s.cuQ || s.cuK || s.lensK || s.pages || s.qStart ||
      s.kStart || a.headStart != 0)
    return "a permuted group runs dense calls only (no packed, paged or "
           "positioned sequences, headStart 0)";
  for (auto [t, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"},
                         {&a.o, "o"}})
    if (std::string e = io::checkTensor(*t, name); !e.empty())
      return e;
  int64_t kvHeads = a.numKvHeads ? a.numKvHeads : a.k.heads;
  if (a.q.heads != table.numHeads || a.o.heads != a.q.heads ||
      a.o.seq != a.q.seq || a.o.batch != a.q.batch)
    return "q and o must hold the layer's " + std::to_string(table.numHeads) +
           " heads with the same batch and length";
  if (kvHeads < 1 || a.q.heads % kvHeads != 0 || a.k.heads != kvHeads ||
      a.v.heads != kvHeads || a.k.seq != a.v.seq ||
      a.k.batch != a.q.batch || a.v.batch != a.q.batch)
    return "k and v must hold the layer's kv heads (dividing its heads) "
           "with one length and q's batch";
  int64_t d = a.q.headDim;
  if (a.k.headDim != d || a.v.headDim != d || a.o.headDim != d)
    return "q, k, v and o must have one head_dim";
  return io::checkBlocksAndScale(a.blockQ, a.blockK, a.scale);
}

/// The class of every permuted tile (query block major) of a group's program
/// for `head`: every pair's predicate at its original positions.
std::vector<uint8_t> classifyPermutedTiles(
    const kernel::Node *nodes, int64_t count, const kernel::i64 *data,
    const std::vector<int64_t> &qTok, const std::vector<int64_t> &kTok,
    int64_t bq, int64_t bk, int64_t head, int64_t numHeads) {
  int64_t nq = qTok.size(), nk = kTok.size();
  int64_t qBlocks = (nq + bq - 1) / bq, kBlocks = (nk + bk - 1) / bk;
  std::vector<int32_t> allowed(qBlocks * kBlocks, 0);
  for (int64_t s = 0; s < nq; ++s)
    for (int64_t t = 0; t < nk; ++t)
      allowed[(s / bq) * kBlocks + t / bk] +=
          kernel::allowedPair(nodes, count, data, qTok[s], kTok[t], nq, nk,
                              head, numHeads);
  std::vector<uint8_t> cls(qBlocks * kBlocks);
  for (int64_t i = 0; i < qBlocks; ++i)
    for (int64_t j = 0; j < kBlocks; ++j) {
      int64_t pairs = std::min(bq, nq - i * bq) * std::min(bk, nk - j * bk);
      int32_t c = allowed[i * kBlocks + j];
      cls[i * kBlocks + j] =
          c == 0 ? kernel::kEmpty : (c == pairs ? kernel::kFull
                                                : kernel::kPartial);
    }
  return cls;
}

/// Gathers rows tok[0..n) of head `h` of batch entry `b` of `t` as floats.
void gatherRows(const Tensor &t, int64_t b, int64_t h,
                const std::vector<int64_t> &tok, std::vector<float> &out) {
  int64_t d = t.headDim;
  out.resize(tok.size() * d);
  for (size_t s = 0; s < tok.size(); ++s)
    io::load(t, io::offsetOf(t, b, tok[s], h), d, out.data() + s * d);
}

/// Everything one (sequence, head) of the group needs.
struct HeadWork {
  const kernel::Node *nodes;
  int64_t count;
  const kernel::i64 *data;
  const std::vector<int64_t> &qTok, &kTok;
  const std::vector<uint8_t> &cls;
  int64_t head, numHeads, bq, bk, d;
  float scale;
};

/// Attention of permuted query row s over the visited tiles of its block,
/// online softmax: returns the row's output in `o` and its LSE.
float attendRow(const HeadWork &w, const std::vector<float> &q,
                const std::vector<float> &k, const std::vector<float> &v,
                int64_t s, float *o) {
  int64_t nq = w.qTok.size(), nk = w.kTok.size();
  int64_t kBlocks = (nk + w.bk - 1) / w.bk;
  float m = kNegInf, l = 0;
  std::fill(o, o + w.d, 0.0f);
  const float *qr = q.data() + s * w.d;
  for (int64_t j = 0; j < kBlocks; ++j) {
    uint8_t c = w.cls[(s / w.bq) * kBlocks + j];
    if (c == kernel::kEmpty)
      continue;
    for (int64_t t = j * w.bk; t < std::min(nk, (j + 1) * w.bk); ++t) {
      if (c == kernel::kPartial &&
          !kernel::allowedPair(w.nodes, w.count, w.data, w.qTok[s], w.kTok[t],
                               nq, nk, w.head, w.numHeads))
        continue;
      const float *kr = k.data() + t * w.d, *vr = v.data() + t * w.d;
      float x = 0;
      for (int64_t e = 0; e < w.d; ++e)
        x += qr[e] * kr[e];
      x *= w.scale;
      float mNew = std::max(m, x);
      float shrink = m == kNegInf ? 0.0f : std::exp(m - mNew);
      float p = std::exp(x - mNew);
      l = l * shrink + p;
      for (int64_t e = 0; e < w.d; ++e)
        o[e] = o[e] * shrink + p * vr[e];
      m = mNew;
    }
  }
  if (l == 0) // no allowed key: O = 0, LSE = -inf
    return kNegInf;
  for (int64_t e = 0; e < w.d; ++e)
    o[e] /= l;
  return m + std::log(l);
}

} // namespace

std::string cpu::runPermutedGroup(const kernel::LayerTable &table,
                                  int64_t group, int64_t period,
                                  const LayerArgs &a, RunStats *stats) {
  if (std::string e = checkCall(table, group, period, a); !e.empty())
    return "runPermutedGroup: " + e;
  int64_t nq = a.q.seq, nk = a.k.seq, d = a.q.headDim;
  int64_t kvHeads = a.numKvHeads ? a.numKvHeads : a.k.heads;
  int64_t perKv = a.q.heads / kvHeads;
  layout::PeriodTranspose perm{period};
  std::vector<int64_t> qTok(nq), kTok(nk);
  for (int64_t s = 0; s < nq; ++s)
    qTok[s] = perm.token(s, nq);
  for (int64_t s = 0; s < nk; ++s)
    kTok[s] = perm.token(s, nk);

  const kernel::Node *nodes = table.nodes + table.groupBegin[group];
  int64_t count = table.groupBegin[group + 1] - table.groupBegin[group];
  std::vector<int64_t> heads;
  for (int64_t i = 0; i < table.numComputed; ++i)
    if (table.headGroup[i] == group)
      heads.push_back(table.computedHead[i]);
  // The heads of a group have identical masks: one classification serves.
  std::vector<uint8_t> cls =
      classifyPermutedTiles(nodes, count, table.data, qTok, kTok, a.blockQ,
                            a.blockK, heads.front(), table.numHeads);
  float scale = a.scale > 0 ? a.scale : 1.0f / std::sqrt(float(d));
  std::vector<float> q, k, v, o(d);
  for (int64_t b = 0; b < a.q.batch; ++b)
    for (int64_t h : heads) {
      gatherRows(a.q, b, h, qTok, q);
      gatherRows(a.k, b, h / perKv, kTok, k);
      gatherRows(a.v, b, h / perKv, kTok, v);
      HeadWork w{nodes,    count, table.data, qTok,     kTok, cls, h,
                 table.numHeads, a.blockQ, a.blockK, d, scale};
      for (int64_t s = 0; s < nq; ++s) {
        float lse = attendRow(w, q, k, v, s, o.data());
        // Scatter: permuted row s is original query row qTok[s].
        io::store(a.o, io::offsetOf(a.o, b, qTok[s], h), d, o.data());
        if (a.lse)
          a.lse[(b * a.q.heads + h) * nq + qTok[s]] = lse;
      }
      if (stats) {
        stats->tilesTotal += int64_t(cls.size());
        for (uint8_t c : cls) {
          stats->tilesFull += c == kernel::kFull;
          stats->tilesPartial += c == kernel::kPartial;
        }
      }
    }
  return "";
}
