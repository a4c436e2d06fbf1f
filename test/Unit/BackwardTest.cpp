//===- BackwardTest.cpp - the CPU backward against float64 ----------------===//
//
// cpu::runLayerBackward's dQ, dK and dV against a dense float64 backward
// that masks with the reference semantics (semantics::allowed), itself
// checked against central finite differences of the float64 forward. The
// forward's O and LSE come from the CPU executor, as they would in training.
// Error = max |got - ref| / max |ref| per gradient. Tolerances: fp32 1e-5
// (P recomputed in fp32 from an fp32 LSE; seen: 7e-7); fp16 2e-3 and bf16
// 2e-2 (inputs and O in that type: D = rowsum(dO * O) carries O's rounding,
// 2^-11 and 2^-8 relative, and the gradients are rounded to it; seen: 5e-4
// and 9e-3).
//
//===----------------------------------------------------------------------===//

#include "PatternGen.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/cpu/Backward.h"
#include "tessera/cpu/Half.h"
#include "tessera/tessera.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

using namespace tessera;
using tessera::test::PatternGen;

namespace {

struct Shape {
  int64_t batch, hq, hkv, d, nq, nk, bq, bk;
  cpu::DType dtype;
};

/// Values of one dtype, read back as doubles.
struct Buf {
  cpu::DType dtype;
  std::vector<float> f32;
  std::vector<uint16_t> u16;

  Buf(cpu::DType t, size_t n) : dtype(t) {
    if (t == cpu::DType::F32)
      f32.assign(n, 0.0f);
    else
      u16.assign(n, 0);
  }
  void *data() {
    return dtype == cpu::DType::F32 ? (void *)f32.data() : (void *)u16.data();
  }
  double at(size_t i) const {
    if (dtype == cpu::DType::F32)
      return f32[i];
    return dtype == cpu::DType::F16 ? cpu::f16ToFloat(u16[i])
                                    : cpu::bf16ToFloat(u16[i]);
  }
  void set(size_t i, float x) {
    if (dtype == cpu::DType::F32)
      f32[i] = x;
    else if (dtype == cpu::DType::F16)
      u16[i] = cpu::floatToF16(x);
    else
      u16[i] = cpu::floatToBf16(x);
  }
  size_t size() const {
    return dtype == cpu::DType::F32 ? f32.size() : u16.size();
  }
};

Buf randomBuf(cpu::DType t, size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Buf b(t, n);
  for (size_t i = 0; i < n; ++i)
    b.set(i, dist(rng));
  return b;
}

/// Contiguous [B, N, H, D] indexing.
size_t at(const Shape &s, int64_t n, int64_t heads, int64_t b, int64_t i,
          int64_t h, int64_t x) {
  return ((b * n + i) * heads + h) * s.d + x;
}

/// The float64 gradients of L = sum(dO * O) by q, k and v.
struct Grads {
  std::vector<double> dq, dk, dv;
};

/// Dense float64 attention of (b, h) row i: the probabilities over all keys
/// (0 where masked) and O; empty rows have p = 0 and O = 0.
double forwardRow(const Shape &s, const std::vector<semantics::Pattern> &heads,
                  const std::function<double(int, size_t)> &val, int64_t b,
                  int64_t h, int64_t i, double scale, std::vector<double> &p,
                  std::vector<double> &o) {
  const int64_t g = s.hq / s.hkv;
  double m = -std::numeric_limits<double>::infinity();
  p.assign(s.nk, 0.0);
  std::vector<bool> on(s.nk, false);
  for (int64_t j = 0; j < s.nk; ++j) {
    if (!semantics::allowed(heads[h], i, j, h, s.nq, s.nk, s.hq))
      continue;
    on[j] = true;
    double dot = 0;
    for (int64_t x = 0; x < s.d; ++x)
      dot += val(0, at(s, s.nq, s.hq, b, i, h, x)) *
             val(1, at(s, s.nk, s.hkv, b, j, h / g, x));
    p[j] = dot * scale;
    m = std::max(m, p[j]);
  }
  double l = 0;
  for (int64_t j = 0; j < s.nk; ++j)
    l += on[j] ? (p[j] = std::exp(p[j] - m)) : (p[j] = 0.0);
  o.assign(s.d, 0.0);
  for (int64_t j = 0; j < s.nk; ++j) {
    if (!on[j])
      continue;
    p[j] /= l;
    for (int64_t x = 0; x < s.d; ++x)
      o[x] += p[j] * val(2, at(s, s.nk, s.hkv, b, j, h / g, x));
  }
  return l > 0 ? m + std::log(l) : -std::numeric_limits<double>::infinity();
}

/// val(t, i): tensor t (0 q, 1 k, 2 v, 3 dO) at element i; dLse: null or
/// the gradient by the LSE, [B, H, Nq] (the loss adds sum(dLse * LSE)).
Grads referenceGrads(const Shape &s,
                     const std::vector<semantics::Pattern> &heads,
                     const std::function<double(int, size_t)> &val,
                     const std::vector<double> *dLse = nullptr) {
  const double scale = 1.0 / std::sqrt(double(s.d));
  const int64_t g = s.hq / s.hkv;
  Grads r;
  r.dq.assign(s.batch * s.nq * s.hq * s.d, 0.0);
  r.dk.assign(s.batch * s.nk * s.hkv * s.d, 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  std::vector<double> p, o, dp(s.nk);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.hq; ++h)
      for (int64_t i = 0; i < s.nq; ++i) {
        forwardRow(s, heads, val, b, h, i, scale, p, o);
        double delta = 0;
        for (int64_t x = 0; x < s.d; ++x)
          delta += val(3, at(s, s.nq, s.hq, b, i, h, x)) * o[x];
        for (int64_t j = 0; j < s.nk; ++j) {
          if (p[j] == 0.0)
            continue;
          double dpj = 0;
          for (int64_t x = 0; x < s.d; ++x) {
            double dO = val(3, at(s, s.nq, s.hq, b, i, h, x));
            dpj += dO * val(2, at(s, s.nk, s.hkv, b, j, h / g, x));
            r.dv[at(s, s.nk, s.hkv, b, j, h / g, x)] += p[j] * dO;
          }
          double gLse = dLse ? (*dLse)[(b * s.hq + h) * s.nq + i] : 0.0;
          double ds = p[j] * (dpj - delta + gLse) * scale;
          for (int64_t x = 0; x < s.d; ++x) {
            r.dq[at(s, s.nq, s.hq, b, i, h, x)] +=
                ds * val(1, at(s, s.nk, s.hkv, b, j, h / g, x));
            r.dk[at(s, s.nk, s.hkv, b, j, h / g, x)] +=
                ds * val(0, at(s, s.nq, s.hq, b, i, h, x));
          }
        }
      }
  return r;
}

double normwise(const Buf &got, const std::vector<double> &ref) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(got.at(i) - ref[i]));
    mag = std::max(mag, std::abs(ref[i]));
  }
  return mag > 0 ? err / mag : err;
}

