//===- FakeDriverTest.cpp - the runtime's CUDA path, without a GPU --------===//
//
// The runtime library's CUDA path end to end (context, NVRTC compile of the
// bundle, validation, planning, launches) over FakeCuda.cpp, a libcuda
// stand-in that runs the launched kernels on the emulator: every call mode
// of tessera_attention_run on a CUDA context against SeqCalls.h's float64
// reference; the run step's driver calls (no synchronisation, no
// allocation, every launch on the caller's stream: what capturing a call
// in a CUDA graph needs); host arrays refused by name; the host does not
// read device arrays (a bad one gives NaN rows, not an error).
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "FakeApi.h"
#include "SeqCalls.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <string>

using namespace tessera;
using namespace tessera::seqcalls;

namespace {

/// The fake driver's test entry points.
using Fake = FakeApi;

template <class T> void registerVec(const std::vector<T> &v) {
  if (!v.empty())
    Fake::get().registerRange(v.data(), v.size() * sizeof(T));
}

/// The set of driver calls in a comma-separated log.
std::set<std::string> callSet(const std::string &log) {
  std::set<std::string> s;
  std::stringstream in(log);
  for (std::string c; std::getline(in, c, ',');)
    s.insert(c);
  return s;
}

class FakeDriver : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    // Before the runtime opens the driver: this library's fake, and a
    // kernel cache of the build's own.
    setenv("TESSERA_LIBCUDA", TESSERA_FAKECUDA, 1);
    setenv("TESSERA_CACHE_DIR", TESSERA_BINARY_DIR "/test/fake-cuda-cache", 1);
  }
  void SetUp() override {
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CUDA, 0, &ctx), TESSERA_OK)
        << tessera_last_error();
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

  /// Registers a built call's buffers and arrays as device memory.
  static void onDevice(const Built &b) {
    Fake::get().clear();
    registerVec(b.qh), registerVec(b.kh), registerVec(b.vh),
        registerVec(b.oh), registerVec(b.lse), registerVec(b.cuQ),
        registerVec(b.cuK), registerVec(b.lens), registerVec(b.table),
        registerVec(b.qStart), registerVec(b.kStart);
  }

  /// Runs `l` in `lay` on the CUDA context and compares with the float64
  /// reference; returns the run step's driver calls.
  std::string check(const Logical &l, Layout lay) {
    lay.bf16 = true;
    Built b = build(l, lay);
    onDevice(b);
    b.d.cuda_stream = reinterpret_cast<void *>(0x5eed);
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    std::string log = Fake::get().calls();
    Reference r = reference(l, 1.0 / std::sqrt(double(D)));
    EXPECT_EQ(countMismatches(l, b, r, Tolerance{3e-2, 1e-3, 1e-3},
                              [](const std::string &m) { ADD_FAILURE() << m; }),
              0);
    return log;
  }

  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
};

Logical logical(std::vector<Seq> seqs, uint64_t seed) {
  return makeLogical(std::move(seqs), seed, /*bf16=*/true);
}

