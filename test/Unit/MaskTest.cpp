//===- MaskTest.cpp - partial-tile masks from closed forms ----------------===//
//
// The mask code the CUDA emitter generates (schedule::emitMaskCode, helpers
// in tessera/kernel/Masks.cuh), compiled for the host: for every pattern of
// maskCases() and random tiles, the keep bits of all four column pairs
// (c2) and both row halves from the closed forms must equal those of the
// element predicate (the generated predicate, and the reference semantics);
// the generic predicate form must too. Tiles: row positions negative and
// positive, k0 at any offset from the rows (not a multiple of 64 from
// them), tiles crossing Nk, keys and positions near the parameters'
// breakpoints, near the 32-bit clamps (2^30) and near 2^40.
//
//===----------------------------------------------------------------------===//

#include "GeneratedMasks.inc"
#include "MaskCases.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Masks.h"
#include "tessera/Semantics/FromAttr.h"

#include <gtest/gtest.h>

#include <random>

using namespace tessera;
namespace k = tessera::kernel;
namespace s = tessera::semantics;
using schedule::MaskForm;
using schedule::RunExpr;

namespace {

using tessera::test::str;

const int64_t kL = int64_t(1) << 40;

class MaskTest : public ::testing::Test {
protected:
  MaskTest() {
    ctx.getOrLoadDialect<attn::AttnDialect>();
    cases = test::maskCases(&ctx);
    handCases = test::maskHandCases(&ctx).size();
  }
  mlir::MLIRContext ctx;
  std::vector<attn::PatternAttrInterface> cases;
  size_t handCases = 0; ///< at the head of `cases`
};

/// The bits the element predicate gives (the kernel's meaning of keep).
k::u32 expected(const s::Pattern &p, int64_t rowPos, int64_t k0, int c2,
                int64_t nk, int64_t head, int64_t numHeads) {
  k::u32 bits = 0;
  for (int i = 0; i < 32; ++i) {
    int64_t pi = rowPos + ((i & 3) >= 2 ? 8 : 0);
    int64_t kj = k0 + (i >> 2) * 8 + c2 + (i & 1);
    // q = p with Nq = Nk: the aligned position is p itself.
    if (kj < nk && s::allowed(p, s::Coord(pi, kj, head, nk, nk, numHeads)))
      bits |= 1u << i;
  }
  return bits;
}

/// Numbers where a pattern's masks change: its constants, periods, phases,
/// range ends and listed blocks' first keys, for tiles placed near them.
void breakpoints(const RunExpr &e, std::vector<int64_t> &out) {
  for (const schedule::Bound *b : {&e.lo, &e.hi})
    for (const schedule::Atom &a : *b)
      out.push_back(a.c);
  for (int64_t v : {e.a, e.b, e.c})
    if (v != 0)
      out.push_back(v);
  for (auto [lo, hi] : e.ranges) {
    out.push_back(lo);
    out.push_back(hi);
  }
  for (auto [qb, kb] : e.blocks) {
    out.push_back(k::mulSat(qb, e.a));
    out.push_back(k::mulSat(kb, e.b));
  }
  for (const RunExpr &c : e.children)
    breakpoints(c, out);
}

struct Tile {
  int64_t rowPos, k0, nk, head, numHeads;
};

class TileGen {
public:
  explicit TileGen(uint64_t seed) : rng(seed) {}
  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  }

