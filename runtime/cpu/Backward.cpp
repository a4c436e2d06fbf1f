//===- Backward.cpp - the attention backward on the CPU -------------------===//

#include "tessera/cpu/Backward.h"

#include "TensorIO.h"
#include "ThreadPool.h"
#include "VecMath.h"
#include "tessera/kernel/ProgramRuns.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

using namespace tessera;
using namespace tessera::cpu;
using namespace tessera::cpu::vec;
using namespace tessera::cpu::io;
namespace k = tessera::kernel;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// What both passes share: shapes, the groups' run walkers, the slot of each
/// head and D = rowsum(dO * O).
struct Plan {
  const k::LayerTable &t;
  const BackwardArgs &a;
  int64_t nq, nk, d, tq, tk, groupSize;
  int64_t h0, kv0; ///< the tensors' first head and kv head (a head range)
  float scale;
  std::vector<k::ProgramRuns> runs; ///< per head group
  std::vector<int64_t> slotOf;      ///< per head: its launch slot, or -1
  std::vector<float> delta;         ///< [batch, q.heads, Nq]
  std::atomic<int64_t> keyTiles{0}, queryTiles{0};

  /// The (batch, head) row of the LSE, dLse and delta (heads of the range).
  int64_t lseRow(int64_t b, int64_t head) const {
    return (b * a.q.heads + head - h0) * nq;
  }
  const k::Node *nodes(int64_t slot) const {
    return t.nodes + t.groupBegin[t.headGroup[slot]];
  }
  k::i64 count(int64_t slot) const {
    int64_t g = t.headGroup[slot];
    return t.groupBegin[g + 1] - t.groupBegin[g];
  }
};

/// One thread's buffers. Rows are padded to kRows, keys and head_dim to
/// kLanes; the padding of the operands stays zero.
struct Scratch {
  int64_t rp, cp, dp; ///< padded rows, keys, head_dim
  std::vector<float> q, dO;     ///< [rp][dp] query rows and their dO
  std::vector<float> kr, vr;    ///< [cp][dp] key and value rows
  std::vector<float> kT, vT;    ///< [dp][cp] the same, transposed
  std::vector<float> p, dP, dS; ///< [rp][cp]
  std::vector<float> bias;      ///< [rp][cp] 0 where a pair counts, else -inf
  std::vector<float> pT, dST;   ///< [cp][rp]
  std::vector<float> tmp;       ///< [max(rp, cp)][dp] one tile's product
  std::vector<double> acc;      ///< [rp][dp] dQ across tiles
  std::vector<double> dK, dV;   ///< [cp][dp] across tiles
  std::vector<int64_t> rowMap;  ///< [rp] a block's active rows (routing)

  Scratch(int64_t bq, int64_t bk, int64_t d)
      : rp(roundUp(bq, kRows)), cp(roundUp(bk, kLanes)),
        dp(roundUp(d, kLanes)) {
    q.assign(rp * dp, 0.0f);
    dO.assign(rp * dp, 0.0f);
    kr.assign(cp * dp, 0.0f);
    vr.assign(cp * dp, 0.0f);
    kT.assign(dp * cp, 0.0f);
    vT.assign(dp * cp, 0.0f);
    p.assign(rp * cp, 0.0f);
    dP.assign(rp * cp, 0.0f);
    dS.assign(rp * cp, 0.0f);
    bias.assign(rp * cp, 0.0f);
    pT.assign(cp * rp, 0.0f);
    dST.assign(cp * rp, 0.0f);
    tmp.assign(std::max(rp, cp) * dp, 0.0f);
    acc.assign(rp * dp, 0.0);
    dK.assign(cp * dp, 0.0);
    dV.assign(cp * dp, 0.0);
    rowMap.assign(rp, 0);
  }
};

