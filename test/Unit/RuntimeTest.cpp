//===- RuntimeTest.cpp - the C API, bundles, validation and the cache -----===//

#include "tessera/tessera.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/HeadGroups.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"
#include "tessera/jit/Cache.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

using namespace tessera;

namespace {

std::string bundleDir(const std::string &name) {
  return std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
}

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

tessera_tensor tensor(void *data, tessera_dtype t, int64_t b, int64_t s,
                      int64_t h, int64_t d) {
  return tessera_tensor{data, t, b, s, h, d, s * h * d, h * d, d};
}

/// Runs layer 0 of a loaded bundle on N tokens of f32 inputs (q varied, k
/// and v constant) with the centroids its routing groups ask for.
tessera_status runSmall(tessera_bundle *b, const tessera_layer_info &info,
                        int64_t N) {
  std::vector<float> q(N * info.num_heads * info.head_dim, 0.5f),
      k(N * info.num_kv_heads * info.head_dim, 0.25f), v = k, o = q;
  for (size_t j = 0; j < q.size(); ++j)
    q[j] = float((j * 7919) % 13) / 13.0f - 0.5f;
  std::vector<float> cent(
      size_t(info.num_heads * std::max<int64_t>(info.centroid_clusters, 1) *
             info.head_dim),
      0.1f);
  tessera_dynamic_inputs dyn{cent.data(), info.num_heads,
                             info.centroid_clusters, info.head_dim};
  tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, N,
                             info.num_heads, info.head_dim);
  tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_F32, 1, N,
                             info.num_kv_heads, info.head_dim);
  tessera_tensor tv = tensor(v.data(), TESSERA_DTYPE_F32, 1, N,
                             info.num_kv_heads, info.head_dim);
  tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, N,
                             info.num_heads, info.head_dim);
  return tessera_attention_dynamic(b, 0, &tq, &tk, &tv, &to, nullptr, 0,
                                   &dyn, nullptr);
}

struct Fixture : ::testing::Test {
  void SetUp() override {
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK)
        << tessera_last_error();
    ASSERT_EQ(tessera_bundle_load_file(
                  ctx, bundleDir("llama3-8b-sparse").c_str(), &bundle),
              TESSERA_OK)
        << tessera_last_error();
  }
  void TearDown() override {
    if (bundle) {
      EXPECT_EQ(tessera_bundle_destroy(bundle), TESSERA_OK);
    }
    if (ctx) {
      EXPECT_EQ(tessera_context_destroy(ctx), TESSERA_OK);
    }
  }
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
};

TEST(RuntimeApi, VersionAndStatusNames) {
  EXPECT_EQ(tessera_api_version(), uint32_t(TESSERA_API_VERSION));
  EXPECT_STREQ(tessera_status_string(TESSERA_ERROR_SHAPE_MISMATCH),
               "TESSERA_ERROR_SHAPE_MISMATCH");
  EXPECT_STREQ(tessera_status_string(tessera_status(999)),
               "TESSERA_ERROR_UNKNOWN");
}

TEST_F(Fixture, LayerLookup) {
  int64_t n = 0;
  ASSERT_EQ(tessera_bundle_num_layers(bundle, &n), TESSERA_OK);
  EXPECT_EQ(n, 32);
  int64_t index = -1;
  ASSERT_EQ(tessera_bundle_layer_index(bundle, 5, &index), TESSERA_OK);
  EXPECT_EQ(index, 5);
  tessera_layer_info info;
  ASSERT_EQ(tessera_bundle_layer_info(bundle, 2, &info), TESSERA_OK);
  EXPECT_EQ(info.num_heads, 32);
  EXPECT_EQ(info.num_kv_heads, 8);
  EXPECT_EQ(info.head_dim, 128);
  EXPECT_EQ(info.dtype, TESSERA_DTYPE_BF16);
  EXPECT_EQ(info.num_computed_heads, 32);
  EXPECT_EQ(info.num_skipped_heads, 0);
}

/// The API's CPU path on a bundle gives exactly what the executor gives on
/// the schedule lowered from the pattern file: the manifest carries the
/// schedule faithfully.
TEST(RuntimeCpu, MatchesTheScheduleOfThePatternFile) {
  mlir::MLIRContext mctx;
  mctx.getOrLoadDialect<attn::AttnDialect>();
  for (auto [name, layerIndex] : {std::pair{"llama3-8b-sparse", 2},
                                  {"video-dit", 0},
                                  {"s2-strided", 1}}) {
    auto module = mlir::parseSourceFile<mlir::ModuleOp>(
        std::string(TESSERA_SOURCE_DIR) + "/patterns/" + name + ".mlir", &mctx);
    ASSERT_TRUE(module);
    attn::LayerOp layer;
    module->walk([&](attn::LayerOp l) {
      if (l.getIndex() == layerIndex)
        layer = l;
    });
    std::vector<schedule::HeadGroup> groups;
    for (FusedGroup &g : fuseHeads(layer))
      groups.push_back({semantics::fromAttr(simplifyPattern(g.pattern)),
                        std::vector<int64_t>(g.heads.begin(), g.heads.end())});
    schedule::LayerSchedule sched;
    std::string error;
    ASSERT_TRUE(schedule::buildLayerSchedule(groups, layer.getNumHeads(), sched,
                                             error));

    int64_t H = layer.getNumHeads(), Hkv = layer.getNumKvHeads(), D = 128;
    bool f16 = layer.getDtype().isF16();
    tessera_dtype dt = f16 ? TESSERA_DTYPE_F16 : TESSERA_DTYPE_BF16;
    cpu::DType cdt = f16 ? cpu::DType::F16 : cpu::DType::BF16;
    int64_t nq = 300, nk = 333;
    std::mt19937 rng(7);
    std::normal_distribution<float> dist;
    std::vector<uint16_t> q(nq * H * D), k(nk * Hkv * D), v(nk * Hkv * D);
    for (auto *x : {&q, &k, &v})
      for (uint16_t &e : *x)
        e = f16 ? cpu::floatToF16(dist(rng)) : cpu::floatToBf16(dist(rng));
    std::vector<uint16_t> o1(q.size()), o2(q.size());
    std::vector<float> l1(H * nq), l2(H * nq);

    tessera_context *ctx;
    tessera_bundle *b;
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    ASSERT_EQ(tessera_bundle_load_file(ctx, bundleDir(name).c_str(), &b),
              TESSERA_OK)
        << tessera_last_error();
    tessera_tensor tq = tensor(q.data(), dt, 1, nq, H, D);
    tessera_tensor tk = tensor(k.data(), dt, 1, nk, Hkv, D);
    tessera_tensor tv = tensor(v.data(), dt, 1, nk, Hkv, D);
    tessera_tensor to = tensor(o1.data(), dt, 1, nq, H, D);
    ASSERT_EQ(tessera_attention(b, layerIndex, &tq, &tk, &tv, &to, l1.data(), 0,
                                nullptr),
              TESSERA_OK)
        << tessera_last_error();
    tessera_bundle_destroy(b);
    tessera_context_destroy(ctx);

    cpu::LayerArgs args;
    args.q = cpu::contiguous(q.data(), cdt, 1, nq, H, D);
    args.k = cpu::contiguous(k.data(), cdt, 1, nk, Hkv, D);
    args.v = cpu::contiguous(v.data(), cdt, 1, nk, Hkv, D);
    args.o = cpu::contiguous(o2.data(), cdt, 1, nq, H, D);
    args.lse = l2.data();
    ASSERT_EQ(cpu::runLayer(sched.table(), args), "");
    EXPECT_EQ(o1, o2) << name;
    EXPECT_EQ(0, std::memcmp(l1.data(), l2.data(), l1.size() * 4)) << name;
  }
}

TEST(RuntimeCpu, LoadFromMemory) {
  std::string man = slurp(bundleDir("video-dit") + "/manifest.json");
  std::string src = slurp(bundleDir("video-dit") + "/bundle.cu");
  tessera_context *ctx;
  tessera_bundle *b = nullptr;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  ASSERT_EQ(tessera_bundle_load_memory(ctx, man.data(), man.size(), src.data(),
                                       src.size(), &b),
            TESSERA_OK)
      << tessera_last_error();
  tessera_layer_info info;
  ASSERT_EQ(tessera_bundle_layer_info(b, 0, &info), TESSERA_OK);
  EXPECT_EQ(info.num_skipped_heads, 2);
  EXPECT_EQ(info.num_computed_heads, 22);
  tessera_bundle_destroy(b);
  tessera_context_destroy(ctx);
}

