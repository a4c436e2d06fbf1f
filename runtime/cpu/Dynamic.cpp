//===- Dynamic.cpp - index builders of the dynamic patterns (CPU) ---------===//

#include "tessera/cpu/Dynamic.h"

#include "tessera/kernel/Program.h"
// (after Program.h, which it builds on)
#include "tessera/kernel/DynamicArgs.h"

#include "VecMath.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

namespace tessera::cpu {

namespace {

/// Indices of the `count` largest scores, ordered by (-score, tieKey).
template <typename TieKey>
std::vector<int64_t> top(const std::vector<double> &scores, int64_t count,
                         TieKey tieKey) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  count = std::clamp<int64_t>(count, 0, int64_t(order.size()));
  auto better = [&](int64_t a, int64_t b) {
    if (scores[size_t(a)] != scores[size_t(b)])
      return scores[size_t(a)] > scores[size_t(b)];
    return tieKey(a) < tieKey(b);
  };
  std::partial_sort(order.begin(), order.begin() + count, order.end(), better);
  order.resize(size_t(count));
  return order;
}

/// A coverage count clamped to [minBlocks, maxBlocks] (maxBlocks 0: no
/// bound) and to the n entries there are.
int64_t clampCount(int64_t take, int64_t minBlocks, int64_t maxBlocks,
                   int64_t n) {
  take = std::max(take, minBlocks);
  if (maxBlocks > 0)
    take = std::min(take, maxBlocks);
  return std::min(take, n);
}

/// Runs work() on `threads` threads (0: all hardware threads).
template <typename Work> void onThreads(int threads, int64_t items, Work work) {
  if (threads <= 0)
    threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<int64_t>(threads, std::max<int64_t>(items, 1)));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back(work);
  work();
  for (std::thread &th : pool)
    th.join();
}
} // namespace

namespace {
/// Scores of rows [r0, r0 + rows) (rows <= kRows * 8) against all keys, in
/// float through the microkernel, 64 keys at a time: out[row * nk + key].
TESSERA_CPU_CLONES void scoreRows(const Rows &q, const Rows &k, int64_t r0,
                                  int64_t rows, int64_t d, float scale,
                                  float *out) {
  const int64_t block = 64, nk = k.count;
  const int64_t dPad = (d + vec::kLanes - 1) / vec::kLanes * vec::kLanes;
  const int64_t rowsPad = (rows + vec::kRows - 1) / vec::kRows * vec::kRows;
  std::vector<float> qs(static_cast<size_t>(rowsPad * dPad), 0.0f),
      kT(static_cast<size_t>(d * block)),
      s(static_cast<size_t>(rowsPad * block));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < d; ++i)
      qs[size_t(r * dPad + i)] = q.row(r0 + r)[i] * scale;
  for (int64_t k0 = 0; k0 < nk; k0 += block) {
    int64_t n = std::min(block, nk - k0);
    for (int64_t j = 0; j < block; ++j)
      for (int64_t i = 0; i < d; ++i)
        kT[size_t(i * block + j)] = j < n ? k.row(k0 + j)[i] : 0.0f;
    vec::gemm(qs.data(), dPad, kT.data(), block, s.data(), block, rowsPad,
              block, d, false);
    for (int64_t r = 0; r < rows; ++r)
      std::copy(&s[size_t(r * block)], &s[size_t(r * block + n)],
                out + r * nk + k0);
  }
}
} // namespace

