//===- PermutedTest.cpp - head groups run in a permuted token order -------===//
//
// The period transpose's closed form against a stable sort by residue, its
// closed-form runs (layout::PermutedRuns) against every pair's predicate,
// and the CPU executor's permuted groups (tessera/cpu/Permuted.h) against the
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
#include <functional>
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
  // A prefix stays in place; the rest is sorted by its own residues.
  for (int64_t n = 0; n <= 120; n += 11)
    for (int64_t p = 2; p <= 20; p += 3)
      for (int64_t prefix : {1, 5, 40}) {
        std::vector<int64_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        int64_t kept = std::min(prefix, n);
        std::stable_sort(order.begin() + kept, order.end(),
                         [&](int64_t a, int64_t b) {
                           return (a - kept) % p < (b - kept) % p;
                         });
        layout::PeriodTranspose perm{p, prefix};
        for (int64_t slot = 0; slot < n; ++slot) {
          ASSERT_EQ(perm.token(slot, n), order[slot])
              << "n " << n << " p " << p << " prefix " << prefix;
          ASSERT_EQ(perm.slot(order[slot], n), slot)
              << "n " << n << " p " << p << " prefix " << prefix;
        }
      }
  // P dividing N: the (t mod P) * (N / P) + t div P.
  // (Kept ranges: PeriodTransposeTest.KeptRangesAreInverseBijections.)
  layout::PeriodTranspose frames{1024};
  for (int64_t t : {0, 1, 1023, 1024, 5000, 16383})
    EXPECT_EQ(frames.slot(t, 16384), (t % 1024) * 16 + t / 1024);
}

/// The order of the tokens [0, n) with kept ranges [a0, b0, a1, b1, ...]
/// (each clipped to n), written from the definition rather than from
/// Layout.h: the kept tokens in order, then the others sorted stably by
/// (t - e) mod p, e the first token not kept.
std::vector<int64_t> keptOrder(int64_t n, int64_t p,
                               const std::vector<int64_t> &kept) {
  std::vector<bool> isKept(n, false);
  std::vector<int64_t> order, rest;
  for (size_t i = 0; i < kept.size(); i += 2)
    for (int64_t t = kept[i]; t < std::min(kept[i + 1], n); ++t) {
      isKept[t] = true;
      order.push_back(t);
    }
  for (int64_t t = 0; t < n; ++t)
    if (!isKept[t])
      rest.push_back(t);
  int64_t e = rest.empty() ? 0 : rest.front();
  auto res = [&](int64_t t) { return ((t - e) % p + p) % p; };
  std::stable_sort(rest.begin(), rest.end(),
                   [&](int64_t a, int64_t b) { return res(a) < res(b); });
  order.insert(order.end(), rest.begin(), rest.end());
  return order;
}

TEST(PeriodTransposeTest, KeptRangesAreInverseBijections) {
  // Random kept ranges (sorted, disjoint, not touching, some past N, some
  // cut by N) and random N: slot and token are inverse bijections of
  // [0, N), and equal to keptOrder.
  std::mt19937_64 rng(23);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 400; ++trial) {
    int64_t p = pick(2, 40), n = pick(0, 300);
    std::vector<int64_t> kept;
    int64_t at = pick(0, 30), ranges = pick(1, 6);
    for (int64_t r = 0; r < ranges; ++r) {
      int64_t len = pick(1, 60);
      kept.push_back(at);
      kept.push_back(at + len);
      at += len + pick(1, 90);
    }
    if (kept.size() == 2 && kept[0] == 0)
      kept[0] = 1; // [0, S] is spelled as a prefix
    layout::PeriodTranspose perm{p, 0, kept};
    ASSERT_EQ(layout::layoutReason(perm), "");
    std::vector<int64_t> order = keptOrder(n, p, kept);
    ASSERT_EQ(int64_t(order.size()), n);
    std::vector<bool> seen(n, false);
    for (int64_t s = 0; s < n; ++s) {
      int64_t t = perm.token(s, n);
      ASSERT_EQ(t, order[s]) << "trial " << trial << " n " << n << " s " << s;
      ASSERT_EQ(perm.slot(t, n), s) << "trial " << trial << " n " << n;
      ASSERT_FALSE(seen[t]);
      seen[t] = true;
    }
  }
  // The layer: text 200, two frames of 1024, text 100, frames.
  layout::PeriodTranspose mm{1024, 0, {0, 200, 2248, 2348}};
  int64_t n = 2348 + 3 * 1024 + 17;
  EXPECT_EQ(mm.keptCount(n), 300);
  EXPECT_EQ(mm.slot(2300, n), 252); // text 2, its 53rd token
  // Residues (t - 200) mod 1024 of the video tokens: residue 0 holds 200,
  // 1224 (first segment), 3272, 4296, 5320 (second; 2248 is text), residue
  // 1 holds 201, 1225, 3273, ...
  EXPECT_EQ(mm.slot(200, n), 300);
  EXPECT_EQ(mm.slot(1224, n), 301);
  EXPECT_EQ(mm.slot(3272, n), 302);
  EXPECT_EQ(mm.token(307, n), 3273);
  // A prefix written as kept ranges is the prefix.
  layout::PeriodTranspose asPrefix{16, 0, {0, 12}}, prefix{16, 12};
  for (int64_t t = 0; t < 100; ++t)
    ASSERT_EQ(asPrefix.slot(t, 100), prefix.slot(t, 100));
  // Bad ranges are named.
  auto why = [](std::vector<int64_t> kept, int64_t prefix = 0) {
    return layout::layoutReason(layout::PeriodTranspose{16, prefix, kept});
  };
  EXPECT_EQ(why({5, 10, 10, 20}), "kept range 1 [10, 20) overlaps, touches "
                                  "or precedes the range before it");
  EXPECT_EQ(why({5, 10, 7, 20}), "kept range 1 [7, 20) overlaps, touches or "
                                 "precedes the range before it");
  EXPECT_EQ(why({5, 5}), "kept range 0 [5, 5) is empty");
  EXPECT_EQ(why({-1, 5}), "kept range 0 [-1, 5) is outside [0, 2^40]");
  EXPECT_EQ(why({5, 10, 20}), "kept must hold [begin, end) pairs, got 3 "
                              "values");
  EXPECT_EQ(why({5, 10}, 3),
            "a prefix and kept ranges together (prefix S is kept [0, S])");
  EXPECT_EQ(why({0, 10}), "kept [0, 10] is a prefix: give prefix 10");
  std::vector<int64_t> many;
  for (int64_t r = 0; r <= layout::kMaxKeptRanges; ++r)
    many.insert(many.end(), {2 * r + 1, 2 * r + 2});
  EXPECT_EQ(why(many), "65 kept ranges, more than the limit of 64");
  many.resize(2 * layout::kMaxKeptRanges);
  EXPECT_EQ(why(many), "");
}

