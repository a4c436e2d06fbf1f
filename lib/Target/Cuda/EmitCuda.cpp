//===- EmitCuda.cpp - block schedules to CUDA bundles ---------------------===//

#include "tessera/Target/CudaEmitter.h"

#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Runs.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/RunOps.h"

#include "EmbeddedKernel.h"

#include "tessera/Dialect/Attn/AttnAttributes.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/ScopedPrinter.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <set>

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;
namespace json = llvm::json;

namespace {

constexpr int64_t kTile = 64;
constexpr int64_t kThreads = 128;

std::string dtypeName(Type t) { return t.isF16() ? "f16" : "bf16"; }

std::string kernelName(Type dtype, int64_t headDim) {
  return "tessera_attn_" + dtypeName(dtype) + "_d" + std::to_string(headDim);
}

std::string fillName(int64_t headDim) {
  return "tessera_fill_skipped_d" + std::to_string(headDim);
}

template <typename Range>
void printArray(llvm::raw_ostream &os, llvm::StringRef type,
                llvm::StringRef name, const Range &values) {
  os << "__device__ const " << type << " " << name << "[] = {";
  bool first = true;
  size_t n = 0;
  for (auto v : values) {
    os << (first ? "" : ", ") << ((n++ % 16 == 0) ? "\n  " : "") << v;
    first = false;
  }
  if (first)
    os << "0"; // keep the array non-empty
  os << "};\n";
}

json::Array toJson(llvm::ArrayRef<int64_t> values) {
  json::Array a;
  for (int64_t v : values)
    a.push_back(v);
  return a;
}

constexpr llvm::StringLiteral kDynamicHeadersMarker =
    "// @@TESSERA_DYNAMIC_HEADERS@@\n";

/// The kernels of a dynamic group, in launch order (docs/bundles.md).
std::vector<std::string> dynamicKernels(llvm::StringRef family,
                                        llvm::StringRef dt, int64_t d,
                                        bool merge) {
  std::string typed = "_" + dt.str(), sized = typed + "_d" + std::to_string(d);
  if (family == "vertical_slash")
    return {"tessera_vs_scores" + sized, "tessera_vs_softmax",
            "tessera_vs_sums", "tessera_vs_select",
            "tessera_vs_attend" + sized};
  if (family == "block_topk")
    return {"tessera_bt_pool" + typed, "tessera_bt_scores", "tessera_bt_take",
            "tessera_bt_select", "tessera_bt_attend" + sized};
  std::vector<std::string> names = {
      "tessera_rt_seed" + typed,          "tessera_rt_assign_keys" + typed,
      "tessera_rt_update" + typed,        "tessera_rt_assign_queries" + typed,
      "tessera_rt_sort",                  "tessera_rt_attend" + sized};
  if (merge)
    names.push_back("tessera_rt_rest" + sized);
  return names;
}

/// The family and parameters of a dynamic group's leaf, or why a bundle
/// cannot hold it.
bool describeDynamic(PatternAttrInterface pattern, json::Object &out,
                     std::string &why) {
  semantics::DynamicSplit split;
  if (!semantics::splitDynamic(pattern, split, why))
    return false;
  if (auto vs = dyn_cast<VerticalSlashAttr>(split.leaf)) {
    out["family"] = "vertical_slash";
    out["params"] = json::Object{{"last_q", vs.getLastQ()},
                                 {"vertical", vs.getVertical()},
                                 {"slash", vs.getSlash()},
                                 {"first_columns", vs.getFirstColumns()},
                                 {"last_diagonals", vs.getLastDiagonals()}};
    return true;
  }
  if (auto bt = dyn_cast<BlockTopkAttr>(split.leaf)) {
    if (bt.getBlock() % kTile) {
      why = "block_topk with block = " + std::to_string(bt.getBlock()) +
            ": the CUDA kernels need a multiple of 64 (a 64-row query block "
            "in one pooled block)";
      return false;
    }
    if (bt.getTau().value != 0) {
      why = "block_topk with tau > 0 (FlexPrefill's per-head choice) is not "
            "built by the bundles' index kernels yet";
      return false;
    }
    out["family"] = "block_topk";
    out["params"] = json::Object{{"block", bt.getBlock()},
                                 {"gamma", bt.getGamma().value},
                                 {"top_k", bt.getTopK()},
                                 {"min_blocks", bt.getMinBlocks()},
                                 {"max_blocks", bt.getMaxBlocks()}};
    return true;
  }
  auto rt = cast<RoutingAttr>(split.leaf);
  out["family"] = "routing";
  // Where the pattern allows pairs outside the clusters (routing under a
  // union, or right of a difference), a second walk adds them.
  out["merge_without"] = !split.required;
  out["params"] = json::Object{{"clusters", rt.getClusters()},
                               {"kmeans_iterations", rt.getKmeansIterations()}};
  return true;
}

} // namespace

