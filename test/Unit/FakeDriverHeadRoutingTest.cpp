//===- FakeDriverHeadRoutingTest.cpp - head_active on a CUDA context ------===//
//
// Per-token head routing (tessera.h's head_active; docs/runtime.md,
// "Per-token head routing") through the runtime's CUDA path on the fake
// driver (FakeCuda.cpp: the kernels on the emulator): layer 0 of
// test/Python/Inputs/head_routing.mlir (causal, windows, an A-shape, a
// bidirectional window and a skipped head; GQA, 6 heads over 3 kv heads;
// bf16, head_dim 64) emitted with --head-routing, at batch 2, Nq == Nk,
// Nq < Nk and Nq > Nk, lengths that are and are not multiples of 64, with
// a head of no active row, one of every row, one of a single row and
// random rows, on a CUDA context against the CPU context's run of the same
// bundle and mask (itself checked against float64 by HeadRoutingTest). The
// fill kernel and the permuted kernel run, the layer's attention kernels
// do not, the tables are uploaded and freed in stream order (no
// synchronising call); a copy of the kernel broken on purpose changes the
// output. Refused by name before any launch: head_active in device
// memory, of the wrong size, with a call other than dense, in a bundle
// without the permuted kernel, and the backward on CUDA.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "FakeApi.h"
#include "FakeLayerCall.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Fake = FakeApi;

constexpr const char *kPermKernel = "tessera_perm_attend_bf16_d64";
constexpr int64_t kHeads = 6;

/// Layer 0 at B, Nq, Nk with a head_active mask: in batch entry 0, head 0
/// has no active row, head 1 every row, head 2 one (row 70 where Nq > 70);
/// the rest are active about one in three.
struct Problem : LayerCall {
  std::vector<uint8_t> active;

  Problem(int64_t b, int64_t nq_, int64_t nk_)
      : LayerCall(b, nq_, nk_, kHeads, 3, 64, 17 + uint64_t(nq_ * 31 + nk_),
                  500.0f) {
    active.resize(size_t(B * nq * H));
    for (int64_t x = 0; x < B; ++x)
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t h = 0; h < H; ++h) {
          uint8_t on = next() % 3 == 0;
          if (x == 0 && h < 3)
            on = h == 1 || (h == 2 && i == 70);
          active[size_t((x * nq + i) * H + h)] = on;
        }
  }

  /// Runs layer 0 with the mask (`decorate` may change the call after);
  /// `dir`: the bundle.
  tessera_status
  run(tessera_device_kind device, std::vector<uint16_t> &o,
      std::vector<float> &lse, std::string &log,
      const std::string *manifest = nullptr,
      std::function<void(tessera_attention_desc &, bool)> more = nullptr) {
    return LayerCall::run(
        device, o, lse, log,
        {std::string(TESSERA_BINARY_DIR) + "/test/bundles/head-routing",
         manifest, nullptr, 0x7777, [&](tessera_attention_desc &d, bool cuda) {
           d.head_active = active.data();
           d.head_active_size = int64_t(active.size());
           if (more)
             more(d, cuda);
         }});
  }
};

/// The largest difference of O and of LSE (finite rows) between two runs;
/// -inf rows must agree.
std::pair<double, double> compare(const std::vector<uint16_t> &o,
                                  const std::vector<uint16_t> &oRef,
                                  const std::vector<float> &lse,
                                  const std::vector<float> &lseRef) {
  double worst = 0, lseWorst = 0;
  for (size_t i = 0; i < o.size(); ++i)
    worst = std::max(worst, std::abs(bf16Value(o[i]) - bf16Value(oRef[i])));
  int64_t infs = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lseRef[i]))
      infs += !(std::isinf(lse[i]) && lse[i] < 0);
    else
      lseWorst = std::max(lseWorst, double(std::abs(lse[i] - lseRef[i])));
  }
  EXPECT_EQ(infs, 0) << "rows of LSE -inf on the CPU context only";
  return {worst, lseWorst};
}

constexpr char kHeadRoutingBundle[] = "head-routing";
class FakeDriverHeadRouting : public FakeBundleSuite<kHeadRoutingBundle> {};

using Shape = std::tuple<int64_t, int64_t, int64_t>;

