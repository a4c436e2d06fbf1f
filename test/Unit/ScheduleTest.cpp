//===- ScheduleTest.cpp - block schedules against the reference -----------===//
//
// The mask a block schedule implies (tiles outside the key hull and EMPTY
// tiles: nothing; FULL tiles: everything; PARTIAL tiles: the element
// predicate) must equal the reference mask bit for bit, for every pattern,
// length, tile size and head.
//
//===----------------------------------------------------------------------===//

#include "PatternGen.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/kernel/ProgramRuns.h"

#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <string>

using namespace tessera;
using tessera::test::PatternGen;
namespace k = tessera::kernel;

namespace {

using tessera::test::str;

struct Stats {
  int64_t tiles = 0, empty = 0, full = 0, partial = 0, skippedByHull = 0;
};

/// Compares the schedule's implied mask with the reference for one head and
/// one tiling. Returns a description of the first difference, or "".
std::string compare(const semantics::Pattern &ref,
                    const schedule::Program &prog, int64_t nq, int64_t nk,
                    int64_t bq, int64_t bk, int64_t head, int64_t numHeads,
                    Stats &stats) {
  const k::Node *nodes = prog.nodes.data();
  k::i64 count = static_cast<k::i64>(prog.nodes.size());
  const k::i64 *data = prog.data.empty() ? nullptr : prog.data.data();
  for (int64_t q0 = 0; q0 < nq; q0 += bq) {
    int64_t q1 = std::min(q0 + bq, nq);
    k::i64 hullLo, hullHi;
    k::keyHull(nodes, count, data, q0, q1, nq, nk, hullLo, hullHi);
    for (int64_t k0 = 0; k0 < nk; k0 += bk) {
      int64_t k1 = std::min(k0 + bk, nk);
      ++stats.tiles;
      int cls = k::kEmpty;
      bool inHull = k1 - 1 >= hullLo && k0 <= hullHi;
      if (inHull) {
        k::Tile t{q0, q1, k0, k1, nq, nk, head, numHeads};
        cls = k::classifyTile(nodes, count, data, t);
      } else {
        ++stats.skippedByHull;
      }
      stats.empty += cls == k::kEmpty;
      stats.full += cls == k::kFull;
      stats.partial += cls == k::kPartial;
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t kk = k0; kk < k1; ++kk) {
          bool implied =
              cls == k::kFull ||
              (cls == k::kPartial && k::allowedPair(nodes, count, data, q, kk,
                                                    nq, nk, head, numHeads));
          bool expected =
              semantics::allowed(ref, q, kk, head, nq, nk, numHeads);
          if (implied != expected)
            return "Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk) +
                   " tile=" + std::to_string(bq) + "x" + std::to_string(bk) +
                   " head=" + std::to_string(head) + "/" +
                   std::to_string(numHeads) + " q=" + std::to_string(q) +
                   " k=" + std::to_string(kk) +
                   " class=" + std::to_string(cls) +
                   " expected=" + std::to_string(expected);
        }
    }
  }
  return "";
}


/// Walks the runs of every query block and compares them with classifyTile
/// on every tile: the walk must visit exactly the non-empty tiles, in
/// increasing order, each once and in the class classifyTile gives, with at
/// most one call per run plus one.
std::string compareRuns(const schedule::Program &prog, int64_t nq, int64_t nk,
                        int64_t bq, int64_t bk, int64_t head,
                        int64_t numHeads, int64_t &runs) {
  const k::Node *nodes = prog.nodes.data();
  k::i64 count = static_cast<k::i64>(prog.nodes.size());
  const k::i64 *data = prog.data.empty() ? nullptr : prog.data.data();
  k::ProgramRuns walker(nodes, count, data);
  int64_t nkb = (nk + bk - 1) / bk;
  std::vector<int> visited;
  for (int64_t q0 = 0; q0 < nq; q0 += bq) {
    int64_t q1 = std::min(q0 + bq, nq);
    k::RunCtx c = k::makeRunCtx(q0, q1, nq, nk, bk, head, numHeads);
    visited.assign(nkb, k::kEmpty);
    std::string where = "Nq=" + std::to_string(nq) +
                        " Nk=" + std::to_string(nk) + " tile=" +
                        std::to_string(bq) + "x" + std::to_string(bk) +
                        " head=" + std::to_string(head) + " q0=" +
                        std::to_string(q0);
    for (int64_t kb = 0, calls = 0;; ++calls) {
      if (calls > nkb + 1)
        return where + ": the walk does not end";
      k::Run r = walker.runFrom(c, kb);
      if (!k::isRun(r))
        break;
      ++runs;
      if (r.lo < kb || r.hi >= nkb || (r.cls != k::kFull && r.cls != k::kPartial))
        return where + ": bad run [" + std::to_string(r.lo) + ", " +
               std::to_string(r.hi) + "] from " + std::to_string(kb);
      for (int64_t b = r.lo; b <= r.hi; ++b)
        visited[b] = r.cls;
      kb = r.hi + 1;
    }
    for (int64_t kb = 0; kb < nkb; ++kb) {
      k::Tile t{q0, q1, kb * bk, std::min(kb * bk + bk, nk), nq, nk, head,
                numHeads};
      int cls = k::classifyTile(nodes, count, data, t);
      if (cls != visited[kb])
        return where + " kb=" + std::to_string(kb) +
               ": run class " + std::to_string(visited[kb]) +
               ", tile class " + std::to_string(cls);
    }
  }
  return "";
}