/// At least 50 distinct bad calls, each an error code and a message, never a
/// crash.
TEST_F(Fixture, BadCallsGetErrors) {
  const int64_t H = 32, Hkv = 8, D = 128, N = 70;
  std::vector<uint16_t> q(N * H * D), k(N * Hkv * D), v(N * Hkv * D),
      o(N * H * D);
  std::vector<float> qf(N * H * D), kf(N * Hkv * D), vf(N * Hkv * D),
      of(N * H * D);
  tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_BF16, 1, N, H, D);
  tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_BF16, 1, N, Hkv, D);
  tessera_tensor tv = tensor(v.data(), TESSERA_DTYPE_BF16, 1, N, Hkv, D);
  tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_BF16, 1, N, H, D);
  ASSERT_EQ(
      tessera_attention(bundle, 2, &tq, &tk, &tv, &to, nullptr, 0, nullptr),
      TESSERA_OK);
  EXPECT_STREQ(tessera_last_error(), "");

  int count = 0;
  auto expect = [&](tessera_status got, tessera_status want,
                    const char *needle) {
    ++count;
    EXPECT_EQ(got, want) << "case " << count << ": " << tessera_last_error();
    EXPECT_NE(std::string(tessera_last_error()).find(needle), std::string::npos)
        << "case " << count << ": '" << tessera_last_error() << "' lacks '"
        << needle << "'";
  };
  auto run = [&](tessera_tensor a, tessera_tensor b, tessera_tensor c,
                 tessera_tensor d, int64_t layer = 2, float scale = 0) {
    return tessera_attention(bundle, layer, &a, &b, &c, &d, nullptr, scale,
                             nullptr);
  };
  using S = tessera_status;
  // Null pointers.
  expect(tessera_attention(nullptr, 2, &tq, &tk, &tv, &to, nullptr, 0, nullptr),
         TESSERA_ERROR_NULL_POINTER, "bundle is null");
  expect(
      tessera_attention(bundle, 2, nullptr, &tk, &tv, &to, nullptr, 0, nullptr),
      TESSERA_ERROR_NULL_POINTER, "q is a null tensor pointer");
  expect(
      tessera_attention(bundle, 2, &tq, nullptr, &tv, &to, nullptr, 0, nullptr),
      TESSERA_ERROR_NULL_POINTER, "k is a null tensor pointer");
  expect(
      tessera_attention(bundle, 2, &tq, &tk, nullptr, &to, nullptr, 0, nullptr),
      TESSERA_ERROR_NULL_POINTER, "v is a null tensor pointer");
  expect(
      tessera_attention(bundle, 2, &tq, &tk, &tv, nullptr, nullptr, 0, nullptr),
      TESSERA_ERROR_NULL_POINTER, "o is a null tensor pointer");
  for (int which = 0; which < 4; ++which) {
    tessera_tensor t[4] = {tq, tk, tv, to};
    t[which].data = nullptr;
    expect(run(t[0], t[1], t[2], t[3]), TESSERA_ERROR_NULL_POINTER,
           "->data is null");
  }
  expect(tessera_context_create(TESSERA_DEVICE_CPU, 0, nullptr),
         TESSERA_ERROR_NULL_POINTER, "out is null");
  expect(tessera_context_destroy(nullptr), TESSERA_ERROR_NULL_POINTER,
         "context is null");
  expect(tessera_bundle_destroy(nullptr), TESSERA_ERROR_NULL_POINTER,
         "bundle is null");
  tessera_bundle *b2 = nullptr;
  expect(tessera_bundle_load_file(nullptr, "x", &b2),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  expect(tessera_bundle_load_file(ctx, nullptr, &b2),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  expect(tessera_bundle_load_file(ctx, "x", nullptr),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  expect(tessera_bundle_load_memory(ctx, nullptr, 0, "", 0, &b2),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  expect(tessera_bundle_load_memory(ctx, "", 0, nullptr, 0, &b2),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  int64_t n;
  expect(tessera_bundle_num_layers(nullptr, &n), TESSERA_ERROR_NULL_POINTER,
         "must not be null");
  expect(tessera_bundle_num_layers(bundle, nullptr), TESSERA_ERROR_NULL_POINTER,
         "must not be null");
  expect(tessera_bundle_layer_info(bundle, 2, nullptr),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  expect(tessera_bundle_layer_index(bundle, 0, nullptr),
         TESSERA_ERROR_NULL_POINTER, "must not be null");
  // Bad enums and values.
  tessera_context *c2 = nullptr;
  expect(tessera_context_create(tessera_device_kind(7), 0, &c2),
         TESSERA_ERROR_INVALID_ARGUMENT, "tessera_device_kind");
  {
    tessera_tensor t = tq;
    t.dtype = tessera_dtype(9);
    expect(run(t, tk, tv, to), TESSERA_ERROR_INVALID_ARGUMENT,
           "not a tessera_dtype");
  }
  expect(run(tq, tk, tv, to, 2, -1.0f), TESSERA_ERROR_INVALID_ARGUMENT,
         "scale");
  expect(run(tq, tk, tv, to, 2, INFINITY), TESSERA_ERROR_INVALID_ARGUMENT,
         "scale");
  expect(run(tq, tk, tv, to, 2, NAN), TESSERA_ERROR_INVALID_ARGUMENT, "scale");
  // Layers.
  expect(run(tq, tk, tv, to, 32), TESSERA_ERROR_LAYER_OUT_OF_RANGE,
         "no layer 32");
  expect(run(tq, tk, tv, to, -1), TESSERA_ERROR_LAYER_OUT_OF_RANGE,
         "no layer -1");
  tessera_layer_info info;
  expect(tessera_bundle_layer_info(bundle, 99, &info),
         TESSERA_ERROR_LAYER_OUT_OF_RANGE, "no layer 99");
  expect(tessera_bundle_layer_index(bundle, 32, &n),
         TESSERA_ERROR_LAYER_OUT_OF_RANGE, "out of range");
  expect(tessera_bundle_layer_index(bundle, -3, &n),
         TESSERA_ERROR_LAYER_OUT_OF_RANGE, "out of range");
  // Dtypes.
  {
    tessera_tensor t = tq;
    t.dtype = TESSERA_DTYPE_F16;
    expect(run(t, tk, tv, to), TESSERA_ERROR_UNSUPPORTED_DTYPE, "one dtype");
    tessera_tensor a = tq, b = tk, c = tv, d = to;
    a.dtype = b.dtype = c.dtype = d.dtype = TESSERA_DTYPE_F16;
    expect(run(a, b, c, d), TESSERA_ERROR_UNSUPPORTED_DTYPE, "takes bf16");
    tessera_tensor e = tk;
    e.dtype = TESSERA_DTYPE_F32;
    expect(run(tq, e, tv, to), TESSERA_ERROR_UNSUPPORTED_DTYPE, "one dtype");
  }
  // head_dim.
  for (int which = 0; which < 4; ++which) {
    tessera_tensor t[4] = {tq, tk, tv, to};
    t[which].head_dim = 64;
    expect(run(t[0], t[1], t[2], t[3]), TESSERA_ERROR_UNSUPPORTED_HEAD_DIM,
           "has head_dim 64");
  }
  // Shapes.
  {
    tessera_tensor t = tq;
    t.heads = 16;
    expect(run(t, tk, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "32 heads");
    t = to;
    t.heads = 31;
    expect(run(tq, tk, tv, t), TESSERA_ERROR_SHAPE_MISMATCH, "32 heads");
    t = tk;
    t.heads = 4;
    expect(run(tq, t, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "8 kv heads");
    t = tv;
    t.heads = 32;
    expect(run(tq, tk, t, to), TESSERA_ERROR_SHAPE_MISMATCH, "8 kv heads");
    t = tk;
    t.batch = 2;
    expect(run(tq, t, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "one batch size");
    t = to;
    t.batch = 2;
    expect(run(tq, tk, tv, t), TESSERA_ERROR_SHAPE_MISMATCH, "one batch size");
    t = tv;
    t.seq = N - 1;
    expect(run(tq, tk, t, to), TESSERA_ERROR_SHAPE_MISMATCH,
           "one sequence length");
    t = to;
    t.seq = N - 1;
    expect(run(tq, tk, tv, t), TESSERA_ERROR_SHAPE_MISMATCH, "query length");
    t = tq;
    t.seq = 0;
    expect(run(t, tk, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "below 1");
    t = tq;
    t.batch = -2;
    expect(run(t, tk, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "below 1");
    t = tk;
    t.heads = 0;
    expect(run(tq, t, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "below 1");
    t = tq;
    t.seq = int64_t(1) << 50;
    expect(run(t, tk, tv, to), TESSERA_ERROR_SHAPE_MISMATCH, "above 2^40");
  }
  // Strides.
  for (int which = 0; which < 4; ++which) {
    tessera_tensor t[4] = {tq, tk, tv, to};
    t[which].stride_seq = -1;
    expect(run(t[0], t[1], t[2], t[3]), TESSERA_ERROR_BAD_STRIDES,
           "negative or huge stride");
  }
  {
    tessera_tensor t = tq;
    t.stride_head = int64_t(1) << 45;
    expect(run(t, tk, tv, to), TESSERA_ERROR_BAD_STRIDES,
           "negative or huge stride");
    t = tq;
    t.stride_batch = -5;
    expect(run(t, tk, tv, to), TESSERA_ERROR_BAD_STRIDES,
           "negative or huge stride");
    // Each stride and size within 2^40, their products far beyond memory
    // (2^40 x 2^40 used to wrap in the offset computation).
    t = tq;
    t.seq = int64_t(1) << 40;
    t.stride_seq = int64_t(1) << 40;
    expect(run(t, tk, tv, to), TESSERA_ERROR_BAD_STRIDES,
           "spans more memory");
  }
  // Alignment.
  {
    tessera_tensor t = tq;
    t.data = reinterpret_cast<char *>(q.data()) + 1;
    expect(run(t, tk, tv, to), TESSERA_ERROR_MISALIGNED, "not aligned");
    t = to;
    t.data = reinterpret_cast<char *>(o.data()) + 1;
    expect(run(tq, tk, tv, t), TESSERA_ERROR_MISALIGNED, "not aligned");
  }
  // Bundles.
  expect(tessera_bundle_load_file(ctx, "/nonexistent/bundle", &b2),
         TESSERA_ERROR_IO, "cannot read");
  expect(tessera_bundle_load_memory(ctx, "{", 1, "", 0, &b2),
         TESSERA_ERROR_BAD_BUNDLE, "not JSON");
  expect(tessera_bundle_load_memory(ctx, "[]", 2, "", 0, &b2),
         TESSERA_ERROR_BAD_BUNDLE, "not a JSON object");
  {
    std::string man = slurp(bundleDir("llama3-8b-sparse") + "/manifest.json");
    std::string src = slurp(bundleDir("llama3-8b-sparse") + "/bundle.cu");
    std::string bad = src + " ";
    expect(tessera_bundle_load_memory(ctx, man.data(), man.size(), bad.data(),
                                      bad.size(), &b2),
           TESSERA_ERROR_BAD_BUNDLE, "does not match");
  }
  // CUDA where there is none; a bad device ordinal where there is one.
  S s = tessera_context_create(TESSERA_DEVICE_CUDA, 0, &c2);
  if (s == TESSERA_OK) {
    tessera_context_destroy(c2);
    expect(tessera_context_create(TESSERA_DEVICE_CUDA, 1000, &c2),
           TESSERA_ERROR_INVALID_ARGUMENT, "out of range");
  } else {
    expect(s, TESSERA_ERROR_CUDA_UNAVAILABLE, "CUDA driver");
  }
  EXPECT_GE(count, 50);
  // A failed call leaves the outputs alone and the library usable.
  EXPECT_EQ(run(tq, tk, tv, to), TESSERA_OK);
}

/// Mutated manifests are rejected or accepted, never crash; every accepted
/// one runs.
TEST(RuntimeBundles, DamagedManifestsNeverCrash) {
  std::string man = slurp(bundleDir("tiny-mix") + "/manifest.json");
  std::string src = slurp(bundleDir("tiny-mix") + "/bundle.cu");
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  std::mt19937 rng(11);
  int rejected = 0;
  const char *digits = "0123456789-[]{},:\"ax";
  for (int i = 0; i < 400; ++i) {
    std::string m = man;
    int edits = 1 + rng() % 3;
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % m.size();
      if (rng() % 4 == 0)
        m = m.substr(0, at);
      else if (!m.empty())
        m[at] = digits[rng() % 20];
    }
    tessera_bundle *b = nullptr;
    tessera_status s = tessera_bundle_load_memory(ctx, m.data(), m.size(),
                                                  src.data(), src.size(), &b);
    if (s != TESSERA_OK) {
      EXPECT_EQ(s, TESSERA_ERROR_BAD_BUNDLE);
      EXPECT_NE(std::string(tessera_last_error()), "");
      ++rejected;
      continue;
    }
    // Accepted: it must run (the mutation hit something harmless).
    tessera_layer_info info;
    ASSERT_EQ(tessera_bundle_layer_info(b, 0, &info), TESSERA_OK);
    EXPECT_EQ(runSmall(b, info, 40), TESSERA_OK) << tessera_last_error();
    tessera_bundle_destroy(b);
  }
  EXPECT_GT(rejected, 200);
  tessera_context_destroy(ctx);
}

/// Several threads load and launch at once; results agree; errors stay in
/// their thread.
TEST(RuntimeConcurrency, ThreadsLoadAndLaunch) {
  const int64_t N = 150, H = 24, D = 128;
  std::vector<float> q(N * H * D), k(N * H * D);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  for (float &x : q)
    x = dist(rng);
  for (float &x : k)
    x = dist(rng);
  std::vector<std::vector<float>> outs(6, std::vector<float>(N * H * D));
  std::vector<std::string> errors(6);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      tessera_context *ctx;
      tessera_bundle *b;
      if (tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx) ||
          tessera_bundle_load_file(ctx, bundleDir("video-dit").c_str(), &b)) {
        errors[t] = tessera_last_error();
        return;
      }
      tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, N, H, D);
      tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_F32, 1, N, H, D);
      tessera_tensor to = tensor(outs[t].data(), TESSERA_DTYPE_F32, 1, N, H, D);
      if (t % 2) { // an error in this thread only
        tessera_attention(b, 7, &tq, &tk, &tk, &to, nullptr, 0, nullptr);
        if (std::string(tessera_last_error()).find("no layer 7") ==
            std::string::npos)
          errors[t] = "missing thread-local error";
      }
      if (tessera_attention(b, 0, &tq, &tk, &tk, &to, nullptr, 0, nullptr))
        errors[t] = tessera_last_error();
      else if (std::string(tessera_last_error()) != "")
        errors[t] = "a success left an error message";
      tessera_bundle_destroy(b);
      tessera_context_destroy(ctx);
    });
  for (std::thread &t : threads)
    t.join();
  for (int t = 0; t < 6; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_EQ(outs[t], outs[0]) << "thread " << t;
  }
}

//===----------------------------------------------------------------------===//
// The kernel cache (needs NVRTC, not a GPU).
//===----------------------------------------------------------------------===//

struct CacheTest : ::testing::Test {
  void SetUp() override {
    std::string error;
    nvrtc = jit::Nvrtc::get(error);
    if (!nvrtc)
      GTEST_SKIP() << "NVRTC is absent: " << error;
    source = slurp(bundleDir("tiny-mix") + "/bundle.cu");
    dir = std::string(TESSERA_BINARY_DIR) + "/test/Unit/cache-" +
          ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string rm = "rm -rf '" + dir + "'";
    ASSERT_EQ(std::system(rm.c_str()), 0);
  }
  const jit::Nvrtc *nvrtc = nullptr;
  std::string source, dir;
  std::vector<std::string> options = {"-std=c++17"};
};

TEST_F(CacheTest, ColdWarmAndCorrupt) {
  jit::CachedCompile cold =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir);
  ASSERT_TRUE(cold.ok) << cold.error;
  EXPECT_FALSE(cold.hit);
  EXPECT_EQ(cold.warning, "");
  ASSERT_FALSE(cold.binary.empty());

  auto t0 = std::chrono::steady_clock::now();
  jit::CachedCompile warm =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir);
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - t0)
                  .count();
  ASSERT_TRUE(warm.ok);
  EXPECT_TRUE(warm.hit);
  EXPECT_EQ(warm.binary, cold.binary);
  EXPECT_EQ(warm.entryPath, cold.entryPath);
  std::printf("warm cache load: %.2f ms\n", ms);

  // Another arch, option or source is another entry.
  EXPECT_NE(jit::cacheKey(source, "sm_90", options, "13.0"),
            jit::cacheKey(source, "sm_80", options, "13.0"));
  EXPECT_NE(jit::cacheKey(source, "sm_80", {}, "13.0"),
            jit::cacheKey(source, "sm_80", options, "13.0"));
  EXPECT_NE(jit::cacheKey(source + " ", "sm_80", options, "13.0"),
            jit::cacheKey(source, "sm_80", options, "13.0"));
  EXPECT_NE(jit::cacheKey(source, "sm_80", options, "12.9"),
            jit::cacheKey(source, "sm_80", options, "13.0"));

  // Truncate the entry: detected, recompiled, rewritten.
  {
    std::ofstream(warm.entryPath, std::ios::binary | std::ios::trunc) << "TSRC";
  }
  jit::CachedCompile again =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir);
  ASSERT_TRUE(again.ok);
  EXPECT_FALSE(again.hit);
  EXPECT_TRUE(again.recompiled);
  EXPECT_EQ(again.binary, cold.binary);
  // Flip a payload byte: detected by the checksum.
  {
    std::fstream f(warm.entryPath,
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  jit::CachedCompile flipped =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir);
  ASSERT_TRUE(flipped.ok);
  EXPECT_TRUE(flipped.recompiled);
  EXPECT_EQ(flipped.binary, cold.binary);
  EXPECT_TRUE(jit::compileCached(*nvrtc, source, "sm_80", options, dir).hit);
}

/// An entry that is a FIFO, /dev/zero or /dev/urandom is not read (no hang,
/// no endless read): the kernel is compiled again and the entry replaced.
TEST_F(CacheTest, SpecialEntriesAreNotRead) {
  jit::CachedCompile cold =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir);
  ASSERT_TRUE(cold.ok) << cold.error;
  for (const char *device : {"fifo", "/dev/zero", "/dev/urandom"}) {
    std::remove(cold.entryPath.c_str());
    if (std::string(device) == "fifo")
      ASSERT_EQ(mkfifo(cold.entryPath.c_str(), 0644), 0);
    else
      ASSERT_EQ(symlink(device, cold.entryPath.c_str()), 0);
    jit::CachedCompile again =
        jit::compileCached(*nvrtc, source, "sm_80", options, dir);
    ASSERT_TRUE(again.ok) << device;
    EXPECT_FALSE(again.hit) << device;
    EXPECT_EQ(again.binary, cold.binary) << device;
  }
}

TEST_F(CacheTest, UnusableDirectoryDegradesToNoCache) {
  // A path below a regular file can never be a directory (even for root).
  std::ofstream(dir + "-file") << "x";
  jit::CachedCompile r =
      jit::compileCached(*nvrtc, source, "sm_80", options, dir + "-file/sub");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.hit);
  EXPECT_NE(r.warning.find("cannot be created or used"), std::string::npos);
  std::remove((dir + "-file").c_str());
}