/// The CUDA context (the fill kernel for the skipped head, the permuted
/// kernel over the routed tables for the others) equals the CPU context.
TEST_F(FakeDriverHeadRouting, CudaMatchesTheCpuContext) {
  for (auto [B, nq, nk] : {Shape{2, 200, 200}, Shape{1, 130, 333},
                           Shape{2, 333, 150}, Shape{1, 192, 256}}) {
    SCOPED_TRACE("B " + std::to_string(B) + " Nq " + std::to_string(nq) +
                 " Nk " + std::to_string(nk));
    Problem pr(B, nq, nk);
    std::vector<uint16_t> oCpu, o;
    std::vector<float> lseCpu, lse;
    std::string none, log;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none), TESSERA_OK)
        << pr.error;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log), TESSERA_OK) << pr.error;
    const std::set<std::string> ran = splitLog(log.substr(log.find('|') + 1));
    EXPECT_EQ(ran,
              (std::set<std::string>{kPermKernel, "tessera_fill_skipped_d64"}))
        << log;
    // The tables uploaded on the stream and freed in its order; nothing
    // synchronises.
    const std::string driver = log.substr(0, log.find('|'));
    EXPECT_NE(driver.find("cuMemcpyHtoDAsync"), std::string::npos) << log;
    EXPECT_NE(driver.find("cuMemFreeAsync"), std::string::npos) << log;
    EXPECT_EQ(driver.find("ynchronize"), std::string::npos) << log;
    auto [worst, lseWorst] = compare(o, oCpu, lse, lseCpu);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(lseWorst, 1e-3);
    // The active pairs have outputs (about a third of the computed heads'
    // rows, less the rows without keys where Nq > Nk).
    int64_t nonzero = 0;
    for (uint16_t x : oCpu)
      nonzero += (x & 0x7fff) != 0;
    EXPECT_GT(nonzero, int64_t(o.size()) / 10);
    std::printf("B %lld Nq %lld Nk %lld: O %.2e, LSE %.2e, %lld of %zu "
                "nonzero\n",
                (long long)B, (long long)nq, (long long)nk, worst, lseWorst,
                (long long)nonzero, o.size());
    // Inactive pairs are exactly O = 0 (the CPU context's convention).
    for (int64_t i = 0; i < nq; ++i)
      EXPECT_EQ(o[size_t(i * kHeads * 64)], 0) << "row " << i;
  }
}

/// The permuted kernel's rows are the ones returned: its copy broken on
/// purpose (a thread's second row masked by its first row's bits) changes
/// the output.
TEST_F(FakeDriverHeadRouting, BrokenKernelIsCaught) {
  Problem pr(2, 200, 200);
  std::vector<uint16_t> oCpu, o;
  std::vector<float> lseCpu, lse;
  std::string none, log;
  ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none), TESSERA_OK)
      << pr.error;
  Fake::get().useBundle("broken-head-routing");
  const tessera_status s = pr.run(TESSERA_DEVICE_CUDA, o, lse, log);
  Fake::get().useBundle("head-routing");
  ASSERT_EQ(s, TESSERA_OK) << pr.error;
  EXPECT_GT(compare(o, oCpu, lse, lseCpu).first, 0.1)
      << "the broken permuted kernel went unnoticed";
}

