//===- DistributedSupportTest.cpp - what context parallelism asks ---------===//
//
// The runtime's parts that tessera.distributed (docs/distributed.md) relies
// on: tessera_bundle_visited_tiles against tiles counted from
// docs/patterns.md's definitions of the tiny-mix heads (SeqCalls.h), pair
// by pair; its errors, each naming its argument; and head ranges of layers
// with dynamic heads (Ulysses: each rank runs a range of heads over the
// whole sequence), which must give exactly the whole-layer call's rows.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

// Only the definitions (allowed) are used here, not SeqCalls' call builders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "SeqCalls.h"
#pragma GCC diagnostic pop

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace tessera;

namespace {

std::string bundlePath(const char *name) {
  return std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
}

struct Loaded {
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  explicit Loaded(const char *name) {
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    EXPECT_EQ(tessera_bundle_load_file(ctx, bundlePath(name).c_str(), &bundle),
              TESSERA_OK)
        << tessera_last_error();
  }
  ~Loaded() {
    if (bundle)
      tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
  }
};

/// Head h's tiles in query blocks [qb0, qb1) x key blocks [kb0, kb1) with
/// at least one allowed pair, and with every pair allowed (tiles clipped
/// to the lengths), from the definitions at bottom-right positions
/// p = q + Nk - Nq.
std::pair<int64_t, int64_t> referenceTiles(int64_t h, int64_t nq, int64_t nk,
                                           int64_t bq, int64_t bk,
                                           int64_t qb0, int64_t qb1,
                                           int64_t kb0, int64_t kb1) {
  int64_t any = 0, full = 0;
  for (int64_t qb = qb0; qb < qb1; ++qb)
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      bool some = false, all = true;
      for (int64_t q = qb * bq; q < std::min(nq, (qb + 1) * bq); ++q)
        for (int64_t k = kb * bk; k < std::min(nk, (kb + 1) * bk); ++k) {
          bool a = seqcalls::allowed(h, q + nk - nq, k);
          some |= a;
          all &= a;
        }
      any += some;
      full += all;
    }
  return {any, full};
}

/// Random rectangles of several grids, Nq = Nk and Nq < Nk: a tile is
/// counted iff it holds an allowed pair (so a rectangle counted 0 has
/// none: a pair of shards a rank may skip), and counted full only if
/// every pair is allowed.
TEST(VisitedTiles, CountsTheTilesWithAllowedPairs) {
  Loaded t("tiny-mix");
  ASSERT_TRUE(t.bundle);
  std::mt19937_64 rng(5);
  struct Grid {
    int64_t nq, nk, bq, bk;
  };
  int64_t zero = 0, checked = 0;
  for (Grid g : {Grid{200, 200, 16, 16}, Grid{200, 200, 8, 32},
                 Grid{131, 250, 16, 8}, Grid{97, 97, 64, 64}}) {
    const int64_t tq = (g.nq + g.bq - 1) / g.bq, tk = (g.nk + g.bk - 1) / g.bk;
    for (int trial = 0; trial < 40; ++trial) {
      int64_t qb0 = int64_t(rng() % uint64_t(tq + 1)),
              qb1 = qb0 + int64_t(rng() % uint64_t(tq - qb0 + 1));
      int64_t kb0 = int64_t(rng() % uint64_t(tk + 1)),
              kb1 = kb0 + int64_t(rng() % uint64_t(tk - kb0 + 1));
      int64_t out[2 * seqcalls::H];
      ASSERT_EQ(tessera_bundle_visited_tiles(t.bundle, 0, g.nq, g.nk, g.bq,
                                             g.bk, qb0, qb1, kb0, kb1, out,
                                             2 * seqcalls::H),
                TESSERA_OK)
          << tessera_last_error();
      for (int64_t h = 0; h < seqcalls::H; ++h) {
        auto [any, full] =
            referenceTiles(h, g.nq, g.nk, g.bq, g.bk, qb0, qb1, kb0, kb1);
        EXPECT_EQ(out[2 * h] + out[2 * h + 1], any)
            << "head " << h << " rectangle [" << qb0 << ", " << qb1
            << ") x [" << kb0 << ", " << kb1 << ") of " << g.nq << " x "
            << g.nk << " in " << g.bq << " x " << g.bk;
        EXPECT_LE(out[2 * h + 1], full) << "head " << h;
        zero += any == 0;
        ++checked;
      }
    }
  }
  // Both kinds occur: rectangles with and without visited tiles.
  EXPECT_GT(zero, 20);
  EXPECT_LT(zero, checked - 20);
}

