//===- DynamicIndex.cuh - index kernels and attention over the index -*- CUDA -*-===//
//
// The run-time step of the dynamic patterns on the GPU, pasted by the
// emitter after FlashForward.cuh and DynamicArgs.h into bundles with
// dynamic head groups. Every kernel runs 128 threads per block, grid y over
// the group's heads (launch slots) and grid z over the batch; its per-head
// arrays live in the workspace slice of DynArgs/DynLayout.
//
// vertical_slash: vsScores (the last L queries' logits against all keys),
//   vsSoftmax (one block per scored row), vsSums (per key column and per
//   diagonal, in a fixed order), vsSelect (the kept columns and diagonals,
//   forced ones first, ties as docs/patterns.md says, as lists and as
//   bitmaps; then the diagonal groups: diagonals closer than 64 merged into
//   one key range per query block), vsAttend.
// block_topk: btPool (mean-pooled Q and K blocks), btScores (the pooled
//   softmax per query block), with tau > 0 btFlexRows (the last query
//   block's true attention per row: column and slash masses) and
//   btFlexMode (FlexPrefill's Jensen-Shannon choice; the kept columns and
//   slash groups), btTake (how many key blocks: top_k, or the fewest
//   reaching gamma, clamped; or the vertical-slash-like lists' sizes),
//   btSelect (which), btAttend.
// block_index: no index kernel (the caller's lists, uploaded by the
//   runtime); biAttend walks them with block top-k's walk.
// routing: rtSeed (centroids from the engine or seeded with keys),
//   rtAssign (nearest centroid of keys or queries), rtUpdate (k-means
//   means), rtSort (stable counting sort of tokens by cluster: segments and
//   permutations), rtAttend (per query tile of a segment, the segment's
//   keys; output through the inverse permutation), and where the pattern
//   allows pairs outside the clusters rtRest (the static runs of `without`
//   minus the clusters' pairs, merged with the segments' rows by LSE).
//
// The attention kernels walk the index (and, for the parts of the pattern
// that do not depend on the index, the static runs of the pattern with the
// leaf read as skip) through FlashForward's pipelined tile step
// (dynPipeline): every allowed pair is visited exactly once, masked as
//   allowed = (leaf and with) or (not leaf and without).
// Sums of the index builders are fp32 in a fixed order (deterministic; the
// CPU builders sum in double, so exact ties may resolve differently).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_DYNAMICINDEX_CUH
#define TESSERA_KERNEL_DYNAMICINDEX_CUH

