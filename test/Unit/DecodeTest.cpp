//===- DecodeTest.cpp - split-KV decode steps on the CPU ------------------===//
//
// Decode steps (1 and 16 query rows per sequence) through
// tessera_attention_run against a float64 reference written here from
// docs/patterns.md's definitions, over caches long enough that the executor
// splits each head's key walk into chunks merged by log-sum-exp: dense and
// paged caches (shuffled pages of 16 and 256 rows), A-shape, window and
// causal heads (llama3-8b-sparse layer 2) and tiny-mix's multi-leaf heads,
// cache lengths that are not a multiple of the chunk, key and query
// positions, packed batches with empty sequences; bit-identical results on
// 1, 2 and 4 threads, agreement with the unsplit walk, and an A-shape head
// that reads only its sink and window pages (every other page holds NaN).
// Then the context's thread pool: threads kept across calls, a busy pool
// running a call on its caller, no thread started by a call.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "tessera/cpu/Half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace tessera;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Whether head h may see key position k from query position p.
using Allowed = std::function<bool(int64_t h, int64_t p, int64_t k)>;

/// The layers under test, with their heads' predicates (docs/patterns.md).
struct LayerCase {
  const char *bundle;
  int64_t layer, heads, kvHeads, headDim;
  Allowed allowed;
};

/// llama3-8b-sparse layer 2, heads 0-7 (kv heads 0 and 1): A-shape
/// (sink 4, before 1024) except 5 (window 2048) and 6 (causal).
LayerCase llamaLayer2() {
  return {
      "llama3-8b-sparse", 2, 32, 8, 128, [](int64_t h, int64_t p, int64_t k) {
        const int64_t d = k - p;
        if (h == 5)
          return d <= 0 && d >= -2048;
        if (h == 6)
          return d <= 0;
        return d <= 0 && (k < 4 || d >= -1024);
      }};
}

int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}
int64_t floorMod(int64_t a, int64_t b) { return a - floorDiv(a, b) * b; }

/// tiny-mix layer 0 (patterns/tiny-mix.mlir): every head.
LayerCase tinyMix() {
  return {"tiny-mix", 0, 6, 2, 64, [](int64_t h, int64_t p, int64_t k) {
            const int64_t d = k - p;
            switch (h) {
            case 0: // a_shape<sink = 2, before = 4>
              return d <= 0 && (k < 2 || d >= -4);
            case 1: { // multi_diagonal<stride = 8, width = 1>
              int64_t m = floorMod(d, 8);
              return std::min(m, 8 - m) <= 1;
            }
            case 2: // grid<stride = 8, vertical_width = 1, slash_width = 1>
              return floorMod(k, 8) < 1 || floorMod(-d, 8) < 1;
            case 3:
            case 4: // causal and (window<2> or strided_shards<2, block 4>)
              return d <= 0 &&
                     (d >= -2 || floorMod(floorDiv(k, 4), 2) == h % 2);
            default: // shifted_groups<size = 8, shift = 4>
              return floorDiv(p - 4, 8) == floorDiv(k - 4, 8);
            }
          }};
}

/// One sequence of a call: query rows, keys, and positions (-1: the
/// default, keys from 0 and queries bottom-right aligned).
struct Seq {
  int64_t nq, nk, kStart = -1, qStart = -1;
  int64_t k0() const { return kStart < 0 ? 0 : kStart; }
  int64_t p0() const { return qStart < 0 ? k0() + nk - nq : qStart; }
};

/// A call over heads [h0, h0 + n) of a layer, f32 tensors, and its
/// float64 reference.
struct Call {
  LayerCase lc;
  int64_t h0 = 0, n = 0, kv0 = 0, nkv = 0, D = 0;
  std::vector<Seq> seqs;
  /// Per sequence: q [nq][n][D], k and v [nk][nkv][D].
  std::vector<std::vector<float>> q, k, v;

