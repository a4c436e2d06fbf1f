//===- HopperDynamic.cuh - sm_90a twins of the dynamic attention -*- CUDA -*-===//
//
// The attention over a dynamic group's index (the walks of DynamicIndex.cuh:
// vertical-slash, block top-k, routing's segments and rest) on Hopper, with
// HopperForward.cuh's primitives (issue 18). One block is the mma.sync
// kernel's: one 64-row query tile of one (batch entry, head), the same grid
// and the same walk, so that the index kernels, the launch plan and the
// stores are shared; 256 threads:
//
//   warpgroup 0, warp 0 (the producer): lane 0 advances the walk (next(),
//     the walk's cursor in shared memory as in the mma.sync kernel) into
//     the descriptor of the next free stage of a kStages ring. A contiguous
//     tile (keys k0 .. k0 + 63: static runs, block top-k's blocks, the
//     vertical-slash diagonals' ranges) is two TMA loads per 64 head-dim
//     columns (K and V, 128-byte swizzle, rows past Nk zero-filled by the
//     tensor map) announced on the stage's `full` barrier with their bytes.
//     A gathered tile (vertical-slash columns, a cluster's keys), which TMA
//     cannot gather, is copied by the warp's 32 lanes with cp.async into
//     the same swizzled layout (rows past the tile's count zero-filled),
//     with the keys and column edges keep() reads staged beside it; the
//     warp waits for its copies, fences them for the async proxy (wgmma
//     reads shared memory there) and arrives on `full`. Warps 1-3 exit.
//   warpgroup 1 (the consumer): the 64 query rows. Per stage: wait `full`,
//     S = Q K^T by wgmma (m64n64k16, both operands from shared memory),
//     the walk's keep bits on a masked tile (wgmma's accumulator fragment of
//     a warp is mma.m16n8k16's, so keep() and applyKeep are the mma.sync
//     kernel's), the online softmax, O += P V by wgmma (P from registers),
//     then one arrival per warp on the stage's `empty` barrier.
//
// Before the roles split, all 256 threads copy the query tile (contiguous
// rows, or routing's gathered rows) with cp.async into the swizzled layout.
// Non-finite values: as HopperForward.cuh, a vote after the walk and, if
// an output element is NaN or infinite, a second, guarded walk (the
// producer restarts the walk from a copy of its start; the consumer zeroes
// non-finite values of a masked tile's copy and makes NaN the outputs of
// the rows that see them).
//
// Not here (docs/bundles.md): two consumer warpgroups (FlashAttention-3's
// ping-pong needs two query tiles walking in step; a block's walk is one
// query tile's), setmaxnreg (at 256 threads every thread may hold 255
// registers), cp.async completion tracked by the mbarrier instead of the
// producer waiting for its own gathers.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_HOPPERDYNAMIC_CUH
#define TESSERA_KERNEL_HOPPERDYNAMIC_CUH