/// Reads rows [r0, r0 + n) of head h (routed: rows r0 + map[i]) into dst
/// ([..][ld]), zeroing the rows up to `padRows`; returns whether a value is
/// a NaN or an infinity.
bool loadRows(const Tensor &t, int64_t b, int64_t r0, int64_t n, int64_t h,
              int64_t d, float *dst, int64_t ld, int64_t padRows,
              const int64_t *map = nullptr) {
  Vec poison = {};
  for (int64_t i = 0; i < padRows; ++i) {
    float *row = dst + i * ld;
    if (i < n)
      load(t, offsetOf(t, b, r0 + (map ? map[i] : i), h), d, row);
    else
      std::fill(row, row + d, 0.0f);
    for (int64_t x = 0; x < ld; x += kLanes)
      poison += loadVec(row + x) * 0.0f;
  }
  return std::isnan(horizontalSum(poison));
}

/// dst[c][r] = src[r][c] for r < rows, c < cols (ld's: src's and dst's).
void transpose(const float *src, int64_t lds, float *dst, int64_t ldd,
               int64_t rows, int64_t cols, float factor = 1.0f) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[c * ldd + r] = src[r * lds + c] * factor;
}

/// The tile's bias: 0 where the pair (q0 + i, k0 + j) is allowed (routed:
/// row q0 + map[i]), -inf where it is masked or past the keys or queries.
void tileBias(const Plan &pl, Scratch &w, int64_t slot, int cls, int64_t q0,
              int64_t rows, int64_t k0, int64_t cols,
              const int64_t *map = nullptr) {
  const k::Node *nodes = pl.nodes(slot);
  k::i64 count = pl.count(slot);
  int64_t head = pl.t.computedHead[slot];
  for (int64_t i = 0; i < w.rp; ++i) {
    float *row = &w.bias[i * w.cp];
    for (int64_t j = 0; j < w.cp; ++j) {
      bool on =
          i < rows && j < cols &&
          (cls == k::kFull ||
           k::allowedPair(nodes, count, pl.t.data, q0 + (map ? map[i] : i),
                          k0 + j, pl.nq, pl.nk, head, pl.t.numHeads));
      row[j] = on ? 0.0f : kNegInf;
    }
  }
}

/// The padded rows a tile's products run over: all of the scratch's, or,
/// routed, the block's active rows padded (the rest are never read, so the
/// products follow the active rows).
int64_t paddedRows(const Scratch &w, int64_t rows, const int64_t *map) {
  return map ? std::min(w.rp, roundUp(rows, kRows)) : w.rp;
}

/// P and dS of one tile from w.q, w.dO, w.kT, w.vT and w.bias:
/// P = exp(s * S - lse) and dS = P * (dP - D) on the allowed pairs, exactly
/// 0 on the others (selected, so a masked infinity leaves no NaN).
TESSERA_CPU_CLONES
void tileGrads(const Plan &pl, Scratch &w, int64_t b, int64_t head, int64_t q0,
               int64_t rows, const int64_t *map = nullptr) {
  const int64_t rp = paddedRows(w, rows, map);
  gemm(w.q.data(), w.dp, w.kT.data(), w.cp, w.p.data(), w.cp, rp, w.cp, pl.d,
       /*accumulate=*/false);
  gemm(w.dO.data(), w.dp, w.vT.data(), w.cp, w.dP.data(), w.cp, rp, w.cp, pl.d,
       /*accumulate=*/false);
  const int64_t row0 = pl.lseRow(b, head) + q0;
  for (int64_t i = 0; i < rp; ++i) {
    float *p = &w.p[i * w.cp], *dP = &w.dP[i * w.cp], *dS = &w.dS[i * w.cp];
    const float *bias = &w.bias[i * w.cp];
    // A row without keys (LSE -inf) and the padding rows have P = 0.
    const int64_t at = row0 + (map && i < rows ? map[i] : i);
    float lse = i < rows ? pl.a.lse[at] : kNegInf;
    float delta = i < rows ? pl.delta[at] : 0.0f;
    for (int64_t j = 0; j < w.cp; j += kLanes) {
      Vec on = loadVec(bias + j);
      Vec x = loadVec(p + j) * pl.scale - lse;
      x = on == 0.0f && lse != kNegInf ? x : Vec{} + kNegInf;
      Vec e = expVec(x);
      e = x != x ? x : e; // a NaN the row sees stays NaN
      Vec ds = on == 0.0f ? e * (loadVec(dP + j) - delta) : Vec{};
      storeVec(p + j, e);
      storeVec(dS + j, ds);
    }
  }
}

