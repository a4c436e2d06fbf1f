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
// * Warp collectives (__shfl_xor_sync, __any_sync, __syncwarp, mma.sync,
//   ldmatrix) exchange values through a per-warp buffer: every lane
//   publishes its words and waits; the last lane to arrive computes what is
//   computed once for the warp (the product of mma.sync) and releases the
//   warp. Lanes at different collectives, or a collective in a warp of
//   fewer than 32 threads, abort. atomicOr is a plain read-modify-write
//   (one thread runs at a time).
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
// * Hopper primitives (Hopper.cuh; sm_90a), each a call into this file:
//   - wgmma.mma_async (wgmmaSS, wgmmaRS: m64nNk16, f32 += f16 / bf16, both
//     operands K-major), wgmma.fence, commit_group and wait_group are
//     warpgroup collectives of threads 128 g .. 128 g + 127 (the last to
//     arrive computes; threads at different collectives, or a warpgroup the
//     block does not fill, abort; a warpgroup where some threads never come
//     is a deadlock). At issue the product is computed from the shared
//     memory (and A fragments) as they are then, each element c + sum over
//     k in order in f32 (the products of 16-bit inputs are exact), the
//     descriptors decoded per the PTX ISA (start, LBO, SBO; no swizzle and
//     the 32B, 64B and 128B swizzles by address; a nonzero base offset
//     aborts); the accumulators turn NaN and receive the product only at a
//     wgmma.wait_group of the thread that leaves its group complete (groups
//     from commit_group; wait n completes all but the newest n), so reading
//     them early sees NaN. A wgmma that accumulates into registers an
//     earlier one still in flight writes chains after it. Operands must be
//     equal across the warpgroup. A wgmma with no wgmma.fence since the
//     block began or the last wait_group is counted (unfencedWgmmas()),
//     not refused. Not modelled: a transposed A, other types and shapes.
//   - Descriptors address a 256 KiB shared window: __shared__ variables
//     are statics here, so smemDesc's address comes from sharedWindow(),
//     16 slots of 16 KiB each mapping a 16 KiB-aligned host block (assigned
//     at first use in a launch, next to a neighbouring block's slot where
//     free); more than 16 blocks in one launch abort.
//   - mbarriers (mbarInit, mbarArrive, mbarArriveExpectTx, mbarTryWait,
//     mbarWait) keep count, pending arrivals, tx-count and phase in a table
//     of the block by address (use before mbarInit in the block aborts). A
//     phase completes when no arrival and no transaction is pending;
//     try_wait.parity(p) is true iff the current phase's parity differs
//     from p. A wait that is not yet true suspends the thread (others run)
//     until the phase completes, so try_wait never returns false here; if
//     no thread can run, it is a deadlock, reported with each waited
//     barrier's state. More arrivals than the count in one phase abort.
//   - TMA (tmaLoad: cp.async.bulk.tensor.4d tile with complete_tx, on maps
//     from encodeTensorMapTiled, which checks the driver's rules and
//     returns CUDA_ERROR_INVALID_VALUE's code instead of aborting) reads the
//     box at issue (out-of-bound elements zero, or NaN without oobZero),
//     turns the destination to poison (0xff) and completes on its mbarrier
//     only when a thread waits there (or an arrival finds the phase waiting
//     for nothing else), then the bytes land in the map's swizzle and the
//     tx-count drops; loads never completed land when the block ends,
//     counted by leftoverCopies(). A missing wait reads poison; a stage
//     refilled too early is poison or the wrong tile.
//   - wgmmaRSTransB takes B MN-major (imm-trans-b 1; the layouts of
//     operandElement()); named barriers (bar.sync id, count: namedBarrier;
//     bar.arrive: namedBarrierArrive) release once `count` threads arrived,
//     count in deadlock reports, and a round left open when the block ends
//     is counted (leftoverArrivals()).
//   - fence.proxy.async and fence.mbarrier_init are accepted (no-ops:
//     every access here is coherent); setmaxnreg checks its count (a
//     multiple of 8 in [24, 256]) and that the whole warpgroup executes it.
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
#define __grid_constant__
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
  None,      ///< ready or running
  Sync,      ///< __syncthreads
  SyncOr,    ///< __syncthreads_or
  Warp,      ///< a warp collective (shfl, mma, ldmatrix)
  BlockEnd,  ///< finished the block
  Mbarrier,  ///< an mbarrier phase (mbarTryWait / mbarWait)
  WarpGroup, ///< a warpgroup collective (wgmma.*, setmaxnreg)
  Named,     ///< bar.sync id, count (namedBarrier)
};

/// A named barrier (bar.sync id, count): the count its current round
/// needs, and the threads waiting in it.
struct NamedBarrier {
  int count = 0;
  int arrived = 0;               // bar.arrive's threads of this round
  std::vector<unsigned> waiting; // linear thread indices
};

/// One wgmma.mma_async of a thread in flight: its accumulators and what
/// they receive when the wgmma's group completes (at a covering wait).
struct PendingMma {
  float *d;
  std::vector<float> value;
};

/// One TMA load in flight: the destination range (box bytes, 128-byte
/// aligned) and what it holds once the load completes, already swizzled.
struct TmaCopy {
  unsigned char *dst;
  std::vector<unsigned char> bytes;
};