/// The class of every tile of `pattern` for `head` in the period transpose
/// of p (the first `prefix` tokens of each sequence kept in place), from
/// the reference predicate on every pair and a stable sort by residue (not
/// from Layout.h): 0 empty, 1 partial, 2 full.
std::vector<int> referenceTiles(const s::Pattern &pattern, int64_t head,
                                int64_t numHeads, int64_t p, int64_t nq,
                                int64_t nk, int64_t bq, int64_t bk,
                                int64_t prefix = 0) {
  auto sorted = [&](int64_t n) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    int64_t kept = std::min(prefix, n);
    std::stable_sort(
        order.begin() + kept, order.end(),
        [&](int64_t a, int64_t b) { return (a - kept) % p < (b - kept) % p; });
    return order;
  };
  std::vector<int64_t> qTok = sorted(nq), kTok = sorted(nk);
  int64_t qBlocks = (nq + bq - 1) / bq, kBlocks = (nk + bk - 1) / bk;
  std::vector<int64_t> count(qBlocks * kBlocks, 0);
  for (int64_t x = 0; x < nq; ++x)
    for (int64_t y = 0; y < nk; ++y)
      count[(x / bq) * kBlocks + y / bk] +=
          s::allowed(pattern, qTok[x], kTok[y], head, nq, nk, numHeads);
  std::vector<int> cls(count.size());
  for (int64_t i = 0; i < qBlocks; ++i)
    for (int64_t j = 0; j < kBlocks; ++j) {
      int64_t c = count[i * kBlocks + j];
      int64_t pairs = std::min(bq, nq - i * bq) * std::min(bk, nk - j * bk);
      cls[i * kBlocks + j] = c == 0 ? 0 : (c == pairs ? 2 : 1);
    }
  return cls;
}

/// The same classes from the closed-form runs; checks the runs are sorted,
/// disjoint and in range on the way.
std::vector<int> closedFormTiles(const layout::PermutedRuns &pr) {
  int64_t kBlocks = (pr.nk + pr.bk - 1) / pr.bk;
  std::vector<int> cls(pr.queryBlocks() * kBlocks, 0);
  for (int64_t i = 0; i < pr.queryBlocks(); ++i) {
    std::vector<layout::PermutedRun> runs;
    pr.runs(i, runs);
    int64_t at = 0;
    for (const layout::PermutedRun &r : runs) {
      EXPECT_LE(at, r.begin) << "block " << i;
      EXPECT_LT(r.begin, r.end) << "block " << i;
      EXPECT_LE(r.end, kBlocks) << "block " << i;
      for (int64_t j = r.begin; j < std::min(r.end, kBlocks); ++j)
        cls[i * kBlocks + j] = r.full ? 2 : 1;
      at = r.end;
    }
  }
  return cls;
}

/// The periodic index set {x : (x - phase) mod period < width}.
s::IndexSet periodic(int64_t period, int64_t width, int64_t phase) {
  s::IndexSet set;
  set.period = period;
  set.width = width;
  set.phase = phase;
  return set;
}

