//===- SeqBackwardFakeDriverTest.cpp - per-sequence CUDA backward ---------===//
//
// tessera_attention_backward on a CUDA context (the fake driver: the
// bundles' emitted backward kernels run on the emulator) for packed
// (cu_seqlens_q / cu_seqlens_k), length (seq_lens_k) and head-range calls
// of static heads (docs/backward.md, "On CUDA"):
//
// - tiny-mix layer 0 (bf16, head_dim 64, GQA 3:1; SeqCalls.h's layouts and
//   float64 forward): dq, dk and dv against a float64 backward written here
//   from the formulas over each sequence's allowed pairs at its
//   bottom-right positions, and against the CPU context's backward of the
//   same call; rows and keys no sequence owns exactly zero (the outputs
//   start as NaN: every element is written); sequences of lengths that are
//   and are not multiples of 64, empty ones, lq < lk and lq > lk, a head
//   range that cuts both GQA groups; sequence arrays out of range on the
//   device give the bad sequence NaN gradients (no host read, no sync);
// - Inputs/BackwardCuda.mlir (f16 at head_dim 64 with a skipped head, bf16
//   at 128 with GQA 4:1): packed, length and head-range calls against the
//   CPU context's backward;
// - a copy of the backward-cuda bundle whose kernels drop each sequence's
//   key offset (broken-bwd-seq) fails; a layer with dynamic heads refuses
//   a packed call by name; no synchronising driver call.
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/Half.h"
#include "tessera/tessera.h"

#include <gtest/gtest.h>

#include "FakeApi.h"
#include "SeqCalls.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace tessera::seqcalls;
using Bits = std::vector<uint16_t>;

std::string bundleDir(const std::string &name) {
  return std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
}

float toFloat(uint16_t x, bool bf16) {
  return bf16 ? tessera::cpu::bf16ToFloat(x) : tessera::cpu::f16ToFloat(x);
}
uint16_t fromFloat(float x, bool bf16) {
  return bf16 ? tessera::cpu::floatToBf16(x) : tessera::cpu::floatToF16(x);
}
uint16_t nanBits(bool bf16) { return bf16 ? 0x7fc0 : 0x7e00; }

Bits randomBits(size_t n, bool bf16, std::mt19937 &rng, float range) {
  std::uniform_real_distribution<float> u(-range, range);
  Bits b(n);
  for (uint16_t &x : b)
    x = fromFloat(u(rng), bf16);
  return b;
}

/// A call's gradients: dq like q, dk and dv like k.
struct Grads {
  Bits dq, dk, dv;
};

/// The set of driver calls in a comma-separated log.
std::set<std::string> callSet(const std::string &log) {
  std::set<std::string> s;
  std::stringstream in(log);
  for (std::string c; std::getline(in, c, ',');)
    s.insert(c);
  return s;
}

class FakeDriverSeqBackward : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    setenv("TESSERA_LIBCUDA", TESSERA_FAKECUDA, 1);
    setenv("TESSERA_CACHE_DIR", TESSERA_BINARY_DIR "/test/fake-cuda-cache", 1);
  }
  void TearDown() override {
    for (tessera_bundle *b : {cpuBundle, cudaBundle})
      if (b)
        tessera_bundle_destroy(b);
    for (tessera_context *c : {cpu, cuda})
      if (c)
        tessera_context_destroy(c);
    FakeApi::get().useBundle("tiny-mix");
  }

  /// Loads bundle `name` on a CPU context and on the fake CUDA context,
  /// the latter running the kernels of the fake driver's bundle `emulated`.
  void load(const std::string &name, const std::string &emulated) {
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &cpu), TESSERA_OK)
        << tessera_last_error();
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CUDA, 0, &cuda), TESSERA_OK)
        << tessera_last_error();
    const std::string dir = bundleDir(name);
    ASSERT_EQ(tessera_bundle_load_file(cpu, dir.c_str(), &cpuBundle),
              TESSERA_OK)
        << tessera_last_error();
    FakeApi::get().useBundle(emulated.c_str());
    ASSERT_EQ(tessera_bundle_load_file(cuda, dir.c_str(), &cudaBundle),
              TESSERA_OK)
        << tessera_last_error();
  }

