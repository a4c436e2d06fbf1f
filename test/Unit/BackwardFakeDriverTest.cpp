//===- BackwardFakeDriverTest.cpp - the CUDA backward, without a GPU ------===//
//
// tessera_attention_backward on a CUDA context end to end (the bundle's
// emitted backward kernels, NVRTC-compiled by the runtime and run on the
// emulator by FakeCuda.cpp): dq, dk and dv of the shipped tiny-mix bundle
// and of Inputs/BackwardCuda.mlir's layers (f16 and bf16, head_dim 64 and
// 128, GQA 2:1 with a skipped head and 4:1, Nq < Nk and Nq > Nk, two batch
// entries) against the CPU context's backward of the same call (itself
// checked against float64 by BackwardTest), every output element written
// (the outputs start as NaN), a skipped head's dq exactly zero, no
// synchronising driver call; a copy of the bundle whose generated
// transposed walk skips query block 0 fails; calls the CUDA path does not
// take yet are refused by name (per-sequence calls:
// SeqBackwardFakeDriverTest.cpp).
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/Half.h"
#include "tessera/tessera.h"

#include <gtest/gtest.h>

#include "FakeApi.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Bits = std::vector<uint16_t>;

/// One backward call's buffers, dense [B, N, H, D].
struct Case {
  std::string bundle; ///< directory under test/bundles
  int64_t layer = 0, batch = 1, nq = 0, nk = 0;
  int64_t heads = 0, kvHeads = 0, dim = 0;
  bool bf16 = false;
};

struct Buffers {
  Bits q, k, v, o, dO, dq, dk, dv;
  std::vector<float> lse;
};

float toFloat(uint16_t x, bool bf16) {
  return bf16 ? tessera::cpu::bf16ToFloat(x) : tessera::cpu::f16ToFloat(x);
}
uint16_t fromFloat(float x, bool bf16) {
  return bf16 ? tessera::cpu::floatToBf16(x) : tessera::cpu::floatToF16(x);
}
uint16_t nanBits(bool bf16) { return bf16 ? 0x7fc0 : 0x7e00; }

tessera_tensor tensor(Bits &b, const Case &c, int64_t seq, int64_t heads) {
  tessera_tensor t{};
  t.data = b.data();
  t.dtype = c.bf16 ? TESSERA_DTYPE_BF16 : TESSERA_DTYPE_F16;
  t.batch = c.batch;
  t.seq = seq;
  t.heads = heads;
  t.head_dim = c.dim;
  t.stride_head = c.dim;
  t.stride_seq = heads * c.dim;
  t.stride_batch = seq * heads * c.dim;
  return t;
}

Bits randomBits(size_t n, bool bf16, std::mt19937 &rng, float range) {
  std::uniform_real_distribution<float> u(-range, range);
  Bits b(n);
  for (uint16_t &x : b)
    x = fromFloat(u(rng), bf16);
  return b;
}

std::string bundleDir(const std::string &name) {
  return std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
}

/// The set of driver calls in a comma-separated log.
std::set<std::string> callSet(const std::string &log) {
  std::set<std::string> s;
  std::stringstream in(log);
  for (std::string c; std::getline(in, c, ',');)
    s.insert(c);
  return s;
}

class FakeDriverBackward : public ::testing::Test {
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

  /// Loads `c.bundle` on a CPU context and on the fake CUDA context, the
  /// latter running the kernels of the fake driver's bundle `emulated`.
  void load(const Case &c, const std::string &emulated) {
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &cpu), TESSERA_OK)
        << tessera_last_error();
    ASSERT_EQ(tessera_context_create(TESSERA_DEVICE_CUDA, 0, &cuda), TESSERA_OK)
        << tessera_last_error();
    const std::string dir = bundleDir(c.bundle);
    ASSERT_EQ(tessera_bundle_load_file(cpu, dir.c_str(), &cpuBundle),
              TESSERA_OK)
        << tessera_last_error();
    FakeApi::get().useBundle(emulated.c_str());
    ASSERT_EQ(tessera_bundle_load_file(cuda, dir.c_str(), &cudaBundle),
              TESSERA_OK)
        << tessera_last_error();
  }

  /// The forward's description of `c` over `b`.
  static tessera_attention_desc desc(const Case &c, Buffers &b) {
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = c.layer;
    d.q = tensor(b.q, c, c.nq, c.heads);
    d.k = tensor(b.k, c, c.nk, c.kvHeads);
    d.v = tensor(b.v, c, c.nk, c.kvHeads);
    d.o = tensor(b.o, c, c.nq, c.heads);
    d.lse = b.lse.data();
    return d;
  }

  /// Random inputs; O and LSE from the CPU context's forward, dO random;
  /// the CPU context's backward in `ref`.
  void prepare(const Case &c, Buffers &b, Buffers &ref, uint64_t seed) {
    FakeApi::get().clear(); // no host buffer is device memory on the CPU
    std::mt19937 rng(seed);
    const size_t qn = size_t(c.batch * c.nq * c.heads * c.dim),
                 kn = size_t(c.batch * c.nk * c.kvHeads * c.dim);
    b.q = randomBits(qn, c.bf16, rng, 2.f);
    b.k = randomBits(kn, c.bf16, rng, 2.f);
    b.v = randomBits(kn, c.bf16, rng, 1.f);
    b.dO = randomBits(qn, c.bf16, rng, 1.f);
    b.o.assign(qn, 0);
    b.lse.assign(size_t(c.batch * c.heads * c.nq), 0.f);
    tessera_attention_desc d = desc(c, b);
    ASSERT_EQ(tessera_attention_run(cpuBundle, &d), TESSERA_OK)
        << tessera_last_error();
    ref = b;
    ref.dq.assign(qn, 0);
    ref.dk.assign(kn, 0);
    ref.dv.assign(kn, 0);
    tessera_attention_desc rd = desc(c, ref);
    tessera_tensor dO = tensor(ref.dO, c, c.nq, c.heads),
                   dq = tensor(ref.dq, c, c.nq, c.heads),
                   dk = tensor(ref.dk, c, c.nk, c.kvHeads),
                   dv = tensor(ref.dv, c, c.nk, c.kvHeads);
    ASSERT_EQ(
        tessera_attention_backward(cpuBundle, &rd, &dO, nullptr, &dq, &dk, &dv),
        TESSERA_OK)
        << tessera_last_error();
    // The CUDA outputs start as NaN: every element must be written.
    b.dq.assign(qn, nanBits(c.bf16));
    b.dk.assign(kn, nanBits(c.bf16));
    b.dv.assign(kn, nanBits(c.bf16));
  }

  /// The backward of `b` on the fake CUDA context (every buffer registered
  /// as device memory, a stream of the caller's); its status.
  tessera_status runCuda(const Case &c, Buffers &b,
                         tessera_attention_desc *override = nullptr,
                         const std::vector<float> *workspace = nullptr) {
    FakeApi &f = FakeApi::get();
    f.clear();
    for (Bits *v : {&b.q, &b.k, &b.v, &b.o, &b.dO, &b.dq, &b.dk, &b.dv})
      f.registerRange(v->data(), v->size() * 2);
    f.registerRange(b.lse.data(), b.lse.size() * 4);
    if (workspace)
      f.registerRange(workspace->data(), workspace->size() * 4);
    tessera_attention_desc d = override ? *override : desc(c, b);
    d.cuda_stream = reinterpret_cast<void *>(0x5eed);
    tessera_tensor dO = tensor(b.dO, c, c.nq, c.heads),
                   dq = tensor(b.dq, c, c.nq, c.heads),
                   dk = tensor(b.dk, c, c.nk, c.kvHeads),
                   dv = tensor(b.dv, c, c.nk, c.kvHeads);
    return tessera_attention_backward(cudaBundle, &d, &dO, nullptr, &dq, &dk,
                                      &dv);
  }

  /// Elements of `got` off `want` by more than `tol` of want's largest
  /// magnitude (non-finite values count), with the first few reported.
  static int64_t mismatches(const Bits &got, const Bits &want, bool bf16,
                            double tol, const char *name, bool report) {
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

  /// Every gradient against the CPU's: the tolerances of the backward
  /// emulator test (f16 2e-3, bf16 1.6e-2 of the largest reference value).
  static int64_t compare(const Case &c, const Buffers &b, const Buffers &ref,
                         bool report = true) {
    const double tol = c.bf16 ? 1.6e-2 : 2e-3;
    return mismatches(b.dq, ref.dq, c.bf16, tol, "dq", report) +
           mismatches(b.dk, ref.dk, c.bf16, tol, "dk", report) +
           mismatches(b.dv, ref.dv, c.bf16, tol, "dv", report);
  }

  void checkCase(const Case &c, const std::string &emulated, uint64_t seed) {
    load(c, emulated);
    Buffers b, ref;
    prepare(c, b, ref, seed);
    ASSERT_EQ(runCuda(c, b), TESSERA_OK) << tessera_last_error();
    const std::string log = FakeApi::get().calls();
    EXPECT_EQ(compare(c, b, ref), 0)
        << c.bundle << " layer " << c.layer << " Nq " << c.nq << " Nk " << c.nk;
    // What a CUDA graph can capture: launches on the caller's stream, the
    // delta workspace allocated and freed in stream order, pointer
    // queries and context switches; nothing that synchronises.
    for (const std::string &call : callSet(log))
      EXPECT_TRUE(call == "cuLaunchKernel" || call == "cuMemAllocAsync" ||
                  call == "cuMemFreeAsync" || call == "cuPointerGetAttribute" ||
                  call == "cuCtxPushCurrent" || call == "cuCtxPopCurrent")
          << call;
  }

  tessera_context *cpu = nullptr, *cuda = nullptr;
  tessera_bundle *cpuBundle = nullptr, *cudaBundle = nullptr;
};

