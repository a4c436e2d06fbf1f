//===- HeadRoutingTest.cpp - per-token head routing (MoH) on the CPU -----===//
//
// tessera_attention_desc's head_active (C API 9): each query row uses only
// some heads; inactive (row, head) pairs get O = 0 and LSE = -inf, active
// ones the attention at their own positions. Checked against the float64
// reference of SeqCalls.h (tiny-mix layer 0: A-shape, multi-diagonal,
// grid, causal window/strided heads, shifted groups; GQA 6 / 2), with the
// reference's inactive pairs set to 0 and -inf here: random masks per
// (row, head) at several densities (so that compacted blocks hold rows at
// far-apart positions), every layout (dense batches, packed, lengths,
// paged, positions anywhere, head ranges, decode steps), Nq < Nk and
// Nq > Nk, bf16; all active equals the plain call bit for bit, all
// inactive gives zeros, a head without an active row; the backward; and
// each bad field refused by name.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "SeqCalls.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/cpu/Executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace tessera;
using namespace tessera::seqcalls;

namespace {

/// A routing mask per sequence: active[s][i * H + h] for the layer's heads.
using Routing = std::vector<std::vector<uint8_t>>;

Routing randomRouting(const Logical &l, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution on(density);
  Routing r;
  for (const Seq &s : l.seqs) {
    std::vector<uint8_t> m(size_t(s.nq * H));
    for (uint8_t &e : m)
      e = on(rng) ? uint8_t(1 + rng() % 255) : 0; // any nonzero byte
    r.push_back(std::move(m));
  }
  return r;
}

Routing constantRouting(const Logical &l, uint8_t value) {
  Routing r;
  for (const Seq &s : l.seqs)
    r.emplace_back(size_t(s.nq * H), value);
  return r;
}

/// The reference with inactive pairs set to O = 0 and LSE = -inf.
Reference routedReference(const Logical &l, const Routing &r) {
  Reference ref = reference(l, 1.0 / std::sqrt(double(D)));
  for (size_t s = 0; s < l.seqs.size(); ++s)
    for (int64_t i = 0; i < l.seqs[s].nq; ++i)
      for (int64_t h = 0; h < H; ++h)
        if (!r[s][size_t(i * H + h)]) {
          std::fill_n(&ref.o[s][size_t((i * H + h) * D)], D, 0.0);
          ref.lse[s][size_t(h * l.seqs[s].nq + i)] = -kInf;
        }
  return ref;
}

/// The call's head_active array for `b`'s layout: [B, Nq, heads] dense,
/// [T, heads] packed (rows no sequence owns: arbitrary bytes).
std::vector<uint8_t> headActive(const Logical &l, const Built &b,
                                const Routing &r) {
  const bool packed = b.lay.q == QLayout::Packed;
  const int64_t rows = packed ? b.rowsQ : int64_t(l.seqs.size()) * b.rowsQ;
  std::vector<uint8_t> a(size_t(rows * b.heads), 1);
  for (size_t s = 0; s < l.seqs.size(); ++s)
    for (int64_t i = 0; i < l.seqs[s].nq; ++i) {
      const int64_t row = packed ? b.rowOf[s] + i : int64_t(s) * b.rowsQ + i;
      for (int64_t hl = 0; hl < b.heads; ++hl)
        a[size_t(row * b.heads + hl)] = r[s][size_t(i * H + b.lay.h0 + hl)];
    }
  return a;
}

struct HeadRouting : ::testing::Test {
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

  /// Runs `l` routed by `r` in layout `lay` against the routed reference.
  Built check(const Logical &l, const Layout &lay, const Routing &r) {
    Built b = build(l, lay);
    std::vector<uint8_t> active = headActive(l, b, r);
    b.d.head_active = active.data();
    b.d.head_active_size = int64_t(active.size());
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    b.d.head_active = nullptr; // (the array dies here)
    b.d.head_active_size = 0;
    const Tolerance tol{lay.bf16 ? 2e-2 : 2e-5, 1e-4, 0.0};
    int64_t bad =
        countMismatches(l, b, routedReference(l, r), tol,
                        [](const std::string &m) { ADD_FAILURE() << m; });
    EXPECT_EQ(bad, 0);
    return b;
  }

