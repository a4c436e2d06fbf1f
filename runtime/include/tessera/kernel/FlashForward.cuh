//===- FlashForward.cuh - block-sparse FlashAttention-2 forward -*- CUDA
//-*-===//
//
// The CUDA kernel body of Tessera bundles, pasted by the emitter after
// Program.h and before the bundle's schedule tables. Needs no header: fp16
// and bf16 are handled as raw 16-bit values with PTX conversions, so NVRTC
// compiles it without the CUDA include directory.
//
// One thread block computes BQ = 64 query rows of one (batch, head) with four
// warps (16 rows each). It walks the key blocks of the schedule (BK = 64
// keys) of the runs its head group's generated code enumerates (EMPTY tiles
// are never visited), FULL tiles unmasked, PARTIAL tiles through the group's
// generated element predicate. S = Q K^T and O += P V use the tensor-core
// instruction mma.sync.m16n8k16 (sm_80 and later) with fp32 accumulation and
// an online softmax in base 2. Rows with no allowed key give O = 0 and
// LSE = -inf.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_FLASHFORWARD_CUH
#define TESSERA_KERNEL_FLASHFORWARD_CUH

namespace tessera {
namespace kernel {

typedef unsigned int u32;

enum ElemType { kF16 = 0, kBF16 = 1 };

template <int E> __device__ __forceinline__ u32 packFloats(float lo, float hi) {
#ifdef TESSERA_EMULATE
  return tessera_emu::packHalf2<E>(lo, hi);
#else
  u32 r;
  if (E == kF16)
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

template <int E>
__device__ __forceinline__ void mma16816(float (&c)[4], const u32 (&a)[4],
                                         u32 b0, u32 b1) {
#ifdef TESSERA_EMULATE
  tessera_emu::mma16816<E>(c, a, b0, b1);
#else
  if (E == kF16)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                   "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                   "r"(b1));
#endif
}

/// Copies rows [r0, r0 + rows) of a [seq, D] slice (row stride `stride`) into
/// shared memory with row pitch P; rows at or beyond `limit` become zeros.
template <int D, int P, int ROWS>
__device__ __forceinline__ void loadTile(u16 *dst, const u16 *src, i64 stride,
                                         i64 r0, i64 limit, bool vec) {
  if (vec) {
    const int chunks = ROWS * D / 8;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      int row = c / (D / 8), col = (c % (D / 8)) * 8;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r0 + row < limit)
        val = *reinterpret_cast<const uint4 *>(src + (r0 + row) * stride + col);
      *reinterpret_cast<uint4 *>(dst + row * P + col) = val;
    }
  } else {
    for (int c = threadIdx.x; c < ROWS * D; c += blockDim.x) {
      int row = c / D, col = c % D;
      dst[row * P + col] =
          r0 + row < limit ? src[(r0 + row) * stride + col] : 0;
    }
  }
}

__device__ __forceinline__ u32 ld32(const u16 *p) {
  return *reinterpret_cast<const u32 *>(p);
}

/// The attention of one query block of one head of group G: G is the
/// generated code of the head group (G::runFrom enumerates the key-block
/// runs of the query block, G::allowed is the element predicate of partial
/// tiles).
/// The shared memory of one thread block: a key and a value tile (the key
/// tile stages the Q tile first). Declared once per kernel, whatever the
/// number of groups it dispatches to.
template <int D> struct SharedTiles {
  u16 ks[64 * (D + 8)];
  u16 vs[64 * (D + 8)];
};

/// Bit i (i = 4 * nt + e) of the result says whether the pair of
/// accumulator element e of n-tile nt of this thread is allowed by the
/// generated predicate of group G (rows rowPos and rowPos + 8, keys
/// k0 + nt * 8 + c2 + (e & 1)). Straight-line code after unrolling.
template <class G>
__device__ __forceinline__ u32 keepBits(i64 rowPos, i64 k0, int c2, i64 nk,
                                        i64 head, i64 numHeads) {
  u32 bits = 0;
#pragma unroll 1
  for (int i = 0; i < 32; ++i) {
    const i64 pi = rowPos + ((i & 3) >= 2 ? 8 : 0);
    const i64 kj = k0 + (i >> 2) * 8 + c2 + (i & 1);
    if (kj < nk && G::allowed(pi, kj, head, numHeads))
      bits |= 1u << i;
  }
  return bits;
}

/// The online-softmax state of one thread: its accumulators of O (rows
/// lane / 4 and lane / 4 + 8 of its warp's 16), the row maxima (base 2) and
/// the row sums.
template <int D> struct FlashAcc {
  float o[D / 8][4];
  float m[2], l[2];
};

template <int D> __device__ __forceinline__ void flashInit(FlashAcc<D> &acc) {
  const float negInf = __int_as_float(0xff800000);
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
    acc.o[i][0] = acc.o[i][1] = acc.o[i][2] = acc.o[i][3] = 0.f;
  acc.m[0] = acc.m[1] = negInf;
  acc.l[0] = acc.l[1] = 0.f;
}

/// This warp's Q fragments (rows warp * 16 + lane / 4 and + 8) from a Q
/// tile staged in shared memory with row pitch D + 8.
template <int D>
__device__ __forceinline__ void loadQFragments(const u16 *qs,
                                               u32 (&qf)[D / 16][4]) {
  const int P = D + 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16 + lane / 4, c2 = (lane % 4) * 2;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = ld32(qs + row0 * P + kk * 16 + c2);
    qf[kk][1] = ld32(qs + (row0 + 8) * P + kk * 16 + c2);
    qf[kk][2] = ld32(qs + row0 * P + kk * 16 + 8 + c2);
    qf[kk][3] = ld32(qs + (row0 + 8) * P + kk * 16 + 8 + c2);
  }
}

