//===- DynamicCost.cpp - dynamic pattern attributes for the cost model ----===//

#include "tessera/Transforms/DynamicCost.h"

#include "tessera/Semantics/FromAttr.h"

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

/// A dynamic pattern as the cost model takes it: the leaf's parameters and
/// the pattern with the leaf read as dense and as skip.
bool tessera::dynamicCostGroup(PatternAttrInterface pattern,
                               cost::DynamicHeadGroup &g, std::string &why) {
  semantics::DynamicSplit split;
  if (!semantics::splitDynamic(pattern, split, why))
    return false;
  g.with = std::move(split.with);
  g.without = std::move(split.without);
  kernel::DynArgs &a = g.leaf;
  if (auto vs = llvm::dyn_cast<VerticalSlashAttr>(split.leaf)) {
    a.family = kernel::kVerticalSlash;
    a.lastQ = vs.getLastQ();
    a.vertical = std::max(vs.getVertical(), vs.getFirstColumns());
    a.slash = std::max(vs.getSlash(), vs.getLastDiagonals());
  } else if (auto bt = llvm::dyn_cast<BlockTopkAttr>(split.leaf)) {
    a.family = kernel::kBlockTopk;
    // tau > 0: FlexPrefill's choice, priced by CostModel.cpp.
    a.tau = float(bt.getTau().value);
    a.block = bt.getBlock();
    a.topK = bt.getTopK();
    a.minBlocks = bt.getMinBlocks();
    a.maxBlocks = bt.getMaxBlocks();
  } else if (auto bi = llvm::dyn_cast<BlockIndexAttr>(split.leaf)) {
    // The caller's lists: priced as if they listed every key block.
    a.family = kernel::kBlockIndex;
    a.blockQ = bi.getBlockQ();
    a.blockK = bi.getBlockK();
  } else {
    auto rt = llvm::cast<RoutingAttr>(split.leaf);
    a.family = kernel::kRouting;
    a.clusters = rt.getClusters();
    a.iterations = rt.getKmeansIterations();
    a.merge = split.required ? 0 : 1;
  }
  return true;
}


bool tessera::costGroups(
    const std::vector<std::pair<PatternAttrInterface, std::vector<int64_t>>>
        &groups,
    std::vector<schedule::HeadGroup> &statics,
    std::vector<cost::DynamicHeadGroup> &dynamics, std::string &why) {
  for (const auto &[p, heads] : groups) {
    if (p.isStatic()) {
      statics.push_back({semantics::fromAttr(p), heads});
      continue;
    }
    cost::DynamicHeadGroup g;
    if (!dynamicCostGroup(p, g, why))
      return false;
    g.heads = heads;
    dynamics.push_back(std::move(g));
  }
  return true;
}
