//===- DynamicEmulatorTest.cpp - dynamic groups' CUDA kernels on the host -===//
//
// The index kernels and the attention over the index of every dynamic group
// of Inputs/dynamic-emulation.mlir, compiled for the host with
// tessera/kernel/Emulate.h and launched in the runtime's order
// (dynLaunch of DynamicArgs.h), checked twice:
//  * the index they build (read back from the workspace) against the CPU
//    builders of tessera/cpu/Dynamic.h (themselves checked against float64
//    numpy references): the same columns and diagonals, key blocks and
//    clusters on inputs with planted structure;
//  * the output against float64 attention masked by that index through the
//    manifest's programs, allowed = (leaf and with) or (not leaf and
//    without): every allowed pair visited once, nothing else.
// Lengths are not tile multiples; Nq < Nk, Nq > Nk and Nq = Nk; batch 2;
// rows copied by cp.async and, unaligned, element by element. The
// attention's copies are all waited for and its shared-memory requests
// conflict-free.
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/Dynamic.h"
#include "tessera/cpu/Half.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "tessera/kernel/Emulate.h"
#include "tessera/kernel/Program.h"
#include "tessera/kernel/DynamicArgs.h"

#include "EmuParams.h"

using namespace tessera;
namespace json = llvm::json;
namespace k = tessera::kernel;