namespace tessera {
namespace kernel {

static const int kDynThreads = 128;

template <int E> __device__ __forceinline__ float loadFloat(u16 x) {
#ifdef TESSERA_EMULATE
  return tessera_emu::halfToFloat<E>(x);
#else
  if (E == kF16) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
  }
  return __int_as_float(((int)x) << 16);
#endif
}

/// Order-preserving key of a float (larger float, larger key).
__device__ __forceinline__ u32 orderKey(float f) {
  u32 b = (u32)__float_as_int(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float blockSum(float v) {
  __shared__ float red[kDynThreads];
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = kDynThreads / 2; s > 0; s >>= 1) {
    if (t < s)
      red[t] += red[t + s];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ float blockMax(float v) {
  __shared__ float red[kDynThreads];
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = kDynThreads / 2; s > 0; s >>= 1) {
    if (t < s)
      red[t] = fmaxf(red[t], red[t + s]);
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

/// Exclusive prefix sum over the block's threads; `total` the sum.
__device__ __forceinline__ i64 blockScan(i64 v, i64 &total) {
  __shared__ i64 sc[kDynThreads];
  const int t = threadIdx.x;
  sc[t] = v;
  __syncthreads();
  for (int off = 1; off < kDynThreads; off <<= 1) {
    const i64 x = t >= off ? sc[t - off] : 0;
    __syncthreads();
    sc[t] += x;
    __syncthreads();
  }
  total = sc[kDynThreads - 1];
  const i64 r = sc[t] - v;
  __syncthreads();
  return r;
}

__device__ __forceinline__ i64 blockScanTotal(i64 v) {
  i64 total;
  blockScan(v, total);
  return total;
}

/// The selection of the `count` largest of key(0..n-1) by (key desc, index
/// asc), as a threshold: the entries with key > `above`, and those with
/// key == `above` and index <= `lastEqual`. Whole block.
template <class Key>
__device__ __forceinline__ void selectTop(Key key, i64 n, i64 count,
                                          u32 &above, i64 &lastEqual) {
  above = 0xffffffffu;
  lastEqual = -1;
  if (count <= 0 || n <= 0)
    return;
  if (count > n)
    count = n;
  // The largest T with #(key >= T) >= count, bit by bit from the top.
  u32 t = 0;
#pragma unroll 1
  for (int bit = 31; bit >= 0; --bit) {
    const u32 cand = t | (1u << bit);
    i64 c = 0;
    for (i64 i = threadIdx.x; i < n; i += kDynThreads)
      c += key(i) >= cand ? 1 : 0;
    if (blockScanTotal(c) >= count)
      t = cand;
  }
  i64 c = 0;
  for (i64 i = threadIdx.x; i < n; i += kDynThreads)
    c += key(i) > t ? 1 : 0;
  i64 greater;
  blockScan(c, greater);
  const i64 need = count - greater; // >= 1 entries equal to t
  // The need-th entry equal to t in index order.
  __shared__ i64 found;
  if (threadIdx.x == 0)
    found = -1;
  __syncthreads();
  i64 seen = 0;
  for (i64 base = 0; base < n; base += kDynThreads) {
    const i64 i = base + threadIdx.x;
    const bool eq = i < n && key(i) == t;
    i64 total;
    const i64 rank = seen + blockScan(eq ? 1 : 0, total);
    if (eq && rank == need - 1)
      found = i;
    seen += total;
    __syncthreads();
    if (found >= 0)
      break;
  }
  above = t;
  lastEqual = found;
  __syncthreads();
}

/// This block's (batch, head) slice of a dynamic group's workspace: the
/// launch covers a chunk of slots (a.slot0 + grid y) and batch entries
/// (a.batch0 + grid z), one slice each.
struct DynSlice {
  i64 b, head, kvHead;
  DynLayout lay;
  unsigned char *ws;
};

/// heads: the group's slot -> head table (null where the kernel needs no
/// head).
__device__ __forceinline__ DynSlice dynSlice(const AttnParams &p,
                                             const DynArgs &a,
                                             const i64 *heads) {
  DynSlice s;
  s.b = a.batch0 + blockIdx.z;
  s.head = heads ? heads[a.slot0 + blockIdx.y] : 0;
  s.kvHead = s.head / (p.numHeads / p.numKvHeads);
  s.lay = dynLayout(a, p.nq, p.nk);
  s.ws = a.ws + ((i64)blockIdx.z * a.numSlots + blockIdx.y) * s.lay.size;
  return s;
}

//===----------------------------------------------------------------------===//
// The attention over the index: FlashForward's pipelined tile step
//===----------------------------------------------------------------------===//
//
// Every attention kernel here is one pipelined loop (dynPipeline, the order
// of FlashForward's pipeForward) over the tiles that a walk over the index
// yields: the key rows of the next tile are in flight (cp.async into the
// swizzled layout, contiguous or gathered rows) while O += P V of the
// current one runs, its value rows while its scores are computed.
//
// A walk (VsWalk, BtWalk, RtWalk, RestWalk) lives in shared memory: its
// constants, set once per block, and its cursor over the index (list
// positions, run cursors of the generated code: computed once per block
// and advanced, never searched per tile), which thread 0 alone advances
// (next(): the tile after the current one, written to a double-buffered
// descriptor that the next barrier publishes), so that no cursor takes a
// register of the tile step. keep() gives each thread its keep bits of a
// masked tile from the descriptor and the index (bitmaps, lists, the
// generated code of the pattern's `with` and `without` parts), without
// another barrier: the barrier after the keys land is also the empty-tile
// test (__syncthreads_or).

typedef unsigned long long u64;

/// A tile of a walk (the descriptor next() writes): 64 key rows, contiguous
/// (keys k0 .. k0 + count - 1) or gathered (keys list[0 .. count), a global
/// array), the other rows zeros; count = 0: the walk has ended. masked: its
/// pairs need keep bits (else every pair of its count keys is allowed).
/// mode and flags: what the walk's keep() needs. Uniform over the block.
struct DynTile {
  i64 k0;
  const i64 *list;
  int count, masked, mode, flags;
};

/// The tile's first key, a multiple of 64 (the walks' tiles are whole key
/// tiles): said so to the mask code, whose offsets then need no sub-tile
/// part (Masks.cuh's maskTileRoom; one AND here).
__device__ __forceinline__ i64 tileKey0(const DynTile &t) {
  return t.k0 & ~63LL;
}

/// The keep bits (FlashForward's element order) of this thread's columns
/// below `count`, for both of its rows: column 8 nt + c2 + e is below
/// count for nt < n_e = ceil((count - c2 - e) / 8).
__device__ __forceinline__ u32 columnsKeep(int count, int c2) {
  const int n0 = count - c2 + 7 <= 0 ? 0 : (count - c2 + 7) >> 3;
  const int n1 = count - c2 + 6 <= 0 ? 0 : (count - c2 + 6) >> 3;
  const u32 below0 = n0 >= 8 ? ~0u : (1u << 4 * n0) - 1;
  const u32 below1 = n1 >= 8 ? ~0u : (1u << 4 * n1) - 1;
  return (0x55555555u & below0) | (0xaaaaaaaau & below1);
}

/// Which tiles a walk yields: contiguous only (block top-k, routing's
/// rest), gathered only (routing's segments), or both (vertical-slash).
/// The pipeline compiles only the copies and row staging a walk can need.
enum DynRowsKind { kContiguousRows = 0, kSomeGathered = 1, kAllGathered = 2 };

/// The rows of a gathered tile, staged in shared memory by the block once
/// per tile from the walk's global list (rows past its count: the last
/// key, and the slices' first rows): the keys, for the pair tests of
/// keep(), where their rows start in the K and V slices, for the two
/// copies, and the keep bits of the columns below the count for each c2
/// (edge[c2 / 2], columnsKeep), which cut the pair tests' bits.
struct DynRows {
  __align__(16) i64 key[64];
  const u16 *kRow[64], *vRow[64];
  u32 edge[4];
};

/// A walk's double-buffered tile descriptors (written by next(), thread 0)
/// and, for walks that gather, the rows of each (stageRows).
template <int Kind> struct DynRing {
  DynTile tiles[2];
  DynRows rows[2];
};
template <> struct DynRing<kContiguousRows> {
  DynTile tiles[2];
};

/// Stages the rows of gathered tile t of the [seq, D] slices kBase and
/// vBase (row strides kStride, vStride) into `r` (threads 0-63, one row
/// each; nothing for a contiguous tile or the end of the walk). Published
/// by the next barrier.
__device__ __forceinline__ void stageRows(DynRows &r, const DynTile &t,
                                          const u16 *kBase, i64 kStride,
                                          const u16 *vBase, i64 vStride) {
  const int i = (int)threadIdx.x;
  if (i < 64 && t.count && t.list) {
    const bool in = i < t.count;
    const i64 key = t.list[in ? i : t.count - 1];
    r.key[i] = key;
    r.kRow[i] = in ? kBase + key * kStride : kBase;
    r.vRow[i] = in ? vBase + key * vStride : vBase;
    if (i < 4)
      r.edge[i] = columnsKeep(t.count, 2 * i);
  }
}

/// Starts the copy of rows rows[0, count) of a [seq, D] slice (row stride
/// `stride`) into `dst` (TileLayout<D>, 64 rows), the other rows as zeros,
/// by the block's threads: a gathered row is D / 8 cp.async chunks of 16
/// bytes when every row start is 16-byte aligned (`vec`), otherwise a
/// synchronous copy of elements. (Once per block: the query rows of a
/// routing tile; the key tiles stage their rows first, copyGathered.)
template <int D>
__device__ __forceinline__ void copyRows(u16 *dst, const u16 *src, i64 stride,
                                         const i64 *rows, int count, bool vec) {
  constexpr int kChunksPerRow = D / 8, kChunks = 64 * kChunksPerRow;
  static_assert(kChunks % kDynThreads == 0, "a tile's chunks split evenly");
  if (vec) {
#pragma unroll
    for (int j = 0; j < kChunks / kDynThreads; ++j) {
      const int i = (int)threadIdx.x + j * kDynThreads;
      const int row = i / kChunksPerRow, chunk = i % kChunksPerRow;
      const bool in = row < count;
      cpAsync16(dst + TileLayout<D>::at(row, chunk),
                src + (in ? rows[row] : 0) * stride + chunk * 8, in);
    }
  } else {
    for (int i = threadIdx.x; i < 64 * D; i += kDynThreads) {
      const int row = i / D, x = i % D;
      dst[TileLayout<D>::at(row, x / 8) + x % 8] =
          row < count ? src[rows[row] * stride + x] : 0;
    }
  }
}

/// How the block's threads split a 64-row tile of head_dim D into 16-byte
/// chunks: each thread one chunk column, every kStep-th row (kPer rows).
/// kStep a multiple of 8 keeps a row's swizzle (row % 8) fixed per thread,
/// so that its destinations are one address plus immediates (head_dim 64
/// and 128; 96, padded, does not split so: copyTile's general loop).
template <int D> struct DynSplit {
  static constexpr int kChunksPerRow = D / 8;
  static constexpr bool kColumns = kDynThreads % kChunksPerRow == 0 &&
                                   (kDynThreads / kChunksPerRow) % 8 == 0;
  static constexpr int kStep = kColumns ? kDynThreads / kChunksPerRow : 1;
  static constexpr int kPer = 64 / kStep;
};

/// Starts the copy of keys [k0, k0 + count) of a [seq, D] slice (row
/// stride `stride`) into `dst` (TileLayout<D>), rows past count as zeros:
/// FlashForward's copyTile, with one running source pointer and 32-bit
/// row tests, and none for a whole tile.
template <int D>
__device__ __forceinline__ void copyRun(u16 *dst, const u16 *src, i64 stride,
                                        i64 k0, int count, bool vec) {
  using S = DynSplit<D>;
  if (!S::kColumns || !vec) {
    copyTile<D, 64, kDynThreads>(dst, src, stride, k0, k0 + count, vec);
    return;
  }
  const int row0 = (int)threadIdx.x / S::kChunksPerRow;
  const int chunk = (int)threadIdx.x % S::kChunksPerRow;
  const u16 *from = src + (k0 + row0) * stride + chunk * 8;
  const i64 step = S::kStep * stride;
  u16 *const to = dst + TileLayout<D>::at(row0, chunk);
  constexpr int kRowStep = S::kStep * TileLayout<D>::kPitch;
  if (count == 64) {
#pragma unroll
    for (int j = 0; j < S::kPer; ++j) {
      cpAsync16(to + j * kRowStep, from, true);
      from += step;
    }
  } else {
#pragma unroll
    for (int j = 0; j < S::kPer; ++j) {
      const bool in = row0 + j * S::kStep < count;
      cpAsync16(to + j * kRowStep, in ? from : src, in);
      from += step;
    }
  }
}

/// Starts the copy of a gathered tile's rows into `dst` (TileLayout<D>):
/// row r from rows[r] (staged by stageRows; rows at or past `count` land
/// as zeros). The row starts are read before the first cp.async, so that
/// the copies issue back to back. Head_dim 64: DynSplit's chunk columns
/// (a thread's destinations are one address plus immediates). 128: two
/// threads a row, so that a thread reads one row start and its sources
/// are that start plus immediates; part p takes chunks 8 (j / 4) + 4 p +
/// j % 4, so that a quarter warp's copies (4 rows x 2 parts) still fall in
/// 8 different 4-bank groups.
template <int D>
__device__ __forceinline__ void copyGathered(u16 *dst, const u16 *const *rows,
                                             int count, bool vec) {
  using S = DynSplit<D>;
  static_assert(kDynThreads == 128, "two threads a row");
  if (D % 128 == 0 && vec) {
    const int row = (int)threadIdx.x / 2, part = (int)threadIdx.x % 2;
    const u16 *const from = rows[row];
    const bool in = row < count;
#pragma unroll
    for (int j = 0; j < S::kChunksPerRow / 2; ++j) {
      const int chunk = 8 * (j / 4) + 4 * part + j % 4;
      cpAsync16(dst + TileLayout<D>::at(row, chunk), from + chunk * 8, in);
    }
  } else if (S::kColumns && vec) {
    const int row0 = (int)threadIdx.x / S::kChunksPerRow;
    const int chunk = (int)threadIdx.x % S::kChunksPerRow;
    u16 *const to = dst + TileLayout<D>::at(row0, chunk);
    constexpr int kRowStep = S::kStep * TileLayout<D>::kPitch;
    const u16 *from[S::kPer];
#pragma unroll
    for (int j = 0; j < S::kPer; ++j)
      from[j] = rows[row0 + j * S::kStep] + chunk * 8;
    if (count == 64) {
#pragma unroll
      for (int j = 0; j < S::kPer; ++j)
        cpAsync16(to + j * kRowStep, from[j], true);
    } else {
#pragma unroll
      for (int j = 0; j < S::kPer; ++j)
        cpAsync16(to + j * kRowStep, from[j], row0 + j * S::kStep < count);
    }
  } else if (vec) {
    constexpr int kChunks = 64 * S::kChunksPerRow;
    static_assert(kChunks % kDynThreads == 0, "a tile's chunks split evenly");
#pragma unroll
    for (int j = 0; j < kChunks / kDynThreads; ++j) {
      const int i = (int)threadIdx.x + j * kDynThreads;
      const int row = i / S::kChunksPerRow, chunk = i % S::kChunksPerRow;
      cpAsync16(dst + TileLayout<D>::at(row, chunk), rows[row] + chunk * 8,
                row < count);
    }
  } else {
    for (int i = threadIdx.x; i < 64 * D; i += kDynThreads) {
      const int row = i / D, x = i % D;
      dst[TileLayout<D>::at(row, x / 8) + x % 8] =
          row < count ? rows[row][x] : 0;
    }
  }
}

/// Starts the copy of tile t's rows of a [seq, D] slice (row stride
/// `stride`; gathered: the row starts `rows` from stageRows) into `dst`.
template <int D, int Kind>
__device__ __forceinline__ void copyWalkTile(u16 *dst, const u16 *src,
                                             i64 stride, const DynTile &t,
                                             const u16 *const *rows, bool vec) {
  if (Kind == kAllGathered || (Kind == kSomeGathered && t.list))
    copyGathered<D>(dst, rows, t.count, vec);
  else
    copyRun<D>(dst, src, stride, t.k0, t.count, vec);
}

/// The shared memory of the dynamic attention kernels: a key tile and a
/// value tile of 64 rows in TileLayout<D> (the query tile is staged in
/// them before the walk; its fragments stay in registers).
template <int D> struct DynTiles {
  static constexpr int kRows = 64 * TileLayout<D>::kPitch;
  u16 buf[2 * kRows];
  __device__ __forceinline__ u16 *k() { return buf; }
  __device__ __forceinline__ u16 *v() { return buf + kRows; }
};

/// Stages the block's query tile (contiguous rows [q0, q0 + 64) below nq,
/// or the gathered rows rows[0, count) when `rows` is not null) through the
/// key tile, and loads this warp's fragments (pipeQFragments).
template <int D>
__device__ __forceinline__ void stageQ(DynTiles<D> &sm, const u16 *qBase,
                                       i64 stride, i64 q0, i64 nq,
                                       const i64 *rows, int count, bool vec,
                                       u32 (&qf)[D / 16][4]) {
  if (rows)
    copyRows<D>(sm.k(), qBase, stride, rows, count, vec);
  else
    copyTile<D, 64, kDynThreads>(sm.k(), qBase, stride, q0, nq, vec);
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  pipeQFragments<D>(sm.k(), qf);
  __syncthreads();
}

/// The 64 bits [at, at + 64) of a bitmap of `words` u32 words (bit i in
/// word i / 32); bits outside the bitmap are zeros.
__device__ __forceinline__ u64 bitmapBits(const u32 *bm, i64 words, i64 at) {
  const i64 w = at >> 5; // floor(at / 32), also for negative positions
  const int s = (int)(at & 31);
  const u64 w0 = w >= 0 && w < words ? bm[w] : 0u;
  const u64 w1 = w + 1 >= 0 && w + 1 < words ? bm[w + 1] : 0u;
  const u64 w2 = w + 2 >= 0 && w + 2 < words ? bm[w + 2] : 0u;
  const u64 lo = w0 | w1 << 32;
  return s ? lo >> s | w2 << (64 - s) : lo;
}

/// Bits 8 nt + {0, 1} of x (nt = 0..7) moved to bits 4 nt + {0, 1}.
__device__ __forceinline__ u32 pairBits(u64 x) {
  x &= 0x0303030303030303ull;
  x = (x | x >> 4) & 0x00ff00ff00ff00ffull;
  x = (x | x >> 8) & 0x0000ffff0000ffffull;
  return (u32)(x | x >> 16);
}

/// The keep bits (FlashForward's element order: bit 4 nt + e is row half
/// e / 2, column nt * 8 + c2 + e % 2) of this thread from the 64-column
/// masks of its rows (bit c: tile column c allowed).
__device__ __forceinline__ u32 rowsKeep(u64 m0, u64 m1, int c2) {
  return pairBits(m0 >> c2) | pairBits(m1 >> c2) << 2;
}

/// The columns below `count` of a 64-column mask.
__device__ __forceinline__ u64 columnsBelow(int count) {
  return count >= 64 ? ~0ull : (1ull << count) - 1;
}

/// The keep bits of generated pattern P over a gathered tile: the pairs
/// (pos0 or pos1, keys[c]) that P allows, for every column c of this
/// thread. The generic predicate per pair (the keys have no closed form),
/// unrolled; `keys` is the tile's staged DynRows::key (64 valid keys, the
/// last repeated past the tile's count, which the caller's DynRows::edge
/// cuts, so that no column is tested twice), read 16 bytes (a column pair)
/// at a time.
template <class P>
__device__ __forceinline__ u32 gatheredBits(i64 pos0, i64 pos1, const i64 *keys,
                                            int count, int c2, i64 head,
                                            i64 numHeads) {
  u32 bits = 0;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const uint4 w = *reinterpret_cast<const uint4 *>(keys + nt * 8 + c2);
    const i64 k[2] = {(i64)((u64)w.y << 32 | w.x),
                      (i64)((u64)w.w << 32 | w.z)};
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (P::allowed(pos0, k[e], head, numHeads))
        bits |= 1u << (4 * nt + e);
      if (P::allowed(pos1, k[e], head, numHeads))
        bits |= 1u << (4 * nt + 2 + e);
    }
  }
  (void)count;
  return bits;
}

/// This thread's first row in its block (warp * 16 + lane / 4; its second
/// is + 8) and its first column pair of a tile (c2): warps of the block's
/// first 128 threads, or of the consumer warpgroup (threads 128-255) of
/// the sm_90a twins (HopperDynamic.cuh).
__device__ __forceinline__ int dynRow() {
  return (int)(threadIdx.x % 128 / 32 * 16 + threadIdx.x % 32 / 4);
}
__device__ __forceinline__ int dynC2() { return (int)(threadIdx.x % 4 * 2); }

/// The run cursor of a walk (thread 0): runs of generated patterns at
/// non-decreasing key blocks (per reset), the next one enumerated only when
/// the current one is passed.
template <class Pats> struct DynRuns {
  RunCtx ctx;
  Run run;
  /// Forgets the current run (before a walk visits keys in order again).
  __device__ __forceinline__ void reset() { run = makeRun(1, -1, kEmpty); }
  /// The class of key block kb in pattern `id`; `run` is then the first
  /// run ending at or after kb (lo = kUnbounded: none).
  __device__ __forceinline__ int classAt(i64 id, i64 kb) {
    if (kb > run.hi) {
      run = Pats::runFrom(id, ctx, kb);
      if (!isRun(run))
        run = makeRun(kUnbounded, kUnbounded, kEmpty);
    }
    return kb >= run.lo ? run.cls : kEmpty;
  }
  /// Tile: the contiguous keys of key block kb.
  __device__ __forceinline__ void contiguous(DynTile &t, i64 kb,
                                             bool masked) const {
    t.k0 = kb * 64;
    t.list = nullptr;
    t.count = (int)minI(64, ctx.nk - t.k0);
    t.masked = masked || t.count < 64;
  }
};

/// The pipelined attention of this block's 64 query rows (Q fragments qf)
/// over the tiles of walk `w` (shared memory) into `acc`. `ring`: the
/// double-buffered descriptors and, for a walk that gathers, their staged
/// rows (shared memory). In FlashForward's order: the key rows of a tile
/// start loading before O += P V of the one before, its value rows before
/// its scores; thread 0 writes the next descriptor meanwhile, and after the
/// next barrier (the keys landed) threads 0-63 stage its rows, published by
/// the barrier after that. A masked tile no thread keeps is skipped after
/// its keys land (the barrier that waits for them is the test): no values,
/// no scores.
template <int E, int D, class Walk>
__device__ __forceinline__ void
dynPipeline(Walk &w, DynRing<Walk::kRows> &ring, DynTiles<D> &sm,
            const u16 *kBase, i64 kStride, const u16 *vBase, i64 vStride,
            bool vec, const u32 (&qf)[D / 16][4], float scaleLog2,
            FlashAcc<D> &acc) {
  constexpr int kKind = Walk::kRows;
  constexpr bool kGathers = kKind != kContiguousRows;
  DynTile(&tiles)[2] = ring.tiles;
  u16 *const ks = sm.k();
  u16 *const vs = sm.v();
  // The walk's state at its start, for a second, guarded pass (guardRerun).
  __shared__ Walk start;
  if (threadIdx.x == 0)
    start = w;
  // This thread's constants of keep() (its rows), in registers.
  const typename Walk::Lane lane = w.lane();
#pragma unroll 1
  for (bool guarded = false;; guarded = true) {
  if (threadIdx.x == 0) {
    if (guarded)
      w = start;
    w.next(tiles[0]);
  }
  __syncthreads();
  if constexpr (kGathers) {
    stageRows(ring.rows[0], tiles[0], kBase, kStride, vBase, vStride);
    __syncthreads();
  }
  flashInit<D>(acc);
  bool pending = false, pendingMasked = false;
  u32 pendingKeep = 0;
  u32 pa[4][4];
  for (int at = 0;; at ^= 1) {
    // Tile descriptor `at` (and its rows) was written before the last
    // barrier, and descriptor at ^ 1 last read before the one before it.
    const DynTile t = tiles[at];
    const DynRows *rows = nullptr;
    const u16 *const *kRows = nullptr, *const *vRows = nullptr;
    if constexpr (kGathers) {
      rows = &ring.rows[at];
      kRows = rows->kRow;
      vRows = rows->vRow;
    }
    if (t.count) {
      copyWalkTile<D, kKind>(ks, kBase, kStride, t, kRows, vec);
      cpAsyncCommit();
      if (threadIdx.x == 0)
        w.next(tiles[at ^ 1]);
    }
    if (pending) {
      if (guarded && pendingMasked)
        pipeGuard<E, D, kDynThreads>(vs, pendingKeep, acc);
      pipeValues<E, D>(pa, vs, acc);
      pending = false;
    }
    if (!t.count)
      break;
    // (After O += P V: its operands' registers are free again.)
    const u32 keep = t.masked ? w.keep(t, rows, lane) : 0xffffffffu;
    cpAsyncWait<0>();
    // The keys landed; every warp is done with the values.
    if (t.masked) {
      if (!__syncthreads_or(keep != 0)) {
        // Nothing to keep: no values, no scores.
        if constexpr (kGathers) {
          stageRows(ring.rows[at ^ 1], tiles[at ^ 1], kBase, kStride, vBase,
                    vStride);
          __syncthreads();
        }
        continue;
      }
    } else {
      __syncthreads();
    }
    if constexpr (kGathers)
      stageRows(ring.rows[at ^ 1], tiles[at ^ 1], kBase, kStride, vBase,
                    vStride);
    copyWalkTile<D, kKind>(vs, vBase, vStride, t, vRows, vec);
    cpAsyncCommit();
    float s[8][4];
    pipeScores<E, D>(qf, ks, s);
    if (t.masked)
      applyKeep(s, keep);
    pipeSoftmax<E, D>(s, scaleLog2, acc, pa);
    pending = true;
    pendingMasked = t.masked;
    pendingKeep = keep;
    cpAsyncWait<0>();
    __syncthreads(); // the values landed; every warp is done with the keys
  }
  if (!guardRerun<D>(guarded, acc))
    break;
  }
}

/// The attention of this block's query tile (contiguous rows from q0, or
/// the gathered rows rows[0, count)) of head sl.head over walk `w` into
/// `acc`: the query fragments staged (stageQ, whose barriers also publish
/// what thread 0 wrote into the walk before), then dynPipeline.
template <int E, int D, class Walk>
__device__ __forceinline__ void
dynAttendTiles(const AttnParams &p, const DynSlice &sl, Walk &w,
               DynRing<Walk::kRows> &ring, DynTiles<D> &sh, i64 q0,
               const i64 *rows, int count, FlashAcc<D> &acc) {
  const bool vec = p.vectorLoads != 0;
  u32 qf[D / 16][4];
  stageQ<D>(sh, p.q + sl.b * p.qStrideB + sl.head * p.qStrideH, p.qStrideS, q0,
            p.nq, rows, count, vec, qf);
  dynPipeline<E, D>(
      w, ring, sh, p.k + sl.b * p.kStrideB + sl.kvHead * p.kStrideH,
      p.kStrideS, p.v + sl.b * p.vStrideB + sl.kvHead * p.vStrideH, p.vStrideS,
      vec, qf, p.scaleLog2, acc);
}

/// The 64-row query tiles a block of an attention kernel walks, by its
/// tiles type: one (DynTiles, the mma.sync kernels) or one per consumer
/// warpgroup (the sm_90a twins' HopperDyn: kHopperDynParts, specialised in
/// HopperDynamic.cuh). Block x walks tiles x * N .. x * N + N - 1.
template <class Tiles> struct DynParts { static constexpr int value = 1; };

/// A block's query tiles: tile c's rows are contiguous from q0[c] (rows[c]
/// null) or gathered, rows[c][0, count[c]); `live[c]` false where the
/// block's last tile lies past the launch's (a twin's second one).
template <int N> struct DynQueries {
  i64 q0[N];
  const i64 *rows[N];
  int count[N];
  bool live[N];
};

/// Tile c's first row (contiguous tiles), selected rather than indexed:
/// an array indexed by a variable would live in local memory.
template <int N>
__device__ __forceinline__ i64 dynQ0(const DynQueries<N> &t, int c) {
  i64 q0 = t.q0[0];
#pragma unroll
  for (int x = 1; x < N; ++x)
    q0 = c == x ? t.q0[x] : q0;
  return q0;
}

/// Block x's contiguous tiles of N (live where they start before nq).
template <int N> __device__ __forceinline__ DynQueries<N> dynTiles(i64 nq) {
  DynQueries<N> t;
  for (int c = 0; c < N; ++c) {
    t.q0[c] = ((i64)blockIdx.x * N + c) * 64;
    t.rows[c] = nullptr;
    t.count[c] = 0;
    t.live[c] = t.q0[c] < nq;
  }
  return t;
}

/// The attention of the block's query tiles over walks `w` (one a tile,
/// set up where the tile is live) on the tiles type of the kernel: here
/// DynTiles (the mma.sync kernels: one tile, every thread computes;
/// returns 0), the sm_90a twins' HopperDyn (HopperDynamic.cuh: returns the
/// tile of the thread's consumer warpgroup, -1 in the producer's threads,
/// which store nothing). `acc` holds the thread's rows of that tile.
template <int E, int D, class Walk>
__device__ __forceinline__ int
dynAttendWalk(const AttnParams &p, const DynSlice &sl, Walk (&w)[1],
              DynTiles<D> &sh, const DynQueries<1> &qt, FlashAcc<D> &acc) {
  __shared__ DynRing<Walk::kRows> ring;
  dynAttendTiles<E, D>(p, sl, w[0], ring, sh, qt.q0[0], qt.rows[0], qt.count[0],
                       acc);
  return 0;
}
template <int D> struct HopperDyn;
template <int E, int D, class Walk>
__device__ __forceinline__ int
dynAttendWalk(const AttnParams &p, const DynSlice &sl,
              Walk (&w)[kHopperDynParts], HopperDyn<D> &sh,
              const DynQueries<kHopperDynParts> &qt, FlashAcc<D> &acc);

/// Stores this thread's rows (query indices, -1 for none) of (b, head).
template <int E, int D>
__device__ __forceinline__ void dynStore(FlashAcc<D> &acc, const AttnParams &p,
                                         i64 b, i64 head, i64 row0, i64 row1) {
  flashStore<E, D>(acc, p.o + b * p.oStrideB + head * p.oStrideH, p.oStrideS,
                   p.lse ? p.lse + (b * p.numHeads + head) * p.nq : nullptr,
                   row0, row1);
}

/// Stores this thread's rows, normalised, as fp32 rows of D + 1 (the
/// output, then the LSE in natural log; -inf and zeros for empty rows) at
/// `part` (rows indexed by query).
template <int D>
__device__ __forceinline__ void flashStorePartial(FlashAcc<D> &acc,
                                                  float *part, i64 row0,
                                                  i64 row1) {
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  flashRowSums<D>(acc);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 qi = h ? row1 : row0;
    if (qi < 0)
      continue;
    const float inv = acc.l[h] != 0.f ? 1.f / acc.l[h] : 0.f; // NaN stays
    float *row = part + qi * (D + 1);
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      row[dn * 8 + c2] = acc.o[dn][2 * h] * inv;
      row[dn * 8 + c2 + 1] = acc.o[dn][2 * h + 1] * inv;
    }
    if ((lane % 4) == 0)
      row[D] = flashRowLse<D>(acc, h);
  }
}

/// flashStore of this thread's rows merged with rows stored by
/// flashStorePartial: o = (o1 e^lse1 + o2 e^lse2) / (e^lse1 + e^lse2).
template <int E, int D>
__device__ __forceinline__ void
flashStoreMerged(FlashAcc<D> &acc, u16 *oBase, i64 oStrideS, float *lseBase,
                 const float *part, i64 row0, i64 row1) {
  const float negInf = __int_as_float(0xff800000);
  const float ln2 = 0.6931471805599453f, log2e = 1.4426950408889634f;
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  flashRowSums<D>(acc);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 qi = h ? row1 : row0;
    if (qi < 0)
      continue;
    const float *prow = part + qi * (D + 1);
    const float lse1 = prow[D];
    const float lse2 = flashRowLse<D>(acc, h);
    // A NaN part (a NaN its row saw) makes the row NaN (fmaxf drops NaN).
    const float mx = lse1 != lse1 || lse2 != lse2 ? lse1 + lse2
                                                  : fmaxf(lse1, lse2);
    float w1 = 0.f, w2 = 0.f, lse = negInf;
    if (mx != negInf) {
      w1 = exp2f((lse1 - mx) * log2e);
      w2 = exp2f((lse2 - mx) * log2e);
      const float z = w1 + w2;
      lse = mx + log2f(z) * ln2;
      w1 /= z;
      w2 /= z;
    }
    const float inv = acc.l[h] != 0.f ? w2 / acc.l[h] : 0.f;
    u16 *orow = oBase + qi * oStrideS;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<u32 *>(orow + dn * 8 + c2) = packFloats<E>(
          acc.o[dn][2 * h] * inv + prow[dn * 8 + c2] * w1,
          acc.o[dn][2 * h + 1] * inv + prow[dn * 8 + c2 + 1] * w1);
    if (lseBase && (lane % 4) == 0)
      lseBase[qi] = lse;
  }
}

