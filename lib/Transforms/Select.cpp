//===- Select.cpp - pick each head's pattern with the cost model ----------===//
//
// --attn-select: a calibration file gives, per layer, candidate patterns
// with each head's measured recall and output error; a target gives the
// cost model. Each head gets its cheapest feasible candidate, groups are
// merged where that does not cost time, and layers where sparse does not
// pay keep the calibration's reference pattern. docs/cost-model.md.
//
//===----------------------------------------------------------------------===//

#include "tessera/Cost/CostModel.h"
#include "tessera/Transforms/DynamicCost.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Support/JsonFile.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <queue>
#include <set>

namespace tessera {
#define GEN_PASS_DEF_ATTNSELECT
#include "tessera/Transforms/Passes.h.inc"
} // namespace tessera

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;

namespace {

/// The most candidates a calibrated layer may list.
constexpr size_t kMaxCandidates = 256;

struct Candidate {
  std::string text;
  PatternAttrInterface pattern;
  std::vector<double> recall, error; ///< per head
  /// Per head, ||O_C,h - O_R,h||^2 / sum_g ||O_R,g||^2 (the head's share of
  /// the layer's squared error); empty if the file does not give it.
  std::vector<double> errorShare;
};

struct CalibratedLayer {
  int64_t index = 0, numHeads = 0;
  std::vector<double> contribution; ///< per head; empty if not measured
  std::vector<Candidate> candidates;
};

struct Calibration {
  int64_t seqLen = 0;
  std::string reference; ///< the pattern recall is measured against
  PatternAttrInterface referencePattern;
  std::map<int64_t, CalibratedLayer> layers;
};

/// Reads a JSON array of numbers of length n into `out`; "" or a message.
std::string readNumbers(const llvm::json::Object &o, llvm::StringRef key,
                        int64_t n, bool unit, std::vector<double> &out) {
  const llvm::json::Array *a = o.getArray(key);
  if (!a)
    return "lacks the array '" + key.str() + "'";
  if (int64_t(a->size()) != n)
    return "'" + key.str() + "' has " + std::to_string(a->size()) +
           " values for " + std::to_string(n) + " heads";
  out.clear();
  for (const llvm::json::Value &v : *a) {
    std::optional<double> x = v.getAsNumber();
    // Measured shares may pass 1 by rounding; more is an inconsistent file.
    if (!x || !std::isfinite(*x) || *x < 0 || (unit && *x > 1.0 + 1e-3))
      return "'" + key.str() + "' holds a value that is not a number in " +
             (unit ? "[0, 1]" : "[0, inf)");
    out.push_back(*x);
  }
  return "";
}

LogicalResult loadCalibration(MLIRContext *ctx, Operation *where,
                              const std::string &path, Calibration &out) {
  auto fail = [&](const llvm::Twine &message) {
    return mlir::emitError(where->getLoc())
           << "attn-select: calibration file " << path << ": " << message;
  };
  // A regular file of at most 64 MiB, nested at most 32 deep.
  std::string readError;
  std::optional<llvm::json::Value> json =
      tessera::readJsonFile(path, uint64_t(64) << 20, readError);
  if (!json)
    return fail(readError);
  const llvm::json::Object *root = json->getAsObject();
  if (!root ||
      root->getString("format") != llvm::StringRef("tessera-calibration"))
    return fail("lacks \"format\": \"tessera-calibration\"");
  std::optional<int64_t> seq = root->getInteger("seq_len");
  if (!seq || *seq < 1 || *seq > (int64_t(1) << 40))
    return fail("needs a 'seq_len' in [1, 2^40]");
  out.seqLen = *seq;
  std::optional<llvm::StringRef> ref = root->getString("reference");
  if (!ref)
    return fail("needs the 'reference' pattern recall is measured against");
  out.reference = ref->str();
  // Candidates may be dynamic (priced from their budgets); the reference
  // recall is measured against is static.
  auto parsePattern = [&](const std::string &text, PatternAttrInterface &p,
                          const llvm::Twine &what,
                          bool dynamicOk) -> LogicalResult {
    size_t read = 0;
    Attribute attr = parseAttribute(text, ctx, Type(), &read);
    p = llvm::dyn_cast_or_null<PatternAttrInterface>(attr);
    if (!p || read != text.size())
      return fail(what + " '" + text + "' is not an attn pattern");
    if (!p.isStatic()) {
      if (!dynamicOk)
        return fail(what + " '" + text + "' is not a static pattern");
      cost::DynamicHeadGroup g;
      std::string why;
      if (!dynamicCostGroup(p, g, why))
        return fail(what + " '" + text + "': " + why);
    }
    return success();
  };
  if (failed(parsePattern(out.reference, out.referencePattern, "reference",
                          false)))
    return failure();
  const llvm::json::Array *layers = root->getArray("layers");
  if (!layers || layers->empty())
    return fail("holds no 'layers'");
  for (const llvm::json::Value &lv : *layers) {
    const llvm::json::Object *lo = lv.getAsObject();
    if (!lo)
      return fail("a layer is not an object");
    CalibratedLayer layer;
    std::optional<int64_t> index = lo->getInteger("index");
    std::optional<int64_t> heads = lo->getInteger("num_heads");
    if (!index || !heads || *heads < 1 || *heads > 4096)
      return fail("a layer needs 'index' and 'num_heads' in [1, 4096]");
    layer.index = *index;
    layer.numHeads = *heads;
    std::string where = "layer " + std::to_string(*index) + ": ";
    if (lo->get("contribution")) {
      std::string problem =
          readNumbers(*lo, "contribution", *heads, true, layer.contribution);
      if (!problem.empty())
        return fail(where + problem);
    }
    const llvm::json::Array *cands = lo->getArray("candidates");
    if (!cands || cands->empty())
      return fail(where + "holds no 'candidates'");
    // Selection prices every candidate for every head and tries merges of
    // every pair of groups: keep the search bounded.
    if (cands->size() > kMaxCandidates)
      return fail(where + "holds " + std::to_string(cands->size()) +
                  " candidates, more than " + std::to_string(kMaxCandidates));
    std::set<std::string> seen;
    for (const llvm::json::Value &cv : *cands) {
      const llvm::json::Object *co = cv.getAsObject();
      std::optional<llvm::StringRef> text =
          co ? co->getString("pattern") : std::nullopt;
      if (!text)
        return fail(where + "a candidate lacks its 'pattern'");
      Candidate c;
      c.text = text->str();
      if (!seen.insert(c.text).second)
        return fail(where + "candidate '" + c.text + "' appears twice");
      if (failed(parsePattern(c.text, c.pattern, where + "candidate", true)))
        return failure();
      std::string problem = readNumbers(*co, "recall", *heads, true, c.recall);
      if (problem.empty())
        problem = readNumbers(*co, "error", *heads, false, c.error);
      if (problem.empty() && co->get("error_share"))
        problem = readNumbers(*co, "error_share", *heads, false, c.errorShare);
      if (!problem.empty())
        return fail(where + "candidate '" + c.text + "' " + problem);
      layer.candidates.push_back(std::move(c));
    }
    if (!out.layers.emplace(*index, std::move(layer)).second)
      return fail("layer " + std::to_string(*index) + " appears twice");
  }
  return success();
}

struct AttnSelectPass : tessera::impl::AttnSelectBase<AttnSelectPass> {
  using AttnSelectBase::AttnSelectBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (target.empty() || calibration.empty()) {
      mlir::emitError(module.getLoc())
          << "attn-select: needs target=... (a100, h100, h200 "
             "or a target file) and calibration=FILE";
      return signalPassFailure();
    }
    if (!(minRecall >= 0 && minRecall <= 1) || !(maxError >= 0) ||
        !(maxLayerError >= 0) || !(skipBelow >= 0 && skipBelow <= 1) ||
        !(minGain >= 0 && minGain < 1) || batch < 1 || batch > (1 << 20) ||
        seqLen < 0 || seqLen > (int64_t(1) << 40)) {
      mlir::emitError(module.getLoc())
          << "attn-select: min-recall and skip-below must be in [0, 1], "
             "min-gain in [0, 1), max-error and max-layer-error >= 0, "
             "batch in [1, 2^20], "
             "seq-len in [0, 2^40]";
      return signalPassFailure();
    }
    if (fallback != "reference" && fallback != "error") {
      mlir::emitError(module.getLoc())
          << "attn-select: fallback must be 'reference' or "
             "'error', got '"
          << fallback << "'";
      return signalPassFailure();
    }
    std::string error;
    if (!cost::loadTarget(target, costTarget, error)) {
      mlir::emitError(module.getLoc()) << "attn-select: " << error;
      return signalPassFailure();
    }
    if (failed(loadCalibration(&getContext(), module, calibration, calib)))
      return signalPassFailure();
    length = seqLen > 0 ? int64_t(seqLen) : calib.seqLen;

