//===- MaskCases.h - patterns whose tile masks are tested -------*- C++ -*-===//
//
// One list, built the same way by the build-time generator (GenMasks.cpp,
// which writes each pattern's generated mask code) and by MaskTest, which
// compiles that code in and compares its keep bits with the element
// predicate. Every leaf kind with small parameters, periods past the
// 62-bit constant form, constants on both sides of the 32-bit threshold
// (kMaskSmall = 2^29), of the offsets' clamp (2^30) and of 2^31, and at the
// documented limit (2^40), combinations, then random trees of small
// parameters (PatternGen) and of mixed scales.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_UNIT_MASKCASES_H
#define TESSERA_TEST_UNIT_MASKCASES_H

#include "PatternGen.h"

namespace tessera::test {

/// Random trees whose leaves take parameters of every scale: small, past
/// a 64-key tile, at the 32-bit threshold, near 2^40.
class ScaledGen {
public:
  ScaledGen(MLIRContext *ctx, uint64_t seed) : ctx(ctx), gen(ctx, seed) {}

  int64_t value() {
    const int64_t t = int64_t(1) << 29, l = int64_t(1) << 40;
    switch (gen.uniform(0, 5)) {
    case 0:
      return gen.uniform(1, 20);
    case 1:
      return gen.uniform(21, 5000);
    case 2:
      return t + gen.uniform(-12, 12);
    case 3:
      return l - gen.uniform(0, 5000);
    case 4: // the 32-bit clamp (2^30) to past 2^31
      return gen.uniform((t << 1) - 64, (t << 2) + 64);
    default:
      return gen.uniform(1, l);
    }
  }

  PatternAttrInterface leaf() {
    const int64_t l = int64_t(1) << 40;
    switch (gen.uniform(0, 10)) {
    case 0:
      return CausalAttr::get(ctx);
    case 1:
      return WindowAttr::get(ctx, value(), gen.uniform(0, 1) ? 0 : value());
    case 2:
      return SinkAttr::get(ctx, value());
    case 3:
      return AShapeAttr::get(ctx, value(), value(),
                             gen.uniform(0, 1) ? 0 : value());
    case 4: {
      if (gen.uniform(0, 1)) {
        int64_t stride = value();
        return MultiDiagonalAttr::get(ctx, stride, {},
                                      gen.uniform(0, stride / 3));
      }
      std::set<int64_t> offs;
      int64_t n = gen.uniform(1, 6);
      while (static_cast<int64_t>(offs.size()) < n)
        offs.insert(gen.uniform(0, 1) ? gen.uniform(-200, 200)
                                      : gen.uniform(-l, l));
      return MultiDiagonalAttr::get(
          ctx, 0, SmallVector<int64_t>(offs.begin(), offs.end()),
          gen.uniform(0, 1) ? gen.uniform(0, 40) : value());
    }
    case 5:
    case 6: {
      SmallVector<int64_t> r;
      int64_t period = 0, width = 0, phase = 0;
      if (gen.uniform(0, 1)) {
        std::set<int64_t> cuts;
        int64_t n = 2 * gen.uniform(1, 6);
        while (static_cast<int64_t>(cuts.size()) < n)
          cuts.insert(gen.uniform(0, 2) ? gen.uniform(0, 400)
                                        : gen.uniform(0, l));
        r.assign(cuts.begin(), cuts.end());
      } else {
        period = value();
        width = gen.uniform(1, period);
        phase = gen.uniform(0, period - 1);
      }
      if (gen.uniform(0, 1))
        return VerticalStripeAttr::get(ctx, r, period, width, phase);
      return HorizontalStripeAttr::get(ctx, r, period, width, phase);
    }
    case 7: {
      int64_t stride = value();
      int64_t vw = gen.uniform(0, std::min<int64_t>(stride, 70));
      int64_t sw = gen.uniform(vw == 0 ? 1 : 0, std::min<int64_t>(stride, 70));
      return GridAttr::get(ctx, stride, vw, sw, gen.uniform(0, stride - 1));
    }
    case 8: {
      int64_t shards = value();
      return StridedShardsAttr::get(ctx, shards, value(),
                                    gen.uniform(0, shards - 1));
    }
    case 9: {
      int64_t size = value();
      return ShiftedGroupsAttr::get(ctx, size, gen.uniform(0, size - 1));
    }
    default: {
      int64_t bq = gen.uniform(0, 1) ? gen.uniform(1, 70) : value();
      int64_t bk = gen.uniform(0, 1) ? gen.uniform(1, 70) : value();
      std::set<std::pair<int64_t, int64_t>> blocks;
      int64_t n = gen.uniform(0, 12);
      for (int64_t i = 0; i < n; ++i)
        blocks.insert({gen.uniform(-2, 1) < 0 ? gen.uniform(0, l / bq)
                                              : gen.uniform(0, 12),
                       gen.uniform(-2, 1) < 0 ? gen.uniform(0, l / bk)
                                              : gen.uniform(0, 12)});
      SmallVector<int64_t> flat;
      for (auto [q, k] : blocks) {
        flat.push_back(q);
        flat.push_back(k);
      }
      return BlockSparseAttr::get(ctx, bq, bk, flat);
    }
    }
  }