/// The state of one mbarrier of the block (PTX ISA, "Parallel Synchronization
/// and Communication Instructions: mbarrier"): the expected arrival count,
/// the pending arrivals and the tx-count of the current phase, the number of
/// completed phases (its parity is what try_wait.parity compares), the TMA
/// loads that complete on it, and the threads waiting for its phase.
struct Mbarrier {
  uint32_t count = 0, pending = 0;
  int64_t tx = 0;
  uint32_t phase = 0;
  std::vector<TmaCopy> copies;
  std::vector<unsigned> waiters; // linear thread indices
};

/// A warpgroup collective in progress: which one, how many of the 128
/// threads arrived, and what each published (a pointer into its stack,
/// valid while it waits).
struct WarpGroup {
  int arrived = 0;
  const char *kind = nullptr;
  void *args[128] = {};
};

/// The emulated shared window that wgmma descriptors address (see
/// sharedWindow()): 16 slots of 16 KiB, each mapping one 16 KiB-aligned
/// block of host memory.
constexpr unsigned kWindowSlots = 16;
constexpr uintptr_t kWindowSlotBytes = 16384;

struct Thread {
  dim3 threadIdx, blockIdx;
  unsigned linear = 0; // the thread's index in its block
  int phase = 0;       // which of its warp's exchange buffers it uses next
  /// cp.async copies issued since the last commit, the committed groups
  /// (oldest first), and this block's destinations for the bank counter.
  std::vector<AsyncCopy> openCopies;
  std::deque<std::vector<AsyncCopy>> copyGroups;
  std::vector<uintptr_t> copyDsts;
  /// wgmma.mma_async issued since the last commit, and the committed groups
  /// not yet waited for (oldest first).
  std::vector<PendingMma> openMmas;
  std::deque<std::vector<PendingMma>> mmaGroups;
  /// A wgmma.fence since the block began or the last wgmma.wait_group.
  bool wgmmaFenced = false;
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
  /// The block's warpgroups (threads 128 g .. 128 g + 127), its mbarriers by
  /// address (forgotten when the block ends), and the host block of each
  /// slot of the shared window (block index + 1; 0: free).
  std::vector<WarpGroup> groups;
  std::map<uintptr_t, Mbarrier> mbarriers;
  uintptr_t windowBlock[kWindowSlots] = {};
  NamedBarrier named[16]; ///< bar.sync's barriers 0-15
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
inline std::atomic<uint64_t> unfencedWgmmaCount{0};
inline std::atomic<uint64_t> leftoverArrivalCount{0};

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
/// never committed) when their thread finished a block, and TMA loads that
/// never completed (no thread waited on their mbarrier), since the last
/// reset.
inline uint64_t leftoverCopies() { return leftoverCopyCount.load(); }
inline void resetLeftoverCopies() { leftoverCopyCount.store(0); }

/// Named-barrier rounds a block left open when it ended (bar.arrive's
/// threads that no bar.sync consumed: an unbalanced handshake), since the
/// last reset; each is then closed, so the next block starts clean.
inline uint64_t leftoverArrivals() { return leftoverArrivalCount.load(); }
inline void resetLeftoverArrivals() { leftoverArrivalCount.store(0); }

/// wgmma.mma_async issued (per warpgroup) with no wgmma.fence since the
/// block began or the warpgroup's last wgmma.wait_group: the PTX ISA needs
/// one before the first wgmma and between ordinary accesses to its
/// registers (reading the accumulators after a wait, writing an A
/// fragment) and a wgmma using them; since the last reset.
inline uint64_t unfencedWgmmas() { return unfencedWgmmaCount.load(); }
inline void resetUnfencedWgmmas() { unfencedWgmmaCount.store(0); }

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
  int sync = 0, syncOr = 0, warp = 0, end = 0, mbar = 0, group = 0, named = 0;
  for (const Thread &t : l.thread) {
    sync += t.wait == Wait::Sync;
    syncOr += t.wait == Wait::SyncOr;
    warp += t.wait == Wait::Warp;
    end += t.wait == Wait::BlockEnd;
    mbar += t.wait == Wait::Mbarrier;
    group += t.wait == Wait::WarpGroup;
    named += t.wait == Wait::Named;
  }
  const dim3 b = l.thread[0].blockIdx;
  std::fprintf(stderr,
               "tessera emulator: deadlock in block (%u, %u, %u): threads "
               "at different barriers: %d at __syncthreads, %d at "
               "__syncthreads_or, %d at a warp collective, %d finished the "
               "block, %d at an mbarrier wait, %d at a warpgroup "
               "collective, %d at a named barrier\n",
               b.x, b.y, b.z, sync, syncOr, warp, end, mbar, group, named);
  for (size_t w = 0; w < l.warps.size(); ++w)
    if (l.warps[w].arrived)
      std::fprintf(stderr, "  warp %zu: %d of %d lanes at a collective\n", w,
                   l.warps[w].arrived, l.warps[w].lanes);
  for (size_t g = 0; g < l.groups.size(); ++g)
    if (l.groups[g].arrived)
      std::fprintf(stderr, "  warpgroup %zu: %d of 128 threads at %s\n", g,
                   l.groups[g].arrived, l.groups[g].kind);
  for (int id = 0; id < 16; ++id)
    if (!l.named[id].waiting.empty())
      std::fprintf(stderr, "  bar.sync %d: %zu of %d threads\n", id,
                   l.named[id].waiting.size(), l.named[id].count);
  for (const auto &[address, m] : l.mbarriers)
    if (!m.waiters.empty())
      std::fprintf(stderr,
                   "  mbarrier %#llx: %zu threads wait for phase %u (parity "
                   "%u): %u of %u arrivals pending, tx-count %lld\n",
                   (unsigned long long)address, m.waiters.size(), m.phase,
                   m.phase & 1, m.pending, m.count, (long long)m.tx);
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
  for (auto &entry : l.mbarriers)
    for (const TmaCopy &c : entry.second.copies) {
      leftoverCopyCount.fetch_add(1, std::memory_order_relaxed);
      std::memcpy(c.dst, c.bytes.data(), c.bytes.size());
    }
  l.mbarriers.clear();
  for (NamedBarrier &b : l.named)
    if (b.arrived) {
      leftoverArrivalCount.fetch_add(1, std::memory_order_relaxed);
      b.arrived = 0;
    }
  for (Thread &t : l.thread) {
    t.openMmas.clear();
    t.mmaGroups.clear();
    t.wgmmaFenced = false;
  }
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
  l.groups.resize(size_t((l.threads + 127) / 128));
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

//===----------------------------------------------------------------------===//
// Hopper: the shared window, warpgroup collectives, wgmma, mbarrier, TMA
//===----------------------------------------------------------------------===//

/// The shared-window address of `p` for a wgmma descriptor (Hopper.cuh's
/// smemDesc): __shared__ variables are host statics here, so the window is
/// a table of the launch: slot s (of 16, 16 KiB each) maps the 16 KiB-
/// aligned host block assigned to it at its first use, next to the slot of
/// an assigned neighbouring block where free, so that a tile spanning two
/// blocks stays contiguous in the window. An address keeps its offset in
/// its block, hence its low 14 bits: swizzle patterns (bits 4-9) computed
/// on window or host addresses agree. More than 16 blocks abort.
inline uint32_t sharedWindow(const void *p) {
  Launch &l = *running;
  const uintptr_t block = reinterpret_cast<uintptr_t>(p) / kWindowSlotBytes;
  int slot = -1, free = -1;
  for (unsigned s = 0; s < kWindowSlots && slot < 0; ++s)
    if (l.windowBlock[s] == block + 1)
      slot = int(s);
  for (unsigned s = 0; s < kWindowSlots && slot < 0; ++s) {
    if (l.windowBlock[s])
      continue;
    const bool after = s > 0 && l.windowBlock[s - 1] == block;
    const bool before =
        s + 1 < kWindowSlots && l.windowBlock[s + 1] == block + 2;
    if (after || before)
      slot = int(s);
    else if (free < 0)
      free = int(s);
  }
  if (slot < 0) {
    if (free < 0)
      fail("wgmma descriptors address more than 16 blocks of 16 KiB (the "
           "emulated 256 KiB shared window)",
           p);
    slot = free;
  }
  l.windowBlock[slot] = block + 1;
  return uint32_t(slot) * uint32_t(kWindowSlotBytes) +
         uint32_t(reinterpret_cast<uintptr_t>(p) % kWindowSlotBytes);
}

/// The host address of shared-window address `w` (sharedWindow's inverse).
inline unsigned char *sharedHost(uint32_t w) {
  const Launch &l = *running;
  const uint32_t slot = w / uint32_t(kWindowSlotBytes);
  if (slot >= kWindowSlots || !l.windowBlock[slot])
    fail("a wgmma descriptor's start address is not in the shared window "
         "(not made by smemDesc in this launch)",
         reinterpret_cast<void *>(uintptr_t(w)));
  return reinterpret_cast<unsigned char *>(
      (l.windowBlock[slot] - 1) * kWindowSlotBytes + w % kWindowSlotBytes);
}

/// A warpgroup collective (`kind` names it): publishes `mine`, waits for the
/// 128 threads of this thread's warpgroup; the last to arrive runs
/// `complete` on everyone's pointers (in thread order) and releases them.
/// Threads at different collectives, or a warpgroup the block does not
/// fill, abort.
inline void groupCollective(const char *kind, void *mine,
                            void (*complete)(void **args) = nullptr) {
  Launch &l = *running;
  Thread &t = *self;
  const unsigned g = t.linear / 128;
  if (int(128 * (g + 1)) > l.threads) {
    std::fprintf(stderr,
                 "tessera emulator: %s in a warpgroup of %d threads (a "
                 "warpgroup collective needs all 128)\n",
                 kind, l.threads - int(128 * g));
    std::abort();
  }
  WarpGroup &wg = l.groups[g];
  if (wg.arrived == 0) {
    wg.kind = kind;
  } else if (wg.kind != kind && std::strcmp(wg.kind, kind) != 0) {
    std::fprintf(stderr,
                 "tessera emulator: threads of warpgroup %u at different "
                 "warpgroup collectives (%s and %s) in block (%u, %u, %u)\n",
                 g, wg.kind, kind, t.blockIdx.x, t.blockIdx.y, t.blockIdx.z);
    std::abort();
  }
  wg.args[t.linear % 128] = mine;
  t.wait = Wait::WarpGroup;
  if (++wg.arrived == 128) {
    wg.arrived = 0;
    if (complete)
      complete(wg.args);
    for (Thread *th = &l.thread[128 * g], *e = th + 128; th != e; ++th)
      makeReady(l, *th);
  }
  schedule(l, t);
}

/// A K-major wgmma operand in shared memory, decoded from its descriptor
/// (PTX ISA, "Matrix Descriptor Format" and "Shared Memory Matrix Layout").
struct SmemMatrix {
  const unsigned char *start; ///< host address of the start address
  uint32_t startWindow, lbo, sbo;
  uint32_t swizzleBytes; ///< 0 (none), 32, 64 or 128
  bool mnMajor = false;  ///< imm-trans 1: the rows (m or n) contiguous
};

inline SmemMatrix decodeDescriptor(uint64_t desc, bool mnMajor = false) {
  if ((desc >> 49) & 7)
    fail("a wgmma descriptor with a nonzero base offset (not modelled)",
         reinterpret_cast<void *>(uintptr_t(desc)));
  SmemMatrix m;
  m.startWindow = uint32_t(desc & 0x3fff) << 4;
  m.lbo = uint32_t((desc >> 16) & 0x3fff) << 4;
  m.sbo = uint32_t((desc >> 32) & 0x3fff) << 4;
  static const uint32_t bytes[4] = {0, 128, 64, 32};
  m.swizzleBytes = bytes[desc >> 62];
  m.start = sharedHost(m.startWindow);
  m.mnMajor = mnMajor;
  return m;
}

/// The W-byte swizzle of a shared address: its 16-byte chunk index within
/// a W-byte row (bits 4 .. 4 + log2(W / 16)) XOR the row's index modulo
/// W / 16 (the bits from 7 up): CUTLASS's Swizzle<1|2|3, 4, 3>.
inline uint64_t swizzleAddress(uint64_t a, uint32_t swizzleBytes) {
  if (!swizzleBytes)
    return a;
  return a ^ (((a >> 7) & (swizzleBytes / 16 - 1)) << 4);
}

/// The 16-bit element (row, k) of a K-major operand (row < 64 or N, k < 16):
/// without swizzle, 8 x 8 core matrices of 16-byte rows, SBO apart along
/// the rows and LBO apart along k; with a W-byte swizzle, rows W bytes
/// apart in groups of 8 SBO apart (LBO unused), then swizzled by address.
///
/// MN-major (imm-trans 1; the PTX ISA's "Canonical Layouts"): rows are the
/// contiguous dimension. Without swizzle, core matrices of 8 k (16 bytes
/// apart) by 8 rows (2 bytes apart), SBO apart along the rows and LBO
/// apart along k; with a W-byte swizzle, W / 2 rows in a W-byte line, k
/// lines W bytes apart in groups of 8 SBO apart, the next W / 2 rows LBO
/// on, then swizzled by address.
inline uint16_t operandElement(const SmemMatrix &m, int row, int k) {
  uint64_t a = m.startWindow;
  const uint64_t w = m.swizzleBytes;
  if (m.mnMajor && !w)
    a += uint64_t(row / 8) * m.sbo + uint64_t(row % 8) * 2 +
         uint64_t(k / 8) * m.lbo + uint64_t(k % 8) * 16;
  else if (m.mnMajor)
    a = swizzleAddress(a + uint64_t(row) / (w / 2) * m.lbo +
                           uint64_t(row) % (w / 2) * 2 +
                           uint64_t(k / 8) * m.sbo + uint64_t(k % 8) * w,
                       m.swizzleBytes);
  else if (!w)
    a += uint64_t(row / 8) * m.sbo + uint64_t(row % 8) * 16 +
         uint64_t(k / 8) * m.lbo + uint64_t(k % 8) * 2;
  else
    a = swizzleAddress(a + uint64_t(row / 8) * m.sbo + uint64_t(row % 8) * w +
                           2 * uint64_t(k),
                       m.swizzleBytes);
  uint16_t e;
  std::memcpy(&e, m.start + (int64_t(a) - int64_t(m.startWindow)), 2);
  return e;
}

/// What a thread publishes at wgmma.mma_async: the operands (equal in the
/// whole warpgroup but for `a` and `d`) and its accumulators.
struct WgmmaArgs {
  uint64_t descA, descB;
  bool accumulate;
  const uint32_t *a; ///< A fragment (wgmmaRS), else null
  float *d;
  bool transB; ///< B MN-major (imm-trans-b 1)
};

/// The value a wgmma of `t` still in flight gives accumulators `d`, or null:
/// a wgmma reading accumulators that an earlier one (of the same shape)
/// writes chains after it, as on the GPU (the one access to accumulators
/// in flight that the PTX ISA allows).
inline const float *pendingAccumulators(const Thread &t, const float *d) {
  for (auto p = t.openMmas.rbegin(); p != t.openMmas.rend(); ++p)
    if (p->d == d)
      return p->value.data();
  for (auto g = t.mmaGroups.rbegin(); g != t.mmaGroups.rend(); ++g)
    for (auto p = g->rbegin(); p != g->rend(); ++p)
      if (p->d == d)
        return p->value.data();
  return nullptr;
}

/// The warpgroup's product, once, when its last thread has arrived:
/// A (64 x 16) from the descriptor or the threads' A fragments, B (N x 16,
/// K-major) from its descriptor, as they are now; each element c + sum
/// over k of A B in this order in float (the products of 16-bit inputs are
/// exact), c = 0 without `accumulate`, else the accumulators (or what a
/// wgmma in flight will give them). The results wait in each thread's open
/// group; its accumulators turn NaN until then.
template <int E, int N> inline void wgmmaGroup(void **args) {
  const WgmmaArgs &first = *static_cast<WgmmaArgs *>(args[0]);
  for (int i = 1; i < 128; ++i) {
    const WgmmaArgs &o = *static_cast<WgmmaArgs *>(args[i]);
    if (o.descB != first.descB || o.accumulate != first.accumulate ||
        o.transB != first.transB || (!first.a && o.descA != first.descA))
      fail("wgmma operands (descriptors, scale-d) differ within the "
           "warpgroup",
           reinterpret_cast<void *>(uintptr_t(i)));
  }
  float A[64][16];
  if (first.a) {
    // Thread 32 w + 4 g + q holds A[16 w + g (+8)][2 q (+8), + 1].
    for (int i = 0; i < 128; ++i) {
      const uint32_t *a = static_cast<WgmmaArgs *>(args[i])->a;
      const int r = 16 * (i / 32) + (i % 32) / 4, c = 2 * (i % 4);
      for (int j = 0; j < 4; ++j)
        for (int h = 0; h < 2; ++h)
          A[r + 8 * (j % 2)][c + 8 * (j / 2) + h] =
              halfToFloat<E>(uint16_t(a[j] >> (16 * h)));
    }
  } else {
    const SmemMatrix ma = decodeDescriptor(first.descA);
    for (int r = 0; r < 64; ++r)
      for (int k = 0; k < 16; ++k)
        A[r][k] = halfToFloat<E>(operandElement(ma, r, k));
  }
  const SmemMatrix mb = decodeDescriptor(first.descB, first.transB);
  std::vector<float> B(static_cast<size_t>(N) * 16);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < 16; ++k)
      B[size_t(n) * 16 + size_t(k)] = halfToFloat<E>(operandElement(mb, n, k));
  Launch &l = *running;
  Thread *group = &l.thread[self->linear / 128 * 128];
  if (!group[0].wgmmaFenced)
    unfencedWgmmaCount.fetch_add(1, std::memory_order_relaxed);
  for (int i = 0; i < 128; ++i) {
    const WgmmaArgs &o = *static_cast<WgmmaArgs *>(args[i]);
    const int r0 = 16 * (i / 32) + (i % 32) / 4, q = i % 4;
    PendingMma p{o.d, std::vector<float>(size_t(N / 2))};
    const float *pending = pendingAccumulators(group[i], o.d);
    const float *c = pending ? pending : o.d;
    for (int v = 0; v < N / 2; ++v) {
      const int r = r0 + 8 * ((v / 2) % 2), n = 8 * (v / 4) + 2 * q + v % 2;
      float x = o.accumulate ? c[v] : 0.0f;
      for (int k = 0; k < 16; ++k)
        x += A[r][k] * B[size_t(n) * 16 + size_t(k)];
      p.value[size_t(v)] = x;
    }
    std::fill(o.d, o.d + N / 2, std::numeric_limits<float>::quiet_NaN());
    group[i].openMmas.push_back(std::move(p));
  }
}

