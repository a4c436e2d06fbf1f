//===- DynamicCpu.cpp - dynamic head groups of bundles on the CPU ---------===//
//
// Per (batch, head) of a dynamic group: the index from the CPU builders
// (tessera/cpu/Dynamic.h), then attention over
//   allowed = (leaf and with) or (not leaf and without)
// (the manifest's programs). Vertical-slash and block top-k indices are
// specialised to static patterns (tessera/Schedule/Specialize.h) and the
// whole expression runs through the block-schedule executor as one program
// (both take query blocks of positions p = q + Nk - Nq). Routing alone or
// with causality attends by segments (the library's fast path); routing
// otherwise attends each query row to its keys.
//
//===----------------------------------------------------------------------===//

#include "DynamicCpu.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Specialize.h"
#include "tessera/cpu/Dynamic.h"
#include "tessera/cpu/Half.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdlib>
#include <unistd.h>

using namespace tessera;
namespace k = tessera::kernel;

namespace {

size_t elementSize(cpu::DType t) { return t == cpu::DType::F32 ? 4 : 2; }

float loadElement(const cpu::Tensor &t, int64_t offset) {
  switch (t.dtype) {
  case cpu::DType::F32:
    return static_cast<const float *>(t.data)[offset];
  case cpu::DType::F16:
    return cpu::f16ToFloat(static_cast<const uint16_t *>(t.data)[offset]);
  default:
    return cpu::bf16ToFloat(static_cast<const uint16_t *>(t.data)[offset]);
  }
}

void storeElement(const cpu::Tensor &t, int64_t offset, float v) {
  switch (t.dtype) {
  case cpu::DType::F32:
    static_cast<float *>(t.data)[offset] = v;
    return;
  case cpu::DType::F16:
    static_cast<uint16_t *>(t.data)[offset] = cpu::floatToF16(v);
    return;
  default:
    static_cast<uint16_t *>(t.data)[offset] = cpu::floatToBf16(v);
  }
}

/// Rows of head h of batch b as float, [seq][headDim].
std::vector<float> headRows(const cpu::Tensor &t, int64_t b, int64_t h) {
  std::vector<float> out(static_cast<size_t>(t.seq * t.headDim));
  for (int64_t s = 0; s < t.seq; ++s)
    for (int64_t x = 0; x < t.headDim; ++x)
      out[size_t(s * t.headDim + x)] = loadElement(
          t, b * t.strideBatch + s * t.strideSeq + h * t.strideHead + x);
  return out;
}

/// Batch b of t as a tensor of batch 1.
cpu::Tensor batchView(const cpu::Tensor &t, int64_t b) {
  cpu::Tensor v = t;
  v.data = static_cast<char *>(t.data) +
           size_t(b * t.strideBatch) * elementSize(t.dtype);
  v.batch = 1;
  return v;
}

/// Appends program `p` to `out`, its data slices rebased.
void append(const k::ProgramArrays &p, k::ProgramArrays &out) {
  k::i64 base = static_cast<k::i64>(out.data.size());
  for (k::Node n : p.nodes) {
    if (n.kind < k::kUnion)
      n.dataBegin += base;
    out.nodes.push_back(n);
  }
  out.data.insert(out.data.end(), p.data.begin(), p.data.end());
}

bool allowsPair(const k::ProgramArrays &p, int64_t q, int64_t key, int64_t nq,
                int64_t nk, int64_t head, int64_t numHeads) {
  return k::allowedPair(p.nodes.data(), k::i64(p.nodes.size()), p.data.data(),
                        q, key, nq, nk, head, numHeads);
}

/// Rows of the tensors' head h (local: the layer's head args.headStart + h)
/// of batch b (out [Nq][D], lse [Nq]) into o and lse ([B, q.heads, Nq]).
void storeHead(const cpu::LayerArgs &args, int64_t b, int64_t h,
               const std::vector<float> &out, const std::vector<float> &lse) {
  const int64_t nq = args.q.seq, d = args.q.headDim, numHeads = args.q.heads;
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t x = 0; x < d; ++x)
      storeElement(args.o,
                   b * args.o.strideBatch + q * args.o.strideSeq +
                       h * args.o.strideHead + x,
                   out[size_t(q * d + x)]);
    if (args.lse)
      args.lse[(b * numHeads + h) * nq + q] = lse[size_t(q)];
  }
}

