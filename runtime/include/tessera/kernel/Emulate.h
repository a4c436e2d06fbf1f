//===- Emulate.h - run a bundle's CUDA kernels on the host, for tests -*- C++ -*-===//
//
// Include this, then a bundle's bundle.cu (inside a namespace of its own), to
// compile the emitted CUDA source with the host C++ compiler: the few device
// features the kernels use come from here. Host-only, for tests; the kernel
// source stays one source (FlashForward.cuh selects these intrinsics under
// TESSERA_EMULATE instead of its inline PTX).
//
// What is modelled:
// * A launch runs the grid block by block on the calling thread. A block's
//   threads are fibers (a stack each): one runs at a time, until it waits
//   at __syncthreads, __syncthreads_or, a warp collective or the end of the
//   block; then the ready thread first in the scheduling order runs. The
//   order is drawn from a seed (scheduleSeed(); TESSERA_EMU_SEED) at the
//   start of every block and at every __syncthreads, so that a warp runs
//   ahead of the others to its next barrier: a missing __syncthreads or
//   cp.async wait shows as stale data or poison in the reader, the same for
//   the same seed on every run. Seed 0: lowest thread index first.
//   __syncthreads is a barrier of the block's threads; __syncthreads_or(p)
//   is one that also returns nonzero everywhere when any thread's p is.
//   Threads waiting at different barriers (a warp collective that some lane
//   skips, __syncthreads in a branch, threads that finished the block while
//   others wait at __syncthreads, __syncthreads meeting __syncthreads_or)
//   are a deadlock: reported at once, with where the threads wait, and the
//   process aborts. __shared__ variables are statics (one block runs at a
//   time, so the block's threads share them, and the next block finds the
//   previous one's data, as on a GPU); blocks cannot run in parallel for
//   the same reason.
// * Warp collectives (__shfl_xor_sync, mma.sync, ldmatrix) exchange values
//   through a per-warp buffer: every lane publishes its words and waits;
//   the last lane to arrive computes what is computed once for the warp
//   (the product of mma.sync) and releases the warp. Lanes at different
//   collectives, or a collective in a warp of fewer than 32 threads, abort.
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
//   when the block ends are a kernel bug: they are counted
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
// barriers (only the orders the seed draws), memory-model effects (every
// access here is coherent at once; a cp.async's data lands at the wait,
// never earlier or later), races between two barriers that need threads to
// interleave finer than between their waits, bank conflicts of ordinary
// loads and stores, the exact ex2.approx values (only their error bound),
// and register or shared-memory limits.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_EMULATE_H
#define TESSERA_KERNEL_EMULATE_H

#include "tessera/cpu/Half.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

// The fibers switch stacks by a few instructions on x86-64 (see
// fiber::switchStack); elsewhere, with a shadow stack (-fcf-protection=return
// or full), or with TESSERA_EMU_UCONTEXT defined, by POSIX swapcontext.
#if defined(__x86_64__) && !defined(TESSERA_EMU_UCONTEXT) &&                   \
    !(defined(__CET__) && (__CET__ & 2))
#define TESSERA_EMU_STACK_SWITCH 1
#else
#define TESSERA_EMU_STACK_SWITCH 0
#include <ucontext.h>
#endif

// Sanitizers must be told about every stack switch.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TESSERA_EMU_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define TESSERA_EMU_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TESSERA_EMU_ASAN)
#define TESSERA_EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TESSERA_EMU_TSAN)
#define TESSERA_EMU_TSAN 1
#endif
#ifdef TESSERA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef TESSERA_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

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

//===----------------------------------------------------------------------===//
// Fibers: the emulated threads of a block on the launching OS thread
//===----------------------------------------------------------------------===//

