//===- FakeDriverBlockIndexTest.cpp - block indices on a CUDA context -----===//
//
// Caller-provided block indices (#attn.block_index, C API 8) through the
// runtime's CUDA path on the fake driver (FakeCuda.cpp: the kernels on the
// emulator): layer 0 of Inputs/dynamic-block-index.mlir (the lists alone,
// under causal, a window and a difference; GQA; batch 2; Nq < Nk and
// Nq > Nk) on a CUDA context against the CPU context's run of the same
// bundle, by the sm_90a twins and by the mma.sync kernels; the index is
// host memory, uploaded in stream order (no synchronising call); bad
// indices refused by name before any launch.
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
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Fake = FakeApi;

/// Layer 0 (H = 4 heads over KV = 2, head_dim 64, bf16, block_q = block_k
/// = 64) at batch B, Nq, Nk with a random index that has empty rows.
struct Problem : LayerCall {
  static constexpr int64_t BQ = 64, BK = 64;
  int64_t rows;
  std::vector<int32_t> offsets, cols;

  Problem(int64_t b, int64_t nq_, int64_t nk_)
      : LayerCall(b, nq_, nk_, 4, 2, 64, 7 + uint64_t(nq_ * 31 + nk_),
                  1000.0f) {
    // R = floor((Nk - 1) / BQ) - floor((Nk - Nq) / BQ) + 1 (docs/runtime.md).
    auto floorDiv = [](int64_t a, int64_t d) {
      return a >= 0 ? a / d : -((-a + d - 1) / d);
    };
    rows = floorDiv(nk - 1, BQ) - floorDiv(nk - nq, BQ) + 1;
    const int64_t keyBlocks = (nk + BK - 1) / BK;
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t i = 0; i <= rows; ++i) {
        offsets.push_back(int32_t(cols.size()));
        if (i == rows || (i + bh) % 4 == 1)
          continue; // an empty row
        for (int64_t j = 0; j < keyBlocks; ++j)
          if (next() % 3 == 0 || j == i || j == (i + bh) % keyBlocks)
            cols.push_back(int32_t(j));
      }
  }

  /// Runs the layer on `device` (path: TESSERA_KERNEL_PATH or null) into
  /// o and lse; returns the status, `log` the run's driver calls (CUDA).
  tessera_status run(tessera_device_kind device, const char *path,
                     std::vector<uint16_t> &o, std::vector<float> &lse,
                     std::string &log, const int32_t *offs = nullptr,
                     const int32_t *cs = nullptr, bool deviceIndex = false,
                     std::string dir = std::string(TESSERA_BINARY_DIR) +
                                       "/test/bundles/dynamic-block-index") {
    auto index = [&](tessera_attention_desc &d, bool cuda) {
      d.block_index_offsets = offs ? offs : offsets.data();
      d.block_index_cols = cs ? cs : cols.data();
      d.block_index_nnz = int64_t(cols.size());
      d.block_index_rows = rows;
      if (cuda && deviceIndex)
        FakeApi::get().registerRange(offsets.data(), offsets.size() * 4);
    };
    return LayerCall::run(device, o, lse, log, {dir, nullptr, path, 0, index});
  }
};

constexpr char kBlockIndexBundle[] = "dynamic-block-index";
class FakeDriverBlockIndex : public FakeBundleSuite<kBlockIndexBundle> {};

/// The CUDA context's output (twins, then mma.sync kernels) equals the CPU
/// context's to bf16 rounding; empty rows give 0 and LSE -inf on both.
TEST_F(FakeDriverBlockIndex, CudaMatchesTheCpuContext) {
  for (auto [B, nq, nk] : {std::tuple<int64_t, int64_t, int64_t>{2, 150, 260},
                           {2, 260, 150},
                           {1, 200, 200}}) {
    SCOPED_TRACE("B " + std::to_string(B) + " Nq " + std::to_string(nq) +
                 " Nk " + std::to_string(nk));
    Problem pr(B, nq, nk);
    std::vector<uint16_t> oCpu;
    std::vector<float> lseCpu;
    std::string none;
    ASSERT_EQ(pr.run(TESSERA_DEVICE_CPU, nullptr, oCpu, lseCpu, none),
              TESSERA_OK)
        << pr.error;
    for (const char *path : {(const char *)nullptr, "mma_sync"}) {
      SCOPED_TRACE(path ? path : "default (sm_90a twins)");
      std::vector<uint16_t> o;
      std::vector<float> lse;
      std::string log;
      ASSERT_EQ(pr.run(TESSERA_DEVICE_CUDA, path, o, lse, log), TESSERA_OK)
          << pr.error;
      const std::set<std::string> ran = splitLog(log.substr(log.find('|') + 1));
      const std::string attend = "tessera_bi_attend_bf16_d64";
      const bool twin = ran.count(attend + "_wgmma") > 0;
      EXPECT_EQ(twin, path == nullptr) << log;
      EXPECT_EQ(ran.count(attend) > 0, path != nullptr) << log;
      // The index uploaded on the stream; nothing synchronises.
      const std::string driver = log.substr(0, log.find('|'));
      EXPECT_NE(driver.find("cuMemcpyHtoDAsync"), std::string::npos) << log;
      EXPECT_EQ(driver.find("ynchronize"), std::string::npos) << log;
      double worst = 0;
      for (size_t i = 0; i < o.size(); ++i)
        worst = std::max(worst, std::abs(bf16Value(o[i]) - bf16Value(oCpu[i])));
      EXPECT_LT(worst, 2e-2);
      int64_t empty = 0;
      double lseWorst = 0;
      for (size_t i = 0; i < lse.size(); ++i) {
        if (std::isinf(lseCpu[i])) {
          ++empty;
          EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "row " << i;
        } else {
          lseWorst = std::max(lseWorst, double(std::abs(lse[i] - lseCpu[i])));
        }
      }
      EXPECT_GT(empty, 0); // rows without keys (head 0: the lists alone)
      EXPECT_LT(lseWorst, 1e-3);
    }
  }
}