//===----------------------------------------------------------------------===//
// vertical_slash
//===----------------------------------------------------------------------===//

/// Logits (base 2) of the last L queries against the keys of this block's
/// 128: ws.scores[r][k]; -inf where k > p (causal) or p < 0.
template <int E, int D>
__device__ __forceinline__ void vsScores(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  float *scores = reinterpret_cast<float *>(ws + lay.scores);
  const i64 L = vsRows(a, p.nq);
  const u16 *qBase = p.q + b * p.qStrideB + head * p.qStrideH;
  const u16 *kBase = p.k + b * p.kStrideB + kvHead * p.kStrideH;
  __shared__ float ksh[kDynThreads][33];
  __shared__ float qsh[16][33];
  const int t = threadIdx.x;
  const i64 k0 = (i64)blockIdx.x * kDynThreads, key = k0 + t;
  for (i64 r0 = 0; r0 < L; r0 += 16) {
    float acc[16];
#pragma unroll
    for (int i = 0; i < 16; ++i)
      acc[i] = 0.f;
    for (int dc = 0; dc < D; dc += 32) {
      __syncthreads();
      for (int e = t; e < 16 * 32; e += kDynThreads) {
        const int row = e / 32, col = e % 32;
        const i64 qi = p.nq - L + r0 + row;
        qsh[row][col] = r0 + row < L
                            ? loadFloat<E>(qBase[qi * p.qStrideS + dc + col])
                            : 0.f;
      }
      for (int e = t; e < kDynThreads * 32; e += kDynThreads) {
        const int row = e / 32, col = e % 32;
        ksh[row][col] =
            k0 + row < p.nk
                ? loadFloat<E>(kBase[(k0 + row) * p.kStrideS + dc + col])
                : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        float s = 0.f;
        for (int j = 0; j < 32; ++j)
          s += qsh[i][j] * ksh[t][j];
        acc[i] += s;
      }
    }
    if (key < p.nk)
      for (int i = 0; i < 16 && r0 + i < L; ++i) {
        const i64 pos = p.nq - L + r0 + i + p.nk - p.nq;
        scores[(r0 + i) * p.nk + key] =
            key <= pos ? acc[i] * p.scaleLog2 : __int_as_float(0xff800000);
      }
  }
}