/// Every mode through the runtime's CUDA path; each call's run step makes
/// only context switches, pointer queries, launches, and a split decode
/// call one stream-ordered allocation and free of its workspace (graphs
/// capture those as memory nodes), and on the sm_90a path the host-side
/// encoding of tensor maps: nothing that synchronises with the device.
TEST_F(FakeDriver, EveryModeRunsWithoutSynchronising) {
  const std::set<std::string> allowed = {
      "cuCtxPushCurrent",      "cuCtxPopCurrent", "cuPointerGetAttribute",
      "cuLaunchKernel",        "cuMemAllocAsync", "cuMemFreeAsync",
      "cuTensorMapEncodeTiled"};
  Layout dense;
  Layout packedPaged;
  packedPaged.q = QLayout::Packed;
  packedPaged.k = KLayout::Paged;
  Layout range = packedPaged;
  range.h0 = 2;
  range.n = 3;
  Layout lengths;
  lengths.k = KLayout::Lengths;
  for (auto [lay, seqs] :
       {std::pair{dense, std::vector<Seq>{{70, 130}, {70, 130}}},
        {dense, {{20, 150, 64, 3}, {20, 150, 300, 64}}},
        {packedPaged, {{1, 300}, {0, 4}, {16, 555, 700, 160}, {100, 100}}},
        {range, {{33, 90}, {1, 200, 0, 7}}},
        {lengths, {{1, 77}, {1, 3}}}}) {
    std::string log = check(logical(seqs, seqs.size() * 31 + seqs[0].nk), lay);
    std::set<std::string> made = callSet(log);
    EXPECT_TRUE(made.count("cuLaunchKernel")) << log;
    EXPECT_FALSE(made.count("cuMemAllocAsync")) << "no split: " << log;
    for (const std::string &c : made)
      EXPECT_TRUE(allowed.count(c)) << c << " in the run step: " << log;
  }
  // Decode over a longer paged cache: split, merged, workspace freed.
  Layout paged;
  paged.k = KLayout::Paged;
  std::string log = check(logical({{1, 700}, {1, 300}}, 5), paged);
  EXPECT_NE(log.find("cuMemAllocAsync"), std::string::npos) << log;
  EXPECT_NE(log.find("cuMemFreeAsync"), std::string::npos) << log;
  EXPECT_LT(log.find("cuMemAllocAsync"), log.find("cuLaunchKernel")) << log;
  EXPECT_GT(log.rfind("cuMemFreeAsync"), log.rfind("cuLaunchKernel")) << log;
  for (const std::string &c : callSet(log))
    EXPECT_TRUE(allowed.count(c)) << c << " in the run step: " << log;
}

/// A split decode call with a caller-owned workspace (API 7): the size query
/// gives the bytes of SeqLaunch.h's plan, worked out here by hand; a
/// workspace of exactly that size is used (the run writes into it, and not
/// past it) with no allocation or free, and no synchronising call; four bytes
/// fewer are refused naming the field and the bytes needed, before any
/// launch; host memory, a misaligned pointer and a CPU context as the
/// header says.
TEST_F(FakeDriver, CallerWorkspace) {
  const std::set<std::string> allowed = {"cuCtxPushCurrent", "cuCtxPopCurrent",
                                         "cuPointerGetAttribute",
                                         "cuLaunchKernel"};
  Layout paged;
  paged.k = KLayout::Paged;
  paged.bf16 = true;
  Logical l = logical({{1, 700}, {1, 300}}, 5);
  Built b = build(l, paged);
  b.d.cuda_stream = reinterpret_cast<void *>(0x5eed);
  // Pages of 16, 44 a sequence: 704 keys, 12 tiles of 64 reachable; 6 heads
  // x 2 sequences x 1 query block = 12 blocks, so min(ceil(12 / 4),
  // ceil(256 / 12), 64) = 3 splits of 4 tiles, each holding O (64 floats)
  // and the LSE (1 float) of 2 rows x 6 heads.
  const size_t expected = 3 * 2 * H * (D + 1) * 4;
  size_t bytes = 0;
  ASSERT_EQ(tessera_attention_workspace_size(bundle, &b.d, &bytes), TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(bytes, expected);

  // A NaN-filled buffer with a guard past the workspace.
  const size_t guard = 64;
  std::vector<float> ws((bytes + guard) / 4 + 4,
                        std::numeric_limits<float>::quiet_NaN());
  float *base = reinterpret_cast<float *>(
      (reinterpret_cast<uintptr_t>(ws.data()) + 15) / 16 * 16);
  onDevice(b);
  Fake::get().registerRange(base, bytes + guard);
  b.d.workspace = base;
  b.d.workspace_size = bytes;
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
      << tessera_last_error();
  std::string log = Fake::get().calls();
  EXPECT_NE(log.find("cuLaunchKernel"), std::string::npos) << log;
  for (const std::string &c : callSet(log))
    EXPECT_TRUE(allowed.count(c)) << c << " in the run step: " << log;
  Reference r = reference(l, 1.0 / std::sqrt(double(D)));
  EXPECT_EQ(countMismatches(l, b, r, Tolerance{3e-2, 1e-3, 1e-3},
                            [](const std::string &m) { ADD_FAILURE() << m; }),
            0);
  int64_t written = 0;
  for (size_t i = 0; i < bytes / 4; ++i)
    written += !std::isnan(base[i]);
  EXPECT_GT(written, int64_t(bytes / 8)) << "the run used its own memory";
  for (size_t i = bytes / 4; i < (bytes + guard) / 4; ++i)
    EXPECT_TRUE(std::isnan(base[i])) << "written past the workspace at " << i;

  // Too small: refused before any launch, naming the field and the bytes.
  onDevice(b);
  Fake::get().registerRange(base, bytes + guard);
  b.d.workspace_size = bytes - 4;
  EXPECT_EQ(tessera_attention_run(bundle, &b.d),
            TESSERA_ERROR_INVALID_ARGUMENT);
  std::string e = tessera_last_error();
  EXPECT_NE(e.find("workspace_size"), std::string::npos) << e;
  EXPECT_NE(e.find(std::to_string(expected)), std::string::npos) << e;
  EXPECT_EQ(std::string(Fake::get().calls()).find("cuLaunchKernel"),
            std::string::npos);

  // Host memory and a misaligned pointer.
  b.d.workspace_size = bytes + guard;
  onDevice(b); // the workspace not registered: host memory
  EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_ERROR_WRONG_DEVICE);
  EXPECT_NE(std::string(tessera_last_error()).find("workspace"),
            std::string::npos)
      << tessera_last_error();
  Fake::get().registerRange(base, bytes + guard);
  b.d.workspace = base + 1;
  b.d.workspace_size = bytes;
  EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_ERROR_MISALIGNED);

  // A call that does not split needs none; so does any call on a CPU.
  Built small = build(logical({{1, 100}, {1, 30}}, 6), paged);
  ASSERT_EQ(tessera_attention_workspace_size(bundle, &small.d, &bytes),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(bytes, 0u);
  tessera_context *cpu = nullptr;
  tessera_bundle *onCpu = nullptr;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &cpu), TESSERA_OK);
  ASSERT_EQ(tessera_bundle_load_file(
                cpu,
                (std::string(TESSERA_BINARY_DIR) + "/test/bundles/tiny-mix")
                    .c_str(),
                &onCpu),
            TESSERA_OK)
      << tessera_last_error();
  Built host = build(l, paged);
  ASSERT_EQ(tessera_attention_workspace_size(onCpu, &host.d, &bytes),
            TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(tessera_attention_workspace_size(onCpu, &host.d, nullptr),
            TESSERA_ERROR_NULL_POINTER);
  tessera_bundle_destroy(onCpu);
  tessera_context_destroy(cpu);
}