namespace {

struct Program {
  std::vector<k::Node> nodes;
  std::vector<k::i64> data;
  bool allowed(int64_t q, int64_t key, int64_t nq, int64_t nk, int64_t head,
               int64_t heads) const {
    return k::allowedPair(nodes.data(), k::i64(nodes.size()), data.data(), q,
                          key, nq, nk, head, heads);
  }
};

Program programOf(const json::Object &o) {
  Program p;
  for (const json::Value &n : *o.getArray("nodes")) {
    const json::Array &a = *n.getAsArray();
    k::Node node{};
    node.kind = *a[0].getAsInteger();
    node.axis = *a[1].getAsInteger();
    node.a = *a[2].getAsInteger();
    node.b = *a[3].getAsInteger();
    node.c = *a[4].getAsInteger();
    node.dataBegin = *a[5].getAsInteger();
    node.dataSize = *a[6].getAsInteger();
    p.nodes.push_back(node);
  }
  for (const json::Value &x : *o.getArray("data"))
    p.data.push_back(*x.getAsInteger());
  return p;
}

struct Case {
  int64_t batch, nq, nk;
  bool vec = true; ///< rows 16-byte aligned: cp.async copies
  /// Where >= 0: element 3 of this key's value is infinite in every batch
  /// entry and kv head. The rows that see the key must get a non-finite
  /// output element 3 and every other row and element stay right (the
  /// guarded second pass over the tiles).
  int64_t poisonKey = -1;
  /// The attention over the index by the sm_90a twins (HopperDynamic.cuh:
  /// wgmma, TMA for contiguous tiles, cp.async for gathered ones) where
  /// the group has them (head_dim 64 and 128), with tensor maps of K and V.
  bool hopper = false;
};

/// HopperDynamic.cuh's HopperDynLaunch: the twins' packed arguments.
struct HopperDynPack {
  k::AttnParams p;
  k::DynArgs a;
  tessera_emu::TensorMap maps[3]; // q (not read), k, v
};

/// The tensor map the runtime makes of a [B, seq, heads, d] tensor of
/// 16-bit elements for the twins (HopperLaunch.cpp): boxes of 64 elements
/// of d by 64 tokens of one head and batch entry, 128-byte swizzle, zeros
/// past the end.
void encodeKeys(tessera_emu::TensorMap &map, uint16_t *base, bool f16,
                int64_t B, int64_t seq, int64_t heads, int64_t d) {
  const uint64_t dims[4] = {uint64_t(d), uint64_t(heads), uint64_t(seq),
                            uint64_t(B)};
  const uint64_t strides[3] = {dims[0] * 2, dims[0] * dims[1] * 2,
                               dims[0] * dims[1] * dims[2] * 2};
  const uint32_t box[4] = {64, 1, 64, 1};
  ASSERT_EQ(tessera_emu::encodeTensorMapTiled(
                &map, f16 ? tessera_emu::kTensorMapF16
                          : tessera_emu::kTensorMapBF16,
                4, base, dims, strides, box, 3, true),
            0);
}

template <typename T> T *at(std::vector<unsigned char> &ws, int64_t offset) {
  return reinterpret_cast<T *>(ws.data() + offset);
}

/// Runs a dynamic group's launches (bundle `name`, the group's kernel list)
/// as the runtime does: in the chunks of heads, batch entries and (block
/// top-k) query blocks that dynChunkPlan gives for `budget`, one workspace
/// `ws` reused by every chunk (after the run it holds the last chunk's
/// slices). Counts each kernel's launches; returns the chunks run.
/// `twins`: null, or the sm_90a twins of the attention kernels (launched
/// in their place, 384 threads and two query tiles a block, with `maps`).
int runGroup(const std::string &name, const std::vector<std::string> &kernels,
             const k::AttnParams &p, k::DynArgs a, int64_t slots, int64_t batch,
             int64_t budget, std::vector<unsigned char> &ws,
             std::vector<int> &launches,
             const std::vector<std::string> *twins = nullptr,
             const tessera_emu::TensorMap *maps = nullptr) {
  k::DynChunks plan;
  if (!k::dynChunkPlan(a, p.nq, p.nk, slots, batch, budget, plan)) {
    ADD_FAILURE() << "no chunks within " << budget << " bytes";
    return 0;
  }
  EXPECT_LE(plan.bytes, budget);
  ws.assign(size_t(plan.bytes) + 16, 0);
  a.ws = ws.data();
  a.qChunk = plan.qChunk;
  a.qChunks = plan.qChunks;
  launches.assign(kernels.size(), 0);
  auto &reg = tessera_emu::registry();
  int chunks = 0;
  for (int64_t b0 = 0; b0 < batch; b0 += plan.batches)
    for (int64_t s0 = 0; s0 < slots; s0 += plan.slots) {
      a.batch0 = b0;
      a.slot0 = s0;
      a.numSlots = std::min<int64_t>(plan.slots, slots - s0);
      const int64_t batches = std::min<int64_t>(plan.batches, batch - b0);
      chunks += int(plan.qChunks);
      for (int64_t i = 0; i < k::dynLaunchCount(a); ++i) {
        k::i64 kernel, gx, qBlock0;
        k::dynLaunch(a, p.nq, p.nk, i, kernel, gx, qBlock0);
        if (size_t(kernel) >= kernels.size()) {
          ADD_FAILURE() << "launch " << i << " names kernel " << kernel;
          return chunks;
        }
        ++launches[size_t(kernel)];
        auto fn = reg.find(name + "/" + kernels[size_t(kernel)]);
        if (fn == reg.end()) {
          ADD_FAILURE() << "no kernel " << kernels[size_t(kernel)];
          return chunks;
        }
        a.qBlock0 = qBlock0;
        const std::string twin = kernels[size_t(kernel)] + "_wgmma";
        if (twins &&
            std::find(twins->begin(), twins->end(), twin) != twins->end()) {
          auto tf = reg.find(name + "/" + twin);
          if (tf == reg.end()) {
            ADD_FAILURE() << "no kernel " << twin;
            return chunks;
          }
          HopperDynPack pack{p, a, {maps[0], maps[1], maps[2]}};
          tessera_emu::launch([&] { tf->second(&pack, 0); },
                              dim3{unsigned(k::dynTwinGrid(gx)),
                                   unsigned(a.numSlots), unsigned(batches)},
                              dim3{384, 1, 1});
          continue;
        }
        struct {
          k::AttnParams p;
          k::DynArgs a;
        } args{p, a};
        tessera_emu::launch(
            [&] { fn->second(&args, 0); },
            dim3{unsigned(gx), unsigned(a.numSlots), unsigned(batches)},
            dim3{128, 1, 1});
      }
    }
  return chunks;
}

/// Runs every dynamic group of bundle `name` (built from
/// Inputs/dynamic-emulation.mlir or Inputs/DynamicHopper.mlir) on `shape`
/// and checks it (gtest failures).
void checkDynamicBundle(const std::string &name, const Case &shape) {
  std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
  auto buf = llvm::MemoryBuffer::getFile(dir + "/manifest.json");
  ASSERT_TRUE(bool(buf)) << dir;
  llvm::Expected<json::Value> manifest = json::parse((*buf)->getBuffer());
  ASSERT_TRUE(bool(manifest));
  std::mt19937_64 rng(11);
  std::normal_distribution<float> dist(0, 1);
  int groupsChecked = 0;
  int64_t poisonSeen = 0; // output elements a poisoned value reaches
  int flexModes[2] = {0, 0}; // heads with tau > 0: query-aware, vertical-slash
  for (const json::Value &lv : *manifest->getAsObject()->getArray("layers")) {
    const json::Object &layer = *lv.getAsObject();
    const json::Array *dyn = layer.getArray("dynamic_groups");
    if (!dyn)
      continue;
    const int64_t hq = *layer.getInteger("num_heads");
    const int64_t hkv = *layer.getInteger("num_kv_heads");
    const int64_t d = *layer.getInteger("head_dim");
    const int position = int(*layer.getInteger("position"));
    const bool f16 = *layer.getString("dtype") == "f16";
    const int64_t B = shape.batch, nq = shape.nq, nk = shape.nk;
    auto round = [&](float x) {
      return f16 ? cpu::floatToF16(x) : cpu::floatToBf16(x);
    };
    auto value = [&](uint16_t x) {
      return f16 ? cpu::f16ToFloat(x) : cpu::bf16ToFloat(x);
    };
    // Contiguous [B, seq, heads, d]; planted structure: keys 7 and 100
    // share a direction every query leans to, query i resembles key i - 13;
    // in layer 0 the last kv head (and its query heads: the routing groups)
    // has tokens from four separated clusters (position mod 4) instead; in
    // layer 3 the odd kv heads' queries all lean to the first 64 keys (the
    // pooled estimate is then the true attention: FlexPrefill's
    // query-aware mode, the planted heads its vertical-slash-like one).
    std::vector<float> dirs(static_cast<size_t>(4 * d)), sink(static_cast<size_t>(d));
    for (float &x : dirs)
      x = 1.5f * dist(rng);
    for (float &x : sink)
      x = dist(rng);
    std::vector<float> kf(size_t(B * nk * hkv * d)), qf(size_t(B * nq * hq * d)),
        vf(kf.size());
    auto kIdx = [&](int64_t b, int64_t s, int64_t h) {
      return size_t(((b * nk + s) * hkv + h) * d);
    };
    auto qIdx = [&](int64_t b, int64_t s, int64_t h) {
      return size_t(((b * nq + s) * hq + h) * d);
    };
    auto clustered = [&](int64_t kvh) {
      return (position == 0 && kvh == hkv - 1) || position == 2;
    };
    auto plain = [&](int64_t kvh) { return position == 3 && kvh % 2 == 1; };
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < nk; ++s)
        for (int64_t h = 0; h < hkv; ++h)
          for (int64_t x = 0; x < d; ++x) {
            float val = 0.5f * dist(rng);
            if (clustered(h))
              val += dirs[size_t((s % 4) * d + x)];
            else if (plain(h))
              val += s < 64 ? dirs[size_t(x)] : 0.f;
            else if (s == 7 || s == 100)
              val += 0.5f * sink[size_t(x)];
            kf[kIdx(b, s, h) + x] = val;
            vf[kIdx(b, s, h) + x] = dist(rng);
          }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < nq; ++s)
        for (int64_t h = 0; h < hq; ++h) {
          int64_t kvh = h / (hq / hkv), pos = s + nk - nq, src = pos - 13;
          for (int64_t x = 0; x < d; ++x) {
            float val = 0.5f * dist(rng);
            if (clustered(kvh))
              val += dirs[size_t((s % 4) * d + x)];
            else if (plain(kvh))
              val += dirs[size_t(x)];
            else {
              val += sink[size_t(x)];
              if (src >= 0 && src < nk)
                val += 1.5f * kf[kIdx(b, src, kvh) + x];
            }
            qf[qIdx(b, s, h) + x] = val;
          }
        }
    std::vector<uint16_t> q(qf.size()), kk(kf.size()), v(vf.size()),
        o(qf.size(), round(7.0f));
    for (size_t i = 0; i < q.size(); ++i)
      qf[i] = value(q[i] = round(qf[i]));
    for (size_t i = 0; i < kk.size(); ++i) {
      kf[i] = value(kk[i] = round(kf[i]));
      vf[i] = value(v[i] = round(vf[i]));
    }
    if (shape.poisonKey >= 0)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < hkv; ++h) {
          const size_t at = kIdx(b, shape.poisonKey, h) + 3;
          vf[at] = value(v[at] = round(std::numeric_limits<float>::infinity()));
        }
    std::vector<float> lse(size_t(B * hq * nq), 7.0f);
    k::AttnParams p = denseParams(q.data(), kk.data(), v.data(), o.data(),
                                  lse.data(), nq, nk, hq, hkv, d, shape.vec);
    const double scale = 1.0 / std::sqrt(double(d));

    int groupIndex = 0;
    for (const json::Value &gv : *dyn) {
      const json::Object &g = *gv.getAsObject();
      const std::string family = g.getString("family")->str();
      const json::Object &par = *g.getObject("params");
      std::vector<int64_t> heads;
      for (const json::Value &h : *g.getArray("heads"))
        heads.push_back(*h.getAsInteger());
      std::vector<std::string> kernels, twins;
      for (const json::Value &kv : *g.getArray("kernels"))
        kernels.push_back(kv.getAsString()->str());
      if (const json::Object *w = g.getObject("wgmma"))
        for (const json::Value &kv : *w->getArray("kernels"))
          twins.push_back(kv.getAsString()->str());
      // Head_dim 64 and 128 have twins; 96 keeps the mma.sync kernels.
      EXPECT_EQ(twins.empty(), d != 64 && d != 128);
      const bool hopper = shape.hopper && !twins.empty();
      Program with = programOf(*g.getObject("with")),
              without = programOf(*g.getObject("without"));
      SCOPED_TRACE("layer " + std::to_string(position) + " group " +
                   std::to_string(groupIndex) + " (" + family + ") nq " +
                   std::to_string(nq) + " nk " + std::to_string(nk));

      k::DynArgs a{};
      a.numSlots = int64_t(heads.size());
      a.headDim = d;
      a.layer = position;
      a.group = groupIndex++;
      std::vector<float> centroids;
      // block_index: the caller's CSR, random per (batch entry, head) of
      // every head (rows of other groups' heads never read), with empty
      // rows: offsets [B, hq, R + 1] into one shared cols.
      std::vector<int32_t> biOffsets, biCols;
      int64_t biRows = 0;
      if (family == "block_index") {
        a.family = k::kBlockIndex;
        a.blockQ = *par.getInteger("block_q");
        a.blockK = *par.getInteger("block_k");
        biRows = k::btQueryBlocks(a.blockQ, nq, nk);
        const int64_t keyBlocks = k::dynCeilDiv(nk, a.blockK);
        std::mt19937_64 pick(uint64_t(1000 * position + a.group));
        const int64_t first = k::btFirstBlock(a.blockQ, nq, nk);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < hq; ++h)
            for (int64_t i = 0; i <= biRows; ++i) {
              biOffsets.push_back(int32_t(biCols.size()));
              if (i == biRows || (i > 0 && (i + b + h) % 4 == 1))
                continue; // (an empty row)
              // Random key blocks, and the one that holds the query
              // block's first position (causal keeps some of it); every
              // block in some rows.
              const int64_t own = std::min<int64_t>(
                  keyBlocks - 1,
                  std::max<int64_t>(0, (first + i) * a.blockQ) / a.blockK);
              for (int64_t j = 0; j < keyBlocks; ++j)
                if (pick() % 5 < 2 || j == own || (i + h) % 4 == 3)
                  biCols.push_back(int32_t(j));
            }
        biCols.push_back(-1); // (never read: cols is never empty)
        a.biOffsets = biOffsets.data();
        a.biCols = biCols.data();
        a.biHeads = hq;
        a.biStride = biRows;
      } else if (family == "vertical_slash") {
        a.family = k::kVerticalSlash;
        a.lastQ = *par.getInteger("last_q");
        a.vertical = *par.getInteger("vertical");
        a.slash = *par.getInteger("slash");
        a.firstColumns = *par.getInteger("first_columns");
        a.lastDiagonals = *par.getInteger("last_diagonals");
      } else if (family == "block_topk") {
        a.family = k::kBlockTopk;
        a.block = *par.getInteger("block");
        a.gamma = float(*par.getNumber("gamma"));
        a.topK = *par.getInteger("top_k");
        a.minBlocks = *par.getInteger("min_blocks");
        a.maxBlocks = *par.getInteger("max_blocks");
        a.tau = float(par.getNumber("tau").value_or(0));
      } else {
        a.family = k::kRouting;
        a.clusters = *par.getInteger("clusters");
        a.iterations = *par.getInteger("kmeans_iterations");
        a.merge = g.getBoolean("merge_without").value_or(false) ? 1 : 0;
        if (a.iterations == 0) {
          // The engine's centroids: the cluster directions, permuted.
          centroids.resize(size_t(hq * a.clusters * d));
          for (int64_t h = 0; h < hq; ++h)
            for (int64_t j = 0; j < a.clusters; ++j)
              for (int64_t x = 0; x < d; ++x)
                centroids[size_t((h * a.clusters + j) * d + x)] =
                    dirs[size_t(((j + 1) % 4) * d + x)];
          a.centroids = centroids.data();
        }
      }
      // One chunk (every head and batch entry: the workspace holds every
      // slice for the index checks below).
      const int64_t slots = int64_t(heads.size());
      k::DynLayout lay = k::dynLayout(a, nq, nk);
      std::vector<unsigned char> ws;
      std::vector<int> launches;
      tessera_emu::resetBankCounts();
      tessera_emu::resetLeftoverCopies();
      tessera_emu::TensorMap maps[3] = {};
      if (hopper) {
        encodeKeys(maps[1], kk.data(), f16, B, nk, hkv, d);
        encodeKeys(maps[2], v.data(), f16, B, nk, hkv, d);
      }
      ASSERT_EQ(runGroup(name, kernels, p, a, slots, B, k::kUnbounded - 1, ws,
                         launches, hopper ? &twins : nullptr, maps),
                1);

      // The attention's copies all waited for, and its shared-memory
      // requests (cp.async of contiguous and gathered rows into the
      // swizzled layout, ldmatrix of Q and K, ldmatrix.trans of V)
      // conflict-free. (Head_dim 96's padded rows, TileLayout's choice
      // for the static kernel too, are conflict-free for ldmatrix only:
      // a quarter warp's 16-byte copies cross a row there.)
      EXPECT_EQ(tessera_emu::leftoverCopies(), 0u);
      for (int kind : {tessera_emu::BankLdmatrix, tessera_emu::BankCpAsync}) {
        const tessera_emu::BankCounts c = tessera_emu::bankCounts(kind);
        // (The twins load no fragment by ldmatrix: wgmma reads shared
        // memory itself; their cp.async copies are the query tile's and the
        // gathered key tiles'.)
        if (shape.vec ? !(hopper && kind == tessera_emu::BankLdmatrix)
                      : kind == tessera_emu::BankLdmatrix) {
          EXPECT_GT(c.requests, 0u) << "kind " << kind;
        }
        if (d % 64 == 0 || kind == tessera_emu::BankLdmatrix) {
          EXPECT_EQ(c.wavefronts, c.ideal) << "kind " << kind;
        }
      }

      // Each kernel once, k-means' two once per iteration.
      for (size_t i = 0; i < kernels.size(); ++i) {
        int want = 1;
        if (a.family == k::kRouting && (i == 1 || i == 2))
          want = int(a.iterations) + (i == 1 ? 1 : 0);
        EXPECT_EQ(launches[i], want) << kernels[i];
      }
      int64_t groupVisited = 0;
      for (int64_t b = 0; b < B; ++b)
        for (size_t slot = 0; slot < heads.size(); ++slot) {
          const int64_t h = heads[slot], kvh = h / (hq / hkv);
          size_t base = size_t((b * a.numSlots + int64_t(slot)) * lay.size);
          cpu::Rows qr{&qf[qIdx(b, 0, h)], nq, hq * d};
          cpu::Rows kr{&kf[kIdx(b, 0, kvh)], nk, hkv * d};
          // The leaf as the kernels built it, and the CPU builder's.
          std::function<bool(int64_t, int64_t)> leaf;
          std::vector<int64_t> cols, diags;
          std::vector<std::vector<int64_t>> lists;
          std::vector<int> qc, kc;
          if (a.family == k::kVerticalSlash) {
            const int64_t *counts = at<int64_t>(ws, int64_t(base) + lay.counts);
            cols.assign(at<int64_t>(ws, int64_t(base) + lay.cols),
                        at<int64_t>(ws, int64_t(base) + lay.cols) + counts[0]);
            diags.assign(at<int64_t>(ws, int64_t(base) + lay.diags),
                         at<int64_t>(ws, int64_t(base) + lay.diags) +
                             counts[1]);
            const cpu::VerticalSlashParams vp{a.lastQ, a.vertical, a.slash,
                                              a.firstColumns, a.lastDiagonals};
            cpu::VerticalSlashIndex ref =
                cpu::buildVerticalSlash(qr, kr, d, float(scale), vp);
            // Planted and within budget (head 0 of layer 0): exactly the
            // CPU's; elsewhere ties in the noise may differ by a few.
            if (position == 0 && h == 0) {
              EXPECT_EQ(cols, ref.columns);
              EXPECT_EQ(diags, ref.diagonals);
            } else {
              std::vector<int64_t> common;
              std::set_intersection(cols.begin(), cols.end(),
                                    ref.columns.begin(), ref.columns.end(),
                                    std::back_inserter(common));
              EXPECT_EQ(cols.size(), ref.columns.size());
              EXPECT_GE(double(common.size()),
                        0.9 * double(ref.columns.size()));
              common.clear();
              std::set_intersection(diags.begin(), diags.end(),
                                    ref.diagonals.begin(), ref.diagonals.end(),
                                    std::back_inserter(common));
              EXPECT_EQ(diags.size(), ref.diagonals.size());
              EXPECT_GE(double(common.size()),
                        0.9 * double(ref.diagonals.size()));
            }
            leaf = [&](int64_t i, int64_t key) {
              int64_t pos = i + nk - nq;
              return std::binary_search(cols.begin(), cols.end(), key) ||
                     std::binary_search(diags.begin(), diags.end(), key - pos);
            };
          } else if (a.family == k::kBlockTopk) {
            const int64_t tq = k::btQueryBlocks(a.block, nq, nk);
            const int64_t *count =
                at<int64_t>(ws, int64_t(base) + lay.listCount);
            const int64_t *list = at<int64_t>(ws, int64_t(base) + lay.lists);
            auto ref =
                a.tau > 0
                    ? cpu::buildBlockTopkFlex(qr, kr, d, float(scale), a.block,
                                              a.gamma, a.minBlocks,
                                              a.maxBlocks, a.tau)
                    : cpu::buildBlockTopk(qr, kr, d, float(scale), a.block,
                                          a.gamma, a.topK, a.minBlocks,
                                          a.maxBlocks);
            if (a.tau > 0) {
              // FlexPrefill's choice: the kernels' distance (fp32) and
              // mode against the CPU builder's (double).
              const int64_t mode =
                  *at<int64_t>(ws, int64_t(base) + lay.flexMode);
              const float dist =
                  *at<float>(ws, int64_t(base) + lay.flexMode + 8);
              EXPECT_EQ(mode != 0, ref.verticalSlash) << "head " << h;
              EXPECT_NEAR(dist, ref.distance, 1e-3) << "head " << h;
              ++flexModes[ref.verticalSlash ? 1 : 0];
            }
            lists.resize(size_t(tq));
            for (int64_t i = 0; i < tq; ++i) {
              lists[size_t(i)].assign(list + i * lay.cap,
                                      list + i * lay.cap + count[i]);
              EXPECT_EQ(lists[size_t(i)], ref.lists[size_t(i)])
                  << "query block " << i;
            }
            EXPECT_EQ(ref.firstBlock, k::btFirstBlock(a.block, nq, nk));
            // (ref ends with this branch: its first block by value.)
            leaf = [&, first = ref.firstBlock](int64_t i, int64_t key) {
              // Query blocks of positions p = i + Nk - Nq.
              const int64_t qb = k::floorDiv(i + nk - nq, a.block) - first;
              const auto &l = lists[size_t(qb)];
              return std::binary_search(l.begin(), l.end(), key / a.block);
            };
          } else if (a.family == k::kBlockIndex) {
            const int32_t *off =
                &biOffsets[size_t((b * hq + h) * (biRows + 1))];
            const int32_t *colsAt = biCols.data();
            const int64_t first = k::btFirstBlock(a.blockQ, nq, nk);
            leaf = [=, &a](int64_t i, int64_t key) {
              const int64_t qb = k::floorDiv(i + nk - nq, a.blockQ) - first;
              return std::binary_search(colsAt + off[qb], colsAt + off[qb + 1],
                                        int32_t(key / a.blockK));
            };
          } else {
            qc.assign(at<int>(ws, int64_t(base) + lay.qCluster),
                      at<int>(ws, int64_t(base) + lay.qCluster) + nq);
            kc.assign(at<int>(ws, int64_t(base) + lay.kCluster),
                      at<int>(ws, int64_t(base) + lay.kCluster) + nk);
            cpu::RoutingIndex ref = cpu::buildRouting(
                qr, kr, d, a.clusters, a.iterations,
                a.iterations ? nullptr : &centroids[size_t(h * a.clusters * d)]);
            EXPECT_EQ(qc, std::vector<int>(ref.queryCluster.begin(),
                                           ref.queryCluster.end()));
            EXPECT_EQ(kc, std::vector<int>(ref.keyCluster.begin(),
                                           ref.keyCluster.end()));
            leaf = [&](int64_t i, int64_t key) {
              return qc[size_t(i)] == kc[size_t(key)];
            };
          }
          // float64 attention masked by the built index.
          const double tol = f16 ? 2e-3 : 1.6e-2;
          const double inf = std::numeric_limits<double>::infinity();
          double maxRef = 0, maxErr = 0, lseErr = 0;
          int64_t visited = 0;
          std::vector<double> s(static_cast<size_t>(nk)), out(static_cast<size_t>(d));
          for (int64_t i = 0; i < nq; ++i) {
            double m = -inf;
            for (int64_t j = 0; j < nk; ++j) {
              s[size_t(j)] = -inf;
              bool ok = leaf(i, j) ? with.allowed(i, j, nq, nk, h, hq)
                                   : without.allowed(i, j, nq, nk, h, hq);
              if (!ok)
                continue;
              ++visited;
              double dot = 0;
              for (int64_t x = 0; x < d; ++x)
                dot += double(qf[qIdx(b, i, h) + x]) *
                       double(kf[kIdx(b, j, kvh) + x]);
              s[size_t(j)] = dot * scale;
              m = std::max(m, s[size_t(j)]);
            }
            double l = 0;
            std::fill(out.begin(), out.end(), 0.0);
            if (m > -inf)
              for (int64_t j = 0; j < nk; ++j) {
                if (s[size_t(j)] == -inf)
                  continue;
                double e = std::exp(s[size_t(j)] - m);
                l += e;
                for (int64_t x = 0; x < d; ++x)
                  out[size_t(x)] += e * double(vf[kIdx(b, j, kvh) + x]);
              }
            for (int64_t x = 0; x < d; ++x) {
              double r = l > 0 ? out[size_t(x)] / l : 0.0;
              double got = value(o[qIdx(b, i, h) + x]);
              double e;
              if (!std::isfinite(r)) { // the row sees a poisoned value
                ++poisonSeen;
                e = std::isfinite(got) ? inf : 0.0;
              } else {
                maxRef = std::max(maxRef, std::abs(r));
                e = std::isfinite(got) ? std::abs(got - r) : inf;
              }
              if (l == 0 && got != 0)
                e = inf;
              maxErr = std::max(maxErr, e);
            }
            double refLse = l > 0 ? m + std::log(l) : -inf;
            double gotLse = lse[size_t((b * hq + h) * nq + i)];
            lseErr = std::max(
                lseErr, refLse == -inf
                            ? (gotLse == -inf ? 0.0 : inf)
                            : std::abs(gotLse - refLse) /
                                  (1e-3 * (1 + std::abs(refLse))));
          }
          // (A caller's lists may leave a head nothing: its rows empty,
          // or listing blocks the rest of the pattern cuts.)
          if (a.family != k::kBlockIndex) {
            EXPECT_GT(visited, 0);
          }
          groupVisited += visited;
          EXPECT_LE(maxErr / std::max(maxRef, 1e-30), tol)
              << "batch " << b << " head " << h;
          EXPECT_LE(lseErr, 1.0) << "batch " << b << " head " << h;
        }
      EXPECT_GT(groupVisited, 0);
      // The workspace bounded: the smallest chunks it allows (one
      // (batch, head) slice; block top-k one query block at a time) and
      // chunks of two slices give bit-identical outputs.
      const std::vector<uint16_t> oOne = o;
      const std::vector<float> lseOne = lse;
      const int64_t least = k::dynMinWorkspace(a, nq, nk);
      for (int64_t budget :
           {least, int64_t(2 * k::dynSliceBytes(a, nq, nk, 0) + 100)}) {
        std::fill(o.begin(), o.end(), round(7.0f));
        std::fill(lse.begin(), lse.end(), 7.0f);
        std::vector<unsigned char> ws2;
        std::vector<int> launches2;
        const int chunks =
            runGroup(name, kernels, p, a, slots, B, budget, ws2, launches2,
                     hopper ? &twins : nullptr, maps);
        if (budget == least && a.family == k::kBlockIndex) {
          EXPECT_EQ(chunks, 1); // no workspace: one chunk
        } else if (budget == least) {
          EXPECT_EQ(chunks, B * slots *
                                (a.family == k::kBlockTopk
                                     ? k::btQueryBlocks(a.block, nq, nk)
                                     : 1));
        }
        int64_t differ = 0;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h : heads)
            for (int64_t i = 0; i < nq; ++i) {
              for (int64_t x = 0; x < d; ++x)
                differ += o[qIdx(b, i, h) + x] != oOne[qIdx(b, i, h) + x];
              const size_t at = size_t((b * hq + h) * nq + i);
              differ += std::memcmp(&lse[at], &lseOne[at], 4) != 0;
            }
        EXPECT_EQ(differ, 0)
            << chunks << " chunks within " << budget << " bytes";
      }
      std::copy(oOne.begin(), oOne.end(), o.begin());
      std::copy(lseOne.begin(), lseOne.end(), lse.begin());
      ++groupsChecked;
    }
  }
  if (shape.poisonKey >= 0) {
    EXPECT_GT(poisonSeen, 0); // the check saw poisoned rows
  }
  if (name == "dynamic-hopper") {
    EXPECT_EQ(groupsChecked, 8);
    return;
  }
  if (name.find("block-index") != std::string::npos) {
    EXPECT_EQ(groupsChecked, 6);
    return;
  }
  EXPECT_EQ(groupsChecked, 14);
  // The tau > 0 heads took both of FlexPrefill's modes.
  EXPECT_GT(flexModes[0], 0);
  EXPECT_GT(flexModes[1], 0);
}