VerticalSlashIndex buildVerticalSlash(const Rows &q, const Rows &k,
                                      int64_t headDim, float scale,
                                      const VerticalSlashParams &params) {
  const int64_t nq = q.count, nk = k.count;
  const int64_t r0 = std::max<int64_t>(nq - params.lastQ, 0), rows = nq - r0;
  // The scored rows' logits (O(lastQ * Nk) floats), in float through the
  // microkernel on all threads; the softmax and the sums in double.
  std::vector<float> logits(static_cast<size_t>(rows * nk));
  {
    const int64_t chunk = 16;
    int64_t chunks = (rows + chunk - 1) / chunk;
    int threads = int(std::min<int64_t>(
        std::max(1u, std::thread::hardware_concurrency()), chunks));
    std::atomic<int64_t> next{0};
    auto work = [&]() {
      for (int64_t c; (c = next++) < chunks;) {
        int64_t a = c * chunk, n = std::min(chunk, rows - a);
        scoreRows(q, k, r0 + a, n, headDim, scale, &logits[size_t(a * nk)]);
      }
    };
    onThreads(threads, chunks, work);
  }
  // Column sums cols[k]; diagonal sums diags[d + nk - 1] for d in
  // [-(nk - 1), 0].
  std::vector<double> cols(static_cast<size_t>(nk), 0.0),
      diags(static_cast<size_t>(nk), 0.0);
  std::vector<double> w(static_cast<size_t>(nk));
  for (int64_t row = r0; row < nq; ++row) {
    int64_t p = row + nk - nq;
    if (p < 0)
      continue;
    int64_t keys = std::min(p, nk - 1) + 1;
    const float *lr = &logits[size_t((row - r0) * nk)];
    double m = -INFINITY;
    for (int64_t key = 0; key < keys; ++key)
      m = std::max(m, double(lr[key]));
    double z = 0;
    for (int64_t key = 0; key < keys; ++key)
      z += (w[size_t(key)] = std::exp(double(lr[key]) - m));
    for (int64_t key = 0; key < keys; ++key) {
      double prob = w[size_t(key)] / z;
      cols[size_t(key)] += prob;
      diags[size_t(key - p + nk - 1)] += prob;
    }
  }
  VerticalSlashIndex index;
  // Columns: the first ones forced, the rest by score (ties: smaller).
  int64_t forcedC = std::min(params.firstColumns, nk);
  for (int64_t c = 0; c < forcedC; ++c)
    index.columns.push_back(c);
  std::vector<double> restC(cols.begin() + forcedC, cols.end());
  for (int64_t i :
       top(restC, params.vertical - forcedC, [](int64_t i) { return i; }))
    index.columns.push_back(i + forcedC);
  std::sort(index.columns.begin(), index.columns.end());
  // Diagonals d in [-(nk - 1), 0]: those with d > -lastDiagonals forced,
  // the rest by score (ties: nearer the query, i.e. larger d).
  int64_t forcedD = std::min(params.lastDiagonals, nk);
  for (int64_t d = -(forcedD - 1); d <= 0 && forcedD > 0; ++d)
    index.diagonals.push_back(d);
  // The rest: d = -(nk - 1) .. -forcedD, at slots 0 .. nk - 1 - forcedD.
  std::vector<double> restD(diags.begin(), diags.end() - forcedD);
  for (int64_t i :
       top(restD, params.slash - forcedD, [](int64_t i) { return -i; }))
    index.diagonals.push_back(i - (nk - 1));
  std::sort(index.diagonals.begin(), index.diagonals.end());
  return index;
}

bool verticalSlashAllows(const VerticalSlashIndex &index, int64_t q, int64_t k,
                         int64_t nq, int64_t nk) {
  int64_t p = q + nk - nq;
  return std::binary_search(index.columns.begin(), index.columns.end(), k) ||
         std::binary_search(index.diagonals.begin(), index.diagonals.end(),
                            k - p);
}

namespace {
/// w[r][j] = scale * sum_x qb[r][x] * kbT[x][j] for rows r < rows <= 8, each
/// summed over x in order (one dot product per pair,
/// the sums in the same order).
TESSERA_CPU_CLONES void pooledScoresBatch(const double *qb, int64_t rows,
                                          const double *kbT, int64_t d,
                                          int64_t tk, double scale,
                                          double *w) {
  // Four key blocks by up to eight query blocks in registers, summed over
  // the dimensions in order (the same sums, in the same order, as one dot
  // product per pair).
  typedef double V4 __attribute__((vector_size(4 * sizeof(double))));
  constexpr int64_t kMax = 8;
  int64_t j = 0;
  for (; j + 4 <= tk; j += 4) {
    V4 acc[kMax] = {};
    for (int64_t x = 0; x < d; ++x) {
      V4 c;
      std::memcpy(&c, kbT + x * tk + j, sizeof c);
      for (int64_t r = 0; r < kMax; ++r)
        acc[r] += (r < rows ? qb[r * d + x] : 0.0) * c;
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t l = 0; l < 4; ++l)
        w[r * tk + j + l] = acc[r][l] * scale;
  }
  for (; j < tk; ++j)
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t x = 0; x < d; ++x)
        sum += qb[r * d + x] * kbT[x * tk + j];
      w[r * tk + j] = sum * scale;
    }
}
} // namespace

namespace {
/// w[0, n) = softmax(w): the exponentials in float through the vectorised
/// expVec (about 2 ulp; scalar double exp was half of the index build at
/// 128K tokens), the maximum, the sum and the quotients in double.
TESSERA_CPU_CLONES void softmaxInPlace(double *w, int64_t n) {
  double m = -INFINITY;
  for (int64_t j = 0; j < n; ++j)
    m = std::max(m, w[j]);
  double z = 0;
  int64_t j = 0;
  for (; j + vec::kLanes <= n; j += vec::kLanes) {
    vec::Vec x;
    for (int64_t l = 0; l < vec::kLanes; ++l)
      x[l] = float(w[j + l] - m);
    vec::Vec e = vec::expVec(x);
    for (int64_t l = 0; l < vec::kLanes; ++l)
      z += (w[j + l] = e[l]);
  }
  for (; j < n; ++j)
    z += (w[j] = std::exp(w[j] - m));
  for (int64_t i = 0; i < n; ++i)
    w[i] /= z;
}
} // namespace