/// Inputs/BackwardCuda.mlir layer 0: f16, head_dim 64, GQA 2:1, head 3
/// skipped (its dq must be exactly 0: the zero fill), Nq < Nk over two
/// batch entries; the launches in order.
TEST_F(FakeDriverBackward, F16GqaSkippedHeadShortQueries) {
  Case c{"backward-cuda", 0, 2, 100, 160, 4, 2, 64, false};
  checkCase(c, "backward-cuda", 1);
  EXPECT_STREQ(FakeApi::get().kernels(),
               "tessera_bwd_pre_f16_d64,tessera_bwd_dkdv_f16_d64,"
               "tessera_bwd_dq_f16_d64,tessera_bwd_dkdv_guarded_f16_d64,"
               "tessera_bwd_dq_guarded_f16_d64,tessera_bwd_zero_d64");
}

/// The same layer with Nq > Nk, and the skipped head's dq exactly zero.
TEST_F(FakeDriverBackward, F16GqaSkippedHeadLongQueries) {
  Case c{"backward-cuda", 0, 1, 160, 100, 4, 2, 64, false};
  load(c, "backward-cuda");
  Buffers b, ref;
  prepare(c, b, ref, 2);
  ASSERT_EQ(runCuda(c, b), TESSERA_OK) << tessera_last_error();
  EXPECT_EQ(compare(c, b, ref), 0);
  int64_t nonzero = 0;
  for (int64_t i = 0; i < c.nq; ++i)
    for (int64_t x = 0; x < c.dim; ++x)
      nonzero += b.dq[size_t((i * c.heads + 3) * c.dim + x)] != 0;
  EXPECT_EQ(nonzero, 0) << "the skipped head's dq";
}

/// Layer 1: bf16, head_dim 128 (key-major tiles above 48 KiB), GQA 4:1 of
/// four patterns (shards under causality, a block list, shifted groups, a
/// horizontal stripe's rows without keys), Nq = Nk and Nq < Nk.
TEST_F(FakeDriverBackward, Bf16Gqa4HeadDim128) {
  checkCase({"backward-cuda", 1, 1, 130, 130, 4, 1, 128, true}, "backward-cuda",
            3);
}
TEST_F(FakeDriverBackward, Bf16Gqa4HeadDim128ShortQueries) {
  checkCase({"backward-cuda", 1, 1, 70, 200, 4, 1, 128, true}, "backward-cuda",
            4);
}

/// The shipped tiny-mix bundle (bf16, head_dim 64, GQA 3:1: A-shape,
/// multi-diagonal, grid, a causal intersection with shards, shifted
/// groups), Nq = Nk and Nq > Nk.
TEST_F(FakeDriverBackward, ShippedTinyMix) {
  checkCase({"tiny-mix", 0, 1, 96, 96, 6, 2, 64, true}, "tiny-mix", 5);
}
TEST_F(FakeDriverBackward, ShippedTinyMixLongQueries) {
  checkCase({"tiny-mix", 0, 2, 120, 50, 6, 2, 64, true}, "tiny-mix", 6);
}

/// The other shipped static bundles' backward kernels (their whole
/// dispatch classes compiled into the fake driver): llama3-8b-sparse layer
/// 2 (A-shape with sink 4 and window 1024, window 2048, causal; bf16, GQA
/// 4:1) at Nq < Nk with the windows' edges inside the keys; video-dit
/// layer 0 (multi-diagonal and grid lines a frame of 1024 apart, a window
/// with the first frame's stripe, a symmetric window, dense, skipped heads;
/// no GQA) past one frame; s2-strided layer 1 (causal strided shards with
/// a window of 512; f16, GQA 4:1) at Nq > Nk.
TEST_F(FakeDriverBackward, ShippedLlama3Layer2) {
  checkCase({"llama3-8b-sparse", 2, 1, 200, 1150, 32, 8, 128, true},
            "llama3-8b-sparse", 7);
}
TEST_F(FakeDriverBackward, ShippedVideoDitLayer0) {
  checkCase({"video-dit", 0, 1, 1100, 1100, 24, 24, 128, true}, "video-dit",
            8);
}
TEST_F(FakeDriverBackward, ShippedS2Layer1) {
  checkCase({"s2-strided", 1, 1, 700, 600, 16, 4, 128, false}, "s2-strided",
            9);
}
/// mminference-video layer 0 (a 256-token prompt's rows and columns in
/// union with grid lines, diagonals and a window; bf16, no GQA), past one
/// frame after the prompt, Nq < Nk.
TEST_F(FakeDriverBackward, ShippedMMInferenceVideoLayer0) {
  checkCase({"mminference-video", 0, 1, 1000, 1400, 16, 16, 128, true},
            "mminference-video", 10);
}

/// The caller's workspace replaces the stream-ordered allocation; one too
/// small is refused by name.
TEST_F(FakeDriverBackward, CallersWorkspace) {
  Case c{"backward-cuda", 0, 1, 64, 64, 4, 2, 64, false};
  load(c, "backward-cuda");
  Buffers b, ref;
  prepare(c, b, ref, 7);
  std::vector<float> workspace(size_t(c.batch * c.heads * c.nq));
  tessera_attention_desc d = desc(c, b);
  d.workspace = workspace.data();
  d.workspace_size = workspace.size() * 4 - 4;
  EXPECT_EQ(runCuda(c, b, &d, &workspace), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("backward (D) needs"),
            std::string::npos)
      << tessera_last_error();
  d.workspace_size = workspace.size() * 4;
  ASSERT_EQ(runCuda(c, b, &d, &workspace), TESSERA_OK) << tessera_last_error();
  EXPECT_EQ(callSet(FakeApi::get().calls()).count("cuMemAllocAsync"), 0u);
  EXPECT_EQ(compare(c, b, ref), 0);
}

