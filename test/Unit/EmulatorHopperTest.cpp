//===- EmulatorHopperTest.cpp - the emulator's Hopper primitives ----------===//
//
// Hopper.cuh's primitives under the emulator, with small hand-written
// kernels: wgmmaSS, wgmmaRS and wgmmaRSTransB at N = 64, 128 (and 256), f16
// and bf16, against a plain matmul in double, with operands placed in
// shared memory by this file's own reading of the canonical K-major and
// MN-major layouts (every swizzle mode) and A fragments built from the
// stated register layout; named barriers; the
// accumulate flag; accumulators NaN until the covering wgmmaWait; TMA loads
// against the swizzle patterns written here, zeros past the tensor's end,
// poison until an mbarrier wait, the driver's validity rules of
// cuTensorMapEncodeTiled; a producer warp filling a two-stage ring for a
// consumer warpgroup, correct and broken four ways (no wait, wrong parity,
// wrong swizzle in the descriptor, a stage reused before its release), and
// the misuses the emulator reports (deadlocks, partial warpgroups,
// over-arrival, setmaxnreg).
//
// Inputs are multiples of 1/4 in [-2, 2], so every product and sum here is
// exact in float: the expected values are exact, not within a tolerance.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"
// After Emulate.h, as a bundle pastes it (it uses TESSERA_EMULATE).
#include "tessera/kernel/Hopper.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace {

using namespace tessera::kernel;
using tessera::cpu::bf16ToFloat;
using tessera::cpu::f16ToFloat;
using tessera::cpu::floatToBf16;
using tessera::cpu::floatToF16;

/// A value of the test matrices: exact in f16 and bf16.
float value(int i, int salt) {
  return float((i * 37 + salt * 11 + 5) % 17 - 8) / 4.0f;
}

template <int E> uint16_t toHalf(float x) {
  return E == kWgmmaF16 ? floatToF16(x) : floatToBf16(x);
}

/// A rows x cols matrix of value(), row-major.
std::vector<float> matrix(int rows, int cols, int salt) {
  std::vector<float> m(size_t(rows) * size_t(cols));
  for (size_t i = 0; i < m.size(); ++i)
    m[i] = value(int(i), salt);
  return m;
}

/// C[m][n] = sum over k of A[m][k] B[n][k] (B given K-major, as wgmma
/// takes it), in double.
std::vector<double> matmul(const std::vector<float> &a,
                           const std::vector<float> &b, int m, int n, int k) {
  std::vector<double> c(size_t(m) * size_t(n));
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int x = 0; x < k; ++x)
        s += double(a[size_t(i * k + x)]) * double(b[size_t(j * k + x)]);
      c[size_t(i * n + j)] = s;
    }
  return c;
}

//===----------------------------------------------------------------------===//
// Operands in shared memory, placed by this file's reading of the layouts
//===----------------------------------------------------------------------===//

constexpr int K = 64; // four k-steps of 16

/// The swizzle span in bytes of a descriptor mode (kDesc128B ...), 0 none.
int spanOf(int mode) {
  return mode == kDesc128B  ? 128
         : mode == kDesc64B ? 64
         : mode == kDesc32B ? 32
                            : 0;
}

/// Byte offset in a 1024-byte aligned tile of element (r, k) of a
/// rows x K operand, K-major. Swizzled (span W): the k range is cut into
/// column blocks of W / 2 elements, each `rows` rows of W bytes; in a
/// W-byte row, 16-byte chunk c of the row in 128-byte line L (of the tile)
/// is stored at chunk c XOR (L mod W / 16). Unswizzled: core matrices of
/// 8 rows x 8 k (16-byte rows, 128 bytes), k-chunk after k-chunk: chunk
/// k / 8 holds rows x 16 bytes.
size_t placeOf(int mode, int rows, int r, int k) {
  const int w = spanOf(mode);
  if (!w)
    return size_t(k / 8) * size_t(rows) * 16 + size_t(r) * 16 +
           size_t(k % 8) * 2;
  const int perRow = w / 2, block = k / perRow;
  const size_t row =
      size_t(block) * size_t(rows) * size_t(w) + size_t(r) * size_t(w);
  const int chunk = (k % perRow) * 2 / 16, line = int(row / 128);
  return row + size_t((chunk ^ (line % (w / 16))) * 16) +
         size_t((k % perRow) * 2 % 16);
}

/// Writes the rows x K matrix `m` into `tile` in layout `mode`.
template <int E>
void place(uint16_t *tile, int mode, const std::vector<float> &m, int rows) {
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k)
      tile[placeOf(mode, rows, r, k) / 2] = toHalf<E>(m[size_t(r * K + k)]);
}

/// The descriptor of k-step s (k in [16 s, 16 s + 16)) of a rows x K
/// operand placed by place(): swizzled, the start moves 32 bytes along a
/// W-byte row (to the next column block after W / 32 steps), 8-row groups
/// are 8 W bytes apart (SBO) and LBO is unused; unswizzled, the start
/// moves two k-chunks, LBO is a k-chunk (rows x 16 bytes) and SBO 8 rows
/// (128 bytes).
uint64_t descOf(const uint16_t *tile, int mode, int rows, int s) {
  const int w = spanOf(mode);
  if (!w)
    return smemDesc(tile + s * 2 * rows * 8, uint32_t(rows * 16), 128, mode);
  const int perBlock = w / 32; // k-steps in a W-byte row
  const uint16_t *start =
      tile + (s / perBlock) * rows * (w / 2) + (s % perBlock) * 16;
  return smemDesc(start, 16, uint32_t(8 * w), mode);
}