/// Row blockIdx.x of the scores to its softmax (0 where masked).
__device__ __forceinline__ void vsSoftmax(const AttnParams &p,
                                          const DynArgs &a) {
  const i64 r = blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  float *row = reinterpret_cast<float *>(ws + lay.scores) + r * p.nk;
  const float negInf = __int_as_float(0xff800000);
  float m = negInf;
  for (i64 k = threadIdx.x; k < p.nk; k += kDynThreads)
    m = fmaxf(m, row[k]);
  m = blockMax(m);
  float z = 0.f;
  if (m != negInf)
    for (i64 k = threadIdx.x; k < p.nk; k += kDynThreads)
      z += exp2f(row[k] - m);
  const float inv = m == negInf ? 0.f : 1.f / blockSum(z);
  for (i64 k = threadIdx.x; k < p.nk; k += kDynThreads)
    row[k] = m == negInf ? 0.f : exp2f(row[k] - m) * inv;
}

/// Column sums colSum[k] and diagonal sums diagSum[i] (d = -i), rows in
/// order.
__device__ __forceinline__ void vsSums(const AttnParams &p, const DynArgs &a) {
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const float *scores = reinterpret_cast<const float *>(ws + lay.scores);
  float *colSum = reinterpret_cast<float *>(ws + lay.colSum);
  float *diagSum = reinterpret_cast<float *>(ws + lay.diagSum);
  const i64 L = vsRows(a, p.nq);
  const i64 x = (i64)blockIdx.x * kDynThreads + threadIdx.x;
  if (x >= p.nk)
    return;
  float c = 0.f, d = 0.f;
  for (i64 r = 0; r < L; ++r) {
    c += scores[r * p.nk + x];
    const i64 pos = p.nq - L + r + p.nk - p.nq, k = pos - x;
    if (k >= 0 && k < p.nk)
      d += scores[r * p.nk + k];
  }
  colSum[x] = c;
  diagSum[x] = d;
}

/// blockIdx.x = 0: the kept columns; 1: the kept diagonals and their groups.
__device__ __forceinline__ void vsSelect(const AttnParams &p,
                                         const DynArgs &a) {
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  i64 *counts = reinterpret_cast<i64 *>(ws + lay.counts);
  const i64 nk = p.nk;
  const bool diag = blockIdx.x == 1;
  const float *sums =
      reinterpret_cast<const float *>(ws + (diag ? lay.diagSum : lay.colSum));
  const i64 forced = minI(diag ? a.lastDiagonals : a.firstColumns, nk);
  const i64 count = minI(maxI(diag ? a.slash : a.vertical, forced), nk);
  const u32 inf = 0xffffffffu;
  auto key = [=](i64 i) { return i < forced ? inf : orderKey(sums[i]); };
  u32 above;
  i64 lastEqual;
  selectTop(key, nk, count, above, lastEqual);
  auto kept = [&](i64 i) {
    const u32 k = key(i);
    return count > 0 && (k > above || (k == above && i <= lastEqual));
  };
  // Ascending output: columns by k; diagonals by d = -i, i.e. i descending.
  // The same in bitmaps for the attention's masks: bit j of the column
  // bitmap is column j, of the diagonal bitmap diagonal i = Nk - 1 - j (so
  // that a row's diagonals run in key order), 32 bits a word.
  i64 *out = reinterpret_cast<i64 *>(ws + (diag ? lay.diags : lay.cols));
  u32 *bitmap =
      reinterpret_cast<u32 *>(ws + (diag ? lay.diagBits : lay.colBits));
  __shared__ unsigned char selFlag[kDynThreads];
  i64 written = 0;
  for (i64 base = 0; base < nk; base += kDynThreads) {
    const i64 j = base + threadIdx.x;
    const i64 i = diag ? nk - 1 - j : j;
    const bool sel = j < nk && kept(i);
    selFlag[threadIdx.x] = sel ? 1 : 0;
    i64 total;
    const i64 at = written + blockScan(sel ? 1 : 0, total); // (barriers)
    if (sel)
      out[at] = diag ? -i : i;
    written += total;
    if (threadIdx.x < kDynThreads / 32) {
      u32 word = 0;
      for (int x = 0; x < 32; ++x)
        word |= (u32)selFlag[32 * threadIdx.x + x] << x;
      bitmap[base / 32 + threadIdx.x] = word;
    }
    __syncthreads(); // the flags are read before the next chunk's
  }
  __syncthreads();
  if (!diag) {
    if (threadIdx.x == 0)
      counts[0] = written;
    return;
  }
  // Diagonal groups: consecutive kept diagonals closer than 65 share one
  // key range per 64-row query block.
  i64 *groups = reinterpret_cast<i64 *>(ws + lay.groups);
  i64 ng = 0;
  for (i64 base = 0; base < written; base += kDynThreads) {
    const i64 j = base + threadIdx.x;
    const bool start = j < written && (j == 0 || out[j] - out[j - 1] > 64);
    i64 total;
    const i64 at = ng + blockScan(start ? 1 : 0, total);
    if (start)
      groups[2 * at] = j; // the first member, replaced below
    ng += total;
  }
  __syncthreads();
  // Members to (dFirst, dLast): a group's last member is one before the
  // next group's first (read before anyone rewrites, chunk by chunk).
  for (i64 base = 0; base < ng; base += kDynThreads) {
    const i64 gi = base + threadIdx.x;
    i64 f = 0, nextF = 0;
    if (gi < ng) {
      f = groups[2 * gi];
      nextF = gi + 1 < ng ? groups[2 * (gi + 1)] : written;
    }
    __syncthreads();
    if (gi < ng) {
      groups[2 * gi] = out[f];
      groups[2 * gi + 1] = out[nextF - 1];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    counts[1] = written;
    counts[2] = ng;
  }
}

/// The walk of vsAttend over one query block (positions p0..p1), in three
/// phases: 0, the key tiles that the diagonal groups' ranges touch, for the
/// pairs on a kept diagonal and not on a kept column; 1, the kept columns,
/// gathered 64 at a time; 2, the static runs of `without` minus the leaf's
/// pairs. Phases 0 and 1 within `with`: its runs class each tile (an empty
/// one is never loaded, a full one needs no pair test). A tile's mode is
/// its phase, its flags 1 where it needs the pair test of `with`
/// (`without` in phase 2).
template <class Pats> struct VsWalk {
  static constexpr int kRows = kSomeGathered;
  // The block's constants.
  const i64 *cols, *groups;
  const u32 *colBits, *diagBits; ///< bitmaps of vsSelect
  i64 nc, ng, words, p0, p1, head, nh, withId, withoutId;
  // The cursor (thread 0).
  DynRuns<Pats> runs;
  i64 at, end; ///< 0: the tile and its range's last; 1: the next column
               ///< entry; 2: the key block
  i64 gi;      ///< 0: the next group
  int phase;

  __device__ __forceinline__ void begin() {
    runs.reset();
    at = end = -1;
    gi = 0;
    phase = 0;
  }

  __device__ __forceinline__ bool next(DynTile &t) {
    t.count = 0;
    for (;;) {
      i64 id = withId, kb;
      if (phase == 0) {
        if (at < end) {
          ++at;
        } else if (gi < ng) {
          // The range of group gi: its diagonals' keys for rows p0..p1.
          const i64 lo = maxI(0, p0 + groups[2 * gi]);
          const i64 hi = minI(runs.ctx.nk - 1, p1 + groups[2 * gi + 1]);
          ++gi;
          if (lo <= hi) {
            // Ranges ascend; a tile two of them touch is visited once
            // (`at` is the last tile considered).
            at = maxI(lo / 64, at + 1) - 1;
            end = hi / 64;
          }
          continue;
        } else {
          phase = 1;
          at = 0;
          runs.reset();
          continue;
        }
        kb = at;
      } else if (phase == 1) {
        if (at >= nc) {
          phase = 2;
          at = -1;
          runs.reset();
          continue;
        }
        kb = cols[at] / 64;
      } else if (phase == 2) {
        id = withoutId;
        kb = at + 1;
      } else {
        return false;
      }
      // The one call site of the run enumeration.
      const int cls = runs.classAt(id, kb);
      t.mode = phase;
      if (phase == 0) {
        if (cls == kEmpty)
          continue;
        runs.contiguous(t, kb, true);
        t.flags = cls == kPartial;
        return true;
      }
      if (phase == 1) {
        const int count = (int)minI(64, nc - at);
        const i64 lastKb = cols[at + count - 1] / 64;
        at += 64;
        if (cls == kEmpty && lastKb < runs.run.lo) {
          // No key of these columns in a run of `with`; none after when
          // `with` has no run left.
          if (runs.run.lo >= kUnbounded)
            at = nc;
          continue;
        }
        t.k0 = 0;
        t.list = cols + (at - 64);
        t.count = count;
        t.masked = true;
        // Every key in one full run of `with`: no pair test.
        t.flags = !(cls == kFull && lastKb <= runs.run.hi);
        return true;
      }
      if (cls == kEmpty) {
        if (runs.run.lo >= kUnbounded) {
          phase = 3;
          return false;
        }
        kb = runs.run.lo;
      }
      at = kb;
      runs.contiguous(t, kb, true);
      t.flags = runs.run.cls == kPartial;
      return true;
    }
  }

  /// This thread's constants of keep(): its first row's position.
  struct Lane {
    i64 rowPos;
  };
  __device__ __forceinline__ Lane lane() const { return {p0 + dynRow()}; }

  __device__ __forceinline__ u32 keep(const DynTile &t, const DynRows *rows,
                                      const Lane &l) const {
    const i64 rowPos = l.rowPos;
    const int c2 = dynC2();
    if (t.mode == 1)
      return t.flags ? rows->edge[c2 / 2] &
                           Pats::keepGathered(withId, rowPos, rowPos + 8,
                                              rows->key, t.count, c2, head, nh)
                     : rows->edge[c2 / 2];
    const u64 edge = columnsBelow(t.count);
    // Row masks of the leaf: the kept columns, and the kept diagonals
    // i = p - k of each row (bit j of diagBits: i = Nk - 1 - j).
    const i64 nk = runs.ctx.nk;
    const u64 col = bitmapBits(colBits, words, t.k0);
    const i64 j0 = nk - 1 - rowPos + t.k0;
    const u64 d0 = bitmapBits(diagBits, words, j0);
    const u64 d1 = bitmapBits(diagBits, words, j0 - 8);
    u64 m0, m1;
    if (t.mode == 0) {
      // On a kept diagonal and not on a kept column (phase 1's).
      m0 = d0 & ~col;
      m1 = d1 & ~col;
    } else {
      // Outside the leaf.
      m0 = ~(d0 | col);
      m1 = ~(d1 | col);
    }
    u32 bits = rowsKeep(m0 & edge, m1 & edge, c2);
    if (t.flags)
      bits &= Pats::keep(t.mode == 0 ? withId : withoutId, rowPos, tileKey0(t),
                         c2, nk, head, nh);
    return bits;
  }
};

/// Attention of one query block over the vertical-slash index (VsWalk).
/// Walk `w` of the query tile at row q0 over the vertical-slash index in
/// slice `sl` (thread 0): the call's nq, nk and heads (nh). The forward's
/// vsAttend and the backward's kernels (DynamicBackward.cuh) set it so.
template <class Pats>
__device__ __forceinline__ void vsWalkInit(VsWalk<Pats> &w, i64 nq, i64 nk,
                                           i64 nh, const DynSlice &sl,
                                           const DynGroupTable &g, i64 q0) {
  const i64 q1 = minI(q0 + 64, nq), shift = nk - nq;
  const DynLayout &lay = sl.lay;
  const i64 *counts = reinterpret_cast<const i64 *>(sl.ws + lay.counts);
  w.runs.ctx = makeRunCtx(q0, q1, nq, nk, 64, sl.head, nh);
  w.cols = reinterpret_cast<const i64 *>(sl.ws + lay.cols);
  w.groups = reinterpret_cast<const i64 *>(sl.ws + lay.groups);
  w.colBits = reinterpret_cast<const u32 *>(sl.ws + lay.colBits);
  w.diagBits = reinterpret_cast<const u32 *>(sl.ws + lay.diagBits);
  w.nc = counts[0];
  w.ng = counts[2];
  w.words = vsBitmapWords(nk);
  w.p0 = q0 + shift;
  w.p1 = q1 - 1 + shift;
  w.head = sl.head;
  w.nh = nh;
  w.withId = g.withId;
  w.withoutId = g.withoutId;
  w.begin();
}

template <int E, int D, class Pats, class Tiles>
__device__ __forceinline__ void vsAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         Tiles &sh) {
  constexpr int N = DynParts<Tiles>::value;
  const DynSlice sl = dynSlice(p, a, g.heads);
  const DynQueries<N> qt = dynTiles<N>(p.nq);
  __shared__ VsWalk<Pats> ws[N];
#pragma unroll
  for (int c = 0; c < N; ++c)
    if (threadIdx.x == 0 && qt.live[c])
      vsWalkInit(ws[c], p.nq, p.nk, p.numHeads, sl, g, qt.q0[c]);
  FlashAcc<D> acc;
  const int c = dynAttendWalk<E, D>(p, sl, ws, sh, qt, acc);
  if (c < 0)
    return;
  const i64 qi = dynQ0(qt, c) + dynRow();
  dynStore<E, D>(acc, p, sl.b, sl.head, qi < p.nq ? qi : -1,
                 qi + 8 < p.nq ? qi + 8 : -1);
}

