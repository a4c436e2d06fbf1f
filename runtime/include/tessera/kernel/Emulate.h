//===- Emulate.h - run a bundle's CUDA kernels on the host, for tests -*- C++ -*-===//
//
// Include this, then a bundle's bundle.cu (inside a namespace of its own), to
// compile the emitted CUDA source with the host C++ compiler: the few device
// features the kernels use come from here. Host-only, for tests; the kernel
// source stays one source (FlashForward.cuh selects these intrinsics under
// TESSERA_EMULATE instead of its inline PTX).
//
// What is modelled:
// * A launch runs the grid block by block; the block's threads are real,
//   concurrent threads (std::thread), so a missing __syncthreads can show.
//   __syncthreads is a barrier of the block's threads; __syncthreads_or(p)
//   is one that also returns nonzero everywhere when any thread's p is.
//   __shared__ variables are statics (one block runs at a time, so the
//   block's threads share them, and the next block finds the previous one's
//   data, as on a GPU).
// * Warp collectives (__shfl_xor_sync, mma.sync, ldmatrix) exchange values
//   through a per-warp buffer with a barrier of the warp's 32 threads.
// * mma.sync.m16n8k16 (.row.col, f16 or bf16 in, f32 accumulators) follows
//   the PTX ISA's fragment layouts; the f32 -> f16x2 / bf16x2 conversions
//   (cvt.rn) round to nearest even.
// * ldmatrix.sync.aligned.m8n8.x4{,.trans}.shared.b16 (ldmatrixX4,
//   ldmatrixX4Trans) per the PTX ISA's fragment table; a row address that is
//   not 16-byte aligned aborts.
// * cp.async.cg.shared.global 16 with src-size 0 or 16 (cpAsync16), commit
//   groups (cpAsyncCommit) and cp.async.wait_group n (cpAsyncWait), with
//   deferred completion: at issue the 16 destination bytes become poison
//   (0xff bytes: a NaN in f16 and bf16) and the data lands only when a wait
//   of the issuing thread covers its group, so a read before the covering
//   wait (or, for another thread, before the barrier after it) sees NaN.
//   The source is read at issue (src-size 0: never). Copies still pending
//   when a thread finishes a block are a kernel bug: they are counted
//   (leftoverCopies()) and landed, so the next block starts sane.
// * ex2.approx.ftz.f32 (ex2Approx) with the full error the PTX ISA allows,
//   so that a test passing here tolerates the real instruction.
// * Shared-memory bank conflicts of ldmatrix and cp.async, per warp
//   (bankCounts(kind), resetBankCounts()): a request's wavefronts are, for
//   each 8-lane phase (16 bytes a lane), the largest number of distinct
//   4-byte words that one bank ((address / 4) % 32) serves, summed over the
//   phases; ideal is the number of phases. Kinds: BankLdmatrix (each 8x8
//   matrix of an ldmatrix is one request of 8 rows of 16 bytes, ideal 1)
//   and BankCpAsync (the k-th cp.async of every lane of a warp in a block is
//   one request, ideal 4 for 32 lanes; evaluated when the block ends, so
//   the counts are complete when launch() returns). Counters are global
//   atomics: reset them, launch, read them.
//
// What this cannot show: timing, the real scheduling of warps beyond the
// barriers, memory-model effects (every access here is coherent at once; a
// cp.async's data lands at the wait, never earlier or later), bank
// conflicts of ordinary loads and stores, the exact ex2.approx values (only
// their error bound), and register or shared-memory limits.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_EMULATE_H
#define TESSERA_KERNEL_EMULATE_H

#include "tessera/cpu/Half.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#define TESSERA_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define TESSERA_EXTERN_C static

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return uint4{x, y, z, w};
}
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __fdividef(float a, float b) { return a / b; }
using std::exp2f;
using std::fmaxf;
using std::log2f;