  PatternAttrInterface pattern(int depth) {
    if (depth == 0 || gen.uniform(0, 2) == 0)
      return leaf();
    int64_t kind = gen.uniform(0, 2);
    if (kind == 2)
      return DifferenceAttr::get(ctx, pattern(depth - 1), pattern(depth - 1));
    SmallVector<PatternAttrInterface> parts;
    int64_t n = gen.uniform(2, 3);
    for (int64_t i = 0; i < n; ++i)
      parts.push_back(pattern(depth - 1));
    if (kind == 0)
      return UnionAttr::get(ctx, parts);
    return IntersectAttr::get(ctx, parts);
  }

private:
  MLIRContext *ctx;
  PatternGen gen;
};

/// The hand-written cases: every leaf kind at several scales, and
/// combinations.
inline std::vector<PatternAttrInterface> maskHandCases(MLIRContext *c) {
  const int64_t t = int64_t(1) << 29, l = int64_t(1) << 40;
  auto vs = [&](SmallVector<int64_t> r) {
    return VerticalStripeAttr::get(c, r, 0, 0, 0);
  };
  auto vsp = [&](int64_t period, int64_t width, int64_t phase) {
    return VerticalStripeAttr::get(c, {}, period, width, phase);
  };
  auto hsp = [&](int64_t period, int64_t width, int64_t phase) {
    return HorizontalStripeAttr::get(c, {}, period, width, phase);
  };
  std::vector<PatternAttrInterface> out = {
      // Intervals.
      DenseAttr::get(c),
      CausalAttr::get(c),
      WindowAttr::get(c, 16, 0),
      WindowAttr::get(c, 0, 0),
      WindowAttr::get(c, 3, 5),
      WindowAttr::get(c, 100, 2000),
      WindowAttr::get(c, t - 9, t - 10),
      WindowAttr::get(c, t - 8, t),
      WindowAttr::get(c, t + 1, 0),
      // Past 2^30 (the clamp of the 32-bit offsets), below and past 2^31.
      WindowAttr::get(c, (t << 1) + 5, (t << 1) - 5),
      WindowAttr::get(c, 0, (t << 2) - 3),
      SinkAttr::get(c, (t << 1) + 3),
      AShapeAttr::get(c, (t << 2) + 100, (t << 1) + 1, 0),
      VerticalStripeAttr::get(c, {(t << 1) + 1, (t << 2) + 9}, 0, 0, 0),
      WindowAttr::get(c, l, 0),
      WindowAttr::get(c, 0, l),
      WindowAttr::get(c, l, l),
      SinkAttr::get(c, 1),
      SinkAttr::get(c, 4),
      SinkAttr::get(c, 100),
      SinkAttr::get(c, t - 9),
      SinkAttr::get(c, t + 5),
      SinkAttr::get(c, l),
      AShapeAttr::get(c, 64, 1024, 0),
      AShapeAttr::get(c, 1, 2, 2),
      AShapeAttr::get(c, t, 7, t),
      AShapeAttr::get(c, l, l, l),
      vs({1, 3, 7, 9}),
      vs({0, 1, l - 10, l}),
      vs({t - 20, t + 20}),
      // Periodic: the constant form (period <= 62), two intervals (past
      // 62, 32-bit), two intervals in 64 bits (past 2^29).
      MultiDiagonalAttr::get(c, 4, {}, 1),
      MultiDiagonalAttr::get(c, 7, {}, 0),
      MultiDiagonalAttr::get(c, 62, {}, 3),
      MultiDiagonalAttr::get(c, 63, {}, 3),
      MultiDiagonalAttr::get(c, 64, {}, 0),
      MultiDiagonalAttr::get(c, 100, {}, 10),
      MultiDiagonalAttr::get(c, 1024, {}, 32),
      MultiDiagonalAttr::get(c, t, {}, 5),
      MultiDiagonalAttr::get(c, t + 1, {}, 5),
      MultiDiagonalAttr::get(c, l, {}, 1000),
      MultiDiagonalAttr::get(c, l, {}, l / 2),
      vsp(5, 2, 1),
      vsp(2, 1, 0),
      vsp(64, 3, 10),
      vsp(100, 30, 99),
      vsp(t, 40, t - 1),
      vsp(l, 5, l - 3),
      hsp(4, 1, 3),
      hsp(9, 4, 0),
      hsp(t + 1, 3, 2),
      hsp(l, 7, 0),
      GridAttr::get(c, 4, 1, 2, 1),
      GridAttr::get(c, 5, 0, 2, 3),
      GridAttr::get(c, 6, 2, 0, 0),
      GridAttr::get(c, 63, 5, 7, 62),
      GridAttr::get(c, 1024, 64, 64, 0),
      GridAttr::get(c, l, 3, 3, l - 1),
      StridedShardsAttr::get(c, 3, 2, 1),
      StridedShardsAttr::get(c, 2, 40, 1),
      StridedShardsAttr::get(c, 8, 64, 3),
      StridedShardsAttr::get(c, 1, 5, 0),
      StridedShardsAttr::get(c, t, 2, 5),
      StridedShardsAttr::get(c, 3, l, 2),
      StridedShardsAttr::get(c, l, l, l - 1),
      StridedShardsAttr::get(c, (int64_t(1) << 22) + 1, l - 1, 1 << 22),
      // Shifted groups (an interval per row).
      ShiftedGroupsAttr::get(c, 1, 0),
      ShiftedGroupsAttr::get(c, 4, 2),
      ShiftedGroupsAttr::get(c, 8, 4),
      ShiftedGroupsAttr::get(c, 100, 0),
      ShiftedGroupsAttr::get(c, 4096, 2048),
      ShiftedGroupsAttr::get(c, t, 3),
      ShiftedGroupsAttr::get(c, t + 1, t),
      ShiftedGroupsAttr::get(c, l, l - 1),
      // Listed: long key, offset and row lists, blocks.
      vs({0, 1, 3, 4, 6, 8, 11, 12, 15, 17, 20, 25, 60, 70, 130, 131}),
      vs({0, 1, 3, 4, 6, 8, 11, 12, 15, 17, t, t + 3, l - 64, l}),
      MultiDiagonalAttr::get(c, 0, {-30, -20, -11, -4, 0, 6, 15}, 1),
      MultiDiagonalAttr::get(c, 0, {-5, 0, 3}, 1),
      MultiDiagonalAttr::get(c, 0, {-l, -t, -100, 0, 100, t, l}, 3),
      MultiDiagonalAttr::get(c, 0, {-l, 0, l}, l),
      HorizontalStripeAttr::get(c, {0, 2, 6, 7}, 0, 0, 0),
      HorizontalStripeAttr::get(
          c, {0, 1, 3, 4, 6, 8, 11, 12, 15, 17, 20, 25, l - 5, l}, 0, 0, 0),
      BlockSparseAttr::get(c, 3, 2, {0, 0, 1, 1, 1, 3, 3, 0}),
      BlockSparseAttr::get(c, 64, 64, {0, 0, 1, 0, 1, 1, 2, 3, 5, 1}),
      BlockSparseAttr::get(c, 1, 1, {0, 0, 0, 5, 3, 1, 3, 2, 3, 63, 4, 64}),
      BlockSparseAttr::get(c, 16, 5, {0, 0, 0, 1, 0, 12, 2, 3, 7, 20}),
      BlockSparseAttr::get(c, l, l, {0, 0, 1, 1}),
      BlockSparseAttr::get(c, 7, 9, {l / 7, l / 9, l / 7, l / 9 - 1, 3, 3}),
      BlockSparseAttr::get(c, 4, 4, {}),
      // Combinations.
      UnionAttr::get(c, {SinkAttr::get(c, 2), GridAttr::get(c, 3, 1, 0, 0)}),
      IntersectAttr::get(
          c, {CausalAttr::get(c), StridedShardsAttr::get(c, 2, 3, 0)}),
      IntersectAttr::get(c, {WindowAttr::get(c, 4, 4), CausalAttr::get(c),
                             SinkAttr::get(c, 6)}),
      DifferenceAttr::get(c, DenseAttr::get(c), WindowAttr::get(c, 1, 1)),
      DifferenceAttr::get(c, CausalAttr::get(c), SinkAttr::get(c, 3)),
      UnionAttr::get(c, {WindowAttr::get(c, 256, 256), vs({0, 1024})}),
      DifferenceAttr::get(c, CausalAttr::get(c), WindowAttr::get(c, 4095, 0)),
      IntersectAttr::get(
          c, {ShiftedGroupsAttr::get(c, 16, 8), CausalAttr::get(c)}),
      UnionAttr::get(c, {hsp(9, 2, 4), WindowAttr::get(c, 5, 0)}),
      DifferenceAttr::get(c, StridedShardsAttr::get(c, 2, 8, 0),
                          BlockSparseAttr::get(c, 8, 8, {0, 0, 1, 1, 2, 2})),
      IntersectAttr::get(c, {MultiDiagonalAttr::get(c, 7, {}, 1), vsp(3, 1, 0),
                             CausalAttr::get(c)}),
      UnionAttr::get(c, {SkipAttr::get(c), CausalAttr::get(c)}),
  };
  return out;
}

/// The hand-written cases, then random trees. `skip` is left out: it has
/// no group.
inline std::vector<PatternAttrInterface> maskCases(MLIRContext *c) {
  std::vector<PatternAttrInterface> out = maskHandCases(c);
  ScaledGen scaled(c, /*seed=*/2718);
  while (out.size() < 300) {
    PatternAttrInterface p = scaled.pattern(3);
    if (!isa<SkipAttr>(p))
      out.push_back(p);
  }
  PatternGen gen(c, /*seed=*/31415);
  while (out.size() < 600) {
    PatternAttrInterface p = gen.pattern(3);
    if (!isa<SkipAttr>(p))
      out.push_back(p);
  }
  return out;
}

} // namespace tessera::test

#endif // TESSERA_TEST_UNIT_MASKCASES_H
