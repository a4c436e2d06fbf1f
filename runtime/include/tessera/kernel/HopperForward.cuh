//===- HopperForward.cuh - the sm_90a attention kernel (issue 18) -*- CUDA -*-===//
//
// The attention of one head's 128-row query block on Hopper, built from
// Hopper.cuh's primitives in FlashAttention-3's structure (written here):
//
//   warpgroup 0 (the producer; one thread works): loads the Q block once by
//     TMA, then walks the block schedule (the same run enumeration as
//     pipeForward: Groups::runFrom, across run boundaries) and for each
//     visited key tile waits for a free stage of the ring, writes the tile's
//     descriptor (its key block and class) into the stage, announces the
//     stage's bytes on its `full` barrier and issues the TMA loads of the K
//     and V tiles there. After the last tile it arrives on the next stage
//     without bytes and a descriptor marked `last`.
//   warpgroups 1 and 2 (the consumers): 64 query rows each. Per stage: wait
//     `full`, S = Q K^T by wgmma (A = its 64 Q rows, B = the K tile, both
//     K-major from the 128-byte-swizzled TMA tiles), masks exactly as
//     pipeForward's (KeepNibbles: each warp's 16 x 64 scores have
//     mma.m16n8k16's accumulator layout), the online softmax (pipeSoftmax,
//     whose P fragments are wgmma's register A operand), O += P V by wgmma
//     with P in registers and V from the stage (N-major: imm-trans-b 1),
//     then one arrival per warp on the stage's `empty` barrier.
//
// Tiles: 128 query rows x 64 keys, as every other path (the run enumeration,
// the masks, the CPU executor and the cost model share the 64-key tiles).
// Shared memory (HopperTiles): the Q block and kStages stages of K and V,
// each a [rows][64] panel per 64 head-dim elements in the TMA's 128-byte
// swizzle (1024-byte aligned), then the barriers and descriptors.
//
// Status (issue 18): the emitter gives every attention kernel of head_dim
// 64 and 128 an sm_90a twin, <kernel>_wgmma (dense calls, static heads),
// compiled where NVRTC targets sm_90a; the runtime launches it on compute
// capability 9.x (runtime/api/HopperLaunch.cpp). Under the emulator
// (EmulatorTest.HopperKernelMatchesFloat64) it matches float64 on every
// head_dim 64 and 128 layer of the variants bundle (f16 and bf16, GQA, partial and
// full tiles, Nq < Nk and Nq > Nk, two batches) and keeps a non-finite
// value to the rows that see it; three broken copies fail (the value tile's
// descriptor offsets swapped, no vote for the guarded pass, an unbalanced
// ping-pong). Not yet here: per-sequence calls and split-KV (the dynamic
// walks have their twins in HopperDynamic.cuh).
//
// Non-finite values (docs/runtime.md): as in pipeForward, the walk runs
// once unguarded; where a consumer's output holds a NaN or infinity, both
// consumers vote on the `verdict` barrier and, if either saw one, the
// producer replays the walk and the consumers run it again guarded: on a
// partial tile each consumer warpgroup copies the value tile into its own
// buffer with non-finite values zeroed (P V reads the copy) and makes the
// output elements of its rows that see such a value NaN (hopperGuard).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_HOPPERFORWARD_CUH
#define TESSERA_KERNEL_HOPPERFORWARD_CUH

