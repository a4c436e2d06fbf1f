//===- HeadRoutedEmulatorTest.cpp - head routing's CUDA kernel, emulated --===//
//
// Per-token head routing on CUDA (tessera.h's head_active): kernel/
// Permuted.cuh's permutedAttend with PermArgs::routed, over the tables of
// cpu::routedWalk (each (batch entry, head)'s active rows packed 64 to a
// query tile, each tile's key tiles the union of its rows' runs, masks at
// the rows' own positions; the tiles after them zero the inactive rows),
// against float64: causal, window, A-shape and strided-shard heads (head-
// dependent), GQA (6 heads on 2 kv heads), batch 2, Nq != Nk both ways,
// lengths that are and are not multiples of 64; masks with a head of no
// active row, a head of every row, a tile of one active row, random rows.
// Every output element is checked (inactive pairs: O = 0, LSE = -inf). A
// copy of the kernel broken on purpose (PermutedEmulatorKernels.cpp with
// the patched header: a thread's second row masked by its first row's
// bits) and a walk broken here (each tile's last key tile dropped) must
// fail.
//
//===----------------------------------------------------------------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/Pattern.h"
#include "tessera/cpu/Half.h"
#include "tessera/cpu/RoutedWalk.h"
#include "tessera/kernel/Program.h"

#include "EmuParams.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

namespace permuted_ok {
bool launch(int elem, int headDim, const void *params, const void *args,
            unsigned gx, unsigned gy, unsigned gz);
}
namespace permuted_broken {
bool launch(int elem, int headDim, const void *params, const void *args,
            unsigned gx, unsigned gy, unsigned gz);
}

using namespace tessera;
namespace s = tessera::semantics;
namespace k = tessera::kernel;

namespace {

using Launch = bool (*)(int, int, const void *, const void *, unsigned,
                        unsigned, unsigned);

/// kernel::PermArgs as the host lays it out.
struct PermArgsHost {
  const int64_t *heads;
  const int *tileStart, *tileKey, *tileMask;
  const unsigned long long *masks;
  const int64_t *rowOf, *keyOf, *routed;
};

constexpr int64_t kHeads = 6, kKvHeads = 2;

/// The layer: heads {0, 3} causal, {1, 4} a window (37 back, 20 ahead),
/// {2} an A-shape (4 sinks, 30 back), {5} strided shards (2 shards of 16
/// keys; the shard is the head's).
std::vector<schedule::HeadGroup> layer() {
  using P = s::Pattern;
  return {{P{s::Causal{}}, {0, 3}},
          {P{s::Window{37, 20}}, {1, 4}},
          {P{s::AShape{4, 30, 0}}, {2}},
          {P{s::StridedShards{2, 16, 0}}, {5}}};
}

const s::Pattern &patternOf(const std::vector<schedule::HeadGroup> &groups,
                            int64_t h) {
  for (const auto &g : groups)
    for (int64_t x : g.heads)
      if (x == h)
        return g.pattern;
  static s::Pattern none{s::Skip{}};
  return none;
}

struct Case {
  const char *name;
  int64_t batch, nq, nk;
};

/// head_active [B, nq, H]: in batch entry 0, head 0 has no active row,
/// head 1 every row, head 2 one (row 70: a query tile of one row); the
/// rest are active at random (about 1 in 3).
std::vector<uint8_t> mask(const Case &c) {
  std::mt19937_64 rng(11 + c.nq + 7 * c.nk);
  std::vector<uint8_t> m(size_t(c.batch * c.nq * kHeads));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.nq; ++i)
      for (int64_t h = 0; h < kHeads; ++h) {
        uint8_t on = rng() % 3 == 0;
        if (b == 0 && h == 0)
          on = 0;
        if (b == 0 && h == 1)
          on = 1;
        if (b == 0 && h == 2)
          on = i == 70;
        m[size_t((b * c.nq + i) * kHeads + h)] = on;
      }
  return m;
}