  Tile next(const std::vector<int64_t> &points) {
    const int64_t clamp = int64_t(1) << 30;
    Tile t{};
    t.numHeads = uniform(1, 8);
    t.head = uniform(0, t.numHeads - 1);
    auto near = [&](int64_t x) { return x + uniform(-80, 80); };
    auto point = [&]() {
      return points.empty() ? uniform(0, 100)
                            : points[size_t(uniform(0, points.size() - 1))];
    };
    switch (uniform(0, 6)) {
    case 0: // small lengths
      t.k0 = uniform(0, 400);
      t.rowPos = uniform(-300, 500);
      break;
    case 1: { // as the kernel calls it: 64-key tiles around the diagonal
      int64_t nk = uniform(0, 1) ? uniform(1, 1 << 20) : uniform(1, kL);
      int64_t nq = uniform(0, 1) ? nk : uniform(1, kL);
      int64_t q = uniform(0, nq - 1) / 16 * 16 + uniform(0, 7);
      t.rowPos = q + nk - nq;
      int64_t kb = std::max<int64_t>(0, std::min(t.rowPos, nk - 1) / 64 +
                                            uniform(-3, 1));
      t.k0 = std::min(kb * 64, (nk - 1) / 64 * 64);
      t.nk = nk;
      return t;
    }
    case 2: // keys near a breakpoint, rows near the tile
      t.k0 = near(point());
      t.rowPos = t.k0 - near(0);
      break;
    case 3: // offsets near a breakpoint
      t.k0 = uniform(0, 1) ? near(point()) : uniform(0, kL);
      t.rowPos = t.k0 + near(point()) * (uniform(0, 1) ? 1 : -1);
      break;
    case 4: // rows near a breakpoint (rows, blocks, groups)
      t.rowPos = near(point()) * (uniform(0, 3) ? 1 : -1);
      t.k0 = uniform(0, 1) ? near(point()) : t.rowPos + near(0);
      break;
    case 5: // at the 32-bit clamps: kb or |d| near 2^30
      t.k0 = uniform(0, 1) ? near(clamp) : uniform(0, 1000);
      t.rowPos = t.k0 + (uniform(0, 1) ? 1 : -1) * near(clamp);
      break;
    default: // near the limit
      t.k0 = kL - uniform(0, 5000);
      t.rowPos = uniform(0, 1) ? t.k0 - near(0) : uniform(-kL, kL);
      break;
    }
    t.k0 = std::max<int64_t>(0, std::min(t.k0, kL + 64));
    // Tiles crossing Nk, and longer key ranges.
    t.nk = uniform(0, 1) ? t.k0 + uniform(1, 64)
                         : t.k0 + 1 + uniform(0, uniform(0, 1) ? 100 : kL);
    return t;
  }

private:
  std::mt19937_64 rng;
};

std::string where(const Tile &t, int c2) {
  return "rowPos=" + std::to_string(t.rowPos) + " k0=" + std::to_string(t.k0) +
         " c2=" + std::to_string(c2) + " nk=" + std::to_string(t.nk) +
         " head=" + std::to_string(t.head) + "/" + std::to_string(t.numHeads);
}

TEST_F(MaskTest, OneEntryPerCase) {
  ASSERT_EQ(static_cast<long>(cases.size()), genmask::kNumMasks);
}

