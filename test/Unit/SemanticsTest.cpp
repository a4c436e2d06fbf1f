//===- SemanticsTest.cpp - the reference predicates -----------------------===//
//
// Hand-derived expectations for each pattern's `allowed`, written from the
// definitions in docs/patterns.md.
//
//===----------------------------------------------------------------------===//

#include "tessera/Semantics/Pattern.h"

#include <gtest/gtest.h>

#include <string>

using namespace tessera::semantics;

namespace {

/// The mask of one head as text rows, '#' allowed, '.' not.
std::string picture(const Pattern &p, int64_t nq, int64_t nk, int64_t head = 0,
                    int64_t numHeads = 1) {
  std::string out;
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t k = 0; k < nk; ++k)
      out += allowed(p, q, k, head, nq, nk, numHeads) ? '#' : '.';
    out += '\n';
  }
  return out;
}

TEST(Semantics, FloorDivAndMod) {
  EXPECT_EQ(floorDiv(7, 2), 3);
  EXPECT_EQ(floorDiv(-1, 4), -1);
  EXPECT_EQ(floorDiv(-4, 4), -1);
  EXPECT_EQ(floorDiv(-5, 4), -2);
  EXPECT_EQ(floorMod(-1, 4), 3);
  EXPECT_EQ(floorMod(-8, 4), 0);
  EXPECT_EQ(floorMod(9, 4), 1);
}

TEST(Semantics, DenseAndSkip) {
  EXPECT_EQ(picture({Dense{}}, 2, 3), "###\n###\n");
  EXPECT_EQ(picture({Skip{}}, 2, 3), "...\n...\n");
}

TEST(Semantics, CausalSquare) {
  EXPECT_EQ(picture({Causal{}}, 3, 3), "#..\n##.\n###\n");
}

TEST(Semantics, CausalIsBottomRightAligned) {
  // Nq = 2 < Nk = 4: query 0 sits at position 2, query 1 at position 3.
  EXPECT_EQ(picture({Causal{}}, 2, 4), "###.\n####\n");
  // Nq = 4 > Nk = 2: queries 0 and 1 sit before the first key.
  EXPECT_EQ(picture({Causal{}}, 4, 2), "..\n..\n#.\n##\n");
}

TEST(Semantics, Window) {
  EXPECT_EQ(picture({Window{1, 0}}, 4, 4), "#...\n##..\n.##.\n..##\n");
  EXPECT_EQ(picture({Window{0, 1}}, 3, 3), "##.\n.##\n..#\n");
  EXPECT_EQ(picture({Window{1, 1}}, 2, 4), ".###\n..##\n");
}

TEST(Semantics, SinkIsCausal) {
  // Keys 0 and 1, but only at or before the query's position.
  EXPECT_EQ(picture({Sink{2}}, 4, 4), "#...\n##..\n##..\n##..\n");
}

TEST(Semantics, AShapeIsSinkUnionWindow) {
  EXPECT_EQ(picture({AShape{1, 1, 0}}, 5, 5),
            "#....\n##...\n###..\n#.##.\n#..##\n");
  for (int64_t nq : {1, 3, 7})
    for (int64_t nk : {1, 4, 9}) {
      Pattern a{AShape{2, 3, 1}};
      Pattern u{Union{{Pattern{Sink{2}}, Pattern{Window{3, 1}}}}};
      EXPECT_EQ(picture(a, nq, nk), picture(u, nq, nk));
    }
}

TEST(Semantics, MultiDiagonalStride) {
  // Diagonals at d = ..., -3, 0, 3, ...; queries sit at positions 2..5.
  EXPECT_EQ(picture({MultiDiagonal{3, {}, 0}}, 4, 6),
            "..#..#\n#..#..\n.#..#.\n..#..#\n");
  // Width 1 around every multiple of 4; the query sits at position 7.
  EXPECT_EQ(picture({MultiDiagonal{4, {}, 1}}, 1, 8), "#.###.##\n");
}

TEST(Semantics, MultiDiagonalOffsets) {
  EXPECT_EQ(picture({MultiDiagonal{0, {-2, 1}, 0}}, 4, 4),
            ".#..\n..#.\n#..#\n.#..\n");
}

