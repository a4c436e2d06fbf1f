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
#include "tessera/Schedule/Runs.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/kernel/OwnedTable.h"
#include "tessera/kernel/ProgramRuns.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
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

/// A bound of a forward Interval for the query block of `c` (the generated
/// code's boundCode).
k::i64 boundValue(const schedule::Bound &b, const k::RunCtx &c, bool upper) {
  if (b.empty())
    return upper ? k::kUnbounded : 0;
  k::i64 v = upper ? k::kUnbounded : -k::kUnbounded;
  for (const schedule::Atom &a : b) {
    k::i64 x = a.c + (a.var == schedule::Atom::P0   ? c.p0
                      : a.var == schedule::Atom::P1 ? c.p1
                                                    : 0);
    v = upper ? std::min(v, x) : std::max(v, x);
  }
  return v;
}

/// Intersections and differences fold left over the children, as the
/// emitted code does.
template <typename Ctx, typename Eval>
k::Run foldRuns(const schedule::RunExpr &e, const Ctx &c, k::i64 x,
                Eval eval) {
  std::function<k::Run(size_t, k::i64)> fold = [&](size_t n, k::i64 y) {
    if (n == 0)
      return eval(e.children[0], c, y);
    auto lhs = [&](k::i64 z) { return fold(n - 1, z); };
    auto rhs = [&](k::i64 z) { return eval(e.children[n], c, z); };
    return e.kind == schedule::RunExpr::Intersect
               ? k::intersectRuns(lhs, rhs, y)
               : k::differenceRuns(lhs, rhs, y);
  };
  return fold(e.children.size() - 1, x);
}

/// Walks a forward run expression by its closed forms, as the code
/// emitGroupCode generates from it does.
k::Run evalF(const schedule::RunExpr &e, const k::RunCtx &c, k::i64 kb) {
  using E = schedule::RunExpr;
  std::vector<k::i64> ranges;
  for (auto [lo, hi] : e.ranges)
    ranges.insert(ranges.end(), {lo, hi});
  k::i64 count = static_cast<k::i64>(e.ranges.size());
  switch (e.kind) {
  case E::All:
    return k::allRun(c, kb, k::kFull);
  case E::None:
    return k::noRun();
  case E::Interval:
    return k::intervalRun(c, kb, boundValue(e.lo, c, false),
                          boundValue(e.hi, c, true),
                          boundValue(e.flo, c, false),
                          boundValue(e.fhi, c, true));
  case E::ListedK:
    return k::intervalsKRun(c, kb, ranges.data(), count);
  case E::ListedD:
    return k::intervalsDRun(c, kb, ranges.data(), count);
  case E::ListedP:
    return k::intervalsPRun(c, kb, ranges.data(), count);
  case E::PeriodicK:
    return k::periodicKRun(c, kb, e.a, e.b, e.c);
  case E::PeriodicD:
    return k::periodicDRun(c, kb, e.a, e.b, e.c);
  case E::PeriodicP:
    return k::periodicPRun(c, kb, e.a, e.b, e.c);
  case E::Shards:
    return k::shardsRun(c, kb, e.a, e.b, e.c);
  case E::Groups:
    return k::groupsRun(c, kb, e.a, e.b);
  case E::Blocks: {
    std::vector<k::i64> data;
    k::i64 rows = k::appendBlockList(
        std::vector<std::pair<k::i64, k::i64>>(e.blocks.begin(),
                                               e.blocks.end()),
        data);
    return k::blocksRun(c, kb, e.a, e.b, rows, data.data());
  }
  case E::Union: {
    k::Run r = k::noRun();
    for (const E &x : e.children)
      r = k::unionOf(r, evalF(x, c, kb));
    return r;
  }
  case E::Intersect:
  case E::Difference:
    return foldRuns(e, c, kb, evalF);
  default:
    ADD_FAILURE() << "a transposed-only node in a forward expression";
    return k::noRun();
  }
}

/// A bound of a transposed Positions node for the key block of `c`.
k::i64 boundValue(const schedule::Bound &b, const k::TRunCtx &c, bool upper) {
  k::i64 v = upper ? k::kUnbounded : -k::kUnbounded;
  for (const schedule::Atom &a : b) {
    k::i64 x = a.c + (a.var == schedule::Atom::K0   ? c.k0
                      : a.var == schedule::Atom::K1 ? c.k1
                                                    : 0);
    v = upper ? std::min(v, x) : std::max(v, x);
  }
  return v;
}