namespace tessera_emu {

/// A reusable barrier of `count` threads. Waiting threads yield the CPU
/// until the last one arrives (the threads outnumber the cores many times
/// over: sleeping on a futex costs more). A wait longer than a minute means
/// a deadlock (threads of a block waiting at different barriers): abort.
class Barrier {
public:
  explicit Barrier(int count) : count(count) {}
  void wait() {
    long gen = generation.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == count) {
      arrived.store(0, std::memory_order_relaxed);
      generation.store(gen + 1, std::memory_order_release);
      return;
    }
    auto start = std::chrono::steady_clock::now();
    for (unsigned spins = 0;
         generation.load(std::memory_order_acquire) == gen; ++spins) {
      std::this_thread::yield();
      if ((spins & 0xffff) == 0xffff &&
          std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
        std::fprintf(stderr, "tessera emulator: a barrier waited 60 s "
                             "(threads of a block at different barriers)\n");
        std::abort();
      }
    }
  }

private:
  const int count;
  std::atomic<int> arrived{0};
  std::atomic<long> generation{0};
};

/// Values a warp exchanges in one collective: up to 10 words per lane,
/// double-buffered so that one barrier per collective suffices (a lane
/// writes a buffer again only after everyone passed the next barrier, hence
/// finished reading it). copyLog holds each lane's cp.async destinations of
/// a finished block, double-buffered by block parity for the same reason:
/// lane 0 evaluates block n's logs between the block-end barriers n and
/// n + 1, and a lane writes that buffer again only at the end of block
/// n + 2.
struct Warp {
  Warp() : barrier(32) {}
  Barrier barrier;
  uint32_t words[2][32][10];
  std::vector<uintptr_t> copyLog[2][32];
};

struct Block {
  explicit Block(int threads)
      : barrier(threads), warps((threads + 31) / 32) {}
  Barrier barrier;
  std::vector<Warp> warps;
  /// __syncthreads_or's flags, one per call in rotation (see there).
  std::atomic<int> orFlags[3] = {0, 0, 0};
};

/// One cp.async in flight: where its 16 bytes go and what they are.
struct AsyncCopy {
  unsigned char *dst;
  unsigned char bytes[16];
};

struct Thread {
  dim3 threadIdx, blockIdx;
  unsigned linear = 0; // the thread's index in its block
  Block *block = nullptr;
  int phase = 0;
  unsigned orCalls = 0; // __syncthreads_or calls so far
  /// cp.async copies issued since the last commit, the committed groups
  /// (oldest first), and this block's destinations for the bank counter.
  std::vector<AsyncCopy> openCopies;
  std::deque<std::vector<AsyncCopy>> copyGroups;
  std::vector<uintptr_t> copyDsts;
  unsigned lane() const { return linear % 32; }
  Warp &warp() { return block->warps[linear / 32]; }
};

inline thread_local Thread *self = nullptr;
inline dim3 launchBlockDim, launchGridDim;

//===----------------------------------------------------------------------===//
// Shared-memory bank counter
//===----------------------------------------------------------------------===//

/// The kinds of shared-memory request bankCounts() reports.
enum BankKind : int {
  BankLdmatrix = 0, ///< one 8x8 matrix of an ldmatrix: 8 rows of 16 bytes
  BankCpAsync = 1,  ///< the k-th cp.async of each lane of a warp
  NumBankKinds = 2
};

struct BankCounts {
  uint64_t requests = 0, wavefronts = 0, ideal = 0;
};

inline std::atomic<uint64_t> bankCounters[NumBankKinds][3];
inline std::atomic<uint64_t> leftoverCopyCount{0};

/// The counts of `kind` (a BankKind) since the last reset.
inline BankCounts bankCounts(int kind) {
  BankCounts c;
  c.requests = bankCounters[kind][0].load();
  c.wavefronts = bankCounters[kind][1].load();
  c.ideal = bankCounters[kind][2].load();
  return c;
}

inline void resetBankCounts() {
  for (auto &kind : bankCounters)
    for (std::atomic<uint64_t> &c : kind)
      c.store(0);
}

/// cp.async copies that were still pending (never covered by a wait, or
/// never committed) when their thread finished a block, since the last reset.
inline uint64_t leftoverCopies() { return leftoverCopyCount.load(); }
inline void resetLeftoverCopies() { leftoverCopyCount.store(0); }