/// A copy of the bundle whose generated transposed walk (runFromT) starts
/// at query block 1: the keys query block 0 sees get wrong dk and dv.
TEST_F(FakeDriverBackward, BrokenTransposedWalkFails) {
  Case c{"backward-cuda", 0, 1, 128, 128, 4, 2, 64, false};
  load(c, "broken-bwd-gen");
  Buffers b, ref;
  prepare(c, b, ref, 8);
  ASSERT_EQ(runCuda(c, b), TESSERA_OK) << tessera_last_error();
  EXPECT_GT(compare(c, b, ref, /*report=*/false), 0);
}

/// Calls the CUDA backward does not take yet: refused by name, nothing
/// launched (positioned calls; packed, length and head-range calls run:
/// SeqBackwardFakeDriverTest.cpp).
TEST_F(FakeDriverBackward, RefusesWhatItCannotRunYet) {
  Case c{"backward-cuda", 0, 1, 64, 64, 4, 2, 64, false};
  load(c, "backward-cuda");
  Buffers b, ref;
  prepare(c, b, ref, 9);
  tessera_attention_desc d = desc(c, b);
  std::vector<int64_t> kStart = {3};
  d.k_start = kStart.data();
  FakeApi &f = FakeApi::get();
  f.clear();
  for (Bits *v : {&b.q, &b.k, &b.v, &b.o, &b.dO, &b.dq, &b.dk, &b.dv})
    f.registerRange(v->data(), v->size() * 2);
  f.registerRange(b.lse.data(), b.lse.size() * 4);
  f.registerRange(kStart.data(), kStart.size() * 8);
  tessera_tensor dO = tensor(b.dO, c, c.nq, c.heads),
                 dq = tensor(b.dq, c, c.nq, c.heads),
                 dk = tensor(b.dk, c, c.nk, c.kvHeads),
                 dv = tensor(b.dv, c, c.nk, c.kvHeads);
  EXPECT_EQ(
      tessera_attention_backward(cudaBundle, &d, &dO, nullptr, &dq, &dk, &dv),
      TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("k_start"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_STREQ(f.kernels(), "");
}

//===----------------------------------------------------------------------===//
// Dynamic heads (DynamicBackward.cuh): Inputs/BackwardDynamic.mlir
//===----------------------------------------------------------------------===//

/// The planted columns of the vertical-slash heads' kv heads (the forced
/// first columns 0 and 1 come with them), and the planted key blocks of the
/// block top-k heads' kv heads.
const int64_t kPlantedColumns[] = {5, 77, 130};
const int64_t kPlantedBlocks[] = {0, 2};

/// Whether head `h` of BackwardDynamic.mlir's layer `layer` attends (row i,
/// key k) with the index the planted keys make it build: allowed = (leaf
/// and with) or (not leaf and without), written out by hand.
bool dynamicAllowed(int64_t layer, int64_t h, int64_t i, int64_t k, int64_t nq,
                    int64_t nk) {
  const int64_t p = i + nk - nq;
  const bool causal = k <= p;
  auto columns = [&](int64_t diagonals) {
    bool column = k < 2;
    for (int64_t c : kPlantedColumns)
      column = column || k == c;
    return column || (p - k >= 0 && p - k < diagonals);
  };
  auto blocks = [&] {
    return k / 64 == kPlantedBlocks[0] || k / 64 == kPlantedBlocks[1];
  };
  auto window = [&](int64_t before) { return causal && k >= p - before; };
  if (layer == 0) {
    switch (h) {
    case 0:
      return causal && columns(6);
    case 1:
      return causal;
    case 2:
      return causal && blocks();
    default:
      return blocks() || window(8);
    }
  }
  return h == 0 ? columns(3) || window(4) : causal && blocks();
}

/// Which kv heads hold planted columns (a vertical-slash head reads them),
/// the others planted key blocks.
bool columnsPlanted(int64_t layer, int64_t kvh) { return kvh == 0; }

class FakeDriverDynamicBackward : public FakeDriverBackward {
protected:
  /// Where set: the pairs (batch entry bi, head h, query i, key j) the
  /// float64 reference allows, over random inputs (nothing planted); else
  /// dynamicAllowed over the planted inputs.
  std::function<bool(int64_t bi, int64_t h, int64_t i, int64_t j)> allowed;
  /// Where set: what every description of the call adds (a caller's block
  /// index), on both contexts.
  std::function<void(tessera_attention_desc &)> decorate;
  /// Where set: host floats that the CUDA call reads as device memory (the
  /// engine's centroids).
  const std::vector<float> *deviceFloats = nullptr;
  /// Where set (with `allowed`): what plant() adds to the random inputs.
  std::function<void(const Case &, Buffers &)> replant;
  /// Where set: what checkDynamic does to the inputs after plant() (NaN and
  /// infinities in masked pairs: poison()).
  std::function<void(const Case &, Buffers &)> afterPlant;
  /// The last checkDynamic's CUDA and CPU gradients.
  Buffers lastCuda, lastCpu;

  /// Whether the reference allows (bi, h, i, j).
  bool pairAllowed(const Case &c, int64_t bi, int64_t h, int64_t i,
                   int64_t j) const {
    return allowed ? allowed(bi, h, i, j)
                   : dynamicAllowed(c.layer, h, i, j, c.nq, c.nk);
  }

  /// What poison() may make non-finite.
  enum Poison { kPoisonQ = 1, kPoisonDO = 2, kPoisonK = 4, kPoisonV = 8 };

  /// NaN, +inf and -inf in turn at every element of the rows no pair of the
  /// reference reads: the q (heads `qHeads`, bit h) and dO rows of queries
  /// without keys, the k and v rows of keys no query of their kv head's
  /// heads sees (`what`: which). The CPU never reads them, so its
  /// gradients stay finite; so must the kernels' (their guard). Returns the
  /// rows made non-finite.
  int64_t poison(const Case &c, Buffers &b, int what, uint32_t qHeads = ~0u) {
    const uint16_t bad[3] = {nanBits(c.bf16),
                             uint16_t(c.bf16 ? 0x7f80 : 0x7c00),
                             uint16_t(c.bf16 ? 0xff80 : 0xfc00)};
    int64_t rows = 0, at = 0;
    auto fill = [&](Bits &t, size_t row) {
      for (int64_t x = 0; x < c.dim; ++x)
        t[row * size_t(c.dim) + size_t(x)] = bad[at++ % 3];
      ++rows;
    };
    const int64_t group = c.heads / c.kvHeads;
    for (int64_t bi = 0; bi < c.batch; ++bi) {
      std::vector<char> seen(size_t(c.nk * c.kvHeads), 0);
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t i = 0; i < c.nq; ++i) {
          bool any = false;
          for (int64_t j = 0; j < c.nk; ++j)
            if (pairAllowed(c, bi, h, i, j)) {
              any = true;
              seen[size_t(j * c.kvHeads + h / group)] = 1;
            }
          const size_t row = size_t((bi * c.nq + i) * c.heads + h);
          if (!any && (what & kPoisonQ) && ((qHeads >> h) & 1u))
            fill(b.q, row);
          if (!any && (what & kPoisonDO))
            fill(b.dO, row);
        }
      for (int64_t j = 0; j < c.nk; ++j)
        for (int64_t kvh = 0; kvh < c.kvHeads; ++kvh) {
          if (seen[size_t(j * c.kvHeads + kvh)])
            continue;
          const size_t row = size_t((bi * c.nk + j) * c.kvHeads + kvh);
          if (what & kPoisonK)
            fill(b.k, row);
          if (what & kPoisonV)
            fill(b.v, row);
        }
    }
    return rows;
  }

  /// Planted inputs (BackwardDynamic.mlir's comment): small noise, element
  /// 0 of every query 4 and of every planted key 6, so that the planted
  /// columns and key blocks win their selections by far (the index is the
  /// one dynamicAllowed writes out); O and LSE from a float64 forward over
  /// that index (O rounded to the dtype), dO random.
  void plant(const Case &c, Buffers &b, uint64_t seed) {
    std::mt19937 rng(seed);
    const size_t qn = size_t(c.batch * c.nq * c.heads * c.dim),
                 kn = size_t(c.batch * c.nk * c.kvHeads * c.dim);
    b.q = randomBits(qn, c.bf16, rng, 0.5f);
    b.k = randomBits(kn, c.bf16, rng, 0.5f);
    b.v = randomBits(kn, c.bf16, rng, 1.f);
    b.dO = randomBits(qn, c.bf16, rng, 1.f);
    b.o.assign(qn, 0);
    b.lse.assign(size_t(c.batch * c.heads * c.nq), 0.f);
    if (allowed) { // the caller's index: nothing to plant
      if (replant)
        replant(c, b);
      return;
    }
    for (size_t at = 0; at < qn; at += size_t(c.dim))
      b.q[at] = fromFloat(4.f, c.bf16);
    for (int64_t bi = 0; bi < c.batch; ++bi)
      for (int64_t j = 0; j < c.nk; ++j)
        for (int64_t kvh = 0; kvh < c.kvHeads; ++kvh) {
          bool planted = false;
          if (columnsPlanted(c.layer, kvh))
            for (int64_t col : kPlantedColumns)
              planted = planted || j == col;
          else
            planted =
                j / 64 == kPlantedBlocks[0] || j / 64 == kPlantedBlocks[1];
          if (planted)
            b.k[size_t(((bi * c.nk + j) * c.kvHeads + kvh) * c.dim)] =
                fromFloat(6.f, c.bf16);
        }
  }

  /// The float64 forward (into b.o, b.lse) and backward (into `want`, as
  /// doubles: dq, dk, dv in [B, N, H, D] order) of the masked attention,
  /// from the 16-bit inputs; D_i from the rounded O, as the kernels read it.
  void reference(const Case &c, Buffers &b, std::vector<double> &dq,
                 std::vector<double> &dk, std::vector<double> &dv) {
    const int64_t H = c.heads, G = c.heads / c.kvHeads, d = c.dim;
    const double scale = 1.0 / std::sqrt(double(d));
    auto qAt = [&](int64_t bi, int64_t i, int64_t h) {
      return size_t(((bi * c.nq + i) * H + h) * d);
    };
    auto kAt = [&](int64_t bi, int64_t j, int64_t kvh) {
      return size_t(((bi * c.nk + j) * c.kvHeads + kvh) * d);
    };
    auto f = [&](const Bits &t, size_t at) {
      return double(toFloat(t[at], c.bf16));
    };
    dq.assign(b.q.size(), 0.0);
    dk.assign(b.k.size(), 0.0);
    dv.assign(b.k.size(), 0.0);
    std::vector<double> s(static_cast<size_t>(c.nk)), o(static_cast<size_t>(d));
    for (int64_t bi = 0; bi < c.batch; ++bi)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < c.nq; ++i) {
          const int64_t kvh = h / G;
          double m = -INFINITY;
          for (int64_t j = 0; j < c.nk; ++j) {
            s[size_t(j)] = -INFINITY;
            if (allowed ? !allowed(bi, h, i, j)
                        : !dynamicAllowed(c.layer, h, i, j, c.nq, c.nk))
              continue;
            double dot = 0;
            for (int64_t x = 0; x < d; ++x)
              dot += f(b.q, qAt(bi, i, h) + size_t(x)) *
                     f(b.k, kAt(bi, j, kvh) + size_t(x));
            s[size_t(j)] = dot * scale;
            m = std::max(m, s[size_t(j)]);
          }
          double l = 0;
          std::fill(o.begin(), o.end(), 0.0);
          for (int64_t j = 0; j < c.nk && m > -INFINITY; ++j)
            if (s[size_t(j)] > -INFINITY) {
              const double e = std::exp(s[size_t(j)] - m);
              l += e;
              for (int64_t x = 0; x < d; ++x)
                o[size_t(x)] += e * f(b.v, kAt(bi, j, kvh) + size_t(x));
            }
          const double lse = l > 0 ? m + std::log(l) : -INFINITY;
          b.lse[size_t((bi * H + h) * c.nq + i)] = float(lse);
          double delta = 0;
          for (int64_t x = 0; x < d; ++x) {
            const size_t at = qAt(bi, i, h) + size_t(x);
            b.o[at] = fromFloat(float(l > 0 ? o[size_t(x)] / l : 0.0), c.bf16);
            delta += f(b.dO, at) * f(b.o, at);
          }
          for (int64_t j = 0; j < c.nk && l > 0; ++j) {
            if (s[size_t(j)] == -INFINITY)
              continue;
            const double pr = std::exp(s[size_t(j)] - lse);
            double dp = 0;
            for (int64_t x = 0; x < d; ++x)
              dp += f(b.dO, qAt(bi, i, h) + size_t(x)) *
                    f(b.v, kAt(bi, j, kvh) + size_t(x));
            const double ds = pr * (dp - delta);
            for (int64_t x = 0; x < d; ++x) {
              const size_t qi = qAt(bi, i, h) + size_t(x),
                           kj = kAt(bi, j, kvh) + size_t(x);
              dq[qi] += scale * ds * f(b.k, kj);
              dk[kj] += scale * ds * f(b.q, qi);
              dv[kj] += pr * f(b.dO, qi);
            }
          }
        }
  }

  /// Elements of `got` off the float64 `want` by more than `tol` of want's
  /// largest magnitude (the emulator tests' tolerances).
  static int64_t offFloat64(const Bits &got, const std::vector<double> &want,
                            bool bf16, const char *name) {
    const double tol = bf16 ? 1.6e-2 : 2e-3;
    double top = 0;
    for (double w : want)
      top = std::max(top, std::fabs(w));
    int64_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double g = toFloat(got[i], bf16);
      if (std::isfinite(g) && std::fabs(g - want[i]) <= tol * top)
        continue;
      if (++bad <= 3)
        ADD_FAILURE() << name << "[" << i << "] = " << g << ", float64 "
                      << want[i] << " (largest " << top << ")";
    }
    return bad;
  }

  /// The CUDA context's gradients of `c` (bundle `emulated` on the fake
  /// driver) against float64 over the planted index, and against the CPU
  /// context's backward of the same call; the CPU context's forward
  /// against the float64 one (the same index). Returns the CUDA gradients'
  /// mismatches with the CPU's (0 expected); `checkFloat64` off for the
  /// broken copy.
  int64_t checkDynamic(const Case &c, const std::string &emulated,
                       uint64_t seed, bool checkFloat64 = true) {
    load(c, emulated);
    Buffers b;
    plant(c, b, seed);
    if (afterPlant)
      afterPlant(c, b);
    std::vector<double> dq, dk, dv;
    reference(c, b, dq, dk, dv);
    // The CPU context: its forward (its own index) equals the float64 one,
    // and its backward is the second reference.
    FakeApi::get().clear();
    Buffers cpuRun = b, ref = b;
    tessera_attention_desc fd = desc(c, cpuRun);
    if (decorate)
      decorate(fd);
    EXPECT_EQ(tessera_attention_run(cpuBundle, &fd), TESSERA_OK)
        << tessera_last_error();
    EXPECT_EQ(mismatches(cpuRun.o, b.o, c.bf16, c.bf16 ? 1.6e-2 : 2e-3,
                         "the CPU forward's o", true),
              0)
        << "the CPU context built another index than the planted one";
    const size_t qn = b.q.size(), kn = b.k.size();
    ref.dq.assign(qn, 0);
    ref.dk.assign(kn, 0);
    ref.dv.assign(kn, 0);
    tessera_attention_desc rd = desc(c, ref);
    if (decorate)
      decorate(rd);
    tessera_tensor rdO = tensor(ref.dO, c, c.nq, c.heads),
                   rdq = tensor(ref.dq, c, c.nq, c.heads),
                   rdk = tensor(ref.dk, c, c.nk, c.kvHeads),
                   rdv = tensor(ref.dv, c, c.nk, c.kvHeads);
    EXPECT_EQ(tessera_attention_backward(cpuBundle, &rd, &rdO, nullptr, &rdq,
                                         &rdk, &rdv),
              TESSERA_OK)
        << tessera_last_error();
    // The CUDA outputs start as NaN: every element must be written.
    b.dq.assign(qn, nanBits(c.bf16));
    b.dk.assign(kn, nanBits(c.bf16));
    b.dv.assign(kn, nanBits(c.bf16));
    tessera_attention_desc cd = desc(c, b);
    if (decorate)
      decorate(cd);
    EXPECT_EQ(runCuda(c, b, &cd, deviceFloats), TESSERA_OK)
        << tessera_last_error();
    if (checkFloat64) {
      EXPECT_EQ(offFloat64(b.dq, dq, c.bf16, "dq"), 0);
      EXPECT_EQ(offFloat64(b.dk, dk, c.bf16, "dk"), 0);
      EXPECT_EQ(offFloat64(b.dv, dv, c.bf16, "dv"), 0);
      for (const std::string &call : callSet(FakeApi::get().calls()))
        EXPECT_TRUE(call == "cuLaunchKernel" || call == "cuMemAllocAsync" ||
                    call == "cuMemFreeAsync" || call == "cuMemcpyHtoDAsync" ||
                    call == "cuPointerGetAttribute" ||
                    call == "cuCtxPushCurrent" || call == "cuCtxPopCurrent")
            << call;
    }
    lastCuda = b;
    lastCpu = ref;
    return compare(c, b, ref, checkFloat64);
  }
};

