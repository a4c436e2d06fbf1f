//===- PermutedTest.cpp - head groups run in a permuted token order -------===//
//
// The period transpose's closed form against a stable sort by residue, and
// the CPU executor's permuted groups (tessera/cpu/Permuted.h) against the
// same layer run in the original order and against float64: periodic
// families, combinators, a head-dependent pattern, GQA, batches, Nq != Nk
// both ways, empty rows, f32 and bf16.
//
//===----------------------------------------------------------------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/Pattern.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"
#include "tessera/cpu/Layout.h"
#include "tessera/cpu/Permuted.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

using namespace tessera;
namespace s = tessera::semantics;

namespace {

TEST(PeriodTransposeTest, IsTheStableSortByResidue) {
  for (int64_t n = 0; n <= 200; n += 7)
    for (int64_t p = 2; p <= 40; ++p) {
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return a % p < b % p; });
      layout::PeriodTranspose perm{p};
      for (int64_t slot = 0; slot < n; ++slot) {
        ASSERT_EQ(perm.token(slot, n), order[slot]) << "n " << n << " p " << p;
        ASSERT_EQ(perm.slot(order[slot], n), slot) << "n " << n << " p " << p;
      }
    }
  // P dividing N: the (t mod P) * (N / P) + t div P.
  layout::PeriodTranspose frames{1024};
  for (int64_t t : {0, 1, 1023, 1024, 5000, 16383})
    EXPECT_EQ(frames.slot(t, 16384), (t % 1024) * 16 + t / 1024);
}

/// f32 or 16-bit storage with float access.
struct Buffer {
  cpu::DType dtype;
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  Buffer(cpu::DType t, size_t n, float fill) : dtype(t) {
    if (t == cpu::DType::F32)
      f32.assign(n, fill);
    else
      u16.assign(n, t == cpu::DType::F16 ? cpu::floatToF16(fill)
                                         : cpu::floatToBf16(fill));
  }
  void *data() { return dtype == cpu::DType::F32 ? (void *)f32.data()
                                                 : (void *)u16.data(); }
  float at(size_t i) const {
    if (dtype == cpu::DType::F32)
      return f32[i];
    return dtype == cpu::DType::F16 ? cpu::f16ToFloat(u16[i])
                                    : cpu::bf16ToFloat(u16[i]);
  }
  void set(size_t i, float x) {
    if (dtype == cpu::DType::F32)
      f32[i] = x;
    else
      u16[i] = dtype == cpu::DType::F16 ? cpu::floatToF16(x)
                                        : cpu::floatToBf16(x);
  }
};

struct Case {
  const char *name;
  s::Pattern pattern; ///< group 0; the other heads are causal (group 1)
  std::vector<int64_t> groupHeads;
  int64_t period, nq, nk, blk;
  cpu::DType dtype;
};

constexpr int64_t kBatch = 2, kHeads = 4, kKvHeads = 2, kDim = 16;