namespace tessera {
namespace kernel {

/// The kernel's fixed shapes at head dim D (64 or 128).
template <int D> struct HopperShape {
  static_assert(D == 64 || D == 128, "the Hopper kernel: head_dim 64 or 128");
  static constexpr int kBQ = 128, kBK = 64;
  static constexpr int kConsumers = 2, kThreads = 128 * (1 + kConsumers);
  /// 64-element (128-byte) panels of a row.
  static constexpr int kPanels = D / 64;
  /// Ring stages: K and V tiles of 8 KiB a panel each.
  static constexpr int kStages = D == 64 ? 4 : 3;
  static constexpr u32 kTileBytes = kBK * D * 2;
  /// setmaxnreg: the producer's registers and each consumer's. The block
  /// starts with 168 a thread (__launch_bounds__(384, 1): 65,536 / 384,
  /// rounded down to a multiple of 8), so the CTA's pool holds 384 x 168 =
  /// 128 x (120 + 2 x 192). The producer inlines every pattern's run
  /// enumeration of its kernel part (64-bit positions): with 56, 88 and
  /// 104 registers a part of weight 24 (head_dim 64: the tiny-mix bundle)
  /// spilled there (NVRTC 13.0, sm_90a); with 120 none of the shipped
  /// bundles does (scripts/hopper-sass.py, docs/PERFORMANCE.md).
  static constexpr int kProducerRegs = 120, kConsumerRegs = 192;
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= 3 * 168,
                "setmaxnreg: more registers than the block was given");
};

/// What the producer tells the consumers about a stage.
struct HopperTileInfo {
  i64 kb;   ///< the key block (tile index) of the stage's K and V
  int cls;  ///< kFull or kPartial
  int last; ///< 1: no tile; the walk is over
};

/// The kernel's dynamic shared memory (1024-byte aligned: the 128-byte
/// swizzle repeats every 8 rows of 128 bytes, and the TMA and wgmma read
/// the pattern from the absolute address).
template <int D> struct alignas(1024) HopperTiles {
  using S = HopperShape<D>;
  u16 q[S::kBQ * D];               ///< kPanels panels of [128][64]
  u16 k[S::kStages][S::kBK * D];   ///< per stage, kPanels panels of [64][64]
  u16 v[S::kStages][S::kBK * D];
  /// The guarded pass's value tiles, one per consumer (hopperGuard).
  u16 vFix[S::kConsumers][S::kBK * D];
  u64 qFull;                       ///< the Q block landed
  u64 full[S::kStages];            ///< a stage's K and V landed
  u64 empty[S::kStages];           ///< every consumer warp is done with it
  u64 verdict;                     ///< every consumer warp has voted
  int rerun;                       ///< some consumer saw a non-finite output
  HopperTileInfo info[S::kStages];
};

/// bar.sync `id`, `count`: a barrier of `count` threads (whole warps) of
/// the block; id 0 is __syncthreads'.
__device__ __forceinline__ void namedBarrier(int id, int count) {
#ifdef TESSERA_EMULATE
  tessera_emu::namedBarrier(id, count);
#else
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
#endif
}

/// bar.arrive `id`, `count`: this thread counts towards barrier `id`'s
/// round of `count` threads without waiting for it.
__device__ __forceinline__ void namedBarrierArrive(int id, int count) {
#ifdef TESSERA_EMULATE
  tessera_emu::namedBarrierArrive(id, count);
#else
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
#endif
}

/// The named barriers of the consumers' ping-pong: consumer c may issue its
/// matrix products while it holds barrier kHopperTurn + c (ids 1 and 2 are
/// the guard's, hopperGuard; 0 is __syncthreads').
constexpr int kHopperTurn = 3;

/// The element (key `row`, column `col`) of a [64][D] tile in 128-byte
/// swizzled panels: 16-byte chunk c of a row is stored at chunk c ^ (row % 8)
/// (the panels are 1024-byte aligned, so the row's address bits 7-9 are
/// row % 8).
template <int ROWS>
__device__ __forceinline__ int hopperAt(int row, int col) {
  const int chunk = ((col % 64) / 8) ^ (row % 8);
  return (col / 64) * ROWS * 64 + row * 64 + chunk * 8 + col % 8;
}

/// The guarded pass's partial tile for a consumer warpgroup: its value tile
/// `v` ([64][D] in 128-byte swizzled panels) copied into the warpgroup's
/// own `fix` with NaN and infinite values zeroed (for P V, where 0 * inf
/// would reach rows that cannot see the key), and the output elements of
/// this thread's rows that see such a value made NaN. `bar`: a named
/// barrier of the warpgroup's 128 threads. Returns the tile to read (fix).
template <int E, int D>
__device__ __forceinline__ const u16 *
hopperGuardTile(const u16 *v, u16 *fix, int bar, KeepNibbles keep,
                FlashAcc<D> &acc) {
  using S = HopperShape<D>;
  const int t = threadIdx.x % 128, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
  // Every thread of the warpgroup is done with the previous tile's copy
  // (its wgmmaWait ran) before it is rewritten.
  namedBarrier(bar, 128);
  for (int x = t; x < S::kBK * D / 2; x += 128) {
    const u32 w = reinterpret_cast<const u32 *>(v)[x];
    const u32 nf = nonFiniteBits<E>(w);
    reinterpret_cast<u32 *>(fix)[x] =
        w & (nf & 0x8000u ? 0xffff0000u : 0xffffffffu) &
        (nf & 0x80000000u ? 0x0000ffffu : 0xffffffffu);
  }
  const float nan = __int_as_float(0x7fc00000);
  const u32 bits = keepOf(keep);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned long long sees = rowKeep(bits, h, c2);
#pragma unroll 1
    for (int key = 0; key < S::kBK; ++key)
      if ((sees >> key) & 1ull)
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          const u32 nf = nonFiniteBits<E>(*reinterpret_cast<const u32 *>(
              v + hopperAt<S::kBK>(key, 8 * dn + c2)));
          if (nf & 0x8000u)
            acc.o[dn][2 * h] = nan;
          if (nf & 0x80000000u)
            acc.o[dn][2 * h + 1] = nan;
        }
  }
  // The copy, written through the generic proxy, is read by wgmma (the
  // async proxy) after every thread of the warpgroup wrote its part.
  fenceProxyAsync();
  namedBarrier(bar, 128);
  return fix;
}