/// Runs `c` through `launch` at (elem, d) with the routed walk (`breakWalk`:
/// each query tile's last key tile dropped); returns the largest error of O
/// against float64 relative to max(1, |O|), and (unless a broken copy
/// runs) checks the LSE of rows whose O is right, and inactive pairs
/// exactly.
double runCase(const Case &c, int elem, int d, Launch launch,
               bool broken = false, bool breakWalk = false) {
  SCOPED_TRACE(c.name);
  const std::vector<schedule::HeadGroup> groups = layer();
  schedule::LayerSchedule sched;
  std::string error;
  EXPECT_TRUE(schedule::buildLayerSchedule(groups, kHeads, sched, error))
      << error;
  const int64_t B = c.batch, nq = c.nq, nk = c.nk;
  const std::vector<uint8_t> active = mask(c);
  cpu::RoutedWalk w;
  EXPECT_EQ(cpu::routedWalk(sched.table(), B, nq, nk, active.data(), w), "");
  EXPECT_GT(w.fullTiles, 0);
  EXPECT_GT(w.partialTiles, 0);
  if (breakWalk) {
    std::vector<int> start{0}, key, maskOf;
    for (size_t x = 0; x + 1 < w.tileStart.size(); ++x) {
      for (int j = w.tileStart[x]; j + 1 < w.tileStart[x + 1]; ++j) {
        key.push_back(w.tileKey[size_t(j)]);
        maskOf.push_back(w.tileMask[size_t(j)]);
      }
      start.push_back(int(key.size()));
    }
    w.tileStart = start;
    w.tileKey = key;
    w.tileMask = maskOf;
  }
  PermArgsHost a{w.heads.data(),
                 w.tileStart.data(),
                 w.tileKey.data(),
                 w.tileMask.data(),
                 reinterpret_cast<const unsigned long long *>(w.masks.data()),
                 w.rowOf.data(),
                 w.keyOf.data(),
                 w.tables.data()};

  const bool f16 = elem == 0;
  auto enc = [&](float f) {
    return f16 ? cpu::floatToF16(f) : cpu::floatToBf16(f);
  };
  auto dec = [&](uint16_t h) {
    return f16 ? cpu::f16ToFloat(h) : cpu::bf16ToFloat(h);
  };
  std::mt19937_64 rng(5 + nq + 3 * nk);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<uint16_t> q(B * nq * kHeads * d), kk(B * nk * kKvHeads * d),
      v(kk.size()), o(q.size(), 0x7777);
  for (auto *x : {&q, &kk, &v})
    for (uint16_t &e : *x)
      e = enc(dist(rng));
  std::vector<float> lse(B * kHeads * nq, 7.0f);
  k::AttnParams p = denseParams(q.data(), kk.data(), v.data(), o.data(),
                                lse.data(), nq, nk, kHeads, kKvHeads, d, true);
  const double scale = 1.0 / std::sqrt(double(d));
  EXPECT_TRUE(launch(elem, d, &p, &a, unsigned(w.gridX),
                     unsigned(w.heads.size()), unsigned(B)));

  const double inf = std::numeric_limits<double>::infinity();
  const int64_t group = kHeads / kKvHeads;
  double err = 0;
  int64_t badInactive = 0; // inactive pairs without O = 0 and LSE = -inf
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < kHeads; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        const size_t row = size_t(((b * nq + i) * kHeads + h) * d);
        const size_t li = size_t((b * kHeads + h) * nq + i);
        if (!active[size_t((b * nq + i) * kHeads + h)]) {
          bool zero = lse[li] == -std::numeric_limits<float>::infinity();
          for (int64_t x = 0; x < d; ++x)
            zero &= o[row + x] == 0;
          badInactive += !zero;
          continue;
        }
        const s::Pattern &pat = patternOf(groups, h);
        std::vector<double> sc(nk, -inf), out(d, 0);
        double m = -inf, l = 0;
        for (int64_t j = 0; j < nk; ++j) {
          if (!s::allowed(pat, i, j, h, nq, nk, kHeads))
            continue;
          const size_t kr = size_t(((b * nk + j) * kKvHeads + h / group) * d);
          double dot = 0;
          for (int64_t x = 0; x < d; ++x)
            dot += double(dec(q[row + x])) * dec(kk[kr + x]);
          sc[j] = dot * scale;
          m = std::max(m, sc[j]);
        }
        for (int64_t j = 0; j < nk; ++j)
          if (sc[j] > -inf) {
            double pj = std::exp(sc[j] - m);
            l += pj;
            const size_t vr = size_t(((b * nk + j) * kKvHeads + h / group) * d);
            for (int64_t x = 0; x < d; ++x)
              out[x] += pj * dec(v[vr + x]);
          }
        double rowErr = 0, norm = 1;
        for (int64_t x = 0; x < d; ++x) {
          double exact = l == 0 ? 0 : out[x] / l;
          rowErr = std::max(rowErr, std::abs(dec(o[row + x]) - exact));
          norm = std::max(norm, std::abs(exact));
        }
        err = std::max(err, rowErr / norm);
        if (l == 0 && !broken) {
          EXPECT_EQ(lse[li], -std::numeric_limits<float>::infinity());
        } else if (l != 0 && rowErr / norm < 2e-2 && !broken) {
          EXPECT_NEAR(lse[li], m + std::log(l), 1e-2) << "row " << i;
        }
      }
  if (!broken) {
    EXPECT_EQ(badInactive, 0) << "inactive pairs not O = 0, LSE = -inf";
  }
  return err;
}