/// Runs a case: the whole layer in the original order, then group 0 in the
/// period transpose; compares both and a float64 reference.
void runCase(const Case &c) {
  SCOPED_TRACE(c.name);
  std::vector<int64_t> rest;
  for (int64_t h = 0; h < kHeads; ++h)
    if (!std::count(c.groupHeads.begin(), c.groupHeads.end(), h))
      rest.push_back(h);
  std::vector<schedule::HeadGroup> groups = {{c.pattern, c.groupHeads}};
  if (!rest.empty())
    groups.push_back({s::Pattern{s::Causal{}}, rest});
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(groups, kHeads, sched, error))
      << error;

  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> dist(-2, 2);
  size_t qn = kBatch * c.nq * kHeads * kDim, kn = kBatch * c.nk * kKvHeads * kDim;
  Buffer q(c.dtype, qn, 0), k(c.dtype, kn, 0), v(c.dtype, kn, 0);
  for (Buffer *b : {&q, &k, &v})
    for (size_t i = 0; i < (b == &q ? qn : kn); ++i)
      b->set(i, dist(rng));
  Buffer oRef(c.dtype, qn, 0), oPerm(c.dtype, qn, 7.0f);
  std::vector<float> lseRef(kBatch * kHeads * c.nq), lsePerm(lseRef.size(), 7);

  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), c.dtype, kBatch, c.nq, kHeads, kDim);
  args.k = cpu::contiguous(k.data(), c.dtype, kBatch, c.nk, kKvHeads, kDim);
  args.v = cpu::contiguous(v.data(), c.dtype, kBatch, c.nk, kKvHeads, kDim);
  args.o = cpu::contiguous(oRef.data(), c.dtype, kBatch, c.nq, kHeads, kDim);
  args.lse = lseRef.data();
  args.blockQ = args.blockK = c.blk;
  args.numThreads = 1;
  ASSERT_EQ(cpu::runLayer(sched.table(), args), "");
  args.o = cpu::contiguous(oPerm.data(), c.dtype, kBatch, c.nq, kHeads, kDim);
  args.lse = lsePerm.data();
  ASSERT_EQ(cpu::runPermutedGroup(sched.table(), 0, c.period, args), "");

  double tol = c.dtype == cpu::DType::F32 ? 1e-5 : 2e-2;
  double scale = 1.0 / std::sqrt(double(kDim));
  const double inf = std::numeric_limits<double>::infinity();
  double errRef = 0, errExact = 0, norm = 0;
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t h = 0; h < kHeads; ++h)
      for (int64_t i = 0; i < c.nq; ++i) {
        size_t row = ((b * c.nq + i) * kHeads + h) * kDim;
        size_t li = (b * kHeads + h) * c.nq + i;
        bool inGroup = std::count(c.groupHeads.begin(), c.groupHeads.end(), h);
        if (!inGroup) { // other groups' heads are not touched
          ASSERT_EQ(oPerm.at(row), 7.0f) << "head " << h;
          ASSERT_EQ(lsePerm[li], 7.0f) << "head " << h;
          continue;
        }
        // float64: softmax over the allowed keys of original row i.
        std::vector<double> sc(c.nk, -inf), out(kDim, 0);
        double m = -inf, l = 0;
        for (int64_t j = 0; j < c.nk; ++j) {
          if (!s::allowed(c.pattern, i, j, h, c.nq, c.nk, kHeads))
            continue;
          double dot = 0;
          for (int64_t x = 0; x < kDim; ++x)
            dot += double(q.at(row + x)) *
                   k.at(((b * c.nk + j) * kKvHeads + h / 2) * kDim + x);
          sc[j] = dot * scale;
          m = std::max(m, sc[j]);
        }
        for (int64_t j = 0; j < c.nk; ++j)
          if (sc[j] > -inf) {
            double p = std::exp(sc[j] - m);
            l += p;
            for (int64_t x = 0; x < kDim; ++x)
              out[x] += p * v.at(((b * c.nk + j) * kKvHeads + h / 2) * kDim + x);
          }
        if (l == 0) {
          EXPECT_EQ(lsePerm[li], -std::numeric_limits<float>::infinity());
        } else {
          EXPECT_NEAR(lsePerm[li], m + std::log(l), 1e-4) << "row " << i;
          EXPECT_NEAR(lsePerm[li], lseRef[li], 1e-4) << "row " << i;
        }
        for (int64_t x = 0; x < kDim; ++x) {
          double exact = l == 0 ? 0 : out[x] / l;
          errExact = std::max(errExact, std::abs(oPerm.at(row + x) - exact));
          errRef = std::max(errRef, double(std::abs(oPerm.at(row + x) -
                                                    oRef.at(row + x))));
          norm = std::max(norm, std::abs(exact));
        }
      }
  EXPECT_LE(errExact, tol * std::max(1.0, norm));
  EXPECT_LE(errRef, tol * std::max(1.0, norm));
}