/// hopperGuardTile for consumer `c` of the static kernel: stage `st`'s
/// value tile into sm.vFix[c], with named barrier 1 + c.
template <int E, int D>
__device__ __forceinline__ const u16 *
hopperGuard(HopperTiles<D> &sm, int st, int c, KeepNibbles keep,
            FlashAcc<D> &acc) {
  return hopperGuardTile<E, D>(sm.v[st], sm.vFix[c], 1 + c, keep, acc);
}

/// The tensor maps of a call (made on the host by cuTensorMapEncodeTiled
/// over [B, N, H, D] with boxes {64, 1, rows, 1} and 128-byte swizzle:
/// rows 128 for Q, 64 for K and V; the runtime's HopperLaunch.cpp).
struct HopperMaps {
  TensorMap q, k, v;
};

/// What a Hopper kernel takes besides its layer: the call's parameters and
/// tensor maps (on the GPU two kernel parameters, the maps
/// __grid_constant__; the emulator's registrations get them packed so).
struct HopperLaunch {
  AttnParams p;
  HopperMaps maps;
};

/// The kernel's HopperTiles in dynamic shared memory, 1024-byte aligned
/// (the dynamic shared memory of a kernel without static shared memory
/// starts at a 1024-byte boundary of the shared window); where
/// tessera::kernel's names are visible (the emulator wraps bundles in a
/// namespace).
#ifdef TESSERA_EMULATE
#define TESSERA_HOPPER_TILES(name, D)                                          \
  TESSERA_DYNAMIC_TILES(name, HopperTiles<D>)
#else
#define TESSERA_HOPPER_TILES(name, D)                                          \
  extern __shared__ __align__(1024) unsigned char name##Bytes[];               \
  HopperTiles<D> &name = *reinterpret_cast<HopperTiles<D> *>(name##Bytes)
#endif

/// Descriptor of a K-major operand in a 128-byte-swizzled [rows][64] panel
/// set: rows from `row0`, k-step `kk` (16 elements) of the row.
template <int ROWS>
__device__ __forceinline__ u64 hopperKMajor(const u16 *panels, int row0,
                                            int kk) {
  const u16 *at = panels + (kk / 4) * ROWS * 64 + row0 * 64 + (kk % 4) * 16;
  return smemDesc(at, 16, 1024, kDesc128B);
}

/// Descriptor of the value tile as wgmma's N-major B operand of k-step kt
/// (keys 16 kt .. 16 kt + 15, every head-dim column): the 128-byte rows of
/// a panel are keys, consecutive panels 64 columns apart.
template <int D>
__device__ __forceinline__ u64 hopperValues(const u16 *v, int kt) {
  return smemDesc(v + kt * 16 * 64, HopperShape<D>::kBK * 128, 1024,
                  kDesc128B);
}

/// Issues S = Q K^T for a consumer warpgroup's 64 query rows (from row0 of
/// the [QROWS][D] Q panels `q`) against a key tile `k` (both K-major, in
/// the 128-byte swizzle) into `sf` (committed; the caller waits).
template <int E, int D, int QROWS>
__device__ __forceinline__ void hopperScores(float (&sf)[32], const u16 *q,
                                             int row0, const u16 *k) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmmaSS<E, 64>(sf, hopperKMajor<QROWS>(q, row0, kk),
                   hopperKMajor<HopperShape<D>::kBK>(k, 0, kk), kk > 0);
  wgmmaCommit();
}

/// O += P V of a consumer warpgroup (P in registers, V the value tile
/// `v`), waited for.
template <int E, int D>
__device__ __forceinline__ void hopperAccumulate(float (&o)[D / 2],
                                                 const u32 (&pa)[4][4],
                                                 const u16 *v) {
  wgmmaFenceRegs(o);
  wgmmaFence();
#pragma unroll
  for (int kt = 0; kt < 4; ++kt)
    wgmmaRSTransB<E, D>(o, pa[kt], hopperValues<D>(v, kt), true);
  wgmmaCommit();
  wgmmaWait<0>();
  wgmmaFenceRegs(o);
}

