//===- FlashForward.cuh - block-sparse FlashAttention-2 forward -*- CUDA
//-*-===//
//
// The CUDA kernel body of Tessera bundles, pasted by the emitter after
// Program.h and before the bundle's schedule tables. Needs no header: fp16
// and bf16 are handled as raw 16-bit values with PTX conversions, so NVRTC
// compiles it without the CUDA include directory.
//
// pipeForward: one thread block computes BQ = 16 x WARPS query rows of one
// (batch, head) (128 rows of 8 warps at head_dim 64-128; 64 rows of 4 warps,
// Q resident in shared memory, at 256). It walks the key blocks (BK = 64
// keys) of the runs its head group's generated code enumerates (EMPTY tiles
// are never visited), FULL tiles unmasked, PARTIAL tiles through the
// group's closed-form masks (Masks.cuh). K and V move by cp.async in
// FlashAttention-2's order (docs/bundles.md, "The kernel"), fragments by
// ldmatrix from an XOR-swizzled layout; S = Q K^T and O += P V use the
// tensor-core instruction mma.sync.m16n8k16 (sm_80 and later) with fp32
// accumulation and an online softmax in base 2 (ex2.approx). Rows with no
// allowed key give O = 0 and LSE = -inf. The dynamic kernels
// (DynamicIndex.cuh) use the same building blocks.
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

__device__ __forceinline__ u32 ld32(const u16 *p) {
  return *reinterpret_cast<const u32 *>(p);
}

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

/// The shared-window address of a pointer into shared memory (for the
/// shared-state-space instructions: cp.async, ldmatrix).
__device__ __forceinline__ u32 sharedAddress(const void *ptr) {
#ifdef TESSERA_EMULATE
  (void)ptr;
  return 0;
#else
  return (u32)__cvta_generic_to_shared(ptr);
#endif
}

//===----------------------------------------------------------------------===//
// The pipelined forward (issue 17): cp.async, ldmatrix, a swizzled layout.
//===----------------------------------------------------------------------===//

/// cp.async.cg.shared.global of 16 bytes; `valid` false: the bytes land as
/// zeros and nothing is read from `src`.
__device__ __forceinline__ void cpAsync16(u16 *dst, const u16 *src,
                                          bool valid) {
#ifdef TESSERA_EMULATE
  tessera_emu::cpAsync16(dst, src, valid ? 16 : 0);
#else
  const u32 d = sharedAddress(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d),
               "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#endif
}

/// cp.async.commit_group: the copies issued since the last commit form a
/// group.
__device__ __forceinline__ void cpAsyncCommit() {
#ifdef TESSERA_EMULATE
  tessera_emu::cpAsyncCommit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

/// cp.async.wait_group N: every group but the newest N has landed (for this
/// thread; other threads see the bytes after the next barrier).
template <int N> __device__ __forceinline__ void cpAsyncWait() {
#ifdef TESSERA_EMULATE
  tessera_emu::cpAsyncWait(N);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

/// ldmatrix.x4: lane l gives the address of row l % 8 of matrix l / 8; r[j]
/// receives this lane's fragment of matrix j (row lane / 4, elements
/// 2 (lane % 4) and + 1), or of its transpose with `.trans`.
__device__ __forceinline__ void ldsm4(u32 (&r)[4], const u16 *row) {
#ifdef TESSERA_EMULATE
  tessera_emu::ldmatrixX4(r, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(row))
               : "memory");
#endif
}

__device__ __forceinline__ void ldsm4Trans(u32 (&r)[4], const u16 *row) {
#ifdef TESSERA_EMULATE
  tessera_emu::ldmatrixX4Trans(r, row);
#else
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(sharedAddress(row))
      : "memory");
#endif
}

