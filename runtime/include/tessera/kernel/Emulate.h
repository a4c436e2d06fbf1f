//===- Emulate.h - run a bundle's CUDA kernels on the host, for tests -*- C++ -*-===//
//
// Include this, then a bundle's bundle.cu (inside a namespace of its own), to
// compile the emitted CUDA source with the host C++ compiler: the few device
// features the kernels use come from here. Host-only, for tests; the kernel
// source stays one source (FlashForward.cuh selects these intrinsics under
// TESSERA_EMULATE instead of its inline PTX).
//
// * A launch runs the grid block by block; the block's threads are real,
//   concurrent threads (std::thread), so a missing __syncthreads can show.
//   __syncthreads is a barrier of the block's threads; __shared__ variables
//   are statics (one block runs at a time, so the block's threads share them,
//   and the next block finds the previous one's data, as on a GPU).
// * Warp collectives (__shfl_xor_sync, mma.sync) exchange values through a
//   per-warp buffer with a barrier of the warp's 32 threads.
// * mma.sync.m16n8k16 (.row.col, f16 or bf16 in, f32 accumulators) follows
//   the PTX ISA's fragment layouts; the f32 -> f16x2 / bf16x2 conversions
//   (cvt.rn) round to nearest even.
// * What this cannot show: timing, the real scheduling of warps beyond the
//   barriers, memory-model effects (every access here is coherent at once),
//   and register or shared-memory limits.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_EMULATE_H
#define TESSERA_KERNEL_EMULATE_H

#include "tessera/cpu/Half.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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
/// finished reading it).
struct Warp {
  Warp() : barrier(32) {}
  Barrier barrier;
  uint32_t words[2][32][10];
};

struct Block {
  explicit Block(int threads)
      : barrier(threads), warps((threads + 31) / 32) {}
  Barrier barrier;
  std::vector<Warp> warps;
};

struct Thread {
  dim3 threadIdx, blockIdx;
  Block *block = nullptr;
  int phase = 0;
  unsigned lane() const { return threadIdx.x % 32; }
  Warp &warp() { return block->warps[threadIdx.x / 32]; }
};

inline thread_local Thread *self = nullptr;
inline dim3 launchBlockDim, launchGridDim;

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
      me.block = &b;
      self = &me;
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            me.blockIdx = dim3{x, y, z};
            kernel();
            b.barrier.wait(); // the next block reuses the shared statics
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