TEST_F(CacheTest, CompileErrorsAreReported) {
  jit::CachedCompile r =
      jit::compileCached(*nvrtc, "this is not CUDA", "sm_80", options, dir);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("error"), std::string::npos) << r.error;
}

TEST_F(CacheTest, ConcurrentCompilesAgree) {
  std::vector<jit::CachedCompile> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      results[t] = jit::compileCached(*nvrtc, source, "sm_90", options, dir);
    });
  for (std::thread &t : threads)
    t.join();
  for (auto &r : results) {
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.binary, results[0].binary);
  }
  EXPECT_TRUE(jit::compileCached(*nvrtc, source, "sm_90", options, dir).hit);
  // No temporary files are left behind.
  std::string ls = "ls '" + dir + "' | grep -c tmp || true";
  FILE *p = popen(ls.c_str(), "r");
  char buf[16] = {0};
  ASSERT_TRUE(p && fgets(buf, sizeof buf, p));
  pclose(p);
  EXPECT_EQ(std::string(buf), "0\n");
}

} // namespace

#include "tessera/tessera.hpp"

namespace {

TEST(RuntimeCpp, WrapperOwnsHandlesAndReportsErrors) {
  auto ctx = tessera::Context::create(TESSERA_DEVICE_CPU);
  ASSERT_TRUE(ctx) << ctx.result.message;
  auto missing = ctx.value.load("/nonexistent");
  EXPECT_EQ(missing.result.status, TESSERA_ERROR_IO);
  EXPECT_NE(missing.result.message.find("cannot read"), std::string::npos);
  auto bundle = ctx.value.load(bundleDir("tiny-mix"));
  ASSERT_TRUE(bundle) << bundle.result.message;
  EXPECT_EQ(bundle.value.numLayers(), 1);
  auto info = bundle.value.layerInfo(0);
  ASSERT_TRUE(info);
  EXPECT_EQ(info.value.head_dim, 64);
  EXPECT_EQ(bundle.value.layerInfo(3).result.status,
            TESSERA_ERROR_LAYER_OUT_OF_RANGE);
  const int64_t n = 20, h = 6, hkv = 2, d = 64;
  std::vector<float> q(n * h * d, 0.1f), k(n * hkv * d, 0.2f), o(n * h * d);
  tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, n, h, d);
  tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_F32, 1, n, hkv, d);
  tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, n, h, d);
  tessera::Result r = bundle.value.attention(0, tq, tk, tk, to);
  EXPECT_TRUE(r) << r.message;
  // Every query sees at least its own key here, and all values are 0.2.
  for (float x : o)
    ASSERT_NEAR(x, 0.2f, 1e-6f);
}

} // namespace

namespace {

/// Regressions: a bundle outliving its context, outputs that alias inputs or
/// themselves, and scales that overflow the scores used to give OK with
/// freed memory read or wrong numbers written.
TEST(RuntimeApi, LifetimeAliasingAndScale) {
  tessera_context *ctx;
  tessera_bundle *b;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  ASSERT_EQ(tessera_bundle_load_file(ctx, bundleDir("tiny-mix").c_str(), &b),
            TESSERA_OK);
  const int64_t H = 6, Hkv = 2, D = 64, n = 40;
  std::vector<float> q(n * H * D, 0.5f), k(n * Hkv * D, 0.25f),
      v(n * Hkv * D, 1.0f), o(n * H * D), lse(H * n);
  tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_F32, 1, n, Hkv, D);
  tessera_tensor tv = tensor(v.data(), TESSERA_DTYPE_F32, 1, n, Hkv, D);
  tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  auto run = [&](const tessera_tensor &out, float *l, float scale) {
    return tessera_attention(b, 0, &tq, &tk, &tv, &out, l, scale, nullptr);
  };
  ASSERT_EQ(run(to, lse.data(), 0), TESSERA_OK) << tessera_last_error();