TEST(Semantics, VerticalStripe) {
  IndexSet ranges;
  ranges.ranges = {{1, 2}, {4, 6}};
  EXPECT_EQ(picture({VerticalStripe{ranges}}, 2, 7), ".#..##.\n.#..##.\n");
  IndexSet periodic;
  periodic.period = 3;
  periodic.width = 1;
  periodic.phase = 2;
  EXPECT_EQ(picture({VerticalStripe{periodic}}, 1, 7), "..#..#.\n");
}

TEST(Semantics, HorizontalStripeUsesAlignedPosition) {
  IndexSet rows;
  rows.ranges = {{3, 4}};
  // Nq = 2, Nk = 4: query 1 sits at position 3.
  EXPECT_EQ(picture({HorizontalStripe{rows}}, 2, 4), "....\n####\n");
}

TEST(Semantics, Grid) {
  // Vertical lines at k = 0, 3, ...; slash lines at -d = 0, 3, ...
  Pattern g{Grid{3, 1, 1, 0}};
  EXPECT_EQ(picture(g, 4, 4), "#..#\n##.#\n#.##\n#..#\n");
  // phase 1, slash only: q - k = 1 (mod 3), in both directions.
  Pattern s{Grid{3, 0, 1, 1}};
  EXPECT_EQ(picture(s, 4, 4), "..#.\n#..#\n.#..\n..#.\n");
}

TEST(Semantics, StridedShardsDependOnHead) {
  Pattern s{StridedShards{2, 2, 0}};
  EXPECT_EQ(picture(s, 1, 8, /*head=*/0, 2), "##..##..\n");
  EXPECT_EQ(picture(s, 1, 8, /*head=*/1, 2), "..##..##\n");
  Pattern o{StridedShards{3, 1, 2}};
  EXPECT_EQ(picture(o, 1, 6, /*head=*/0, 3), "..#..#\n");
}

TEST(Semantics, ShiftedGroupsShiftTheUpperHalfOfTheHeads) {
  Pattern g{ShiftedGroups{4, 2}};
  // Heads 0 and 1 of 4: groups [0, 4), [4, 8).
  EXPECT_EQ(picture(g, 6, 6, /*head=*/1, 4),
            "####..\n####..\n####..\n####..\n....##\n....##\n");
  // Heads 2 and 3: groups [0, 2), [2, 6), [6, 10).
  EXPECT_EQ(picture(g, 6, 6, /*head=*/2, 4),
            "##....\n##....\n..####\n..####\n..####\n..####\n");
}

TEST(Semantics, BlockSparse) {
  BlockSparse b{2, 3, {{0, 1}, {1, 0}}};
  EXPECT_EQ(picture({b}, 6, 6),
            "...###\n...###\n###...\n###...\n......\n......\n");
  // Nq = 2, Nk = 4: queries sit at positions 2 and 3 (query block 1).
  EXPECT_EQ(picture({b}, 2, 4), "###.\n###.\n");
  // Nq = 4, Nk = 6: positions 2..5, query blocks 1 and 2.
  EXPECT_EQ(picture({b}, 4, 6), "###...\n###...\n......\n......\n");
}

TEST(Semantics, Combinators) {
  Pattern u{Union{{Pattern{Window{0, 0}}, Pattern{Sink{1}}}}};
  EXPECT_EQ(picture(u, 3, 3), "#..\n##.\n#.#\n");
  Pattern i{Intersect{{Pattern{Causal{}}, Pattern{Window{1, 1}}}}};
  EXPECT_EQ(picture(i, 3, 3), "#..\n##.\n.##\n");
  Pattern d{Difference{{Pattern{Causal{}}, Pattern{Window{0, 0}}}}};
  EXPECT_EQ(picture(d, 3, 3), "...\n#..\n##.\n");
}

TEST(Semantics, CountAndDenseMaskAgree) {
  Pattern p{Window{2, 1}};
  std::vector<uint8_t> mask = denseMask(p, 0, 5, 7, 1);
  int64_t n = 0;
  for (uint8_t m : mask)
    n += m;
  EXPECT_EQ(n, countAllowed(p, 0, 5, 7, 1));
  // Rows at positions 2..6 see keys [pos - 2, pos + 1] clipped to [0, 7).
  EXPECT_EQ(n, 4 + 4 + 4 + 4 + 3);
}

} // namespace