/// Bit i (i = 4 * nt + e) set where the tile column of accumulator element
/// e of n-tile nt of this thread, nt * 8 + c2 + (e & 1), is below `valid`.
__device__ __forceinline__ u32 columnBits(int c2, i64 valid) {
  u32 bits = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i)
    if ((i >> 2) * 8 + c2 + (i & 1) < valid)
      bits |= 1u << i;
  return bits;
}

/// One key tile of the online softmax: S = Q K^T from the staged key tile
/// `ks`, the elements whose bit in `keep` is clear masked, then O += P V
/// from `vs`. Both tiles have 64 rows of pitch D + 8. Call with the whole
/// block (the tiles are read, not written).
template <int E, int D>
__device__ __forceinline__ void flashTile(const u32 (&qf)[D / 16][4],
                                          const u16 *ks, const u16 *vs,
                                          u32 keep, float scaleLog2,
                                          FlashAcc<D> &acc) {
  const int BK = 64, P = D + 8;
  const int lane = threadIdx.x % 32;
  const int r = lane / 4, c2 = (lane % 4) * 2;
  const float negInf = __int_as_float(0xff800000);
  float s[BK / 8][4];
#pragma unroll
  for (int nt = 0; nt < BK / 8; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const u16 *kr = ks + (nt * 8 + r) * P + kk * 16 + c2;
      mma16816<E>(s[nt], qf[kk], ld32(kr), ld32(kr + 8));
    }
  }
  (void)c2;
  // Scale, mask, and the row maxima of this tile.
  float tileMax[2] = {negInf, negInf};
#pragma unroll
  for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float x = s[nt][e] * scaleLog2;
      if (!((keep >> (4 * nt + e)) & 1u))
        x = negInf;
      s[nt][e] = x;
      tileMax[e >> 1] = fmaxf(tileMax[e >> 1], x);
    }
  float corr[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffff, tileMax[h], 1));
    tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffff, tileMax[h], 2));
    const float mNew = fmaxf(acc.m[h], tileMax[h]);
    const float base = mNew == negInf ? 0.f : mNew;
    corr[h] = exp2f(acc.m[h] - base);
    acc.m[h] = mNew;
    tileMax[h] = base;
    acc.l[h] *= corr[h];
  }
#pragma unroll
  for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt][e] = exp2f(s[nt][e] - tileMax[e >> 1]);
      acc.l[e >> 1] += s[nt][e];
    }
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    acc.o[dn][0] *= corr[0];
    acc.o[dn][1] *= corr[0];
    acc.o[dn][2] *= corr[1];
    acc.o[dn][3] *= corr[1];
  }
  // O += P V: P from the S accumulators, V from shared memory.
#pragma unroll
  for (int kt = 0; kt < BK / 16; ++kt) {
    u32 a[4];
    a[0] = packFloats<E>(s[2 * kt][0], s[2 * kt][1]);
    a[1] = packFloats<E>(s[2 * kt][2], s[2 * kt][3]);
    a[2] = packFloats<E>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    a[3] = packFloats<E>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
    const u16 *v0 = vs + (kt * 16 + (lane % 4) * 2) * P + r;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const u16 *vp = v0 + dn * 8;
      u32 b0 = (u32)vp[0] | ((u32)vp[P] << 16);
      u32 b1 = (u32)vp[8 * P] | ((u32)vp[9 * P] << 16);
      mma16816<E>(acc.o[dn], a, b0, b1);
    }
  }
}