    bool ok = true;
    module.walk([&](LayerOp layer) {
      if (ok && failed(selectLayer(layer)))
        ok = false;
    });
    if (!ok)
      signalPassFailure();
  }

  using Assignment = std::vector<int64_t>; ///< candidate per head; -1 ref,
                                           ///< -2 skip

  /// The head groups of an assignment, ordered by their first head.
  std::vector<std::pair<PatternAttrInterface, std::vector<int64_t>>>
  groupsOf(const CalibratedLayer &cl, const Assignment &a) {
    std::vector<std::pair<PatternAttrInterface, std::vector<int64_t>>> out;
    std::map<int64_t, size_t> at;
    for (int64_t h = 0; h < int64_t(a.size()); ++h) {
      auto [it, inserted] = at.try_emplace(a[h], out.size());
      if (inserted) {
        PatternAttrInterface p = a[h] >= 0 ? cl.candidates[a[h]].pattern
                                 : a[h] == -1
                                     ? calib.referencePattern
                                     : llvm::cast<PatternAttrInterface>(
                                           SkipAttr::get(&getContext()));
        out.push_back({p, {}});
      }
      out[it->second].second.push_back(h);
    }
    return out;
  }

  FailureOr<cost::LayerCost> predict(LayerOp layer, const CalibratedLayer &cl,
                                     const Assignment &a) {
    std::vector<schedule::HeadGroup> groups;
    std::vector<cost::DynamicHeadGroup> dynamics;
    std::string error;
    if (!costGroups(groupsOf(cl, a), groups, dynamics, error))
      return mlir::emitError(layer.getLoc()) << "attn-select: " << error;
    cost::LayerCost c;
    if (!cost::predictLayer(costTarget, groups, dynamics, layer.getNumHeads(),
                            length, length, batch, layer.getHeadDim(), c,
                            error))
      return mlir::emitError(layer.getLoc()) << "attn-select: " << error;
    return c;
  }