/// Releases ring stage `empty` for the producer: one arrival per warp,
/// after every lane is done with it.
__device__ __forceinline__ void hopperRelease(u64 *empty) {
  __syncwarp();
  if (threadIdx.x % 32 == 0)
    mbarArrive(empty);
}

/// The consumers' vote after a walk: whether any consumer warp holds a
/// NaN or infinite output element (then every consumer and the producer
/// walk again, guarded). One arrival per consumer warp on `verdict`, after
/// its flag in `rerun`; every consumer thread waits for the verdict.
template <int D>
__device__ __forceinline__ bool hopperVote(const float (&o)[D / 2], int *rerun,
                                           u64 *verdict) {
  float sum = 0.f; // 0 * (a non-finite term) keeps it non-finite
#pragma unroll
  for (int x = 0; x < D / 2; ++x)
    sum += 0.f * o[x];
  if (__any_sync(0xffffffff, sum != 0.f) && threadIdx.x % 32 == 0)
    atomicOr(rerun, 1);
  __syncwarp();
  if (threadIdx.x % 32 == 0)
    mbarArrive(verdict);
  mbarWait(verdict, 0);
  return *rerun != 0;
}

/// The producer: one thread of warpgroup 0.
template <int D, class Groups>
__device__ __forceinline__ void
hopperProduce(HopperTiles<D> &sm, const HopperMaps &maps, const RunCtx &ctx,
              i64 pattern, int b, int head, int kvHead, int q0) {
  using S = HopperShape<D>;
  mbarArriveExpectTx(&sm.qFull, S::kBQ * D * 2);
#pragma unroll
  for (int pn = 0; pn < S::kPanels; ++pn)
    tmaLoad(sm.q + pn * S::kBQ * 64, &maps.q, 64 * pn, head, q0, b,
            &sm.qFull);
  int i = 0;
  for (int pass = 0; pass < 2; ++pass) {
  Run run = noRun();
  i64 kb = 0, next = 0;
  for (;; ++i) {
    bool have = true;
    if (kb < run.hi) {
      ++kb;
    } else {
      run = Groups::runFrom(pattern, ctx, next);
      have = isRun(run);
      if (have) {
        kb = run.lo;
        next = run.hi + 1;
      }
    }
    const int st = i % S::kStages;
    // The stage's previous use (i - kStages) must be released first.
    if (i >= S::kStages)
      mbarWait(&sm.empty[st], (u32)((i / S::kStages - 1) & 1));
    sm.info[st] = {kb, run.cls, have ? 0 : 1};
    if (!have) {
      mbarArrive(&sm.full[st]);
      ++i;
      break;
    }
    mbarArriveExpectTx(&sm.full[st], 2 * S::kTileBytes);
#pragma unroll
    for (int pn = 0; pn < S::kPanels; ++pn) {
      tmaLoad(sm.k[st] + pn * S::kBK * 64, &maps.k, 64 * pn, kvHead,
              (int)(kb * S::kBK), b, &sm.full[st]);
      tmaLoad(sm.v[st] + pn * S::kBK * 64, &maps.v, 64 * pn, kvHead,
              (int)(kb * S::kBK), b, &sm.full[st]);
    }
  }
  // The consumers' vote: walk again (guarded) where one saw a non-finite
  // output.
  if (pass == 0) {
    mbarWait(&sm.verdict, 0);
    if (!sm.rerun)
      return;
  }
  }
}