public:
  /// The backward of `d` (its q, k, v, o, lse and sequence arrays set) with
  /// gradient dO on `bundle`; g's buffers sized like q and k. On the CUDA
  /// context every buffer (`device`: the others, such as the sequence
  /// arrays) is registered as device memory and the work goes to a stream
  /// of the caller's.
  static tessera_status
  backward(tessera_bundle *bundle, bool onCuda, tessera_attention_desc d,
           Bits &dO, Grads &g,
           const std::vector<std::pair<const void *, size_t>> &device) {
    FakeApi &f = FakeApi::get();
    f.clear();
    tessera_tensor tdO = d.o, tdq = d.q, tdk = d.k, tdv = d.k;
    tdO.data = dO.data();
    tdq.data = g.dq.data();
    tdk.data = g.dk.data();
    tdv.data = g.dv.data();
    if (onCuda) {
      for (auto [p, n] : device)
        if (p)
          f.registerRange(p, n);
      for (Bits *v : {&dO, &g.dq, &g.dk, &g.dv})
        f.registerRange(v->data(), v->size() * 2);
      d.cuda_stream = reinterpret_cast<void *>(0x5eed);
    }
    return tessera_attention_backward(bundle, &d, &tdO, nullptr, &tdq, &tdk,
                                      &tdv);
  }

protected:
  tessera_context *cpu = nullptr, *cuda = nullptr;
  tessera_bundle *cpuBundle = nullptr, *cudaBundle = nullptr;
};

/// What a CUDA graph can capture: launches on the caller's stream, the
/// workspace allocated and freed in stream order, pointer queries, context
/// switches; nothing that synchronises.
void expectNoSync() {
  for (const std::string &call : callSet(FakeApi::get().calls()))
    EXPECT_TRUE(call == "cuLaunchKernel" || call == "cuMemAllocAsync" ||
                call == "cuMemFreeAsync" || call == "cuPointerGetAttribute" ||
                call == "cuCtxPushCurrent" || call == "cuCtxPopCurrent")
        << call;
}

/// Elements of `got` off `want` by more than `tol` of want's largest
/// magnitude (non-finite values count), the first few reported where
/// `report`.
int64_t mismatches(const Bits &got, const Bits &want, bool bf16, double tol,
                   const char *name, bool report = true) {
  double top = 0;
  for (uint16_t w : want)
    top = std::max(top, std::fabs(double(toFloat(w, bf16))));
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = toFloat(got[i], bf16), w = toFloat(want[i], bf16);
    if (std::isfinite(g) && std::fabs(g - w) <= tol * top)
      continue;
    if (++bad <= 3 && report)
      ADD_FAILURE() << name << "[" << i << "] = " << g << ", the CPU's " << w
                    << " (largest " << top << ")";
  }
  return bad;
}

//===----------------------------------------------------------------------===//
// tiny-mix layer 0 against float64
//===----------------------------------------------------------------------===//

/// The start of key row j (kv head slot kvl) of sequence s in `b`'s k.
size_t keyAt(const Built &b, int64_t s, int64_t j, int64_t kvl) {
  const int64_t row =
      b.lay.k == KLayout::Packed ? b.cuK[size_t(s)] + j : s * b.d.k.seq + j;
  return size_t((row * b.kvHeads + kvl) * D);
}

/// The float64 backward of a call of tiny-mix layer 0 built as `b` (the
/// heads of its range), from the formulas over each sequence's allowed
/// pairs at its positions: D_i from O as the kernels read it (b.oh), P
/// from the reference LSE; dq, dk, dv indexed like b's q and k buffers,
/// and which of their rows a sequence owns.
struct Float64Grads {
  std::vector<double> dq, dk, dv;
  std::vector<char> qOwned, kOwned; ///< per row of q, of k
};

