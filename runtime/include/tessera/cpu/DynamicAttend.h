//===- DynamicAttend.h - attention over per-row key lists -------*- C++ -*-===//
//
// The template behind attendKeyLists (tessera/cpu/Dynamic.h): online
// softmax over each row's keys, fp32 with a double normaliser, rows spread
// over threads in contiguous chunks.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_DYNAMICATTEND_H
#define TESSERA_CPU_DYNAMICATTEND_H

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace tessera::cpu {

template <typename KeysOf>
void attendKeyLists(const Rows &q, const Rows &k, const Rows &v, float *o,
                    int64_t oStride, float *lse, int64_t headDim, float scale,
                    KeysOf keysOf, int threads) {
  const int64_t nq = q.count;
  if (threads <= 0)
    threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<int64_t>(threads, std::max<int64_t>(nq, 1)));
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> keys;
    std::vector<double> acc(static_cast<size_t>(headDim));
    for (int64_t r = r0; r < r1; ++r) {
      keys.clear();
      keysOf(r, keys);
      float *out = o + r * oStride;
      if (keys.empty()) {
        std::fill(out, out + headDim, 0.0f);
        if (lse)
          lse[r] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const float *qr = q.row(r);
      double m = -std::numeric_limits<double>::infinity(), l = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t key : keys) {
        const float *kr = k.row(key);
        double s = 0;
        for (int64_t i = 0; i < headDim; ++i)
          s += double(qr[i]) * double(kr[i]);
        s *= scale;
        double mNew = std::max(m, s);
        double corr = std::exp(m - mNew), p = std::exp(s - mNew);
        const float *vr = v.row(key);
        for (int64_t i = 0; i < headDim; ++i)
          acc[size_t(i)] = acc[size_t(i)] * corr + p * double(vr[i]);
        l = l * corr + p;
        m = mNew;
      }
      for (int64_t i = 0; i < headDim; ++i)
        out[i] = float(acc[size_t(i)] / l);
      if (lse)
        lse[r] = float(m + std::log(l));
    }
  };
  std::vector<std::thread> pool;
  int64_t chunk = (nq + threads - 1) / threads;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back(work, std::min(nq, t * chunk),
                      std::min(nq, (t + 1) * chunk));
  work(0, std::min(nq, chunk));
  for (std::thread &th : pool)
    th.join();
}

} // namespace tessera::cpu

#endif // TESSERA_CPU_DYNAMICATTEND_H
