//===- HopperDynamic.cuh - sm_90a twins of the dynamic attention -*- CUDA
//-*-===//
//
// The attention over a dynamic group's index (the walks of DynamicIndex.cuh:
// vertical-slash, block top-k, routing's segments and rest) on Hopper, with
// HopperForward.cuh's primitives (issue 18). A block walks two 64-row query
// tiles of one (batch entry, head): the mma.sync kernel's tiles 2x and
// 2x + 1 (kHopperDynParts, DynQueries; grid dynTwinGrid of the mma.sync
// kernel's), each with its own walk, so that the index kernels, the walks
// and the stores are shared with the mma.sync kernels; 384 threads:
//
//   warpgroup 0, warp 0 (the producer, setmaxnreg down to kProducerRegs):
//     lane 0 advances the two walks (next(), the walks' cursors in shared
//     memory) into the next free stage of the tile's own kStages ring, one
//     tile of each in turn. A contiguous tile (keys k0 .. k0 + 63: static
//     runs, block top-k's blocks, the vertical-slash diagonals' ranges) is
//     two TMA loads per 64 head-dim columns (K and V, 128-byte swizzle,
//     rows past Nk zero-filled by the tensor map) announced on the stage's
//     `full` barrier with their bytes. A gathered tile (vertical-slash
//     columns, a cluster's keys), which TMA cannot gather, is copied by the
//     warp's 32 lanes with cp.async into the same swizzled layout (rows past
//     the tile's count zero-filled), with the keys and column edges keep()
//     reads staged beside it; the warp waits for its copies, fences them for
//     the async proxy (wgmma reads shared memory there) and arrives on
//     `full`. Warps 1-3 exit.
//   warpgroups 1 and 2 (the consumers, setmaxnreg up to kConsumerRegs): one
//     query tile each. Per stage of its ring: wait `full`, S = Q K^T by
//     wgmma (m64n64k16, both operands from shared memory), the walk's keep
//     bits on a masked tile (wgmma's accumulator fragment of a warp is
//     mma.m16n8k16's, so keep() and applyKeep are the mma.sync kernel's),
//     the online softmax, O += P V by wgmma (P from registers), then one
//     arrival per warp on the stage's `empty` barrier.
//
// The two walks visit different numbers of tiles (a dynamic index is per
// query tile), so the consumers are not turned in lock step as the static
// kernel's are (FlashAttention-3's ping-pong, HopperForward.cuh): each runs
// its own ring, and one's softmax overlaps the other's matrix products as
// the warp schedulers interleave them. Neither waits for the other; the
// producer waits only for a ring's release or a consumer's vote, which
// that consumer gives without the other: no order of the two can
// deadlock (the emulator runs them in every interleaving its scheduler
// picks).
//
// Before the roles split, all 384 threads copy the two query tiles
// (contiguous rows, or routing's gathered rows) with cp.async into the
// swizzled layout. Non-finite values: as HopperForward.cuh, per consumer a
// vote after its walk and, if an output element is NaN or infinite, a
// second, guarded walk of that tile (the producer restarts that walk from
// a copy of its start; the consumer zeroes non-finite values of a masked
// tile's copy and makes NaN the outputs of the rows that see them).
//
// Not here (docs/bundles.md): cp.async completion tracked by the mbarrier
// instead of the producer waiting for its own gathers.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_HOPPERDYNAMIC_CUH
#define TESSERA_KERNEL_HOPPERDYNAMIC_CUH