Float64Grads referenceBackward(const Logical &l, const Built &b,
                               const Reference &r, const Bits &dO,
                               double scale) {
  Float64Grads g;
  g.dq.assign(b.qh.size(), 0.0);
  g.dk.assign(b.kh.size(), 0.0);
  g.dv.assign(b.kh.size(), 0.0);
  g.qOwned.assign(b.qh.size() / size_t(b.heads * D), 0);
  g.kOwned.assign(b.kh.size() / size_t(b.kvHeads * D), 0);
  auto val = [](uint16_t x) { return double(tessera::cpu::bf16ToFloat(x)); };
  for (size_t s = 0; s < l.seqs.size(); ++s) {
    const Seq &sq = l.seqs[s];
    for (int64_t i = 0; i < sq.nq; ++i)
      g.qOwned[b.oAt(int64_t(s), i, 0) / size_t(b.heads * D)] = 1;
    for (int64_t j = 0; j < sq.nk; ++j)
      g.kOwned[keyAt(b, int64_t(s), j, 0) / size_t(b.kvHeads * D)] = 1;
    for (int64_t hl = 0; hl < b.heads; ++hl) {
      const int64_t h = b.lay.h0 + hl, kvl = h / G - b.kvLo;
      for (int64_t i = 0; i < sq.nq; ++i) {
        const double lse = r.lse[s][size_t(h * sq.nq + i)];
        if (lse == -kInf)
          continue; // a row without keys: dq = 0
        const size_t qa = b.oAt(int64_t(s), i, hl);
        double di = 0;
        for (int64_t x = 0; x < D; ++x)
          di += val(dO[qa + size_t(x)]) * val(b.oh[qa + size_t(x)]);
        for (int64_t j = 0; j < sq.nk; ++j) {
          if (!allowed(h, queryStart(sq) + i, keyStart(sq) + j))
            continue;
          const float *q = &l.q[s][size_t((i * H + h) * D)];
          const float *k = &l.k[s][size_t((j * Hkv + h / G) * D)];
          const float *v = &l.v[s][size_t((j * Hkv + h / G) * D)];
          double dot = 0, dp = 0;
          for (int64_t x = 0; x < D; ++x) {
            dot += double(q[x]) * double(k[x]);
            dp += val(dO[qa + size_t(x)]) * double(v[x]);
          }
          const double p = std::exp(dot * scale - lse), ds = p * (dp - di);
          const size_t ka = keyAt(b, int64_t(s), j, kvl);
          for (int64_t x = 0; x < D; ++x) {
            g.dq[qa + size_t(x)] += scale * ds * double(k[x]);
            g.dk[ka + size_t(x)] += scale * ds * double(q[x]);
            g.dv[ka + size_t(x)] += p * val(dO[qa + size_t(x)]);
          }
        }
      }
    }
  }
  return g;
}

/// Elements of `got` off the float64 `want` by more than bf16's tolerance
/// (1.6e-2 of want's largest magnitude, the emulator tests'), and rows no
/// sequence owns that are not exactly zero.
int64_t float64Mismatches(const Bits &got, const std::vector<double> &want,
                          const std::vector<char> &owned, int64_t rowSize,
                          const char *name) {
  double top = 0;
  for (double w : want)
    top = std::max(top, std::fabs(w));
  EXPECT_GT(top, 0.0) << name << ": the call has gradients";
  int64_t bad = 0, zeros = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const double g = tessera::cpu::bf16ToFloat(got[e]);
    zeros += !owned[e / size_t(rowSize)];
    const bool mine = owned[e / size_t(rowSize)];
    if (mine ? std::isfinite(g) && std::fabs(g - want[e]) <= 1.6e-2 * top
             : g == 0.0)
      continue;
    if (++bad <= 3)
      ADD_FAILURE() << name << "[" << e << "] (row " << e / size_t(rowSize)
                    << (mine ? "" : ", owned by no sequence") << ") = " << g
                    << ", float64 " << want[e] << " (largest " << top << ")";
  }
  std::printf("%s: %zu elements, %lld owned by no sequence (zero), largest "
              "%.3g\n",
              name, got.size(), (long long)zeros, top);
  return bad;
}