/// acc[r][x] += factor * sum_c A[r][c] * B[c][x] over the allowed pairs
/// only (a's entries where `allowed(r, c)`): for partial tiles whose other
/// operand holds a NaN or an infinity, which 0 * inf would spread.
template <typename Allowed>
void maskedAccumulate(const float *a, int64_t lda, const float *bm,
                      int64_t ldb, double *acc, int64_t ldc, int64_t rows,
                      int64_t inner, int64_t d, double factor,
                      Allowed allowed) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < inner; ++c) {
      if (!allowed(r, c))
        continue;
      double f = factor * a[r * lda + c];
      for (int64_t x = 0; x < d; ++x)
        acc[r * ldc + x] += f * bm[c * ldb + x];
    }
}

/// Per-token head routing (BackwardArgs::headActive): the active rows of
/// query block [q0, q0 + rows) of (b, head) as offsets into w.rowMap, and
/// their count; without routing, `rows` (and no map).
int64_t activeRows(const Plan &pl, Scratch &w, int64_t b, int64_t head,
                   int64_t q0, int64_t rows) {
  if (!pl.a.headActive)
    return rows;
  const int64_t H = pl.a.q.heads;
  const uint8_t *m = pl.a.headActive + (b * pl.nq + q0) * H + (head - pl.h0);
  int64_t n = 0;
  for (int64_t i = 0; i < rows; ++i)
    if (m[i * H])
      w.rowMap[size_t(n++)] = i;
  return n;
}

/// Loads keys [k0, k0 + cols) of (b, kvHead) into w.kr/w.vr and their
/// transposes; returns whether a key or value is not finite.
bool loadKeys(const Plan &pl, Scratch &w, int64_t b, int64_t kvHead,
              int64_t k0, int64_t cols, bool *keysNonFinite) {
  *keysNonFinite = loadRows(pl.a.k, b, k0, cols, kvHead - pl.kv0, pl.d,
                            w.kr.data(), w.dp, w.cp);
  bool v = loadRows(pl.a.v, b, k0, cols, kvHead - pl.kv0, pl.d, w.vr.data(),
                    w.dp, w.cp);
  transpose(w.kr.data(), w.dp, w.kT.data(), w.cp, w.cp, pl.d);
  transpose(w.vr.data(), w.dp, w.vT.data(), w.cp, w.cp, pl.d);
  return *keysNonFinite || v;
}