/// Byte offset of element (n, k) of an N x K operand stored MN-major (n
/// contiguous; wgmmaRSTransB's B). Swizzled (span W): column blocks of
/// W / 2 n, each K lines of W bytes (line k), 16-byte chunks swizzled as in
/// placeOf(). Unswizzled: core matrices of 8 k lines of 16 bytes (8 n),
/// the k-groups of 8 next to each other (128 bytes), n-groups of 8 after
/// K / 8 of them.
size_t placeMNOf(int mode, int n, int k) {
  const int w = spanOf(mode);
  if (!w)
    return size_t(n / 8) * (K / 8) * 128 + size_t(k / 8) * 128 +
           size_t(k % 8) * 16 + size_t(n % 8) * 2;
  const int perLine = w / 2;
  const size_t line = (size_t(n / perLine) * K + size_t(k)) * size_t(w);
  const int chunk = (n % perLine) * 2 / 16, index = int(line / 128);
  return line + size_t((chunk ^ (index % (w / 16))) * 16) +
         size_t((n % perLine) * 2 % 16);
}

/// Descriptor of k-step s of an operand placed by placeMNOf: the start 16
/// k lines (swizzled) or two k-groups (128 bytes each) on; swizzled, LBO
/// the next column block (K lines) and SBO 8 lines; unswizzled, LBO a
/// k-group and SBO an n-group.
uint64_t descMNOf(const uint16_t *tile, int mode, int s) {
  const int w = spanOf(mode);
  if (!w)
    return smemDesc(tile + s * 2 * 64, 128, (K / 8) * 128, mode);
  return smemDesc(tile + s * 16 * (w / 2), uint32_t(K * w), uint32_t(8 * w),
                  mode);
}

/// This thread's element v of the D fragment: (row, column) of D (the PTX
/// ISA's figure for wgmma .m64nNk16 D, as Hopper.cuh states it).
void dPosition(int thread, int v, int &row, int &col) {
  const int warp = thread / 32, lane = thread % 32;
  row = 16 * warp + lane / 4 + 8 * ((v % 4) / 2);
  col = 8 * (v / 4) + 2 * (lane % 4) + v % 2;
}

/// A fragment of k-step s for `thread` from the row-major 64 x K matrix a:
/// registers 0-3 = rows g, g + 8, g, g + 8 of its warp's 16, columns
/// 2 q, 2 q + 1 (+8 for registers 2 and 3), the lower column in the lower
/// half.
template <int E>
void aFragment(const std::vector<float> &a, int thread, int s,
               uint32_t (&regs)[4]) {
  const int warp = thread / 32, g = (thread % 32) / 4, q = thread % 4;
  for (int j = 0; j < 4; ++j) {
    const int r = 16 * warp + g + 8 * (j % 2), c = 16 * s + 2 * q + 8 * (j / 2);
    regs[j] = uint32_t(toHalf<E>(a[size_t(r * K + c)])) |
              uint32_t(toHalf<E>(a[size_t(r * K + c + 1)])) << 16;
  }
}

/// The shared memory of the wgmma tests: A (64 x K) and B (up to 256 x K).
struct alignas(1024) MmaTiles {
  uint16_t a[64 * K];
  uint16_t b[256 * K];
};
MmaTiles mmaTiles;

/// D = A B^T over K = 64 by four wgmma k-steps (the first without
/// accumulate), A from shared memory (RS false) or registers, B K-major or
/// (TB, with RS) MN-major; returns D row-major, gathered from the threads'
/// fragments.
template <int E, int N, bool RS, bool TB = false>
std::vector<float> runWgmma(int modeA, int modeB, const std::vector<float> &a,
                            const std::vector<float> &b) {
  place<E>(mmaTiles.a, modeA, a, 64);
  if (TB) {
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        mmaTiles.b[placeMNOf(modeB, n, k) / 2] =
            toHalf<E>(b[size_t(n * K + k)]);
  } else {
    place<E>(mmaTiles.b, modeB, b, N);
  }
  std::vector<float> out(size_t(64) * N, -1.0f);
  tessera_emu::launch(
      [&] {
        const int t = int(threadIdx.x);
        float d[N / 2];
        wgmmaFence();
        for (int s = 0; s < K / 16; ++s) {
          const uint64_t db = TB ? descMNOf(mmaTiles.b, modeB, s)
                                 : descOf(mmaTiles.b, modeB, N, s);
          if (RS) {
            uint32_t regs[4];
            aFragment<E>(a, t, s, regs);
            if (TB)
              wgmmaRSTransB<E, N>(d, regs, db, s > 0);
            else
              wgmmaRS<E, N>(d, regs, db, s > 0);
          } else {
            wgmmaSS<E, N>(d, descOf(mmaTiles.a, modeA, 64, s), db, s > 0);
          }
        }
        wgmmaCommit();
        wgmmaWait<0>();
        for (int v = 0; v < N / 2; ++v) {
          int row, col;
          dPosition(t, v, row, col);
          out[size_t(row * N + col)] = d[v];
        }
      },
      dim3{1, 1, 1}, dim3{128, 1, 1});
  return out;
}

/// Counts the elements of `got` that differ from `want` (NaN differs).
size_t mismatches(const std::vector<float> &got,
                  const std::vector<double> &want) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    bad += !(double(got[i]) == want[i]);
  return bad;
}

const int kModes[] = {kDescNoSwizzle, kDesc32B, kDesc64B, kDesc128B};

