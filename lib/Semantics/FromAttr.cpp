//===- FromAttr.cpp - pattern attributes to reference semantics -----------===//

#include "tessera/Semantics/FromAttr.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/ErrorHandling.h"

#include <algorithm>

using namespace tessera;
using namespace tessera::semantics;
namespace a = tessera::attn;

static std::vector<std::pair<int64_t, int64_t>>
pairs(llvm::ArrayRef<int64_t> flat) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    out.push_back({flat[i], flat[i + 1]});
  return out;
}

template <typename StripeAttr> static IndexSet indexSet(StripeAttr s) {
  IndexSet set;
  set.ranges = pairs(s.getRanges());
  set.period = s.getPeriod();
  set.width = s.getWidth();
  set.phase = s.getPhase();
  return set;
}

static std::vector<Pattern> parts(llvm::ArrayRef<a::PatternAttrInterface> ps) {
  std::vector<Pattern> out;
  for (a::PatternAttrInterface p : ps)
    out.push_back(fromAttr(p));
  return out;
}

Pattern tessera::semantics::fromAttr(a::PatternAttrInterface attr) {
  return llvm::TypeSwitch<mlir::Attribute, Pattern>(attr)
      .Case([](a::DenseAttr) { return Pattern{Dense{}}; })
      .Case([](a::CausalAttr) { return Pattern{Causal{}}; })
      .Case([](a::WindowAttr w) {
        return Pattern{Window{w.getBefore(), w.getAfter()}};
      })
      .Case([](a::SinkAttr s) { return Pattern{Sink{s.getCount()}}; })
      .Case([](a::AShapeAttr s) {
        return Pattern{AShape{s.getSink(), s.getBefore(), s.getAfter()}};
      })
      .Case([](a::MultiDiagonalAttr m) {
        return Pattern{
            MultiDiagonal{m.getStride(), m.getOffsets().vec(), m.getWidth()}};
      })
      .Case([](a::VerticalStripeAttr s) {
        return Pattern{VerticalStripe{indexSet(s)}};
      })
      .Case([](a::HorizontalStripeAttr s) {
        return Pattern{HorizontalStripe{indexSet(s)}};
      })
      .Case([](a::GridAttr g) {
        return Pattern{Grid{g.getStride(), g.getVerticalWidth(),
                            g.getSlashWidth(), g.getPhase()}};
      })
      .Case([](a::StridedShardsAttr s) {
        return Pattern{
            StridedShards{s.getShards(), s.getBlock(), s.getOffset()}};
      })
      .Case([](a::ShiftedGroupsAttr s) {
        return Pattern{ShiftedGroups{s.getSize(), s.getShift()}};
      })
      .Case([](a::BlockSparseAttr b) {
        BlockSparse bs{b.getBlockQ(), b.getBlockK(), pairs(b.getBlocks())};
        std::sort(bs.blocks.begin(), bs.blocks.end());
        return Pattern{std::move(bs)};
      })
      .Case([](a::SkipAttr) { return Pattern{Skip{}}; })
      .Case(
          [](a::UnionAttr u) { return Pattern{Union{parts(u.getPatterns())}}; })
      .Case([](a::IntersectAttr i) {
        return Pattern{Intersect{parts(i.getPatterns())}};
      })
      .Case([](a::DifferenceAttr d) {
        return Pattern{Difference{parts({d.getLhs(), d.getRhs()})}};
      })
      .Default([](mlir::Attribute) -> Pattern {
        llvm::report_fatal_error("fromAttr: a pattern attribute without "
                                 "reference semantics");
      });
}

namespace {
bool isDynamicLeaf(mlir::Attribute a) {
  return llvm::isa<a::VerticalSlashAttr, a::BlockTopkAttr, a::RoutingAttr,
                   a::BlockIndexAttr>(a);
}

void findDynamic(a::PatternAttrInterface p,
                 llvm::SmallVectorImpl<a::PatternAttrInterface> &leaves) {
  if (isDynamicLeaf(p)) {
    leaves.push_back(p);
    return;
  }
  if (auto u = llvm::dyn_cast<a::UnionAttr>(p))
    for (a::PatternAttrInterface c : u.getPatterns())
      findDynamic(c, leaves);
  else if (auto i = llvm::dyn_cast<a::IntersectAttr>(p))
    for (a::PatternAttrInterface c : i.getPatterns())
      findDynamic(c, leaves);
  else if (auto d = llvm::dyn_cast<a::DifferenceAttr>(p)) {
    findDynamic(d.getLhs(), leaves);
    findDynamic(d.getRhs(), leaves);
  }
}

Pattern substitute(a::PatternAttrInterface p, const Pattern &leafValue) {
  if (isDynamicLeaf(p))
    return leafValue;
  auto each = [&](llvm::ArrayRef<a::PatternAttrInterface> ps) {
    std::vector<Pattern> out;
    for (a::PatternAttrInterface c : ps)
      out.push_back(substitute(c, leafValue));
    return out;
  };
  if (auto u = llvm::dyn_cast<a::UnionAttr>(p))
    return Pattern{Union{each(u.getPatterns())}};
  if (auto i = llvm::dyn_cast<a::IntersectAttr>(p))
    return Pattern{Intersect{each(i.getPatterns())}};
  if (auto d = llvm::dyn_cast<a::DifferenceAttr>(p))
    return Pattern{Difference{each({d.getLhs(), d.getRhs()})}};
  return fromAttr(p);
}

bool leafRequired(a::PatternAttrInterface p) {
  if (isDynamicLeaf(p))
    return true;
  if (auto i = llvm::dyn_cast<a::IntersectAttr>(p))
    return llvm::any_of(i.getPatterns(), leafRequired);
  if (auto d = llvm::dyn_cast<a::DifferenceAttr>(p))
    return leafRequired(d.getLhs());
  return false;
}
} // namespace

bool tessera::semantics::splitDynamic(a::PatternAttrInterface attr,
                                      DynamicSplit &out, std::string &error) {
  llvm::SmallVector<a::PatternAttrInterface> leaves;
  findDynamic(attr, leaves);
  if (leaves.size() != 1) {
    error = leaves.empty() ? "the pattern has no dynamic leaf"
                           : "the pattern has " +
                                 std::to_string(leaves.size()) +
                                 " dynamic leaves; a head group's index is "
                                 "built for one";
    return false;
  }
  out.leaf = leaves.front();
  out.with = substitute(attr, Pattern{Dense{}});
  out.without = substitute(attr, Pattern{Skip{}});
  out.required = leafRequired(attr);
  return true;
}