/// Bad head_active, and calls the CUDA path does not take, are refused by
/// name before any launch.
TEST_F(FakeDriverHeadRouting, RefusedByName) {
  struct Bad {
    const char *what;
    tessera_status status;
    const char *says;
    std::function<void(tessera_attention_desc &, bool)> change;
  };
  std::vector<uint8_t> device(size_t(2 * 100 * kHeads), 1);
  const std::vector<Bad> bads = {
      {"device memory", TESSERA_ERROR_WRONG_DEVICE,
       "head_active is CUDA device memory",
       [&](tessera_attention_desc &d, bool) {
         Fake::get().registerRange(device.data(), device.size());
         d.head_active = device.data();
       }},
      {"short", TESSERA_ERROR_SHAPE_MISMATCH, "head_active_size",
       [](tessera_attention_desc &d, bool) { --d.head_active_size; }},
      {"null", TESSERA_ERROR_NULL_POINTER, "head_active is null",
       [](tessera_attention_desc &d, bool) { d.head_active = nullptr; }},
      {"head range", TESSERA_ERROR_INVALID_ARGUMENT, "dense calls only",
       [](tessera_attention_desc &d, bool) {
         d.head_count = kHeads;
         d.head_start = 0;
       }},
  };
  for (const Bad &b : bads) {
    SCOPED_TRACE(b.what);
    Problem pr(2, 100, 100);
    std::vector<uint16_t> o;
    std::vector<float> lse;
    std::string log;
    EXPECT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log, nullptr, b.change),
              b.status)
        << pr.error;
    EXPECT_NE(pr.error.find(b.says), std::string::npos) << pr.error;
    EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
  }
  // A bundle without the permuted kernel (emitted without --head-routing).
  std::string manifest = slurp(std::string(TESSERA_BINARY_DIR) +
                               "/test/bundles/head-routing/manifest.json");
  const std::string field =
      "\"permuted_kernel\": \"" + std::string(kPermKernel) + "\",";
  const size_t at = manifest.find(field);
  ASSERT_NE(at, std::string::npos);
  manifest.erase(at, field.size());
  Problem pr(2, 100, 100);
  std::vector<uint16_t> o;
  std::vector<float> lse;
  std::string log;
  EXPECT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log, &manifest),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(pr.error.find("--head-routing"), std::string::npos) << pr.error;
  EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
  // A bundle whose permuted kernel predates the routed tables (no
  // permuted_routes): its kernel would ignore them and read its walk past
  // the end, so the call is refused before any launch.
  std::string old = manifest;
  old.insert(at, field);
  const std::string routes = "\"permuted_routes\": true";
  const size_t r = old.find(routes);
  ASSERT_NE(r, std::string::npos);
  old.replace(r, routes.size(), "\"permuted_routes\": false");
  log.clear();
  EXPECT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log, &old),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(pr.error.find("emitted before it took head routing"),
            std::string::npos)
      << pr.error;
  EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
}

/// The backward of a routed call on a CUDA context is refused by name
/// (the CPU context runs it): no CUDA backward kernel skips inactive rows.
TEST_F(FakeDriverHeadRouting, BackwardIsRefusedByName) {
  Problem pr(1, 100, 100);
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CUDA, 0, &ctx), TESSERA_OK)
      << tessera_last_error();
  const std::string dir =
      std::string(TESSERA_BINARY_DIR) + "/test/bundles/head-routing";
  ASSERT_EQ(tessera_bundle_load_file(ctx, dir.c_str(), &bundle), TESSERA_OK)
      << tessera_last_error();
  const size_t n = size_t(pr.nq * kHeads * 64), kvN = size_t(pr.nk * 3 * 64);
  std::vector<uint16_t> o(n), dO(n), dq(n), dk(kvN), dv(kvN);
  std::vector<float> lse(size_t(kHeads * pr.nq));
  auto tensor = [&](void *data, int64_t seq, int64_t heads) {
    return tessera_tensor{data, TESSERA_DTYPE_BF16, 1,          seq, heads,
                          64,   seq * heads * 64,   heads * 64, 64};
  };
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.q = tensor(pr.q.data(), pr.nq, kHeads);
  d.k = tensor(pr.k.data(), pr.nk, 3);
  d.v = tensor(pr.v.data(), pr.nk, 3);
  d.o = tensor(o.data(), pr.nq, kHeads);
  d.lse = lse.data();
  d.cuda_stream = reinterpret_cast<void *>(0x5eed);
  d.head_active = pr.active.data();
  d.head_active_size = int64_t(pr.active.size());
  FakeApi &f = Fake::get();
  f.clear();
  for (auto *t : {&pr.q, &pr.k, &pr.v, &o, &dO, &dq, &dk, &dv})
    f.registerRange(t->data(), t->size() * 2);
  f.registerRange(lse.data(), lse.size() * 4);
  const tessera_tensor tdO = tensor(dO.data(), pr.nq, kHeads),
                       tdq = tensor(dq.data(), pr.nq, kHeads),
                       tdk = tensor(dk.data(), pr.nk, 3),
                       tdv = tensor(dv.data(), pr.nk, 3);
  EXPECT_EQ(
      tessera_attention_backward(bundle, &d, &tdO, nullptr, &tdq, &tdk, &tdv),
      TESSERA_ERROR_INVALID_ARGUMENT);
  const std::string error = tessera_last_error();
  EXPECT_NE(error.find("head_active"), std::string::npos) << error;
  EXPECT_NE(error.find("backward"), std::string::npos) << error;
  EXPECT_EQ(std::string(f.calls()).find("cuLaunchKernel"), std::string::npos);
  f.clear();
  tessera_bundle_destroy(bundle);
  tessera_context_destroy(ctx);
}

} // namespace