/// The dynamic groups of patterns/minference-llm.mlir (head_dim 128): the
/// families of the workspace formula.
std::vector<std::pair<k::DynArgs, int64_t>> minferenceGroups() {
  k::DynArgs vs{}, bt{}, gamma{}, rt{};
  vs.family = k::kVerticalSlash;
  vs.lastQ = 64;
  vs.vertical = 1000;
  vs.slash = 6096;
  vs.firstColumns = 30;
  vs.lastDiagonals = 100;
  bt.family = gamma.family = k::kBlockTopk;
  bt.block = 64;
  bt.topK = 100;
  gamma.block = 128;
  gamma.gamma = 0.9f;
  gamma.minBlocks = 4;
  gamma.maxBlocks = 512;
  k::DynArgs flex = gamma;
  flex.tau = 0.1f;
  rt.family = k::kRouting;
  rt.clusters = 16;
  rt.iterations = 2;
  rt.merge = 1;
  std::vector<std::pair<k::DynArgs, int64_t>> groups = {
      {vs, 20}, {bt, 4}, {gamma, 16}, {flex, 16}, {rt, 8}};
  for (auto &g : groups)
    g.first.headDim = 128;
  return groups;
}

/// dynChunkPlan keeps a chunk's workspace within the budget and covers
/// every (batch, head) and query block, takes the most that fit, and
/// refuses a budget below one slice (block top-k: of one query block).
/// The example: minference-llm's layer 0 at 4M tokens needs about
/// 85 GiB with every head's index at once, and chunks within the default
/// 2 GiB.
TEST(DynamicChunks, WorkspaceWithinTheBudgetOrRefused) {
  const int64_t big = int64_t(4) << 20;
  for (auto [nq, nk] :
       {std::pair<int64_t, int64_t>{200, 260}, {4000, 4000}, {big, big}})
    for (auto [a, heads] : minferenceGroups())
      for (int64_t batch : {1, 3}) {
        const int64_t full = k::dynSliceBytes(a, nq, nk, 0);
        const int64_t least = k::dynMinWorkspace(a, nq, nk);
        const int64_t tq =
            a.family == k::kBlockTopk ? k::btQueryBlocks(a.block, nq, nk) : 1;
        SCOPED_TRACE("family " + std::to_string(a.family) + " Nq " +
                     std::to_string(nq) + " batch " + std::to_string(batch));
        for (int64_t budget : {least - 1, least, least + full / 3, 2 * full,
                               full * heads * batch - 1, full * heads * batch,
                               int64_t(2) << 30}) {
          k::DynChunks c;
          const bool ok = k::dynChunkPlan(a, nq, nk, heads, batch, budget, c);
          EXPECT_EQ(ok, budget >= least) << budget;
          if (!ok)
            continue;
          EXPECT_LE(c.bytes, budget);
          EXPECT_EQ(c.bytes, c.slots * c.batches * c.sliceBytes);
          EXPECT_TRUE(c.slots >= 1 && c.slots <= heads && c.batches >= 1 &&
                      c.batches <= batch);
          if (c.qChunk == 0) {
            // Whole slices: as many as fit, every batch entry first.
            EXPECT_EQ(c.sliceBytes, full);
            EXPECT_EQ(c.qChunks, 1);
            const int64_t fit = budget / full;
            EXPECT_EQ(c.slots * c.batches, fit >= heads * batch ? heads * batch
                                           : fit >= batch ? fit / batch * batch
                                                          : fit);
          } else {
            // Block top-k, one slice of the most query blocks that fit.
            EXPECT_EQ(a.family, k::kBlockTopk);
            EXPECT_GT(full, budget);
            EXPECT_EQ(c.slots * c.batches, 1);
            EXPECT_EQ(c.sliceBytes, k::dynSliceBytes(a, nq, nk, c.qChunk));
            EXPECT_LT(c.qChunk, tq);
            EXPECT_GT(k::dynSliceBytes(a, nq, nk, c.qChunk + 1), budget);
            EXPECT_EQ(c.qChunks, (tq + c.qChunk - 1) / c.qChunk);
          }
        }
      }
  // Layer 0 (20 vertical-slash heads, 4 block top-k heads), batch 1.
  const auto groups = minferenceGroups();
  const double gib = double(int64_t(1) << 30);
  const double atOnce =
      double(k::dynSliceBytes(groups[0].first, big, big, 0) * groups[0].second +
             k::dynSliceBytes(groups[1].first, big, big, 0) * groups[1].second);
  EXPECT_GT(atOnce, 84 * gib);
  EXPECT_LT(atOnce, 86 * gib);
  for (int i : {0, 1}) {
    k::DynChunks c;
    ASSERT_TRUE(k::dynChunkPlan(groups[i].first, big, big, groups[i].second, 1,
                                int64_t(2) << 30, c));
    EXPECT_LE(double(c.bytes), 2 * gib);
  }
}

