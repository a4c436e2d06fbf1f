//===- BackwardEmit.cpp - the backward kernels of a bundle ----------------===//

#include "BackwardEmit.h"

#include "tessera/Schedule/BackwardRuns.h"

using namespace tessera;
namespace json = llvm::json;

namespace {

/// sizeof(BwdKeyTiles<D>) (FlashBackward.cuh; the emitted kernel
/// static_asserts it): the key, value, query and dO tiles of 64 rows, the
/// rows' LSE and D (128 floats) and a 64 x 64 byte mask.
int64_t keyTilesBytes(int64_t d) {
  const int64_t pitch = d % 64 == 0 ? d : d + 8;
  return 4 * 64 * pitch * 2 + 128 * 4 + 64 * 64;
}

/// sizeof(PipeTiles<D>): a key and a value tile of 64 rows (the query-major
/// kernel stages Q and dO there).
int64_t queryTilesBytes(int64_t d) {
  const int64_t pitch = d % 64 == 0 ? d : d + 8;
  return 2 * 64 * pitch * 2;
}

/// The key-major kernel's threads (BwdKeyShape<D>::kThreads).
int64_t keyThreads(int64_t d) { return d > 64 ? 256 : 128; }

/// The backward kernels are compiled by NVRTC, and on the host only where
/// the emulator's translation unit asks for them (TESSERA_EMU_BACKWARD:
/// the fake driver's bundles), which keeps the other emulated bundles'
/// compile times.
constexpr const char *kHostGuard =
    "#if !defined(TESSERA_EMULATE) || defined(TESSERA_EMU_BACKWARD)\n";

std::string suffix(const std::string &dt, int64_t d) {
  return dt + "_d" + std::to_string(d);
}
std::string groupsName(const std::string &dt, int64_t d) {
  return "BackwardGroups_" + suffix(dt, d);
}

/// The kernel names, shared by the emitter's kernels and manifest.
std::string kernelName(const char *pass, const std::string &dt, int64_t d) {
  return std::string("tessera_bwd_") + pass + "_" + suffix(dt, d);
}
std::string zeroName(int64_t d) {
  return "tessera_bwd_zero_d" + std::to_string(d);
}

/// The dynamic heads' kernels: tessera_bwd_dyn_<family>_<pass>_<dtype>_d<D>
/// (the fake driver tells their (BwdParams, DynArgs) by the prefix).
std::string dynName(const char *what, const std::string &dt, int64_t d) {
  return std::string("tessera_bwd_dyn_") + what + "_" + dt + "_d" +
         std::to_string(d);
}
std::string familyTag(const std::string &family) {
  return family == "vertical_slash" ? "vs"
         : family == "block_index"  ? "bi"
         : family == "routing"      ? "rt"
         : family == "routing_rest" ? "rtrest"
                                    : "bt";
}
/// The entry of a family's backward kernels (DynamicBackward.cuh):
/// bwdDynGroup over the forward's walk (a block per 64 query rows), or
/// bwdRtGroup over routing's segment tiles; `guarded`: the second launch.
std::string passEntry(const std::string &family, const std::string &ed,
                      bool guarded) {
  const std::string g = guarded ? ", true>" : ", false>";
  if (family == "routing")
    return "bwdRtGroup<" + ed + ", bundle::DynPats" + g;
  if (family == "routing_rest") // a merging group's rest (rtRest's pairs)
    return "bwdRtRestGroup<" + ed + ", bundle::DynPats" + g;
  return "bwdDynGroup<" + ed + ", " +
         (family == "vertical_slash" ? "VsWalk<bundle::DynPats>"
          : family == "block_index"  ? "BtWalk<bundle::DynPats, int>"
                                     : "BtWalk<bundle::DynPats>") +
         g;
}
/// The zeroing and adding of the sums: tessera_bwd_dynkv_<what>_<dtype>_d<D>
/// ((BwdParams, int layer), as the static kernels').
std::string sumsName(const char *what, const std::string &dt, int64_t d) {
  return std::string("tessera_bwd_dynkv_") + what + "_" + dt + "_d" +
         std::to_string(d);
}

/// `signature` switching on the pattern id over `ids`, each case returning
/// `before` P<id> `after`, others `fallback`.
void emitSwitch(llvm::raw_ostream &os, llvm::StringRef signature,
                const std::set<int64_t> &ids, llvm::StringRef before,
                llvm::StringRef after, llvm::StringRef fallback) {
  os << "  static __device__ __forceinline__ " << signature << " {\n"
     << "    switch (pattern) {\n";
  for (int64_t id : ids)
    os << "    case " << id << ":\n      return " << before << "P" << id
       << after << ";\n";
  os << "    default:\n      return " << fallback << ";\n    }\n  }\n";
}

/// The dispatch class the backward kernels take: the forward's runs and
/// masks of every pattern of the type and dim, and their transposed walks.
void emitGroups(llvm::raw_ostream &os, const std::string &dt, int64_t d,
                const std::set<int64_t> &ids) {
  os << "namespace tessera {\nnamespace kernel {\nnamespace bundle {\n"
     << "// The backward's view of every " << dt << " head_dim " << d
     << " pattern: a kv head's query heads may sit in different forward "
        "kernels, and its key-major block walks them all.\n"
     << "struct " << groupsName(dt, d) << " {\n";
  emitSwitch(os, "Run runFrom(i64 pattern, const RunCtx &ctx, i64 kb)", ids, "",
             "::runFrom(ctx, kb)", "noRun()");
  emitSwitch(os, "Run runFromT(i64 pattern, const TRunCtx &ctx, i64 qb)", ids,
             "", "T::runFromT(ctx, qb)", "noRun()");
  emitSwitch(os,
             "KeepNibbles keepNibbles(i64 pattern, i64 rowPos, i64 k0, int c2, "
             "int room, i64 head, i64 numHeads)",
             ids, "rowNibbles(",
             "Mask::rows(maskTileRoom(rowPos, k0, c2, room), head, numHeads))",
             "KeepNibbles{0u, 0u}");
  os << "};\n} // namespace bundle\n} // namespace kernel\n"
     << "} // namespace tessera\n\n";
}

/// One extern "C" kernel of (BwdParams, int layer) with `body`.
void emitKernel(llvm::raw_ostream &os, const std::string &name, int64_t threads,
                llvm::StringRef body) {
  os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(" << threads
     << ")\n"
     << name << "(const tessera::kernel::BwdParams p, int layer) {\n"
     << "  using namespace tessera::kernel;\n"
     << "  (void)layer;\n"
     << body << "}\n\n";
}

json::Object kernelJson(const std::string &name, const std::string &kind,
                        const std::string &dt, int64_t d, int64_t threads,
                        int64_t shared) {
  json::Object o{{"name", name},
                 {"kind", kind},
                 {"head_dim", d},
                 {"threads", threads},
                 {"dynamic_shared", shared},
                 {"args", "(BwdParams, int layer)"}};
  if (!dt.empty())
    o["dtype"] = dt;
  return o;
}

} // namespace

bool tessera::backward::hasBackwardKernels(int64_t headDim) {
  return headDim == 64 || headDim == 96 || headDim == 128;
}

std::string
tessera::backward::transposedPatternCode(const schedule::RunExpr &forward,
                                         int64_t id) {
  const std::string name = "P" + std::to_string(id) + "T";
  return "// " + name + ": the transposed runs of P" + std::to_string(id) +
         " (the query blocks that see a key block: the backward's key-major "
         "walk).\n" +
         schedule::emitTransposedCode(schedule::transposeRuns(forward), name) +
         "\n";
}

void tessera::backward::emitBackwardKernels(llvm::raw_ostream &os,
                                            const std::string &dt, int64_t d,
                                            const std::set<int64_t> &patterns,
                                            json::Array &kernels) {
  os << kHostGuard;
  emitGroups(os, dt, d, patterns);
  const std::string E = dt == "f16" ? "kF16" : "kBF16";
  const std::string ED = E + ", " + std::to_string(d);
  const std::string G = "bundle::" + groupsName(dt, d);
  emitKernel(os, kernelName("pre", dt, d), 128,
             "  bwdPreprocess<" + ED + ">(p);\n");
  kernels.push_back(kernelJson(kernelName("pre", dt, d), "backward_preprocess",
                               dt, d, 128, 0));
  // Each pass unguarded and guarded, dense and per-sequence (the `_seq`
  // twins, SEQ = true: packed, length and head-range calls; the runtime
  // names them by the suffix, as the forward's).
  for (bool guarded : {false, true})
    for (bool seq : {false, true}) {
      const std::string g =
          std::string(guarded ? "true" : "false") + (seq ? ", true" : "");
      const std::string tail = seq ? "_seq" : "";
      const std::string key =
          kernelName(guarded ? "dkdv_guarded" : "dkdv", dt, d) + tail;
      emitKernel(os, key, keyThreads(d),
                 "  static_assert(sizeof(BwdKeyTiles<" + std::to_string(d) +
                     ">) == " + std::to_string(keyTilesBytes(d)) +
                     ", \"the manifest's dynamic_shared\");\n"
                     "  TESSERA_DYNAMIC_TILES(sm, BwdKeyTiles<" +
                     std::to_string(d) + ">);\n  bwdKeyMajor<" + ED + ", " + G +
                     ", " + g +
                     ">(*bundle::tables[layer], bundle::patternOf[layer], p, "
                     "sm);\n");
      kernels.push_back(
          kernelJson(key,
                     std::string(guarded ? "backward_key_major_guarded"
                                         : "backward_key_major") +
                         tail,
                     dt, d, keyThreads(d), keyTilesBytes(d)));
      const std::string query =
          kernelName(guarded ? "dq_guarded" : "dq", dt, d) + tail;
      emitKernel(os, query, 128,
                 "  static_assert(sizeof(PipeTiles<" + std::to_string(d) +
                     ">) == " + std::to_string(queryTilesBytes(d)) +
                     ", \"the manifest's dynamic_shared\");\n"
                     "  const LayerTable &t = *bundle::tables[layer];\n"
                     "  const i64 slot = blockIdx.y;\n"
                     "  TESSERA_DYNAMIC_TILES(sm, PipeTiles<" +
                     std::to_string(d) + ">);\n  bwdQueryMajor<" + ED + ", " +
                     G + ", " + g +
                     ">(t, p, sm, slot, "
                     "bundle::patternOf[layer][t.headGroup[slot]]);\n");
      kernels.push_back(
          kernelJson(query,
                     std::string(guarded ? "backward_query_major_guarded"
                                         : "backward_query_major") +
                         tail,
                     dt, d, 128, queryTilesBytes(d)));
    }
  os << "#endif\n\n";
}

void tessera::backward::emitZeroKernel(llvm::raw_ostream &os, int64_t d,
                                       json::Array &kernels) {
  os << kHostGuard;
  emitKernel(os, zeroName(d), 128,
             "  bwdZeroSkipped<" + std::to_string(d) +
                 ">(*bundle::tables[layer], p);\n");
  os << "#endif\n\n";
  kernels.push_back(
      kernelJson(zeroName(d), "backward_zero_skipped", "", d, 128, 0));
}

json::Object tessera::backward::layerBackwardJson(const std::string &dt,
                                                  int64_t d, bool hasSkipped,
                                                  bool dynamic) {
  json::Object o{{"preprocess", kernelName("pre", dt, d)},
                 {"key_major", kernelName("dkdv", dt, d)},
                 {"key_major_guarded", kernelName("dkdv_guarded", dt, d)},
                 {"query_major", kernelName("dq", dt, d)},
                 {"query_major_guarded", kernelName("dq_guarded", dt, d)},
                 {"key_major_threads", keyThreads(d)},
                 {"key_major_dynamic_shared", keyTilesBytes(d)},
                 {"query_major_threads", 128},
                 {"query_major_dynamic_shared", queryTilesBytes(d)},
                 {"block_q", 64},
                 {"block_k", 64},
                 // The preprocess kernel's D_i, read by both passes.
                 {"delta_workspace", "f32 [batch, num_heads, Nq]"}};
  if (hasSkipped)
    o["zero_skipped"] = zeroName(d);
  if (dynamic) {
    // The dynamic heads' f32 sums of dK and dV, zeroed before their
    // groups and added to dk and dv after them.
    o["dynamic_clear"] = sumsName("clear", dt, d);
    o["dynamic_add"] = sumsName("add", dt, d);
    o["dynamic_workspace"] = "f32 [batch, num_kv_heads, Nk, 2 head_dim]";
  }
  return o;
}

bool tessera::backward::hasDynamicBackward(llvm::StringRef family,
                                           int64_t headDim, bool merge) {
  (void)merge; // (merging routing: the rest's kernels too)
  return hasBackwardKernels(headDim) &&
         (family == "vertical_slash" || family == "block_topk" ||
          family == "block_index" || family == "routing" ||
          family == "routing_rest");
}

void tessera::backward::emitDynamicBackwardKernels(
    llvm::raw_ostream &os, const std::string &dt, int64_t d,
    const std::set<std::string> &families, json::Array &kernels) {
  if (!hasBackwardKernels(d))
    return;
  os << kHostGuard;
  const std::string E = dt == "f16" ? "kF16" : "kBF16";
  const std::string ED = E + ", " + std::to_string(d);
  const std::string ds = std::to_string(d);
  // One kernel of (BwdParams, DynArgs) over the group's walk, its tiles
  // type choosing the pass; one block an SM at least (without it ptxas
  // aimed at two and spilled: 128 registers, 172 bytes at head_dim 96).
  auto pass = [&](const std::string &name, const char *kind,
                  const std::string &entry, const std::string &tiles,
                  int64_t threads, int64_t shared) {
    os << "TESSERA_EXTERN_C __global__ void __launch_bounds__(" << threads
       << ", 1)\n"
       << name
       << "(const tessera::kernel::BwdParams p, tessera::kernel::DynArgs a) "
          "{\n"
       << "  using namespace tessera::kernel;\n"
       << "  const DynGroupTable &g = bundle::dynTables[a.layer][a.group];\n"
       << "  TESSERA_DYNAMIC_TILES(sm, " << tiles << ");\n"
       << "  " << entry << "(p, a, g, sm);\n}\n\n";
    json::Object o = kernelJson(name, kind, dt, d, threads, shared);
    o["args"] = "(BwdParams, DynArgs)";
    kernels.push_back(std::move(o));
  };
  for (const std::string &f : families) {
    if (!hasDynamicBackward(f, d))
      continue;
    const std::string tag = familyTag(f);
    // The passes, then their guarded second launches (non-finite inputs).
    for (bool guarded : {false, true}) {
      const std::string entry = passEntry(f, ED, guarded);
      const std::string sfx = guarded ? "_guarded" : "";
      pass(dynName((tag + "_dq" + sfx).c_str(), dt, d),
           guarded ? "backward_dynamic_query_major_guarded"
                   : "backward_dynamic_query_major",
           entry, "PipeTiles<" + ds + ">", 128, queryTilesBytes(d));
      pass(dynName((tag + "_dkdv" + sfx).c_str(), dt, d),
           guarded ? "backward_dynamic_key_major_guarded"
                   : "backward_dynamic_key_major",
           entry, "BwdKeyTiles<" + ds + ">", keyThreads(d), keyTilesBytes(d));
    }
  }
  // The sums' zeroing and their adding to dk and dv.
  const std::string clear = sumsName("clear", dt, d),
                    add = sumsName("add", dt, d);
  emitKernel(os, clear, 128, "  bwdDynClear<" + ds + ">(p);\n");
  kernels.push_back(kernelJson(clear, "backward_dynamic_clear", dt, d, 128, 0));
  emitKernel(os, add, 128, "  bwdDynAdd<" + ED + ">(p);\n");
  kernels.push_back(kernelJson(add, "backward_dynamic_add", dt, d, 128, 0));
  os << "#endif\n\n";
}

json::Object tessera::backward::dynamicGroupBackwardJson(llvm::StringRef family,
                                                         const std::string &dt,
                                                         int64_t d,
                                                         bool merge) {
  json::Object o;
  for (const char *prefix : {"", "rest_"}) {
    const std::string p = prefix;
    if (!p.empty() && !(merge && family == "routing"))
      break;
    const std::string tag = p.empty() ? familyTag(family.str()) : "rtrest";
    for (const char *pass : {"dq", "dkdv", "dq_guarded", "dkdv_guarded"})
      o[p + pass] = dynName((tag + "_" + pass).c_str(), dt, d);
  }
  return o;
}
