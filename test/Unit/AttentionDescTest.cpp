//===- AttentionDescTest.cpp - tessera_attention_desc's call modes --------===//
//
// Every mode of tessera_attention_run on the CPU against a float64
// reference written here from docs/patterns.md's definitions of the
// tiny-mix layer's heads (A-shape, multi-diagonal, grid, causal strided
// shards, shifted groups), evaluated at each sequence's positions: packed
// ragged batches with empty sequences, paged caches with shuffled pages
// (page sizes 16 and 256), decode with 1 and 16 queries, query and key
// offsets on and off multiples of 64, Nq < Nk and Nq > Nk, head ranges,
// LSE merges of calls over split keys, and each bad field's error.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"
#include "tessera/tessera.hpp"

#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"
#include "tessera/kernel/OwnedTable.h"

#include "SeqCalls.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace tessera;

namespace {

using namespace tessera::seqcalls;

struct AttentionDesc : ::testing::Test {
  void SetUp() override {
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    ASSERT_EQ(tessera_bundle_load_file(
                  ctx,
                  (std::string(TESSERA_BINARY_DIR) + "/test/bundles/tiny-mix")
                      .c_str(),
                  &bundle),
              TESSERA_OK)
        << tessera_last_error();
  }
  void TearDown() override {
    if (bundle)
      tessera_bundle_destroy(bundle);
    if (ctx)
      tessera_context_destroy(ctx);
  }

