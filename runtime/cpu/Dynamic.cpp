//===- Dynamic.cpp - index builders of the dynamic patterns (CPU) ---------===//

#include "tessera/cpu/Dynamic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tessera::cpu {

namespace {

double dot(const float *a, const float *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += double(a[i]) * double(b[i]);
  return s;
}

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

} // namespace

VerticalSlashIndex buildVerticalSlash(const Rows &q, const Rows &k,
                                      int64_t headDim, float scale,
                                      const VerticalSlashParams &params) {
  const int64_t nq = q.count, nk = k.count;
  // Column sums cols[k]; diagonal sums diags[d + nk - 1] for d in
  // [-(nk - 1), 0].
  std::vector<double> cols(static_cast<size_t>(nk), 0.0),
      diags(static_cast<size_t>(nk), 0.0);
  std::vector<double> w(static_cast<size_t>(nk));
  for (int64_t row = std::max<int64_t>(nq - params.lastQ, 0); row < nq; ++row) {
    int64_t p = row + nk - nq;
    if (p < 0)
      continue;
    int64_t keys = std::min(p, nk - 1) + 1;
    double m = -INFINITY;
    for (int64_t key = 0; key < keys; ++key) {
      w[size_t(key)] = dot(q.row(row), k.row(key), headDim) * scale;
      m = std::max(m, w[size_t(key)]);
    }
    double z = 0;
    for (int64_t key = 0; key < keys; ++key)
      z += (w[size_t(key)] = std::exp(w[size_t(key)] - m));
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

std::vector<std::vector<int64_t>>
buildBlockTopk(const Rows &q, const Rows &k, int64_t headDim, float scale,
               int64_t block, double gamma, int64_t topK, int64_t minBlocks,
               int64_t maxBlocks) {
  auto pool = [&](const Rows &x) {
    int64_t blocks = (x.count + block - 1) / block;
    std::vector<double> out(static_cast<size_t>(blocks * headDim), 0.0);
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t r0 = b * block, r1 = std::min(r0 + block, x.count);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t i = 0; i < headDim; ++i)
          out[size_t(b * headDim + i)] += x.row(r)[i];
      for (int64_t i = 0; i < headDim; ++i)
        out[size_t(b * headDim + i)] /= double(r1 - r0);
    }
    return out;
  };
  std::vector<double> qb = pool(q), kb = pool(k);
  int64_t tq = (q.count + block - 1) / block,
          tk = (k.count + block - 1) / block;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(tq));
  std::vector<double> w(static_cast<size_t>(tk));
  for (int64_t i = 0; i < tq; ++i) {
    double m = -INFINITY;
    for (int64_t j = 0; j < tk; ++j) {
      double s = 0;
      for (int64_t x = 0; x < headDim; ++x)
        s += qb[size_t(i * headDim + x)] * kb[size_t(j * headDim + x)];
      w[size_t(j)] = s * scale;
      m = std::max(m, w[size_t(j)]);
    }
    double z = 0;
    for (double &x : w)
      z += (x = std::exp(x - m));
    for (double &x : w)
      x /= z;
    std::vector<int64_t> order = top(w, tk, [](int64_t j) { return j; });
    int64_t take;
    if (topK > 0) {
      take = std::min(topK, tk);
    } else {
      double total = 0;
      take = 0;
      for (int64_t j : order) {
        total += w[size_t(j)];
        ++take;
        if (total >= gamma - 1e-12)
          break;
      }
      take = std::max(take, minBlocks);
      if (maxBlocks > 0)
        take = std::min(take, maxBlocks);
      take = std::min(take, tk);
    }
    out[size_t(i)].assign(order.begin(), order.begin() + take);
    std::sort(out[size_t(i)].begin(), out[size_t(i)].end());
  }
  return out;
}

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
  auto nearest = [&](const float *row) {
    int32_t best = 0;
    double bestScore = -INFINITY;
    for (int64_t j = 0; j < clusters; ++j) {
      double s = 0;
      for (int64_t x = 0; x < headDim; ++x)
        s += double(row[x]) * c[size_t(j * headDim + x)];
      if (s > bestScore) { // strict: ties keep the smaller index
        bestScore = s;
        best = int32_t(j);
      }
    }
    return best;
  };
  RoutingIndex index;
  index.keyCluster.resize(size_t(k.count));
  for (int64_t it = 0; it < iterations; ++it) {
    for (int64_t r = 0; r < k.count; ++r)
      index.keyCluster[size_t(r)] = nearest(k.row(r));
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
  for (int64_t r = 0; r < k.count; ++r)
    index.keyCluster[size_t(r)] = nearest(k.row(r));
  index.queryCluster.resize(size_t(q.count));
  for (int64_t r = 0; r < q.count; ++r)
    index.queryCluster[size_t(r)] = nearest(q.row(r));
  return index;
}

} // namespace tessera::cpu