//===----------------------------------------------------------------------===//
// block_topk
//===----------------------------------------------------------------------===//

/// blockIdx.x < tq: pooled query block blockIdx.x (of positions: its rows
/// are btRowBegin..btRowEnd); else pooled key block blockIdx.x - tq. Means
/// over the tokens present, in fp32, rows in order.
template <int E>
__device__ __forceinline__ void btPool(const AttnParams &p, const DynArgs &a,
                                       const DynGroupTable &g) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tq = btQueryBlocks(a.block, p.nq, p.nk);
  const bool isQ = (i64)blockIdx.x < tq;
  const i64 blk = isQ ? blockIdx.x : blockIdx.x - tq;
  const i64 n = isQ ? p.nq : p.nk;
  const u16 *base = isQ ? p.q + b * p.qStrideB + head * p.qStrideH
                        : p.k + b * p.kStrideB + kvHead * p.kStrideH;
  const i64 stride = isQ ? p.qStrideS : p.kStrideS;
  float *out = reinterpret_cast<float *>(ws + (isQ ? lay.pooledQ : lay.pooledK)) +
               blk * a.headDim;
  const i64 r0 = isQ ? btRowBegin(a.block, p.nq, p.nk, blk) : blk * a.block;
  const i64 r1 = isQ ? btRowEnd(a.block, p.nq, p.nk, blk)
                     : minI(r0 + a.block, n);
  for (i64 x = threadIdx.x; x < a.headDim; x += kDynThreads) {
    float s = 0.f;
    for (i64 r = r0; r < r1; ++r)
      s += loadFloat<E>(base[r * stride + x]);
    out[x] = s / (float)(r1 - r0);
  }
}

/// Query block a.qBlock0 + blockIdx.x: the softmax of its pooled scores
/// (base 2) against every key block, in probability row blockIdx.x.
__device__ __forceinline__ void btScores(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = a.qBlock0 + blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tk = dynCeilDiv(p.nk, a.block);
  const float *qb = reinterpret_cast<const float *>(ws + lay.pooledQ) +
                    i * a.headDim;
  const float *kb = reinterpret_cast<const float *>(ws + lay.pooledK);
  float *row = reinterpret_cast<float *>(ws + lay.probs) + blockIdx.x * tk;
  float m = __int_as_float(0xff800000);
  for (i64 j = threadIdx.x; j < tk; j += kDynThreads) {
    float s = 0.f;
    for (i64 x = 0; x < a.headDim; ++x)
      s += qb[x] * kb[j * a.headDim + x];
    row[j] = s * p.scaleLog2;
    m = fmaxf(m, row[j]);
  }
  m = blockMax(m);
  float z = 0.f;
  for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
    z += exp2f(row[j] - m);
  const float inv = 1.f / blockSum(z);
  for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
    row[j] = exp2f(row[j] - m) * inv;
}

/// How many of row[0, tk) block top-k keeps: top_k, or the fewest largest
/// entries whose mass reaches gamma, clamped to [min_blocks, max_blocks].
/// Whole block; every thread gets the count.
__device__ __forceinline__ i64 btCoverCount(const float *row, i64 tk,
                                            const DynArgs &a) {
  auto key = [=](i64 j) { return orderKey(row[j]); };
  i64 take;
  if (a.topK > 0) {
    take = minI(a.topK, tk);
  } else {
    // The largest T whose entries at or above it hold mass >= gamma.
    const float goal = a.gamma - 1e-6f;
    float total = 0.f;
    for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
      total += row[j];
    total = blockSum(total);
    if (total < goal) {
      take = tk;
    } else {
      u32 t = 0;
#pragma unroll 1
      for (int bit = 31; bit >= 0; --bit) {
        const u32 cand = t | (1u << bit);
        float s = 0.f;
        for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
          s += key(j) >= cand ? row[j] : 0.f;
        if (blockSum(s) >= goal)
          t = cand;
      }
      float above = 0.f, value = 0.f;
      i64 greater = 0, equal = 0;
      for (i64 j = threadIdx.x; j < tk; j += kDynThreads) {
        if (key(j) > t) {
          above += row[j];
          ++greater;
        } else if (key(j) == t) {
          value = row[j];
          ++equal;
        }
      }
      above = blockSum(above);
      value = blockMax(value);
      i64 tot;
      blockScan(greater, tot);
      greater = tot;
      blockScan(equal, tot);
      equal = tot;
      // The fewest entries equal to t that complete the mass: an estimate
      // (fast division), then corrected against the sums themselves.
      i64 m = 1;
      if (value > 0.f) {
        const float need = __fdividef(goal - above, value);
        m = need <= 1.f ? 1 : (i64)need + 1;
        m = minI(m, maxI(equal, 1));
        while (m > 1 && above + (float)(m - 1) * value >= goal)
          --m;
        while (m < equal && above + (float)m * value < goal)
          ++m;
      }
      take = greater + minI(maxI(m, 1), maxI(equal, 1));
    }
    take = maxI(take, a.minBlocks);
    if (a.maxBlocks > 0)
      take = minI(take, a.maxBlocks);
    take = minI(take, tk);
  }
  return take;
}

/// FlexPrefill (tau > 0): whether query block i (index entry) keeps key
/// block j in the vertical-slash-like mode: a kept column, or a kept
/// slash group u = I - j or I - j - 1 (I = btFirstBlock + i).
__device__ __forceinline__ bool btFlexKeeps(const int *flags, i64 tk,
                                            i64 at, i64 j) {
  const i64 u = at - j;
  return flags[j] || (u >= 0 && u < tk && flags[tk + u]) ||
         (u - 1 >= 0 && u - 1 < tk && flags[tk + u - 1]);
}

