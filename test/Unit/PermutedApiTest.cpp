//===- PermutedApiTest.cpp - layouts through bundles and the C API --------===//
//
// The permuted bundle (Inputs/permuted.mlir after --attn-permute): its
// manifest records each group's layout, the runtime refuses bad layouts by
// name, and a CPU context runs the permuted groups in their order
// (cpu::runPermutedGroup) on dense calls: against float64, against the same
// bundle without its layouts, and bit for bit against the executors called
// directly (the evidence of which path ran: the permuted walk sums in
// another order than the original one, so their bits differ). GQA, batch 2,
// Nq != Nk both ways; a call the permuted path does not take (a head range)
// runs in the original order.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/Pattern.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Layout.h"
#include "tessera/cpu/Permuted.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <variant>

using namespace tessera;
namespace s = tessera::semantics;

namespace {

constexpr int64_t kHeads = 12, kKvHeads = 4, kDim = 64;

std::string bundleDir() {
  return std::string(TESSERA_BINARY_DIR) + "/test/bundles/permuted";
}

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The layer of Inputs/permuted.mlir, written here from its definition (not
/// from the manifest): the groups in the file's order, the skipped head last.
struct Layer {
  std::vector<schedule::HeadGroup> groups;
  schedule::LayerSchedule sched;

  Layer() {
    using P = s::Pattern;
    s::IndexSet text;
    text.ranges = {{0, 32}};
    groups = {
        {P{s::MultiDiagonal{64, {}, 8}}, {0, 1, 2, 3}},
        {P{s::Grid{64, 8, 8, 0}}, {4, 5, 6}},
        {P{s::Union{{P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}},
                     P{s::Grid{64, 4, 8, 32}}}}},
         {7, 8, 9}},
        {P{s::Window{32, 32}}, {10}},
        {P{s::Skip{}}, {11}}};
    std::string error;
    EXPECT_TRUE(schedule::buildLayerSchedule(groups, kHeads, sched, error))
        << error;
  }

  /// Head h's pattern; null for the skipped head.
  const s::Pattern *pattern(int64_t h) const {
    for (const schedule::HeadGroup &g : groups)
      if (std::count(g.heads.begin(), g.heads.end(), h))
        return std::holds_alternative<s::Skip>(g.pattern.node) ? nullptr
                                                               : &g.pattern;
    return nullptr;
  }
};

/// The layouts --attn-permute gives the groups (group, period, prefix).
const std::vector<std::array<int64_t, 3>> kLayouts = {
    {0, 64, 0}, {1, 64, 0}, {2, 64, 32}};

llvm::json::Object &layer0(llvm::json::Value &manifest) {
  return *(*manifest.getAsObject()->getArray("layers"))[0].getAsObject();
}

/// The manifest with `edit` applied to its layer.
std::string
editedManifest(const std::function<void(llvm::json::Object &)> &edit) {
  llvm::Expected<llvm::json::Value> v =
      llvm::json::parse(slurp(bundleDir() + "/manifest.json"));
  EXPECT_TRUE(bool(v));
  edit(layer0(*v));
  std::string out;
  llvm::raw_string_ostream os(out);
  os << *v;
  return out;
}

tessera_tensor tensor(void *data, int64_t b, int64_t n, int64_t h) {
  return tessera_tensor{data, TESSERA_DTYPE_F32, b,        n,   h,
                        kDim, n * h * kDim,      h * kDim, kDim};
}