/// The collective's name, which also tells N, the type and the form apart.
template <int E, int N>
inline const char *wgmmaKind(bool registerA, bool transB = false) {
  static const std::string base = "wgmma.mma_async m64n" + std::to_string(N) +
                                  "k16 " + (E == 0 ? "f16" : "bf16");
  static const std::string names[4] = {
      base + " SS", base + " RS", base + " SS trans-b", base + " RS trans-b"};
  return names[(registerA ? 1 : 0) + (transB ? 2 : 0)].c_str();
}

/// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16} (Hopper.cuh's
/// wgmmaSS): a warpgroup collective; d lands at the covering wgmmaWait.
template <int E, int N>
inline void wgmmaSS(float *d, uint64_t descA, uint64_t descB, bool accumulate) {
  WgmmaArgs args{descA, descB, accumulate, nullptr, d, false};
  groupCollective(wgmmaKind<E, N>(false), &args, wgmmaGroup<E, N>);
}

/// The same with A from this thread's register fragment (wgmmaRS).
template <int E, int N>
inline void wgmmaRS(float *d, const uint32_t (&a)[4], uint64_t descB,
                    bool accumulate) {
  WgmmaArgs args{0, descB, accumulate, a, d, false};
  groupCollective(wgmmaKind<E, N>(true), &args, wgmmaGroup<E, N>);
}

