//===- Permute.cpp - token layouts for head groups, where they pay --------===//
//
// --attn-permute: a head group whose pattern repeats with a period P (the
// diagonals of multi_diagonal, the lines of grid, strided shards, periodic
// stripes) touches, in the original token order, many tiles sparsely: the
// diagonals a frame apart cross every key block of a frame. Sorting tokens by
// t mod P (a period transpose) turns them into a contiguous band. The pass
// counts, at a representative length, the tiles each order visits and how
// many of them are full, weighs them with the target's tile times plus the
// gather the permutation costs, and sets the group's layout to the best.
//
//===----------------------------------------------------------------------===//

#include "tessera/Cost/CostModel.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Layout.h"
#include "tessera/Transforms/Passes.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/ScopedPrinter.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

namespace tessera {
#define GEN_PASS_DEF_ATTNPERMUTE
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

/// Counting visits seq-len^2 pairs per group with a period; keep it bounded
/// (the same bound as --attn-report's densities).
constexpr int64_t kMaxPairs = int64_t(1) << 28;
/// Tile counters (4 bytes each) over all orders of a group: 64 MiB.
constexpr int64_t kMaxCounters = int64_t(1) << 24;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Appends the periods the leaves of `pattern` repeat with.
void collectPeriods(PatternAttrInterface pattern,
                    SmallVectorImpl<int64_t> &out) {
  llvm::TypeSwitch<Attribute>(pattern)
      .Case([&](MultiDiagonalAttr m) {
        if (m.getStride() > 0) {
          out.push_back(m.getStride());
          return;
        }
        // Listed diagonals a frame apart repeat with the gcd of the offsets.
        int64_t g = 0;
        for (int64_t o : m.getOffsets())
          g = std::gcd(g, std::abs(o));
        out.push_back(g);
      })
      .Case([&](GridAttr g) { out.push_back(g.getStride()); })
      .Case([&](StridedShardsAttr s) {
        // A shard recurs every shards * block keys (unless that overflows
        // any sequence the runtime takes).
        if (s.getBlock() <= kMaxExtent / s.getShards())
          out.push_back(s.getShards() * s.getBlock());
      })
      .Case<VerticalStripeAttr, HorizontalStripeAttr>([&](auto s) {
        out.push_back(s.getPeriod()); // 0 for the ranges form: dropped
      })
      .Case<UnionAttr, IntersectAttr>([&](auto set) {
        for (PatternAttrInterface p : set.getPatterns())
          collectPeriods(p, out);
      })
      .Case([&](DifferenceAttr d) {
        collectPeriods(d.getLhs(), out);
        collectPeriods(d.getRhs(), out);
      })
      .Default([](Attribute) {});
}

/// The periods worth a transpose at length n: at least two tokens a residue
/// (a larger period is the identity or nearly), each once, ascending.
SmallVector<int64_t> candidatePeriods(PatternAttrInterface pattern,
                                      int64_t n) {
  SmallVector<int64_t> periods;
  collectPeriods(pattern, periods);
  llvm::erase_if(periods, [&](int64_t p) { return p < 2 || p > n / 2; });
  llvm::sort(periods);
  periods.erase(llvm::unique(periods), periods.end());
  return periods;
}

/// Appends the segment boundaries `pattern` declares: the ends of the
/// listed ranges of its stripes (a prompt's [0, 256) gives 256), where a
/// segment grouping would keep the tokens before them in place; and the
/// ranges themselves to `ranges` ([begin, end) pairs).
void collectPrefixes(PatternAttrInterface pattern,
                     SmallVectorImpl<int64_t> &out, layout::Ranges &ranges) {
  auto add = [&](ArrayRef<int64_t> r) {
    for (size_t i = 1; i < r.size(); i += 2) {
      out.push_back(r[i]);
      ranges.push_back({r[i - 1], r[i]});
    }
  };
  llvm::TypeSwitch<Attribute>(pattern)
      .Case<VerticalStripeAttr, HorizontalStripeAttr>(
          [&](auto s) { add(s.getRanges()); })
      .Case<UnionAttr, IntersectAttr>([&](auto set) {
        for (PatternAttrInterface p : set.getPatterns())
          collectPrefixes(p, out, ranges);
      })
      .Case([&](DifferenceAttr d) {
        collectPrefixes(d.getLhs(), out, ranges);
        collectPrefixes(d.getRhs(), out, ranges);
      })
      .Default([](Attribute) {});
}

static_assert(layout::kMaxKeptRanges == kMaxKeptRanges,
              "the runtime and the dialect bound kept ranges alike");

/// The layouts worth counting at length n: each candidate period without
/// prefix, with each declared segment boundary that leaves at least two
/// periods after it, and (interleaved modalities, MMInference's grouping)
/// with every declared stripe range kept together, merged, when they are
/// more than one prompt [0, S) and leave at least two periods of other
/// tokens.
SmallVector<layout::PeriodTranspose>
candidateLayouts(PatternAttrInterface pattern, int64_t n) {
  SmallVector<int64_t> prefixes;
  layout::Ranges declared;
  collectPrefixes(pattern, prefixes, declared);
  llvm::sort(prefixes);
  prefixes.erase(llvm::unique(prefixes), prefixes.end());
  layout::Ranges merged = layout::detail::normalized(std::move(declared));
  std::vector<int64_t> kept;
  for (auto [lo, hi] : merged)
    kept.insert(kept.end(), {lo, hi});
  bool interleaved = !merged.empty() &&
                     int64_t(merged.size()) <= layout::kMaxKeptRanges &&
                     !(merged.size() == 1 && merged.front().first == 0);
  SmallVector<layout::PeriodTranspose> out;
  for (int64_t p : candidatePeriods(pattern, n)) {
    out.push_back({p, 0});
    for (int64_t s : prefixes)
      if (s > 0 && n - s >= 2 * p)
        out.push_back({p, s});
    layout::PeriodTranspose grouped{p, 0, kept};
    if (interleaved && n - grouped.keptCount(n) >= 2 * p)
      out.push_back(std::move(grouped));
  }
  return out;
}

std::string layoutName(const layout::PeriodTranspose &l) {
  if (l.interleaved())
    return fmt::format("period_transpose<{}, kept = {} ranges>", l.period,
                       l.kept.size() / 2);
  return l.prefix == 0 ? fmt::format("period_transpose<{}>", l.period)
                       : fmt::format("period_transpose<{}, prefix = {}>",
                                     l.period, l.prefix);
}

/// One head's tiles in one token order.
struct TileCounts {
  int64_t visited = 0, full = 0, partial = 0;
};

/// The tiles of `pattern` (for `head`) at Nq = Nk = n in tiles of bq x bk,
/// in the original order (element 0) and in each of `layouts` (elements
/// 1...). A transpose with a closed form (layout::closedFormReason) is
/// counted from its closed-form runs (layout::PermutedRuns, what the
/// executor walks); the original order and the other transposes pair by
/// pair: every pair's predicate on the original positions counted into the
/// tile its query's and its key's slots fall in, a tile FULL when all its
/// pairs are allowed (O(n^2) predicate calls, however sparse the pattern).
std::vector<TileCounts> countTiles(const semantics::Pattern &pattern,
                                   int64_t head, int64_t numHeads, int64_t n,
                                   int64_t bq, int64_t bk,
                                   ArrayRef<layout::PeriodTranspose> orders) {
  size_t layouts = orders.size() + 1;
  std::vector<TileCounts> out(layouts);
  std::vector<bool> closed(layouts, false);
  schedule::Program program;
  std::string error;
  if (schedule::lowerPattern(pattern, program, error))
    for (size_t l = 1; l < layouts; ++l) {
      const kernel::Node *nodes = program.nodes.data();
      const kernel::i64 *data = program.data.data();
      int64_t count = int64_t(program.nodes.size());
      if (!layout::closedFormReason(nodes, count, data, orders[l - 1], head, n,
                                    n)
               .empty())
        continue;
      layout::PermutedRuns runs{nodes, count, orders[l - 1], n, n, bq, bk,
                                head};
      runs.data = data; // the prefix's quadrants read the stripes' ranges
      runs.countTiles(out[l].visited, out[l].full);
      out[l].partial = out[l].visited - out[l].full;
      closed[l] = true;
    }
  int64_t rowBlocks = ceilDiv(n, bq), keyBlocks = ceilDiv(n, bk);
  // The query and key block of every token in every order counted here.
  std::vector<size_t> counted;
  for (size_t l = 0; l < layouts; ++l)
    if (!closed[l])
      counted.push_back(l);
  std::vector<std::vector<int32_t>> rowBlock(layouts), keyBlock(layouts);
  for (size_t l : counted) {
    rowBlock[l].resize(n);
    keyBlock[l].resize(n);
    for (int64_t t = 0; t < n; ++t) {
      int64_t s = l == 0 ? t : orders[l - 1].slot(t, n);
      rowBlock[l][t] = int32_t(s / bq);
      keyBlock[l][t] = int32_t(s / bk);
    }
  }
  // Allowed pairs per tile; at most 1024 x 1024 a tile.
  std::vector<std::vector<int32_t>> allowed(layouts);
  for (size_t l : counted)
    allowed[l].assign(rowBlocks * keyBlocks, 0);
  for (int64_t q = 0; q < n; ++q)
    for (int64_t k = 0; k < n; ++k)
      if (semantics::allowed(pattern, q, k, head, n, n, numHeads))
        for (size_t l : counted)
          ++allowed[l][rowBlock[l][q] * keyBlocks + keyBlock[l][k]];
  for (size_t l : counted)
    for (int64_t i = 0; i < rowBlocks; ++i)
      for (int64_t j = 0; j < keyBlocks; ++j) {
        int64_t c = allowed[l][i * keyBlocks + j];
        int64_t pairs = std::min(bq, n - i * bq) * std::min(bk, n - j * bk);
        if (c == 0)
          continue;
        ++out[l].visited;
        ++(c == pairs ? out[l].full : out[l].partial);
      }
  return out;
}

/// The time one head's tiles and one permutation's gather take on a slot of
/// the target.
struct Weights {
  double full = 0, partial = 0, gather = 0;