BlockTopkIndex buildBlockTopk(const Rows &q, const Rows &k, int64_t headDim,
                              float scale, int64_t block, double gamma,
                              int64_t topK, int64_t minBlocks,
                              int64_t maxBlocks) {
  namespace kn = tessera::kernel;
  const int64_t nq = q.count, nk = k.count;
  // Pools x over `blocks` blocks, block b over rows rows(b) = [r0, r1).
  auto pool = [&](const Rows &x, int64_t blocks, auto rows) {
    std::vector<double> out(static_cast<size_t>(blocks * headDim), 0.0);
    for (int64_t b = 0; b < blocks; ++b) {
      auto [r0, r1] = rows(b);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t i = 0; i < headDim; ++i)
          out[size_t(b * headDim + i)] += x.row(r)[i];
      for (int64_t i = 0; i < headDim; ++i)
        out[size_t(b * headDim + i)] /= double(r1 - r0);
    }
    return out;
  };
  const int64_t tq = kn::btQueryBlocks(block, nq, nk),
                tk = (nk + block - 1) / block;
  std::vector<double> qb = pool(q, tq, [&](int64_t b) {
    return std::pair{kn::btRowBegin(block, nq, nk, b),
                     kn::btRowEnd(block, nq, nk, b)};
  });
  std::vector<double> kb = pool(k, tk, [&](int64_t b) {
    return std::pair{b * block, std::min(b * block + block, nk)};
  });
  // Pooled keys transposed, so that a query block's scores against all key
  // blocks accumulate over dimensions with key blocks innermost (the same
  // sums, in the same order, as one dot product per pair).
  std::vector<double> kbT(static_cast<size_t>(headDim * tk));
  for (int64_t j = 0; j < tk; ++j)
    for (int64_t x = 0; x < headDim; ++x)
      kbT[size_t(x * tk + j)] = kb[size_t(j * headDim + x)];
  BlockTopkIndex index;
  index.firstBlock = kn::btFirstBlock(block, nq, nk);
  std::vector<std::vector<int64_t>> &out = index.lists;
  out.resize(static_cast<size_t>(tq));
  // Query blocks go in batches of kBatch through the pooled scores (the
  // transposed keys stream once per batch, not once per block); each
  // block's order is sorted only as far as its selection reads.
  constexpr int64_t kBatch = 8;
  const int64_t batches = (tq + kBatch - 1) / kBatch;
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    std::vector<double> w(static_cast<size_t>(kBatch * tk));
    std::vector<std::pair<double, int64_t>> e(static_cast<size_t>(tk));
    for (int64_t bi; (bi = next++) < batches;) {
      const int64_t i0 = bi * kBatch, rows = std::min(kBatch, tq - i0);
      pooledScoresBatch(&qb[size_t(i0 * headDim)], rows, kbT.data(), headDim,
                        tk, double(scale), w.data());
      for (int64_t r = 0; r < rows; ++r) {
        double *wr = &w[size_t(r * tk)];
        softmaxInPlace(wr, tk);
        // (-score, index): ascending is the selection order (ties to the
        // smaller block).
        for (int64_t j = 0; j < tk; ++j)
          e[size_t(j)] = {-wr[j], j};
        size_t sorted = 0;
        auto ensure = [&](size_t n) {
          n = std::min(n, size_t(tk));
          if (n > sorted) {
            std::partial_sort(e.begin() + sorted, e.begin() + n, e.end());
            sorted = n;
          }
        };
        int64_t take;
        if (topK > 0) {
          take = std::min(topK, tk);
          ensure(size_t(take));
        } else {
          double total = 0;
          take = 0;
          ensure(size_t(std::max<int64_t>(64, minBlocks)));
          for (int64_t j = 0; j < tk; ++j) {
            if (size_t(j) >= sorted)
              ensure(2 * sorted);
            total += -e[size_t(j)].first;
            ++take;
            if (total >= gamma - 1e-12)
              break;
          }
          take = clampCount(take, minBlocks, maxBlocks, tk);
          ensure(size_t(take));
        }
        std::vector<int64_t> &kept = out[size_t(i0 + r)];
        kept.resize(size_t(take));
        for (int64_t j = 0; j < take; ++j)
          kept[size_t(j)] = e[size_t(j)].second;
        std::sort(kept.begin(), kept.end());
      }
    }
  };
  onThreads(0, batches, work);
  return index;
}

namespace {
/// The fewest largest entries of `mass` whose sum reaches gamma (ties to
/// the smaller index), clamped to [minBlocks, maxBlocks] (0: no bound) and
/// to the entries; ascending.
std::vector<int64_t> coverage(const std::vector<double> &mass, double gamma,
                              int64_t minBlocks, int64_t maxBlocks) {
  const int64_t n = int64_t(mass.size());
  std::vector<int64_t> order = top(mass, n, [](int64_t i) { return i; });
  double total = 0;
  int64_t take = 0;
  for (int64_t i : order) {
    total += mass[size_t(i)];
    ++take;
    if (total >= gamma - 1e-12)
      break;
  }
  order.resize(size_t(clampCount(take, minBlocks, maxBlocks, n)));
  std::sort(order.begin(), order.end());
  return order;
}
} // namespace

