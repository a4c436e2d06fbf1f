//===- FakeDriverPermutedTest.cpp - layouts on a CUDA context -------------===//
//
// Head groups with layouts (#attn.period_transpose, docs/bundles.md
// "Layouts") through the runtime's CUDA path on the fake driver
// (FakeCuda.cpp: the kernels on the emulator): layer 0 of
// Inputs/permuted.mlir (multi-diagonal and grid groups in the transpose of
// period 64, prompt + grid with a prefix of 32; GQA, 12 heads over 4 kv
// heads) at batch 2, Nq == Nk, Nq < Nk and Nq > Nk on a CUDA context against
// the CPU context's run of the same bundle (itself checked against float64
// by PermutedApiTest). The permuted kernel runs (the fake's launch log), its
// walk and maps uploaded in stream order (no synchronising call); a copy of
// it broken on purpose changes the output (its rows are the ones returned);
// at lengths where cpu::originalOrderReason keeps the original order
// (identity transposes), and for a bundle without the kernel (its manifest
// without permuted_kernel, as bundles emitted before it), it is not
// launched and the output is the same.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "FakeApi.h"
#include "FakeLayerCall.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Fake = FakeApi;

constexpr const char *kPermKernel = "tessera_perm_attend_bf16_d64";

/// Layer 0 (12 heads over 4 kv heads, head_dim 64, bf16) at B, Nq, Nk.
struct Problem : LayerCall {
  Problem(int64_t b, int64_t nq_, int64_t nk_)
      : LayerCall(b, nq_, nk_, 12, 4, 64, 11 + uint64_t(nq_ * 37 + nk_),
                  500.0f) {}

  /// Runs the layer on `device` into o and lse; `log` the driver calls and
  /// the launched kernels (CUDA), separated by '|'. `manifest`: instead of
  /// the bundle's (with its source).
  tessera_status run(tessera_device_kind device, std::vector<uint16_t> &o,
                     std::vector<float> &lse, std::string &log,
                     const std::string *manifest = nullptr) {
    return LayerCall::run(
        device, o, lse, log,
        {std::string(TESSERA_BINARY_DIR) + "/test/bundles/permuted",
         manifest,
         nullptr,
         0x7777,
         {}});
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
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lseRef[i]))
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "row " << i;
    else
      lseWorst = std::max(lseWorst, double(std::abs(lse[i] - lseRef[i])));
  }
  return {worst, lseWorst};
}

constexpr char kPermutedBundle[] = "permuted";
class FakeDriverPermuted : public FakeBundleSuite<kPermutedBundle> {};

using Shape = std::tuple<int64_t, int64_t, int64_t>;

/// The CUDA context (the permuted kernel for the three groups with
/// layouts, the layer's kernels for the rest) equals the CPU context.
TEST_F(FakeDriverPermuted, CudaMatchesTheCpuContext) {
  // At 96 x 96 the prefixed group's transpose is the identity (64 tokens
  // after its prefix of 32): it stays in the original order, the other two
  // run permuted, and the layer's kernels compute every head.
  for (auto [B, nq, nk] : {Shape{2, 300, 300}, Shape{1, 200, 333},
                           Shape{2, 333, 272}, Shape{1, 96, 96}}) {
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
    EXPECT_EQ(ran.count(kPermKernel), 1u) << log;
    // The walks and maps uploaded on the stream; nothing synchronises.
    const std::string driver = log.substr(0, log.find('|'));
    EXPECT_NE(driver.find("cuMemcpyHtoDAsync"), std::string::npos) << log;
    EXPECT_NE(driver.find("cuMemFreeAsync"), std::string::npos) << log;
    EXPECT_EQ(driver.find("ynchronize"), std::string::npos) << log;
    auto [worst, lseWorst] = compare(o, oCpu, lse, lseCpu);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(lseWorst, 1e-3);
  }
}

/// The permuted kernel's rows are the ones returned: its copy broken on
/// purpose (a thread's second row masked by its first row's bits) changes
/// the output.
TEST_F(FakeDriverPermuted, BrokenKernelIsCaught) {
  Problem pr(2, 300, 300);
  std::vector<uint16_t> oCpu, o;
  std::vector<float> lseCpu, lse;
  std::string none, log;
  ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none), TESSERA_OK)
      << pr.error;
  Fake::get().useBundle("broken-permuted-bundle");
  const tessera_status s = pr.run(TESSERA_DEVICE_CUDA, o, lse, log);
  Fake::get().useBundle("permuted");
  ASSERT_EQ(s, TESSERA_OK) << pr.error;
  EXPECT_GT(compare(o, oCpu, lse, lseCpu).first, 0.1)
      << "the broken permuted kernel went unnoticed";
}

