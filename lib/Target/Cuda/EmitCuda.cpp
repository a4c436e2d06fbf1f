//===- EmitCuda.cpp - block schedules to CUDA bundles ---------------------===//

#include "tessera/Target/CudaEmitter.h"

#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Masks.h"
#include "tessera/Schedule/Runs.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/RunOps.h"

#include "BackwardEmit.h"
#include "EmbeddedKernel.h"
#include "tessera/kernel/DynamicKernels.h"

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

/// The attention kernel's shape per head_dim: warps of 16 query rows each
/// (the query block is 16 x warps rows, the block 32 x warps threads) and
/// the blocks per SM asked of ptxas (__launch_bounds__). 128-row blocks
/// where the registers of a 16-row warp allow (docs/PERFORMANCE.md, the
/// ptxas table: no spills, 8 warps per SM at least).
/// Head_dim 256 keeps Q in shared memory (its fragments would take the
/// registers O needs) and so needs more than the 48 KiB of static shared
/// memory: its tiles are dynamic shared memory, sized in the manifest.
struct KernelShape {
  int64_t headDim, warps, minBlocks;
  bool qResident;
  int64_t threads() const { return 32 * warps; }
  int64_t blockQ() const { return 16 * warps; }
  /// The tiles' bytes (PipeTiles: Q rows if resident, a key and a value
  /// tile of 64 rows; rows of head_dim elements, or head_dim + 8 when
  /// head_dim is not a multiple of 64).
  int64_t sharedBytes() const {
    int64_t pitch = headDim % 64 == 0 ? headDim : headDim + 8;
    return ((qResident ? blockQ() : 0) + 128) * pitch * 2;
  }
  /// Dynamic shared memory the launch passes (0: the tiles are static).
  int64_t dynamicShared() const { return qResident ? sharedBytes() : 0; }
};

KernelShape kernelShape(int64_t headDim) {
  if (headDim == 256)
    return {headDim, 4, 1, true};
  return {headDim, 8, 1, false};
}

/// The register budget of one attention kernel, in run-expression nodes of
/// the patterns it dispatches to (each pattern's enumeration and masks are
/// inlined into the kernel, and their live values add up). A kernel whose
/// patterns would pass it is split into several kernels (parts), each
/// launched over its own heads. Calibrated with NVRTC (docs/bundles.md,
/// "Split kernels"): no part of test/Target/Cuda/split.mlir's 16-pattern
/// layer or of the catalogue spills at head_dim 64 to 256. (24 held at
/// head_dim 96 and 128 until the kernels' guarded second pass
/// (FlashForward.cuh's guardRerun) came: then split.test's d128 parts
/// spilled at 24, 20 (sm_80) and 16 (sm_90); 12 holds.)
/// At head_dim 256 the O accumulators alone take 128 registers a thread:
/// one pattern per kernel (two of the 16 patterns of split.test's layer
/// together already spill there).
int64_t partBudget(int64_t headDim) {
  return headDim == 256 ? 1 : (headDim == 64 ? 24 : 12);
}

/// A pattern's weight against partBudget: its run expression's nodes.
int64_t runWeight(const schedule::RunExpr &e) {
  int64_t w = 1;
  for (const schedule::RunExpr &c : e.children)
    w += runWeight(c);
  return w;
}

/// One member function of a dispatch struct: `signature` switching on `var`
/// over pattern ids, each case returning `before` + P<id> + `after`, others
/// `fallback`.
template <class Ids>
void emitSwitch(llvm::raw_ostream &os, llvm::StringRef signature,
                llvm::StringRef var, const Ids &ids, llvm::StringRef before,
                llvm::StringRef after, llvm::StringRef fallback) {
  os << "  static __device__ __forceinline__ " << signature << " {\n"
     << "    switch (" << var << ") {\n";
  for (int64_t id : ids)
    os << "    case " << id << ":\n      return " << before << "P" << id
       << after << ";\n";
  os << "    default:\n      return " << fallback << ";\n    }\n  }\n";
}

std::string dtypeName(Type t) { return t.isF16() ? "f16" : "bf16"; }

/// The per-sequence twin of each attention and fill kernel is named with
/// this suffix (the runtime's per-sequence calls launch it; docs/bundles.md).
constexpr const char *kSeqSuffix = "_seq";

