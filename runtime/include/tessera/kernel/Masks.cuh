//===- Masks.cuh - partial-tile masks from closed forms ---------*- C++ -*-===//
//
// The device helpers of the per-pattern mask code the emitter generates
// (lib/Schedule/Masks.cpp): a partial tile's keep bits built from each leaf's
// closed form instead of 32 calls of the element predicate. Pasted into
// bundles after Program.h and FlashForward.cuh; host and device (TESSERA_HD),
// so the unit tests compile the generated code for the host. Plain C++14, no
// headers.
//
// The keep bits. A warp computes 16 query rows x 64 keys with
// mma.m16n8k16; lane `lane` holds rows r = lane / 4 and r + 8 of the warp
// and the key columns nt * 8 + c2 + {0, 1} (nt = 0..7, c2 = (lane % 4) * 2)
// of the tile that starts at key k0. Bit 4 * nt + e (e = 0..3) of the u32 is
// whether the pair (row position rowPos + (e >= 2 ? 8 : 0), key
// k0 + nt * 8 + c2 + (e & 1)) is allowed and the key is below Nk.
//
// Row masks. The generated code works on one 64-bit mask per row: bit j is
// key kb + j, kb = k0 + c2 (the thread's first column), so the thread's 16
// columns are bits 8 * nt + {0, 1} and no shift by c2 is needed. Bits 58 to
// 63 are never read (the last column is bit 57): a span ends at bit 62 at
// most, so that its shifts stay within [0, 63], and other forms may leave
// anything in the unread bits.
//
// 32-bit arithmetic. Positions and parameters reach 2^41, so the tile's
// offsets are computed once in 64 bits (MaskTile): kb and d = kb - rowPos
// (the diagonal offset of bit 0 of row 0). Their clamped 32-bit copies
// (kbc = min(kb, 2^30), dc = d clamped to +-2^30) serve every leaf whose
// constants are below kMaskSmall = 2^29 in magnitude: a bit index computed
// from them is exact whenever it lies in [0, 63], and on the same side of
// that range otherwise (|c| + 2^30 + 16 < 2^31, no overflow), which is all
// a clamp to [0, 63] needs. Leaves with larger constants use the 64-bit
// values, then clamp.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_MASKS_CUH
#define TESSERA_KERNEL_MASKS_CUH