namespace fiber {

/// Stack bytes of one emulated thread, below a guard page; committed by the
/// kernel as touched, so mostly never.
constexpr size_t kStackBytes = size_t(1) << 20;

/// Where a suspended fiber (or the launching thread) resumes.
struct Context {
#if TESSERA_EMU_STACK_SWITCH
  void *sp = nullptr; ///< its saved registers are at the top of its stack
#else
  ucontext_t uc;
#endif
  /// The stack, for the sanitizers (the launching thread's is learnt at the
  /// first switch away from it).
  const void *stackBottom = nullptr;
  size_t stackSize = 0;
  void *tsanFiber = nullptr;
};

#if TESSERA_EMU_STACK_SWITCH
/// Saves the registers the System V x86-64 ABI has a callee preserve (rbx,
/// rbp, r12-r15, the control bits of MXCSR and of the x87 control word) on
/// the current stack, stores the stack pointer in *from (rdi), loads `to`
/// (rsi), restores the registers saved there and returns into that context.
/// swapcontext does the same plus a sigprocmask system call, which costs
/// more than the emulated work between two switches.
__attribute__((naked, noinline)) inline void switchStack(void ** /*from*/,
                                                         void * /*to*/) {
  __asm__("pushq %rbp\n\t"
          "pushq %rbx\n\t"
          "pushq %r12\n\t"
          "pushq %r13\n\t"
          "pushq %r14\n\t"
          "pushq %r15\n\t"
          "subq $8, %rsp\n\t"
          "stmxcsr (%rsp)\n\t"
          "fnstcw 4(%rsp)\n\t"
          "movq %rsp, (%rdi)\n\t"
          "movq %rsi, %rsp\n\t"
          "ldmxcsr (%rsp)\n\t"
          "fldcw 4(%rsp)\n\t"
          "addq $8, %rsp\n\t"
          "popq %r15\n\t"
          "popq %r14\n\t"
          "popq %r13\n\t"
          "popq %r12\n\t"
          "popq %rbx\n\t"
          "popq %rbp\n\t"
          "ret\n\t");
}
#endif

/// The context we are switching away from, for the sanitizer bookkeeping
/// of the one we switch to.
inline thread_local Context *switchedFrom = nullptr;

/// Completes a switch on the stack switched to (ASan's half of it).
inline void arrived(void *fakeStack) {
#ifdef TESSERA_EMU_ASAN
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(fakeStack, &bottom, &size);
  if (switchedFrom && !switchedFrom->stackBottom) {
    switchedFrom->stackBottom = bottom;
    switchedFrom->stackSize = size;
  }
#else
  (void)fakeStack;
#endif
}

/// Suspends the running context into `from` and resumes `to`. `leaving`:
/// `from` is never resumed.
inline void jump(Context &from, Context &to, bool leaving) {
  switchedFrom = &from;
#ifdef TESSERA_EMU_ASAN
  void *fakeStack = nullptr;
  __sanitizer_start_switch_fiber(leaving ? nullptr : &fakeStack, to.stackBottom,
                                 to.stackSize);
#else
  (void)leaving;
  void *fakeStack = nullptr;
#endif
#ifdef TESSERA_EMU_TSAN
  __tsan_switch_to_fiber(to.tsanFiber, 0); // 0: a happens-before edge
#endif
#if TESSERA_EMU_STACK_SWITCH
  switchStack(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
  arrived(fakeStack);
}

/// Stacks for the fibers, kept by the launching thread from one launch to
/// the next (a stack's touched pages stay committed; mapping anew per launch
/// would fault them in again).
struct StackPool {
  std::vector<unsigned char *> stacks; ///< usable bottom, above the guard
  size_t page = size_t(sysconf(_SC_PAGESIZE));
  unsigned char *get(size_t i) {
    while (stacks.size() <= i) {
      void *m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "tessera emulator: no memory for a stack\n");
        std::abort();
      }
      mprotect(m, page, PROT_NONE); // an overflow faults, never corrupts
      stacks.push_back(static_cast<unsigned char *>(m) + page);
    }
    return stacks[i];
  }
  ~StackPool() {
    for (unsigned char *s : stacks)
      munmap(s - page, kStackBytes + page);
  }
};
inline thread_local StackPool stackPool;