class ScheduleTest : public ::testing::Test {
protected:
  ScheduleTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

TEST_F(ScheduleTest, RandomPatternsMatchTheReference) {
  PatternGen gen(&ctx, /*seed=*/314159);
  Stats stats;
  constexpr int kCases = 12000;
  for (int i = 0; i < kCases; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(3);
    semantics::Pattern ref = semantics::fromAttr(attr);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error)) << error;
    int64_t nq = gen.uniform(1, 40), nk = gen.uniform(1, 40);
    int64_t bq = gen.uniform(1, 9), bk = gen.uniform(1, 9);
    int64_t numHeads = gen.uniform(1, 6);
    int64_t head = gen.uniform(0, numHeads - 1);
    std::string diff =
        compare(ref, prog, nq, nk, bq, bk, head, numHeads, stats);
    ASSERT_EQ(diff, "") << "pattern " << str(attr);
  }
  // The cases must exercise every tile class, and the hull must cut work.
  EXPECT_GT(stats.empty, stats.tiles / 20);
  EXPECT_GT(stats.full, stats.tiles / 20);
  EXPECT_GT(stats.partial, stats.tiles / 20);
  EXPECT_GT(stats.skippedByHull, 0);
}

/// Every leaf and a few combinations, on every length up to 12 and every
/// tile size up to 5 x 5, for every head of a 4-head layer.
TEST_F(ScheduleTest, ExhaustiveOnSmallSizes) {
  using namespace mlir;
  using namespace tessera::attn;
  MLIRContext *c = &ctx;
  SmallVector<PatternAttrInterface> patterns = {
      DenseAttr::get(c),
      CausalAttr::get(c),
      WindowAttr::get(c, 2, 1),
      SinkAttr::get(c, 3),
      AShapeAttr::get(c, 2, 3, 0),
      MultiDiagonalAttr::get(c, 4, {}, 1),
      MultiDiagonalAttr::get(c, 0, {-5, 0, 3}, 1),
      VerticalStripeAttr::get(c, {1, 3, 7, 9}, 0, 0, 0),
      VerticalStripeAttr::get(c, {}, 5, 2, 1),
      HorizontalStripeAttr::get(c, {0, 2, 6, 7}, 0, 0, 0),
      HorizontalStripeAttr::get(c, {}, 4, 1, 3),
      GridAttr::get(c, 4, 1, 2, 1),
      StridedShardsAttr::get(c, 3, 2, 1),
      ShiftedGroupsAttr::get(c, 4, 2),
      BlockSparseAttr::get(c, 3, 2, {0, 0, 1, 1, 1, 3, 3, 0}),
      SkipAttr::get(c),
      UnionAttr::get(c, {SinkAttr::get(c, 2), GridAttr::get(c, 3, 1, 0, 0)}),
      IntersectAttr::get(
          c, {CausalAttr::get(c), StridedShardsAttr::get(c, 2, 3, 0)}),
      DifferenceAttr::get(c, DenseAttr::get(c), WindowAttr::get(c, 1, 1)),
  };
  Stats stats;
  int64_t runs = 0;
  for (PatternAttrInterface attr : patterns) {
    semantics::Pattern ref = semantics::fromAttr(attr);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error)) << error;
    for (int64_t nq = 1; nq <= 12; ++nq)
      for (int64_t nk = 1; nk <= 12; ++nk)
        for (int64_t bq = 1; bq <= 5; ++bq)
          for (int64_t bk = 1; bk <= 5; ++bk)
            for (int64_t head = 0; head < 4; ++head)
            {
              ASSERT_EQ(compare(ref, prog, nq, nk, bq, bk, head, 4, stats), "")
                  << "pattern " << str(attr);
              ASSERT_EQ(compareRuns(prog, nq, nk, bq, bk, head, 4, runs), "")
                  << "pattern " << str(attr);
            }
  }
}