/// The same with B MN-major (imm-trans-b 1: FlashAttention-3's V, keys by
/// head-dim columns with the columns contiguous; wgmmaRSTransB).
template <int E, int N>
inline void wgmmaRSTransB(float *d, const uint32_t (&a)[4], uint64_t descB,
                          bool accumulate) {
  WgmmaArgs args{0, descB, accumulate, a, d, true};
  groupCollective(wgmmaKind<E, N>(true, true), &args, wgmmaGroup<E, N>);
}

/// bar.sync id, count: a barrier of `count` threads (a multiple of 32, at
/// most the block's) on barrier `id` (0-15); the threads arriving at one
/// round must agree on the count. Released threads run in the current
/// order (no new draw, unlike __syncthreads). Barrier 0 here is apart from
/// __syncthreads': do not mix them.
/// The named barrier `id` of the running block for a bar.sync or bar.arrive
/// of `count` threads (checked: ids 0-15, counts a multiple of 32 up to the
/// block's threads, the same count for every thread of a round).
inline NamedBarrier &namedRound(const char *op, int id, int count) {
  Launch &l = *running;
  Thread &t = *self;
  if (id < 0 || id > 15 || count <= 0 || count % 32 || count > l.threads) {
    std::fprintf(stderr,
                 "tessera emulator: %s %d, %d (ids 0-15, counts a "
                 "multiple of 32 up to the block's %d threads)\n",
                 op, id, count, l.threads);
    std::abort();
  }
  NamedBarrier &b = l.named[id];
  if (b.waiting.empty() && b.arrived == 0) {
    b.count = count;
  } else if (b.count != count) {
    std::fprintf(stderr,
                 "tessera emulator: %s %d with counts %d and %d in "
                 "block (%u, %u, %u)\n",
                 op, id, b.count, count, t.blockIdx.x, t.blockIdx.y,
                 t.blockIdx.z);
    std::abort();
  }
  return b;
}

