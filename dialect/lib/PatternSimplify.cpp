//===- PatternSimplify.cpp - algebra of pattern attributes ----------------===//
//
// simplifyPattern rewrites a pattern into a simpler one that allows exactly
// the same (query, key, head) triples for every Nq and Nk. Each rule is listed
// in docs/patterns.md with the reason it is exact; the unit test
// test/Unit/SimplifyTest.cpp compares masks before and after on random
// patterns.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Semantics/Ranges.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <optional>

using namespace mlir;
using namespace tessera::attn;

namespace {

using tessera::semantics::Range;
using RangeList = std::vector<Range>;

RangeList toRanges(ArrayRef<int64_t> flat) {
  RangeList out;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    out.push_back({flat[i], flat[i + 1]});
  return out;
}

SmallVector<int64_t> flatten(const RangeList &ranges) {
  SmallVector<int64_t> out;
  for (auto [b, e] : ranges) {
    out.push_back(b);
    out.push_back(e);
  }
  return out;
}

RangeList intersectRanges(const RangeList &a, const RangeList &b) {
  RangeList out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    int64_t lo = std::max(a[i].first, b[j].first);
    int64_t hi = std::min(a[i].second, b[j].second);
    if (lo < hi)
      out.push_back({lo, hi});
    if (a[i].second < b[j].second)
      ++i;
    else
      ++j;
  }
  return out;
}

/// A diagonal band -before <= d <= after.
struct Band {
  int64_t before, after;
};

/// The band of a window, or nullopt.
std::optional<Band> asBand(PatternAttrInterface p) {
  if (auto w = dyn_cast<WindowAttr>(p))
    return Band{w.getBefore(), w.getAfter()};
  return std::nullopt;
}

/// Is `p` a subset of the causal pattern (d <= 0)?
bool isWithinCausal(PatternAttrInterface p) {
  if (isa<CausalAttr, SinkAttr, SkipAttr>(p))
    return true;
  if (auto w = dyn_cast<WindowAttr>(p))
    return w.getAfter() == 0;
  if (auto a = dyn_cast<AShapeAttr>(p))
    return a.getAfter() == 0;
  return false;
}

/// Is `a` known to be a subset of `b`? Conservative: false when unknown.
bool isKnownSubset(PatternAttrInterface a, PatternAttrInterface b) {
  if (a == b || isa<SkipAttr>(a) || isa<DenseAttr>(b))
    return true;
  if (isa<CausalAttr>(b))
    return isWithinCausal(a);
  auto wa = asBand(a), wb = asBand(b);
  if (wa && wb)
    return wa->before <= wb->before && wa->after <= wb->after;
  auto sa = dyn_cast<SinkAttr>(a), sb = dyn_cast<SinkAttr>(b);
  if (sa && sb)
    return sa.getCount() <= sb.getCount();
  return false;
}

/// Appends the children of `p` to `out`, flattening nested `SetAttr`s.
template <typename SetAttr>
void flattenInto(ArrayRef<PatternAttrInterface> patterns,
                 SmallVectorImpl<PatternAttrInterface> &out) {
  for (PatternAttrInterface p : patterns) {
    PatternAttrInterface s = simplifyPattern(p);
    if (auto nested = dyn_cast<SetAttr>(s))
      flattenInto<SetAttr>(nested.getPatterns(), out);
    else
      out.push_back(s);
  }
}