/// Row blockIdx.x of the last query block (FlexPrefill, tau > 0): its
/// softmax (base 2) over the keys at or before its position (an online
/// maximum and sum per thread, then merged), summed per key block j into
/// flexRows[r][j] and per diagonal group u = floor((p - k) / B) into
/// flexRows[r][tk + u], key blocks in order (fp32, a fixed order). The
/// query row is staged in shared memory (head_dim <= 128).
template <int E>
__device__ __forceinline__ void btFlexRows(const AttnParams &p,
                                           const DynArgs &a,
                                           const DynGroupTable &g) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tq = btQueryBlocks(a.block, p.nq, p.nk),
            tk = dynCeilDiv(p.nk, a.block), B = a.block;
  const i64 row = btRowBegin(B, p.nq, p.nk, tq - 1) + blockIdx.x;
  const i64 pos = row + p.nk - p.nq; // >= 0 in the last block
  const u16 *qRow = p.q + sl.b * p.qStrideB + sl.head * p.qStrideH +
                    row * p.qStrideS;
  const u16 *kBase = p.k + sl.b * p.kStrideB + sl.kvHead * p.kStrideH;
  float *out = reinterpret_cast<float *>(ws + lay.flexRows) +
               (i64)blockIdx.x * 2 * tk;
  __shared__ float qs[128];
  const int t = threadIdx.x;
  for (i64 x = t; x < a.headDim; x += kDynThreads)
    qs[x] = loadFloat<E>(qRow[x]);
  for (i64 j = t; j < 2 * tk; j += kDynThreads)
    out[j] = 0.f;
  __syncthreads();
  auto logit = [&](i64 key) {
    float s = 0.f;
    for (i64 x = 0; x < a.headDim; ++x)
      s += qs[x] * loadFloat<E>(kBase[key * p.kStrideS + x]);
    return s * p.scaleLog2;
  };
  const float negInf = __int_as_float(0xff800000);
  float m = negInf, z = 0.f;
  for (i64 key = t; key <= pos; key += kDynThreads) {
    const float s = logit(key);
    if (s > m) {
      z = z * exp2f(m - s) + 1.f;
      m = s;
    } else {
      z += exp2f(s - m);
    }
  }
  const float mAll = blockMax(m);
  const float inv =
      1.f / blockSum(m == negInf ? 0.f : z * exp2f(m - mAll));
  for (i64 j = 0; j * B <= pos; ++j) {
    // Keys of block j at or before the row: groups hi = floor((p - jB) / B)
    // and hi - 1.
    const i64 hi = (pos - j * B) / B;
    float col = 0.f, inHi = 0.f;
    for (i64 key = j * B + t; key < minI(j * B + B, pos + 1);
         key += kDynThreads) {
      const float w = exp2f(logit(key) - mAll) * inv;
      col += w;
      inHi += (pos - key) / B == hi ? w : 0.f;
    }
    col = blockSum(col);
    inHi = blockSum(inHi);
    if (t == 0) {
      out[j] = col;
      out[tk + hi] += inHi;
      if (hi > 0)
        out[tk + hi - 1] += col - inHi;
    }
  }
}

/// FlexPrefill's choice (tau > 0) for this (batch, head), one block: the
/// true attention's column and slash masses (flexRows averaged over the
/// rows in order), the Jensen-Shannon distance (natural log) of the
/// columns from the estimate (the last query block's row of probs: the
/// launch's chunk of query blocks holds it); above
/// tau the vertical-slash-like mode (flexMode = 1) with the kept columns'
/// and slash groups' flags, each as btCoverCount and selectTop choose.
__device__ __forceinline__ void btFlexMode(const AttnParams &p,
                                           const DynArgs &a) {
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tq = btQueryBlocks(a.block, p.nq, p.nk),
            tk = dynCeilDiv(p.nk, a.block);
  const i64 rows = btLastRows(a.block, p.nq, p.nk);
  const float *perRow = reinterpret_cast<const float *>(ws + lay.flexRows);
  float *mass = reinterpret_cast<float *>(ws + lay.flexMass);
  int *flags = reinterpret_cast<int *>(ws + lay.flexFlags);
  const float *est = reinterpret_cast<const float *>(ws + lay.probs) +
                     (tq - 1 - a.qBlock0) * tk;
  for (i64 j = threadIdx.x; j < 2 * tk; j += kDynThreads) {
    float s = 0.f;
    for (i64 r = 0; r < rows; ++r)
      s += perRow[r * 2 * tk + j];
    mass[j] = s / (float)rows;
    flags[j] = 0;
  }
  __syncthreads();
  float js = 0.f;
  for (i64 j = threadIdx.x; j < tk; j += kDynThreads) {
    const float x = mass[j], y = est[j], mid = 0.5f * (x + y);
    if (x > 0.f)
      js += 0.5f * x * logf(x / mid);
    if (y > 0.f)
      js += 0.5f * y * logf(y / mid);
  }
  const float distance = sqrtf(fmaxf(blockSum(js), 0.f));
  const bool vs = distance > a.tau;
  if (vs)
    for (int part = 0; part < 2; ++part) {
      const float *row = mass + part * tk;
      auto key = [=](i64 j) { return orderKey(row[j]); };
      const i64 take = btCoverCount(row, tk, a);
      u32 above;
      i64 lastEqual;
      selectTop(key, tk, take, above, lastEqual);
      for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
        flags[part * tk + j] =
            key(j) > above || (key(j) == above && j <= lastEqual);
      __syncthreads();
    }
  if (threadIdx.x == 0) {
    *reinterpret_cast<i64 *>(ws + lay.flexMode) = vs ? 1 : 0;
    *reinterpret_cast<float *>(ws + lay.flexMode + 8) = distance;
  }
}

/// Query block i = a.qBlock0 + blockIdx.x (probability row blockIdx.x):
/// how many key blocks it keeps (listCount[i]).
__device__ __forceinline__ void btTake(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = a.qBlock0 + blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tk = dynCeilDiv(p.nk, a.block);
  i64 take;
  if (a.tau > 0 && *reinterpret_cast<const i64 *>(ws + lay.flexMode)) {
    const int *flags = reinterpret_cast<const int *>(ws + lay.flexFlags);
    const i64 blockAt = btFirstBlock(a.block, p.nq, p.nk) + i;
    i64 c = 0;
    for (i64 j = threadIdx.x; j < tk; j += kDynThreads)
      c += btFlexKeeps(flags, tk, blockAt, j) ? 1 : 0;
    take = blockScanTotal(c);
  } else {
    take = btCoverCount(reinterpret_cast<const float *>(ws + lay.probs) +
                            blockIdx.x * tk,
                        tk, a);
  }
  if (threadIdx.x == 0)
    reinterpret_cast<i64 *>(ws + lay.listCount)[i] = take;
}

/// Query block i = a.qBlock0 + blockIdx.x (probability row blockIdx.x):
/// its kept key blocks, ascending.
__device__ __forceinline__ void btSelect(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = a.qBlock0 + blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tk = dynCeilDiv(p.nk, a.block);
  const float *row =
      reinterpret_cast<const float *>(ws + lay.probs) + blockIdx.x * tk;
  auto key = [=](i64 j) { return orderKey(row[j]); };
  i64 *countOut = reinterpret_cast<i64 *>(ws + lay.listCount) + i;
  const i64 take = *countOut;
  __syncthreads(); // everyone has read the count before it is rewritten
  // FlexPrefill's vertical-slash-like mode (tau > 0): the flagged columns
  // and slash groups' blocks; else the `take` largest probabilities.
  const bool flex =
      a.tau > 0 && *reinterpret_cast<const i64 *>(ws + lay.flexMode);
  const int *flags = reinterpret_cast<const int *>(ws + lay.flexFlags);
  const i64 blockAt = btFirstBlock(a.block, p.nq, p.nk) + i;
  u32 above = 0;
  i64 lastEqual = -1;
  if (!flex)
    selectTop(key, tk, take, above, lastEqual);
  i64 *out = reinterpret_cast<i64 *>(ws + lay.lists) + i * lay.cap;
  i64 written = 0;
  for (i64 base = 0; base < tk; base += kDynThreads) {
    const i64 j = base + threadIdx.x;
    const bool sel =
        j < tk && take > 0 &&
        (flex ? btFlexKeeps(flags, tk, blockAt, j)
              : (key(j) > above || (key(j) == above && j <= lastEqual)));
    i64 total;
    const i64 at = written + blockScan(sel ? 1 : 0, total);
    if (sel && at < lay.cap)
      out[at] = j;
    written += total;
  }
  if (threadIdx.x == 0)
    *countOut = minI(written, lay.cap);
}

/// The walk of btAttend over one 64-row query tile. Its rows lie in at most
/// two query blocks (blocks of positions; `block` a multiple of 64, so a
/// key tile lies in one key block): rows before position `split` in the
/// first (list A), the rest in the second (list Z). Phase 0: the key tiles
/// of the blocks either list keeps, the lists merged in key order, each
/// tile once; a row whose own block keeps the tile takes `with`, another
/// `without` (both only in a tile of two query blocks that one of them
/// keeps); a tile every row takes `with` for is classed by its runs (an
/// empty one never loaded, a full one unmasked). Phase 1: the static runs
/// of `without` outside the kept blocks, classed by their runs. A tile's
/// mode: kFull, kPartial (its one pattern's pair test) or kMixed; flags:
/// bit 0 list A keeps it, bit 1 list Z, bit 2 phase 1. L: the lists'
/// element type (i64 for block top-k's, int for a caller's block index,
/// whose query blocks may be larger than its key blocks: `block` is the
/// key blocks' size, `split` comes from the query blocks').
template <class Pats, class L = i64> struct BtWalk {
  static constexpr int kRows = kContiguousRows;
  static const int kMixed = 3;
  // The block's constants.
  const L *listA, *listZ;
  i64 na, nz; ///< list Z empty when the tile lies in one query block
  i64 block, split, p0, head, nh, withId, withoutId;
  int two; ///< the tile's rows lie in two query blocks (an int: the SASS
           ///< check allows no sub-word shared loads)
  // The cursor (thread 0).
  DynRuns<Pats> runs;
  i64 ia, iz;  ///< list positions
  i64 at, end; ///< 0: the tile and its key block's last; 1: the key block
  int phase, kept;

  __device__ __forceinline__ void begin() {
    runs.reset();
    ia = iz = 0;
    at = end = -1;
    phase = kept = 0;
  }

  __device__ __forceinline__ bool next(DynTile &t) {
    t.count = 0;
    for (;;) {
      i64 id = withId, kb;
      if (phase == 0) {
        if (at < end) {
          ++at;
        } else if (ia < na || iz < nz) {
          const i64 ka = ia < na ? listA[ia] : kUnbounded;
          const i64 kz = iz < nz ? listZ[iz] : kUnbounded;
          const i64 blk = minI(ka, kz);
          const bool inA = ka == blk, inZ = two ? kz == blk : inA;
          kept = (inA ? 1 : 0) | (inZ ? 2 : 0);
          ia += ka == blk ? 1 : 0;
          iz += kz == blk ? 1 : 0;
          at = blk * block / 64;
          end = (minI((blk + 1) * block, runs.ctx.nk) - 1) / 64;
        } else {
          phase = 1;
          at = -1;
          ia = iz = 0;
          runs.reset();
          continue;
        }
        kb = at;
      } else if (phase == 1) {
        id = withoutId;
        kb = at + 1;
      } else {
        return false;
      }
      // The one call site of the run enumeration.
      const int cls = runs.classAt(id, kb);
      if (phase == 0) {
        if (kept == 3) {
          if (cls == kEmpty)
            continue;
          t.mode = cls;
        } else {
          t.mode = kMixed;
        }
        t.flags = kept;
        runs.contiguous(t, kb, t.mode != kFull);
        return true;
      }
      if (cls == kEmpty) {
        if (runs.run.lo >= kUnbounded) {
          phase = 2;
          return false;
        }
        kb = runs.run.lo;
      }
      at = kb;
      // Blocks kept by either query block were walked in phase 0.
      const i64 blk = kb * 64 / block;
      while (ia < na && listA[ia] < blk)
        ++ia;
      while (iz < nz && listZ[iz] < blk)
        ++iz;
      if ((ia < na && listA[ia] == blk) || (iz < nz && listZ[iz] == blk))
        continue;
      t.mode = runs.run.cls;
      t.flags = 4;
      runs.contiguous(t, kb, t.mode != kFull);
      return true;
    }
  }

  /// This thread's constants of keep(): its first row's position, and the
  /// keep bits of its rows in the first query block (list A's).
  struct Lane {
    i64 rowPos;
    u32 rowsA;
  };
  __device__ __forceinline__ Lane lane() const {
    const i64 rowPos = p0 + dynRow();
    return {rowPos, (rowPos < split ? 0x33333333u : 0u) |
                        (rowPos + 8 < split ? 0xccccccccu : 0u)};
  }

  __device__ __forceinline__ u32 keep(const DynTile &t, const DynRows *,
                                      const Lane &l) const {
    const int c2 = dynC2();
    if (t.mode == kFull)
      return columnsKeep(t.count, c2);
    // The rows (their keep bits) that take `with`: all of them, none
    // (phase 1), or those whose query block keeps the key block.
    const i64 rowPos = l.rowPos;
    u32 rowsWith = t.flags & 4 ? 0u : 0xffffffffu;
    if (t.mode == kMixed)
      rowsWith = (t.flags & 1 ? l.rowsA : 0u) | (t.flags & 2 ? ~l.rowsA : 0u);
    u32 bits = 0;
#pragma unroll 1
    for (int side = 0; side < 2; ++side) {
      const u32 rows = side ? ~rowsWith : rowsWith;
      if (rows)
        bits |= rows & Pats::keep(side ? withoutId : withId, rowPos,
                                  tileKey0(t), c2, runs.ctx.nk, head, nh);
    }
    return bits;
  }
};

