//===- FlashBackward.cuh - block-sparse attention backward ----*- CUDA -*-===//
//
// The CUDA kernel bodies of the backward pass (issue 20; docs/backward.md,
// "The CUDA kernels"), on the building blocks of FlashForward.cuh (mma.sync
// m16n8k16, ldmatrix from the swizzled TileLayout, cp.async tiles, the
// generated partial-tile masks). Pasted after FlashForward.cuh, like it
// needs no header. Three kernels, no atomics:
//
// 1. bwdPreprocess: D_i = rowsum(dO * O) (- dLse_i) in f32, a thread a row.
// 2. bwdKeyMajor: a block owns 64 keys of one kv head and batch entry and
//    keeps dK and dV in registers; for each computed query head of the kv
//    head it walks the *transposed* runs (the query blocks that see its key
//    block, Groups::runFromT) and adds dV += P^T dO and dK += s dS^T Q. GQA
//    sums over the group's heads inside the block. Keys past Nk are not
//    stored; keys no row sees get dK = dV = 0.
// 3. bwdQueryMajor: a block owns 64 query rows of one computed head and
//    walks the forward's runs (Groups::runFrom), dQ += s dS K. Rows without
//    keys (LSE = -inf) get dQ = 0.
//
// P = exp(s Q K^T - LSE) is recomputed in base 2 from the forward's
// natural-log LSE (one FFMA and one ex2 a score); P and dS are rounded to
// the input type for the tensor-core products, the sums are f32. FULL tiles
// take no mask; PARTIAL ones take the group's closed-form masks
// (Groups::keepNibbles, as the forward; the key-major kernel transposes
// them through shared memory). Nq != Nk aligns bottom-right as the forward.
//
// `Groups` is the forward's generated class (runFrom, keep / keepNibbles)
// plus runFromT(pattern, const TRunCtx &, qb), the transposed schedule of
// the pattern. The emitter pastes this file into every bundle and
// generates, per element type and head dim, a Groups over every pattern of
// that type and dim (a kv head's query heads may sit in different forward
// kernels) whose runFromT is each pattern's generated transposed walk
// (schedule::emitTransposedCode), and the kernels of docs/backward.md
// (tessera_bwd_*: (BwdParams, int layer)), which the runtime launches for
// dense calls on CUDA contexts, and their `_seq` twins for packed, length
// and head-range calls (BwdParams' sequence fields). The emulator test's wrappers
// (test/Unit/BackwardKernels.inc) also run these bodies with runFromT from
// the manifest's program (ProgramRuns), as an independent walk.
//
// Head dims: 64, 96 and 128 are built and tested (256 would need dK and dV
// partly in shared memory and is not built; others are untested).
// Skipped heads are the caller's: it zero-fills their dQ rows (they add
// nothing to dK and dV, which bwdKeyMajor writes in full). Non-finite
// inputs follow the forward's rule (a masked pair adds nothing): the
// key-major and query-major kernels run unguarded, then a second launch of
// each with GUARDED = true redoes, with bwdGuard on partial tiles, the
// blocks whose stored gradients came out non-finite (others return at
// once).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_FLASHBACKWARD_CUH
#define TESSERA_KERNEL_FLASHBACKWARD_CUH