/// Runs `body` under each scheduling seed of `seeds` (0: lowest thread
/// first), restoring the seed after.
template <typename F>
void underSeedsOf(std::initializer_list<uint64_t> seeds, F body) {
  const uint64_t saved = tessera_emu::scheduleSeed();
  for (uint64_t seed : seeds) {
    tessera_emu::setScheduleSeed(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    body();
  }
  tessera_emu::setScheduleSeed(saved);
}

template <int E, int N, bool RS, bool TB = false> void checkEveryMode() {
  const std::vector<float> a = matrix(64, K, 1), b = matrix(N, K, 2);
  const std::vector<double> want = matmul(a, b, 64, N, K);
  for (int mode : kModes) {
    // A in the next mode round, so that A and B differ in layout too.
    const int modeA = kModes[(mode + 1) % 4];
    EXPECT_EQ(mismatches(runWgmma<E, N, RS, TB>(modeA, mode, a, b), want), 0u)
        << "N " << N << " B swizzle mode " << mode << " A mode " << modeA;
  }
}

TEST(EmulatorHopper, WgmmaSSMatchesAMatmulInEverySwizzleMode) {
  checkEveryMode<kWgmmaBF16, 64, false>();
  checkEveryMode<kWgmmaBF16, 128, false>();
  checkEveryMode<kWgmmaF16, 64, false>();
  checkEveryMode<kWgmmaF16, 128, false>();
  checkEveryMode<kWgmmaBF16, 256, false>();
}

TEST(EmulatorHopper, WgmmaRSMatchesAMatmulInEverySwizzleMode) {
  checkEveryMode<kWgmmaBF16, 64, true>();
  checkEveryMode<kWgmmaBF16, 128, true>();
  checkEveryMode<kWgmmaF16, 64, true>();
  checkEveryMode<kWgmmaF16, 128, true>();
  checkEveryMode<kWgmmaF16, 256, true>();
}

/// B MN-major (FlashAttention-3's V): the same products.
TEST(EmulatorHopper, WgmmaRSTransBMatchesAMatmulInEverySwizzleMode) {
  checkEveryMode<kWgmmaBF16, 64, true, true>();
  checkEveryMode<kWgmmaBF16, 128, true, true>();
  checkEveryMode<kWgmmaF16, 64, true, true>();
  checkEveryMode<kWgmmaF16, 128, true, true>();
}

/// B placed MN-major but read K-major (the transpose flag forgotten): a
/// wrong product.
TEST(EmulatorHopper, AnMNMajorOperandReadKMajorGivesAWrongProduct) {
  const std::vector<float> a = matrix(64, K, 1), b = matrix(64, K, 2);
  const std::vector<double> want = matmul(a, b, 64, 64, K);
  for (int n = 0; n < 64; ++n)
    for (int k = 0; k < K; ++k)
      mmaTiles.b[placeMNOf(kDesc128B, n, k) / 2] =
          floatToBf16(b[size_t(n * K + k)]);
  std::vector<float> out(64 * 64);
  tessera_emu::launch(
      [&] {
        const int t = int(threadIdx.x);
        float d[32];
        for (int s = 0; s < K / 16; ++s) {
          uint32_t regs[4];
          aFragment<kWgmmaBF16>(a, t, s, regs);
          wgmmaRS<kWgmmaBF16, 64>(d, regs, descMNOf(mmaTiles.b, kDesc128B, s),
                                  s > 0);
        }
        wgmmaCommit();
        wgmmaWait<0>();
        for (int v = 0; v < 32; ++v) {
          int row, col;
          dPosition(t, v, row, col);
          out[size_t(row * 64 + col)] = d[v];
        }
      },
      dim3{1, 1, 1}, dim3{128, 1, 1});
  EXPECT_GT(mismatches(out, want), 1000u);
}

/// A descriptor whose swizzle mode differs from the layout of the data
/// reads other elements: the product is wrong (the layouts are told apart).
TEST(EmulatorHopper, ADescriptorInTheWrongSwizzleModeGivesAWrongProduct) {
  const std::vector<float> a = matrix(64, K, 1), b = matrix(64, K, 2);
  const std::vector<double> want = matmul(a, b, 64, 64, K);
  place<kWgmmaBF16>(mmaTiles.a, kDesc128B, a, 64);
  place<kWgmmaBF16>(mmaTiles.b, kDesc128B, b, 64);
  for (int wrong : {kDesc64B, kDesc32B}) {
    std::vector<float> out(64 * 64);
    tessera_emu::launch(
        [&] {
          float d[32];
          for (int s = 0; s < K / 16; ++s)
            wgmmaSS<kWgmmaBF16, 64>(
                d, descOf(mmaTiles.a, kDesc128B, 64, s),
                smemDesc(mmaTiles.b + s * 16, 16, 1024, wrong), s > 0);
          wgmmaCommit();
          wgmmaWait<0>();
          for (int v = 0; v < 32; ++v) {
            int row, col;
            dPosition(int(threadIdx.x), v, row, col);
            out[size_t(row * 64 + col)] = d[v];
          }
        },
        dim3{1, 1, 1}, dim3{128, 1, 1});
    EXPECT_GT(mismatches(out, want), 1000u) << "descriptor mode " << wrong;
  }
}

/// scale-d: false ignores what the accumulators held, true adds to it.
TEST(EmulatorHopper, TheAccumulateFlagAddsToTheAccumulators) {
  const std::vector<float> a = matrix(64, K, 3), b = matrix(64, K, 4);
  place<kWgmmaBF16>(mmaTiles.a, kDesc128B, a, 64);
  place<kWgmmaBF16>(mmaTiles.b, kDesc128B, b, 64);
  // One k-step: the product of the first 16 k only.
  std::vector<float> a16(64 * K, 0.0f), b16(64 * K, 0.0f);
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < 16; ++k) {
      a16[size_t(r * K + k)] = a[size_t(r * K + k)];
      b16[size_t(r * K + k)] = b[size_t(r * K + k)];
    }
  const std::vector<double> product = matmul(a16, b16, 64, 64, K);
  for (bool accumulate : {false, true}) {
    std::vector<float> out(64 * 64);
    tessera_emu::launch(
        [&] {
          float d[32];
          for (float &x : d)
            x = 1000.5f;
          wgmmaFence();
          wgmmaSS<kWgmmaBF16, 64>(d, descOf(mmaTiles.a, kDesc128B, 64, 0),
                                  descOf(mmaTiles.b, kDesc128B, 64, 0),
                                  accumulate);
          wgmmaCommit();
          wgmmaWait<0>();
          for (int v = 0; v < 32; ++v) {
            int row, col;
            dPosition(int(threadIdx.x), v, row, col);
            out[size_t(row * 64 + col)] = d[v];
          }
        },
        dim3{1, 1, 1}, dim3{128, 1, 1});
    std::vector<double> want = product;
    if (accumulate)
      for (double &x : want)
        x += 1000.5;
    EXPECT_EQ(mismatches(out, want), 0u) << "accumulate " << accumulate;
  }
}