  // o aliasing k or v, or q in another layout; o writing one place twice;
  // lse inside o.
  // An arena holding k (or v) and an o of the right shape that overlaps it.
  std::vector<float> arena(n * (H + Hkv) * D, 0.25f);
  tessera_tensor kIn = tensor(arena.data(), TESSERA_DTYPE_F32, 1, n, Hkv, D);
  tessera_tensor oOver =
      tensor(arena.data() + n * Hkv * D - D, TESSERA_DTYPE_F32, 1, n, H, D);
  EXPECT_EQ(tessera_attention(b, 0, &tq, &kIn, &tv, &oOver, nullptr, 0,
                              nullptr),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("o overlaps k"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_EQ(tessera_attention(b, 0, &tq, &tk, &kIn, &oOver, nullptr, 0,
                              nullptr),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("o overlaps v"),
            std::string::npos)
      << tessera_last_error();
  tessera_tensor shiftedQ = tensor(q.data() + D, TESSERA_DTYPE_F32, 1, n - 1, H,
                                   D);
  tessera_tensor tq1 = tensor(q.data(), TESSERA_DTYPE_F32, 1, n - 1, H, D);
  EXPECT_EQ(tessera_attention(b, 0, &tq1, &tk, &tv, &shiftedQ, nullptr, 0,
                              nullptr),
            TESSERA_ERROR_INVALID_ARGUMENT);
  tessera_tensor zeroHead = to;
  zeroHead.stride_head = 0;
  EXPECT_EQ(run(zeroHead, nullptr, 0), TESSERA_ERROR_BAD_STRIDES);
  EXPECT_EQ(run(to, o.data() + 5, 0), TESSERA_ERROR_INVALID_ARGUMENT);
  // o = q itself is allowed and gives the same answer as a separate o.
  std::vector<float> o2(o.size());
  std::vector<float> qCopy = q;
  tessera_tensor tqCopy = tensor(qCopy.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  ASSERT_EQ(tessera_attention(b, 0, &tqCopy, &tk, &tv, &tqCopy, nullptr, 0,
                              nullptr),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(qCopy, o);

  // Scales: up to 2^16; beyond, the fp32 scores overflow.
  EXPECT_EQ(run(to, nullptr, 65536.0f), TESSERA_OK);
  EXPECT_EQ(run(to, nullptr, 3.4e38f), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(run(to, nullptr, INFINITY), TESSERA_ERROR_INVALID_ARGUMENT);

  // The context destroyed first: the bundle answers with an error, then
  // its own destruction frees both.
  ASSERT_EQ(tessera_context_destroy(ctx), TESSERA_OK);
  EXPECT_EQ(run(to, nullptr, 0), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("context has been destroyed"),
            std::string::npos);
  int64_t layers = 0;
  EXPECT_EQ(tessera_bundle_num_layers(b, &layers), TESSERA_OK);
  EXPECT_EQ(layers, 1);
  EXPECT_EQ(tessera_bundle_destroy(b), TESSERA_OK);
}

} // namespace

namespace {

/// A bundle directory whose files are FIFOs, devices or deeply nested JSON:
/// an IO or bad-bundle error at once, never a hang, an endless read or a
/// stack overflow.
TEST(RuntimeBundles, SpecialFilesAndDeepJsonAreRefused) {
  std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/Unit/special";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'")
                            .c_str()),
            0);
  std::string man = slurp(bundleDir("tiny-mix") + "/manifest.json");
  std::string src = slurp(bundleDir("tiny-mix") + "/bundle.cu");
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  auto load = [&]() {
    tessera_bundle *b = nullptr;
    tessera_status s = tessera_bundle_load_file(ctx, dir.c_str(), &b);
    if (b)
      tessera_bundle_destroy(b);
    return s;
  };
  auto reset = [&](const std::string &name) {
    std::remove((dir + "/manifest.json").c_str());
    std::remove((dir + "/bundle.cu").c_str());
    std::ofstream(dir + "/manifest.json") << man;
    std::ofstream(dir + "/bundle.cu") << src;
    std::remove((dir + "/" + name).c_str());
    return dir + "/" + name;
  };
  reset("none");
  ASSERT_EQ(load(), TESSERA_OK) << tessera_last_error();
  for (const char *name : {"manifest.json", "bundle.cu"}) {
    std::string path = reset(name);
    ASSERT_EQ(mkfifo(path.c_str(), 0644), 0);
    EXPECT_EQ(load(), TESSERA_ERROR_IO) << name;
    EXPECT_NE(std::string(tessera_last_error()).find("not a regular file"),
              std::string::npos)
        << tessera_last_error();
    path = reset(name);
    ASSERT_EQ(symlink("/dev/zero", path.c_str()), 0);
    EXPECT_EQ(load(), TESSERA_ERROR_IO) << name;
    path = reset(name);
    ASSERT_EQ(mkdir(path.c_str(), 0755), 0);
    EXPECT_EQ(load(), TESSERA_ERROR_IO) << name;
    rmdir(path.c_str());
  }
  // 50,000 nested arrays: refused before the recursive JSON parser runs.
  std::string deep(50000, '[');
  tessera_bundle *b = nullptr;
  EXPECT_EQ(tessera_bundle_load_memory(ctx, deep.data(), deep.size(),
                                       src.data(), src.size(), &b),
            TESSERA_ERROR_BAD_BUNDLE);
  EXPECT_NE(std::string(tessera_last_error()).find("nests"), std::string::npos)
      << tessera_last_error();
  tessera_context_destroy(ctx);
}

} // namespace

// tessera_bundle_tile_classes: the classes of every tile, checked against
// the reference semantics pair by pair (full: every pair allowed; empty: none;
// a tile with both must be partial), for every head of a bundle whose heads
// use every kind of leaf, at several shapes including Nq > Nk and tiles that
// do not divide the lengths.
TEST(RuntimeApi, TileClassesAgreeWithTheReference) {
  mlir::MLIRContext mctx;
  mctx.getOrLoadDialect<attn::AttnDialect>();
  auto module = mlir::parseSourceFile<mlir::ModuleOp>(
      std::string(TESSERA_SOURCE_DIR) + "/patterns/tiny-mix.mlir", &mctx);
  ASSERT_TRUE(module);
  attn::LayerOp layer;
  module->walk([&](attn::LayerOp l) {
    if (l.getIndex() == 0)
      layer = l;
  });
  ASSERT_TRUE(layer);
  int64_t H = layer.getNumHeads();
  tessera_context *ctx;
  tessera_bundle *b;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  ASSERT_EQ(tessera_bundle_load_file(ctx, bundleDir("tiny-mix").c_str(), &b),
            TESSERA_OK)
      << tessera_last_error();
  struct Shape {
    int64_t nq, nk, bq, bk;
  };
  int64_t counts[3] = {0, 0, 0};
  for (Shape s : {Shape{70, 90, 16, 32}, Shape{90, 70, 8, 8},
                  Shape{64, 64, 64, 64}, Shape{33, 130, 5, 7},
                  Shape{1, 200, 1, 3}}) {
    int64_t tq = (s.nq + s.bq - 1) / s.bq, tk = (s.nk + s.bk - 1) / s.bk;
    std::vector<uint8_t> cls(size_t(H * tq * tk), 9);
    ASSERT_EQ(tessera_bundle_tile_classes(b, 0, s.nq, s.nk, s.bq, s.bk,
                                          cls.data(), cls.size()),
              TESSERA_OK)
        << tessera_last_error();
    for (int64_t h = 0; h < H; ++h) {
      semantics::Pattern p = semantics::fromAttr(layer.getHeadPattern(h));
      for (int64_t i = 0; i < tq; ++i)
        for (int64_t j = 0; j < tk; ++j) {
          int64_t allowed = 0, pairs = 0;
          for (int64_t q = i * s.bq; q < std::min((i + 1) * s.bq, s.nq); ++q)
            for (int64_t k = j * s.bk; k < std::min((j + 1) * s.bk, s.nk);
                 ++k, ++pairs)
              allowed += semantics::allowed(p, q, k, h, s.nq, s.nk, H);
          int c = cls[size_t((h * tq + i) * tk + j)];
          ASSERT_LE(c, 2);
          ++counts[c];
          if (c == 2) {
            EXPECT_EQ(allowed, pairs) << "head " << h << " tile " << i << ","
                                      << j;
          }
          if (c == 0) {
            EXPECT_EQ(allowed, 0) << "head " << h << " tile " << i << "," << j;
          }
          if (allowed > 0 && allowed < pairs) {
            EXPECT_EQ(c, 1) << "head " << h << " tile " << i << "," << j;
          }
        }
    }
  }
  // Every class occurs, so the checks above are not vacuous.
  EXPECT_GT(counts[0], 100);
  EXPECT_GT(counts[1], 100);
  EXPECT_GT(counts[2], 20);

  // Bad calls.
  std::vector<uint8_t> small(10);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, 64, 64, 16, 16, small.data(),
                                        small.size()),
            TESSERA_ERROR_SHAPE_MISMATCH);
  EXPECT_NE(std::string(tessera_last_error()).find("need more"),
            std::string::npos);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, 64, 64, 16, 16, nullptr, 1000),
            TESSERA_ERROR_NULL_POINTER);
  EXPECT_EQ(tessera_bundle_tile_classes(nullptr, 0, 64, 64, 16, 16,
                                        small.data(), 10),
            TESSERA_ERROR_NULL_POINTER);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 7, 64, 64, 16, 16, small.data(),
                                        10),
            TESSERA_ERROR_LAYER_OUT_OF_RANGE);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, 0, 64, 16, 16, small.data(), 10),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, 64, int64_t(1) << 41, 16, 16,
                                        small.data(), 10),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, 64, 64, 0, 16, small.data(), 10),
            TESSERA_ERROR_INVALID_ARGUMENT);
  // Tile counts whose product overflows: refused, nothing written.
  EXPECT_EQ(tessera_bundle_tile_classes(b, 0, int64_t(1) << 40,
                                        int64_t(1) << 40, 1, 1, small.data(),
                                        small.size()),
            TESSERA_ERROR_SHAPE_MISMATCH);
  tessera_bundle_destroy(b);
  tessera_context_destroy(ctx);
}