/// The launch plan of block top-k in query-block chunks: every query
/// block's scores, take and select once, in that order within its chunk
/// (which the probabilities' rows hold), FlexPrefill's two kernels after
/// the scores of the chunk holding the last query block and before any
/// take; pool first, attend last.
TEST(DynamicChunks, LaunchPlanCoversEveryQueryBlock) {
  for (const auto &g : minferenceGroups()) {
    k::DynArgs a = g.first;
    if (a.family != k::kBlockTopk)
      continue;
    const int64_t nq = 5000, nk = 5300;
    const int64_t tq = k::btQueryBlocks(a.block, nq, nk);
    const bool flex = a.tau > 0;
    for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(3), tq - 1}) {
      a.qChunk = chunk;
      a.qChunks = chunk ? (tq + chunk - 1) / chunk : 1;
      std::vector<int> scored(size_t(tq), 0), taken(size_t(tq), 0),
          selected(size_t(tq), 0);
      bool flexDone = !flex, tookAny = false;
      const int64_t n = k::dynLaunchCount(a);
      for (int64_t i = 0; i < n; ++i) {
        k::i64 kernel, gx, q0;
        k::dynLaunch(a, nq, nk, i, kernel, gx, q0);
        const int64_t take = flex ? 4 : 2;
        if (i == 0 || i == n - 1) {
          EXPECT_EQ(kernel, i == 0 ? 0 : take + 2);
          continue;
        }
        if (flex && (kernel == 2 || kernel == 3)) {
          // The probabilities of the last query block are there.
          EXPECT_EQ(scored[size_t(tq - 1)], 1);
          EXPECT_LE(q0, tq - 1);
          EXPECT_GT(q0 + (chunk ? chunk : tq), tq - 1);
          EXPECT_FALSE(tookAny);
          flexDone |= kernel == 3;
          continue;
        }
        ASSERT_GE(gx, 1);
        ASSERT_LE(q0 + gx, tq);
        if (chunk) {
          EXPECT_LE(gx, chunk);
        }
        for (int64_t qb = q0; qb < q0 + gx; ++qb) {
          if (kernel == 1) {
            ++scored[size_t(qb)];
          } else if (kernel == take) {
            EXPECT_TRUE(flexDone);
            tookAny = true;
            EXPECT_EQ(scored[size_t(qb)], 1);
            ++taken[size_t(qb)];
          } else {
            EXPECT_EQ(kernel, take + 1);
            EXPECT_EQ(taken[size_t(qb)], 1);
            ++selected[size_t(qb)];
          }
        }
      }
      for (int64_t qb = 0; qb < tq; ++qb)
        EXPECT_TRUE(scored[size_t(qb)] == 1 && taken[size_t(qb)] == 1 &&
                    selected[size_t(qb)] == 1)
            << "query block " << qb << " of " << tq << ", chunks of " << chunk;
    }
  }
}