  double work(const TileCounts &c) const {
    return c.full * full + c.partial * partial;
  }
};

/// Tile times scaled as the cost model does (head_dim: a fixed share plus
/// the rest in proportion), and to the schedule's tile area. The gather
/// moves Q, K and V in and O out, each element read and written once: eight
/// element moves per token and head_dim element, four times what a work
/// item's row block moves (its Q in and O out, `row_block_s`) per block_q
/// rows of the target. An upper bound: kernels that load through the index
/// map instead pay nothing of it.
Weights weightsFor(const cost::Target &t, int64_t headDim, int64_t bq,
                   int64_t bk, int64_t n) {
  double scale = t.tileFixedShare + (1 - t.tileFixedShare) * double(headDim) /
                                        double(t.headDim);
  double area = double(bq * bk) / double(t.blockQ * t.blockK);
  Weights w;
  w.full = t.fullTileS * scale * area;
  w.partial = t.partialTileS * scale * area;
  w.gather = 4.0 * double(ceilDiv(n, t.blockQ)) * t.rowBlockS * scale;
  return w;
}

/// "0-3,6" for a list of head indices (ascending, as groups hold them).
std::string formatHeads(ArrayRef<int64_t> heads) {
  std::string out;
  for (size_t i = 0; i < heads.size();) {
    size_t j = i;
    while (j + 1 < heads.size() && heads[j + 1] == heads[j] + 1)
      ++j;
    out += (out.empty() ? "" : ",") +
           (j == i ? fmt::format("{}", heads[i])
                   : fmt::format("{}-{}", heads[i], heads[j]));
    i = j + 1;
  }
  return out;
}

struct AttnPermutePass : tessera::impl::AttnPermuteBase<AttnPermutePass> {
  using AttnPermuteBase::AttnPermuteBase;