/// What a program allows, where it is one of the shapes the fast paths
/// take: nothing, every pair, causal pairs; or something else. Combinators
/// fold (an intersection with nothing allows nothing, and so on), so that
/// the programs of `with` and `without` as lowered (e.g. intersect<causal,
/// skip>) are recognised.
enum class Shape { None, All, Causal, Other };
Shape shapeOf(const k::ProgramArrays &p) {
  std::vector<Shape> stack;
  for (const k::Node &n : p.nodes) {
    if (n.kind == k::kAll) {
      stack.push_back(Shape::All);
    } else if (n.kind == k::kNone) {
      stack.push_back(Shape::None);
    } else if (n.kind == k::kBand && n.axis == k::kAxisD &&
               n.a == -k::kUnbounded && n.b == 0) {
      stack.push_back(Shape::Causal);
    } else if (n.kind >= k::kUnion && n.kind <= k::kDifference &&
               n.axis >= 1 && n.axis <= static_cast<k::i64>(stack.size())) {
      std::vector<Shape> parts(stack.end() - n.axis, stack.end());
      stack.resize(stack.size() - size_t(n.axis));
      auto any = [&](Shape s) {
        return std::find(parts.begin(), parts.end(), s) != parts.end();
      };
      Shape r = Shape::Other;
      if (n.kind == k::kIntersect) {
        r = any(Shape::None)    ? Shape::None
            : any(Shape::Other) ? Shape::Other
            : any(Shape::Causal) ? Shape::Causal
                                 : Shape::All;
      } else if (n.kind == k::kUnion) {
        bool allNone = std::all_of(parts.begin(), parts.end(),
                                   [](Shape s) { return s == Shape::None; });
        r = allNone             ? Shape::None
            : any(Shape::All)   ? Shape::All
            : any(Shape::Other) ? Shape::Other
                                : Shape::Causal;
      } else if (parts.size() == 2) { // difference
        r = parts[0] == Shape::None || parts[1] == Shape::All ? Shape::None
            : parts[1] == Shape::None                         ? parts[0]
                                                              : Shape::Other;
      }
      stack.push_back(r);
    } else {
      return Shape::Other;
    }
  }
  return stack.size() == 1 ? stack.back() : Shape::Other;
}

bool allowsNothing(const k::ProgramArrays &p) {
  return shapeOf(p) == Shape::None;
}

k::Node combinator(k::i64 kind, k::i64 arity) {
  return k::Node{kind, arity, 0, 0, 0, 0, 0, 0};
}

} // namespace

double tessera::runtime::dynamicGroupCpuBytes(const k::DynArgs &a, int64_t nq,
                                              int64_t nk, int64_t headDim) {
  const double q = double(nq), n = double(nk), d = double(headDim);
  // The head's rows as fp32 (q, k, v).
  double bytes = 4 * d * (q + 2 * n);
  if (a.family == k::kVerticalSlash) {
    // The logits of L scored rows, then column and diagonal sums, weights
    // and selection orders in double.
    const double rows = std::min(double(a.lastQ), q);
    bytes += 4 * rows * n + 64 * n;
  } else if (a.family == k::kBlockTopk) {
    // Pooled Q and K (and K transposed) in double, the probabilities of a
    // batch of 8 query blocks, the sort keys, the kept lists and the
    // block_sparse program over them.
    // The block counts and list capacity are the kernels' (DynamicArgs.h;
    // exact in int64 for lengths up to 2^40).
    const int64_t tkBlocks = k::dynCeilDiv(nk, a.block);
    const double b = double(a.block),
                 tq = double(k::btQueryBlocks(a.block, nq, nk)),
                 tk = double(tkBlocks), cap = double(k::btCap(a, tkBlocks));
    // tau > 0: the last query block's logits (at most `block` rows) and
    // its masses; lists of columns and two blocks per slash group (cap).
    if (a.tau > 0)
      bytes += 4 * std::min(b, q) * n + 8 * n + 64 * tk;
    bytes += 8 * d * (tq + 2 * tk) + 80 * tk + 64 * tq * cap;
  } else if (a.family == k::kBlockIndex) {
    // The caller's lists as block pairs (16 bytes each) and the program
    // over them: at most every (query block, key block) pair.
    bytes += 48.0 * double(k::btQueryBlocks(a.blockQ, nq, nk)) *
             double(k::dynCeilDiv(nk, a.blockK));
  } else {
    // Centroids in double (and transposed), the clusters of every token,
    // key lists per cluster, and the segments' permuted rows.
    const double c = double(a.clusters);
    bytes += 16 * c * d + 16 * (q + n) + 4 * d * (q + 2 * n);
  }
  return bytes;
}