class DynamicEmulatorTest : public ::testing::TestWithParam<Case> {};

TEST_P(DynamicEmulatorTest, IndexAndAttentionMatchReferences) {
  checkDynamicBundle("dynamic-emulation", GetParam());
}

/// A copy whose walk over the static runs forgets to leave out the leaf's
/// pairs (they are visited twice under a union): the check must fail.
TEST(DynamicEmulatorBroken, DoubleVisitedPairsAreCaught) {
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::
            INTERCEPT_ONLY_CURRENT_THREAD,
        &failures);
    checkDynamicBundle("broken-dynamic", Case{1, 200, 200});
  }
  int accuracy = 0;
  for (int i = 0; i < failures.size(); ++i)
    accuracy += std::string(failures.GetTestPartResult(i).message())
                        .find("maxErr") != std::string::npos;
  EXPECT_GT(accuracy, 0);
}

/// A copy that never takes the guarded second pass: the infinite value of a
/// masked key reaches rows that cannot see it (0 * inf in P V).
TEST(DynamicEmulatorBroken, UnguardedNonFiniteValuesAreCaught) {
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::
            INTERCEPT_ONLY_CURRENT_THREAD,
        &failures);
    checkDynamicBundle("broken-dynamic-guard", Case{1, 200, 200, true, 70});
  }
  int accuracy = 0;
  for (int i = 0; i < failures.size(); ++i)
    accuracy += std::string(failures.GetTestPartResult(i).message())
                        .find("maxErr") != std::string::npos;
  EXPECT_GT(accuracy, 0);
}