TEST(PermutedRunsTest, ClosedFormMatchesEveryPair) {
  using P = s::Pattern;
  struct RunCase {
    const char *name;
    P pattern;
    int64_t period;
  };
  std::vector<RunCase> cases = {
      {"multi_diagonal", P{s::MultiDiagonal{16, {}, 2}}, 16},
      {"multi_diagonal, a multiple of its stride",
       P{s::MultiDiagonal{8, {}, 1}}, 24},
      {"grid with a phase", P{s::Grid{10, 2, 3, 7}}, 10},
      {"grid, slash lines only", P{s::Grid{12, 0, 5, 3}}, 12},
      {"vertical stripes", P{s::VerticalStripe{periodic(9, 2, 4)}}, 9},
      {"horizontal stripes", P{s::HorizontalStripe{periodic(6, 1, 2)}}, 18},
      {"strided shards", P{s::StridedShards{4, 3, 1}}, 12},
      {"union of diagonals and stripes",
       P{s::Union{{P{s::MultiDiagonal{12, {}, 1}},
                   P{s::VerticalStripe{periodic(12, 2, 0)}}}}},
       12},
      {"intersection of grid and shards",
       P{s::Intersect{{P{s::Grid{8, 2, 2, 1}}, P{s::StridedShards{2, 4, 0}}}}},
       8},
      {"diagonals less stripes",
       P{s::Difference{{P{s::MultiDiagonal{10, {}, 3}},
                        P{s::HorizontalStripe{periodic(5, 2, 1)}}}}},
       10},
  };
  struct Shape {
    int64_t nq, nk, bq, bk;
  };
  std::vector<Shape> shapes = {{96, 96, 8, 8},   {100, 100, 16, 8},
                               {70, 130, 8, 16}, {130, 70, 32, 4},
                               {7, 11, 4, 4},    {200, 200, 64, 64}};
  constexpr int64_t kNumHeads = 4;
  for (const RunCase &c : cases) {
    schedule::Program program;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(c.pattern, program, error)) << error;
    for (const Shape &sh : shapes)
      for (int64_t head : {0, 3}) {
        SCOPED_TRACE(std::string(c.name) + " nq " + std::to_string(sh.nq) +
                     " nk " + std::to_string(sh.nk) + " bq " +
                     std::to_string(sh.bq) + " bk " + std::to_string(sh.bk) +
                     " head " + std::to_string(head));
        ASSERT_EQ(layout::residueOnlyReason(program.nodes.data(),
                                            program.nodes.size(), c.period,
                                            head),
                  "");
        // Without prefix the lengths and the data change nothing.
        ASSERT_EQ(layout::closedFormReason(
                      program.nodes.data(), program.nodes.size(),
                      program.data.data(), layout::PeriodTranspose{c.period},
                      head, sh.nq, sh.nk),
                  "");
        layout::PermutedRuns pr{program.nodes.data(),
                                int64_t(program.nodes.size()),
                                layout::PeriodTranspose{c.period},
                                sh.nq,
                                sh.nk,
                                sh.bq,
                                sh.bk,
                                head};
        ASSERT_EQ(closedFormTiles(pr),
                  referenceTiles(c.pattern, head, kNumHeads, c.period, sh.nq,
                                 sh.nk, sh.bq, sh.bk));
      }
  }
}