namespace tessera {
namespace kernel {

// BwdStrides and BwdParams: BackwardParams.h (pasted before this file).

/// A 16-bit value of type E as a float (exact).
template <int E> __device__ __forceinline__ float bwdToFloat(u16 x) {
#ifdef TESSERA_EMULATE
  return tessera_emu::halfToFloat<E>(x);
#else
  if (E == kBF16)
    return __int_as_float((int)((u32)x << 16));
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
#endif
}

//===----------------------------------------------------------------------===//
// Per-sequence calls: packed (cu_seqlens_q / cu_seqlens_k), length
// (seq_lens_k) and head-range calls of static heads, as the CPU backward
// runs them (Api.cpp's sequenceBackward: each sequence a dense batch-1
// backward over its own rows and keys, bottom-right aligned; rows and keys
// no sequence owns get zero gradients). The sequence arrays are device
// memory: the kernels read and check them.
//===----------------------------------------------------------------------===//

/// One sequence of a backward call: its query rows and keys, where they
/// start (packed) and in which batch entry. Dense calls (no array): batch
/// entry s's Nq rows and Nk keys. An entry out of range (a cu_seqlens
/// decreasing or past its tensor, a length past its keys) makes the
/// sequence `bad`: it visits no key, and the gradients of its rows and
/// keys that can still be named come out NaN (a bad cu_seqlens_q names no
/// row, a bad cu_seqlens_k no key).
struct BwdSeq {
  i64 nq, nk;         ///< its query rows and keys
  i64 qRow0, kRow0;   ///< the rows of its first query and key
  i64 qEntry, kEntry; ///< the batch entries of its queries and keys
  bool bad;
};

__device__ __forceinline__ BwdSeq bwdSeq(const BwdParams &p, i64 s) {
  BwdSeq v = {p.nq, p.nk, 0, 0, p.cuQ ? 0 : s, p.cuK ? 0 : s, false};
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
    v.kRow0 = ok ? a : 0; // its first key's row
    v.nk = ok ? b - a : 0;
    v.bad |= !ok;
  }
  if (p.lensK) { // a length within the sequence's keys (packed or dense)
    const i64 n = p.lensK[s];
    const bool ok = 0 <= n && n <= v.nk;
    v.nk = ok ? n : 0;
    v.bad |= !ok;
  }
  return v;
}

/// What a block of the two passes reads of its sequence after its
/// prologue, in shared memory rather than registers (the tile loops need
/// every register they can get: they would spill otherwise), as the
/// forward's SeqShared.
struct BwdSeqShared {
  i64 nq, nk;         ///< the walk's rows and keys (a bad sequence: no key)
  i64 limit;          ///< rows (query-major) or keys (key-major) it stores
  i64 r0;             ///< the block's first row or key in its sequence
  i64 qEntry, qRow0;  ///< BwdSeq's
  i64 kEntry, kRow0;
  int bad;
};

/// How a pass reads its BwdSeqShared: per-sequence kernels (SEQ) through
/// a volatile reference, each use a load from shared memory; dense ones
/// through a plain one to a local of constants the compiler folds (their
/// code is the dense kernel's).
template <bool SEQ> struct BwdSeqRef {
  using T = const BwdSeqShared &;
};
template <> struct BwdSeqRef<true> {
  using T = const volatile BwdSeqShared &;
};

/// The sequence and 64-row block of index x of a packed dimension (`cu`:
/// the cu_seqlens of `numSeqs` sequences): sequence s owns the indices
/// [floor(cu[s] / 64) + s, floor(cu[s + 1] / 64) + s + 1), at least its
/// ceil(rows / 64) blocks (the launch has floor(T / 64) + numSeqs), as the
/// forward's seqBlock; a block past its sequence's rows does nothing.
__device__ __forceinline__ void bwdSeqBlock(const int *cu, int numSeqs, i64 x,
                                            i64 &s, i64 &blk) {
  i64 lo = 0, hi = numSeqs - 1; // the last s with start(s) <= x
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (floorDiv(cu[mid], 64) + mid <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  s = lo;
  blk = x - (floorDiv(cu[lo], 64) + lo);
}

/// The sequence whose packed rows of `cu` hold row r (the last s with
/// cu[s] <= r; numSeqs - 1 past them all).
__device__ __forceinline__ i64 bwdSeqOfRow(const int *cu, int numSeqs, i64 r) {
  i64 lo = 0, hi = numSeqs - 1;
  while (lo < hi) {
    const i64 mid = (lo + hi + 1) / 2;
    if (cu[mid] <= r)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/// The heads of the call's q, o, dq and LSE; the kv heads of its k, v, dk
/// and dv (a head range: those its heads read).
__device__ __forceinline__ i64 bwdCallHeads(const BwdParams &p) {
  return p.headCount ? p.headCount : p.numHeads;
}
__device__ __forceinline__ i64 bwdCallKvHeads(const BwdParams &p) {
  const i64 g = p.numHeads / p.numKvHeads;
  return p.headCount ? (p.headStart + p.headCount - 1) / g - p.headStart / g + 1
                     : p.numKvHeads;
}

/// Zeroes D columns of a 16-bit row (a thread's own row).
template <int D> __device__ __forceinline__ void bwdZeroRow(u16 *row) {
  for (int x = 0; x < D; x += 2)
    *reinterpret_cast<u32 *>(row + x) = 0u;
}

/// D_i = sum_x dO[i][x] * O[i][x] (minus dLse_i where given) in f32: grid
/// (ceil(Nq / 128), the call's heads, batch), 128 threads, one thread a
/// row (LSE layout: [batch, heads, Nq], packed [heads, T]). A per-sequence
/// call's grid covers max(Nq, Nk) rows and max(q.batch, k.batch) entries:
/// its threads also zero the rows of dq and the keys of dk and dv that no
/// sequence owns (packed tails, keys past a length), which no pass writes.
template <int E, int D>
__device__ __forceinline__ void bwdPreprocess(const BwdParams &p) {
  const i64 r = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const i64 h = blockIdx.y, b = blockIdx.z;
  const i64 seqs = p.numSeqs ? p.numSeqs : gridDim.z;
  if (r < p.nq && b < (p.cuQ ? 1 : seqs)) {
    const u16 *o = p.o + b * p.os.b + r * p.os.s + h * p.os.h;
    const u16 *g = p.dO + b * p.dOs.b + r * p.dOs.s + h * p.dOs.h;
    float sum = 0.f;
    for (int x = 0; x < D; ++x)
      sum = fmaf(bwdToFloat<E>(o[x]), bwdToFloat<E>(g[x]), sum);
    const i64 at = (b * bwdCallHeads(p) + h) * p.nq + r;
    p.delta[at] = p.dLse ? sum - p.dLse[at] : sum;
    if (p.cuQ) { // a packed row no sequence owns: dq = 0
      const BwdSeq v = bwdSeq(p, bwdSeqOfRow(p.cuQ, p.numSeqs, r));
      if (r < v.qRow0 || r >= v.qRow0 + v.nq)
        bwdZeroRow<D>(p.dq + r * p.dqs.s + h * p.dqs.h);
    }
  }
  if (!(p.cuK || p.lensK) || h >= bwdCallKvHeads(p) || r >= p.nk ||
      b >= (p.cuK ? 1 : seqs))
    return;
  // A key no sequence owns (packed keys outside every sequence's, keys
  // past a sequence's length): dk = dv = 0.
  const BwdSeq v = bwdSeq(p, p.cuK ? bwdSeqOfRow(p.cuK, p.numSeqs, r) : b);
  if (r >= v.kRow0 && r < v.kRow0 + v.nk)
    return;
  bwdZeroRow<D>(p.dk + b * p.dks.b + r * p.dks.s + h * p.dks.h);
  bwdZeroRow<D>(p.dv + b * p.dvs.b + r * p.dvs.s + h * p.dvs.h);
}

/// `p`, opaque to the compiler, per call: shared-memory addresses derived
/// from it inside a tile loop are recomputed each tile instead of being
/// hoisted out of the loop into registers (dozens of swizzled ldmatrix
/// addresses, which would spill).
template <class T> __device__ __forceinline__ T *bwdOpaque(T *p) {
#ifndef TESSERA_EMULATE
  asm volatile("" : "+l"(p));
#endif
  return p;
}

/// log2(e) LSE with -inf (no key) as +inf, so that P = 2^(x - it) is 0.
__device__ __forceinline__ float bwdLse2(float lse) {
  const float inf = __int_as_float(0x7f800000);
  return lse == -inf ? inf : lse * 1.4426950408889634f;
}

/// The shared memory of bwdKeyMajor: the block's key and value tiles
/// (resident), the query and dO tiles of the query block being visited,
/// its rows' base-2 LSE and D, and a partial tile's mask in query-major
/// form (allow[query row][key]).
template <int D> struct alignas(128) BwdKeyTiles {
  static constexpr int kPitch = TileLayout<D>::kPitch;
  u16 buf[4 * 64 * kPitch];
  float lse2[64], delta[64];
  unsigned char allow[64][64];
  __device__ __forceinline__ u16 *k() { return buf; }
  __device__ __forceinline__ u16 *v() { return buf + 64 * kPitch; }
  __device__ __forceinline__ u16 *q() { return buf + 2 * 64 * kPitch; }
  __device__ __forceinline__ u16 *dO() { return buf + 3 * 64 * kPitch; }
};

/// Packs 16 x 64 f32 accumulators (rows of this warp, 64 columns) as the
/// m16n8k16 A operands of four 16-column steps (pipeSoftmax's packing).
template <int E>
__device__ __forceinline__ void bwdPackA(const float (&s)[8][4],
                                         u32 (&a)[4][4]) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    a[kt][0] = packFloats<E>(s[2 * kt][0], s[2 * kt][1]);
    a[kt][1] = packFloats<E>(s[2 * kt][2], s[2 * kt][3]);
    a[kt][2] = packFloats<E>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    a[kt][3] = packFloats<E>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
}

/// Element e of n-tile nt of accumulators packed by bwdPackA, as a float:
/// P is kept packed only (its f32 form dies after the packing, which frees
/// 32 registers), so dS = P (dP - D) reads P as the products read it.
template <int E>
__device__ __forceinline__ float bwdUnpack(const u32 (&a)[4][4], int nt,
                                           int e) {
  const u32 w = a[nt >> 1][(nt & 1) * 2 + (e >> 1)];
  return bwdToFloat<E>((u16)((e & 1) ? w >> 16 : w & 0xffffu));
}

/// Writes a partial tile's mask into `allow` (query-major), from the
/// group's generated forward masks: warp w evaluates query rows 16 w ..
/// 16 w + 15 of the tile as the forward's warp would. Keys past Nk get
/// unspecified bits (their gradients are not stored).
template <class Groups>
__device__ __forceinline__ void bwdMaskRows(unsigned char (&allow)[64][64],
                                            i64 pattern, i64 rowPos, i64 k0,
                                            int room, i64 head, i64 numHeads) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2, row = warp * 16 + lane / 4;
  const u32 keep = keepOf(
      partialKeep<Groups>(pattern, rowPos, k0, c2, room, head, numHeads));
#pragma unroll
  for (int i = 0; i < 32; ++i)
    allow[row + ((i & 3) >= 2 ? 8 : 0)][(i >> 2) * 8 + c2 + (i & 1)] =
        (unsigned char)((keep >> i) & 1u);
}

/// The key-major kernel's threads: 4 warps of 16 keys each; above head_dim
/// 64, two such sets, each accumulating half of dK's and dV's columns (a
/// thread's dK and dV at head_dim 128 would be 128 registers, and the tile
/// loop spills). Both sets compute the same S^T and dP^T, so above 64 a
/// tile costs 6 products of 64 x 64 x D / 2 instead of 4.
template <int D> struct BwdKeyShape {
  static constexpr int kSplit = D > 64 ? 2 : 1;
  static constexpr int kThreads = 128 * kSplit;
  static constexpr int kCols = D / kSplit; ///< the columns of a set
};

/// pipeScoresSharedQ with the A rows of key warp `rw` (16 rw ..): S^T =
/// A B^T of 16 rows of `as` against the 64 rows of `bs`.
template <int E, int D>
__device__ __forceinline__ void bwdScoresT(const u16 *as, const u16 *bs, int rw,
                                           float (&s)[8][4]) {
  const int lane = threadIdx.x % 32;
  const int aRow = rw * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int rowInPair = (lane & 7) + (lane >> 4) * 8, half = (lane >> 3) & 1;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    u32 a[4];
    ldsm4(a, as + TileLayout<D>::at(aRow, 2 * kk + (lane >> 4)));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      u32 b[4];
      ldsm4(b, bs + TileLayout<D>::at(16 * np + rowInPair, 2 * kk + half));
      mma16816<E>(s[2 * np], a, b[0], b[1]);
      mma16816<E>(s[2 * np + 1], a, b[2], b[3]);
    }
  }
}