  /// Whether a layer's error is predicted from shares of its squared error
  /// (the file gives contributions, or every candidate's error_share);
  /// otherwise only its largest head error bounds it.
  static bool haveShares(const CalibratedLayer &cl) {
    return !cl.contribution.empty() ||
           llvm::all_of(cl.candidates, [](const Candidate &c) {
             return !c.errorShare.empty();
           });
  }

  /// Head h's term of the layer error under choice c: its share of the
  /// layer's squared error (with shares) or its relative error (without).
  /// The reference adds nothing; a skipped head loses its whole output, its
  /// contribution (skips need contributions).
  static double headError(const CalibratedLayer &cl, bool shares, int64_t c,
                          int64_t h) {
    if (c == -1)
      return 0;
    if (c == -2)
      return cl.contribution[h];
    const Candidate &cand = cl.candidates[c];
    if (!shares)
      return cand.error[h];
    if (!cand.errorShare.empty())
      return cand.errorShare[h];
    return cl.contribution[h] * cand.error[h] * cand.error[h];
  }

  /// The predicted relative Frobenius error of the layer's output over all
  /// heads, sqrt(sum_h share_h); without shares, its bound max_h error_h.
  static double layerError(const CalibratedLayer &cl, bool shares,
                           const Assignment &a) {
    double sum = 0, worst = 0;
    for (int64_t h = 0; h < int64_t(a.size()); ++h) {
      double e = headError(cl, shares, a[h], h);
      sum += e;
      worst = std::max(worst, e);
    }
    return shares ? std::sqrt(sum) : worst;
  }