/// Layer 0 (f16, head_dim 64, GQA 2:1): a vertical-slash head beside a
/// static causal head on kv head 0 (their dk and dv add up), two block
/// top-k heads on kv head 1; Nq < Nk over two batch entries. The launches:
/// the static passes, then each group's index kernels and its two passes,
/// then the sums added.
TEST_F(FakeDriverDynamicBackward, F16GqaShortQueries) {
  EXPECT_EQ(checkDynamic({"backward-dynamic", 0, 2, 100, 200, 4, 2, 64, false},
                         "backward-dynamic", 11),
            0);
  const std::string k = FakeApi::get().kernels();
  EXPECT_EQ(k.rfind("tessera_bwd_pre_f16_d64,tessera_bwd_dynkv_clear_f16_d64,"
                    "tessera_bwd_dkdv_f16_d64,",
                    0),
            0u)
      << k;
  EXPECT_NE(k.find("tessera_vs_select,tessera_bwd_dyn_vs_dq_f16_d64,"
                   "tessera_bwd_dyn_vs_dkdv_f16_d64"),
            std::string::npos)
      << k;
  EXPECT_NE(k.find("tessera_bt_select,tessera_bwd_dyn_bt_dq_f16_d64,"
                   "tessera_bwd_dyn_bt_dkdv_f16_d64"),
            std::string::npos)
      << k;
  EXPECT_EQ(k.substr(k.size() - 29), "tessera_bwd_dynkv_add_f16_d64") << k;
}