/// Pass 1: dK and dV of key block kb of (b, kvHead), over every computed
/// head of the group in the range and every query block that sees kb.
void keyBlockTask(Plan &pl, Scratch &w, int64_t b, int64_t kvHead,
                  int64_t kb) {
  const BackwardArgs &a = pl.a;
  const int64_t bq = a.blockQ, bk = a.blockK, d = pl.d, dp = w.dp;
  const int64_t k0 = kb * bk, cols = std::min(bk, pl.nk - k0);
  bool keysNonFinite;
  loadKeys(pl, w, b, kvHead, k0, cols, &keysNonFinite);
  std::vector<double> &dK = w.dK, &dV = w.dV;
  std::fill(dK.begin(), dK.end(), 0.0);
  std::fill(dV.begin(), dV.end(), 0.0);
  int64_t tiles = 0;
  for (int64_t head = std::max(kvHead * pl.groupSize, pl.h0);
       head < std::min((kvHead + 1) * pl.groupSize, pl.h0 + a.q.heads);
       ++head) {
    int64_t slot = pl.slotOf[head];
    if (slot < 0)
      continue;
    // The transposed schedule: the runs of query blocks whose tile with kb
    // is not empty, in closed form (O(runs), empty tiles never looked at).
    const k::ProgramRuns &runs = pl.runs[pl.t.headGroup[slot]];
    k::TRunCtx ctx = k::makeTRunCtx(k0, k0 + cols, pl.nq, pl.nk, bq, head,
                                    pl.t.numHeads);
    k::Run run = runs.runFrom(ctx, 0);
    for (int64_t qb = run.lo; k::isRun(run);
         qb < run.hi ? ++qb : (run = runs.runFrom(ctx, qb + 1), qb = run.lo)) {
      const int64_t q0 = qb * bq;
      // Routed: the block's active rows only (none: nothing to add).
      const int64_t rows =
          activeRows(pl, w, b, head, q0, std::min(bq, pl.nq - q0));
      const int64_t *map = a.headActive ? w.rowMap.data() : nullptr;
      if (rows == 0)
        continue;
      const int64_t rp = paddedRows(w, rows, map);
      const int cls = run.cls;
      ++tiles;
      bool rowsNonFinite = loadRows(a.q, b, q0, rows, head - pl.h0, d,
                                    w.q.data(), dp, w.rp, map);
      rowsNonFinite |= loadRows(a.dO, b, q0, rows, head - pl.h0, d, w.dO.data(),
                                dp, w.rp, map);
      tileBias(pl, w, slot, cls, q0, rows, k0, cols, map);
      tileGrads(pl, w, b, head, q0, rows, map);
      if (cls == k::kPartial && rowsNonFinite) {
        auto on = [&](int64_t j, int64_t i) {
          return w.bias[i * w.cp + j] == 0.0f;
        };
        transpose(w.p.data(), w.cp, w.pT.data(), w.rp, rp, w.cp);
        transpose(w.dS.data(), w.cp, w.dST.data(), w.rp, rp, w.cp);
        maskedAccumulate(w.pT.data(), w.rp, w.dO.data(), dp, dV.data(), dp,
                         cols, rows, d, 1.0, on);
        maskedAccumulate(w.dST.data(), w.rp, w.q.data(), dp, dK.data(), dp,
                         cols, rows, d, pl.scale, on);
        continue;
      }
      transpose(w.p.data(), w.cp, w.pT.data(), w.rp, rp, w.cp);
      transpose(w.dS.data(), w.cp, w.dST.data(), w.rp, rp, w.cp);
      gemm(w.pT.data(), w.rp, w.dO.data(), dp, w.tmp.data(), dp, w.cp, dp, rp,
           /*accumulate=*/false);
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t x = 0; x < d; ++x)
          dV[j * dp + x] += w.tmp[j * dp + x];
      gemm(w.dST.data(), w.rp, w.q.data(), dp, w.tmp.data(), dp, w.cp, dp, rp,
           /*accumulate=*/false);
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t x = 0; x < d; ++x)
          dK[j * dp + x] += double(pl.scale) * w.tmp[j * dp + x];
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t x = 0; x < d; ++x)
      w.tmp[x] = float(dK[j * dp + x]);
    store(a.dk, offsetOf(a.dk, b, k0 + j, kvHead - pl.kv0), d, w.tmp.data());
    for (int64_t x = 0; x < d; ++x)
      w.tmp[x] = float(dV[j * dp + x]);
    store(a.dv, offsetOf(a.dv, b, k0 + j, kvHead - pl.kv0), d, w.tmp.data());
  }
  pl.keyTiles += tiles;
}

