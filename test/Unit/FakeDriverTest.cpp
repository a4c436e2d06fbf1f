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

#include "SeqCalls.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

using namespace tessera;
using namespace tessera::seqcalls;

namespace {

/// The fake driver's test entry points.
struct Fake {
  void (*registerRange)(const void *, size_t) = nullptr;
  void (*clear)() = nullptr;
  const char *(*calls)() = nullptr;

  static Fake &get() {
    static Fake f = [] {
      Fake x;
      void *h = dlopen(TESSERA_FAKECUDA, RTLD_NOW | RTLD_LOCAL);
      EXPECT_NE(h, nullptr) << dlerror();
      if (!h)
        return x;
      x.registerRange = reinterpret_cast<void (*)(const void *, size_t)>(
          dlsym(h, "fakecuda_register"));
      x.clear = reinterpret_cast<void (*)()>(dlsym(h, "fakecuda_clear"));
      x.calls = reinterpret_cast<const char *(*)()>(dlsym(h, "fakecuda_calls"));
      return x;
    }();
    return f;
  }
};

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
/// only context switches, pointer queries and launches, and a split decode
/// call one stream-ordered allocation and free of its workspace (graphs
/// capture those as memory nodes): nothing that synchronises with the
/// device.
TEST_F(FakeDriver, EveryModeRunsWithoutSynchronising) {
  const std::set<std::string> allowed = {
      "cuCtxPushCurrent", "cuCtxPopCurrent", "cuPointerGetAttribute",
      "cuLaunchKernel",   "cuMemAllocAsync", "cuMemFreeAsync"};
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

} // namespace
