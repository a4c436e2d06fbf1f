//===- LimitsTest.cpp - parameters and shapes at the documented limits ----===//
//
// Regression tests for answers that were wrong or crashed at the limits:
// products of two parameters past 2^62 (strided shards), sums past the
// single-parameter limit (multi-diagonal offset + width) accepted by the
// compiler but refused by the runtime, and a 9-key window over 2^28 keys
// whose CPU run used to convert every key per thread (std::bad_alloc).
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Half.h"
#include "tessera/tessera.h"

#include "mlir/AsmParser/AsmParser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace tessera;

namespace {

constexpr int64_t D = 64;

struct Bundle {
  Bundle() {
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/bundles/limits";
    status = tessera_bundle_load_file(ctx, dir.c_str(), &bundle);
  }
  ~Bundle() {
    if (bundle)
      tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
  }
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  tessera_status status;
};

/// Runs `layer` on random bf16 inputs and checks every row's LSE against a
/// float64 reference masked by `pattern` (the layer's, parsed anew).
void checkLayer(tessera_bundle *b, int64_t layer, int64_t heads,
                const std::string &pattern, int64_t nq, int64_t nk) {
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  auto attr = llvm::cast<attn::PatternAttrInterface>(
      mlir::parseAttribute(pattern, &ctx));
  semantics::Pattern ref = semantics::fromAttr(attr);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<uint16_t> q(nq * heads * D), k(nk * heads * D),
      v(nk * heads * D), o(nq * heads * D);
  for (auto *x : {&q, &k, &v})
    for (uint16_t &e : *x)
      e = cpu::floatToBf16(dist(rng));
  std::vector<float> lse(heads * nq);
  auto t = [&](std::vector<uint16_t> &x, int64_t s) {
    return tessera_tensor{x.data(), TESSERA_DTYPE_BF16, 1, s, heads, D,
                          s * heads * D, heads * D, D};
  };
  tessera_tensor tq = t(q, nq), tk = t(k, nk), tv = t(v, nk), to = t(o, nq);
  ASSERT_EQ(tessera_attention(b, layer, &tq, &tk, &tv, &to, lse.data(), 0,
                              nullptr),
            TESSERA_OK)
      << tessera_last_error();
  double scale = 1.0 / std::sqrt(double(D));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      double m = -INFINITY;
      std::vector<double> s;
      for (int64_t j = 0; j < nk; ++j) {
        if (!semantics::allowed(ref, i, j, h, nq, nk, heads))
          continue;
        double dot = 0;
        for (int64_t x = 0; x < D; ++x)
          dot += double(cpu::bf16ToFloat(q[(i * heads + h) * D + x])) *
                 cpu::bf16ToFloat(k[(j * heads + h) * D + x]);
        s.push_back(dot * scale);
        m = std::max(m, s.back());
      }
      double l = 0;
      for (double x : s)
        l += std::exp(x - m);
      double want = s.empty() ? -INFINITY : m + std::log(l);
      double got = lse[h * nq + i];
      if (s.empty()) {
        ASSERT_EQ(got, -INFINITY) << pattern << " head " << h << " row " << i;
        for (int64_t x = 0; x < D; ++x)
          ASSERT_EQ(o[(i * heads + h) * D + x], 0) << pattern;
      } else {
        ASSERT_NEAR(got, want, 1e-3 * (1 + std::abs(want)))
            << pattern << " head " << h << " row " << i;
      }
    }
}

TEST(Limits, ProductsAndSumsPastTheParameterLimit) {
  Bundle b;
  ASSERT_EQ(b.status, TESSERA_OK) << tessera_last_error();
  // Head 0 sees shard 0 (every key below 2^40), head 1 shard 1 (none): the
  // product 2^80 used to wrap to 0 and head 1 saw every key.
  checkLayer(b.bundle, 0, 2,
             "#attn.strided_shards<shards = 1099511627776, block = "
             "1099511627776>",
             70, 90);
  checkLayer(b.bundle, 1, 1,
             "#attn.strided_shards<shards = 3, block = 1099511627776>", 70,
             90);
  checkLayer(b.bundle, 2, 1,
             "#attn.multi_diagonal<offsets = [1099511627776], width = "
             "1099511627776>",
             70, 90);
}

TEST(Limits, LongKeysWithStrideZeroUseBoundedMemory) {
  Bundle b;
  ASSERT_EQ(b.status, TESSERA_OK) << tessera_last_error();
  // One query over 2^28 keys that are all the same row (sequence stride 0):
  // the window sees the last 9, each with the same score, so LSE is that
  // score plus log 9 and O is the value row.
  std::vector<uint16_t> q(D), k(D), v(D), o(D);
  for (int64_t x = 0; x < D; ++x) {
    q[x] = cpu::floatToBf16(0.25f * float(x % 5));
    k[x] = cpu::floatToBf16(0.5f - 0.125f * float(x % 3));
    v[x] = cpu::floatToBf16(float(x) / 8);
  }
  int64_t nk = int64_t(1) << 28;
  tessera_tensor tq{q.data(), TESSERA_DTYPE_BF16, 1, 1, 1, D, D, D, D};
  tessera_tensor tk{k.data(), TESSERA_DTYPE_BF16, 1, nk, 1, D, 0, 0, D};
  tessera_tensor tv{v.data(), TESSERA_DTYPE_BF16, 1, nk, 1, D, 0, 0, D};
  tessera_tensor to{o.data(), TESSERA_DTYPE_BF16, 1, 1, 1, D, D, D, D};
  float lse = 0;
  ASSERT_EQ(tessera_attention(b.bundle, 3, &tq, &tk, &tv, &to, &lse, 0,
                              nullptr),
            TESSERA_OK)
      << tessera_last_error();
  double dot = 0;
  for (int64_t x = 0; x < D; ++x)
    dot += double(cpu::bf16ToFloat(q[x])) * cpu::bf16ToFloat(k[x]);
  EXPECT_NEAR(lse, dot / 8.0 + std::log(9.0), 1e-4);
  for (int64_t x = 0; x < D; ++x)
    EXPECT_EQ(o[x], v[x]) << x;
}

} // namespace
