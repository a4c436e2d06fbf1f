//===- FromAttr.cpp - pattern attributes to reference semantics -----------===//

#include "tessera/Semantics/FromAttr.h"

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
