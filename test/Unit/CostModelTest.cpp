//===- CostModelTest.cpp - the cost model against hand-derived times -----===//

#include "tessera/Cost/CostModel.h"
#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/kernel/Program.h"

#include "PatternGen.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <unistd.h>

using namespace tessera;
namespace s = tessera::semantics;

namespace {

/// A target with round numbers in milliseconds (kMs): 2 slots, 1 a full
/// tile, 2 a partial one, 0.5 per item, 10 a launch, 3 a group, tiles 4 x 4,
/// head_dim 64. Expected times below are in the same unit.
constexpr double kMs = 1e-3;
cost::Target toy() {
  cost::Target t;
  t.name = "toy";
  t.kind = "cpu";
  t.source = "test";
  t.units = 2;
  t.slotsPerUnit = 1;
  t.blockQ = t.blockK = 4;
  t.headDim = 64;
  t.fullTileS = 1 * kMs;
  t.partialTileS = 2 * kMs;
  t.rowBlockS = 0.5 * kMs;
  t.launchS = 10 * kMs;
  t.groupS = 3 * kMs;
  return t;
}

schedule::HeadGroup group(s::Pattern p, std::vector<int64_t> heads) {
  return schedule::HeadGroup{std::move(p), std::move(heads)};
}

s::Pattern dense() { return s::Pattern{s::Dense{}}; }
s::Pattern causal() { return s::Pattern{s::Causal{}}; }

TEST(CostModel, DenseLayerByHand) {
  // 3 heads, Nq = Nk = 16: 4 query blocks of 4 full tiles each. Items cost
  // 0.5 + 4 = 4.5 s; 12 items on 2 slots: 6 rounds = 27 s, + launch 10 +
  // one group 3 = 40 s.
  cost::LayerCost c;
  std::string error;
  ASSERT_TRUE(cost::predictDense(toy(), 3, 16, 16, 1, 64, c, error)) << error;
  EXPECT_NEAR(c.seconds / kMs, 40.0, 1e-9);
  EXPECT_NEAR(c.workS / kMs, 12 * 4.5, 1e-9);
  EXPECT_EQ(c.items, 12);
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].fullTiles, 48);
  EXPECT_EQ(c.groups[0].partialTiles, 0);
  // head_dim 128 doubles every item; batch 2 doubles the items.
  ASSERT_TRUE(cost::predictDense(toy(), 3, 16, 16, 2, 128, c, error));
  EXPECT_NEAR(c.seconds / kMs, 10 + 3 + 12 * 9.0, 1e-9);
  // Half of a tile's time independent of head_dim: at 128 (twice the
  // target's 64) costs scale by 0.5 + 0.5 * 2 = 1.5: items 6.75.
  cost::Target fixed = toy();
  fixed.tileFixedShare = 0.5;
  ASSERT_TRUE(cost::predictDense(fixed, 3, 16, 16, 1, 128, c, error));
  EXPECT_NEAR(c.seconds / kMs, 10 + 3 + 6 * 6.75, 1e-9);
}

TEST(CostModel, WaveQuantisation) {
  // 3 items of equal cost on 2 slots take two rounds, like 4 items.
  cost::LayerCost three, four;
  std::string error;
  ASSERT_TRUE(cost::predictDense(toy(), 3, 4, 16, 1, 64, three, error));
  ASSERT_TRUE(cost::predictDense(toy(), 4, 4, 16, 1, 64, four, error));
  EXPECT_NEAR(three.seconds, four.seconds, 1e-12);
  EXPECT_NEAR(three.seconds / kMs, 10 + 3 + 2 * 4.5, 1e-9);
}