TEST(PermutedRunsTest, PrefixClosedFormMatchesEveryPair) {
  // Segment groupings: a prompt of S tokens in place, the rest transposed.
  // Every quadrant (prompt / segment rows x prompt / segment keys) with
  // each leaf all, none or residue-only has closed-form runs; each tile's
  // class is checked against every pair. S = 12 is not a multiple of the
  // blocks of 8 or 16 (blocks straddle the prompt's end) and is one of 4
  // and 6; 130 x 70 puts negative positions on the prompt rows.
  using P = s::Pattern;
  constexpr int64_t kS = 12;
  s::IndexSet text;
  text.ranges = {{0, kS}};
  struct PrefixCase {
    const char *name;
    P pattern;
    int64_t period, prefix;
    bool rowRanges; ///< horizontal stripe ranges: not closed when Nq > Nk
  };
  std::vector<PrefixCase> cases = {
      {"MMInference grid: prompt global, grid lines from the prompt's end",
       P{s::Union{{P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}},
                   P{s::Grid{16, 1, 2, kS}}}}},
       16, kS, true},
      {"prompt keys + diagonals (prompt rows see diagonals too)",
       P{s::Union{
           {P{s::VerticalStripe{text}}, P{s::MultiDiagonal{16, {}, 2}}}}},
       16, kS, false},
      {"diagonals less the prompt keys",
       P{s::Difference{
           {P{s::MultiDiagonal{16, {}, 1}}, P{s::VerticalStripe{text}}}}},
       16, kS, false},
      {"diagonals alone, prefix 7 (residues in every quadrant)",
       P{s::MultiDiagonal{16, {}, 2}}, 16, 7, false},
      {"diagonals, a prompt of five periods (key blocks of every residue)",
       P{s::MultiDiagonal{8, {}, 1}}, 8, 40, false},
      {"prompt rows + head-dependent shards",
       P{s::Union{
           {P{s::HorizontalStripe{text}}, P{s::StridedShards{2, 4, 0}}}}},
       8, kS, true},
      {"prompt keys + periodic rows, period a multiple of the stripes'",
       P{s::Union{{P{s::VerticalStripe{text}},
                   P{s::HorizontalStripe{periodic(8, 2, 1)}}}}},
       24, kS, false},
  };
  struct Shape {
    int64_t nq, nk, bq, bk;
  };
  std::vector<Shape> shapes = {
      {96, 96, 8, 8},   {100, 100, 16, 8}, {96, 96, 4, 6},
      {70, 130, 8, 16}, {130, 70, 16, 4},  {26, 26, 8, 8}, // 14 after S: < P
      {7, 11, 4, 4},    {12, 40, 4, 8},    {200, 200, 64, 64},
      {20, 26, 4, 4}}; // 0 < Nk - Nq < S: the row ranges cut the prompt rows
  constexpr int64_t kNumHeads = 4;
  int64_t closed = 0;
  for (const PrefixCase &c : cases) {
    schedule::Program program;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(c.pattern, program, error)) << error;
    for (const Shape &sh : shapes)
      for (int64_t head : {0, 3}) {
        SCOPED_TRACE(std::string(c.name) + " nq " + std::to_string(sh.nq) +
                     " nk " + std::to_string(sh.nk) + " bq " +
                     std::to_string(sh.bq) + " bk " + std::to_string(sh.bk) +
                     " head " + std::to_string(head));
        layout::PeriodTranspose perm{c.period, c.prefix};
        std::string why = layout::closedFormReason(
            program.nodes.data(), program.nodes.size(), program.data.data(),
            perm, head, sh.nq, sh.nk);
        // Row ranges [0, S) are constant on the prompt rows (positions
        // [shift, shift + min(S, Nq))) and the segment rows (from shift +
        // S) only when the shift Nk - Nq is 0 or more and the prompt rows
        // lie all inside or all outside [0, S): else no closed form (a
        // longer query sequence puts segment rows inside [0, S); a shift
        // below S cuts the prompt rows).
        int64_t shift = sh.nk - sh.nq;
        bool rowsConstant =
            shift >= 0 &&
            (shift + std::min(c.prefix, sh.nq) <= c.prefix || shift >= c.prefix);
        bool expectClosed = !c.rowRanges || rowsConstant;
        ASSERT_EQ(why.empty(), expectClosed) << why;
        if (!why.empty())
          continue;
        ++closed;
        layout::PermutedRuns pr{program.nodes.data(),
                                int64_t(program.nodes.size()),
                                perm,
                                sh.nq,
                                sh.nk,
                                sh.bq,
                                sh.bk,
                                head,
                                program.data.data()};
        std::vector<int> ref =
            referenceTiles(c.pattern, head, kNumHeads, c.period, sh.nq, sh.nk,
                           sh.bq, sh.bk, c.prefix);
        ASSERT_EQ(closedFormTiles(pr), ref);
        int64_t visited, full, refVisited = 0, refFull = 0;
        pr.countTiles(visited, full);
        for (int cls : ref) {
          refVisited += cls != 0;
          refFull += cls == 2;
        }
        EXPECT_EQ(visited, refVisited);
        EXPECT_EQ(full, refFull);
      }
  }
  // Not closed: the two cases with row ranges at 130 x 70 and at 20 x 26.
  EXPECT_EQ(closed, 2 * (int64_t(cases.size()) * int64_t(shapes.size()) - 4));
}

TEST(PermutedRunsTest, PrefixRandomTreesMatchEveryPair) {
  // Random combinator trees of prompt ranges, bands, sinks, periodic and
  // head-dependent leaves: wherever closedFormReason accepts a prefixed
  // transpose, every tile's class matches every pair; and a fair share of
  // the trees is accepted (else the test would check nothing).
  using P = s::Pattern;
  std::mt19937_64 rng(23);
  auto pick = [&](int64_t n) { return int64_t(rng() % uint64_t(n)); };
  constexpr int64_t kPeriod = 12;
  std::function<P(int)> tree = [&](int depth) -> P {
    if (depth > 0 && pick(3) == 0) {
      std::vector<P> parts;
      for (int64_t i = 0, n = 2 + pick(2); i < n; ++i)
        parts.push_back(tree(depth - 1));
      switch (pick(3)) {
      case 0:
        return P{s::Union{parts}};
      case 1:
        return P{s::Intersect{parts}};
      default:
        return P{s::Difference{{parts[0], parts[1]}}};
      }
    }
    s::IndexSet set;
    switch (pick(9)) {
    case 0:
      return P{s::Window{pick(30), pick(30)}};
    case 1:
      return P{s::Causal{}};
    case 2:
      return P{s::Sink{1 + pick(20)}};
    case 3:
      return P{s::MultiDiagonal{kPeriod, {}, pick(3)}};
    case 4:
      return P{s::Grid{kPeriod, 1 + pick(2), pick(3), pick(kPeriod)}};
    case 5:
      return P{s::StridedShards{1 + pick(3), 1 + pick(2), pick(3)}};
    case 6:
      set.period = pick(2) ? kPeriod : kPeriod / 2;
      set.width = 1 + pick(set.period - 1);
      set.phase = pick(set.period);
      return pick(2) ? P{s::VerticalStripe{set}} : P{s::HorizontalStripe{set}};
    default: // a prompt's ranges, sometimes past the prefix
      set.ranges = {{0, pick(4) ? 10 : 1 + pick(30)}};
      return pick(2) ? P{s::VerticalStripe{set}} : P{s::HorizontalStripe{set}};
    }
  };
  struct Shape {
    int64_t nq, nk, bq, bk;
  };
  std::vector<Shape> shapes = {
      {60, 60, 8, 8}, {50, 77, 16, 4}, {77, 50, 4, 16}, {30, 30, 32, 32}};
  int64_t trees = 300, accepted = 0;
  for (int64_t t = 0; t < trees; ++t) {
    P pattern = tree(3);
    schedule::Program program;
    std::string error;
    if (!schedule::lowerPattern(pattern, program, error))
      continue; // too deep for the kernel's stack
    for (const Shape &sh : shapes) {
      layout::PeriodTranspose perm{kPeriod, 10};
      int64_t head = pick(4);
      if (!layout::closedFormReason(program.nodes.data(), program.nodes.size(),
                                    program.data.data(), perm, head, sh.nq,
                                    sh.nk)
               .empty())
        continue;
      ++accepted;
      SCOPED_TRACE("tree " + std::to_string(t) + " nq " +
                   std::to_string(sh.nq) + " nk " + std::to_string(sh.nk));
      layout::PermutedRuns pr{program.nodes.data(),
                              int64_t(program.nodes.size()),
                              perm,
                              sh.nq,
                              sh.nk,
                              sh.bq,
                              sh.bk,
                              head,
                              program.data.data()};
      ASSERT_EQ(closedFormTiles(pr),
                referenceTiles(pattern, head, 4, kPeriod, sh.nq, sh.nk, sh.bq,
                               sh.bk, perm.prefix));
    }
  }
  EXPECT_GE(accepted, trees * int64_t(shapes.size()) / 5);
}