/// The sm_90a twins broken: the query tile and the gathered key and value
/// rows copied without the 128-byte swizzle that the wgmma descriptors
/// read; the guarded pass not zeroing the masked tile's non-finite values
/// (0 * inf reaches rows that cannot see the key). Each must fail the
/// comparison with float64.
TEST(DynamicEmulatorBroken, HopperTwinsBrokenAreCaught) {
  for (const char *name :
       {"broken-dynamic-hopper-swizzle", "broken-dynamic-hopper-guard"}) {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::
              INTERCEPT_ONLY_CURRENT_THREAD,
          &failures);
      checkDynamicBundle(name, Case{1, 200, 200, true, 70, true});
    }
    int accuracy = 0;
    for (int i = 0; i < failures.size(); ++i)
      accuracy += std::string(failures.GetTestPartResult(i).message())
                          .find("maxErr") != std::string::npos;
    EXPECT_GT(accuracy, 0) << name;
  }
}

/// A producer that does not wait for a stage's release runs ahead of the
/// consumer: its arrivals complete phases of a stage's `full` barrier that
/// the consumer never waits for, and the consumer's wait for a later phase
/// never ends. The emulator reports the deadlock (the block's barriers and
/// who waits where) and stops.
TEST(DynamicEmulatorBroken, HopperProducerRunningAheadDeadlocks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(checkDynamicBundle("broken-dynamic-hopper-release",
                                  Case{1, 200, 200, true, -1, true}),
               "deadlock in block.*mbarrier");
}