/// Nq > Nk: the first 80 rows see no key under causality (dq exactly 0).
TEST_F(FakeDriverDynamicBackward, F16GqaLongQueries) {
  Case c{"backward-dynamic", 0, 1, 230, 150, 4, 2, 64, false};
  EXPECT_EQ(checkDynamic(c, "backward-dynamic", 12), 0);
}

/// Layer 1 (bf16, head_dim 128: key-major tiles above 48 KiB): a
/// vertical-slash head in a union with a window (its `without` runs), a
/// block top-k head; Nq = Nk over two batch entries, and Nq < Nk.
TEST_F(FakeDriverDynamicBackward, Bf16HeadDim128) {
  EXPECT_EQ(checkDynamic({"backward-dynamic", 1, 2, 160, 160, 2, 2, 128, true},
                         "backward-dynamic", 13),
            0);
}
TEST_F(FakeDriverDynamicBackward, Bf16HeadDim128ShortQueries) {
  EXPECT_EQ(checkDynamic({"backward-dynamic", 1, 1, 70, 190, 2, 2, 128, true},
                         "backward-dynamic", 14),
            0);
}

/// The shipped minference-llm bundle's layer 0 (bf16, head_dim 128, GQA
/// 4:1: twenty vertical-slash heads, eight A-shape heads, four block top-k
/// heads under causality) against the CPU context: at these lengths its
/// index keeps every column, diagonal and key block (vertical = 1000,
/// slash = 6096, top_k = 100), so the CPU's and the device's are the same
/// whatever the inputs.
TEST_F(FakeDriverDynamicBackward, ShippedMinferenceLlm) {
  checkCase({"minference-llm", 0, 2, 100, 150, 32, 8, 128, true},
            "minference-llm", 17);
  const std::string k = FakeApi::get().kernels();
  EXPECT_NE(k.find("tessera_bwd_dyn_vs_dkdv_bf16_d128"), std::string::npos);
  EXPECT_NE(k.find("tessera_bwd_dyn_bt_dkdv_bf16_d128"), std::string::npos);
}

/// Its layer 1 end to end: adaptive block top-k heads (block 128,
/// min_blocks 4: every key block at Nk <= 512), routing heads (16
/// clusters by two k-means iterations on the device, the CPU's alike), and
/// causal heads, against the CPU context.
TEST_F(FakeDriverDynamicBackward, ShippedMinferenceLlmRouting) {
  checkCase({"minference-llm", 1, 1, 90, 200, 32, 8, 128, true},
            "minference-llm", 18);
  const std::string k = FakeApi::get().kernels();
  EXPECT_NE(k.find("tessera_rt_sort,tessera_bwd_dyn_rt_dq_bf16_d128,"
                   "tessera_bwd_dyn_rt_dkdv_bf16_d128"),
            std::string::npos)
      << k;
}

/// A copy of the bundle whose key-major sums drop each tile's last key:
/// its dk and dv differ from the CPU's.
TEST_F(FakeDriverDynamicBackward, BrokenKeySumsFail) {
  EXPECT_GT(checkDynamic({"backward-dynamic", 0, 1, 128, 160, 4, 2, 64, false},
                         "broken-bwd-dyn", 15, /*checkFloat64=*/false),
            0);
}

/// A copy whose query-major pass ignores the walk's keep bits (every pair
/// of a visited tile counts): its dq differs from the CPU's.
TEST_F(FakeDriverDynamicBackward, BrokenQueryMasksFail) {
  EXPECT_GT(checkDynamic({"backward-dynamic", 0, 1, 128, 160, 4, 2, 64, false},
                         "broken-bwd-dyn-q", 19, /*checkFloat64=*/false),
            0);
}