  LogicalResult selectLayer(LayerOp layer) {
    auto it = calib.layers.find(layer.getIndex());
    if (it == calib.layers.end()) {
      std::string have;
      for (auto &[index, l] : calib.layers)
        have += (have.empty() ? "" : ", ") + std::to_string(index);
      return mlir::emitError(layer.getLoc())
             << "attn-select: the calibration file has no layer "
             << layer.getIndex() << " (it has " << have << ")";
    }
    const CalibratedLayer &cl = it->second;
    int64_t H = layer.getNumHeads();
    if (cl.numHeads != H)
      return mlir::emitError(layer.getLoc())
             << "attn-select: the calibration of layer " << layer.getIndex()
             << " has " << cl.numHeads << " heads, the layer " << H;

    // Each head's cheapest feasible candidate, by its own work.
    Assignment a(size_t(H), -1);
    std::vector<int64_t> unserved, skipped;
    std::map<std::pair<int64_t, int64_t>, double> work; // (cand, head)
    auto headWork = [&](int64_t c, int64_t h) -> FailureOr<double> {
      auto key = std::make_pair(
          c, c >= 0 && !cl.candidates[c].pattern.isHeadDependent() ? int64_t(-1)
                                                                   : h);
      auto found = work.find(key);
      if (found != work.end())
        return found->second;
      Assignment one(size_t(H), -2);
      one[h] = c;
      FailureOr<cost::LayerCost> lc = predict(layer, cl, one);
      if (failed(lc))
        return failure();
      return work[key] = lc->workS;
    };
    for (int64_t h = 0; h < H; ++h) {
      if (skipBelow > 0 && !cl.contribution.empty() &&
          cl.contribution[h] < skipBelow) {
        a[h] = -2;
        skipped.push_back(h);
        continue;
      }
      double best = INFINITY;
      for (int64_t c = 0; c < int64_t(cl.candidates.size()); ++c) {
        const Candidate &cand = cl.candidates[c];
        if (cand.recall[h] < minRecall || cand.error[h] > maxError)
          continue;
        FailureOr<double> w = headWork(c, h);
        if (failed(w))
          return failure();
        if (*w < best) {
          best = *w;
          a[h] = c;
        }
      }
      if (a[h] == -1)
        unserved.push_back(h);
    }
    if (!unserved.empty()) {
      std::string list;
      for (int64_t h : unserved)
        list += (list.empty() ? "" : ", ") + std::to_string(h);
      if (fallback == "error")
        return mlir::emitError(layer.getLoc())
               << "attn-select: no candidate reaches recall " << fmt::format("{}", double(minRecall))
               << " (with error <= " << fmt::format("{}", double(maxError)) << ") for heads [" << list
               << "] of layer " << layer.getIndex();
      mlir::emitWarning(layer.getLoc())
          << "attn-select: no candidate reaches recall " << fmt::format("{}", double(minRecall))
          << " for heads [" << list << "]; they keep the reference "
          << calib.reference;
    }

    auto feasible = [&](int64_t c, int64_t h) {
      return c >= 0 && cl.candidates[c].recall[h] >= minRecall &&
             cl.candidates[c].error[h] <= maxError;
    };

    // The layer budget: per-head choices (skips included) may each pass
    // and still lose the layer's output together.
    bool shares = haveShares(cl);
    Assignment perHead = a;
    if (layerError(cl, shares, a) > maxLayerError &&
        failed(meetLayerBudget(cl, shares, a, feasible, headWork)))
      return failure();
    int64_t madeAccurate = 0;
    skipped.clear();
    for (int64_t h = 0; h < H; ++h) {
      madeAccurate += a[h] != perHead[h];
      if (a[h] == -2)
        skipped.push_back(h);
    }

    // Merge groups while the predicted layer time does not grow (and the
    // layer stays within its budget).
    FailureOr<cost::LayerCost> current = predict(layer, cl, a);
    if (failed(current))
      return failure();
    for (bool merged = true; merged;) {
      merged = false;
      std::set<int64_t> used;
      for (int64_t c : a)
        if (c >= 0)
          used.insert(c);
      Assignment bestA;
      double bestT = current->seconds;
      for (int64_t from : used)
        for (int64_t to : used) {
          if (from == to)
            continue;
          Assignment trial = a;
          bool fits = true;
          for (int64_t h = 0; h < H && fits; ++h)
            if (trial[h] == from) {
              fits = feasible(to, h);
              trial[h] = to;
            }
          if (!fits || layerError(cl, shares, trial) > maxLayerError)
            continue;
          FailureOr<cost::LayerCost> t = predict(layer, cl, trial);
          if (failed(t))
            return failure();
          if (t->seconds <= bestT) {
            bestT = t->seconds;
            bestA = trial;
          }
        }
      if (!bestA.empty()) {
        a = bestA;
        current = predict(layer, cl, a);
        if (failed(current))
          return failure();
        merged = true;
      }
    }

    // Keep the reference where sparse does not pay.
    Assignment reference(size_t(H), -1);
    for (int64_t h : skipped)
      reference[h] = -2;
    FailureOr<cost::LayerCost> ref = predict(layer, cl, reference);
    if (failed(ref))
      return failure();
    bool keep = current->seconds >= ref->seconds * (1.0 - minGain);
    if (keep)
      a = reference;

    // Rewrite the layer's head groups.
    Block &body = layer.getBody().front();
    for (HeadsOp op : llvm::make_early_inc_range(body.getOps<HeadsOp>()))
      op.erase();
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    int64_t numGroups = 0;
    for (auto &[p, heads] : groupsOf(cl, a)) {
      HeadsOp::create(b, layer.getLoc(), b.getDenseI64ArrayAttr(heads), p);
      ++numGroups;
    }
    int64_t atReference = keep ? 0 : llvm::count(a, int64_t(-1));
    // The predicted error of what is written: per-head terms (skips
    // included) summed over the layer.
    std::string budget = fmt::format(
        "; predicted output error {}{:.4f} (max-layer-error {}{}){}",
        shares ? "" : "at most ", layerError(cl, shares, a),
        double(maxLayerError),
        shares ? "" : "; the largest head's: no contributions",
        keep || madeAccurate == 0
            ? ""
            : fmt::format(", {} heads changed to meet it", madeAccurate));
    mlir::emitRemark(layer.getLoc()) << fmt::format(
        "attn-select: layer {}: {} at {} tokens: predicted {:.3f} ms, "
        "reference {:.3f} ms ({:.2f}x); {} head groups{}{}{}",
        layer.getIndex(),
        keep ? "sparse does not pay, the reference is kept" : "sparse", length,
        1e3 * (keep ? ref->seconds : current->seconds), 1e3 * ref->seconds,
        ref->seconds / (keep ? ref->seconds : current->seconds), numGroups,
        skipped.empty() ? ""
                        : fmt::format(", {} heads skipped", skipped.size()),
        atReference == 0
            ? ""
            : fmt::format(", {} heads at the reference", atReference),
        budget);
    return success();
  }