TEST(PermutedBundle, TheManifestRecordsEachGroupsLayout) {
  llvm::Expected<llvm::json::Value> v =
      llvm::json::parse(slurp(bundleDir() + "/manifest.json"));
  ASSERT_TRUE(bool(v));
  llvm::json::Object &l = layer0(*v);
  const llvm::json::Array *layouts = l.getArray("layouts");
  ASSERT_TRUE(layouts);
  ASSERT_EQ(layouts->size(), kLayouts.size());
  for (size_t i = 0; i < kLayouts.size(); ++i) {
    const llvm::json::Object *g = (*layouts)[i].getAsObject();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->getInteger("group"), kLayouts[i][0]);
    EXPECT_EQ(g->getInteger("period"), kLayouts[i][1]);
    EXPECT_EQ(g->getInteger("prefix"), kLayouts[i][2]);
  }
  // The manifest numbers the groups as this test's schedule does.
  Layer layer;
  const llvm::json::Array *hg = l.getArray("head_groups");
  ASSERT_TRUE(hg);
  ASSERT_EQ(hg->size(), layer.sched.headGroup.size());
  for (size_t i = 0; i < hg->size(); ++i)
    EXPECT_EQ((*hg)[i].getAsInteger(), layer.sched.headGroup[i]);
}

TEST(PermutedBundle, BadLayoutsAreRefusedByName) {
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  std::string src = slurp(bundleDir() + "/bundle.cu");
  using Obj = llvm::json::Object;
  auto set = [](size_t i, const char *key, llvm::json::Value value) {
    return [=](Obj &l) {
      (*(*l.getArray("layouts"))[i].getAsObject())[key] = value;
    };
  };
  struct Bad {
    const char *what, *message;
    std::function<void(Obj &)> edit;
  };
  std::vector<Bad> cases = {
      {"period 1", "the layout of group 0: period must be in [2, 2^40], got 1",
       set(0, "period", 1)},
      {"period 2^41", "period must be in [2, 2^40]",
       set(1, "period", int64_t(1) << 41)},
      {"negative prefix",
       "the layout of group 2: prefix must be in [0, 2^40], got -1",
       set(2, "prefix", -1)},
      {"no such group",
       "the layout of group 4: no such group (the program has 4)",
       set(0, "group", 4)},
      {"negative group", "the layout of group -1: no such group",
       set(0, "group", -1)},
      {"a group twice", "the layout of group 1: the group has two layouts",
       set(0, "group", 1)},
      {"no period", "a layout lacks an integer group, period or prefix",
       [](Obj &l) {
         (*l.getArray("layouts"))[0].getAsObject()->erase("period");
       }},
      {"a string", "a layout lacks an integer group, period or prefix",
       set(2, "prefix", "32")},
      {"not an array", "layouts is not an array",
       [](Obj &l) { l["layouts"] = Obj{}; }},
      // Kept ranges (interleaved segments).
      {"kept a number", "the layout of group 0: kept is not an array",
       set(0, "kept", 3)},
      {"kept empty", "the layout of group 0: kept is empty (leave it out)",
       set(0, "kept", llvm::json::Array{})},
      {"kept a string",
       "the layout of group 0: kept holds a value that is not an integer",
       set(0, "kept", llvm::json::Array{1, "2"})},
      {"kept odd",
       "the layout of group 0: kept must hold [begin, end) pairs, got 3 "
       "values",
       set(0, "kept", llvm::json::Array{1, 2, 3})},
      {"kept unsorted",
       "the layout of group 1: kept range 1 [1, 2) overlaps, touches or "
       "precedes the range before it",
       set(1, "kept", llvm::json::Array{5, 10, 1, 2})},
      {"kept negative",
       "the layout of group 0: kept range 0 [-3, 2) is outside [0, 2^40]",
       set(0, "kept", llvm::json::Array{-3, 2})},
      {"kept with a prefix",
       "the layout of group 2: a prefix and kept ranges together",
       set(2, "kept", llvm::json::Array{40, 50})},
      {"kept a prefix", "the layout of group 0: kept [0, 9] is a prefix",
       set(0, "kept", llvm::json::Array{0, 9})},
      {"kept past the limit",
       "the layout of group 0: kept holds 130 values: at most 64 ranges "
       "(begin, end pairs)",
       set(0, "kept",
           [] {
             llvm::json::Array a;
             for (int64_t r = 0; r <= layout::kMaxKeptRanges; ++r) {
               a.push_back(4 * r + 1);
               a.push_back(4 * r + 2);
             }
             return a;
           }())},
      {"permuted_kernel a number", "permuted_kernel is not a kernel name",
       [](Obj &l) { l["permuted_kernel"] = 3; }},
      {"permuted_kernel empty", "permuted_kernel is not a kernel name",
       [](Obj &l) { l["permuted_kernel"] = ""; }},
      {"permuted_slots adding up wrong",
       "permuted_slots add up to 2, not the 1 heads outside the groups with "
       "layouts",
       [](Obj &l) { l["permuted_slots"] = llvm::json::Array{2}; }},
      {"permuted_slots past the kernel's",
       "permuted_slots: kernel tessera_attn_bf16_d64 has no such slot count",
       [](Obj &l) { l["permuted_slots"] = llvm::json::Array{12}; }},
      {"permuted_position at the layer's own",
       "permuted_position must be an entry after the layer's",
       [](Obj &l) { l["permuted_position"] = 0; }},
      {"permuted_position without the kernel",
       "permuted_position must be an entry after the layer's",
       [](Obj &l) { l.erase("permuted_kernel"); }}};
  for (const Bad &c : cases) {
    std::string m = editedManifest(c.edit);
    tessera_bundle *b = nullptr;
    EXPECT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                         src.size(), &b),
              TESSERA_ERROR_BAD_BUNDLE)
        << c.what;
    EXPECT_NE(std::string(tessera_last_error()).find(c.message),
              std::string::npos)
        << c.what << ": " << tessera_last_error();
    EXPECT_NE(std::string(tessera_last_error()).find("layer 0: "),
              std::string::npos)
        << c.what;
    if (b)
      tessera_bundle_destroy(b);
  }
  tessera_context_destroy(ctx);
}

