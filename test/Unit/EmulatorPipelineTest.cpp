//===- EmulatorPipelineTest.cpp - the emulator's pipeline intrinsics -----===//
//
// The pieces a FlashAttention-2-style main loop is built from, each on its
// own, with small hand-written kernels: ldmatrix and ldmatrix.trans against
// the PTX ISA's fragment table (written here apart from the emulator's
// lookup), cp.async's deferred completion (poison until the covering
// wait_group, zero fill that reads nothing, copies left pending), the error
// bound and special values of ex2.approx, __syncthreads_or, and the
// shared-memory bank counter with wavefront counts worked out by hand. Then
// the scheduling of a block's threads (fibers): a missing barrier shows
// under every seed, the seed fixes the order, a warp runs ahead to its next
// wait, and threads waiting at different barriers are reported, not hung.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <sys/mman.h>
#include <unistd.h>

namespace {

using tessera_emu::bankCounts;
using tessera_emu::BankCounts;

/// The 16-bit element of matrix j at (row, col): distinct for every
/// element of the four matrices.
uint16_t element(int j, int row, int col) {
  return uint16_t(0x1000 + j * 64 + row * 8 + col);
}

/// Fragments of ldmatrix.x4 (or .trans) of four 8x8 matrices whose rows lie
/// scattered in shared memory; fragments[lane][j].
template <bool Trans> std::vector<std::array<uint32_t, 4>> loadFragments() {
  // Row r of matrix j sits in 16-byte slot (8 j + r) * 5 % 32: a
  // permutation, so consecutive rows are not contiguous (ldmatrix takes an
  // address per row).
  alignas(16) static uint16_t smem[32][8];
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c)
        smem[(8 * j + r) * 5 % 32][c] = element(j, r, c);
  std::vector<std::array<uint32_t, 4>> got(32);
  tessera_emu::launch(
      [&] {
        int lane = int(threadIdx.x);
        uint32_t r[4];
        // Row lane % 8 of matrix lane / 8.
        const void *row = smem[lane * 5 % 32];
        if (Trans)
          tessera_emu::ldmatrixX4Trans(r, row);
        else
          tessera_emu::ldmatrixX4(r, row);
        for (int j = 0; j < 4; ++j)
          got[lane][j] = r[j];
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  return got;
}

TEST(EmulatorPipeline, LdmatrixFragmentsMatchThePtxTable) {
  auto got = loadFragments<false>();
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j) {
      // Lane l: row l / 4, columns 2 (l % 4) (low half) and 2 (l % 4) + 1.
      int row = lane / 4, col = 2 * (lane % 4);
      uint32_t want = element(j, row, col) | uint32_t(element(j, row, col + 1))
                                                 << 16;
      EXPECT_EQ(got[lane][j], want) << "lane " << lane << " matrix " << j;
    }
}

TEST(EmulatorPipeline, LdmatrixTransFragmentsMatchThePtxTable) {
  auto got = loadFragments<true>();
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j) {
      // The same layout of the transposed matrix T[a][b] = M[b][a].
      int row = lane / 4, col = 2 * (lane % 4);
      uint32_t want = element(j, col, row) | uint32_t(element(j, col + 1, row))
                                                 << 16;
      EXPECT_EQ(got[lane][j], want) << "lane " << lane << " matrix " << j;
    }
}

TEST(EmulatorPipelineDeathTest, LdmatrixRejectsAMisalignedRow) {
  alignas(16) static uint16_t smem[40][8];
  EXPECT_DEATH(tessera_emu::launch(
                   [&] {
                     uint32_t r[4];
                     tessera_emu::ldmatrixX4(
                         r, &smem[threadIdx.x][threadIdx.x == 5 ? 4 : 0]);
                   },
                   dim3{1, 1, 1}, dim3{32, 1, 1}),
               "not 16-byte aligned");
}

/// Whether the 16 bytes at p are all poison (0xff).
bool poisoned(const void *p) {
  const auto *b = static_cast<const unsigned char *>(p);
  for (int i = 0; i < 16; ++i)
    if (b[i] != 0xff)
      return false;
  return true;
}