BlockTopkIndex buildBlockTopkFlex(const Rows &q, const Rows &k, int64_t headDim,
                                  float scale, int64_t block, double gamma,
                                  int64_t minBlocks, int64_t maxBlocks,
                                  double tau) {
  namespace kn = tessera::kernel;
  const int64_t nq = q.count, nk = k.count, d = headDim;
  const int64_t tq = kn::btQueryBlocks(block, nq, nk),
                tk = (nk + block - 1) / block;
  // The last query block (position Nk - 1's): rows [r0, r1), all at
  // positions >= 0.
  const int64_t r0 = kn::btRowBegin(block, nq, nk, tq - 1),
                r1 = kn::btRowEnd(block, nq, nk, tq - 1), rows = r1 - r0;
  // Its logits (rows <= block <= 1024, O(block * Nk) floats) in float
  // through the microkernel on all threads; the softmax and sums in double.
  std::vector<float> logits(static_cast<size_t>(rows * nk));
  {
    const int64_t chunk = 16, chunks = (rows + chunk - 1) / chunk;
    std::atomic<int64_t> next{0};
    onThreads(0, chunks, [&]() {
      for (int64_t c; (c = next++) < chunks;) {
        const int64_t a = c * chunk, n = std::min(chunk, rows - a);
        scoreRows(q, k, r0 + a, n, d, scale, &logits[size_t(a * nk)]);
      }
    });
  }
  // The true attention per key block (columns) and per diagonal group
  // u = floor((p - k) / block) (slashes), averaged over the rows.
  std::vector<double> cols(static_cast<size_t>(tk), 0.0),
      slashes(static_cast<size_t>(tk), 0.0), w(static_cast<size_t>(nk));
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t p = row + nk - nq, keys = p + 1;
    const float *lr = &logits[size_t((row - r0) * nk)];
    double m = -INFINITY, z = 0;
    for (int64_t key = 0; key < keys; ++key)
      m = std::max(m, double(lr[key]));
    for (int64_t key = 0; key < keys; ++key)
      z += (w[size_t(key)] = std::exp(double(lr[key]) - m));
    for (int64_t key = 0; key < keys; ++key) {
      cols[size_t(key / block)] += w[size_t(key)] / z;
      slashes[size_t((p - key) / block)] += w[size_t(key)] / z;
    }
  }
  for (int64_t j = 0; j < tk; ++j) {
    cols[size_t(j)] /= double(rows);
    slashes[size_t(j)] /= double(rows);
  }
  // The pooled estimate of the same block: its mean query against the
  // mean keys of each key block (buildBlockTopk's scores, in the same
  // order of sums).
  std::vector<double> qm(static_cast<size_t>(d), 0.0),
      km(static_cast<size_t>(d)), est(static_cast<size_t>(tk));
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t x = 0; x < d; ++x)
      qm[size_t(x)] += q.row(r)[x];
  for (double &x : qm)
    x /= double(rows);
  double m = -INFINITY, z = 0;
  for (int64_t j = 0; j < tk; ++j) {
    const int64_t k0 = j * block, k1 = std::min(k0 + block, nk);
    std::fill(km.begin(), km.end(), 0.0);
    for (int64_t key = k0; key < k1; ++key)
      for (int64_t x = 0; x < d; ++x)
        km[size_t(x)] += k.row(key)[x];
    double s = 0;
    for (int64_t x = 0; x < d; ++x)
      s += qm[size_t(x)] * (km[size_t(x)] / double(k1 - k0));
    est[size_t(j)] = s * double(scale);
    m = std::max(m, est[size_t(j)]);
  }
  for (double &e : est)
    z += (e = std::exp(e - m));
  // Jensen-Shannon distance (natural log) between the two.
  double js = 0;
  for (int64_t j = 0; j < tk; ++j) {
    const double a = cols[size_t(j)], b = est[size_t(j)] / z,
                 mid = 0.5 * (a + b);
    if (a > 0)
      js += 0.5 * a * std::log(a / mid);
    if (b > 0)
      js += 0.5 * b * std::log(b / mid);
  }
  const double distance = std::sqrt(std::max(js, 0.0));
  if (!(distance > tau)) {
    BlockTopkIndex index = buildBlockTopk(q, k, headDim, scale, block, gamma, 0,
                                          minBlocks, maxBlocks);
    index.distance = distance;
    return index;
  }
  const std::vector<int64_t> keptCols =
      coverage(cols, gamma, minBlocks, maxBlocks);
  const std::vector<int64_t> keptSlashes =
      coverage(slashes, gamma, minBlocks, maxBlocks);
  BlockTopkIndex index;
  index.firstBlock = kn::btFirstBlock(block, nq, nk);
  index.distance = distance;
  index.verticalSlash = true;
  index.lists.resize(static_cast<size_t>(tq));
  std::vector<char> kept(static_cast<size_t>(tk));
  for (int64_t i = 0; i < tq; ++i) {
    const int64_t at = index.firstBlock + i;
    std::fill(kept.begin(), kept.end(), 0);
    for (int64_t j : keptCols)
      kept[size_t(j)] = 1;
    for (int64_t u : keptSlashes)
      for (int64_t j : {at - u - 1, at - u})
        if (j >= 0 && j < tk)
          kept[size_t(j)] = 1;
    for (int64_t j = 0; j < tk; ++j)
      if (kept[size_t(j)])
        index.lists[size_t(i)].push_back(j);
  }
  return index;
}