  cost::Target costTarget;

  void runOnOperation() override {
    if (failed(checkOptions()))
      return signalPassFailure();
    // Layouts belong to launch groups, which only schedules have.
    getOperation().walk([](LayerOp layer) {
      layer.emitWarning("attn-permute: layer ")
          << layer.getIndex()
          << " is not a block schedule (run --attn-schedule first); it keeps "
             "the original order";
    });
    for (auto model : getOperation().getOps<ModelOp>())
      for (auto schedule : model.getBody().front().getOps<ScheduleOp>()) {
        if (report)
          printLayerHeader(model, schedule);
        for (auto group : schedule.getBody().front().getOps<GroupOp>())
          if (failed(decide(schedule, group)))
            return signalPassFailure();
      }
  }

  LogicalResult checkOptions() {
    Location loc = getOperation().getLoc();
    if (seqLen < 2 || seqLen > kMaxPairs / seqLen)
      return mlir::emitError(loc)
             << "attn-permute: seq-len must be at least 2 with seq-len^2 <= "
             << kMaxPairs << " (tiles are counted pair by pair), got "
             << int64_t(seqLen);
    if (!(minGain >= 0 && minGain < 1))
      return mlir::emitError(loc)
             << "attn-permute: min-gain must be in [0, 1), got "
             << fmt::format("{}", double(minGain));
    std::string error;
    if (!cost::loadTarget(target, costTarget, error))
      return mlir::emitError(loc) << "attn-permute: " << error;
    return success();
  }