/// Inputs, the forward's outputs and the backward's gradients of one case.
struct Case {
  Buf q, k, v, dO, o, dq, dk, dv;
  std::vector<float> lse;
  const float *dLse = nullptr;
  std::string forwardError, backwardError;
  cpu::BackwardStats stats;

  Case(const Shape &s, std::mt19937_64 &rng)
      : q(randomBuf(s.dtype, s.batch * s.nq * s.hq * s.d, rng)),
        k(randomBuf(s.dtype, s.batch * s.nk * s.hkv * s.d, rng)),
        v(randomBuf(s.dtype, k.size(), rng)),
        dO(randomBuf(s.dtype, q.size(), rng)), o(s.dtype, q.size()),
        dq(randomBuf(s.dtype, q.size(), rng)),
        dk(randomBuf(s.dtype, k.size(), rng)),
        dv(randomBuf(s.dtype, k.size(), rng)) {}

  void run(const Shape &s, const kernel::LayerTable &table) {
    auto view = [&](Buf &x, int64_t n, int64_t h) {
      return cpu::contiguous(x.data(), s.dtype, s.batch, n, h, s.d);
    };
    cpu::LayerArgs f;
    f.q = view(q, s.nq, s.hq);
    f.k = view(k, s.nk, s.hkv);
    f.v = view(v, s.nk, s.hkv);
    f.o = view(o, s.nq, s.hq);
    lse.assign(s.batch * s.hq * s.nq, 0.0f);
    f.lse = lse.data();
    f.blockQ = s.bq;
    f.blockK = s.bk;
    f.numThreads = 2;
    forwardError = cpu::runLayer(table, f);
    cpu::BackwardArgs a;
    a.q = f.q;
    a.k = f.k;
    a.v = f.v;
    a.o = f.o;
    a.dO = view(dO, s.nq, s.hq);
    a.lse = lse.data();
    a.dLse = dLse;
    a.dq = view(dq, s.nq, s.hq);
    a.dk = view(dk, s.nk, s.hkv);
    a.dv = view(dv, s.nk, s.hkv);
    a.blockQ = s.bq;
    a.blockK = s.bk;
    a.numThreads = 2;
    backwardError = cpu::runLayerBackward(table, a, &stats);
  }

  std::function<double(int, size_t)> values() const {
    return [this](int t, size_t i) {
      return t == 0 ? q.at(i) : t == 1 ? k.at(i) : t == 2 ? v.at(i) : dO.at(i);
    };
  }
};

double tolerance(cpu::DType t) {
  return t == cpu::DType::F32 ? 1e-5 : t == cpu::DType::F16 ? 2e-3 : 2e-2;
}

schedule::LayerSchedule scheduleOf(const std::vector<semantics::Pattern> &ps,
                                   int64_t hq) {
  std::vector<schedule::HeadGroup> groups;
  for (int64_t h = 0; h < hq; ++h)
    groups.push_back({ps[h], {h}});
  schedule::LayerSchedule sched;
  std::string error;
  EXPECT_TRUE(schedule::buildLayerSchedule(groups, hq, sched, error)) << error;
  return sched;
}