/// The host's walk of a permuted group (cpu::permutedWalk, what a kernel
/// masking by bits needs): every tile's class and every partial tile's bits
/// against the predicate on the original positions of a stable sort by
/// residue; closed-form and pair-classified walks, prefixes, Nq != Nk both
/// ways, short last blocks, 64 x 64 and 128 x 64 tiles.
TEST(PermutedWalk, TilesAndBitsMatchEveryPair) {
  using P = s::Pattern;
  s::IndexSet text;
  text.ranges = {{0, 20}};
  s::IndexSet stripes;
  stripes.period = 16;
  stripes.width = 2;
  struct WalkCase {
    const char *name;
    P pattern;
    layout::PeriodTranspose perm;
    bool closedForm;
  };
  std::vector<WalkCase> cases = {
      {"multi_diagonal", P{s::MultiDiagonal{16, {}, 3}}, {16, 0}, true},
      {"grid", P{s::Grid{16, 2, 3, 5}}, {16, 0}, true},
      {"prompt and grid",
       P{s::Union{{P{s::VerticalStripe{text}}, P{s::HorizontalStripe{text}},
                   P{s::Grid{16, 1, 2, 20}}}}},
       {16, 20},
       true},
      {"window and stripes",
       P{s::Union{{P{s::Window{9, 4}}, P{s::VerticalStripe{stripes}}}}},
       {16, 0},
       false}};
  for (const WalkCase &c : cases)
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{300, 300},
                          {200, 333},
                          {333, 200},
                          {64, 64},
                          {1, 70}})
      for (auto [bq, bk] : {std::pair<int64_t, int64_t>{64, 64}, {128, 64}}) {
        SCOPED_TRACE(std::string(c.name) + " nq " + std::to_string(nq) +
                     " nk " + std::to_string(nk) + " bq " + std::to_string(bq));
        std::vector<schedule::HeadGroup> groups = {{c.pattern, {0, 1}}};
        schedule::LayerSchedule sched;
        std::string error;
        ASSERT_TRUE(schedule::buildLayerSchedule(groups, 2, sched, error))
            << error;
        cpu::PermutedWalk walk;
        cpu::PermutedInfo info;
        ASSERT_EQ(cpu::permutedWalk(sched.table(), 0, c.perm, nq, nk, bq, bk,
                                    walk, &info),
                  "");
        // (A prefix with Nq > Nk shifts the segment rows' positions
        // against the prompt: classified pair by pair.)
        EXPECT_EQ(info.closedForm, c.closedForm && !(c.perm.prefix && nq > nk))
            << info.why;
        // The reference: the stable sort by residue after the prefix.
        auto sorted = [&](int64_t n) {
          std::vector<int64_t> order(n);
          std::iota(order.begin(), order.end(), 0);
          int64_t kept = std::min(c.perm.prefix, n);
          std::stable_sort(
              order.begin() + kept, order.end(), [&](int64_t a, int64_t b) {
                return (a - kept) % c.perm.period < (b - kept) % c.perm.period;
              });
          return order;
        };
        std::vector<int64_t> qTok = sorted(nq), kTok = sorted(nk);
        int64_t qBlocks = (nq + bq - 1) / bq, kBlocks = (nk + bk - 1) / bk;
        ASSERT_EQ(int64_t(walk.start.size()), qBlocks + 1);
        ASSERT_EQ(walk.maskAt.size(), walk.runs.size());
        for (int64_t i = 0; i < qBlocks; ++i) {
          std::vector<int> seen(kBlocks, 0); // 0 not walked, 1 partial, 2 full
          for (int64_t x = walk.start[i]; x < walk.start[i + 1]; ++x) {
            const layout::PermutedRun &r = walk.runs[x];
            ASSERT_LT(r.begin, r.end);
            ASSERT_LE(r.end, kBlocks) << "block " << i; // a kernel reads it
            for (int64_t j = r.begin; j < r.end; ++j) {
              ASSERT_EQ(seen[j], 0)
                  << "block " << i << " walks " << j << " twice";
              seen[j] = r.full ? 2 : 1;
              const uint64_t *m = walk.mask(x, j, bq);
              ASSERT_EQ(m == nullptr, r.full);
              for (int64_t s = i * bq; m && s < std::min(nq, (i + 1) * bq); ++s)
                for (int64_t t = j * bk; t < std::min(nk, (j + 1) * bk); ++t) {
                  int64_t bit = (s - i * bq) * walk.words + (t - j * bk) / 64;
                  bool got = m[bit] >> ((t - j * bk) % 64) & 1;
                  ASSERT_EQ(got, s::allowed(c.pattern, qTok[s], kTok[t], 0, nq,
                                            nk, 2))
                      << "slot " << s << " key slot " << t;
                }
            }
          }
          for (int64_t j = 0; j < kBlocks; ++j) {
            int64_t allowed = 0;
            int64_t pairs =
                std::min(bq, nq - i * bq) * std::min(bk, nk - j * bk);
            for (int64_t s = i * bq; s < std::min(nq, (i + 1) * bq); ++s)
              for (int64_t t = j * bk; t < std::min(nk, (j + 1) * bk); ++t)
                allowed +=
                    s::allowed(c.pattern, qTok[s], kTok[t], 0, nq, nk, 2);
            if (allowed == 0)
              EXPECT_EQ(seen[j], 0) << "block " << i << " key block " << j;
            else if (allowed == pairs)
              EXPECT_EQ(seen[j], 2) << "block " << i << " key block " << j;
            else
              EXPECT_EQ(seen[j], 1) << "block " << i << " key block " << j;
          }
        }
      }
  // Bad arguments are refused by name.
  std::vector<schedule::HeadGroup> groups = {
      {P{s::MultiDiagonal{16, {}, 3}}, {0}}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(groups, 1, sched, error));
  cpu::PermutedWalk walk;
  EXPECT_NE(cpu::permutedWalk(sched.table(), 1, {16, 0}, 64, 64, 64, 64, walk)
                .find("group 1 is not one of the layer's 1"),
            std::string::npos);
  EXPECT_NE(cpu::permutedWalk(sched.table(), 0, {1, 0}, 64, 64, 64, 64, walk)
                .find("period must be at least 2"),
            std::string::npos);
  EXPECT_NE(cpu::permutedWalk(sched.table(), 0, {16, 0}, 64, 64, 0, 64, walk)
                .find("tiles in [1, 1024]"),
            std::string::npos);
}