/// The accumulators are NaN from the issue until a wait that covers the
/// wgmma's group: wait_group 1 completes the older of two groups only.
TEST(EmulatorHopper, AccumulatorsAreNaNUntilTheCoveringWait) {
  place<kWgmmaBF16>(mmaTiles.a, kDesc128B, matrix(64, K, 5), 64);
  place<kWgmmaBF16>(mmaTiles.b, kDesc128B, matrix(64, K, 6), 64);
  std::vector<std::string> seen(128);
  tessera_emu::launch(
      [&] {
        float d1[32], d2[32];
        for (int v = 0; v < 32; ++v)
          d1[v] = d2[v] = 1.0f;
        auto look = [&] {
          seen[threadIdx.x] += std::isnan(d1[0]) ? 'N' : 'V';
          seen[threadIdx.x] += std::isnan(d2[31]) ? 'N' : 'V';
          seen[threadIdx.x] += ' ';
        };
        const uint64_t da = descOf(mmaTiles.a, kDesc128B, 64, 0);
        const uint64_t db = descOf(mmaTiles.b, kDesc128B, 64, 0);
        wgmmaFence();
        wgmmaSS<kWgmmaBF16, 64>(d1, da, db, true);
        look(); // issued, not committed
        wgmmaCommit();
        wgmmaSS<kWgmmaBF16, 64>(d2, da, db, true);
        wgmmaCommit();
        look();
        wgmmaWait<1>();
        look(); // the older group only
        wgmmaWait<0>();
        look();
      },
      dim3{1, 1, 1}, dim3{128, 1, 1});
  for (int t = 0; t < 128; ++t)
    EXPECT_EQ(seen[t], "NV NN VN VV ") << "thread " << t;
}

/// wgmma.fence is needed before the first wgmma of a block and after each
/// wait_group (ordinary code then touches the registers); chained wgmma
/// need none in between. The emulator counts the ones issued without.
TEST(EmulatorHopper, WgmmaWithoutAFenceIsCounted) {
  auto run = [](bool fenceFirst, bool fenceAfterWait) {
    tessera_emu::resetUnfencedWgmmas();
    tessera_emu::launch(
        [&] {
          float d[32];
          const uint64_t da = descOf(mmaTiles.a, kDesc128B, 64, 0);
          const uint64_t db = descOf(mmaTiles.b, kDesc128B, 64, 0);
          if (fenceFirst)
            wgmmaFence();
          wgmmaSS<kWgmmaBF16, 64>(d, da, db, false);
          wgmmaSS<kWgmmaBF16, 64>(d, da, db, true); // chained: no fence
          wgmmaCommit();
          wgmmaWait<0>();
          d[0] *= 2.0f; // ordinary code on the accumulators
          if (fenceAfterWait)
            wgmmaFence();
          wgmmaSS<kWgmmaBF16, 64>(d, da, db, true);
          wgmmaCommit();
          wgmmaWait<0>();
        },
        dim3{1, 1, 1}, dim3{256, 1, 1});
    return tessera_emu::unfencedWgmmas();
  };
  EXPECT_EQ(run(true, true), 0u);
  EXPECT_EQ(run(false, true), 4u); // two warpgroups, two chained wgmma each
  EXPECT_EQ(run(true, false), 2u);
}

/// __syncwarp is a warp collective: every lane sees what every lane of its
/// warp wrote before it.
TEST(EmulatorHopper, SyncwarpOrdersTheWarp) {
  underSeedsOf({0, 1, 7}, [] {
    std::vector<int> written(64, 0), seen(64, -1);
    tessera_emu::launch(
        [&] {
          const int t = int(threadIdx.x);
          written[size_t(t)] = 1;
          __syncwarp();
          int sum = 0;
          for (int l = 0; l < 32; ++l)
            sum += written[size_t(t / 32 * 32 + l)];
          seen[size_t(t)] = sum;
        },
        dim3{1, 1, 1}, dim3{64, 1, 1});
    for (int v : seen)
      EXPECT_EQ(v, 32);
  });
}

/// __any_sync: every lane learns whether any lane of its warp voted; the
/// other warp's vote does not count. atomicOr sets bits.
TEST(EmulatorHopper, AnySyncVotesPerWarp) {
  std::vector<int> got(64, -1);
  int flags = 0;
  tessera_emu::launch(
      [&] {
        const int t = int(threadIdx.x);
        got[size_t(t)] = __any_sync(0xffffffffu, t == 37);
        if (t == 37)
          atomicOr(&flags, 4);
        if (t == 3)
          atomicOr(&flags, 1);
      },
      dim3{1, 1, 1}, dim3{64, 1, 1});
  for (int t = 0; t < 64; ++t)
    EXPECT_EQ(got[size_t(t)] != 0, t >= 32) << t;
  EXPECT_EQ(flags, 5);
}

//===----------------------------------------------------------------------===//
// Warpgroup collectives misused
//===----------------------------------------------------------------------===//

TEST(EmulatorHopperDeathTest, AWgmmaInAPartialWarpgroup) {
  EXPECT_DEATH(
      tessera_emu::launch([] { wgmmaFence(); }, dim3{1, 1, 1}, dim3{192, 1, 1}),
      "wgmma.fence in a warpgroup of 64 threads");
}

TEST(EmulatorHopperDeathTest, ThreadsOfAWarpgroupAtDifferentCollectives) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     if (threadIdx.x == 77)
                       wgmmaCommit();
                     else
                       wgmmaFence();
                   },
                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "threads of warpgroup 0 at different warpgroup collectives");
}