TEST(CostModel, CausalTilesAndImbalance) {
  // Causal at 16 x 16 with 4 x 4 tiles: query block i has i full tiles
  // (the diagonal one is partial): items 0.5 + 2 + i.
  cost::LayerCost c;
  std::string error;
  ASSERT_TRUE(cost::predictLayer(toy(), {group(causal(), {0})}, 1, 16, 16, 1,
                                 64, c, error))
      << error;
  EXPECT_EQ(c.groups[0].fullTiles, 0 + 1 + 2 + 3);
  EXPECT_EQ(c.groups[0].partialTiles, 4);
  // Items 2.5, 3.5, 4.5, 5.5 in order on 2 slots: slot A 2.5 -> then 4.5
  // (at 2.5, ends 7.0); slot B 3.5 -> then 5.5 (ends 9.0).
  EXPECT_NEAR(c.seconds / kMs, 9.0 + 10 + 3, 1e-9);

  // A dense head next to a causal one: the list schedule fills the gaps.
  // Items in launch order: causal 2.5 3.5 4.5 5.5, then dense 4.5 x 4.
  ASSERT_TRUE(cost::predictLayer(toy(),
                                 {group(causal(), {0}), group(dense(), {1})},
                                 2, 16, 16, 1, 64, c, error));
  // A: 2.5, 4.5 (7.0), dense 4.5 (11.5 at B? see below) ... simulate:
  // t=0 A<-2.5 (2.5) B<-3.5 (3.5); A<-4.5 (7.0); B<-5.5 (9.0);
  // A<-4.5 (11.5); B<-4.5 (13.5); A<-4.5 (16.0); B<-4.5 (18.0).
  EXPECT_NEAR(c.seconds / kMs, 18.0 + 10 + 2 * 3, 1e-9);
  EXPECT_NEAR(c.groups[0].workS / kMs, 16.0, 1e-9);
  EXPECT_NEAR(c.groups[1].workS / kMs, 18.0, 1e-9);
}

TEST(CostModel, SkippedHeadsCostNothing) {
  cost::LayerCost c;
  std::string error;
  ASSERT_TRUE(cost::predictLayer(
      toy(), {group(dense(), {0}), group(s::Pattern{s::Skip{}}, {1, 2})}, 3,
      16, 16, 1, 64, c, error));
  EXPECT_EQ(c.items, 4);
  EXPECT_NEAR(c.seconds / kMs, 2 * 4.5 + 10 + 3, 1e-9);
  EXPECT_EQ(c.groups[1].heads, 2);
  EXPECT_NEAR(c.groups[1].workS / kMs, 0, 1e-9);
}

/// Tile counts of random patterns (head-dependent ones included) against
/// the kernel's tile classifier, tile by tile.
TEST(CostModel, TileCountsMatchTheClassifier) {
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  test::PatternGen gen(&ctx, /*seed=*/2718);
  for (int i = 0; i < 400; ++i) {
    attn::PatternAttrInterface attr = gen.pattern(3);
    s::Pattern p = s::fromAttr(attr);
    int64_t nq = gen.uniform(1, 60), nk = gen.uniform(1, 60);
    int64_t heads = gen.uniform(1, 5);
    cost::Target t = toy();
    t.blockQ = gen.uniform(1, 9);
    t.blockK = gen.uniform(1, 9);
    std::vector<int64_t> all;
    for (int64_t h = 0; h < heads; ++h)
      all.push_back(h);
    cost::LayerCost c;
    std::string error;
    ASSERT_TRUE(cost::predictLayer(t, {group(p, all)}, heads, nq, nk, 1, 64,
                                   c, error))
        << error;
    schedule::Program prog;
    ASSERT_TRUE(schedule::lowerPattern(p, prog, error));
    int64_t full = 0, partial = 0;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t q0 = 0; q0 < nq; q0 += t.blockQ)
        for (int64_t k0 = 0; k0 < nk; k0 += t.blockK) {
          kernel::Tile tile = {q0, std::min(q0 + t.blockQ, nq), k0,
                               std::min(k0 + t.blockK, nk), nq, nk, h,
                               heads};
          int cls = kernel::classifyTile(prog.nodes.data(),
                                         int64_t(prog.nodes.size()),
                                         prog.data.data(), tile);
          full += cls == kernel::kFull;
          partial += cls == kernel::kPartial;
        }
    ASSERT_EQ(c.groups[0].fullTiles, full) << test::str(attr);
    ASSERT_EQ(c.groups[0].partialTiles, partial) << test::str(attr);
  }
}