TEST(PermutedBundle, KeptRangesRunThroughTheCApi) {
  // Group 2 (text [0, 32) global, grid lines every 64 from 32) with kept
  // ranges [0, 32, 100, 120] in the manifest instead of its prefix: the C
  // API runs it in that order, bit for bit what runPermutedGroup gives,
  // and within float tolerance of the layout-free bundle; Nq < Nk, the
  // second range cut by Nq.
  constexpr int64_t B = 1, nq = 110, nk = 150;
  Layer layer;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> q(B * nq * kHeads * kDim), k(B * nk * kKvHeads * kDim),
      v(k.size());
  for (auto *x : {&q, &k, &v})
    for (float &e : *x)
      e = dist(rng);
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  std::string src = slurp(bundleDir() + "/bundle.cu");
  std::string m = editedManifest([](llvm::json::Object &l) {
    llvm::json::Object &g = *(*l.getArray("layouts"))[2].getAsObject();
    g["prefix"] = 0;
    g["kept"] = llvm::json::Array{0, 32, 100, 120};
  });
  std::string plainManifest =
      editedManifest([](llvm::json::Object &l) { l.erase("layouts"); });
  tessera_bundle *kept = nullptr, *plain = nullptr;
  ASSERT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                       src.size(), &kept),
            TESSERA_OK)
      << tessera_last_error();
  ASSERT_EQ(tessera_bundle_load_memory(ctx, plainManifest.data(),
                                       plainManifest.size(), src.data(),
                                       src.size(), &plain),
            TESSERA_OK)
      << tessera_last_error();
  auto run = [&](tessera_bundle *b, std::vector<float> &o) {
    o.assign(q.size(), 7.0f);
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.q = tensor(q.data(), B, nq, kHeads);
    d.k = tensor(k.data(), B, nk, kKvHeads);
    d.v = tensor(v.data(), B, nk, kKvHeads);
    d.o = tensor(o.data(), B, nq, kHeads);
    ASSERT_EQ(tessera_attention_run(b, &d), TESSERA_OK) << tessera_last_error();
  };
  std::vector<float> oKept, oPlain;
  run(kept, oKept);
  run(plain, oPlain);
  cpu::LayerArgs a;
  a.q = cpu::contiguous(q.data(), cpu::DType::F32, B, nq, kHeads, kDim);
  a.k = cpu::contiguous(k.data(), cpu::DType::F32, B, nk, kKvHeads, kDim);
  a.v = cpu::contiguous(v.data(), cpu::DType::F32, B, nk, kKvHeads, kDim);
  a.blockQ = 128; // the bundle's kernel_block_q at head_dim 64
  std::vector<float> oDirect(q.size(), 7.0f);
  a.o = cpu::contiguous(oDirect.data(), cpu::DType::F32, B, nq, kHeads, kDim);
  ASSERT_EQ(cpu::runPermutedGroup(
                layer.sched.table(), 2,
                layout::PeriodTranspose{64, 0, {0, 32, 100, 120}}, a),
            "");
  double err = 0;
  int64_t differ = 0; // bits the permuted order changed: it did run
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t h = 7; h <= 9; ++h) // group 2
      for (int64_t x = 0; x < kDim; ++x) {
        size_t at = size_t((i * kHeads + h) * kDim + x);
        ASSERT_EQ(oKept[at], oDirect[at]) << "head " << h << " row " << i;
        err = std::max(err, double(std::abs(oKept[at] - oPlain[at])));
        differ += oKept[at] != oPlain[at];
      }
  EXPECT_LE(err, 1e-5);
  EXPECT_GT(differ, 0);
  tessera_bundle_destroy(kept);
  tessera_bundle_destroy(plain);
  tessera_context_destroy(ctx);
}