/// A consumer that reads its ring's stages without waiting for their
/// `full` barrier: it reads descriptors not yet written (a walk's end where
/// none is, or a previous use's tile), so its warps leave the loop at
/// different tiles and a warpgroup collective (wgmma.fence) never gathers
/// its 128 threads. The emulator reports the deadlock and stops.
TEST(DynamicEmulatorBroken, HopperConsumerNotWaitingForItsStageDeadlocks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(checkDynamicBundle("broken-dynamic-hopper-wait",
                                  Case{1, 200, 200, true, -1, true}),
               "deadlock in block");
}

/// Inputs/DynamicHopper.mlir: each family's sm_90a twin at head_dim 64 and
/// 128 (vertical-slash, block top-k, routing's segments and its rest)
/// against float64, on the twins and on the mma.sync kernels.
TEST(DynamicEmulatorHopper, EveryFamilyAtBothHeadDims) {
  for (bool hopper : {true, false}) {
    SCOPED_TRACE(hopper ? "sm_90a twins" : "mma.sync kernels");
    checkDynamicBundle("dynamic-hopper",
                       Case{2, 150, 260, true, -1, hopper});
    checkDynamicBundle("dynamic-hopper",
                       Case{1, 260, 150, true, 70, hopper});
  }
}

/// Caller-provided block indices (Inputs/dynamic-block-index.mlir:
/// tessera_bi_attend over random lists with empty rows, alone and under
/// causal, a window, a difference; GQA; block_q = 128 with block_k = 192)
/// against float64 masked by the lists through the manifest's programs.
class DynamicEmulatorBlockIndex : public ::testing::TestWithParam<Case> {};