  /// Moves heads to more accurate options until the layer's predicted error
  /// is within max-layer-error. With shares: the head whose next option on
  /// its (work, share) lower convex hull adds the least work per unit of
  /// share removed moves first. Without: each head above the budget takes
  /// its cheapest option within it. The reference (error 0) is every head's
  /// last option, so the budget is always met.
  template <typename Feasible, typename HeadWork>
  LogicalResult meetLayerBudget(const CalibratedLayer &cl, bool shares,
                                Assignment &a, Feasible feasible,
                                HeadWork headWork) {
    struct Option {
      double work, err;
      int64_t choice;
    };
    int64_t H = int64_t(a.size());
    std::vector<std::vector<Option>> hulls(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) {
      auto option = [&](int64_t c) -> FailureOr<Option> {
        FailureOr<double> w = c == -2 ? FailureOr<double>(0.0) : headWork(c, h);
        if (failed(w))
          return failure();
        return Option{*w, headError(cl, shares, c, h), c};
      };
      FailureOr<Option> cur = option(a[h]);
      if (failed(cur))
        return failure();
      std::vector<Option> opts{*cur};
      for (int64_t c = -1; c < int64_t(cl.candidates.size()); ++c) {
        if (c == a[h] || (c >= 0 && !feasible(c, h)))
          continue;
        FailureOr<Option> o = option(c);
        if (failed(o))
          return failure();
        if (o->err < cur->err)
          opts.push_back(*o);
      }
      llvm::stable_sort(opts, [](const Option &x, const Option &y) {
        return x.work < y.work || (x.work == y.work && x.err < y.err);
      });
      // The options whose error falls as their work grows; with shares,
      // their lower convex hull (the greedy's steps).
      std::vector<Option> &hull = hulls[h];
      for (const Option &o : opts) {
        if (!hull.empty() && o.err >= hull.back().err)
          continue;
        while (shares && hull.size() >= 2) {
          const Option &p = hull[hull.size() - 2], &q = hull.back();
          if ((q.work - p.work) * (o.err - p.err) -
                  (q.err - p.err) * (o.work - p.work) >
              0)
            break;
          hull.pop_back();
        }
        hull.push_back(o);
      }
      // The cheapest option is at most as dear and as wrong as the
      // current one: take it.
      a[h] = hull.front().choice;
    }
    if (!shares) {
      for (int64_t h = 0; h < H; ++h)
        for (const Option &o : hulls[h])
          if (o.err <= maxLayerError) {
            a[h] = o.choice;
            break;
          }
      return success();
    }
    // Each head's next step, cheapest per unit of share first (ties: the
    // lower head).
    std::vector<size_t> at(size_t(H), 0);
    using Step = std::pair<double, int64_t>; // (added work / removed share, h)
    std::priority_queue<Step, std::vector<Step>, std::greater<Step>> steps;
    auto push = [&](int64_t h) {
      const std::vector<Option> &hull = hulls[h];
      if (at[h] + 1 < hull.size())
        steps.push({(hull[at[h] + 1].work - hull[at[h]].work) /
                        (hull[at[h]].err - hull[at[h] + 1].err),
                    h});
    };
    double sum = 0;
    for (int64_t h = 0; h < H; ++h) {
      sum += hulls[h].front().err;
      push(h);
    }
    while (std::sqrt(sum) > maxLayerError && !steps.empty()) {
      int64_t h = steps.top().second;
      steps.pop();
      sum -= hulls[h][at[h]].err;
      ++at[h];
      sum += hulls[h][at[h]].err;
      a[h] = hulls[h][at[h]].choice;
      push(h);
    }
    return success();
  }

  cost::Target costTarget;
  Calibration calib;
  int64_t length = 0;
};

} // namespace