class BackwardTest : public ::testing::Test {
protected:
  BackwardTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

/// The reference itself: its gradients against central finite differences
/// of the float64 loss sum(dO * O) + sum(dLse * LSE), on a small sparse
/// case.
TEST_F(BackwardTest, ReferenceMatchesFiniteDifferences) {
  Shape s{1, 2, 1, 4, 7, 9, 4, 4, cpu::DType::F32};
  std::vector<semantics::Pattern> heads = {
      {semantics::Causal{}}, {semantics::Window{2, 1}}};
  std::mt19937_64 rng(11);
  std::vector<std::vector<double>> t(4);
  for (int i = 0; i < 4; ++i) {
    size_t n = (i == 0 || i == 3 ? s.nq * s.hq : s.nk * s.hkv) * s.d;
    std::normal_distribution<double> dist;
    for (size_t x = 0; x < n; ++x)
      t[i].push_back(dist(rng));
  }
  auto val = [&](int i, size_t x) { return t[i][x]; };
  std::vector<double> dLse(s.hq * s.nq);
  for (double &x : dLse)
    x = std::normal_distribution<double>()(rng);
  Grads g = referenceGrads(s, heads, val, &dLse);
  auto loss = [&]() {
    double l = 0;
    std::vector<double> p, o;
    for (int64_t h = 0; h < s.hq; ++h)
      for (int64_t i = 0; i < s.nq; ++i) {
        double lse = forwardRow(s, heads, val, 0, h, i, 1.0 / 2.0, p, o);
        if (std::isfinite(lse))
          l += dLse[h * s.nq + i] * lse;
        for (int64_t x = 0; x < s.d; ++x)
          l += t[3][at(s, s.nq, s.hq, 0, i, h, x)] * o[x];
      }
    return l;
  };
  const double eps = 1e-6;
  std::vector<double> *grads[3] = {&g.dq, &g.dk, &g.dv};
  for (int i = 0; i < 3; ++i)
    for (size_t x = 0; x < t[i].size(); ++x) {
      double keep = t[i][x];
      t[i][x] = keep + eps;
      double up = loss();
      t[i][x] = keep - eps;
      double down = loss();
      t[i][x] = keep;
      EXPECT_NEAR((up - down) / (2 * eps), (*grads[i])[x], 1e-6)
          << "tensor " << i << " element " << x;
    }
}

/// Random patterns (leaves and combinators), shapes with Nq < Nk and
/// Nq > Nk, GQA, block sizes that do and do not divide the lengths, every
/// dtype, with and without a gradient by the LSE.
TEST_F(BackwardTest, RandomPatternsMatchFloat64) {
  PatternGen gen(&ctx, /*seed=*/4242);
  for (int c = 0; c < 60; ++c) {
    Shape s;
    s.batch = gen.uniform(1, 2);
    s.hkv = gen.uniform(1, 2);
    s.hq = s.hkv * gen.uniform(1, 3);
    s.d = 8 * gen.uniform(1, 3);
    s.nq = gen.uniform(1, 60);
    s.nk = gen.uniform(1, 60);
    s.bq = gen.uniform(1, 17);
    s.bk = gen.uniform(1, 17);
    s.dtype = std::array{cpu::DType::F32, cpu::DType::F16,
                         cpu::DType::BF16}[gen.uniform(0, 2)];
    std::vector<semantics::Pattern> heads;
    std::string text;
    for (int64_t h = 0; h < s.hq; ++h) {
      attn::PatternAttrInterface p = gen.pattern(2);
      llvm::raw_string_ostream(text) << p << "\n";
      heads.push_back(semantics::fromAttr(p));
    }
    schedule::LayerSchedule sched = scheduleOf(heads, s.hq);
    std::mt19937_64 rng(9000 + c);
    Case r(s, rng);
    // Every other case also differentiates through the LSE.
    std::vector<float> dLse;
    std::vector<double> dLse64;
    if (c % 2) {
      std::normal_distribution<float> dist;
      for (int64_t i = 0; i < s.batch * s.hq * s.nq; ++i) {
        dLse.push_back(dist(rng));
        dLse64.push_back(dLse.back());
      }
      r.dLse = dLse.data();
    }
    r.run(s, sched.table());
    ASSERT_EQ(r.forwardError, "");
    ASSERT_EQ(r.backwardError, "");
    Grads g = referenceGrads(s, heads, r.values(), c % 2 ? &dLse64 : nullptr);
    std::string where = "case " + std::to_string(c) +
                        " Nq=" + std::to_string(s.nq) +
                        " Nk=" + std::to_string(s.nk) + "\n" + text;
    EXPECT_LE(normwise(r.dq, g.dq), tolerance(s.dtype)) << "dq " << where;
    EXPECT_LE(normwise(r.dk, g.dk), tolerance(s.dtype)) << "dk " << where;
    EXPECT_LE(normwise(r.dv, g.dv), tolerance(s.dtype)) << "dv " << where;
  }
}

/// Skipped heads get zero dq (and add nothing to dk, dv); rows without keys
/// (causal with Nq > Nk) get zero dq; keys no row sees get zero dk and dv.
/// The key-major pass visits each non-empty tile of a computed head once.
TEST_F(BackwardTest, SkippedHeadsEmptyRowsAndUnseenKeysGetZeros) {
  semantics::IndexSet firstKeys;
  firstKeys.ranges = {{0, 3}};
  std::vector<semantics::Pattern> heads = {
      {semantics::Causal{}},
      {semantics::Skip{}},
      {semantics::VerticalStripe{firstKeys}},
      {semantics::Skip{}}};
  Shape s{1, 4, 2, 16, 40, 25, 8, 8, cpu::DType::F32};
  schedule::LayerSchedule sched = scheduleOf(heads, s.hq);
  std::mt19937_64 rng(3);
  Case r(s, rng);
  r.run(s, sched.table());
  ASSERT_EQ(r.backwardError, "");
  Grads g = referenceGrads(s, heads, r.values());
  EXPECT_LE(normwise(r.dq, g.dq), 1e-4);
  EXPECT_LE(normwise(r.dk, g.dk), 1e-4);
  EXPECT_LE(normwise(r.dv, g.dv), 1e-4);
  for (int64_t i = 0; i < s.nq; ++i)
    for (int64_t x = 0; x < s.d; ++x) {
      // Head 1 and 3 skipped; causal head 0's first Nq - Nk rows see nothing.
      EXPECT_EQ(r.dq.at(at(s, s.nq, s.hq, 0, i, 1, x)), 0.0);
      EXPECT_EQ(r.dq.at(at(s, s.nq, s.hq, 0, i, 3, x)), 0.0);
      if (i < s.nq - s.nk) {
        EXPECT_EQ(r.dq.at(at(s, s.nq, s.hq, 0, i, 0, x)), 0.0);
      }
    }
  // Kv head 1 serves heads 2 (keys [0, 3)) and 3 (skipped).
  for (int64_t j = 3; j < s.nk; ++j)
    for (int64_t x = 0; x < s.d; ++x) {
      EXPECT_EQ(r.dk.at(at(s, s.nk, s.hkv, 0, j, 1, x)), 0.0);
      EXPECT_EQ(r.dv.at(at(s, s.nk, s.hkv, 0, j, 1, x)), 0.0);
    }
  // Causal over 5 x 4 tiles of 8 (bottom-right: row q sees keys <= q - 15)
  // visits 1 + 2 + 3 + 4 tiles; the stripe head the first key block of every query
  // block (5); each pass visits the same tiles.
  EXPECT_EQ(r.stats.keyMajorTiles, 10 + 5);
  EXPECT_EQ(r.stats.queryMajorTiles, 10 + 5);
}

/// A NaN or an infinity where no row looks (a key outside every row's
/// pattern, the query and dO of a row without keys) leaves every gradient
/// finite and equal to the clean run's (docs/runtime.md: masked pairs are
/// skipped, not multiplied by 0).
TEST_F(BackwardTest, NonFiniteValuesNoRowSeesDoNotLeak) {
  semantics::IndexSet stripe;
  stripe.ranges = {{0, 5}};
  semantics::Pattern head{semantics::Intersect{
      {semantics::Pattern{semantics::Causal{}},
       semantics::Pattern{semantics::VerticalStripe{stripe}}}}};
  for (cpu::DType t : {cpu::DType::F32, cpu::DType::BF16}) {
    Shape s{1, 1, 1, 16, 50, 40, 16, 16, t};
    schedule::LayerSchedule sched = scheduleOf({head}, 1);
    std::mt19937_64 rng(21);
    Case clean(s, rng);
    Case dirty = clean;
    const float inf = std::numeric_limits<float>::infinity(),
                nan = std::numeric_limits<float>::quiet_NaN();
    // Keys 5-15 share the visited key block 0 with the stripe, no row sees
    // them; rows 0-9 see no key (p = q - 10) and share query block 0 with
    // rows that do.
    dirty.v.set(at(s, s.nk, 1, 0, 9, 0, 3), inf);
    dirty.k.set(at(s, s.nk, 1, 0, 7, 0, 5), nan);
    dirty.k.set(at(s, s.nk, 1, 0, 30, 0, 5), nan); // in no visited tile
    dirty.q.set(at(s, s.nq, 1, 0, 2, 0, 0), inf);
    dirty.dO.set(at(s, s.nq, 1, 0, 4, 0, 1), nan);
    clean.run(s, sched.table());
    dirty.run(s, sched.table());
    ASSERT_EQ(dirty.backwardError, "");
    for (const auto &[got, want, name] :
         {std::tuple{&dirty.dq, &clean.dq, "dq"},
          {&dirty.dk, &clean.dk, "dk"},
          {&dirty.dv, &clean.dv, "dv"}})
      for (size_t i = 0; i < got->size(); ++i) {
        ASSERT_TRUE(std::isfinite(got->at(i))) << name << "[" << i << "]";
        ASSERT_NEAR(got->at(i), want->at(i),
                    1e-5 + 1e-2 * std::abs(want->at(i)))
            << name << "[" << i << "]";
      }
  }
}

/// Tensors laid out [B, H, N, D] (the strides PyTorch's attention layout
/// gives a [B, N, H, D] view) and an explicit softmax scale: the same
/// gradients as the reference with that scale.
TEST_F(BackwardTest, StridesAndScale) {
  std::vector<semantics::Pattern> heads = {
      {semantics::Window{5, 2}}, {semantics::Causal{}}};
  schedule::LayerSchedule sched = scheduleOf(heads, 2);
  const int64_t H = 2, N = 37, D = 16;
  const float scale = 0.31f;
  std::mt19937_64 rng(8);
  // Element (b=0, s, h, x) at h * N * D + s * D + x.
  auto view = [&](std::vector<float> &x) {
    cpu::Tensor t = cpu::contiguous(x.data(), cpu::DType::F32, 1, N, H, D);
    t.strideHead = N * D;
    t.strideSeq = D;
    t.strideBatch = H * N * D;
    return t;
  };
  std::normal_distribution<float> dist;
  std::vector<std::vector<float>> in(4, std::vector<float>(H * N * D));
  for (auto &x : in)
    for (float &f : x)
      f = dist(rng);
  std::vector<float> o(H * N * D), dq(o.size()), dk(o.size()), dv(o.size());
  std::vector<float> lse(H * N);
  cpu::LayerArgs f;
  f.q = view(in[0]);
  f.k = view(in[1]);
  f.v = view(in[2]);
  f.o = view(o);
  f.lse = lse.data();
  f.scale = scale;
  f.blockQ = 16;
  f.blockK = 8;
  f.numThreads = 2;
  ASSERT_EQ(cpu::runLayer(sched.table(), f), "");
  cpu::BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.o = f.o;
  a.dO = view(in[3]);
  a.lse = lse.data();
  a.dq = view(dq);
  a.dk = view(dk);
  a.dv = view(dv);
  a.scale = scale;
  a.blockQ = 16;
  a.blockK = 8;
  ASSERT_EQ(cpu::runLayerBackward(sched.table(), a), "");
  // The reference reads [B, N, H, D]; its scale is 1/sqrt(D) unless the
  // head_dim is chosen so that 1/sqrt(D') = scale: instead scale q by
  // scale * sqrt(D), which gives the same scores and dq scaled back.
  Shape s{1, H, H, D, N, N, 16, 8, cpu::DType::F32};
  const double qf = scale * std::sqrt(double(D));
  auto val = [&](int t, size_t i) {
    size_t x = i % D, h = (i / D) % H, n = i / (D * H);
    double v = in[t][h * N * D + n * D + x];
    return t == 0 ? v * qf : v;
  };
  Grads g = referenceGrads(s, heads, val);
  double err = 0, mag = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t x = 0; x < D; ++x) {
        size_t r = (n * H + h) * D + x, ours = h * N * D + n * D + x;
        // d/dq of the unscaled q is qf times the reference's.
        for (auto [got, want] : {std::pair{double(dq[ours]), g.dq[r] * qf},
                                 {double(dk[ours]), g.dk[r]},
                                 {double(dv[ours]), g.dv[r]}}) {
          err = std::max(err, std::abs(got - want));
          mag = std::max(mag, std::abs(want));
        }
      }
  EXPECT_LE(err / mag, 1e-5);
}