/// One call's inputs and the outputs of each way of running it.
struct Shape {
  int64_t batch, nq, nk;
};

class PermutedCpuContext : public ::testing::TestWithParam<Shape> {};

TEST_P(PermutedCpuContext, RunsTheGroupsInTheirOrder) {
  const auto [B, nq, nk] = GetParam();
  Layer layer;
  std::mt19937_64 rng(23 + nq * 7 + nk);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> q(B * nq * kHeads * kDim), k(B * nk * kKvHeads * kDim),
      v(k.size());
  for (auto *x : {&q, &k, &v})
    for (float &e : *x)
      e = dist(rng);
  const size_t qn = q.size(), ln = size_t(B * kHeads * nq);

  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  tessera_bundle *permuted = nullptr, *plain = nullptr;
  ASSERT_EQ(tessera_bundle_load_file(ctx, bundleDir().c_str(), &permuted),
            TESSERA_OK)
      << tessera_last_error();
  std::string src = slurp(bundleDir() + "/bundle.cu");
  std::string noLayouts =
      editedManifest([](llvm::json::Object &l) { l.erase("layouts"); });
  ASSERT_EQ(tessera_bundle_load_memory(ctx, noLayouts.data(), noLayouts.size(),
                                       src.data(), src.size(), &plain),
            TESSERA_OK)
      << tessera_last_error();

  tessera_tensor tq = tensor(q.data(), B, nq, kHeads);
  tessera_tensor tk = tensor(k.data(), B, nk, kKvHeads);
  tessera_tensor tv = tensor(v.data(), B, nk, kKvHeads);
  auto run = [&](tessera_bundle *b, int64_t headCount, std::vector<float> &o,
                 std::vector<float> &lse) {
    o.assign(qn, 7.0f);
    lse.assign(ln, 7.0f);
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.q = tq;
    d.k = tk;
    d.v = tv;
    d.o = tensor(o.data(), B, nq, kHeads);
    d.lse = lse.data();
    d.head_count = headCount;
    ASSERT_EQ(tessera_attention_run(b, &d), TESSERA_OK) << tessera_last_error();
  };
  std::vector<float> oPerm, lsePerm, oPlain, lsePlain, oRange, lseRange;
  run(permuted, 0, oPerm, lsePerm);
  run(plain, 0, oPlain, lsePlain);
  run(permuted, kHeads, oRange, lseRange); // not dense: the original order

  // The executors called directly: the whole layer in the original order,
  // and each group with a layout in its order.
  cpu::LayerArgs a;
  a.q = cpu::contiguous(q.data(), cpu::DType::F32, B, nq, kHeads, kDim);
  a.k = cpu::contiguous(k.data(), cpu::DType::F32, B, nk, kKvHeads, kDim);
  a.v = cpu::contiguous(v.data(), cpu::DType::F32, B, nk, kKvHeads, kDim);
  a.blockQ = 128; // the bundle's kernel_block_q at head_dim 64
  std::vector<float> oOrig(qn), lseOrig(ln), oDirect(qn, 7.0f),
      lseDirect(ln, 7.0f);
  a.o = cpu::contiguous(oOrig.data(), cpu::DType::F32, B, nq, kHeads, kDim);
  a.lse = lseOrig.data();
  ASSERT_EQ(cpu::runLayer(layer.sched.table(), a), "");
  a.o = cpu::contiguous(oDirect.data(), cpu::DType::F32, B, nq, kHeads, kDim);
  a.lse = lseDirect.data();
  for (const auto &[g, period, prefix] : kLayouts)
    ASSERT_EQ(cpu::runPermutedGroup(layer.sched.table(), g,
                                    layout::PeriodTranspose{period, prefix}, a),
              "");

  // The layout-free bundle and the head-range call are the original order,
  // bit for bit.
  EXPECT_EQ(oPlain, oOrig);
  EXPECT_EQ(0, std::memcmp(lsePlain.data(), lseOrig.data(), ln * 4));
  EXPECT_EQ(oRange, oOrig);
  EXPECT_EQ(0, std::memcmp(lseRange.data(), lseOrig.data(), ln * 4));

  const double scale = 1.0 / std::sqrt(double(kDim));
  const double inf = std::numeric_limits<double>::infinity();
  double err = 0, errPlain = 0, norm = 1;
  int64_t differ = 0; // permuted-group elements whose bits differ from oOrig
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < kHeads; ++h) {
      const bool inLayout = h <= 9; // groups 0-2
      const s::Pattern *pat = layer.pattern(h);
      for (int64_t i = 0; i < nq; ++i) {
        const size_t row = size_t(((b * nq + i) * kHeads + h) * kDim);
        const size_t li = size_t((b * kHeads + h) * nq + i);
        // The permuted heads are those of runPermutedGroup, the others
        // those of the original order, bit for bit.
        for (int64_t x = 0; x < kDim; ++x) {
          float want = inLayout ? oDirect[row + x] : oOrig[row + x];
          ASSERT_EQ(oPerm[row + x], want) << "head " << h << " row " << i;
          differ += inLayout && oPerm[row + x] != oOrig[row + x];
        }
        ASSERT_EQ(lsePerm[li], inLayout ? lseDirect[li] : lseOrig[li])
            << "head " << h << " row " << i;
        // float64: softmax over the allowed keys of row i.
        std::vector<double> sc(nk, -inf), out(kDim, 0);
        double m = -inf, l = 0;
        for (int64_t j = 0; pat && j < nk; ++j) {
          if (!s::allowed(*pat, i, j, h, nq, nk, kHeads))
            continue;
          const size_t kr = size_t(((b * nk + j) * kKvHeads + h / 3) * kDim);
          double dot = 0;
          for (int64_t x = 0; x < kDim; ++x)
            dot += double(q[row + x]) * k[kr + x];
          sc[j] = dot * scale;
          m = std::max(m, sc[j]);
        }
        for (int64_t j = 0; j < nk; ++j)
          if (sc[j] > -inf) {
            double p = std::exp(sc[j] - m);
            l += p;
            const size_t vr = size_t(((b * nk + j) * kKvHeads + h / 3) * kDim);
            for (int64_t x = 0; x < kDim; ++x)
              out[x] += p * v[vr + x];
          }
        if (l == 0)
          EXPECT_EQ(lsePerm[li], -std::numeric_limits<float>::infinity())
              << "head " << h << " row " << i;
        else
          EXPECT_NEAR(lsePerm[li], m + std::log(l), 1e-4)
              << "head " << h << " row " << i;
        for (int64_t x = 0; x < kDim; ++x) {
          double exact = l == 0 ? 0 : out[x] / l;
          err = std::max(err, std::abs(oPerm[row + x] - exact));
          errPlain = std::max(errPlain, std::abs(oPlain[row + x] - exact));
          norm = std::max(norm, std::abs(exact));
        }
      }
    }
  EXPECT_LE(err, 1e-5 * norm);
  EXPECT_LE(errPlain, 1e-5 * norm);
  // The permuted walk ran: it sums each row's keys in another order.
  EXPECT_GT(differ, 0);

  tessera_bundle_destroy(permuted);
  tessera_bundle_destroy(plain);
  tessera_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PermutedCpuContext,
                         ::testing::Values(Shape{2, 300, 300},
                                           Shape{2, 200, 333},
                                           Shape{1, 333, 200},
                                           Shape{2, 512, 512}));

} // namespace