  bool bf16 = false; ///< inputs bf16-exact, the call's tensors bf16

  Call(LayerCase lc, int64_t h0, int64_t n, std::vector<Seq> seqs,
       uint64_t seed, bool bf16 = false)
      : lc(std::move(lc)), h0(h0), n(n), seqs(std::move(seqs)), bf16(bf16) {
    const int64_t g = this->lc.heads / this->lc.kvHeads;
    D = this->lc.headDim;
    kv0 = h0 / g;
    nkv = (h0 + n - 1) / g - kv0 + 1;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    auto fill = [&](int64_t count) {
      std::vector<float> x(static_cast<size_t>(count));
      for (float &e : x)
        e = bf16 ? cpu::bf16ToFloat(cpu::floatToBf16(u(rng))) : u(rng);
      return x;
    };
    for (const Seq &s : this->seqs) {
      q.push_back(fill(s.nq * n * D));
      k.push_back(fill(s.nk * nkv * D));
      v.push_back(fill(s.nk * nkv * D));
    }
  }

  int64_t kvOf(int64_t hl) const {
    return (h0 + hl) / (lc.heads / lc.kvHeads) - kv0;
  }

  /// float64 attention of sequence s, row i, local head hl: O and LSE.
  std::pair<std::vector<double>, double> reference(int64_t s, int64_t i,
                                                   int64_t hl) const {
    const Seq &sq = seqs[size_t(s)];
    const double scale = 1.0 / std::sqrt(double(D));
    const float *qr = &q[size_t(s)][size_t((i * n + hl) * D)];
    std::vector<double> score;
    std::vector<int64_t> keys;
    for (int64_t j = 0; j < sq.nk; ++j) {
      if (!lc.allowed(h0 + hl, sq.p0() + i, sq.k0() + j))
        continue;
      const float *kr = &k[size_t(s)][size_t((j * nkv + kvOf(hl)) * D)];
      double dot = 0;
      for (int64_t x = 0; x < D; ++x)
        dot += double(qr[x]) * double(kr[x]);
      score.push_back(dot * scale);
      keys.push_back(j);
    }
    std::vector<double> o(size_t(D), 0.0);
    if (keys.empty())
      return {o, -kInf};
    double m = *std::max_element(score.begin(), score.end()), sum = 0;
    for (double &e : score)
      sum += (e = std::exp(e - m));
    for (size_t t = 0; t < keys.size(); ++t) {
      const float *vr = &v[size_t(s)][size_t((keys[t] * nkv + kvOf(hl)) * D)];
      for (int64_t x = 0; x < D; ++x)
        o[size_t(x)] += score[t] / sum * double(vr[x]);
    }
    return {o, m + std::log(sum)};
  }
};

/// How the call lays out its keys.
struct Layout {
  bool paged = false;
  int64_t pageSize = 16;
  bool packedQueries = false; ///< cu_seqlens_q (else dense, equal nq)
  /// Paged: pages holding no key that `keep(s, j)` accepts are filled with
  /// NaN (the test of a sparse head's reads).
  std::function<bool(int64_t s, int64_t j)> keep;
};

/// A call's buffers and description.
struct Built {
  std::vector<float> q, k, v, o, lse;
  std::vector<int32_t> cuQ, table, lens;
  std::vector<int64_t> qStart, kStart;
  std::vector<int64_t> rowOf; ///< sequence s's first query row
  int64_t rowsQ = 0;
  tessera_attention_desc d;
  std::vector<uint16_t> qh, kh, vh, oh; ///< bf16 calls' tensors

  /// Output element i as a float (bf16 calls: read back from oh).
  float out(size_t i) const {
    return oh.empty() ? o[i] : cpu::bf16ToFloat(oh[i]);
  }
};