PatternAttrInterface simplifyUnion(UnionAttr u) {
  MLIRContext *ctx = u.getContext();
  SmallVector<PatternAttrInterface> parts;
  flattenInto<UnionAttr>(u.getPatterns(), parts);

  std::optional<int64_t> sink;
  std::optional<Band> band;
  std::optional<RangeList> vRanges, hRanges;
  bool causal = false;
  llvm::SetVector<PatternAttrInterface> rest;
  for (PatternAttrInterface p : parts) {
    if (isa<DenseAttr>(p))
      return DenseAttr::get(ctx);
    if (isa<SkipAttr>(p))
      continue;
    if (isa<CausalAttr>(p)) {
      causal = true;
    } else if (auto s = dyn_cast<SinkAttr>(p)) {
      sink = std::max(sink.value_or(0), s.getCount());
    } else if (auto w = dyn_cast<WindowAttr>(p)) {
      band = Band{std::max(band ? band->before : 0, w.getBefore()),
                  std::max(band ? band->after : 0, w.getAfter())};
    } else if (auto a = dyn_cast<AShapeAttr>(p)) {
      sink = std::max(sink.value_or(0), a.getSink());
      band = Band{std::max(band ? band->before : 0, a.getBefore()),
                  std::max(band ? band->after : 0, a.getAfter())};
    } else if (auto v = dyn_cast<VerticalStripeAttr>(p);
               v && !v.getRanges().empty()) {
      RangeList r = vRanges.value_or(RangeList());
      llvm::append_range(r, toRanges(v.getRanges()));
      vRanges = tessera::semantics::mergeRanges(r);
    } else if (auto h = dyn_cast<HorizontalStripeAttr>(p);
               h && !h.getRanges().empty()) {
      RangeList r = hRanges.value_or(RangeList());
      llvm::append_range(r, toRanges(h.getRanges()));
      hRanges = tessera::semantics::mergeRanges(r);
    } else {
      rest.insert(p);
    }
  }

  // Sinks and windows with after == 0 lie inside causal.
  if (causal) {
    sink.reset();
    if (band && band->after == 0)
      band.reset();
  }

  SmallVector<PatternAttrInterface> out;
  if (causal)
    out.push_back(CausalAttr::get(ctx));
  if (sink && band)
    out.push_back(AShapeAttr::get(ctx, *sink, band->before, band->after));
  else if (sink)
    out.push_back(SinkAttr::get(ctx, *sink));
  else if (band)
    out.push_back(WindowAttr::get(ctx, band->before, band->after));
  if (vRanges)
    out.push_back(VerticalStripeAttr::get(ctx, flatten(*vRanges), 0, 0, 0));
  if (hRanges)
    out.push_back(HorizontalStripeAttr::get(ctx, flatten(*hRanges), 0, 0, 0));
  llvm::append_range(out, rest);

  if (out.empty())
    return SkipAttr::get(ctx);
  if (out.size() == 1)
    return out.front();
  return UnionAttr::get(ctx, out);
}

PatternAttrInterface simplifyIntersect(IntersectAttr i) {
  MLIRContext *ctx = i.getContext();
  SmallVector<PatternAttrInterface> parts;
  flattenInto<IntersectAttr>(i.getPatterns(), parts);

  std::optional<int64_t> sink;
  std::optional<Band> band;
  std::optional<RangeList> vRanges, hRanges;
  bool causal = false;
  llvm::SetVector<PatternAttrInterface> rest;
  for (PatternAttrInterface p : parts) {
    if (isa<SkipAttr>(p))
      return SkipAttr::get(ctx);
    if (isa<DenseAttr>(p))
      continue;
    if (isa<CausalAttr>(p)) {
      causal = true;
    } else if (auto s = dyn_cast<SinkAttr>(p)) {
      sink = std::min(sink.value_or(kMaxExtent), s.getCount());
    } else if (auto w = dyn_cast<WindowAttr>(p)) {
      band = Band{std::min(band ? band->before : kMaxExtent, w.getBefore()),
                  std::min(band ? band->after : kMaxExtent, w.getAfter())};
    } else if (auto v = dyn_cast<VerticalStripeAttr>(p);
               v && !v.getRanges().empty()) {
      RangeList r = toRanges(v.getRanges());
      vRanges = vRanges ? intersectRanges(*vRanges, r) : r;
    } else if (auto h = dyn_cast<HorizontalStripeAttr>(p);
               h && !h.getRanges().empty()) {
      RangeList r = toRanges(h.getRanges());
      hRanges = hRanges ? intersectRanges(*hRanges, r) : r;
    } else {
      rest.insert(p);
    }
  }
  if ((vRanges && vRanges->empty()) || (hRanges && hRanges->empty()))
    return SkipAttr::get(ctx);

  // Causal clips every band and A-shape to after = 0; a sink lies inside it.
  if (causal) {
    bool absorbed = sink.has_value() || band.has_value();
    if (band)
      band->after = 0;
    SmallVector<PatternAttrInterface> clipped;
    for (PatternAttrInterface p : rest) {
      if (auto a = dyn_cast<AShapeAttr>(p)) {
        clipped.push_back(
            AShapeAttr::get(ctx, a.getSink(), a.getBefore(), /*after=*/0));
        absorbed = true;
      } else {
        clipped.push_back(p);
      }
    }
    rest.clear();
    rest.insert(clipped.begin(), clipped.end());
    causal = !absorbed;
  }

  SmallVector<PatternAttrInterface> out;
  if (causal)
    out.push_back(CausalAttr::get(ctx));
  if (sink)
    out.push_back(SinkAttr::get(ctx, *sink));
  if (band)
    out.push_back(WindowAttr::get(ctx, band->before, band->after));
  if (vRanges)
    out.push_back(VerticalStripeAttr::get(ctx, flatten(*vRanges), 0, 0, 0));
  if (hRanges)
    out.push_back(HorizontalStripeAttr::get(ctx, flatten(*hRanges), 0, 0, 0));
  llvm::append_range(out, rest);

  if (out.empty())
    return DenseAttr::get(ctx);
  if (out.size() == 1)
    return out.front();
  return IntersectAttr::get(ctx, out);
}