/// One call of tiny-mix layer 0 in layout `lay` over `seqs`: the forward's
/// O and LSE from the float64 reference (O rounded to bf16), dO random;
/// the CUDA context's gradients against float64 and against the CPU
/// context's.
void checkTinyMix(FakeDriverSeqBackward *t, tessera_bundle *cudaBundle,
                  tessera_bundle *cpuBundle, std::vector<Seq> seqs, Layout lay,
                  uint64_t seed) {
  lay.bf16 = true;
  const Logical l = makeLogical(std::move(seqs), seed, /*bf16=*/true);
  const double scale = 1.0 / std::sqrt(double(D));
  const Reference r = reference(l, scale);
  Built b = build(l, lay, seed);
  for (size_t s = 0; s < l.seqs.size(); ++s)
    for (int64_t i = 0; i < l.seqs[s].nq; ++i)
      for (int64_t hl = 0; hl < b.heads; ++hl) {
        const int64_t h = lay.h0 + hl;
        for (int64_t x = 0; x < D; ++x)
          b.oh[b.oAt(int64_t(s), i, hl) + size_t(x)] =
              tessera::cpu::floatToBf16(
                  float(r.o[s][size_t((i * H + h) * D + x)]));
        b.lse[b.lseAt(int64_t(s), i, hl)] =
            float(r.lse[s][size_t(h * l.seqs[s].nq + i)]);
      }
  std::mt19937 rng{unsigned(seed)};
  Bits dO = randomBits(b.qh.size(), true, rng, 1.f);
  const Float64Grads want = referenceBackward(l, b, r, dO, scale);

  const std::vector<std::pair<const void *, size_t>> device = {
      {b.qh.data(), b.qh.size() * 2},
      {b.kh.data(), b.kh.size() * 2},
      {b.vh.data(), b.vh.size() * 2},
      {b.oh.data(), b.oh.size() * 2},
      {b.lse.data(), b.lse.size() * 4},
      {b.cuQ.empty() ? nullptr : b.cuQ.data(), b.cuQ.size() * 4},
      {b.cuK.empty() ? nullptr : b.cuK.data(), b.cuK.size() * 4},
      {b.lens.empty() ? nullptr : b.lens.data(), b.lens.size() * 4}};
  Grads gpu{Bits(b.qh.size(), nanBits(true)), Bits(b.kh.size(), nanBits(true)),
            Bits(b.kh.size(), nanBits(true))};
  ASSERT_EQ(
      FakeDriverSeqBackward::backward(cudaBundle, true, b.d, dO, gpu, device),
      TESSERA_OK)
      << tessera_last_error();
  expectNoSync();
  // The passes' per-sequence twins; no zero fill (tiny-mix skips no head).
  EXPECT_STREQ(FakeApi::get().kernels(),
               "tessera_bwd_pre_bf16_d64,tessera_bwd_dkdv_bf16_d64_seq,"
               "tessera_bwd_dq_bf16_d64_seq,"
               "tessera_bwd_dkdv_guarded_bf16_d64_seq,"
               "tessera_bwd_dq_guarded_bf16_d64_seq");
  EXPECT_EQ(float64Mismatches(gpu.dq, want.dq, want.qOwned, b.heads * D, "dq"),
            0);
  EXPECT_EQ(
      float64Mismatches(gpu.dk, want.dk, want.kOwned, b.kvHeads * D, "dk"), 0);
  EXPECT_EQ(
      float64Mismatches(gpu.dv, want.dv, want.kOwned, b.kvHeads * D, "dv"), 0);
  // The CPU context's backward of the same call.
  Grads host{Bits(b.qh.size(), 0), Bits(b.kh.size(), 0), Bits(b.kh.size(), 0)};
  ASSERT_EQ(
      FakeDriverSeqBackward::backward(cpuBundle, false, b.d, dO, host, device),
      TESSERA_OK)
      << tessera_last_error();
  EXPECT_EQ(mismatches(gpu.dq, host.dq, true, 1.6e-2, "dq"), 0);
  EXPECT_EQ(mismatches(gpu.dk, host.dk, true, 1.6e-2, "dk"), 0);
  EXPECT_EQ(mismatches(gpu.dv, host.dv, true, 1.6e-2, "dv"), 0);
  (void)t;
}

