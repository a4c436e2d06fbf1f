//===- TransposedRunsTest.cpp - the transposed schedule ---------------------===//
//
// The closed-form transposed walk (for a key block, the runs of query blocks
// that see it; the backward's key-major pass) against brute force: the class
// kernel::classifyTile gives every (query block, key block) tile, and the
// forward walk's tiles. Random patterns, lengths in both orders, equal and
// different block sizes that do and do not divide the lengths.
//
//===----------------------------------------------------------------------===//

#include "PatternGen.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/kernel/ProgramRuns.h"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <string>
#include <vector>

using namespace tessera;
using tessera::test::PatternGen;
using tessera::test::str;
namespace k = tessera::kernel;

namespace {

/// One tiling of one head.
struct Shape {
  int64_t nq, nk, bq, bk, head, numHeads;
  std::string str() const {
    return "Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk) +
           " tile=" + std::to_string(bq) + "x" + std::to_string(bk) +
           " head=" + std::to_string(head) + "/" + std::to_string(numHeads);
  }
};

using TileMap = std::map<std::pair<int64_t, int64_t>, int>; // (qb, kb) -> cls

/// Walks the transposed runs of every key block; checks each run is well
/// formed, the walk ends within nqb + 1 calls and never goes back. Returns
/// the visited tiles with their classes, or an error in `error`.
TileMap walkTransposed(const k::ProgramRuns &walker, const Shape &s,
                       std::string &error, int64_t *runs = nullptr) {
  TileMap tiles;
  int64_t nqb = (s.nq + s.bq - 1) / s.bq;
  for (int64_t k0 = 0; k0 < s.nk; k0 += s.bk) {
    int64_t kb = k0 / s.bk;
    k::TRunCtx c = k::makeTRunCtx(k0, std::min(k0 + s.bk, s.nk), s.nq, s.nk,
                                  s.bq, s.head, s.numHeads);
    for (int64_t qb = 0, calls = 0;; ++calls) {
      std::string where = s.str() + " kb=" + std::to_string(kb);
      if (calls > nqb + 1) {
        error = where + ": the walk does not end";
        return tiles;
      }
      k::Run r = walker.runFrom(c, qb);
      if (!k::isRun(r))
        break;
      if (runs)
        ++*runs;
      if (r.lo < qb || r.hi >= nqb ||
          (r.cls != k::kFull && r.cls != k::kPartial)) {
        error = where + ": bad run [" + std::to_string(r.lo) + ", " +
                std::to_string(r.hi) + "] class " + std::to_string(r.cls) +
                " from " + std::to_string(qb);
        return tiles;
      }
      for (int64_t b = r.lo; b <= r.hi; ++b)
        tiles[{b, kb}] = r.cls;
      qb = r.hi + 1;
    }
  }
  return tiles;
}

/// Every non-empty tile by classifyTile, one test per tile.
TileMap bruteForce(const schedule::Program &prog, const Shape &s) {
  TileMap tiles;
  for (int64_t q0 = 0; q0 < s.nq; q0 += s.bq)
    for (int64_t k0 = 0; k0 < s.nk; k0 += s.bk) {
      k::Tile t{q0,   std::min(q0 + s.bq, s.nq), k0,     std::min(k0 + s.bk, s.nk),
                s.nq, s.nk,                      s.head, s.numHeads};
      int cls = k::classifyTile(prog.nodes.data(),
                                static_cast<k::i64>(prog.nodes.size()),
                                prog.data.data(), t);
      if (cls != k::kEmpty)
        tiles[{q0 / s.bq, k0 / s.bk}] = cls;
    }
  return tiles;
}

/// The forward walk's tiles.
TileMap walkForward(const k::ProgramRuns &walker, const Shape &s) {
  TileMap tiles;
  for (int64_t q0 = 0; q0 < s.nq; q0 += s.bq) {
    k::RunCtx c = k::makeRunCtx(q0, std::min(q0 + s.bq, s.nq), s.nq, s.nk,
                                s.bk, s.head, s.numHeads);
    walker.forEachRun(c, [&](k::Run r) {
      for (int64_t b = r.lo; b <= r.hi; ++b)
        tiles[{q0 / s.bq, b}] = r.cls;
    });
  }
  return tiles;
}

std::string firstDifference(const TileMap &got, const TileMap &want) {
  for (auto [tile, cls] : want) {
    auto it = got.find(tile);
    if (it == got.end() || it->second != cls)
      return "tile (qb " + std::to_string(tile.first) + ", kb " +
             std::to_string(tile.second) + "): expected class " +
             std::to_string(cls) + ", got " +
             (it == got.end() ? std::string("not visited")
                              : std::to_string(it->second));
  }
  for (auto [tile, cls] : got)
    if (!want.count(tile))
      return "tile (qb " + std::to_string(tile.first) + ", kb " +
             std::to_string(tile.second) + ") visited as " +
             std::to_string(cls) + " but empty";
  return "";
}

schedule::Program lower(const semantics::Pattern &p) {
  schedule::Program prog;
  std::string error;
  EXPECT_TRUE(schedule::lowerPattern(p, prog, error)) << error;
  if (prog.data.empty())
    prog.data.push_back(0); // never a null data pointer
  return prog;
}

/// The runs of key block kb as (lo, hi, class) triples.
std::vector<std::array<int64_t, 3>> runsOf(const semantics::Pattern &p,
                                           const Shape &s, int64_t kb) {
  schedule::Program prog = lower(p);
  k::ProgramRuns walker(prog.nodes.data(), prog.nodes.size(),
                        prog.data.data());
  k::TRunCtx c = k::makeTRunCtx(kb * s.bk, std::min(kb * s.bk + s.bk, s.nk),
                                s.nq, s.nk, s.bq, s.head, s.numHeads);
  std::vector<std::array<int64_t, 3>> out;
  walker.forEachRun(
      c, [&](k::Run r) { out.push_back({r.lo, r.hi, int64_t(r.cls)}); });
  return out;
}

constexpr int64_t F = k::kFull, P = k::kPartial;
using Runs = std::vector<std::array<int64_t, 3>>;

class TransposedRunsTest : public ::testing::Test {
protected:
  TransposedRunsTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

/// Random patterns (every leaf kind and the combinators, nested three
/// deep): the transposed walk visits exactly the tiles classifyTile keeps,
/// in its classes, and the same tiles as the forward walk.
TEST_F(TransposedRunsTest, RandomPatternsMatchTileClassesAndTheForward) {
  PatternGen gen(&ctx, /*seed=*/20201);
  int64_t runs = 0, tiles = 0;
  for (int i = 0; i < 6000; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(3);
    schedule::Program prog = lower(semantics::fromAttr(attr));
    k::ProgramRuns walker(prog.nodes.data(), prog.nodes.size(),
                          prog.data.data());
    Shape s;
    s.nq = gen.uniform(1, 60);
    s.nk = gen.uniform(1, 60);
    if (i % 3 == 0) // equal lengths a third of the time
      s.nk = s.nq;
    s.bq = gen.uniform(1, 12);
    s.bk = i % 4 == 0 ? s.bq : gen.uniform(1, 12);
    if (i % 5 == 0) { // the CUDA kernels' shape, scaled down: 2 x 1
      s.bk = gen.uniform(1, 6);
      s.bq = 2 * s.bk;
    }
    s.numHeads = gen.uniform(1, 6);
    s.head = gen.uniform(0, s.numHeads - 1);
    std::string error;
    TileMap got = walkTransposed(walker, s, error, &runs);
    ASSERT_EQ(error, "") << "pattern " << str(attr);
    TileMap want = bruteForce(prog, s);
    ASSERT_EQ(firstDifference(got, want), "")
        << s.str() << " pattern " << str(attr);
    ASSERT_EQ(firstDifference(got, walkForward(walker, s)), "")
        << s.str() << " pattern " << str(attr) << " (against the forward)";
    tiles += got.size();
  }
  EXPECT_GT(runs, 6000);
  EXPECT_GT(tiles, 60000);
}

/// Lengths far apart in both orders (rows before the first key, keys past
/// the last row) and blocks larger than a length.
TEST_F(TransposedRunsTest, LengthsFarApart) {
  PatternGen gen(&ctx, /*seed=*/977);
  for (int i = 0; i < 3000; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(2);
    schedule::Program prog = lower(semantics::fromAttr(attr));
    k::ProgramRuns walker(prog.nodes.data(), prog.nodes.size(),
                          prog.data.data());
    int64_t a = gen.uniform(1, 8), b = gen.uniform(30, 90);
    Shape s{i % 2 ? a : b, i % 2 ? b : a, gen.uniform(1, 16),
            gen.uniform(1, 16), 0, 1};
    s.numHeads = gen.uniform(1, 4);
    s.head = gen.uniform(0, s.numHeads - 1);
    std::string error;
    TileMap got = walkTransposed(walker, s, error);
    ASSERT_EQ(error, "") << "pattern " << str(attr);
    ASSERT_EQ(firstDifference(got, bruteForce(prog, s)), "")
        << s.str() << " pattern " << str(attr);
  }
}

/// Closed forms worked out by hand (docs/backward.md).
TEST_F(TransposedRunsTest, HandDerivedRuns) {
  using namespace semantics;
  // A 256-key causal window at 64 x 64, Nq = Nk = 1024: key block 5 (keys
  // 320..383) is seen by positions [320, 639], by all of its keys from
  // positions [383, 576]: query block 5 partial, 6..8 full, 9 partial.
  Shape sq{1024, 1024, 64, 64, 0, 1};
  EXPECT_EQ(runsOf(Pattern{Window{256, 0}}, sq, 5),
            (Runs{{5, 5, P}, {6, 8, F}, {9, 9, P}}));
  // The same at 128 x 64: positions [320, 639] are query blocks 2..4, and
  // block 3 (384..511) lies inside [383, 576].
  Shape wide{1024, 1024, 128, 64, 0, 1};
  EXPECT_EQ(runsOf(Pattern{Window{256, 0}}, wide, 5),
            (Runs{{2, 2, P}, {3, 3, F}, {4, 4, P}}));
  // Causal at 128 x 64: key block 5 is seen from query block 2 on
  // (position 320), fully from position 383: block 2 (256..383) partial,
  // then every block full.
  EXPECT_EQ(runsOf(Pattern{Causal{}}, wide, 5), (Runs{{2, 2, P}, {3, 7, F}}));
  // Nq < Nk (128 queries at positions 384..511): key block 6 (384..447) is
  // seen by rows 0.. (partial: row 0 is position 384 < 447), block 1 full;
  // key block 0 by every row, fully.
  Shape decode{128, 512, 64, 64, 0, 1};
  EXPECT_EQ(runsOf(Pattern{Causal{}}, decode, 6), (Runs{{0, 0, P}, {1, 1, F}}));
  EXPECT_EQ(runsOf(Pattern{Causal{}}, decode, 0), (Runs{{0, 1, F}}));
  // Nq > Nk (512 queries at positions -384..127): key block 0 is seen from
  // row 384 (position 0): query block 6 partial, 7 full.
  Shape prefill{512, 128, 64, 64, 0, 1};
  EXPECT_EQ(runsOf(Pattern{Causal{}}, prefill, 0),
            (Runs{{6, 6, P}, {7, 7, F}}));
  // Sinks (keys < 64 with d <= 0): key block 0 of a causal layout is seen
  // by every query block from the diagonal; key block 1 by none.
  EXPECT_EQ(runsOf(Pattern{Sink{64}}, sq, 0), (Runs{{0, 0, P}, {1, 15, F}}));
  EXPECT_EQ(runsOf(Pattern{Sink{64}}, sq, 1), Runs{});
  // A vertical stripe of keys [70, 80): key block 1 (64..127) partially,
  // for every query block.
  EXPECT_EQ(runsOf(Pattern{VerticalStripe{IndexSet{{{70, 80}}, 0, 0, 0}}},
                   sq, 1),
            (Runs{{0, 15, P}}));
  // A horizontal stripe of positions [64, 200): query blocks 1, 2 full, 3
  // partial, whatever the key block.
  EXPECT_EQ(runsOf(Pattern{HorizontalStripe{IndexSet{{{64, 200}}, 0, 0, 0}}},
                   sq, 9),
            (Runs{{1, 2, F}, {3, 3, P}}));
  // Diagonals d = 0 mod 256 of width 1 at 64 x 64, Nq = Nk = 1024: key
  // block 5 (320..383) meets d = 256 (positions 64..127: query block 1),
  // d = 0 (block 5), d = -256 (block 9) and d = -512 (block 13), each
  // partially.
  EXPECT_EQ(runsOf(Pattern{MultiDiagonal{256, {}, 0}}, sq, 5),
            (Runs{{1, 1, P}, {5, 5, P}, {9, 9, P}, {13, 13, P}}));
  // Shifted groups of 256, the upper half of the heads shifted by 128:
  // key block 5 (320..383) lies in group [128, 383] of head 1 of 2:
  // positions 128..383 see all of it, query blocks 2..5 full.
  Shape shifted{1024, 1024, 64, 64, 1, 2};
  EXPECT_EQ(runsOf(Pattern{ShiftedGroups{256, 128}}, shifted, 5),
            (Runs{{2, 5, F}}));
  // A block list of 128 x 128 blocks (0, 0), (2, 0), (2, 1) at 64 x 64:
  // key block 1 (in pattern key block 0) is seen by query blocks 0, 1
  // (pattern row 0) and 4, 5 (pattern row 2), fully.
  BlockSparse bs{128, 128, {{0, 0}, {2, 0}, {2, 1}}};
  EXPECT_EQ(runsOf(Pattern{bs}, sq, 1),
            (Runs{{0, 0, F}, {1, 1, F}, {4, 4, F}, {5, 5, F}}));
}

/// The walk costs O(runs): a window's key block meets the same number of
/// runs at any length, and so does the A-shape's sink block (seen by every
/// query block).
TEST_F(TransposedRunsTest, RunCountDoesNotGrowWithLength) {
  using namespace semantics;
  for (Pattern p : {Pattern{Window{256, 0}}, Pattern{AShape{64, 1024, 0}}}) {
    schedule::Program prog = lower(p);
    k::ProgramRuns walker(prog.nodes.data(), prog.nodes.size(),
                          prog.data.data());
    std::vector<int64_t> perLength;
    for (int64_t n : {int64_t(1) << 15, int64_t(1) << 20, int64_t(1) << 30})
      for (int64_t k0 : {int64_t(0), n / 2}) {
        k::TRunCtx c = k::makeTRunCtx(k0, k0 + 64, n, n, 128, 0, 1);
        int64_t runs = 0, tiles = 0;
        walker.forEachRun(c, [&](k::Run r) {
          ++runs;
          tiles += r.hi - r.lo + 1;
        });
        // Key block 0's tiles grow with the length (every query block sees
        // the sinks); its runs do not.
        perLength.push_back(k0 == 0 ? runs : runs * 1000 + tiles);
      }
    EXPECT_EQ(perLength[0], perLength[2]);
    EXPECT_EQ(perLength[0], perLength[4]);
    EXPECT_EQ(perLength[1], perLength[3]);
    EXPECT_EQ(perLength[1], perLength[5]);
  }
}

/// A block-sparse leaf without its transposed list (the search over the
/// listed rows) walks the same runs as with it.
TEST_F(TransposedRunsTest, BlockListWithoutTranspose) {
  PatternGen gen(&ctx, /*seed=*/4242);
  int checked = 0;
  for (int i = 0; i < 4000 && checked < 500; ++i) {
    attn::PatternAttrInterface attr = gen.leaf();
    if (!llvm::isa<attn::BlockSparseAttr>(attr))
      continue;
    ++checked;
    schedule::Program prog = lower(semantics::fromAttr(attr));
    ASSERT_EQ(prog.nodes.size(), 1u);
    Shape s{gen.uniform(1, 40), gen.uniform(1, 40), gen.uniform(1, 6),
            gen.uniform(1, 6), 0, 1};
    TileMap want = bruteForce(prog, s);
    TileMap got;
    for (int64_t k0 = 0; k0 < s.nk; k0 += s.bk) {
      k::TRunCtx c = k::makeTRunCtx(k0, std::min(k0 + s.bk, s.nk), s.nq,
                                    s.nk, s.bq, 0, 1);
      for (k::Run r = k::leafRunFromT(prog.nodes[0], prog.data.data(), c, 0,
                                      nullptr, 0);
           k::isRun(r); r = k::leafRunFromT(prog.nodes[0], prog.data.data(),
                                            c, r.hi + 1, nullptr, 0))
        for (int64_t b = r.lo; b <= r.hi; ++b)
          got[{b, k0 / s.bk}] = r.cls;
    }
    ASSERT_EQ(firstDifference(got, want), "") << s.str() << " " << str(attr);
  }
  EXPECT_GT(checked, 100);
}

} // namespace