/// pipeValues over columns [c0, c0 + C) of a tile of D columns: acc (C
/// columns) += A B, B the 64 x C block of `bs` read transposed.
template <int E, int D, int C>
__device__ __forceinline__ void bwdValues(const u32 (&a)[4][4], const u16 *bs,
                                          int c0, FlashAcc<C> &acc) {
  const int lane = threadIdx.x % 32;
  const int key = (lane & 7) + ((lane >> 3) & 1) * 8, second = lane >> 4;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt)
#pragma unroll
    for (int dn = 0; dn < C / 8; dn += 2) {
      u32 b[4];
      ldsm4Trans(b,
                 bs + TileLayout<D>::at(16 * kt + key, c0 / 8 + dn + second));
      mma16816<E>(acc.o[dn], a[kt], b[0], b[1]);
      mma16816<E>(acc.o[dn + 1], a[kt], b[2], b[3]);
    }
}

/// The keep bits (applyKeep's form) of this thread's accumulator elements
/// of a transposed tile, key rows `row` and `row` + 8, query columns
/// 8 nt + c2 + (e & 1), read from the query-major `allow`.
__device__ __forceinline__ u32 bwdKeepT(const unsigned char (&allow)[64][64],
                                        int row, int c2) {
  u32 keep = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i)
    keep |=
        (u32)allow[(i >> 2) * 8 + c2 + (i & 1)][row + ((i & 3) >= 2 ? 8 : 0)]
        << i;
  return keep;
}

