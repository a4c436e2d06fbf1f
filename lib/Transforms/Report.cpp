//===- Report.cpp - print each head group's pattern and density -----------===//

#include "tessera/Cost/CostModel.h"
#include "tessera/Transforms/DynamicCost.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Support/Progress.h"
#include "tessera/Transforms/Passes.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/ScopedPrinter.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

namespace tessera {
#define GEN_PASS_DEF_ATTNREPORT
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

/// Exact counting visits Nq * Nk pairs per distinct pattern; keep it bounded.
constexpr int64_t kMaxPairs = int64_t(1) << 28;

/// "0-3, 6, 8-9" for a list of head indices.
std::string formatHeads(ArrayRef<int64_t> heads) {
  SmallVector<int64_t> sorted(heads);
  llvm::sort(sorted);
  std::string out;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1)
      ++j;
    if (!out.empty())
      out += ",";
    out += j == i ? fmt::format("{}", sorted[i])
                  : fmt::format("{}-{}", sorted[i], sorted[j]);
    i = j + 1;
  }
  return out;
}

struct AttnReportPass : tessera::impl::AttnReportBase<AttnReportPass> {
  using AttnReportBase::AttnReportBase;

  void runOnOperation() override {
    int64_t nq = qLen, nk = kLen == 0 ? qLen : kLen;
    cost::Target costTarget;
    if (!target.empty()) {
      std::string error;
      if (!cost::loadTarget(target, costTarget, error)) {
        mlir::emitError(getOperation().getLoc()) << "attn-report: " << error;
        return signalPassFailure();
      }
      if (batch < 1 || batch > (1 << 20)) {
        mlir::emitError(getOperation().getLoc())
            << "attn-report: batch must be in [1, 1048576], got "
            << int64_t(batch);
        return signalPassFailure();
      }
      if (nq < 1 || nk < 1 || nq > kMaxExtent || nk > kMaxExtent) {
        mlir::emitError(getOperation().getLoc())
            << "attn-report: q-len and k-len must be in [1, " << kMaxExtent
            << "], got q-len = " << nq << ", k-len = " << nk;
        return signalPassFailure();
      }
      // Densities only where they can be counted; the prediction always.
      if (nq <= kMaxPairs / nk)
        printDensities(nq, nk);
      if (failed(printPrediction(costTarget, nq, nk)))
        return signalPassFailure();
      markAllAnalysesPreserved();
      return;
    }
    if (nq < 1 || nk < 1 || nq > kMaxExtent || nk > kMaxExtent ||
        nq > kMaxPairs / nk) {
      mlir::emitError(getOperation().getLoc())
          << "attn-report: q-len and k-len must be positive with q-len * "
             "k-len <= "
          << kMaxPairs << ", got q-len = " << nq << ", k-len = " << nk;
      return signalPassFailure();
    }
    printDensities(nq, nk);
    markAllAnalysesPreserved();
  }

  /// The cost model's prediction per layer and head group.
  LogicalResult printPrediction(const cost::Target &t, int64_t nq, int64_t nk) {
    llvm::raw_ostream &os = llvm::outs();
    int64_t numLayers = 0, done = 0;
    getOperation().walk([&](LayerOp) { ++numLayers; });
    Progress progress("attn-report", numLayers);
    for (auto model : getOperation().getOps<ModelOp>()) {
      os << fmt::format("model @{}: predicted time on target {} ({}) at "
                        "Nq = {}, Nk = {}, batch {}\n",
                        model.getSymName().str(), t.name, t.source, nq, nk,
                        int64_t(batch));
      os << fmt::format("{:>5}  {:>10}  {:>10}  {:>12}  {:>5}  {}\n", "layer",
                        "full", "partial", "work (ms)", "heads",
                        "pattern [heads]");
      double sparseSum = 0, denseSum = 0;
      for (auto layer : model.getBody().front().getOps<LayerOp>()) {
        progress.step(done++, fmt::format("layer {}", layer.getIndex()));
        std::vector<schedule::HeadGroup> groups;
        std::vector<cost::DynamicHeadGroup> dynamicGroups;
        std::vector<HeadsOp> ops, dynamicOps;
        for (auto heads : layer.getBody().front().getOps<HeadsOp>()) {
          std::vector<int64_t> list(heads.getHeads().begin(),
                                    heads.getHeads().end());
          if (!heads.getPattern().isStatic()) {
            cost::DynamicHeadGroup g;
            std::string why;
            if (!dynamicCostGroup(heads.getPattern(), g, why))
              return mlir::emitError(heads.getLoc())
                     << "attn-report: head " << list.front() << ": " << why;
            g.heads = std::move(list);
            dynamicGroups.push_back(std::move(g));
            dynamicOps.push_back(heads);
            continue;
          }
          groups.push_back({semantics::fromAttr(heads.getPattern()),
                            std::move(list)});
          ops.push_back(heads);
        }
        ops.insert(ops.end(), dynamicOps.begin(), dynamicOps.end());
        cost::LayerCost sparse, dense;
        std::string error;
        if (!cost::predictLayer(t, groups, dynamicGroups, layer.getNumHeads(),
                                nq, nk, batch, layer.getHeadDim(), sparse,
                                error) ||
            !cost::predictDense(t, layer.getNumHeads(), nq, nk, batch,
                                layer.getHeadDim(), dense, error))
          return mlir::emitError(layer.getLoc()) << "attn-report: " << error;
        for (size_t i = 0; i < ops.size(); ++i) {
          const cost::GroupCost &g = sparse.groups[i];
          // Estimated tiles ("~"): dynamic groups' from their budgets (and
          // their index kernels' work), static groups' past the run walks'
          // budget from samples.
          bool dynamic = i >= groups.size();
          std::string mark = g.estimated ? "~" : "";
          os << fmt::format(
              "{:>5}  {:>10}  {:>10}  {:>12.3f}  {:>5}  {} [{}]{}\n",
              layer.getIndex(), mark + std::to_string(g.fullTiles),
              mark + std::to_string(g.partialTiles),
              1e3 * (g.workS + g.indexS), g.heads,
              llvm::to_string(ops[i].getPattern()),
              formatHeads(ops[i].getHeads()),
              dynamic ? fmt::format("  (index {:.3f} ms)", 1e3 * g.indexS)
                          : std::string());
        }
        os << fmt::format("layer {}: predicted {:.3f} ms, dense {:.3f} ms "
                          "({:.2f}x)\n",
                          layer.getIndex(), 1e3 * sparse.seconds,
                          1e3 * dense.seconds, dense.seconds / sparse.seconds);
        sparseSum += sparse.seconds;
        denseSum += dense.seconds;
      }
      progress.finish();
      if (denseSum > 0)
        os << fmt::format("model: predicted {:.3f} ms, dense {:.3f} ms "
                          "({:.2f}x)\n\n",
                          1e3 * sparseSum, 1e3 * denseSum,
                          denseSum / sparseSum);
    }
    return success();
  }