/// Walk `w` of the query tile at row q0 over lists of key blocks per query
/// block (thread 0): block top-k's index (blocks of a.block positions both
/// ways) and the caller's block index (query blocks of blockQ positions,
/// key blocks of blockK keys). `lists(qb, list, n)` gives query block qb's
/// list (counted from the first block, btFirstBlock) and its length. The
/// forward's attention and the backward's kernels (DynamicBackward.cuh)
/// set it so.
template <class Pats, class L, class Lists>
__device__ __forceinline__ void
btWalkInit(BtWalk<Pats, L> &w, i64 nq, i64 nk, i64 nh, const DynSlice &sl,
           const DynGroupTable &g, i64 q0, i64 blockQ, i64 blockK,
           const Lists &lists) {
  const i64 q1 = minI(q0 + 64, nq), shift = nk - nq;
  const i64 first = btFirstBlock(blockQ, nq, nk);
  const i64 qa = floorDiv(q0 + shift, blockQ) - first;
  const i64 qz = floorDiv(q1 - 1 + shift, blockQ) - first; // qa, qa + 1
  w.runs.ctx = makeRunCtx(q0, q1, nq, nk, 64, sl.head, nh);
  lists(qa, w.listA, w.na);
  w.two = qz != qa;
  w.listZ = w.listA;
  w.nz = 0;
  if (w.two)
    lists(qz, w.listZ, w.nz);
  w.block = blockK;
  w.split = (first + qz) * blockQ; // the first position of block qz
  w.p0 = q0 + shift;
  w.head = sl.head;
  w.nh = nh;
  w.withId = g.withId;
  w.withoutId = g.withoutId;
  w.begin();
}

/// btWalkInit over block top-k's index in slice `sl` (blocks of a.block).
template <class Pats>
__device__ __forceinline__ void
btIndexWalkInit(BtWalk<Pats> &w, i64 nq, i64 nk, i64 nh, const DynArgs &a,
                const DynSlice &sl, const DynGroupTable &g, i64 q0) {
  const DynLayout &lay = sl.lay;
  const i64 *lists = reinterpret_cast<const i64 *>(sl.ws + lay.lists);
  const i64 *count = reinterpret_cast<const i64 *>(sl.ws + lay.listCount);
  const i64 cap = lay.cap;
  btWalkInit(w, nq, nk, nh, sl, g, q0, a.block, a.block,
             [=](i64 qb, const i64 *&list, i64 &n) {
               list = lists + qb * cap;
               n = count[qb];
             });
}

/// Attention of a block's query tiles over lists of key blocks per query
/// block (BtWalk<Pats, L>; `init(w, q0)` sets a tile's walk: btWalkInit).
template <int E, int D, class Pats, class L, class Tiles, class Init>
__device__ __forceinline__ void btListsAttend(const AttnParams &p, Tiles &sh,
                                              const DynSlice &sl,
                                              const Init &init) {
  constexpr int N = DynParts<Tiles>::value;
  const DynQueries<N> qt = dynTiles<N>(p.nq);
  __shared__ BtWalk<Pats, L> ws[N];
#pragma unroll
  for (int c = 0; c < N; ++c)
    if (threadIdx.x == 0 && qt.live[c])
      init(ws[c], qt.q0[c]);
  FlashAcc<D> acc;
  const int c = dynAttendWalk<E, D>(p, sl, ws, sh, qt, acc);
  if (c < 0)
    return;
  const i64 qi = dynQ0(qt, c) + dynRow();
  dynStore<E, D>(acc, p, sl.b, sl.head, qi < p.nq ? qi : -1,
                 qi + 8 < p.nq ? qi + 8 : -1);
}

/// Attention of one 64-row query tile over the block top-k index (BtWalk).
template <int E, int D, class Pats, class Tiles>
__device__ __forceinline__ void btAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g, Tiles &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  btListsAttend<E, D, Pats, i64>(p, sh, sl, [&](BtWalk<Pats> &w, i64 q0) {
    btIndexWalkInit(w, p.nq, p.nk, p.numHeads, a, sl, g, q0);
  });
}

//===----------------------------------------------------------------------===//
// block_index
//===----------------------------------------------------------------------===//

/// btWalkInit over the caller's block index: the CSR rows of (sl.b,
/// sl.head), query blocks of a.blockQ positions, key blocks of a.blockK
/// keys. The forward's biAttend and the backward's kernels
/// (DynamicBackward.cuh) set it so.
template <class Pats>
__device__ __forceinline__ void
biWalkInit(BtWalk<Pats, int> &w, i64 nq, i64 nk, i64 nh, const DynArgs &a,
           const DynSlice &sl, const DynGroupTable &g, i64 q0) {
  const int *off =
      a.biOffsets + (sl.b * a.biHeads + sl.head) * (a.biStride + 1);
  const int *cols = a.biCols;
  btWalkInit(w, nq, nk, nh, sl, g, q0, a.blockQ, a.blockK,
             [=](i64 qb, const int *&list, i64 &n) {
               list = cols + off[qb];
               n = off[qb + 1] - off[qb];
             });
}

/// Attention of one 64-row query tile over the caller's block index
/// (block_index: a.biOffsets, a.biCols, validated and uploaded by the
/// runtime): block top-k's walk over the CSR rows of the query blocks
/// (block_q positions) that the tile's rows lie in, at most two (block_q a
/// multiple of 64), each listing key blocks of block_k keys (a multiple of
/// 64: a key tile lies in one). The rest of the pattern masks as for block
/// top-k: allowed = (listed and with) or (not listed and without).
template <int E, int D, class Pats, class Tiles>
__device__ __forceinline__ void biAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g, Tiles &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  btListsAttend<E, D, Pats, int>(p, sh, sl, [&](BtWalk<Pats, int> &w, i64 q0) {
    biWalkInit(w, p.nq, p.nk, p.numHeads, a, sl, g, q0);
  });
}

//===----------------------------------------------------------------------===//
// routing
//===----------------------------------------------------------------------===//

/// Centroid blockIdx.x: the engine's (iterations = 0) or key
/// floor(j * Nk / C).
template <int E>
__device__ __forceinline__ void rtSeed(const AttnParams &p, const DynArgs &a,
                                       const DynGroupTable &g) {
  const i64 j = blockIdx.x;
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  float *cent = reinterpret_cast<float *>(ws + lay.cent) + j * a.headDim;
  const u16 *seed = p.k + b * p.kStrideB + kvHead * p.kStrideH +
                    ((j * p.nk) / a.clusters) * p.kStrideS;
  for (i64 x = threadIdx.x; x < a.headDim; x += kDynThreads)
    cent[x] = a.iterations == 0
                  ? a.centroids[(head * a.clusters + j) * a.headDim + x]
                  : loadFloat<E>(seed[x]);
}

/// The nearest centroid (largest dot product, ties to the smaller index)
/// of key (queries = 0) or query (queries = 1) blockIdx.x * 128 + t.
template <int E>
__device__ __forceinline__ void rtAssign(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         int queries) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const float *cent = reinterpret_cast<const float *>(ws + lay.cent);
  const i64 n = queries ? p.nq : p.nk;
  const i64 r = (i64)blockIdx.x * kDynThreads + threadIdx.x;
  if (r >= n)
    return;
  const u16 *row = queries
                       ? p.q + b * p.qStrideB + head * p.qStrideH + r * p.qStrideS
                       : p.k + b * p.kStrideB + kvHead * p.kStrideH +
                             r * p.kStrideS;
  int best = 0;
  float bestScore = __int_as_float(0xff800000);
  for (i64 j = 0; j < a.clusters; ++j) {
    float s = 0.f;
    for (i64 x = 0; x < a.headDim; ++x)
      s += loadFloat<E>(row[x]) * cent[j * a.headDim + x];
    if (s > bestScore) {
      bestScore = s;
      best = (int)j;
    }
  }
  reinterpret_cast<int *>(ws + (queries ? lay.qCluster : lay.kCluster))[r] =
      best;
}

/// Centroid blockIdx.x to the mean of its keys (kept when it has none).
template <int E>
__device__ __forceinline__ void rtUpdate(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g) {
  const i64 j = blockIdx.x;
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  float *cent = reinterpret_cast<float *>(ws + lay.cent) + j * a.headDim;
  const int *kc = reinterpret_cast<const int *>(ws + lay.kCluster);
  const u16 *kBase = p.k + b * p.kStrideB + kvHead * p.kStrideH;
  for (i64 x = threadIdx.x; x < a.headDim; x += kDynThreads) {
    float s = 0.f;
    i64 n = 0;
    for (i64 r = 0; r < p.nk; ++r)
      if (kc[r] == j) {
        s += loadFloat<E>(kBase[r * p.kStrideS + x]);
        ++n;
      }
    if (n)
      cent[x] = s / (float)n;
  }
}

/// blockIdx.x = 0: queries, 1: keys. Stable counting sort by cluster:
/// segment starts, the permutation (segment order -> position) and, for
/// queries, the starts of each segment's 64-row tiles.
__device__ __forceinline__ void rtSort(const AttnParams &p, const DynArgs &a) {
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const bool keys = blockIdx.x == 1;
  const i64 n = keys ? p.nk : p.nq, C = a.clusters;
  const int *cl = reinterpret_cast<const int *>(ws + (keys ? lay.kCluster
                                                           : lay.qCluster));
  i64 *start = reinterpret_cast<i64 *>(ws + (keys ? lay.kStart : lay.qStart));
  i64 *cursor =
      reinterpret_cast<i64 *>(ws + (keys ? lay.kCursor : lay.qCursor));
  i64 *perm = reinterpret_cast<i64 *>(ws + (keys ? lay.permK : lay.permQ));
  __shared__ int chunk[kDynThreads];
  for (i64 c = threadIdx.x; c < C; c += kDynThreads)
    cursor[c] = 0;
  __syncthreads();
  // Counts: in each chunk of 128 tokens, the last thread of a cluster adds
  // the chunk's members of it (no two threads write one counter).
  auto rankInChunk = [&](int c, i64 limit, bool &last) {
    i64 rank = 0;
    last = true;
    for (int u = 0; u < limit; ++u) {
      if (chunk[u] != c)
        continue;
      if (u < (int)threadIdx.x)
        ++rank;
      else if (u > (int)threadIdx.x)
        last = false;
    }
    return rank;
  };
  for (i64 base = 0; base < n; base += kDynThreads) {
    const i64 r = base + threadIdx.x, limit = minI(kDynThreads, n - base);
    chunk[threadIdx.x] = r < n ? cl[r] : -1;
    __syncthreads();
    if (r < n) {
      bool last;
      const i64 rank = rankInChunk(chunk[threadIdx.x], limit, last);
      if (last)
        cursor[chunk[threadIdx.x]] += rank + 1;
    }
    __syncthreads();
  }
  // Starts (exclusive prefix of the counts) and, for queries, tile starts.
  i64 *tiles = reinterpret_cast<i64 *>(ws + lay.tileStart);
  i64 sum = 0, tileSum = 0;
  for (i64 base = 0; base <= C; base += kDynThreads) {
    const i64 c = base + threadIdx.x;
    const i64 count = c < C ? cursor[c] : 0;
    i64 total, tileTotal;
    const i64 at = sum + blockScan(count, total);
    const i64 tileAt = tileSum + blockScan((count + 63) / 64, tileTotal);
    if (c <= C) {
      start[c] = at;
      if (!keys)
        tiles[c] = tileAt;
    }
    sum += total;
    tileSum += tileTotal;
  }
  __syncthreads();
  for (i64 c = threadIdx.x; c < C; c += kDynThreads)
    cursor[c] = start[c];
  __syncthreads();
  for (i64 base = 0; base < n; base += kDynThreads) {
    const i64 r = base + threadIdx.x, limit = minI(kDynThreads, n - base);
    chunk[threadIdx.x] = r < n ? cl[r] : -1;
    __syncthreads();
    i64 at = -1;
    bool last = false;
    if (r < n) {
      const i64 rank = rankInChunk(chunk[threadIdx.x], limit, last);
      at = cursor[chunk[threadIdx.x]] + rank;
      perm[at] = r;
    }
    __syncthreads();
    if (r < n && last)
      cursor[chunk[threadIdx.x]] = at + 1;
    __syncthreads();
  }
}