TEST_F(BackwardTest, BadArgumentsAreNamed) {
  std::vector<semantics::Pattern> heads = {{semantics::Causal{}}};
  schedule::LayerSchedule sched = scheduleOf(heads, 1);
  Shape s{1, 1, 1, 8, 4, 4, 4, 4, cpu::DType::F32};
  std::mt19937_64 rng(1);
  Case r(s, rng);
  auto view = [&](Buf &x, int64_t n) {
    return cpu::contiguous(x.data(), s.dtype, 1, n, 1, s.d);
  };
  std::vector<float> lse(4, 0.0f);
  cpu::BackwardArgs a;
  a.q = view(r.q, 4);
  a.k = view(r.k, 4);
  a.v = view(r.v, 4);
  a.o = view(r.o, 4);
  a.dO = view(r.dO, 4);
  a.dq = view(r.dq, 4);
  a.dk = view(r.dk, 4);
  a.dv = view(r.dv, 4);
  a.lse = lse.data();
  EXPECT_EQ(cpu::runLayerBackward(sched.table(), a), "");
  cpu::BackwardArgs bad = a;
  bad.lse = nullptr;
  EXPECT_NE(cpu::runLayerBackward(sched.table(), bad).find("lse"),
            std::string::npos);
  bad = a;
  bad.dk.seq = 3;
  EXPECT_NE(cpu::runLayerBackward(sched.table(), bad).find("dk"),
            std::string::npos);
  bad = a;
  bad.dO.data = nullptr;
  EXPECT_EQ(cpu::runLayerBackward(sched.table(), bad), "do is a null pointer");
  bad = a;
  bad.scale = -1;
  EXPECT_NE(cpu::runLayerBackward(sched.table(), bad).find("scale"),
            std::string::npos);
}

/// A contiguous f32 [B, N, H, D] tessera_tensor over `x`.
tessera_tensor cTensor(std::vector<float> &x, int64_t b, int64_t n, int64_t h,
                       int64_t d) {
  return tessera_tensor{x.data(), TESSERA_DTYPE_F32, b, n, h, d,
                        n * h * d,    h * d,             d};
}

/// A CPU context with one of the build's test bundles loaded, released at
/// the end of the scope.
struct LoadedBundle {
  tessera_context *cx = nullptr;
  tessera_bundle *bundle = nullptr;
  explicit LoadedBundle(const char *name) {
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &cx), TESSERA_OK);
    std::string dir =
        std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
    EXPECT_EQ(tessera_bundle_load_file(cx, dir.c_str(), &bundle), TESSERA_OK)
        << tessera_last_error();
  }
  ~LoadedBundle() {
    if (bundle) {
      EXPECT_EQ(tessera_bundle_destroy(bundle), TESSERA_OK);
    }
    if (cx) {
      EXPECT_EQ(tessera_context_destroy(cx), TESSERA_OK);
    }
  }
};