double tessera::runtime::dynamicCpuMemoryLimit() {
  if (const char *env = std::getenv("TESSERA_CPU_INDEX_MEMORY")) {
    char *end = nullptr;
    double v = std::strtod(env, &end);
    if (end != env && *end == 0 && v > 0)
      return v;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? 0.5 * double(pages) * double(size)
                               : double(int64_t(1) << 32);
}

int64_t tessera::runtime::dynamicWorkspaceBudget() {
  if (const char *env = std::getenv("TESSERA_DYNAMIC_WORKSPACE")) {
    char *end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == 0 && v > 0)
      return v;
  }
  return kDynamicWorkspaceDefault;
}

/// The program of one vertical-slash or block top-k head: the index built
/// from its query and key rows `qr`, `kr` as a static pattern, joined to
/// the group's other heads' patterns as union(intersect(leaf, with),
/// difference(without, leaf)); appended to `out`.
/// `lists`: a block_index head's rows (the caller's), else null.
static std::string
dynamicHeadProgram(const tessera::runtime::DynamicGroupDesc &g,
                   const cpu::Rows &qr, const cpu::Rows &kr, int64_t d,
                   float scale, k::ProgramArrays &out,
                   const std::vector<std::vector<int64_t>> *lists = nullptr) {
  const k::DynArgs &a = g.args;
  semantics::Pattern leaf;
  if (a.family == k::kBlockIndex) {
    // Row i of the caller's index is query block btFirstBlock + i, as
    // block top-k's lists: the same block_sparse specialisation.
    semantics::BlockSparse bs;
    bs.blockQ = a.blockQ;
    bs.blockK = a.blockK;
    const int64_t first = k::btFirstBlock(a.blockQ, qr.count, kr.count);
    for (size_t i = 0; lists && i < lists->size(); ++i)
      for (int64_t kb : (*lists)[i])
        bs.blocks.push_back({first + int64_t(i), kb});
    leaf = semantics::Pattern{bs};
  } else if (a.family == k::kVerticalSlash) {
    const cpu::VerticalSlashParams vp{a.lastQ, a.vertical, a.slash,
                                      a.firstColumns, a.lastDiagonals};
    cpu::VerticalSlashIndex index =
        cpu::buildVerticalSlash(qr, kr, d, scale, vp);
    // (The library's contiguous-and-gathered tiles were slower than the
    // executor over the specialised pattern through the runtime:
    // bench/dynamic_runtime.py, PERFORMANCE.md.)
    leaf = schedule::verticalSlashPattern(index.columns, index.diagonals);
  } else {
    // tau > 0: FlexPrefill's per-head choice (docs/patterns.md).
    cpu::BlockTopkIndex index =
        a.tau > 0 ? cpu::buildBlockTopkFlex(qr, kr, d, scale, a.block,
                                            a.gamma, a.minBlocks, a.maxBlocks,
                                            a.tau)
                  : cpu::buildBlockTopk(qr, kr, d, scale, a.block, a.gamma,
                                        a.topK, a.minBlocks, a.maxBlocks);
    leaf = schedule::blockTopkPattern(a.block, index.firstBlock, index.lists);
  }
  k::ProgramArrays leafProgram;
  std::string error;
  if (!schedule::lowerPattern(leaf, leafProgram, error))
    return error;
  append(leafProgram, out);
  append(g.with, out);
  out.nodes.push_back(combinator(k::kIntersect, 2));
  append(g.without, out);
  append(leafProgram, out);
  out.nodes.push_back(combinator(k::kDifference, 2));
  out.nodes.push_back(combinator(k::kUnion, 2));
  return "";
}