/// Selects 0 into the accumulator elements whose bit in `keep` (applyKeep's
/// form) is clear: P and dS of masked pairs in the guarded pass, where a
/// NaN LSE or a non-finite dP would make them NaN.
__device__ __forceinline__ void bwdZeroMasked(float (&s)[8][4], u32 keep) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (!((keep >> (4 * nt + e)) & 1u))
        s[nt][e] = 0.f;
}

/// The query rows of a partial tile that see key row `row` (bit j: tile
/// row j), from the query-major mask.
__device__ __forceinline__ unsigned long long
bwdSeesT(const unsigned char (&allow)[64][64], int row) {
  unsigned long long m = 0;
#pragma unroll 1
  for (int j = 0; j < 64; ++j)
    m |= (unsigned long long)allow[j][row] << j;
  return m;
}

/// Non-finite inputs in a partial tile, in the guarded pass (docs/
/// backward.md): after the operand tile `tile` (64 rows of D, TileLayout<D>)
/// of a product acc += A tile has landed and before the product, when some
/// value of it is NaN or infinite (guardScan), the accumulator elements of
/// the rows that see the value's row (sees[h], bit j: tile row j, for this
/// thread's row half h) in the value's column (columns c0 .. c0 + C of the
/// tile) become NaN, and the value is zeroed for the product, so that a
/// masked pair adds nothing (0 * inf would be NaN). NT threads.
template <int E, int D, int C, int NT>
__device__ __forceinline__ void bwdGuard(u16 *tile,
                                         const unsigned long long (&sees)[2],
                                         FlashAcc<C> &acc, int c0) {
  if (!guardScan<E, D, NT>(tile + guardPart<D, NT>()))
    return;
  using L = TileLayout<D>;
  const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
  const float nan = __int_as_float(0x7fc00000);
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll 1
    for (int j = 0; j < 64; ++j)
      if ((sees[h] >> j) & 1ull)
#pragma unroll
        for (int dn = 0; dn < C / 8; ++dn) {
          const u32 w =
              nonFiniteBits<E>(ld32(tile + L::at(j, c0 / 8 + dn) + c2));
          if (w & 0x8000u)
            acc.o[dn][2 * h] = nan;
          if (w & 0x80000000u)
            acc.o[dn][2 * h + 1] = nan;
        }
  __syncthreads(); // every thread has read the values
  constexpr int kSpan = D / (NT / 64);
  u16 *mine = tile + guardPart<D, NT>();
  for (int x = 0; x < kSpan; x += 2) {
    u32 *w = reinterpret_cast<u32 *>(mine + x);
    const u32 nf = nonFiniteBits<E>(*w);
    *w &= (nf & 0x8000u ? 0xffff0000u : 0xffffffffu) &
          (nf & 0x80000000u ? 0x0000ffffu : 0xffffffffu);
  }
  __syncthreads(); // the tile is finite
}

/// The products of one key-major tile: S^T = K Q^T, P^T, dV += P^T dO,
/// dP^T = V dO^T, dS^T, dK += dS^T Q, with K, V, Q, the rows' LSE and D and
/// (partial: the query-major mask) in shared memory and dO landed or
/// covered by the wait here; ends with a barrier. Shared by bwdKeyTile and
/// the dynamic heads' key-major products (DynamicBackward.cuh). `sm`: the
/// tiles as the caller made them opaque for this tile (bwdOpaque: once a
/// tile, for the loads and these products alike).
template <int E, int D, bool GUARDED>
__device__ __forceinline__ void
bwdKeyProducts(BwdKeyTiles<D> &sm, const BwdParams &p, bool partial,
               FlashAcc<BwdKeyShape<D>::kCols> &dk,
               FlashAcc<BwdKeyShape<D>::kCols> &dv) {
  using Shape = BwdKeyShape<D>;
  constexpr int NT = Shape::kThreads, C = Shape::kCols;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
  const int rw = warp % 4, c0 = (warp / 4) * C; // key rows, dK / dV columns
  const int cls = partial ? kPartial : kFull;
  // S^T = K Q^T: this warp's 16 keys (rows) against the 64 queries.
  float s[8][4];
  bwdScoresT<E, D>(sm.k(), sm.q(), rw, s);
  u32 keep = ~0u; // the mask, transposed: key rows, query columns
  if (cls == kPartial) {
    keep = bwdKeepT(sm.allow, rw * 16 + lane / 4, c2);
    applyKeep(s, keep);
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[nt][e] =
          ex2(fmaf(s[nt][e], p.scaleLog2, -sm.lse2[nt * 8 + c2 + (e & 1)]));
  const bool guard = GUARDED && cls == kPartial;
  if (guard)
    bwdZeroMasked(s, keep);
  u32 pa[4][4];
  bwdPackA<E>(s, pa);
  cpAsyncWait<0>();
  __syncthreads(); // dO landed
  if (guard) {
    const unsigned long long sees[2] = {
        bwdSeesT(sm.allow, rw * 16 + lane / 4),
        bwdSeesT(sm.allow, rw * 16 + lane / 4 + 8)};
    bwdGuard<E, D, C, NT>(sm.dO(), sees, dv, c0);
  }

  bwdValues<E, D, C>(pa, sm.dO(), c0, dv); // dV += P^T dO
  float dp[8][4];                          // dP^T = V dO^T
  bwdScoresT<E, D>(sm.v(), sm.dO(), rw, dp);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float dl = sm.delta[nt * 8 + c2 + (e & 1)];
      const float pt = bwdUnpack<E>(pa, nt, e);
      dp[nt][e] = pt * (dp[nt][e] - dl); // dS^T = P^T (dP^T - D)
    }
  if (guard) { // the mask and the sets read again: no registers held
    bwdZeroMasked(dp, bwdKeepT(sm.allow, rw * 16 + lane / 4, c2));
    const unsigned long long sees[2] = {
        bwdSeesT(sm.allow, rw * 16 + lane / 4),
        bwdSeesT(sm.allow, rw * 16 + lane / 4 + 8)};
    bwdGuard<E, D, C, NT>(sm.q(), sees, dk, c0);
  }
  bwdPackA<E>(dp, pa);
  bwdValues<E, D, C>(pa, sm.q(), c0, dk); // dK += dS^T Q (s at the end)
  __syncthreads(); // every warp is done with Q, dO, the rows and the mask
}