/// 2^x by ex2.approx.ftz.f32 (the emulator models its documented error).
__device__ __forceinline__ float ex2(float x) {
#ifdef TESSERA_EMULATE
  return tessera_emu::ex2Approx(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

/// The shared layout of a tile of rows of D 16-bit elements. D a multiple of
/// 64: rows of D elements, the 16-byte chunk c of row r stored at chunk
/// c ^ (r % 8) (an XOR swizzle inside each group of 8 chunks), so that the
/// 8 rows an ldmatrix matrix reads, and the 8 chunks a quarter warp's
/// cp.async writes, fall in 8 different 4-bank groups. Other D (96): rows
/// padded to D + 8 elements, which spreads 8 consecutive rows over the
/// banks the same way.
template <int D> struct TileLayout {
  static constexpr bool kSwizzled = D % 64 == 0;
  static constexpr int kPitch = kSwizzled ? D : D + 8;
  /// The element offset of chunk `chunk` (8 elements) of row `row`. Written
  /// as the chunk's group of 8 plus its swizzled place in the group, so that
  /// an unrolled loop over chunks whose low bits are few per-lane values
  /// needs few address registers (the rest are immediate offsets).
  static __device__ __forceinline__ int at(int row, int chunk) {
    return row * kPitch +
           (kSwizzled ? (chunk & ~7) + ((chunk & 7) ^ (row & 7)) : chunk) * 8;
  }
};

/// The shared memory of the pipelined kernels: QROWS rows of a resident Q
/// tile (0: Q lives in registers and is staged across the other two before
/// the loop), then a key tile and a value tile of 64 rows each.
template <int D, int QROWS = 0> struct PipeTiles {
  static constexpr int kPitch = TileLayout<D>::kPitch;
  u16 buf[(QROWS + 2 * 64) * kPitch];
  __device__ __forceinline__ u16 *q() { return buf; }
  __device__ __forceinline__ u16 *k() { return buf + QROWS * kPitch; }
  __device__ __forceinline__ u16 *v() { return buf + (QROWS + 64) * kPitch; }
};

/// Declares `name`, a reference to the kernel's tiles of type `...` (a
/// template-id, hence last): in dynamic shared memory (the launch passes
/// its size; above 48 KiB the runtime raises the kernel's limit first), a
/// static object under the emulator.
#ifdef TESSERA_EMULATE
#define TESSERA_DYNAMIC_TILES(name, ...)                                       \
  static __VA_ARGS__ name##Storage;                                            \
  __VA_ARGS__ &name = name##Storage
#else
#define TESSERA_DYNAMIC_TILES(name, ...)                                       \
  extern __shared__ __align__(128) unsigned char name##Bytes[];                \
  __VA_ARGS__ &name = *reinterpret_cast<__VA_ARGS__ *>(name##Bytes)
#endif

/// Starts the copy of rows [r0, r0 + ROWS) of a [seq, D] slice (row stride
/// `stride`) into `dst` in TileLayout<D>, rows at or beyond `limit` as zeros,
/// by the NT threads of the block: cp.async of 16-byte chunks when every row
/// start is 16-byte aligned (`vec`), otherwise a synchronous copy of elements
/// (either way, the tile is usable after cpAsyncWait and a barrier).
template <int D, int ROWS, int NT>
__device__ __forceinline__ void copyTile(u16 *dst, const u16 *src, i64 stride,
                                         i64 r0, i64 limit, bool vec) {
  constexpr int kChunksPerRow = D / 8, kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % NT == 0, "a tile's chunks split evenly");
  if (vec && NT % kChunksPerRow == 0) {
    // Each thread copies one chunk column, every kStep-th row: one running
    // source pointer (not a hoisted 64-bit address per row).
    constexpr int kStep = NT / kChunksPerRow;
    const int row0 = threadIdx.x / kChunksPerRow;
    const int chunk = threadIdx.x % kChunksPerRow;
    const u16 *from = src + (r0 + row0) * stride + chunk * 8;
    const i64 step = kStep * stride;
#pragma unroll
    for (int j = 0; j < ROWS / kStep; ++j) {
      const int row = row0 + j * kStep;
      const bool in = r0 + row < limit;
      cpAsync16(dst + TileLayout<D>::at(row, chunk), in ? from : src, in);
      from += step;
    }
  } else if (vec) {
#pragma unroll
    for (int j = 0; j < kChunks / NT; ++j) {
      const int i = (int)threadIdx.x + j * NT;
      const int row = i / kChunksPerRow, chunk = i % kChunksPerRow;
      const bool in = r0 + row < limit;
      cpAsync16(dst + TileLayout<D>::at(row, chunk),
                src + (in ? r0 + row : r0) * stride + chunk * 8, in);
    }
  } else {
    for (int i = threadIdx.x; i < ROWS * D; i += NT) {
      const int row = i / D, x = i % D;
      dst[TileLayout<D>::at(row, x / 8) + x % 8] =
          r0 + row < limit ? src[(r0 + row) * stride + x] : 0;
    }
  }
}

/// This warp's Q fragments (its 16 rows of the staged Q tile) by ldmatrix:
/// matrices (rows 0-7, 8-15) x (columns 16 kk + 0-7, + 8-15) are a0-a3 of
/// the m16n8k16 A operand.
template <int D>
__device__ __forceinline__ void pipeQFragments(const u16 *qs,
                                               u32 (&qf)[D / 16][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldsm4(qf[kk], qs + TileLayout<D>::at(row, 2 * kk + (lane >> 4)));
}

/// S = Q K^T of this warp's 16 rows against the 64 keys of `ks`: the
/// accumulators s[nt] hold keys 8 nt + 2 (lane % 4) + {0, 1}. K fragments by
/// ldmatrix: matrices (keys 8 nt + 0-7, 8 (nt + 1) + 0-7) x (columns
/// 16 kk + 0-7, + 8-15) are the B operands of n-tiles nt and nt + 1.
template <int E, int D>
__device__ __forceinline__ void pipeScores(const u32 (&qf)[D / 16][4],
                                           const u16 *ks, float (&s)[8][4]) {
  const int lane = threadIdx.x % 32;
  const int rowInPair = (lane & 7) + (lane >> 4) * 8, half = (lane >> 3) & 1;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int np = 0; np < 4; ++np)
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      u32 b[4];
      ldsm4(b, ks + TileLayout<D>::at(16 * np + rowInPair, 2 * kk + half));
      mma16816<E>(s[2 * np], qf[kk], b[0], b[1]);
      mma16816<E>(s[2 * np + 1], qf[kk], b[2], b[3]);
    }
}

/// The online-softmax step of one tile: `s` holds raw scores (masked ones
/// -inf); m is kept in base-2 units (scaled), so each probability is one
/// FFMA and one ex2: p = 2^(s * scaleLog2 - m). Returns P packed as the
/// m16n8k16 A operands of the four 16-key steps of O += P V.
template <int E, int D>
__device__ __forceinline__ void pipeSoftmax(float (&s)[8][4], float scaleLog2,
                                            FlashAcc<D> &acc,
                                            u32 (&pa)[4][4]) {
  const float negInf = __int_as_float(0xff800000);
  float tileMax[2] = {negInf, negInf};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[nt][e]);
  float corr[2], negBase[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffff, tileMax[h], 1));
    tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffff, tileMax[h], 2));
    const float mNew = fmaxf(acc.m[h], tileMax[h] * scaleLog2);
    const float base = mNew == negInf ? 0.f : mNew;
    corr[h] = ex2(acc.m[h] - base);
    acc.m[h] = mNew;
    negBase[h] = -base;
    acc.l[h] *= corr[h];
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt][e] = ex2(fmaf(s[nt][e], scaleLog2, negBase[e >> 1]));
      acc.l[e >> 1] += s[nt][e];
    }
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    acc.o[dn][0] *= corr[0];
    acc.o[dn][1] *= corr[0];
    acc.o[dn][2] *= corr[1];
    acc.o[dn][3] *= corr[1];
  }
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    pa[kt][0] = packFloats<E>(s[2 * kt][0], s[2 * kt][1]);
    pa[kt][1] = packFloats<E>(s[2 * kt][2], s[2 * kt][3]);
    pa[kt][2] = packFloats<E>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    pa[kt][3] = packFloats<E>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
}

/// O += P V with V fragments by ldmatrix.trans: matrices (keys 16 kt + 0-7,
/// + 8-15) x (columns 8 dn + 0-7, 8 (dn + 1) + 0-7) of the value tile,
/// transposed, are the B operands of n-tiles dn and dn + 1.
template <int E, int D>
__device__ __forceinline__ void pipeValues(const u32 (&pa)[4][4],
                                           const u16 *vs, FlashAcc<D> &acc) {
  const int lane = threadIdx.x % 32;
  const int key = (lane & 7) + ((lane >> 3) & 1) * 8, second = lane >> 4;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt)
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {
      u32 b[4];
      ldsm4Trans(b, vs + TileLayout<D>::at(16 * kt + key, dn + second));
      mma16816<E>(acc.o[dn], pa[kt], b[0], b[1]);
      mma16816<E>(acc.o[dn + 1], pa[kt], b[2], b[3]);
    }
}