  void printDensities(int64_t nq, int64_t nk) {
    llvm::raw_ostream &os = llvm::outs();
    // Allowed-pair counts of head-independent patterns, by attribute.
    llvm::DenseMap<Attribute, int64_t> cache;
    double total = static_cast<double>(nq) * static_cast<double>(nk);
    // Counting takes seconds per pattern at long lengths: show progress.
    int64_t numGroups = 0, groupsDone = 0;
    getOperation().walk([&](HeadsOp) { ++numGroups; });
    Progress progress("attn-report", numGroups);
    for (auto model : getOperation().getOps<ModelOp>()) {
      os << fmt::format("model @{}: density = allowed (query, key) pairs / "
                        "(Nq * Nk) at Nq = {}, Nk = {}\n",
                        model.getSymName().str(), nq, nk);
      os << fmt::format("{:>5}  {:>13}  {:>5}  {}\n", "layer", "density",
                        "heads", "pattern [heads]");
      double sum = 0;
      int64_t headCount = 0;
      for (auto layer : model.getBody().front().getOps<LayerOp>()) {
        for (auto group : layer.getBody().front().getOps<HeadsOp>()) {
          progress.step(groupsDone++,
                        fmt::format("layer {}", layer.getIndex()));
          PatternAttrInterface pattern = group.getPattern();
          if (!pattern.isStatic()) {
            // Its keys depend on the input: no density before it runs.
            os << fmt::format("{:>5}  {:>13}  {:>5}  {} [{}]\n",
                              layer.getIndex(), "dynamic",
                              group.getHeads().size(),
                              llvm::to_string(pattern),
                              formatHeads(group.getHeads()));
            continue;
          }
          semantics::Pattern meaning = semantics::fromAttr(pattern);
          double lo = 1, hi = 0;
          for (int64_t h : group.getHeads()) {
            int64_t n;
            if (!pattern.isHeadDependent()) {
              auto [it, inserted] = cache.try_emplace(pattern, 0);
              if (inserted)
                it->second = semantics::countAllowed(meaning, h, nq, nk,
                                                     layer.getNumHeads());
              n = it->second;
            } else {
              n = semantics::countAllowed(meaning, h, nq, nk,
                                          layer.getNumHeads());
            }
            double density = n / total;
            lo = std::min(lo, density);
            hi = std::max(hi, density);
            sum += density;
            ++headCount;
          }
          std::string density =
              lo == hi ? fmt::format("{:.2f}%", 100 * lo)
                       : fmt::format("{:.2f}-{:.2f}%", 100 * lo, 100 * hi);
          os << fmt::format("{:>5}  {:>13}  {:>5}  {} [{}]\n", layer.getIndex(),
                            density, group.getHeads().size(),
                            llvm::to_string(pattern),
                            formatHeads(group.getHeads()));
        }
      }
      progress.finish();
      if (headCount > 0)
        os << fmt::format("mean density over {} heads: {:.2f}% (dense "
                          "attention computes 100%)\n\n",
                          headCount, 100 * sum / headCount);
    }
    markAllAnalysesPreserved();
  }
};

} // namespace