TEST_P(DynamicEmulatorBlockIndex, AttentionMatchesFloat64) {
  checkDynamicBundle("dynamic-block-index", GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DynamicEmulatorBlockIndex,
    // Nk - Nq: 0, 110, -110 (query tiles over two query blocks), 128 and
    // 64 (chunked prefill: a multiple of block_q 64 and 128, of 64 only);
    // element copies; an infinite value at key 70 that only rows listing
    // its key block (and allowed by the rest of the pattern) may see; the
    // sm_90a twins.
    ::testing::Values(Case{2, 200, 200}, Case{2, 150, 260}, Case{2, 260, 150},
                      Case{1, 100, 228}, Case{1, 64, 128},
                      Case{1, 150, 260, false}, Case{1, 200, 200, true, 70},
                      Case{2, 150, 260, true, -1, true},
                      Case{1, 260, 150, true, 70, true}));

/// A copy whose walk reads the key blocks as block_q long (the two sizes
/// swapped, as layer 1's 128 and 192): the check must fail.
TEST(DynamicEmulatorBroken, BlockIndexBrokenIsCaught) {
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::
            INTERCEPT_ONLY_CURRENT_THREAD,
        &failures);
    checkDynamicBundle("broken-dynamic-block-index", Case{1, 150, 260});
  }
  int accuracy = 0;
  for (int i = 0; i < failures.size(); ++i)
    accuracy += std::string(failures.GetTestPartResult(i).message())
                        .find("maxErr") != std::string::npos;
  EXPECT_GT(accuracy, 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, DynamicEmulatorTest,
                         // Nk - Nq: 0, 110 and -110 (query tiles over
                         // two block top-k query blocks), and multiples of
                         // 64 (chunked prefill; partial first blocks).
                         ::testing::Values(Case{2, 200, 200},
                                           Case{2, 150, 260},
                                           Case{2, 260, 150},
                                           Case{1, 64, 192},
                                           Case{1, 100, 228},
                                           Case{1, 200, 136},
                                           // Element copies (no cp.async).
                                           Case{1, 150, 260, false},
                                           // An infinite value at key 70:
                                           // in the diagonal tile of rows
                                           // 64-127, masked for rows 64-69.
                                           Case{1, 200, 200, true, 70},
                                           // The sm_90a twins.
                                           Case{2, 200, 200, true, -1, true},
                                           Case{2, 150, 260, true, -1, true},
                                           Case{2, 260, 150, true, -1, true},
                                           Case{1, 64, 192, true, -1, true},
                                           Case{1, 200, 200, true, 70, true}));

} // namespace