/// pipeScores with Q fragments read from the resident Q tile `qs` (this
/// warp's 16 rows) each tile instead of held in registers (head_dim 256:
/// registers for O, not Q).
template <int E, int D>
__device__ __forceinline__ void pipeScoresSharedQ(const u16 *qs, const u16 *ks,
                                                  float (&s)[8][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qRow = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int rowInPair = (lane & 7) + (lane >> 4) * 8, half = (lane >> 3) & 1;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    u32 a[4];
    ldsm4(a, qs + TileLayout<D>::at(qRow, 2 * kk + (lane >> 4)));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      u32 b[4];
      ldsm4(b, ks + TileLayout<D>::at(16 * np + rowInPair, 2 * kk + half));
      mma16816<E>(s[2 * np], a, b[0], b[1]);
      mma16816<E>(s[2 * np + 1], a, b[2], b[3]);
    }
  }
}

/// Selects -inf into the scores whose bit in `keep` is clear.
__device__ __forceinline__ void applyKeep(float (&s)[8][4], u32 keep) {
  const float negInf = __int_as_float(0xff800000);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (!((keep >> (4 * nt + e)) & 1u))
        s[nt][e] = negInf;
}

/// A partial tile's keep bits in the form the selects read fastest: bit
/// 8 b + 1 + e of `lo` (b = 0..3, e = 0..3) is bit 4 b + e of the u32 form
/// (n-tile b, element e), `hi` the same for n-tiles 4..7; bits 0 and 5-7 of
/// each byte are unspecified. Each byte is one R2P (predicates P1-P4, as P0
/// is often taken) for four selects, where the u32 form needs its bytes'
/// top bits extracted one by one.
struct KeepNibbles {
  u32 lo, hi;
};

/// applyKeep for the nibble form.
__device__ __forceinline__ void applyKeepNibbles(float (&s)[8][4],
                                                 KeepNibbles k) {
  const float negInf = __int_as_float(0xff800000);
  u32 lo = k.lo, hi = k.hi;
#ifndef TESSERA_EMULATE
  // Opaque words: else the compiler tests the row masks' bits one by one
  // (a LOP3 each) instead of one R2P a byte.
  asm("" : "+r"(lo), "+r"(hi));
#endif
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (!((((nt < 4) ? lo : hi) >> (8 * (nt & 3) + 1 + e)) & 1u))
        s[nt][e] = negInf;
}

/// The nibble form from the two row masks of the generated code (Masks.cuh's
/// RowMasks: bit 8 nt + 1 + 2 h + e of row h is its column e of n-tile nt,
/// so that the bytes need no shift): row 0's bits 1-2 of each byte, row 1's
/// 3-4, one LOP3 a word.
template <class R>
__device__ __forceinline__ KeepNibbles rowNibbles(const R &m) {
  constexpr u32 kRow0 = 0x06060606u; // bits 1-2 of each byte
  return {((u32)m.r0 & kRow0) | ((u32)m.r1 & ~kRow0),
          ((u32)(m.r0 >> 32) & kRow0) | ((u32)(m.r1 >> 32) & ~kRow0)};
}

/// The nibble form of u32 keep bits, and back.
__device__ __forceinline__ KeepNibbles nibblesOf(u32 keep) {
  auto spread = [](u32 x) { // 16 bits -> bits 1-4 of four bytes
    x = (x | (x << 8)) & 0x00ff00ffu;
    return ((x | (x << 4)) & 0x0f0f0f0fu) << 1;
  };
  return {spread(keep & 0xffffu), spread(keep >> 16)};
}
__device__ __forceinline__ u32 keepOf(KeepNibbles k) {
  auto pack = [](u32 x) { // bits 1-4 of four bytes -> 16 bits
    x = (x >> 1) & 0x0f0f0f0fu;
    x = (x | (x >> 4)) & 0x00ff00ffu;
    return (x | (x >> 8)) & 0xffffu;
  };
  return pack(k.lo) | (pack(k.hi) << 16);
}

/// The partial-tile keep bits of group `pattern` in the nibble form: from
/// the generated Groups::keepNibbles where the kernel's code has it (the
/// emitted bundles), else from Groups::keep (hand-written groups).
template <class G, class = void> struct HasKeepNibbles {
  static constexpr bool value = false;
};
template <class G>
struct HasKeepNibbles<G, decltype((void)&G::keepNibbles)> {
  static constexpr bool value = true;
};
/// `room`: min(Nk - k0, 64), the keys of the tile below Nk. The generated
/// keepNibbles leave Nk's edge out (the bits of keys past Nk are
/// unspecified): the caller applies it to the last key tile, as for a full
/// one.
template <class Groups>
__device__ __forceinline__ KeepNibbles partialKeep(i64 pattern, i64 rowPos,
                                                   i64 k0, int c2, int room,
                                                   i64 head, i64 numHeads) {
  if constexpr (HasKeepNibbles<Groups>::value)
    return Groups::keepNibbles(pattern, rowPos, k0, c2, room, head, numHeads);
  else
    return nibblesOf(
        Groups::keep(pattern, rowPos, k0, c2, k0 + room, head, numHeads));
}

/// x, opaque to the compiler: a value computed once before the tile loop
/// stays in its register instead of being recomputed in the loop.
template <class T> __device__ __forceinline__ T pinned(T x) {
#ifndef TESSERA_EMULATE
  if constexpr (sizeof(T) == 8) {
    unsigned long long v = (unsigned long long)x;
    asm("" : "+l"(v));
    return (T)v;
  } else {
    unsigned v = (unsigned)x;
    asm("" : "+r"(v));
    return (T)v;
  }
#else
  return x;
#endif
}

/// Bit 15 (31) of the result set when the lower (upper) 16-bit value of any
/// word ORed in is NaN or infinite: (x & exponent) + one exponent step
/// carries into the sign bit only from an all-ones exponent.
template <int E> __device__ __forceinline__ u32 nonFiniteBits(u32 w) {
  const u32 ex = E == kF16 ? 0x7c007c00u : 0x7f807f80u;
  const u32 step = E == kF16 ? 0x04000400u : 0x00800080u;
  return ((w & ex) + step) & 0x80008000u;
}