TEST(PermutedRunsTest, PrefixNamesTheLeafAndTheQuadrant) {
  using P = s::Pattern;
  s::IndexSet text, wider;
  text.ranges = {{0, 12}};
  wider.ranges = {{0, 20}};
  auto reason = [](const P &pattern, int64_t n) {
    schedule::Program program;
    std::string error;
    EXPECT_TRUE(schedule::lowerPattern(pattern, program, error)) << error;
    return layout::closedFormReason(program.nodes.data(), program.nodes.size(),
                                    program.data.data(),
                                    layout::PeriodTranspose{16, 12}, 0, n, n);
  };
  EXPECT_EQ(
      reason(P{s::Union{{P{s::VerticalStripe{text}},
                         P{s::HorizontalStripe{text}}, P{s::Window{3, 3}}}}},
             100),
      "a band leaf (causal, window, sink): not periodic, and neither "
      "all nor none of the segment rows x segment keys (prefix 12)");
  // Key ranges reaching past the prompt: neither all nor none of the
  // segment's keys.
  EXPECT_EQ(reason(P{s::Union{{P{s::VerticalStripe{wider}},
                               P{s::Grid{16, 1, 2, 12}}}}},
                   100),
            "a listed-ranges leaf (listed diagonals or stripe ranges): not "
            "periodic, and neither all nor none of the prompt rows x "
            "segment keys (prefix 12)");
  // A period that does not divide the layout's.
  EXPECT_EQ(reason(P{s::Union{{P{s::VerticalStripe{text}},
                               P{s::MultiDiagonal{24, {}, 1}}}}},
                   100),
            "a periodic leaf of period 24 that does not divide 16, and "
            "neither all nor none of the prompt rows x segment keys "
            "(prefix 12)");
  // Within the prompt only (N <= S), the window is all of it.
  EXPECT_EQ(reason(P{s::Window{20, 20}}, 12), "");
}