std::string tessera::runtime::layerTableWithDynamicHeads(
    const LayerDesc &l, const cpu::Tensor &q, const cpu::Tensor &k,
    int64_t b, float scale, k::OwnedLayerTable &out,
    const cpu::BlockIndexCsr *bi) {
  out = k::OwnedLayerTable{};
  out.numHeads = l.numHeads;
  out.skippedHeads = l.skippedHeads;
  // The static groups as they are.
  out.nodes = l.nodes;
  out.data = l.data;
  out.groupBegin = l.groupBegin;
  if (out.groupBegin.empty())
    out.groupBegin.push_back(0);
  out.computedHead = l.computedHead;
  out.headGroup = l.headGroup;
  const int64_t d = q.headDim, ratio = l.numHeads / l.numKvHeads;
  for (const DynamicGroupDesc &g : l.dynamicGroups) {
    if (g.args.family == k::kRouting)
      continue; // routingBackwardCpu
    if (g.args.family == k::kBlockIndex && !bi)
      return "the block_index group of head " + std::to_string(g.heads.front()) +
             " has no index";
    for (k::i64 h : g.heads) {
      std::vector<float> qf = headRows(q, b, h), kf = headRows(k, b, h / ratio);
      cpu::Rows qr{qf.data(), q.seq, d}, kr{kf.data(), k.seq, d};
      // The forward's lists (a whole-layer call: slot h is head h).
      std::vector<std::vector<int64_t>> lists;
      if (g.args.family == k::kBlockIndex)
        lists = cpu::blockIndexLists(*bi, b, h);
      if (std::string e =
              dynamicHeadProgram(g, qr, kr, d, scale, out, &lists);
          !e.empty())
        return e;
      out.groupBegin.push_back(static_cast<k::i64>(out.nodes.size()));
      out.computedHead.push_back(h);
      out.headGroup.push_back(static_cast<k::i64>(out.groupBegin.size()) - 2);
    }
  }
  if (out.data.empty())
    out.data.push_back(0);
  return "";
}

namespace {

/// A routing head's keys by cluster, in position order.
std::vector<std::vector<int64_t>> clusterMembers(const cpu::RoutingIndex &index,
                                                 int64_t clusters, int64_t nk) {
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(clusters));
  for (int64_t key = 0; key < nk; ++key)
    members[size_t(index.keyCluster[size_t(key)])].push_back(key);
  return members;
}

/// The keys query `q` of head `h` attends under routing group `g`: the
/// keys of its cluster that the group's `with` allows and, where `without`
/// allows anything, the other keys that it allows; in position order.
void routingKeys(const runtime::DynamicGroupDesc &g,
                 const cpu::RoutingIndex &index,
                 const std::vector<std::vector<int64_t>> &members, int64_t q,
                 int64_t nq, int64_t nk, int64_t h, int64_t numHeads,
                 std::vector<int64_t> &keys) {
  const int32_t c = index.queryCluster[size_t(q)];
  auto allows = [&](const k::ProgramArrays &p, int64_t key) {
    return allowsPair(p, q, key, nq, nk, h, numHeads);
  };
  if (allowsNothing(g.without)) {
    for (int64_t key : members[size_t(c)])
      if (allows(g.with, key))
        keys.push_back(key);
    return;
  }
  for (int64_t key = 0; key < nk; ++key)
    if (index.keyCluster[size_t(key)] == c ? allows(g.with, key)
                                           : allows(g.without, key))
      keys.push_back(key);
}

} // namespace