/// The description's initialisers: the header's macro zeroes the caller's
/// sizeof (workspace included); the library's symbol, which older callers
/// and the Python binding call by name, writes the API 6 fields only.
TEST(AttentionDescInit, WritesOnlyTheCallersStruct) {
  tessera_attention_desc d;
  std::memset(&d, 0xab, sizeof d);
  tessera_attention_desc_init(&d);
  EXPECT_EQ(d.struct_size, sizeof d);
  EXPECT_EQ(d.workspace, nullptr);
  EXPECT_EQ(d.workspace_size, 0u);
  std::memset(&d, 0xab, sizeof d);
  (tessera_attention_desc_init)(&d);
  const size_t v6 = offsetof(tessera_attention_desc, head_count) + 8;
  EXPECT_EQ(d.struct_size, v6);
  EXPECT_EQ(d.head_count, 0);
  const auto *bytes = reinterpret_cast<const unsigned char *>(&d);
  for (size_t i = v6; i < sizeof d; ++i)
    EXPECT_EQ(bytes[i], 0xab) << "byte " << i << " past the API 6 struct";
}

/// On CUDA the sequence arrays are device memory: a host array is refused
/// naming it; a device array with a bad entry is not read by the host (the
/// call succeeds) and its sequence's rows come out NaN.
TEST_F(FakeDriver, DeviceArrays) {
  Layout paged;
  paged.k = KLayout::Paged;
  paged.bf16 = true;
  Logical l = logical({{4, 100}, {4, 60}}, 77);
  {
    Built b = build(l, paged);
    onDevice(b);
    std::vector<int32_t> hostLens = b.lens; // not registered
    b.d.seq_lens_k = hostLens.data();
    EXPECT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_ERROR_WRONG_DEVICE);
    EXPECT_NE(std::string(tessera_last_error()).find("seq_lens_k"),
              std::string::npos)
        << tessera_last_error();
  }
  {
    Built b = build(l, paged);
    b.lens[0] = -1; // the CPU refuses it; CUDA cannot read it
    onDevice(b);
    ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
        << tessera_last_error();
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t h = 0; h < H; ++h) {
        EXPECT_TRUE(std::isnan(b.out(b.oAt(0, i, h))));
        EXPECT_FALSE(std::isnan(b.out(b.oAt(1, i, h))));
      }
  }
}