TEST(PermutedRunsTest, NamesWhatIsNotResidueOnly) {
  using P = s::Pattern;
  auto reason = [](const P &pattern, int64_t period) {
    schedule::Program program;
    std::string error;
    EXPECT_TRUE(schedule::lowerPattern(pattern, program, error)) << error;
    return layout::residueOnlyReason(program.nodes.data(),
                                     program.nodes.size(), period, 0);
  };
  EXPECT_EQ(reason(P{s::MultiDiagonal{16, {}, 2}}, 24),
            "a periodic leaf of period 16 that does not divide 24");
  EXPECT_EQ(reason(P{s::Union{{P{s::Window{5, 5}},
                               P{s::MultiDiagonal{16, {}, 2}}}}},
                   16),
            "a band leaf (causal, window, sink): not periodic");
  EXPECT_EQ(reason(P{s::MultiDiagonal{0, {-24, 0, 48}, 3}}, 24),
            "a listed-ranges leaf (listed diagonals or stripe ranges): not "
            "periodic");
  EXPECT_EQ(reason(P{s::StridedShards{4, 3, 0}}, 8),
            "strided shards repeating every 3 x 4 keys, which does not "
            "divide 8");
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
  bool closedForm = true; ///< the walk's runs come in closed form
  int64_t prefix = 0;     ///< tokens kept in place before the transpose
  std::vector<int64_t> kept = {}; ///< kept ranges (interleaved segments)
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
  cpu::PermutedInfo info;
  layout::PeriodTranspose perm{c.period, c.prefix, c.kept};
  ASSERT_EQ(cpu::runPermutedGroup(sched.table(), 0, perm, args, nullptr,
                                  &info),
            "");
  EXPECT_EQ(info.closedForm, c.closedForm) << info.why;
  // Three threads write the same bits as one.
  Buffer oThreads(c.dtype, qn, 7.0f);
  std::vector<float> lseThreads(lseRef.size(), 7);
  args.o =
      cpu::contiguous(oThreads.data(), c.dtype, kBatch, c.nq, kHeads, kDim);
  args.lse = lseThreads.data();
  args.numThreads = 3;
  ASSERT_EQ(cpu::runPermutedGroup(sched.table(), 0, perm, args), "");
  for (size_t i = 0; i < qn; ++i)
    ASSERT_EQ(oThreads.at(i), oPerm.at(i)) << "element " << i;
  ASSERT_EQ(lseThreads, lsePerm);

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
  s::IndexSet text;
  text.ranges = {{0, 12}};
  P promptAndGrid{s::Union{{P{s::VerticalStripe{text}},
                            P{s::HorizontalStripe{text}},
                            P{s::Grid{16, 1, 2, 12}}}}};
  std::vector<Case> cases = {
      {"multi_diagonal, N not a multiple of P", multi, {0, 1}, 16, 200, 200,
       16, cpu::DType::F32},
      {"grid, Nq < Nk", grid, {0, 1, 2, 3}, 10, 130, 170, 32,
       cpu::DType::F32},
      {"causal diagonals, Nq > Nk (empty rows)", causalDiagonals, {1, 2}, 8,
       170, 130, 16, cpu::DType::F32, /*closedForm=*/false},
      {"window and periodic stripes", bandAndStripes, {3}, 32, 128, 128, 16,
       cpu::DType::F32, /*closedForm=*/false},
      {"strided shards (head-dependent)", shards, {0, 2}, 8, 96, 96, 8,
       cpu::DType::F32},
      // Heads of one group with different masks (shard 0 and shard 1;
      // shifted groups' shift on either side of H / 2): each class of
      // equal masks walks its own runs.
      {"strided shards, two shards in one group", shards, {0, 1, 3}, 8, 96,
       96, 8, cpu::DType::F32},
      {"shifted groups across the heads' halves", P{s::ShiftedGroups{8, 4}},
       {1, 2}, 8, 80, 72, 8, cpu::DType::F32, /*closedForm=*/false},
      {"listed diagonals, bf16", listed, {0, 1}, 24, 150, 150, 16,
       cpu::DType::BF16, /*closedForm=*/false},
      {"grid, period a multiple of the stride, bf16", grid, {1, 3}, 20, 150,
       110, 16, cpu::DType::BF16},
      {"prompt + grid, prompt kept in place, Nq < Nk", promptAndGrid, {0, 2},
       16, 140, 172, 16, cpu::DType::F32, /*closedForm=*/true,
       /*prefix=*/12},
      {"prompt + grid, blocks straddling the prompt's end", promptAndGrid,
       {1, 3}, 16, 150, 150, 8, cpu::DType::BF16, /*closedForm=*/true,
       /*prefix=*/12},
      // The prompt's row ranges cut the segment rows of a longer query
      // sequence (positions Nk - Nq before theirs): classified pair by pair.
      {"prompt + grid, Nq > Nk (no closed form)", promptAndGrid, {0, 1}, 16,
       172, 140, 16, cpu::DType::F32, /*closedForm=*/false, /*prefix=*/12},
      {"multi_diagonal with a prefix, Nq > Nk", multi, {3}, 16, 190, 150, 16,
       cpu::DType::F32, /*closedForm=*/true, /*prefix=*/7},
  };
  for (const Case &c : cases)
    runCase(c);
}

TEST(PermutedGroupTest, MMInferenceGridLayerInClosedForm) {
  // patterns/mminference-video.mlir's grid heads: a 256-token global
  // prompt, then grid lines every 1024 tokens from the prompt's end, in
  // `period_transpose<period = 1024, prefix = 256>`, against float64 and
  // the original order. The runs come in closed form (PermutedInfo). 2604
  // tokens: two frames and 300 tokens after the prompt; tiles of 64 (the
  // prompt's end a block boundary) and of 48 (blocks straddling it), the
  // second with Nq < Nk.
  using P = s::Pattern;
  s::IndexSet prompt;
  prompt.ranges = {{0, 256}};
  P grid{s::Union{{P{s::VerticalStripe{prompt}},
                   P{s::HorizontalStripe{prompt}},
                   P{s::Grid{1024, 32, 32, 256}}}}};
  Case tiles64{"mminference grid heads, tiles of 64", grid, {0, 1}, 1024,
               2604, 2604, 64, cpu::DType::F32, /*closedForm=*/true,
               /*prefix=*/256};
  Case tiles48{"mminference grid heads, tiles of 48, Nq < Nk, bf16", grid,
               {2}, 1024, 1500, 1780, 48, cpu::DType::BF16,
               /*closedForm=*/true, /*prefix=*/256};
  runCase(tiles64);
  runCase(tiles48);
}