/// Every leaf of every case has a closed form (none falls back to the
/// predicate), and the leaf kinds get the forms docs/bundles.md lists.
TEST_F(MaskTest, FormsPerLeaf) {
  for (const auto &c : cases) {
    RunExpr runs = schedule::buildRuns(s::fromAttr(c));
    for (MaskForm f : schedule::maskForms(runs))
      ASSERT_NE(f, MaskForm::Predicate) << str(c);
    schedule::MaskOptions generic;
    generic.closedForms = false;
    for (MaskForm f : schedule::maskForms(runs, generic))
      ASSERT_TRUE(f == MaskForm::Predicate || f == MaskForm::All ||
                  f == MaskForm::None)
          << str(c);
  }
  auto forms = [&](attn::PatternAttrInterface a) {
    return schedule::maskForms(schedule::buildRuns(s::fromAttr(a)));
  };
  mlir::MLIRContext *c = &ctx;
  using V = std::vector<MaskForm>;
  EXPECT_EQ(forms(attn::CausalAttr::get(c)), V{MaskForm::Interval});
  EXPECT_EQ(forms(attn::AShapeAttr::get(c, 4, 16, 0)),
            (V{MaskForm::Interval, MaskForm::Interval}));
  EXPECT_EQ(forms(attn::ShiftedGroupsAttr::get(c, 8, 4)),
            V{MaskForm::Interval});
  EXPECT_EQ(forms(attn::MultiDiagonalAttr::get(c, 8, {}, 1)),
            V{MaskForm::Periodic});
  EXPECT_EQ(forms(attn::GridAttr::get(c, 8, 1, 1, 0)),
            (V{MaskForm::Periodic, MaskForm::Periodic}));
  EXPECT_EQ(forms(attn::StridedShardsAttr::get(c, 4, 16, 1)),
            V{MaskForm::Periodic});
  // A period past 2^62: the shard's one block.
  EXPECT_EQ(forms(attn::StridedShardsAttr::get(c, kL, kL, 1)),
            V{MaskForm::Interval});
  EXPECT_EQ(forms(attn::HorizontalStripeAttr::get(c, {}, 4, 1, 0)),
            V{MaskForm::Row});
  EXPECT_EQ(forms(attn::BlockSparseAttr::get(c, 64, 64, {0, 0})),
            V{MaskForm::Listed});
  EXPECT_EQ(
      forms(attn::MultiDiagonalAttr::get(c, 0, {-40, -30, -20, -10, 0}, 1)),
      V{MaskForm::Listed});
}

/// The closed forms, the generic form and the former predicate loop agree
/// with the reference on random tiles of every case, all four lanes of a
/// row quad (c2) and both row halves (the bits of rows rowPos and
/// rowPos + 8).
TEST_F(MaskTest, KeepBitsMatchThePredicate) {
  TileGen gen(/*seed=*/1729);
  int64_t tiles = 0, setBits = 0, clearBits = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    s::Pattern ref = s::fromAttr(cases[i]);
    std::vector<int64_t> points;
    breakpoints(schedule::buildRuns(ref), points);
    const genmask::Entry &g = genmask::kMasks[i];
    int reps = i < handCases ? 600 : 150;
    for (int rep = 0; rep < reps; ++rep) {
      Tile t = gen.next(points);
      for (int c2 = 0; c2 < 8; c2 += 2) {
        k::u32 want =
            expected(ref, t.rowPos, t.k0, c2, t.nk, t.head, t.numHeads);
        ASSERT_EQ(g.closed(t.rowPos, t.k0, c2, t.nk, t.head, t.numHeads), want)
            << str(cases[i]) << " " << where(t, c2);
        ASSERT_EQ(g.generic(t.rowPos, t.k0, c2, t.nk, t.head, t.numHeads), want)
            << "generic form: " << str(cases[i]) << " " << where(t, c2);
        ASSERT_EQ(g.reference(t.rowPos, t.k0, c2, t.nk, t.head, t.numHeads),
                  want)
            << "predicate loop: " << str(cases[i]) << " " << where(t, c2);
        int ones = __builtin_popcount(want);
        setBits += ones;
        clearBits += 32 - ones;
      }
      ++tiles;
    }
  }
  // The tiles were partial often enough to mean something.
  EXPECT_GT(setBits, tiles * 4 * 4);
  EXPECT_GT(clearBits, tiles * 4 * 4);
}

/// threadBits: bit 4 nt + 2 h + e is bit 8 nt + e of row h.
TEST(MaskHelpers, ThreadBitsLayout) {
  std::mt19937_64 rng(7);
  for (int rep = 0; rep < 2000; ++rep) {
    k::u64 row[2] = {rng(), rng()};
    if (rep < 128) // single bits
      row[rep / 64] = k::u64(1) << (rep % 64), row[1 - rep / 64] = 0;
    k::u32 got = k::threadBits(row[0], row[1]), want = 0;
    for (int i = 0; i < 32; ++i) {
      int nt = i >> 2, e = i & 3;
      if ((row[e >> 1] >> (8 * nt + (e & 1))) & 1)
        want |= 1u << i;
    }
    ASSERT_EQ(got, want) << std::hex << row[0] << " " << row[1];
  }
}