FailureOr<Bundle> tessera::emitCudaBundle(ModuleOp module,
                                          llvm::StringRef sourceName) {
  SmallVector<ModelOp> models(module.getOps<ModelOp>());
  if (models.size() != 1) {
    module.emitError("a bundle holds exactly one attn.model, the input has ")
        << models.size();
    return failure();
  }
  ModelOp model = models.front();
  auto layers = model.getBody().front().getOps<LayerOp>();
  if (!layers.empty()) {
    (*layers.begin())
        .emitError("emit a bundle from block schedules: run "
                   "--attn-schedule first");
    return failure();
  }

  Bundle bundle;
  llvm::raw_string_ostream os(bundle.source);
  os << "// Generated by attn-translate from " << sourceName << " (model @"
     << model.getSymName() << "). Do not edit.\n"
     << "// Compile with NVRTC for sm_80 or later; see the manifest.\n\n"
     << "// Kernels have C linkage (the emulator of tessera/kernel/Emulate.h,\n"
     << "// which compiles bundles for the host in tests, makes them static).\n"
     << "#ifndef TESSERA_EXTERN_C\n#define TESSERA_EXTERN_C extern \"C\"\n"
     << "#endif\n\n"
     << tessera::embedded::kProgramH << "\n"
     << tessera::embedded::kFlashForwardCuh << "\n"
     << kDynamicHeadersMarker
     << "namespace tessera {\nnamespace kernel {\nnamespace bundle {\n\n";

  json::Array layersJson;
  std::set<std::pair<std::string, int64_t>> kernels; // (dtype, head_dim)
  // The generated code of each distinct group pattern, shared by every group,
  // layer and kernel that has it: pattern text -> id.
  std::map<std::string, int64_t> patternIds;
  std::map<std::pair<std::string, int64_t>, std::set<int64_t>> kernelPatterns;
  std::string groupCode;
  std::set<int64_t> fillDims;
  // Dynamic groups: the generated code ids of their with/without patterns,
  // the families per kernel (dtype, head_dim), their head lists and tables.
  std::set<int64_t> dynPatterns;
  std::map<std::pair<std::string, int64_t>, std::set<std::string>> dynFamilies;
  std::map<std::pair<std::string, int64_t>, bool> dynMerge;
  std::string dynHeads, dynTables;
  llvm::raw_string_ostream dynHeadsOs(dynHeads), dynTablesOs(dynTables);
  std::vector<std::string> dynTableNames;
  int64_t position = 0;
  bool ok = true;
  for (auto sched : model.getBody().front().getOps<ScheduleOp>()) {
    Type dtype = sched.getDtype();
    int64_t d = sched.getHeadDim();
    auto fail = [&](const llvm::Twine &why) {
      sched.emitError("layer ") << sched.getIndex() << ": " << why;
      ok = false;
    };
    if (!dtype.isF16() && !dtype.isBF16()) {
      fail("the CUDA kernel supports f16 and bf16, not f32");
      continue;
    }
    if (d != 64 && d != 128) {
      fail("the CUDA kernel supports head_dim 64 and 128, not " +
           llvm::Twine(d));
      continue;
    }
    if (sched.getBlockQ() != kTile || sched.getBlockK() != kTile) {
      fail("the CUDA kernel uses 64 x 64 tiles; schedule with "
           "--attn-schedule=\"block-q=64 block-k=64\"");
      continue;
    }
    std::vector<schedule::HeadGroup> groups;
    json::Array groupsJson;
    std::vector<int64_t> groupPattern;
    json::Array dynamicJson;
    std::string dynTable;
    bool dynamicOk = true;
    int64_t dynIndex = 0;
    for (auto g : sched.getBody().front().getOps<GroupOp>()) {
      if (g.getPattern().isStatic())
        continue;
      std::string why;
      json::Object entry;
      if (!describeDynamic(g.getPattern(), entry, why)) {
        fail("head group " + llvm::Twine(g.getId()) + " (heads from " +
             llvm::Twine(g.getHeads().front()) + "): " + why);
        dynamicOk = false;
        continue;
      }
      semantics::DynamicSplit split;
      semantics::splitDynamic(g.getPattern(), split, why);
      std::string key = llvm::to_string(g.getPattern());
      int64_t ids[2];
      for (int side = 0; side < 2; ++side) {
        const semantics::Pattern &pat = side ? split.without : split.with;
        std::string sideKey = key + (side ? " [leaf: skip]" : " [leaf: dense]");
        auto [it, fresh] = patternIds.insert(
            {sideKey, static_cast<int64_t>(patternIds.size())});
        if (fresh) {
          std::string name = "P" + std::to_string(it->second);
          groupCode += "// " + name + ": " + sideKey + "\n" +
                       schedule::emitGroupCode(pat, schedule::buildRuns(pat),
                                               name) +
                       "\n";
        }
        ids[side] = it->second;
        dynPatterns.insert(it->second);
        schedule::Program prog;
        std::string error;
        if (!schedule::lowerPattern(pat, prog, error)) {
          fail(error);
          dynamicOk = false;
        }
        json::Array nodes;
        for (const kernel::Node &n : prog.nodes)
          nodes.push_back(json::Array{n.kind, n.axis, n.a, n.b, n.c,
                                      n.dataBegin, n.dataSize});
        if (prog.data.empty())
          prog.data.push_back(0);
        entry[side ? "without" : "with"] = json::Object{
            {"nodes", std::move(nodes)},
            {"data", toJson(std::vector<int64_t>(prog.data.begin(),
                                                 prog.data.end()))}};
      }
      std::string family = entry.getString("family").value_or("").str();
      dynFamilies[{dtypeName(dtype), d}].insert(family);
      json::Array kernelNames;
      bool merge = entry.getBoolean("merge_without").value_or(false);
      dynMerge[{dtypeName(dtype), d}] |= merge;
      for (const std::string &k :
           dynamicKernels(family, dtypeName(dtype), d, merge))
        kernelNames.push_back(k);
      entry["kernels"] = std::move(kernelNames);
      entry["heads"] = toJson(g.getHeads());
      entry["pattern"] = key;
      std::string hp = "dynHeads_l" + std::to_string(position) + "_g" +
                       std::to_string(dynIndex);
      printArray(dynHeadsOs, "i64", hp, g.getHeads());
      dynTable += (dynIndex ? ", " : "") + std::string("{") + hp + ", " +
                  std::to_string(g.getHeads().size()) + ", " +
                  std::to_string(ids[0]) + ", " + std::to_string(ids[1]) + "}";
      dynamicJson.push_back(std::move(entry));
      ++dynIndex;
    }
    if (!dynamicOk)
      continue;
    for (auto g : sched.getBody().front().getOps<GroupOp>()) {
      if (!g.getPattern().isStatic())
        continue;
      groups.push_back(
          {semantics::fromAttr(g.getPattern()),
           std::vector<int64_t>(g.getHeads().begin(), g.getHeads().end())});
      // The generated code follows the pattern; runs shown in the IR by
      // --attn-lower-runs must say the same.
      schedule::RunExpr runs = schedule::buildRuns(groups.back().pattern);
      if (!g.getRuns().empty()) {
        FailureOr<schedule::RunExpr> shown =
            runExprFromOp(&g.getRuns().front().front());
        if (failed(shown)) {
          ok = false;
          continue;
        }
        if (!(*shown == runs)) {
          g.emitError("the runs of group ")
              << g.getId() << " are not those of its pattern; rerun "
              << "--attn-lower-runs after changing a pattern";
          ok = false;
          continue;
        }
      }
      std::string key = llvm::to_string(g.getPattern());
      auto [it, fresh] =
          patternIds.insert({key, static_cast<int64_t>(patternIds.size())});
      if (fresh) {
        std::string name = "P" + std::to_string(it->second);
        groupCode += "// " + name + ": " + key + "\n" +
                     schedule::emitGroupCode(groups.back().pattern, runs,
                                             name) +
                     "\n";
      }
      groupPattern.push_back(it->second);
      kernelPatterns[{dtypeName(dtype), d}].insert(it->second);
      groupsJson.push_back(
          json::Object{{"heads", toJson(g.getHeads())},
                       {"pattern", llvm::to_string(g.getPattern())}});
    }
    if (!sched.getSkipped().empty())
      groups.push_back({semantics::Pattern{semantics::Skip{}},
                        std::vector<int64_t>(sched.getSkipped().begin(),
                                             sched.getSkipped().end())});
    schedule::LayerSchedule table;
    std::string error;
    if (!schedule::buildLayerSchedule(groups, sched.getNumHeads(), table,
                                      error)) {
      fail(error);
      continue;
    }
    std::string p = "l" + std::to_string(position);
    os << "// Layer " << sched.getIndex() << " (position " << position
       << "): launch groups " << table.groupBegin.size() - 1 << ", "
       << "computed heads " << table.computedHead.size() << ", skipped heads "
       << table.skippedHeads.size() << ".\n";
    // The kernels run the groups' generated code; the postfix program goes
    // to the manifest only (the CPU runtime walks it).
    json::Array nodesJson;
    for (const kernel::Node &n : table.nodes)
      nodesJson.push_back(
          json::Array{n.kind, n.axis, n.a, n.b, n.c, n.dataBegin, n.dataSize});
    printArray(os, "i64", "patternOf_" + p, groupPattern);
    printArray(os, "i64", "computedHead_" + p, table.computedHead);
    printArray(os, "i64", "headGroup_" + p, table.headGroup);
    printArray(os, "i64", "skipped_" + p, table.skippedHeads);
    os << "__device__ const LayerTable table_" << p
       << " = {nullptr, nullptr, nullptr, computedHead_" << p
       << ", headGroup_" << p << ", " << table.computedHead.size() << ", "
       << sched.getNumHeads() << ", skipped_" << p << ", "
       << table.skippedHeads.size() << "};\n\n";

    kernels.insert({dtypeName(dtype), d});
    if (!table.skippedHeads.empty())
      fillDims.insert(d);
    json::Object layer{
        {"index", sched.getIndex()},
        {"position", position},
        {"kernel", kernelName(dtype, d)},
        {"num_heads", sched.getNumHeads()},
        {"num_kv_heads", sched.getNumKvHeads()},
        {"head_dim", d},
        {"dtype", dtypeName(dtype)},
        {"block_q", kTile},
        {"block_k", kTile},
        {"grid", json::Object{{"x", "ceil(Nq / 64)"},
                              {"y", int64_t(table.computedHead.size())},
                              {"z", "batch"}}},
        {"computed_heads",
         toJson(std::vector<int64_t>(table.computedHead.begin(),
                                     table.computedHead.end()))},
        {"head_groups", toJson(std::vector<int64_t>(table.headGroup.begin(),
                                                    table.headGroup.end()))},
        {"skipped_heads",
         toJson(std::vector<int64_t>(table.skippedHeads.begin(),
                                     table.skippedHeads.end()))},
        {"groups", std::move(groupsJson)},
        {"program",
         json::Object{{"nodes", std::move(nodesJson)},
                      {"data", toJson(std::vector<int64_t>(table.data.begin(),
                                                           table.data.end()))},
                      {"group_begin",
                       toJson(std::vector<int64_t>(table.groupBegin.begin(),
                                                   table.groupBegin.end()))}}}};
    if (!dynamicJson.empty()) {
      layer["dynamic_groups"] = std::move(dynamicJson);
      dynTablesOs << "__device__ const DynGroupTable dynGroups_" << p
                  << "[] = {" << dynTable << "};\n";
      dynTableNames.push_back("dynGroups_" + p);
    } else {
      dynTableNames.push_back("nullptr");
    }
    if (!table.skippedHeads.empty()) {
      layer["fill_kernel"] = fillName(d);
      layer["fill_grid"] =
          json::Object{{"x", "ceil(Nq / 128)"},
                       {"y", int64_t(table.skippedHeads.size())},
                       {"z", "batch"}};
    }
    layersJson.push_back(std::move(layer));
    ++position;
  }
  if (!ok)
    return failure();
  if (position == 0) {
    model.emitError("the model has no layer to emit");
    return failure();
  }

  os << "__device__ const LayerTable *const tables[] = {";
  for (int64_t i = 0; i < position; ++i)
    os << (i ? ", " : "") << "&table_l" << i;
  os << "};\n";
  os << "__device__ const i64 *const patternOf[] = {";
  for (int64_t i = 0; i < position; ++i)
    os << (i ? ", " : "") << "patternOf_l" << i;
  os << "};\n\n";
  os << "// The generated code of the head groups: one struct per distinct "
        "pattern.\n\n"
     << groupCode;
  bool anyDynamic = !dynPatterns.empty();
  if (anyDynamic) {
    // The dynamic groups: heads and with/without code ids per layer, and
    // one dispatch over the with/without patterns.
    os << "// Dynamic head groups.\n"
       << dynHeads << dynTables
       << "__device__ const DynGroupTable *const dynTables[] = {";
    for (size_t i = 0; i < dynTableNames.size(); ++i)
      os << (i ? ", " : "") << dynTableNames[i];
    os << "};\n\nstruct DynPats {\n"
       << "  static __device__ __forceinline__ bool allowed(i64 id, i64 p, i64 "
          "k, i64 head, i64 numHeads) {\n    switch (id) {\n";
    for (int64_t id : dynPatterns)
      os << "    case " << id << ":\n      return P" << id
         << "::allowed(p, k, head, numHeads);\n";
    os << "    default:\n      return false;\n    }\n  }\n"
       << "  static __device__ __forceinline__ Run runFrom(i64 id, const "
          "RunCtx &ctx, i64 kb) {\n    switch (id) {\n";
    for (int64_t id : dynPatterns)
      os << "    case " << id << ":\n      return P" << id
         << "::runFrom(ctx, kb);\n";
    os << "    default:\n      return noRun();\n    }\n  }\n};\n\n";
  }
  os << "} // namespace bundle\n} // namespace kernel\n"
     << "} // namespace tessera\n\n";

  json::Array kernelsJson;
  for (auto [dt, d] : kernels) {
    std::string name = "tessera_attn_" + dt + "_d" + std::to_string(d);
    // One launch serves every group of a layer: the pattern switches are
    // uniform per thread block (its launch slot's group).
    std::string groups = "Groups_" + dt + "_d" + std::to_string(d);
    os << "namespace tessera {\nnamespace kernel {\nnamespace bundle {\n"
       << "struct " << groups << " {\n"
       << "  static __device__ __forceinline__ Run runFrom(i64 pattern, "
          "const RunCtx &ctx, i64 kb) {\n    switch (pattern) {\n";
    for (int64_t id : kernelPatterns[{dt, d}])
      os << "    case " << id << ":\n      return P" << id
         << "::runFrom(ctx, kb);\n";
    os << "    default:\n      return noRun();\n    }\n  }\n"
       << "  static __device__ __forceinline__ u32 keep(i64 pattern, i64 "
          "rowPos, i64 k0, int c2, i64 nk, i64 head, i64 numHeads) {\n"
       << "    switch (pattern) {\n";
    for (int64_t id : kernelPatterns[{dt, d}])
      os << "    case " << id << ":\n      return keepBits<P" << id
         << ">(rowPos, k0, c2, nk, head, numHeads);\n";
    os << "    default:\n      return 0;\n    }\n  }\n};\n"
       << "} // namespace bundle\n} // namespace kernel\n"
       << "} // namespace tessera\n\n";
    os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(" << kThreads
       << ", 2)\n"
       << name << "(tessera::kernel::AttnParams p, int layer) {\n"
       << "  using namespace tessera::kernel;\n"
       << "  const LayerTable &t = *bundle::tables[layer];\n"
       << "  __shared__ __align__(16) SharedTiles<" << d << "> smem;\n"
       << "  flashForward<k" << (dt == "f16" ? "F16" : "BF16") << ", " << d
       << ", bundle::" << groups
       << ">(t, p, smem, bundle::patternOf[layer][t.headGroup[blockIdx.y]]);\n"
       << "}\n\n";
    kernelsJson.push_back(json::Object{{"name", name},
                                       {"kind", "attention"},
                                       {"dtype", dt},
                                       {"head_dim", d},
                                       {"threads", kThreads},
                                       {"block_q", kTile},
                                       {"block_k", kTile},
                                       {"args", "(AttnParams, int layer)"}});
  }
  for (int64_t d : fillDims) {
    os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(128)\n"
       << fillName(d) << "(tessera::kernel::AttnParams p, int layer) {\n"
       << "  tessera::kernel::fillSkipped<" << d
       << ">(*tessera::kernel::bundle::tables[layer], p);\n}\n\n";
    kernelsJson.push_back(json::Object{{"name", fillName(d)},
                                       {"kind", "fill_skipped"},
                                       {"head_dim", d},
                                       {"threads", 128},
                                       {"args", "(AttnParams, int layer)"}});
  }

  // The kernels of the dynamic groups: thin wrappers over
  // DynamicIndex.cuh with the bundle's tables.
  std::set<std::string> dynEmitted;
  auto dynKernel = [&](const std::string &name, const std::string &body,
                       const std::string &kind) {
    if (!dynEmitted.insert(name).second)
      return;
    // Two blocks per SM at least, up to 255 registers (ptxas otherwise aims at
    // more blocks with fewer registers and spills on sm_90).
    os << "TESSERA_EXTERN_C __global__ void __launch_bounds__("
       << "128, 2" << ")\n"
       << name
       << "(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a) {\n"
       << "  using namespace tessera::kernel;\n"
       << "  const DynGroupTable &g = bundle::dynTables[a.layer][a.group];\n"
       << "  (void)g;\n"
       << body << "}\n\n";
    kernelsJson.push_back(json::Object{{"name", name},
                                       {"kind", kind},
                                       {"threads", 128},
                                       {"args", "(AttnParams, DynArgs)"}});
  };
  for (auto &[key, families] : dynFamilies) {
    const auto &[dt, d] = key;
    std::string E = dt == "f16" ? "kF16" : "kBF16";
    std::string ED = E + ", " + std::to_string(d);
    std::string typed = "_" + dt, sized = typed + "_d" + std::to_string(d);
    std::string smem = "  __shared__ __align__(16) DynShared<" +
                       std::to_string(d) + "> sh;\n";
    for (const std::string &f : families) {
      if (f == "vertical_slash") {
        dynKernel("tessera_vs_scores" + sized,
                  "  vsScores<" + ED + ">(p, a, g);\n", "index");
        dynKernel("tessera_vs_softmax", "  vsSoftmax(p, a);\n", "index");
        dynKernel("tessera_vs_sums", "  vsSums(p, a);\n", "index");
        dynKernel("tessera_vs_select", "  vsSelect(p, a);\n", "index");
        dynKernel("tessera_vs_attend" + sized,
                  smem + "  vsAttend<" + ED + ", bundle::DynPats>(p, a, g, sh);\n",
                  "dynamic_attention");
      } else if (f == "block_topk") {
        dynKernel("tessera_bt_pool" + typed,
                  "  btPool<" + E + ">(p, a, g);\n", "index");
        dynKernel("tessera_bt_scores", "  btScores(p, a);\n", "index");
        dynKernel("tessera_bt_take", "  btTake(p, a);\n", "index");
        dynKernel("tessera_bt_select", "  btSelect(p, a);\n", "index");
        dynKernel("tessera_bt_attend" + sized,
                  smem + "  btAttend<" + ED + ", bundle::DynPats>(p, a, g, sh);\n",
                  "dynamic_attention");
      } else {
        dynKernel("tessera_rt_seed" + typed, "  rtSeed<" + E + ">(p, a, g);\n",
                  "index");
        dynKernel("tessera_rt_assign_keys" + typed,
                  "  rtAssign<" + E + ">(p, a, g, 0);\n", "index");
        dynKernel("tessera_rt_update" + typed,
                  "  rtUpdate<" + E + ">(p, a, g);\n", "index");
        dynKernel("tessera_rt_assign_queries" + typed,
                  "  rtAssign<" + E + ">(p, a, g, 1);\n", "index");
        dynKernel("tessera_rt_sort", "  rtSort(p, a);\n", "index");
        dynKernel("tessera_rt_attend" + sized,
                  smem + "  rtAttend<" + ED + ", bundle::DynPats>(p, a, g, sh);\n",
                  "dynamic_attention");
        if (dynMerge[key])
          dynKernel("tessera_rt_rest" + sized,
                    smem + "  rtRest<" + ED +
                        ", bundle::DynPats>(p, a, g, sh);\n",
                    "dynamic_attention");
      }
    }
  }

  // The kernels' registration with the host emulator (tests only; NVRTC
  // never defines TESSERA_EMULATE).
  os << "#ifdef TESSERA_EMULATE\n";
  for (const json::Value &k : kernelsJson) {
    const json::Object &o = *k.getAsObject();
    bool dyn = o.getString("args").value_or("") == "(AttnParams, DynArgs)";
    os << (dyn ? "TESSERA_EMU_DYN_KERNEL(" : "TESSERA_EMU_KERNEL(")
       << o.getString("name").value_or("") << ")\n";
  }
  os << "#endif\n";
  os.flush();
  {
    size_t at = bundle.source.find(kDynamicHeadersMarker.str());
    std::string headers =
        anyDynamic ? std::string(tessera::embedded::kDynamicArgsH) + "\n" +
                         tessera::embedded::kDynamicIndexCuh + "\n"
                   : std::string();
    bundle.source.replace(at, kDynamicHeadersMarker.size(), headers);
  }

  llvm::SHA256 hash;
  hash.update(bundle.source);
  json::Array archs;
  for (const char *a : kBundleArchs)
    archs.push_back(a);
  bundle.manifest = json::Object{
      {"format", "tessera-bundle"},
      {"version", 1},
      {"model", model.getSymName().str()},
      {"source", "bundle.cu"},
      {"source_sha256", llvm::toHex(hash.final(), /*LowerCase=*/true)},
      {"archs", std::move(archs)},
      {"nvrtc_options", json::Array{"-std=c++17"}},
      {"kernels", std::move(kernelsJson)},
      {"layers", std::move(layersJson)},
  };
  return bundle;
}