/// fma(a, b, c) on the two 16-bit values of each word (fma.rn.f16x2 or
/// .bf16x2). Not finite where an operand is not (0 * inf and 0 * NaN are
/// NaN, inf * x is inf, and a non-finite c stays so); finite otherwise, but
/// where the product or the sum overflows (a false alarm, never a miss).
template <int E>
__device__ __forceinline__ u32 fmaPairs(u32 a, u32 b, u32 c) {
#ifdef TESSERA_EMULATE
  auto f = [](u32 w, int hi) {
    return tessera_emu::halfToFloat<E>((u16)(hi ? w >> 16 : w & 0xffffu));
  };
  return tessera_emu::packHalf2<E>(fmaf(f(a, 0), f(b, 0), f(c, 0)),
                                   fmaf(f(a, 1), f(b, 1), f(c, 1)));
#else
  u32 r;
  if (E == kF16)
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  else
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
#endif
}

/// Whether some 16-bit value of the N words is NaN or infinite, per thread:
/// one fma chain through them, whose end is non-finite iff some value is
/// (fmaPairs). bf16 multiplies two words an instruction (a false alarm
/// needs products past 3e38, values past 1.8e19); f16 multiplies by zero,
/// one word an instruction, as its products overflow from 256 squared. A
/// false alarm costs the guard's exact pass, never a wrong result.
template <int E, int N>
__device__ __forceinline__ bool anyNonFinite(const u32 (&w)[N]) {
  static_assert(N >= 3, "a chain starts from three words");
  u32 chain;
  if (E == kBF16) {
    chain = fmaPairs<E>(w[0], w[1], w[2]);
#pragma unroll
    for (int i = 3; i < N; i += 2)
      chain = fmaPairs<E>(w[i], i + 1 < N ? w[i + 1] : 0u, chain);
  } else {
    chain = fmaPairs<E>(w[0], 0u, w[1]);
#pragma unroll
    for (int i = 2; i < N; ++i)
      chain = fmaPairs<E>(w[i], 0u, chain);
  }
  // fma(chain, 0, 0): +0 iff the chain is finite.
  return fmaPairs<E>(chain, 0u, 0u) != 0u;
}

/// Non-finite values in a masked tile (docs/runtime.md): a masked key's P is
/// 0, and 0 * inf or 0 * NaN in the tensor-core product P V would make NaN
/// in rows that cannot see the key. After the value tile `vs` (TileLayout<D>)
/// is in shared memory, with the tile's `keep` bits, NT threads: when some
/// value is NaN or infinite, the output elements of the rows that see it
/// become NaN and the value is zeroed for the product, so that non-finite
/// values of a partial tile reach only the rows that see them. Every value
/// finite (the usual case): one pass of 128-bit loads and one barrier
/// (__syncthreads_or). Full tiles need none of it (every lane is seen).
/// The offset of the thread's part of the value tile for the guard's scan.
template <int D, int NT> __device__ __forceinline__ int guardPart() {
  constexpr int kPerRow = NT / 64, kSpan = D / kPerRow; // elements
  static_assert(kSpan % 8 == 0, "whole chunks per thread");
  const int vr = threadIdx.x / kPerRow, x0 = (threadIdx.x % kPerRow) * kSpan;
  // A row's D elements are the first D of its pitch, in some chunk order.
  return vr * TileLayout<D>::kPitch + x0;
}

/// The scan of the guard: whether some value of the tile is not finite,
/// from the thread's part of it (guardPart).
template <int E, int D, int NT>
__device__ __forceinline__ bool guardScan(const u16 *mineAt) {
  constexpr int kSpan = D / (NT / 64);
  u32 w[kSpan / 2];
#pragma unroll
  for (int c = 0; c < kSpan / 8; ++c) {
    const uint4 v = *reinterpret_cast<const uint4 *>(mineAt + 8 * c);
    w[4 * c] = v.x;
    w[4 * c + 1] = v.y;
    w[4 * c + 2] = v.z;
    w[4 * c + 3] = v.w;
  }
  return __syncthreads_or(anyNonFinite<E>(w));
}

/// The guard's rare part, after guardScan found a non-finite value.
template <int E, int D, int NT>
__device__ __forceinline__ void guardFix(u16 *vs, u32 keep, FlashAcc<D> &acc) {
  using L = TileLayout<D>;
  constexpr int kPerRow = NT / 64, kSpan = D / kPerRow; // elements
  const int vr = threadIdx.x / kPerRow, x0 = (threadIdx.x % kPerRow) * kSpan;
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  const float nan = __int_as_float(0x7fc00000);
  // acc.o is indexed by constants only (unrolled), or it would live in
  // local memory.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned long long sees = rowKeep(keep, h, c2);
#pragma unroll 1
    for (int c = 0; c < 64; ++c)
      if ((sees >> c) & 1ull)
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          const u32 w = nonFiniteBits<E>(ld32(vs + L::at(c, dn) + c2));
          if (w & 0x8000u)
            acc.o[dn][2 * h] = nan;
          if (w & 0x80000000u)
            acc.o[dn][2 * h + 1] = nan;
        }
  }
  __syncthreads();
  for (int x = 0; x < kSpan; x += 2) {
    u32 *w = reinterpret_cast<u32 *>(vs + vr * L::kPitch + x0 + x);
    const u32 nf = nonFiniteBits<E>(*w);
    *w &= (nf & 0x8000u ? 0xffff0000u : 0xffffffffu) &
          (nf & 0x80000000u ? 0x0000ffffu : 0xffffffffu);
  }
  __syncthreads();
}

template <int E, int D, int NT>
__device__ __forceinline__ void pipeGuard(u16 *vs, u32 keep, FlashAcc<D> &acc) {
  if (guardScan<E, D, NT>(vs + guardPart<D, NT>()))
    guardFix<E, D, NT>(vs, keep, acc);
}
/// What pipeForward keeps of a partial tile for its guard: the keep bits in
/// the nibble form and the offset of the thread's part of the value tile
/// (guardPart, computed once before the loop).
struct GuardKeep {
  KeepNibbles keep;
  int mine;
};

template <int E, int D, int NT>
__device__ __forceinline__ void pipeGuard(u16 *vs, GuardKeep k,
                                          FlashAcc<D> &acc) {
  if (guardScan<E, D, NT>(vs + k.mine))
    guardFix<E, D, NT>(vs, keepOf(k.keep), acc);
}

