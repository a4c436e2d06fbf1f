//===- SimplifyTest.cpp - simplification keeps every mask -----------------===//
//
// Builds random pattern trees with random parameters, simplifies them, and
// checks that the simplified pattern allows exactly the same pairs for every
// head on random Nq, Nk (Nq != Nk included). Also checks that every
// simplified attribute prints and parses back to itself (so it verifies).
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Semantics/FromAttr.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

class PatternGen {
public:
  PatternGen(MLIRContext *ctx, uint64_t seed) : ctx(ctx), rng(seed) {}

  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  }

  /// Sorted, disjoint, non-empty [begin, end) ranges within [0, 20).
  SmallVector<int64_t> ranges() {
    std::set<int64_t> cuts;
    int64_t n = 2 * uniform(1, 3);
    while (static_cast<int64_t>(cuts.size()) < n)
      cuts.insert(uniform(0, 20));
    return SmallVector<int64_t>(cuts.begin(), cuts.end());
  }

  PatternAttrInterface leaf() {
    switch (uniform(0, 15)) {
    case 0:
      return DenseAttr::get(ctx);
    case 1:
    case 2:
      return CausalAttr::get(ctx);
    case 3:
    case 4:
      return WindowAttr::get(ctx, uniform(0, 6), uniform(0, 3) ? 0 : uniform(0, 4));
    case 5:
      return SinkAttr::get(ctx, uniform(1, 5));
    case 6:
      return AShapeAttr::get(ctx, uniform(1, 4), uniform(0, 5),
                             uniform(0, 2) ? 0 : uniform(0, 3));
    case 7: {
      if (uniform(0, 1))
        return MultiDiagonalAttr::get(ctx, uniform(1, 8), {}, uniform(0, 4));
      std::set<int64_t> offs;
      int64_t n = uniform(1, 3);
      while (static_cast<int64_t>(offs.size()) < n)
        offs.insert(uniform(-8, 8));
      return MultiDiagonalAttr::get(
          ctx, 0, SmallVector<int64_t>(offs.begin(), offs.end()),
          uniform(0, 3));
    }
    case 8:
    case 9: {
      bool vertical = uniform(0, 1);
      SmallVector<int64_t> r;
      int64_t period = 0, width = 0, phase = 0;
      if (uniform(0, 2)) {
        r = ranges();
      } else {
        period = uniform(1, 6);
        width = uniform(1, period);
        phase = uniform(0, period - 1);
      }
      if (vertical)
        return VerticalStripeAttr::get(ctx, r, period, width, phase);
      return HorizontalStripeAttr::get(ctx, r, period, width, phase);
    }
    case 10: {
      int64_t stride = uniform(1, 6);
      int64_t vw = uniform(0, stride), sw = uniform(vw == 0 ? 1 : 0, stride);
      return GridAttr::get(ctx, stride, vw, sw, uniform(0, stride - 1));
    }
    case 11: {
      int64_t shards = uniform(1, 4);
      return StridedShardsAttr::get(ctx, shards, uniform(1, 3),
                                    uniform(0, shards - 1));
    }
    case 12: {
      int64_t size = uniform(1, 6);
      return ShiftedGroupsAttr::get(ctx, size, uniform(0, size - 1));
    }
    case 13: {
      int64_t bq = uniform(1, 4), bk = uniform(1, 4);
      std::set<std::pair<int64_t, int64_t>> blocks;
      int64_t n = uniform(0, 5);
      for (int64_t i = 0; i < n; ++i)
        blocks.insert({uniform(0, 6), uniform(0, 6)});
      SmallVector<int64_t> flat;
      for (auto [q, k] : blocks) {
        flat.push_back(q);
        flat.push_back(k);
      }
      return BlockSparseAttr::get(ctx, bq, bk, flat);
    }
    default:
      return SkipAttr::get(ctx);
    }
  }

  PatternAttrInterface pattern(int depth) {
    if (depth == 0 || uniform(0, 2) == 0)
      return leaf();
    int64_t kind = uniform(0, 2);
    if (kind == 2)
      return DifferenceAttr::get(ctx, pattern(depth - 1), pattern(depth - 1));
    SmallVector<PatternAttrInterface> parts;
    int64_t n = uniform(2, 4);
    for (int64_t i = 0; i < n; ++i)
      parts.push_back(pattern(depth - 1));
    if (kind == 0)
      return UnionAttr::get(ctx, parts);
    return IntersectAttr::get(ctx, parts);
  }