/// n standard normal floats.
std::vector<float> normals(size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<float> dist;
  std::vector<float> x(n);
  for (float &f : x)
    f = dist(rng);
  return x;
}

/// The description of a dense f32 forward call of `layer`: q and o
/// [B, N, H, D], k and v [B, NK, Hkv, D], contiguous.
tessera_attention_desc forwardDesc(int64_t layer, std::vector<float> &q,
                                   std::vector<float> &k, std::vector<float> &v,
                                   std::vector<float> &o, float *lse,
                                   int64_t B, int64_t N, int64_t NK, int64_t H,
                                   int64_t Hkv, int64_t D) {
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.layer = layer;
  d.q = cTensor(q, B, N, H, D);
  d.k = cTensor(k, B, NK, Hkv, D);
  d.v = cTensor(v, B, NK, Hkv, D);
  d.o = cTensor(o, B, N, H, D);
  d.lse = lse;
  return d;
}

/// tessera_attention_backward on the CPU: tiny-mix's bundle (A-shape,
/// multi-diagonal, grid, causal strided shards, shifted groups; GQA 6 / 2)
/// at lengths that are not multiples of the tiles, against the reference
/// from the pattern file; with and without d_lse; then its refusals.
TEST_F(BackwardTest, CApiMatchesFloat64AndNamesBadArguments) {
  std::string src = std::string(TESSERA_SOURCE_DIR) + "/patterns/tiny-mix.mlir";
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(src, &ctx);
  ASSERT_TRUE(module);
  std::vector<semantics::Pattern> heads;
  module->walk([&](attn::LayerOp layer) {
    for (int64_t h = 0; h < layer.getNumHeads(); ++h)
      heads.push_back(semantics::fromAttr(layer.getHeadPattern(h)));
  });
  ASSERT_EQ(heads.size(), 6u);
  LoadedBundle loaded("tiny-mix");
  tessera_bundle *bundle = loaded.bundle;
  ASSERT_NE(bundle, nullptr);

  for (auto [nq, nk] : {std::pair<int64_t, int64_t>{150, 170}, {97, 61}}) {
    Shape s{2, 6, 2, 64, nq, nk, 64, 64, cpu::DType::F32};
    std::mt19937_64 rng(nq);
    auto random = [&](size_t n) { return normals(n, rng); };
    const size_t qn = s.batch * nq * s.hq * s.d, kn = s.batch * nk * s.hkv * s.d;
    std::vector<float> q = random(qn), k = random(kn), v = random(kn),
                       dO = random(qn), o(qn), dq(qn), dk(kn), dv(kn);
    std::vector<float> lse(s.batch * s.hq * nq), dLse = random(lse.size());
    tessera_attention_desc d = forwardDesc(0, q, k, v, o, lse.data(), s.batch,
                                           nq, nk, s.hq, s.hkv, s.d);
    ASSERT_EQ(tessera_attention_run(bundle, &d), TESSERA_OK)
        << tessera_last_error();
    tessera_tensor tdO = cTensor(dO, s.batch, nq, s.hq, s.d),
                   tdq = cTensor(dq, s.batch, nq, s.hq, s.d),
                   tdk = cTensor(dk, s.batch, nk, s.hkv, s.d),
                   tdv = cTensor(dv, s.batch, nk, s.hkv, s.d);
    auto val = [&](int t, size_t i) -> double {
      return t == 0 ? q[i] : t == 1 ? k[i] : t == 2 ? v[i] : dO[i];
    };
    for (bool withLse : {false, true}) {
      ASSERT_EQ(tessera_attention_backward(bundle, &d, &tdO,
                                           withLse ? dLse.data() : nullptr,
                                           &tdq, &tdk, &tdv),
                TESSERA_OK)
          << tessera_last_error();
      std::vector<double> g64(dLse.begin(), dLse.end());
      Grads g = referenceGrads(s, heads, val, withLse ? &g64 : nullptr);
      auto err = [](const std::vector<float> &got,
                    const std::vector<double> &ref) {
        double e = 0, m = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
          e = std::max(e, std::abs(got[i] - ref[i]));
          m = std::max(m, std::abs(ref[i]));
        }
        return e / m;
      };
      EXPECT_LE(err(dq, g.dq), 1e-5) << nq << "x" << nk << " lse " << withLse;
      EXPECT_LE(err(dk, g.dk), 1e-5) << nq << "x" << nk << " lse " << withLse;
      EXPECT_LE(err(dv, g.dv), 1e-5) << nq << "x" << nk << " lse " << withLse;
    }

    // Refusals, each naming its field.
    auto refused = [&](tessera_attention_desc dd, const tessera_tensor *a,
                       const tessera_tensor *b, const tessera_tensor *c,
                       const tessera_tensor *e, const char *what) {
      EXPECT_NE(tessera_attention_backward(bundle, &dd, a, nullptr, b, c, e),
                TESSERA_OK)
          << what;
      EXPECT_NE(std::string(tessera_last_error()).find(what),
                std::string::npos)
          << tessera_last_error();
    };
    tessera_attention_desc noLse = d;
    noLse.lse = nullptr;
    refused(noLse, &tdO, &tdq, &tdk, &tdv, "desc->lse is null");
    tessera_tensor shortK = tdk;
    shortK.seq -= 1;
    refused(d, &tdO, &tdq, &shortK, &tdv, "dk must have k's shape");
    refused(d, &tdO, &d.q, &tdk, &tdv, "dq overlaps q");
    refused(d, &tdO, &tdq, &tdk, &tdk, "dv overlaps dk");
    tessera_tensor halfO = tdO;
    halfO.dtype = TESSERA_DTYPE_F16;
    refused(d, &halfO, &tdq, &tdk, &tdv, "d_o must have q's dtype");
    refused(d, nullptr, &tdq, &tdk, &tdv, "d_o is a null tensor pointer");
    std::vector<int64_t> starts(s.batch, 0);
    tessera_attention_desc positioned = d;
    positioned.k_start = starts.data();
    refused(positioned, &tdO, &tdq, &tdk, &tdv, "block_table, q_start or k_start");
  }
}