/// Prepares `c` to run `entry` on the stack [bottom, bottom + kStackBytes)
/// at its first resumption; `entry` must never return.
inline void create(Context &c, unsigned char *bottom, void (*entry)()) {
  c.stackBottom = bottom;
  c.stackSize = kStackBytes;
#ifdef TESSERA_EMU_ASAN
  // A stack used before may keep the redzones of frames abandoned there.
  __asan_unpoison_memory_region(bottom, kStackBytes);
#endif
#if TESSERA_EMU_STACK_SWITCH
  // The frame switchStack pops: the control words, six registers, and the
  // return address `entry`; above it a null return address for `entry`,
  // whose stack pointer is then 8 below a multiple of 16, as after a call.
  auto *sp = reinterpret_cast<uint64_t *>(bottom + kStackBytes);
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i)
    *--sp = 0;
  uint32_t mxcsr;
  uint16_t x87;
  __asm__("stmxcsr %0" : "=m"(mxcsr));
  __asm__("fnstcw %0" : "=m"(x87));
  *--sp = uint64_t(mxcsr) | uint64_t(x87) << 32;
  c.sp = sp;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = bottom;
  c.uc.uc_stack.ss_size = kStackBytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
#endif
#ifdef TESSERA_EMU_TSAN
  c.tsanFiber = __tsan_create_fiber(0);
#endif
}

} // namespace fiber

/// One cp.async in flight: where its 16 bytes go and what they are.
struct AsyncCopy {
  unsigned char *dst;
  unsigned char bytes[16];
};

/// What an emulated thread waits for, if anything.
enum class Wait : uint8_t {
  None,     ///< ready or running
  Sync,     ///< __syncthreads
  SyncOr,   ///< __syncthreads_or
  Warp,     ///< a warp collective (shfl, mma, ldmatrix)
  BlockEnd, ///< finished the block
};

struct Thread {
  dim3 threadIdx, blockIdx;
  unsigned linear = 0; // the thread's index in its block
  int phase = 0;       // which of its warp's exchange buffers it uses next
  /// cp.async copies issued since the last commit, the committed groups
  /// (oldest first), and this block's destinations for the bank counter.
  std::vector<AsyncCopy> openCopies;
  std::deque<std::vector<AsyncCopy>> copyGroups;
  std::vector<uintptr_t> copyDsts;
  Wait wait = Wait::None;
  unsigned rank = 0; // its place in the scheduling order (0 runs first)
  fiber::Context context;
  unsigned lane() const { return linear % 32; }
};

/// Values a warp exchanges in one collective: up to 10 words per lane,
/// double-buffered (by Thread::phase). Lanes read a collective's buffer
/// between their release and their next collective; a lane writes that
/// buffer again on arriving at the collective after next, which it reaches
/// only once every lane has arrived at the next one, hence finished
/// reading.
struct Warp {
  uint32_t words[2][32][10];
  int lanes = 32;  // threads in the warp (fewer in a partial last warp)
  int arrived = 0; // lanes waiting at the current collective
  const char *kind = nullptr; // which collective they wait at
};

/// The state of one launch: the block's threads as fibers, one block at a
/// time, and what they wait for.
struct Launch {
  const std::function<void()> *kernel = nullptr;
  dim3 grid, block;
  int threads = 0;
  uint64_t blocks = 0, blockNumber = 0; // x fastest, then y, then z
  std::vector<Thread> thread;
  std::vector<Warp> warps;
  fiber::Context host; // the launching thread
  int atSync = 0, atSyncOr = 0, atEnd = 0;
  int orPending = 0, orResult = 0; // __syncthreads_or of the current barrier
  /// byRank[r]: the thread of rank r; ready: bit r set when that thread can
  /// run (and is not running).
  std::vector<unsigned> byRank;
  std::vector<uint64_t> ready;
  uint64_t rng = 0;
};