/// The split-KV merge kernel of a (dtype, head_dim) (runtime: Api.cpp's
/// seqTwins, which builds the same name).
std::string mergeName(const std::string &dtype, int64_t headDim) {
  return "tessera_merge_" + dtype + "_d" + std::to_string(headDim);
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
constexpr llvm::StringLiteral kHopperHeadersMarker =
    "// @@TESSERA_HOPPER_HEADERS@@\n";

/// The sm_90a twin of an attention kernel (HopperForward.cuh, issue 18) is
/// named with this suffix; the head_dims it exists for; its threads (a
/// producer warpgroup and two consumers) and query rows per block.
constexpr const char *kHopperSuffix = "_wgmma";
constexpr int64_t kHopperThreads = 384, kHopperBlockQ = 128;
bool hasHopperKernel(int64_t headDim) {
  return headDim == 64 || headDim == 128;
}

/// The sm_90a twins of the dynamic groups' attention kernels
/// (HopperDynamic.cuh): a producer warpgroup and two consumers, each
/// walking one 64-row query tile (kernel::kHopperDynParts tiles a block:
/// the runtime launches kernel::dynTwinGrid of the mma.sync kernel's grid).
constexpr int64_t kHopperDynThreads = 384;
/// Whether a dynamic kernel (dynamicKernelNames) is an attention over the
/// index (it then has an sm_90a twin at head_dim 64 and 128).
bool isDynamicAttention(const std::string &name) {
  return name.find("_attend_") != std::string::npos ||
         name.find("_rest_") != std::string::npos;
}

/// The dynamic twins' dynamic_shared: sizeof(HopperDynTiles<D>) (per query
/// tile, two of them: the Q tile, kStages stages of a key and a value tile,
/// a guard copy of a value tile, the mbarriers (full and empty per stage,
/// verdict: 8 bytes each), the rerun flag (4 bytes), a 32-byte DynTile and
/// a 1552-byte DynRows per stage), rounded up to its 1024-byte alignment,
/// plus 1024 bytes for aligning it after the kernel's static shared memory.
int64_t hopperDynSharedBytes(int64_t headDim) {
  const int64_t tile = kTile * headDim * 2, parts = 2;
  const int64_t stages = headDim == 64 ? 4 : 2;
  const int64_t bytes =
      parts * ((2 + 2 * stages) * tile + 8 * (2 * stages + 1) + 4 +
               (32 + 1552) * stages);
  return (bytes + 1023) / 1024 * 1024 + 1024;
}

/// sizeof(HopperTiles<D>) (HopperForward.cuh; the emitted kernel
/// static_asserts it): the Q block (two key tiles' bytes), kStages stages
/// of a key and a value tile, two guard copies of a value tile, then the
/// mbarriers (qFull, full and empty per stage, verdict: 8 bytes each), the
/// rerun flag (padded to 8) and a 16-byte descriptor per stage; the whole
/// rounded up to its 1024-byte alignment.
int64_t hopperSharedBytes(int64_t headDim) {
  const int64_t tile = kTile * headDim * 2;
  const int64_t stages = headDim == 64 ? 4 : 3;
  const int64_t bytes =
      (4 + 2 * stages) * tile + 8 * (2 + 2 * stages) + 8 + 16 * stages;
  return (bytes + 1023) / 1024 * 1024;
}

/// The family and parameters of a dynamic group's leaf (and the pattern's
/// split around it), or why a bundle cannot hold it.
bool describeDynamic(PatternAttrInterface pattern, json::Object &out,
                     semantics::DynamicSplit &split, std::string &why) {
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
    out["family"] = "block_topk";
    out["params"] = json::Object{{"block", bt.getBlock()},
                                 {"gamma", bt.getGamma().value},
                                 {"top_k", bt.getTopK()},
                                 {"min_blocks", bt.getMinBlocks()},
                                 {"max_blocks", bt.getMaxBlocks()},
                                 {"tau", bt.getTau().value}};
    return true;
  }
  if (auto bi = dyn_cast<BlockIndexAttr>(split.leaf)) {
    // The caller's lists: no index kernel, the attention over them only
    // (biAttend). block_q and block_k are multiples of 64 (the attribute's
    // verifier): a 64-row query tile lies in at most two query blocks, a
    // 64-key tile in one key block.
    if (bi.getBlockQ() % kTile || bi.getBlockK() % kTile) {
      why = "block_index with block_q = " + std::to_string(bi.getBlockQ()) +
            ", block_k = " + std::to_string(bi.getBlockK()) +
            ": the CUDA kernel needs multiples of 64 (whole 64x64 tiles)";
      return false;
    }
    out["family"] = "block_index";
    out["params"] = json::Object{{"block_q", bi.getBlockQ()},
                                 {"block_k", bi.getBlockK()}};
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

/// One bundle being emitted, in named parts: the prelude, each layer (its
/// dynamic and static groups' generated code, its tables, its manifest
/// entry), then the bundle's indexes of layers and patterns, the kernels of
/// each (dtype, head_dim), the dynamic groups' kernels, the emulator's
/// registrations and the manifest. Each part appends to the source in the
/// order the bundle holds them.
class BundleEmitter {
public:
  BundleEmitter(ModelOp model, llvm::StringRef sourceName, int64_t budget,
                bool headRouting)
      : model(model), sourceName(sourceName), budgetOverride(budget),
        headRouting(headRouting), os(bundle.source), dynHeadsOs(dynHeads),
        dynTablesOs(dynTables) {}

  FailureOr<Bundle> run() {
    emitPrelude();
    for (auto sched : model.getBody().front().getOps<ScheduleOp>())
      emitLayer(sched);
    if (!ok)
      return failure();
    if (position == 0) {
      model.emitError("the model has no layer to emit");
      return failure();
    }
    splitKernels();
    emitLayerIndexes();
    emitGroupCode();
    os << "} // namespace bundle\n} // namespace kernel\n"
       << "} // namespace tessera\n\n";
    emitAttentionKernels();
    emitFillKernels();
    emitMergeKernels();
    emitBackwardKernels();
    emitDynamicKernels();
    emitPermutedKernels();
    for (const auto &[key, families] : dynBackwardFamilies)
      backward::emitDynamicBackwardKernels(os, key.first, key.second, families,
                                           kernelsJson);
    emitEmulatorRegistrations();
    os.flush();
    pasteHeaders();
    finishManifest();
    return std::move(bundle);
  }

private:
  using KernelKey = std::pair<std::string, int64_t>; // (dtype, head_dim)

  void emitPrelude() {
    os << "// Generated by attn-translate from " << sourceName << " (model @"
       << model.getSymName() << "). Do not edit.\n"
       << "// Compile with NVRTC for sm_80 or later; see the manifest.\n\n"
       << "// Kernels have C linkage (the emulator of "
          "tessera/kernel/Emulate.h,\n"
       << "// which compiles bundles for the host in tests, makes them "
          "static).\n"
       << "#ifndef TESSERA_EXTERN_C\n#define TESSERA_EXTERN_C extern \"C\"\n"
       << "#endif\n\n"
       << tessera::embedded::kProgramH << "\n"
       << tessera::embedded::kFlashForwardCuh << "\n"
       << tessera::embedded::kMasksCuh << "\n"
       << tessera::embedded::kBackwardParamsH << "\n"
       << tessera::embedded::kFlashBackwardCuh << "\n"
       << kDynamicHeadersMarker << kHopperHeadersMarker
       << "namespace tessera {\nnamespace kernel {\nnamespace bundle {\n\n";
  }

  void fail(ScheduleOp sched, const llvm::Twine &why) {
    sched.emitError("layer ") << sched.getIndex() << ": " << why;
    ok = false;
  }

  /// The id of the generated code of the pattern named `key` (shared by
  /// every group, layer and kernel that has it), its code emitted the first
  /// time (from `runs`, or the pattern's own runs where null), with its
  /// partial-tile masks, P<id>Mask, from the same runs: the attention
  /// kernels' Groups::keep, and the dynamic kernels' DynPats::keep for a
  /// dynamic group's `with` and `without`.
  int64_t patternCode(const std::string &key, const semantics::Pattern &pat,
                      const schedule::RunExpr *runs) {
    auto [it, fresh] =
        patternIds.insert({key, static_cast<int64_t>(patternIds.size())});
    if (fresh) {
      std::string name = "P" + std::to_string(it->second);
      const schedule::RunExpr own =
          runs ? schedule::RunExpr() : schedule::buildRuns(pat);
      const schedule::RunExpr &expr = runs ? *runs : own;
      groupCode += "// " + name + ": " + key + "\n" +
                   schedule::emitGroupCode(pat, expr, name) + "\n";
      if (runs)
        patternWeight[it->second] = runWeight(*runs);
      if (runs) // a static group's: the backward walks it transposed
        groupCode += backward::transposedPatternCode(*runs, it->second);
      groupCode += "// " + name + "Mask: the partial-tile masks of " + name +
                   ", from the closed form of each leaf of its runs "
                   "(Masks.cuh).\n" +
                   schedule::emitMaskCode(expr, name + "Mask") + "\n";
    }
    return it->second;
  }

  void emitLayer(ScheduleOp sched) {
    Type dtype = sched.getDtype();
    int64_t d = sched.getHeadDim();
    if (!dtype.isF16() && !dtype.isBF16())
      return fail(sched, "the CUDA kernel supports f16 and bf16, not f32");
    if (d != 64 && d != 96 && d != 128 && d != 256)
      return fail(sched, "the CUDA kernel supports head_dim 64, 96, 128 and "
                         "256, not " +
                             llvm::Twine(d));
    if (sched.getBlockQ() != kTile || sched.getBlockK() != kTile)
      return fail(sched, "the CUDA kernel uses 64 x 64 tiles; schedule with "
                         "--attn-schedule=\"block-q=64 block-k=64\"");
    json::Array dynamicJson;
    std::string dynTable;
    if (!emitDynamicGroups(sched, {dtypeName(dtype), d}, dynamicJson,
                           dynTable))
      return;
    std::vector<schedule::HeadGroup> groups;
    json::Array groupsJson;
    std::vector<int64_t> groupPattern;
    json::Array layoutsJson;
    collectStaticGroups(sched, {dtypeName(dtype), d}, groups, groupsJson,
                        groupPattern, layoutsJson);
    if (!sched.getSkipped().empty())
      groups.push_back({semantics::Pattern{semantics::Skip{}},
                        std::vector<int64_t>(sched.getSkipped().begin(),
                                             sched.getSkipped().end())});
    schedule::LayerSchedule table;
    std::string error;
    if (!schedule::buildLayerSchedule(groups, sched.getNumHeads(), table,
                                      error))
      return fail(sched, error);
    std::string p = "l" + std::to_string(position);
    emitLayerTable(sched, table, groupPattern, p);
    kernels.insert({dtypeName(dtype), d});
    // A group that failed (diagnosed) has no pattern id: the bundle is not
    // emitted, but the other layers are still checked.
    std::vector<int64_t> slotPattern;
    for (int64_t g : table.headGroup)
      slotPattern.push_back(size_t(g) < groupPattern.size()
                                ? groupPattern[size_t(g)]
                                : -1);
    layerSlots.push_back({{dtypeName(dtype), d}, std::move(slotPattern)});
    if (!table.skippedHeads.empty())
      fillDims.insert(d);
    json::Object layer = layerManifest(sched, table, std::move(groupsJson));
    if (!layoutsJson.empty()) {
      layer["layouts"] = std::move(layoutsJson);
      // The permuted groups' kernel (Permuted.cuh, on the dynamic kernels'
      // pipeline: head_dim 64, 96 and 128); without it the runtime runs
      // them in the original order.
      if (d <= 128) {
        permutedKernels.insert({dtypeName(dtype), d});
        layer["permuted_kernel"] = permutedName(dtypeName(dtype), d);
        layer["permuted_routes"] = true; // takes PermArgs::routed
        std::set<int64_t> layoutGroups;
        for (const json::Value &g : *layer.getArray("layouts"))
          layoutGroups.insert(*g.getAsObject()->getInteger("group"));
        std::set<int64_t> &slots = permutedSlots[position];
        for (size_t s = 0; s < table.headGroup.size(); ++s)
          if (layoutGroups.count(table.headGroup[s]))
            slots.insert(int64_t(s));
      }
    }
    // Per-token head routing on CUDA runs on the same kernel (its
    // PermArgs::routed tables; docs/runtime.md, "Per-token head routing"):
    // asked for (--head-routing), every layer of static heads has it.
    if (headRouting && d <= 128 && dynamicJson.empty() &&
        !layer.get("permuted_kernel")) {
      permutedKernels.insert({dtypeName(dtype), d});
      layer["permuted_kernel"] = permutedName(dtypeName(dtype), d);
      layer["permuted_routes"] = true;
    }
    // The backward: static heads, and the dynamic groups whose family has
    // CUDA backward kernels (every family; merging routing also the rest's).
    bool dynBackward = true;
    for (const json::Value &g : dynamicJson)
      dynBackward =
          dynBackward &&
          backward::hasDynamicBackward(
              g.getAsObject()->getString("family").value_or(""), d,
              g.getAsObject()->getBoolean("merge_without").value_or(false));
    if (backward::hasBackwardKernels(d) && dynBackward) {
      layer["backward"] = backward::layerBackwardJson(
          dtypeName(dtype), d, !table.skippedHeads.empty(),
          !dynamicJson.empty());
      for (json::Value &g : dynamicJson) {
        const std::string family =
            g.getAsObject()->getString("family").value_or("").str();
        const bool merge =
            g.getAsObject()->getBoolean("merge_without").value_or(false);
        (*g.getAsObject())["backward"] = backward::dynamicGroupBackwardJson(
            family, dtypeName(dtype), d, merge);
        dynBackwardFamilies[{dtypeName(dtype), d}].insert(family);
        if (merge && family == "routing") // the rest's kernels too
          dynBackwardFamilies[{dtypeName(dtype), d}].insert("routing_rest");
      }
    }
    if (!dynamicJson.empty()) {
      layer["dynamic_groups"] = std::move(dynamicJson);
      dynTablesOs << "__device__ const DynGroupTable dynGroups_" << p
                  << "[] = {" << dynTable << "};\n";
      dynTableNames.push_back("dynGroups_" + p);
    } else {
      dynTableNames.push_back("nullptr");
    }
    layersJson.push_back(std::move(layer));
    ++position;
  }

  /// The dynamic groups of a layer: their manifest entries, generated code
  /// (with and without the leaf), head lists and table row; false where one
  /// cannot be emitted (diagnosed).
  bool emitDynamicGroups(ScheduleOp sched, const KernelKey &key,
                         json::Array &dynamicJson, std::string &dynTable) {
    bool dynamicOk = true;
    int64_t dynIndex = 0;
    for (auto g : sched.getBody().front().getOps<GroupOp>()) {
      if (g.getPattern().isStatic())
        continue;
      std::string why;
      json::Object entry;
      semantics::DynamicSplit split;
      // The dynamic kernels' tiles (DynTiles: K, V and half of Q at 128)
      // are static shared memory: 48 KiB at most.
      if (key.second > 128)
        why = "the dynamic kernels support head_dim 64, 96 and 128, not " +
              std::to_string(key.second);
      if (!why.empty() || !describeDynamic(g.getPattern(), entry, split, why)) {
        fail(sched, "head group " + llvm::Twine(g.getId()) + " (heads from " +
                        llvm::Twine(g.getHeads().front()) + "): " + why);
        dynamicOk = false;
        continue;
      }
      std::string text = llvm::to_string(g.getPattern());
      int64_t ids[2];
      for (int side = 0; side < 2; ++side) {
        const semantics::Pattern &pat = side ? split.without : split.with;
        ids[side] = patternCode(
            text + (side ? " [leaf: skip]" : " [leaf: dense]"), pat, nullptr);
        dynPatterns.insert(ids[side]);
        schedule::Program prog;
        std::string error;
        if (!schedule::lowerPattern(pat, prog, error)) {
          fail(sched, error);
          dynamicOk = false;
        }
        entry[side ? "without" : "with"] = programJson(prog);
      }
      std::string family = entry.getString("family").value_or("").str();
      dynFamilies[key].insert(family);
      bool merge = entry.getBoolean("merge_without").value_or(false);
      dynMerge[key] |= merge;
      // Block top-k with tau > 0: FlexPrefill's two extra index kernels.
      bool flex = entry.getObject("params")->getNumber("tau").value_or(0) > 0;
      dynFlex[key] |= flex;
      json::Array kernelNames;
      for (const std::string &k : kernel::dynamicKernelNames(
               family, key.first, key.second, merge, flex))
        kernelNames.push_back(k);
      // The sm_90a twins of the attention kernels, for the runtime's
      // wgmma path (HopperDynamic.cuh).
      json::Array twins;
      for (const json::Value &k : kernelNames)
        if (hasHopperKernel(key.second) &&
            isDynamicAttention(k.getAsString()->str()))
          twins.push_back(k.getAsString()->str() + kHopperSuffix);
      entry["kernels"] = std::move(kernelNames);
      if (!twins.empty())
        entry["wgmma"] =
            json::Object{{"kernels", std::move(twins)},
                         {"threads", kHopperDynThreads},
                         {"dynamic_shared", hopperDynSharedBytes(key.second)}};
      entry["heads"] = toJson(g.getHeads());
      entry["pattern"] = text;
      std::string hp = "dynHeads_l" + std::to_string(position) + "_g" +
                       std::to_string(dynIndex);
      printArray(dynHeadsOs, "i64", hp, g.getHeads());
      dynTable += (dynIndex ? ", " : "") + std::string("{") + hp + ", " +
                  std::to_string(g.getHeads().size()) + ", " +
                  std::to_string(ids[0]) + ", " + std::to_string(ids[1]) + "}";
      dynamicJson.push_back(std::move(entry));
      ++dynIndex;
    }
    return dynamicOk;
  }

  /// A lowered program as the manifest holds it.
  static json::Object programJson(schedule::Program &prog) {
    json::Array nodes;
    for (const kernel::Node &n : prog.nodes)
      nodes.push_back(json::Array{n.kind, n.axis, n.a, n.b, n.c, n.dataBegin,
                                  n.dataSize});
    if (prog.data.empty())
      prog.data.push_back(0);
    return json::Object{
        {"nodes", std::move(nodes)},
        {"data",
         toJson(std::vector<int64_t>(prog.data.begin(), prog.data.end()))}};
  }

  /// The static groups of a layer: their patterns, generated code (checked
  /// against the runs the IR shows) and manifest entries.
  void collectStaticGroups(ScheduleOp sched, const KernelKey &key,
                           std::vector<schedule::HeadGroup> &groups,
                           json::Array &groupsJson,
                           std::vector<int64_t> &groupPattern,
                           json::Array &layoutsJson) {
    int64_t launchGroup = 0; // the program's group id (buildLayerSchedule)
    for (auto g : sched.getBody().front().getOps<GroupOp>()) {
      if (!g.getPattern().isStatic())
        continue;
      // A group with a layout (--attn-permute): the runtime runs it in the
      // permuted order (docs/bundles.md, "Layouts").
      if (PeriodTransposeAttr layout = g.getLayoutAttr()) {
        json::Object entry{{"group", launchGroup},
                           {"period", layout.getPeriod()},
                           {"prefix", layout.getPrefix()}};
        if (!layout.getKept().empty()) // interleaved segments only
          entry["kept"] = toJson(layout.getKept());
        layoutsJson.push_back(std::move(entry));
      }
      if (!isa<SkipAttr>(g.getPattern()))
        ++launchGroup;
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
      int64_t id = patternCode(llvm::to_string(g.getPattern()),
                               groups.back().pattern, &runs);
      groupPattern.push_back(id);
      kernelPatterns[key].insert(id);
      groupsJson.push_back(
          json::Object{{"heads", toJson(g.getHeads())},
                       {"pattern", llvm::to_string(g.getPattern())}});
    }
  }

  /// A layer's device tables: each launch group's pattern, the computed and
  /// skipped heads.
  void emitLayerTable(ScheduleOp sched, const schedule::LayerSchedule &table,
                      const std::vector<int64_t> &groupPattern,
                      const std::string &p) {
    os << "// Layer " << sched.getIndex() << " (position " << position
       << "): launch groups " << table.groupBegin.size() - 1 << ", "
       << "computed heads " << table.computedHead.size() << ", skipped heads "
       << table.skippedHeads.size() << ".\n";
    printArray(os, "i64", "patternOf_" + p, groupPattern);
    printArray(os, "i64", "computedHead_" + p, table.computedHead);
    printArray(os, "i64", "headGroup_" + p, table.headGroup);
    printArray(os, "i64", "skipped_" + p, table.skippedHeads);
    os << "__device__ const LayerTable table_" << p
       << " = {nullptr, nullptr, nullptr, computedHead_" << p
       << ", headGroup_" << p << ", " << table.computedHead.size() << ", "
       << sched.getNumHeads() << ", skipped_" << p << ", "
       << table.skippedHeads.size() << "};\n\n";
  }

  /// A layer's manifest entry. The kernels run the groups' generated code;
  /// the postfix program goes to the manifest only (the CPU runtime walks
  /// it).
  json::Object layerManifest(ScheduleOp sched,
                             const schedule::LayerSchedule &table,
                             json::Array groupsJson) {
    Type dtype = sched.getDtype();
    int64_t d = sched.getHeadDim();
    json::Array nodesJson;
    for (const kernel::Node &n : table.nodes)
      nodesJson.push_back(
          json::Array{n.kind, n.axis, n.a, n.b, n.c, n.dataBegin, n.dataSize});
    auto list = [](const auto &v) {
      return toJson(std::vector<int64_t>(v.begin(), v.end()));
    };
    json::Object layer{
        {"index", sched.getIndex()},
        {"position", position},
        {"num_heads", sched.getNumHeads()},
        {"num_kv_heads", sched.getNumKvHeads()},
        {"head_dim", d},
        {"dtype", dtypeName(dtype)},
        {"block_q", kTile},
        {"block_k", kTile},
        {"kernel_block_q", kernelShape(d).blockQ()},
        {"kernel_threads", kernelShape(d).threads()},
        {"kernel_dynamic_shared", kernelShape(d).dynamicShared()},
        {"grid", json::Object{{"x", "ceil(Nq / " +
                                        std::to_string(kernelShape(d).blockQ()) +
                                        ")"},
                              {"y", int64_t(table.computedHead.size())},
                              {"z", "batch"}}},
        {"computed_heads", list(table.computedHead)},
        {"head_groups", list(table.headGroup)},
        {"skipped_heads", list(table.skippedHeads)},
        {"groups", std::move(groupsJson)},
        {"program", json::Object{{"nodes", std::move(nodesJson)},
                                 {"data", list(table.data)},
                                 {"group_begin", list(table.groupBegin)}}}};
    if (!table.skippedHeads.empty()) {
      layer["fill_kernel"] = fillName(d);
      layer["fill_grid"] =
          json::Object{{"x", "ceil(Nq / 128)"},
                       {"y", int64_t(table.skippedHeads.size())},
                       {"z", "batch"}};
    }
    return layer;
  }

  /// Every layer's table and pattern list, indexed by the layer's position.
  void emitLayerIndexes() {
    // The layers, then (permuted_position) the layers with layouts again,
    // their attention kernels' slots without the permuted groups' heads.
    os << "__device__ const LayerTable *const tables[] = {";
    for (int64_t i = 0; i < position; ++i)
      os << (i ? ", " : "") << "&table_l" << i;
    for (const auto &pl : permutedLayers)
      os << ", &table_l" << pl.first;
    os << "};\n";
    os << "__device__ const i64 *const patternOf[] = {";
    for (int64_t i = 0; i < position; ++i)
      os << (i ? ", " : "") << "patternOf_l" << i;
    for (const auto &pl : permutedLayers)
      os << ", patternOf_l" << pl.first;
    os << "};\n\n";
    emitSlotTables();
  }

  /// Splits each (dtype, head_dim)'s patterns into parts of at most
  /// partBudget (a heavier pattern alone), in pattern order, and gives
  /// every layer its kernels: the parts it uses with their launch slots.
  void splitKernels() {
    for (const KernelKey &key : kernels) {
      std::vector<std::vector<int64_t>> &parts = kernelParts[key];
      int64_t used = 0;
      for (int64_t id : kernelPatterns[key]) {
        int64_t w = patternWeight.count(id) ? patternWeight[id] : 1;
        if (parts.empty() ||
            (used + w > (budgetOverride > 0 ? budgetOverride
                                            : partBudget(key.second)) &&
             !parts.back().empty())) {
          parts.emplace_back();
          used = 0;
        }
        parts.back().push_back(id);
        partOf[{key, id}] = int64_t(parts.size()) - 1;
        used += w;
      }
    }
    for (size_t i = 0; i < layerSlots.size(); ++i) {
      const auto &[key, slotPattern] = layerSlots[i];
      std::vector<std::vector<int64_t>> slots(kernelParts[key].size());
      for (size_t s = 0; s < slotPattern.size(); ++s)
        slots[size_t(partOf[{key, slotPattern[s]}])].push_back(int64_t(s));
      json::Array launches;
      json::Array hopper; // the same launches' sm_90a twins
      for (size_t part = 0; part < slots.size(); ++part)
        if (!slots[part].empty()) {
          launches.push_back(json::Object{
              {"name", partName(key, part)},
              {"slots", int64_t(slots[part].size())}});
          hopper.push_back(partName(key, part) + kHopperSuffix);
        }
      json::Object &layer = *layersJson[i].getAsObject();
      // A layer whose groups with layouts all run permuted: the same
      // kernels over the other slots, through a second entry of the
      // tables (position permuted_position; docs/bundles.md "Layouts").
      if (auto it = permutedSlots.find(int64_t(i)); it != permutedSlots.end()) {
        std::vector<std::vector<int64_t>> rest(slots.size());
        json::Array counts;
        for (size_t part = 0; part < slots.size(); ++part) {
          for (int64_t s : slots[part])
            if (!it->second.count(s))
              rest[part].push_back(s);
          if (!slots[part].empty())
            counts.push_back(int64_t(rest[part].size()));
        }
        layer["permuted_position"] =
            int64_t(layerSlots.size() + permutedLayers.size());
        layer["permuted_slots"] = std::move(counts);
        permutedLayers.push_back({int64_t(i), std::move(rest)});
      }
      layer.insert({"kernels", std::move(launches)});
      if (hasHopperKernel(key.second) && !hopper.empty())
        layer["wgmma"] =
            json::Object{{"kernels", std::move(hopper)},
                         {"block_q", kHopperBlockQ},
                         {"threads", kHopperThreads},
                         {"dynamic_shared", hopperSharedBytes(key.second)}};
      layerPartSlots.push_back(std::move(slots));
    }
  }

  /// The attention kernel of part `part` of `key`: tessera_attn_<dtype>_d<D>
  /// for the first part, with _p<part> after it for the others.
  std::string partName(const KernelKey &key, size_t part) const {
    return "tessera_attn_" + key.first + "_d" + std::to_string(key.second) +
           (part ? "_p" + std::to_string(part) : "");
  }

  /// Each attention kernel's launch slots per layer (its blockIdx.y picks
  /// one): slots_<kernel>[layer][y], null where the layer does not launch
  /// it.
  void emitSlotTables() {
    for (const KernelKey &key : kernels)
      for (size_t part = 0; part < kernelParts[key].size(); ++part) {
        std::string name = partName(key, part);
        std::vector<std::string> perLayer;
        for (size_t i = 0; i < layerSlots.size(); ++i) {
          if (layerSlots[i].first != key || layerPartSlots[i][part].empty()) {
            perLayer.push_back("nullptr");
            continue;
          }
          std::string table = "slots_l" + std::to_string(i) + "_" + name;
          printArray(os, "i64", table, layerPartSlots[i][part]);
          perLayer.push_back(table);
        }
        for (const auto &[i, rest] : permutedLayers) {
          if (layerSlots[size_t(i)].first != key || rest[part].empty()) {
            perLayer.push_back("nullptr");
            continue;
          }
          std::string table =
              "slots_l" + std::to_string(i) + "_unpermuted_" + name;
          printArray(os, "i64", table, rest[part]);
          perLayer.push_back(table);
        }
        os << "__device__ const i64 *const slots_" << name << "[] = {";
        for (size_t i = 0; i < perLayer.size(); ++i)
          os << (i ? ", " : "") << perLayer[i];
        os << "};\n";
      }
    os << "\n";
  }

  /// The groups' generated code, then the dynamic groups' tables and one
  /// dispatch over their with/without patterns.
  void emitGroupCode() {
    os << "// The generated code of the head groups: one struct per distinct "
          "pattern.\n\n"
       << groupCode;
    if (dynPatterns.empty())
      return;
    os << "// Dynamic head groups.\n"
       << dynHeads << dynTables
       << "__device__ const DynGroupTable *const dynTables[] = {";
    for (size_t i = 0; i < dynTableNames.size(); ++i)
      os << (i ? ", " : "") << dynTableNames[i];
    // The dynamic kernels' view of the `with` and `without` patterns: runs,
    // keep bits of a contiguous tile, and of a gathered one (each pattern's
    // code inside the switch, so that the pair loops run without it).
    os << "};\n\nstruct DynPats {\n";
    emitSwitch(os, "Run runFrom(i64 id, const RunCtx &ctx, i64 kb)", "id",
               dynPatterns, "", "::runFrom(ctx, kb)", "noRun()");
    emitSwitch(os,
               "u32 keep(i64 id, i64 rowPos, i64 k0, int c2, i64 nk, i64 "
               "head, i64 numHeads)",
               "id", dynPatterns, "",
               "Mask::keep(rowPos, k0, c2, nk, head, numHeads)", "0");
    emitSwitch(os,
               "u32 keepGathered(i64 id, i64 pos0, i64 pos1, const i64 *keys, "
               "int count, int c2, i64 head, i64 numHeads)",
               "id", dynPatterns, "gatheredBits<",
               ">(pos0, pos1, keys, count, c2, head, numHeads)", "0");
    os << "};\n\n";
  }

  /// One attention kernel per (dtype, head_dim): one launch serves every
  /// group of a layer (the pattern switches are uniform per thread block,
  /// its launch slot's group).
  void emitAttentionKernels() {
    for (const KernelKey &key : kernels)
      for (size_t part = 0; part < kernelParts[key].size(); ++part)
        emitAttentionKernel(key, part);
  }

  void emitAttentionKernel(const KernelKey &key, size_t part) {
    {
      const auto &[dt, d] = key;
      std::string name = partName(key, part);
      std::string groups =
          "Groups" + name.substr(std::string("tessera_attn").size());
      os << "namespace tessera {\nnamespace kernel {\nnamespace bundle {\n"
         << "struct " << groups << " {\n";
      emitSwitch(os, "Run runFrom(i64 pattern, const RunCtx &ctx, i64 kb)",
                 "pattern", kernelParts[key][part], "", "::runFrom(ctx, kb)",
                 "noRun()");
      emitSwitch(os,
                 "u32 keep(i64 pattern, i64 rowPos, i64 k0, int c2, i64 nk, "
                 "i64 head, i64 numHeads)",
                 "pattern", kernelParts[key][part], "",
                 "Mask::keep(rowPos, k0, c2, nk, head, numHeads)", "0");
      // The same bits in the form pipeForward's selects read (KeepNibbles).
      emitSwitch(os,
                 "KeepNibbles keepNibbles(i64 pattern, i64 rowPos, i64 k0, "
                 "int c2, int room, i64 head, i64 numHeads)",
                 "pattern", kernelParts[key][part], "rowNibbles(",
                 "Mask::rows(maskTileRoom(rowPos, k0, c2, room), head, "
                 "numHeads))",
                 "KeepNibbles{0u, 0u}");
      os << "};\n"
         << "} // namespace bundle\n} // namespace kernel\n"
         << "} // namespace tessera\n\n";
      const KernelShape shape = kernelShape(d);
      // The dense kernel, then its per-sequence twin (packed, paged,
      // positioned and head-range calls: pipeForward's SEQ), which reads
      // the same slot table.
      for (bool seq : {false, true}) {
        os << "TESSERA_EXTERN_C __global__ void __launch_bounds__("
           << shape.threads() << ", " << shape.minBlocks << ")\n"
           << name << (seq ? kSeqSuffix : "")
           << "(tessera::kernel::AttnParams p, int layer) {\n"
           << "  using namespace tessera::kernel;\n"
           << "  const LayerTable &t = *bundle::tables[layer];\n"
           << "  const i64 slot = bundle::slots_" << name
           << "[layer][blockIdx.y];\n"
           << (shape.qResident
                   ? "  TESSERA_DYNAMIC_TILES(smem, PipeTiles<" +
                         std::to_string(d) + ", " +
                         std::to_string(shape.blockQ()) + ">);\n"
                   : "  __shared__ __align__(128) PipeTiles<" +
                         std::to_string(d) + "> smem;\n")
           << "  pipeForward<k" << (dt == "f16" ? "F16" : "BF16") << ", " << d
           << ", " << shape.warps << ", "
           << (shape.qResident ? "true" : "false") << ", bundle::" << groups
           << (seq ? ", true" : "")
           << ">(t, p, smem, slot, "
              "bundle::patternOf[layer][t.headGroup[slot]]);\n"
           << "}\n\n";
        kernelsJson.push_back(
            json::Object{{"name", name + (seq ? kSeqSuffix : "")},
                         {"kind", seq ? "attention_seq" : "attention"},
                         {"dtype", dt},
                         {"head_dim", d},
                         {"threads", shape.threads()},
                         {"block_q", shape.blockQ()},
                         {"shared_bytes", shape.sharedBytes()},
                         {"dynamic_shared", shape.dynamicShared()},
                         {"block_k", kTile},
                         {"path", "mma_sync"},
                         {"args", "(AttnParams, int layer)"}});
      }
      if (hasHopperKernel(d))
        emitHopperKernel(key, name, groups);
    }
  }

  /// The sm_90a twin of attention kernel `name` (dense calls): compiled
  /// only where NVRTC targets sm_90a (and under the emulator), so that the
  /// bundle still compiles for sm_80 to sm_90; it reads the same slot table.
  void emitHopperKernel(const KernelKey &key, const std::string &name,
                        const std::string &groups) {
    const auto &[dt, d] = key;
    hopperKernels = true;
    os << "#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(TESSERA_EMULATE)\n"
       << "TESSERA_EXTERN_C __global__ void __launch_bounds__("
       << kHopperThreads << ", 1)\n"
       << name << kHopperSuffix
       << "(tessera::kernel::AttnParams p,\n"
          "    const __grid_constant__ tessera::kernel::HopperMaps maps, "
          "int layer) {\n"
       << "  using namespace tessera::kernel;\n"
       << "  static_assert(sizeof(HopperTiles<" << d
       << ">) == " << hopperSharedBytes(d)
       << ", \"the manifest's dynamic_shared\");\n"
       << "  const LayerTable &t = *bundle::tables[layer];\n"
       << "  const i64 slot = bundle::slots_" << name
       << "[layer][blockIdx.y];\n"
       << "  TESSERA_HOPPER_TILES(sm, " << d << ");\n"
       << "  hopperForward<k" << (dt == "f16" ? "F16" : "BF16") << ", " << d
       << ", bundle::" << groups
       << ">(t, p, maps, sm, slot, "
          "bundle::patternOf[layer][t.headGroup[slot]]);\n"
       << "}\n#endif\n\n";
    kernelsJson.push_back(json::Object{{"name", name + kHopperSuffix},
                                       {"kind", "attention"},
                                       {"dtype", dt},
                                       {"head_dim", d},
                                       {"threads", kHopperThreads},
                                       {"block_q", kHopperBlockQ},
                                       {"shared_bytes", hopperSharedBytes(d)},
                                       {"dynamic_shared", hopperSharedBytes(d)},
                                       {"block_k", kTile},
                                       {"path", "wgmma"},
                                       {"arch", "sm_90a"},
                                       {"args", "(AttnParams, HopperMaps, "
                                                "int layer)"}});
  }

  /// The split-KV merge of each (dtype, head_dim) of the attention kernels
  /// (a per-sequence decode call's splits: FlashForward.cuh's
  /// seqMergeSplits, launched after the layer's `_seq` kernels).
  void emitMergeKernels() {
    for (const KernelKey &key : kernels) {
      const auto &[dt, d] = key;
      std::string name = mergeName(dt, d);
      os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(128)\n"
         << name << "(tessera::kernel::AttnParams p, int layer) {\n"
         << "  tessera::kernel::seqMergeSplits<tessera::kernel::k"
         << (dt == "f16" ? "F16" : "BF16") << ", " << d
         << ">(*tessera::kernel::bundle::tables[layer], p);\n}\n\n";
      kernelsJson.push_back(json::Object{{"name", name},
                                         {"kind", "merge_splits"},
                                         {"dtype", dt},
                                         {"head_dim", d},
                                         {"threads", 128},
                                         {"args", "(AttnParams, int layer)"}});
    }
  }

  /// The backward kernels of each (dtype, head_dim) they are built for
  /// (BackwardEmit.h), and the zero fill of skipped heads' dQ.
  void emitBackwardKernels() {
    for (const KernelKey &key : kernels)
      if (backward::hasBackwardKernels(key.second))
        backward::emitBackwardKernels(os, key.first, key.second,
                                      kernelPatterns[key], kernelsJson);
    for (int64_t d : fillDims)
      if (backward::hasBackwardKernels(d))
        backward::emitZeroKernel(os, d, kernelsJson);
  }

  /// The kernels that write O = 0 and LSE = -inf for skipped heads.
  void emitFillKernels() {
    for (int64_t d : fillDims)
      for (bool seq : {false, true}) {
        os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(128)\n"
           << fillName(d) << (seq ? kSeqSuffix : "")
           << "(tessera::kernel::AttnParams p, int layer) {\n"
           << "  tessera::kernel::" << (seq ? "fillSkippedSeq<" : "fillSkipped<")
           << d << ">(*tessera::kernel::bundle::tables[layer], p);\n}\n\n";
        kernelsJson.push_back(
            json::Object{{"name", fillName(d) + (seq ? kSeqSuffix : "")},
                         {"kind", seq ? "fill_skipped_seq" : "fill_skipped"},
                         {"head_dim", d},
                         {"threads", 128},
                         {"args", "(AttnParams, int layer)"}});
      }
  }

  /// The bodies of a dynamic family's kernels, in launch order (the order
  /// of dynamicKernelNames).
  static std::vector<std::string> dynamicBodies(const std::string &family,
                                                const std::string &dt,
                                                int64_t d, bool flex,
                                                const std::string &smem) {
    std::string E = dt == "f16" ? "kF16" : "kBF16";
    std::string ED = E + ", " + std::to_string(d);
    auto attend = [&](const char *fn) {
      return smem + "  " + fn + "<" + ED + ", bundle::DynPats>(p, a, g, sh);\n";
    };
    if (family == "vertical_slash")
      return {"  vsScores<" + ED + ">(p, a, g);\n", "  vsSoftmax(p, a);\n",
              "  vsSums(p, a);\n", "  vsSelect(p, a);\n", attend("vsAttend")};
    if (family == "block_topk" && flex)
      return {"  btPool<" + E + ">(p, a, g);\n",
              "  btScores(p, a);\n",
              "  btFlexRows<" + E + ">(p, a, g);\n",
              "  btFlexMode(p, a);\n",
              "  btTake(p, a);\n",
              "  btSelect(p, a);\n",
              attend("btAttend")};
    if (family == "block_topk")
      return {"  btPool<" + E + ">(p, a, g);\n", "  btScores(p, a);\n",
              "  btTake(p, a);\n", "  btSelect(p, a);\n", attend("btAttend")};
    if (family == "block_index")
      return {attend("biAttend")};
    return {"  rtSeed<" + E + ">(p, a, g);\n",
            "  rtAssign<" + E + ">(p, a, g, 0);\n",
            "  rtUpdate<" + E + ">(p, a, g);\n",
            "  rtAssign<" + E + ">(p, a, g, 1);\n", "  rtSort(p, a);\n",
            attend("rtAttend"), attend("rtRest")};
  }

  /// The kernels of the dynamic groups: thin wrappers over DynamicIndex.cuh
  /// with the bundle's tables, one per name of dynamicKernelNames.
  void emitDynamicKernels() {
    std::set<std::string> dynEmitted;
    for (auto &[key, families] : dynFamilies) {
      const auto &[dt, d] = key;
      std::string smem = "  __shared__ __align__(128) DynTiles<" +
                         std::to_string(d) + "> sh;\n";
      for (const std::string &f : families) {
        std::vector<std::string> bodies =
            dynamicBodies(f, dt, d, dynFlex[key], smem);
        std::vector<std::string> names =
            kernel::dynamicKernelNames(f, dt, d, dynMerge[key], dynFlex[key]);
        for (size_t i = 0; i < names.size(); ++i) {
          if (!dynEmitted.insert(names[i]).second)
            continue;
          // Two blocks per SM at least, up to 255 registers (ptxas
          // otherwise aims at more blocks with fewer registers and spills
          // on sm_90).
          os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(128, 2)\n"
             << names[i]
             << "(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a) "
                "{\n"
             << "  using namespace tessera::kernel;\n"
             << "  const DynGroupTable &g = "
                "bundle::dynTables[a.layer][a.group];\n"
             << "  (void)g;\n"
             << bodies[i] << "}\n\n";
          bool attention = bodies[i].rfind(smem, 0) == 0;
          kernelsJson.push_back(
              json::Object{{"name", names[i]},
                           {"kind", attention ? "dynamic_attention" : "index"},
                           {"threads", 128},
                           {"args", "(AttnParams, DynArgs)"}});
          if (attention && hasHopperKernel(d) && isDynamicAttention(names[i]))
            emitHopperDynKernel(names[i], d, bodies[i].substr(smem.size()));
        }
      }
    }
  }

  static std::string permutedName(const std::string &dt, int64_t d) {
    return "tessera_perm_attend_" + dt + "_d" + std::to_string(d);
  }

  /// The kernels of the groups with layouts (Permuted.cuh's
  /// permutedAttend), one per (dtype, head_dim): grid (query tiles of 64
  /// permuted slots, the group's heads, batch), 128 threads, static shared
  /// memory only (dynamic_shared 0), the walk and maps the runtime derives
  /// and uploads (PermArgs). Two blocks per SM
  /// asked of ptxas: with 128 threads alone it held sm_90a's head_dim 64
  /// kernel to 128 registers and spilled.
  void emitPermutedKernels() {
    for (const auto &[dt, d] : permutedKernels) {
      const std::string name = permutedName(dt, d);
      const std::string ds = std::to_string(d);
      os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(128, 2)\n"
         << name
         << "(tessera::kernel::AttnParams p, tessera::kernel::PermArgs a) {\n"
         << "  using namespace tessera::kernel;\n"
         << "  permutedAttend<k" << (dt == "f16" ? "F16" : "BF16") << ", " << ds
         << ">(p, a);\n}\n\n";
      kernelsJson.push_back(json::Object{{"name", name},
                                         {"kind", "permuted_attention"},
                                         {"dtype", dt},
                                         {"head_dim", d},
                                         {"threads", 128},
                                         {"block_q", kTile},
                                         {"block_k", kTile},
                                         {"dynamic_shared", 0},
                                         {"path", "mma_sync"},
                                         {"args", "(AttnParams, PermArgs)"}});
    }
  }

  /// The sm_90a twin of dynamic attention kernel `name` (HopperDynamic.cuh):
  /// `call` is the mma.sync kernel's call of the attention, which takes
  /// the twin's tiles and maps (HopperDyn) as its `sh`.
  void emitHopperDynKernel(const std::string &name, int64_t d,
                           const std::string &call) {
    hopperKernels = hopperDynKernels = true;
    const std::string ds = std::to_string(d);
    os << "#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(TESSERA_EMULATE)\n"
       << "TESSERA_EXTERN_C __global__ void __launch_bounds__("
       << kHopperDynThreads << ", 1)\n"
       << name << kHopperSuffix
       << "(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a,\n"
          "    const __grid_constant__ tessera::kernel::HopperMaps maps) {\n"
       << "  using namespace tessera::kernel;\n"
       << "  static_assert(sizeof(HopperDynTiles<" << ds
       << ">) + 1024 == " << hopperDynSharedBytes(d)
       << ", \"the manifest's dynamic_shared\");\n"
       << "  const DynGroupTable &g = bundle::dynTables[a.layer][a.group];\n"
       << "  TESSERA_HOPPER_DYN_TILES(tiles, " << ds << ");\n"
       << "  HopperDyn<" << ds << "> sh{tiles, maps};\n"
       << call << "}\n#endif\n\n";
    kernelsJson.push_back(
        json::Object{{"name", name + kHopperSuffix},
                     {"kind", "dynamic_attention"},
                     {"head_dim", d},
                     {"threads", kHopperDynThreads},
                     {"dynamic_shared", hopperDynSharedBytes(d)},
                     {"path", "wgmma"},
                     {"arch", "sm_90a"},
                     {"args", "(AttnParams, DynArgs, HopperMaps)"}});
  }

  /// The kernels' registration with the host emulator (tests only; NVRTC
  /// never defines TESSERA_EMULATE).
  void emitEmulatorRegistrations() {
    os << "#ifdef TESSERA_EMULATE\n";
    for (const json::Value &k : kernelsJson) {
      const json::Object &o = *k.getAsObject();
      bool dyn = o.getString("args").value_or("") == "(AttnParams, DynArgs)";
      bool dynHopper = o.getString("args").value_or("") ==
                       "(AttnParams, DynArgs, HopperMaps)";
      bool hopper = o.getString("path").value_or("") == "wgmma";
      bool bwd = o.getString("args").value_or("") == "(BwdParams, int layer)";
      bool bwdDyn = o.getString("args").value_or("") == "(BwdParams, DynArgs)";
      bool perm = o.getString("args").value_or("") == "(AttnParams, PermArgs)";
      os << (perm        ? "TESSERA_EMU_PERM_KERNEL("
             : bwdDyn    ? "TESSERA_EMU_BWD_DYN_KERNEL("
             : dyn       ? "TESSERA_EMU_DYN_KERNEL("
             : dynHopper ? "TESSERA_EMU_DYN_HOPPER_KERNEL("
             : hopper    ? "TESSERA_EMU_HOPPER_KERNEL("
             : bwd       ? "TESSERA_EMU_BWD_KERNEL("
                         : "TESSERA_EMU_KERNEL(")
         << o.getString("name").value_or("") << ")\n";
    }
    os << "#endif\n";
  }

  /// DynamicArgs.h and DynamicIndex.cuh where the prelude marked, in bundles
  /// with dynamic groups or permuted kernels only (Permuted.cuh after them
  /// for the latter); then the Hopper headers.
  void pasteHeaders() {
    size_t at = bundle.source.find(kDynamicHeadersMarker.str());
    std::string headers = dynPatterns.empty() && permutedKernels.empty()
                              ? std::string()
                              : std::string(tessera::embedded::kDynamicArgsH) +
                                    "\n" + tessera::embedded::kDynamicIndexCuh +
                                    "\n";
    if (!dynPatterns.empty())
      headers += std::string(tessera::embedded::kDynamicBackwardCuh) + "\n";
    if (!permutedKernels.empty())
      headers += std::string(tessera::embedded::kPermutedCuh) + "\n";
    bundle.source.replace(at, kDynamicHeadersMarker.size(), headers);
    // Hopper.cuh and HopperForward.cuh where a kernel has an sm_90a twin,
    // for sm_90a and the emulator only (their instructions exist nowhere
    // else).
    at = bundle.source.find(kHopperHeadersMarker.str());
    headers = hopperKernels
                  ? "#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || "
                    "defined(TESSERA_EMULATE)\n" +
                        std::string(tessera::embedded::kHopperCuh) + "\n" +
                        tessera::embedded::kHopperForwardCuh + "\n" +
                        (hopperDynKernels
                             ? tessera::embedded::kHopperDynamicCuh +
                                   std::string("\n")
                             : std::string()) +
                        "#endif\n"
                  : std::string();
    bundle.source.replace(at, kHopperHeadersMarker.size(), headers);
  }

  void finishManifest() {
    llvm::SHA256 hash;
    hash.update(bundle.source);
    json::Array archs;
    for (const char *a : kBundleArchs)
      archs.push_back(a);
    bundle.manifest = json::Object{
        {"format", "tessera-bundle"},
        {"version", 2},
        {"model", model.getSymName().str()},
        {"source", "bundle.cu"},
        {"source_sha256", llvm::toHex(hash.final(), /*LowerCase=*/true)},
        {"archs", std::move(archs)},
        {"nvrtc_options", json::Array{"-std=c++17"}},
        {"kernels", std::move(kernelsJson)},
        {"layers", std::move(layersJson)},
    };
  }

  ModelOp model;
  llvm::StringRef sourceName;
  int64_t budgetOverride; ///< > 0: every kernel's part budget
  bool headRouting;       ///< every static layer gets the permuted kernel
  Bundle bundle;
  llvm::raw_string_ostream os;
  bool ok = true;
  int64_t position = 0; ///< the next layer's position in the bundle
  json::Array layersJson, kernelsJson;
  std::set<KernelKey> kernels;
  std::set<int64_t> fillDims;
  std::set<KernelKey> permutedKernels; ///< of the layers with layouts
  /// Per layer with the permuted kernel, the launch slots of its groups
  /// with layouts; then per such layer (in order) its kernel parts' slots
  /// without them.
  std::map<int64_t, std::set<int64_t>> permutedSlots;
  std::vector<std::pair<int64_t, std::vector<std::vector<int64_t>>>>
      permutedLayers;
  bool hopperKernels = false; ///< some kernel has an sm_90a twin
  bool hopperDynKernels = false; ///< some dynamic kernel has one
  /// The generated code of each distinct group pattern: pattern text -> id.
  std::map<std::string, int64_t> patternIds;
  std::map<KernelKey, std::set<int64_t>> kernelPatterns;
  /// Split kernels: each pattern's weight, each kernel's parts (pattern ids)
  /// and each pattern's part; per layer its kernel and slot patterns, and
  /// the slots of each part.
  std::map<int64_t, int64_t> patternWeight;
  std::map<KernelKey, std::vector<std::vector<int64_t>>> kernelParts;
  std::map<std::pair<KernelKey, int64_t>, int64_t> partOf;
  std::vector<std::pair<KernelKey, std::vector<int64_t>>> layerSlots;
  std::vector<std::vector<std::vector<int64_t>>> layerPartSlots;
  std::string groupCode;
  /// Dynamic groups: the code ids of their with/without patterns, the
  /// families (and their variants) per kernel, their head lists and tables.
  std::set<int64_t> dynPatterns;
  std::map<KernelKey, std::set<std::string>> dynFamilies;
  std::map<KernelKey, bool> dynMerge, dynFlex;
  /// The dynamic families whose backward kernels some layer's "backward"
  /// names, per kernel (DynamicBackward.cuh).
  std::map<KernelKey, std::set<std::string>> dynBackwardFamilies;
  std::string dynHeads, dynTables;
  llvm::raw_string_ostream dynHeadsOs, dynTablesOs;
  std::vector<std::string> dynTableNames;
};

} // namespace

FailureOr<Bundle> tessera::emitCudaBundle(ModuleOp module,
                                          llvm::StringRef sourceName,
                                          int64_t partBudget,
                                          bool headRouting) {
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
  return BundleEmitter(model, sourceName, partBudget, headRouting).run();
}
