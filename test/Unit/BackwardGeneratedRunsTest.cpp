//===- BackwardGeneratedRunsTest.cpp - the generated transposed walks -----===//
//
// The transposed walk the CUDA emitter generates for the backward's
// key-major pass (P<id>T::runFromT, lib/Schedule/BackwardRuns.cpp),
// compiled for the host, against the reference semantics: for every key
// block, the runs of query blocks visit every tile that holds an allowed
// pair, call FULL only tiles whose every pair is allowed, never visit a
// tile classifyTile calls empty, call FULL every tile it calls FULL, run
// forward and end. Exhaustive on small lengths and tiles for the
// catalogue, random for the random trees (codegenCases()).
//
//===----------------------------------------------------------------------===//

#include "BackwardGeneratedRuns.inc"
#include "CodegenCases.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"

#include <gtest/gtest.h>

using namespace tessera;
namespace k = tessera::kernel;

namespace {

using tessera::test::str;

struct Counts {
  int64_t visited = 0, full = 0;
};

/// "" or the first disagreement of `runFromT` on an Nq x Nk layer of
/// bq x bk tiles.
std::string check(gent::RunFromT runFromT, const semantics::Pattern &ref,
                  const schedule::Program &prog, int64_t nq, int64_t nk,
                  int64_t bq, int64_t bk, int64_t head, int64_t numHeads,
                  Counts &counts) {
  const std::string where =
      "Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk) +
      " tile=" + std::to_string(bq) + "x" + std::to_string(bk) +
      " head=" + std::to_string(head) + "/" + std::to_string(numHeads);
  const int64_t nqb = (nq + bq - 1) / bq;
  std::vector<int> cls;
  for (int64_t k0 = 0; k0 < nk; k0 += bk) {
    const int64_t k1 = std::min(k0 + bk, nk);
    const k::TRunCtx c = k::makeTRunCtx(k0, k1, nq, nk, bq, head, numHeads);
    cls.assign(size_t(nqb), k::kEmpty);
    int64_t calls = 0;
    for (k::i64 qb = 0;;) {
      if (++calls > nqb + 1)
        return where + " k0=" + std::to_string(k0) + ": the walk does not end";
      const k::Run r = runFromT(c, qb);
      if (!k::isRun(r))
        break;
      if (r.lo < qb || r.hi >= nqb ||
          (r.cls != k::kFull && r.cls != k::kPartial))
        return where + " k0=" + std::to_string(k0) + ": bad run";
      for (int64_t b = r.lo; b <= r.hi; ++b)
        cls[size_t(b)] = r.cls;
      qb = r.hi + 1;
    }
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t q0 = qb * bq, q1 = std::min(q0 + bq, nq);
      int64_t allowed = 0;
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t kk = k0; kk < k1; ++kk)
          allowed += semantics::allowed(ref, q, kk, head, nq, nk, numHeads);
      const std::string tile = where + " k0=" + std::to_string(k0) +
                               " qb=" + std::to_string(qb) + ": ";
      const int got = cls[size_t(qb)];
      if (got == k::kEmpty && allowed != 0)
        return tile + "a tile with allowed pairs is not visited";
      if (got == k::kFull && allowed != (q1 - q0) * (k1 - k0))
        return tile + "a FULL tile has masked pairs";
      k::Tile t{q0, q1, k0, k1, nq, nk, head, numHeads};
      const int interp = k::classifyTile(prog.nodes.data(), prog.nodes.size(),
                                         prog.data.data(), t);
      if (interp == k::kEmpty && got != k::kEmpty)
        return tile + "visits a tile the program calls empty";
      if (interp == k::kFull && got != k::kFull)
        return tile + "a tile the program calls FULL is not FULL";
      counts.visited += got != k::kEmpty;
      counts.full += got == k::kFull;
    }
  }
  return "";
}

/// The hand-written cases at the head of codegenCases() (GeneratedCodeTest's
/// kCatalogue).
constexpr size_t kCatalogue = 28;

class BackwardGeneratedRunsTest : public ::testing::Test {
protected:
  BackwardGeneratedRunsTest() {
    ctx.getOrLoadDialect<attn::AttnDialect>();
    cases = test::codegenCases(&ctx);
  }
  mlir::MLIRContext ctx;
  std::vector<attn::PatternAttrInterface> cases;
};

TEST_F(BackwardGeneratedRunsTest, OneWalkPerCase) {
  ASSERT_EQ(static_cast<long>(cases.size()), gent::kNumTransposed);
}

/// The catalogue (every leaf and the combinators), exhaustively: every
/// length up to 14, tiles up to 6 x 6, every head of a 4-head layer.
TEST_F(BackwardGeneratedRunsTest, CatalogueExhaustive) {
  Counts counts;
  for (size_t i = 0; i < kCatalogue; ++i) {
    semantics::Pattern ref = semantics::fromAttr(cases[i]);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error));
    for (int64_t nq = 1; nq <= 14; ++nq)
      for (int64_t nk = 1; nk <= 14; ++nk)
        for (int64_t bq = 1; bq <= 6; bq += (nq > 7 ? 2 : 1))
          for (int64_t bk = 1; bk <= 6; bk += (nk > 7 ? 2 : 1))
            for (int64_t head = 0; head < 4; ++head)
              ASSERT_EQ(check(gent::kTransposed[i], ref, prog, nq, nk, bq, bk,
                              head, 4, counts),
                        "")
                  << "pattern " << str(cases[i]);
  }
  EXPECT_GT(counts.full, counts.visited / 10);
}

/// Every case (random trees included) on random lengths (up to 70), tiles
/// (up to 16) and heads.
TEST_F(BackwardGeneratedRunsTest, RandomTrees) {
  test::PatternGen sizes(&ctx, /*seed=*/2020);
  Counts counts;
  for (size_t i = 0; i < cases.size(); ++i) {
    semantics::Pattern ref = semantics::fromAttr(cases[i]);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error));
    for (int rep = 0; rep < 4; ++rep) {
      int64_t nq = sizes.uniform(1, 70), nk = sizes.uniform(1, 70);
      int64_t bq = sizes.uniform(1, 16), bk = sizes.uniform(1, 16);
      int64_t numHeads = sizes.uniform(1, 6);
      int64_t head = sizes.uniform(0, numHeads - 1);
      ASSERT_EQ(check(gent::kTransposed[i], ref, prog, nq, nk, bq, bk, head,
                      numHeads, counts),
                "")
          << "pattern " << str(cases[i]);
    }
  }
  EXPECT_GT(counts.visited, 10000);
}

} // namespace