namespace {

/// The dynamic-emulation bundle's manifest with `edit` applied to layer 0
/// (a parsed JSON object), serialised.
std::string editedDynamicManifest(
    const std::function<void(llvm::json::Object &layer)> &edit,
    const char *bundle = "dynamic-emulation") {
  std::string man = slurp(bundleDir(bundle) + "/manifest.json");
  llvm::Expected<llvm::json::Value> v = llvm::json::parse(man);
  EXPECT_TRUE(bool(v));
  llvm::json::Object &layer =
      *(*v->getAsObject()->getArray("layers"))[0].getAsObject();
  edit(layer);
  std::string out;
  llvm::raw_string_ostream os(out);
  os << *v;
  return out;
}

/// A manifest edit and the message its refusal must hold.
struct ManifestCase {
  const char *what, *message;
  std::function<void(llvm::json::Object &layer)> edit;
};

/// Each case's edit of `bundle`'s manifest (its first layer) is refused
/// with TESSERA_ERROR_BAD_BUNDLE and its message; unedited, it loads.
void expectRefused(tessera_context *ctx, const char *bundle,
                   const std::vector<ManifestCase> &cases) {
  std::string src = slurp(bundleDir(bundle) + "/bundle.cu");
  for (const ManifestCase &c : cases) {
    std::string m = editedDynamicManifest(c.edit, bundle);
    tessera_bundle *b = nullptr;
    EXPECT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                         src.size(), &b),
              TESSERA_ERROR_BAD_BUNDLE)
        << c.what;
    EXPECT_NE(std::string(tessera_last_error()).find(c.message),
              std::string::npos)
        << c.what << ": " << tessera_last_error();
    if (b)
      tessera_bundle_destroy(b);
  }
  std::string m = editedDynamicManifest([](llvm::json::Object &) {}, bundle);
  tessera_bundle *b = nullptr;
  EXPECT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                       src.size(), &b),
            TESSERA_OK)
      << tessera_last_error();
  if (b)
    tessera_bundle_destroy(b);
}

llvm::json::Object &dynGroup(llvm::json::Object &layer, size_t i) {
  return *(*layer.getArray("dynamic_groups"))[i].getAsObject();
}

} // namespace

/// Every field of a dynamic group is checked: values outside the dialect's
/// ranges or the bundles' limits, unknown families, kernels that are not the
/// family's, heads in two groups, broken programs.
TEST(RuntimeBundles, DynamicGroupsAreValidated) {
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  using Obj = llvm::json::Object;
  auto param = [](size_t g, const char *key, llvm::json::Value v) {
    return [=](Obj &l) { (*dynGroup(l, g).getObject("params"))[key] = v; };
  };
  std::vector<ManifestCase> cases = {
      {"last_q 0", "vertical_slash: parameter last_q is missing or outside",
       param(0, "last_q", 0)},
      {"negative vertical", "parameter vertical is missing or outside",
       param(0, "vertical", -1)},
      {"nothing kept",
       "keeps nothing: vertical, slash, first_columns or "
       "last_diagonals must be positive",
       [](Obj &l) {
         for (const char *key :
              {"vertical", "slash", "first_columns", "last_diagonals"})
           (*dynGroup(l, 0).getObject("params"))[key] = 0;
       }},
      {"block 96", "block must be a multiple of 64", param(2, "block", 96)},
      {"block 2048", "parameter block is missing or outside",
       param(2, "block", 2048)},
      {"gamma and top_k", "exactly one of gamma", param(2, "top_k", 3)},
      {"gamma 1.5", "exactly one of gamma", param(2, "gamma", 1.5)},
      {"clusters 0", "parameter clusters is missing or outside",
       param(4, "clusters", 0)},
      {"iterations 101", "parameter kmeans_iterations is missing or outside",
       param(4, "kmeans_iterations", 101)},
      {"a string", "parameter slash is missing or outside",
       param(0, "slash", "many")},
      {"unknown family", "unknown dynamic family 'sparse_magic'",
       [](Obj &l) { dynGroup(l, 1)["family"] = "sparse_magic"; }},
      {"kernels", "kernels are not those of its family",
       [](Obj &l) {
         (*dynGroup(l, 0).getArray("kernels"))[4] = "tessera_bt_attend_bf16_d64";
       }},
      {"head twice", "head is out of range or also in another group",
       [](Obj &l) { dynGroup(l, 1)["heads"] = llvm::json::Array{0}; }},
      {"head out of range", "head is out of range",
       [](Obj &l) { dynGroup(l, 1)["heads"] = llvm::json::Array{6}; }},
      {"no heads", "a dynamic group lacks heads",
       [](Obj &l) { dynGroup(l, 1)["heads"] = llvm::json::Array{}; }},
      {"bad program", "\"with\" program",
       [](Obj &l) {
         (*dynGroup(l, 0).getObject("with"))["nodes"] =
             llvm::json::Array{llvm::json::Array{8, 2, 0, 0, 0, 0, 0}};
       }},
      {"no without", "\"without\" program lacks nodes or data",
       [](Obj &l) { dynGroup(l, 3).erase("without"); }},
      {"not an object", "a dynamic group is not an object",
       [](Obj &l) { (*l.getArray("dynamic_groups"))[0] = 3; }},
  };
  expectRefused(ctx, "dynamic-emulation", cases);
  // Unchanged, it loads and reports its dynamic heads and centroids.
  std::string src = slurp(bundleDir("dynamic-emulation") + "/bundle.cu");
  std::string m = editedDynamicManifest([](Obj &) {});
  tessera_bundle *b = nullptr;
  ASSERT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                       src.size(), &b),
            TESSERA_OK)
      << tessera_last_error();
  tessera_layer_info info;
  ASSERT_EQ(tessera_bundle_layer_info(b, 0, &info), TESSERA_OK);
  EXPECT_EQ(info.num_dynamic_heads, 6);
  EXPECT_EQ(info.num_computed_heads, 6);
  EXPECT_EQ(info.centroid_clusters, 3);
  tessera_bundle_destroy(b);
  tessera_context_destroy(ctx);
}

/// A layer's sm_90a kernels ("wgmma") are checked when the bundle loads,
/// on any device: one per attention kernel, names, 128 rows and 384
/// threads, shared memory a block can have, head_dim 64 or 128.
TEST(RuntimeBundles, WgmmaEntriesAreValidated) {
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  using Obj = llvm::json::Object;
  using Arr = llvm::json::Array;
  auto set = [](const char *key, llvm::json::Value v) {
    return [=](Obj &l) { (*l.getObject("wgmma"))[key] = v; };
  };
  expectRefused(
      ctx, "tiny-mix",
      {{"two kernels", "one kernel per attention kernel",
        set("kernels", Arr{"a_wgmma", "b_wgmma"})},
       {"no kernels", "one kernel per attention kernel", set("kernels", Arr{})},
       {"a number", "wgmma's kernels must be names", set("kernels", Arr{5})},
       {"256 threads", "128 rows and 384 threads", set("threads", 256)},
       {"64 rows", "128 rows and 384 threads", set("block_q", 64)},
       {"too much shared memory", "dynamic_shared must be in (0, 227 KiB]",
        set("dynamic_shared", 300000)},
       {"no shared memory", "dynamic_shared must be in (0, 227 KiB]",
        set("dynamic_shared", 0)},
       {"no rows", "wgmma lacks kernels, block_q, threads or dynamic_shared",
        [](Obj &l) { l.getObject("wgmma")->erase("block_q"); }},
       {"head_dim 96", "wgmma kernels exist for head_dim 64 and 128 only",
        [](Obj &l) { l["head_dim"] = 96; }}});
  tessera_context_destroy(ctx);
}

/// A dynamic group's sm_90a twins ("wgmma", HopperDynamic.cuh) are checked
/// when the bundle loads, on any device: each the twin of one of the
/// group's kernels, 384 threads, shared memory a block can have, head_dim
/// 64 and 128.
TEST(RuntimeBundles, DynamicWgmmaEntriesAreValidated) {
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  using Obj = llvm::json::Object;
  using Arr = llvm::json::Array;
  auto set = [](const char *key, llvm::json::Value v) {
    return [=](Obj &l) { (*dynGroup(l, 0).getObject("wgmma"))[key] = v; };
  };
  expectRefused(
      ctx, "dynamic-emulation",
      {{"a stranger", "wgmma kernel 'a_wgmma' is not the twin of one of",
        set("kernels", Arr{"a_wgmma"})},
       {"no suffix", "wgmma kernel 'tessera_vs_sums' is not the twin",
        set("kernels", Arr{"tessera_vs_sums"})},
       {"a number", "wgmma kernel '?' is not the twin", set("kernels", Arr{5})},
       {"256 threads", "wgmma kernels take 384 threads a block",
        set("threads", 256)},
       {"too much shared memory", "wgmma dynamic_shared must be in (0, 227",
        set("dynamic_shared", 300000)},
       {"no shared memory", "wgmma dynamic_shared must be in (0, 227",
        set("dynamic_shared", 0)},
       {"no threads", "wgmma lacks kernels, threads or dynamic_shared",
        [](Obj &l) { dynGroup(l, 0).getObject("wgmma")->erase("threads"); }},
       {"head_dim 96", "wgmma kernels exist for head_dim 64 and 128 only",
        [](Obj &l) {
          l["head_dim"] = 96;
          // (The group's kernels are named by head_dim: keep them the
          // family's at 96, so that the twins are what is refused.)
          for (llvm::json::Value &k : *dynGroup(l, 0).getArray("kernels")) {
            std::string n = k.getAsString()->str();
            if (size_t at = n.find("_d64"); at != std::string::npos)
              k = n.replace(at, 4, "_d96");
          }
          (*dynGroup(l, 0).getObject("wgmma"))["kernels"] =
              Arr{"tessera_vs_attend_bf16_d96_wgmma"};
        }}});
  tessera_context_destroy(ctx);
}