  /// Runs `l` in layout `lay` and compares every output row and LSE of
  /// the tensors' heads with the float64 reference; rows no sequence owns
  /// must keep the sentinel. Returns the built call (outputs inside).
  Built check(const Logical &l, const Layout &lay) {
    Built b = build(l, lay);
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    Reference r = reference(l, 1.0 / std::sqrt(double(D)));
    const Tolerance tol{lay.bf16 ? 2e-2 : 2e-5, 1e-4, 0.0};
    int64_t bad = countMismatches(
        l, b, r, tol, [](const std::string &m) { ADD_FAILURE() << m; });
    EXPECT_EQ(bad, 0);
    return b;
  }

  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
};

TEST_F(AttentionDesc, DenseMatchesTheReference) {
  for (auto [nq, nk] : {std::pair{70, 70}, {20, 150}, {150, 40}}) {
    SCOPED_TRACE("Nq = " + std::to_string(nq) + ", Nk = " + std::to_string(nk));
    check(makeLogical({{nq, nk}, {nq, nk}}, uint64_t(nq * 1000 + nk)), {});
  }
}

/// Query and key positions anywhere: chunks that start on multiples of 64
/// and off them, keys after the queries, Nq > Nk.
TEST_F(AttentionDesc, PositionsAnywhere) {
  const std::vector<std::pair<int64_t, int64_t>> starts = {
      {0, 0}, {64, 0}, {100, 0}, {129, 64}, {0, 70}, {200, 137}, {37, 5}};
  for (auto [qs, ks] : starts)
    for (auto [nq, nk] : {std::pair{37, 150}, {130, 70}}) {
      SCOPED_TRACE("q_start " + std::to_string(qs) + ", k_start " +
                   std::to_string(ks) + ", Nq " + std::to_string(nq) +
                   ", Nk " + std::to_string(nk));
      Seq s{nq, nk, qs, ks};
      check(makeLogical({s}, uint64_t(qs * 7 + ks)), {});
    }
  // Only k_start: the queries stay bottom-right aligned with the keys.
  Seq onlyK{40, 100, kDefault, 77};
  check(makeLogical({onlyK, onlyK}, 3), {});
}

/// Packed ragged batches (FlashAttention's varlen) with empty sequences:
/// no queries, no keys, both.
TEST_F(AttentionDesc, PackedRaggedBatches) {
  std::vector<Seq> seqs = {{5, 5},   {0, 0},    {70, 70}, {0, 12},
                           {3, 0},   {10, 100}, {130, 130}, {1, 65}};
  Logical l = makeLogical(seqs, 11);
  check(l, {QLayout::Packed, KLayout::Packed});
  // Packed queries over a dense cache with lengths (unfilled rows NaN).
  check(l, {QLayout::Packed, KLayout::Lengths});
  // Chunked prefill: each sequence's chunk after the tokens already cached.
  std::vector<Seq> chunks = {{20, 84, 64}, {33, 100, 67}, {0, 9, 9}};
  check(makeLogical(chunks, 12), {QLayout::Packed, KLayout::Packed});
}

/// A paged cache with shuffled pages; decode with 1 and 16 queries per
/// sequence against long caches; page sizes 16 and 256.
TEST_F(AttentionDesc, PagedCaches) {
  for (int64_t ps : {16, 256}) {
    for (int64_t nq : {1, 16}) {
      SCOPED_TRACE("page size " + std::to_string(ps) + ", " +
                   std::to_string(nq) + " queries");
      std::vector<Seq> seqs = {{nq, 2000}, {nq, 700}, {nq, 257}};
      check(makeLogical(seqs, uint64_t(ps + nq)),
            {QLayout::Dense, KLayout::Paged, ps});
    }
    // Packed prefill chunks and decodes in one batch, an empty cache too.
    std::vector<Seq> mixed = {{1, 300}, {40, 90, 50}, {0, 0}, {16, 16}};
    check(makeLogical(mixed, uint64_t(ps)),
          {QLayout::Packed, KLayout::Paged, ps});
  }
}

/// Tensors holding a range of the layer's heads: the patterns and the GQA
/// mapping take the layer's head index.
TEST_F(AttentionDesc, HeadRanges) {
  Logical l = makeLogical({{50, 90}, {50, 90}}, 21);
  for (auto [h0, n] : {std::pair{2, 3}, {3, 2}, {5, 1}, {0, 6}, {1, 4}}) {
    SCOPED_TRACE("heads " + std::to_string(h0) + " + " + std::to_string(n));
    Layout lay;
    lay.h0 = h0, lay.n = n;
    check(l, lay);
    lay.q = QLayout::Packed, lay.k = KLayout::Paged;
    check(l, lay);
  }
}

/// bf16 inputs converted a tile at a time, from a paged cache whose unused
/// rows hold NaN (no row of them may reach an output).
TEST_F(AttentionDesc, Bf16PerTile) {
  Layout lay{QLayout::Packed, KLayout::Paged, 16};
  lay.bf16 = true;
  check(makeLogical({{3, 333}, {64, 64}, {0, 5}}, 31, /*bf16=*/true), lay);
}

/// Keys split in two calls (k_start, the same query positions) merge by
/// their LSE into the one-shot result.
TEST_F(AttentionDesc, LseMergeOfSplitKeys) {
  const int64_t nq = 45, nk = 200, qs = 155;
  for (int64_t split : {64, 99}) {
    SCOPED_TRACE("split at " + std::to_string(split));
    Logical whole = makeLogical({{nq, nk, qs, 0}}, 41);
    Logical a = whole, b = whole;
    a.seqs[0] = {nq, split, qs, 0};
    b.seqs[0] = {nq, nk - split, qs, split};
    a.k[0].resize(size_t(split * Hkv * D));
    a.v[0].resize(size_t(split * Hkv * D));
    b.k[0].erase(b.k[0].begin(), b.k[0].begin() + split * Hkv * D);
    b.v[0].erase(b.v[0].begin(), b.v[0].begin() + split * Hkv * D);
    Built one = check(whole, {}), first = check(a, {}), second = check(b, {});
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        double la = first.lse[first.lseAt(0, i, h)],
               lb = second.lse[second.lseAt(0, i, h)];
        double m = std::max(la, lb);
        if (m == -kInf) {
          EXPECT_EQ(one.lse[one.lseAt(0, i, h)], -kInf);
          continue;
        }
        double wa = std::exp(la - m), wb = std::exp(lb - m);
        EXPECT_NEAR(m + std::log(wa + wb), one.lse[one.lseAt(0, i, h)], 1e-5);
        for (int64_t x = 0; x < D; ++x) {
          size_t at = one.oAt(0, i, h) + size_t(x);
          double merged = (wa * first.o[at] + wb * second.o[at]) / (wa + wb);
          EXPECT_NEAR(merged, one.o[at], 2e-5) << "head " << h << " row " << i;
        }
      }
  }
}

TEST_F(AttentionDesc, ThreadCountsGiveIdenticalResults) {
  Logical l = makeLogical({{70, 300}, {9, 300}}, 51);
  Layout lay{QLayout::Dense, KLayout::Paged, 16};
  std::vector<float> first;
  for (int threads : {1, 2, 5, 0}) {
    ASSERT_EQ(tessera_context_set_num_threads(ctx, threads), TESSERA_OK);
    Built b = build(l, lay);
    ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    if (first.empty()) {
      first = b.o;
    } else {
      EXPECT_EQ(std::memcmp(first.data(), b.o.data(), 4 * first.size()), 0)
          << threads << " threads";
    }
  }
  EXPECT_EQ(tessera_context_set_num_threads(ctx, -1),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("num_threads"),
            std::string::npos);
  EXPECT_EQ(tessera_context_set_num_threads(nullptr, 1),
            TESSERA_ERROR_NULL_POINTER);
}

