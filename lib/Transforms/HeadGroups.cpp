//===- HeadGroups.cpp - fusing heads with identical masks -----------------===//

#include "tessera/Transforms/HeadGroups.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

/// Appends to `key` everything the mask of `pattern` depends on about `head`:
/// two heads with the same pattern and key have the same mask.
static void appendHeadKey(PatternAttrInterface pattern, int64_t head,
                          int64_t numHeads, SmallVectorImpl<int64_t> &key) {
  if (!pattern.isHeadDependent())
    return;
  llvm::TypeSwitch<Attribute>(pattern)
      .Case([&](StridedShardsAttr s) {
        key.push_back((head + s.getOffset()) % s.getShards());
      })
      .Case([&](ShiftedGroupsAttr) { key.push_back(head >= numHeads / 2); })
      .Case<UnionAttr, IntersectAttr>([&](auto set) {
        for (PatternAttrInterface p : set.getPatterns())
          appendHeadKey(p, head, numHeads, key);
      })
      .Case([&](DifferenceAttr d) {
        appendHeadKey(d.getLhs(), head, numHeads, key);
        appendHeadKey(d.getRhs(), head, numHeads, key);
      })
      .Default([&](Attribute) { key.push_back(head); });
}

SmallVector<FusedGroup> tessera::fuseHeads(LayerOp layer) {
  int64_t numHeads = layer.getNumHeads();
  // Heads by (pattern, key), in order of first head.
  std::map<std::pair<const void *, SmallVector<int64_t>>, size_t> index;
  SmallVector<FusedGroup> groups;
  for (int64_t h = 0; h < numHeads; ++h) {
    PatternAttrInterface pattern = layer.getHeadPattern(h);
    SmallVector<int64_t> key;
    appendHeadKey(pattern, h, numHeads, key);
    auto [it, inserted] =
        index.try_emplace({pattern.getAsOpaquePointer(), key}, groups.size());
    if (inserted)
      groups.push_back({pattern, {}});
    groups[it->second].heads.push_back(h);
  }
  return groups;
}