/// A layer's backward kernels ("backward", BackwardEmit.cpp) are checked
/// when the bundle loads, on any device: five names, the key-major pass's
/// threads for its head_dim, 128 for the query-major pass, 64 x 64 tiles,
/// shared memory a block can have, head_dim 64, 96 or 128, a zero fill
/// where heads are skipped; with dynamic heads the sums' kernels and each
/// group's dq and dkdv, vertical-slash and block top-k groups only.
TEST(RuntimeBundles, BackwardEntriesAreValidated) {
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  using Obj = llvm::json::Object;
  auto set = [](const char *key, llvm::json::Value v) {
    return [=](Obj &l) { (*l.getObject("backward"))[key] = v; };
  };
  expectRefused(
      ctx, "tiny-mix",
      {{"no preprocess", "backward lacks the kernel name preprocess",
        [](Obj &l) { l.getObject("backward")->erase("preprocess"); }},
       {"a number", "backward lacks the kernel name key_major_guarded",
        set("key_major_guarded", 5)},
       {"empty name", "backward lacks the kernel name query_major",
        set("query_major", "")},
       {"256 threads at 64", "key_major_threads must be 128 at this head_dim",
        set("key_major_threads", 256)},
       {"query threads", "query_major_threads 128",
        set("query_major_threads", 256)},
       {"128-row tiles", "block_q and block_k must be 64", set("block_q", 128)},
       {"too much shared memory",
        "dynamic shared memory must be in (0, 227 KiB]",
        set("key_major_dynamic_shared", 300000)},
       {"no shared memory", "dynamic shared memory must be in (0, 227 KiB]",
        set("query_major_dynamic_shared", 0)},
       {"no threads", "backward lacks key_major_threads",
        [](Obj &l) { l.getObject("backward")->erase("key_major_threads"); }},
       {"head_dim 256", "backward kernels exist for head_dim 64, 96 and 128",
        [](Obj &l) {
          l.erase("wgmma");
          l["head_dim"] = 256;
        }}});
  // A skipped head needs the zero fill of its dq.
  expectRefused(
      ctx, "backward-cuda",
      {{"no zero fill", "skipped heads need a zero_skipped kernel",
        [](Obj &l) { l.getObject("backward")->erase("zero_skipped"); }}});
  // Dynamic heads (minference-llm's layer 0: vertical-slash and block
  // top-k groups) need the sums' kernels and each group's dq and dkdv.
  expectRefused(
      ctx, "minference-llm",
      {{"no dynamic_add", "needs dynamic_clear and dynamic_add",
        [](Obj &l) { l.getObject("backward")->erase("dynamic_add"); }},
       {"a group without its kernels",
        "dynamic group 1 lacks its backward kernels dq, dkdv, dq_guarded and "
        "dkdv_guarded",
        [](Obj &l) { dynGroup(l, 1).erase("backward"); }},
       {"an empty dkdv", "dynamic group 0 lacks its backward kernels",
        [](Obj &l) { (*dynGroup(l, 0).getObject("backward"))["dkdv"] = ""; }},
       {"no guarded dkdv", "dynamic group 0 lacks its backward kernels",
        [](Obj &l) {
          dynGroup(l, 0).getObject("backward")->erase("dkdv_guarded");
        }},
       {"a merging routing group without the rest's kernels",
        "lacks its backward kernel rest_dq",
        [](Obj &l) {
          Obj &g = dynGroup(l, 0);
          g["family"] = "routing";
          g["params"] = Obj{{"clusters", 4}, {"kmeans_iterations", 1}};
          g["merge_without"] = true;
          g["kernels"] = llvm::json::Array{
              "tessera_rt_seed_bf16",     "tessera_rt_assign_keys_bf16",
              "tessera_rt_update_bf16",   "tessera_rt_assign_queries_bf16",
              "tessera_rt_sort",          "tessera_rt_attend_bf16_d128",
              "tessera_rt_rest_bf16_d128"};
          g.erase("wgmma");
        }}});
  tessera_context_destroy(ctx);
}

/// Mutated dynamic manifests are rejected or run (with the centroids the
/// layer asks for), never crash.
TEST(RuntimeBundles, DamagedDynamicManifestsNeverCrash) {
  std::string man = slurp(bundleDir("dynamic-emulation") + "/manifest.json");
  std::string src = slurp(bundleDir("dynamic-emulation") + "/bundle.cu");
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  std::mt19937 rng(23);
  int rejected = 0, ran = 0;
  const char *digits = "0123456789-[]{},:\"ax";
  // Only the dynamic groups' part of the manifest is mutated.
  size_t from = man.find("\"dynamic_groups\"");
  ASSERT_NE(from, std::string::npos);
  for (int i = 0; i < 300; ++i) {
    std::string m = man;
    int edits = 1 + rng() % 3;
    for (int e = 0; e < edits; ++e) {
      size_t at = from + rng() % (m.size() - from);
      // Mostly digits over digits (numbers change, the structure holds).
      if (rng() % 8 == 0)
        m = m.substr(0, at);
      else if (rng() % 4 == 0)
        m[at] = digits[rng() % 20];
      else if (m[at] >= '0' && m[at] <= '9')
        m[at] = digits[rng() % 10];
    }
    tessera_bundle *b = nullptr;
    tessera_status s = tessera_bundle_load_memory(ctx, m.data(), m.size(),
                                                  src.data(), src.size(), &b);
    if (s != TESSERA_OK) {
      EXPECT_EQ(s, TESSERA_ERROR_BAD_BUNDLE);
      EXPECT_NE(std::string(tessera_last_error()), "");
      ++rejected;
      continue;
    }
    tessera_layer_info info;
    ASSERT_EQ(tessera_bundle_layer_info(b, 0, &info), TESSERA_OK);
    // Mutations that make k-means or the clusters huge only cost time:
    // skip running those.
    if (info.centroid_clusters > 64) {
      tessera_bundle_destroy(b);
      continue;
    }
    EXPECT_EQ(runSmall(b, info, 70), TESSERA_OK) << tessera_last_error();
    ++ran;
    tessera_bundle_destroy(b);
  }
  EXPECT_GT(rejected, 100);
  EXPECT_GT(ran, 10);
  tessera_context_destroy(ctx);
}

namespace {

/// Layer 0 of the dynamic-emulation bundle (6 heads over 3 kv heads, head
/// dim 64; groups 0-5 are heads 0-5) with `edit` applied, on f32 inputs of
/// Nq queries and Nk keys: q [1, Nq, 6, 64], k and v [1, Nk, 3, 64], zero
/// until a test fills them, and the engine's centroids [6, 3, 64] for
/// head 5's routing group.
struct DynamicCall {
  static constexpr int64_t H = 6, Hkv = 3, D = 64, C = 3;
  int64_t nq, nk;
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  std::vector<float> q, k, v, o, lse, cent;
  DynamicCall(
      int64_t nq, int64_t nk,
      const std::function<void(llvm::json::Object &)> &edit =
          [](llvm::json::Object &) {})
      : nq(nq), nk(nk), q(nq * H * D), k(nk * Hkv * D), v(nk * Hkv * D),
        o(nq * H * D), lse(H * nq), cent(H * C * D, 0.0f) {
    for (int64_t j = 0; j < H * C; ++j)
      cent[j * D + j % D] = 1.0f;
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    std::string m = editedDynamicManifest(edit);
    std::string src = slurp(bundleDir("dynamic-emulation") + "/bundle.cu");
    EXPECT_EQ(tessera_bundle_load_memory(ctx, m.data(), m.size(), src.data(),
                                         src.size(), &bundle),
              TESSERA_OK)
        << tessera_last_error();
  }
  ~DynamicCall() {
    if (bundle)
      tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
  }
  float *qRow(int64_t row, int64_t h) { return &q[(row * H + h) * D]; }
  float *kRow(int64_t key, int64_t kvh) { return &k[(key * Hkv + kvh) * D]; }
  float *vRow(int64_t key, int64_t kvh) { return &v[(key * Hkv + kvh) * D]; }
  float *oRow(int64_t row, int64_t h) { return &o[(row * H + h) * D]; }
  float lseOf(int64_t row, int64_t h) { return lse[h * nq + row]; }
  tessera_status run(float scale, const float *centroids = nullptr) {
    if (!bundle)
      return TESSERA_ERROR_BAD_BUNDLE;
    tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, nq, H, D);
    tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_F32, 1, nk, Hkv, D);
    tessera_tensor tv = tensor(v.data(), TESSERA_DTYPE_F32, 1, nk, Hkv, D);
    tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, nq, H, D);
    tessera_dynamic_inputs dyn{centroids ? centroids : cent.data(), H, C, D};
    return tessera_attention_dynamic(bundle, 0, &tq, &tk, &tv, &to, lse.data(),
                                     scale, &dyn, nullptr);
  }
  /// Random q, k and v in [-1, 1).
  void randomInputs(unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (std::vector<float> *t : {&q, &k, &v})
      for (float &x : *t)
        x = u(rng);
  }
  /// Head h's rows against float64 attention over the keys `allowed(row,
  /// key)` at `scale`: the largest error of o and of finite LSEs; rows
  /// without keys must give o = 0 and LSE = -inf exactly.
  double maxError(int64_t h, float scale,
                  const std::function<bool(int64_t, int64_t)> &allowed) {
    double worst = 0;
    const int64_t kvh = h / (H / Hkv);
    for (int64_t row = 0; row < nq; ++row) {
      std::vector<double> logits;
      std::vector<int64_t> keys;
      double m = -INFINITY;
      for (int64_t key = 0; key < nk; ++key) {
        if (!allowed(row, key))
          continue;
        double s = 0;
        for (int64_t x = 0; x < D; ++x)
          s += double(qRow(row, h)[x]) * kRow(key, kvh)[x];
        keys.push_back(key);
        logits.push_back(s * scale);
        m = std::max(m, logits.back());
      }
      if (keys.empty()) {
        EXPECT_EQ(lseOf(row, h), -INFINITY) << "row " << row;
        for (int64_t x = 0; x < D; ++x)
          EXPECT_EQ(oRow(row, h)[x], 0.0f) << "row " << row;
        continue;
      }
      double z = 0;
      std::vector<double> out(D, 0.0);
      for (size_t i = 0; i < keys.size(); ++i) {
        double w = std::exp(logits[i] - m);
        z += w;
        for (int64_t x = 0; x < D; ++x)
          out[x] += w * vRow(keys[i], kvh)[x];
      }
      for (int64_t x = 0; x < D; ++x)
        worst = std::max(worst, std::abs(out[x] / z - oRow(row, h)[x]));
      worst = std::max(worst, std::abs(m + std::log(z) - lseOf(row, h)));
    }
    return worst;
  }
};

void setParam(llvm::json::Object &layer, size_t group, const char *key,
              llvm::json::Value value) {
  (*dynGroup(layer, group).getObject("params"))[key] = std::move(value);
}

} // namespace

/// Forced columns and diagonals count towards `vertical` and `slash`
/// (docs/patterns.md): with vertical = first_columns and slash =
/// last_diagonals, and with vertical = slash = 0 (which the verifier
/// accepts, and the manifest reader refused), head 0 (causal) sees exactly
/// the first 4 columns and the diagonals -7 .. 0, whatever the scores.
TEST(RuntimeDynamic, ForcedEntriesCountTowardsTheBudgets) {
  for (int64_t budget : {0, 1}) {
    DynamicCall call(40, 40, [&](llvm::json::Object &l) {
      setParam(l, 0, "vertical", 4 * budget);
      setParam(l, 0, "slash", 8 * budget);
    });
    ASSERT_NE(call.bundle, nullptr) << "budget " << budget;
    call.randomInputs(7);
    ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
    EXPECT_LT(call.maxError(0, 0.125f,
                            [](int64_t row, int64_t key) {
                              return key <= row && (key < 4 || row - key < 8);
                            }),
              1e-4)
        << "budget " << budget;
  }
}