class FakeDriverSeqBackwardTinyMix : public FakeDriverSeqBackward {
protected:
  void SetUp() override { load("tiny-mix", "tiny-mix"); }
  void check(std::vector<Seq> seqs, Layout lay, uint64_t seed) {
    checkTinyMix(this, cudaBundle, cpuBundle, std::move(seqs), lay, seed);
  }
};

/// Packed queries and keys: lengths that are multiples of 64 and not, an
/// empty sequence, one without keys (dq = 0), lq < lk, lq = lk and lq > lk,
/// packed rows and keys no sequence owns (zeros).
TEST_F(FakeDriverSeqBackwardTinyMix, PackedQueriesAndKeys) {
  check({{70, 70}, {0, 5}, {64, 128}, {130, 40}, {3, 0}, {1, 90}},
        {QLayout::Packed, KLayout::Packed}, 1);
}

/// Dense queries with lengths (a static cache filled in part: its NaN rows
/// past each length must not reach a gradient, and get dk = dv = 0).
TEST_F(FakeDriverSeqBackwardTinyMix, DenseQueriesWithLengths) {
  check({{50, 100}, {50, 64}, {50, 20}, {50, 0}},
        {QLayout::Dense, KLayout::Lengths}, 2);
}

/// Packed queries against dense keys of one length.
TEST_F(FakeDriverSeqBackwardTinyMix, PackedQueriesDenseKeys) {
  check({{30, 80}, {100, 80}, {0, 80}, {64, 80}},
        {QLayout::Packed, KLayout::Dense}, 3);
}

/// Head ranges: heads 1-3 cut both GQA groups (kv head 0 sums heads 1 and
/// 2 only, kv head 1 head 3 only), packed; heads 3-4 with lengths; one
/// head (5, shifted groups).
TEST_F(FakeDriverSeqBackwardTinyMix, HeadRanges) {
  Layout packed{QLayout::Packed, KLayout::Packed};
  packed.h0 = 1, packed.n = 3;
  check({{70, 130}, {65, 20}, {0, 3}}, packed, 4);
  Layout lengths{QLayout::Dense, KLayout::Lengths};
  lengths.h0 = 3, lengths.n = 2;
  check({{40, 100}, {40, 7}}, lengths, 5);
  Layout dense{QLayout::Dense, KLayout::Dense};
  dense.h0 = 5, dense.n = 1;
  check({{90, 60}, {90, 60}}, dense, 6);
}

