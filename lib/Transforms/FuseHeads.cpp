//===- FuseHeads.cpp - regroup heads by identical masks -------------------===//

#include "tessera/Transforms/HeadGroups.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace tessera {
#define GEN_PASS_DEF_ATTNFUSEHEADS
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {
struct AttnFuseHeadsPass : tessera::impl::AttnFuseHeadsBase<AttnFuseHeadsPass> {
  void runOnOperation() override {
    getOperation().walk([&](LayerOp layer) {
      SmallVector<HeadsOp> old(layer.getBody().front().getOps<HeadsOp>());
      SmallVector<FusedGroup> groups = fuseHeads(layer);
      OpBuilder b = OpBuilder::atBlockEnd(&layer.getBody().front());
      for (FusedGroup &g : groups) {
        // Keep the location of the op that gave the group its first head.
        Location loc = layer.getLoc();
        for (HeadsOp op : old)
          if (llvm::is_contained(op.getHeads(), g.heads.front()))
            loc = op.getLoc();
        HeadsOp::create(b, loc, g.heads, g.pattern);
      }
      for (HeadsOp op : old)
        op.erase();
    });
  }
};
} // namespace