std::string tessera::runtime::runDynamicGroupCpu(const DynamicGroupDesc &g,
                                                 const cpu::LayerArgs &args,
                                                 int64_t numHeads,
                                                 const float *centroids,
                                                 int64_t centroidStride,
                                                 const cpu::BlockIndexCsr *bi) {
  const k::DynArgs &a = g.args;
  const int64_t nq = args.q.seq, nk = args.k.seq, d = args.q.headDim;
  // A head range: q and o hold heads [h0, h0 + q.heads), k and v the kv
  // heads from h0 / ratio on. Each head's index is built from its own full
  // rows, so a head's result does not depend on the range it is run in.
  const int64_t ratio =
      numHeads / (args.numKvHeads > 0 ? args.numKvHeads : args.k.heads);
  const int64_t h0 = args.headStart, kv0 = h0 / ratio;
  const float scale =
      args.scale > 0 ? args.scale : 1.0f / std::sqrt(float(d));
  for (int64_t b = 0; b < args.q.batch; ++b)
    for (k::i64 h : g.heads) {
      if (h < h0 || h >= h0 + args.q.heads)
        continue;
      const int64_t local = h - h0, kvLocal = h / ratio - kv0;
      std::vector<float> qf = headRows(args.q, b, local),
                         kf = headRows(args.k, b, kvLocal);
      cpu::Rows qr{qf.data(), nq, d}, kr{kf.data(), nk, d};
      if (a.family == k::kRouting) {
        std::vector<float> vf = headRows(args.v, b, kvLocal);
        cpu::Rows vr{vf.data(), nk, d};
        cpu::RoutingIndex index = cpu::buildRouting(
            qr, kr, d, a.clusters, a.iterations,
            a.iterations ? nullptr : centroids + h * centroidStride * d);
        const std::vector<std::vector<int64_t>> members =
            clusterMembers(index, a.clusters, nk);
        const bool withoutNone = allowsNothing(g.without);
        const Shape with = shapeOf(g.with);
        if (withoutNone && (with == Shape::All || with == Shape::Causal)) {
          // Alone or with causality: by segments (tokens permuted by
          // cluster, tiles within a segment, the inverse permutation).
          std::vector<float> out(static_cast<size_t>(nq * d));
          std::vector<float> lse(static_cast<size_t>(nq));
          cpu::attendRoutingSegments(qr, kr, vr, out.data(), d, lse.data(), d,
                                     scale, index, a.clusters,
                                     with == Shape::Causal, 64,
                                     args.numThreads);
          storeHead(args, b, local, out, lse);
          continue;
        }
        std::vector<float> out(static_cast<size_t>(nq * d));
        std::vector<float> lse(static_cast<size_t>(nq));
        cpu::attendKeyLists(
            qr, kr, vr, out.data(), d, lse.data(), d, scale,
            [&](int64_t q, std::vector<int64_t> &keys) {
              routingKeys(g, index, members, q, nq, nk, h, numHeads, keys);
            },
            args.numThreads);
        storeHead(args, b, local, out, lse);
        continue;
      }
      std::vector<std::vector<int64_t>> lists;
      if (a.family == k::kBlockIndex) {
        if (!bi)
          return "the block_index group of head " + std::to_string(h) +
                 " has no index";
        lists = cpu::blockIndexLists(*bi, b, local);
      }
      k::OwnedLayerTable t;
      if (std::string e = dynamicHeadProgram(g, qr, kr, d, scale, t, &lists);
          !e.empty())
        return e;
      if (t.data.empty())
        t.data.push_back(0);
      t.numHeads = numHeads;
      t.groupBegin = {0, static_cast<k::i64>(t.nodes.size())};
      t.computedHead = {h};
      t.headGroup = {0};
      cpu::LayerArgs one = args;
      one.q = batchView(args.q, b);
      one.k = batchView(args.k, b);
      one.v = batchView(args.v, b);
      one.o = batchView(args.o, b);
      one.lse = args.lse ? args.lse + b * args.q.heads * nq : nullptr;
      one.writeSkipped = false;
      if (std::string e = cpu::runLayer(t.table(), one); !e.empty())
        return e;
    }
  return "";
}