/// One tile of the key-major pass: the query block qb (class `cls`) of
/// head `head` against the block's resident keys, of a sequence of nq rows
/// (from qBase, dOBase, lseRow, deltaRow) and nk keys. K and V must have
/// landed or be covered by the first wait here.
template <int E, int D, class Groups, bool GUARDED>
__device__ __forceinline__ void
bwdKeyTile(BwdKeyTiles<D> &tiles, const BwdParams &p, const u16 *qBase,
           const u16 *dOBase, const float *lseRow, const float *deltaRow,
           i64 qb, int cls, i64 pattern, i64 k0, i64 head, i64 numHeads,
           i64 nq, i64 nk, FlashAcc<BwdKeyShape<D>::kCols> &dk,
           FlashAcc<BwdKeyShape<D>::kCols> &dv) {
  using Shape = BwdKeyShape<D>;
  constexpr int NT = Shape::kThreads, BQ = 64;
  BwdKeyTiles<D> &sm = *bwdOpaque(&tiles);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool vec = p.vectorLoads != 0;
  const i64 q0 = qb * BQ;
  copyTile<D, BQ, NT>(sm.q(), qBase, p.qs.s, q0, nq, vec);
  cpAsyncCommit();
  if (threadIdx.x < BQ) {
    const i64 i = q0 + threadIdx.x;
    sm.lse2[threadIdx.x] =
        i < nq ? bwdLse2(lseRow[i]) : __int_as_float(0x7f800000);
  } else if (threadIdx.x < 2 * BQ) {
    const i64 i = q0 + threadIdx.x - BQ;
    sm.delta[threadIdx.x - BQ] = i < nq ? deltaRow[i] : 0.f;
  }
  if (cls == kPartial && warp < 4)
    bwdMaskRows<Groups>(sm.allow, pattern, q0 + warp * 16 + lane / 4 + nk - nq,
                        k0, (int)minI(nk - k0, 64), head, numHeads);
  cpAsyncWait<0>();
  __syncthreads(); // Q (and the first time K, V) landed; rows and mask set
  copyTile<D, BQ, NT>(sm.dO(), dOBase, p.dOs.s, q0, nq, vec);
  cpAsyncCommit();
  bwdKeyProducts<E, D, GUARDED>(sm, p, cls == kPartial, dk, dv);
}

/// The index of `head`'s launch slot in the layer's table, or -1 where the
/// head is skipped.
__device__ __forceinline__ i64 bwdSlotOf(const LayerTable &t, i64 head) {
  for (i64 i = 0; i < t.numComputed; ++i)
    if (t.computedHead[i] == head)
      return i;
  return -1;
}

/// Stores this thread's rows of a [16 x D] accumulator of row warp `rw`,
/// times `mul`, at rows r0 + rw * 16 + lane / 4 (+ 8) below `limit`.
template <int E, int D>
__device__ __forceinline__ void bwdStoreRows(const FlashAcc<D> &acc, float mul,
                                             u16 *base, i64 strideS, i64 r0,
                                             int rw, i64 limit) {
  const int lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 r = r0 + rw * 16 + lane / 4 + h * 8;
    if (r >= limit)
      continue;
    u16 *row = base + r * strideS;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<u32 *>(row + dn * 8 + c2) =
          packFloats<E>(acc.o[dn][2 * h] * mul, acc.o[dn][2 * h + 1] * mul);
  }
}

/// Whether some stored 16-bit gradient of rows [r0, min(r0 + 64, limit))
/// of `base` (row stride `strideS`, D columns) is NaN or infinite: the
/// guarded kernels' test of the unguarded kernels' output, by NT threads
/// (a barrier).
template <int E, int D, int NT>
__device__ __forceinline__ bool bwdRowsNonFinite(const u16 *base, i64 strideS,
                                                 i64 r0, i64 limit) {
  u32 bits = 0;
  for (int i = threadIdx.x; i < 64 * (D / 2); i += NT) {
    const i64 r = r0 + i / (D / 2);
    if (r < limit)
      bits |= nonFiniteBits<E>(ld32(base + r * strideS + 2 * (i % (D / 2))));
  }
  return __syncthreads_or(bits != 0);
}

