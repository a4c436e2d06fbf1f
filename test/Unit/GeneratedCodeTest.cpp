//===- GeneratedCodeTest.cpp - the emitter's per-group code on the host ---===//
//
// The code the CUDA emitter generates for a head group (its straight-line
// predicate and its run enumeration), compiled for the host, against the
// reference semantics: the predicate on every pair; the runs visit every
// tile that holds an allowed pair, call FULL only tiles whose every pair is
// allowed, and are at least as precise as classifyTile (never visit a tile
// it calls empty, call FULL every tile it calls FULL). Exhaustive on
// small lengths and tiles for the catalogue, random for the random trees.
//
//===----------------------------------------------------------------------===//

#include "CodegenCases.h"
#include "GeneratedGroups.inc"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"

#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <map>

using namespace tessera;
namespace k = tessera::kernel;

namespace {

using tessera::test::str;

struct Counts {
  int64_t visited = 0, full = 0, emptyVisited = 0;
};

std::string check(const gen::Entry &g, const semantics::Pattern &ref,
                  const schedule::Program &prog, int64_t nq, int64_t nk,
                  int64_t bq, int64_t bk, int64_t head, int64_t numHeads,
                  Counts &counts) {
  std::string where = "Nq=" + std::to_string(nq) + " Nk=" +
                      std::to_string(nk) + " tile=" + std::to_string(bq) +
                      "x" + std::to_string(bk) + " head=" +
                      std::to_string(head) + "/" + std::to_string(numHeads);
  int64_t shift = nk - nq, nkb = (nk + bk - 1) / bk;
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t kk = 0; kk < nk; ++kk)
      if (g.allowed(q + shift, kk, head, numHeads) !=
          semantics::allowed(ref, q, kk, head, nq, nk, numHeads))
        return where + ": predicate differs at q=" + std::to_string(q) +
               " k=" + std::to_string(kk);
  std::vector<int> cls;
  for (int64_t q0 = 0; q0 < nq; q0 += bq) {
    int64_t q1 = std::min(q0 + bq, nq);
    k::RunCtx c = k::makeRunCtx(q0, q1, nq, nk, bk, head, numHeads);
    cls.assign(nkb, k::kEmpty);
    int64_t calls = 0;
    for (k::i64 kb = 0;;) {
      if (++calls > nkb + 1)
        return where + ": the walk does not end";
      k::Run r = g.runFrom(c, kb);
      if (!k::isRun(r))
        break;
      if (r.lo < kb || r.hi >= nkb ||
          (r.cls != k::kFull && r.cls != k::kPartial))
        return where + ": bad run";
      for (int64_t b = r.lo; b <= r.hi; ++b)
        cls[b] = r.cls;
      kb = r.hi + 1;
    }
    for (int64_t kb = 0; kb < nkb; ++kb) {
      int64_t k0 = kb * bk, k1 = std::min(k0 + bk, nk);
      int64_t allowed = 0;
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t kk = k0; kk < k1; ++kk)
          allowed += semantics::allowed(ref, q, kk, head, nq, nk, numHeads);
      std::string tile = where + " q0=" + std::to_string(q0) +
                         " kb=" + std::to_string(kb) + ": ";
      if (cls[kb] == k::kEmpty && allowed != 0)
        return tile + "a tile with allowed pairs is not visited";
      if (cls[kb] == k::kFull && allowed != (q1 - q0) * (k1 - k0))
        return tile + "a FULL tile has masked pairs";
      k::Tile t{q0, q1, k0, k1, nq, nk, head, numHeads};
      int interp = k::classifyTile(prog.nodes.data(), prog.nodes.size(),
                                   prog.data.data(), t);
      if (interp == k::kEmpty && cls[kb] != k::kEmpty)
        return tile + "visits a tile the program calls empty";
      // At least as precise as the program: the simplified run algebra
      // may find a tile empty or full where the program says partial.
      if (interp == k::kFull && cls[kb] != k::kFull)
        return tile + "a tile the program calls FULL is not FULL";
      counts.visited += cls[kb] != k::kEmpty;
      counts.full += cls[kb] == k::kFull;
      counts.emptyVisited += cls[kb] != k::kEmpty && allowed == 0;
    }
  }
  return "";
}

/// The hand-written cases at the head of codegenCases(): the catalogue, then
/// patterns with shipped-size parameters.
constexpr size_t kCatalogue = 28, kLarge = 8;

class GeneratedCodeTest : public ::testing::Test {
protected:
  GeneratedCodeTest() {
    ctx.getOrLoadDialect<attn::AttnDialect>();
    cases = test::codegenCases(&ctx);
  }
  mlir::MLIRContext ctx;
  std::vector<attn::PatternAttrInterface> cases;
};

TEST_F(GeneratedCodeTest, OneGroupPerCase) {
  ASSERT_EQ(static_cast<long>(cases.size()), gen::kNumGroups);
}