  void printLayerHeader(ModelOp model, ScheduleOp schedule) {
    int64_t bq = schedule.getBlockQ(), bk = schedule.getBlockK();
    llvm::outs() << fmt::format(
        "attn-permute: @{} layer {} at Nq = Nk = {}, tiles {} x {} ({} a "
        "head), target {}\n",
        model.getSymName().str(), schedule.getIndex(), int64_t(seqLen), bq,
        bk, ceilDiv(seqLen, bq) * ceilDiv(seqLen, bk), costTarget.name);
  }

  /// Sets or clears the layout of one group.
  LogicalResult decide(ScheduleOp schedule, GroupOp group) {
    group.removeLayoutAttr();
    PatternAttrInterface pattern = group.getPattern();
    std::string title = fmt::format("  group {} heads [{}] {}", group.getId(),
                                    formatHeads(group.getHeads()),
                                    llvm::to_string(pattern));
    if (!pattern.isStatic()) {
      if (report)
        llvm::outs() << title << ": dynamic, original order\n";
      return success();
    }
    int64_t n = seqLen;
    SmallVector<layout::PeriodTranspose> periods =
        candidateLayouts(pattern, n);
    if (periods.empty()) {
      if (report)
        llvm::outs() << title << ": no period, original order\n";
      return success();
    }
    int64_t bq = schedule.getBlockQ(), bk = schedule.getBlockK();
    // One pair counter per tile and order.
    int64_t tiles = ceilDiv(n, bq) * ceilDiv(n, bk);
    if (tiles > kMaxCounters / int64_t(periods.size() + 1))
      return group.emitError("attn-permute: ")
             << tiles << " tiles of " << bq << " x " << bk << " at seq-len "
             << n << " in " << periods.size() + 1
             << " orders are too many to count (at most " << kMaxCounters
             << " tile counters); use a shorter seq-len";
    // The heads of a group have identical masks: its first one stands for
    // all of them.
    std::vector<TileCounts> counts =
        countTiles(semantics::fromAttr(pattern), group.getHeads().front(),
                   schedule.getNumHeads(), n, bq, bk, periods);
    Weights w = weightsFor(costTarget, schedule.getHeadDim(), bq, bk, n);
    double original = w.work(counts[0]);
    size_t best = 0;
    double bestWork = original;
    for (size_t l = 1; l < counts.size(); ++l)
      if (double work = w.work(counts[l]) + w.gather; work < bestWork) {
        best = l;
        bestWork = work;
      }
    bool pays = best != 0 && bestWork < (1 - minGain) * original;
    if (pays)
      group.setLayoutAttr(PeriodTransposeAttr::get(
          &getContext(), periods[best - 1].period, periods[best - 1].prefix,
          periods[best - 1].kept));
    if (report)
      printGroup(title, counts, periods, w, pays ? best : 0, bq, bk);
    return success();
  }

  void printGroup(const std::string &title, ArrayRef<TileCounts> counts,
                  ArrayRef<layout::PeriodTranspose> periods,
                  const Weights &w, size_t chosen, int64_t bq, int64_t bk) {
    llvm::raw_ostream &os = llvm::outs();
    double tiles = double(ceilDiv(seqLen, bq) * ceilDiv(seqLen, bk));
    double original = w.work(counts[0]);
    os << title << ":\n";
    for (size_t l = 0; l < counts.size(); ++l) {
      const TileCounts &c = counts[l];
      std::string name =
          l == 0 ? "original order" : layoutName(periods[l - 1]);
      double work = w.work(c) + (l == 0 ? 0 : w.gather);
      os << fmt::format(
          "    {:<26} visited {:>8} ({:.2f}%)  full {:>8}  partial {:>8}  "
          "work {:.1f}%{}{}\n",
          name, c.visited, 100 * c.visited / tiles, c.full, c.partial,
          original > 0 ? 100 * work / original : 0.0,
          l == 0 ? "" : fmt::format(" (gather {:.1f}%)",
                                    original > 0 ? 100 * w.gather / original
                                                 : 0.0),
          l == chosen ? "  <- chosen" : "");
    }
  }
};

} // namespace