/// Dynamic heads (the dynamic-emulation bundle: vertical-slash and block
/// top-k in layers 1, 3 and 4, with a static head, GQA 3:1 and 2:1,
/// head_dim 64, 96 and 128; routing in layer 2, under a union and a
/// difference, and in layer 0 beside the other families, alone with the
/// engine's centroids and under causality, two routing heads sharing a kv
/// head): the backward rebuilds each head's index (or clusters) from the
/// same rows and differentiates through it, the selection carrying no
/// gradient. Checked against central differences of the forward itself
/// (f32, loss L = sum(G * O), directional along a random direction per
/// input): the value direction moves no index; for queries and keys a step
/// of 1e-4 leaves these inputs' indexes as they are (else the differences
/// would jump by thousands: k-means clusters have near ties, and layer 2's
/// first draws had one within the step, so its seed is the next). A
/// backward that left the dynamic heads out (zero gradients for them;
/// checked for the routing heads) misses by tens.
TEST_F(BackwardTest, DynamicHeadsMatchForwardDifferences) {
  LoadedBundle loaded("dynamic-emulation");
  tessera_bundle *bundle = loaded.bundle;
  ASSERT_NE(bundle, nullptr);
  for (int64_t layer : {1, 3, 4, 2, 0}) {
    tessera_layer_info info;
    ASSERT_EQ(tessera_bundle_layer_info(bundle, layer, &info), TESSERA_OK);
    const int64_t B = 2, N = 200, H = info.num_heads, Hkv = info.num_kv_heads,
                  D = info.head_dim;
    std::mt19937_64 rng(uint64_t(layer) * 7 + 1 + (layer == 2 ? 1 : 0));
    auto random = [&](size_t n) { return normals(n, rng); };
    const size_t qn = size_t(B * N * H * D), kn = size_t(B * N * Hkv * D);
    std::vector<float> q = random(qn), k = random(kn), v = random(kn),
                       G = random(qn), o(qn), dq(qn), dk(kn), dv(kn),
                       lse(size_t(B * H * N));
    tessera_attention_desc d =
        forwardDesc(layer, q, k, v, o, lse.data(), B, N, N, H, Hkv, D);
    // The engine's centroids, where a routing group takes them.
    std::mt19937_64 crng(uint64_t(layer) + 100); // rng's draws unchanged
    std::vector<float> centroids =
        normals(size_t(H * std::max<int64_t>(info.centroid_clusters, 1) * D),
                crng);
    tessera_dynamic_inputs inputs = {centroids.data(), H,
                                     info.centroid_clusters, D};
    if (info.centroid_clusters > 0)
      d.dynamic_inputs = &inputs;
    // L = sum(G * O) of the forward on the current inputs.
    auto loss = [&]() {
      std::vector<float> out(qn);
      tessera_attention_desc f = d;
      f.o = cTensor(out, B, N, H, D);
      f.lse = nullptr;
      EXPECT_EQ(tessera_attention_run(bundle, &f), TESSERA_OK)
          << tessera_last_error();
      double l = 0;
      for (size_t i = 0; i < qn; ++i)
        l += double(G[i]) * out[i];
      return l;
    };
    ASSERT_EQ(tessera_attention_run(bundle, &d), TESSERA_OK)
        << tessera_last_error();
    tessera_tensor tG = cTensor(G, B, N, H, D), tdq = cTensor(dq, B, N, H, D),
                   tdk = cTensor(dk, B, N, Hkv, D),
                   tdv = cTensor(dv, B, N, Hkv, D);
    ASSERT_EQ(tessera_attention_backward(bundle, &d, &tG, nullptr, &tdq, &tdk,
                                         &tdv),
              TESSERA_OK)
        << tessera_last_error();
    for (auto [x, grad, name] :
         {std::tuple{&q, &dq, "dq"}, {&k, &dk, "dk"}, {&v, &dv, "dv"}}) {
      std::vector<float> dir = random(x->size()), base = *x;
      const double eps = x == &v ? 1e-3 : 1e-4;
      double want = 0;
      for (size_t i = 0; i < dir.size(); ++i)
        want += double(dir[i]) * (*grad)[i];
      for (size_t i = 0; i < dir.size(); ++i)
        (*x)[i] = base[i] + float(eps) * dir[i];
      double plus = loss();
      for (size_t i = 0; i < dir.size(); ++i)
        (*x)[i] = base[i] - float(eps) * dir[i];
      double minus = loss();
      *x = base;
      double got = (plus - minus) / (2 * eps);
      // f32 forwards: L's rounding, about 1e-5 absolute here, over 2 eps
      // (seen: within 0.1 at 1e-4 and 0.05 at 1e-3; a step of 3e-4 on the
      // keys of layer 1 already moves its index).
      EXPECT_NEAR(got, want, 1e-2 * std::abs(want) + (x == &v ? 0.1 : 0.5))
          << "layer " << layer << " " << name;
    }
  }
}