/// The walk of rtAttend: the keys of one cluster's segment, gathered 64 at
/// a time (permK), every pair tested against `with` on the original
/// positions.
template <class Pats> struct RtWalk {
  static constexpr int kRows = kAllGathered;
  // The block's constants.
  const i64 *permK;
  i64 rowQ[64]; ///< the query tile's rows (query indices, -1: none)
  i64 shift, head, nh, withId;
  // The cursor (thread 0).
  i64 at, end; ///< the segment's next key entry and its end

  __device__ __forceinline__ bool next(DynTile &t) {
    t.count = 0;
    if (at >= end)
      return false;
    t.k0 = 0;
    t.list = permK + at;
    t.count = (int)minI(64, end - at);
    t.masked = true;
    at += 64;
    return true;
  }

  /// This thread's constants of keep(): its rows' positions and their
  /// keep bits (rows past the segment have none).
  struct Lane {
    i64 pos0, pos1;
    u32 rows;
  };
  __device__ __forceinline__ Lane lane() const {
    const int row = dynRow();
    const i64 r0 = rowQ[row], r1 = rowQ[row + 8];
    return {r0 + shift, r1 + shift,
            (r0 >= 0 ? 0x33333333u : 0u) | (r1 >= 0 ? 0xccccccccu : 0u)};
  }

  __device__ __forceinline__ u32 keep(const DynTile &t, const DynRows *rows,
                                      const Lane &l) const {
    const int c2 = dynC2();
    return l.rows & rows->edge[c2 / 2] &
           Pats::keepGathered(withId, l.pos0, l.pos1, rows->key, t.count, c2,
                              head, nh);
  }
};

/// The walk of segment tile x (of routingTiles()) in slice `sl`: the keys
/// of its cluster; w.rowQ its rows (query indices, -1 past them: threads
/// 0-63), the cursor and constants thread 0's; the call's nq, nk and heads
/// (nh). Returns the tile's rows in the permutation (`count` of them), or
/// null past the segments' tiles (no rows). The forward's rtAttend and the
/// backward's kernels (DynamicBackward.cuh) set it so.
template <class Pats>
__device__ __forceinline__ const i64 *
rtWalkInit(RtWalk<Pats> &w, int &count, i64 nq, i64 nk, i64 nh,
           const DynArgs &a, const DynSlice &sl, const DynGroupTable &g,
           i64 x) {
  const DynLayout &lay = sl.lay;
  const i64 *tileStart = reinterpret_cast<const i64 *>(sl.ws + lay.tileStart);
  const i64 *qStart = reinterpret_cast<const i64 *>(sl.ws + lay.qStart);
  const i64 *kStart = reinterpret_cast<const i64 *>(sl.ws + lay.kStart);
  const i64 *permQ = reinterpret_cast<const i64 *>(sl.ws + lay.permQ);
  const i64 C = a.clusters;
  count = 0;
  if (x >= tileStart[C]) { // no rows: nothing stored
    if (threadIdx.x < 64)
      w.rowQ[threadIdx.x] = -1;
    return nullptr;
  }
  // The cluster: the last c with tileStart[c] <= x.
  i64 lo = 0, hi = C;
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (tileStart[mid] <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  const i64 c = lo;
  const i64 r0 = qStart[c] + (x - tileStart[c]) * 64;
  const int rows = (int)minI(64, qStart[c + 1] - r0);
  count = rows;
  if (threadIdx.x < 64)
    w.rowQ[threadIdx.x] =
        (int)threadIdx.x < rows ? permQ[r0 + threadIdx.x] : -1;
  if (threadIdx.x == 0) {
    w.permK = reinterpret_cast<const i64 *>(sl.ws + lay.permK);
    w.shift = nk - nq;
    w.head = sl.head;
    w.nh = nh;
    w.withId = g.withId;
    w.at = kStart[c];
    w.end = kStart[c + 1];
  }
  return permQ + r0;
}

/// Query tile blockIdx.x of the segments (grid routingTiles()): its rows
/// gathered from Q, the keys of its cluster (RtWalk); rows stored through
/// the permutation.
template <int E, int D, class Pats, class Tiles>
__device__ __forceinline__ void rtAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         Tiles &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const DynLayout &lay = sl.lay;
  const i64 *tileStart = reinterpret_cast<const i64 *>(sl.ws + lay.tileStart);
  const i64 *permQ = reinterpret_cast<const i64 *>(sl.ws + lay.permQ);
  constexpr int N = DynParts<Tiles>::value;
  if ((i64)blockIdx.x * N >= tileStart[a.clusters])
    return; // beyond the segments' tiles (uniform per block)
  DynQueries<N> qt;
  __shared__ RtWalk<Pats> ws[N];
#pragma unroll
  for (int part = 0; part < N; ++part) {
    const i64 *rows =
        rtWalkInit(ws[part], qt.count[part], p.nq, p.nk, p.numHeads, a, sl, g,
                   (i64)blockIdx.x * N + part);
    qt.live[part] = rows != nullptr;
    qt.q0[part] = 0;
    qt.rows[part] = rows ? rows : permQ;
  }
  FlashAcc<D> acc;
  const int part = dynAttendWalk<E, D>(p, sl, ws, sh, qt, acc);
  if (part < 0)
    return;
  const RtWalk<Pats> &w = ws[part];
  const int row = dynRow();
  // The slice again, from the kernel's parameters: kept live through the
  // walk, it spilled in the sm_90a twin at head_dim 128 (NVRTC 13.0).
  const DynSlice out = dynSlice(p, a, g.heads);
  if (a.merge)
    flashStorePartial<D>(acc,
                         reinterpret_cast<float *>(out.ws + out.lay.partial),
                         w.rowQ[row], w.rowQ[row + 8]);
  else
    dynStore<E, D>(acc, p, out.b, out.head, w.rowQ[row], w.rowQ[row + 8]);
}

/// The walk of rtRest: the static runs of `without` for one 64-row query
/// block, minus the pairs within a cluster. A tile's flags: 1 where the run
/// is partial (`without`'s pair test too).
template <class Pats> struct RestWalk {
  static constexpr int kRows = kContiguousRows;
  // The block's constants.
  const int *kCluster;
  int rowCluster[64]; ///< the clusters of the block's rows (-1: none)
  i64 p0, head, nh, withoutId;
  // The cursor (thread 0).
  DynRuns<Pats> runs;
  i64 at;

  __device__ __forceinline__ bool next(DynTile &t) {
    t.count = 0;
    i64 kb = at + 1;
    if (runs.classAt(withoutId, kb) == kEmpty) {
      if (runs.run.lo >= kUnbounded)
        return false;
      kb = runs.run.lo;
    }
    at = kb;
    t.flags = runs.run.cls == kPartial;
    runs.contiguous(t, kb, true);
    return true;
  }

  /// This thread's constants of keep(): its rows' clusters.
  struct Lane {
    int c0, c1;
  };
  __device__ __forceinline__ Lane lane() const {
    const int row = dynRow();
    return {rowCluster[row], rowCluster[row + 8]};
  }

  __device__ __forceinline__ u32 keep(const DynTile &t, const DynRows *,
                                      const Lane &l) const {
    const int row = dynRow(), c2 = dynC2();
    const int c0 = l.c0, c1 = l.c1;
    u32 bits = 0;
#pragma unroll 1
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = nt * 8 + c2 + e;
        if (c < t.count) {
          const int kc = kCluster[t.k0 + c];
          if (c0 >= 0 && kc != c0)
            bits |= 1u << (4 * nt + e);
          if (c1 >= 0 && kc != c1)
            bits |= 1u << (4 * nt + 2 + e);
        }
      }
    if (t.flags)
      bits &= Pats::keep(withoutId, p0 + row, tileKey0(t), c2, runs.ctx.nk,
                         head, nh);
    return bits;
  }
};

/// Routing under a union (or the right of a difference): per 64-row query
/// block, the static runs of `without` minus the pairs within a cluster
/// (RestWalk), merged with the segments' rows (the partial workspace) by
/// their LSE.
template <int E, int D, class Pats, class Tiles>
__device__ __forceinline__ void rtRest(const AttnParams &p, const DynArgs &a,
                                       const DynGroupTable &g,
                                       Tiles &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  constexpr int N = DynParts<Tiles>::value;
  const DynLayout &lay = sl.lay;
  const DynQueries<N> qt = dynTiles<N>(p.nq);
  __shared__ RestWalk<Pats> ws[N];
#pragma unroll
  for (int c = 0; c < N; ++c) {
    if (!qt.live[c])
      continue;
    const i64 q0 = qt.q0[c], q1 = minI(q0 + 64, p.nq);
    RestWalk<Pats> &w = ws[c];
    if (threadIdx.x < 64) {
      const int *qc = reinterpret_cast<const int *>(sl.ws + lay.qCluster);
      const i64 qi = q0 + threadIdx.x;
      w.rowCluster[threadIdx.x] = qi < p.nq ? qc[qi] : -1;
    }
    if (threadIdx.x != 0)
      continue;
    w.runs.ctx = makeRunCtx(q0, q1, p.nq, p.nk, 64, sl.head, p.numHeads);
    w.runs.reset();
    w.kCluster = reinterpret_cast<const int *>(sl.ws + lay.kCluster);
    w.p0 = q0 + p.nk - p.nq;
    w.head = sl.head;
    w.nh = p.numHeads;
    w.withoutId = g.withoutId;
    w.at = -1;
  }
  FlashAcc<D> acc;
  const int c = dynAttendWalk<E, D>(p, sl, ws, sh, qt, acc);
  if (c < 0)
    return;
  const i64 qi = dynQ0(qt, c) + dynRow();
  flashStoreMerged<E, D>(
      acc, p.o + sl.b * p.oStrideB + sl.head * p.oStrideH, p.oStrideS,
      p.lse ? p.lse + (sl.b * p.numHeads + sl.head) * p.nq : nullptr,
      reinterpret_cast<const float *>(sl.ws + lay.partial), qi < p.nq ? qi : -1,
      qi + 8 < p.nq ? qi + 8 : -1);
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_DYNAMICINDEX_CUH