/// Ends a round of `b` once its count of threads arrived or wait: the
/// waiting threads run on.
inline void namedRelease(NamedBarrier &b) {
  if (int(b.waiting.size()) + b.arrived < b.count)
    return;
  Launch &l = *running;
  for (unsigned w : b.waiting)
    makeReady(l, l.thread[w]);
  b.waiting.clear();
  b.arrived = 0;
}

inline void namedBarrier(int id, int count) {
  NamedBarrier &b = namedRound("bar.sync", id, count);
  Thread &t = *self;
  t.wait = Wait::Named;
  b.waiting.push_back(t.linear);
  namedRelease(b);
  schedule(*running, t);
}

/// bar.arrive id, count: this thread counts towards the round of barrier
/// `id` without waiting for it (the producer side of a named-barrier
/// handshake: ping-pong scheduling).
inline void namedBarrierArrive(int id, int count) {
  NamedBarrier &b = namedRound("bar.arrive", id, count);
  ++b.arrived;
  namedRelease(b);
}

/// wgmma.fence.sync.aligned: only the collective (every access here is
/// ordered already).
inline void wgmmaFence() {
  groupCollective("wgmma.fence", nullptr);
  self->wgmmaFenced = true;
}

/// wgmma.commit_group.sync.aligned: this thread's wgmma since the last
/// commit form its newest group.
inline void wgmmaCommit() {
  groupCollective("wgmma.commit_group", nullptr);
  Thread &t = *self;
  t.mmaGroups.emplace_back();
  t.mmaGroups.back().swap(t.openMmas);
}