/// A slash budget above the Nk diagonals d in [-(Nk - 1), 0] keeps all of
/// them: with causality, every key at or before the query's position
/// (bottom-right aligned), at Nq = Nk, Nq < Nk and Nq > Nk.
TEST(RuntimeDynamic, SlashBudgetAboveTheDiagonalsKeepsThemAll) {
  for (auto [nq, nk] :
       {std::pair<int64_t, int64_t>{40, 40}, {24, 40}, {40, 24}}) {
    DynamicCall call(nq, nk, [](llvm::json::Object &l) {
      setParam(l, 0, "vertical", 0);
      setParam(l, 0, "slash", int64_t(1) << 40);
      setParam(l, 0, "first_columns", 0);
      setParam(l, 0, "last_diagonals", 0);
    });
    call.randomInputs(11);
    ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
    EXPECT_LT(call.maxError(0, 0.125f,
                            [&, nq = nq, nk = nk](int64_t row, int64_t key) {
                              return key <= row + nk - nq;
                            }),
              1e-4)
        << nq << " x " << nk;
  }
}

/// The index's softmax uses the call's scale (0: 1/sqrt(head_dim)).
/// Vertical-slash with last_q = 2 and one column: row 6 scores every key
/// alike; row 7 scores key 7 at 2 and key 0 at 1 (before the scale). At
/// scale 1/8 column 0 has the largest sum (1/7 + 0.135 against 0.153 for
/// key 7); at scale 8 row 7's softmax is all on key 7, which wins. Row 7
/// sees its one kept column: o = v of that key.
TEST(RuntimeDynamic, IndexScoresUseTheCallScale) {
  for (float scale : {0.0f, 8.0f}) {
    DynamicCall call(8, 8, [](llvm::json::Object &l) {
      setParam(l, 0, "last_q", 2);
      setParam(l, 0, "vertical", 1);
      setParam(l, 0, "slash", 0);
      setParam(l, 0, "first_columns", 0);
      setParam(l, 0, "last_diagonals", 0);
    });
    call.qRow(7, 0)[0] = 1.0f;
    call.kRow(0, 0)[0] = 1.0f;
    call.kRow(7, 0)[0] = 2.0f;
    for (int64_t key = 0; key < 8; ++key)
      call.vRow(key, 0)[0] = float(key);
    ASSERT_EQ(call.run(scale), TESSERA_OK) << tessera_last_error();
    EXPECT_EQ(call.oRow(7, 0)[0], scale == 0 ? 0.0f : 7.0f)
        << "scale " << scale;
  }
  // Block top-k (head 2, causal, gamma 0.8, blocks of 64): every query
  // matches key block 0 at 1 and block 1 at 0. Block 0's pooled mass is
  // 1 / (1 + e^-s): 0.53 at s = 1/8 (both blocks kept), 0.9997 at s = 8
  // (block 0 alone). Values: 1 in block 0, 3 in block 1.
  for (float scale : {0.0f, 8.0f}) {
    DynamicCall call(128, 128);
    for (int64_t row = 0; row < 128; ++row)
      call.qRow(row, 2)[0] = 1.0f;
    for (int64_t key = 0; key < 128; ++key) {
      call.kRow(key, 1)[0] = key < 64 ? 1.0f : 0.0f;
      call.vRow(key, 1)[0] = key < 64 ? 1.0f : 3.0f;
    }
    ASSERT_EQ(call.run(scale), TESSERA_OK) << tessera_last_error();
    // Row 127 sees both blocks only where both are kept.
    if (scale == 0)
      EXPECT_GT(call.oRow(127, 2)[0], 1.5f);
    else
      EXPECT_EQ(call.oRow(127, 2)[0], 1.0f);
  }
}

/// On the CPU, f32 inputs of a bf16 layer are used as given, not rounded:
/// key 2 scores 1 + 2^-10 and key 1 scores 1 for the last query, which
/// keeps one column. In f32 key 2 wins; rounded to bf16 (7 fraction bits)
/// the two tie and the smaller column wins.
TEST(RuntimeDynamic, F32InputsBuildTheIndexUnrounded) {
  DynamicCall call(8, 8, [](llvm::json::Object &l) {
    setParam(l, 0, "last_q", 1);
    setParam(l, 0, "vertical", 1);
    setParam(l, 0, "slash", 0);
    setParam(l, 0, "first_columns", 0);
    setParam(l, 0, "last_diagonals", 0);
  });
  call.qRow(7, 0)[0] = 1.0f;
  call.kRow(1, 0)[0] = 1.0f;
  call.kRow(2, 0)[0] = 1.0f + 1.0f / 1024;
  for (int64_t key = 0; key < 8; ++key)
    call.vRow(key, 0)[0] = float(key);
  ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
  EXPECT_EQ(call.oRow(7, 0)[0], 2.0f);
  // The same values in bf16: key 2 rounds to 1.0, a tie, column 1.
  auto bf16 = [](const std::vector<float> &x) {
    std::vector<uint16_t> out(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      out[i] = cpu::floatToBf16(x[i]);
    return out;
  };
  std::vector<uint16_t> q = bf16(call.q), k = bf16(call.k), v = bf16(call.v),
                        o(call.o.size());
  const int64_t H = DynamicCall::H, Hkv = DynamicCall::Hkv, D = DynamicCall::D;
  tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_BF16, 1, 8, H, D);
  tessera_tensor tk = tensor(k.data(), TESSERA_DTYPE_BF16, 1, 8, Hkv, D);
  tessera_tensor tv = tensor(v.data(), TESSERA_DTYPE_BF16, 1, 8, Hkv, D);
  tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_BF16, 1, 8, H, D);
  tessera_dynamic_inputs dyn{call.cent.data(), H, DynamicCall::C, D};
  ASSERT_EQ(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &to,
                                      nullptr, 0, &dyn, nullptr),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(cpu::bf16ToFloat(o[(7 * H + 0) * D]), 1.0f);
}

/// k-means keeps an empty cluster's centroid. Head 4 (causal, routing with
/// 2 k-means iterations; here 2 clusters) over keys k0 = (1, 0) and
/// k1..15 = (2, -1): seeds k0 and k8; every key is nearer (dot product)
/// to k8, so cluster 0 empties and keeps (1, 0) while cluster 1 becomes
/// (31, -15) / 16. Query (0.5, 1) scores 0.5 against cluster 0 and 1/32
/// against cluster 1: cluster 0, no keys (a zeroed centroid would send it
/// to cluster 1). Query (-1, -1.5): -1 and -17/32: cluster 1, every key
/// before it.
TEST(RuntimeDynamic, RoutingKeepsAnEmptyClustersCentroid) {
  DynamicCall call(
      16, 16, [](llvm::json::Object &l) { setParam(l, 4, "clusters", 2); });
  call.randomInputs(5);
  for (int64_t key = 0; key < 16; ++key) {
    std::fill_n(call.kRow(key, 2), 64, 0.0f);
    call.kRow(key, 2)[0] = key == 0 ? 1.0f : 2.0f;
    call.kRow(key, 2)[1] = key == 0 ? 0.0f : -1.0f;
  }
  for (int64_t row = 0; row < 16; ++row) {
    std::fill_n(call.qRow(row, 4), 64, 0.0f);
    call.qRow(row, 4)[0] = row % 2 ? 0.5f : -1.0f;
    call.qRow(row, 4)[1] = row % 2 ? 1.0f : -1.5f;
  }
  ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
  EXPECT_LT(call.maxError(4, 0.125f,
                          [](int64_t row, int64_t key) {
                            return row % 2 == 0 && key <= row;
                          }),
            1e-5);
}

/// One query against 2^19 equal keys and values (stride 0): every row that
/// sees keys must give exactly the value row up to rounding, on the static
/// executor (tiny-mix: bands, grids, shards over half a million keys) and
/// on the dynamic paths (2^18 keys: vertical-slash, block top-k, routing by
/// segments). Row sums and outputs accumulate across tiles in double: in
/// float they drifted by 2.8% at 2^20 keys.
TEST(RuntimeLimits, ManyEqualKeysGiveTheValueExactly) {
  tessera_context *ctx = nullptr;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  auto check = [&](tessera_bundle *b, int64_t h, int64_t hkv, int64_t nk,
                   const float *centroids, int64_t clusters) {
    const int64_t d = 64;
    std::vector<float> q(h * d), kv(hkv * d), v(hkv * d), o(h * d),
        lse(h);
    std::mt19937 rng(3);
    std::normal_distribution<float> n01;
    for (float &x : q)
      x = n01(rng);
    for (float &x : kv)
      x = n01(rng);
    for (float &x : v)
      x = n01(rng);
    tessera_tensor tq = tensor(q.data(), TESSERA_DTYPE_F32, 1, 1, h, d);
    tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, 1, h, d);
    tessera_tensor tk{kv.data(), TESSERA_DTYPE_F32, 1, nk, hkv, d, 0, 0, d};
    tessera_tensor tv{v.data(), TESSERA_DTYPE_F32, 1, nk, hkv, d, 0, 0, d};
    tessera_dynamic_inputs dyn{centroids, h, clusters, d};
    ASSERT_EQ(centroids ? tessera_attention_dynamic(b, 0, &tq, &tk, &tv, &to,
                                                    lse.data(), 0, &dyn,
                                                    nullptr)
                        : tessera_attention(b, 0, &tq, &tk, &tv, &to,
                                            lse.data(), 0, nullptr),
              TESSERA_OK)
        << tessera_last_error();
    for (int64_t head = 0; head < h; ++head) {
      if (lse[head] == -INFINITY)
        continue; // this head's pattern gives the row no key
      const float *want = &v[(head / (h / hkv)) * d];
      for (int64_t x = 0; x < d; ++x)
        EXPECT_NEAR(o[head * d + x], want[x], 2e-6f * (1 + std::abs(want[x])))
            << "head " << head << " element " << x;
    }
  };
  tessera_bundle *mix = nullptr;
  ASSERT_EQ(tessera_bundle_load_file(ctx, bundleDir("tiny-mix").c_str(), &mix),
            TESSERA_OK);
  check(mix, 6, 2, int64_t(1) << 19, nullptr, 0);
  tessera_bundle_destroy(mix);
  tessera_context_destroy(ctx);
  DynamicCall dyn(1, 1);
  check(dyn.bundle, 6, 3, int64_t(1) << 18, dyn.cent.data(), 3);
}