/// Walks a transposed run expression (schedule::transposeRuns) the way
/// code generated from the IR form would: each node by its closed form.
k::Run evalT(const schedule::RunExpr &e, const k::TRunCtx &c, k::i64 qb) {
  using E = schedule::RunExpr;
  auto keyClass = [&](k::Node n, const k::i64 *data) {
    return k::allRunT(c, qb, k::classifyLeaf(n, data, k::keyTileT(c)));
  };
  std::vector<k::i64> ranges;
  for (auto [lo, hi] : e.ranges)
    ranges.insert(ranges.end(), {lo, hi});
  k::i64 count = static_cast<k::i64>(e.ranges.size());
  switch (e.kind) {
  case E::All:
    return k::allRunT(c, qb, k::kFull);
  case E::None:
    return k::noRun();
  case E::Positions:
    return k::positionRunT(c, qb, boundValue(e.lo, c, false),
                           boundValue(e.hi, c, true),
                           boundValue(e.flo, c, false),
                           boundValue(e.fhi, c, true));
  case E::ListedK:
    return k::allRunT(c, qb, k::classifyIntervals(ranges.data(), count, c.k0,
                                                  c.k1));
  case E::ListedD:
    return k::intervalsDRunT(c, qb, ranges.data(), count);
  case E::ListedP:
    return k::intervalsPRunT(c, qb, ranges.data(), count);
  case E::PeriodicK:
    return k::allRunT(c, qb, k::classifyPeriodic(e.a, e.b, e.c, c.k0, c.k1));
  case E::PeriodicD:
    return k::periodicDRunT(c, qb, e.a, e.b, e.c);
  case E::PeriodicP:
    return k::periodicPRunT(c, qb, e.a, e.b, e.c);
  case E::Shards:
    return keyClass(k::Node{k::kShards, k::kAxisK, e.a, e.b, e.c, 0, 0, 0},
                    nullptr);
  case E::Groups:
    return k::groupsRunT(c, qb, e.a, e.b);
  case E::Blocks: {
    // e.blocks are (key block, query block) pairs: the transposed list.
    std::vector<std::pair<k::i64, k::i64>> t(e.blocks.begin(),
                                             e.blocks.end()),
        f;
    for (auto [kb, qbl] : t)
      f.push_back({qbl, kb});
    std::vector<k::i64> fdata, tdata;
    k::i64 rows = k::appendBlockList(f, fdata);
    k::i64 cols = k::appendBlockList(t, tdata);
    return k::blocksRunT(c, qb, e.a, e.b, rows, fdata.data(), cols,
                         tdata.data());
  }
  case E::Union: {
    k::Run r = k::noRun();
    for (const E &x : e.children)
      r = k::unionOf(r, evalT(x, c, qb));
    return r;
  }
  case E::Intersect:
  case E::Difference:
    return foldRuns(e, c, qb, evalT);
  default:
    ADD_FAILURE() << "a forward-only node in a transposed expression";
    return k::noRun();
  }
}

} // namespace