/// A 16-byte chunk of global data that says which lane and copy it is.
struct alignas(16) Chunk {
  uint32_t w[4];
};
Chunk chunkFor(int lane, int copy) {
  return Chunk{{uint32_t(lane), uint32_t(copy), 0x12345678u, 0x9abcdef0u}};
}
bool holds(const void *p, int lane, int copy) {
  Chunk want = chunkFor(lane, copy);
  return std::memcmp(p, &want, 16) == 0;
}

/// What one lane saw at the steps of a pipeline kernel: step -> per copy,
/// 'P' poison, 'D' its data, '?' anything else.
using Seen = std::vector<std::string>;

std::string look(const Chunk *slots, int lane, int copies) {
  std::string s;
  for (int c = 0; c < copies; ++c)
    s += poisoned(&slots[c]) ? 'P' : holds(&slots[c], lane, c) ? 'D' : '?';
  return s;
}

TEST(EmulatorPipeline, CopiesLandAtTheCoveringWait) {
  constexpr int Copies = 4;
  static Chunk global[32][Copies];
  for (int l = 0; l < 32; ++l)
    for (int c = 0; c < Copies; ++c)
      global[l][c] = chunkFor(l, c);
  std::vector<Seen> seen(32);
  tessera_emu::resetLeftoverCopies();
  tessera_emu::launch(
      [&] {
        __shared__ Chunk smem[32][Copies];
        int lane = int(threadIdx.x);
        Seen &s = seen[lane];
        for (int c = 0; c < Copies; ++c)
          smem[lane][c] = Chunk{{1, 2, 3, 4}}; // stale data from before
        // Groups: {copy 0}, {copy 1}, {} (an empty commit), {copy 2}.
        tessera_emu::cpAsync16(&smem[lane][0], &global[lane][0], 16);
        s.push_back(look(smem[lane], lane, 1)); // issued, nothing waited
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsync16(&smem[lane][1], &global[lane][1], 16);
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsync16(&smem[lane][2], &global[lane][2], 16);
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsync16(&smem[lane][3], &global[lane][3], 16);
        // Copy 3 is not committed yet. wait_group 3 leaves the newest three
        // groups pending: only copy 0 lands.
        tessera_emu::cpAsyncWait(3);
        s.push_back(look(smem[lane], lane, Copies));
        // wait_group 1: everything but {copy 2}; the empty group counts as
        // a group, so copy 1 lands.
        tessera_emu::cpAsyncWait(1);
        s.push_back(look(smem[lane], lane, Copies));
        // wait_group 0 completes the committed groups, not copy 3.
        tessera_emu::cpAsyncWait(0);
        s.push_back(look(smem[lane], lane, Copies));
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsyncWait(0);
        s.push_back(look(smem[lane], lane, Copies));
        // Another lane's data is visible after its wait and a barrier.
        __syncthreads();
        s.push_back(look(smem[lane ^ 1], lane ^ 1, Copies));
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  Seen want = {"P", "DPPP", "DDPP", "DDDP", "DDDD", "DDDD"};
  for (int l = 0; l < 32; ++l)
    EXPECT_EQ(seen[l], want) << "lane " << l;
  EXPECT_EQ(tessera_emu::leftoverCopies(), 0u);
}

TEST(EmulatorPipeline, WaitGroupLeavesTheNewestGroupsPending) {
  constexpr int Groups = 5;
  static Chunk global[32][Groups];
  for (int l = 0; l < 32; ++l)
    for (int c = 0; c < Groups; ++c)
      global[l][c] = chunkFor(l, c);
  std::vector<Seen> seen(32);
  tessera_emu::launch(
      [&] {
        __shared__ Chunk smem[32][Groups];
        int lane = int(threadIdx.x);
        for (int g = 0; g < Groups; ++g) {
          tessera_emu::cpAsync16(&smem[lane][g], &global[lane][g], 16);
          tessera_emu::cpAsyncCommit();
        }
        for (int n = Groups; n >= 0; --n) {
          tessera_emu::cpAsyncWait(n);
          seen[lane].push_back(look(smem[lane], lane, Groups));
        }
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  Seen want = {"PPPPP", "DPPPP", "DDPPP", "DDDPP", "DDDDP", "DDDDD"};
  for (int l = 0; l < 32; ++l)
    EXPECT_EQ(seen[l], want) << "lane " << l;
}

/// srcBytes 0 zero-fills and never reads the source: here it points into a
/// page that may not be read at all (a read would kill the test).
TEST(EmulatorPipeline, ZeroFillReadsNothing) {
  long page = sysconf(_SC_PAGESIZE);
  void *guard = mmap(nullptr, size_t(page), PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(guard, MAP_FAILED);
  std::vector<Seen> seen(32);
  tessera_emu::launch(
      [&] {
        __shared__ Chunk smem[32];
        int lane = int(threadIdx.x);
        smem[lane] = Chunk{{1, 2, 3, 4}};
        tessera_emu::cpAsync16(&smem[lane],
                               static_cast<char *>(guard) + 16 * lane, 0);
        tessera_emu::cpAsyncCommit();
        seen[lane].push_back(poisoned(&smem[lane]) ? "P" : "?");
        tessera_emu::cpAsyncWait(0);
        Chunk zero{};
        seen[lane].push_back(std::memcmp(&smem[lane], &zero, 16) == 0 ? "0"
                                                                      : "?");
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  munmap(guard, size_t(page));
  for (int l = 0; l < 32; ++l)
    EXPECT_EQ(seen[l], (Seen{"P", "0"})) << "lane " << l;
}

/// Copies a thread leaves pending at the end of a block are counted, and
/// they land, so the next block (and the host) sees the data.
TEST(EmulatorPipeline, LeftoverCopiesAreCountedAndLanded) {
  static Chunk global[64];
  for (int l = 0; l < 64; ++l)
    global[l] = chunkFor(l, 7);
  static Chunk smem[2][128]; // one row per block
  tessera_emu::resetLeftoverCopies();
  tessera_emu::launch(
      [&] {
        int t = int(threadIdx.x), b = int(blockIdx.x);
        // Threads below 16: one committed copy never waited for; the
        // rest: two, one committed, one not even committed.
        tessera_emu::cpAsync16(&smem[b][t], &global[t], 16);
        tessera_emu::cpAsyncCommit();
        if (t >= 16)
          tessera_emu::cpAsync16(&smem[b][64 + t], &global[t], 16);
      },
      dim3{2, 1, 1}, dim3{64, 1, 1});
  // Per block 16 + 48 * 2 copies; two blocks.
  EXPECT_EQ(tessera_emu::leftoverCopies(), 2u * (16 + 48 * 2));
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t) {
      EXPECT_TRUE(holds(&smem[b][t], t, 7)) << b << " " << t;
      if (t >= 16) {
        EXPECT_TRUE(holds(&smem[b][64 + t], t, 7)) << b << " " << t;
      }
    }

  // A kernel that waits leaves nothing.
  tessera_emu::resetLeftoverCopies();
  tessera_emu::launch(
      [&] {
        int t = int(threadIdx.x);
        tessera_emu::cpAsync16(&smem[0][t], &global[t], 16);
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsyncWait(0);
      },
      dim3{2, 1, 1}, dim3{64, 1, 1});
  EXPECT_EQ(tessera_emu::leftoverCopies(), 0u);
}

uint32_t bitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

/// ex2Approx stays within the PTX ISA's 2 ulp of the correctly rounded
/// 2^x, and uses that error (so tests passing here tolerate the hardware).
TEST(EmulatorPipeline, Ex2ApproxErrorBound) {
  int64_t worstUp = 0, worstDown = 0;
  int checked = 0;
  // -126 .. 128 in an odd step, and every integer.
  std::vector<float> xs;
  for (double x = -126.0; x < 128.0; x += 1.0 / 64 + 1.0 / 4099)
    xs.push_back(float(x));
  for (int i = -126; i < 128; ++i)
    xs.push_back(float(i));
  for (float xf : xs) {
    float exact = float(std::exp2(static_cast<long double>(xf)));
    if (exact < std::numeric_limits<float>::min() || std::isinf(exact))
      continue;
    float got = tessera_emu::ex2Approx(xf);
    ASSERT_TRUE(std::isfinite(got) && got > 0) << xf;
    int64_t d = int64_t(bitsOf(got)) - int64_t(bitsOf(exact));
    ASSERT_LE(std::abs(d), 2)
        << "x = " << xf << " got " << got << " want " << exact;
    worstUp = std::max(worstUp, d);
    worstDown = std::min(worstDown, d);
    ++checked;
  }
  EXPECT_GT(checked, 15000);
  // The deliberate error: 2 ulp both ways.
  EXPECT_EQ(worstUp, 2);
  EXPECT_EQ(worstDown, -2);
}

TEST(EmulatorPipeline, Ex2ApproxSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  using tessera_emu::ex2Approx;
  EXPECT_EQ(bitsOf(ex2Approx(-inf)), bitsOf(0.0f)); // +0, not -0
  EXPECT_EQ(ex2Approx(inf), inf);
  EXPECT_TRUE(std::isnan(ex2Approx(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(ex2Approx(0.0f), 1.0f);
  EXPECT_EQ(ex2Approx(-0.0f), 1.0f);
  // ftz: a subnormal input is a zero; a subnormal result is +0.
  EXPECT_EQ(ex2Approx(std::numeric_limits<float>::denorm_min()), 1.0f);
  EXPECT_EQ(ex2Approx(-std::numeric_limits<float>::denorm_min()), 1.0f);
  EXPECT_EQ(bitsOf(ex2Approx(-127.5f)), bitsOf(0.0f));
  EXPECT_EQ(bitsOf(ex2Approx(-140.0f)), bitsOf(0.0f));
  EXPECT_EQ(bitsOf(ex2Approx(-1000.0f)), bitsOf(0.0f));
  // 2^-126 is the smallest normal: stays normal (not flushed, not moved
  // below it).
  EXPECT_GE(ex2Approx(-126.0f), std::numeric_limits<float>::min());
  // Overflow.
  EXPECT_EQ(ex2Approx(128.0f), inf);
  EXPECT_EQ(ex2Approx(1000.0f), inf);
  EXPECT_LE(ex2Approx(127.99999f), std::numeric_limits<float>::max());
}

TEST(EmulatorPipeline, SyncthreadsOr) {
  // Round k: only thread preds[k] (or none, -1) has a nonzero predicate;
  // more rounds than the emulator's three flags, over two blocks.
  const int preds[] = {-1, 0, 63, -1, -1, 17, 32, -1, 5, -1};
  constexpr int Rounds = sizeof(preds) / sizeof(preds[0]);
  std::vector<int> got(2 * 64 * Rounds, -7);
  tessera_emu::launch(
      [&] {
        int t = int(threadIdx.x), b = int(blockIdx.x);
        for (int k = 0; k < Rounds; ++k)
          got[(b * 64 + t) * Rounds + k] =
              __syncthreads_or(t == preds[k] ? 42 : 0) != 0;
      },
      dim3{2, 1, 1}, dim3{64, 1, 1});
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t)
      for (int k = 0; k < Rounds; ++k)
        EXPECT_EQ(got[(b * 64 + t) * Rounds + k], preds[k] >= 0 ? 1 : 0)
            << "block " << b << " thread " << t << " round " << k;
}

/// A warp reads a 64-row tile of 128-byte rows (64 f16 columns) with
/// ldmatrix.x4: matrix m (of 64) covers rows 8 (m / 8) .. + 7 and the
/// 16-byte chunk m % 8. With `swizzle`, logical chunk c of row r is stored
/// at chunk c ^ (r % 8). Returns the counts; checks the fragments.
BankCounts readTile(bool swizzle) {
  alignas(128) static uint16_t tile[64][64];
  auto value = [](int r, int c) { return uint16_t(r * 64 + c); };
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 64; ++c) {
      int chunk = c / 8, stored = swizzle ? chunk ^ (r % 8) : chunk;
      tile[r][stored * 8 + c % 8] = value(r, c);
    }
  std::atomic<int> wrong{0};
  tessera_emu::resetBankCounts();
  tessera_emu::launch(
      [&] {
        int lane = int(threadIdx.x);
        for (int q = 0; q < 16; ++q) {
          int m = 4 * q + lane / 8, row = 8 * (m / 8) + lane % 8;
          int chunk = m % 8, stored = swizzle ? chunk ^ (row % 8) : chunk;
          uint32_t r[4];
          tessera_emu::ldmatrixX4(r, &tile[row][stored * 8]);
          for (int j = 0; j < 4; ++j) {
            int mj = 4 * q + j;
            int fr = 8 * (mj / 8) + lane / 4,
                fc = 8 * (mj % 8) + 2 * (lane % 4);
            uint32_t want = value(fr, fc) | uint32_t(value(fr, fc + 1)) << 16;
            if (r[j] != want)
              wrong.fetch_add(1);
          }
        }
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  EXPECT_EQ(wrong.load(), 0);
  return bankCounts(tessera_emu::BankLdmatrix);
}

TEST(EmulatorPipeline, LdmatrixBankConflicts) {
  // Unswizzled: the 8 rows of a matrix are 128 bytes apart, so each of a
  // row's 4 words sits in the same bank in all 8 rows: 8 distinct words a
  // bank, 8 wavefronts per matrix; 64 matrices.
  BankCounts plain = readTile(false);
  EXPECT_EQ(plain.requests, 64u);
  EXPECT_EQ(plain.wavefronts, 64u * 8);
  EXPECT_EQ(plain.ideal, 64u);
  // Swizzled: the 8 rows use the 8 different chunks, so the 32 words fall
  // in 32 different banks: 1 wavefront per matrix.
  BankCounts swizzled = readTile(true);
  EXPECT_EQ(swizzled.requests, 64u);
  EXPECT_EQ(swizzled.wavefronts, 64u);
  EXPECT_EQ(swizzled.ideal, 64u);
  // ldmatrix requests are not counted as cp.async ones.
  EXPECT_EQ(bankCounts(tessera_emu::BankCpAsync).requests, 0u);

  // Rows that repeat one address are one read (a broadcast): matrix j's 8
  // lanes all give row 0 of chunk j: 1 wavefront each.
  alignas(128) static uint16_t rows[8][64];
  tessera_emu::resetBankCounts();
  tessera_emu::launch(
      [&] {
        uint32_t r[4];
        tessera_emu::ldmatrixX4(r, &rows[0][8 * (threadIdx.x / 8)]);
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  BankCounts same = bankCounts(tessera_emu::BankLdmatrix);
  EXPECT_EQ(same.requests, 4u);
  EXPECT_EQ(same.wavefronts, 4u);
}

/// Two warps each copy to a tile of 32 128-byte rows with two cp.async a
/// lane; `dst(lane, k)` gives the 16-byte chunk index in the warp's tile.
template <typename Dst> BankCounts copyTile(Dst dst) {
  alignas(128) static Chunk tile[2][256];
  alignas(16) static Chunk global[64];
  tessera_emu::resetBankCounts();
  tessera_emu::launch(
      [&] {
        int t = int(threadIdx.x), w = t / 32, lane = t % 32;
        for (int k = 0; k < 2; ++k)
          tessera_emu::cpAsync16(&tile[w][dst(lane, k)], &global[lane], 16);
        tessera_emu::cpAsyncCommit();
        tessera_emu::cpAsyncWait(0);
      },
      dim3{3, 1, 1}, dim3{64, 1, 1});
  return bankCounts(tessera_emu::BankCpAsync);
}

TEST(EmulatorPipeline, CpAsyncBankConflicts) {
  // 3 blocks x 2 warps x 2 copies a lane: 12 requests of 4 phases.
  // Row-major: lanes 8p .. 8p + 7 fill one 128-byte row: 1 wavefront a
  // phase.
  BankCounts rows = copyTile([](int lane, int k) { return 32 * k + lane; });
  EXPECT_EQ(rows.requests, 12u);
  EXPECT_EQ(rows.wavefronts, 12u * 4);
  EXPECT_EQ(rows.ideal, 12u * 4);
  // Column-wise: lane l writes chunk k of row l (rows are 8 chunks): the 8
  // lanes of a phase hit the same 4 banks, 8 wavefronts a phase.
  BankCounts cols = copyTile([](int lane, int k) { return 8 * lane + k; });
  EXPECT_EQ(cols.requests, 12u);
  EXPECT_EQ(cols.wavefronts, 12u * 4 * 8);
  EXPECT_EQ(cols.ideal, 12u * 4);
  // The same columns swizzled (chunk ^ row % 8): conflict-free again.
  BankCounts swizzled =
      copyTile([](int lane, int k) { return 8 * lane + (k ^ lane % 8); });
  EXPECT_EQ(swizzled.wavefronts, 12u * 4);
  EXPECT_EQ(bankCounts(tessera_emu::BankLdmatrix).requests, 0u);
}

//===----------------------------------------------------------------------===//
// Scheduling: the fibers of a block, their order, deadlocks
//===----------------------------------------------------------------------===//

/// Sets the scheduling seed for a scope.
struct SeedScope {
  uint64_t saved = tessera_emu::scheduleSeed();
  explicit SeedScope(uint64_t seed) { tessera_emu::setScheduleSeed(seed); }
  ~SeedScope() { tessera_emu::setScheduleSeed(saved); }
};

/// Two warps each write their cells, then read the other warp's: without a
/// barrier between, some reads come before the write they need under every
/// seed (a thread runs until it waits, so the first one to run reads cells
/// nobody else has written yet); with the barrier, none do. Three blocks,
/// each writing its own tag over the previous block's data.
TEST(EmulatorSchedule, AMissingBarrierShowsUnderEverySeed) {
  for (uint64_t seed : {0, 1, 2, 3, 4, 5, 6, 7, 1234567}) {
    SeedScope scope(seed);
    for (bool barrier : {false, true}) {
      int stale = 0;
      tessera_emu::launch(
          [&] {
            __shared__ int cell[64];
            int t = int(threadIdx.x), tag = int(blockIdx.x) + 1;
            cell[t] = tag;
            if (barrier)
              __syncthreads();
            stale += cell[t ^ 32] != tag;
          },
          dim3{3, 1, 1}, dim3{64, 1, 1});
      if (barrier)
        EXPECT_EQ(stale, 0) << "seed " << seed;
      else
        EXPECT_GE(stale, 3) << "seed " << seed; // at least one a block
    }
  }
}

/// The order in which threads pass the code between two barriers: the same
/// for the same seed, another for another seed, thread order for seed 0,
/// and a new order after every barrier.
std::vector<int> passOrder(uint64_t seed) {
  SeedScope scope(seed);
  std::vector<int> order;
  tessera_emu::launch(
      [&] {
        for (int round = 0; round < 3; ++round) {
          order.push_back(int(threadIdx.x));
          __syncthreads();
        }
      },
      dim3{2, 1, 1}, dim3{64, 1, 1});
  return order;
}

TEST(EmulatorSchedule, TheSeedFixesTheOrder) {
  std::vector<int> zero = passOrder(0);
  ASSERT_EQ(zero.size(), 2u * 3 * 64);
  for (size_t i = 0; i < zero.size(); ++i)
    EXPECT_EQ(zero[i], int(i % 64)) << i;
  std::vector<int> a = passOrder(7);
  EXPECT_EQ(a, passOrder(7));
  EXPECT_NE(a, passOrder(8));
  ASSERT_EQ(a.size(), zero.size());
  // Every round is a permutation of the 64 threads, and not always the same.
  bool differ = false;
  for (size_t r = 0; r < 6; ++r) {
    std::vector<int> round(a.begin() + 64 * r, a.begin() + 64 * (r + 1));
    differ |= r > 0 && !std::equal(round.begin(), round.end(), a.begin());
    std::sort(round.begin(), round.end());
    for (int i = 0; i < 64; ++i)
      EXPECT_EQ(round[i], i) << "round " << r;
  }
  EXPECT_TRUE(differ);
}

/// A warp collective completes when its last lane arrives, and the warp
/// runs on to its next wait before a warp later in the order starts: with
/// seed 0 (lowest thread first), warp 0 does all its shuffles before warp 1
/// does any.
TEST(EmulatorSchedule, AWarpRunsAheadToItsNextWait) {
  SeedScope scope(0);
  std::vector<int> shufflesOfWarp1SeenByWarp0(32, -1);
  tessera_emu::launch(
      [&] {
        __shared__ int done[2];
        int t = int(threadIdx.x), w = t / 32;
        if (t < 2)
          done[t] = 0;
        __syncthreads();
        float v = float(t);
        for (int i = 0; i < 4; ++i) {
          v = __shfl_xor_sync(0xffffffffu, v, 1);
          if (t % 32 == 0)
            ++done[w];
        }
        if (w == 0)
          shufflesOfWarp1SeenByWarp0[t] = done[1];
      },
      dim3{1, 1, 1}, dim3{64, 1, 1});
  for (int l = 0; l < 32; ++l)
    EXPECT_EQ(shufflesOfWarp1SeenByWarp0[l], 0) << l;
}

/// Threads waiting at different barriers are reported at once (and abort)
/// instead of hanging: a lane that skips a shuffle, ...
TEST(EmulatorScheduleDeathTest, ALaneSkippingACollective) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     if (threadIdx.x != 5)
                       (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
                   },
                   dim3{1, 1, 1}, dim3{32, 1, 1}),
               "deadlock in block \\(0, 0, 0\\).* 0 at __syncthreads, 0 at "
               "__syncthreads_or, 31 at a warp collective, 1 finished");
}

/// ... a barrier that some threads pass once more than others (in the
/// second block), ...
TEST(EmulatorScheduleDeathTest, ABarrierInABranch) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     __syncthreads();
                     if (blockIdx.x == 1 && threadIdx.x < 32)
                       __syncthreads();
                   },
                   dim3{2, 1, 1}, dim3{64, 1, 1}),
               "deadlock in block \\(1, 0, 0\\).* 32 at __syncthreads, 0 at "
               "__syncthreads_or, 0 at a warp collective, 32 finished");
}

/// ... __syncthreads meeting __syncthreads_or, ...
TEST(EmulatorScheduleDeathTest, SyncthreadsMeetingSyncthreadsOr) {
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     if (threadIdx.x == 3)
                       (void)__syncthreads_or(1);
                     else
                       __syncthreads();
                   },
                   dim3{1, 1, 1}, dim3{64, 1, 1}),
               "deadlock.* 63 at __syncthreads, 1 at __syncthreads_or");
}

/// ... lanes of a warp at different collectives, ...
TEST(EmulatorScheduleDeathTest, LanesAtDifferentCollectives) {
  alignas(16) static uint16_t rows[32][8];
  EXPECT_DEATH(tessera_emu::launch(
                   [] {
                     uint32_t r[4];
                     if (threadIdx.x == 9)
                       (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
                     else
                       tessera_emu::ldmatrixX4(r, rows[threadIdx.x]);
                   },
                   dim3{1, 1, 1}, dim3{32, 1, 1}),
               "lanes of warp 0 at different warp collectives \\(ldmatrix "
               "and shfl.sync\\)");
}

/// ... and a collective in a warp of fewer than 32 threads.
TEST(EmulatorScheduleDeathTest, ACollectiveInAPartialWarp) {
  EXPECT_DEATH(
      tessera_emu::launch([] { (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1); },
                          dim3{1, 1, 1}, dim3{48, 1, 1}),
      "a warp collective in a warp of 16 threads");
}

} // namespace