/// dK and dV of key block blockIdx.x (64 keys) of kv head blockIdx.y of
/// batch entry blockIdx.z: grid (ceil(Nk / 64), kv heads, batch),
/// BwdKeyShape<D>::kThreads threads (4 warps of 16 keys each, or two such
/// sets of 4 for the two halves of the columns), shared memory
/// BwdKeyTiles<D>. `patternOf`: the layer's pattern of each head group.
///
/// Per-sequence calls: blockIdx.y is the call's kv head (k's), and packed
/// keys (grid (floor(Tk / 64) + sequences, kv heads, 1)) find their
/// sequence and key block as bwdSeqBlock says; dense keys' sequence is
/// blockIdx.z. The block walks its sequence's rows against its keys (a
/// dense batch-1 backward, bottom-right) over the call's heads of the kv
/// head only (a head range that cuts a GQA group sums the heads it holds),
/// and stores the keys the sequence owns (the preprocess zeroed the rest).
///
/// GUARDED: the second launch, after the unguarded one (non-finite inputs,
/// docs/backward.md): a block whose stored dK and dV are all finite does
/// nothing; the others walk again with bwdGuard on partial tiles and store
/// again. A separate kernel, so that the guard's code costs the unguarded
/// loop no registers.
template <int E, int D, class Groups, bool GUARDED = false, bool SEQ = false>
__device__ __forceinline__ void
bwdKeyMajor(const LayerTable &t, const i64 *patternOf, const BwdParams &p,
            BwdKeyTiles<D> &sm) {
  using Shape = BwdKeyShape<D>;
  constexpr int NT = Shape::kThreads, BK = 64, BQ = 64, C = Shape::kCols;
  const i64 group = p.numHeads / p.numKvHeads;
  // The call's heads (q's) and its kv heads' first (k's): a head range's.
  const i64 h0 = SEQ ? p.headStart : 0, heads = SEQ ? bwdCallHeads(p)
                                                    : p.numHeads;
  const i64 kvl = blockIdx.y, kvh = kvl + h0 / group;
  const i64 b = blockIdx.z;
  const BwdSeqShared dense = {p.nq, p.nk, p.nk, (i64)blockIdx.x * BK, b, 0,
                              b,    0,    0};
  const BwdSeqShared *view = &dense;
  if constexpr (SEQ) {
    __shared__ BwdSeqShared seqShared; // read after the barrier below
    i64 seq = b, kb = blockIdx.x;
    if (p.cuK)
      bwdSeqBlock(p.cuK, p.numSeqs, blockIdx.x, seq, kb);
    const BwdSeq sv = bwdSeq(p, seq);
    // The keys it stores: the sequence's; a bad one's dense keys all (NaN).
    const i64 limit = sv.bad ? (p.cuK ? 0 : p.nk) : sv.nk;
    if (kb < 0 || kb * BK >= limit)
      return;
    if (threadIdx.x == 0)
      seqShared = {sv.nq,     sv.bad ? 0 : sv.nk, limit,    kb * BK, sv.qEntry,
                   sv.qRow0, sv.kEntry,          sv.kRow0, sv.bad ? 1 : 0};
    __syncthreads();
    view = &seqShared;
  }
  typename BwdSeqRef<SEQ>::T sh = *view;
  const bool vec = p.vectorLoads != 0;
  if constexpr (GUARDED)
    if (!bwdRowsNonFinite<E, D, NT>(p.dk + sh.kEntry * p.dks.b +
                                        sh.kRow0 * p.dks.s + kvl * p.dks.h,
                                    p.dks.s, sh.r0, sh.limit) &&
        !bwdRowsNonFinite<E, D, NT>(p.dv + sh.kEntry * p.dvs.b +
                                        sh.kRow0 * p.dvs.s + kvl * p.dvs.h,
                                    p.dvs.s, sh.r0, sh.limit))
      return;
  copyTile<D, BK, NT>(sm.k(),
                      p.k + sh.kEntry * p.ks.b + sh.kRow0 * p.ks.s +
                          kvl * p.ks.h,
                      p.ks.s, sh.r0, sh.nk, vec);
  copyTile<D, BK, NT>(sm.v(),
                      p.v + sh.kEntry * p.vs.b + sh.kRow0 * p.vs.s +
                          kvl * p.vs.h,
                      p.vs.s, sh.r0, sh.nk, vec);
  cpAsyncCommit(); // waited for with the first query tile, or at the end

  FlashAcc<C> dk, dv;
  flashInit<C>(dk);
  flashInit<C>(dv);
#pragma unroll 1
  for (i64 g = 0; g < group && sh.nq > 0 && sh.r0 < sh.nk; ++g) {
    const i64 head = kvh * group + g, hl = head - h0;
    if (hl < 0 || hl >= heads)
      continue; // a head outside the call's range
    const i64 slot = bwdSlotOf(t, head);
    if (slot < 0)
      continue; // a skipped head adds nothing
    const i64 pattern = patternOf[t.headGroup[slot]];
    const i64 k0 = sh.r0;
    const TRunCtx ctx = makeTRunCtx(k0, minI(k0 + BK, sh.nk), sh.nq, sh.nk, BQ,
                                    head, t.numHeads);
    const u16 *qBase =
        p.q + sh.qEntry * p.qs.b + sh.qRow0 * p.qs.s + hl * p.qs.h;
    const u16 *dOBase =
        p.dO + sh.qEntry * p.dOs.b + sh.qRow0 * p.dOs.s + hl * p.dOs.h;
    const i64 rows = (sh.qEntry * heads + hl) * p.nq + sh.qRow0;
    const float *lseRow = p.lse + rows;
    const float *deltaRow = p.delta + rows;
    // The transposed walk: the query blocks that see this key block, run
    // by run (empty tiles never visited).
    Run run = noRun();
    i64 qb = 0, next = 0;
    for (;;) {
      if (qb < run.hi) {
        ++qb;
      } else {
        run = Groups::runFromT(pattern, ctx, next);
        if (!isRun(run))
          break;
        qb = run.lo;
        next = run.hi + 1; // the run after this one
      }
      bwdKeyTile<E, D, Groups, GUARDED>(sm, p, qBase, dOBase, lseRow, deltaRow,
                                        qb, run.cls, pattern, sh.r0, head,
                                        t.numHeads, sh.nq, sh.nk, dk, dv);
    }
  }
  cpAsyncWait<0>(); // K and V, where no tile was visited
  const int warp = threadIdx.x / 32, c0 = (warp / 4) * C;
  // A bad sequence's keys: NaN (the kernels cannot report an error).
  const float bad = sh.bad ? __int_as_float(0x7fc00000) : 1.f;
  bwdStoreRows<E, C>(dk, p.scale * bad,
                     p.dk + sh.kEntry * p.dks.b + sh.kRow0 * p.dks.s +
                         kvl * p.dks.h + c0,
                     p.dks.s, sh.r0, warp % 4, sh.limit);
  bwdStoreRows<E, C>(dv, bad,
                     p.dv + sh.kEntry * p.dvs.b + sh.kRow0 * p.dvs.s +
                         kvl * p.dvs.h + c0,
                     p.dvs.s, sh.r0, warp % 4, sh.limit);
}