/// Single-node leaves classify exactly: a PARTIAL tile really holds both
/// allowed and disallowed pairs, so no work is wasted on them.
TEST_F(ScheduleTest, LeafClassificationIsExact) {
  using namespace mlir;
  using namespace tessera::attn;
  MLIRContext *c = &ctx;
  SmallVector<PatternAttrInterface> leaves = {
      CausalAttr::get(c),
      WindowAttr::get(c, 3, 2),
      MultiDiagonalAttr::get(c, 5, {}, 1),
      MultiDiagonalAttr::get(c, 0, {-6, 2}, 1),
      VerticalStripeAttr::get(c, {2, 5}, 0, 0, 0),
      VerticalStripeAttr::get(c, {}, 6, 2, 3),
      HorizontalStripeAttr::get(c, {}, 3, 1, 0),
      StridedShardsAttr::get(c, 2, 3, 0),
      ShiftedGroupsAttr::get(c, 5, 2),
      BlockSparseAttr::get(c, 2, 3, {0, 1, 2, 0, 2, 2}),
  };
  for (PatternAttrInterface attr : leaves) {
    semantics::Pattern ref = semantics::fromAttr(attr);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error));
    ASSERT_EQ(prog.nodes.size(), 1u) << str(attr);
    for (int64_t n : {7, 13})
      for (int64_t bq : {2, 3, 4})
        for (int64_t bk : {2, 3, 5})
          for (int64_t head = 0; head < 2; ++head)
            for (int64_t q0 = 0; q0 < n; q0 += bq)
              for (int64_t k0 = 0; k0 < n; k0 += bk) {
                int64_t q1 = std::min(q0 + bq, n), k1 = std::min(k0 + bk, n);
                k::Tile t{q0, q1, k0, k1, n, n, head, 2};
                int cls =
                    k::classifyTile(prog.nodes.data(), 1, prog.data.data(), t);
                int64_t allowed = 0;
                for (int64_t q = q0; q < q1; ++q)
                  for (int64_t kk = k0; kk < k1; ++kk)
                    allowed += semantics::allowed(ref, q, kk, head, n, n, 2);
                int64_t size = (q1 - q0) * (k1 - k0);
                int exact = allowed == 0      ? k::kEmpty
                            : allowed == size ? k::kFull
                                              : k::kPartial;
                ASSERT_EQ(cls, exact) << str(attr) << " tile (" << q0 << ", "
                                      << k0 << ") " << bq << "x" << bk;
              }
  }
}


/// The runs of random patterns visit exactly the tiles classifyTile keeps,
/// in its classes, on random lengths, tile sizes (also beyond the lengths)
/// and heads.
TEST_F(ScheduleTest, RunsMatchTileClasses) {
  PatternGen gen(&ctx, /*seed=*/271828);
  int64_t runs = 0;
  for (int i = 0; i < 12000; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(3);
    semantics::Pattern ref = semantics::fromAttr(attr);
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(schedule::lowerPattern(ref, prog, error)) << error;
    int64_t nq = gen.uniform(1, 60), nk = gen.uniform(1, 60);
    int64_t bq = gen.uniform(1, 12), bk = gen.uniform(1, 12);
    int64_t numHeads = gen.uniform(1, 6);
    int64_t head = gen.uniform(0, numHeads - 1);
    ASSERT_EQ(compareRuns(prog, nq, nk, bq, bk, head, numHeads, runs), "")
        << "pattern " << str(attr);
  }
  EXPECT_GT(runs, 12000);
}

/// Runs on long sequences: a window's walk costs the same number of runs per
/// query block at any length, and an A-shape's too.
TEST_F(ScheduleTest, RunCountDoesNotGrowWithLength) {
  using namespace tessera::attn;
  for (auto attr : {PatternAttrInterface(WindowAttr::get(&ctx, 256, 0)),
                    PatternAttrInterface(AShapeAttr::get(&ctx, 64, 1024, 0))}) {
    schedule::Program prog;
    std::string error;
    ASSERT_TRUE(
        schedule::lowerPattern(semantics::fromAttr(attr), prog, error));
    k::ProgramRuns walker(prog.nodes.data(), prog.nodes.size(),
                          prog.data.data());
    std::vector<int64_t> perLength;
    for (int64_t n : {int64_t(1) << 15, int64_t(1) << 20, int64_t(1) << 30}) {
      // The last query block: the farthest from the sinks.
      k::RunCtx c = k::makeRunCtx(n - 64, n, n, n, 64, 0, 1);
      int64_t runs = 0, tiles = 0;
      for (k::i64 kb = 0;; ++runs) {
        k::Run r = walker.runFrom(c, kb);
        if (!k::isRun(r))
          break;
        tiles += r.hi - r.lo + 1;
        kb = r.hi + 1;
      }
      perLength.push_back(runs * 1000 + tiles);
    }
    EXPECT_EQ(perLength[0], perLength[1]) << str(attr);
    EXPECT_EQ(perLength[0], perLength[2]) << str(attr);
  }
}

TEST_F(ScheduleTest, DeepNestingIsRejected) {
  using namespace mlir;
  using namespace tessera::attn;
  // intersect<X, union<X, intersect<X, ...>>>: each level keeps one result
  // on the stack while the next level runs.
  PatternAttrInterface p = CausalAttr::get(&ctx);
  for (int i = 0; i < 40; ++i) {
    SmallVector<PatternAttrInterface> parts = {WindowAttr::get(&ctx, i, 0), p};
    p = (i % 2) ? PatternAttrInterface(UnionAttr::get(&ctx, parts))
                : PatternAttrInterface(IntersectAttr::get(&ctx, parts));
  }
  schedule::Program prog;
  std::string error;
  EXPECT_FALSE(schedule::lowerPattern(semantics::fromAttr(p), prog, error));
  EXPECT_NE(error.find("nests too deeply"), std::string::npos) << error;
  EXPECT_TRUE(prog.nodes.empty());
}

} // namespace
