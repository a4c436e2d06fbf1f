//===- ExecutorTest.cpp - CPU executor against a float64 reference -------===//
//
// The CPU executor runs block schedules; here its output and LSE are compared
// with a dense float64 attention that masks with the reference semantics.
// Error = max |out - ref| / max |ref| over the whole output. Tolerances:
// fp32 1e-5; fp16 2e-3 and bf16 1.6e-2 (the output is rounded to that type:
// 2^-11 and 2^-8 relative, plus fp32 accumulation). Inputs are rounded to
// the input type first, and the reference reads the rounded values.
//
//===----------------------------------------------------------------------===//

#include "PatternGen.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Transforms/HeadGroups.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

using namespace tessera;
using tessera::test::PatternGen;

namespace {

struct Buffer {
  cpu::DType dtype;
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  void *data() {
    return dtype == cpu::DType::F32 ? (void *)f32.data() : (void *)u16.data();
  }
  double at(size_t i) const {
    switch (dtype) {
    case cpu::DType::F32:
      return f32[i];
    case cpu::DType::F16:
      return cpu::f16ToFloat(u16[i]);
    default:
      return cpu::bf16ToFloat(u16[i]);
    }
  }
};

Buffer randomBuffer(cpu::DType dtype, size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Buffer b{dtype, {}, {}};
  if (dtype == cpu::DType::F32)
    b.f32.resize(n);
  else
    b.u16.resize(n);
  for (size_t i = 0; i < n; ++i) {
    float x = dist(rng);
    if (dtype == cpu::DType::F32)
      b.f32[i] = x;
    else if (dtype == cpu::DType::F16)
      b.u16[i] = cpu::floatToF16(x);
    else
      b.u16[i] = cpu::floatToBf16(x);
  }
  return b;
}

struct Case {
  int64_t batch, hq, hkv, d, nq, nk, bq, bk;
  cpu::DType dtype;
};

/// Runs the executor and the reference; returns the normwise output error
/// and checks LSE. `heads[h]` is the reference pattern of head h.
double runAndCompare(const Case &c,
                     const std::vector<semantics::Pattern> &heads,
                     const schedule::LayerSchedule &sched, uint64_t seed,
                     std::string &lseError) {
  std::mt19937_64 rng(seed);
  size_t qn = c.batch * c.nq * c.hq * c.d, kn = c.batch * c.nk * c.hkv * c.d;
  Buffer q = randomBuffer(c.dtype, qn, rng), k = randomBuffer(c.dtype, kn, rng),
         v = randomBuffer(c.dtype, kn, rng), o = randomBuffer(c.dtype, qn, rng);
  std::vector<float> lse(c.batch * c.hq * c.nq, 12345.0f);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), c.dtype, c.batch, c.nq, c.hq, c.d);
  args.k = cpu::contiguous(k.data(), c.dtype, c.batch, c.nk, c.hkv, c.d);
  args.v = cpu::contiguous(v.data(), c.dtype, c.batch, c.nk, c.hkv, c.d);
  args.o = cpu::contiguous(o.data(), c.dtype, c.batch, c.nq, c.hq, c.d);
  args.lse = lse.data();
  args.blockQ = c.bq;
  args.blockK = c.bk;
  args.numThreads = 2;
  std::string err = cpu::runLayer(sched.table(), args);
  EXPECT_EQ(err, "");

  double scale = 1.0 / std::sqrt(double(c.d));
  double maxErr = 0, maxRef = 0;
  int64_t group = c.hq / c.hkv;
  std::vector<double> s(c.nk), out(c.d);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.hq; ++h)
      for (int64_t i = 0; i < c.nq; ++i) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < c.nk; ++j) {
          s[j] = -std::numeric_limits<double>::infinity();
          if (!semantics::allowed(heads[h], i, j, h, c.nq, c.nk, c.hq))
            continue;
          double dot = 0;
          for (int64_t x = 0; x < c.d; ++x)
            dot += q.at(((b * c.nq + i) * c.hq + h) * c.d + x) *
                   k.at(((b * c.nk + j) * c.hkv + h / group) * c.d + x);
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        double l = 0;
        std::fill(out.begin(), out.end(), 0.0);
        if (m > -std::numeric_limits<double>::infinity())
          for (int64_t j = 0; j < c.nk; ++j) {
            double p = std::exp(s[j] - m);
            l += p;
            for (int64_t x = 0; x < c.d; ++x)
              out[x] +=
                  p * v.at(((b * c.nk + j) * c.hkv + h / group) * c.d + x);
          }
        for (int64_t x = 0; x < c.d; ++x) {
          double ref = l > 0 ? out[x] / l : 0.0;
          double got = o.at(((b * c.nq + i) * c.hq + h) * c.d + x);
          maxErr = std::max(maxErr, std::abs(got - ref));
          maxRef = std::max(maxRef, std::abs(ref));
        }
        double refLse =
            l > 0 ? m + std::log(l) : -std::numeric_limits<double>::infinity();
        float gotLse = lse[(b * c.hq + h) * c.nq + i];
        bool ok = l > 0 ? std::abs(gotLse - refLse) <=
                              1e-4 * std::max(1.0, std::abs(refLse))
                        : std::isinf(gotLse) && gotLse < 0;
        if (!ok && lseError.empty())
          lseError = "LSE at b=" + std::to_string(b) +
                     " h=" + std::to_string(h) + " q=" + std::to_string(i) +
                     ": " + std::to_string(gotLse) + " vs " +
                     std::to_string(refLse);
      }
  return maxRef > 0 ? maxErr / maxRef : maxErr;
}