/// Wavefronts of one phase of a request: lanes access 16 bytes each at
/// `addrs`; a bank serves one 4-byte word per wavefront, and lanes reading
/// the same word share it (broadcast), so the phase takes as many
/// wavefronts as the busiest bank has distinct words.
inline unsigned phaseWavefronts(const uintptr_t *addrs, int lanes) {
  uintptr_t words[32];
  int distinct = 0;
  for (int l = 0; l < lanes; ++l)
    for (uintptr_t w = addrs[l] / 4; w < addrs[l] / 4 + 4; ++w) {
      bool seen = false;
      for (int i = 0; i < distinct && !seen; ++i)
        seen = words[i] == w;
      if (!seen)
        words[distinct++] = w;
    }
  unsigned perBank[32] = {}, most = 0;
  for (int i = 0; i < distinct; ++i)
    most = std::max(most, ++perBank[words[i] % 32]);
  return most;
}

/// Counts one request of up to 32 lanes' 16-byte accesses (null: the lane
/// takes no part), split into 8-lane phases.
inline void countRequest(int kind, const uintptr_t (&addrs)[32]) {
  uint64_t wavefronts = 0, ideal = 0;
  for (int phase = 0; phase < 4; ++phase) {
    uintptr_t active[8];
    int n = 0;
    for (int l = 8 * phase; l < 8 * phase + 8; ++l)
      if (addrs[l])
        active[n++] = addrs[l];
    if (n == 0)
      continue;
    wavefronts += phaseWavefronts(active, n);
    ++ideal;
  }
  if (ideal == 0)
    return;
  bankCounters[kind][0].fetch_add(1, std::memory_order_relaxed);
  bankCounters[kind][1].fetch_add(wavefronts, std::memory_order_relaxed);
  bankCounters[kind][2].fetch_add(ideal, std::memory_order_relaxed);
}

/// The cp.async requests of a warp's finished block: the k-th destination
/// of every lane forms request k.
inline void countCopyRequests(Warp &w, int parity) {
  size_t most = 0;
  for (const std::vector<uintptr_t> &log : w.copyLog[parity])
    most = std::max(most, log.size());
  for (size_t k = 0; k < most; ++k) {
    uintptr_t addrs[32] = {};
    for (int l = 0; l < 32; ++l)
      if (k < w.copyLog[parity][l].size())
        addrs[l] = w.copyLog[parity][l][k];
    countRequest(BankCpAsync, addrs);
  }
  for (std::vector<uintptr_t> &log : w.copyLog[parity])
    log.clear();
}

/// The end of a block for one thread: lands (and counts) the copies it left
/// pending and hands its cp.async destinations to its warp's log.
inline void finishBlock(Thread &t, int parity) {
  uint64_t left = t.openCopies.size();
  for (const std::vector<AsyncCopy> &g : t.copyGroups)
    left += g.size();
  if (left) {
    leftoverCopyCount.fetch_add(left, std::memory_order_relaxed);
    for (const std::vector<AsyncCopy> &g : t.copyGroups)
      for (const AsyncCopy &c : g)
        std::memcpy(c.dst, c.bytes, 16);
    for (const AsyncCopy &c : t.openCopies)
      std::memcpy(c.dst, c.bytes, 16);
  }
  t.copyGroups.clear();
  t.openCopies.clear();
  t.warp().copyLog[parity][t.lane()].swap(t.copyDsts);
  t.copyDsts.clear();
}

/// Runs `kernel` on every block of `grid` in order, with block.x threads.
inline void launch(const std::function<void()> &kernel, dim3 grid,
                   dim3 block) {
  int n = int(block.x * block.y * block.z);
  Block b(n);
  launchBlockDim = block;
  launchGridDim = grid;
  std::vector<Thread> threads(n);
  std::vector<std::thread> pool;
  for (int t = 0; t < n; ++t)
    pool.emplace_back([&, t] {
      Thread &me = threads[t];
      me.threadIdx = dim3{unsigned(t) % block.x,
                          unsigned(t) / block.x % block.y,
                          unsigned(t) / (block.x * block.y)};
      me.linear = unsigned(t);
      me.block = &b;
      self = &me;
      int parity = 0;
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            me.blockIdx = dim3{x, y, z};
            kernel();
            finishBlock(me, parity);
            b.barrier.wait(); // the next block reuses the shared statics
            if (me.lane() == 0)
              countCopyRequests(me.warp(), parity);
            parity ^= 1;
          }
      self = nullptr;
    });
  for (std::thread &t : pool)
    t.join();
}

