//===- Manifest.cpp - bundle manifests, parsed and validated --------------===//

#include "Manifest.h"

#include "tessera/Support/JsonFile.h"
#include "tessera/kernel/DynamicKernels.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/SHA256.h"

#include <algorithm>
#include <limits>
#include <set>

using namespace tessera;
using namespace tessera::runtime;
namespace json = llvm::json;
namespace k = tessera::kernel;

std::string tessera::runtime::sha256Hex(const std::string &bytes) {
  llvm::SHA256 h;
  h.update(bytes);
  return llvm::toHex(h.final(), /*LowerCase=*/true);
}

namespace {

/// Parameters beyond this would overflow the index arithmetic; the band ends
/// +-2^62 (kUnbounded) are the only larger values.
constexpr k::i64 kMaxParam = k::i64(1) << 41;

bool inParamRange(k::i64 v) { return v >= -kMaxParam && v <= kMaxParam; }
bool inDerivedRange(k::i64 v) {
  return v >= -4 * kMaxParam && v <= 4 * kMaxParam;
}

std::string checkLeaf(const k::Node &n, const std::vector<k::i64> &data) {
  if (n.dataBegin < 0 || n.dataSize < 0 ||
      n.dataBegin > static_cast<k::i64>(data.size()) ||
      n.dataSize > static_cast<k::i64>(data.size()) - n.dataBegin)
    return "a node's data slice lies outside the data array";
  const k::i64 *d = data.data() + n.dataBegin;
  switch (n.kind) {
  case k::kAll:
  case k::kNone:
    return "";
  case k::kIntervals:
    if (n.axis < 0 || n.axis > 3 || n.dataSize % 2)
      return "an interval node has a bad axis or an odd data slice";
    // Bounds are sums of two parameters at most (an offset and a width).
    for (k::i64 i = 0; i < n.dataSize; i += 2)
      if (!inDerivedRange(d[i]) || !inDerivedRange(d[i + 1]) ||
          d[i] >= d[i + 1] ||
          (i && d[i] < d[i - 1]))
        return "an interval node's ranges are empty, unsorted or too large";
    return "";
  case k::kBand:
    if (n.axis < 0 || n.axis > 3 || n.a > n.b ||
        (!inParamRange(n.a) && n.a != -k::kUnbounded) ||
        (!inParamRange(n.b) && n.b != k::kUnbounded))
      return "a band node has a bad axis or bounds";
    return "";
  case k::kPeriodic:
    if (n.axis < 0 || n.axis > 3 || n.a < 1 || n.b < 1 || n.b > n.a ||
        !inParamRange(n.a) || !inParamRange(n.c))
      return "a periodic node has a bad axis, period, width or phase";
    return "";
  case k::kShards:
    if (n.a < 1 || n.b < 1 || !inParamRange(n.a) || !inParamRange(n.b) ||
        !inParamRange(n.c))
      return "a shards node has a bad block, shard count or offset";
    return "";
  case k::kGroups:
    if (n.a < 1 || n.b < 0 || !inParamRange(n.a) || !inParamRange(n.b))
      return "a groups node has a bad size or shift";
    return "";
  case k::kBlocks: {
    // c listed query-block ids (sorted, distinct), c + 1 row starts, then
    // the columns (sorted within a row).
    k::i64 rows = n.c;
    if (n.a < 1 || n.b < 1 || rows < 0 || !inParamRange(n.a) ||
        !inParamRange(n.b) || rows > (n.dataSize - 1) / 2)
      return "a blocks node has bad block sizes or rows";
    const k::i64 *starts = d + rows;
    k::i64 cols = n.dataSize - 2 * rows - 1;
    if (starts[0] != 0 || starts[rows] != cols)
      return "a blocks node's row starts do not span its columns";
    for (k::i64 r = 0; r < rows; ++r) {
      if (d[r] < 0 || !inParamRange(d[r]) || (r && d[r] <= d[r - 1]))
        return "a blocks node's rows are negative or unsorted";
      if (starts[r + 1] < starts[r])
        return "a blocks node's row starts decrease";
      for (k::i64 j = starts[r]; j < starts[r + 1]; ++j) {
        k::i64 c = starts[rows + 1 + j];
        if (c < 0 || !inParamRange(c) ||
            (j > starts[r] && c <= starts[rows + 1 + j - 1]))
          return "a blocks node's columns are negative or unsorted";
      }
    }
    return "";
  }
  default:
    return "unknown node kind " + std::to_string(n.kind);
  }
}

} // namespace