namespace {
/// sc[j] = sum_x row[x] * cT[x][j], summed over x in order.
TESSERA_CPU_CLONES void nearestScores(const float *row, const double *cT,
                                      int64_t d, int64_t clusters,
                                      double *sc) {
  std::fill(sc, sc + clusters, 0.0);
  for (int64_t x = 0; x < d; ++x) {
    double a = row[x];
    const double *col = cT + x * clusters;
    for (int64_t j = 0; j < clusters; ++j)
      sc[j] += a * col[j];
  }
}
} // namespace

RoutingIndex buildRouting(const Rows &q, const Rows &k, int64_t headDim,
                          int64_t clusters, int64_t iterations,
                          const float *centroids) {
  std::vector<double> c(static_cast<size_t>(clusters * headDim));
  if (iterations == 0) {
    for (size_t i = 0; i < c.size(); ++i)
      c[i] = centroids[i];
  } else {
    for (int64_t j = 0; j < clusters; ++j) {
      const float *seed = k.row((j * k.count) / clusters);
      for (int64_t x = 0; x < headDim; ++x)
        c[size_t(j * headDim + x)] = seed[x];
    }
  }
  // Nearest centroids of many rows at once, on all threads: the centroids
  // transposed so that a row's dot products with every centroid accumulate
  // over dimensions with centroids innermost (the same sums, in the same
  // order, as one dot product per pair; the inner loop vectorises).
  std::vector<double> cT(c.size());
  auto nearestAll = [&](const Rows &x, std::vector<int32_t> &out) {
    for (int64_t j = 0; j < clusters; ++j)
      for (int64_t i = 0; i < headDim; ++i)
        cT[size_t(i * clusters + j)] = c[size_t(j * headDim + i)];
    out.resize(size_t(x.count));
    std::atomic<int64_t> next{0};
    const int64_t chunk = 256, chunks = (x.count + chunk - 1) / chunk;
    onThreads(0, chunks, [&]() {
      std::vector<double> sc(static_cast<size_t>(clusters));
      for (int64_t ch; (ch = next++) < chunks;)
        for (int64_t r = ch * chunk; r < std::min(x.count, (ch + 1) * chunk);
             ++r) {
          nearestScores(x.row(r), cT.data(), headDim, clusters, sc.data());
          int32_t best = 0;
          for (int64_t j = 1; j < clusters; ++j)
            if (sc[size_t(j)] > sc[size_t(best)]) // ties: the smaller index
              best = int32_t(j);
          out[size_t(r)] = best;
        }
    });
  };
  RoutingIndex index;
  for (int64_t it = 0; it < iterations; ++it) {
    nearestAll(k, index.keyCluster);
    std::vector<double> sum(c.size(), 0.0);
    std::vector<int64_t> count(static_cast<size_t>(clusters), 0);
    for (int64_t r = 0; r < k.count; ++r) {
      int32_t j = index.keyCluster[size_t(r)];
      ++count[size_t(j)];
      for (int64_t x = 0; x < headDim; ++x)
        sum[size_t(j * headDim + x)] += k.row(r)[x];
    }
    for (int64_t j = 0; j < clusters; ++j)
      if (count[size_t(j)]) // an empty cluster keeps its centroid
        for (int64_t x = 0; x < headDim; ++x)
          c[size_t(j * headDim + x)] =
              sum[size_t(j * headDim + x)] / double(count[size_t(j)]);
  }
  nearestAll(k, index.keyCluster);
  nearestAll(q, index.queryCluster);
  return index;
}