/// The keep bits of this thread's row half h (0: row lane / 4, 1: + 8) over
/// all 64 tile columns, ORed over the four lanes that share the row (in
/// 16-bit pieces through float shuffles, which carry them exactly).
__device__ __forceinline__ unsigned long long rowKeep(u32 keep, int h,
                                                      int c2) {
  unsigned long long m = 0;
  for (int i = 0; i < 32; ++i)
    if (((i & 3) >= 2) == (h == 1) && ((keep >> i) & 1u))
      m |= 1ull << ((i >> 2) * 8 + c2 + (i & 1));
  for (int s = 1; s <= 2; s <<= 1) {
    unsigned long long o = 0;
    for (int piece = 0; piece < 4; ++piece) {
      const float f = (float)(u32)((m >> (16 * piece)) & 0xffffu);
      o |= (unsigned long long)(u32)__shfl_xor_sync(0xffffffff, f, s)
           << (16 * piece);
    }
    m |= o;
  }
  return m;
}

/// Non-finite values in a masked tile (docs/runtime.md): a masked key's P is
/// 0, and 0 * inf or 0 * NaN in the tensor-core product P V would make NaN
/// in rows that cannot see the key. After the value tile `vs` (64 rows of
/// pitch D + 8) is in shared memory, with the tile's `keep` bits, whole
/// block (128 threads): when some value is NaN or infinite, the output
/// elements of the rows that see it become NaN and the value is zeroed for
/// the product. Every value finite (the usual case): one pass over the
/// tile and two barriers. Full tiles need none of it (every lane is seen).
template <int E, int D>
__device__ __forceinline__ void guardValues(u16 *vs, u32 keep,
                                            FlashAcc<D> &acc) {
  const int P = D + 8;
  const u32 ex = E == kF16 ? 0x7c00u : 0x7f80u; // exponent all ones
  const int vr = threadIdx.x / 2, x0 = (threadIdx.x % 2) * (D / 2);
  bool mine = false;
  for (int x = x0; x < x0 + D / 2; x += 2) {
    const u32 w = ld32(vs + vr * P + x);
    mine |= (w & ex) == ex || ((w >> 16) & ex) == ex;
  }
  __shared__ int found;
  if (threadIdx.x == 0)
    found = 0;
  __syncthreads();
  if (mine)
    found = 1;
  __syncthreads();
  if (!found)
    return;
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  const float nan = __int_as_float(0x7fc00000);
  for (int h = 0; h < 2; ++h) {
    const unsigned long long sees = rowKeep(keep, h, c2);
    for (int c = 0; c < 64; ++c)
      if ((sees >> c) & 1ull)
        for (int dn = 0; dn < D / 8; ++dn)
          for (int e = 0; e < 2; ++e)
            if ((vs[c * P + dn * 8 + c2 + e] & ex) == ex)
              acc.o[dn][2 * h + e] = nan;
  }
  __syncthreads();
  if (mine)
    for (int x = x0; x < x0 + D / 2; ++x)
      if ((vs[vr * P + x] & ex) == ex)
        vs[vr * P + x] = 0;
  __syncthreads();
}

/// Completes this thread's row sums over the four lanes sharing its rows.
template <int D> __device__ __forceinline__ void flashRowSums(FlashAcc<D> &acc) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    acc.l[h] += __shfl_xor_sync(0xffffffff, acc.l[h], 1);
    acc.l[h] += __shfl_xor_sync(0xffffffff, acc.l[h], 2);
  }
}

/// The natural-log LSE of row h after flashRowSums; -inf when it has no key
/// (l = 0), NaN when it saw a NaN (l = NaN: masked lanes are selected to
/// -inf before the exponential, so only allowed pairs can make it).
template <int D>
__device__ __forceinline__ float flashRowLse(const FlashAcc<D> &acc, int h) {
  return acc.l[h] != 0.f ? (acc.m[h] + log2f(acc.l[h])) * 0.6931471805599453f
                        : __int_as_float(0xff800000);
}

/// Normalises and stores this thread's rows: row0 and row1 are the query
/// indices of its rows lane / 4 and lane / 4 + 8 of its warp, or -1 for
/// none; oBase and lseBase (null: no LSE) point at the head's output rows.
template <int E, int D>
__device__ __forceinline__ void flashStore(FlashAcc<D> &acc, u16 *oBase,
                                           i64 oStrideS, float *lseBase,
                                           i64 row0, i64 row1) {
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  flashRowSums<D>(acc);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 qi = h ? row1 : row0;
    if (qi < 0)
      continue;
    const float inv = acc.l[h] != 0.f ? 1.f / acc.l[h] : 0.f; // NaN stays
    u16 *orow = oBase + qi * oStrideS;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<u32 *>(orow + dn * 8 + c2) = packFloats<E>(
          acc.o[dn][2 * h] * inv, acc.o[dn][2 * h + 1] * inv);
    if (lseBase && (lane % 4) == 0)
      lseBase[qi] = flashRowLse<D>(acc, h);
  }
}

