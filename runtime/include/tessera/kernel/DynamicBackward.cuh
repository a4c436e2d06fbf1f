//===- DynamicBackward.cuh - the backward of dynamic heads ----*- CUDA -*-===//
//
// The CUDA backward of a layer's vertical-slash and block top-k heads
// (issue 20; docs/backward.md, "Dynamic heads"). Pasted after
// DynamicIndex.cuh in bundles with dynamic groups; like it, needs no header.
//
// The runtime builds each dynamic group's index again with the forward's
// index kernels (the index is a function of the call's rows: the same as
// the forward's) into the group's workspace, then, in place of the
// forward's attention over the index, launches two kernels over the same
// chunk of (batch, slot) slices, each a block per 64 query rows of one
// head that walks the forward's own walk (VsWalk, BtWalk: the same tiles,
// contiguous or gathered, in the same classes, with the same keep bits):
//
// 1. bwdDynQuery: dQ += s dS K, query-major, with Q and dO fragments in
//    registers (bwdQueryMajor's products), stored once.
// 2. bwdDynKeyValue: per tile, the key-major products of FlashBackward.cuh
//    (bwdKeyProducts: S^T = K Q^T, dV += P^T dO, dP^T = V dO^T, dK +=
//    dS^T Q) with the block's Q and dO resident and the tile's keys in the
//    K and V tiles, into fresh accumulators that are added with f32
//    atomics to BwdParams::dynKV ([batch, kv heads, Nk, 2 D]) at the
//    tile's keys (contiguous, or the gathered columns' own keys).
//
// A transposed index (per key tile, the query tiles whose walks visit it)
// would avoid the atomics but has no closed form for gathered columns:
// their tiles are lists of keys, different per query block's walk. The
// atomics make the sums' order vary from run to run (f32 rounding only).
//
// The workspace of sums is zeroed before the groups (bwdDynClear) and
// added to dk and dv after them (bwdDynAdd: dk = round(dk + sum)), so that
// a kv head shared by static and dynamic heads gets both: the static
// key-major pass writes its heads' sums (zeros where it has none) first.
//
// Non-finite inputs follow the forward's rule (a masked pair adds nothing),
// as in the static passes: each pass has a guarded second launch (GUARDED,
// the same grid, after it in the chunk). dQ: a block whose stored rows are
// finite returns, the others walk again with the static guard (masked P
// and dS selected to 0, bwdGuard on the key tile). dK / dV, whose sums
// other blocks share: the unguarded block stops at the first masked tile
// of its walk whose fresh sums are not finite (nothing of it added) and
// writes the tile's ordinal into DynArgs::bwdStop (-1: none); the guarded
// block walks from that tile on with bwdKeyProducts' guard, Q and dO
// loaded again each tile (the guard zeroes what it finds).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_DYNAMICBACKWARD_CUH
#define TESSERA_KERNEL_DYNAMICBACKWARD_CUH