/// Pass 2: dQ of query block qb of the head in launch slot `slot`, over the
/// forward's runs.
void queryBlockTask(Plan &pl, Scratch &w, int64_t b, int64_t slot,
                    int64_t qb) {
  const BackwardArgs &a = pl.a;
  const int64_t bq = a.blockQ, bk = a.blockK, d = pl.d, dp = w.dp;
  const int64_t head = pl.t.computedHead[slot], kvHead = head / pl.groupSize;
  if (head < pl.h0 || head >= pl.h0 + a.q.heads) // outside the range
    return;
  const int64_t q0 = qb * bq, all = std::min(bq, pl.nq - q0);
  // Routed: the block's active rows only; the others get dq = 0.
  const int64_t rows = activeRows(pl, w, b, head, q0, all);
  const int64_t *map = a.headActive ? w.rowMap.data() : nullptr;
  if (map) {
    std::fill(w.tmp.begin(), w.tmp.begin() + d, 0.0f);
    for (int64_t i = 0, next = 0; i < all; ++i)
      if (next < rows && w.rowMap[size_t(next)] == i)
        ++next;
      else
        store(a.dq, offsetOf(a.dq, b, q0 + i, head - pl.h0), d, w.tmp.data());
    if (rows == 0)
      return;
  }
  loadRows(a.q, b, q0, rows, head - pl.h0, d, w.q.data(), dp, w.rp, map);
  loadRows(a.dO, b, q0, rows, head - pl.h0, d, w.dO.data(), dp, w.rp, map);
  const int64_t rp = paddedRows(w, rows, map);
  std::fill(w.acc.begin(), w.acc.begin() + rows * dp, 0.0);
  const k::ProgramRuns &runs = pl.runs[pl.t.headGroup[slot]];
  k::RunCtx ctx =
      k::makeRunCtx(q0, q0 + all, pl.nq, pl.nk, bk, head, pl.t.numHeads);
  int64_t tiles = 0;
  k::Run run = runs.runFrom(ctx, 0);
  for (int64_t kb = run.lo; k::isRun(run);
       kb < run.hi ? ++kb : (run = runs.runFrom(ctx, kb + 1), kb = run.lo)) {
    const int64_t k0 = kb * bk, cols = std::min(bk, pl.nk - k0);
    ++tiles;
    bool keysNonFinite;
    loadKeys(pl, w, b, kvHead, k0, cols, &keysNonFinite);
    tileBias(pl, w, slot, run.cls, q0, rows, k0, cols, map);
    tileGrads(pl, w, b, head, q0, rows, map);
    if (run.cls == k::kPartial && keysNonFinite) {
      maskedAccumulate(w.dS.data(), w.cp, w.kr.data(), dp, w.acc.data(), dp,
                       rows, cols, d, pl.scale, [&](int64_t i, int64_t j) {
                         return w.bias[i * w.cp + j] == 0.0f;
                       });
      continue;
    }
    gemm(w.dS.data(), w.cp, w.kr.data(), dp, w.tmp.data(), dp, rp, dp, w.cp,
         /*accumulate=*/false);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t x = 0; x < d; ++x)
        w.acc[i * dp + x] += double(pl.scale) * w.tmp[i * dp + x];
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t x = 0; x < d; ++x)
      w.tmp[x] = float(w.acc[i * dp + x]);
    store(a.dq, offsetOf(a.dq, b, q0 + (map ? map[i] : i), head - pl.h0), d,
          w.tmp.data());
  }
  pl.queryTiles += tiles;
}

/// Runs fn(scratch, task) for tasks [0, n) on `threads` threads.
template <typename Fn>
void parallelFor(int64_t n, int threads, const Plan &pl, Fn fn) {
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    Scratch w(pl.a.blockQ, pl.a.blockK, pl.d);
    for (int64_t i; (i = next++) < n;)
      fn(w, i);
  };
  ThreadPool local; // no pool given: threads for this call only
  (pl.a.pool ? *pl.a.pool : local)
      .run(int(std::min<int64_t>(threads, n)), work);
}

std::string validate(const k::LayerTable &t, const BackwardArgs &a) {
  for (auto [x, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"},
                         {&a.o, "o"}, {&a.dO, "do"}, {&a.dq, "dq"},
                         {&a.dk, "dk"}, {&a.dv, "dv"}})
    if (std::string e = checkTensor(*x, name); !e.empty())
      return e;
  if (!a.lse)
    return "lse is a null pointer (the backward recomputes P from the "
           "forward's LSE)";
  auto same = [](const Tensor &x, const Tensor &y) {
    return x.batch == y.batch && x.seq == y.seq && x.heads == y.heads &&
           x.headDim == y.headDim;
  };
  const int64_t kvHeads = a.numKvHeads ? a.numKvHeads : a.k.heads;
  if (a.headStart < 0 || a.q.heads < 1 ||
      a.q.heads > t.numHeads - a.headStart)
    return "q's " + std::to_string(a.q.heads) + " heads from head " +
           std::to_string(a.headStart) + " are not within the layer's " +
           std::to_string(t.numHeads);
  if (kvHeads < 1 || t.numHeads % kvHeads != 0)
    return "the layer's kv heads (" + std::to_string(kvHeads) +
           ") must divide its " + std::to_string(t.numHeads) + " heads";
  const int64_t G = t.numHeads / kvHeads;
  if (a.k.heads != (a.headStart + a.q.heads - 1) / G - a.headStart / G + 1)
    return "k must hold the " +
           std::to_string((a.headStart + a.q.heads - 1) / G -
                          a.headStart / G + 1) +
           " kv heads q's heads read, got " + std::to_string(a.k.heads);
  if (!same(a.o, a.q) || !same(a.dO, a.q) || !same(a.dq, a.q))
    return "o, do and dq must have q's shape";
  if (!same(a.v, a.k) || !same(a.dk, a.k) || !same(a.dv, a.k))
    return "v, dk and dv must have k's shape";
  if (a.k.batch != a.q.batch || a.k.headDim != a.q.headDim)
    return "k must have q's batch size and head_dim";
  return checkBlocksAndScale(a.blockQ, a.blockK, a.scale);
}

} // namespace

