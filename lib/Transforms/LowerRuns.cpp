//===- LowerRuns.cpp - each group's key-block runs in the IR --------------===//

#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/Passes.h"
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
      schedule::RunExpr runs =
          schedule::buildRuns(semantics::fromAttr(group.getPattern()));
      buildRunOps(b, group.getLoc(), runs, schedule.getBlockQ(),
                  schedule.getBlockK());
    });
  }
};
} // namespace