TEST(CostModel, BuiltinTargetsAreValidAndMarked) {
  for (const char *name : {"a100", "h100", "h200"}) {
    const cost::Target *t = cost::builtinTarget(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(cost::validateTarget(*t), "") << name;
    EXPECT_NE(t->source.find("not measured"), std::string::npos) << name;
    EXPECT_EQ(t->kind, "gpu");
  }
  EXPECT_EQ(cost::builtinTarget("tpu"), nullptr);
  // H200 has H100's compute and more bandwidth: never slower.
  cost::LayerCost h100, h200;
  std::string error;
  ASSERT_TRUE(cost::predictDense(*cost::builtinTarget("h100"), 32, 8192, 8192,
                                 1, 128, h100, error));
  ASSERT_TRUE(cost::predictDense(*cost::builtinTarget("h200"), 32, 8192, 8192,
                                 1, 128, h200, error));
  EXPECT_LE(h200.seconds, h100.seconds);
  // Dense 8K x 8K, 32 heads of 128 on an H100: 4 * 8192^2 * 128 * 32 FLOP
  // at 0.40 * 989.4 TFLOP/s is 2.78 ms; the model adds per-item costs and
  // the last wave, within 60%.
  EXPECT_GT(h100.seconds, 2.78e-3);
  EXPECT_LT(h100.seconds, 1.6 * 2.78e-3);
}

TEST(CostModel, TargetFilesRoundTripAndBadOnesAreRefused) {
  char dir[] = "/tmp/tessera-cost-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/t.json";
  {
    std::ofstream(path) << cost::targetToJson(toy());
  }
  cost::Target back;
  std::string error;
  ASSERT_TRUE(cost::loadTarget(path, back, error)) << error;
  EXPECT_EQ(back.name, "toy");
  EXPECT_EQ(back.units, 2);
  EXPECT_NEAR(back.partialTileS / kMs, 2, 1e-9);
  EXPECT_NEAR(back.groupS / kMs, 3, 1e-9);
  EXPECT_DOUBLE_EQ(back.tileFixedShare, 0);

  auto refused = [&](const std::string &text, const std::string &what) {
    std::ofstream(path) << text;
    cost::Target t;
    std::string e;
    EXPECT_FALSE(cost::loadTarget(path, t, e)) << text;
    EXPECT_NE(e.find(what), std::string::npos) << e;
  };
  std::string good = cost::targetToJson(toy());
  auto with = [&](const std::string &key, const std::string &value) {
    std::string t = good;
    size_t at = t.find("\"" + key + "\": ");
    size_t end = t.find_first_of(",\n", at);
    return t.substr(0, at) + "\"" + key + "\": " + value + t.substr(end);
  };
  refused("{", "is not JSON");
  refused("[1, 2]", "must hold a JSON object");
  refused("{\"format\": \"other\"}", "tessera-target");
  refused(with("full_tile_s", "-1"), "full_tile_s");
  refused(with("full_tile_s", "1e300"), "full_tile_s");
  refused(with("units", "0"), "units");
  refused(with("kind", "\"fpga\""), "kind");
  refused(with("efficiency", "2"), "efficiency");
  refused(with("tile_fixed_share", "1.5"), "tile_fixed_share");
  refused(with("launch_s", "\"soon\""), "launch_s");
  cost::Target t;
  EXPECT_FALSE(cost::loadTarget(std::string(dir) + "/none.json", t, error));
  EXPECT_NE(error.find("neither a built-in target"), std::string::npos);
  std::remove(path.c_str());
  rmdir(dir);
}

TEST(CostModel, BadShapesAreRefused) {
  cost::LayerCost c;
  std::string error;
  EXPECT_FALSE(cost::predictDense(toy(), 1, 0, 16, 1, 64, c, error));
  EXPECT_FALSE(cost::predictDense(toy(), 1, 16, 16, 0, 64, c, error));
  EXPECT_FALSE(cost::predictDense(toy(), 1, 16, 16, 1, 4096, c, error));
  // More than 2^26 work items: refused before any work.
  EXPECT_FALSE(cost::predictDense(toy(), 64, int64_t(1) << 30, 16, 1, 64, c,
                                  error));
  EXPECT_NE(error.find("2^26 work items"), std::string::npos) << error;
  cost::Target bad = toy();
  bad.fullTileS = 0;
  EXPECT_FALSE(cost::predictDense(bad, 1, 16, 16, 1, 64, c, error));
}

} // namespace

