//===- LowerRuns.cpp - each group's key-block runs in the IR --------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/Passes.h"
#include "tessera/cpu/Layout.h"
#include "tessera/Transforms/RunOps.h"

#include "tessera/Dialect/Attn/AttnOps.h"

namespace tessera {
#define GEN_PASS_DEF_ATTNLOWERRUNS
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

/// Runs of a pattern that holds dynamic leaves: its static parts as runs,
/// each dynamic leaf as the step that builds its index, under the
/// combinators that join them.
void buildMixed(OpBuilder &b, Location loc, PatternAttrInterface p,
                int64_t blockQ, int64_t blockK) {
  if (p.isStatic()) {
    buildRunOps(b, loc, schedule::buildRuns(semantics::fromAttr(p)), blockQ,
                blockK);
    return;
  }
  auto nest = [&](Operation *op, ArrayRef<PatternAttrInterface> parts) {
    Region &r = op->getRegion(0);
    Block *body = new Block();
    r.push_back(body);
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    for (PatternAttrInterface part : parts)
      buildMixed(inner, loc, part, blockQ, blockK);
  };
  if (auto u = dyn_cast<UnionAttr>(p))
    nest(RunUnionOp::create(b, loc), u.getPatterns());
  else if (auto i = dyn_cast<IntersectAttr>(p))
    nest(RunIntersectOp::create(b, loc), i.getPatterns());
  else if (auto d = dyn_cast<DifferenceAttr>(p))
    nest(RunDifferenceOp::create(b, loc), {d.getLhs(), d.getRhs()});
  else
    BuildIndexOp::create(b, loc, p,
                         b.getStringAttr(BuildIndexOp::layoutFor(p)));
}

/// The transposed schedule of a static group, after its forward runs: for
/// each key block, the runs of query blocks that see it.
void buildTransposed(OpBuilder &b, Location loc, PatternAttrInterface p,
                     int64_t blockQ, int64_t blockK) {
  auto op = RunTransposedOp::create(b, loc);
  Block *body = new Block();
  op.getBody().push_back(body);
  OpBuilder inner = OpBuilder::atBlockEnd(body);
  buildRunOps(inner, loc,
              schedule::transposeRuns(
                  schedule::buildRuns(semantics::fromAttr(p))),
              blockQ, blockK);
}

/// How a group with a layout walks its permuted order: the closed form's
/// residue relation (tessera/cpu/Layout.h, PermutedRuns: a query block of
/// residues c0..c1 visits the key blocks of the union of R(c), FULL inside
/// their intersection), or why there is none (each pair classified once).
std::string permutedRuns(GroupOp group, PeriodTransposeAttr layout) {
  int64_t period = layout.getPeriod();
  schedule::Program program;
  std::string error;
  if (!schedule::lowerPattern(semantics::fromAttr(group.getPattern()),
                              program, error))
    return "pairwise (" + error + ")";
  // A prefix's quadrants depend on the lengths: decided at Nq = Nk = the
  // longest sequence, which decides every shorter one (a leaf that is all
  // or none of a quadrant there is so of each part of it).
  layout::PeriodTranspose perm{
      period, layout.getPrefix(),
      std::vector<int64_t>(layout.getKept().begin(), layout.getKept().end())};
  const kernel::Node *nodes = program.nodes.data();
  int64_t count = int64_t(program.nodes.size()),
          head = group.getHeads().front();
  std::string why = layout::closedFormReason(
      nodes, count, program.data.data(), perm, head, kMaxExtent, kMaxExtent);
  if (!why.empty())
    return "pairwise (no closed form: " + why + ")";
  if (perm.prefix > 0)
    return layout::describePrefixed(nodes, count, program.data.data(), perm,
                                    head, kMaxExtent);
  return "residues mod " + std::to_string(period) + ": R(p) = {k : " +
         layout::describeResidues(program.nodes.data(),
                                  int64_t(program.nodes.size())) +
         "}";
}

struct AttnLowerRunsPass
    : tessera::impl::AttnLowerRunsBase<AttnLowerRunsPass> {
  void runOnOperation() override {
    getOperation().walk([&](GroupOp group) {
      auto schedule = group->getParentOfType<ScheduleOp>();
      Region &region = group.getRuns();
      region.getBlocks().clear();
      Block *body = new Block();
      region.push_back(body);
      OpBuilder b = OpBuilder::atBlockEnd(body);
      buildMixed(b, group.getLoc(), group.getPattern(), schedule.getBlockQ(),
                 schedule.getBlockK());
      if (group.getPattern().isStatic())
        buildTransposed(b, group.getLoc(), group.getPattern(),
                        schedule.getBlockQ(), schedule.getBlockK());
      if (PeriodTransposeAttr layout = group.getLayoutAttr())
        group->setAttr("attn.permuted_runs",
                       b.getStringAttr(permutedRuns(group, layout)));
    });
  }
};
} // namespace