namespace tessera {
namespace kernel {

#ifdef TESSERA_EMULATE
/// The emulator runs a launch's blocks one at a time and their threads as
/// fibers of one host thread, switched only at barriers and warp
/// collectives: a plain read-modify-write is atomic there.
__device__ __forceinline__ float atomicAdd(float *at, float v) {
  const float old = *at;
  *at = old + v;
  return old;
}
#endif

/// This block's (batch, head) slice of a dynamic group's workspace
/// (dynSlice, from the backward's arguments).
__device__ __forceinline__ DynSlice bwdDynSlice(const BwdParams &p,
                                                const DynArgs &a,
                                                const i64 *heads) {
  DynSlice s;
  s.b = a.batch0 + blockIdx.z;
  s.head = heads[a.slot0 + blockIdx.y];
  s.kvHead = s.head / (p.numHeads / p.numKvHeads);
  s.lay = dynLayout(a, p.nq, p.nk);
  s.ws = a.ws + ((i64)blockIdx.z * a.numSlots + blockIdx.y) * s.lay.size;
  return s;
}

/// The walk of the query tile at row q0 (thread 0), as vsAttend sets it.
template <class Pats>
__device__ __forceinline__ void bwdWalkInit(VsWalk<Pats> &w, const BwdParams &p,
                                            const DynArgs &, const DynSlice &sl,
                                            const DynGroupTable &g, i64 q0) {
  vsWalkInit(w, p.nq, p.nk, p.numHeads, sl, g, q0);
}

/// The walk of the query tile at row q0 (thread 0), as btAttend sets it.
template <class Pats>
__device__ __forceinline__ void
bwdWalkInit(BtWalk<Pats> &w, const BwdParams &p, const DynArgs &a,
            const DynSlice &sl, const DynGroupTable &g, i64 q0) {
  btIndexWalkInit(w, p.nq, p.nk, p.numHeads, a, sl, g, q0);
}

/// The walk of the query tile at row q0 (thread 0), as biAttend sets it:
/// the caller's block index (a.biOffsets, a.biCols, uploaded by the
/// runtime as for the forward).
template <class Pats>
__device__ __forceinline__ void
bwdWalkInit(BtWalk<Pats, int> &w, const BwdParams &p, const DynArgs &a,
            const DynSlice &sl, const DynGroupTable &g, i64 q0) {
  biWalkInit(w, p.nq, p.nk, p.numHeads, a, sl, g, q0);
}

/// The block's 64 query rows: contiguous from q0 (rows null), or gathered,
/// rows[0, count) (a routing segment's tile: global memory).
struct BwdRows {
  i64 q0;
  const i64 *rows;
  int count;
};

/// Row r of the block: its query index, -1 for none.
__device__ __forceinline__ i64 bwdRow(const BwdRows &qr, int r, i64 nq) {
  if (qr.rows)
    return r < qr.count ? qr.rows[r] : -1;
  return qr.q0 + r < nq ? qr.q0 + r : -1;
}

/// Starts the copy of the block's rows of a [seq, D] slice into `dst`
/// (TileLayout<D>) by NT threads (gathered rows: threads 0-127).
template <int D, int NT>
__device__ __forceinline__ void bwdCopyRows(u16 *dst, const u16 *src,
                                            i64 stride, const BwdRows &qr,
                                            i64 nq, bool vec) {
  if (!qr.rows)
    copyTile<D, 64, NT>(dst, src, stride, qr.q0, nq, vec);
  else if (threadIdx.x < kDynThreads)
    copyRows<D>(dst, src, stride, qr.rows, qr.count, vec);
}

/// bwdStoreRows of warp `warp`'s rows of the block (gathered: each row at
/// its query index).
template <int E, int D>
__device__ __forceinline__ void
bwdStoreQueries(const FlashAcc<D> &acc, float mul, u16 *base, i64 strideS,
                const BwdRows &qr, int warp, i64 nq) {
  if (!qr.rows) {
    bwdStoreRows<E, D>(acc, mul, base, strideS, qr.q0, warp, nq);
    return;
  }
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 i = bwdRow(qr, warp * 16 + lane / 4 + h * 8, nq);
    if (i < 0)
      continue;
    u16 *row = base + i * strideS;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<u32 *>(row + dn * 8 + c2) =
          packFloats<E>(acc.o[dn][2 * h] * mul, acc.o[dn][2 * h + 1] * mul);
  }
}

/// Where a dQ pass puts its rows: `part` null: dq (16-bit, times s); else
/// a routing group that merges (rtRest's pairs beside its clusters', in the
/// slice's f32 `partial` rows of D + 1 floats): the segments' pass stores
/// its f32 rows there (add false), the rest's pass adds them to its own
/// and stores dq (add true).
struct BwdDqOut {
  float *part;
  bool add;
};

/// Whether some f32 value of the block's rows `qr` of `part` (rows of
/// D + 1 floats, D of them read) is NaN or infinite, by NT threads (a
/// barrier).
template <int D, int NT>
__device__ __forceinline__ bool bwdPartNonFinite(const float *part,
                                                 const BwdRows &qr, i64 nq) {
  bool bad = false;
  for (int i = threadIdx.x; i < 64 * D; i += NT) {
    const i64 r = bwdRow(qr, i / D, nq);
    if (r >= 0)
      bad = bad || (__float_as_int(part[r * (D + 1) + i % D]) & 0x7f800000) ==
                       0x7f800000;
  }
  return __syncthreads_or(bad);
}

/// Stores this thread's rows of the block's dQ (times s) where `out` says.
template <int E, int D>
__device__ __forceinline__ void
bwdStoreDq(const FlashAcc<D> &acc, const BwdParams &p, i64 b, i64 head,
           const BwdRows &qr, int warp, const BwdDqOut &out) {
  u16 *base = p.dq + b * p.dqs.b + head * p.dqs.h;
  if (!out.part) {
    bwdStoreQueries<E, D>(acc, p.scale, base, p.dqs.s, qr, warp, p.nq);
    return;
  }
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 i = bwdRow(qr, warp * 16 + lane / 4 + h * 8, p.nq);
    if (i < 0)
      continue;
    float *part = out.part + i * (D + 1);
    u16 *row = base + i * p.dqs.s;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const int x = dn * 8 + c2;
      const float v0 = acc.o[dn][2 * h] * p.scale,
                  v1 = acc.o[dn][2 * h + 1] * p.scale;
      if (out.add)
        *reinterpret_cast<u32 *>(row + x) =
            packFloats<E>(part[x] + v0, part[x + 1] + v1);
      else {
        part[x] = v0;
        part[x + 1] = v1;
      }
    }
  }
}