/// Non-finite elements of a 16-bit tensor.
int64_t nonFinite(const Bits &t, bool bf16) {
  int64_t n = 0;
  for (uint16_t x : t)
    n += !std::isfinite(toFloat(x, bf16));
  return n;
}

/// NaN and infinities in masked pairs (docs/backward.md, the dynamic
/// heads' guard): Nq > Nk, so rows 0-79 of the causal heads 0-2 see no key;
/// their dO rows (heads 0-2) and q rows (heads 0 and 1: head 2's block
/// top-k pools its query blocks' q into its index, which a NaN would make
/// another one) are NaN, +inf and -inf in turn, rows 64-79 inside a query
/// tile whose other rows see keys. The gradients equal float64's and the
/// CPU's (finite: the CPU never reads masked pairs).
TEST_F(FakeDriverDynamicBackward, NonFiniteMaskedRows) {
  int64_t rows = 0;
  afterPlant = [&](const Case &c, Buffers &b) {
    rows = poison(c, b, kPoisonQ | kPoisonDO, 0b0011u);
  };
  EXPECT_EQ(checkDynamic({"backward-dynamic", 0, 1, 230, 150, 4, 2, 64, false},
                         "backward-dynamic", 51),
            0);
  EXPECT_EQ(rows, 80 * 3 + 80 * 2);
  const std::string k = FakeApi::get().kernels();
  EXPECT_NE(k.find("tessera_bwd_dyn_vs_dq_f16_d64,tessera_bwd_dyn_vs_dkdv_f16_"
                   "d64,tessera_bwd_dyn_vs_dq_guarded_f16_d64,tessera_bwd_dyn_"
                   "vs_dkdv_guarded_f16_d64"),
            std::string::npos)
      << k;
}

/// Keys no query of their kv head sees, their v rows non-finite: on kv head
/// 1 of layer 0 at Nq < Nk keys 64-91 (inside the window's partial tiles;
/// block top-k selects key blocks 0 and 2; kv head 0's static causal head
/// sees every key); on layer 1 (bf16, head_dim 128) kv head 1's whole key
/// block 1 and kv head 0's keys between the planted columns and the window
/// (masked columns inside the window's partial tiles). k stays finite (the
/// index is estimated from it).
TEST_F(FakeDriverDynamicBackward, NonFiniteMaskedKeys) {
  int64_t rows = 0;
  afterPlant = [&](const Case &c, Buffers &b) {
    rows = poison(c, b, kPoisonV);
  };
  EXPECT_EQ(checkDynamic({"backward-dynamic", 0, 2, 100, 200, 4, 2, 64, false},
                         "backward-dynamic", 52),
            0);
  EXPECT_EQ(rows, 2 * 28);
  EXPECT_EQ(checkDynamic({"backward-dynamic", 1, 1, 70, 190, 2, 2, 128, true},
                         "backward-dynamic", 53),
            0);
  EXPECT_GT(rows, 64 + 100);
}

/// The copy without the guard (the dK / dV pass never stops at a tile with
/// non-finite sums, the guarded dQ launch never walks again): NaN reach dq
/// and dk through the masked rows, and dk and dv through the masked keys.
TEST_F(FakeDriverDynamicBackward, BrokenGuardFails) {
  afterPlant = [&](const Case &c, Buffers &b) {
    poison(c, b, kPoisonQ | kPoisonDO, 0b0011u);
  };
  EXPECT_GT(checkDynamic({"backward-dynamic", 0, 1, 230, 150, 4, 2, 64, false},
                         "broken-bwd-dyn-guard", 51, /*checkFloat64=*/false),
            0);
  EXPECT_GT(nonFinite(lastCuda.dq, false), 0);
  EXPECT_GT(nonFinite(lastCuda.dk, false), 0);
  EXPECT_EQ(nonFinite(lastCpu.dq, false) + nonFinite(lastCpu.dk, false) +
                nonFinite(lastCpu.dv, false),
            0);
  afterPlant = [&](const Case &c, Buffers &b) { poison(c, b, kPoisonV); };
  EXPECT_GT(checkDynamic({"backward-dynamic", 0, 1, 100, 200, 4, 2, 64, false},
                         "broken-bwd-dyn-guard", 52, /*checkFloat64=*/false),
            0);
  EXPECT_GT(nonFinite(lastCuda.dk, false) + nonFinite(lastCuda.dv, false), 0);
}

/// Routing heads (BackwardDynamic.mlir layer 2: f16, head_dim 64, GQA 2:1,
/// the engine's centroids e_0 .. e_3, head 3's merging two of the planted
/// clusters): every query and key gets a planted
/// cluster (element c of its row 2, the others in [-0.5, 0.5]), so that the
/// nearest centroid is known; the float64 reference allows a pair where the
/// clusters agree (and causality, heads 1 and 3), head 2 is causal.
class FakeDriverRoutingBackward : public FakeDriverDynamicBackward {
protected:
  static constexpr int64_t kClusters = 4;

  int64_t checkRouting(const Case &c, const std::string &emulated,
                       uint64_t seed, bool checkFloat64 = true) {
    // Head 3's centroids differ from the others' (e_0 + e_1, e_2, e_3 and
    // one that never wins): it merges planted clusters 0 and 1, so a kernel
    // that reads another head's centroids clusters its rows differently.
    centroids.assign(size_t(c.heads * kClusters * c.dim), 0.f);
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t j = 0; j < kClusters; ++j) {
        float *row = &centroids[size_t((h * kClusters + j) * c.dim)];
        if (h != 3)
          row[j] = 1.f;
        else if (j == 0)
          row[0] = row[1] = 1.f;
        else if (j < 3)
          row[j + 1] = 1.f;
        else
          for (int64_t x = 0; x < kClusters; ++x)
            row[x] = -1.f;
      }
    std::mt19937 rng(seed + 1000);
    qCluster.resize(size_t(c.batch * c.nq * c.heads));
    kCluster.resize(size_t(c.batch * c.nk * c.kvHeads));
    // Most tokens in cluster 0 (segments of several 64-row tiles); no key
    // of kv head 1 in cluster 3 (its queries there see no key: dq = 0).
    auto draw = [&] { return int32_t(rng() % 8 < 5 ? 0 : rng() % kClusters); };
    for (int32_t &x : qCluster)
      x = draw();
    for (size_t r = 0; r < kCluster.size(); ++r)
      do
        kCluster[r] = draw();
      while (r % size_t(c.kvHeads) == 1 && kCluster[r] == 3);
    const Case at = c;
    allowed = [this, at](int64_t bi, int64_t h, int64_t i, int64_t j) {
      const int64_t p = i + at.nk - at.nq;
      if (h == 2)
        return j <= p;
      const int64_t kvh = h / (at.heads / at.kvHeads);
      // Head 3's centroids merge planted clusters 0 and 1.
      auto cluster = [h](int32_t x) { return h == 3 && x == 1 ? 0 : x; };
      const bool same =
          cluster(qCluster[size_t((bi * at.nq + i) * at.heads + h)]) ==
          cluster(kCluster[size_t((bi * at.nk + j) * at.kvHeads + kvh)]);
      if (at.layer == 3) // routing beside the rest of the pattern
        return h == 1 ? j <= p && !same
                      : j <= p && (same || j >= p - 8);
      return same && (h == 0 || j <= p);
    };
    inputs =
        tessera_dynamic_inputs{centroids.data(), c.heads, kClusters, c.dim};
    decorate = [this](tessera_attention_desc &d) {
      d.dynamic_inputs = &inputs;
    };
    replant = [this](const Case &c, Buffers &b) { plantClusters(c, b); };
    deviceFloats = &centroids;
    const int64_t bad = checkDynamic(c, emulated, seed, checkFloat64);
    const std::string k = FakeApi::get().kernels();
    EXPECT_NE(k.find("tessera_bwd_dyn_rt_dq_f16_d64,"
                     "tessera_bwd_dyn_rt_dkdv_f16_d64"),
              std::string::npos)
        << k;
    EXPECT_EQ(k.find("tessera_rt_attend"), std::string::npos) << k;
    return bad;
  }

  /// Elements 0-3 of every query and key row: 2 at its cluster's, 0.25
  /// at the others (its dot products with the centroids).
  void plantClusters(const Case &c, Buffers &b) {
    for (int64_t r = 0; r < c.batch * c.nq * c.heads; ++r)
      for (int64_t x = 0; x < kClusters; ++x)
        b.q[size_t(r * c.dim + x)] =
            fromFloat(x == qCluster[size_t(r)] ? 2.f : 0.25f, c.bf16);
    for (int64_t r = 0; r < c.batch * c.nk * c.kvHeads; ++r)
      for (int64_t x = 0; x < kClusters; ++x)
        b.k[size_t(r * c.dim + x)] =
            fromFloat(x == kCluster[size_t(r)] ? 2.f : 0.25f, c.bf16);
  }

  std::vector<float> centroids;
  std::vector<int32_t> qCluster, kCluster;
  tessera_dynamic_inputs inputs{};
};