/// Whether the block walks its tiles again with the guard (pipeGuard) on:
/// after an unguarded pass (`guarded` false) that left some output element
/// of the block NaN or infinite. Finite inputs, the usual case, cost this
/// test once a block and no guard in any tile; a non-finite input costs a
/// second pass, which gives exactly what a single guarded pass gives (the
/// same operations in the same order). A barrier (__syncthreads_or): before
/// a second pass rewrites the tiles, every warp is done with them.
template <int D>
__device__ __forceinline__ bool guardRerun(bool guarded, const FlashAcc<D> &acc) {
  if (guarded)
    return false;
  float sum = 0.f; // 0 * (a non-finite term) keeps it non-finite
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
    sum += 0.f * acc.o[i][0] + 0.f * acc.o[i][1] + 0.f * acc.o[i][2] +
           0.f * acc.o[i][3];
  return __syncthreads_or(sum != 0.f);
}

//===----------------------------------------------------------------------===//
// Per-sequence calls (the `_seq` kernels): packed, paged, positioned and
// head-range calls of tessera_attention_desc (docs/runtime.md, "Calls").
//===----------------------------------------------------------------------===//

/// Positions stay below this (as tessera_attention_desc documents).
static const i64 kSeqMaxPosition = 1LL << 40;

/// One sequence of a per-sequence call: its rows, keys and positions, read
/// from the call's device arrays. The host cannot check arrays in device
/// memory without a synchronisation, so the kernel does: a sequence whose
/// entries are out of range (cu_seqlens decreasing or past the tensor, a
/// length past the tensor or the table, a position negative or from 2^40
/// on, the last row's or key's included) is `bad`, visits no key, and its rows get NaN in O and LSE. A bad
/// cu_seqlens_q leaves nq = 0 (no row it names can be trusted). A block
/// table entry outside the cache is caught where a tile reads it
/// (seqKeyRow): that query block's rows get NaN.
struct SeqView {
  i64 nq, nk;         ///< its query rows and keys
  i64 pStart, kStart; ///< positions of row 0 and key 0
  i64 qRow0, kRow0;   ///< packed: the rows of its first query and key
  bool bad;
};

__device__ __forceinline__ SeqView seqView(const AttnParams &p, i64 s) {
  SeqView v = {p.nq, p.nk, 0, 0, 0, 0, false};
  if (p.cuQ) {
    const i64 a = p.cuQ[s], b = p.cuQ[s + 1];
    const bool ok = 0 <= a && a <= b && b <= p.nq;
    v.qRow0 = ok ? a : 0;
    v.nq = ok ? b - a : 0;
    v.bad |= !ok;
  }
  if (p.cuK) {
    const i64 a = p.cuK[s], b = p.cuK[s + 1];
    const bool ok = 0 <= a && a <= b && b <= p.nk;
    v.kRow0 = ok ? a : 0;
    v.nk = ok ? b - a : 0;
    v.bad |= !ok;
  } else if (p.lensK) {
    const i64 n = p.lensK[s];
    const i64 limit = p.pages ? p.maxPages * p.pageSize : p.nk;
    v.bad |= n < 0 || n > limit;
    v.nk = n;
  }
  v.kStart = p.kStart ? p.kStart[s] : 0;
  v.pStart = p.qStart ? p.qStart[s] : v.kStart + v.nk - v.nq;
  // Every position below 2^40, as the CPU's validation requires.
  v.bad |= v.kStart < 0 || v.kStart > kSeqMaxPosition - v.nk ||
           (p.qStart && (v.pStart < 0 || v.pStart > kSeqMaxPosition - v.nq));
  if (v.bad)
    v.nk = 0;
  return v;
}

/// The sequence and query block of this thread block. Dense queries: the
/// sequence is blockIdx.z, the block blockIdx.x. Packed ones (grid.z = 1):
/// sequence s owns the blocks [floor(cuQ[s] / BQ) + s, floor(cuQ[s + 1] /
/// BQ) + s + 1) of blockIdx.x (at least its ceil(nq / BQ); the launch has
/// floor(T / BQ) + num_seqs of them), found by a binary search; a block past
/// its sequence's rows does nothing (qb = -1).
template <int BQ>
__device__ __forceinline__ void seqBlock(const AttnParams &p, i64 x, i64 &s,
                                         i64 &qb) {
  if (!p.cuQ) {
    s = blockIdx.z;
    qb = x;
    return;
  }
  i64 lo = 0, hi = p.numSeqs - 1; // the last s with start(s) <= x
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (floorDiv(p.cuQ[mid], BQ) + mid <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  s = lo;
  qb = x - (floorDiv(p.cuQ[lo], BQ) + lo);
}

/// What a block of a per-sequence call reads after its prologue, in shared
/// memory rather than registers (the tile loop needs every register it
/// can get: the `_seq` kernels would spill otherwise).
struct SeqShared {
  i64 kStart, nk, kRow0; ///< the sequence's keys (SeqView's)
  i64 kEnd;              ///< kStart + nk
  i64 pageRow;           ///< its block-table row's first entry
  i64 kbEnd;             ///< the last key tile of the walk, plus one
  i64 qRow0, nq, q0;     ///< its rows, and the block's first row
  i64 b, split;          ///< the sequence, the split
  int bad;               ///< SeqView's
  RunCtx ctx;            ///< the walk's (read once a run)
};

/// The start of key position `pos`'s row (head 0) of the block's sequence
/// in a key or value tensor, or null where the position holds no key of
/// the sequence (or a page entry is out of range: `badPage` is set).
__device__ __forceinline__ const u16 *seqKeyRow(const AttnParams &p,
                                                const SeqShared &v,
                                                const u16 *base, i64 strideB,
                                                i64 strideS, i64 pos,
                                                bool &badPage) {
  const i64 j = pos - v.kStart;
  if (j < 0 || j >= v.nk)
    return nullptr;
  if (!p.pages)
    return base + (v.kRow0 + j) * strideS;
  const i64 page = p.pages[v.pageRow + j / p.pageSize];
  if (page < 0 || page >= p.numPages) {
    badPage = true;
    return nullptr;
  }
  return base + page * strideB + (j % p.pageSize) * strideS;
}

/// copyTile for the keys at positions [pos0, pos0 + ROWS) of a sequence:
/// rows through seqKeyRow (dense, packed or paged), those holding no key as
/// zeros. `base` points at the kv head of batch entry 0 (dense keys: of the
/// sequence's batch entry).
template <int D, int ROWS, int NT>
__device__ __forceinline__ void copySeqTile(u16 *dst, const AttnParams &p,
                                            const SeqShared &v,
                                            const u16 *base, i64 strideB,
                                            i64 strideS, i64 pos0, bool vec,
                                            bool &badPage) {
  constexpr int kChunksPerRow = D / 8, kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % NT == 0, "a tile's chunks split evenly");
  if (vec && NT % kChunksPerRow == 0) {
    constexpr int kStep = NT / kChunksPerRow;
    const int row0 = threadIdx.x / kChunksPerRow;
    const int chunk = threadIdx.x % kChunksPerRow;
#pragma unroll
    for (int j = 0; j < ROWS / kStep; ++j) {
      const int row = row0 + j * kStep;
      const u16 *from =
          seqKeyRow(p, v, base, strideB, strideS, pos0 + row, badPage);
      cpAsync16(dst + TileLayout<D>::at(row, chunk),
                from ? from + chunk * 8 : base, from != nullptr);
    }
  } else if (vec) {
#pragma unroll
    for (int j = 0; j < kChunks / NT; ++j) {
      const int i = (int)threadIdx.x + j * NT;
      const int row = i / kChunksPerRow, chunk = i % kChunksPerRow;
      const u16 *from =
          seqKeyRow(p, v, base, strideB, strideS, pos0 + row, badPage);
      cpAsync16(dst + TileLayout<D>::at(row, chunk),
                from ? from + chunk * 8 : base, from != nullptr);
    }
  } else {
    for (int i = threadIdx.x; i < ROWS * D; i += NT) {
      const int row = i / D, x = i % D;
      const u16 *from =
          seqKeyRow(p, v, base, strideB, strideS, pos0 + row, badPage);
      dst[TileLayout<D>::at(row, x / 8) + x % 8] = from ? from[x] : 0;
    }
  }
}