TEST(PermutedGroupTest, InterleavedTextAndFrames) {
  // Interleaved modalities: text [0, 200), two frames of 256 video tokens,
  // text [712, 812), then 1.5 frames (N = 1200, not a multiple of P), in
  // `period_transpose<period = 256, kept = [0, 200, 712, 812]>`: the text
  // first, then the video tokens of both segments sorted by the residue of
  // their original position (one band of residues for both segments). Grid
  // and multi-diagonal heads plus the text stripes, against float64 and
  // the original order; Nq < Nk and Nq > Nk; tiles of 64 and 48 (blocks
  // straddling the text's end). The runs are classified pair by pair.
  using P = s::Pattern;
  s::IndexSet text;
  text.ranges = {{0, 200}, {712, 812}};
  P textStripes[2] = {P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}}};
  P grid{
      s::Union{{textStripes[0], textStripes[1], P{s::Grid{256, 8, 8, 200}}}}};
  P diagonals{s::Union{
      {textStripes[0], textStripes[1], P{s::MultiDiagonal{256, {}, 4}}}}};
  std::vector<int64_t> kept = {0, 200, 712, 812};
  std::vector<Case> cases = {
      {"interleaved grid heads, tiles of 64",
       grid,
       {0, 1},
       256,
       1200,
       1200,
       64,
       cpu::DType::F32,
       /*closedForm=*/false,
       0,
       kept},
      {"interleaved diagonal heads, Nq < Nk, tiles of 48, bf16",
       diagonals,
       {2},
       256,
       1000,
       1200,
       48,
       cpu::DType::BF16,
       false,
       0,
       kept},
      {"interleaved grid heads, Nq > Nk (ranges past Nk)",
       grid,
       {1, 3},
       256,
       1200,
       760,
       64,
       cpu::DType::F32,
       false,
       0,
       kept},
  };
  // Video first: the first kept range starts after token 0 (the residues
  // count from e = 0), and keys that end before the first range (every
  // range clipped away on the keys' side).
  s::IndexSet late;
  late.ranges = {{300, 400}, {900, 950}};
  P lateGrid{s::Union{{P{s::VerticalStripe{late}}, P{s::HorizontalStripe{late}},
                       P{s::Grid{256, 8, 8, 0}}}}};
  std::vector<int64_t> lateKept = {300, 400, 900, 950};
  cases.push_back({"video first, Nq < Nk",
                   lateGrid,
                   {0, 3},
                   256,
                   1000,
                   1200,
                   64,
                   cpu::DType::F32,
                   false,
                   0,
                   lateKept});
  cases.push_back({"video first, keys before the first range, Nq > Nk",
                   lateGrid,
                   {1},
                   256,
                   1000,
                   280,
                   64,
                   cpu::DType::BF16,
                   false,
                   0,
                   lateKept});
  for (const Case &c : cases)
    runCase(c);
}

TEST(PermutedGroupTest, InterleavedWalkMatchesEveryPair) {
  // cpu::permutedWalk with kept ranges (what the CUDA permuted kernel's
  // host tables come from) against the tiles of keptOrder's order and the
  // reference predicate; and the interleaved layout visits fewer tiles
  // than the original order for the diagonal heads.
  using P = s::Pattern;
  s::IndexSet text;
  text.ranges = {{0, 20}, {89, 101}};
  P diagonals{
      s::Union{{P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}},
                P{s::MultiDiagonal{32, {}, 1}}}}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(
      schedule::buildLayerSchedule({{diagonals, {0}}}, 1, sched, error));
  layout::PeriodTranspose perm{32, 0, {0, 20, 89, 101}};
  struct Shape {
    int64_t nq, nk, bq, bk;
  };
  for (Shape sh : {Shape{300, 300, 16, 16}, Shape{250, 300, 8, 16},
                   Shape{300, 95, 16, 8}, Shape{60, 60, 8, 8}}) {
    SCOPED_TRACE("nq " + std::to_string(sh.nq) + " nk " +
                 std::to_string(sh.nk));
    cpu::PermutedWalk walk;
    cpu::PermutedInfo info;
    ASSERT_EQ(cpu::permutedWalk(sched.table(), 0, perm, sh.nq, sh.nk, sh.bq,
                                sh.bk, walk, &info),
              "");
    EXPECT_FALSE(info.closedForm);
    EXPECT_EQ(info.why, layout::kInterleavedReason);
    std::vector<int64_t> qTok = keptOrder(sh.nq, 32, perm.kept),
                         kTok = keptOrder(sh.nk, 32, perm.kept);
    int64_t qBlocks = (sh.nq + sh.bq - 1) / sh.bq,
            kBlocks = (sh.nk + sh.bk - 1) / sh.bk;
    std::vector<int64_t> count(qBlocks * kBlocks, 0);
    int64_t originalVisited = 0;
    std::vector<bool> originalTile(qBlocks * kBlocks, false);
    for (int64_t x = 0; x < sh.nq; ++x)
      for (int64_t y = 0; y < sh.nk; ++y) {
        count[(x / sh.bq) * kBlocks + y / sh.bk] +=
            s::allowed(diagonals, qTok[x], kTok[y], 0, sh.nq, sh.nk, 1);
        if (s::allowed(diagonals, x, y, 0, sh.nq, sh.nk, 1))
          originalTile[(x / sh.bq) * kBlocks + y / sh.bk] = true;
      }
    for (bool b : originalTile)
      originalVisited += b;
    std::vector<int> ref(count.size()), got(count.size(), 0);
    for (int64_t i = 0; i < qBlocks; ++i)
      for (int64_t j = 0; j < kBlocks; ++j) {
        int64_t c = count[i * kBlocks + j];
        int64_t pairs = std::min(sh.bq, sh.nq - i * sh.bq) *
                        std::min(sh.bk, sh.nk - j * sh.bk);
        ref[i * kBlocks + j] = c == 0 ? 0 : (c == pairs ? 2 : 1);
      }
    int64_t visited = 0;
    ASSERT_EQ(int64_t(walk.start.size()), qBlocks + 1);
    for (int64_t i = 0; i < qBlocks; ++i)
      for (int64_t x = walk.start[i]; x < walk.start[i + 1]; ++x) {
        const layout::PermutedRun &r = walk.runs[x];
        for (int64_t j = r.begin; j < r.end; ++j) {
          got[i * kBlocks + j] = r.full ? 2 : 1;
          ++visited;
          if (r.full)
            continue;
          // The partial tile's bits are the pairs' predicate.
          const uint64_t *bits = walk.mask(x, j, sh.bq);
          for (int64_t s = i * sh.bq; s < std::min(sh.nq, (i + 1) * sh.bq); ++s)
            for (int64_t t = j * sh.bk; t < std::min(sh.nk, (j + 1) * sh.bk);
                 ++t) {
              int64_t col = t - j * sh.bk;
              bool bit = (bits[(s - i * sh.bq) * walk.words + col / 64] >>
                          (col % 64)) &
                         1;
              ASSERT_EQ(bit, s::allowed(diagonals, qTok[s], kTok[t], 0, sh.nq,
                                        sh.nk, 1))
                  << "slot pair " << s << ", " << t;
            }
        }
      }
    EXPECT_EQ(got, ref);
    if (sh.nq == 300 && sh.nk == 300) {
      EXPECT_LT(visited, originalVisited);
    }
  }
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