namespace {
/// One tile of the dynamic patterns' attention: keys[0, n) (n <= ldk, the
/// tile's padded key count) against `rows` query rows, whose scaled queries
/// are qs ([rowsPad][dPad]); mask[row * ldk + j] says whether the row sees
/// key j. S = Q K^T and O += P V through the executor's register-blocked
/// microkernel; padding scores are -inf, padded keys and dimensions zero.
/// Updates the online softmax state m, l and out ([rowsPad][dPad]; l and
/// out in double across tiles, the tile's P V in float in acc).
/// Compiled for several x86-64 levels like the executor's loops.
TESSERA_CPU_CLONES void
maskedTile(const Rows &k, const Rows &v, const int64_t *keys, int64_t n,
           const float *qs, int64_t rows, int64_t rowsPad, int64_t d,
           int64_t dPad, const uint8_t *mask, float *kT, float *vb, float *s,
           int64_t ldk, float *acc, double *out, float *m, double *l) {
  bool nonFiniteV = false; // then P V goes row by row over allowed keys
  for (int64_t j = 0; j < n; ++j) {
    const float *kr = k.row(keys[j]), *vr = v.row(keys[j]);
    for (int64_t i = 0; i < d; ++i) {
      kT[i * ldk + j] = kr[i];
      nonFiniteV |= !std::isfinite(vr[i]);
    }
    std::copy(vr, vr + d, vb + j * dPad);
  }
  for (int64_t i = 0; i < d; ++i)
    std::fill(kT + i * ldk + n, kT + (i + 1) * ldk, 0.0f);
  std::fill(vb + n * dPad, vb + ldk * dPad, 0.0f);
  vec::gemm(qs, dPad, kT, ldk, s, ldk, rowsPad, ldk, d, false);
  for (int64_t row = 0; row < rows; ++row) {
    float *sr = s + row * ldk;
    const uint8_t *mr = mask + row * ldk;
    float mx = m[row];
    for (int64_t j = 0; j < ldk; ++j) {
      if (j >= n || !mr[j])
        sr[j] = -INFINITY;
      mx = std::max(mx, sr[j]);
    }
    float *ar = acc + row * dPad;
    if (nonFiniteV) // this tile's P V, row by row below
      std::fill(ar, ar + dPad, 0.0f);
    if (mx == -INFINITY) { // nothing yet: P = 0 keeps out as it is
      for (int64_t j = 0; j < n; ++j)
        if (mr[j] && std::isnan(sr[j])) // a NaN the row sees: NaN row
          l[row] = NAN;
      std::fill(sr, sr + ldk, 0.0f);
      continue;
    }
    const double corr = std::exp(double(m[row]) - mx);
    vec::Vec sum{};
    for (int64_t c = 0; c < ldk; c += vec::kLanes) {
      vec::Vec e = vec::expVec(vec::loadVec(sr + c) - mx);
      sum += e;
      vec::storeVec(sr + c, e);
    }
    for (int64_t i = 0; i < d; ++i)
      out[row * dPad + i] *= corr;
    l[row] = l[row] * corr + vec::horizontalSum(sum);
    m[row] = mx;
    if (nonFiniteV) // select, don't multiply: 0 * inf is NaN
      for (int64_t j = 0; j < n; ++j)
        if (mr[j])
          for (int64_t i = 0; i < dPad; i += vec::kLanes)
            vec::storeVec(ar + i, vec::loadVec(ar + i) +
                                      sr[j] * vec::loadVec(vb + j * dPad + i));
  }
  if (!nonFiniteV) {
    for (int64_t row = rows; row < rowsPad; ++row)
      std::fill(s + row * ldk, s + (row + 1) * ldk, 0.0f);
    vec::gemm(s, ldk, vb, dPad, acc, dPad, rowsPad, dPad, ldk, false);
  }
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t i = 0; i < d; ++i)
      out[row * dPad + i] += acc[row * dPad + i];
}

/// The per-thread buffers of the tiled attention over dynamic indices.
struct TileBuffers {
  int64_t ldk, dPad, rowsPad;
  std::vector<float> kT, vb, s, acc, qs, m;
  std::vector<double> out, l;
  std::vector<uint8_t> mask;
  std::vector<int64_t> keys;
  TileBuffers(int64_t block, int64_t d)
      : ldk((block + vec::kLanes - 1) / vec::kLanes * vec::kLanes),
        dPad((d + vec::kLanes - 1) / vec::kLanes * vec::kLanes),
        rowsPad((block + vec::kRows - 1) / vec::kRows * vec::kRows) {
    size_t lds = size_t(ldk), dps = size_t(dPad), rps = size_t(rowsPad);
    kT.resize(size_t(d) * lds);
    vb.resize(lds * dps);
    s.resize(rps * lds);
    acc.resize(rps * dps);
    out.resize(rps * dps);
    qs.resize(rps * dps);
    m.resize(rps);
    l.resize(rps);
    mask.resize(rps * lds);
    keys.resize(lds);
  }
  /// Starts a query block of `rows` rows: rowQ(r) gives row r's query.
  template <typename RowQ>
  void start(int64_t rows, int64_t d, float scale, RowQ rowQ) {
    std::fill(out.begin(), out.end(), 0.0);
    std::fill(m.begin(), m.end(), -INFINITY);
    std::fill(l.begin(), l.end(), 0.0);
    std::fill(qs.begin(), qs.end(), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float *qr = rowQ(r);
      for (int64_t i = 0; i < d; ++i)
        qs[size_t(r * dPad + i)] = qr[i] * scale;
    }
  }
  /// Writes row r's output to out (d floats) and its LSE.
  void finish(int64_t r, int64_t d, float *out, float *lseOut) const {
    // l == 0: no key; l NaN: the row saw a NaN, and O and LSE are NaN.
    if (l[size_t(r)] == 0.0f) {
      std::fill(out, out + d, 0.0f);
      if (lseOut)
        *lseOut = -INFINITY;
      return;
    }
    for (int64_t i = 0; i < d; ++i)
      out[i] = float(this->out[size_t(r * dPad + i)] / l[size_t(r)]);
    if (lseOut)
      *lseOut = float(m[size_t(r)] + std::log(l[size_t(r)]));
  }
  void tile(const Rows &k, const Rows &v, int64_t n, int64_t rows, int64_t d) {
    maskedTile(k, v, keys.data(), n, qs.data(), rows, rowsPad, d, dPad,
               mask.data(), kT.data(), vb.data(), s.data(), ldk, acc.data(),
               out.data(), m.data(), l.data());
  }
};

} // namespace