/// Points the call at bf16 copies of its f32 buffers.
void toBf16(Built &b) {
  auto conv = [](const std::vector<float> &f, std::vector<uint16_t> &h) {
    h.resize(f.size());
    for (size_t i = 0; i < f.size(); ++i)
      h[i] = cpu::floatToBf16(f[i]);
  };
  conv(b.q, b.qh), conv(b.k, b.kh), conv(b.v, b.vh), conv(b.o, b.oh);
  for (auto [t, data] : {std::pair{&b.d.q, (void *)b.qh.data()},
                         {&b.d.k, (void *)b.kh.data()},
                         {&b.d.v, (void *)b.vh.data()},
                         {&b.d.o, (void *)b.oh.data()}}) {
    t->data = data;
    t->dtype = TESSERA_DTYPE_BF16;
  }
}

tessera_tensor tensor(float *data, int64_t b, int64_t s, int64_t h, int64_t D) {
  return tessera_tensor{data, TESSERA_DTYPE_F32, b,     s, h,
                        D,    s * h * D,         h * D, D};
}

void buildQueries(const Call &c, const Layout &lay, Built &b) {
  const int64_t S = int64_t(c.seqs.size()), rowLen = c.n * c.D;
  for (const Seq &s : c.seqs) {
    b.rowOf.push_back(
        lay.packedQueries ? b.rowsQ : int64_t(b.rowOf.size()) * c.seqs[0].nq);
    b.rowsQ += s.nq;
  }
  const int64_t batches = lay.packedQueries ? 1 : S;
  const int64_t rows = lay.packedQueries ? b.rowsQ : c.seqs[0].nq;
  b.q.assign(size_t(batches * rows * rowLen), kNaN);
  for (int64_t s = 0; s < S; ++s)
    std::copy(c.q[size_t(s)].begin(), c.q[size_t(s)].end(),
              b.q.begin() + b.rowOf[size_t(s)] * rowLen);
  b.o.assign(b.q.size(), 7.0f);
  b.lse.assign(size_t(c.n * b.rowsQ), 7.0f);
  b.d.q = tensor(b.q.data(), batches, rows, c.n, c.D);
  b.d.o = tensor(b.o.data(), batches, rows, c.n, c.D);
  if (lay.packedQueries) {
    b.cuQ.push_back(0);
    for (const Seq &s : c.seqs)
      b.cuQ.push_back(b.cuQ.back() + int32_t(s.nq));
    b.d.cu_seqlens_q = b.cuQ.data();
    b.d.num_seqs = S;
  }
}

void buildPagedKeys(const Call &c, const Layout &lay, Built &b) {
  const int64_t S = int64_t(c.seqs.size()), ps = lay.pageSize,
                rowLen = c.nkv * c.D;
  int64_t pages = 2, most = 1; // two spare pages
  for (const Seq &s : c.seqs) {
    pages += (s.nk + ps - 1) / ps;
    most = std::max(most, (s.nk + ps - 1) / ps);
  }
  std::vector<int32_t> order(static_cast<size_t>(pages));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(11));
  b.k.assign(size_t(pages * ps * rowLen), kNaN);
  b.v = b.k;
  b.table.assign(size_t(S * most), -1);
  size_t next = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t nk = c.seqs[size_t(s)].nk;
    b.lens.push_back(int32_t(nk));
    for (int64_t p = 0; p * ps < nk; ++p) {
      int32_t page = order[next++];
      b.table[size_t(s * most + p)] = page;
      bool needed = !lay.keep;
      for (int64_t j = p * ps; j < std::min(nk, p * ps + ps) && !needed; ++j)
        needed = lay.keep(s, j);
      for (int64_t j = p * ps; needed && j < std::min(nk, p * ps + ps); ++j) {
        std::copy_n(&c.k[size_t(s)][size_t(j * rowLen)], rowLen,
                    &b.k[size_t((page * ps + j % ps) * rowLen)]);
        std::copy_n(&c.v[size_t(s)][size_t(j * rowLen)], rowLen,
                    &b.v[size_t((page * ps + j % ps) * rowLen)]);
      }
    }
  }
  b.d.k = tensor(b.k.data(), pages, ps, c.nkv, c.D);
  b.d.block_table = b.table.data();
  b.d.max_pages_per_seq = most;
  b.d.seq_lens_k = b.lens.data();
}