/// A warp that skips the wgmma leaves the others waiting: a deadlock,
/// reported with where the threads wait.
TEST(EmulatorHopperDeathTest, AWarpSkippingAWgmma) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     float d[32];
                     if (threadIdx.x < 96)
                       wgmmaSS<kWgmmaBF16, 64>(
                           d, descOf(mmaTiles.a, kDesc128B, 64, 0),
                           descOf(mmaTiles.b, kDesc128B, 64, 0), false);
                   },
                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "deadlock in block \\(0, 0, 0\\).* 32 finished the block, 0 "
               "at an mbarrier wait, 96 at a warpgroup collective");
}

TEST(EmulatorHopperDeathTest, SetmaxnregOutsideItsRange) {
  EXPECT_DEATH(tessera_emu::launch([] { tessera_emu::setMaxNReg(20, true); },
                                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "setmaxnreg with 20 registers");
  EXPECT_DEATH(tessera_emu::launch([] { tessera_emu::setMaxNReg(100, false); },
                                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "setmaxnreg with 100 registers");
}

TEST(EmulatorHopper, SetmaxnregByAWholeWarpgroup) {
  int passed = 0;
  tessera_emu::launch(
      [&] {
        setMaxNRegDec<40>();
        setMaxNRegInc<232>();
        ++passed;
      },
      dim3{1, 1, 1}, dim3{256, 1, 1});
  EXPECT_EQ(passed, 256);
}

/// bar.sync id, count: each warpgroup on a barrier of its own; a thread
/// passes only when its warpgroup's 128 arrived, round after round.
TEST(EmulatorHopper, NamedBarriersReleaseTheirOwnThreads) {
  underSeedsOf({0, 1, 7}, [] {
    std::vector<int> seen(256 * 2);
    int arrived[2][2] = {};
    tessera_emu::launch(
        [&] {
          const int t = int(threadIdx.x), g = t / 128;
          for (int round = 0; round < 2; ++round) {
            ++arrived[round][g];
            tessera_emu::namedBarrier(1 + g, 128);
            seen[size_t(2 * t + round)] = arrived[round][g];
          }
        },
        dim3{1, 1, 1}, dim3{256, 1, 1});
    for (int v : seen)
      EXPECT_EQ(v, 128);
  });
}

TEST(EmulatorHopperDeathTest, NamedBarrierMisuses) {
  // A warp that skips it leaves the others waiting.
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     if (threadIdx.x < 96)
                       tessera_emu::namedBarrier(1, 128);
                   },
                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "deadlock in block \\(0, 0, 0\\).* 32 finished the block, 0 at "
               "an mbarrier wait, 0 at a warpgroup collective, 96 at a named "
               "barrier(.|\n)*bar.sync 1: 96 of 128 threads");
  EXPECT_DEATH(
      tessera_emu::launch(
          [] { tessera_emu::namedBarrier(2, threadIdx.x < 64 ? 128 : 64); },
          dim3{1, 1, 1}, dim3{128, 1, 1}),
      "bar.sync 2 with counts (128 and 64|64 and 128)");
  EXPECT_DEATH(tessera_emu::launch([] { tessera_emu::namedBarrier(1, 48); },
                                   dim3{1, 1, 1}, dim3{128, 1, 1}),
               "bar.sync 1, 48");
}

//===----------------------------------------------------------------------===//
// mbarrier
//===----------------------------------------------------------------------===//

/// Phases: `count` arrivals complete one; try_wait.parity(p) is true once
/// the phase of parity p has completed (at once for parity 1 before any
/// phase: "the phase before" counts as complete), and a waiter resumes only
/// then: the arrivals seen at each step say it waited.
TEST(EmulatorHopper, MbarrierPhasesAndParity) {
  std::vector<std::string> seen(64);
  int arrivals = 0;
  tessera_emu::launch(
      [&] {
        __shared__ u64 bar;
        const int t = int(threadIdx.x);
        if (t == 0)
          mbarInit(&bar, 32);
        __syncthreads();
        auto log = [&](char c) {
          seen[t] += c;
          seen[t] += std::to_string(arrivals);
        };
        if (t < 32) { // one arrival per phase, two phases
          ++arrivals;
          mbarArrive(&bar);
          mbarWait(&bar, 0);
          log('a');
          ++arrivals;
          mbarArrive(&bar);
          return;
        }
        mbarWait(&bar, 1);
        log('p');
        mbarWait(&bar, 0);
        log('b');
        mbarWait(&bar, 1);
        log('c');
      },
      dim3{1, 1, 1}, dim3{64, 1, 1});
  for (int t = 0; t < 64; ++t) {
    const std::string &s = seen[t];
    if (t < 32) {
      // Released once all 32 arrived (some may have arrived again since).
      ASSERT_EQ(s[0], 'a') << t;
      EXPECT_GE(std::stoi(s.substr(1)), 32) << t;
      continue;
    }
    const size_t b = s.find('b'), c = s.find('c');
    ASSERT_TRUE(s[0] == 'p' && b != std::string::npos && c > b) << s;
    EXPECT_GE(std::stoi(s.substr(b + 1, c - b - 1)), 32) << s;
    EXPECT_EQ(std::stoi(s.substr(c + 1)), 64) << s;
  }
}

/// One arrival too few: every thread waits for a phase that cannot
/// complete; reported as a deadlock, not a hang.
TEST(EmulatorHopperDeathTest, AnMbarrierWaitThatCannotComplete) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     __shared__ u64 bar;
                     if (threadIdx.x == 0)
                       mbarInit(&bar, 33);
                     __syncthreads();
                     if (threadIdx.x < 32)
                       mbarArrive(&bar);
                     mbarWait(&bar, 0);
                   },
                   dim3{1, 1, 1}, dim3{64, 1, 1}),
               "deadlock in block \\(0, 0, 0\\).* 0 finished the block, 64 at "
               "an mbarrier wait(.|\n)*1 of 33 arrivals pending");
}