namespace tessera {
namespace kernel {

typedef unsigned int u32;
typedef unsigned long long u64;

/// Constants of at most this magnitude are combined with the clamped 32-bit
/// offsets (kbc, dc); larger ones with the 64-bit ones.
enum : i64 { kMaskSmall = 1LL << 29 }; // an enumerator: no unused-variable warning in device code
/// The clamp of the 32-bit offsets.
static const i64 kMaskClamp = 1LL << 30;

TESSERA_HD int minInt(int a, int b) { return a < b ? a : b; }
TESSERA_HD int maxInt(int a, int b) { return a > b ? a : b; }

/// x clamped to the bit indices [0, 63].
TESSERA_HD int clampBit(int x) { return x < 0 ? 0 : (x > 63 ? 63 : x); }
TESSERA_HD int clampBit64(i64 x) { return x < 0 ? 0 : (x > 63 ? 63 : (int)x); }

/// Bits [lo, end) for 0 <= lo, end <= 63 (empty when end <= lo).
TESSERA_HD u64 bitSpan(int lo, int end) {
  return (~0ull << lo) & ~(~0ull << end);
}

/// Every bit of a row when `on`, else none.
TESSERA_HD u64 rowAll(bool on) { return 0ull - (u64)on; }

/// The offsets of one thread in one tile: see the file comment.
struct MaskTile {
  i64 kb;   ///< the thread's first key, k0 + c2
  i64 d;    ///< kb - rowPos: the offset k - p of bit 0 of row 0 (row 1: - 8)
  i64 p;    ///< rowPos (row 1: + 8)
  int kbc;  ///< min(kb, 2^30)
  int dc;   ///< d clamped to [-2^30, 2^30]
  int ec;   ///< the keys below Nk are bits [0, ec) (ec in [0, 63])
  u64 edge; ///< those bits, for roots that cannot take ec into their ends
};

/// For a tile that holds a key: k0 < nk (the kernels call keep for such
/// tiles only).
TESSERA_HD MaskTile maskTile(i64 rowPos, i64 k0, int c2, i64 nk) {
  MaskTile t;
  t.kb = k0 + c2;
  t.d = t.kb - rowPos;
  t.p = rowPos;
  t.kbc = (int)minI(t.kb, kMaskClamp);
  t.dc = (int)maxI(minI(t.d, kMaskClamp), -kMaskClamp);
  // The tile holds a key (k0 < nk), so nk - kb > -8: its minimum with 63
  // fits an int, and one 64-bit minimum is all the edge needs.
  t.ec = maxInt((int)minI(nk - t.kb, 63), 0);
  t.edge = bitSpan(0, t.ec);
  return t;
}

/// (r + step) mod period for r in [0, period) and step in [0, period): the
/// phase of the next row (`step` is 8 or -8 reduced by the emitter).
TESSERA_HD int stepMod(int r, int step, int period) {
  const int s = r + step;
  return s >= period ? s - period : s;
}
TESSERA_HD i64 stepMod64(i64 r, i64 step, i64 period) {
  const i64 s = r + step;
  return s >= period ? s - period : s;
}

/// Bits j with (r + j) mod period < width, for a period of at most 62:
/// `pattern` has bit i set iff i mod period < width (i < 64), `pattern1` is
/// pattern << 1, `whole` = period * floor(64 / period), r in [0, period).
/// Bits [0, 64 - r) come from pattern >> r; the rest repeat bits of pattern
/// `whole` (a multiple of the period) lower, which pattern1 << (whole - 1 - r)
/// places there (both shifts in [0, 63]).
TESSERA_HD u64 periodicSmall(u64 pattern, u64 pattern1, int whole, int r) {
  return (pattern >> r) | (pattern1 << (whole - 1 - r));
}

/// The same for a period of at least 63 (at most two occurrences meet the
/// 63 bits: the one holding bit 0, and the next at period - r).
TESSERA_HD u64 periodicLarge(int r, int period, int width) {
  return bitSpan(0, clampBit(width - r)) |
         bitSpan(clampBit(period - r), clampBit(period - r + width));
}
TESSERA_HD u64 periodicLarge64(i64 r, i64 period, i64 width) {
  return bitSpan(0, clampBit64(width - r)) |
         bitSpan(clampBit64(period - r), clampBit64(period - r + width));
}

/// Bits j with x + j in the sorted disjoint half-open ranges r[0, 2 * count)
/// (keys: x = kb; offsets: x = the row's d).
TESSERA_HD u64 listedBits(const i64 *r, i64 count, i64 x) {
  u64 m = 0;
  for (i64 i = firstRangeEndingAfter(r, count, x);
       i < count && r[2 * i] < x + 63; ++i)
    m |= bitSpan(clampBit64(r[2 * i] - x), clampBit64(r[2 * i + 1] - x));
  return m;
}

/// The keys kb + j of the listed blocks of the query block of position p:
/// blocks of blockQ x blockK, the kBlocks data layout (`rows` listed
/// query-block ids, their CSR row starts, then the columns).
TESSERA_HD u64 blockRowBits(const i64 *ids, i64 rows, i64 blockQ, i64 blockK,
                            i64 p, i64 kb) {
  // The row's position among the listed query blocks: one lower bound.
  const i64 qb = floorDiv(p, blockQ);
  i64 first = 0, last = rows;
  while (first < last) {
    const i64 m = (first + last) / 2;
    if (ids[m] < qb)
      first = m + 1;
    else
      last = m;
  }
  if (first == rows || ids[first] != qb)
    return 0;
  const i64 *rowStart = ids + rows;
  const i64 *cols = rowStart + rows + 1;
  i64 a = rowStart[first], b = rowStart[first + 1];
  const i64 end = b, c0 = kb / blockK;
  while (a < b) {
    const i64 m = (a + b) / 2;
    if (cols[m] < c0)
      a = m + 1;
    else
      b = m;
  }
  // Columns up to cmax start before bit 63: col * blockK <= kb + 62, so
  // neither product below can overflow.
  const i64 cmax = (kb + 62) / blockK;
  u64 m = 0;
  for (; a < end && cols[a] <= cmax; ++a)
    m |= bitSpan(clampBit64(cols[a] * blockK - kb),
                 clampBit64((cols[a] + 1) * blockK - kb));
  return m;
}

/// The two rows' listed blocks; row 1 reuses row 0's when both rows lie in
/// one query block.
TESSERA_HD void blockRowsBits(const i64 *ids, i64 rows, i64 blockQ, i64 blockK,
                              const MaskTile &t, u64 &m0, u64 &m1) {
  m0 = blockRowBits(ids, rows, blockQ, blockK, t.p, t.kb);
  m1 = floorDiv(t.p, blockQ) == floorDiv(t.p + 8, blockQ)
           ? m0
           : blockRowBits(ids, rows, blockQ, blockK, t.p + 8, t.kb);
}

/// The generic form, for a leaf without a closed form: the leaf's element
/// predicate f(p, k) on this thread's 16 columns of one row.
template <class F> TESSERA_HD u64 predicateBits(const F &f, i64 p, i64 kb) {
  u64 m = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
  for (int i = 0; i < 16; ++i) {
    const int j = (i >> 1) * 8 + (i & 1);
    if (f(p, kb + j))
      m |= 1ull << j;
  }
  return m;
}

/// Bytes 0 and 2 of a, then bytes 0 and 2 of b (PRMT with selector 0x6420
/// on the device: one instruction where the shifts and masks take six).
TESSERA_HD u32 evenBytes(u32 a, u32 b) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, 0x6420);
#else
  return (a & 0xffu) | ((a >> 8) & 0xff00u) | ((b & 0xffu) << 16) |
         ((b << 8) & 0xff000000u);
#endif
}