/// A dynamic layer whose index would not fit in host memory is refused
/// before anything is allocated (docs/runtime.md gives the formula and the
/// limit), for every family: one query against 2^26 .. 2^40 equal keys
/// (stride 0), and vertical-slash with last_q = 2^40 at 65536 tokens. They
/// used to throw std::bad_alloc out of the C API and abort the process.
TEST(RuntimeDynamic, IndexesThatDoNotFitAreRefused) {
  ::setenv("TESSERA_CPU_INDEX_MEMORY", "4294967296", 1); // 4 GiB
  const int64_t H = DynamicCall::H, Hkv = DynamicCall::Hkv,
                D = DynamicCall::D;
  auto call = [&](tessera_bundle *b, int64_t nq, int64_t nk, float *qData,
                  const float *cent) {
    std::vector<float> kv(Hkv * D, 0.5f), o(nq * H * D), lse(H * nq);
    tessera_tensor tq{qData, TESSERA_DTYPE_F32, 1, nq, H, D, 0, H * D, D};
    tessera_tensor tk{kv.data(), TESSERA_DTYPE_F32, 1, nk, Hkv, D, 0, 0, D};
    tessera_tensor to = tensor(o.data(), TESSERA_DTYPE_F32, 1, nq, H, D);
    tessera_dynamic_inputs dyn{cent, H, DynamicCall::C, D};
    return tessera_attention_dynamic(b, 0, &tq, &tk, &tk, &to, lse.data(), 0,
                                     &dyn, nullptr);
  };
  {
    DynamicCall small(1, 1);
    std::vector<float> q(H * D, 0.25f);
    EXPECT_EQ(call(small.bundle, 1, 4096, q.data(), small.cent.data()),
              TESSERA_OK)
        << tessera_last_error();
    for (int shift : {26, 30, 34, 40}) {
      EXPECT_EQ(call(small.bundle, 1, int64_t(1) << shift, q.data(),
                     small.cent.data()),
                TESSERA_ERROR_INVALID_ARGUMENT)
          << shift;
      EXPECT_NE(std::string(tessera_last_error()).find("of host memory per "
                                                       "head"),
                std::string::npos)
          << tessera_last_error();
    }
    // Every family is measured: layer 0's first group is vertical-slash;
    // at 2^26 keys routing alone (the rows, 4 D (Nq + 2 Nk)) is too big.
  }
  {
    DynamicCall wide(1, 1, [](llvm::json::Object &l) {
      setParam(l, 0, "last_q", int64_t(1) << 40);
    });
    std::vector<float> q(65536 * H * D, 0.25f);
    EXPECT_EQ(call(wide.bundle, 65536, 65536, q.data(), wide.cent.data()),
              TESSERA_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(tessera_last_error()).find("head 0 needs 16"),
              std::string::npos)
        << tessera_last_error();
  }
  ::unsetenv("TESSERA_CPU_INDEX_MEMORY");
}

/// A value no row may see never changes a row (docs/runtime.md, non-finite
/// inputs): an infinite value at key 40 of every kv head reaches, under
/// causality, no row before 40, on every dynamic path of layer 0
/// (vertical-slash and block top-k through the executor, routing by
/// segments); the index does not read values, so it is the same.
TEST(RuntimeDynamic, InfiniteValuesReachOnlyTheRowsThatSeeThem) {
  DynamicCall call(100, 100);
  call.randomInputs(21);
  ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
  const std::vector<float> clean = call.o, cleanLse = call.lse;
  for (int64_t kvh = 0; kvh < DynamicCall::Hkv; ++kvh)
    call.vRow(40, kvh)[0] = INFINITY;
  ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
  int64_t poisoned = 0;
  for (int64_t h : {0, 2, 4}) // causal heads
    for (int64_t row = 0; row < call.nq; ++row) {
      EXPECT_EQ(call.lseOf(row, h), cleanLse[h * call.nq + row]) << row;
      for (int64_t x = 0; x < DynamicCall::D; ++x) {
        float got = call.oRow(row, h)[x];
        float want = clean[(row * DynamicCall::H + h) * DynamicCall::D + x];
        if (row < 40)
          EXPECT_NEAR(got, want, 1e-5f) << "head " << h << " row " << row;
        else if (x == 0)
          poisoned += !std::isfinite(got);
      }
    }
  EXPECT_GT(poisoned, 0); // some rows do see key 40
}

/// The engine's centroids may not share memory with o or lse (they are
/// read while those are written), must be fp32-aligned, and every row a
/// routing group reads must be finite (on the CPU; docs/runtime.md). Rows
/// no group reads are not checked.
TEST(RuntimeDynamic, CentroidsAreValidated) {
  DynamicCall call(16, 16);
  call.randomInputs(3);
  ASSERT_EQ(call.run(0), TESSERA_OK) << tessera_last_error();
  const int64_t H = 6, Hkv = 3, D = 64, C = 3, n = 16;
  auto expectError = [&](tessera_status got, tessera_status want,
                         const char *message) {
    EXPECT_EQ(got, want) << message;
    EXPECT_NE(std::string(tessera_last_error()).find(message),
              std::string::npos)
        << tessera_last_error();
  };
  tessera_tensor tq = tensor(call.q.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  tessera_tensor tk = tensor(call.k.data(), TESSERA_DTYPE_F32, 1, n, Hkv, D);
  tessera_tensor tv = tensor(call.v.data(), TESSERA_DTYPE_F32, 1, n, Hkv, D);
  // An arena holding o, then centroids whose start lies inside o.
  std::vector<float> arena(n * H * D + H * C * D);
  tessera_tensor to = tensor(arena.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  float *inO = arena.data() + n * H * D - D;
  std::copy(call.cent.begin(), call.cent.end(), inO);
  tessera_dynamic_inputs dyn{inO, H, C, D};
  expectError(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &to,
                                        nullptr, 0, &dyn, nullptr),
              TESSERA_ERROR_INVALID_ARGUMENT, "centroids overlap o");
  // Centroids holding lse.
  std::vector<float> cent = call.cent;
  tessera_tensor o = tensor(call.o.data(), TESSERA_DTYPE_F32, 1, n, H, D);
  dyn = {cent.data(), H, C, D};
  expectError(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &o,
                                        cent.data() + 100, 0, &dyn, nullptr),
              TESSERA_ERROR_INVALID_ARGUMENT, "centroids overlap lse");
  // Misaligned.
  std::vector<char> bytes(sizeof(float) * cent.size() + 8);
  dyn.centroids = reinterpret_cast<const float *>(bytes.data() + 2);
  expectError(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &o,
                                        nullptr, 0, &dyn, nullptr),
              TESSERA_ERROR_MISALIGNED, "centroids must be 4-byte aligned");
  // NaN and inf in a row head 5's group reads (3 clusters); NaN in head
  // 0's rows (a vertical-slash head) is never read.
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    cent = call.cent;
    cent[(5 * C + 2) * D + 7] = bad;
    dyn = {cent.data(), H, C, D};
    expectError(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &o,
                                          nullptr, 0, &dyn, nullptr),
                TESSERA_ERROR_INVALID_ARGUMENT,
                "centroid 2 of head 5 is not finite");
  }
  cent = call.cent;
  cent[(0 * C + 1) * D] = NAN;
  dyn = {cent.data(), H, C, D};
  EXPECT_EQ(tessera_attention_dynamic(call.bundle, 0, &tq, &tk, &tv, &o,
                                      nullptr, 0, &dyn, nullptr),
            TESSERA_OK)
      << tessera_last_error();
}

/// The manifest reader agrees with the verifier and the bundles' limits:
/// forced entries alone make a vertical-slash index; min_blocks and
/// max_blocks go with gamma only; tau in [0, 1] with gamma only, and a
/// group with tau > 0 needs FlexPrefill's kernels (tau was once read and
/// ignored).
TEST(RuntimeBundles, DynamicParametersAgreeWithTheVerifier) {
  std::string src = slurp(bundleDir("dynamic-emulation") + "/bundle.cu");
  tessera_context *ctx;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
  auto load = [&](const std::function<void(llvm::json::Object &)> &edit) {
    std::string m = editedDynamicManifest(edit);
    tessera_bundle *b = nullptr;
    tessera_status s = tessera_bundle_load_memory(ctx, m.data(), m.size(),
                                                  src.data(), src.size(), &b);
    if (b)
      tessera_bundle_destroy(b);
    return s;
  };
  // #attn.vertical_slash<last_q = 1, first_columns = 4>.
  EXPECT_EQ(load([](llvm::json::Object &l) {
              setParam(l, 0, "last_q", 1);
              setParam(l, 0, "vertical", 0);
              setParam(l, 0, "slash", 0);
              setParam(l, 0, "last_diagonals", 0);
            }),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(
      load([](llvm::json::Object &l) { setParam(l, 3, "max_blocks", 4); }),
      TESSERA_ERROR_BAD_BUNDLE);
  EXPECT_NE(std::string(tessera_last_error())
                .find("block_topk: min_blocks and max_blocks go with gamma "
                      "only"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_EQ(
      load([](llvm::json::Object &l) { setParam(l, 3, "min_blocks", 1); }),
      TESSERA_ERROR_BAD_BUNDLE);
  // tau: a number in [0, 1], with gamma only; a group with tau > 0 lists
  // FlexPrefill's two kernels after the scores (tau set on a group
  // without them is refused, and with them it loads; a tau below float's
  // range stays a choice).
  auto expectError = [&](const std::string &message) {
    EXPECT_NE(std::string(tessera_last_error()).find(message),
              std::string::npos)
        << tessera_last_error();
  };
  for (llvm::json::Value tau : {llvm::json::Value(1.5),
                                llvm::json::Value(-0.1),
                                llvm::json::Value("0")}) {
    EXPECT_EQ(load([&](llvm::json::Object &l) { setParam(l, 2, "tau", tau); }),
              TESSERA_ERROR_BAD_BUNDLE);
    expectError("block_topk: tau must be a number in [0, 1]");
  }
  EXPECT_EQ(load([](llvm::json::Object &l) { setParam(l, 3, "tau", 0.5); }),
            TESSERA_ERROR_BAD_BUNDLE);
  expectError("block_topk: tau (FlexPrefill's per-head choice) goes with "
              "gamma only");
  EXPECT_EQ(load([](llvm::json::Object &l) { setParam(l, 2, "tau", 0.5); }),
            TESSERA_ERROR_BAD_BUNDLE);
  expectError("a dynamic group's kernels are not those of its family");
  for (double tau : {0.5, 1.0, 1e-50}) {
    EXPECT_EQ(load([&](llvm::json::Object &l) {
                setParam(l, 2, "tau", tau);
                dynGroup(l, 2)["kernels"] = llvm::json::Array{
                    "tessera_bt_pool_bf16", "tessera_bt_scores",
                    "tessera_bt_flex_rows_bf16", "tessera_bt_flex_mode",
                    "tessera_bt_take", "tessera_bt_select",
                    "tessera_bt_attend_bf16_d64"};
              }),
              TESSERA_OK)
        << tau << ": " << tessera_last_error();
  }
  EXPECT_EQ(load([](llvm::json::Object &l) { setParam(l, 2, "tau", 0.0); }),
            TESSERA_OK)
      << tessera_last_error();
  tessera_context_destroy(ctx);
}