std::string
tessera::runtime::validateProgram(const std::vector<k::Node> &nodes,
                                  const std::vector<k::i64> &data,
                                  const std::vector<k::i64> &groupBegin) {
  if (groupBegin.size() < 1 || groupBegin.front() != 0 ||
      groupBegin.back() != static_cast<k::i64>(nodes.size()))
    return "group_begin must start at 0 and end at the number of nodes";
  for (size_t g = 0; g + 1 < groupBegin.size(); ++g) {
    if (groupBegin[g + 1] <= groupBegin[g])
      return "group " + std::to_string(g) + " has no nodes";
    int depth = 0;
    for (k::i64 i = groupBegin[g]; i < groupBegin[g + 1]; ++i) {
      const k::Node &n = nodes[i];
      if (n.kind >= k::kUnion && n.kind <= k::kDifference) {
        if (n.axis < 1 || n.axis > depth ||
            (n.kind == k::kDifference && n.axis != 2))
          return "group " + std::to_string(g) +
                 ": a combinator takes more results than there are";
        depth -= static_cast<int>(n.axis) - 1;
        continue;
      }
      if (std::string e = checkLeaf(n, data); !e.empty())
        return "group " + std::to_string(g) + ": " + e;
      if (++depth > k::kMaxStack)
        return "group " + std::to_string(g) +
               ": the program needs a deeper stack than the kernel has";
    }
    if (depth != 1)
      return "group " + std::to_string(g) + " does not end with one result";
  }
  return "";
}

