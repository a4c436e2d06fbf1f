//===- PermutedEmulatorTest.cpp - the permuted kernel under the emulator --===//
//
// kernel/Permuted.cuh's permutedAttend (a head group in its period
// transpose: query and key rows gathered through the slot maps, the walk of
// cpu::permutedWalk at 64 x 64 flattened to key tiles per query tile, FULL
// tiles unmasked and partial ones masked by their bits, O and LSE stored to
// the original rows) against float64: video-DiT's multi-diagonal and grid
// heads and MMInference's prompt + grid heads (prefix) and two captions
// between video tokens (kept ranges), scaled down, GQA (the
// group's heads on two kv heads, interleaved with another group's), batch 2, Nq
// != Nk both ways, a short last block; bf16 at head_dim 64, f16 at 128. A copy
// broken on purpose (the second row of a thread masked by its first row's bits:
// PermutedEmulatorKernels.cpp with the patched header) must fail.
//
//===----------------------------------------------------------------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/Pattern.h"
#include "tessera/cpu/Half.h"
#include "tessera/cpu/Layout.h"
#include "tessera/cpu/Permuted.h"
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

/// kernel::PermArgs as the host lays it out.
struct PermArgsHost {
  const int64_t *heads;
  const int *tileStart, *tileKey, *tileMask;
  const unsigned long long *masks;
  const int64_t *rowOf, *keyOf;
  const int64_t *routed = nullptr; ///< a layout: one walk for every head
};

/// The walk as the kernel reads it: key tiles per query tile, each with
/// the index of its 64 mask rows or -1 (full).
struct Tiles {
  std::vector<int> start{0}, key, mask;
  std::vector<unsigned long long> masks;
};

Tiles flatten(const cpu::PermutedWalk &w, int64_t nk) {
  Tiles t;
  const int64_t kBlocks = (nk + 63) / 64;
  for (size_t i = 0; i + 1 < w.start.size(); ++i) {
    for (int64_t x = w.start[i]; x < w.start[i + 1]; ++x) {
      const layout::PermutedRun &r = w.runs[x];
      for (int64_t j = r.begin; j < std::min(r.end, kBlocks); ++j) {
        t.key.push_back(int(j));
        const uint64_t *m = w.mask(x, j, 64);
        if (!m) {
          t.mask.push_back(-1);
          continue;
        }
        t.mask.push_back(int(t.masks.size() / 64));
        t.masks.insert(t.masks.end(), m, m + 64);
      }
    }
    t.start.push_back(int(t.key.size()));
  }
  return t;
}

struct Case {
  const char *name;
  s::Pattern pattern;
  layout::PeriodTranspose perm;
  int64_t batch, nq, nk;
};

constexpr int64_t kHeads = 4, kKvHeads = 2;

/// Runs `c` through `launch` at (elem, d); returns the largest error of O
/// against float64 relative to max(1, |O|), and checks what must hold
/// whatever the kernel (other heads untouched; LSE within 1e-2 when O is).
double runCase(const Case &c, int elem, int d,
               bool (*launch)(int, int, const void *, const void *, unsigned,
                              unsigned, unsigned)) {
  SCOPED_TRACE(c.name);
  const std::vector<int64_t> group = {1, 3}; // kv heads 0 and 1
  std::vector<schedule::HeadGroup> groups = {{c.pattern, group},
                                             {s::Pattern{s::Causal{}}, {0, 2}}};
  schedule::LayerSchedule sched;
  std::string error;
  EXPECT_TRUE(schedule::buildLayerSchedule(groups, kHeads, sched, error))
      << error;
  const int64_t B = c.batch, nq = c.nq, nk = c.nk;
  cpu::PermutedWalk walk;
  EXPECT_EQ(cpu::permutedWalk(sched.table(), 0, c.perm, nq, nk, 64, 64, walk),
            "");
  Tiles tiles = flatten(walk, nk);
  // Both kinds of tile are walked: full ones unmasked, partial ones by bits.
  const int64_t partial = int64_t(tiles.masks.size() / 64);
  EXPECT_GT(partial, 0);
  EXPECT_GT(int64_t(tiles.key.size()) - partial, 0);
  std::vector<int64_t> rowOf(nq), keyOf(nk);
  for (int64_t x = 0; x < nq; ++x)
    rowOf[x] = c.perm.token(x, nq);
  for (int64_t x = 0; x < nk; ++x)
    keyOf[x] = c.perm.token(x, nk);
  PermArgsHost a{group.data(),      tiles.start.data(), tiles.key.data(),
                 tiles.mask.data(), tiles.masks.data(), rowOf.data(),
                 keyOf.data()};

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
  EXPECT_TRUE(launch(elem, d, &p, &a, unsigned((nq + 63) / 64),
                     unsigned(group.size()), unsigned(B)));

  const double inf = std::numeric_limits<double>::infinity();
  double err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < kHeads; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        const size_t row = size_t(((b * nq + i) * kHeads + h) * d);
        const size_t li = size_t((b * kHeads + h) * nq + i);
        if (h % 2 == 0) { // the other group's heads: not written
          EXPECT_EQ(o[row], 0x7777) << "head " << h;
          EXPECT_EQ(lse[li], 7.0f) << "head " << h;
          continue;
        }
        std::vector<double> sc(nk, -inf), out(d, 0);
        double m = -inf, l = 0;
        for (int64_t j = 0; j < nk; ++j) {
          if (!s::allowed(c.pattern, i, j, h, nq, nk, kHeads))
            continue;
          const size_t kr = size_t(((b * nk + j) * kKvHeads + h / 2) * d);
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
            const size_t vr = size_t(((b * nk + j) * kKvHeads + h / 2) * d);
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
        if (l == 0) {
          EXPECT_EQ(lse[li], -std::numeric_limits<float>::infinity());
        } else if (rowErr / norm < 2e-2) {
          EXPECT_NEAR(lse[li], m + std::log(l), 1e-2) << "row " << i;
        }
      }
  return err;
}