/// wgmma.wait_group.sync.aligned n: the accumulators of every group but the
/// newest n receive their products.
inline void wgmmaWait(int n) {
  int mine = n;
  groupCollective("wgmma.wait_group", &mine, [](void **args) {
    for (int i = 1; i < 128; ++i)
      if (*static_cast<int *>(args[i]) != *static_cast<int *>(args[0]))
        fail("wgmma.wait_group with different counts in a warpgroup", args[i]);
  });
  Thread &t = *self;
  while (t.mmaGroups.size() > size_t(std::max(n, 0))) {
    for (const PendingMma &p : t.mmaGroups.front())
      std::copy(p.value.begin(), p.value.end(), p.d);
    t.mmaGroups.pop_front();
  }
  t.wgmmaFenced = false; // the accumulators may be touched from here
}

/// setmaxnreg.{inc,dec}.sync.aligned.u32 R: checked (R a multiple of 8 in
/// [24, 256], the whole warpgroup), not modelled otherwise.
inline void setMaxNReg(int r, bool inc) {
  if (r % 8 != 0 || r < 24 || r > 256) {
    std::fprintf(stderr,
                 "tessera emulator: setmaxnreg with %d registers (a multiple "
                 "of 8 in [24, 256])\n",
                 r);
    std::abort();
  }
  groupCollective(inc ? "setmaxnreg.inc" : "setmaxnreg.dec", nullptr);
}

/// The mbarrier at `bar`, which mbarInit must have set up in this block.
inline Mbarrier &mbarrierAt(const void *bar) {
  auto it = running->mbarriers.find(reinterpret_cast<uintptr_t>(bar));
  if (it == running->mbarriers.end())
    fail("an mbarrier used before mbarInit in this block", bar);
  return it->second;
}

/// Moves `m` on: while threads wait on it (or when `land`), its TMA loads
/// complete (their bytes land, the tx-count drops by them); when no
/// arrival and no transaction is pending, the phase completes and its
/// waiters run again.
inline void mbarrierProgress(Launch &l, Mbarrier &m, bool land = false) {
  if (land || !m.waiters.empty()) {
    for (const TmaCopy &c : m.copies) {
      std::memcpy(c.dst, c.bytes.data(), c.bytes.size());
      m.tx -= int64_t(c.bytes.size());
    }
    m.copies.clear();
  }
  if (m.pending == 0 && m.tx == 0) {
    ++m.phase;
    m.pending = m.count;
    for (unsigned w : m.waiters)
      makeReady(l, l.thread[w]);
    m.waiters.clear();
  }
}

/// mbarrier.init: `count` arrivals (1 .. 2^20 - 1) per phase, phase 0.
inline void mbarInit(unsigned long long *bar, uint32_t count) {
  if (reinterpret_cast<uintptr_t>(bar) % 8)
    fail("an mbarrier not 8-byte aligned", bar);
  if (count == 0 || count >= (1u << 20))
    fail("mbarInit with a count outside [1, 2^20 - 1]", bar);
  Mbarrier &m = running->mbarriers[reinterpret_cast<uintptr_t>(bar)];
  m = Mbarrier{};
  m.count = m.pending = count;
  *bar = 0; // the word itself is opaque; the state lives in the table
}

/// mbarrier.arrive.expect_tx (bytes > 0) or mbarrier.arrive (0). An
/// arrival on a phase that only waits for its TMA loads first completes
/// them (on a GPU they would have landed by then, no wait needed); more
/// arrivals than the count in one phase abort (undefined in PTX).
inline void mbarArriveExpectTx(unsigned long long *bar, uint32_t bytes) {
  Mbarrier &m = mbarrierAt(bar);
  if (m.pending == 0 && !m.copies.empty())
    mbarrierProgress(*running, m, /*land=*/true);
  if (m.pending == 0)
    fail("more arrivals on an mbarrier than its count in one phase", bar);
  m.tx += bytes;
  --m.pending;
  mbarrierProgress(*running, m);
}

inline void mbarArrive(unsigned long long *bar) { mbarArriveExpectTx(bar, 0); }