double tolerance(cpu::DType t) {
  return t == cpu::DType::F32 ? 1e-5 : t == cpu::DType::F16 ? 2e-3 : 1.6e-2;
}

class ExecutorTest : public ::testing::Test {
protected:
  ExecutorTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

TEST_F(ExecutorTest, RandomPatternsShapesAndDtypes) {
  PatternGen gen(&ctx, /*seed=*/2718);
  for (int i = 0; i < 120; ++i) {
    Case c;
    c.batch = gen.uniform(1, 2);
    c.hkv = gen.uniform(1, 2);
    c.hq = c.hkv * gen.uniform(1, 3);
    c.d = 8 * gen.uniform(1, 3);
    c.nq = gen.uniform(1, 70);
    c.nk = gen.uniform(1, 70);
    c.bq = gen.uniform(1, 17);
    c.bk = gen.uniform(1, 17);
    c.dtype = std::array{cpu::DType::F32, cpu::DType::F16,
                         cpu::DType::BF16}[gen.uniform(0, 2)];
    std::vector<semantics::Pattern> heads;
    std::vector<schedule::HeadGroup> groups;
    std::string pats;
    for (int64_t h = 0; h < c.hq; ++h) {
      attn::PatternAttrInterface p = gen.pattern(2);
      llvm::raw_string_ostream(pats) << p << "\n";
      heads.push_back(semantics::fromAttr(p));
      groups.push_back({heads.back(), {h}});
    }
    schedule::LayerSchedule sched;
    std::string error;
    ASSERT_TRUE(schedule::buildLayerSchedule(groups, c.hq, sched, error));
    std::string lseError;
    double err = runAndCompare(c, heads, sched, 1000 + i, lseError);
    EXPECT_LE(err, tolerance(c.dtype))
        << "case " << i << " Nq=" << c.nq << " Nk=" << c.nk << "\n"
        << pats;
    EXPECT_EQ(lseError, "") << "case " << i << "\n" << pats;
  }
}

TEST_F(ExecutorTest, EmptyRowsGiveZeroAndMinusInfinity) {
  // Nq > Nk with causal: the first Nq - Nk rows see no key.
  std::vector<semantics::Pattern> heads = {
      semantics::Pattern{semantics::Causal{}},
      semantics::Pattern{semantics::Skip{}}};
  std::vector<schedule::HeadGroup> groups = {{heads[0], {0}}, {heads[1], {1}}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(groups, 2, sched, error));
  EXPECT_EQ(sched.skippedHeads, std::vector<kernel::i64>{1});
  Case c{1, 2, 1, 16, 20, 7, 4, 4, cpu::DType::F32};
  std::string lseError;
  EXPECT_LE(runAndCompare(c, heads, sched, 5, lseError), 1e-5);
  EXPECT_EQ(lseError, "");
}

/// Non-finite inputs (docs/runtime.md): a NaN or an infinity in a key or
/// value that a row cannot see leaves the row as it is (masked lanes are
/// selected, not multiplied); a NaN query or key that a row sees makes its
/// output and LSE NaN, never an empty row (0, -inf). Random patterns with
/// partial and full tiles, Nq != Nk, f32 and bf16, against the same run on
/// clean inputs.
TEST_F(ExecutorTest, NonFiniteInputsReachOnlyTheRowsThatSeeThem) {
  PatternGen gen(&ctx, /*seed=*/77);
  const float inf = std::numeric_limits<float>::infinity(),
              nan = std::numeric_limits<float>::quiet_NaN();
  for (int i = 0; i < 40; ++i) {
    const int64_t nq = gen.uniform(1, 90), nk = gen.uniform(1, 90), d = 16;
    const int64_t bq = gen.uniform(4, 32), bk = gen.uniform(4, 32);
    // The review's case first: causal, v[5] = inf, k[2] = NaN.
    semantics::Pattern head =
        i == 0 ? semantics::Pattern{semantics::Causal{}}
               : semantics::fromAttr(gen.pattern(2));
    schedule::LayerSchedule sched;
    std::string error;
    ASSERT_TRUE(schedule::buildLayerSchedule({{head, {0}}}, 1, sched, error));
    const cpu::DType dtype = i % 3 == 2 ? cpu::DType::BF16 : cpu::DType::F32;
    std::mt19937_64 rng(500 + i);
    Buffer q = randomBuffer(dtype, nq * d, rng),
           k = randomBuffer(dtype, nk * d, rng),
           v = randomBuffer(dtype, nk * d, rng);
    auto set = [&](Buffer &b, size_t at, float x) {
      if (dtype == cpu::DType::F32)
        b.f32[at] = x;
      else
        b.u16[at] = cpu::floatToBf16(x);
    };
    auto run = [&](Buffer &qb, Buffer &kb, Buffer &vb,
                   std::vector<double> &o, std::vector<float> &lse) {
      Buffer ob = randomBuffer(dtype, nq * d, rng);
      lse.assign(nq, 12345.0f);
      cpu::LayerArgs a;
      a.q = cpu::contiguous(qb.data(), dtype, 1, nq, 1, d);
      a.k = cpu::contiguous(kb.data(), dtype, 1, nk, 1, d);
      a.v = cpu::contiguous(vb.data(), dtype, 1, nk, 1, d);
      a.o = cpu::contiguous(ob.data(), dtype, 1, nq, 1, d);
      a.lse = lse.data();
      a.blockQ = bq;
      a.blockK = bk;
      a.numThreads = 2;
      ASSERT_EQ(cpu::runLayer(sched.table(), a), "");
      o.resize(nq * d);
      for (int64_t x = 0; x < nq * d; ++x)
        o[x] = ob.at(x);
    };
    std::vector<double> clean, got;
    std::vector<float> cleanLse, gotLse;
    run(q, k, v, clean, cleanLse);
    auto sees = [&](int64_t row, int64_t key) {
      return semantics::allowed(head, row, key, 0, nq, nk, 1);
    };
    auto same = [&](int64_t row, int64_t x) {
      double a = got[row * d + x], b = clean[row * d + x];
      return std::abs(a - b) <= tolerance(dtype) * (1 + std::abs(b));
    };
    auto sameLse = [&](int64_t row) {
      float a = gotLse[row], b = cleanLse[row];
      return a == b || std::abs(a - b) <= 1e-4f * (1 + std::abs(b));
    };
    const int64_t kv = i == 0 ? std::min<int64_t>(5, nk - 1)
                              : gen.uniform(0, nk - 1);
    const int64_t kk = i == 0 ? std::min<int64_t>(2, nk - 1)
                              : gen.uniform(0, nk - 1);
    const int64_t qr = gen.uniform(0, nq - 1);
    std::string where = "case " + std::to_string(i) + " Nq " +
                        std::to_string(nq) + " Nk " + std::to_string(nk);
    // An infinite value (dimension 0) of key kv.
    {
      Buffer vb = v;
      set(vb, kv * d, inf);
      run(q, k, vb, got, gotLse);
      for (int64_t row = 0; row < nq; ++row) {
        EXPECT_TRUE(sameLse(row)) << where << " row " << row;
        if (sees(row, kv))
          EXPECT_FALSE(std::isfinite(got[row * d])) << where << " row " << row;
        else
          EXPECT_TRUE(same(row, 0)) << where << " row " << row << " got "
                                    << got[row * d] << " want "
                                    << clean[row * d];
        for (int64_t x = 1; x < d; ++x)
          EXPECT_TRUE(sees(row, kv) || same(row, x)) << where << " row " << row;
      }
    }
    // A NaN key kk.
    {
      Buffer kb = k;
      for (int64_t x = 0; x < d; ++x)
        set(kb, kk * d + x, nan);
      run(q, kb, v, got, gotLse);
      for (int64_t row = 0; row < nq; ++row) {
        if (sees(row, kk)) {
          EXPECT_TRUE(std::isnan(gotLse[row])) << where << " row " << row;
          EXPECT_TRUE(std::isnan(got[row * d])) << where << " row " << row;
          continue;
        }
        EXPECT_TRUE(sameLse(row)) << where << " row " << row;
        for (int64_t x = 0; x < d; ++x)
          EXPECT_TRUE(same(row, x)) << where << " row " << row;
      }
    }
    // A NaN query row qr: NaN if it sees any key, else an empty row.
    {
      Buffer qb = q;
      for (int64_t x = 0; x < d; ++x)
        set(qb, qr * d + x, nan);
      run(qb, k, v, got, gotLse);
      bool any = false;
      for (int64_t key = 0; key < nk; ++key)
        any |= sees(qr, key);
      for (int64_t row = 0; row < nq; ++row) {
        if (row == qr && any) {
          EXPECT_TRUE(std::isnan(gotLse[row])) << where;
          for (int64_t x = 0; x < d; ++x)
            EXPECT_TRUE(std::isnan(got[row * d + x])) << where;
          continue;
        }
        EXPECT_TRUE(sameLse(row)) << where << " row " << row;
        for (int64_t x = 0; x < d; ++x)
          EXPECT_TRUE(same(row, x)) << where << " row " << row;
      }
    }
  }
}

/// Decode-shaped calls at the edges of the one-row paths (Executor.cpp's
/// ring of converted bf16 tiles, f32 rows read in place, P V in register
/// blocks, the vectorised bf16 store) and of the tile path (16 rows, f16):
/// GQA groups of 1, 4 and 8, head_dim 64 and 128, 1 and 16 query rows,
/// sequences of 77, 0, 600 (split into chunks), 16 and 1 keys (dense keys
/// with per-sequence lengths, rows past a length NaN), causal and random
/// patterns, split and unsplit walks, against float64.
TEST_F(ExecutorTest, DecodeStepsAtTheEdges) {
  PatternGen gen(&ctx, /*seed=*/1917);
  const std::vector<int32_t> lens = {77, 0, 600, 16, 1};
  const int64_t batch = int64_t(lens.size()), maxLen = 600, hkv = 2;
  const double inf = std::numeric_limits<double>::infinity();
  int trial = 0;
  for (int64_t group : {1, 4, 8})
    for (int64_t d : {64, 128})
      for (int64_t nq : {1, 16})
        for (cpu::DType dtype :
             {cpu::DType::BF16, cpu::DType::F16, cpu::DType::F32})
          for (bool split : {true, false}) {
            if (dtype != cpu::DType::BF16 && !split)
              continue; // the ring is bf16's only
            SCOPED_TRACE("G=" + std::to_string(group) +
                         " d=" + std::to_string(d) +
                         " Nq=" + std::to_string(nq) + " dtype=" +
                         std::to_string(int(dtype)) +
                         (split ? " split" : " unsplit"));
            const int64_t hq = hkv * group;
            std::vector<semantics::Pattern> heads;
            std::vector<schedule::HeadGroup> groups;
            for (int64_t h = 0; h < hq; ++h) {
              heads.push_back(h == 0 ? semantics::Pattern{semantics::Causal{}}
                                     : semantics::fromAttr(gen.pattern(2)));
              groups.push_back({heads.back(), {h}});
            }
            schedule::LayerSchedule sched;
            std::string error;
            ASSERT_TRUE(schedule::buildLayerSchedule(groups, hq, sched, error));
            std::mt19937_64 rng(7000 + trial++);
            const size_t qn = size_t(batch * nq * hq * d),
                         kn = size_t(batch * maxLen * hkv * d);
            Buffer q = randomBuffer(dtype, qn, rng),
                   k = randomBuffer(dtype, kn, rng),
                   v = randomBuffer(dtype, kn, rng),
                   o = randomBuffer(dtype, qn, rng);
            // Keys past a sequence's length are never read.
            for (int64_t b = 0; b < batch; ++b)
              for (size_t i = size_t((b * maxLen + lens[b]) * hkv * d);
                   i < size_t((b + 1) * maxLen * hkv * d); ++i)
                for (Buffer *t : {&k, &v}) {
                  if (dtype == cpu::DType::F32)
                    t->f32[i] = std::numeric_limits<float>::quiet_NaN();
                  else
                    t->u16[i] = 0x7fc0; // NaN in f16 and bf16
                }
            std::vector<float> lse(size_t(batch * hq * nq), 12345.0f);
            cpu::LayerArgs args;
            args.q = cpu::contiguous(q.data(), dtype, batch, nq, hq, d);
            args.k = cpu::contiguous(k.data(), dtype, batch, maxLen, hkv, d);
            args.v = cpu::contiguous(v.data(), dtype, batch, maxLen, hkv, d);
            args.o = cpu::contiguous(o.data(), dtype, batch, nq, hq, d);
            args.lse = lse.data();
            args.seqs.lensK = lens.data();
            args.blockQ = 64;
            args.blockK = 64;
            args.numThreads = 2;
            args.splitKeys = split;
            ASSERT_EQ(cpu::runLayer(sched.table(), args), "");

            double maxErr = 0, maxRef = 0;
            std::string lseError;
            const double scale = 1.0 / std::sqrt(double(d));
            for (int64_t b = 0; b < batch; ++b)
              for (int64_t h = 0; h < hq; ++h)
                for (int64_t i = 0; i < nq; ++i) {
                  const int64_t nk = lens[size_t(b)], kv = h / group;
                  std::vector<double> s(size_t(nk), -inf), out(size_t(d), 0.0);
                  double m = -inf, l = 0;
                  for (int64_t j = 0; j < nk; ++j) {
                    if (!semantics::allowed(heads[size_t(h)], i, j, h, nq, nk,
                                            hq))
                      continue;
                    double dot = 0;
                    for (int64_t x = 0; x < d; ++x)
                      dot += q.at(size_t(((b * nq + i) * hq + h) * d + x)) *
                             k.at(size_t(((b * maxLen + j) * hkv + kv) * d + x));
                    s[size_t(j)] = dot * scale;
                    m = std::max(m, s[size_t(j)]);
                  }
                  for (int64_t j = 0; j < nk && m > -inf; ++j) {
                    double p = std::exp(s[size_t(j)] - m);
                    l += p;
                    for (int64_t x = 0; x < d && p > 0; ++x)
                      out[size_t(x)] +=
                          p * v.at(size_t(((b * maxLen + j) * hkv + kv) * d + x));
                  }
                  for (int64_t x = 0; x < d; ++x) {
                    double ref = l > 0 ? out[size_t(x)] / l : 0.0;
                    double got = o.at(size_t(((b * nq + i) * hq + h) * d + x));
                    maxErr = std::max(maxErr, std::abs(got - ref));
                    if (std::isnan(got))
                      maxErr = inf;
                    maxRef = std::max(maxRef, std::abs(ref));
                  }
                  double refLse = l > 0 ? m + std::log(l) : -inf;
                  float gotLse = lse[size_t((b * hq + h) * nq + i)];
                  bool ok = l > 0 ? std::abs(gotLse - refLse) <=
                                        1e-4 * std::max(1.0, std::abs(refLse))
                                  : gotLse == -inf;
                  if (!ok && lseError.empty())
                    lseError = "LSE of sequence " + std::to_string(b) +
                               " head " + std::to_string(h) + " row " +
                               std::to_string(i) + ": " +
                               std::to_string(gotLse) + " vs " +
                               std::to_string(refLse);
                }
            EXPECT_LE(maxRef > 0 ? maxErr / maxRef : maxErr,
                      tolerance(dtype));
            EXPECT_EQ(lseError, "");
          }
}

TEST_F(ExecutorTest, RejectsBadArguments) {
  std::vector<schedule::HeadGroup> groups = {
      {semantics::Pattern{semantics::Causal{}}, {0, 1}}};
  schedule::LayerSchedule sched;
  std::string error;
  ASSERT_TRUE(schedule::buildLayerSchedule(groups, 2, sched, error));
  std::vector<float> buf(2 * 8 * 4, 0.0f);
  cpu::LayerArgs ok;
  ok.q = cpu::contiguous(buf.data(), cpu::DType::F32, 1, 4, 2, 8);
  ok.k = ok.v = cpu::contiguous(buf.data(), cpu::DType::F32, 1, 4, 2, 8);
  std::vector<float> out(buf.size());
  ok.o = cpu::contiguous(out.data(), cpu::DType::F32, 1, 4, 2, 8);
  EXPECT_EQ(cpu::runLayer(sched.table(), ok), "");

  auto expectError = [&](cpu::LayerArgs a, const std::string &needle) {
    std::string e = cpu::runLayer(sched.table(), a);
    EXPECT_NE(e.find(needle), std::string::npos) << "got: " << e;
  };
  cpu::LayerArgs a = ok;
  a.q.data = nullptr;
  expectError(a, "q is a null pointer");
  a = ok;
  a.q.heads = 3;
  expectError(a, "q and o must have 2 heads");
  a = ok;
  a.k.heads = 3;
  a.v.heads = 3;
  expectError(a, "k and v must have the same number of heads, dividing");
  a = ok;
  a.v.seq = 3;
  expectError(a, "k and v must have the same sequence length");
  a = ok;
  a.o.headDim = 4;
  expectError(a, "same head_dim");
  a = ok;
  a.blockQ = 0;
  expectError(a, "block sizes");
  a = ok;
  a.scale = -1;
  expectError(a, "scale");
  a = ok;
  a.k.strideSeq = -1;
  expectError(a, "negative stride");
}

/// Every layer of every shipped pattern file, at lengths that are not
/// multiples of the tiles. head_dim is 32 instead of the files' 128 to keep the
/// float64 reference fast; it changes no index computation.
TEST_F(ExecutorTest, ShippedPatterns) {
  std::mt19937_64 rng(42);
  int checkedLayers = 0;
  for (const char *file : {"llama3-8b-sparse.mlir", "video-dit.mlir",
                           "s2-strided.mlir", "tiny-mix.mlir"}) {
    std::string path = std::string(TESSERA_SOURCE_DIR) + "/patterns/" + file;
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceFile<mlir::ModuleOp>(path, &ctx);
    ASSERT_TRUE(module) << path;
    std::set<std::string> seen;
    module->walk([&](attn::LayerOp layer) {
      // Layers with the same set of patterns exercise the same schedule
      // code (the heads differ only in the dispatch table): test one.
      std::set<std::string> patterns;
      for (FusedGroup &g : fuseHeads(layer)) {
        std::string p;
        llvm::raw_string_ostream(p) << g.pattern;
        patterns.insert(p);
      }
      std::string key;
      for (const std::string &p : patterns)
        key += p + ";";
      if (!seen.insert(key).second)
        return;
      std::vector<semantics::Pattern> heads(layer.getNumHeads());
      std::vector<schedule::HeadGroup> groups;
      for (FusedGroup &g : fuseHeads(layer)) {
        semantics::Pattern p = semantics::fromAttr(g.pattern);
        for (int64_t h : g.heads)
          heads[h] = p;
        groups.push_back(
            {p, std::vector<int64_t>(g.heads.begin(), g.heads.end())});
      }
      schedule::LayerSchedule sched;
      std::string error;
      ASSERT_TRUE(schedule::buildLayerSchedule(groups, layer.getNumHeads(),
                                               sched, error));
      bool video = std::string(file) == "video-dit.mlir";
      int64_t nk =
          video ? 2100 : std::uniform_int_distribution<int64_t>(300, 1300)(rng);
      int64_t nq =
          video ? 2100
                : nk - std::uniform_int_distribution<int64_t>(0, 200)(rng);
      Case c{1,  layer.getNumHeads(), layer.getNumKvHeads(), 32, nq, nk, 64,
             64, cpu::DType::F32};
      std::string lseError;
      double err = runAndCompare(c, heads, sched, rng(), lseError);
      EXPECT_LE(err, 1e-5) << file << " layer " << layer.getIndex();
      EXPECT_EQ(lseError, "") << file << " layer " << layer.getIndex();
      ++checkedLayers;
    });
  }
  EXPECT_GE(checkedLayers, 7);
}

} // namespace