/// Dense keys: [S, longest + 3, nkv, D], rows past a sequence's length NaN.
void buildDenseKeys(const Call &c, Built &b) {
  const int64_t S = int64_t(c.seqs.size()), rowLen = c.nkv * c.D;
  int64_t rows = 0;
  for (const Seq &s : c.seqs)
    rows = std::max(rows, s.nk + 3);
  b.k.assign(size_t(S * rows * rowLen), kNaN);
  b.v = b.k;
  for (int64_t s = 0; s < S; ++s) {
    std::copy(c.k[size_t(s)].begin(), c.k[size_t(s)].end(),
              b.k.begin() + s * rows * rowLen);
    std::copy(c.v[size_t(s)].begin(), c.v[size_t(s)].end(),
              b.v.begin() + s * rows * rowLen);
    b.lens.push_back(int32_t(c.seqs[size_t(s)].nk));
  }
  b.d.k = tensor(b.k.data(), S, rows, c.nkv, c.D);
  b.d.seq_lens_k = b.lens.data();
}

Built build(const Call &c, const Layout &lay) {
  Built b;
  tessera_attention_desc_init(&b.d);
  b.d.layer = c.lc.layer;
  if (c.n != c.lc.heads) {
    b.d.head_start = c.h0;
    b.d.head_count = c.n;
  }
  buildQueries(c, lay, b);
  if (lay.paged)
    buildPagedKeys(c, lay, b);
  else
    buildDenseKeys(c, b);
  b.d.v = b.d.k;
  b.d.v.data = b.v.data();
  bool positions = false;
  for (const Seq &s : c.seqs) {
    b.qStart.push_back(s.p0());
    b.kStart.push_back(s.k0());
    positions |= s.kStart >= 0 || s.qStart >= 0;
  }
  if (positions) {
    b.d.q_start = b.qStart.data();
    b.d.k_start = b.kStart.data();
  }
  b.d.lse = b.lse.data();
  if (c.bf16)
    toBf16(b);
  return b;
}

/// The LSE index of sequence s's row i of local head hl.
size_t lseAt(const Call &c, const Layout &lay, const Built &b, int64_t s,
             int64_t i, int64_t hl) {
  if (lay.packedQueries)
    return size_t(hl * b.rowsQ + b.rowOf[size_t(s)] + i);
  return size_t((s * c.n + hl) * c.seqs[0].nq + i);
}

struct Decode : ::testing::Test {
  void TearDown() override {
    for (tessera_bundle *b : bundles)
      tessera_bundle_destroy(b);
    if (ctx)
      tessera_context_destroy(ctx);
    unsetenv("TESSERA_CPU_SPLIT_KV");
  }

