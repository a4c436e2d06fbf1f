//===- FakeLayerCall.h - one dense bf16 layer call, CPU or fake CUDA -----===//
//
// The scaffolding the fake-driver tests of a feature share
// (FakeDriverBlockIndexTest.cpp, FakeDriverPermutedTest.cpp,
// FakeDriverHeadRoutingTest.cpp): their suites' fake-driver set-up, random bf16
// inputs of one dense call, the call run on a CPU or CUDA context through
// tessera_attention_run (on CUDA its host arrays registered with the fake
// driver as device memory, and the driver calls and kernels it made
// logged), and small helpers to read the results.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_FAKELAYERCALL_H
#define TESSERA_TEST_FAKELAYERCALL_H

#include "tessera/tessera.h"

#include "FakeApi.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

/// A suite whose tests run on the fake driver, its kernels those of the
/// test bundle `Bundle` (tiny-mix's again after the suite).
template <const char *Bundle> class FakeBundleSuite : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    setenv("TESSERA_LIBCUDA", TESSERA_FAKECUDA, 1);
    setenv("TESSERA_CACHE_DIR", TESSERA_BINARY_DIR "/test/fake-cuda-cache", 1);
    ASSERT_NE(FakeApi::get().useBundle, nullptr);
    FakeApi::get().useBundle(Bundle);
  }
  static void TearDownTestSuite() { FakeApi::get().useBundle("tiny-mix"); }
};

/// The value of a bf16 bit pattern.
inline double bf16Value(uint16_t x) {
  uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return double(f);
}

/// The entries of a comma-separated log.
inline std::set<std::string> splitLog(const std::string &log) {
  std::set<std::string> s;
  std::stringstream in(log);
  for (std::string c; std::getline(in, c, ',');)
    s.insert(c);
  return s;
}

/// A file's bytes.
inline std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// One dense call of a bf16 layer: B batch entries, Nq queries of H heads,
/// Nk keys of KV heads, head_dim Dh, [B, N, heads, Dh] contiguous; q, k, v
/// uniform in [-1000, 1000] / `divisor`, rounded to bf16, from an LCG
/// seeded with `seed`.
struct LayerCall {
  int64_t B, nq, nk, H, KV, Dh;
  std::vector<uint16_t> q, k, v;
  std::string error; ///< the last run's tessera_last_error()
  uint64_t state;

  LayerCall(int64_t b, int64_t nq_, int64_t nk_, int64_t h, int64_t kv,
            int64_t dh, uint64_t seed, float divisor)
      : B(b), nq(nq_), nk(nk_), H(h), KV(kv), Dh(dh), state(seed) {
    auto fill = [&](std::vector<uint16_t> &t, int64_t n) {
      t.resize(size_t(n));
      for (uint16_t &x : t)
        x = bf16(float(int64_t(next() % 2001) - 1000) / divisor);
    };
    fill(q, B * nq * H * Dh);
    fill(k, B * nk * KV * Dh);
    fill(v, B * nk * KV * Dh);
  }

  /// The generator's next value (also for a test's own random choices).
  uint64_t next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  }

  static uint16_t bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
  }

  /// What run() takes besides the device and outputs.
  struct Options {
    std::string dir;             ///< the bundle directory
    const std::string *manifest; ///< instead of the bundle's (its source)
    const char *path;            ///< TESSERA_KERNEL_PATH while loading
    uint16_t oFill;              ///< o's bits before the call
    /// Sets the feature's fields of the call; `cuda` on a CUDA context.
    std::function<void(tessera_attention_desc &, bool cuda)> decorate;
  };

  /// Runs layer 0 on `device` into o and lse (o filled with opt.oFill, lse
  /// with 7 first); returns the status, `log` the driver calls and the
  /// launched kernels (CUDA), separated by '|'. No host buffer is device
  /// memory but those registered here (a test before may have left its
  /// ranges, which these allocations can reuse).
  tessera_status run(tessera_device_kind device, std::vector<uint16_t> &o,
                     std::vector<float> &lse, std::string &log,
                     const Options &opt) {
    tessera_context *ctx = nullptr;
    tessera_bundle *bundle = nullptr;
    EXPECT_EQ(tessera_context_create(device, 0, &ctx), TESSERA_OK)
        << tessera_last_error();
    if (opt.path)
      setenv("TESSERA_KERNEL_PATH", opt.path, 1);
    if (opt.manifest) {
      const std::string src = slurp(opt.dir + "/bundle.cu");
      EXPECT_EQ(tessera_bundle_load_memory(ctx, opt.manifest->data(),
                                           opt.manifest->size(), src.data(),
                                           src.size(), &bundle),
                TESSERA_OK)
          << tessera_last_error();
    } else {
      EXPECT_EQ(tessera_bundle_load_file(ctx, opt.dir.c_str(), &bundle),
                TESSERA_OK)
          << tessera_last_error();
    }
    unsetenv("TESSERA_KERNEL_PATH");
    o.assign(size_t(B * nq * H * Dh), opt.oFill);
    lse.assign(size_t(B * H * nq), 7.0f);
    auto tensor = [&](void *data, int64_t seq, int64_t heads) {
      return tessera_tensor{data, TESSERA_DTYPE_BF16, B,          seq, heads,
                            Dh,   seq * heads * Dh,   heads * Dh, Dh};
    };
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = 0;
    d.q = tensor(q.data(), nq, H);
    d.k = tensor(k.data(), nk, KV);
    d.v = tensor(v.data(), nk, KV);
    d.o = tensor(o.data(), nq, H);
    d.lse = lse.data();
    const bool cuda = device == TESSERA_DEVICE_CUDA;
    FakeApi &f = FakeApi::get();
    f.clear();
    if (cuda) {
      for (const auto &t : {&q, &k, &v, &o})
        f.registerRange(t->data(), t->size() * 2);
      f.registerRange(lse.data(), lse.size() * 4);
      d.cuda_stream = reinterpret_cast<void *>(0x5eed);
    }
    if (opt.decorate)
      opt.decorate(d, cuda);
    tessera_status s = tessera_attention_run(bundle, &d);
    error = tessera_last_error(); // (before destroy clears it)
    if (cuda) {
      log = std::string(f.calls()) + "|" + f.kernels();
      f.clear(); // (the arrays are host memory again)
    }
    tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
    return s;
  }
};

} // namespace

#endif // TESSERA_TEST_FAKELAYERCALL_H