  /// check() at densities 0.1, 0.5 and 0.9 (seeded from `seed`).
  void checkDensities(const Logical &l, const Layout &lay, uint64_t seed) {
    for (double density : {0.1, 0.5, 0.9}) {
      SCOPED_TRACE("density " + std::to_string(density));
      check(l, lay, randomRouting(l, density, seed++));
    }
  }

  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
};

/// Dense batches of two, Nq = Nk, Nq < Nk and Nq > Nk, lengths not
/// multiples of the query block (64): rows compacted per head keep their
/// positions (the causal window heads 3 and 4, the A-shape's window).
TEST_F(HeadRouting, DenseMatchesTheReference) {
  for (auto [nq, nk] : {std::pair{70, 70}, {20, 150}, {150, 40}, {300, 300}}) {
    SCOPED_TRACE("Nq = " + std::to_string(nq) + ", Nk = " + std::to_string(nk));
    checkDensities(makeLogical({{nq, nk}, {nq, nk}}, uint64_t(nq * 7 + nk)), {},
                   uint64_t(nq + nk));
  }
}

/// A sparse routing whose active rows lie far apart: each compacted block
/// spans hundreds of positions, and a wrong row -> position map (rows
/// masked at their block's first position, or at their index in the
/// block) gives the window heads wrong keys.
TEST_F(HeadRouting, FarApartRowsKeepTheirPositions) {
  Logical l = makeLogical({{600, 600}}, 41);
  Routing r = constantRouting(l, 0);
  for (int64_t i = 3; i < 600; i += 37)
    for (int64_t h = 0; h < H; ++h)
      r[0][size_t(i * H + h)] = uint8_t((i / 37 + h) % 3 != 0);
  check(l, {}, r);
  // Runs of consecutive rows with gaps between them.
  r = constantRouting(l, 0);
  for (int64_t i = 0; i < 600; ++i)
    for (int64_t h = 0; h < H; ++h)
      r[0][size_t(i * H + h)] = uint8_t((i / 5 + h) % 4 == 0);
  check(l, {}, r);
}

/// Every pair active: the same bits as the call without head_active.
TEST_F(HeadRouting, AllActiveEqualsThePlainCallBitForBit) {
  for (auto [nq, nk] : {std::pair{130, 130}, {20, 150}, {150, 40}}) {
    Logical l = makeLogical({{nq, nk}, {nq, nk}}, uint64_t(nq + nk));
    Built plain = build(l, {});
    ASSERT_EQ(tessera_attention_run(bundle, &plain.d), TESSERA_OK)
        << tessera_last_error();
    Built routed = check(l, {}, constantRouting(l, 1));
    EXPECT_EQ(std::memcmp(plain.o.data(), routed.o.data(),
                          plain.o.size() * sizeof(float)),
              0);
    EXPECT_EQ(std::memcmp(plain.lse.data(), routed.lse.data(),
                          plain.lse.size() * sizeof(float)),
              0);
  }
}

/// No pair active: zeros and -inf everywhere (NaN inputs included: no row
/// is read).
TEST_F(HeadRouting, AllInactiveGivesZeros) {
  Logical l = makeLogical({{90, 90}, {90, 90}}, 5);
  for (auto &q : l.q)
    std::fill(q.begin(), q.end(), std::numeric_limits<float>::quiet_NaN());
  Built b = check(l, {}, constantRouting(l, 0));
  for (float x : b.o)
    EXPECT_EQ(x, 0.0f);
  for (float x : b.lse)
    EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
}

/// Heads without an active row next to heads with every row active, and a
/// row that uses no head.
TEST_F(HeadRouting, HeadsWithoutActiveRows) {
  Logical l = makeLogical({{100, 120}, {100, 120}}, 9);
  Routing r = constantRouting(l, 0);
  for (size_t s = 0; s < 2; ++s)
    for (int64_t i = 0; i < 100; ++i)
      for (int64_t h : {1, 3, 4})
        r[s][size_t(i * H + h)] = uint8_t(i != 50);
  check(l, {}, r);
}

/// Query and key positions anywhere (on and off multiples of 64).
TEST_F(HeadRouting, PositionsAnywhere) {
  for (auto [qs, ks] : {std::pair{100, 0}, {129, 64}, {0, 70}, {37, 5}})
    for (auto [nq, nk] : {std::pair{37, 150}, {130, 70}}) {
      SCOPED_TRACE("q_start " + std::to_string(qs) + ", k_start " +
                   std::to_string(ks));
      Seq s{nq, nk, qs, ks};
      checkDensities(makeLogical({s, s}, uint64_t(qs + ks)), {},
                     uint64_t(qs * 3 + ks));
    }
}

/// Packed ragged batches with empty sequences, lengths and paged caches,
/// decode steps of 1 and 16 rows over long caches (split key walks).
TEST_F(HeadRouting, PerSequenceCalls) {
  std::vector<Seq> seqs = {{5, 5}, {0, 0},    {70, 70},   {0, 12},
                           {3, 0}, {10, 100}, {130, 130}, {1, 65}};
  Logical l = makeLogical(seqs, 11);
  checkDensities(l, {QLayout::Packed, KLayout::Packed}, 1);
  checkDensities(l, {QLayout::Packed, KLayout::Lengths}, 2);
  for (int64_t nq : {1, 16}) {
    SCOPED_TRACE(std::to_string(nq) + " queries");
    std::vector<Seq> decode = {{nq, 2000}, {nq, 700}, {nq, 257}};
    checkDensities(makeLogical(decode, uint64_t(nq)),
                   {QLayout::Dense, KLayout::Paged, 16}, uint64_t(nq));
  }
}

/// Head ranges (GQA: the range's kv heads), bf16.
TEST_F(HeadRouting, HeadRangesAndBf16) {
  Logical l = makeLogical({{90, 140}, {90, 140}}, 21);
  for (auto [h0, n] : {std::pair{1, 4}, {5, 1}, {0, 3}}) {
    SCOPED_TRACE("heads " + std::to_string(h0) + " + " + std::to_string(n));
    Layout lay;
    lay.h0 = h0;
    lay.n = n;
    checkDensities(l, lay, uint64_t(h0 * 10 + n));
  }
  Logical lb = makeLogical({{90, 140}, {90, 140}}, 22, /*bf16=*/true);
  Layout bf;
  bf.bf16 = true;
  checkDensities(lb, bf, 30);
}

/// The backward: inactive rows get dq = 0 and add nothing to dk and dv,
/// so the routed backward equals the plain backward with those rows' dO
/// zeroed (the loss does not read inactive outputs, which are constant);
/// the plain backward is held to float64 in BackwardTest. Dense, packed and
/// length calls; every pair active gives the plain backward's bits.
TEST_F(HeadRouting, BackwardGivesInactiveRowsNoGradient) {
  struct Config {
    std::vector<Seq> seqs;
    Layout lay;
    double density;
  };
  const std::vector<Config> configs = {
      {{{100, 100}, {100, 100}}, {}, 0.4},
      {{{70, 90}, {0, 10}, {130, 130}},
       {QLayout::Packed, KLayout::Packed},
       0.3},
      {{{60, 100}, {60, 70}}, {QLayout::Dense, KLayout::Lengths}, 0.5},
      {{{100, 100}, {100, 100}}, {}, 1.0}};
  uint64_t seed = 31;
  for (const Config &cfg : configs) {
    SCOPED_TRACE("config " + std::to_string(seed - 31));
    Logical l = makeLogical(cfg.seqs, seed++);
    Routing r = randomRouting(l, cfg.density, seed++);
    Built b = build(l, cfg.lay);
    std::vector<uint8_t> active = headActive(l, b, r);
    b.d.head_active = active.data();
    b.d.head_active_size = int64_t(active.size());
    ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    Built plain = build(l, cfg.lay);
    ASSERT_EQ(tessera_attention_run(bundle, &plain.d), TESSERA_OK);

    std::mt19937_64 rng(seed++);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> dO(b.o.size());
    for (float &x : dO)
      x = u(rng);
    std::vector<float> dOZeroed = dO;
    for (size_t s = 0; s < cfg.seqs.size(); ++s)
      for (int64_t i = 0; i < cfg.seqs[s].nq; ++i)
        for (int64_t h = 0; h < H; ++h)
          if (!r[s][size_t(i * H + h)])
            std::fill_n(&dOZeroed[b.oAt(int64_t(s), i, h)], D, 0.0f);
    auto grads = [&](Built &call, std::vector<float> &g) {
      std::vector<float> dq(call.q.size()), dk(call.k.size()),
          dv(call.v.size());
      tessera_tensor tdO = call.d.o, tdq = call.d.q, tdk = call.d.k,
                     tdv = call.d.v;
      tdO.data = g.data();
      tdq.data = dq.data();
      tdk.data = dk.data();
      tdv.data = dv.data();
      EXPECT_EQ(tessera_attention_backward(bundle, &call.d, &tdO, nullptr, &tdq,
                                           &tdk, &tdv),
                TESSERA_OK)
          << tessera_last_error();
      return std::vector<std::vector<float>>{dq, dk, dv};
    };
    auto routed = grads(b, dO), want = grads(plain, dOZeroed);
    const char *names[] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3; ++t) {
      SCOPED_TRACE(names[t]);
      if (cfg.density == 1.0) {
        EXPECT_EQ(routed[t], want[t]); // bit for bit
        continue;
      }
      double worst = 0;
      for (size_t x = 0; x < routed[t].size(); ++x)
        worst = std::max(worst, double(std::abs(routed[t][x] - want[t][x])));
      EXPECT_LE(worst, 1e-5);
    }
    for (size_t s = 0; s < cfg.seqs.size(); ++s)
      for (int64_t i = 0; i < cfg.seqs[s].nq; ++i)
        for (int64_t h = 0; h < H; ++h)
          if (!r[s][size_t(i * H + h)]) {
            for (int64_t x = 0; x < D; ++x)
              ASSERT_EQ(routed[0][b.oAt(int64_t(s), i, h) + size_t(x)], 0.0f);
          }
  }
}