std::vector<Case> cases() {
  return {{"200 x 200, batch 2", 2, 200, 200},
          {"Nq < Nk: 130 x 333", 1, 130, 333},
          {"Nq > Nk: 333 x 150, batch 2", 2, 333, 150},
          {"multiples of 64: 192 x 256", 1, 192, 256}};
}

TEST(HeadRoutedEmulator, MatchesFloat64) {
  for (const Case &c : cases()) {
    const double bf16 = runCase(c, /*bf16*/ 1, 64, permuted_ok::launch);
    const double f16 = runCase(c, /*f16*/ 0, 128, permuted_ok::launch);
    EXPECT_LE(bf16, 2e-2) << c.name;
    EXPECT_LE(f16, 5e-3) << c.name;
    std::printf("%-30s bf16 d64 %.2e  f16 d128 %.2e\n", c.name, bf16, f16);
  }
}

/// The walk packs the active rows: a head with a quarter of its rows active
/// walks about a quarter of the query tiles of the unrouted call, and a
/// head with none walks none (only its zero tiles).
TEST(HeadRoutedEmulator, WalkPacksActiveRows) {
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(layer(), kHeads, sched, error))
      << error;
  const int64_t nq = 1024, nk = 1024;
  std::vector<uint8_t> active(size_t(nq * kHeads), 0);
  for (int64_t i = 0; i < nq; i += 4)
    for (int64_t h = 1; h < kHeads; ++h)
      active[size_t(i * kHeads + h)] = 1;
  cpu::RoutedWalk w;
  ASSERT_EQ(cpu::routedWalk(sched.table(), 1, nq, nk, active.data(), w), "");
  ASSERT_EQ(w.tables.size(), size_t(4 * kHeads));
  for (int64_t y = 0; y < kHeads; ++y) {
    const int64_t *t = &w.tables[size_t(4 * y)];
    const int64_t head = w.heads[size_t(y)];
    EXPECT_EQ(t[1], head == 0 ? 0 : nq / 4) << "head " << head;
    EXPECT_EQ(t[1] + t[3], nq);
  }
  // Head 0 (no active row): 1024 / 64 zero tiles, no query tile.
  EXPECT_EQ(w.gridX, (nq / 4 + 63) / 64 + (3 * nq / 4 + 63) / 64);
  EXPECT_EQ(int64_t(w.tileStart.size()) - 1, (kHeads - 1) * (nq / 4) / 64);
}

TEST(HeadRoutedEmulator, BrokenCopiesAreCaught) {
  double kernel = 0, walk = 0;
  for (const Case &c : cases()) {
    kernel = std::max(kernel, runCase(c, 1, 64, permuted_broken::launch, true));
    walk = std::max(walk, runCase(c, 1, 64, permuted_ok::launch, true, true));
  }
  EXPECT_GT(kernel, 0.1) << "the broken kernel's masks went unnoticed";
  EXPECT_GT(walk, 0.1) << "the broken walk went unnoticed";
  std::printf("broken kernel: largest error %.2e; broken walk %.2e\n", kernel,
              walk);
}

} // namespace