/// Each bad argument is named; a layer's dynamic heads count -1.
TEST(VisitedTiles, BadArgumentsAreNamed) {
  Loaded t("tiny-mix");
  ASSERT_TRUE(t.bundle);
  int64_t out[2 * seqcalls::H];
  auto expect = [&](tessera_status want, const char *field, int64_t layer,
                    int64_t nq, int64_t bq, int64_t qb0, int64_t qb1,
                    int64_t kb0, int64_t kb1, size_t count, int64_t *o) {
    EXPECT_EQ(tessera_bundle_visited_tiles(t.bundle, layer, nq, 100, bq, 16,
                                           qb0, qb1, kb0, kb1, o, count),
              want)
        << field;
    EXPECT_NE(std::string(tessera_last_error()).find(field), std::string::npos)
        << tessera_last_error();
  };
  expect(TESSERA_ERROR_NULL_POINTER, "out", 0, 100, 16, 0, 1, 0, 1, 12,
         nullptr);
  expect(TESSERA_ERROR_LAYER_OUT_OF_RANGE, "layer 7", 7, 100, 16, 0, 1, 0, 1,
         12, out);
  expect(TESSERA_ERROR_INVALID_ARGUMENT, "q_len", 0, 0, 16, 0, 1, 0, 1, 12,
         out);
  expect(TESSERA_ERROR_INVALID_ARGUMENT, "block_q", 0, 100, 0, 0, 1, 0, 1, 12,
         out);
  expect(TESSERA_ERROR_INVALID_ARGUMENT, "q_block_end", 0, 100, 16, 0, 8, 0,
         1, 12, out); // 7 query blocks
  expect(TESSERA_ERROR_INVALID_ARGUMENT, "q_block_begin", 0, 100, 16, 3, 2,
         0, 1, 12, out);
  expect(TESSERA_ERROR_INVALID_ARGUMENT, "k_block_begin", 0, 100, 16, 0, 1,
         -1, 1, 12, out);
  expect(TESSERA_ERROR_SHAPE_MISMATCH, "out holds 11", 0, 100, 16, 0, 1, 0,
         1, 11, out);

  Loaded dyn("dynamic-emulation");
  ASSERT_TRUE(dyn.bundle);
  tessera_layer_info info;
  ASSERT_EQ(tessera_bundle_layer_info(dyn.bundle, 1, &info), TESSERA_OK);
  ASSERT_EQ(info.num_heads, 3); // heads 0 and 1 dynamic, 2 a window
  int64_t counts[6];
  ASSERT_EQ(tessera_bundle_visited_tiles(dyn.bundle, 1, 64, 64, 16, 16, 0, 4,
                                         0, 4, counts, 6),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(counts[0], -1);
  EXPECT_EQ(counts[3], -1);
  EXPECT_GT(counts[4] + counts[5], 0); // window<before = 4>: the diagonal
}

/// A dense f32 call of dynamic-emulation layer `layer` on rows `n` with
/// heads [h0, h0 + count) (count 0: every head), cut from whole-layer
/// inputs q [n][H][D], k and v [n][Hkv][D].
struct RangeCall {
  int64_t H, Hkv, D, n;
  std::vector<float> q, k, v;
  std::vector<float> cent;

  tessera_status run(tessera_bundle *b, int64_t layer, int64_t h0,
                     int64_t count, std::vector<float> &o,
                     std::vector<float> &lse, int64_t clusters) {
    const int64_t g = H / Hkv, hn = count ? count : H;
    const int64_t kv0 = h0 / g, kvn = (h0 + hn - 1) / g - kv0 + 1;
    std::vector<float> qs(size_t(n * hn * D)), ks(size_t(n * kvn * D)),
        vs(ks.size());
    for (int64_t r = 0; r < n; ++r) {
      std::memcpy(&qs[size_t(r * hn * D)], &q[size_t((r * H + h0) * D)],
                  4 * size_t(hn * D));
      std::memcpy(&ks[size_t(r * kvn * D)], &k[size_t((r * Hkv + kv0) * D)],
                  4 * size_t(kvn * D));
      std::memcpy(&vs[size_t(r * kvn * D)], &v[size_t((r * Hkv + kv0) * D)],
                  4 * size_t(kvn * D));
    }
    o.assign(size_t(n * hn * D), -7.0f);
    lse.assign(size_t(hn * n), -7.0f);
    auto tens = [&](float *p, int64_t heads) {
      return tessera_tensor{p,         TESSERA_DTYPE_F32, 1, n, heads, D,
                            n * heads * D, heads * D,     D};
    };
    tessera_dynamic_inputs dyn{cent.data(), H, clusters, D};
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = layer;
    d.q = tens(qs.data(), hn);
    d.k = tens(ks.data(), kvn);
    d.v = tens(vs.data(), kvn);
    d.o = tens(o.data(), hn);
    d.lse = lse.data();
    d.head_start = h0;
    d.head_count = count;
    d.dynamic_inputs = clusters ? &dyn : nullptr;
    return tessera_attention_run(b, &d);
  }
};

/// Every head range of every dynamic-emulation layer (vertical-slash,
/// block top-k, FlexPrefill, routing with and without the engine's
/// centroids, mixed with a static window head; GQA) gives the whole-layer
/// call's rows of those heads bit for bit: a head's index is built from
/// its own rows.
TEST(DistributedSupport, DynamicHeadRangesEqualTheWholeLayer) {
  Loaded t("dynamic-emulation");
  ASSERT_TRUE(t.bundle);
  int64_t layers = 0;
  ASSERT_EQ(tessera_bundle_num_layers(t.bundle, &layers), TESSERA_OK);
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> u(-1, 1);
  int64_t ranges = 0;
  for (int64_t pos = 0; pos < layers; ++pos) {
    int64_t layer;
    ASSERT_EQ(tessera_bundle_layer_index(t.bundle, pos, &layer), TESSERA_OK);
    tessera_layer_info info;
    ASSERT_EQ(tessera_bundle_layer_info(t.bundle, layer, &info), TESSERA_OK);
    ASSERT_GT(info.num_dynamic_heads, 0);
    RangeCall c{info.num_heads, info.num_kv_heads, info.head_dim, 150};
    c.q.resize(size_t(c.n * c.H * c.D));
    c.k.resize(size_t(c.n * c.Hkv * c.D));
    c.v.resize(c.k.size());
    for (auto *x : {&c.q, &c.k, &c.v})
      for (float &e : *x)
        e = u(rng);
    const int64_t clusters = info.centroid_clusters;
    c.cent.resize(size_t(c.H * std::max<int64_t>(clusters, 1) * c.D));
    for (float &e : c.cent)
      e = u(rng);
    std::vector<float> o, lse;
    ASSERT_EQ(c.run(t.bundle, layer, 0, 0, o, lse, clusters), TESSERA_OK)
        << tessera_last_error();
    for (int64_t h0 = 0; h0 < c.H; ++h0)
      for (int64_t count = 1; h0 + count <= c.H; ++count) {
        std::vector<float> ro, rl;
        ASSERT_EQ(c.run(t.bundle, layer, h0, count, ro, rl, clusters),
                  TESSERA_OK)
            << tessera_last_error();
        ++ranges;
        for (int64_t r = 0; r < c.n; ++r)
          EXPECT_EQ(std::memcmp(&ro[size_t(r * count * c.D)],
                                &o[size_t((r * c.H + h0) * c.D)],
                                4 * size_t(count * c.D)),
                    0)
              << "layer " << layer << " heads " << h0 << " + " << count
              << " row " << r;
        EXPECT_EQ(std::memcmp(rl.data(), &lse[size_t(h0 * c.n)],
                              4 * size_t(count * c.n)),
                  0)
            << "layer " << layer << " heads " << h0 << " + " << count;
      }
  }
  EXPECT_GT(ranges, 20);
}

/// Positions stay refused with dynamic heads, naming the field.
TEST(DistributedSupport, DynamicPositionsAreRefused) {
  Loaded t("dynamic-emulation");
  ASSERT_TRUE(t.bundle);
  RangeCall c{2, 2, 64, 32};
  c.q.assign(size_t(c.n * c.H * c.D), 0.5f);
  c.k.assign(size_t(c.n * c.Hkv * c.D), 0.5f);
  c.v = c.k;
  std::vector<float> o(c.q.size()), lse(size_t(c.H * c.n));
  auto tens = [&](float *p, int64_t heads) {
    return tessera_tensor{p,           TESSERA_DTYPE_F32, 1, c.n, heads, c.D,
                          c.n * heads * c.D, heads * c.D, c.D};
  };
  const int64_t start = 64;
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.layer = 2;
  d.q = tens(c.q.data(), c.H);
  d.k = tens(c.k.data(), c.Hkv);
  d.v = tens(c.v.data(), c.Hkv);
  d.o = tens(o.data(), c.H);
  d.q_start = &start;
  EXPECT_EQ(tessera_attention_run(t.bundle, &d),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("q_start"),
            std::string::npos)
      << tessera_last_error();
}

} // namespace