  tessera_bundle *load(const std::string &name) {
    if (!ctx) {
      EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx),
                TESSERA_OK);
    }
    if (loaded.count(name))
      return loaded[name];
    tessera_bundle *b = nullptr;
    EXPECT_EQ(
        tessera_bundle_load_file(
            ctx,
            (std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name).c_str(),
            &b),
        TESSERA_OK)
        << tessera_last_error();
    bundles.push_back(b);
    return loaded[name] = b;
  }

  /// Runs the call on `threads` threads; returns its built buffers.
  Built run(const Call &c, const Layout &lay, int threads = 1) {
    tessera_bundle *bundle = load(c.lc.bundle);
    Built b = build(c, lay);
    EXPECT_EQ(tessera_context_set_num_threads(ctx, threads), TESSERA_OK);
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    return b;
  }

  /// Runs the call and compares every output row and LSE with float64.
  Built check(const Call &c, const Layout &lay, int threads = 1) {
    Built b = run(c, lay, threads);
    const int64_t rowLen = c.n * c.D;
    int64_t bad = 0;
    for (int64_t s = 0; s < int64_t(c.seqs.size()); ++s)
      for (int64_t i = 0; i < c.seqs[size_t(s)].nq; ++i)
        for (int64_t hl = 0; hl < c.n; ++hl) {
          auto [o, lse] = c.reference(s, i, hl);
          const size_t at =
              size_t((b.rowOf[size_t(s)] + i) * rowLen + hl * c.D);
          // bf16 outputs: rounded to 8 bits of mantissa (|o| < 2).
          const double tol = c.bf16 ? 1e-2 : 2e-5;
          for (int64_t x = 0; x < c.D; ++x)
            if (!(std::abs(b.out(at + size_t(x)) - o[size_t(x)]) <= tol) &&
                bad++ < 5)
              ADD_FAILURE() << "o: sequence " << s << " row " << i << " head "
                            << c.h0 + hl << " element " << x << ": "
                            << b.out(at + size_t(x)) << " vs " << o[size_t(x)];
          float gotLse = b.lse[lseAt(c, lay, b, s, i, hl)];
          if (!(lse == -kInf ? gotLse == -kInf
                             : std::abs(gotLse - lse) <= 1e-4) &&
              bad++ < 5)
            ADD_FAILURE() << "lse: sequence " << s << " row " << i << " head "
                          << c.h0 + hl << ": " << gotLse << " vs " << lse;
        }
    EXPECT_EQ(bad, 0);
    return b;
  }

  tessera_context *ctx = nullptr;
  std::vector<tessera_bundle *> bundles;
  std::map<std::string, tessera_bundle *> loaded;
};

std::string name(const Layout &lay) {
  return lay.paged ? "paged, pages of " + std::to_string(lay.pageSize)
                   : "dense";
}

// A-shape, window and causal heads over two kv heads; 3001 keys (47 tiles
// of 64, chunks of 8: neither a multiple of the other), 1 and 16 rows.
TEST_F(Decode, LlamaHeadsMatchTheReference) {
  for (int64_t nq : {1, 16})
    for (Layout lay : {Layout{}, Layout{true, 16}, Layout{true, 256}}) {
      SCOPED_TRACE("Nq = " + std::to_string(nq) + ", " + name(lay));
      check(Call(llamaLayer2(), 2, 6, {{nq, 3001}, {nq, 2100}}, 5 + nq), lay);
    }
}

// bf16 caches: a one-row block reads bf16 keys and values in place, a
// 16-row block through the converted tiles.
TEST_F(Decode, Bf16Caches) {
  for (int64_t nq : {1, 16}) {
    SCOPED_TRACE("Nq = " + std::to_string(nq));
    check(Call(llamaLayer2(), 4, 4, {{nq, 2500}}, 71 + nq, /*bf16=*/true),
          Layout{true, 16});
    check(Call(tinyMix(), 0, 6, {{nq, 1100}}, 73 + nq, /*bf16=*/true),
          Layout{});
  }
}

// tiny-mix's heads: intersections and unions of leaves (multi-leaf), a
// non-causal multi-diagonal and grid, shifted groups.
TEST_F(Decode, MultiLeafHeadsMatchTheReference) {
  for (int64_t nq : {1, 16})
    for (Layout lay : {Layout{}, Layout{true, 16}, Layout{true, 256}}) {
      SCOPED_TRACE("Nq = " + std::to_string(nq) + ", " + name(lay));
      check(Call(tinyMix(), 0, 6, {{nq, 1500}, {nq, 1037}}, 9 + nq), lay);
    }
}