std::string tessera::cpu::runLayerBackward(const k::LayerTable &t,
                                           const BackwardArgs &a,
                                           BackwardStats *stats) {
  if (std::string e = validate(t, a); !e.empty())
    return e;
  const int64_t nq = a.q.seq, nk = a.k.seq, d = a.q.headDim;
  const int64_t groupSize =
      t.numHeads / (a.numKvHeads ? a.numKvHeads : a.k.heads);
  Plan pl{t,
          a,
          nq,
          nk,
          d,
          (nq + a.blockQ - 1) / a.blockQ,
          (nk + a.blockK - 1) / a.blockK,
          groupSize,
          a.headStart,
          a.headStart / groupSize,
          a.scale > 0 ? a.scale : 1.0f / std::sqrt(float(d)),
          {},
          std::vector<int64_t>(t.numHeads, -1),
          std::vector<float>(a.q.batch * a.q.heads * nq, 0.0f)};
  int64_t numGroups = 0;
  for (int64_t i = 0; i < t.numComputed; ++i) {
    numGroups = std::max<int64_t>(numGroups, t.headGroup[i] + 1);
    pl.slotOf[t.computedHead[i]] = i;
  }
  for (int64_t g = 0; g < numGroups; ++g)
    pl.runs.emplace_back(t.nodes + t.groupBegin[g],
                         t.groupBegin[g + 1] - t.groupBegin[g], t.data);
  int threads = a.numThreads > 0
                    ? a.numThreads
                    : int(std::max(1u, std::thread::hardware_concurrency()));

  // D = rowsum(dO * O) in double, per (batch, head of the range);
  // skipped heads' dq = 0.
  const int64_t bh = a.q.batch * a.q.heads;
  parallelFor(bh, threads, pl, [&](Scratch &w, int64_t i) {
    int64_t b = i / a.q.heads, h = i % a.q.heads; // h: the tensors' head
    std::fill(w.tmp.begin(), w.tmp.begin() + d, 0.0f);
    for (int64_t s = 0; s < nq; ++s) {
      if (pl.slotOf[pl.h0 + h] < 0) {
        store(a.dq, offsetOf(a.dq, b, s, h), d, w.tmp.data());
        continue;
      }
      load(a.o, offsetOf(a.o, b, s, h), d, w.q.data());
      load(a.dO, offsetOf(a.dO, b, s, h), d, w.dO.data());
      double sum = 0;
      for (int64_t x = 0; x < d; ++x)
        sum += double(w.q[x]) * w.dO[x];
      if (a.dLse)
        sum -= a.dLse[i * nq + s];
      pl.delta[i * nq + s] = float(sum);
    }
  });
  parallelFor(a.k.batch * a.k.heads * pl.tk, threads, pl,
              [&](Scratch &w, int64_t i) {
                int64_t kb = i % pl.tk, rest = i / pl.tk;
                keyBlockTask(pl, w, rest / a.k.heads,
                             pl.kv0 + rest % a.k.heads, kb);
              });
  parallelFor(a.q.batch * t.numComputed * pl.tq, threads, pl,
              [&](Scratch &w, int64_t i) {
                int64_t qb = i % pl.tq, rest = i / pl.tq;
                queryBlockTask(pl, w, rest / t.numComputed,
                               rest % t.numComputed, qb);
              });
  if (stats) {
    stats->keyMajorTiles = pl.keyTiles;
    stats->queryMajorTiles = pl.queryTiles;
  }
  return "";
}