/// Where every layout is the identity at the call's lengths (no part after
/// the prefix longer than the period of 64), cpu::originalOrderReason keeps
/// the original order: the permuted kernel is not launched, and the output
/// still equals the CPU context's.
TEST_F(FakeDriverPermuted, IdentityLayoutsRunTheOriginalOrder) {
  for (auto [B, nq, nk] : {Shape{2, 64, 64}, Shape{1, 40, 64}}) {
    SCOPED_TRACE("Nq " + std::to_string(nq) + " Nk " + std::to_string(nk));
    Problem pr(B, nq, nk);
    std::vector<uint16_t> oCpu, o;
    std::vector<float> lseCpu, lse;
    std::string none, log;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none), TESSERA_OK)
        << pr.error;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log), TESSERA_OK) << pr.error;
    const std::set<std::string> ran = splitLog(log.substr(log.find('|') + 1));
    EXPECT_EQ(ran.count(kPermKernel), 0u) << log;
    EXPECT_GT(ran.size(), 0u) << log;
    auto [worst, lseWorst] = compare(o, oCpu, lse, lseCpu);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(lseWorst, 1e-3);
  }
}

/// Kept ranges (interleaved segments): the prompt + grid group's prefix of
/// 32 replaced in the manifest by kept = [0, 32, 100, 120] (two text
/// ranges, the second cut by the shorter lengths). The permuted kernel runs
/// it through the host's maps (token of each slot) and equals the CPU
/// context's run of the same manifest (PermutedApiTest: bit for bit the
/// executor's, itself checked against float64).
TEST_F(FakeDriverPermuted, KeptRangesMatchTheCpuContext) {
  std::string m = slurp(std::string(TESSERA_BINARY_DIR) +
                        "/test/bundles/permuted/manifest.json");
  const std::regex prefix("\"prefix\": 32");
  const std::string kept = std::regex_replace(
      m, prefix, "\"kept\": [0, 32, 100, 120], \"prefix\": 0");
  ASSERT_NE(kept, m);
  for (auto [B, nq, nk] :
       {Shape{2, 300, 300}, Shape{1, 110, 333}, Shape{1, 333, 272}}) {
    SCOPED_TRACE("B " + std::to_string(B) + " Nq " + std::to_string(nq) +
                 " Nk " + std::to_string(nk));
    Problem pr(B, nq, nk);
    std::vector<uint16_t> oCpu, o;
    std::vector<float> lseCpu, lse;
    std::string none, log;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none, &kept), TESSERA_OK)
        << pr.error;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log, &kept), TESSERA_OK)
        << pr.error;
    const std::set<std::string> ran = splitLog(log.substr(log.find('|') + 1));
    EXPECT_EQ(ran.count(kPermKernel), 1u) << log;
    auto [worst, lseWorst] = compare(o, oCpu, lse, lseCpu);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(lseWorst, 1e-3);
  }
}

/// Older manifests: without the tables' entry that leaves out the
/// permuted groups' heads (permuted_position), the layer's kernels compute
/// them too and the permuted kernel overwrites their rows; without the
/// permuted kernel as well (bundles emitted before it), the layouts run in
/// the original order. Both exact.
TEST_F(FakeDriverPermuted, OlderManifestsRunExactly) {
  const std::string full = slurp(std::string(TESSERA_BINARY_DIR) +
                                 "/test/bundles/permuted/manifest.json");
  const std::regex entry(
      "\"permuted_position\": [0-9]+,|\"permuted_slots\": \\[[^\\]]*\\],");
  const std::string noEntry = std::regex_replace(full, entry, "");
  ASSERT_NE(noEntry, full);
  std::string noKernel = noEntry;
  const std::string field =
      "\"permuted_kernel\": \"" + std::string(kPermKernel) + "\",";
  const size_t at = noKernel.find(field);
  ASSERT_NE(at, std::string::npos);
  noKernel.erase(at, field.size());
  Problem pr(2, 300, 300);
  std::vector<uint16_t> oCpu;
  std::vector<float> lseCpu;
  std::string none;
  ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, oCpu, lseCpu, none), TESSERA_OK)
      << pr.error;
  const std::string *manifests[] = {&noEntry, &noKernel};
  for (const std::string *m : manifests) {
    SCOPED_TRACE(m == &noEntry ? "no permuted_position" : "no permuted_kernel");
    std::vector<uint16_t> o;
    std::vector<float> lse;
    std::string log;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CUDA, o, lse, log, m), TESSERA_OK)
        << pr.error;
    const std::set<std::string> ran = splitLog(log.substr(log.find('|') + 1));
    EXPECT_EQ(ran.count(kPermKernel), m == &noEntry ? 1u : 0u) << log;
    auto [worst, lseWorst] = compare(o, oCpu, lse, lseCpu);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(lseWorst, 1e-3);
  }
}

} // namespace