/// mbarrier.try_wait.parity: true at once when the phase of parity `parity`
/// has completed (the current phase's parity differs); otherwise the
/// thread waits (other threads run; its TMA loads complete) until that
/// phase completes, then true: the instruction's time limit taken as
/// unbounded, so false is never returned. A block where that cannot happen
/// is a deadlock, reported.
inline bool mbarTryWait(unsigned long long *bar, uint32_t parity) {
  Launch &l = *running;
  Thread &t = *self;
  Mbarrier &m = mbarrierAt(bar);
  while ((m.phase & 1) == (parity & 1)) {
    t.wait = Wait::Mbarrier;
    m.waiters.push_back(t.linear);
    mbarrierProgress(l, m);
    schedule(l, t);
  }
  return true;
}

inline void mbarWait(unsigned long long *bar, uint32_t parity) {
  (void)mbarTryWait(bar, parity);
}

/// A tensor map: CUtensorMap's size and alignment; what
/// encodeTensorMapTiled validated, in TensorMapFields.
struct alignas(64) TensorMap {
  unsigned char bytes[128];
};

struct TensorMapFields {
  uint32_t magic, dataType;
  uint64_t global;
  uint64_t dims[4], strides[3];
  uint32_t box[4];
  int32_t swizzle, oobZero;
};
static_assert(sizeof(TensorMap) == 128 && sizeof(TensorMapFields) <= 128,
              "a tensor map is 128 bytes");
constexpr uint32_t kTensorMapMagic = 0x544d4150; // "TMAP"

/// CUtensorMapDataType values of the 16-bit types modelled.
enum TensorMapDataType : int {
  kTensorMapU16 = 1,
  kTensorMapF16 = 6,
  kTensorMapBF16 = 9
};

/// CUDA_SUCCESS / CUDA_ERROR_INVALID_VALUE, as cuTensorMapEncodeTiled.
enum : int { kEncodeOk = 0, kEncodeInvalid = 1 };

/// cuTensorMapEncodeTiled for a rank-4 tiled map of 16-bit elements, no
/// interleave, element strides 1, no L2 promotion: `dims` innermost first,
/// `strides` the bytes between consecutive indices of dims 1..3 (dim 0 is
/// contiguous), `box` the elements of a load per dim, `swizzle` as
/// CUtensorMapSwizzle (0 none, 1 32B, 2 64B, 3 128B), `oobZero` out-of-
/// bound elements as zeros (else NaN, CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_
/// REQUEST_ZERO_FMA). kEncodeInvalid where the driver returns
/// CUDA_ERROR_INVALID_VALUE: another type or rank, a global address not
/// 16-byte aligned, a dim of 0 or above 2^32, a stride not a multiple of
/// 16 or from 2^40, a box dim of 0 or above 256, box[0] not a multiple of
/// 16 bytes or, swizzled, above the swizzle span.
inline int encodeTensorMapTiled(TensorMap *out, int dataType, int rank,
                                void *global, const uint64_t dims[4],
                                const uint64_t strides[3],
                                const uint32_t box[4], int swizzle,
                                bool oobZero) {
  if (!out || !global || rank != 4 ||
      (dataType != kTensorMapU16 && dataType != kTensorMapF16 &&
       dataType != kTensorMapBF16) ||
      reinterpret_cast<uintptr_t>(global) % 16 || swizzle < 0 || swizzle > 3)
    return kEncodeInvalid;
  for (int i = 0; i < 4; ++i)
    if (dims[i] == 0 || dims[i] > (uint64_t(1) << 32) || box[i] == 0 ||
        box[i] > 256)
      return kEncodeInvalid;
  for (int i = 0; i < 3; ++i)
    if (strides[i] % 16 || strides[i] >= (uint64_t(1) << 40))
      return kEncodeInvalid;
  const uint32_t innerBytes = box[0] * 2;
  if (innerBytes % 16 || (swizzle && innerBytes > (16u << swizzle)))
    return kEncodeInvalid;
  TensorMapFields f{};
  f.magic = kTensorMapMagic;
  f.dataType = uint32_t(dataType);
  f.global = reinterpret_cast<uintptr_t>(global);
  std::copy(dims, dims + 4, f.dims);
  std::copy(strides, strides + 3, f.strides);
  std::copy(box, box + 4, f.box);
  f.swizzle = swizzle;
  f.oobZero = oobZero;
  std::memset(out->bytes, 0, sizeof out->bytes);
  std::memcpy(out->bytes, &f, sizeof f);
  return kEncodeOk;
}