/// Each bad field named, with a non-zero status.
TEST_F(HeadRouting, BadInputIsRefusedByName) {
  Logical l = makeLogical({{40, 40}, {40, 40}}, 3);
  Built b = build(l, {});
  std::vector<uint8_t> active(size_t(2 * 40 * H), 1);
  auto expectError = [&](tessera_status want, const char *needle) {
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), want);
    EXPECT_NE(std::string(tessera_last_error()).find(needle), std::string::npos)
        << tessera_last_error();
  };
  b.d.head_active = nullptr;
  b.d.head_active_size = int64_t(active.size());
  expectError(TESSERA_ERROR_NULL_POINTER, "head_active is null");
  b.d.head_active = active.data();
  b.d.head_active_size = 0;
  expectError(TESSERA_ERROR_SHAPE_MISMATCH, "head_active_size is 0");
  b.d.head_active_size = int64_t(active.size()) - 1;
  expectError(TESSERA_ERROR_SHAPE_MISMATCH, "uint8 [2, 40, 6]");
  // A head range: heads = head_count.
  Layout range;
  range.h0 = 2;
  range.n = 3;
  Built r = build(l, range);
  r.d.head_active = active.data();
  r.d.head_active_size = int64_t(active.size());
  EXPECT_EQ(tessera_attention_run(bundle, &r.d), TESSERA_ERROR_SHAPE_MISMATCH);
  EXPECT_NE(std::string(tessera_last_error()).find("uint8 [2, 40, 3]"),
            std::string::npos)
      << tessera_last_error();
  // Packed queries: [T, heads].
  Built p = build(l, {QLayout::Packed, KLayout::Packed});
  p.d.head_active = active.data();
  p.d.head_active_size = 80 * H;
  EXPECT_EQ(tessera_attention_run(bundle, &p.d), TESSERA_ERROR_SHAPE_MISMATCH);
  EXPECT_NE(std::string(tessera_last_error()).find("uint8 [83, 6]"),
            std::string::npos)
      << tessera_last_error();
  p.d.head_active_size = 83 * H;
  std::vector<uint8_t> packedActive(size_t(83 * H), 1);
  p.d.head_active = packedActive.data();
  EXPECT_EQ(tessera_attention_run(bundle, &p.d), TESSERA_OK)
      << tessera_last_error();
}