/// Sequence arrays out of range in device memory, which the host does not
/// read: the call returns TESSERA_OK without a synchronisation, and the
/// kernels give the bad sequence's rows (and, dense keys, its keys) NaN
/// gradients while sequence 0's stay finite. (Sequence 2 is not checked:
/// with cu_seqlens_k [0, 50, 45, ...] its keys [45, ...) overlap sequence
/// 0's, which docs/backward.md says give undefined values.) Packed keys whose
/// cu_seqlens_k decreases at sequence 1; dense keys whose length of
/// sequence 1 is past Nk.
TEST_F(FakeDriverSeqBackwardTinyMix, BadDeviceArraysGiveNaN) {
  for (KLayout kl : {KLayout::Packed, KLayout::Lengths}) {
    const bool packed = kl == KLayout::Packed;
    const Logical l = makeLogical({{40, 50}, {30, 60}, {20, 10}}, 8, true);
    Layout lay{QLayout::Packed, kl};
    lay.bf16 = true;
    Built b = build(l, lay, 8);
    std::fill(b.lse.begin(), b.lse.end(), 0.f);
    if (packed)
      b.cuK[2] = b.cuK[1] - 5; // sequence 1: keys [50, 45)
    else
      b.lens[1] = int32_t(b.d.k.seq + 1);
    std::mt19937 rng{8u};
    Bits dO = randomBits(b.qh.size(), true, rng, 1.f);
    Grads g{Bits(b.qh.size(), 0), Bits(b.kh.size(), 0), Bits(b.kh.size(), 0)};
    ASSERT_EQ(
        backward(
            cudaBundle, true, b.d, dO, g,
            {{b.qh.data(), b.qh.size() * 2},
             {b.kh.data(), b.kh.size() * 2},
             {b.vh.data(), b.vh.size() * 2},
             {b.oh.data(), b.oh.size() * 2},
             {b.lse.data(), b.lse.size() * 4},
             {b.cuQ.data(), b.cuQ.size() * 4},
             {b.cuK.empty() ? nullptr : b.cuK.data(), b.cuK.size() * 4},
             {b.lens.empty() ? nullptr : b.lens.data(), b.lens.size() * 4}}),
        TESSERA_OK)
        << tessera_last_error();
    expectNoSync();
    int64_t nanBad = 0, finiteGood = 0, rows = 0;
    for (int64_t s : {0, 1})
      for (int64_t i = 0; i < l.seqs[size_t(s)].nq; ++i)
        for (int64_t hl = 0; hl < b.heads; ++hl)
          for (int64_t x = 0; x < D; ++x) {
            const float v =
                tessera::cpu::bf16ToFloat(g.dq[b.oAt(s, i, hl) + size_t(x)]);
            (s == 1 ? nanBad : finiteGood) +=
                s == 1 ? std::isnan(v) : std::isfinite(v);
            rows += s == 1;
          }
    EXPECT_EQ(nanBad, rows) << "sequence 1's dq rows are NaN";
    EXPECT_EQ(finiteGood, l.seqs[0].nq * b.heads * D)
        << "sequence 0's dq rows are finite";
    if (!packed) { // dense keys: the bad sequence's batch entry is NaN
      int64_t nan = 0;
      for (int64_t j = 0; j < b.d.k.seq; ++j)
        for (int64_t x = 0; x < D; ++x)
          nan += std::isnan(
              tessera::cpu::bf16ToFloat(g.dk[keyAt(b, 1, j, 0) + size_t(x)]));
      EXPECT_EQ(nan, b.d.k.seq * D) << "sequence 1's dk";
    }
  }
}

//===----------------------------------------------------------------------===//
// Inputs/BackwardCuda.mlir against the CPU context
//===----------------------------------------------------------------------===//

/// A per-sequence call of BackwardCuda.mlir's layer `layer` (heads, kv
/// heads, head_dim and dtype as the layer's), tensors [qBatch, qSeq,
/// heads, D] and [kBatch, kSeq, kvHeads, D], with the given arrays (empty:
/// none) and head range: the forward and the backward on the CPU context,
/// the backward on the CUDA context; the gradients compared.
struct SeqCall {
  int64_t layer, heads, kvHeads, dim;
  bool bf16;
  int64_t qBatch, qSeq, kBatch, kSeq;
  std::vector<int32_t> cuQ, cuK, lens;
  int64_t numSeqs = 0, headStart = 0, headCount = 0;
};