namespace tessera {
namespace kernel {

/// The twins' fixed shapes at head dim D (64 or 128).
template <int D> struct HopperDynShape {
  static constexpr int kBQ = 64, kBK = 64, kThreads = 256;
  static constexpr int kStages = HopperShape<D>::kStages;
  static constexpr u32 kTileBytes = kBK * D * 2;
  static constexpr int kChunksPerRow = D / 8;
};

/// The twins' dynamic shared memory (1024-byte aligned: the swizzle).
template <int D> struct alignas(1024) HopperDynTiles {
  using S = HopperDynShape<D>;
  u16 q[S::kBQ * D];             ///< kPanels panels of [64][64]
  u16 k[S::kStages][S::kBK * D]; ///< per stage, panels of [64][64]
  u16 v[S::kStages][S::kBK * D];
  u16 vFix[S::kBK * D];          ///< the guarded pass's value tile
  u64 full[S::kStages];          ///< a stage's K and V landed
  u64 empty[S::kStages];         ///< every consumer warp is done with it
  u64 verdict;                   ///< every consumer warp has voted
  int rerun;                     ///< the consumer saw a non-finite output
  DynTile tile[S::kStages];      ///< the stage's descriptor (count 0: end)
  DynRows rows[S::kStages];      ///< a gathered stage's keys and edges
};

/// What a twin's attention takes besides the walk: its shared memory and
/// the call's tensor maps (K and V; HopperMaps.q is not read).
template <int D> struct HopperDyn {
  HopperDynTiles<D> &sm;
  const HopperMaps &maps;
};

/// The twins' HopperDynTiles in dynamic shared memory. The walks and the
/// guarded pass's start are static shared memory, before which the dynamic
/// part begins, so it is aligned to 1024 bytes here (the manifest's
/// dynamic_shared asks 1024 bytes more than the tiles).
#ifdef TESSERA_EMULATE
#define TESSERA_HOPPER_DYN_TILES(name, D)                                      \
  TESSERA_DYNAMIC_TILES(name, HopperDynTiles<D>)
#else
#define TESSERA_HOPPER_DYN_TILES(name, D)                                      \
  extern __shared__ __align__(1024) unsigned char name##Bytes[];               \
  HopperDynTiles<D> &name = *reinterpret_cast<HopperDynTiles<D> *>(           \
      name##Bytes + ((1024u - (smemWindowAddress(name##Bytes) & 1023u)) &     \
                     1023u))
#endif

/// Copies 64 rows of a [seq, D] slice (row stride `stride`) into `dst`
/// (128-byte swizzled [64][64] panels): row r from rows[r] when `rows` is
/// not null (r < count), else from r0 + r (r0 + r < limit); the others as
/// zeros. Threads `t` of `nt`: cp.async of 16-byte chunks (committed, not
/// waited for) when every row start is 16-byte aligned (`vec`), else
/// element by element.
template <int D>
__device__ __forceinline__ void hopperCopyRows(u16 *dst, const u16 *src,
                                               i64 stride, i64 r0, i64 limit,
                                               const i64 *rows, int count,
                                               bool vec, int t, int nt) {
  constexpr int kCpr = HopperDynShape<D>::kChunksPerRow;
  for (int i = t; i < 64 * kCpr; i += nt) {
    const int row = i / kCpr, chunk = i % kCpr;
    const bool in = rows ? row < count : r0 + row < limit;
    const u16 *from = in ? src + (rows ? rows[row] : r0 + row) * stride : src;
    u16 *to = dst + hopperAt<64>(row, 8 * chunk);
    if (vec) {
      cpAsync16(to, from + 8 * chunk, in);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        to[e] = in ? from[8 * chunk + e] : u16(0);
    }
  }
  if (vec)
    cpAsyncCommit();
}

/// The producer (warp 0): the walk's tiles into the ring, twice if the
/// consumer's vote asks for the guarded pass.
template <int D, class Walk>
__device__ __forceinline__ void
hopperDynProduce(HopperDynTiles<D> &sm, const HopperMaps &maps, Walk &w,
                 Walk &start, const u16 *kBase, i64 kStride, const u16 *vBase,
                 i64 vStride, bool vec, int b, int kvHead) {
  using S = HopperDynShape<D>;
  const int lane = threadIdx.x % 32;
  // The walk as the block set it up (after the barrier that published
  // every thread's part of it, such as routing's query rows).
  if (lane == 0)
    start = w;
  int i = 0;
  for (int pass = 0; pass < 2; ++pass) {
    if (lane == 0 && pass == 1)
      w = start;
    for (;; ++i) {
      const int st = i % S::kStages;
      // The stage's previous use (i - kStages) must be released first.
      if (i >= S::kStages)
        mbarWait(&sm.empty[st], (u32)((i / S::kStages - 1) & 1));
      if (lane == 0)
        w.next(sm.tile[st]); // count 0: the walk is over
      __syncwarp();
      const DynTile t = sm.tile[st];
      if (!t.count) {
        if (lane == 0)
          mbarArrive(&sm.full[st]);
        ++i;
        break;
      }
      if (t.list) {
        // Gathered: the keys and column edges for keep(), then the rows.
        DynRows &r = sm.rows[st];
        for (int x = lane; x < 64; x += 32)
          r.key[x] = t.list[x < t.count ? x : t.count - 1];
        if (lane < 4)
          r.edge[lane] = columnsKeep(t.count, 2 * lane);
        hopperCopyRows<D>(sm.k[st], kBase, kStride, 0, 0, t.list, t.count,
                          vec, lane, 32);
        hopperCopyRows<D>(sm.v[st], vBase, vStride, 0, 0, t.list, t.count,
                          vec, lane, 32);
        if (vec)
          cpAsyncWait<0>();
        // Written through the generic proxy, read by wgmma (the async one).
        fenceProxyAsync();
        __syncwarp();
        if (lane == 0)
          mbarArrive(&sm.full[st]);
      } else if (lane == 0) {
        mbarArriveExpectTx(&sm.full[st], 2 * S::kTileBytes);
#pragma unroll
        for (int pn = 0; pn < D / 64; ++pn) {
          tmaLoad(sm.k[st] + pn * S::kBK * 64, &maps.k, 64 * pn, kvHead,
                  (int)t.k0, b, &sm.full[st]);
          tmaLoad(sm.v[st] + pn * S::kBK * 64, &maps.v, 64 * pn, kvHead,
                  (int)t.k0, b, &sm.full[st]);
        }
      }
    }
    if (pass == 0) {
      mbarWait(&sm.verdict, 0);
      if (!sm.rerun)
        return;
    }
  }
}

/// The consumer warpgroup: the walk's tiles from the ring into `acc`.
template <int E, int D, class Walk>
__device__ __forceinline__ void hopperDynConsume(HopperDynTiles<D> &sm,
                                                 const Walk &w,
                                                 float scaleLog2,
                                                 FlashAcc<D> &acc) {
  using S = HopperDynShape<D>;
  float(&o)[D / 2] = *reinterpret_cast<float(*)[D / 2]>(&acc.o[0][0]);
  const typename Walk::Lane wl = w.lane();
  int i = 0;
  for (int pass = 0; pass < 2; ++pass) {
    flashInit<D>(acc);
    for (;; ++i) {
      const int st = i % S::kStages;
      mbarWait(&sm.full[st], (u32)((i / S::kStages) & 1));
      const DynTile t = sm.tile[st];
      if (!t.count) { // released too: the producer's next pass reuses it
        hopperRelease(&sm.empty[st]);
        ++i;
        break;
      }
      float s[8][4];
      float(&sf)[32] = *reinterpret_cast<float(*)[32]>(&s[0][0]);
      hopperScores<E, D, S::kBQ>(sf, sm.q, 0, sm.k[st]);
      wgmmaWait<0>();
      wgmmaFenceRegs(sf);
      u32 keep = 0xffffffffu;
      if (t.masked) {
        keep = w.keep(t, &sm.rows[st], wl);
        applyKeep(s, keep);
      }
      u32 pa[4][4];
      pipeSoftmax<E, D>(s, scaleLog2, acc, pa);
      const u16 *vt = sm.v[st];
      if (pass == 1 && t.masked)
        vt = hopperGuardTile<E, D>(vt, sm.vFix, 1, nibblesOf(keep), acc);
      hopperAccumulate<E, D>(o, pa, vt);
      hopperRelease(&sm.empty[st]);
    }
    if (pass == 1 || !hopperVote<D>(o, &sm.rerun, &sm.verdict))
      return;
  }
}

/// dynAttendWalk of the sm_90a twins (declared in DynamicIndex.cuh): the
/// query tile (contiguous rows from q0, or rows[0, count)), then the roles.
/// True in the consumer's threads, whose `acc` holds their rows.
template <int E, int D, class Walk>
__device__ __forceinline__ bool
dynAttendWalk(const AttnParams &p, const DynSlice &sl, Walk &w,
              HopperDyn<D> &h, i64 q0, const i64 *rows, int count,
              FlashAcc<D> &acc) {
  using S = HopperDynShape<D>;
  HopperDynTiles<D> &sm = h.sm;
  const bool vec = p.vectorLoads != 0;
  __shared__ Walk start; // the walk's start, for the guarded pass
  if (threadIdx.x == 0) {
    for (int st = 0; st < S::kStages; ++st) {
      mbarInit(&sm.full[st], 1);
      mbarInit(&sm.empty[st], 4); // a lane 0 per consumer warp
    }
    mbarInit(&sm.verdict, 4);
    sm.rerun = 0;
    fenceBarrierInit();
  }
  hopperCopyRows<D>(sm.q, p.q + sl.b * p.qStrideB + sl.head * p.qStrideH,
                    p.qStrideS, q0, p.nq, rows, count, vec, (int)threadIdx.x,
                    S::kThreads);
  if (vec)
    cpAsyncWait<0>();
  fenceProxyAsync();
  __syncthreads(); // the Q tile, the barriers and the walk are published
  if (threadIdx.x >= 128) {
    hopperDynConsume<E, D>(sm, w, p.scaleLog2, acc);
    return true;
  }
  if (threadIdx.x < 32)
    hopperDynProduce<D>(sm, h.maps, w, start,
                        p.k + sl.b * p.kStrideB + sl.kvHead * p.kStrideH,
                        p.kStrideS,
                        p.v + sl.b * p.vStrideB + sl.kvHead * p.vStrideH,
                        p.vStrideS, vec, (int)sl.b, (int)sl.kvHead);
  return false;
}

/// What a dynamic twin takes: the call's parameters, the group's
/// arguments and the tensor maps (on the GPU three kernel parameters, the
/// maps __grid_constant__; the emulator's registrations get them packed
/// so).
struct HopperDynLaunch {
  AttnParams p;
  DynArgs a;
  HopperMaps maps;
};

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_HOPPERDYNAMIC_CUH