TEST(PermutedGroupTest, MatchesTheOriginalOrderAndFloat64) {
  using P = s::Pattern;
  P multi{s::MultiDiagonal{16, {}, 2}};
  P grid{s::Grid{10, 2, 3, 1}};
  P causalDiagonals{s::Intersect{{P{s::Causal{}}, P{s::MultiDiagonal{8, {}, 1}}}}};
  s::IndexSet stripes;
  stripes.period = 32;
  stripes.width = 2;
  P bandAndStripes{s::Union{{P{s::Window{5, 5}}, P{s::VerticalStripe{stripes}}}}};
  P shards{s::StridedShards{2, 4, 0}};
  P listed{s::MultiDiagonal{0, {-24, 0, 48}, 3}};
  std::vector<Case> cases = {
      {"multi_diagonal, N not a multiple of P", multi, {0, 1}, 16, 200, 200,
       16, cpu::DType::F32},
      {"grid, Nq < Nk", grid, {0, 1, 2, 3}, 10, 130, 170, 32,
       cpu::DType::F32},
      {"causal diagonals, Nq > Nk (empty rows)", causalDiagonals, {1, 2}, 8,
       170, 130, 16, cpu::DType::F32},
      {"window and periodic stripes", bandAndStripes, {3}, 32, 128, 128, 16,
       cpu::DType::F32},
      {"strided shards (head-dependent)", shards, {0, 2}, 8, 96, 96, 8,
       cpu::DType::F32},
      {"listed diagonals, bf16", listed, {0, 1}, 24, 150, 150, 16,
       cpu::DType::BF16},
  };
  for (const Case &c : cases)
    runCase(c);
}

TEST(PermutedGroupTest, MultiDiagonalTilesBecomeFullBands) {
  // Diagonals every 16 tokens, 2 on each side, N = 256 in 16 x 16 tiles: in
  // the original order every tile meets a diagonal and none is full (256
  // partial a head); transposed, tile (i, j) holds residues i and j of all
  // 16 frames and is full exactly when they are within 2 (mod 16): 5 full
  // tiles a row, 80 a head, none partial.
  s::Pattern multi{s::MultiDiagonal{16, {}, 2}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule({{multi, {0}}}, 1, sched, error));
  int64_t n = 256;
  std::vector<float> q(n * 8, 0.5f), k(n * 8, 0.25f), v(n * 8, 1.0f),
      o(n * 8);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, n, 1, 8);
  args.k = cpu::contiguous(k.data(), cpu::DType::F32, 1, n, 1, 8);
  args.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, n, 1, 8);
  args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, n, 1, 8);
  args.blockQ = args.blockK = 16;
  args.numThreads = 1;
  cpu::RunStats original, permuted;
  ASSERT_EQ(cpu::runLayer(sched.table(), args, &original), "");
  ASSERT_EQ(cpu::runPermutedGroup(sched.table(), 0, 16, args, &permuted), "");
  EXPECT_EQ(original.tilesFull, 0);
  EXPECT_EQ(original.tilesPartial, 256);
  EXPECT_EQ(permuted.tilesFull, 80);
  EXPECT_EQ(permuted.tilesPartial, 0);
}

TEST(PermutedGroupTest, RefusesWhatItDoesNotRun) {
  s::Pattern multi{s::MultiDiagonal{16, {}, 2}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule({{multi, {0}}}, 1, sched, error));
  std::vector<float> buf(64 * 8, 1.0f);
  cpu::LayerArgs args;
  args.q = args.k = args.v = args.o =
      cpu::contiguous(buf.data(), cpu::DType::F32, 1, 64, 1, 8);
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 0, 1, args),
            "runPermutedGroup: period must be at least 2, got 1");
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 1, 16, args),
            "runPermutedGroup: group 1 is not one of the layer's 1 computed "
            "groups");
  int32_t cu[2] = {0, 64};
  args.seqs.count = 1;
  args.seqs.cuQ = cu;
  EXPECT_NE(cpu::runPermutedGroup(sched.table(), 0, 16, args)
                .find("dense calls only"),
            std::string::npos);
  args.seqs = cpu::Sequences();
  args.o.data = nullptr;
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 0, 16, args),
            "runPermutedGroup: o is a null pointer");
}

} // namespace