/// The sequence of packed query row r (the last s with cuQ[s] <= r), or -1
/// where no sequence owns the row.
__device__ __forceinline__ i64 seqOfRow(const AttnParams &p, i64 r) {
  i64 lo = 0, hi = p.numSeqs - 1;
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (p.cuQ[mid] <= r)
      lo = mid;
    else
      hi = mid - 1;
  }
  const SeqView v = seqView(p, lo);
  return r >= v.qRow0 && r < v.qRow0 + v.nq ? lo : -1;
}

/// flashStore into a split's fp32 workspace rows (oBase: row 0, head; rows
/// `heads * D` floats apart; lseBase: row 0, head; rows `heads` apart).
template <int D>
__device__ __forceinline__ void flashStoreSplit(FlashAcc<D> &acc, float *oBase,
                                                float *lseBase, i64 heads,
                                                i64 row0, i64 row1) {
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  flashRowSums<D>(acc);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 qi = h ? row1 : row0;
    if (qi < 0)
      continue;
    const float inv = acc.l[h] != 0.f ? 1.f / acc.l[h] : 0.f; // NaN stays
    float *orow = oBase + qi * heads * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      orow[dn * 8 + c2] = acc.o[dn][2 * h] * inv;
      orow[dn * 8 + c2 + 1] = acc.o[dn][2 * h + 1] * inv;
    }
    if ((lane % 4) == 0)
      lseBase[qi * heads] = flashRowLse<D>(acc, h);
  }
}

/// Sets this thread's accumulators so that its rows store NaN in O and LSE
/// (a bad sequence).
template <int D> __device__ __forceinline__ void flashPoison(FlashAcc<D> &acc) {
  const float nan = __int_as_float(0x7fc00000);
  acc.l[0] = acc.l[1] = nan;
}