std::string tessera::runtime::routingBackwardCpu(const DynamicGroupDesc &g,
                                                 const cpu::BackwardArgs &a,
                                                 int64_t b, int64_t numHeads,
                                                 const float *centroids,
                                                 int64_t centroidStride) {
  const k::DynArgs &da = g.args;
  const int64_t nq = a.q.seq, nk = a.k.seq, d = a.q.headDim;
  const int64_t ratio =
      numHeads / (a.numKvHeads > 0 ? a.numKvHeads : a.k.heads);
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(double(d));
  // dK and dV of each kv head the group reads, over the group's heads.
  std::map<int64_t, std::pair<std::vector<double>, std::vector<double>>> kv;
  std::vector<int64_t> keys;
  for (k::i64 h : g.heads) {
    const int64_t kvHead = h / ratio;
    std::vector<float> qf = headRows(a.q, b, h), kf = headRows(a.k, b, kvHead),
                       vf = headRows(a.v, b, kvHead), of = headRows(a.o, b, h),
                       gf = headRows(a.dO, b, h);
    cpu::Rows qr{qf.data(), nq, d}, kr{kf.data(), nk, d};
    const cpu::RoutingIndex index = cpu::buildRouting(
        qr, kr, d, da.clusters, da.iterations,
        da.iterations ? nullptr : centroids + h * centroidStride * d);
    const std::vector<std::vector<int64_t>> members =
        clusterMembers(index, da.clusters, nk);
    auto &[dK, dV] = kv[kvHead];
    dK.resize(size_t(nk * d), 0.0);
    dV.resize(size_t(nk * d), 0.0);
    const float *lse = a.lse + (b * numHeads + h) * nq;
    const float *dLse = a.dLse ? a.dLse + (b * numHeads + h) * nq : nullptr;
    std::vector<double> dq(static_cast<size_t>(d));
    for (int64_t q = 0; q < nq; ++q) {
      std::fill(dq.begin(), dq.end(), 0.0);
      const float *qq = &qf[size_t(q * d)], *go = &gf[size_t(q * d)];
      if (lse[q] != -INFINITY) { // else no key: dq = 0
        double delta = dLse ? -double(dLse[q]) : 0.0;
        for (int64_t x = 0; x < d; ++x)
          delta += double(go[x]) * of[size_t(q * d + x)];
        keys.clear();
        routingKeys(g, index, members, q, nq, nk, h, numHeads, keys);
        for (int64_t key : keys) {
          const float *kk = &kf[size_t(key * d)], *vv = &vf[size_t(key * d)];
          double s = 0, dp = 0;
          for (int64_t x = 0; x < d; ++x) {
            s += double(qq[x]) * kk[x];
            dp += double(go[x]) * vv[x];
          }
          const double p = std::exp(scale * s - double(lse[q]));
          const double ds = p * (dp - delta);
          for (int64_t x = 0; x < d; ++x) {
            dV[size_t(key * d + x)] += p * go[x];
            dK[size_t(key * d + x)] += scale * ds * qq[x];
            dq[size_t(x)] += scale * ds * kk[x];
          }
        }
      }
      for (int64_t x = 0; x < d; ++x)
        storeElement(a.dq,
                     b * a.dq.strideBatch + q * a.dq.strideSeq +
                         h * a.dq.strideHead + x,
                     float(dq[size_t(x)]));
    }
  }
  // Added to what the static pass stored for the kv head's other heads.
  for (const auto &[kvHead, grads] : kv)
    for (auto [t, sum] :
         {std::pair{&a.dk, &grads.first}, {&a.dv, &grads.second}})
      for (int64_t key = 0; key < nk; ++key)
        for (int64_t x = 0; x < d; ++x) {
          const int64_t at = b * t->strideBatch + key * t->strideSeq +
                             kvHead * t->strideHead + x;
          storeElement(
              *t, at, float(loadElement(*t, at) + (*sum)[size_t(key * d + x)]));
        }
  return "";
}