/// The catalogue, exhaustively: every length up to 14, tiles up to 6 x 6,
/// every head of a 4-head layer.
TEST_F(GeneratedCodeTest, CatalogueExhaustive) {
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
              ASSERT_EQ(check(gen::kGroups[i], ref, prog, nq, nk, bq, bk, head,
                              4, counts),
                        "")
                  << "pattern " << str(cases[i]);
  }
  EXPECT_GT(counts.full, counts.visited / 10);
}

/// Random trees on random lengths (up to 70), tiles (up to 16) and heads.
TEST_F(GeneratedCodeTest, RandomTrees) {
  test::PatternGen sizes(&ctx, /*seed=*/4242);
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
      ASSERT_EQ(check(gen::kGroups[i], ref, prog, nq, nk, bq, bk, head,
                      numHeads, counts),
                "")
          << "pattern " << str(cases[i]);
    }
  }
  EXPECT_GT(counts.visited, 10000);
}

/// Long sequences (up to 2^20 keys, Nq != Nk, tiles 16 to 128): random
/// query blocks of every case; each visited tile and as many random other
/// tiles are checked pair by pair against the reference, and the predicate on
/// random pairs.
TEST_F(GeneratedCodeTest, LongSequencesSampled) {
  test::PatternGen rnd(&ctx, /*seed=*/99);
  int64_t checkedTiles = 0;
  for (size_t i = 0; i < kCatalogue + kLarge + 100; ++i) {
    semantics::Pattern ref = semantics::fromAttr(cases[i]);
    for (int rep = 0; rep < 3; ++rep) {
      int64_t nk = rnd.uniform(1, 1 << 20);
      int64_t nq = rnd.uniform(0, 1) ? nk : rnd.uniform(1, nk);
      int64_t bq = 16 << rnd.uniform(0, 3), bk = 16 << rnd.uniform(0, 3);
      int64_t numHeads = rnd.uniform(1, 8), head = rnd.uniform(0, numHeads - 1);
      int64_t nkb = (nk + bk - 1) / bk;
      for (int pairs = 0; pairs < 200; ++pairs) {
        int64_t q = rnd.uniform(0, nq - 1), kk = rnd.uniform(0, nk - 1);
        ASSERT_EQ(gen::kGroups[i].allowed(q + nk - nq, kk, head, numHeads),
                  semantics::allowed(ref, q, kk, head, nq, nk, numHeads))
            << str(cases[i]) << " q=" << q << " k=" << kk;
      }
      for (int blocks = 0; blocks < 4; ++blocks) {
        int64_t q0 = rnd.uniform(0, (nq - 1) / bq) * bq;
        int64_t q1 = std::min(q0 + bq, nq);
        k::RunCtx c = k::makeRunCtx(q0, q1, nq, nk, bk, head, numHeads);
        std::map<int64_t, int> cls; // visited key blocks
        int64_t runs = 0;
        for (k::i64 kb = 0;;) {
          k::Run r = gen::kGroups[i].runFrom(c, kb);
          if (!k::isRun(r))
            break;
          ASSERT_GE(r.lo, kb);
          ASSERT_LT(r.hi, nkb);
          ++runs;
          for (int64_t b = r.lo; b <= r.hi && cls.size() < 4096; ++b)
            cls[b] = r.cls;
          kb = r.hi + 1;
        }
        std::vector<int64_t> tiles;
        for (auto [b, x] : cls)
          if (tiles.size() < 64)
            tiles.push_back(b);
        for (int extra = 0; extra < 64; ++extra)
          tiles.push_back(rnd.uniform(0, nkb - 1));
        for (int64_t b : tiles) {
          int64_t k0 = b * bk, k1 = std::min(k0 + bk, nk), allowed = 0;
          for (int64_t q = q0; q < q1; ++q)
            for (int64_t kk = k0; kk < k1; ++kk)
              allowed +=
                  semantics::allowed(ref, q, kk, head, nq, nk, numHeads);
          auto it = cls.find(b);
          int got = it == cls.end() ? k::kEmpty : it->second;
          if (it == cls.end() && cls.size() >= 4096)
            continue; // beyond what was recorded
          ASSERT_FALSE(got == k::kEmpty && allowed != 0)
              << str(cases[i]) << " Nq=" << nq << " Nk=" << nk << " q0=" << q0
              << " kb=" << b << ": a tile with allowed pairs is not visited";
          ASSERT_FALSE(got == k::kFull && allowed != (q1 - q0) * (k1 - k0))
              << str(cases[i]) << " Nq=" << nq << " Nk=" << nk << " q0=" << q0
              << " kb=" << b << ": a FULL tile has masked pairs";
          ++checkedTiles;
        }
      }
    }
  }
  EXPECT_GT(checkedTiles, 50000);
}

} // namespace