/// Dynamic groups priced from their budgets, by hand (docs/cost-model.md).
TEST(CostModel, DynamicGroupsFromTheirBudgets) {
  cost::Target t = toy();
  t.units = 1;               // one slot: times add up
  t.indexElementS = 1e-6;    // 0.001 ms per index element
  cost::LayerCost c;
  std::string error;
  // intersect<causal, vertical_slash<last_q = 4, vertical = 4, slash = 4>>
  // at Nq = Nk = 8 in 4 x 4 tiles: the slash budget as the window d in
  // [-3, 0] within causal is partial in tile (0,0), (1,0) and (1,1); one
  // gathered tile of columns per query block: items 0.5 + 2 * 2 and
  // 0.5 + 3 * 2 = 11. Index: one score tile at half a full tile (0.5) and
  // 8 * (5 * 4 + 70) = 720 elements (0.72); 5 launches (50).
  cost::DynamicHeadGroup vs;
  vs.leaf.family = kernel::kVerticalSlash;
  vs.leaf.lastQ = 4;
  vs.leaf.vertical = 4;
  vs.leaf.slash = 4;
  vs.with = s::Pattern{s::Intersect{{causal(), dense()}}};
  vs.without = s::Pattern{s::Intersect{{causal(), s::Pattern{s::Skip{}}}}};
  vs.heads = {0};
  ASSERT_TRUE(cost::predictLayer(t, {}, {vs}, 1, 8, 8, 1, 64, c, error))
      << error;
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_TRUE(c.groups[0].estimated);
  EXPECT_EQ(c.groups[0].fullTiles, 0);
  EXPECT_EQ(c.groups[0].partialTiles, 5);
  EXPECT_NEAR(c.groups[0].indexS / kMs, 1.22, 1e-9);
  EXPECT_NEAR(c.seconds / kMs, 11 + 1.22 + 50 + 10 + 3, 1e-9);

  // intersect<causal, routing<clusters = 2>>: balanced clusters, 2 + 2
  // query tiles of one partial key tile each (2.5 each); index: (8 + 8)
  // dot products with 2 centroids (32 / 4096 of a score tile, half a full
  // tile each) and 16 * 130 sort elements; 5 launches.
  cost::DynamicHeadGroup rt;
  rt.leaf.family = kernel::kRouting;
  rt.leaf.clusters = 2;
  rt.with = vs.with;
  rt.without = vs.without;
  rt.heads = {0};
  ASSERT_TRUE(cost::predictLayer(t, {}, {rt}, 1, 8, 8, 1, 64, c, error))
      << error;
  double index = 0.5 * 32.0 / 4096.0 + 2.08;
  EXPECT_EQ(c.groups[0].partialTiles, 4);
  EXPECT_NEAR(c.groups[0].indexS / kMs, index, 1e-9);
  EXPECT_NEAR(c.seconds / kMs, 4 * 2.5 + index + 50 + 10 + 3, 1e-9);

  // A target file keeps the field (written and read back); a negative one
  // is refused.
  char path[] = "/tmp/tessera-target-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << cost::targetToJson(t);
  cost::Target back;
  ASSERT_TRUE(cost::loadTarget(path, back, error)) << error;
  std::remove(path);
  EXPECT_DOUBLE_EQ(back.indexElementS, t.indexElementS);
  t.indexElementS = -1;
  EXPECT_NE(cost::validateTarget(t), "");
}