/// The device computes evenBytes with __byte_perm(a, b, 0x6420): result
/// byte n is input byte (selector nibble n) of the 8 bytes {a, b} (CUDA's
/// __nv_byte_perm). The host form must be that function.
TEST(MaskHelpers, EvenBytesIsTheDevicePermute) {
  auto bytePerm = [](k::u32 x, k::u32 y, k::u32 s) {
    k::u64 in = (k::u64(y) << 32) | x;
    k::u32 r = 0;
    for (int n = 0; n < 4; ++n)
      r |= k::u32((in >> (8 * ((s >> (4 * n)) & 7))) & 0xff) << (8 * n);
    return r;
  };
  std::mt19937_64 rng(11);
  for (int rep = 0; rep < 1000; ++rep) {
    k::u32 a = k::u32(rng()), b = k::u32(rng());
    ASSERT_EQ(k::evenBytes(a, b), bytePerm(a, b, 0x6420)) << a << " " << b;
  }
}

/// The span, periodic and listed helpers against bit-by-bit definitions,
/// on their whole domains (spans, small periods) or around their edges.
TEST(MaskHelpers, ClosedFormsBitByBit) {
  for (int lo = 0; lo <= 63; ++lo)
    for (int end = 0; end <= 63; ++end) {
      k::u64 want = 0;
      for (int j = lo; j < end; ++j)
        want |= k::u64(1) << j;
      ASSERT_EQ(k::bitSpan(lo, end), want) << lo << " " << end;
    }
  // Bits 0..57 are the ones threadBits reads.
  const k::u64 read = (k::u64(1) << 58) - 1;
  for (int period = 1; period <= 62; ++period)
    for (int width = 1; width < period; ++width) {
      k::u64 pattern = 0;
      for (int i = 0; i < 64; ++i)
        if (i % period < width)
          pattern |= k::u64(1) << i;
      for (int r = 0; r < period; ++r) {
        k::u64 want = 0;
        for (int j = 0; j < 64; ++j)
          if ((r + j) % period < width)
            want |= k::u64(1) << j;
        ASSERT_EQ(
            k::periodicSmall(pattern, pattern << 1, period * (64 / period), r),
            want)
            << period << " " << width << " " << r;
      }
    }
  for (int64_t period : {63, 64, 65, 100, 1000, 1 << 29})
    for (int64_t width : {int64_t(1), int64_t(7), period / 2, period - 1})
      for (int64_t r : {int64_t(0), int64_t(1), width - 1, width, width + 1,
                        period - 64, period - 63, period - 2, period - 1}) {
        if (r < 0 || r >= period || width < 1)
          continue;
        k::u64 want = 0;
        for (int j = 0; j < 64; ++j)
          if ((r + j) % period < width)
            want |= k::u64(1) << j;
        ASSERT_EQ(k::periodicLarge(int(r), int(period), int(width)) & read,
                  want & read)
            << period << " " << width << " " << r;
        ASSERT_EQ(k::periodicLarge64(r + 0, period, width) & read, want & read);
      }
  const k::i64 ranges[] = {-100, -90, 0, 3, 5, 6, 60, 200, kL - 2, kL};
  for (k::i64 x : {k::i64(-200), k::i64(-95), k::i64(-60), k::i64(0), k::i64(4),
                   k::i64(59), k::i64(61), k::i64(kL - 70), k::i64(kL - 1)}) {
    k::u64 want = 0;
    for (int j = 0; j < 58; ++j)
      if (k::inRanges(ranges, 5, x + j))
        want |= k::u64(1) << j;
    ASSERT_EQ(k::listedBits(ranges, 5, x) & read, want) << x;
  }
}

} // namespace
