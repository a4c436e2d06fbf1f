//===- CodegenCases.h - patterns whose generated code is tested -*- C++ -*-===//
//
// One list, built the same way by the build-time generator (GenGroups.cpp,
// which writes the generated C++ of every pattern) and by the test that
// compiles that C++ in and checks it against the reference semantics.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_UNIT_CODEGENCASES_H
#define TESSERA_TEST_UNIT_CODEGENCASES_H

#include "PatternGen.h"

namespace tessera::test {

/// Every leaf kind (short and long lists, periodic and listed forms), a few
/// combinations, then random trees. `skip` is left out: it has no group.
inline std::vector<PatternAttrInterface> codegenCases(MLIRContext *c) {
  std::vector<PatternAttrInterface> out = {
      DenseAttr::get(c),
      CausalAttr::get(c),
      WindowAttr::get(c, 2, 1),
      WindowAttr::get(c, 0, 0),
      SinkAttr::get(c, 3),
      AShapeAttr::get(c, 2, 3, 0),
      AShapeAttr::get(c, 1, 2, 2),
      MultiDiagonalAttr::get(c, 4, {}, 1),
      MultiDiagonalAttr::get(c, 7, {}, 0),
      MultiDiagonalAttr::get(c, 0, {-5, 0, 3}, 1),
      MultiDiagonalAttr::get(c, 0, {-30, -20, -11, -4, 0, 6, 15}, 1),
      VerticalStripeAttr::get(c, {1, 3, 7, 9}, 0, 0, 0),
      VerticalStripeAttr::get(c, {0, 1, 3, 4, 6, 8, 11, 12, 15, 17, 20, 25},
                              0, 0, 0),
      VerticalStripeAttr::get(c, {}, 5, 2, 1),
      HorizontalStripeAttr::get(c, {0, 2, 6, 7}, 0, 0, 0),
      HorizontalStripeAttr::get(c, {0, 1, 3, 4, 6, 8, 11, 12, 15, 17, 20, 25},
                                0, 0, 0),
      HorizontalStripeAttr::get(c, {}, 4, 1, 3),
      GridAttr::get(c, 4, 1, 2, 1),
      GridAttr::get(c, 5, 0, 2, 3),
      GridAttr::get(c, 6, 2, 0, 0),
      StridedShardsAttr::get(c, 3, 2, 1),
      ShiftedGroupsAttr::get(c, 4, 2),
      BlockSparseAttr::get(c, 3, 2, {0, 0, 1, 1, 1, 3, 3, 0}),
      UnionAttr::get(c, {SinkAttr::get(c, 2), GridAttr::get(c, 3, 1, 0, 0)}),
      IntersectAttr::get(
          c, {CausalAttr::get(c), StridedShardsAttr::get(c, 2, 3, 0)}),
      IntersectAttr::get(c, {WindowAttr::get(c, 4, 4), CausalAttr::get(c),
                             SinkAttr::get(c, 6)}),
      DifferenceAttr::get(c, DenseAttr::get(c), WindowAttr::get(c, 1, 1)),
      DifferenceAttr::get(c, CausalAttr::get(c), SinkAttr::get(c, 3)),
      // Shipped-size parameters, for the long-sequence test.
      AShapeAttr::get(c, 64, 1024, 0),
      WindowAttr::get(c, 2048, 0),
      MultiDiagonalAttr::get(c, 1024, {}, 32),
      GridAttr::get(c, 1024, 64, 64, 0),
      UnionAttr::get(c, {WindowAttr::get(c, 256, 256),
                         VerticalStripeAttr::get(c, {0, 1024}, 0, 0, 0)}),
      IntersectAttr::get(
          c, {CausalAttr::get(c), StridedShardsAttr::get(c, 8, 64, 3)}),
      ShiftedGroupsAttr::get(c, 4096, 2048),
      DifferenceAttr::get(c, CausalAttr::get(c), WindowAttr::get(c, 4095, 0)),
  };
  PatternGen gen(c, /*seed=*/161803);
  while (out.size() < 1200) {
    PatternAttrInterface p = gen.pattern(3);
    if (!isa<SkipAttr>(p))
      out.push_back(p);
  }
  return out;
}

} // namespace tessera::test

#endif // TESSERA_TEST_UNIT_CODEGENCASES_H