/// The C++ wrapper runs a description as the C call does, bit for bit.
TEST_F(AttentionDesc, CppWrapperRunsDescriptions) {
  Logical l = makeLogical({{9, 40}, {0, 3}, {30, 17}}, 65);
  Layout lay{QLayout::Packed, KLayout::Paged, 16};
  Built c = build(l, lay), cpp = build(l, lay);
  ASSERT_EQ(tessera_attention_run(bundle, &c.d), TESSERA_OK);
  auto context = tessera::Context::create(TESSERA_DEVICE_CPU);
  ASSERT_TRUE(context);
  ASSERT_TRUE(context.value.setNumThreads(1));
  auto loaded = context.value.load(std::string(TESSERA_BINARY_DIR) +
                                   "/test/bundles/tiny-mix");
  ASSERT_TRUE(loaded) << loaded.result.message;
  tessera_attention_desc d = tessera::Bundle::attentionDesc(0);
  EXPECT_EQ(d.struct_size, sizeof(tessera_attention_desc));
  d = cpp.d;
  tessera::Result r = loaded.value.run(d);
  ASSERT_TRUE(r) << r.message;
  EXPECT_EQ(std::memcmp(c.o.data(), cpp.o.data(), 4 * c.o.size()), 0);
  d.max_pages_per_seq = 0;
  r = loaded.value.run(d);
  EXPECT_FALSE(r);
  EXPECT_NE(r.message.find("max_pages_per_seq"), std::string::npos);
  EXPECT_FALSE(context.value.setNumThreads(-2));
}

/// The descriptor's version handling: an uninitialised size, a newer
/// caller's extra fields, an older caller's shorter struct.
TEST_F(AttentionDesc, StructSize) {
  Logical l = makeLogical({{8, 8}}, 61);
  Built b = build(l, {});
  tessera_attention_desc d = b.d;
  d.struct_size = 0;
  EXPECT_EQ(tessera_attention_run(bundle, &d), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("struct_size"),
            std::string::npos);
  // A newer header's description: extra bytes zero are accepted, set ones
  // refused.
  struct Newer {
    tessera_attention_desc d;
    int64_t future;
  } newer{b.d, 0};
  newer.d.struct_size = sizeof newer;
  EXPECT_EQ(tessera_attention_run(bundle, &newer.d), TESSERA_OK)
      << tessera_last_error();
  newer.future = 1;
  EXPECT_EQ(tessera_attention_run(bundle, &newer.d),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("newer"), std::string::npos);
  EXPECT_EQ(tessera_attention_run(bundle, nullptr), TESSERA_ERROR_NULL_POINTER);
}