/// A layer with dynamic heads refuses head_active by name.
TEST_F(HeadRouting, DynamicHeadsRefuseIt) {
  tessera_bundle *dyn = nullptr;
  ASSERT_EQ(tessera_bundle_load_file(ctx,
                                     (std::string(TESSERA_BINARY_DIR) +
                                      "/test/bundles/dynamic-emulation")
                                         .c_str(),
                                     &dyn),
            TESSERA_OK)
      << tessera_last_error();
  // A layer with dynamic heads that need no centroids.
  tessera_layer_info info{};
  int64_t layer = -1, layers = 0;
  ASSERT_EQ(tessera_bundle_num_layers(dyn, &layers), TESSERA_OK);
  for (int64_t i = 0; i < layers && layer < 0; ++i) {
    int64_t index = 0;
    ASSERT_EQ(tessera_bundle_layer_index(dyn, i, &index), TESSERA_OK);
    ASSERT_EQ(tessera_bundle_layer_info(dyn, index, &info), TESSERA_OK);
    if (info.num_dynamic_heads > 0 && info.centroid_clusters == 0)
      layer = index;
  }
  ASSERT_GE(layer, 0);
  const int64_t n = 64, h = info.num_heads, hk = info.num_kv_heads,
                d = info.head_dim;
  std::vector<uint16_t> q(size_t(n * h * d)), k(size_t(n * hk * d)),
      v(k.size()), o(q.size());
  tessera_dtype t =
      info.dtype == TESSERA_DTYPE_F16 ? TESSERA_DTYPE_F16 : TESSERA_DTYPE_BF16;
  auto tensor = [&](void *data, int64_t heads) {
    return tessera_tensor{data, t, 1, n, heads, d, n * heads * d, heads * d, d};
  };
  tessera_attention_desc desc;
  tessera_attention_desc_init(&desc);
  desc.layer = layer;
  desc.q = tensor(q.data(), h);
  desc.k = tensor(k.data(), hk);
  desc.v = tensor(v.data(), hk);
  desc.o = tensor(o.data(), h);
  std::vector<uint8_t> active(size_t(n * h), 1);
  desc.head_active = active.data();
  desc.head_active_size = int64_t(active.size());
  EXPECT_EQ(tessera_attention_run(dyn, &desc), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("dynamic heads"),
            std::string::npos)
      << tessera_last_error();
  tessera_bundle_destroy(dyn);
}

