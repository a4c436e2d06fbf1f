//===- Schedule.cpp - lower layers to block schedules ---------------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/HeadGroups.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace tessera {
#define GEN_PASS_DEF_ATTNSCHEDULE
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {
struct AttnSchedulePass : tessera::impl::AttnScheduleBase<AttnSchedulePass> {
  using AttnScheduleBase::AttnScheduleBase;

  void runOnOperation() override {
    if (blockQ < 1 || blockQ > 1024 || blockK < 1 || blockK > 1024) {
      getOperation().emitError("attn-schedule: block-q and block-k must be in "
                               "[1, 1024], got ")
          << int64_t(blockQ) << " and " << int64_t(blockK);
      return signalPassFailure();
    }
    SmallVector<LayerOp> layers;
    getOperation().walk([&](LayerOp l) { layers.push_back(l); });
    for (LayerOp layer : layers)
      if (failed(lower(layer)))
        return signalPassFailure();
  }

  LogicalResult lower(LayerOp layer) {
    SmallVector<FusedGroup> groups = fuseHeads(layer);
    SmallVector<int64_t> skipped;
    for (FusedGroup &g : groups) {
      if (isa<SkipAttr>(g.pattern)) {
        llvm::append_range(skipped, g.heads);
        continue;
      }
      // Dynamic patterns are scheduled as they are: their index is built at
      // run time (--attn-lower-runs shows the step).
      if (!g.pattern.isStatic())
        continue;
      // The kernel must be able to evaluate the pattern.
      schedule::Program program;
      std::string error;
      if (!schedule::lowerPattern(semantics::fromAttr(g.pattern), program,
                                  error))
        return layer.emitError("attn-schedule: head ")
               << g.heads.front() << ": " << error;
    }
    llvm::sort(skipped);
    OpBuilder b(layer);
    auto schedule = ScheduleOp::create(
        b, layer.getLoc(), layer.getIndex(), layer.getNumHeads(),
        layer.getNumKvHeads(), layer.getHeadDim(), layer.getDtype(),
        SmallVector<int64_t>{blockQ, blockK}, skipped);
    Block *body = new Block();
    schedule.getBody().push_back(body);
    b.setInsertionPointToEnd(body);
    int64_t id = 0;
    for (FusedGroup &g : groups)
      if (!isa<SkipAttr>(g.pattern))
        GroupOp::create(b, layer.getLoc(), id++, g.heads, g.pattern);
    layer.erase();
    return success();
  }
};
} // namespace