/// Head-range calls (tensor / Ulysses parallel training): q, o, dO and the
/// LSE hold heads [h0, h0 + n), k and v the kv heads those read. dq of each
/// head equals the whole layer's backward bit for bit; a range that holds a
/// whole GQA group gives that kv head's dk and dv bit for bit, and ranges
/// that split groups give dk and dv that sum (over a partition of the
/// heads) to the layer's.
TEST_F(BackwardTest, HeadRangeCallsEqualTheLayersHeads) {
  LoadedBundle loaded("tiny-mix");
  tessera_bundle *bundle = loaded.bundle;
  ASSERT_NE(bundle, nullptr);
  const int64_t B = 2, N = 50, NK = 80, H = 6, Hkv = 2, D = 64, G = H / Hkv;
  std::mt19937_64 rng(47);
  auto random = [&](size_t n) { return normals(n, rng); };
  std::vector<float> q = random(size_t(B * N * H * D)),
                     k = random(size_t(B * NK * Hkv * D)), v = random(k.size()),
                     dO = random(q.size()), o(q.size()), lse(size_t(B * H * N)),
                     dLse = random(lse.size()), dq(q.size()), dk(k.size()),
                     dv(k.size());
  tessera_attention_desc d =
      forwardDesc(0, q, k, v, o, lse.data(), B, N, NK, H, Hkv, D);
  ASSERT_EQ(tessera_attention_run(bundle, &d), TESSERA_OK)
      << tessera_last_error();
  tessera_tensor tG = cTensor(dO, B, N, H, D), tdq = cTensor(dq, B, N, H, D),
                 tdk = cTensor(dk, B, NK, Hkv, D),
                 tdv = cTensor(dv, B, NK, Hkv, D);
  ASSERT_EQ(tessera_attention_backward(bundle, &d, &tG, dLse.data(), &tdq,
                                       &tdk, &tdv),
            TESSERA_OK)
      << tessera_last_error();
  // Heads [h0, h0 + n) of a [B, rows, heads, D] tensor, and of the LSE.
  auto heads = [&](const std::vector<float> &x, int64_t rows, int64_t all,
                   int64_t h0, int64_t n) {
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < rows; ++r)
        out.insert(out.end(), x.begin() + ((b * rows + r) * all + h0) * D,
                   x.begin() + ((b * rows + r) * all + h0 + n) * D);
    return out;
  };
  auto lseHeads = [&](const std::vector<float> &x, int64_t h0, int64_t n) {
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b)
      out.insert(out.end(), x.begin() + (b * H + h0) * N,
                 x.begin() + (b * H + h0 + n) * N);
    return out;
  };
  std::vector<double> dkSum(dk.size(), 0.0), dvSum(dv.size(), 0.0);
  for (auto [h0, n] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}, {5, 1},
                       {3, 3}}) {
    const int64_t kv0 = h0 / G, nkv = (h0 + n - 1) / G - kv0 + 1;
    std::vector<float> q1 = heads(q, N, H, h0, n), o1 = heads(o, N, H, h0, n),
                       G1 = heads(dO, N, H, h0, n),
                       k1 = heads(k, NK, Hkv, kv0, nkv),
                       v1 = heads(v, NK, Hkv, kv0, nkv),
                       l1 = lseHeads(lse, h0, n), dl1 = lseHeads(dLse, h0, n),
                       dq1(q1.size(), 9.0f), dk1(k1.size(), 9.0f),
                       dv1(k1.size(), 9.0f);
    tessera_attention_desc d1 =
        forwardDesc(0, q1, k1, v1, o1, l1.data(), B, N, NK, n, nkv, D);
    d1.head_start = h0;
    d1.head_count = n;
    tessera_tensor tG1 = cTensor(G1, B, N, n, D), tdq1 = cTensor(dq1, B, N, n, D),
                   tdk1 = cTensor(dk1, B, NK, nkv, D),
                   tdv1 = cTensor(dv1, B, NK, nkv, D);
    ASSERT_EQ(tessera_attention_backward(bundle, &d1, &tG1, dl1.data(), &tdq1,
                                         &tdk1, &tdv1),
              TESSERA_OK)
        << tessera_last_error();
    EXPECT_TRUE(dq1 == heads(dq, N, H, h0, n)) << "dq of heads from " << h0;
    if (h0 % G == 0 && n == G) { // one whole group
      EXPECT_TRUE(dk1 == heads(dk, NK, Hkv, kv0, 1)) << "dk of heads " << h0;
      EXPECT_TRUE(dv1 == heads(dv, NK, Hkv, kv0, 1)) << "dv of heads " << h0;
      continue;
    }
    // The partition {0, 1}, {2, 3, 4}, {5}: sum its dk and dv.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < NK; ++r)
        for (int64_t j = 0; j < nkv; ++j)
          for (int64_t x = 0; x < D; ++x) {
            const size_t to = size_t(((b * NK + r) * Hkv + kv0 + j) * D + x),
                         from = size_t(((b * NK + r) * nkv + j) * D + x);
            dkSum[to] += dk1[from];
            dvSum[to] += dv1[from];
          }
  }
  double worstK = 0, worstV = 0, maxK = 0, maxV = 0;
  for (size_t i = 0; i < dk.size(); ++i) {
    worstK = std::max(worstK, std::abs(dkSum[i] - dk[i]));
    worstV = std::max(worstV, std::abs(dvSum[i] - dv[i]));
    maxK = std::max(maxK, double(std::abs(dk[i])));
    maxV = std::max(maxV, double(std::abs(dv[i])));
  }
  EXPECT_LE(worstK, 1e-5 * maxK);
  EXPECT_LE(worstV, 1e-5 * maxV);
  EXPECT_GT(maxK, 0.0);
}