/// Bad indices are refused by name on a CUDA context, before any launch;
/// an index in device memory too (host memory on every context).
TEST_F(FakeDriverBlockIndex, BadIndicesRefusedByName) {
  Problem pr(2, 150, 260);
  std::vector<uint16_t> o;
  std::vector<float> lse;
  std::string log;
  // Head 2 of batch entry 1, row 2: its first two key blocks swapped.
  std::vector<int32_t> cols = pr.cols, offs = pr.offsets;
  const size_t row = size_t((1 * pr.H + 2) * (pr.rows + 1) + 2);
  ASSERT_GE(offs[row + 1] - offs[row], 2);
  std::swap(cols[size_t(offs[row])], cols[size_t(offs[row]) + 1]);
  EXPECT_EQ(
      pr.run(TESSERA_DEVICE_CUDA, nullptr, o, lse, log, nullptr, cols.data()),
      TESSERA_ERROR_INVALID_ARGUMENT);
  std::string e = pr.error;
  EXPECT_NE(e.find("block_index_cols of batch entry 1, head 2, query block "
                   "row 2"),
            std::string::npos)
      << e;
  EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
  // A key block past ceil(Nk / block_k).
  cols = pr.cols;
  cols[size_t(offs[row])] = 5;
  EXPECT_EQ(
      pr.run(TESSERA_DEVICE_CUDA, nullptr, o, lse, log, nullptr, cols.data()),
      TESSERA_ERROR_INVALID_ARGUMENT);
  e = pr.error;
  EXPECT_NE(e.find("key block 5 is outside [0, 5)"), std::string::npos) << e;
  // Offsets that decrease.
  offs[row + 1] = offs[row] - 1;
  EXPECT_EQ(pr.run(TESSERA_DEVICE_CUDA, nullptr, o, lse, log, offs.data()),
            TESSERA_ERROR_INVALID_ARGUMENT);
  e = pr.error;
  EXPECT_NE(e.find("block_index_offsets of batch entry 1, head 2"),
            std::string::npos)
      << e;
  // The index in device memory.
  EXPECT_EQ(
      pr.run(TESSERA_DEVICE_CUDA, nullptr, o, lse, log, nullptr, nullptr, true),
      TESSERA_ERROR_WRONG_DEVICE);
  e = pr.error;
  EXPECT_NE(e.find("block_index_offsets is CUDA device memory"),
            std::string::npos)
      << e;
  EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
}

/// A bundle emitted before tessera_bi_attend (its block_index groups list
/// no kernels, no twins): it still loads, the CPU context runs it, and a
/// CUDA context refuses the layer by name before any launch.
TEST_F(FakeDriverBlockIndex, OlderBundleRefusedOnCudaByName) {
  const std::string from =
      std::string(TESSERA_BINARY_DIR) + "/test/bundles/dynamic-block-index";
  const std::string dir =
      std::string(TESSERA_BINARY_DIR) + "/test/fake-block-index-older";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir +
                         "' && cp '" + from + "/bundle.cu' '" + dir + "/'")
                            .c_str()),
            0);
  std::ifstream in(from + "/manifest.json");
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  const std::string before = text;
  text = std::regex_replace(text, std::regex("\"wgmma\": \\{[^{}]*\\},\n"), "");
  text = std::regex_replace(
      text,
      std::regex("\"kernels\": \\[\\s*\"tessera_bi_attend_[a-z0-9_]*\"\\s*\\]"),
      "\"kernels\": []");
  ASSERT_NE(text, before);
  // The six groups' kernels emptied (and their twins gone).
  auto empties = [](const std::string &t) {
    size_t n = 0;
    for (size_t at = t.find("\"kernels\": []"); at != std::string::npos;
         at = t.find("\"kernels\": []", at + 1))
      ++n;
    return n;
  };
  ASSERT_EQ(empties(text), empties(before) + 6);
  std::ofstream(dir + "/manifest.json") << text;
  Problem pr(1, 150, 260);
  std::vector<uint16_t> o, oCpu;
  std::vector<float> lse, lseCpu;
  std::string log, none;
  EXPECT_EQ(pr.run(TESSERA_DEVICE_CPU, nullptr, oCpu, lseCpu, none, nullptr,
                   nullptr, false, dir),
            TESSERA_OK)
      << pr.error;
  EXPECT_EQ(pr.run(TESSERA_DEVICE_CUDA, nullptr, o, lse, log, nullptr, nullptr,
                   false, dir),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(pr.error.find("the block_index group of head 0 has no CUDA "
                          "kernel in this bundle"),
            std::string::npos)
      << pr.error;
  EXPECT_EQ(log.find("cuLaunchKernel"), std::string::npos) << log;
}

} // namespace
