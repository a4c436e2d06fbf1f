//===- Timing.h - wall-clock timing for the benchmarks ----------*- C++ -*-===//

#ifndef TESSERA_BENCH_TIMING_H
#define TESSERA_BENCH_TIMING_H

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace tessera::bench {

/// The median wall-clock seconds of `n` runs of `f`.
inline double seconds(const std::function<void()> &f, int n) {
  std::vector<double> t;
  for (int i = 0; i < n; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - a)
            .count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

} // namespace tessera::bench

#endif // TESSERA_BENCH_TIMING_H