PatternAttrInterface simplifyDifference(DifferenceAttr d) {
  MLIRContext *ctx = d.getContext();
  PatternAttrInterface lhs = simplifyPattern(d.getLhs());
  PatternAttrInterface rhs = simplifyPattern(d.getRhs());
  if (isa<SkipAttr>(rhs))
    return lhs;
  if (isKnownSubset(lhs, rhs))
    return SkipAttr::get(ctx);
  if (lhs == d.getLhs() && rhs == d.getRhs())
    return d;
  return DifferenceAttr::get(ctx, lhs, rhs);
}

/// Multi-diagonal bands that merge into one band around the diagonal are a
/// window; bands that cover every offset are dense.
PatternAttrInterface simplifyMultiDiagonal(MultiDiagonalAttr m) {
  MLIRContext *ctx = m.getContext();
  int64_t w = m.getWidth();
  if (m.getStride() != 0)
    return 2 * w + 1 >= m.getStride() ? DenseAttr::get(ctx)
                                      : PatternAttrInterface(m);
  RangeList bands;
  for (int64_t o : m.getOffsets())
    bands.push_back({o - w, o + w + 1});
  bands = tessera::semantics::mergeRanges(bands);
  if (bands.size() == 1 && bands[0].first <= 0 && bands[0].second > 0 &&
      -bands[0].first <= kMaxExtent && bands[0].second - 1 <= kMaxExtent)
    return WindowAttr::get(ctx, -bands[0].first, bands[0].second - 1);
  return m;
}

} // namespace

PatternAttrInterface tessera::attn::simplifyPattern(PatternAttrInterface p) {
  MLIRContext *ctx = p.getContext();
  return llvm::TypeSwitch<PatternAttrInterface, PatternAttrInterface>(p)
      .Case<UnionAttr>(simplifyUnion)
      .Case<IntersectAttr>(simplifyIntersect)
      .Case<DifferenceAttr>(simplifyDifference)
      .Case<MultiDiagonalAttr>(simplifyMultiDiagonal)
      .Case<VerticalStripeAttr, HorizontalStripeAttr>(
          [&](auto s) -> PatternAttrInterface {
            if (s.getRanges().empty() && s.getWidth() == s.getPeriod())
              return DenseAttr::get(ctx);
            return s;
          })
      .Case<GridAttr>([&](GridAttr g) -> PatternAttrInterface {
        if (g.getVerticalWidth() == g.getStride() ||
            g.getSlashWidth() == g.getStride())
          return DenseAttr::get(ctx);
        return g;
      })
      .Case<StridedShardsAttr>(
          [&](StridedShardsAttr s) -> PatternAttrInterface {
            return s.getShards() == 1
                       ? PatternAttrInterface(DenseAttr::get(ctx))
                       : PatternAttrInterface(s);
          })
      .Case<BlockSparseAttr>([&](BlockSparseAttr b) -> PatternAttrInterface {
        return b.getBlocks().empty() ? PatternAttrInterface(SkipAttr::get(ctx))
                                     : PatternAttrInterface(b);
      })
      .Default([](PatternAttrInterface q) { return q; });
}
