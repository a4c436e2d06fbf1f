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

#include "PatternGen.h"

#include <string>

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

using tessera::test::PatternGen;

std::string str(Attribute a) {
  std::string s;
  llvm::raw_string_ostream os(s);
  a.print(os);
  return s;
}

/// Returns the first (nq, nk, head, q, k) where the masks differ, or "".
std::string firstDifference(const semantics::Pattern &a,
                            const semantics::Pattern &b, int64_t nq, int64_t nk,
                            int64_t numHeads) {
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
      ASSERT_EQ(diff, "") << "pattern " << str(p) << "\nsimplified " << str(s)
                          << "\ndiffers at " << diff;
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
