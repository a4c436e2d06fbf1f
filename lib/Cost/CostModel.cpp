//===- CostModel.cpp - predicted time of a layer's schedule ---------------===//

#include "tessera/Cost/CostModel.h"

#include "tessera/Support/JsonFile.h"
#include "tessera/kernel/ProgramRuns.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <type_traits>

namespace tessera::cost {

namespace s = tessera::semantics;
namespace k = tessera::kernel;

//===----------------------------------------------------------------------===//
// Built-in targets
//===----------------------------------------------------------------------===//

namespace {
/// A GPU target from published figures and the kernel's SASS (a model,
/// docs/PERFORMANCE.md "GPU estimate"; not measured on a GPU). The
/// pipelined kernel (FlashForward.cuh) runs 128-row query blocks of 8 warps
/// against 64-key tiles; at head_dim 128 it holds 211 registers a thread, so
/// one block (8 warps) is resident per SM. A tile is 4 * 128 * 64 * 128 FLOP
/// (QK^T and PV) on the tensor cores at `efficiency` of the dense peak (the
/// estimate's rate of mma.sync at 6.0 SASS instructions per HMMA, derated
/// for barriers); its K and V (2 * 64 * 128 * 2 bytes) come
/// from HBM at the SM's share of the bandwidth with an assumed 8-fold reuse
/// in L2 (the query blocks of one head run side by side). The slower of the
/// two is the tile time. Partial tiles cost 1.14 full ones (the closed-form
/// masks and the non-finite guard: scripts/sass-counts.py, dense d128 on
/// sm_90). The per-item cost (Q load, O and LSE store) is assumed half a
/// tile.
Target gpuTarget(const char *name, const char *spec, int64_t sms, double flops,
                 double bandwidth, double efficiency) {
  Target t;
  t.name = name;
  t.kind = "gpu";
  t.source = std::string("published specifications (") + spec +
             "), efficiency " + std::to_string(efficiency).substr(0, 4) +
             " assumed; not measured on a GPU";
  t.units = sms;
  t.slotsPerUnit = 1;
  t.blockQ = 128;
  t.blockK = 64;
  t.headDim = 128;
  t.tensorFlops = flops;
  t.memoryBandwidth = bandwidth;
  t.efficiency = efficiency;
  double tileFlops = 4.0 * 128 * 64 * 128;
  double perSlotRate =
      flops / double(sms) * efficiency / double(t.slotsPerUnit);
  double compute = tileFlops / perSlotRate;
  double tileBytes = 2.0 * 64 * 128 * 2;
  double perSlotBandwidth = bandwidth / double(sms * t.slotsPerUnit);
  double memory = tileBytes / perSlotBandwidth / 8.0;
  t.fullTileS = std::max(compute, memory);
  t.partialTileS = 1.14 * t.fullTileS;
  t.rowBlockS = 0.5 * t.fullTileS;
  t.launchS = 5e-6;
  t.groupS = 0;
  // Index passes stream fp32 elements: all slots together at the bandwidth.
  t.indexElementS = 4.0 * double(t.units * t.slotsPerUnit) / bandwidth;
  return t;
}

const std::vector<Target> &builtins() {
  static const std::vector<Target> targets = {
      gpuTarget("a100",
                "A100 SXM4 80GB: 108 SMs, 312 TFLOP/s dense bf16, 2.04 TB/s",
                108, 312e12, 2.039e12, 0.60),
      gpuTarget("h100",
                "H100 SXM5: 132 SMs, 989 TFLOP/s dense bf16, 3.35 TB/s; "
                "our mma.sync kernel, no wgmma",
                132, 989.4e12, 3.35e12, 0.40),
      gpuTarget("h200",
                "H200 SXM: 132 SMs, 989 TFLOP/s dense bf16, 4.8 TB/s; "
                "our mma.sync kernel, no wgmma",
                132, 989.4e12, 4.8e12, 0.40),
  };
  return targets;
}
} // namespace

const Target *builtinTarget(const std::string &name) {
  for (const Target &t : builtins())
    if (t.name == name)
      return &t;
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Target files
//===----------------------------------------------------------------------===//

std::string validateTarget(const Target &t) {
  auto bad = [](double v, double lo, double hi) {
    return !std::isfinite(v) || v < lo || v > hi;
  };
  if (t.kind != "cpu" && t.kind != "gpu")
    return "'kind' must be \"cpu\" or \"gpu\", got \"" + t.kind + "\"";
  if (t.units < 1 || t.units > 100000)
    return "'units' must be in [1, 100000], got " + std::to_string(t.units);
  if (t.slotsPerUnit < 1 || t.slotsPerUnit > 64)
    return "'slots_per_unit' must be in [1, 64], got " +
           std::to_string(t.slotsPerUnit);
  if (t.blockQ < 1 || t.blockQ > 1024 || t.blockK < 1 || t.blockK > 1024)
    return "'block_q' and 'block_k' must be in [1, 1024]";
  if (t.headDim < 1 || t.headDim > 1024)
    return "'head_dim' must be in [1, 1024], got " + std::to_string(t.headDim);
  // A tile takes more than a picosecond and less than a second on any
  // machine; anything else is a units mistake.
  if (bad(t.fullTileS, 1e-12, 1) || bad(t.partialTileS, 1e-12, 1))
    return "'full_tile_s' and 'partial_tile_s' must be in [1e-12, 1] "
           "seconds";
  if (bad(t.rowBlockS, 0, 1) || bad(t.launchS, 0, 1) || bad(t.groupS, 0, 1))
    return "'row_block_s', 'launch_s' and 'group_s' must be in [0, 1] "
           "seconds";
  if (bad(t.tileFixedShare, 0, 1))
    return "'tile_fixed_share' must be in [0, 1]";
  if (bad(t.indexElementS, 0, 1e-3))
    return "'index_element_s' must be in [0, 1e-3] seconds (0: derived)";
  if (bad(t.tensorFlops, 0, 1e18) || bad(t.memoryBandwidth, 0, 1e15) ||
      bad(t.efficiency, 0, 1))
    return "'tensor_flops', 'memory_bandwidth' and 'efficiency' must be "
           "non-negative and plausible (efficiency at most 1)";
  return "";
}

bool loadTarget(const std::string &nameOrPath, Target &out,
                std::string &error) {
  if (const Target *t = builtinTarget(nameOrPath)) {
    out = *t;
    return true;
  }
  llvm::sys::fs::file_status status;
  if (std::error_code ec = llvm::sys::fs::status(nameOrPath, status)) {
    error = "target '" + nameOrPath +
            "' is neither a built-in target (a100, h100, h200) nor a "
            "readable file: " +
            ec.message();
    return false;
  }
  // A regular file of at most 1 MiB, nested at most 32 deep.
  std::string why;
  std::optional<llvm::json::Value> json =
      readJsonFile(nameOrPath, 1 << 20, why);
  if (!json) {
    error = "target file " + nameOrPath + " " + why;
    return false;
  }
  const llvm::json::Object *o = json->getAsObject();
  if (!o) {
    error = "target file " + nameOrPath + " must hold a JSON object";
    return false;
  }
  if (o->getString("format") != llvm::StringRef("tessera-target")) {
    error =
        "target file " + nameOrPath + " lacks \"format\": \"tessera-target\"";
    return false;
  }
  // Every field is type-checked: a present field of the wrong type is an
  // error naming it, never a default.
  Target t;
  std::string missing, mistyped;
  auto lookup = [&](const char *key,
                    bool required) -> const llvm::json::Value * {
    const llvm::json::Value *v = o->get(key);
    if (!v && required)
      missing += std::string(missing.empty() ? "" : ", ") + key;
    return v;
  };
  auto wrongType = [&](const char *key, const char *type) {
    if (mistyped.empty())
      mistyped = "'" + std::string(key) + "' must be " + type;
  };
  auto str = [&](const char *key, std::string &v) {
    if (const llvm::json::Value *x = lookup(key, true)) {
      if (auto s = x->getAsString())
        v = s->str();
      else
        wrongType(key, "a string");
    }
  };
  auto num = [&](const char *key, double &v, bool required) {
    if (const llvm::json::Value *x = lookup(key, required)) {
      if (auto d = x->getAsNumber())
        v = *d;
      else
        wrongType(key, "a number");
    }
  };
  auto integer = [&](const char *key, int64_t &v) {
    if (const llvm::json::Value *x = lookup(key, true)) {
      if (auto i = x->getAsInteger())
        v = *i;
      else
        wrongType(key, "an integer");
    }
  };
  str("name", t.name);
  str("kind", t.kind);
  str("source", t.source);
  integer("units", t.units);
  integer("slots_per_unit", t.slotsPerUnit);
  integer("block_q", t.blockQ);
  integer("block_k", t.blockK);
  integer("head_dim", t.headDim);
  num("full_tile_s", t.fullTileS, true);
  num("partial_tile_s", t.partialTileS, true);
  num("row_block_s", t.rowBlockS, true);
  num("launch_s", t.launchS, true);
  num("group_s", t.groupS, true);
  num("tile_fixed_share", t.tileFixedShare, false);
  num("tensor_flops", t.tensorFlops, false);
  num("memory_bandwidth", t.memoryBandwidth, false);
  num("efficiency", t.efficiency, false);
  num("index_element_s", t.indexElementS, false);
  if (!mistyped.empty()) {
    error = "target file " + nameOrPath + ": " + mistyped;
    return false;
  }
  if (!missing.empty()) {
    error = "target file " + nameOrPath + " lacks " + missing;
    return false;
  }
  std::string problem = validateTarget(t);
  if (!problem.empty()) {
    error = "target file " + nameOrPath + ": " + problem;
    return false;
  }
  out = t;
  return true;
}

std::string targetToJson(const Target &t) {
  llvm::json::Object o{{"format", "tessera-target"},
                       {"version", 1},
                       {"name", t.name},
                       {"kind", t.kind},
                       {"source", t.source},
                       {"units", t.units},
                       {"slots_per_unit", t.slotsPerUnit},
                       {"block_q", t.blockQ},
                       {"block_k", t.blockK},
                       {"head_dim", t.headDim},
                       {"full_tile_s", t.fullTileS},
                       {"partial_tile_s", t.partialTileS},
                       {"row_block_s", t.rowBlockS},
                       {"launch_s", t.launchS},
                       {"group_s", t.groupS},
                       {"tile_fixed_share", t.tileFixedShare},
                       {"tensor_flops", t.tensorFlops},
                       {"memory_bandwidth", t.memoryBandwidth},
                       {"efficiency", t.efficiency},
                       {"index_element_s", t.indexElementS}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(o))) << "\n";
  return text;
}

//===----------------------------------------------------------------------===//
// Prediction
//===----------------------------------------------------------------------===//

namespace {

bool headDependent(const s::Pattern &p) {
  return std::visit(
      [](const auto &n) -> bool {
        using T = std::decay_t<decltype(n)>;
        if constexpr (std::is_same_v<T, s::StridedShards> ||
                      std::is_same_v<T, s::ShiftedGroups>)
          return true;
        else if constexpr (std::is_same_v<T, s::Union> ||
                           std::is_same_v<T, s::Intersect> ||
                           std::is_same_v<T, s::Difference>)
          return std::any_of(n.parts.begin(), n.parts.end(), headDependent);
        else
          return false;
      },
      p.node);
}

/// A head's run walks take about this many runs in all (at least
/// kMinRunsPerBlock per query block): a query block whose walk does not end
/// within its share is walked exactly that far and estimated beyond, from
/// kSampleWindows windows spread over the rest, each walked for an equal
/// part of the share. A prediction's cost then follows the runs it walks,
/// not the length: periodic patterns have one run per period, 2^34 of them
/// a head at 2^40 keys.
constexpr int64_t kRunsPerHead = int64_t(1) << 14;
constexpr int64_t kMinRunsPerBlock = 32, kSampleWindows = 4;

/// Adds the full and partial tiles of key blocks [from, to) of the query
/// block `ctx` to `full` and `partial`, walking at most `budget` runs;
/// returns the key block where the walk stopped (`to` when it reached it,
/// else the first block of the next run: the blocks before it are counted),
/// and in `first` the first block of the first run (or `to`).
int64_t walkRuns(const k::ProgramRuns &runs, const k::RunCtx &ctx,
                 int64_t from, int64_t to, int64_t budget, int64_t &full,
                 int64_t &partial, int64_t &first) {
  first = to;
  for (int64_t kb = from, n = 0; kb < to; ++n) {
    k::Run r = runs.runFrom(ctx, kb);
    if (!k::isRun(r) || r.lo >= to)
      return to;
    if (n == 0)
      first = r.lo;
    if (n == budget)
      return r.lo;
    int64_t hi = std::min<int64_t>(r.hi, to - 1);
    (r.cls == k::kFull ? full : partial) += hi - r.lo + 1;
    kb = hi + 1;
  }
  return to;
}

/// Full and partial tiles of every query block of one head; true when some
/// were estimated (a walk past its share of kRunsPerHead).
bool countTiles(const k::ProgramRuns &runs, int64_t head, int64_t numHeads,
                int64_t nq, int64_t nk, int64_t bq, int64_t bk,
                std::vector<int64_t> &full, std::vector<int64_t> &partial) {
  int64_t tq = (nq + bq - 1) / bq, nkb = (nk + bk - 1) / bk;
  int64_t budget = std::max(kMinRunsPerBlock, kRunsPerHead / tq);
  bool estimated = false;
  full.assign(size_t(tq), 0);
  partial.assign(size_t(tq), 0);
  for (int64_t qb = 0; qb < tq; ++qb) {
    int64_t q0 = qb * bq, q1 = std::min(q0 + bq, nq);
    k::RunCtx ctx = k::makeRunCtx(q0, q1, nq, nk, bk, head, numHeads);
    int64_t &f = full[size_t(qb)], &p = partial[size_t(qb)];
    int64_t first;
    int64_t stop = walkRuns(runs, ctx, 0, nkb, budget, f, p, first);
    if (stop == nkb)
      continue;
    // The rest [stop, nkb) at the tile densities of the sampled windows: a
    // window walked to its end counts whole; one cut short counts from its
    // first run to the run it stopped at, whole runs and the gaps between
    // them (exact for periodic runs, wherever the window starts).
    estimated = true;
    int64_t rest = nkb - stop, seen = 0, sf = 0, sp = 0;
    for (int64_t i = 0; i < kSampleWindows; ++i) {
      int64_t a = stop + rest / kSampleWindows * i;
      int64_t b = i + 1 == kSampleWindows ? nkb : a + rest / kSampleWindows;
      if (a == b)
        continue;
      int64_t end =
          walkRuns(runs, ctx, a, b, budget / kSampleWindows, sf, sp, first);
      seen += end == b ? b - a : end - first;
    }
    f += std::llround(double(sf) * double(rest) / double(seen));
    p += std::llround(double(sp) * double(rest) / double(seen));
  }
  return estimated;
}

} // namespace

bool predictLayer(const Target &target,
                  const std::vector<schedule::HeadGroup> &groups,
                  int64_t numHeads, int64_t nq, int64_t nk, int64_t batch,
                  int64_t headDim, LayerCost &out, std::string &error) {
  return predictLayer(target, groups, {}, numHeads, nq, nk, batch, headDim,
                      out, error);
}

bool predictLayer(const Target &target,
                  const std::vector<schedule::HeadGroup> &groups,
                  const std::vector<DynamicHeadGroup> &dynamicGroups,
                  int64_t numHeads, int64_t nq, int64_t nk, int64_t batch,
                  int64_t headDim, LayerCost &out, std::string &error) {
  constexpr int64_t kMaxLen = int64_t(1) << 40;
  if (nq < 1 || nk < 1 || nq > kMaxLen || nk > kMaxLen) {
    error = "lengths must be in [1, 2^40]";
    return false;
  }
  if (batch < 1 || batch > (1 << 20) || headDim < 1 || headDim > 1024) {
    error = "batch must be in [1, 2^20] and head_dim in [1, 1024]";
    return false;
  }
  std::string problem = validateTarget(target);
  if (!problem.empty()) {
    error = "target " + target.name + ": " + problem;
    return false;
  }
  const int64_t bq = target.blockQ, bk = target.blockK;
  const int64_t tq = (nq + bq - 1) / bq;
  // Items are simulated one by one: keep their number bounded.
  if (tq > (int64_t(1) << 26) / std::max<int64_t>(1, numHeads * batch)) {
    error = "the layer has more than 2^26 work items (batch x heads x query "
            "blocks); predict a shorter length or a smaller batch";
    return false;
  }
  double scale = target.tileFixedShare + (1 - target.tileFixedShare) *
                                            double(headDim) /
                                            double(target.headDim);
  double full = target.fullTileS * scale, partial = target.partialTileS * scale;
  double row = target.rowBlockS * scale;

  out = LayerCost();
  // Per computed head, in launch order: the cost of each query block.
  std::vector<std::vector<double>> headItems;
  int64_t numGroups = 0;
  for (const schedule::HeadGroup &g : groups) {
    GroupCost gc;
    gc.heads = int64_t(g.heads.size());
    if (std::holds_alternative<s::Skip>(g.pattern.node)) {
      out.groups.push_back(gc);
      continue;
    }
    ++numGroups;
    schedule::Program program;
    if (!schedule::lowerPattern(g.pattern, program, error))
      return false;
    k::ProgramRuns runs(program.nodes.data(), int64_t(program.nodes.size()),
                        program.data.data());
    bool perHead = headDependent(g.pattern);
    std::vector<int64_t> f, p;
    for (size_t i = 0; i < g.heads.size(); ++i) {
      if ((i == 0 || perHead) &&
          countTiles(runs, g.heads[i], numHeads, nq, nk, bq, bk, f, p))
        gc.estimated = true;
      std::vector<double> items(static_cast<size_t>(tq), 0.0);
      for (int64_t qb = 0; qb < tq; ++qb) {
        items[size_t(qb)] = row + double(f[size_t(qb)]) * full +
                            double(p[size_t(qb)]) * partial;
        gc.fullTiles += f[size_t(qb)] * batch;
        gc.partialTiles += p[size_t(qb)] * batch;
        gc.workS += items[size_t(qb)] * double(batch);
      }
      headItems.push_back(std::move(items));
    }
    out.groups.push_back(gc);
  }

  // Dynamic groups: attention items estimated from the budgets, index work
  // spread over every slot before the attention.
  const double element =
      target.indexElementS > 0
          ? target.indexElementS
          : target.rowBlockS / (2.0 * 64 * double(target.headDim));
  double indexWork = 0;
  int64_t indexLaunches = 0;
  auto ceilDiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  for (const DynamicHeadGroup &g : dynamicGroups) {
    GroupCost gc;
    gc.heads = int64_t(g.heads.size());
    gc.estimated = true;
    ++numGroups;
    const kernel::DynArgs &a = g.leaf;
    auto tilesOf = [&](const s::Pattern &p, int64_t head,
                       std::vector<int64_t> &f, std::vector<int64_t> &pt) {
      schedule::Program program;
      if (!schedule::lowerPattern(p, program, error))
        return false;
      k::ProgramRuns runs(program.nodes.data(), int64_t(program.nodes.size()),
                          program.data.data());
      countTiles(runs, head, numHeads, nq, nk, bq, bk, f, pt);
      return true;
    };
    // Index work of one head (one slot's time): score tiles (Q K^T only,
    // half a full tile) and element passes.
    double qkTiles = 0, elements = 0;
    if (a.family == kernel::kVerticalSlash) {
      int64_t L = std::min<int64_t>(a.lastQ, nq);
      qkTiles = double(ceilDiv(L, 64) * ceilDiv(nk, 64));
      elements = double(nk) * double(5 * L + 70);
    } else if (a.family == kernel::kBlockTopk) {
      int64_t tqb = ceilDiv(nq, a.block), tkb = ceilDiv(nk, a.block);
      qkTiles = double(tqb) * double(tkb) / 4096.0;
      elements = double(nq + nk) * double(headDim) +
                 double(tqb) * double(tkb) * 70.0;
      if (a.tau > 0) {
        // FlexPrefill's choice: the last query block's R = min(block, Nq)
        // rows against the keys before them, their logits computed twice
        // (the online softmax, then the masses), softmax and sums per
        // element, the mode's averages, distance and two selections.
        const int64_t rows = std::min<int64_t>(a.block, nq);
        qkTiles += 2.0 * double(ceilDiv(rows, 64) * ceilDiv(nk, 64));
        elements += 8.0 * double(rows) * double(nk) +
                    double(tkb) * (double(rows) + 140.0);
      }
    } else if (a.family == kernel::kBlockIndex) {
      // The caller's index is read, not built: one pass over its lists.
      elements = double(ceilDiv(nq, a.blockQ)) * double(ceilDiv(nk, a.blockK));
    } else {
      qkTiles = double(nk * (a.iterations + 1) + nq) * double(a.clusters) /
                4096.0;
      elements = double(a.iterations * a.clusters * nk) +
                 double(nq + nk) * 130.0;
    }
    const double headIndex = 0.5 * qkTiles * full + elements * element;
    for (size_t i = 0; i < g.heads.size(); ++i) {
      const int64_t head = g.heads[i];
      std::vector<int64_t> f, p, wf, wp;
      std::vector<double> items;
      if (a.family == kernel::kVerticalSlash) {
        // The kept diagonals as the `slash` nearest the query, within
        // `with`, the columns gathered; plus `without`'s runs.
        s::Pattern est{s::Union{
            {s::Pattern{s::Intersect{
                 {g.with, s::Pattern{s::Window{std::max<int64_t>(
                                                   0, a.slash - 1),
                                               0}}}}},
             g.without}}};
        if (!tilesOf(est, head, f, p))
          return false;
        const int64_t gathered = ceilDiv(std::min<int64_t>(a.vertical, nk), bk);
        for (int64_t qb = 0; qb < tq; ++qb)
          p[size_t(qb)] += gathered;
      } else if (a.family == kernel::kBlockTopk) {
        // `kept` key blocks (of block / 64 tiles each) within `with`.
        int64_t tkb = ceilDiv(nk, a.block);
        int64_t kept = a.topK > 0 ? a.topK : (a.maxBlocks > 0 ? a.maxBlocks
                                                                : tkb);
        // tau > 0: FlexPrefill's vertical-slash-like lists hold the columns
        // and two blocks per slash group (btCap).
        if (a.tau > 0)
          kept = std::min(3 * std::min(kept, tkb), tkb);
        int64_t perBlock = ceilDiv(a.block, bk);
        if (!tilesOf(g.with, head, wf, wp) || !tilesOf(g.without, head, f, p))
          return false;
        for (int64_t qb = 0; qb < tq; ++qb) {
          int64_t cap = std::min(kept, tkb) * perBlock;
          int64_t full_ = std::min(cap, wf[size_t(qb)]);
          int64_t part = std::min(cap - full_, wp[size_t(qb)]);
          f[size_t(qb)] += full_;
          p[size_t(qb)] += part;
        }
      } else if (a.family == kernel::kBlockIndex) {
        // Unknown before the call: at most every tile `with` visits (the
        // caller may list every key block), plus `without`'s runs.
        if (!tilesOf(g.with, head, wf, wp) || !tilesOf(g.without, head, f, p))
          return false;
        for (int64_t qb = 0; qb < tq; ++qb) {
          f[size_t(qb)] += wf[size_t(qb)];
          p[size_t(qb)] += wp[size_t(qb)];
        }
      } else {
        // Balanced clusters: routingTiles query tiles, each over its
        // cluster's keys; then `without`'s runs when merging.
        f.assign(size_t(tq), 0);
        p.assign(size_t(tq), 0);
        if (a.merge && !tilesOf(g.without, head, f, p))
          return false;
        int64_t segTiles = tq + std::min<int64_t>(a.clusters, nq);
        int64_t keyTiles = ceilDiv(ceilDiv(nk, a.clusters), bk);
        for (int64_t t = 0; t < segTiles; ++t) {
          items.push_back(row + double(keyTiles) * partial);
          gc.partialTiles += keyTiles * batch;
        }
      }
      for (int64_t qb = 0; qb < tq; ++qb) {
        if (a.family == kernel::kRouting && !a.merge)
          break;
        items.push_back(row + double(f[size_t(qb)]) * full +
                        double(p[size_t(qb)]) * partial);
        gc.fullTiles += f[size_t(qb)] * batch;
        gc.partialTiles += p[size_t(qb)] * batch;
      }
      for (double c : items)
        gc.workS += c * double(batch);
      gc.indexS += headIndex * double(batch);
      headItems.push_back(std::move(items));
    }
    indexWork += gc.indexS;
    indexLaunches += kernel::dynLaunchCount(a);
    out.groups.push_back(gc);
  }

  // List scheduling in launch order over units x slots identical slots.
  int64_t slots = target.units * target.slotsPerUnit;
  std::priority_queue<double, std::vector<double>, std::greater<double>> free;
  for (int64_t i = 0; i < slots; ++i)
    free.push(0.0);
  double end = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (const std::vector<double> &items : headItems)
      for (double c : items) {
        double t = free.top() + c;
        free.pop();
        free.push(t);
        end = std::max(end, t);
        out.workS += c;
        ++out.items;
      }
  // The index kernels run before the attention, over every slot.
  const double indexS =
      indexWork / double(slots) + double(indexLaunches) * target.launchS;
  out.workS += indexWork;
  out.seconds =
      end + indexS + target.launchS + target.groupS * double(numGroups);
  return true;
}

bool predictDense(const Target &target, int64_t numHeads, int64_t nq,
                  int64_t nk, int64_t batch, int64_t headDim, LayerCost &out,
                  std::string &error) {
  schedule::HeadGroup g;
  g.pattern.node = s::Dense{};
  for (int64_t h = 0; h < numHeads; ++h)
    g.heads.push_back(h);
  return predictLayer(target, {g}, numHeads, nq, nk, batch, headDim, out,
                      error);
}

} // namespace tessera::cost