namespace {

bool intArray(const json::Object &o, llvm::StringRef key,
              std::vector<k::i64> &out) {
  const json::Array *a = o.getArray(key);
  if (!a)
    return false;
  out.clear();
  for (const json::Value &v : *a) {
    std::optional<int64_t> i = v.getAsInteger();
    if (!i)
      return false;
    out.push_back(*i);
  }
  return true;
}

std::string parseNodes(const json::Array &arr, std::vector<k::Node> &nodes) {
  for (const json::Value &v : arr) {
    const json::Array *a = v.getAsArray();
    if (!a || a->size() != 7)
      return "a node is not an array of 7 integers";
    k::i64 f[7];
    for (size_t i = 0; i < 7; ++i) {
      std::optional<int64_t> x = (*a)[i].getAsInteger();
      if (!x)
        return "a node is not an array of 7 integers";
      f[i] = *x;
    }
    nodes.push_back(k::Node{f[0], f[1], f[2], f[3], f[4], f[5], f[6], 0});
  }
  return "";
}

/// One program of a dynamic group ("with" or "without").
std::string parseSideProgram(const json::Object &g, llvm::StringRef key,
                             k::ProgramArrays &out) {
  const json::Object *o = g.getObject(key);
  if (!o || !o->getArray("nodes") || !intArray(*o, "data", out.data))
    return "its \"" + key.str() + "\" program lacks nodes or data";
  if (std::string e = parseNodes(*o->getArray("nodes"), out.nodes); !e.empty())
    return e;
  if (out.data.empty())
    out.data.push_back(0);
  std::vector<k::i64> begin = {0, static_cast<k::i64>(out.nodes.size())};
  if (std::string e = validateProgram(out.nodes, out.data, begin); !e.empty())
    return "its \"" + key.str() + "\" program: " + e;
  return "";
}

/// A layer's sm_90a kernels ("wgmma", optional): one per attention kernel,
/// 128 rows and 384 threads a block (HopperForward.cuh), head_dim 64 or
/// 128, dynamic shared memory within the 227 KiB a block can have.
std::string parseWgmma(const json::Object &o, LayerDesc &l) {
  const json::Object *w = o.getObject("wgmma");
  if (!w)
    return "";
  const json::Array *names = w->getArray("kernels");
  std::optional<int64_t> rows = w->getInteger("block_q"),
                         threads = w->getInteger("threads"),
                         shared = w->getInteger("dynamic_shared");
  if (!names || !rows || !threads || !shared)
    return "wgmma lacks kernels, block_q, threads or dynamic_shared";
  if (names->size() != l.kernels.size())
    return "wgmma must name one kernel per attention kernel";
  for (const json::Value &v : *names) {
    std::optional<llvm::StringRef> n = v.getAsString();
    if (!n || n->empty())
      return "wgmma's kernels must be names";
    l.wgmmaKernels.push_back(n->str());
  }
  if (l.headDim != 64 && l.headDim != 128)
    return "wgmma kernels exist for head_dim 64 and 128 only";
  if (*rows != 128 || *threads != 384)
    return "wgmma kernels take 128 rows and 384 threads a block";
  if (*shared <= 0 || *shared > 227 * 1024)
    return "wgmma's dynamic_shared must be in (0, 227 KiB]";
  l.wgmmaBlockQ = *rows;
  l.wgmmaThreads = *threads;
  l.wgmmaDynamicShared = *shared;
  return "";
}

/// A layer's backward kernels ("backward", optional; BackwardEmit.cpp):
/// five names (and the zero fill where heads are skipped), the key-major
/// pass's BwdKeyShape threads, 128 for the query-major pass, 64 x 64 tiles,
/// dynamic shared memory within the 227 KiB a block can have; static heads
/// only.
std::string parseBackward(const json::Object &o, LayerDesc &l) {
  const json::Object *b = o.getObject("backward");
  if (!b)
    return "";
  BackwardKernelsDesc &k = l.backward;
  for (auto [key, out] : {std::pair{"preprocess", &k.preprocess},
                          {"key_major", &k.keyMajor},
                          {"key_major_guarded", &k.keyMajorGuarded},
                          {"query_major", &k.queryMajor},
                          {"query_major_guarded", &k.queryMajorGuarded}}) {
    std::optional<llvm::StringRef> n = b->getString(key);
    if (!n || n->empty())
      return std::string("backward lacks the kernel name ") + key;
    *out = n->str();
  }
  if (std::optional<llvm::StringRef> z = b->getString("zero_skipped"))
    k.zeroSkipped = z->str();
  std::optional<int64_t> kt = b->getInteger("key_major_threads"),
                         ks = b->getInteger("key_major_dynamic_shared"),
                         qt = b->getInteger("query_major_threads"),
                         qs = b->getInteger("query_major_dynamic_shared"),
                         bq = b->getInteger("block_q"),
                         bk = b->getInteger("block_k");
  if (!kt || !ks || !qt || !qs || !bq || !bk)
    return "backward lacks key_major_threads, key_major_dynamic_shared, "
           "query_major_threads, query_major_dynamic_shared, block_q or "
           "block_k";
  if (l.headDim != 64 && l.headDim != 96 && l.headDim != 128)
    return "backward kernels exist for head_dim 64, 96 and 128 only";
  if (*kt != (l.headDim > 64 ? 256 : 128) || *qt != 128)
    return "backward's key_major_threads must be " +
           std::to_string(l.headDim > 64 ? 256 : 128) +
           " at this head_dim and query_major_threads 128";
  if (*bq != 64 || *bk != 64)
    return "backward's block_q and block_k must be 64";
  for (int64_t bytes : {*ks, *qs})
    if (bytes <= 0 || bytes > 227 * 1024)
      return "backward's dynamic shared memory must be in (0, 227 KiB]";
  if (!l.skippedHeads.empty() && k.zeroSkipped.empty())
    return "backward: skipped heads need a zero_skipped kernel";
  if (!l.dynamicGroups.empty()) {
    // The dynamic heads' kernels (DynamicBackward.cuh): the sums' zeroing
    // and adding, and each group's dq and dkdv kernels.
    std::optional<llvm::StringRef> clear = b->getString("dynamic_clear"),
                                   add = b->getString("dynamic_add");
    const json::Array *groups = o.getArray("dynamic_groups");
    if (!clear || !add || clear->empty() || add->empty() || !groups ||
        groups->size() != l.dynamicGroups.size())
      return "backward: a layer with dynamic heads needs dynamic_clear and "
             "dynamic_add";
    k.dynamicClear = clear->str();
    k.dynamicAdd = add->str();
    for (size_t i = 0; i < groups->size(); ++i) {
      DynamicGroupDesc &g = l.dynamicGroups[i];
      const json::Object *go = (*groups)[i].getAsObject();
      const json::Object *gb = go ? go->getObject("backward") : nullptr;
      std::optional<llvm::StringRef> dq, dkdv, dqGuarded, dkdvGuarded;
      if (gb) {
        dq = gb->getString("dq");
        dkdv = gb->getString("dkdv");
        dqGuarded = gb->getString("dq_guarded");
        dkdvGuarded = gb->getString("dkdv_guarded");
      }
      if (!dq || !dkdv || !dqGuarded || !dkdvGuarded || dq->empty() ||
          dkdv->empty() || dqGuarded->empty() || dkdvGuarded->empty())
        return "backward: dynamic group " + std::to_string(i) +
               " lacks its backward kernels dq, dkdv, dq_guarded and "
               "dkdv_guarded (a bundle emitted before them: emit it again)";
      g.backwardDq = dq->str();
      g.backwardDkdv = dkdv->str();
      g.backwardDqGuarded = dqGuarded->str();
      g.backwardDkdvGuarded = dkdvGuarded->str();
      g.backwardRest.clear();
      if (g.args.family == k::kRouting && g.args.merge)
        for (const char *name :
             {"rest_dq", "rest_dkdv", "rest_dq_guarded", "rest_dkdv_guarded"}) {
          std::optional<llvm::StringRef> rest = gb->getString(name);
          if (!rest || rest->empty())
            return "backward: dynamic group " + std::to_string(i) +
                   " (routing whose pattern allows pairs outside its "
                   "clusters) lacks its backward kernel " +
                   name + " (a bundle emitted before it: emit it again)";
          g.backwardRest.push_back(rest->str());
        }
    }
  }
  k.keyMajorThreads = *kt;
  k.keyMajorDynamicShared = *ks;
  k.queryMajorThreads = *qt;
  k.queryMajorDynamicShared = *qs;
  return "";
}

/// A dynamic group: every parameter in the range the dialect verifies and
/// the bundles' kernels support.
/// A dynamic group's sm_90a twins ("wgmma", optional; HopperDynamic.cuh):
/// `<kernel>_wgmma` for some of its attention kernels, 384 threads (a
/// producer warpgroup and two consumers, each walking one query tile:
/// kernel::kHopperDynParts), dynamic shared memory within the
/// 227 KiB a block can have; head_dim 64 and 128.
std::string parseDynamicWgmma(const json::Object &g, const LayerDesc &l,
                              DynamicGroupDesc &out) {
  const json::Object *w = g.getObject("wgmma");
  if (!w)
    return "";
  const json::Array *names = w->getArray("kernels");
  std::optional<int64_t> threads = w->getInteger("threads"),
                         shared = w->getInteger("dynamic_shared");
  if (!names || !threads || !shared)
    return "a dynamic group's wgmma lacks kernels, threads or dynamic_shared";
  if (l.headDim != 64 && l.headDim != 128)
    return "wgmma kernels exist for head_dim 64 and 128 only";
  if (*threads != 384)
    return "a dynamic group's wgmma kernels take 384 threads a block";
  if (*shared <= 0 || *shared > 227 * 1024)
    return "a dynamic group's wgmma dynamic_shared must be in (0, 227 KiB]";
  out.wgmmaKernels.assign(out.kernels.size(), "");
  for (const json::Value &v : *names) {
    std::optional<llvm::StringRef> n = v.getAsString();
    auto it = n && n->ends_with("_wgmma")
                  ? std::find(out.kernels.begin(), out.kernels.end(),
                              n->drop_back(6).str())
                  : out.kernels.end();
    if (it == out.kernels.end())
      return "a dynamic group's wgmma kernel '" +
             (n ? n->str() : std::string("?")) +
             "' is not the twin of one of its kernels";
    out.wgmmaKernels[size_t(it - out.kernels.begin())] = n->str();
  }
  out.wgmmaThreads = *threads;
  out.wgmmaDynamicShared = *shared;
  return "";
}

std::string parseDynamicGroup(const json::Object &g, const LayerDesc &l,
                              DynamicGroupDesc &out) {
  std::optional<llvm::StringRef> family = g.getString("family");
  const json::Object *par = g.getObject("params");
  if (!family || !par)
    return "a dynamic group lacks family or params";
  auto param = [&](llvm::StringRef key, k::i64 &v, k::i64 lo, k::i64 hi) {
    std::optional<int64_t> x = par->getInteger(key);
    if (!x || *x < lo || *x > hi)
      return "parameter " + key.str() + " is missing or outside [" +
             std::to_string(lo) + ", " + std::to_string(hi) + "]";
    v = *x;
    return std::string();
  };
  k::DynArgs &a = out.args;
  const k::i64 big = k::i64(1) << 40;
  std::string e;
  if (*family == "vertical_slash") {
    a.family = k::kVerticalSlash;
    if ((e = param("last_q", a.lastQ, 1, big)).empty() &&
        (e = param("vertical", a.vertical, 0, big)).empty() &&
        (e = param("slash", a.slash, 0, big)).empty() &&
        (e = param("first_columns", a.firstColumns, 0, big)).empty() &&
        (e = param("last_diagonals", a.lastDiagonals, 0, big)).empty() &&
        a.vertical + a.slash + a.firstColumns + a.lastDiagonals < 1)
      // As the verifier: forced columns or diagonals alone are an index.
      e = "keeps nothing: vertical, slash, first_columns or last_diagonals "
          "must be positive";
  } else if (*family == "block_topk") {
    a.family = k::kBlockTopk;
    std::optional<double> gamma = par->getNumber("gamma");
    if ((e = param("block", a.block, 64, 1024)).empty() &&
        (e = param("top_k", a.topK, 0, big)).empty() &&
        (e = param("min_blocks", a.minBlocks, 0, big)).empty() &&
        (e = param("max_blocks", a.maxBlocks, 0, big)).empty()) {
      const json::Value *tau = par->get("tau");
      if (a.block % 64)
        e = "block must be a multiple of 64";
      else if (!gamma || !(*gamma >= 0 && *gamma <= 1) ||
               (*gamma > 0) == (a.topK > 0))
        e = "exactly one of gamma (in (0, 1]) and top_k must be given";
      else if (a.topK > 0 && (a.minBlocks > 0 || a.maxBlocks > 0))
        e = "min_blocks and max_blocks go with gamma only (top_k keeps "
            "exactly top_k blocks)";
      else if (tau && !(tau->getAsNumber() && *tau->getAsNumber() >= 0 &&
                        *tau->getAsNumber() <= 1))
        e = "tau must be a number in [0, 1]";
      else if (tau && *tau->getAsNumber() > 0 && a.topK > 0)
        e = "tau (FlexPrefill's per-head choice) goes with gamma only";
      else {
        a.gamma = float(*gamma);
        // (A tau below float's range stays positive: the kernels and the
        // emitter agree that the group makes FlexPrefill's choice.)
        const double t = tau ? *tau->getAsNumber() : 0.0;
        a.tau = t > 0 ? std::max(float(t),
                                 std::numeric_limits<float>::denorm_min())
                      : 0.0f;
      }
    }
  } else if (*family == "routing") {
    a.family = k::kRouting;
    if ((e = param("clusters", a.clusters, 1, 65536)).empty())
      e = param("kmeans_iterations", a.iterations, 0, 100);
    if (e.empty() && a.clusters * a.iterations > 65536)
      e = "routing: clusters x kmeans_iterations must be at most 65536 (the "
          "verifier's bound on k-means' work per key)";
    if (const json::Value *m = g.get("merge_without")) {
      std::optional<bool> merge = m->getAsBoolean();
      if (!merge)
        return "routing: merge_without must be true or false";
      a.merge = *merge ? 1 : 0;
    }
  } else if (*family == "block_index") {
    a.family = k::kBlockIndex;
    if ((e = param("block_q", a.blockQ, 64, 1024)).empty() &&
        (e = param("block_k", a.blockK, 64, 1024)).empty() &&
        (a.blockQ % 64 || a.blockK % 64))
      e = "block_q and block_k must be multiples of 64";
  } else {
    return "unknown dynamic family '" + family->str() + "'";
  }
  if (!e.empty())
    return family->str() + ": " + e;
  if (!intArray(g, "heads", out.heads) || out.heads.empty())
    return "a dynamic group lacks heads";
  if ((e = parseSideProgram(g, "with", out.with)).empty())
    e = parseSideProgram(g, "without", out.without);
  if (!e.empty())
    return "a dynamic group: " + e;
  if (a.family != k::kRouting && g.get("merge_without"))
    return "merge_without belongs to routing groups only";
  std::vector<std::string> want = k::dynamicKernelNames(
      family->str(), l.dtype, l.headDim, a.merge != 0, a.tau > 0);
  const json::Array *ks = g.getArray("kernels");
  // A block_index group of a bundle emitted before its CUDA kernel: none
  // (CPU contexts run it; a CUDA context refuses the layer by name).
  if (a.family == k::kBlockIndex && ks && ks->empty())
    want.clear();
  if (!ks || ks->size() != want.size())
    return "a dynamic group's kernels are not those of its family";
  for (size_t i = 0; i < want.size(); ++i)
    if ((*ks)[i].getAsString() != llvm::StringRef(want[i]))
      return "a dynamic group's kernels are not those of its family";
  out.kernels = std::move(want);
  return parseDynamicWgmma(g, l, out);
}

/// The layer's "permuted_kernel" (optional; with layouts, or alone where
/// the emitter was asked for head routing: attn-translate --head-routing).
std::string parsePermutedKernel(const json::Object &o, LayerDesc &l) {
  if (const json::Value *k = o.get("permuted_kernel")) {
    std::optional<llvm::StringRef> name = k->getAsString();
    if (!name || name->empty())
      return "permuted_kernel is not a kernel name";
    l.permutedKernel = name->str();
  }
  // Bundles whose Permuted.cuh reads PermArgs::routed say so; one emitted
  // before has a kernel that would ignore the tables (and read its walk
  // past its end): head routing refuses it by name (validateHeadActive).
  // Alone (no kernel) it says nothing: that refusal comes first.
  if (const json::Value *r = o.get("permuted_routes")) {
    std::optional<bool> routes = r->getAsBoolean();
    if (!routes)
      return "permuted_routes is not a boolean";
    l.permutedRoutes = *routes;
  }
  return "";
}

/// The layer's "layouts" (optional): [{"group", "period", "prefix"}, with
/// "kept" (optional: [begin, end) pairs of interleaved segments' kept
/// ranges)], each a static group of the program at most once, 2 <= period
/// and 0 <= prefix, both at most 2^40 (positions beyond are refused by the
/// calls anyway), the kept ranges as layout::layoutReason wants them
/// (sorted, disjoint, at most layout::kMaxKeptRanges, not with a prefix).
std::string parseLayouts(const json::Object &o, LayerDesc &l) {
  const json::Value *v = o.get("layouts");
  if (!v)
    return parsePermutedKernel(o, l);
  const json::Array *a = v->getAsArray();
  if (!a)
    return "layouts is not an array";
  const int64_t groups = static_cast<int64_t>(l.groupBegin.size()) - 1;
  constexpr int64_t kMaxLayoutParam = int64_t(1) << 40;
  std::set<int64_t> seen;
  for (const json::Value &e : *a) {
    const json::Object *g = e.getAsObject();
    std::optional<int64_t> group = g ? g->getInteger("group") : std::nullopt;
    std::optional<int64_t> period = g ? g->getInteger("period") : std::nullopt;
    std::optional<int64_t> prefix = g ? g->getInteger("prefix") : std::nullopt;
    if (!group || !period || !prefix)
      return "a layout lacks an integer group, period or prefix";
    std::string where = "the layout of group " + std::to_string(*group) + ": ";
    if (*group < 0 || *group >= groups)
      return where + "no such group (the program has " +
             std::to_string(groups) + ")";
    if (!seen.insert(*group).second)
      return where + "the group has two layouts";
    if (*period < 2 || *period > kMaxLayoutParam)
      return where + "period must be in [2, 2^40], got " +
             std::to_string(*period);
    if (*prefix < 0 || *prefix > kMaxLayoutParam)
      return where + "prefix must be in [0, 2^40], got " +
             std::to_string(*prefix);
    layout::PeriodTranspose perm{*period, *prefix};
    if (const json::Value *k = g->get("kept")) {
      const json::Array *ranges = k->getAsArray();
      if (!ranges)
        return where + "kept is not an array";
      if (int64_t(ranges->size()) > 2 * layout::kMaxKeptRanges)
        return where + "kept holds " + std::to_string(ranges->size()) +
               " values: at most " + std::to_string(layout::kMaxKeptRanges) +
               " ranges (begin, end pairs)";
      for (const json::Value &x : *ranges) {
        std::optional<int64_t> at = x.getAsInteger();
        if (!at)
          return where + "kept holds a value that is not an integer";
        perm.kept.push_back(*at);
      }
      if (perm.kept.empty())
        return where + "kept is empty (leave it out)";
    }
    if (std::string e = layout::layoutReason(perm); !e.empty())
      return where + e;
    l.layouts.push_back({*group, std::move(perm)});
  }
  if (std::string e = parsePermutedKernel(o, l); !e.empty())
    return e;
  if (!o.get("permuted_position"))
    return "";
  std::optional<int64_t> at = o.getInteger("permuted_position");
  const json::Array *counts = o.getArray("permuted_slots");
  if (!at || *at <= l.position || *at > (int64_t(1) << 30) || !counts ||
      counts->size() != l.kernels.size() || l.permutedKernel.empty())
    return "permuted_position must be an entry after the layer's, with "
           "permuted_slots (one count per kernel) and permuted_kernel";
  // The counts add up to the computed heads outside the groups with
  // layouts, each at most its kernel's.
  std::set<int64_t> permuted;
  for (const GroupLayout &g : l.layouts)
    permuted.insert(g.group);
  int64_t rest = 0, sum = 0;
  for (size_t i = 0; i < l.headGroup.size(); ++i)
    rest += permuted.count(l.headGroup[i]) ? 0 : 1;
  for (size_t i = 0; i < counts->size(); ++i) {
    std::optional<int64_t> n = (*counts)[i].getAsInteger();
    if (!n || *n < 0 || *n > l.kernels[i].second)
      return "permuted_slots: kernel " + l.kernels[i].first +
             " has no such slot count";
    l.permutedSlots.push_back(*n);
    sum += *n;
  }
  if (sum != rest)
    return "permuted_slots add up to " + std::to_string(sum) + ", not the " +
           std::to_string(rest) + " heads outside the groups with layouts";
  l.permutedPosition = *at;
  return "";
}

std::string parseLayer(const json::Object &o, LayerDesc &l) {
  auto integer = [&](llvm::StringRef key, auto &out) {
    std::optional<int64_t> v = o.getInteger(key);
    if (v)
      out = *v;
    return v.has_value();
  };
  if (!integer("index", l.index) || !integer("position", l.position) ||
      !integer("num_heads", l.numHeads) ||
      !integer("num_kv_heads", l.numKvHeads) || !integer("head_dim", l.headDim))
    return "a layer lacks index, position, num_heads, num_kv_heads or "
           "head_dim";
  std::optional<llvm::StringRef> dtype = o.getString("dtype");
  const json::Array *kernels = o.getArray("kernels");
  if (!dtype || !kernels)
    return "a layer lacks dtype or kernels";
  l.dtype = dtype->str();
  for (const json::Value &v : *kernels) {
    const json::Object *k = v.getAsObject();
    std::optional<llvm::StringRef> name = k ? k->getString("name") : std::nullopt;
    std::optional<int64_t> slots = k ? k->getInteger("slots") : std::nullopt;
    if (!name || name->empty() || !slots || *slots < 1)
      return "a layer's kernel lacks a name or a positive slot count";
    l.kernels.push_back({name->str(), *slots});
  }
  if (std::optional<llvm::StringRef> fill = o.getString("fill_kernel"))
    l.fillKernel = fill->str();
  std::string where = "layer " + std::to_string(l.index) + ": ";
  if (l.dtype != "f16" && l.dtype != "bf16")
    return where + "dtype must be f16 or bf16";
  if (l.numHeads < 1 || l.numHeads > 4096 || l.numKvHeads < 1 ||
      l.numHeads % l.numKvHeads != 0)
    return where + "bad head counts";
  if (l.headDim != 64 && l.headDim != 96 && l.headDim != 128 &&
      l.headDim != 256)
    return where + "head_dim must be 64, 96, 128 or 256";
  if (!integer("kernel_block_q", l.kernelBlockQ) ||
      !integer("kernel_threads", l.kernelThreads) ||
      !integer("kernel_dynamic_shared", l.kernelDynamicShared))
    return where + "kernel_block_q, kernel_threads or kernel_dynamic_shared "
                   "missing (a bundle from before the pipelined kernels: emit "
                   "it again)";
  if (l.kernelDynamicShared < 0 || l.kernelDynamicShared > 227 * 1024)
    return where + "kernel_dynamic_shared must be in [0, 227 KiB]";
  if ((l.kernelBlockQ != 64 && l.kernelBlockQ != 128) ||
      l.kernelThreads != 2 * l.kernelBlockQ)
    return where + "kernel_block_q must be 64 or 128 and kernel_threads "
                   "twice it";
  if (std::string e = parseWgmma(o, l); !e.empty())
    return where + e;
  if (!intArray(o, "computed_heads", l.computedHead) ||
      !intArray(o, "head_groups", l.headGroup) ||
      !intArray(o, "skipped_heads", l.skippedHeads))
    return where + "computed_heads, head_groups or skipped_heads missing";
  const json::Object *prog = o.getObject("program");
  if (!prog || !intArray(*prog, "data", l.data) ||
      !intArray(*prog, "group_begin", l.groupBegin) || !prog->getArray("nodes"))
    return where + "the program lacks nodes, data or group_begin";
  if (std::string e = parseNodes(*prog->getArray("nodes"), l.nodes);
      !e.empty())
    return where + e;
  if (std::string e = validateProgram(l.nodes, l.data, l.groupBegin);
      !e.empty())
    return where + e;
  k::i64 groups = static_cast<k::i64>(l.groupBegin.size()) - 1;
  if (l.computedHead.size() != l.headGroup.size())
    return where + "computed_heads and head_groups differ in length";
  std::set<k::i64> seen;
  for (size_t i = 0; i < l.computedHead.size(); ++i) {
    k::i64 h = l.computedHead[i];
    if (h < 0 || h >= l.numHeads || !seen.insert(h).second)
      return where + "a computed head is out of range or repeated";
    if (l.headGroup[i] < 0 || l.headGroup[i] >= groups)
      return where + "a head's group is out of range";
  }
  for (k::i64 h : l.skippedHeads)
    if (h < 0 || h >= l.numHeads || !seen.insert(h).second)
      return where + "a skipped head is out of range or also computed";
  if (const json::Array *dyn = o.getArray("dynamic_groups"))
    for (const json::Value &v : *dyn) {
      const json::Object *g = v.getAsObject();
      if (!g)
        return where + "a dynamic group is not an object";
      DynamicGroupDesc desc;
      if (std::string e = parseDynamicGroup(*g, l, desc); !e.empty())
        return where + e;
      for (k::i64 h : desc.heads)
        if (h < 0 || h >= l.numHeads || !seen.insert(h).second)
          return where + "a dynamic group's head is out of range or also "
                         "in another group";
      l.dynamicGroups.push_back(std::move(desc));
    }
  if (static_cast<int64_t>(seen.size()) != l.numHeads)
    return where + "some heads are in no group and not skipped";
  if (!l.skippedHeads.empty() && l.fillKernel.empty())
    return where + "skipped heads need a fill_kernel";
  if (std::string e = parseBackward(o, l); !e.empty())
    return where + e;
  if (std::string e = parseLayouts(o, l); !e.empty())
    return where + e;
  // The kernels' launches cover the computed heads' slots exactly once
  // (each kernel's slot table, in the source, lists its own).
  int64_t slots = 0;
  for (const auto &[name, count] : l.kernels)
    if (__builtin_add_overflow(slots, count, &slots))
      return where + "the kernels' slot counts overflow";
  if (slots != static_cast<int64_t>(l.computedHead.size()))
    return where + "the kernels' slot counts do not add up to the computed "
                   "heads";
  // Keep the data array non-empty so that data() is never null; slices
  // index it, and none reaches past its validated size.
  if (l.data.empty())
    l.data.push_back(0);
  return "";
}

} // namespace

