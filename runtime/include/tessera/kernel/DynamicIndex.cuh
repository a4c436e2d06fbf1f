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
//   forced ones first, ties as docs/patterns.md says; then the diagonal
//   groups: diagonals closer than 64 merged into one key range per query
//   block), vsAttend.
// block_topk: btPool (mean-pooled Q and K blocks), btScores (the pooled
//   softmax per query block), with tau > 0 btFlexRows (the last query
//   block's true attention per row: column and slash masses) and
//   btFlexMode (FlexPrefill's Jensen-Shannon choice; the kept columns and
//   slash groups), btTake (how many key blocks: top_k, or the fewest
//   reaching gamma, clamped; or the vertical-slash-like lists' sizes),
//   btSelect (which), btAttend.
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
// leaf read as skip) through FlashForward's tile step: every allowed pair
// is visited exactly once, masked as
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

__device__ __forceinline__ i64 blockCount(bool flag) {
  i64 total;
  blockScan(flag ? 1 : 0, total);
  return total;
}

__device__ __forceinline__ bool blockAny(bool flag) {
  return blockCount(flag) > 0;
}

/// Whether x is in the ascending array a[0, n).
__device__ __forceinline__ bool sortedContains(const i64 *a, i64 n, i64 x) {
  i64 lo = 0, hi = n;
  while (lo < hi) {
    const i64 mid = (lo + hi) / 2;
    if (a[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && a[lo] == x;
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

/// This block's (batch, head) slice of a dynamic group's workspace.
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
  const i64 slot = blockIdx.y;
  s.b = blockIdx.z;
  s.head = heads ? heads[slot] : 0;
  s.kvHead = s.head / (p.numHeads / p.numKvHeads);
  s.lay = dynLayout(a, p.nq, p.nk);
  s.ws = a.ws + (s.b * a.numSlots + slot) * s.lay.size;
  return s;
}

//===----------------------------------------------------------------------===//
// Shared pieces of the attention kernels
//===----------------------------------------------------------------------===//

/// Rows rows[i] (i < count, the list in shared memory) of a [seq, D] slice
/// into shared memory with pitch P; the other rows of the 64 are zeros.
template <int D, int P>
__device__ __forceinline__ void loadRows(u16 *dst, const u16 *src, i64 stride,
                                         const i64 *rows, int count,
                                         bool vec) {
  if (vec) {
    for (int c = threadIdx.x; c < 64 * D / 8; c += blockDim.x) {
      const int row = c / (D / 8), col = (c % (D / 8)) * 8;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (row < count)
        val = *reinterpret_cast<const uint4 *>(src + rows[row] * stride + col);
      *reinterpret_cast<uint4 *>(dst + row * P + col) = val;
    }
  } else {
    for (int c = threadIdx.x; c < 64 * D; c += blockDim.x) {
      const int row = c / D, col = c % D;
      dst[row * P + col] = row < count ? src[rows[row] * stride + col] : 0;
    }
  }
}

/// Bits (FlashForward's element order) of this thread's 32 accumulator
/// elements for which f(h, c) holds: h = 0 or 1 the row (lane / 4 + 8 h of
/// the warp), c the tile column.
template <class F> __device__ __forceinline__ u32 elementBits(int c2, F f) {
  u32 bits = 0;
#pragma unroll 1
  for (int i = 0; i < 32; ++i)
    if (f((i & 3) >= 2 ? 1 : 0, (i >> 2) * 8 + c2 + (i & 1)))
      bits |= 1u << i;
  return bits;
}

/// The shared memory of the dynamic attention kernels.
template <int D> struct DynShared {
  SharedTiles<D> tiles;
  i64 keys[64];       ///< the key of each tile column (-1: none)
  i64 rows[64];       ///< gathered query rows (routing)
  i64 pending[192];   ///< gathered columns waiting for a tile
  unsigned char diagFlag[128], colFlag[64];
};

/// Everything one query block's walk needs.
template <int E, int D> struct DynWalk {
  const AttnParams *p;
  DynShared<D> *sh;
  const u16 *kBase, *vBase;
  u32 qf[D / 16][4];
  FlashAcc<D> acc;
  int c2;
  bool vec;
};

/// A walk over the key and value rows of batch b, kv head kvHead.
template <int E, int D>
__device__ __forceinline__ void beginWalk(DynWalk<E, D> &w,
                                          const AttnParams &p,
                                          DynShared<D> &sh, i64 b, i64 kvHead) {
  w.p = &p;
  w.sh = &sh;
  w.kBase = p.k + b * p.kStrideB + kvHead * p.kStrideH;
  w.vBase = p.v + b * p.vStrideB + kvHead * p.vStrideH;
  w.vec = p.vectorLoads != 0;
  w.c2 = (threadIdx.x % 32 % 4) * 2;
}

/// Stores this thread's rows (query indices, -1 for none) of (b, head).
template <int E, int D>
__device__ __forceinline__ void dynStore(DynWalk<E, D> &w, i64 b, i64 head,
                                         i64 row0, i64 row1) {
  const AttnParams &p = *w.p;
  flashStore<E, D>(w.acc, p.o + b * p.oStrideB + head * p.oStrideH,
                   p.oStrideS,
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

/// Loads the key and value rows of sh.keys (count of them) and runs one
/// tile step with `keep` (computed by the caller after the barrier).
template <int E, int D, class Keep>
__device__ __forceinline__ void walkTile(DynWalk<E, D> &w, int count,
                                         bool contiguous, Keep keepOf) {
  const int P = D + 8;
  DynShared<D> &sh = *w.sh;
  if (contiguous) {
    loadTile<D, P, 64>(sh.tiles.ks, w.kBase, w.p->kStrideS, sh.keys[0],
                       sh.keys[0] + count, w.vec);
    loadTile<D, P, 64>(sh.tiles.vs, w.vBase, w.p->vStrideS, sh.keys[0],
                       sh.keys[0] + count, w.vec);
  } else {
    loadRows<D, P>(sh.tiles.ks, w.kBase, w.p->kStrideS, sh.keys, count,
                   w.vec);
    loadRows<D, P>(sh.tiles.vs, w.vBase, w.p->vStrideS, sh.keys, count,
                   w.vec);
  }
  __syncthreads();
  const u32 keep = keepOf();
  if (blockAny(keep != 0)) {
    guardValues<E, D>(sh.tiles.vs, keep, w.acc);
    flashTile<E, D>(w.qf, sh.tiles.ks, sh.tiles.vs, keep, w.p->scaleLog2,
                    w.acc);
  }
  __syncthreads();
}

/// Fills sh.keys with k0 .. k0 + count - 1 (then -1).
template <int D>
__device__ __forceinline__ void contiguousKeys(DynShared<D> &sh, i64 k0,
                                               int count) {
  if (threadIdx.x < 64)
    sh.keys[threadIdx.x] = (int)threadIdx.x < count ? k0 + threadIdx.x : -1;
  __syncthreads();
}

/// Stages a contiguous query block and this warp's Q fragments.
template <int E, int D>
__device__ __forceinline__ void stageQueries(DynWalk<E, D> &w, const u16 *qBase,
                                             i64 q0) {
  const int P = D + 8;
  loadTile<D, P, 64>(w.sh->tiles.ks, qBase, w.p->qStrideS, q0, w.p->nq, w.vec);
  __syncthreads();
  loadQFragments<D>(w.sh->tiles.ks, w.qf);
  __syncthreads();
  flashInit<D>(w.acc);
}

/// One contiguous key tile [k0, k0 + count) of this query block, its
/// elements kept where elem(h, c) holds (h the row half, c the column).
template <int E, int D, class Elem>
__device__ __forceinline__ void walkContiguous(DynWalk<E, D> &w, i64 k0,
                                               int count, Elem elem) {
  contiguousKeys<D>(*w.sh, k0, count);
  walkTile<E, D>(w, count, true, [&]() {
    return elementBits(w.c2, [&](int h, int c) {
      return c < count && elem(h, c);
    });
  });
}

/// The key tiles of the static runs of generated pattern `id` for this
/// query block: per tile, prepare(k0) (false: skip the tile), then
/// walkContiguous with elem(h, c, k0).
template <int E, int D, class Pats, class Prepare, class Elem>
__device__ __forceinline__ void walkRuns(DynWalk<E, D> &w, const RunCtx &ctx,
                                         i64 id, Prepare prepare, Elem elem) {
  for (i64 next = 0;;) {
    const Run run = Pats::runFrom(id, ctx, next);
    if (!isRun(run))
      break;
    next = run.hi + 1;
    for (i64 kb = run.lo; kb <= run.hi; ++kb) {
      const i64 k0 = kb * 64;
      if (!prepare(k0))
        continue;
      walkContiguous<E, D>(w, k0, (int)minI(64, w.p->nk - k0),
                           [&](int h, int c) { return elem(h, c, k0); });
    }
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
  i64 *out = reinterpret_cast<i64 *>(ws + (diag ? lay.diags : lay.cols));
  i64 written = 0;
  for (i64 base = 0; base < nk; base += kDynThreads) {
    const i64 j = base + threadIdx.x;
    const i64 i = diag ? nk - 1 - j : j;
    const bool sel = j < nk && kept(i);
    i64 total;
    const i64 at = written + blockScan(sel ? 1 : 0, total);
    if (sel)
      out[at] = diag ? -i : i;
    written += total;
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

/// Attention of one query block over the vertical-slash index: the key
/// ranges of the diagonal groups, then the kept columns outside them
/// (gathered, 64 at a time), then the static runs of `without`.
template <int E, int D, class Pats>
__device__ __forceinline__ void vsAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         DynShared<D> &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 *cols = reinterpret_cast<const i64 *>(ws + lay.cols);
  const i64 *diags = reinterpret_cast<const i64 *>(ws + lay.diags);
  const i64 *groups = reinterpret_cast<const i64 *>(ws + lay.groups);
  const i64 *counts = reinterpret_cast<const i64 *>(ws + lay.counts);
  const i64 nc = counts[0], nd = counts[1], ng = counts[2];
  const i64 nh = p.numHeads;

  DynWalk<E, D> w;
  beginWalk<E, D>(w, p, sh, b, kvHead);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 q0 = (i64)blockIdx.x * 64, q1 = minI(q0 + 64, p.nq);
  stageQueries<E, D>(w, p.q + b * p.qStrideB + head * p.qStrideH, q0);
  const i64 shift = p.nk - p.nq;
  const i64 p0 = q0 + shift, p1 = q1 - 1 + shift;
  const i64 rowPos = q0 + warp * 16 + lane / 4 + shift;
  const i64 rowLimit = p1; // rows beyond q1 are padding
  const i64 withId = g.withId, withoutId = g.withoutId;

  // The leaf's flags over a contiguous tile: diagonals d in [dlo, dlo + 127]
  // and columns k0 .. k0 + 63.
  auto flags = [&](i64 k0) {
    const i64 dlo = k0 - (p0 + 63);
    sh.diagFlag[threadIdx.x] = sortedContains(diags, nd, dlo + threadIdx.x);
    if (threadIdx.x < 64)
      sh.colFlag[threadIdx.x] = sortedContains(cols, nc, k0 + threadIdx.x);
    return dlo;
  };
  // Walk 1a: the diagonal groups' key ranges.
  for (i64 gi = 0; gi < ng; ++gi) {
    const i64 lo = maxI(0, p0 + groups[2 * gi]);
    const i64 hi = minI(p.nk - 1, p1 + groups[2 * gi + 1]);
    for (i64 k0 = lo; k0 <= hi; k0 += 64) {
      const i64 dlo = flags(k0);
      walkContiguous<E, D>(w, k0, (int)minI(64, hi + 1 - k0), [&](int h,
                                                                  int c) {
        const i64 pos = rowPos + 8 * h, k = k0 + c;
        return pos <= rowLimit &&
               (sh.colFlag[c] || sh.diagFlag[k - pos - dlo]) &&
               Pats::allowed(withId, pos, k, head, nh);
      });
    }
  }
  // Walk 1b: kept columns outside every range, gathered.
  auto covered = [&](i64 k) {
    // The last group with p0 + dFirst <= k.
    i64 lo = 0, hi = ng;
    while (lo < hi) {
      const i64 mid = (lo + hi) / 2;
      if (p0 + groups[2 * mid] <= k)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo > 0 && k <= p1 + groups[2 * (lo - 1) + 1] &&
           k >= maxI(0, p0 + groups[2 * (lo - 1)]);
  };
  auto gatheredTile = [&](int count) {
    if (threadIdx.x < 64)
      sh.keys[threadIdx.x] =
          (int)threadIdx.x < count ? sh.pending[threadIdx.x] : -1;
    __syncthreads();
    walkTile<E, D>(w, count, false, [&]() {
      return elementBits(w.c2, [&](int h, int c) {
        const i64 pos = rowPos + 8 * h;
        return c < count && pos <= rowLimit &&
               Pats::allowed(withId, pos, sh.keys[c], head, nh);
      });
    });
  };
  i64 pending = 0;
  for (i64 base = 0; base < nc; base += kDynThreads) {
    const i64 j = base + threadIdx.x;
    const bool take = j < nc && !covered(cols[j]);
    i64 total;
    const i64 at = pending + blockScan(take ? 1 : 0, total);
    if (take)
      sh.pending[at] = cols[j];
    pending += total;
    __syncthreads();
    while (pending >= 64) {
      gatheredTile(64);
      // Move the rest (at most 127) to the front.
      i64 rest = pending - 64, moved = 0;
      if (threadIdx.x < rest)
        moved = sh.pending[64 + threadIdx.x];
      __syncthreads();
      if (threadIdx.x < rest)
        sh.pending[threadIdx.x] = moved;
      __syncthreads();
      pending = rest;
    }
  }
  if (pending > 0)
    gatheredTile((int)pending);
  // Walk 2: the pattern's static runs with the leaf read as skip, minus the
  // leaf's pairs.
  const RunCtx ctx = makeRunCtx(q0, q1, p.nq, p.nk, 64, head, nh);
  i64 dlo = 0;
  walkRuns<E, D, Pats>(
      w, ctx, withoutId,
      [&](i64 k0) {
        dlo = flags(k0);
        return true;
      },
      [&](int h, int c, i64 k0) {
        const i64 pos = rowPos + 8 * h, k = k0 + c;
        return pos <= rowLimit &&
               !(sh.colFlag[c] || sh.diagFlag[k - pos - dlo]) &&
               Pats::allowed(withoutId, pos, k, head, nh);
      });
  const i64 qi0 = q0 + warp * 16 + lane / 4, qi1 = qi0 + 8;
  dynStore<E, D>(w, b, head, qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
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

/// Query block blockIdx.x: the softmax of its pooled scores (base 2)
/// against every key block.
__device__ __forceinline__ void btScores(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tk = dynCeilDiv(p.nk, a.block);
  const float *qb = reinterpret_cast<const float *>(ws + lay.pooledQ) +
                    i * a.headDim;
  const float *kb = reinterpret_cast<const float *>(ws + lay.pooledK);
  float *row = reinterpret_cast<float *>(ws + lay.probs) + i * tk;
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
/// columns from the estimate (the last query block's row of probs); above
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
                     (tq - 1) * tk;
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

/// Query block blockIdx.x: how many key blocks it keeps (listCount[i]).
__device__ __forceinline__ void btTake(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = blockIdx.x;
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
                            i * tk,
                        tk, a);
  }
  if (threadIdx.x == 0)
    reinterpret_cast<i64 *>(ws + lay.listCount)[i] = take;
}

/// Query block blockIdx.x: its kept key blocks, ascending.
__device__ __forceinline__ void btSelect(const AttnParams &p,
                                         const DynArgs &a) {
  const i64 i = blockIdx.x;
  const DynSlice sl = dynSlice(p, a, nullptr);
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 tk = dynCeilDiv(p.nk, a.block);
  const float *row = reinterpret_cast<const float *>(ws + lay.probs) + i * tk;
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

/// Attention of one 64-row query tile over the kept key blocks of its
/// query blocks (blocks of positions; `block` a multiple of 64, so a 64-key
/// tile lies in one key block and a query tile in at most two query
/// blocks: rows before position `split` in the first, the rest in the
/// second), then the static runs of `without` outside the kept blocks. The
/// two lists are walked merged, each key tile once, every row masked by
/// its own block's membership.
template <int E, int D, class Pats>
__device__ __forceinline__ void btAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         DynShared<D> &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 nh = p.numHeads;
  DynWalk<E, D> w;
  beginWalk<E, D>(w, p, sh, b, kvHead);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 q0 = (i64)blockIdx.x * 64, q1 = minI(q0 + 64, p.nq);
  stageQueries<E, D>(w, p.q + b * p.qStrideB + head * p.qStrideH, q0);
  const i64 shift = p.nk - p.nq;
  const i64 rowPos = q0 + warp * 16 + lane / 4 + shift;
  const i64 rowLimit = q1 - 1 + shift;
  const i64 first = btFirstBlock(a.block, p.nq, p.nk);
  const i64 qa = floorDiv(q0 + shift, a.block) - first;
  const i64 qz = floorDiv(rowLimit, a.block) - first; // qa or qa + 1
  const i64 split = (first + qz) * a.block;           // first row of qz
  const i64 *listA = reinterpret_cast<const i64 *>(ws + lay.lists) + qa * lay.cap;
  const i64 *listZ = reinterpret_cast<const i64 *>(ws + lay.lists) + qz * lay.cap;
  const i64 *count = reinterpret_cast<const i64 *>(ws + lay.listCount);
  const i64 na = count[qa], nz = qz == qa ? 0 : count[qz];
  const i64 withId = g.withId, withoutId = g.withoutId;
  for (i64 ia = 0, iz = 0; ia < na || iz < nz;) {
    const i64 ka = ia < na ? listA[ia] : kUnbounded;
    const i64 kz = iz < nz ? listZ[iz] : kUnbounded;
    const i64 kb = minI(ka, kz);
    // Membership of this key block per query block (one list only when
    // the tile lies in one query block).
    const bool inA = ka == kb, inZ = qz == qa ? inA : kz == kb;
    ia += inA ? 1 : 0;
    iz += (qz != qa && kz == kb) ? 1 : 0;
    for (i64 k0 = kb * a.block; k0 < minI((kb + 1) * a.block, p.nk); k0 += 64)
      walkContiguous<E, D>(w, k0, (int)minI(64, p.nk - k0), [&](int h, int c) {
        const i64 pos = rowPos + 8 * h;
        if (pos > rowLimit)
          return false;
        return (pos < split ? inA : inZ)
                   ? Pats::allowed(withId, pos, k0 + c, head, nh)
                   : Pats::allowed(withoutId, pos, k0 + c, head, nh);
      });
  }
  const RunCtx ctx = makeRunCtx(q0, q1, p.nq, p.nk, 64, head, nh);
  walkRuns<E, D, Pats>(
      w, ctx, withoutId,
      // A block kept by either query block was walked above.
      [&](i64 k0) {
        return !sortedContains(listA, na, k0 / a.block) &&
               !sortedContains(listZ, nz, k0 / a.block);
      },
      [&](int h, int c, i64 k0) {
        const i64 pos = rowPos + 8 * h;
        return pos <= rowLimit &&
               Pats::allowed(withoutId, pos, k0 + c, head, nh);
      });
  const i64 qi0 = q0 + warp * 16 + lane / 4, qi1 = qi0 + 8;
  dynStore<E, D>(w, b, head, qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
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

/// Query tile blockIdx.x of the segments (grid routingTiles()): its rows
/// gathered from Q, the keys of its cluster 64 at a time, `with` on the
/// original positions; rows stored through the permutation.
template <int E, int D, class Pats>
__device__ __forceinline__ void rtAttend(const AttnParams &p, const DynArgs &a,
                                         const DynGroupTable &g,
                                         DynShared<D> &sh) {
  const int P = D + 8;
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const i64 *tiles = reinterpret_cast<const i64 *>(ws + lay.tileStart);
  const i64 *qStart = reinterpret_cast<const i64 *>(ws + lay.qStart);
  const i64 *kStart = reinterpret_cast<const i64 *>(ws + lay.kStart);
  const i64 *permQ = reinterpret_cast<const i64 *>(ws + lay.permQ);
  const i64 *permK = reinterpret_cast<const i64 *>(ws + lay.permK);
  const i64 C = a.clusters, x = blockIdx.x;
  if (x >= tiles[C])
    return; // beyond the segments' tiles (uniform per block)
  // The cluster: the last c with tiles[c] <= x.
  i64 lo = 0, hi = C;
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (tiles[mid] <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  const i64 c = lo;
  const i64 r0 = qStart[c] + (x - tiles[c]) * 64;
  const int rows = (int)minI(64, qStart[c + 1] - r0);
  DynWalk<E, D> w;
  beginWalk<E, D>(w, p, sh, b, kvHead);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x < 64)
    sh.rows[threadIdx.x] = (int)threadIdx.x < rows ? permQ[r0 + threadIdx.x] : -1;
  __syncthreads();
  loadRows<D, P>(sh.tiles.ks, p.q + b * p.qStrideB + head * p.qStrideH,
                 p.qStrideS, sh.rows, rows, w.vec);
  __syncthreads();
  loadQFragments<D>(sh.tiles.ks, w.qf);
  __syncthreads();
  flashInit<D>(w.acc);
  const int myRow = warp * 16 + lane / 4;
  const i64 shift = p.nk - p.nq;
  const i64 rowQ0 = myRow < rows ? sh.rows[myRow] : -1;
  const i64 rowQ1 = myRow + 8 < rows ? sh.rows[myRow + 8] : -1;
  const i64 withId = g.withId;
  for (i64 k0 = kStart[c]; k0 < kStart[c + 1]; k0 += 64) {
    const int count = (int)minI(64, kStart[c + 1] - k0);
    if (threadIdx.x < 64)
      sh.keys[threadIdx.x] =
          (int)threadIdx.x < count ? permK[k0 + threadIdx.x] : -1;
    __syncthreads();
    walkTile<E, D>(w, count, false, [&]() {
      return elementBits(w.c2, [&](int h, int col) {
        const i64 rq = h ? rowQ1 : rowQ0;
        return col < count && rq >= 0 &&
               Pats::allowed(withId, rq + shift, sh.keys[col], head,
                             p.numHeads);
      });
    });
  }
  if (a.merge)
    flashStorePartial<D>(w.acc,
                         reinterpret_cast<float *>(ws + lay.partial), rowQ0,
                         rowQ1);
  else
    dynStore<E, D>(w, b, head, rowQ0, rowQ1);
}

/// Routing under a union (or the right of a difference): per 64-row query
/// block, the static runs of `without` minus the pairs within a cluster,
/// merged with the segments' rows (the partial workspace) by their LSE.
template <int E, int D, class Pats>
__device__ __forceinline__ void rtRest(const AttnParams &p, const DynArgs &a,
                                       const DynGroupTable &g,
                                       DynShared<D> &sh) {
  const DynSlice sl = dynSlice(p, a, g.heads);
  const i64 b = sl.b, head = sl.head, kvHead = sl.kvHead;
  const DynLayout lay = sl.lay;
  unsigned char *ws = sl.ws;
  const int *qc = reinterpret_cast<const int *>(ws + lay.qCluster);
  const int *kc = reinterpret_cast<const int *>(ws + lay.kCluster);
  DynWalk<E, D> w;
  beginWalk<E, D>(w, p, sh, b, kvHead);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 q0 = (i64)blockIdx.x * 64, q1 = minI(q0 + 64, p.nq);
  stageQueries<E, D>(w, p.q + b * p.qStrideB + head * p.qStrideH, q0);
  const i64 shift = p.nk - p.nq;
  const i64 qi0 = q0 + warp * 16 + lane / 4, qi1 = qi0 + 8;
  const int c0 = qi0 < p.nq ? qc[qi0] : -1, c1 = qi1 < p.nq ? qc[qi1] : -1;
  const RunCtx ctx = makeRunCtx(q0, q1, p.nq, p.nk, 64, head, p.numHeads);
  walkRuns<E, D, Pats>(
      w, ctx, g.withoutId, [](i64) { return true; },
      [&](int h, int c, i64 k0) {
        const int cq = h ? c1 : c0;
        return cq >= 0 && kc[k0 + c] != cq &&
               Pats::allowed(g.withoutId, (h ? qi1 : qi0) + shift, k0 + c,
                             head, p.numHeads);
      });
  flashStoreMerged<E, D>(w.acc, p.o + b * p.oStrideB + head * p.oStrideH,
                         p.oStrideS,
                         p.lse ? p.lse + (b * p.numHeads + head) * p.nq
                               : nullptr,
                         reinterpret_cast<const float *>(ws + lay.partial),
                         qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_DYNAMICINDEX_CUH