private:
  MLIRContext *ctx;
  std::mt19937_64 rng;
};

std::string str(Attribute a) {
  std::string s;
  llvm::raw_string_ostream os(s);
  a.print(os);
  return s;
}

/// Returns the first (nq, nk, head, q, k) where the masks differ, or "".
std::string firstDifference(const semantics::Pattern &a,
                            const semantics::Pattern &b, int64_t nq,
                            int64_t nk, int64_t numHeads) {
  for (int64_t h = 0; h < numHeads; ++h)
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t k = 0; k < nk; ++k) {
        semantics::Coord c(q, k, h, nq, nk, numHeads);
        if (semantics::allowed(a, c) != semantics::allowed(b, c))
          return "Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk) +
                 " head=" + std::to_string(h) + " q=" + std::to_string(q) +
                 " k=" + std::to_string(k);
      }
  return "";
}

class SimplifyTest : public ::testing::Test {
protected:
  SimplifyTest() { ctx.getOrLoadDialect<AttnDialect>(); }
  MLIRContext ctx;
};

TEST_F(SimplifyTest, RandomPatternsKeepTheirMasks) {
  PatternGen gen(&ctx, /*seed=*/20261128);
  int changed = 0;
  constexpr int kCases = 4000;
  for (int i = 0; i < kCases; ++i) {
    PatternAttrInterface p = gen.pattern(3);
    PatternAttrInterface s = simplifyPattern(p);
    if (s != p)
      ++changed;
    semantics::Pattern before = semantics::fromAttr(p);
    semantics::Pattern after = semantics::fromAttr(s);
    int64_t numHeads = gen.uniform(1, 4) * 2;
    for (int trial = 0; trial < 3; ++trial) {
      int64_t nq = gen.uniform(1, 24), nk = gen.uniform(1, 24);
      std::string diff = firstDifference(before, after, nq, nk, numHeads);
      ASSERT_EQ(diff, "") << "pattern " << str(p) << "\nsimplified "
                          << str(s) << "\ndiffers at " << diff;
    }
  }
  // The generator must exercise the rules, not only leave patterns alone.
  EXPECT_GT(changed, kCases / 4);
}

TEST_F(SimplifyTest, SimplifiedPatternsVerifyAndRoundTrip) {
  PatternGen gen(&ctx, /*seed=*/7);
  ScopedDiagnosticHandler silence(&ctx, [](Diagnostic &) { return success(); });
  for (int i = 0; i < 2000; ++i) {
    PatternAttrInterface s = simplifyPattern(gen.pattern(3));
    std::string text = str(s);
    Attribute parsed = parseAttribute(text, &ctx);
    ASSERT_TRUE(parsed) << "does not parse back: " << text;
    EXPECT_EQ(parsed, s) << text;
  }
}

TEST_F(SimplifyTest, ReachesAFixpoint) {
  PatternGen gen(&ctx, /*seed=*/99);
  for (int i = 0; i < 2000; ++i) {
    PatternAttrInterface p = gen.pattern(3);
    PatternAttrInterface once = simplifyPattern(p);
    PatternAttrInterface twice = simplifyPattern(once);
    EXPECT_EQ(once, twice) << str(p) << "\n -> " << str(once) << "\n -> "
                           << str(twice);
  }
}

} // namespace