/// The kernel paths on the fake device (compute capability 9.0). By
/// default a dense call runs the layer's sm_90a twins (`_wgmma`), its three
/// tensor maps encoded on the first call and taken from the cache on the
/// next; with q one element past 16-byte alignment (which no tensor map can
/// describe) the same call runs the mma.sync kernels and still matches; a
/// single batch entry with a batch stride of 3 elements keeps the twins.
/// TESSERA_KERNEL_PATH=mma_sync runs the mma.sync kernels on the same
/// device; =wgmma refuses the misaligned call naming q; an unknown value is
/// refused when the bundle loads.
TEST_F(FakeDriver, KernelPaths) {
  Layout dense;
  dense.bf16 = true;
  const Logical l = logical({{70, 130}, {70, 130}}, 11);
  Reference r = reference(l, 1.0 / std::sqrt(double(D)));
  auto matches = [&](const Built &b) {
    return countMismatches(l, b, r, Tolerance{3e-2, 1e-3, 1e-3},
                           [](const std::string &m) { ADD_FAILURE() << m; }) ==
           0;
  };
  auto count = [](const std::string &log, const std::string &what) {
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos;
         at = log.find(what, at + 1))
      ++n;
    return n;
  };
  const std::string twin = "tessera_attn_bf16_d64_wgmma";
  const std::string mma = "tessera_attn_bf16_d64";
  auto ranOnly = [&](const std::string &kernel) {
    std::set<std::string> ran = callSet(Fake::get().kernels());
    return ran.count(kernel) && !ran.count(kernel == twin ? mma : twin);
  };

  Built b = build(l, dense);
  onDevice(b);
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
      << tessera_last_error();
  EXPECT_TRUE(ranOnly(twin)) << Fake::get().kernels();
  EXPECT_EQ(count(Fake::get().calls(), "cuTensorMapEncodeTiled"), 3u)
      << Fake::get().calls();
  EXPECT_TRUE(matches(b));
  b = build(l, dense); // the same arrays' layout, new arrays
  onDevice(b);
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK);
  EXPECT_TRUE(ranOnly(twin)) << Fake::get().kernels();
  EXPECT_TRUE(matches(b));
  onDevice(b);
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK);
  EXPECT_EQ(count(Fake::get().calls(), "cuTensorMapEncodeTiled"), 0u)
      << "the second call with the same tensors: " << Fake::get().calls();

  // q one element past 16-byte alignment.
  auto misalign = [](Built &x, std::vector<uint16_t> &shifted) {
    shifted.assign(x.qh.size() + 16, 0);
    uint16_t *at =
        reinterpret_cast<uint16_t *>(
            (reinterpret_cast<uintptr_t>(shifted.data()) + 15) / 16 * 16) +
        1;
    std::copy(x.qh.begin(), x.qh.end(), at);
    x.d.q.data = at;
  };
  std::vector<uint16_t> shifted;
  b = build(l, dense);
  misalign(b, shifted);
  onDevice(b);
  registerVec(shifted);
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
      << tessera_last_error();
  EXPECT_TRUE(ranOnly(mma)) << Fake::get().kernels();
  EXPECT_TRUE(matches(b));

  // One batch entry: its batch stride never moves, so any value keeps the
  // tensor maps (the runtime substitutes one the driver takes).
  const Logical one = logical({{70, 130}}, 12);
  Reference r1 = reference(one, 1.0 / std::sqrt(double(D)));
  b = build(one, dense);
  for (tessera_tensor *t : {&b.d.q, &b.d.k, &b.d.v})
    t->stride_batch = 3;
  onDevice(b);
  ASSERT_EQ(tessera_attention_run(bundle, &b.d), TESSERA_OK)
      << tessera_last_error();
  EXPECT_TRUE(ranOnly(twin)) << Fake::get().kernels();
  EXPECT_EQ(countMismatches(one, b, r1, Tolerance{3e-2, 1e-3, 1e-3},
                            [](const std::string &m) { ADD_FAILURE() << m; }),
            0);

  auto loadWith = [&](const char *path, tessera_bundle **out) {
    setenv("TESSERA_KERNEL_PATH", path, 1);
    tessera_status s = tessera_bundle_load_file(
        ctx,
        (std::string(TESSERA_BINARY_DIR) + "/test/bundles/tiny-mix").c_str(),
        out);
    unsetenv("TESSERA_KERNEL_PATH");
    return s;
  };
  tessera_bundle *forced = nullptr;
  ASSERT_EQ(loadWith("mma_sync", &forced), TESSERA_OK) << tessera_last_error();
  b = build(l, dense);
  onDevice(b);
  ASSERT_EQ(tessera_attention_run(forced, &b.d), TESSERA_OK)
      << tessera_last_error();
  EXPECT_TRUE(ranOnly(mma)) << Fake::get().kernels();
  EXPECT_TRUE(matches(b));
  tessera_bundle_destroy(forced);

  ASSERT_EQ(loadWith("wgmma", &forced), TESSERA_OK) << tessera_last_error();
  b = build(l, dense);
  misalign(b, shifted);
  onDevice(b);
  registerVec(shifted);
  EXPECT_EQ(tessera_attention_run(forced, &b.d), TESSERA_ERROR_MISALIGNED);
  std::string e = tessera_last_error();
  EXPECT_NE(e.find("q: its data is not 16-byte aligned"), std::string::npos)
      << e;
  EXPECT_EQ(std::string(Fake::get().kernels()), "");
  tessera_bundle_destroy(forced);

  forced = nullptr;
  EXPECT_EQ(loadWith("hopper", &forced), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(forced, nullptr);
  e = tessera_last_error();
  EXPECT_NE(e.find("TESSERA_KERNEL_PATH is 'hopper'"), std::string::npos) << e;
}