/// The thread's keep bits from its two row masks: bit 4 * nt + 2 * h + e is
/// bit 8 * nt + e of row h's mask. Per 32-bit half: each byte's two bits of
/// row 0 and (shifted by 2) of row 1 into its low nibble, the next byte's
/// nibble into its high nibble; then bytes 0 and 2 of both halves.
TESSERA_HD u32 threadBits(u64 row0, u64 row1) {
  const u32 lo = ((u32)row0 & 0x03030303u) | (((u32)row1 & 0x03030303u) << 2);
  const u32 hi = ((u32)(row0 >> 32) & 0x03030303u) |
                 (((u32)(row1 >> 32) & 0x03030303u) << 2);
  return evenBytes(lo | (lo >> 4), hi | (hi >> 4));
}

/// The former partial-tile mask (FlashForward.cuh's keepBits, kept rolled
/// on the device): the element predicate of G on the thread's 32 pairs. The
/// reference MaskTest compares with, and a drop-in for code that has only a
/// predicate (the dynamic kernels).
template <class G>
TESSERA_HD u32 keepByPredicate(i64 rowPos, i64 k0, int c2, i64 nk, i64 head,
                               i64 numHeads) {
  u32 bits = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
  for (int i = 0; i < 32; ++i) {
    const i64 pi = rowPos + ((i & 3) >= 2 ? 8 : 0);
    const i64 kj = k0 + (i >> 2) * 8 + c2 + (i & 1);
    if (kj < nk && G::allowed(pi, kj, head, numHeads))
      bits |= 1u << i;
  }
  return bits;
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_MASKS_CUH