namespace tessera {
namespace kernel {

/// The twins' fixed shapes at head dim D (64 or 128).
template <int D> struct HopperDynShape {
  static constexpr int kBQ = 64, kBK = 64;
  /// Query tiles (and consumer warpgroups) a block; one producer warpgroup.
  static constexpr int kParts = kHopperDynParts;
  static constexpr int kThreads = 128 * (1 + kParts);
  /// Ring stages per consumer (both rings within the 227 KiB of a block:
  /// 173 KiB at head_dim 64, 200 KiB at 128).
  static constexpr int kStages = D == 64 ? 4 : 2;
  static constexpr u32 kTileBytes = kBK * D * 2;
  static constexpr int kChunksPerRow = D / 8;
  /// setmaxnreg as the static kernel's (the block starts with 168 a
  /// thread: __launch_bounds__(384, 1)); the producer runs the walks'
  /// next(), the static runs of the pattern among them.
  static constexpr int kProducerRegs = HopperShape<D>::kProducerRegs;
  static constexpr int kConsumerRegs = HopperShape<D>::kConsumerRegs;
  static_assert(kThreads == HopperShape<D>::kThreads,
                "the register split assumes the static kernel's block");
};

/// The twins' dynamic shared memory (1024-byte aligned: the swizzle): per
/// query tile c its Q tile, its ring of kStages K and V tiles with their
/// barriers and descriptors, and its guard copy of a value tile.
template <int D> struct alignas(1024) HopperDynTiles {
  using S = HopperDynShape<D>;
  static constexpr int P = S::kParts;
  u16 q[P][S::kBQ * D];             ///< kPanels panels of [64][64]
  u16 k[P][S::kStages][S::kBK * D]; ///< per stage, panels of [64][64]
  u16 v[P][S::kStages][S::kBK * D];
  u16 vFix[P][S::kBK * D];     ///< the guarded pass's value tile
  u64 full[P][S::kStages];     ///< a stage's K and V landed
  u64 empty[P][S::kStages];    ///< every consumer warp is done with it
  u64 verdict[P];              ///< every consumer warp has voted
  int rerun[P];                ///< the consumer saw a non-finite output
  DynTile tile[P][S::kStages]; ///< the stage's descriptor (count 0: end)
  DynRows rows[P][S::kStages]; ///< a gathered stage's keys and edges
};

/// The block's tiles type for the attend functions (DynamicIndex.cuh).
template <int D> struct DynParts<HopperDyn<D>> {
  static constexpr int value = kHopperDynParts;
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

/// One step of the producer (warp 0) for query tile C: its next tile
/// into ring C (or, when its walk was issued, its consumer's vote awaited
/// and, if asked, the walk restarted for the guarded pass). `i`: the ring's
/// stages issued; `pass`; `state`: 0 issuing, 1 the walk issued (its end
/// too) and the vote due, 2 done. Written per C so that the state stays in
/// registers (indexed by a variable, it would live in local memory).
template <int C, int D, class Walk>
__device__ __forceinline__ void
hopperDynStep(HopperDynTiles<D> &sm, const HopperMaps &maps, Walk &w,
              const Walk &start, bool live, int &i, int &pass, int &state,
              const u16 *kBase, i64 kStride, const u16 *vBase, i64 vStride,
              bool vec, int b, int kvHead) {
  using S = HopperDynShape<D>;
  const int lane = threadIdx.x % 32;
  if (state == 2)
    return;
  if (state == 1) { // the walk was issued: the consumer's vote
    mbarWait(&sm.verdict[C], 0);
    if (!sm.rerun[C]) {
      state = 2;
      return;
    }
    if (lane == 0)
      w = start;
    pass = 1;
    state = 0;
  }
  const int st = i % S::kStages;
  // The stage's previous use (i - kStages) must be released first.
  if (i >= S::kStages)
    mbarWait(&sm.empty[C][st], (u32)((i / S::kStages - 1) & 1));
  ++i;
  DynTile &slot = sm.tile[C][st];
  if (lane == 0) {
    if (live)
      w.next(slot); // count 0: the walk is over
    else
      slot.count = 0; // past the launch's tiles: an empty walk
  }
  __syncwarp();
  const DynTile t = slot;
  if (!t.count) {
    if (lane == 0)
      mbarArrive(&sm.full[C][st]);
    state = pass == 0 ? 1 : 2;
    return;
  }
  if (t.list) {
    // Gathered: the keys and column edges for keep(), then the rows.
    DynRows &r = sm.rows[C][st];
    for (int x = lane; x < 64; x += 32)
      r.key[x] = t.list[x < t.count ? x : t.count - 1];
    if (lane < 4)
      r.edge[lane] = columnsKeep(t.count, 2 * lane);
    hopperCopyRows<D>(sm.k[C][st], kBase, kStride, 0, 0, t.list, t.count, vec,
                      lane, 32);
    hopperCopyRows<D>(sm.v[C][st], vBase, vStride, 0, 0, t.list, t.count, vec,
                      lane, 32);
    if (vec)
      cpAsyncWait<0>();
    // Written through the generic proxy, read by wgmma (the async one).
    fenceProxyAsync();
    __syncwarp();
    if (lane == 0)
      mbarArrive(&sm.full[C][st]);
  } else if (lane == 0) {
    mbarArriveExpectTx(&sm.full[C][st], 2 * S::kTileBytes);
#pragma unroll
    for (int pn = 0; pn < D / 64; ++pn) {
      tmaLoad(sm.k[C][st] + pn * S::kBK * 64, &maps.k, 64 * pn, kvHead,
              (int)t.k0, b, &sm.full[C][st]);
      tmaLoad(sm.v[C][st] + pn * S::kBK * 64, &maps.v, 64 * pn, kvHead,
              (int)t.k0, b, &sm.full[C][st]);
    }
  }
}

/// The producer (warp 0): the tiles of walk c into ring c for each query
/// tile c, one tile of each walk in turn, until both walks (and their
/// guarded passes, where asked) are issued.
template <int D, class Walk>
__device__ __forceinline__ void
hopperDynProduce(HopperDynTiles<D> &sm, const HopperMaps &maps,
                 Walk (&w)[kHopperDynParts], Walk (&start)[kHopperDynParts],
                 const DynQueries<kHopperDynParts> &qt, const u16 *kBase,
                 i64 kStride, const u16 *vBase, i64 vStride, bool vec, int b,
                 int kvHead) {
  static_assert(kHopperDynParts == 2, "the producer is written for two");
  const int lane = threadIdx.x % 32;
  // The walks as the block set them up (after the barrier that published
  // every thread's part of them, such as routing's query rows).
  const bool live0 = qt.live[0], live1 = qt.live[1];
  if (lane == 0) {
    if (live0)
      start[0] = w[0];
    if (live1)
      start[1] = w[1];
  }
  int i0 = 0, i1 = 0, pass0 = 0, pass1 = 0, state0 = 0, state1 = 0;
  while (state0 != 2 || state1 != 2) {
    hopperDynStep<0, D>(sm, maps, w[0], start[0], live0, i0, pass0, state0,
                        kBase, kStride, vBase, vStride, vec, b, kvHead);
    hopperDynStep<1, D>(sm, maps, w[1], start[1], live1, i1, pass1, state1,
                        kBase, kStride, vBase, vStride, vec, b, kvHead);
  }
}

/// Consumer warpgroup c: the tiles of its walk from ring c into `acc`.
template <int E, int D, class Walk>
__device__ __forceinline__ void hopperDynConsume(HopperDynTiles<D> &sm, int c,
                                                 const Walk &w, float scaleLog2,
                                                 FlashAcc<D> &acc) {
  using S = HopperDynShape<D>;
  float(&o)[D / 2] = *reinterpret_cast<float(*)[D / 2]>(&acc.o[0][0]);
  const typename Walk::Lane wl = w.lane();
  int i = 0;
  for (int pass = 0; pass < 2; ++pass) {
    flashInit<D>(acc);
    for (;; ++i) {
      const int st = i % S::kStages;
      mbarWait(&sm.full[c][st], (u32)((i / S::kStages) & 1));
      const DynTile t = sm.tile[c][st];
      if (!t.count) { // released too: the producer's next pass reuses it
        hopperRelease(&sm.empty[c][st]);
        ++i;
        break;
      }
      float s[8][4];
      float(&sf)[32] = *reinterpret_cast<float(*)[32]>(&s[0][0]);
      hopperScores<E, D, S::kBQ>(sf, sm.q[c], 0, sm.k[c][st]);
      wgmmaWait<0>();
      wgmmaFenceRegs(sf);
      u32 keep = 0xffffffffu;
      if (t.masked) {
        keep = w.keep(t, &sm.rows[c][st], wl);
        applyKeep(s, keep);
      }
      u32 pa[4][4];
      pipeSoftmax<E, D>(s, scaleLog2, acc, pa);
      const u16 *vt = sm.v[c][st];
      if (pass == 1 && t.masked) // named barrier 1 + c: the warpgroup's
        vt = hopperGuardTile<E, D>(vt, sm.vFix[c], 1 + c, nibblesOf(keep), acc);
      hopperAccumulate<E, D>(o, pa, vt);
      hopperRelease(&sm.empty[c][st]);
    }
    if (pass == 1 || !hopperVote<D>(o, &sm.rerun[c], &sm.verdict[c]))
      return;
  }
}

/// dynAttendWalk of the sm_90a twins (declared in DynamicIndex.cuh): the
/// query tiles (contiguous rows from q0[c], or rows[c][0, count[c])), then
/// the roles. Returns the consumer's tile, whose rows `acc` holds, or -1
/// (the producer warpgroup).
template <int E, int D, class Walk>
__device__ __forceinline__ int
dynAttendWalk(const AttnParams &p, const DynSlice &sl,
              Walk (&w)[kHopperDynParts], HopperDyn<D> &h,
              const DynQueries<kHopperDynParts> &qt, FlashAcc<D> &acc) {
  using S = HopperDynShape<D>;
  HopperDynTiles<D> &sm = h.sm;
  const bool vec = p.vectorLoads != 0;
  // The walks' starts, for the guarded passes.
  __shared__ Walk start[kHopperDynParts];
  if (threadIdx.x == 0) {
    for (int c = 0; c < S::kParts; ++c) {
      for (int st = 0; st < S::kStages; ++st) {
        mbarInit(&sm.full[c][st], 1);
        mbarInit(&sm.empty[c][st], 4); // a lane 0 per consumer warp
      }
      mbarInit(&sm.verdict[c], 4);
      sm.rerun[c] = 0;
    }
    fenceBarrierInit();
  }
  const u16 *q = p.q + sl.b * p.qStrideB + sl.head * p.qStrideH;
#pragma unroll // (qt indexed by a constant: in registers)
  for (int c = 0; c < S::kParts; ++c)
    hopperCopyRows<D>(sm.q[c], q, p.qStrideS, qt.q0[c], p.nq, qt.rows[c],
                      qt.count[c], vec, (int)threadIdx.x, S::kThreads);
  if (vec)
    cpAsyncWait<0>();
  fenceProxyAsync();
  __syncthreads(); // the Q tiles, the barriers and the walks are published
  const int wg = (int)threadIdx.x / 128;
  if (wg == 0) {
    setMaxNRegDec<S::kProducerRegs>();
    if (threadIdx.x < 32)
      hopperDynProduce<D>(sm, h.maps, w, start, qt,
                          p.k + sl.b * p.kStrideB + sl.kvHead * p.kStrideH,
                          p.kStrideS,
                          p.v + sl.b * p.vStrideB + sl.kvHead * p.vStrideH,
                          p.vStrideS, vec, (int)sl.b, (int)sl.kvHead);
    return -1;
  }
  setMaxNRegInc<S::kConsumerRegs>();
  const int c = wg - 1;
  hopperDynConsume<E, D>(sm, c, w[c], p.scaleLog2, acc);
  return c;
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