TileCounts attendVerticalSlashTiled(const Rows &q, const Rows &k, const Rows &v,
                                    float *o, int64_t oStride, float *lse,
                                    int64_t headDim, float scale,
                                    const VerticalSlashIndex &index,
                                    bool causal, int64_t block, int threads) {
  const int64_t nq = q.count, nk = k.count, d = headDim;
  std::vector<uint8_t> colSel(static_cast<size_t>(nk), 0),
      diagSel(static_cast<size_t>(nk), 0);
  for (int64_t c : index.columns)
    if (c >= 0 && c < nk)
      colSel[size_t(c)] = 1;
  for (int64_t dg : index.diagonals)
    if (dg <= 0 && dg > -nk)
      diagSel[size_t(dg + nk - 1)] = 1;
  const int64_t numBlocks = (nq + block - 1) / block;
  std::atomic<int64_t> next{0}, contiguous{0}, gathered{0};
  onThreads(threads, numBlocks, [&]() {
    TileBuffers t(block, d);
    std::vector<std::pair<int64_t, int64_t>> ranges;
    std::vector<int64_t> columns;
    int64_t myContiguous = 0, myGathered = 0;
    for (int64_t qb; (qb = next++) < numBlocks;) {
      int64_t q0 = qb * block, q1 = std::min(q0 + block, nq), rows = q1 - q0;
      int64_t p0 = q0 + nk - nq, p1 = q1 - 1 + nk - nq;
      int64_t kMax = causal ? std::min(p1, nk - 1) : nk - 1;
      // The diagonals' key ranges over this block, merged (diagonals are
      // ascending, so are the ranges' starts).
      ranges.clear();
      for (int64_t dg : index.diagonals) {
        int64_t a = std::max<int64_t>(p0 + dg, 0), b = std::min(p1 + dg, kMax);
        if (a > b)
          continue;
        if (!ranges.empty() && a <= ranges.back().second + 1)
          ranges.back().second = std::max(ranges.back().second, b);
        else
          ranges.push_back({a, b});
      }
      // The columns outside those ranges are gathered.
      columns.clear();
      size_t r = 0;
      for (int64_t c : index.columns) {
        if (c > kMax)
          break;
        while (r < ranges.size() && ranges[r].second < c)
          ++r;
        if (r < ranges.size() && ranges[r].first <= c)
          continue;
        columns.push_back(c);
      }
      t.start(rows, d, scale, [&](int64_t row) { return q.row(q0 + row); });
      auto tile = [&](int64_t n) {
        for (int64_t row = 0; row < rows; ++row) {
          int64_t p = p0 + row;
          uint8_t *mr = &t.mask[size_t(row * t.ldk)];
          for (int64_t j = 0; j < n; ++j) {
            int64_t key = t.keys[size_t(j)];
            mr[j] =
                (!causal || key <= p) &&
                (colSel[size_t(key)] || (key - p <= 0 && key - p > -nk &&
                                         diagSel[size_t(key - p + nk - 1)]));
          }
        }
        t.tile(k, v, n, rows, d);
      };
      for (auto [a, b] : ranges)
        for (int64_t k0 = a; k0 <= b; k0 += block) {
          int64_t n = std::min(block, b - k0 + 1);
          for (int64_t j = 0; j < n; ++j)
            t.keys[size_t(j)] = k0 + j;
          tile(n);
          ++myContiguous;
        }
      for (size_t c0 = 0; c0 < columns.size(); c0 += size_t(block)) {
        int64_t n = std::min<int64_t>(block, int64_t(columns.size() - c0));
        for (int64_t j = 0; j < n; ++j)
          t.keys[size_t(j)] = columns[c0 + size_t(j)];
        tile(n);
        ++myGathered;
      }
      for (int64_t row = 0; row < rows; ++row)
        t.finish(row, d, o + (q0 + row) * oStride,
                 lse ? lse + q0 + row : nullptr);
    }
    contiguous += myContiguous;
    gathered += myGathered;
  });
  return {contiguous.load(), gathered.load()};
}