/// One warp collective: publishes this lane's words, waits for the warp,
/// returns the buffer holding every lane's words.
inline uint32_t (*exchange(const uint32_t *mine, int n))[10] {
  Thread &t = *self;
  Warp &w = t.warp();
  std::memcpy(w.words[t.phase][t.lane()], mine, n * sizeof(uint32_t));
  w.barrier.wait();
  uint32_t(*all)[10] = w.words[t.phase];
  t.phase ^= 1;
  return all;
}

inline float shflXor(float v, int laneMask) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t(*all)[10] = exchange(&bits, 1);
  float r;
  std::memcpy(&r, &all[self->lane() ^ unsigned(laneMask)][0], 4);
  return r;
}

/// cvt.rn.{f16x2,bf16x2}.f32: `hi` to the upper half, `lo` to the lower.
template <int E> inline uint32_t packHalf2(float lo, float hi) {
  using namespace tessera::cpu;
  uint16_t l = E == 0 ? floatToF16(lo) : floatToBf16(lo);
  uint16_t h = E == 0 ? floatToF16(hi) : floatToBf16(hi);
  return uint32_t(l) | (uint32_t(h) << 16);
}

template <int E> inline float halfToFloat(uint16_t h) {
  return E == 0 ? tessera::cpu::f16ToFloat(h) : tessera::cpu::bf16ToFloat(h);
}

/// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32:
/// D = A B + C for the warp, each lane holding its fragments (PTX ISA,
/// "Matrix Fragments for mma.m16n8k16 with floating point type"), with
/// g = lane / 4 and t = lane % 4:
///   A 16 x 16 (row): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1],
///                    a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9];
///   B 16 x 8 (col):  b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g];
///   C, D 16 x 8:     c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1];
/// the lower 16 bits of a register hold the element with the lower index.
template <int E>
inline void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                     uint32_t b1) {
  uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  uint32_t(*all)[10] = exchange(mine, 6);
  auto half = [](uint32_t w, int upper) {
    return halfToFloat<E>(uint16_t(upper ? w >> 16 : w & 0xffffu));
  };
  // A[r][k] is in lane 4 (r mod 8) + (k mod 8) / 2, register a0 (r < 8,
  // k < 8), a1 (r >= 8, k < 8), a2 (r < 8, k >= 8) or a3, half k mod 2.
  auto A = [&](int r, int k) {
    int reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    return half(all[4 * (r % 8) + (k % 8) / 2][reg], k % 2);
  };
  // B[k][n] is in lane 4 n + (k mod 8) / 2, register b0 (k < 8) or b1.
  auto B = [&](int k, int n) {
    return half(all[4 * n + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  int g = int(self->lane()) / 4, t = int(self->lane()) % 4;
  for (int i = 0; i < 4; ++i) {
    int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float sum = c[i];
    for (int k = 0; k < 16; ++k)
      sum += A(row, k) * B(k, col);
    c[i] = sum;
  }
}

[[noreturn]] inline void fail(const char *what, const void *address) {
  std::fprintf(stderr, "tessera emulator: %s (address %p)\n", what, address);
  std::abort();
}

/// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 for the warp: lane i
/// supplies the address of row i % 8 of matrix i / 8 (16 bytes, 16-byte
/// aligned); r[j] receives this lane's fragment of matrix j. PTX ISA,
/// "Warp-level matrix load instruction: ldmatrix" (the fragment layout for
/// one 8x8 matrix with 16-bit elements): lane l holds row l / 4, elements
/// 2 (l % 4) and 2 (l % 4) + 1, the lower index in the lower 16 bits.
/// .trans loads the matrix "in column-major format": the 16 bytes at row
/// address i are column i, so lane l gets elements l / 4 of the rows at
/// addresses 2 (l % 4) and 2 (l % 4) + 1.
template <bool Trans>
inline void ldmatrixX4Impl(uint32_t (&r)[4], const void *smemRow) {
  auto address = reinterpret_cast<uintptr_t>(smemRow);
  if (address % 16)
    fail("ldmatrix row address not 16-byte aligned", smemRow);
  uint32_t mine[2] = {uint32_t(address), uint32_t(uint64_t(address) >> 32)};
  uint32_t(*all)[10] = exchange(mine, 2);
  auto rowOf = [&](int lane) {
    return reinterpret_cast<const unsigned char *>(
        uintptr_t(uint64_t(all[lane][0]) | uint64_t(all[lane][1]) << 32));
  };
  auto element = [&](int lane, int index) {
    uint16_t e;
    std::memcpy(&e, rowOf(lane) + 2 * index, 2);
    return uint32_t(e);
  };
  int l = int(self->lane()), g = l / 4, t = l % 4;
  for (int j = 0; j < 4; ++j) {
    uint32_t lo, hi;
    if (Trans) {
      lo = element(8 * j + 2 * t, g);
      hi = element(8 * j + 2 * t + 1, g);
    } else {
      lo = element(8 * j + g, 2 * t);
      hi = element(8 * j + g, 2 * t + 1);
    }
    r[j] = lo | hi << 16;
  }
  if (l == 0)
    for (int j = 0; j < 4; ++j) {
      uintptr_t addrs[32] = {};
      for (int i = 0; i < 8; ++i)
        addrs[i] = uintptr_t(rowOf(8 * j + i));
      countRequest(BankLdmatrix, addrs);
    }
}

inline void ldmatrixX4(uint32_t (&r)[4], const void *smemRow) {
  ldmatrixX4Impl<false>(r, smemRow);
}
inline void ldmatrixX4Trans(uint32_t (&r)[4], const void *smemRow) {
  ldmatrixX4Impl<true>(r, smemRow);
}

/// cp.async.cg.shared.global [dst], [src], 16, srcBytes (0 or 16; 0 fills
/// the 16 bytes with zeros and reads nothing). The destination turns to
/// poison now; the bytes land at the cpAsyncWait that covers the copy's
/// group. Both addresses must be 16-byte aligned (the copy size).
inline void cpAsync16(void *smemDst, const void *gmemSrc, int srcBytes) {
  Thread &t = *self;
  if (srcBytes != 0 && srcBytes != 16)
    fail("cp.async src-size other than 0 or 16", gmemSrc);
  auto *dst = static_cast<unsigned char *>(smemDst);
  if (reinterpret_cast<uintptr_t>(dst) % 16)
    fail("cp.async destination not 16-byte aligned", smemDst);
  AsyncCopy c;
  c.dst = dst;
  if (srcBytes == 16) {
    if (reinterpret_cast<uintptr_t>(gmemSrc) % 16)
      fail("cp.async source not 16-byte aligned", gmemSrc);
    std::memcpy(c.bytes, gmemSrc, 16);
  } else {
    std::memset(c.bytes, 0, 16);
  }
  std::memset(dst, 0xff, 16);
  t.openCopies.push_back(c);
  t.copyDsts.push_back(reinterpret_cast<uintptr_t>(dst));
}

/// cp.async.commit_group: the copies issued since the last commit (maybe
/// none) form the newest group.
inline void cpAsyncCommit() {
  Thread &t = *self;
  t.copyGroups.emplace_back();
  t.copyGroups.back().swap(t.openCopies);
}

/// cp.async.wait_group n: lands every committed group but the newest n.
/// Copies not yet committed stay pending, as in PTX.
inline void cpAsyncWait(int n) {
  Thread &t = *self;
  while (t.copyGroups.size() > size_t(std::max(n, 0))) {
    for (const AsyncCopy &c : t.copyGroups.front())
      std::memcpy(c.dst, c.bytes, 16);
    t.copyGroups.pop_front();
  }
}

/// ex2.approx.ftz.f32. PTX ISA, "Floating Point Instructions: ex2": "The
/// maximum ulp error is 2 ulp from correctly rounded result across the full
/// range of inputs"; -Inf -> +0.0, +-0.0 -> +1.0, +Inf -> +Inf, NaN -> NaN;
/// .ftz flushes subnormal inputs and results to sign-preserving zero. The
/// emulation takes the correctly rounded 2^x and moves it by that whole
/// error, 2 ulp up or down as a hash of x decides, so that a kernel whose
/// tests pass here tolerates any result the instruction may give. The
/// documented +1.0 for a zero input (also a flushed subnormal one) is kept
/// exact, and a result is kept a normal number (never moved to a subnormal,
/// to zero or past the largest float).
inline float ex2Approx(float x) {
  uint32_t xb;
  std::memcpy(&xb, &x, 4);
  if (std::isnan(x))
    return x;
  if ((xb & 0x7f800000u) == 0)
    return 1.0f; // +-0 and subnormals (flushed to +-0)
  if (std::isinf(x))
    return x > 0 ? x : 0.0f;
  float y = float(std::exp2(double(x))); // correctly rounded, bar ties
  if (std::isinf(y))
    return y;
  if (y < std::numeric_limits<float>::min())
    return 0.0f; // a subnormal result flushes to +0
  uint32_t yb;
  std::memcpy(&yb, &y, 4);
  bool up = ((xb * 0x9e3779b1u) >> 31) != 0;
  int64_t moved = int64_t(yb) + (up ? 2 : -2);
  moved = std::min<int64_t>(std::max<int64_t>(moved, 0x00800000), 0x7f7fffff);
  yb = uint32_t(moved);
  std::memcpy(&y, &yb, 4);
  return y;
}

/// Kernels of the bundles compiled in, by "bundle/kernel" name: the body one
/// thread runs, given a pointer to the kernel's AttnParams and the layer
/// position; run it with launch().
using KernelFn = std::function<void(const void *params, int layer)>;
inline std::map<std::string, KernelFn> &registry() {
  static std::map<std::string, KernelFn> r;
  return r;
}
struct Registration {
  Registration(const std::string &name, KernelFn fn) {
    registry()[name] = std::move(fn);
  }
};

} // namespace tessera_emu

#define threadIdx (::tessera_emu::self->threadIdx)
#define blockIdx (::tessera_emu::self->blockIdx)
#define blockDim (::tessera_emu::launchBlockDim)
#define gridDim (::tessera_emu::launchGridDim)

inline void __syncthreads() { ::tessera_emu::self->block->barrier.wait(); }
/// A barrier that returns nonzero in every thread when any thread's `pred`
/// is nonzero. Call k uses flag k % 3: it is set before the barrier and read
/// after it; flag (k + 2) % 3, last read in call k - 1 (before this
/// barrier), is cleared after it, and is set again only in call k + 2, after
/// every thread has passed the barrier of call k + 1 and so cleared it.
inline int __syncthreads_or(int pred) {
  ::tessera_emu::Thread &t = *::tessera_emu::self;
  std::atomic<int> *flags = t.block->orFlags;
  unsigned k = t.orCalls++;
  if (pred)
    flags[k % 3].store(1, std::memory_order_relaxed);
  t.block->barrier.wait();
  int any = flags[k % 3].load(std::memory_order_relaxed);
  flags[(k + 2) % 3].store(0, std::memory_order_relaxed);
  return any;
}
inline float __shfl_xor_sync(unsigned, float v, int laneMask) {
  return ::tessera_emu::shflXor(v, laneMask);
}

#ifndef TESSERA_EMU_BUNDLE
#define TESSERA_EMU_BUNDLE "bundle"
#endif

/// Written by the emitter at the end of a bundle (under TESSERA_EMULATE):
/// registers a kernel as TESSERA_EMU_BUNDLE "/" name.
#define TESSERA_EMU_KERNEL(name)                                               \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int layer) {                                      \
        tessera::kernel::AttnParams p;                                         \
        std::memcpy(&p, params, sizeof p);                                     \
        name(p, layer);                                                        \
      });

/// The same for the kernels of dynamic groups, which take (AttnParams,
/// DynArgs): `params` points at a DynLaunch.
#define TESSERA_EMU_DYN_KERNEL(name)                                           \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int) {                                            \
        tessera::kernel::AttnParams p;                                         \
        tessera::kernel::DynArgs a;                                            \
        std::memcpy(&p, params, sizeof p);                                     \
        std::memcpy(&a, static_cast<const char *>(params) + sizeof p,         \
                    sizeof a);                                                 \
        name(p, a);                                                            \
      });

#endif // TESSERA_KERNEL_EMULATE_H