/// The attention of one query block of one head. `Groups` is generated per
/// kernel: Groups::runFrom(pattern, ctx, kb) and Groups::keep(pattern, ...)
/// switch (uniformly per thread block) to the run enumeration and the
/// element predicate generated for the head group's pattern.
template <int E, int D, class Groups>
__device__ __forceinline__ void flashForward(const LayerTable &t,
                                             const AttnParams &p,
                                             SharedTiles<D> &smem,
                                             i64 pattern) {
  const int BQ = 64, BK = 64, P = D + 8;
  u16 *const ks = smem.ks;
  u16 *const vs = smem.vs;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane / 4, c2 = (lane % 4) * 2;
  const i64 slot = blockIdx.y, b = blockIdx.z;
  const i64 head = t.computedHead[slot];
  const i64 kvHead = head / (p.numHeads / p.numKvHeads);
  const i64 q0 = (i64)blockIdx.x * BQ;
  const i64 q1 = minI(q0 + BQ, p.nq);
  const bool vec = p.vectorLoads != 0;

  const u16 *qBase = p.q + b * p.qStrideB + head * p.qStrideH;
  const u16 *kBase = p.k + b * p.kStrideB + kvHead * p.kStrideH;
  const u16 *vBase = p.v + b * p.vStrideB + kvHead * p.vStrideH;

  // Q fragments of this warp's 16 rows, staged through ks.
  loadTile<D, P, BQ>(ks, qBase, p.qStrideS, q0, p.nq, vec);
  __syncthreads();
  u32 qf[D / 16][4];
  loadQFragments<D>(ks, qf);
  __syncthreads();

  FlashAcc<D> acc;
  flashInit<D>(acc);
  const int row0 = warp * 16 + r;

  // The key blocks of this query block: the group's runs, in key order.
  const RunCtx ctx = makeRunCtx(q0, q1, p.nq, p.nk, BK, head, t.numHeads);
  const i64 rowPos = q0 + row0 + p.nk - p.nq; // aligned position of row0
  // One call site of the run enumeration: its code is inlined once.
  for (i64 next = 0;;) {
    const Run run = Groups::runFrom(pattern, ctx, next);
    if (!isRun(run))
      break;
    next = run.hi + 1;
    const int cls = run.cls;
    for (i64 kb = run.lo; kb <= run.hi; ++kb) {
      const i64 k0 = kb * BK;
      loadTile<D, P, BK>(ks, kBase, p.kStrideS, k0, p.nk, vec);
      loadTile<D, P, BK>(vs, vBase, p.vStrideS, k0, p.nk, vec);
      __syncthreads();
      // Partial tiles through the group's generated predicate (which
      // also drops keys beyond Nk); full ones only beyond Nk.
      const u32 keep =
          cls == kPartial
              ? Groups::keep(pattern, rowPos, k0, c2, p.nk, head, t.numHeads)
              : columnBits(c2, p.nk - k0);
      if (cls == kPartial)
        guardValues<E, D>(vs, keep, acc);
      flashTile<E, D>(qf, ks, vs, keep, p.scaleLog2, acc);
      __syncthreads();
    }
  }

  const i64 qi0 = q0 + row0, qi1 = q0 + row0 + 8;
  flashStore<E, D>(acc, p.o + b * p.oStrideB + head * p.oStrideH, p.oStrideS,
                   p.lse ? p.lse + (b * p.numHeads + head) * p.nq : nullptr,
                   qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
}

/// Writes O = 0 and LSE = -inf for the layer's skipped heads:
/// grid (ceil(Nq / 128), number of skipped heads, batch), 128 threads.
template <int D>
__device__ __forceinline__ void fillSkipped(const LayerTable &t,
                                            const AttnParams &p) {
  const i64 qi = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (qi >= p.nq)
    return;
  const i64 head = t.skippedHead[blockIdx.y], b = blockIdx.z;
  u16 *orow = p.o + b * p.oStrideB + head * p.oStrideH + qi * p.oStrideS;
  for (int x = 0; x < D; ++x)
    orow[x] = 0;
  if (p.lse)
    p.lse[(b * p.numHeads + head) * p.nq + qi] = __int_as_float(0xff800000);
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_FLASHFORWARD_CUH