namespace {

/// The transposed run expression the IR shows (transposeRuns of the
/// forward runs), walked by its closed forms, visits the tiles the forward
/// run expression visits (the generated forward code's), in the same
/// classes, except empty tiles the forward visits where an intersection's
/// offset bounds contradict; every tile holding an allowed pair (the
/// reference semantics) is visited, and a FULL tile allows every pair.
TEST_F(TransposedRunsTest, IrFormMatchesTheForwardRunExpression) {
  PatternGen gen(&ctx, /*seed=*/5150);
  int64_t tiles = 0, leftOut = 0;
  for (int i = 0; i < 4000; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(3);
    if (i % 4 == 0) // key bounds and offset bounds in one interval
      attr = attn::IntersectAttr::get(
          &ctx, {attn::SinkAttr::get(&ctx, gen.uniform(1, 20)),
                 attn::WindowAttr::get(&ctx, gen.uniform(0, 20),
                                       gen.uniform(0, 5)),
                 gen.pattern(1)});
    semantics::Pattern ref = semantics::fromAttr(attr);
    if (std::holds_alternative<semantics::Skip>(ref.node))
      continue;
    schedule::RunExpr t = schedule::transposeRuns(schedule::buildRuns(ref));
    Shape s{gen.uniform(1, 50), gen.uniform(1, 50), gen.uniform(1, 10),
            gen.uniform(1, 10), 0, 1};
    if (i % 3 == 0)
      s.nk = s.nq;
    if (i % 4 == 0)
      s.bq = 2 * s.bk;
    s.numHeads = gen.uniform(1, 6);
    s.head = gen.uniform(0, s.numHeads - 1);
    TileMap got;
    int64_t nqb = (s.nq + s.bq - 1) / s.bq;
    for (int64_t k0 = 0; k0 < s.nk; k0 += s.bk) {
      k::TRunCtx c = k::makeTRunCtx(k0, std::min(k0 + s.bk, s.nk), s.nq,
                                    s.nk, s.bq, s.head, s.numHeads);
      int64_t calls = 0;
      for (k::Run r = evalT(t, c, 0); k::isRun(r);
           r = evalT(t, c, r.hi + 1)) {
        ASSERT_LE(++calls, nqb) << s.str() << " " << str(attr);
        for (int64_t b = r.lo; b <= r.hi; ++b)
          got[{b, k0 / s.bk}] = r.cls;
      }
    }
    schedule::RunExpr f = schedule::buildRuns(ref);
    TileMap forward;
    for (int64_t q0 = 0; q0 < s.nq; q0 += s.bq) {
      k::RunCtx c = k::makeRunCtx(q0, std::min(q0 + s.bq, s.nq), s.nq, s.nk,
                                  s.bk, s.head, s.numHeads);
      for (k::Run r = evalF(f, c, 0); k::isRun(r); r = evalF(f, c, r.hi + 1))
        for (int64_t b = r.lo; b <= r.hi; ++b)
          forward[{q0 / s.bq, b}] = r.cls;
    }
    // The forward's tiles, less those of contradictory offset bounds that
    // the forward visits although they hold no pair (the loop below checks
    // that every tile left out is empty).
    for (auto [tile, cls] : got) {
      auto it = forward.find(tile);
      ASSERT_TRUE(it != forward.end() && it->second == cls)
          << s.str() << " tile (qb " << tile.first << ", kb " << tile.second
          << ") class " << cls << ", forward "
          << (it == forward.end() ? -1 : it->second) << " pattern "
          << str(attr);
    }
    leftOut += forward.size() - got.size();
    for (int64_t q = 0; q < s.nq; ++q)
      for (int64_t kk = 0; kk < s.nk; ++kk) {
        bool allowed =
            semantics::allowed(ref, q, kk, s.head, s.nq, s.nk, s.numHeads);
        auto it = got.find({q / s.bq, kk / s.bk});
        int cls = it == got.end() ? k::kEmpty : it->second;
        ASSERT_TRUE(allowed ? cls != k::kEmpty : cls != k::kFull)
            << s.str() << " q=" << q << " k=" << kk << " class " << cls
            << " pattern " << str(attr);
      }
    tiles += got.size();
  }
  EXPECT_GT(tiles, 30000);
  EXPECT_LT(leftOut * 100, tiles); // rare
}

} // namespace

namespace {

/// Sinks of 16 keys within a 200-key window, one interval of the forward
/// (keys [max(0, p0 - 200), min(15, p1)]): key block 0 counts for its keys
/// 0..15 only, seen by the positions [0, 215], query blocks 0..3 at 64 x 64
/// (block 4, positions 256..319, sees none of them).
TEST_F(TransposedRunsTest, IrFormKeepsKeyAndOffsetBoundsTogether) {
  using namespace semantics;
  schedule::RunExpr t = schedule::transposeRuns(schedule::buildRuns(
      Pattern{Intersect{{Pattern{Sink{16}}, Pattern{Window{200, 0}}}}}));
  k::TRunCtx c = k::makeTRunCtx(0, 64, 1024, 1024, 64, 0, 1);
  std::vector<int64_t> classes(16, k::kEmpty);
  for (k::Run r = evalT(t, c, 0); k::isRun(r); r = evalT(t, c, r.hi + 1))
    for (int64_t b = r.lo; b <= r.hi; ++b)
      classes[b] = r.cls;
  std::vector<int64_t> expected(16, k::kEmpty);
  std::fill(expected.begin(), expected.begin() + 4, P);
  EXPECT_EQ(classes, expected);
}

} // namespace