/// The dynamic groups of Inputs/DynamicHopper.mlir (head_dim 64, bf16:
/// vertical-slash, block top-k and routing heads, GQA) through the runtime
/// on the fake device of compute capability 9.0: by default the attention
/// over each index runs on its sm_90a twin (HopperDynamic.cuh: wgmma, TMA
/// and cp.async, launched with the call's tensor maps and 384 threads),
/// forced to mma_sync on the mma.sync kernels; the index kernels are the
/// same, so both outputs agree to rounding (and each is checked against
/// the CPU context's run of the same bundle, whose k-means may settle
/// differently, on the vertical-slash and block top-k heads, by the
/// outputs' mean difference).
TEST(FakeDriverDynamic, TwinsRunTheAttentionOverTheIndex) {
  setenv("TESSERA_LIBCUDA", TESSERA_FAKECUDA, 1);
  setenv("TESSERA_CACHE_DIR", TESSERA_BINARY_DIR "/test/fake-cuda-cache", 1);
  auto useBundle = Fake::get().useBundle;
  ASSERT_NE(useBundle, nullptr);
  useBundle("dynamic-hopper");
  const std::string dir =
      std::string(TESSERA_BINARY_DIR) + "/test/bundles/dynamic-hopper";
  const int64_t N = 200, H = 4, KV = 2, Dh = 64, C = 3;
  std::vector<uint16_t> q(size_t(N * H * Dh)), k(size_t(N * KV * Dh)),
      v(k.size());
  uint64_t state = 99;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return float(int64_t(state >> 40) % 2001 - 1000) / 1000.0f;
  };
  auto bf16 = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
  };
  for (uint16_t &x : q)
    x = bf16(next());
  for (uint16_t &x : k)
    x = bf16(next());
  for (uint16_t &x : v)
    x = bf16(next());
  std::vector<float> centroids(size_t(H * C * Dh));
  for (float &x : centroids)
    x = next();
  auto run = [&](tessera_device_kind device, const char *path,
                 std::vector<uint16_t> &o, std::string &kernels) {
    tessera_context *ctx = nullptr;
    tessera_bundle *bundle = nullptr;
    ASSERT_EQ(tessera_context_create(device, 0, &ctx), TESSERA_OK)
        << tessera_last_error();
    if (path)
      setenv("TESSERA_KERNEL_PATH", path, 1);
    ASSERT_EQ(tessera_bundle_load_file(ctx, dir.c_str(), &bundle), TESSERA_OK)
        << tessera_last_error();
    unsetenv("TESSERA_KERNEL_PATH");
    o.assign(q.size(), 0);
    auto tensor = [&](void *data, int64_t heads) {
      return tessera_tensor{data,       TESSERA_DTYPE_BF16, 1,  N, heads, Dh,
                            N * heads * Dh, heads * Dh,     Dh};
    };
    tessera_dynamic_inputs in{centroids.data(), H, C, Dh};
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = 0;
    d.q = tensor(q.data(), H);
    d.k = tensor(k.data(), KV);
    d.v = tensor(v.data(), KV);
    d.o = tensor(o.data(), H);
    d.dynamic_inputs = &in;
    if (device == TESSERA_DEVICE_CUDA) {
      Fake::get().clear();
      registerVec(q), registerVec(k), registerVec(v), registerVec(o),
          registerVec(centroids);
    }
    EXPECT_EQ(tessera_attention_run(bundle, &d), TESSERA_OK)
        << tessera_last_error();
    if (device == TESSERA_DEVICE_CUDA)
      kernels = Fake::get().kernels();
    tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
  };
  std::vector<uint16_t> twin, mma, cpu;
  std::string twinKernels, mmaKernels, none;
  run(TESSERA_DEVICE_CUDA, nullptr, twin, twinKernels);
  run(TESSERA_DEVICE_CUDA, "mma_sync", mma, mmaKernels);
  Fake::get().clear(); // (the arrays are host memory again)
  run(TESSERA_DEVICE_CPU, nullptr, cpu, none);
  useBundle("tiny-mix");
  const std::set<std::string> ranTwin = callSet(twinKernels),
                              ranMma = callSet(mmaKernels);
  for (const char *attend : {"tessera_vs_attend_bf16_d64",
                             "tessera_bt_attend_bf16_d64",
                             "tessera_rt_attend_bf16_d64",
                             "tessera_rt_rest_bf16_d64"}) {
    const std::string wg = std::string(attend) + "_wgmma";
    EXPECT_TRUE(ranTwin.count(wg) && !ranTwin.count(attend))
        << attend << ": " << twinKernels;
    EXPECT_TRUE(ranMma.count(attend) && !ranMma.count(wg))
        << attend << ": " << mmaKernels;
  }
  EXPECT_TRUE(ranTwin.count("tessera_vs_select")) << twinKernels;
  auto value = [](uint16_t x) {
    uint32_t u = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return double(f);
  };
  // Twin and mma.sync kernels: the same index, rounding apart.
  double worst = 0;
  for (size_t i = 0; i < twin.size(); ++i)
    worst = std::max(worst, std::abs(value(twin[i]) - value(mma[i])));
  EXPECT_LT(worst, 2e-2);
  // Against the CPU (vertical-slash and block top-k): the mean difference.
  for (int64_t head : {0, 1}) {
    double sum = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t x = 0; x < Dh; ++x) {
        const size_t at = size_t((n * H + head) * Dh + x);
        sum += std::abs(value(twin[at]) - value(cpu[at]));
      }
    EXPECT_LT(sum / double(N * Dh), 5e-3) << "head " << head;
  }
}

/// Per-token head routing (head_active, C API 9) on a CUDA context needs
/// the bundle's permuted kernel (attn-translate --head-routing) and a dense
/// call: the tiny-mix bundle has no such kernel, so the context refuses it
/// by name before any launch (FakeDriverHeadRoutingTest runs it).
TEST_F(FakeDriver, HeadRoutingIsRefusedByName) {
  Layout lay;
  lay.bf16 = true;
  Built b = build(logical({{70, 70}, {70, 70}}, 3), lay);
  onDevice(b);
  std::vector<uint8_t> active(size_t(2 * 70 * H), 1);
  b.d.head_active = active.data();
  b.d.head_active_size = int64_t(active.size());
  EXPECT_EQ(tessera_attention_run(bundle, &b.d),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("head_active"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_EQ(std::string(Fake::get().calls()).find("cuLaunchKernel"),
            std::string::npos);
}

} // namespace
