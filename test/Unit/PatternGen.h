//===- PatternGen.h - random pattern attributes for tests -------*- C++ -*-===//
//
// Random pattern trees with small random parameters, for the property tests
// of simplification and block schedules. Every attribute it builds satisfies
// its verifier.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_UNIT_PATTERNGEN_H
#define TESSERA_TEST_UNIT_PATTERNGEN_H

#include "tessera/Dialect/Attn/AttnAttributes.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/raw_ostream.h"

#include <random>
#include <set>
#include <string>

namespace tessera::test {

/// An attribute as printed, for failure messages.
inline std::string str(mlir::Attribute a) {
  std::string s;
  llvm::raw_string_ostream os(s);
  a.print(os);
  return s;
}

using namespace mlir;
using namespace tessera::attn;

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
      return WindowAttr::get(ctx, uniform(0, 6),
                             uniform(0, 3) ? 0 : uniform(0, 4));
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

} // namespace tessera::test

#endif // TESSERA_TEST_UNIT_PATTERNGEN_H