/// Inactive pairs cost nothing: the executor's work (RunStats::rowTiles,
/// the visited tiles times the rows each computed) of a causal head and a
/// sliding-window head at 2048 tokens. No active pair: no work; one head's
/// rows alone: that head's work of the plain call; rows active at 1/8
/// density: about 1/8 of the work (under 1/5), in about the tiles the
/// plain call visits.
TEST(HeadRoutingCost, TilesFollowTheActiveRows) {
  const int64_t n = 2048, heads = 2, d = 64;
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(
      {{semantics::Pattern{semantics::Causal{}}, {0}},
       {semantics::Pattern{semantics::Window{128, 0}}, {1}}},
      heads, sched, error))
      << error;
  std::vector<float> q(size_t(n * heads * d), 0.5f), kv(size_t(n * d), 0.25f),
      o(q.size()), lse(size_t(heads * n));
  auto tiles = [&](const std::vector<uint8_t> *active) {
    cpu::LayerArgs a;
    a.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, n, heads, d);
    a.k = cpu::contiguous(kv.data(), cpu::DType::F32, 1, n, 1, d);
    a.v = a.k;
    a.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, n, heads, d);
    a.lse = lse.data();
    a.numThreads = 2;
    a.headActive = active ? active->data() : nullptr;
    cpu::RunStats stats;
    EXPECT_EQ(cpu::runLayer(sched.table(), a, &stats), "");
    return std::pair{stats.rowTiles, stats.tilesFull + stats.tilesPartial};
  };
  auto routing = [&](auto on) {
    std::vector<uint8_t> m(size_t(n * heads));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h)
        m[size_t(i * heads + h)] = on(i, h);
    return m;
  };
  const auto [plain, plainTiles] = tiles(nullptr);
  EXPECT_EQ(plain, 64 * plainTiles); // 64-row query blocks
  std::vector<uint8_t> none = routing([](int64_t, int64_t) { return 0; });
  EXPECT_EQ(tiles(&none).first, 0);
  std::vector<uint8_t> head0 =
      routing([](int64_t, int64_t h) { return h == 0; });
  std::vector<uint8_t> head1 =
      routing([](int64_t, int64_t h) { return h == 1; });
  EXPECT_EQ(tiles(&head0).first + tiles(&head1).first, plain);
  std::mt19937_64 rng(77);
  std::vector<uint8_t> sparse =
      routing([&](int64_t, int64_t) { return rng() % 8 == 0; });
  const auto [few, fewTiles] = tiles(&sparse);
  EXPECT_GT(few, 0);
  EXPECT_LT(few * 5, plain) << few << " of " << plain << " row-tiles";
  // Blocks start at their first active row, not on multiples of 64: a
  // window's block may reach one key tile more.
  EXPECT_LE(fewTiles * 10, plainTiles * 11) << fewTiles << " " << plainTiles;
}

} // namespace