/// dQ of query block blockIdx.x (64 rows) of the head of launch slot `slot`
/// of batch entry blockIdx.z: grid (ceil(Nq / 64), computed heads, batch),
/// 128 threads (4 warps, 16 rows each), shared memory PipeTiles<D> (the
/// query and dO tiles are staged in the key and value tiles). Walks the
/// forward's runs of the pattern; V of a tile loads while its scores are
/// computed. GUARDED: the second launch, as bwdKeyMajor's (blocks whose
/// stored dQ is finite do nothing).
///
/// Per-sequence calls: heads outside the call's range do nothing; packed
/// queries (grid (floor(T / 64) + sequences, computed heads, 1)) find
/// their sequence and block as bwdSeqBlock says, dense ones' sequence is
/// blockIdx.z; the block walks its sequence's keys (bottom-right) and
/// stores its sequence's rows (a bad sequence's as NaN).
template <int E, int D, class Groups, bool GUARDED = false, bool SEQ = false>
__device__ __forceinline__ void
bwdQueryMajor(const LayerTable &t, const BwdParams &p, PipeTiles<D> &sm,
              i64 slot, i64 pattern) {
  constexpr int NT = 128, BQ = 64, BK = 64;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c2 = (lane % 4) * 2;
  const i64 h0 = SEQ ? p.headStart : 0, heads = SEQ ? bwdCallHeads(p)
                                                    : p.numHeads;
  const i64 head = t.computedHead[slot], hl = head - h0;
  const i64 group = p.numHeads / p.numKvHeads;
  const i64 kvl = head / group - h0 / group;
  if (SEQ && (hl < 0 || hl >= heads))
    return; // a head outside the call's range
  const i64 b = blockIdx.z;
  const BwdSeqShared dense = {p.nq, p.nk, p.nq, (i64)blockIdx.x * BQ, b, 0,
                              b,    0,    0};
  const BwdSeqShared *view = &dense;
  if constexpr (SEQ) {
    __shared__ BwdSeqShared seqShared; // read after the barrier below
    i64 seq = b, qb = blockIdx.x;
    if (p.cuQ)
      bwdSeqBlock(p.cuQ, p.numSeqs, blockIdx.x, seq, qb);
    const BwdSeq sv = bwdSeq(p, seq);
    if (qb < 0 || qb * BQ >= sv.nq)
      return;
    if (threadIdx.x == 0)
      seqShared = {sv.nq,     sv.bad ? 0 : sv.nk, sv.nq,    qb * BQ, sv.qEntry,
                   sv.qRow0, sv.kEntry,          sv.kRow0, sv.bad ? 1 : 0};
    __syncthreads();
    view = &seqShared;
  }
  typename BwdSeqRef<SEQ>::T sh = *view;
  if constexpr (GUARDED)
    if (!bwdRowsNonFinite<E, D, NT>(p.dq + sh.qEntry * p.dqs.b +
                                        sh.qRow0 * p.dqs.s + hl * p.dqs.h,
                                    p.dqs.s, sh.r0, sh.nq))
      return;
  const bool vec = p.vectorLoads != 0;
  const u16 *kBase =
      p.k + sh.kEntry * p.ks.b + sh.kRow0 * p.ks.s + kvl * p.ks.h;
  const u16 *vBase =
      p.v + sh.kEntry * p.vs.b + sh.kRow0 * p.vs.s + kvl * p.vs.h;

  // Q and dO fragments of this warp's rows, staged through the two tiles.
  copyTile<D, BQ, NT>(sm.k(),
                      p.q + sh.qEntry * p.qs.b + sh.qRow0 * p.qs.s +
                          hl * p.qs.h,
                      p.qs.s, sh.r0, sh.nq, vec);
  copyTile<D, BQ, NT>(sm.v(),
                      p.dO + sh.qEntry * p.dOs.b + sh.qRow0 * p.dOs.s +
                          hl * p.dOs.h,
                      p.dOs.s, sh.r0, sh.nq, vec);
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  u32 qf[D / 16][4], gf[D / 16][4];
  pipeQFragments<D>(sm.k(), qf);
  pipeQFragments<D>(sm.v(), gf);
  __syncthreads();

  // This thread's two rows: base-2 LSE and D.
  float lse2[2], dl[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 i = sh.r0 + warp * 16 + lane / 4 + h * 8;
    const i64 at = (sh.qEntry * heads + hl) * p.nq + sh.qRow0 + i;
    lse2[h] = i < sh.nq ? bwdLse2(p.lse[at]) : __int_as_float(0x7f800000);
    dl[h] = i < sh.nq ? p.delta[at] : 0.f;
  }
  FlashAcc<D> dq;
  const RunCtx ctx = makeRunCtx(sh.r0, minI(sh.r0 + BQ, sh.nq), sh.nq, sh.nk,
                                BK, head, t.numHeads);
  const i64 rowPos = sh.r0 + warp * 16 + lane / 4 + sh.nk - sh.nq;
  flashInit<D>(dq);
  Run run = noRun();
  i64 kb = 0, next = 0;
  for (; !SEQ || sh.nk > 0;) { // a sequence without keys: dq = 0
    if (kb < run.hi) {
      ++kb;
    } else {
      run = Groups::runFrom(pattern, ctx, next);
      if (!isRun(run))
        break;
      kb = run.lo;
      next = run.hi + 1;
    }
    const i64 k0 = kb * BK;
    copyTile<D, BK, NT>(sm.k(), kBase, p.ks.s, k0, sh.nk, vec);
    cpAsyncCommit();
    cpAsyncWait<0>();
    __syncthreads(); // K landed
    copyTile<D, BK, NT>(sm.v(), vBase, p.vs.s, k0, sh.nk, vec);
    cpAsyncCommit();
    float s[8][4];
    pipeScores<E, D>(qf, sm.k(), s); // S = Q K^T
    const int room = (int)minI(sh.nk - k0, BK);
    if (run.cls == kPartial)
      applyKeepNibbles(s, partialKeep<Groups>(pattern, rowPos, k0, c2, room,
                                              head, t.numHeads));
    if (room < BK)
      applyKeep(s, columnBits(c2, room));
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[nt][e] = ex2(fmaf(s[nt][e], p.scaleLog2, -lse2[e >> 1]));
    const bool guard = GUARDED && run.cls == kPartial;
    if (guard) // the mask computed again: no registers held for it
      bwdZeroMasked(s, keepOf(partialKeep<Groups>(pattern, rowPos, k0, c2, room,
                                                  head, t.numHeads)));
    u32 da[4][4];
    bwdPackA<E>(s, da); // P, packed
    cpAsyncWait<0>();
    __syncthreads(); // V landed
    float dp[8][4];
    pipeScores<E, D>(gf, sm.v(), dp); // dP = dO V^T
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dp[nt][e] = bwdUnpack<E>(da, nt, e) * (dp[nt][e] - dl[e >> 1]); // dS
    if (guard) {
      const u32 keep = keepOf(
          partialKeep<Groups>(pattern, rowPos, k0, c2, room, head, t.numHeads));
      bwdZeroMasked(dp, keep);
      const unsigned long long sees[2] = {rowKeep(keep, 0, c2),
                                          rowKeep(keep, 1, c2)};
      bwdGuard<E, D, D, NT>(sm.k(), sees, dq, 0);
    }
    bwdPackA<E>(dp, da);
    pipeValues<E, D>(da, sm.k(), dq); // dQ += dS K (s applied at the end)
    __syncthreads();                  // every warp is done with K and V
  }
  // A bad sequence's rows: NaN (the kernels cannot report an error).
  const float bad = sh.bad ? __int_as_float(0x7fc00000) : 1.f;
  bwdStoreRows<E, D>(dq, p.scale * bad,
                     p.dq + sh.qEntry * p.dqs.b + sh.qRow0 * p.dqs.s +
                         hl * p.dqs.h,
                     p.dqs.s, sh.r0, warp, sh.nq);
}