std::string tessera::runtime::parseManifest(const std::string &text,
                                            const std::string &source,
                                            BundleDesc &out) {
  // A real manifest nests 5 deep; the JSON parser recurses, and 50,000
  // nested brackets would overflow the stack (the limit of every JSON the
  // project reads: tessera/Support/JsonFile.h).
  if (jsonDepth(text, kMaxJsonDepth) > kMaxJsonDepth)
    return "the manifest nests arrays and objects more than " +
           std::to_string(kMaxJsonDepth) + " deep";
  llvm::Expected<json::Value> value = json::parse(text);
  if (!value)
    return "the manifest is not JSON: " + llvm::toString(value.takeError());
  const json::Object *o = value->getAsObject();
  if (!o)
    return "the manifest is not a JSON object";
  if (o->getString("format") != llvm::StringRef("tessera-bundle"))
    return "the manifest's format is not \"tessera-bundle\"";
  if (o->getInteger("version") != int64_t(2))
    return "the manifest's version is not 2 (this runtime reads version 2: "
           "emit the bundle again)";
  std::optional<llvm::StringRef> sha = o->getString("source_sha256");
  if (!sha)
    return "the manifest lacks source_sha256";
  if (*sha != sha256Hex(source))
    return "the CUDA source does not match the manifest's source_sha256";
  if (std::optional<llvm::StringRef> m = o->getString("model"))
    out.model = m->str();
  if (const json::Array *a = o->getArray("archs"))
    for (const json::Value &v : *a)
      if (std::optional<llvm::StringRef> s = v.getAsString())
        out.archs.push_back(s->str());
  if (const json::Array *a = o->getArray("nvrtc_options"))
    for (const json::Value &v : *a)
      if (std::optional<llvm::StringRef> s = v.getAsString())
        out.nvrtcOptions.push_back(s->str());
  const json::Array *layers = o->getArray("layers");
  if (!layers || layers->empty())
    return "the manifest has no layers";
  std::set<int64_t> indices;
  for (const json::Value &v : *layers) {
    const json::Object *lo = v.getAsObject();
    if (!lo)
      return "a layer is not a JSON object";
    LayerDesc l;
    if (std::string e = parseLayer(*lo, l); !e.empty())
      return e;
    if (l.position != static_cast<int64_t>(out.layers.size()))
      return "layer positions must be 0, 1, 2, ... in order";
    if (!indices.insert(l.index).second)
      return "layer index " + std::to_string(l.index) + " appears twice";
    out.layers.push_back(std::move(l));
  }
  return "";
}