/// A consumer warpgroup `c` (0 or 1): its 64 rows' attention into `acc`.
///
/// Ping-pong (FlashAttention-3's scheduling, written here): the two
/// consumers take turns to issue their matrix products, P V of one tile and
/// S = Q K^T of the next, so that one's softmax runs while the other's
/// products occupy the tensor cores. Consumer c takes its turn with bar.sync
/// kHopperTurn + c (256 threads: its own 128, and the other's hand-over by
/// bar.arrive) before P V, keeps it across the next tile's S, and hands it
/// over after issuing S. Consumer 0 issues the first S without a turn;
/// consumer 1 waits for the first hand-over. Both walk the same tiles, so
/// the rounds balance: at the last-tile marker each hands its turn over and
/// consumer 0 consumes consumer 1's last hand-over (no round is left open
/// for the guarded pass or the next block: the emulator counts any,
/// tessera_emu::leftoverArrivals()).
template <int E, int D, class Groups>
__device__ __forceinline__ void
hopperConsume(HopperTiles<D> &sm, const AttnParams &p, i64 pattern, int c,
              i64 rowPos, i64 head, i64 numHeads, FlashAcc<D> &acc) {
  using S = HopperShape<D>;
  const int c2 = (threadIdx.x % 4) * 2;
  float(&o)[D / 2] = *reinterpret_cast<float(*)[D / 2]>(&acc.o[0][0]);
  mbarWait(&sm.qFull, 0);
  int i = 0;
  for (int pass = 0; pass < 2; ++pass) {
  flashInit<D>(acc);
  if (c == 1)
    namedBarrier(kHopperTurn + 1, 256);
  for (;; ++i) {
    const int st = i % S::kStages;
    mbarWait(&sm.full[st], (u32)((i / S::kStages) & 1));
    const HopperTileInfo ti = sm.info[st];
    if (ti.last) { // released too: the producer's next pass reuses it
      hopperRelease(&sm.empty[st]);
      namedBarrierArrive(kHopperTurn + 1 - c, 256);
      if (c == 0)
        namedBarrier(kHopperTurn, 256);
      ++i;
      break;
    }
    float s[8][4];
    float(&sf)[32] = *reinterpret_cast<float(*)[32]>(&s[0][0]);
    hopperScores<E, D, S::kBQ>(sf, sm.q, 64 * c, sm.k[st]);
    namedBarrierArrive(kHopperTurn + 1 - c, 256); // the other's turn
    wgmmaWait<0>();
    wgmmaFenceRegs(sf);
    const i64 k0 = ti.kb * S::kBK;
    const int room = (int)minI(p.nk - k0, S::kBK); // below Nk
    KeepNibbles keep = {0u, 0u};
    if (ti.cls == kPartial) {
      keep = partialKeep<Groups>(pattern, rowPos, k0, c2, room, head,
                                 numHeads);
      applyKeepNibbles(s, keep);
    }
    if (room < S::kBK) // the last key tile
      applyKeep(s, columnBits(c2, room));
    u32 pa[4][4];
    pipeSoftmax<E, D>(s, p.scaleLog2, acc, pa);
    const u16 *vt = sm.v[st];
    if (pass == 1 && ti.cls == kPartial)
      vt = hopperGuard<E, D>(sm, st, c, keep, acc);
    namedBarrier(kHopperTurn + c, 256); // this consumer's turn
    hopperAccumulate<E, D>(o, pa, vt);
    hopperRelease(&sm.empty[st]);
  }
  if (pass == 1 || !hopperVote<D>(o, &sm.rerun, &sm.verdict))
    return;
  }
}

/// The kernel body for one (batch entry, query block, head) of a static
/// group: blockIdx.x the query block, blockIdx.z the batch entry, `slot`
/// the launch slot (the head), kThreads threads.
template <int E, int D, class Groups>
__device__ __forceinline__ void
hopperForward(const LayerTable &t, const AttnParams &p, const HopperMaps &maps,
              HopperTiles<D> &sm, i64 slot, i64 pattern) {
  using S = HopperShape<D>;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;
  const i64 head = t.computedHead[slot];
  const i64 kvHead = head / (p.numHeads / p.numKvHeads);
  const i64 b = blockIdx.z, qb = blockIdx.x;
  const i64 q0 = qb * S::kBQ, q1 = minI(q0 + S::kBQ, p.nq);
  if (threadIdx.x == 0) {
    mbarInit(&sm.qFull, 1);
    for (int st = 0; st < S::kStages; ++st) {
      mbarInit(&sm.full[st], 1);
      mbarInit(&sm.empty[st], 4 * S::kConsumers); // a lane 0 per warp
    }
    mbarInit(&sm.verdict, 4 * S::kConsumers);
    sm.rerun = 0;
    fenceBarrierInit();
  }
  __syncthreads();
  if (wg == 0) {
    setMaxNRegDec<S::kProducerRegs>();
    if (threadIdx.x == 0) {
      const RunCtx ctx =
          makeRunCtx(q0, q1, p.nq, p.nk, S::kBK, head, t.numHeads);
      hopperProduce<D, Groups>(sm, maps, ctx, pattern, (int)b, (int)head,
                               (int)kvHead, (int)q0);
    }
    return;
  }
  setMaxNRegInc<S::kConsumerRegs>();
  const int c = wg - 1;
  const int row0 = c * 64 + warp * 16 + lane / 4;
  const i64 rowPos = q0 + row0 + p.nk - p.nq;
  FlashAcc<D> acc;
  hopperConsume<E, D, Groups>(sm, p, pattern, c, rowPos, head, t.numHeads,
                              acc);
  const i64 qi0 = q0 + row0, qi1 = qi0 + 8;
  flashStore<E, D>(acc, p.o + b * p.oStrideB + head * p.oStrideH, p.oStrideS,
                   p.lse ? p.lse + (b * p.numHeads + head) * p.nq : nullptr,
                   qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_HOPPERFORWARD_CUH