inline thread_local Thread *self = nullptr;
inline thread_local Launch *running = nullptr;
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
/// wavefronts as the busiest bank has distinct words. The 16 bytes at a
/// 16-byte aligned address are one word in each bank of the group of 4
/// (address / 16) % 8, so then that is the most distinct addresses in one
/// group.
inline unsigned phaseWavefronts(const uintptr_t *addrs, int lanes) {
  bool aligned = true;
  for (int l = 0; l < lanes; ++l)
    aligned &= addrs[l] % 16 == 0;
  if (aligned) {
    unsigned perGroup[8] = {}, most = 0;
    for (int l = 0; l < lanes; ++l) {
      bool seen = false;
      for (int i = 0; i < l && !seen; ++i)
        seen = addrs[i] == addrs[l];
      if (!seen)
        most = std::max(most, ++perGroup[addrs[l] / 16 % 8]);
    }
    return most;
  }
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

//===----------------------------------------------------------------------===//
// Scheduling
//===----------------------------------------------------------------------===//

inline uint64_t &scheduleSeedSlot() {
  static uint64_t seed = [] {
    const char *s = std::getenv("TESSERA_EMU_SEED");
    return s ? uint64_t(std::strtoull(s, nullptr, 0)) : uint64_t(1);
  }();
  return seed;
}

/// The seed of the order in which ready threads run (see launch()): 0 runs
/// them lowest linear index first; any other value draws a pseudo-random
/// order from it at the start of every block and at every __syncthreads.
/// The same seed gives the same interleaving, hence the same results. The
/// default is 1, or TESSERA_EMU_SEED from the environment (read once).
inline uint64_t scheduleSeed() { return scheduleSeedSlot(); }
inline void setScheduleSeed(uint64_t seed) { scheduleSeedSlot() = seed; }

/// splitmix64: a small generator whose every seed gives a good sequence.
inline uint64_t nextRandom(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Draws the scheduling order and makes every thread ready (at the start of
/// a block and when a block barrier releases: every thread waits there).
inline void releaseAll(Launch &l) {
  for (int i = 0; i < l.threads; ++i)
    l.byRank[i] = unsigned(i);
  if (scheduleSeed() != 0)
    for (int i = l.threads - 1; i > 0; --i)
      std::swap(l.byRank[i], l.byRank[nextRandom(l.rng) % uint64_t(i + 1)]);
  for (int r = 0; r < l.threads; ++r) {
    Thread &t = l.thread[l.byRank[r]];
    t.rank = unsigned(r);
    t.wait = Wait::None;
  }
  std::fill(l.ready.begin(), l.ready.end(), 0);
  for (int r = 0; r < l.threads; ++r)
    l.ready[r / 64] |= uint64_t(1) << (r % 64);
}

inline void makeReady(Launch &l, Thread &t) {
  t.wait = Wait::None;
  l.ready[t.rank / 64] |= uint64_t(1) << (t.rank % 64);
}

/// The ready thread of the lowest rank (no longer marked ready: it runs
/// next), or null.
inline Thread *takeNext(Launch &l) {
  for (size_t w = 0; w < l.ready.size(); ++w)
    if (uint64_t bits = l.ready[w]) {
      int bit = __builtin_ctzll(bits);
      l.ready[w] = bits & (bits - 1);
      return &l.thread[l.byRank[w * 64 + size_t(bit)]];
    }
  return nullptr;
}

/// No thread can run, yet some wait: the threads of the block wait at
/// different barriers (or finished the block while others wait at a
/// barrier). On a GPU the block would hang or go wrong; here it is reported.
[[noreturn]] inline void deadlock(Launch &l) {
  int sync = 0, syncOr = 0, warp = 0, end = 0;
  for (const Thread &t : l.thread) {
    sync += t.wait == Wait::Sync;
    syncOr += t.wait == Wait::SyncOr;
    warp += t.wait == Wait::Warp;
    end += t.wait == Wait::BlockEnd;
  }
  const dim3 b = l.thread[0].blockIdx;
  std::fprintf(stderr,
               "tessera emulator: deadlock in block (%u, %u, %u): threads "
               "at different barriers: %d at __syncthreads, %d at "
               "__syncthreads_or, %d at a warp collective, %d finished the "
               "block\n",
               b.x, b.y, b.z, sync, syncOr, warp, end);
  for (size_t w = 0; w < l.warps.size(); ++w)
    if (l.warps[w].arrived)
      std::fprintf(stderr, "  warp %zu: %d of %d lanes at a collective\n", w,
                   l.warps[w].arrived, l.warps[w].lanes);
  std::abort();
}

/// The running thread `me` waits (or has just been released): runs the
/// next ready thread, which may be `me` itself. `leaving`: `me` is never
/// resumed (it finished the last block).
inline void schedule(Launch &l, Thread &me, bool leaving = false) {
  Thread *next = takeNext(l);
  if (!next)
    deadlock(l);
  if (next == &me)
    return;
  self = next;
  fiber::jump(me.context, next->context, leaving);
}

/// The end of a block: lands (and counts) the copies each thread left
/// pending, and counts the block's cp.async requests: the k-th destination
/// of every lane of a warp forms request k.
inline void finishBlock(Launch &l) {
  for (Thread &t : l.thread) {
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
  }
  for (size_t w = 0; w < l.warps.size(); ++w) {
    Thread *lanes = &l.thread[32 * w];
    size_t most = 0;
    for (int i = 0; i < l.warps[w].lanes; ++i)
      most = std::max(most, lanes[i].copyDsts.size());
    for (size_t k = 0; k < most; ++k) {
      uintptr_t addrs[32] = {};
      for (int i = 0; i < l.warps[w].lanes; ++i)
        if (k < lanes[i].copyDsts.size())
          addrs[i] = lanes[i].copyDsts[k];
      countRequest(BankCpAsync, addrs);
    }
    for (int i = 0; i < l.warps[w].lanes; ++i)
      lanes[i].copyDsts.clear();
  }
}

/// Block number `n` of the grid (x fastest) begins: every thread ready.
inline void startBlock(Launch &l) {
  uint64_t n = l.blockNumber;
  dim3 idx{unsigned(n % l.grid.x), unsigned(n / l.grid.x % l.grid.y),
           unsigned(n / (uint64_t(l.grid.x) * l.grid.y))};
  for (Thread &t : l.thread) {
    t.blockIdx = idx;
    t.phase = 0;
  }
  l.atSync = l.atSyncOr = l.atEnd = 0;
  l.orPending = l.orResult = 0;
  releaseAll(l);
}

/// The running thread has finished its block. The last one to finish ends
/// the block and starts the next (or, after the last block, returns to the
/// launching thread); the others wait for that.
inline void endBlock(Launch &l, Thread &me) {
  const bool lastBlock = l.blockNumber + 1 == l.blocks;
  me.wait = Wait::BlockEnd;
  if (++l.atEnd == l.threads) {
    finishBlock(l);
    if (lastBlock) {
      self = nullptr;
      fiber::jump(me.context, l.host, /*leaving=*/true);
    }
    ++l.blockNumber;
    startBlock(l);
  }
  schedule(l, me, lastBlock);
}

/// Where every fiber starts: the kernel, block after block.
[[noreturn]] inline void fiberMain() {
  fiber::arrived(nullptr);
  for (;;) {
    (*running->kernel)();
    endBlock(*running, *self);
  }
}

/// Runs `kernel` on every block of `grid` in order (x fastest), with
/// block.x * block.y * block.z threads. The block's threads are fibers on
/// the calling thread: each runs until it waits (at __syncthreads,
/// __syncthreads_or, a warp collective, or the end of the block), then the
/// ready thread first in the scheduling order runs (see scheduleSeed()).
/// A block whose threads wait at different barriers aborts with a message.
inline void launch(const std::function<void()> &kernel, dim3 grid, dim3 block) {
  if (running) {
    std::fprintf(stderr, "tessera emulator: launch() inside a kernel\n");
    std::abort();
  }
  Launch l;
  l.kernel = &kernel;
  l.grid = grid;
  l.block = block;
  l.threads = int(block.x * block.y * block.z);
  l.blocks = uint64_t(grid.x) * grid.y * grid.z;
  launchBlockDim = block;
  launchGridDim = grid;
  if (l.threads == 0 || l.blocks == 0)
    return;
  l.thread.resize(size_t(l.threads));
  l.warps.resize(size_t((l.threads + 31) / 32));
  for (size_t w = 0; w < l.warps.size(); ++w)
    l.warps[w].lanes = std::min(32, l.threads - 32 * int(w));
  l.byRank.resize(size_t(l.threads));
  l.ready.resize(size_t((l.threads + 63) / 64));
  l.rng = scheduleSeed();
  for (int i = 0; i < l.threads; ++i) {
    Thread &t = l.thread[size_t(i)];
    t.linear = unsigned(i);
    t.threadIdx = dim3{unsigned(i) % block.x, unsigned(i) / block.x % block.y,
                       unsigned(i) / (block.x * block.y)};
    fiber::create(t.context, fiber::stackPool.get(size_t(i)), fiberMain);
  }
#ifdef TESSERA_EMU_TSAN
  l.host.tsanFiber = __tsan_get_current_fiber();
#endif
  running = &l;
  startBlock(l);
  Thread *first = takeNext(l);
  self = first;
  fiber::jump(l.host, first->context, /*leaving=*/false);
  running = nullptr;
  self = nullptr;
#ifdef TESSERA_EMU_TSAN
  for (Thread &t : l.thread)
    __tsan_destroy_fiber(t.context.tsanFiber);
#endif
}

/// One warp collective (`kind` names it): publishes this lane's words, waits
/// for the warp, returns the buffer holding every lane's words. `complete`,
/// if given, runs once on that buffer when the last lane arrives (before
/// any lane reads it), for work done once for the whole warp. Lanes at
/// different collectives abort: on a GPU the warp would hang or mix them.
inline uint32_t (*exchange(const char *kind, const uint32_t *mine, int n,
                           void (*complete)(uint32_t (*)[10]) = nullptr))[10] {
  Launch &l = *running;
  Thread &t = *self;
  Warp &w = l.warps[t.linear / 32];
  if (w.lanes != 32) {
    std::fprintf(stderr,
                 "tessera emulator: a warp collective in a warp of "
                 "%d threads (the block is not a multiple of 32)\n",
                 w.lanes);
    std::abort();
  }
  if (w.arrived == 0) {
    w.kind = kind;
  } else if (w.kind != kind && std::strcmp(w.kind, kind) != 0) {
    std::fprintf(stderr,
                 "tessera emulator: lanes of warp %u at different warp "
                 "collectives (%s and %s) in block (%u, %u, %u)\n",
                 t.linear / 32, w.kind, kind, t.blockIdx.x, t.blockIdx.y,
                 t.blockIdx.z);
    std::abort();
  }
  std::memcpy(w.words[t.phase][t.lane()], mine, size_t(n) * sizeof(uint32_t));
  t.wait = Wait::Warp;
  if (++w.arrived == 32) {
    w.arrived = 0;
    if (complete)
      complete(w.words[t.phase]);
    for (Thread *lane = &l.thread[t.linear - t.lane()], *e = lane + 32;
         lane != e; ++lane)
      makeReady(l, *lane);
  }
  schedule(l, t);
  uint32_t(*all)[10] = w.words[t.phase];
  t.phase ^= 1;
  return all;
}

/// __syncthreads (orBarrier false) and __syncthreads_or(pred) (true): waits
/// for every thread of the block; returns nonzero when any thread's `pred`
/// was (for __syncthreads_or). The result stays valid until this thread
/// arrives at the next barrier, the earliest the next one can release.
inline int blockBarrier(bool orBarrier, int pred) {
  Launch &l = *running;
  Thread &t = *self;
  t.wait = orBarrier ? Wait::SyncOr : Wait::Sync;
  ++(orBarrier ? l.atSyncOr : l.atSync);
  if (pred)
    l.orPending = 1;
  if (l.atSync + l.atSyncOr == l.threads) {
    if (l.atSync && l.atSyncOr)
      deadlock(l); // __syncthreads and __syncthreads_or meet: a wrong pair
    l.orResult = l.orPending;
    l.orPending = 0;
    l.atSync = l.atSyncOr = 0;
    releaseAll(l);
  }
  schedule(l, t);
  return l.orResult;
}

inline float shflXor(float v, int laneMask) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t(*all)[10] = exchange("shfl.sync", &bits, 1);
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

/// The whole warp's product, once, when its last lane has arrived: lane
/// l's words are its a0-a3, b0, b1 and c0-c3 (float bits); its d0-d3
/// replace words 0-3. Each element is c + sum over k of A B in this order,
/// in float, as one lane computing its own would.
template <int E> inline void mmaWarp(uint32_t (*all)[10]) {
  auto half = [](uint32_t w, int upper) {
    return halfToFloat<E>(uint16_t(upper ? w >> 16 : w & 0xffffu));
  };
  // A[r][k] is in lane 4 (r mod 8) + (k mod 8) / 2, register a0 (r < 8,
  // k < 8), a1 (r >= 8, k < 8), a2 (r < 8, k >= 8) or a3, half k mod 2.
  float A[16][16];
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k)
      A[r][k] = half(
          all[4 * (r % 8) + (k % 8) / 2][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)],
          k % 2);
  // B[k][n] is in lane 4 n + (k mod 8) / 2, register b0 (k < 8) or b1;
  // columns 0-3 and 4-7 of a row side by side.
  using F4 = float __attribute__((vector_size(16)));
  F4 B[16][2];
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n)
      B[k][n / 4][n % 4] =
          half(all[4 * n + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k % 2);
  // D[r][n] (C[r][n] before) is in lane 4 (r mod 8) + n / 2, register
  // (r >= 8 ? 2 : 0) + n mod 2. Each element accumulates over k in order
  // (d += a * b, as a lane would): the 8 columns of a row at once.
  for (int r = 0; r < 16; ++r) {
    F4 d[2];
    for (int n = 0; n < 8; ++n) {
      float x;
      std::memcpy(&x, &all[4 * (r % 8) + n / 2][6 + (r >= 8 ? 2 : 0) + n % 2],
                  4);
      d[n / 4][n % 4] = x;
    }
    for (int k = 0; k < 16; ++k) {
      const F4 a = {A[r][k], A[r][k], A[r][k], A[r][k]};
      d[0] += a * B[k][0];
      d[1] += a * B[k][1];
    }
    for (int n = 0; n < 8; ++n) {
      float x = d[n / 4][n % 4];
      std::memcpy(&all[4 * (r % 8) + n / 2][(r >= 8 ? 2 : 0) + n % 2], &x, 4);
    }
  }
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
  uint32_t mine[10] = {a[0], a[1], a[2], a[3], b0, b1};
  std::memcpy(&mine[6], c, sizeof c);
  uint32_t(*all)[10] =
      exchange(E == 0 ? "mma.sync f16" : "mma.sync bf16", mine, 10, mmaWarp<E>);
  std::memcpy(c, &all[self->lane()][0], sizeof c);
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
  uint32_t(*all)[10] = exchange(Trans ? "ldmatrix.trans" : "ldmatrix", mine, 2);
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

inline void __syncthreads() { ::tessera_emu::blockBarrier(false, 0); }
/// A barrier that returns nonzero in every thread when any thread's `pred`
/// is nonzero.
inline int __syncthreads_or(int pred) {
  return ::tessera_emu::blockBarrier(true, pred);
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