TEST(EmulatorHopperDeathTest, MoreArrivalsThanTheCount) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     __shared__ u64 bar;
                     mbarInit(&bar, 1);
                     mbarArriveExpectTx(&bar, 64); // waits for 64 bytes now
                     mbarArrive(&bar);
                   },
                   dim3{1, 1, 1}, dim3{1, 1, 1}),
               "more arrivals on an mbarrier than its count");
}

TEST(EmulatorHopperDeathTest, AnMbarrierUsedBeforeInit) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     __shared__ u64 other;
                     mbarArrive(&other);
                   },
                   dim3{1, 1, 1}, dim3{1, 1, 1}),
               "an mbarrier used before mbarInit");
}

//===----------------------------------------------------------------------===//
// TMA
//===----------------------------------------------------------------------===//

/// A [batch, tokens, heads, D] tensor of 16-bit values, D contiguous.
struct Tensor {
  int batch, tokens, heads, d;
  std::vector<uint16_t> data;
  uint16_t *base() { return data.data(); }
  size_t index(int b, int n, int h, int x) const {
    return ((size_t(b) * size_t(tokens) + size_t(n)) * size_t(heads) +
            size_t(h)) *
               size_t(d) +
           size_t(x);
  }
};

/// Element ids 1, 2, ... as raw bits (a TMA copies bits).
Tensor idTensor(int batch, int tokens, int heads, int d) {
  Tensor t{batch, tokens, heads, d, {}};
  t.data.resize(size_t(batch) * size_t(tokens) * size_t(heads) * size_t(d));
  for (size_t i = 0; i < t.data.size(); ++i)
    t.data[i] = uint16_t(i + 1);
  return t;
}

/// A box of `box0` elements of D by `boxTokens` tokens of one head and batch.
int encode(TensorMap &map, Tensor &t, uint32_t box0, uint32_t boxTokens,
           int swizzle, bool oobZero = true) {
  const uint64_t dims[4] = {uint64_t(t.d), uint64_t(t.heads),
                            uint64_t(t.tokens), uint64_t(t.batch)};
  const uint64_t strides[3] = {dims[0] * 2, dims[0] * dims[1] * 2,
                               dims[0] * dims[1] * dims[2] * 2};
  const uint32_t box[4] = {box0, 1, boxTokens, 1};
  return tessera_emu::encodeTensorMapTiled(&map, tessera_emu::kTensorMapBF16, 4,
                                           t.base(), dims, strides, box,
                                           swizzle, oobZero);
}

/// The descriptor mode of a CUtensorMapSwizzle (0 none, 1 32B, 2 64B, 3
/// 128B), for placeOf().
int descModeOf(int tmaSwizzle) {
  const int modes[4] = {kDescNoSwizzle, kDesc32B, kDesc64B, kDesc128B};
  return modes[tmaSwizzle];
}

alignas(1024) uint16_t boxTile[16 * 64];

/// One load of 16 tokens (32..47 of 40: the last 8 past the end) by box0
/// elements of D (the last box0 of 64) of head 2, batch 1, in each swizzle
/// mode: poison until the mbarrier wait, then every element where this
/// file's swizzle formula puts it, zeros past the end.
TEST(EmulatorHopper, TmaLoadsABoxInEverySwizzleMode) {
  Tensor t = idTensor(2, 40, 3, 64);
  for (int swizzle = 0; swizzle < 4; ++swizzle) {
    const uint32_t box0 = swizzle ? (16u << swizzle) / 2 : 24;
    const int c0 = 64 - int(box0);
    TensorMap map;
    ASSERT_EQ(encode(map, t, box0, 16, swizzle), 0);
    bool poisonFirst = false;
    tessera_emu::resetLeftoverCopies();
    tessera_emu::launch(
        [&] {
          __shared__ u64 bar;
          mbarInit(&bar, 1);
          mbarArriveExpectTx(&bar, box0 * 16 * 2);
          tmaLoad(boxTile, &map, c0, 2, 32, 1, &bar);
          poisonFirst = true;
          for (uint32_t i = 0; i < box0 * 16; ++i)
            poisonFirst &= boxTile[i] == 0xffff;
          mbarWait(&bar, 0);
        },
        dim3{1, 1, 1}, dim3{1, 1, 1});
    EXPECT_TRUE(poisonFirst) << "swizzle " << swizzle;
    EXPECT_EQ(tessera_emu::leftoverCopies(), 0u);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < int(box0); ++j) {
        const size_t at = swizzle ? placeOf(descModeOf(swizzle), 16, i, j) / 2
                                  : size_t(i) * box0 + size_t(j);
        const uint16_t want =
            32 + i < 40 ? t.data[t.index(1, 32 + i, 2, c0 + j)] : 0;
        ASSERT_EQ(boxTile[at], want)
            << "swizzle " << swizzle << " token " << i << " element " << j;
      }
  }
}

/// Without oobZero the elements past the end are NaN (0x7fff), and a load
/// nobody waits for lands at the end of the block, counted as a leftover.
TEST(EmulatorHopper, TmaNaNFillAndLoadsNeverWaitedFor) {
  Tensor t = idTensor(1, 20, 1, 64);
  TensorMap map;
  ASSERT_EQ(encode(map, t, 64, 16, 3, /*oobZero=*/false), 0);
  tessera_emu::resetLeftoverCopies();
  tessera_emu::launch(
      [&] {
        __shared__ u64 bar;
        mbarInit(&bar, 1);
        mbarArriveExpectTx(&bar, 64 * 16 * 2);
        tmaLoad(boxTile, &map, 0, 0, 8, 0, &bar);
      },
      dim3{1, 1, 1}, dim3{1, 1, 1});
  EXPECT_EQ(tessera_emu::leftoverCopies(), 1u);
  // Token 8 + i, element j; 128B swizzle: rows of 128 bytes.
  EXPECT_EQ(boxTile[placeOf(kDesc128B, 16, 0, 5) / 2],
            t.data[t.index(0, 8, 0, 5)]);
  EXPECT_EQ(boxTile[placeOf(kDesc128B, 16, 13, 7) / 2], 0x7fff); // token 21
}