/// dQ = 0 for the rows of skipped heads (no backward block writes them):
/// grid (ceil(Nq / 128), skipped heads, batch), 128 threads, a thread a
/// row; a head-range call's skipped heads outside its range do nothing.
template <int D>
__device__ __forceinline__ void bwdZeroSkipped(const LayerTable &t,
                                               const BwdParams &p) {
  const i64 qi = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const i64 hl = t.skippedHead[blockIdx.y] - p.headStart, b = blockIdx.z;
  if (qi >= p.nq || hl < 0 || hl >= bwdCallHeads(p))
    return;
  bwdZeroRow<D>(p.dq + b * p.dqs.b + qi * p.dqs.s + hl * p.dqs.h);
}

} // namespace kernel
} // namespace tessera

#if defined(TESSERA_EMULATE) && !defined(TESSERA_EMU_BACKWARD)
/// The bundle's emitted backward kernels are compiled on the host only
/// where the translation unit defines TESSERA_EMU_BACKWARD (BackwardEmit):
/// elsewhere there is nothing to register.
#define TESSERA_EMU_BWD_KERNEL(name)
#elif defined(TESSERA_EMULATE)
/// The host emulator's registration of an emitted backward kernel, which
/// takes (BwdParams, int layer): `params` points at the BwdParams.
#define TESSERA_EMU_BWD_KERNEL(name)                                           \
  static ::tessera_emu::Registration tessera_emu_register_##name(              \
      std::string(TESSERA_EMU_BUNDLE) + "/" #name,                             \
      [](const void *params, int layer) {                                      \
        tessera::kernel::BwdParams p;                                          \
        std::memcpy(&p, params, sizeof p);                                     \
        name(p, layer);                                                        \
      });
#endif

#endif // TESSERA_KERNEL_FLASHBACKWARD_CUH