/// Nq < Nk over two batch entries, Nq > Nk (rows before the first key see
/// none under causality), Nq = Nk.
TEST_F(FakeDriverRoutingBackward, F16GqaShortQueries) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 2, 2, 100, 200, 4, 2, 64, false},
                         "backward-dynamic", 41),
            0);
  const std::string k = FakeApi::get().kernels();
  EXPECT_NE(k.find("tessera_rt_sort,tessera_bwd_dyn_rt_dq_f16_d64"),
            std::string::npos)
      << k;
}
TEST_F(FakeDriverRoutingBackward, F16GqaLongQueries) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 2, 1, 230, 150, 4, 2, 64, false},
                         "backward-dynamic", 42),
            0);
}
TEST_F(FakeDriverRoutingBackward, F16GqaEqualLengths) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 2, 1, 130, 130, 4, 2, 64, false},
                         "backward-dynamic", 43),
            0);
}

/// A copy whose routing tiles drop each segment tile's last row: its
/// gradients differ from the CPU's.
TEST_F(FakeDriverRoutingBackward, BrokenRowsFail) {
  EXPECT_GT(checkRouting({"backward-dynamic", 2, 1, 130, 130, 4, 2, 64, false},
                         "broken-bwd-dyn-rt", 44, /*checkFloat64=*/false),
            0);
}

/// Routing with non-finite inputs in masked pairs: Nq > Nk (rows before the
/// first key, and queries of kv head 1 in cluster 3, which has no key
/// there, see none: their dO rows non-finite) and keys of no query's
/// cluster (their v rows); q and k stay finite (the clusters are theirs).
/// Equal to float64 and the CPU; the copy without the guard is not.
TEST_F(FakeDriverRoutingBackward, NonFiniteMaskedPairs) {
  int64_t rows = 0;
  afterPlant = [&](const Case &c, Buffers &b) {
    rows = poison(c, b, kPoisonDO | kPoisonV);
  };
  EXPECT_EQ(checkRouting({"backward-dynamic", 2, 1, 230, 150, 4, 2, 64, false},
                         "backward-dynamic", 45),
            0);
  EXPECT_GT(rows, 80);
  EXPECT_GT(checkRouting({"backward-dynamic", 2, 1, 230, 150, 4, 2, 64, false},
                         "broken-bwd-dyn-guard", 45, /*checkFloat64=*/false),
            0);
}

/// Routing whose pattern allows pairs outside its clusters (layer 3: in a
/// union with a window, heads 0 and 3; the right of a difference, head 1;
/// rtRest's merge in the forward): the segments' pass, then the rest's
/// (RestWalk: the static runs of `without` minus the clusters' pairs), P
/// from the merged LSE, dq of the two added in f32. Nq < Nk over two batch
/// entries, Nq > Nk, Nq = Nk, against float64 over the planted clusters
/// and the CPU context.
TEST_F(FakeDriverRoutingBackward, MergingShortQueries) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 3, 2, 100, 200, 4, 2, 64, false},
                         "backward-dynamic", 46),
            0);
  const std::string k = FakeApi::get().kernels();
  EXPECT_NE(k.find("tessera_bwd_dyn_rt_dkdv_guarded_f16_d64,"
                   "tessera_bwd_dyn_rtrest_dq_f16_d64,"
                   "tessera_bwd_dyn_rtrest_dkdv_f16_d64,"
                   "tessera_bwd_dyn_rtrest_dq_guarded_f16_d64,"
                   "tessera_bwd_dyn_rtrest_dkdv_guarded_f16_d64"),
            std::string::npos)
      << k;
  EXPECT_EQ(k.find("tessera_rt_rest"), std::string::npos) << k;
}
TEST_F(FakeDriverRoutingBackward, MergingLongQueries) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 3, 1, 230, 150, 4, 2, 64, false},
                         "backward-dynamic", 47),
            0);
}
TEST_F(FakeDriverRoutingBackward, MergingEqualLengths) {
  EXPECT_EQ(checkRouting({"backward-dynamic", 3, 1, 130, 130, 4, 2, 64, false},
                         "backward-dynamic", 48),
            0);
}

/// Merging routing with non-finite inputs in masked pairs (dO rows of
/// queries without keys, v rows of keys nobody sees).
TEST_F(FakeDriverRoutingBackward, MergingNonFiniteMaskedPairs) {
  int64_t rows = 0;
  afterPlant = [&](const Case &c, Buffers &b) {
    rows = poison(c, b, kPoisonDO | kPoisonV);
  };
  EXPECT_EQ(checkRouting({"backward-dynamic", 3, 1, 230, 150, 4, 2, 64, false},
                         "backward-dynamic", 49),
            0);
  EXPECT_GT(rows, 80);
}

/// DynamicHopper.mlir's layer 2 (bf16, head_dim 128: merging routing by
/// k-means on the device, in a union with a window and the right of a
/// difference, three and four clusters), against the CPU context (whose
/// k-means finds the same clusters: the layer's position plants them).
TEST_F(FakeDriverDynamicBackward, MergingRoutingKMeans) {
  checkCase({"dynamic-hopper", 2, 1, 64, 64, 2, 2, 128, true}, "dynamic-hopper",
            16);
  EXPECT_NE(std::string(FakeApi::get().kernels())
                .find("tessera_bwd_dyn_rtrest_dkdv_bf16_d128"),
            std::string::npos);
}

/// A copy whose rest walk visits nothing (only the clusters' pairs): its
/// gradients differ from float64's and the CPU's.
TEST_F(FakeDriverRoutingBackward, BrokenRestFails) {
  EXPECT_GT(checkRouting({"backward-dynamic", 3, 1, 130, 130, 4, 2, 64, false},
                         "broken-bwd-dyn-rest", 48, /*checkFloat64=*/false),
            0);
}

//===----------------------------------------------------------------------===//
// A caller's block index (#attn.block_index): Inputs/dynamic-block-index.mlir
//===----------------------------------------------------------------------===//

/// floor(a / d) for d > 0.
int64_t floorDiv(int64_t a, int64_t d) {
  return a >= 0 ? a / d : -((-a + d - 1) / d);
}