class FakeDriverSeqBackwardCuda : public FakeDriverSeqBackward {
protected:
  /// Runs `c` on bundle backward-cuda, its kernels from the fake driver's
  /// `emulated`; the number of gradient elements off the CPU's (reported
  /// where `report`).
  int64_t run(SeqCall c, const std::string &emulated, uint64_t seed,
              bool report = true) {
    load("backward-cuda", emulated);
    if (HasFatalFailure())
      return -1;
    std::mt19937 rng{unsigned(seed)};
    const size_t qn = size_t(c.qBatch * c.qSeq * c.heads * c.dim),
                 kn = size_t(c.kBatch * c.kSeq * c.kvHeads * c.dim);
    Bits q = randomBits(qn, c.bf16, rng, 2.f),
         k = randomBits(kn, c.bf16, rng, 2.f),
         v = randomBits(kn, c.bf16, rng, 1.f), o(qn, 0),
         dO = randomBits(qn, c.bf16, rng, 1.f);
    std::vector<float> lse(size_t(c.qBatch * c.heads * c.qSeq), 0.f);
    auto tensor = [&](Bits &b, int64_t batch, int64_t seq, int64_t heads) {
      tessera_tensor t{};
      t.data = b.data();
      t.dtype = c.bf16 ? TESSERA_DTYPE_BF16 : TESSERA_DTYPE_F16;
      t.batch = batch, t.seq = seq, t.heads = heads, t.head_dim = c.dim;
      t.stride_head = c.dim, t.stride_seq = heads * c.dim;
      t.stride_batch = seq * heads * c.dim;
      return t;
    };
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = c.layer;
    d.q = tensor(q, c.qBatch, c.qSeq, c.heads);
    d.k = tensor(k, c.kBatch, c.kSeq, c.kvHeads);
    d.v = tensor(v, c.kBatch, c.kSeq, c.kvHeads);
    d.o = tensor(o, c.qBatch, c.qSeq, c.heads);
    d.lse = lse.data();
    d.cu_seqlens_q = c.cuQ.empty() ? nullptr : c.cuQ.data();
    d.cu_seqlens_k = c.cuK.empty() ? nullptr : c.cuK.data();
    d.seq_lens_k = c.lens.empty() ? nullptr : c.lens.data();
    d.num_seqs = c.numSeqs;
    d.head_start = c.headStart;
    d.head_count = c.headCount;
    FakeApi::get().clear();
    EXPECT_EQ(tessera_attention_run(cpuBundle, &d), TESSERA_OK)
        << tessera_last_error();
    const std::vector<std::pair<const void *, size_t>> device = {
        {q.data(), qn * 2},
        {k.data(), kn * 2},
        {v.data(), kn * 2},
        {o.data(), qn * 2},
        {lse.data(), lse.size() * 4},
        {d.cu_seqlens_q, c.cuQ.size() * 4},
        {d.cu_seqlens_k, c.cuK.size() * 4},
        {d.seq_lens_k, c.lens.size() * 4}};
    Grads host{Bits(qn, 0), Bits(kn, 0), Bits(kn, 0)};
    EXPECT_EQ(backward(cpuBundle, false, d, dO, host, device), TESSERA_OK)
        << tessera_last_error();
    Grads gpu{Bits(qn, nanBits(c.bf16)), Bits(kn, nanBits(c.bf16)),
              Bits(kn, nanBits(c.bf16))};
    EXPECT_EQ(backward(cudaBundle, true, d, dO, gpu, device), TESSERA_OK)
        << tessera_last_error();
    expectNoSync();
    const double tol = c.bf16 ? 1.6e-2 : 2e-3;
    return mismatches(gpu.dq, host.dq, c.bf16, tol, "dq", report) +
           mismatches(gpu.dk, host.dk, c.bf16, tol, "dk", report) +
           mismatches(gpu.dv, host.dv, c.bf16, tol, "dv", report);
  }
};