/// Each bad field gets an error that names it.
TEST_F(AttentionDesc, BadFieldsAreNamed) {
  Logical l = makeLogical({{4, 40}, {6, 50}, {0, 20}}, 71);
  Logical same = makeLogical({{4, 40}, {4, 40}, {4, 40}}, 72);
  struct Case {
    const char *needle;
    Layout lay;
    std::function<void(Built &)> breakIt;
  };
  Layout packed{QLayout::Packed, KLayout::Packed};
  Layout paged{QLayout::Packed, KLayout::Paged, 16};
  const std::vector<Case> cases = {
      {"cu_seqlens_q decreases", packed, [](Built &b) { b.cuQ[2] = 1; }},
      {"cu_seqlens_q[0] is negative", packed, [](Built &b) { b.cuQ[0] = -1; }},
      {"cu_seqlens_q[num_seqs]", packed,
       [](Built &b) { b.cuQ.back() = int32_t(b.rowsQ + 1); }},
      {"cu_seqlens_k decreases", packed, [](Built &b) { b.cuK[2] = 30; }},
      {"num_seqs must be at least 1", packed,
       [](Built &b) { b.d.num_seqs = 0; }},
      {"q.batch and o.batch must be 1", packed,
       [](Built &b) { b.d.q.batch = 2, b.d.o.batch = 2, b.d.q.seq = 4,
                      b.d.o.seq = 4; }},
      {"seq_lens_k[1] = 50 needs 4 pages", paged,
       [](Built &b) { b.d.max_pages_per_seq = 3; }},
      {"block_table[0][1]", paged, [](Built &b) { b.table[1] = 999; }},
      {"block_table[1] lists page", paged,
       [](Built &b) { b.table[size_t(b.d.block_table_stride) + 2] =
                          b.table[size_t(b.d.block_table_stride)]; }},
      {"seq_lens_k[2] is negative", paged, [](Built &b) { b.lens[2] = -3; }},
      {"seq_lens_k is null", paged, [](Built &b) { b.d.seq_lens_k = nullptr; }},
      {"page size", paged,
       [](Built &b) { b.d.k.seq = b.d.v.seq = 8; }},
      {"block_table_stride", paged,
       [](Built &b) { b.d.block_table_stride = 1; }},
      {"cu_seqlens_k and block_table", paged,
       [](Built &b) {
         static int32_t cu[4] = {0, 1, 2, 3};
         b.d.cu_seqlens_k = cu;
       }},
      {"q_start[1] = -2 is negative", packed,
       [](Built &b) {
         b.d.q_start = b.qStart.data();
         b.qStart[1] = -2;
       }},
      {"k_start[0] = -1 is negative", packed,
       [](Built &b) {
         b.d.k_start = b.kStart.data();
         b.kStart[0] = -1;
       }},
      {"q_start[0] = 1099511627776 puts positions past 2^40", packed,
       [](Built &b) {
         b.d.q_start = b.qStart.data();
         b.qStart[0] = int64_t(1) << 40;
       }},
      {"head_start 4 and head_count 3 are outside", {},
       [](Built &b) { b.d.head_start = 4, b.d.head_count = 3; }},
      {"head_start is 2 with head_count 0", {},
       [](Built &b) { b.d.head_start = 2; }},
      {"q.heads and o.heads must be head_count", {},
       [](Built &b) { b.d.head_start = 0, b.d.head_count = 3; }},
      {"seq_lens_k[0] = 41 is outside [0, 40]", packed,
       [](Built &b) {
         b.lens = {41, 1, 1};
         b.d.seq_lens_k = b.lens.data();
       }},
      {"k.batch (1) must be num_seqs (3)", {QLayout::Packed, KLayout::Dense},
       [](Built &b) { b.d.k.batch = b.d.v.batch = 1; }},
      {"num_seqs (2) must be q.batch (3)", {},
       [](Built &b) { b.d.num_seqs = 2; }},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.needle);
    // Dense queries need equal lengths.
    Built b = build(c.lay.q == QLayout::Dense ? same : l, c.lay);
    ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << "the unbroken call fails: " << tessera_last_error();
    c.breakIt(b);
    EXPECT_NE(tessera_attention_run(bundle, &b.d), TESSERA_OK);
    EXPECT_NE(std::string(tessera_last_error()).find(c.needle),
              std::string::npos)
        << tessera_last_error();
  }
}

/// The executor gives bit-identical results whatever its query block (the
/// API takes the manifest's kernel_block_q, 128 here): an A-shape program
/// (sink 3 or a band of 9 before the diagonal) at positions on and off
/// tile boundaries.
TEST(AttentionExecutor, QueryBlockSizesGiveIdenticalResults) {
  namespace k = tessera::kernel;
  k::OwnedLayerTable t;
  const k::i64 inf = k::kUnbounded;
  t.nodes = {{k::kBand, k::kAxisK, 0, 2, 0, 0, 0, 0},
             {k::kBand, k::kAxisD, -inf, 0, 0, 0, 0, 0},
             {k::kIntersect, 2, 0, 0, 0, 0, 0, 0},
             {k::kBand, k::kAxisD, -9, 0, 0, 0, 0, 0},
             {k::kUnion, 2, 0, 0, 0, 0, 0, 0}};
  t.data = {0};
  t.groupBegin = {0, 5};
  t.computedHead = {0, 1};
  t.headGroup = {0, 0};
  t.numHeads = 2;
  std::mt19937_64 rng(81);
  std::uniform_real_distribution<float> u(-2, 2);
  const int64_t nq = 300, nk = 333;
  std::vector<float> q(size_t(nq * 2 * D)), kk(size_t(nk * D)), v(kk.size());
  for (auto *x : {&q, &kk, &v})
    for (float &e : *x)
      e = u(rng);
  int64_t qStart = 70, kStart = 5;
  std::vector<float> first;
  for (int64_t bq : {64, 128, 96, 37, 1}) {
    std::vector<float> o(q.size()), lse(size_t(2 * nq));
    cpu::LayerArgs a;
    a.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, nq, 2, D);
    a.k = cpu::contiguous(kk.data(), cpu::DType::F32, 1, nk, 1, D);
    a.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, nk, 1, D);
    a.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, nq, 2, D);
    a.lse = lse.data();
    a.blockQ = bq;
    a.seqs.count = 1;
    a.seqs.qStart = &qStart;
    a.seqs.kStart = &kStart;
    ASSERT_EQ(cpu::runLayer(t.table(), a), "");
    o.insert(o.end(), lse.begin(), lse.end());
    if (first.empty()) {
      first = o;
    } else {
      EXPECT_EQ(std::memcmp(first.data(), o.data(), 4 * o.size()), 0)
          << "block_q " << bq;
    }
  }
}