/// The attention of one query block of BQ = 16 WARPS rows of the head of
/// launch slot `slot` (the kernel's slot table maps blockIdx.y to it), the
/// pipelined loop (docs/bundles.md, "The kernel loop"). `Groups` is
/// generated per kernel: Groups::runFrom(pattern, ctx, kb) and
/// Groups::keep(pattern, ...) switch (uniformly per block) to the run
/// enumeration and the partial-tile masks of the head group's pattern.
///
/// One key tile and one value tile in shared memory, filled by cp.async in
/// FlashAttention-2's order: the value tile of tile j loads while the
/// scores of j are computed, the key tile of the next visited tile (from the
/// run enumeration, across run boundaries) while O += P V of j runs. Full
/// tiles do no mask work but the Nk edge of the last key tile.
///
/// QRES: the Q tile stays in shared memory (PipeTiles<D, BQ>) and its
/// fragments are read by ldmatrix every tile, for head dims whose Q
/// fragments and O accumulators would not both fit in registers (256).
///
/// SEQ: a per-sequence call (the `_seq` kernels, AttnParams' sequence
/// fields): the block's sequence and query block from seqBlock, heads
/// outside the call's range do nothing, and the walk, the masks and the
/// tiles are in positions (as the CPU executor's runTask): rows sit at
/// pStart + i, key tile kb covers positions [64 kb, 64 kb + 64), clipped to
/// the sequence's keys [kStart, kStart + nk), and the run context takes
/// nq = nk = kStart + nk, so that the alignment is the identity. Without
/// SEQ the code is the dense kernel's.
template <int E, int D, int WARPS, bool QRES, class Groups, bool SEQ = false>
__device__ __forceinline__ void
pipeForward(const LayerTable &t, const AttnParams &p,
            PipeTiles<D, QRES ? 16 * WARPS : 0> &smem, i64 slot, i64 pattern) {
  constexpr int NT = 32 * WARPS, BQ = 16 * WARPS, BK = 64;
  static_assert(QRES || BQ <= 128, "the Q tile is staged in the two tiles");
  u16 *const ks = smem.k();
  u16 *const vs = smem.v();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
  const i64 head = t.computedHead[slot];
  const i64 group = p.numHeads / p.numKvHeads;
  // Dense: batch entry blockIdx.z, query block blockIdx.x, every head.
  i64 b = blockIdx.z, qb = blockIdx.x, headLocal = head, kvLocal = head / group;
  SeqView sv = {p.nq, p.nk, 0, 0, 0, 0, false};
  bool badPage = false;
  i64 split = 0; // split-KV: this block's range of key tiles
  if constexpr (SEQ) {
    i64 x = blockIdx.x;
    if (p.numSplits > 1) {
      split = x / p.seqBlocks;
      x -= split * p.seqBlocks;
    }
    seqBlock<BQ>(p, x, b, qb);
    if (p.headCount &&
        (head < p.headStart || head >= (i64)p.headStart + p.headCount))
      return;
    headLocal = head - p.headStart;
    kvLocal = head / group - p.headStart / group;
    sv = seqView(p, b);
    if (qb < 0 || qb * BQ >= sv.nq)
      return;
  }
  const i64 q0 = qb * BQ;
  const i64 q1 = minI(q0 + BQ, sv.nq);
  const bool vec = p.vectorLoads != 0;
  // Dense and packed queries: batch entry b, or rows from qRow0 of entry 0.
  const i64 qEntry = SEQ && p.cuQ ? 0 : b;
  const u16 *qBase = p.q + qEntry * p.qStrideB + sv.qRow0 * p.qStrideS +
                     headLocal * p.qStrideH;
  // Dense keys: entry b; packed and paged (seqKeyRow): entry 0.
  const i64 kEntry = SEQ && (p.cuK || p.pages) ? 0 : b;
  const u16 *kBase = p.k + kEntry * p.kStrideB + kvLocal * p.kStrideH;
  const u16 *vBase = p.v + kEntry * p.vStrideB + kvLocal * p.vStrideH;
  // The run context's lengths: Nq and Nk, or the sequence's key end.
  const i64 kEnd = sv.kStart + sv.nk;
  const i64 ctxNq = SEQ ? kEnd : p.nq, ctxNk = SEQ ? kEnd : p.nk;
  const i64 pos0 = SEQ ? sv.pStart + q0 : q0; // row 0's run-context row
  // SEQ: the walk starts at the sequence's first key tile (none: no key),
  // or its split's, and a split ends at kbEnd.
  const i64 kbFirst = sv.kStart / BK + split * p.splitTiles;
  SeqShared *sh = nullptr;
  if constexpr (SEQ) {
    __shared__ SeqShared seqShared; // read after the barrier below
    sh = &seqShared;
    if (threadIdx.x == 0)
      seqShared = {sv.kStart, sv.nk, sv.kRow0, kEnd, b * p.pageStride,
                   p.numSplits > 1 ? kbFirst + p.splitTiles
                                   : (kEnd + BK - 1) / BK,
                   sv.qRow0, sv.nq, q0, b, split, sv.bad ? 1 : 0,
                   makeRunCtx(pos0, pos0 + (q1 - q0), ctxNq, ctxNk, BK, head,
                              t.numHeads)};
  }

  // The Q tile: resident, or staged across both tiles for this warp's
  // fragments in registers.
  copyTile<D, BQ, NT>(smem.q(), qBase, p.qStrideS, q0, sv.nq, vec);
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  u32 qf[QRES ? 1 : D / 16][4];
  if constexpr (!QRES) {
    pipeQFragments<D>(smem.q(), qf);
    __syncthreads();
  }

  FlashAcc<D> acc;
  const int row0 = warp * 16 + lane / 4;
  // SEQ: the run context from shared memory (SeqShared), not registers.
  const RunCtx ctxLocal = SEQ ? RunCtx{}
                              : makeRunCtx(pos0, pos0 + (q1 - q0), ctxNq,
                                           ctxNk, BK, head, t.numHeads);
  const RunCtx &ctx = SEQ ? sh->ctx : ctxLocal;
  // The aligned position of row0, and c2, for the masks.
  const i64 rowPos = pinned(pos0 + row0 + ctxNk - ctxNq);
  const int maskC2 = pinned(c2);

  const int guardAt = pinned(guardPart<D, NT>());
  // The walk runs once unguarded, and again with the guard of partial
  // tiles only where the first pass left a non-finite output (guardRerun).
#pragma unroll 1
  for (bool guarded = false;; guarded = true) {
  flashInit<D>(acc);
  // The tile whose scores are done and whose values have landed (pending
  // O += P V), and the cursor of the enumeration: `run` and the next block.
  bool pending = false;
  int pendingCls = kFull;
  GuardKeep pendingKeep = {{0, 0}, guardAt};
  u32 pa[4][4];
  Run run = noRun();
  i64 kb = 0, next = SEQ ? (sv.nk > 0 ? kbFirst : ctx.nkb) : 0;
  for (;;) {
    // The next visited key block: within the run, or the next run (the one
    // call site of the run enumeration: its code is inlined once).
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
    if constexpr (SEQ)
      have = have && kb < sh->kbEnd;
    if (have) {
      if constexpr (SEQ)
        copySeqTile<D, BK, NT>(ks, p, *sh, kBase, p.kStrideB, p.kStrideS,
                               kb * BK, vec, badPage);
      else
        copyTile<D, BK, NT>(ks, kBase, p.kStrideS, kb * BK, p.nk, vec);
      cpAsyncCommit();
    }
    if (pending) {
      if (guarded && pendingCls == kPartial)
        pipeGuard<E, D, NT>(vs, pendingKeep, acc);
      pipeValues<E, D>(pa, vs, acc);
    }
    if (!have)
      break;
    cpAsyncWait<0>();
    __syncthreads(); // K landed; every warp is done with the values
    const i64 k0 = kb * BK;
    if constexpr (SEQ)
      copySeqTile<D, BK, NT>(vs, p, *sh, vBase, p.vStrideB, p.vStrideS, k0,
                             vec, badPage);
    else
      copyTile<D, BK, NT>(vs, vBase, p.vStrideS, k0, p.nk, vec);
    cpAsyncCommit();
    float s[8][4];
    if constexpr (QRES)
      pipeScoresSharedQ<E, D>(smem.q(), ks, s);
    else
      pipeScores<E, D>(qf, ks, s);
    const int cls = run.cls;
    const int room = (int)minI((SEQ ? sh->kEnd : p.nk) - k0, BK); // below Nk
    if (cls == kPartial) {
      pendingKeep.keep = partialKeep<Groups>(pattern, rowPos, k0, maskC2,
                                             room, head, t.numHeads);
      applyKeepNibbles(s, pendingKeep.keep);
    }
    if (room < BK) // the last key tile (partial masks leave Nk's edge here)
      applyKeep(s, columnBits(c2, room));
    // SEQ: the positions of the tile below the sequence's first key.
    if constexpr (SEQ)
      if (k0 < sh->kStart)
        applyKeep(s, ~columnBits(c2, sh->kStart - k0));
    pipeSoftmax<E, D>(s, p.scaleLog2, acc, pa);
    pending = true;
    pendingCls = cls;
    cpAsyncWait<0>();
    __syncthreads(); // V landed; every warp is done with the keys
  }
  if (!guardRerun<D>(guarded, acc))
    break;
  }

  if constexpr (SEQ) {
    // From shared memory (SeqShared): the prologue's registers are free.
    const SeqShared &st = *sh;
    const i64 hl = head - p.headStart;
    const i64 qi0 = st.q0 + row0, qi1 = st.q0 + row0 + 8;
    const i64 r0 = qi0 < st.nq ? qi0 : -1, r1 = qi1 < st.nq ? qi1 : -1;
    if (__syncthreads_or(st.bad || badPage))
      flashPoison<D>(acc);
    const i64 heads = p.headCount ? p.headCount : p.numHeads;
    if (p.numSplits > 1) {
      const i64 row = (p.cuQ ? st.qRow0 : st.b * p.nq) + st.split * p.splitRows;
      flashStoreSplit<D>(acc, p.splitO + (row * heads + hl) * D,
                         p.splitLse + row * heads + hl, heads, r0, r1);
      return;
    }
    // The LSE: [sequences, heads, Nq] (dense queries), [heads, T] (packed).
    float *lseBase = !p.lse   ? nullptr
                     : p.cuQ ? p.lse + hl * p.nq + st.qRow0
                             : p.lse + (st.b * heads + hl) * p.nq;
    flashStore<E, D>(acc,
                     p.o + (p.cuQ ? 0 : st.b) * p.oStrideB +
                         st.qRow0 * p.oStrideS + hl * p.oStrideH,
                     p.oStrideS, lseBase, r0, r1);
  } else {
    const i64 qi0 = q0 + row0, qi1 = q0 + row0 + 8;
    flashStore<E, D>(acc, p.o + b * p.oStrideB + head * p.oStrideH,
                     p.oStrideS,
                     p.lse ? p.lse + (b * p.numHeads + head) * p.nq : nullptr,
                     qi0 < p.nq ? qi0 : -1, qi1 < p.nq ? qi1 : -1);
  }
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

/// The split-KV merge of a per-sequence call: one thread per (row, launch
/// slot) of the layer, grid ceil(splitRows * t.numComputed / 128), 128
/// threads. O = sum_c exp(lse_c - lse) O_c with lse = log sum_c
/// exp(lse_c) over the splits (a NaN partial makes the row NaN; no key in
/// any split, O = 0 and LSE = -inf). Packed rows no sequence owns, and heads
/// outside the call's range, are left alone.
template <int E, int D>
__device__ __forceinline__ void seqMergeSplits(const LayerTable &t,
                                               const AttnParams &p) {
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.splitRows * t.numComputed)
    return;
  const i64 row = idx / t.numComputed, head = t.computedHead[idx % t.numComputed];
  if (p.headCount &&
      (head < p.headStart || head >= (i64)p.headStart + p.headCount))
    return;
  if (p.cuQ && seqOfRow(p, row) < 0)
    return;
  const i64 heads = p.headCount ? p.headCount : p.numHeads;
  const i64 hl = head - p.headStart;
  const float negInf = __int_as_float(0xff800000);
  float m = negInf;
  bool nan = false;
  for (int c = 0; c < p.numSplits; ++c) {
    const float l = p.splitLse[(c * p.splitRows + row) * heads + hl];
    nan |= l != l;
    m = fmaxf(m, l);
  }
  float sum = 0.f;
  for (int c = 0; c < p.numSplits; ++c) {
    const float l = p.splitLse[(c * p.splitRows + row) * heads + hl];
    sum += m == negInf ? 0.f : expf(l - m);
  }
  const float nanF = __int_as_float(0x7fc00000);
  // Dense: row = b * Nq + i; packed: the packed row.
  const i64 b = p.cuQ ? 0 : row / p.nq, i = p.cuQ ? row : row % p.nq;
  u16 *orow = p.o + b * p.oStrideB + i * p.oStrideS + hl * p.oStrideH;
  for (int x = 0; x < D; x += 2) {
    float o0 = 0.f, o1 = 0.f;
    for (int c = 0; m != negInf && c < p.numSplits; ++c) {
      const i64 at = (c * p.splitRows + row) * heads + hl;
      const float w = expf(p.splitLse[at] - m) / sum;
      if (w != 0.f) { // a split without keys holds O = 0, LSE = -inf
        o0 += w * p.splitO[at * D + x];
        o1 += w * p.splitO[at * D + x + 1];
      }
    }
    *reinterpret_cast<u32 *>(orow + x) =
        packFloats<E>(nan ? nanF : o0, nan ? nanF : o1);
  }
  if (p.lse)
    p.lse[p.cuQ ? hl * p.nq + i : (b * heads + hl) * p.nq + i] =
        nan ? nanF : (m == negInf ? negInf : m + logf(sum));
}

/// fillSkipped for a per-sequence call: grid (ceil(rows / 128), number of
/// skipped heads, dense queries' sequences or 1), rows = the tensor's (Nq
/// each, or T packed: every packed row belongs to a sequence or to none,
/// and a skipped head's rows are all zero either way); heads outside the
/// call's range do nothing.
template <int D>
__device__ __forceinline__ void fillSkippedSeq(const LayerTable &t,
                                               const AttnParams &p) {
  const i64 qi = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const i64 head = t.skippedHead[blockIdx.y], b = blockIdx.z;
  if (qi >= p.nq || (p.headCount && (head < p.headStart ||
                                     head >= (i64)p.headStart + p.headCount)))
    return;
  const i64 hl = head - p.headStart;
  const i64 heads = p.headCount ? p.headCount : p.numHeads;
  u16 *orow = p.o + b * p.oStrideB + hl * p.oStrideH + qi * p.oStrideS;
  for (int x = 0; x < D; ++x)
    orow[x] = 0;
  if (p.lse)
    p.lse[p.cuQ ? hl * p.nq + qi : (b * heads + hl) * p.nq + qi] =
        __int_as_float(0xff800000);
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_FLASHFORWARD_CUH