/// The cases: video-DiT's layer 0 heads (multi_diagonal<stride = 1024,
/// width = 32>, grid<stride = 1024, 64, 64>) and MMInference's prompt +
/// grid heads (a 256-token prompt, grid<stride = 1024, 32, 32, phase =
/// 256>, prefix 256), scaled down to about as many frames (16-20) but a
/// period of 16, so that a 64-slot tile holds few residues and the walk
/// has full tiles as well as partial ones.
std::vector<Case> cases() {
  using P = s::Pattern;
  s::IndexSet text;
  text.ranges = {{0, 24}};
  P multi{s::MultiDiagonal{16, {}, 3}};
  P grid{s::Grid{16, 4, 3, 0}};
  P prompt{s::Union{{P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}},
                     P{s::Grid{16, 4, 2, 24}}}}};
  s::IndexSet captions;
  captions.ranges = {{0, 24}, {88, 100}};
  P captionsGrid{
      s::Union{{P{s::VerticalStripe{captions}},
                P{s::HorizontalStripe{captions}}, P{s::Grid{16, 4, 2, 24}}}}};
  P captionsDiagonals{s::Union{{P{s::VerticalStripe{captions}},
                                P{s::HorizontalStripe{captions}}, multi}}};
  return {
      {"multi_diagonal, 300 x 300", multi, {16, 0}, 2, 300, 300},
      {"multi_diagonal, Nq < Nk", multi, {16, 0}, 1, 200, 333},
      {"grid, Nq > Nk", grid, {16, 0}, 2, 333, 272},
      {"grid, 256 x 256", grid, {16, 0}, 1, 256, 256},
      {"prompt and grid, prefix", prompt, {16, 24}, 2, 344, 344},
      {"prompt and grid, prefix, Nq < Nk", prompt, {16, 24}, 1, 280, 344},
      // Interleaved segments: text [0, 24) and [88, 100) between video
      // tokens, kept first; the video sorted by (t - 24) mod 16.
      {"two texts and grid, kept ranges",
       captionsGrid,
       {16, 0, {0, 24, 88, 100}},
       2,
       344,
       344},
      {"two texts and diagonals, kept, Nq < Nk",
       captionsDiagonals,
       {16, 0, {0, 24, 88, 100}},
       1,
       300,
       344},
      {"two texts and grid, kept, Nq > Nk",
       captionsGrid,
       {16, 0, {0, 24, 88, 100}},
       1,
       344,
       290},
  };
}

TEST(PermutedEmulator, MatchesFloat64) {
  for (const Case &c : cases()) {
    const double bf16 = runCase(c, /*bf16*/ 1, 64, permuted_ok::launch);
    const double f16 = runCase(c, /*f16*/ 0, 128, permuted_ok::launch);
    EXPECT_LE(bf16, 2e-2) << c.name;
    EXPECT_LE(f16, 5e-3) << c.name;
    std::printf("%-36s bf16 d64 %.2e  f16 d128 %.2e\n", c.name, bf16, f16);
  }
}

TEST(PermutedEmulator, BrokenCopyIsCaught) {
  double worst = 0;
  for (const Case &c : cases())
    worst = std::max(worst, runCase(c, 1, 64, permuted_broken::launch));
  EXPECT_GT(worst, 0.1) << "the broken kernel's masks went unnoticed";
  std::printf("broken copy: largest error %.2e\n", worst);
}

} // namespace