/// cuTensorMapEncodeTiled's CUDA_ERROR_INVALID_VALUE cases, each on its own
/// next to a valid map.
TEST(EmulatorHopper, TensorMapEncodeRejectsWhatTheDriverRejects) {
  Tensor t = idTensor(1, 64, 2, 64);
  TensorMap map;
  uint64_t dims[4] = {64, 2, 64, 1}, strides[3] = {128, 256, 16384};
  uint32_t box[4] = {64, 1, 64, 1};
  auto enc = [&](int type, int rank, void *g, int swizzle) {
    return tessera_emu::encodeTensorMapTiled(&map, type, rank, g, dims, strides,
                                             box, swizzle, true);
  };
  const int bf16 = tessera_emu::kTensorMapBF16;
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 0);
  EXPECT_EQ(enc(tessera_emu::kTensorMapF16, 4, t.base(), 0), 0);
  EXPECT_EQ(enc(7 /* FLOAT32 */, 4, t.base(), 3), 1);
  EXPECT_EQ(enc(bf16, 3, t.base(), 3), 1);
  EXPECT_EQ(enc(bf16, 4, t.base() + 1, 3), 1); // not 16-byte aligned
  EXPECT_EQ(enc(bf16, 4, t.base(), 4), 1);
  EXPECT_EQ(enc(bf16, 4, t.base(), 2), 1); // 128-byte rows, 64B swizzle
  strides[0] = 136;                        // not a multiple of 16
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 1);
  strides[0] = 128;
  box[2] = 257;
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 1);
  box[2] = 0;
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 1);
  box[2] = 64;
  box[0] = 4; // 8 bytes: not a multiple of 16
  EXPECT_EQ(enc(bf16, 4, t.base(), 0), 1);
  box[0] = 64;
  dims[1] = 0;
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 1);
  dims[1] = 2;
  EXPECT_EQ(enc(bf16, 4, t.base(), 3), 0);
}

//===----------------------------------------------------------------------===//
// A producer warp and a consumer warpgroup on a two-stage ring
//===----------------------------------------------------------------------===//

/// The ring kernel, and the ways it is broken.
enum class Ring {
  Correct,
  NoWait,       ///< consumers read the last tile without waiting for it
  WrongParity,  ///< consumers wait with the other parity
  WrongSwizzle, ///< 128B swizzled tiles read through 64B descriptors
  Reuse,        ///< the producer refills a stage when it is full, not free
  ExpectTooMuch ///< expect_tx announces more bytes than the load brings
};

constexpr int kRingTokens = 200, kRingTiles = 4; // tile 3 crosses the end

struct alignas(1024) RingTiles {
  uint16_t q[64 * 64];
  uint16_t k[2][64 * 64];
  u64 full[2], empty[2], qBar;
};
RingTiles ringTiles;

/// Thread 128 loads Q (64 x 64 of head 1) and K tiles of 64 tokens into a
/// two-stage ring; the warpgroup of threads 0-127 computes S = Q K^T of
/// each tile by four wgmmaSS k-steps. Returns S of every tile.
std::vector<float> runRing(Ring mode, Tensor &q, Tensor &k) {
  TensorMap qMap, kMap;
  EXPECT_EQ(encode(qMap, q, 64, 64, 3), 0);
  EXPECT_EQ(encode(kMap, k, 64, 64, 3), 0);
  std::vector<float> out(size_t(kRingTiles) * 64 * 64, -7.0f);
  constexpr uint32_t kTileBytes = 64 * 64 * 2;
  tessera_emu::launch(
      [&] {
        RingTiles &r = ringTiles;
        const int t = int(threadIdx.x);
        if (t == 0) {
          // Stale zeros, not a previous run's tiles.
          std::memset(r.q, 0, sizeof r.q);
          std::memset(r.k, 0, sizeof r.k);
          mbarInit(&r.qBar, 1);
          for (int s = 0; s < 2; ++s) {
            mbarInit(&r.full[s], 1);
            mbarInit(&r.empty[s], 128);
          }
          fenceBarrierInit();
        }
        __syncthreads();
        if (t == 128) {
          mbarArriveExpectTx(&r.qBar, kTileBytes);
          tmaLoad(r.q, &qMap, 0, 1, 0, 0, &r.qBar);
          for (int i = 0; i < kRingTiles; ++i) {
            const int s = i % 2;
            if (i >= 2)
              mbarWait(mode == Ring::Reuse ? &r.full[s] : &r.empty[s],
                       uint32_t((i / 2 - 1) & 1));
            mbarArriveExpectTx(&r.full[s],
                               kTileBytes +
                                   (mode == Ring::ExpectTooMuch ? 16 : 0));
            tmaLoad(r.k[s], &kMap, 0, 1, 64 * i, 0, &r.full[s]);
          }
        }
        if (t >= 128)
          return;
        mbarWait(&r.qBar, 0);
        for (int i = 0; i < kRingTiles; ++i) {
          const int s = i % 2;
          if (mode != Ring::NoWait || i != kRingTiles - 1)
            mbarWait(&r.full[s],
                     uint32_t((i / 2) & 1) ^ (mode == Ring::WrongParity));
          const int kMode = mode == Ring::WrongSwizzle ? kDesc64B : kDesc128B;
          float d[32];
          wgmmaFence();
          for (int ks = 0; ks < 4; ++ks)
            wgmmaSS<kWgmmaBF16, 64>(
                d, smemDesc(r.q + ks * 16, 16, 1024, kDesc128B),
                smemDesc(r.k[s] + ks * 16, 16, 1024, kMode), ks > 0);
          wgmmaCommit();
          wgmmaWait<0>();
          for (int v = 0; v < 32; ++v) {
            int row, col;
            dPosition(t, v, row, col);
            out[size_t((i * 64 + row) * 64 + col)] = d[v];
          }
          mbarArrive(&r.empty[s]);
        }
      },
      dim3{1, 1, 1}, dim3{160, 1, 1});
  return out;
}