// Keys that start anywhere (a context-parallel shard), queries before the
// keys' end (chunked prefill), and queries past the keys' start.
TEST_F(Decode, PositionsAnywhere) {
  Seq shard{4, 2000, 777};       // keys at 777.., queries at the end
  Seq early{16, 2500, 0, 1900};  // queries at 1900..1915 of 2500
  Seq late{1, 1300, 3000, 6000}; // A-shape heads see no key
  for (Layout lay : {Layout{}, Layout{true, 16}}) {
    SCOPED_TRACE(name(lay));
    lay.packedQueries = true;
    check(Call(llamaLayer2(), 4, 4, {shard, early, late}, 21), lay);
    check(Call(tinyMix(), 0, 6, {shard, early, late}, 22), lay);
  }
}

// A packed batch with a sequence without rows and one without keys
// (rows O = 0, LSE = -inf) between decode sequences.
TEST_F(Decode, PackedBatchWithEmptySequences) {
  Layout lay{true, 16};
  lay.packedQueries = true;
  check(
      Call(llamaLayer2(), 0, 8, {{1, 4000}, {0, 900}, {3, 0}, {16, 1100}}, 31),
      lay);
}

// The chunks depend on the key length and the pattern, not on the thread
// count: every output bit equal on 1, 2 and 4 threads.
TEST_F(Decode, ThreadCountsGiveIdenticalResults) {
  Layout lay{true, 16};
  lay.packedQueries = true;
  Call c(llamaLayer2(), 0, 8, {{1, 5000}, {16, 3000}, {2, 700}}, 41);
  Built one = run(c, lay, 1);
  for (int threads : {2, 4}) {
    Built more = run(c, lay, threads);
    EXPECT_EQ(
        std::memcmp(one.o.data(), more.o.data(), one.o.size() * sizeof(float)),
        0)
        << threads << " threads";
    EXPECT_EQ(std::memcmp(one.lse.data(), more.lse.data(),
                          one.lse.size() * sizeof(float)),
              0)
        << threads << " threads";
  }
}

// The split walk agrees with the unsplit one (TESSERA_CPU_SPLIT_KV=0)
// within float rounding; they differ in the order of their sums.
TEST_F(Decode, SplitAgreesWithTheUnsplitWalk) {
  Layout lay{true, 256};
  Call c(llamaLayer2(), 0, 8, {{1, 6000}, {1, 2000}}, 51);
  Built split = run(c, lay, 2);
  setenv("TESSERA_CPU_SPLIT_KV", "0", 1);
  Built whole = run(c, lay, 2);
  int64_t differ = 0;
  for (size_t i = 0; i < split.o.size(); ++i) {
    EXPECT_NEAR(split.o[i], whole.o[i], 1e-5) << "element " << i;
    differ += split.o[i] != whole.o[i];
  }
  for (size_t i = 0; i < split.lse.size(); ++i)
    EXPECT_NEAR(split.lse[i], whole.lse[i], 1e-5) << "lse " << i;
  // Two different summation orders: some bits differ (else one of the two
  // runs did not take the path it names).
  EXPECT_GT(differ, 0);
}

// A-shape heads over a paged cache whose pages outside every row's sink
// and window hold NaN: the heads never read them.
TEST_F(Decode, AShapeHeadsReadOnlyTheirPages) {
  for (int64_t ps : {16, 256}) {
    SCOPED_TRACE("pages of " + std::to_string(ps));
    Call c(llamaLayer2(), 0, 4, {{1, 9000}, {16, 4100}}, 61);
    Layout lay{true, ps};
    lay.packedQueries = true;
    lay.keep = [&c](int64_t s, int64_t j) {
      const Seq &sq = c.seqs[size_t(s)];
      return j < 4 || j >= sq.p0() - 1024; // sink or some row's window
    };
    check(c, lay, 2);
  }
}

} // namespace

//===- The context's persistent threads -----------------------------------===//

#include "../../runtime/cpu/ThreadPool.h"

#include <atomic>
#include <dirent.h>
#include <mutex>
#include <set>
#include <thread>