/// The block_index heads' backward on the fake CUDA context: dq over the
/// caller's CSR (the forward's list walk), dk and dv into the f32 sums;
/// against a float64 backward over the same index and against the CPU
/// context's. Layer 0 (bf16, head_dim 64, GQA 2:1, block_q = block_k =
/// 64): the lists alone, under causality, in a union with a window, minus
/// a sink. Layer 1 (f16, head_dim 128, block_q = 128, block_k = 192): the
/// lists under causality and alone.
class FakeDriverBlockIndexBackward : public FakeDriverDynamicBackward {
protected:
  /// A random CSR index for `c` (ascending key blocks per row, every fourth
  /// row empty), and the pattern of the layer's heads over it.
  void useIndex(const Case &c, uint64_t seed) {
    const int64_t bq = c.layer == 0 ? 64 : 128, bk = c.layer == 0 ? 64 : 192;
    rows = floorDiv(c.nk - 1, bq) - floorDiv(c.nk - c.nq, bq) + 1;
    const int64_t keyBlocks = (c.nk + bk - 1) / bk;
    std::mt19937 rng(seed);
    offsets.clear();
    cols.clear();
    for (int64_t bh = 0; bh < c.batch * c.heads; ++bh)
      for (int64_t r = 0; r <= rows; ++r) {
        offsets.push_back(int32_t(cols.size()));
        if (r == rows || (r + bh) % 4 == 1)
          continue; // an empty row
        for (int64_t j = 0; j < keyBlocks; ++j)
          if (rng() % 3 == 0 || j == (r + bh) % keyBlocks)
            cols.push_back(int32_t(j));
      }
    const Case at = c;
    allowed = [this, at, bq, bk](int64_t bi, int64_t h, int64_t i, int64_t j) {
      const int64_t p = i + at.nk - at.nq;
      const int64_t r = floorDiv(p, bq) - floorDiv(at.nk - at.nq, bq);
      const size_t row = size_t((bi * at.heads + h) * (rows + 1) + r);
      bool listed = false;
      for (int32_t x = offsets[row]; x < offsets[row + 1]; ++x)
        listed = listed || cols[size_t(x)] == j / bk;
      if (at.layer == 1)
        return h == 0 ? listed && j <= p : listed;
      switch (h) {
      case 0:
        return listed;
      case 1:
        return listed && j <= p;
      case 2:
        return listed || (j >= p - 5 && j <= p);
      default:
        return listed && !(j < 3 && j <= p);
      }
    };
    decorate = [this](tessera_attention_desc &d) {
      d.block_index_offsets = offsets.data();
      d.block_index_cols = cols.data();
      d.block_index_nnz = int64_t(cols.size());
      d.block_index_rows = rows;
    };
  }

  int64_t checkIndex(const Case &c, const std::string &emulated, uint64_t seed,
                     bool checkFloat64 = true) {
    useIndex(c, seed);
    const int64_t bad = checkDynamic(c, emulated, seed, checkFloat64);
    const std::string k = FakeApi::get().kernels();
    const std::string dt = c.bf16 ? "bf16" : "f16", d = std::to_string(c.dim);
    EXPECT_NE(k.find("tessera_bwd_dyn_bi_dq_" + dt + "_d" + d +
                     ",tessera_bwd_dyn_bi_dkdv_" + dt + "_d" + d),
              std::string::npos)
        << k;
    EXPECT_EQ(k.find("tessera_bi_attend"), std::string::npos) << k;
    EXPECT_NE(callSet(FakeApi::get().calls()).count("cuMemcpyHtoDAsync"), 0u);
    return bad;
  }

  int64_t rows = 0;
  std::vector<int32_t> offsets, cols;
};

/// Layer 0: Nq < Nk and Nq > Nk over two batch entries, Nq = Nk; rows
/// without keys (head 0's empty lists: dq exactly 0).
TEST_F(FakeDriverBlockIndexBackward, Bf16GqaShortQueries) {
  EXPECT_EQ(checkIndex({"dynamic-block-index", 0, 2, 150, 260, 4, 2, 64, true},
                       "dynamic-block-index", 31),
            0);
}
TEST_F(FakeDriverBlockIndexBackward, Bf16GqaLongQueries) {
  EXPECT_EQ(checkIndex({"dynamic-block-index", 0, 2, 260, 150, 4, 2, 64, true},
                       "dynamic-block-index", 32),
            0);
}
TEST_F(FakeDriverBlockIndexBackward, Bf16GqaEqualLengths) {
  Case c{"dynamic-block-index", 0, 1, 200, 200, 4, 2, 64, true};
  EXPECT_EQ(checkIndex(c, "dynamic-block-index", 33), 0);
}

/// Layer 1: block_q = 128, block_k = 192 (a query tile in two query blocks
/// where Nk - Nq is not a multiple of 128; key blocks of three tiles).
TEST_F(FakeDriverBlockIndexBackward, F16BlockQNotBlockK) {
  EXPECT_EQ(
      checkIndex({"dynamic-block-index", 1, 1, 200, 450, 2, 1, 128, false},
                 "dynamic-block-index", 34),
      0);
  EXPECT_EQ(
      checkIndex({"dynamic-block-index", 1, 2, 330, 260, 2, 1, 128, false},
                 "dynamic-block-index", 35),
      0);
}

/// The copy whose list walk reads key blocks as block_q long (the walk the
/// forward and the backward share): its gradients differ from the CPU's.
TEST_F(FakeDriverBlockIndexBackward, BrokenWalkFails) {
  EXPECT_GT(
      checkIndex({"dynamic-block-index", 1, 1, 200, 450, 2, 1, 128, false},
                 "broken-dynamic-block-index", 36, /*checkFloat64=*/false),
      0);
}

/// Non-finite inputs in masked pairs of a caller's index: q and dO rows of
/// queries without keys (empty lists), k and v rows of keys no list or
/// window of their kv head reaches (whole masked key blocks, and masked
/// columns inside partial tiles); layer 0 at Nq < Nk over two batch
/// entries, layer 1 (block_q 128, block_k 192) at Nq > Nk. Equal to
/// float64 and the CPU's (the index is the caller's: no estimate reads q
/// or k).
TEST_F(FakeDriverBlockIndexBackward, NonFiniteMaskedPairs) {
  int64_t rows = 0;
  afterPlant = [&](const Case &c, Buffers &b) {
    rows = poison(c, b, kPoisonQ | kPoisonDO | kPoisonK | kPoisonV);
  };
  EXPECT_EQ(checkIndex({"dynamic-block-index", 0, 2, 150, 260, 4, 2, 64, true},
                       "dynamic-block-index", 38),
            0);
  EXPECT_GT(rows, 0);
  rows = 0;
  EXPECT_EQ(
      checkIndex({"dynamic-block-index", 1, 1, 330, 260, 2, 1, 128, false},
                 "dynamic-block-index", 39),
      0);
  EXPECT_GT(rows, 0);
}

/// A bad index is refused by name before any launch (validated on the
/// host as for the forward).
TEST_F(FakeDriverBlockIndexBackward, BadIndexRefusedByName) {
  Case c{"dynamic-block-index", 0, 1, 150, 260, 4, 2, 64, true};
  useIndex(c, 37);
  load(c, "dynamic-block-index");
  Buffers b;
  plant(c, b, 37);
  b.dq.assign(b.q.size(), 0);
  b.dk.assign(b.k.size(), 0);
  b.dv.assign(b.k.size(), 0);
  tessera_attention_desc d = desc(c, b);
  decorate(d);
  std::vector<int32_t> bad = cols;
  bad[0] = int32_t((c.nk + 63) / 64); // past the last key block
  d.block_index_cols = bad.data();
  EXPECT_EQ(runCuda(c, b, &d), TESSERA_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tessera_last_error()).find("block_index_cols"),
            std::string::npos)
      << tessera_last_error();
  EXPECT_STREQ(FakeApi::get().kernels(), "");
}

} // namespace