/// Whether some stored dQ value of the block's rows `qr` (of `base`, row
/// stride `strideS`) is NaN or infinite: the guarded dQ kernel's test of
/// the unguarded one's output, by NT threads (a barrier).
template <int E, int D, int NT>
__device__ __forceinline__ bool
bwdQueriesNonFinite(const u16 *base, i64 strideS, const BwdRows &qr, i64 nq) {
  if (!qr.rows)
    return bwdRowsNonFinite<E, D, NT>(base, strideS, qr.q0, nq);
  u32 bits = 0;
  for (int i = threadIdx.x; i < 64 * (D / 2); i += NT) {
    const i64 r = bwdRow(qr, i / (D / 2), nq);
    if (r >= 0)
      bits |= nonFiniteBits<E>(ld32(base + r * strideS + 2 * (i % (D / 2))));
  }
  return __syncthreads_or(bits != 0);
}

/// Whether some element of a tile's fresh dK or dV sums is NaN or
/// infinite (this thread's elements).
template <int C>
__device__ __forceinline__ bool bwdAccNonFinite(const FlashAcc<C> &dk,
                                                const FlashAcc<C> &dv) {
  bool bad = false;
#pragma unroll
  for (int dn = 0; dn < C / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      bad = bad || (__float_as_int(dk.o[dn][e]) & 0x7f800000) == 0x7f800000 ||
            (__float_as_int(dv.o[dn][e]) & 0x7f800000) == 0x7f800000;
  return bad;
}

/// This block's entry of a.bwdStop (the chunk's blocks, in grid order).
__device__ __forceinline__ int *bwdDynStopAt(const DynArgs &a) {
  return a.bwdStop + ((i64)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x +
         blockIdx.x;
}

/// The walk's next tile into `tile` (thread 0), published with its staged
/// rows (gathered tiles) by the barriers here; false at the walk's end.
template <class Walk>
__device__ __forceinline__ bool
bwdDynNext(Walk &w, DynTile &tile, DynRows &rows, const u16 *kBase, i64 kStride,
           const u16 *vBase, i64 vStride) {
  if (threadIdx.x == 0)
    w.next(tile);
  __syncthreads();
  if (!tile.count)
    return false;
  if (Walk::kRows != kContiguousRows) {
    stageRows(rows, tile, kBase, kStride, vBase, vStride);
    __syncthreads();
  }
  return true;
}

/// dQ of the block's 64 rows `qr` of head sl.head over walk `w` (set up by
/// thread 0 before): 128 threads (4 warps of 16 rows), K and V tiles in
/// `sm`. Per tile: S = Q K^T with the walk's keep bits, P from the
/// forward's LSE, dP = dO V^T, dS = P (dP - D), dQ += dS K; stored once
/// times s. Rows without keys get dQ = 0.
template <int E, int D, bool GUARDED, class Walk>
__device__ __forceinline__ void
bwdDynQuery(const BwdParams &p, const DynSlice &sl, Walk &w,
            PipeTiles<D> &tiles, const BwdRows &qr, const BwdDqOut &out) {
  constexpr int NT = 128;
  constexpr int kKind = Walk::kRows;
  PipeTiles<D> &sm = *bwdOpaque(&tiles);
  __shared__ DynTile tile;
  __shared__ DynRows rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 head = sl.head, b = sl.b, kvh = sl.kvHead;
  const bool vec = p.vectorLoads != 0;
  if constexpr (GUARDED) // (also publishes the walk thread 0 set up)
    if (out.part && !out.add
            ? !bwdPartNonFinite<D, NT>(out.part, qr, p.nq)
            : !bwdQueriesNonFinite<E, D, NT>(
                  p.dq + b * p.dqs.b + head * p.dqs.h, p.dqs.s, qr, p.nq))
      return;
  const u16 *kBase = p.k + b * p.ks.b + kvh * p.ks.h;
  const u16 *vBase = p.v + b * p.vs.b + kvh * p.vs.h;
  bwdCopyRows<D, NT>(sm.k(), p.q + b * p.qs.b + head * p.qs.h, p.qs.s, qr, p.nq,
                     vec);
  bwdCopyRows<D, NT>(sm.v(), p.dO + b * p.dOs.b + head * p.dOs.h, p.dOs.s, qr,
                     p.nq, vec);
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads(); // (also publishes the walk thread 0 set up)
  u32 qf[D / 16][4], gf[D / 16][4];
  pipeQFragments<D>(sm.k(), qf);
  pipeQFragments<D>(sm.v(), gf);
  float lse2[2], dl[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 i = bwdRow(qr, warp * 16 + lane / 4 + h * 8, p.nq);
    const i64 at = (b * p.numHeads + head) * p.nq + i;
    lse2[h] = i >= 0 ? bwdLse2(p.lse[at]) : __int_as_float(0x7f800000);
    dl[h] = i >= 0 ? p.delta[at] : 0.f;
  }
  const typename Walk::Lane ln = w.lane();
  FlashAcc<D> dq;
  flashInit<D>(dq);
  __syncthreads(); // every warp has its fragments: the tiles are free
#pragma unroll 1
  while (bwdDynNext(w, tile, rows, kBase, p.ks.s, vBase, p.vs.s)) {
    const DynTile t = tile;
    copyWalkTile<D, kKind>(sm.k(), kBase, p.ks.s, t, rows.kRow, vec);
    copyWalkTile<D, kKind>(sm.v(), vBase, p.vs.s, t, rows.vRow, vec);
    cpAsyncCommit();
    const u32 keep = t.masked ? w.keep(t, &rows, ln) : 0xffffffffu;
    cpAsyncWait<0>();
    __syncthreads(); // K and V landed
    float s[8][4];
    pipeScores<E, D>(qf, sm.k(), s); // S = Q K^T
    if (t.masked)
      applyKeep(s, keep);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[nt][e] = ex2(fmaf(s[nt][e], p.scaleLog2, -lse2[e >> 1]));
    const bool guard = GUARDED && t.masked;
    if (guard) // a NaN LSE makes masked pairs' P NaN
      bwdZeroMasked(s, keep);
    u32 da[4][4];
    bwdPackA<E>(s, da); // P, packed
    float dp[8][4];
    pipeScores<E, D>(gf, sm.v(), dp); // dP = dO V^T
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dp[nt][e] = bwdUnpack<E>(da, nt, e) * (dp[nt][e] - dl[e >> 1]); // dS
    if (guard) { // masked pairs add nothing; non-finite keys only where seen
      bwdZeroMasked(dp, keep);
      const unsigned long long sees[2] = {rowKeep(keep, 0, lane % 4 * 2),
                                          rowKeep(keep, 1, lane % 4 * 2)};
      bwdGuard<E, D, D, NT>(sm.k(), sees, dq, 0);
    }
    bwdPackA<E>(dp, da);
    pipeValues<E, D>(da, sm.k(), dq); // dQ += dS K (s applied at the end)
    __syncthreads(); // every warp is done with K, V, the tile and its rows
  }
  bwdStoreDq<E, D>(dq, p, b, head, qr, warp, out);
}

/// dK and dV of the block's 64 rows `qr` of head sl.head over walk `w` (set
/// up by thread 0 before): BwdKeyShape<D>'s threads, BwdKeyTiles<D> with the
/// rows' Q, dO, LSE and D resident. Per tile: its keys into the K and V
/// tiles, the keep bits (warps 0-3, the forward's rows) into the
/// query-major mask, bwdKeyProducts into fresh accumulators, added to
/// p.dynKV at the tile's keys by f32 atomics (dK times s).
template <int E, int D, bool GUARDED, class Walk>
__device__ __forceinline__ void
bwdDynKeyValue(const BwdParams &p, const DynSlice &sl, Walk &w,
               BwdKeyTiles<D> &tiles, const BwdRows &qr, int *stopEntry) {
  using Shape = BwdKeyShape<D>;
  constexpr int NT = Shape::kThreads, BQ = 64, C = Shape::kCols;
  constexpr int kKind = Walk::kRows;
  BwdKeyTiles<D> &sm = *bwdOpaque(&tiles);
  __shared__ DynTile tile;
  __shared__ DynRows rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
  const int rw = warp % 4, c0 = (warp / 4) * C; // key rows, dK / dV columns
  const i64 head = sl.head, b = sl.b, kvh = sl.kvHead;
  const bool vec = p.vectorLoads != 0;
  const u16 *kBase = p.k + b * p.ks.b + kvh * p.ks.h;
  const u16 *vBase = p.v + b * p.vs.b + kvh * p.vs.h;
  const u16 *qBase = p.q + b * p.qs.b + head * p.qs.h;
  const u16 *dOBase = p.dO + b * p.dOs.b + head * p.dOs.h;
  // The unguarded pass stops at its first masked tile whose sums are not
  // finite (nothing of it added) and says where in dynStop; the guarded
  // pass does the tiles from there (-1: none) with the guard.
  int stop = -1;
  if constexpr (GUARDED) {
    __shared__ int stopAt;
    if (threadIdx.x == 0)
      stopAt = *stopEntry;
    __syncthreads();
    stop = stopAt;
    if (stop < 0)
      return; // (uniform)
  }
  if (!GUARDED) { // the guarded pass loads them with each tile it does
    bwdCopyRows<D, NT>(sm.q(), qBase, p.qs.s, qr, p.nq, vec);
    bwdCopyRows<D, NT>(sm.dO(), dOBase, p.dOs.s, qr, p.nq, vec);
  }
  cpAsyncCommit();
  const i64 rowsAt = (b * p.numHeads + head) * p.nq;
  if (threadIdx.x < BQ) {
    const i64 i = bwdRow(qr, threadIdx.x, p.nq);
    sm.lse2[threadIdx.x] =
        i >= 0 ? bwdLse2(p.lse[rowsAt + i]) : __int_as_float(0x7f800000);
  } else if (threadIdx.x < 2 * BQ) {
    const i64 i = bwdRow(qr, threadIdx.x - BQ, p.nq);
    sm.delta[threadIdx.x - BQ] = i >= 0 ? p.delta[rowsAt + i] : 0.f;
  }
  cpAsyncWait<0>();
  __syncthreads(); // Q, dO, the rows and the walk set up
  const typename Walk::Lane ln = w.lane(); // (warps 0-3's rows)
  float *sums = p.dynKV + (b * p.numKvHeads + kvh) * p.nk * (2 * D);
  int ordinal = -1; // of the walk's tile
#pragma unroll 1
  while (bwdDynNext(w, tile, rows, kBase, p.ks.s, vBase, p.vs.s)) {
    const DynTile t = tile;
    ++ordinal;
    if (GUARDED && ordinal < stop) { // added by the unguarded pass
      __syncthreads(); // every thread has read the tile and its rows
      continue;
    }
    if (GUARDED) { // the guard zeroes what it found: fresh rows each tile
      bwdCopyRows<D, NT>(sm.q(), qBase, p.qs.s, qr, p.nq, vec);
      bwdCopyRows<D, NT>(sm.dO(), dOBase, p.dOs.s, qr, p.nq, vec);
    }
    if (threadIdx.x < kDynThreads) { // the copies are 128 threads'
      copyWalkTile<D, kKind>(sm.k(), kBase, p.ks.s, t, rows.kRow, vec);
      copyWalkTile<D, kKind>(sm.v(), vBase, p.vs.s, t, rows.vRow, vec);
    }
    cpAsyncCommit();
    if (t.masked && warp < 4) {
      const u32 keep = w.keep(t, &rows, ln);
      const int row = warp * 16 + lane / 4;
#pragma unroll
      for (int i = 0; i < 32; ++i)
        sm.allow[row + ((i & 3) >= 2 ? 8 : 0)][(i >> 2) * 8 + c2 + (i & 1)] =
            (unsigned char)((keep >> i) & 1u);
    }
    cpAsyncWait<0>();
    __syncthreads(); // K, V and the mask
    FlashAcc<C> dk, dv;
    flashInit<C>(dk);
    flashInit<C>(dv);
    bwdKeyProducts<E, D, GUARDED>(*bwdOpaque(&tiles), p, t.masked != 0, dk, dv);
    if (!GUARDED && t.masked && __syncthreads_or(bwdAccNonFinite<C>(dk, dv))) {
      // A masked pair's NaN or infinity may be in these sums: none of the
      // tile is added; the guarded pass does it and the rest.
      stop = ordinal;
      break;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = rw * 16 + lane / 4 + h * 8;
      if (r >= t.count)
        continue;
      const i64 key = t.list ? rows.key[r] : t.k0 + r;
      float *row = sums + key * (2 * D) + c0;
#pragma unroll
      for (int dn = 0; dn < C / 8; ++dn)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          atomicAdd(row + dn * 8 + c2 + e, dk.o[dn][2 * h + e] * p.scale);
          atomicAdd(row + D + dn * 8 + c2 + e, dv.o[dn][2 * h + e]);
        }
    }
  }
  if (!GUARDED && threadIdx.x == 0)
    *stopEntry = stop; // every block's entry: the buffer is reused
}

/// The pass of a tiles type (bwdDynGroup).
template <int E, int D, bool GUARDED, class Walk>
__device__ __forceinline__ void
bwdDynPass(const BwdParams &p, const DynSlice &sl, Walk &w, PipeTiles<D> &sm,
           const BwdRows &qr, int *, const BwdDqOut &out) {
  bwdDynQuery<E, D, GUARDED>(p, sl, w, sm, qr, out);
}
template <int E, int D, bool GUARDED, class Walk>
__device__ __forceinline__ void
bwdDynPass(const BwdParams &p, const DynSlice &sl, Walk &w, BwdKeyTiles<D> &sm,
           const BwdRows &qr, int *stopEntry, const BwdDqOut &) {
  bwdDynKeyValue<E, D, GUARDED>(p, sl, w, sm, qr, stopEntry);
}

/// The backward kernels of a dynamic group's chunk (grid: ceil(Nq / 64),
/// the chunk's slots, its batch entries), in place of the forward's
/// attention over the index: the walk of the block's query tile set up by
/// thread 0, then the pass its tiles type selects (PipeTiles: dQ,
/// BwdKeyTiles: dK and dV).
template <int E, int D, class Walk, bool GUARDED = false, class Tiles>
__device__ __forceinline__ void bwdDynGroup(const BwdParams &p,
                                            const DynArgs &a,
                                            const DynGroupTable &g, Tiles &sm) {
  const DynSlice sl = bwdDynSlice(p, a, g.heads);
  const i64 q0 = (i64)blockIdx.x * 64;
  __shared__ Walk w;
  if (threadIdx.x == 0)
    bwdWalkInit(w, p, a, sl, g, q0);
  bwdDynPass<E, D, GUARDED>(p, sl, w, sm, BwdRows{q0, nullptr, 0},
                            bwdDynStopAt(a), BwdDqOut{nullptr, false});
}

/// The backward kernels of a routing group's chunk (grid: routingTiles(),
/// the chunk's slots, its batch entries), in place of rtAttend: block x
/// takes segment tile x (rtWalkInit: its rows gathered through the
/// forward's permutation, the keys of its cluster as the forward's walk
/// visits them), then the pass its tiles type selects. The clusters are
/// the forward's (built again by its kernels); the selection carries no
/// gradient. Routing whose pattern allows pairs outside the clusters
/// (rtRest's merge) has no backward kernels.
template <int E, int D, class Pats, bool GUARDED = false, class Tiles>
__device__ __forceinline__ void bwdRtGroup(const BwdParams &p, const DynArgs &a,
                                           const DynGroupTable &g, Tiles &sm) {
  const DynSlice sl = bwdDynSlice(p, a, g.heads);
  __shared__ RtWalk<Pats> w;
  BwdRows qr;
  qr.q0 = 0;
  qr.rows = rtWalkInit(w, qr.count, p.nq, p.nk, p.numHeads, a, sl, g,
                       (i64)blockIdx.x);
  if (!qr.rows)
    return; // beyond the segments' tiles (uniform per block)
  // Merging (rtRest's pairs too): dQ of the clusters' pairs into the
  // slice's f32 partial rows, for bwdRtRestGroup to add.
  const BwdDqOut out = {
      a.merge ? reinterpret_cast<float *>(sl.ws + sl.lay.partial) : nullptr,
      false};
  bwdDynPass<E, D, GUARDED>(p, sl, w, sm, qr, bwdDynStopAt(a), out);
}

/// The backward kernels of the rest of a merging routing group's pattern
/// (grid: ceil(Nq / 64), the chunk's slots, its batch entries), in place of
/// rtRest, after bwdRtGroup's: block x takes query rows 64 x .. 64 x + 63
/// and walks rtRest's RestWalk (the static runs of `without` minus the
/// pairs within a cluster), P from the forward's merged LSE; dQ adds the
/// segments' partial rows and stores dq (every row), dK / dV add to the
/// sums as the other walks do.
template <int E, int D, class Pats, bool GUARDED = false, class Tiles>
__device__ __forceinline__ void
bwdRtRestGroup(const BwdParams &p, const DynArgs &a, const DynGroupTable &g,
               Tiles &sm) {
  const DynSlice sl = bwdDynSlice(p, a, g.heads);
  const i64 q0 = (i64)blockIdx.x * 64, q1 = minI(q0 + 64, p.nq);
  __shared__ RestWalk<Pats> w;
  if (threadIdx.x < 64) {
    const int *qc = reinterpret_cast<const int *>(sl.ws + sl.lay.qCluster);
    const i64 qi = q0 + threadIdx.x;
    w.rowCluster[threadIdx.x] = qi < p.nq ? qc[qi] : -1;
  }
  if (threadIdx.x == 0) {
    w.runs.ctx = makeRunCtx(q0, q1, p.nq, p.nk, 64, sl.head, p.numHeads);
    w.runs.reset();
    w.kCluster = reinterpret_cast<const int *>(sl.ws + sl.lay.kCluster);
    w.p0 = q0 + p.nk - p.nq;
    w.head = sl.head;
    w.nh = p.numHeads;
    w.withoutId = g.withoutId;
    w.at = -1;
  }
  const BwdDqOut out = {reinterpret_cast<float *>(sl.ws + sl.lay.partial),
                        true};
  bwdDynPass<E, D, GUARDED>(p, sl, w, sm, BwdRows{q0, nullptr, 0},
                            bwdDynStopAt(a), out);
}
/// Zeroes p.dynKV: grid (ceil(Nk / 128), kv heads, batch), a thread a key.
template <int D>
__device__ __forceinline__ void bwdDynClear(const BwdParams &p) {
  const i64 key = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (key >= p.nk)
    return;
  float *row =
      p.dynKV +
      ((blockIdx.z * (i64)p.numKvHeads + blockIdx.y) * p.nk + key) * (2 * D);
  for (int x = 0; x < 2 * D; ++x)
    row[x] = 0.f;
}

/// dk += the dynamic heads' dK, dv += their dV (rounded once more): grid
/// (ceil(Nk / 128), kv heads, batch), a thread a key.
template <int E, int D>
__device__ __forceinline__ void bwdDynAdd(const BwdParams &p) {
  const i64 key = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (key >= p.nk)
    return;
  const i64 kvh = blockIdx.y, b = blockIdx.z;
  const float *row =
      p.dynKV + ((b * p.numKvHeads + kvh) * p.nk + key) * (2 * D);
  u16 *dk = p.dk + b * p.dks.b + key * p.dks.s + kvh * p.dks.h;
  u16 *dv = p.dv + b * p.dvs.b + key * p.dvs.s + kvh * p.dvs.h;
  for (int x = 0; x < D; x += 2) {
    const u32 k2 = *reinterpret_cast<const u32 *>(dk + x);
    const u32 v2 = *reinterpret_cast<const u32 *>(dv + x);
    *reinterpret_cast<u32 *>(dk + x) =
        packFloats<E>(bwdToFloat<E>((u16)(k2 & 0xffffu)) + row[x],
                      bwdToFloat<E>((u16)(k2 >> 16)) + row[x + 1]);
    *reinterpret_cast<u32 *>(dv + x) =
        packFloats<E>(bwdToFloat<E>((u16)(v2 & 0xffffu)) + row[D + x],
                      bwdToFloat<E>((u16)(v2 >> 16)) + row[D + x + 1]);
  }
}

} // namespace kernel
} // namespace tessera

#if defined(TESSERA_EMULATE) && !defined(TESSERA_EMU_BACKWARD)
#define TESSERA_EMU_BWD_DYN_KERNEL(name)
#elif defined(TESSERA_EMULATE)
/// The host emulator's registration of a dynamic group's backward kernel,
/// which takes (BwdParams, DynArgs): `params` points at the two, packed.
#define TESSERA_EMU_BWD_DYN_KERNEL(name)                                       \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int) {                                            \
        tessera::kernel::BwdParams p;                                          \
        tessera::kernel::DynArgs a;                                            \
        std::memcpy(&p, params, sizeof p);                                     \
        std::memcpy(&a, static_cast<const char *>(params) + sizeof p,          \
                    sizeof a);                                                 \
        name(p, a);                                                            \
      });
#endif

#endif // TESSERA_KERNEL_DYNAMICBACKWARD_CUH
