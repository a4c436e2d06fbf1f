//===- Lower.cpp - patterns to block-schedule programs --------------------===//

#include "tessera/Schedule/Lower.h"
#include "tessera/kernel/OwnedTable.h"
#include "tessera/Semantics/Ranges.h"

#include <algorithm>
#include <utility>

using namespace tessera;
using namespace tessera::schedule;
namespace k = tessera::kernel;
namespace s = tessera::semantics;

namespace {

k::Node leaf(k::i64 kind, k::i64 axis, k::i64 a = 0, k::i64 b = 0,
             k::i64 c = 0) {
  return k::Node{kind, axis, a, b, c, 0, 0, 0};
}

k::Node combinator(k::i64 kind, k::i64 arity) {
  return k::Node{kind, arity, 0, 0, 0, 0, 0, 0};
}

class Lowering {
public:
  explicit Lowering(Program &out) : out(out) {}

  /// Emits `p` and returns the stack depth its evaluation needs.
  int emit(const s::Pattern &p) {
    return std::visit([&](const auto &n) { return emitNode(n); }, p.node);
  }

private:
  int push(k::Node n) {
    out.nodes.push_back(n);
    return 1;
  }

  int intervals(k::i64 axis,
                const std::vector<std::pair<int64_t, int64_t>> &ranges) {
    k::Node n = leaf(k::kIntervals, axis);
    n.dataBegin = static_cast<k::i64>(out.data.size());
    for (auto [lo, hi] : s::mergeRanges(ranges)) {
      out.data.push_back(lo);
      out.data.push_back(hi);
    }
    n.dataSize = static_cast<k::i64>(out.data.size()) - n.dataBegin;
    return push(n);
  }

  int indexSet(k::i64 axis, const s::IndexSet &set) {
    if (set.period > 0)
      return push(leaf(k::kPeriodic, axis, set.period, set.width, set.phase));
    return intervals(axis, set.ranges);
  }

  /// Emits children then the combinator; the depth is the classic postfix
  /// bound: child i needs its own depth on top of the i results before it.
  template <typename Range> int combine(k::i64 kind, const Range &children) {
    int depth = 0, i = 0;
    for (const s::Pattern &c : children)
      depth = std::max(depth, i++ + emit(c));
    push(combinator(kind, static_cast<k::i64>(children.size())));
    return depth;
  }

  int causal() { return push(leaf(k::kBand, k::kAxisD, -k::kUnbounded, 0)); }

  int sink(int64_t count) {
    push(leaf(k::kBand, k::kAxisK, 0, count - 1));
    causal();
    push(combinator(k::kIntersect, 2));
    return 2;
  }

  int emitNode(const s::Dense &) { return push(leaf(k::kAll, 0)); }
  int emitNode(const s::Skip &) { return push(leaf(k::kNone, 0)); }
  int emitNode(const s::Causal &) { return causal(); }
  int emitNode(const s::Window &w) {
    return push(leaf(k::kBand, k::kAxisD, -w.before, w.after));
  }
  int emitNode(const s::Sink &p) { return sink(p.count); }
  int emitNode(const s::AShape &a) {
    sink(a.sink);
    push(leaf(k::kBand, k::kAxisD, -a.before, a.after));
    push(combinator(k::kUnion, 2));
    return 3;
  }
  int emitNode(const s::MultiDiagonal &m) {
    if (m.stride > 0) {
      if (2 * m.width + 1 >= m.stride)
        return push(leaf(k::kAll, 0));
      return push(
          leaf(k::kPeriodic, k::kAxisD, m.stride, 2 * m.width + 1, -m.width));
    }
    std::vector<std::pair<int64_t, int64_t>> bands;
    for (int64_t o : m.offsets)
      bands.push_back({o - m.width, o + m.width + 1});
    return intervals(k::kAxisD, bands);
  }
  int emitNode(const s::VerticalStripe &v) {
    return indexSet(k::kAxisK, v.keys);
  }
  int emitNode(const s::HorizontalStripe &h) {
    return indexSet(k::kAxisP, h.queries);
  }
  int emitNode(const s::Grid &g) {
    int n = 0;
    if (g.verticalWidth > 0) {
      push(leaf(k::kPeriodic, k::kAxisK, g.stride, g.verticalWidth, g.phase));
      ++n;
    }
    if (g.slashWidth > 0) {
      push(leaf(k::kPeriodic, k::kAxisNegD, g.stride, g.slashWidth, g.phase));
      ++n;
    }
    if (n == 2)
      push(combinator(k::kUnion, 2));
    return n;
  }
  int emitNode(const s::StridedShards &p) {
    return push(leaf(k::kShards, k::kAxisK, p.block, p.shards, p.offset));
  }
  int emitNode(const s::ShiftedGroups &g) {
    return push(leaf(k::kGroups, k::kAxisP, g.size, g.shift));
  }
  int emitNode(const s::BlockSparse &b) {
    k::Node n = leaf(k::kBlocks, k::kAxisP, b.blockQ, b.blockK);
    n.dataBegin = static_cast<k::i64>(out.data.size());
    std::vector<std::pair<k::i64, k::i64>> blocks(b.blocks.begin(),
                                                  b.blocks.end());
    n.c = k::appendBlockList(blocks, out.data);
    n.dataSize = static_cast<k::i64>(out.data.size()) - n.dataBegin;
    return push(n);
  }
  int emitNode(const s::Union &u) { return combine(k::kUnion, u.parts); }
  int emitNode(const s::Intersect &i) {
    return combine(k::kIntersect, i.parts);
  }
  int emitNode(const s::Difference &d) {
    return combine(k::kDifference, d.parts);
  }

  Program &out;
};

} // namespace

bool tessera::schedule::lowerPattern(const s::Pattern &pattern, Program &out,
                                     std::string &error) {
  size_t firstNode = out.nodes.size();
  int depth = Lowering(out).emit(pattern);
  if (depth > k::kMaxStack) {
    out.nodes.resize(firstNode);
    error = "the pattern nests too deeply for the kernel's evaluation stack "
            "(needs " +
            std::to_string(depth) + " entries, at most " +
            std::to_string(k::kMaxStack) + ")";
    return false;
  }
  return true;
}

bool tessera::schedule::buildLayerSchedule(const std::vector<HeadGroup> &groups,
                                           int64_t numHeads, LayerSchedule &out,
                                           std::string &error) {
  out = LayerSchedule();
  out.numHeads = numHeads;
  out.groupBegin.push_back(0);
  std::vector<std::pair<int64_t, int64_t>> slots; // (head, group)
  for (const HeadGroup &g : groups) {
    if (std::holds_alternative<s::Skip>(g.pattern.node)) {
      out.skippedHeads.insert(out.skippedHeads.end(), g.heads.begin(),
                              g.heads.end());
      continue;
    }
    if (!lowerPattern(g.pattern, out, error))
      return false;
    int64_t id = static_cast<int64_t>(out.groupBegin.size()) - 1;
    out.groupBegin.push_back(static_cast<int64_t>(out.nodes.size()));
    for (int64_t h : g.heads)
      slots.push_back({h, id});
  }
  std::sort(slots.begin(), slots.end());
  std::sort(out.skippedHeads.begin(), out.skippedHeads.end());
  for (auto [h, g] : slots) {
    out.computedHead.push_back(h);
    out.headGroup.push_back(g);
  }
  // Keep every array non-empty so that data() is never null.
  if (out.data.empty())
    out.data.push_back(0);
  return true;
}