int64_t attendRoutingSegments(const Rows &q, const Rows &k, const Rows &v,
                              float *o, int64_t oStride, float *lse,
                              int64_t headDim, float scale,
                              const RoutingIndex &index, int64_t clusters,
                              bool causal, int64_t block, int threads) {
  const int64_t nq = q.count, nk = k.count, d = headDim;
  // The permutation: queries and keys of each cluster, in position order,
  // as contiguous segments.
  std::vector<std::vector<int64_t>> queriesOf(static_cast<size_t>(clusters)),
      keysOf(static_cast<size_t>(clusters));
  for (int64_t r = 0; r < nq; ++r)
    queriesOf[size_t(index.queryCluster[size_t(r)])].push_back(r);
  for (int64_t r = 0; r < nk; ++r)
    keysOf[size_t(index.keyCluster[size_t(r)])].push_back(r);
  // Work items: (cluster, block of its queries).
  std::vector<std::pair<int64_t, int64_t>> items;
  for (int64_t c = 0; c < clusters; ++c)
    for (int64_t i = 0; i < int64_t(queriesOf[size_t(c)].size()); i += block)
      items.push_back({c, i});
  std::atomic<int64_t> next{0}, tiles{0};
  onThreads(threads, int64_t(items.size()), [&]() {
    TileBuffers t(block, d);
    int64_t myTiles = 0;
    for (int64_t it; (it = next++) < int64_t(items.size());) {
      auto [c, i0] = items[size_t(it)];
      const std::vector<int64_t> &qs = queriesOf[size_t(c)];
      const std::vector<int64_t> &ks = keysOf[size_t(c)];
      int64_t rows = std::min<int64_t>(block, int64_t(qs.size()) - i0);
      t.start(rows, d, scale,
              [&](int64_t row) { return q.row(qs[size_t(i0 + row)]); });
      // Keys beyond the last row's position are never seen under causality
      // (keys are in position order).
      int64_t lastP = qs[size_t(i0 + rows - 1)] + nk - nq;
      for (size_t k0 = 0; k0 < ks.size(); k0 += size_t(block)) {
        if (causal && ks[k0] > lastP)
          break;
        int64_t n = std::min<int64_t>(block, int64_t(ks.size() - k0));
        for (int64_t j = 0; j < n; ++j)
          t.keys[size_t(j)] = ks[k0 + size_t(j)];
        for (int64_t row = 0; row < rows; ++row) {
          int64_t p = qs[size_t(i0 + row)] + nk - nq;
          uint8_t *mr = &t.mask[size_t(row * t.ldk)];
          for (int64_t j = 0; j < n; ++j)
            mr[j] = !causal || t.keys[size_t(j)] <= p;
        }
        t.tile(k, v, n, rows, d);
        ++myTiles;
      }
      // The inverse permutation: each row's output goes to its position.
      for (int64_t row = 0; row < rows; ++row) {
        int64_t r = qs[size_t(i0 + row)];
        t.finish(row, d, o + r * oStride, lse ? lse + r : nullptr);
      }
    }
    tiles += myTiles;
  });
  return tiles.load();
}

static const int32_t *blockIndexRow(const BlockIndexCsr &index, int64_t b,
                                     int64_t slot) {
  return index.offsets +
         ((index.batch0 + b) * index.heads + slot) * (index.stride + 1);
}

std::string checkBlockIndex(const BlockIndexCsr &index, int64_t b,
                            int64_t slot, int64_t head) {
  const int32_t *off = blockIndexRow(index, b, slot);
  const std::string where = " of batch entry " +
                            std::to_string(index.batch0 + b) + ", head " +
                            std::to_string(head);
  for (int64_t i = 0; i <= index.rows; ++i)
    if (off[i] < 0 || off[i] > index.nnz)
      return "block_index_offsets" + where + ": entry " + std::to_string(i) +
             " is " + std::to_string(off[i]) + ", outside [0, " +
             std::to_string(index.nnz) + "] (block_index_nnz)";
  // The offsets first: a decrease would otherwise show as a row whose
  // columns run into the next row's.
  for (int64_t i = 0; i < index.rows; ++i)
    if (off[i + 1] < off[i])
      return "block_index_offsets" + where + ": row " + std::to_string(i) +
             " ends at " + std::to_string(off[i + 1]) + " before it begins at " +
             std::to_string(off[i]) + " (offsets must not decrease)";
  for (int64_t i = 0; i < index.rows; ++i) {
    for (int32_t j = off[i]; j < off[i + 1]; ++j) {
      const int32_t kb = index.cols[j];
      if (kb < 0 || kb >= index.keyBlocks)
        return "block_index_cols" + where + ", query block row " +
               std::to_string(i) + ": key block " + std::to_string(kb) +
               " is outside [0, " + std::to_string(index.keyBlocks) +
               ") (ceil(Nk / block_k))";
      if (j > off[i] && kb <= index.cols[j - 1])
        return "block_index_cols" + where + ", query block row " +
               std::to_string(i) + ": key block " + std::to_string(kb) +
               " follows " + std::to_string(index.cols[j - 1]) +
               " (a row's key blocks must be strictly increasing)";
    }
  }
  return "";
}

std::vector<std::vector<int64_t>> blockIndexLists(const BlockIndexCsr &index,
                                                  int64_t b, int64_t slot) {
  const int32_t *off = blockIndexRow(index, b, slot);
  std::vector<std::vector<int64_t>> lists(size_t(index.rows));
  for (int64_t i = 0; i < index.rows; ++i)
    lists[size_t(i)].assign(index.cols + off[i], index.cols + off[i + 1]);
  return lists;
}

} // namespace tessera::cpu