TEST(PermutedGroupTest, OriginalOrderWhereThePermutationCannotPay) {
  using P = s::Pattern;
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(
      {{P{s::MultiDiagonal{16, {}, 2}}, {0}},
       {P{s::MultiDiagonal{4, {}, 0}}, {1}},
       {P{s::Union{{P{s::Window{5, 5}}, P{s::MultiDiagonal{16, {}, 0}}}}},
        {2}}},
      3, sched, error))
      << error;
  const kernel::LayerTable &t = sched.table();
  // The permuted order runs where it is a real transpose with a cheap walk.
  EXPECT_EQ(cpu::originalOrderReason(t, 0, {16, 0}, 4096, 4096), "");
  EXPECT_EQ(cpu::originalOrderReason(t, 2, {16, 0}, 4096, 4096), "");
  // The identity: no part after the prefix longer than the period.
  EXPECT_EQ(cpu::originalOrderReason(t, 0, {256, 0}, 200, 256),
            "the transpose is the identity at Nq = 200, Nk = 256 (period "
            "256)");
  EXPECT_EQ(cpu::originalOrderReason(t, 0, {64, 100}, 150, 164),
            "the transpose is the identity at Nq = 150, Nk = 164 (period 64)");
  EXPECT_EQ(cpu::originalOrderReason(t, 0, {64, 100}, 150, 165), "");
  // A period far above the leaf's: 2^13 intervals a residue.
  EXPECT_EQ(cpu::originalOrderReason(t, 1, {1 << 15, 0}, 1 << 16, 1 << 16),
            "the closed form would list 8192 intervals a residue (period "
            "32768 against its leaves' periods; at most 4096)");
  EXPECT_EQ(cpu::originalOrderReason(t, 1, {1 << 14, 0}, 1 << 16, 1 << 16),
            "");
  // A band: every pair classified, at most 2^30 of them.
  EXPECT_EQ(cpu::originalOrderReason(t, 2, {16, 0}, 1 << 16, 1 << 15),
            "no closed form, and classifying Nq x Nk = 65536 x 32768 pairs "
            "exceeds 2^30");
  EXPECT_EQ(cpu::originalOrderReason(t, 2, {16, 0}, 1 << 15, 1 << 15), "");
}

TEST(PermutedGroupTest, PermutedWalkRefusesWhatOneWalkCannotServe) {
  using P = s::Pattern;
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(
      {{P{s::StridedShards{2, 4, 0}}, {0, 1}}}, 2, sched, error))
      << error;
  cpu::PermutedWalk walk;
  EXPECT_EQ(cpu::permutedWalk(sched.table(), 0, {8, 0}, 64, 64, 64, 64, walk),
            "permutedWalk: the heads of group 0 have different masks "
            "(strided shards or shifted groups): one walk does not serve "
            "them all");
  ASSERT_TRUE(schedule::buildLayerSchedule(
      {{P{s::StridedShards{2, 4, 0}}, {0}}}, 1, sched, error))
      << error;
  EXPECT_EQ(cpu::permutedWalk(sched.table(), 0, {8, 0}, 64, 64, 64, 64, walk),
            "");
  EXPECT_EQ(
      cpu::permutedWalk(sched.table(), 0, {8, 0}, 64, 64, 2048, 64, walk),
      "permutedWalk: lengths must not be negative and tiles in [1, 1024], got "
      "Nq = 64, Nk = 64, tiles 2048 x 64");
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
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 0,
                                  layout::PeriodTranspose{16, -1}, args),
            "runPermutedGroup: prefix must not be negative, got -1");
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 1, 16, args),
            "runPermutedGroup: group 1 is not one of the layer's 1 computed "
            "groups");
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 0,
                                  layout::PeriodTranspose{16, 0, {8, 4}}, args),
            "runPermutedGroup: kept range 0 [8, 4) is empty");
  EXPECT_EQ(cpu::runPermutedGroup(sched.table(), 0,
                                  layout::PeriodTranspose{16, 4, {8, 12}},
                                  args),
            "runPermutedGroup: a prefix and kept ranges together (prefix S "
            "is kept [0, S])");
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