/// Packed (cu_seqlens) and length (seq_lens_k) calls: each sequence's
/// gradients equal a dense backward of that sequence alone, bit for bit,
/// with and without d_lse; rows and keys no sequence owns get zeros;
/// paged and positioned calls are refused by name.
TEST_F(BackwardTest, PackedAndLengthCallsEqualPerSequenceCalls) {
  LoadedBundle loaded("tiny-mix");
  tessera_bundle *bundle = loaded.bundle;
  ASSERT_NE(bundle, nullptr);
  const int64_t H = 6, Hkv = 2, D = 64;
  std::mt19937_64 rng(31);
  auto random = [&](size_t n) { return normals(n, rng); };
  // Packed: ragged sequences (one empty, one without keys), two spare rows.
  const std::vector<int32_t> nqs = {37, 0, 100, 5}, nks = {37, 4, 130, 0};
  std::vector<int32_t> cuQ = {0}, cuK = {0};
  for (size_t s = 0; s < nqs.size(); ++s) {
    cuQ.push_back(cuQ.back() + nqs[s]);
    cuK.push_back(cuK.back() + nks[s]);
  }
  const int64_t T = cuQ.back() + 2, Tk = cuK.back() + 2;
  std::vector<float> q = random(size_t(T * H * D)),
                     k = random(size_t(Tk * Hkv * D)), v = random(k.size()),
                     G = random(q.size()), o(q.size()), dq(q.size(), 9.0f),
                     dk(k.size(), 9.0f), dv(k.size(), 9.0f),
                     lse(size_t(H * T)), dLse = random(lse.size());
  tessera_attention_desc d =
      forwardDesc(0, q, k, v, o, lse.data(), 1, T, Tk, H, Hkv, D);
  d.num_seqs = int64_t(nqs.size());
  d.cu_seqlens_q = cuQ.data();
  d.cu_seqlens_k = cuK.data();
  ASSERT_EQ(tessera_attention_run(bundle, &d), TESSERA_OK)
      << tessera_last_error();
  tessera_tensor tG = cTensor(G, 1, T, H, D), tdq = cTensor(dq, 1, T, H, D),
                 tdk = cTensor(dk, 1, Tk, Hkv, D),
                 tdv = cTensor(dv, 1, Tk, Hkv, D);
  for (bool withLse : {false, true}) {
    ASSERT_EQ(tessera_attention_backward(bundle, &d, &tG,
                                         withLse ? dLse.data() : nullptr,
                                         &tdq, &tdk, &tdv),
              TESSERA_OK)
        << tessera_last_error();
    for (size_t s = 0; s < nqs.size(); ++s) {
      const int64_t nq = nqs[s], nk = nks[s], q0 = cuQ[s], k0 = cuK[s];
      if (nq == 0)
        continue;
      auto rows = [&](std::vector<float> &x, int64_t r0, int64_t n,
                      int64_t h) {
        return std::vector<float>(x.begin() + r0 * h * D,
                                  x.begin() + (r0 + n) * h * D);
      };
      std::vector<float> q1 = rows(q, q0, nq, H), k1 = rows(k, k0, nk, Hkv),
                         v1 = rows(v, k0, nk, Hkv), o1 = rows(o, q0, nq, H),
                         G1 = rows(G, q0, nq, H), dq1(q1.size()),
                         dk1(k1.size()), dv1(k1.size()), l1(size_t(H * nq)),
                         dl1(l1.size());
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < nq; ++i) {
          l1[size_t(h * nq + i)] = lse[size_t(h * T + q0 + i)];
          dl1[size_t(h * nq + i)] = dLse[size_t(h * T + q0 + i)];
        }
      if (nk == 0) { // rows without keys: zero gradients
        for (int64_t i = 0; i < nq * H * D; ++i)
          EXPECT_EQ(dq[size_t(q0 * H * D + i)], 0.0f) << "sequence " << s;
        continue;
      }
      tessera_attention_desc d1 =
          forwardDesc(0, q1, k1, v1, o1, l1.data(), 1, nq, nk, H, Hkv, D);
      tessera_tensor tG1 = cTensor(G1, 1, nq, H, D),
                     tdq1 = cTensor(dq1, 1, nq, H, D),
                     tdk1 = cTensor(dk1, 1, nk, Hkv, D),
                     tdv1 = cTensor(dv1, 1, nk, Hkv, D);
      ASSERT_EQ(tessera_attention_backward(bundle, &d1, &tG1,
                                           withLse ? dl1.data() : nullptr,
                                           &tdq1, &tdk1, &tdv1),
                TESSERA_OK)
          << tessera_last_error();
      EXPECT_TRUE(dq1 == rows(dq, q0, nq, H)) << "dq, sequence " << s;
      EXPECT_TRUE(dk1 == rows(dk, k0, nk, Hkv)) << "dk, sequence " << s;
      EXPECT_TRUE(dv1 == rows(dv, k0, nk, Hkv)) << "dv, sequence " << s;
    }
    // The spare rows and keys, owned by no sequence: zeros.
    for (int64_t i = cuQ.back() * H * D; i < T * H * D; ++i)
      ASSERT_EQ(dq[size_t(i)], 0.0f);
    for (int64_t i = cuK.back() * Hkv * D; i < Tk * Hkv * D; ++i)
      ASSERT_EQ(dk[size_t(i)] + dv[size_t(i)], 0.0f);
  }
  // Lengths over a dense cache: sequence b's first lens[b] keys (the rest
  // hold NaN, never read, and get zero gradients).
  {
    const int64_t B = 2, N = 20, NK = 50;
    const std::vector<int32_t> lens = {30, 50};
    std::vector<float> q2 = random(size_t(B * N * H * D)),
                       k2 = random(size_t(B * NK * Hkv * D)),
                       v2 = random(k2.size()), G2 = random(q2.size()),
                       o2(q2.size()), dq2(q2.size()), dk2(k2.size(), 9.0f),
                       dv2(k2.size(), 9.0f), l2(size_t(B * H * N));
    for (int64_t j = 30; j < NK; ++j)
      for (int64_t x = 0; x < Hkv * D; ++x)
        k2[size_t(j * Hkv * D + x)] = v2[size_t(j * Hkv * D + x)] = NAN;
    tessera_attention_desc dl =
        forwardDesc(0, q2, k2, v2, o2, l2.data(), B, N, NK, H, Hkv, D);
    dl.seq_lens_k = lens.data();
    ASSERT_EQ(tessera_attention_run(bundle, &dl), TESSERA_OK)
        << tessera_last_error();
    tessera_tensor g2 = cTensor(G2, B, N, H, D), tq2 = cTensor(dq2, B, N, H, D),
                   tk2 = cTensor(dk2, B, NK, Hkv, D),
                   tv2 = cTensor(dv2, B, NK, Hkv, D);
    ASSERT_EQ(tessera_attention_backward(bundle, &dl, &g2, nullptr, &tq2, &tk2,
                                         &tv2),
              TESSERA_OK)
        << tessera_last_error();
    // Sequence 0 alone over its 30 keys.
    std::vector<float> q1(q2.begin(), q2.begin() + N * H * D),
        k1(k2.begin(), k2.begin() + 30 * Hkv * D),
        v1(v2.begin(), v2.begin() + 30 * Hkv * D),
        o1(o2.begin(), o2.begin() + N * H * D),
        G1(G2.begin(), G2.begin() + N * H * D), l1(l2.begin(), l2.begin() + H * N),
        dq1(q1.size()), dk1(k1.size()), dv1(k1.size());
    tessera_attention_desc d1 =
        forwardDesc(0, q1, k1, v1, o1, l1.data(), 1, N, 30, H, Hkv, D);
    tessera_tensor g1 = cTensor(G1, 1, N, H, D), tq1 = cTensor(dq1, 1, N, H, D),
                   tk1 = cTensor(dk1, 1, 30, Hkv, D),
                   tv1 = cTensor(dv1, 1, 30, Hkv, D);
    ASSERT_EQ(tessera_attention_backward(bundle, &d1, &g1, nullptr, &tq1, &tk1,
                                         &tv1),
              TESSERA_OK)
        << tessera_last_error();
    EXPECT_TRUE(std::equal(dq1.begin(), dq1.end(), dq2.begin()));
    EXPECT_TRUE(std::equal(dk1.begin(), dk1.end(), dk2.begin()));
    EXPECT_TRUE(std::equal(dv1.begin(), dv1.end(), dv2.begin()));
    for (int64_t j = 30; j < NK; ++j)
      for (int64_t x = 0; x < Hkv * D; ++x)
        ASSERT_EQ(dk2[size_t(j * Hkv * D + x)] + dv2[size_t(j * Hkv * D + x)],
                  0.0f)
            << "key " << j << " past the length";
  }
  // Refused: positions, naming what the backward takes.
  std::vector<int64_t> starts(nqs.size(), 0);
  tessera_attention_desc positioned = d;
  positioned.k_start = starts.data();
  EXPECT_EQ(tessera_attention_backward(bundle, &positioned, &tG, nullptr, &tdq,
                                       &tdk, &tdv),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("k_start"),
            std::string::npos)
      << tessera_last_error();
}

} // namespace