/// Dynamic heads take packed calls on the CPU (each sequence's index from
/// its own rows: the same as one dense call per sequence) and refuse paged
/// ones by name.
TEST(AttentionDescDynamic, PackedEqualsOneCallPerSequence) {
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  ASSERT_EQ(tessera_bundle_load_file(
                ctx,
                (std::string(TESSERA_BINARY_DIR) +
                 "/test/bundles/dynamic-emulation")
                    .c_str(),
                &bundle),
            TESSERA_OK)
      << tessera_last_error();
  tessera_layer_info info;
  ASSERT_EQ(tessera_bundle_layer_info(bundle, 0, &info), TESSERA_OK);
  const int64_t h = info.num_heads, hkv = info.num_kv_heads,
                d = info.head_dim;
  std::vector<float> cent(size_t(h * info.centroid_clusters * d), 0.3f);
  tessera_dynamic_inputs dyn{cent.data(), h, info.centroid_clusters, d};
  const std::vector<int32_t> lens = {100, 0, 200, 70};
  std::vector<int32_t> cu = {0};
  for (int32_t n : lens)
    cu.push_back(cu.back() + n);
  const int64_t T = cu.back();
  std::mt19937_64 rng(91);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> q(size_t(T * h * d)), k(size_t(T * hkv * d)), v(k.size()),
      o(q.size()), lse(size_t(h * T));
  for (auto *x : {&q, &k, &v})
    for (float &e : *x)
      e = u(rng);
  auto tens = [&](float *p, int64_t rows, int64_t heads) {
    return tessera_tensor{p,     TESSERA_DTYPE_F32, 1, rows, heads, d,
                          rows * heads * d, heads * d, d};
  };
  tessera_attention_desc desc;
  tessera_attention_desc_init(&desc);
  desc.q = tens(q.data(), T, h);
  desc.k = tens(k.data(), T, hkv);
  desc.v = tens(v.data(), T, hkv);
  desc.o = tens(o.data(), T, h);
  desc.lse = lse.data();
  desc.num_seqs = int64_t(lens.size());
  desc.cu_seqlens_q = cu.data();
  desc.cu_seqlens_k = cu.data();
  desc.dynamic_inputs = &dyn;
  ASSERT_EQ(tessera_attention_run(bundle, &desc), TESSERA_OK)
      << tessera_last_error();
  for (size_t s = 0; s < lens.size(); ++s) {
    const int64_t n = lens[s];
    if (n == 0)
      continue;
    tessera_tensor tq = tens(&q[size_t(cu[s] * h * d)], n, h),
                   tk = tens(&k[size_t(cu[s] * hkv * d)], n, hkv),
                   tv = tens(&v[size_t(cu[s] * hkv * d)], n, hkv);
    std::vector<float> o1(size_t(n * h * d)), l1(size_t(h * n));
    tessera_tensor to = tens(o1.data(), n, h);
    ASSERT_EQ(tessera_attention_dynamic(bundle, 0, &tq, &tk, &tv, &to,
                                        l1.data(), 0, &dyn, nullptr),
              TESSERA_OK)
        << tessera_last_error();
    EXPECT_EQ(std::memcmp(o1.data(), &o[size_t(cu[s] * h * d)],
                          4 * o1.size()),
              0)
        << "sequence " << s;
    for (int64_t hh = 0; hh < h; ++hh)
      EXPECT_EQ(std::memcmp(&l1[size_t(hh * n)], &lse[size_t(hh * T + cu[s])],
                            4 * size_t(n)),
                0)
          << "sequence " << s << " head " << hh;
  }
  // Paged keys: refused, naming the dynamic heads.
  std::vector<int32_t> table = {0};
  desc.cu_seqlens_k = nullptr;
  desc.block_table = table.data();
  EXPECT_EQ(tessera_attention_run(bundle, &desc),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("dynamic heads"),
            std::string::npos)
      << tessera_last_error();
  tessera_bundle_destroy(bundle);
  tessera_context_destroy(ctx);
}

} // namespace