namespace {

/// The threads of this process (entries of /proc/self/task).
int processThreads() {
  int n = 0;
  if (DIR *d = opendir("/proc/self/task")) {
    while (dirent *e = readdir(d))
      n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// A call runs its loop on n threads (the caller's one of them); later
// calls reuse the same threads; shrinking joins them, growing starts more.
TEST(ThreadPool, ThreadsPersistAcrossCalls) {
  cpu::ThreadPool pool;
  std::mutex m;
  std::set<std::thread::id> first, second;
  auto runOn = [&](int n, std::set<std::thread::id> &ids) {
    std::atomic<int> calls{0};
    pool.run(n, [&] {
      ++calls;
      std::lock_guard<std::mutex> lock(m);
      ids.insert(std::this_thread::get_id());
    });
    EXPECT_EQ(calls, n);
  };
  runOn(4, first);
  EXPECT_EQ(first.size(), 4u);
  EXPECT_EQ(pool.started(), 3);
  runOn(4, second);
  EXPECT_EQ(first, second) << "a call started new threads";
  std::set<std::thread::id> fewer;
  runOn(2, fewer);
  EXPECT_EQ(fewer.size(), 2u);
  EXPECT_EQ(pool.started(), 3) << "a smaller call keeps the pool";
  pool.resize(2);
  EXPECT_EQ(pool.started(), 0);
  std::set<std::thread::id> grown;
  runOn(3, grown);
  EXPECT_EQ(pool.started(), 2);
}

// A call from inside a pool task finds the pool busy and runs on its own
// thread, once, without waiting for the pool (no deadlock).
TEST(ThreadPool, BusyPoolRunsOnTheCaller) {
  cpu::ThreadPool pool;
  std::atomic<int> inner{0};
  std::atomic<bool> otherThread{false};
  pool.run(2, [&] {
    const std::thread::id self = std::this_thread::get_id();
    pool.run(3, [&] {
      ++inner;
      otherThread = otherThread || std::this_thread::get_id() != self;
    });
  });
  EXPECT_EQ(inner, 2); // once per outer loop, on that loop's thread
  EXPECT_FALSE(otherThread);
}

// Through the C API: the context's threads start with the first call that
// needs them and no later call starts another.
TEST_F(Decode, CallsStartNoThreads) {
  Layout lay{true, 16};
  lay.packedQueries = true;
  Call c(llamaLayer2(), 0, 8, {{1, 5000}}, 81);
  load(c.lc.bundle);
  const int before = processThreads();
  run(c, lay, 2);
  EXPECT_EQ(processThreads(), before + 1) << "the pool's thread is kept";
  for (int i = 0; i < 5; ++i)
    run(c, lay, 2);
  EXPECT_EQ(processThreads(), before + 1);
}

// Two threads calling the same context at once: one call takes the pool,
// the other runs on its own thread; both give the one-call bits.
TEST_F(Decode, ConcurrentCallsOnOneContext) {
  Layout lay{true, 16};
  lay.packedQueries = true;
  Call c(llamaLayer2(), 0, 8, {{1, 6000}, {4, 3000}}, 91);
  Built alone = run(c, lay, 2);
  tessera_bundle *bundle = load(c.lc.bundle);
  // Moved, not copied: each description points into its own buffers.
  std::vector<Built> built(2);
  for (Built &b : built)
    b = build(c, lay);
  std::vector<tessera_status> status(2, TESSERA_ERROR_INTERNAL);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> callers;
    for (size_t i = 0; i < 2; ++i)
      callers.emplace_back(
          [&, i] { status[i] = tessera_attention_run(bundle, &built[i].d); });
    for (std::thread &t : callers)
      t.join();
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(status[i], TESSERA_OK);
      EXPECT_EQ(std::memcmp(built[i].o.data(), alone.o.data(),
                            alone.o.size() * sizeof(float)),
                0)
          << "caller " << i;
    }
  }
}

} // namespace