/// Layer 0 (f16, head_dim 64, GQA 2:1, head 3 skipped: its dq exactly
/// the CPU's zeros): packed queries and keys, lengths of 64 and not, an
/// empty sequence, lq < lk and lq > lk.
TEST_F(FakeDriverSeqBackwardCuda, F16Packed) {
  EXPECT_EQ(run({0,
                 4,
                 2,
                 64,
                 false,
                 1,
                 260,
                 1,
                 300,
                 {0, 64, 64, 170, 250},
                 {0, 128, 130, 230, 300},
                 {},
                 4},
                "backward-cuda", 11),
            0);
}

/// Layer 0 with lengths (one of them 0: its rows get dq = 0).
TEST_F(FakeDriverSeqBackwardCuda, F16Lengths) {
  EXPECT_EQ(run({0, 4, 2, 64, false, 3, 90, 3, 160, {}, {}, {160, 33, 0}, 0},
                "backward-cuda", 12),
            0);
}

/// Layer 0 with lengths and a head range of the second group (heads 2-3:
/// the skipped head's dq zero, kv head 1 the sum of head 2's).
TEST_F(FakeDriverSeqBackwardCuda, F16LengthsAndHeadRange) {
  EXPECT_EQ(run({0, 2, 1, 64, false, 2, 100, 2, 70, {}, {}, {70, 64}, 0, 2, 2},
                "backward-cuda", 13),
            0);
}

/// Layer 1 (bf16, head_dim 128, GQA 4:1): a packed head range that cuts
/// the group (heads 1-2), lq > lk in a sequence.
TEST_F(FakeDriverSeqBackwardCuda, Bf16HeadDim128PackedHeadRange) {
  EXPECT_EQ(run({1,
                 2,
                 1,
                 128,
                 true,
                 1,
                 200,
                 1,
                 180,
                 {0, 150, 200},
                 {0, 100, 180},
                 {},
                 2,
                 1,
                 2},
                "backward-cuda", 14),
            0);
}

/// A copy of the bundle whose kernels drop each sequence's key offset
/// (every sequence reads and writes the keys of the first): the gradients
/// differ.
TEST_F(FakeDriverSeqBackwardCuda, BrokenKeyOffsetFails) {
  EXPECT_GT(run({0,
                 4,
                 2,
                 64,
                 false,
                 1,
                 200,
                 1,
                 230,
                 {0, 80, 200},
                 {0, 100, 230},
                 {},
                 2},
                "broken-bwd-seq", 15, /*report=*/false),
            0);
}

/// A layer with dynamic heads takes dense backward calls only: a packed
/// call is refused by name, nothing launched.
TEST_F(FakeDriverSeqBackward, DynamicHeadsRefusePackedCalls) {
  load("backward-dynamic", "backward-dynamic");
  Bits q(size_t(64 * 4 * 64), 0), k(size_t(64 * 2 * 64), 0), o = q, dO = q;
  std::vector<float> lse(size_t(4 * 64), 0.f);
  std::vector<int32_t> cu = {0, 64};
  auto tensor = [](Bits &b, int64_t heads) {
    tessera_tensor t{};
    t.data = b.data();
    t.dtype = TESSERA_DTYPE_F16;
    t.batch = 1, t.seq = 64, t.heads = heads, t.head_dim = 64;
    t.stride_head = 64, t.stride_seq = heads * 64,
    t.stride_batch = 64 * heads * 64;
    return t;
  };
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.q = tensor(q, 4);
  d.k = d.v = tensor(k, 2);
  d.o = tensor(o, 4);
  d.lse = lse.data();
  d.cu_seqlens_q = cu.data();
  d.num_seqs = 1;
  Grads g{Bits(q.size()), Bits(k.size()), Bits(k.size())};
  EXPECT_EQ(backward(cudaBundle, true, d, dO, g,
                     {{q.data(), q.size() * 2},
                      {k.data(), k.size() * 2},
                      {o.data(), o.size() * 2},
                      {lse.data(), lse.size() * 4},
                      {cu.data(), cu.size() * 4}}),
            TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("dynamic heads"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_STREQ(FakeApi::get().kernels(), "");
}

} // namespace