/// Q (64 tokens) and K (kRingTokens) of two heads, D = 64, bf16 values.
void ringInputs(Tensor &q, Tensor &k) {
  q = Tensor{1, 64, 2, 64, {}};
  k = Tensor{1, kRingTokens, 2, 64, {}};
  for (Tensor *x : {&q, &k}) {
    x->data.resize(size_t(x->tokens) * 2 * 64);
    for (size_t i = 0; i < x->data.size(); ++i)
      x->data[i] = floatToBf16(value(int(i), x == &q ? 7 : 8));
  }
}

/// S of every tile in double: head 1, keys past the end as zeros.
std::vector<double> ringReference(const Tensor &q, const Tensor &k) {
  std::vector<double> s(size_t(kRingTiles) * 64 * 64, 0.0);
  for (int i = 0; i < kRingTiles; ++i)
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 64; ++n) {
        const int token = 64 * i + n;
        if (token >= kRingTokens)
          continue;
        double x = 0;
        for (int e = 0; e < 64; ++e)
          x += double(bf16ToFloat(q.data[q.index(0, m, 1, e)])) *
               double(bf16ToFloat(k.data[k.index(0, token, 1, e)]));
        s[size_t((i * 64 + m) * 64 + n)] = x;
      }
  return s;
}

/// Runs `body` under several scheduling seeds (0: lowest thread first).
template <typename F>
void underSeeds(F body, std::vector<uint64_t> seeds = {0, 1, 7, 12345}) {
  const uint64_t saved = tessera_emu::scheduleSeed();
  for (uint64_t seed : seeds) {
    tessera_emu::setScheduleSeed(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    body();
  }
  tessera_emu::setScheduleSeed(saved);
}

TEST(EmulatorHopper, ATwoStageRingGivesEveryTile) {
  Tensor q, k;
  ringInputs(q, k);
  const std::vector<double> want = ringReference(q, k);
  underSeeds([&] {
    tessera_emu::resetLeftoverCopies();
    tessera_emu::resetUnfencedWgmmas();
    EXPECT_EQ(mismatches(runRing(Ring::Correct, q, k), want), 0u);
    EXPECT_EQ(tessera_emu::leftoverCopies(), 0u);
    EXPECT_EQ(tessera_emu::unfencedWgmmas(), 0u);
  });
}

size_t nans(const std::vector<float> &v) {
  size_t n = 0;
  for (float x : v)
    n += std::isnan(x);
  return n;
}

/// Reading a stage without waiting (here the last tile: a wait missing
/// earlier also shifts the parities of the later waits, which then pass a
/// phase early and deadlock the producer, as below) reads it before its
/// load completed: poison (NaN), or the stage's older tile when the
/// producer has not issued the load yet; either way S is wrong.
TEST(EmulatorHopper, ARingReadWithoutItsWaitIsWrong) {
  Tensor q, k;
  ringInputs(q, k);
  const std::vector<double> want = ringReference(q, k);
  underSeeds([&] {
    const std::vector<float> got = runRing(Ring::NoWait, q, k);
    EXPECT_GT(mismatches(got, want), 0u) << nans(got) << " NaN";
  });
}

/// Consumers waiting with the other parity pass their first waits at once
/// (poison), release the stages early, and run two phases ahead of the
/// producer's wait on a free stage, which then never completes: with seed 0
/// (threads in index order, consumers first) a deadlock, reported.
TEST(EmulatorHopperDeathTest, ARingWaitedWithTheWrongParity) {
  Tensor q, k;
  ringInputs(q, k);
  EXPECT_DEATH(
      {
        tessera_emu::setScheduleSeed(0);
        runRing(Ring::WrongParity, q, k);
      },
      "deadlock in block \\(0, 0, 0\\).* 159 finished the block, 1 at an "
      "mbarrier wait(.|\n)*128 of 128 arrivals pending");
}

/// Tiles loaded with 128B swizzle read through 64B-swizzle descriptors:
/// finite, wrong products.
TEST(EmulatorHopper, ARingWithTheWrongSwizzleInTheDescriptor) {
  Tensor q, k;
  ringInputs(q, k);
  const std::vector<double> want = ringReference(q, k);
  underSeeds([&] {
    const std::vector<float> got = runRing(Ring::WrongSwizzle, q, k);
    EXPECT_EQ(nans(got), 0u);
    EXPECT_GT(mismatches(got, want), got.size() / 2);
  });
}

/// A producer that refills a stage once it is full (waiting on the stage's
/// full barrier, not on the consumers' release) overwrites a tile before
/// it is read: poison or the next tile's keys. A race: with seed 0 the
/// consumers (lower thread indices) always read a tile before the producer
/// resumes from its wait, and the result is right; the other seeds run
/// the producer ahead.
TEST(EmulatorHopper, ARingProducerThatDoesNotWaitForTheRelease) {
  Tensor q, k;
  ringInputs(q, k);
  const std::vector<double> want = ringReference(q, k);
  underSeeds(
      [&] {
        const std::vector<float> got = runRing(Ring::Reuse, q, k);
        EXPECT_GT(mismatches(got, want), 0u) << nans(got) << " NaN";
      },
      {1, 7, 12345, 99});
}

/// expect_tx of more bytes than arrive: the phase never completes; the
/// consumers and the producer wait for ever, reported as a deadlock.
TEST(EmulatorHopperDeathTest, ARingWhosePhaseNeverCompletes) {
  Tensor q, k;
  ringInputs(q, k);
  EXPECT_DEATH(runRing(Ring::ExpectTooMuch, q, k),
               "deadlock in block \\(0, 0, 0\\).* 31 finished the block, 129 "
               "at an mbarrier wait(.|\n)*tx-count 16");
}

} // namespace