/// cp.async.bulk.tensor.4d...tile.mbarrier::complete_tx::bytes (Hopper.cuh's
/// tmaLoad): reads the box at (c0, c1, c2, c3) now (out-of-bound elements
/// filled), lays it out as the map says (rows of box[0] elements one after
/// another, 16-byte chunks swizzled by shared address: CU_TENSOR_MAP_
/// SWIZZLE_32B / 64B / 128B as a W = 32 / 64 / 128 byte swizzle), turns the
/// destination to poison (0xff) and leaves the load pending on `bar`: it
/// completes when a thread waits on `bar` (or, counted as leftoverCopies(),
/// when the block ends). Not named tmaLoad: TensorMap is this namespace's
/// type, so argument-dependent lookup would make a kernel's unqualified
/// tmaLoad (Hopper.cuh's) ambiguous.
inline void tmaLoadTile4d(void *smemDst, const TensorMap *map, int c0, int c1,
                          int c2, int c3, unsigned long long *bar) {
  TensorMapFields f;
  std::memcpy(&f, map->bytes, sizeof f);
  if (f.magic != kTensorMapMagic)
    fail("a TMA load with a tensor map not made by encodeTensorMapTiled", map);
  auto *dst = static_cast<unsigned char *>(smemDst);
  if (reinterpret_cast<uintptr_t>(dst) % 128)
    fail("a TMA destination not 128-byte aligned", smemDst);
  Mbarrier &m = mbarrierAt(bar);
  const uint32_t *b = f.box;
  const size_t bytes = size_t(b[0]) * b[1] * b[2] * b[3] * 2;
  const uint32_t swizzleBytes = f.swizzle ? 16u << f.swizzle : 0;
  if (swizzleBytes && bytes % 128)
    fail("a swizzled TMA box that is not a multiple of 128 bytes (not "
         "modelled)",
         smemDst);
  const int64_t c[4] = {c0, c1, c2, c3};
  const auto *global = reinterpret_cast<const unsigned char *>(f.global);
  const uint16_t fill = f.oobZero ? 0 : 0x7fff; // a NaN in f16 and bf16
  TmaCopy copy{dst, std::vector<unsigned char>(bytes)};
  size_t o = 0;
  for (uint32_t i3 = 0; i3 < b[3]; ++i3)
    for (uint32_t i2 = 0; i2 < b[2]; ++i2)
      for (uint32_t i1 = 0; i1 < b[1]; ++i1)
        for (uint32_t i0 = 0; i0 < b[0]; ++i0, o += 2) {
          const int64_t g[4] = {c[0] + i0, c[1] + i1, c[2] + i2, c[3] + i3};
          bool inside = true;
          for (int i = 0; i < 4; ++i)
            inside &= g[i] >= 0 && uint64_t(g[i]) < f.dims[i];
          uint16_t e = fill;
          if (inside)
            std::memcpy(&e,
                        global + g[0] * 2 + g[1] * int64_t(f.strides[0]) +
                            g[2] * int64_t(f.strides[1]) +
                            g[3] * int64_t(f.strides[2]),
                        2);
          const uint64_t a = reinterpret_cast<uintptr_t>(dst) + o;
          std::memcpy(&copy.bytes[swizzleAddress(a, swizzleBytes) -
                                  reinterpret_cast<uintptr_t>(dst)],
                      &e, 2);
        }
  std::memset(dst, 0xff, bytes);
  m.copies.push_back(std::move(copy));
  mbarrierProgress(*running, m);
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

/// __any_sync: nonzero in every lane when any lane's `pred` is (a warp
/// collective; a partial mask is not modelled and aborts).
inline int __any_sync(unsigned mask, int pred) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr,
                 "tessera emulator: __any_sync(%#x): only the full mask is "
                 "modelled\n",
                 mask);
    std::abort();
  }
  const uint32_t mine = pred != 0;
  uint32_t(*all)[10] = ::tessera_emu::exchange("vote.any", &mine, 1);
  uint32_t any = 0;
  for (int l = 0; l < 32; ++l)
    any |= all[l][0];
  return int(any);
}

/// atomicOr: one thread runs at a time here, so a plain read-modify-write.
inline int atomicOr(int *address, int value) {
  const int old = *address;
  *address = old | value;
  return old;
}
inline unsigned atomicOr(unsigned *address, unsigned value) {
  const unsigned old = *address;
  *address = old | value;
  return old;
}

/// __syncwarp: a warp collective of the whole warp (a partial mask is not
/// modelled and aborts).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr,
                 "tessera emulator: __syncwarp(%#x): only the full "
                 "mask is modelled\n",
                 mask);
    std::abort();
  }
  const uint32_t none = 0;
  (void)::tessera_emu::exchange("__syncwarp", &none, 1);
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
        std::memcpy(&a, static_cast<const char *>(params) + sizeof p,          \
                    sizeof a);                                                 \
        name(p, a);                                                            \
      });

/// The same for the sm_90a kernels (HopperForward.cuh), which take
/// (AttnParams, HopperMaps, int layer): `params` points at a HopperLaunch
/// (HopperForward.cuh, visible where the bundle registers them).
#define TESSERA_EMU_HOPPER_KERNEL(name)                                        \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int layer) {                                      \
        tessera::kernel::HopperLaunch l;                                       \
        std::memcpy(&l, params, sizeof l);                                     \
        name(l.p, l.maps, layer);                                              \
      });

/// The same for the sm_90a twins of the dynamic attention kernels
/// (HopperDynamic.cuh), which take (AttnParams, DynArgs, HopperMaps),
/// packed as HopperDynLaunch.
#define TESSERA_EMU_DYN_HOPPER_KERNEL(name)                                    \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int) {                                            \
        tessera::kernel::HopperDynLaunch l;                                    \
        std::memcpy(&l, params, sizeof l);                                     \
        name(l.p, l.a, l.maps);                                                \
      });

/// The same for a permuted group's kernels (Permuted.cuh), which take
/// (AttnParams, PermArgs), packed as the dynamic kernels' arguments are:
/// PermArgs right after AttnParams.
#define TESSERA_EMU_PERM_KERNEL(name)                                          \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int) {                                            \
        tessera::kernel::AttnParams p;                                         \
        tessera::kernel::PermArgs a;                                           \
        std::memcpy(&p, params, sizeof p);                                     \
        std::memcpy(&a, static_cast<const char *>(params) + sizeof p,          \
                    sizeof a);                                                 \
        name(p, a);                                                            \
      });

#endif // TESSERA_KERNEL_EMULATE_H
