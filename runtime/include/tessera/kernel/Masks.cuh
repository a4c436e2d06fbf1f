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
// Row masks. The generated code works on one 64-bit mask per row
// (P<id>Mask::rows): row h's bit j + 1 + 2 h is key k0 + c2 + j, so that the
// thread's columns of row 0 are bits 8 nt + {1, 2} and row 1's
// 8 nt + {3, 4}, and one LOP3 a 32-bit half merges the two rows into the
// bytes the kernel's selects read (FlashForward.cuh's KeepNibbles, one R2P
// a byte). MaskTile's kb is the key of row 0's bit 0 (k0 + c2 - 1; row 1's
// is kb - 2) and d = kb - rowPos its diagonal offset (row 1's: d - 10).
// Only bits 1-4 of each byte are read (of row 0: 1-2, up to bit 58; of row
// 1: 3-4, up to bit 60): forms may leave anything in the others, and the
// lowest bits of a frame may come from keys below the thread's first. Spans
// take any ends (bitRange: PTX's shifts saturate). rows() covers every key:
// Nk's edge is left to the kernels, which apply it to their last key tile
// only, full or partial. keep() gives the u32 form from the same masks,
// with the edge (keepBits).
//
// 32-bit arithmetic. Positions and parameters reach 2^41, so the tile's
// offsets are computed once in 64 bits (MaskTile): kb and d. Their clamped
// 32-bit copies (kbc, dc: clamped to about +-2^30, through double
// conversions, see maskTileRoom) serve every leaf whose
// constants are below kMaskSmall = 2^29 in magnitude: a bit index computed
// from them is exact whenever it lies in [0, 64], and on the same side of
// that range otherwise (|c| + 2^30 + 16 < 2^31, no overflow), which is all
// a span needs. Leaves with larger constants use the 64-bit values, then
// clamp. A power-of-two period takes its phase from the low 32 bits.
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
TESSERA_HD int clampBit64(i64 x) { return x < 0 ? 0 : (x > 63 ? 63 : (int)x); }

/// Bits [lo, end) for 0 <= lo, end <= 63 (empty when end <= lo).
TESSERA_HD u64 bitSpan(int lo, int end) {
  return (~0ull << lo) & ~(~0ull << end);
}

/// x << n and x >> n for any n: 0 where n >= 64 or n < 0 (PTX's shifts
/// read the amount unsigned and clamp it: the same two SHF instructions as
/// a plain shift, where C++ would leave those amounts undefined).
TESSERA_HD u64 shlSat(u64 x, int n) {
#if defined(__CUDA_ARCH__)
  u64 r;
  asm("shl.b64 %0, %1, %2;" : "=l"(r) : "l"(x), "r"(n));
  return r;
#else
  return (unsigned)n >= 64u ? 0ull : x << n;
#endif
}
TESSERA_HD u64 shrSat(u64 x, int n) {
#if defined(__CUDA_ARCH__)
  u64 r;
  asm("shr.b64 %0, %1, %2;" : "=l"(r) : "l"(x), "r"(n));
  return r;
#else
  return (unsigned)n >= 64u ? 0ull : x >> n;
#endif
}

/// Bits [lo, end) for any lo and end (empty when end <= lo): one clamp a
/// bound, as the saturating shifts take amounts past 63.
TESSERA_HD u64 bitRange(int lo, int end) {
  return shlSat(~0ull, maxInt(lo, 0)) & ~shlSat(~0ull, maxInt(end, 0));
}

/// The run of bits `run` (bits [0, w), w <= 64) moved to start at bit x,
/// for any x: bits [x, x + w) of the row.
TESSERA_HD u64 runAt(u64 run, int x) {
  return shlSat(run, x) | shrSat(run, -x);
}

/// Every bit of a row when `on`, else none.
TESSERA_HD u64 rowAll(bool on) { return 0ull - (u64)on; }

/// The offsets of one thread in one tile: see the file comment.
struct MaskTile {
  i64 kb;    ///< the key of bit 0 of row 0: k0 + c2 - 1 (row 1: - 2)
  i64 d;     ///< kb - rowPos: the offset k - p of bit 0 of row 0 (row 1: - 10)
  i64 p;     ///< rowPos (row 1: + 8)
  int kbc;   ///< kb clamped to [-1, 2^30 + 68] (k0 >= 0)
  int dc;    ///< d clamped to [-2^30, 2^30]
  int ec;    ///< row 0's keys below Nk are bits [0, ec) (ec in [-6, 65])
  u64 edge;  ///< row 0's bits [0, ec) (row 1's keys below Nk: edge << 2)
  i64 tile;  ///< floor(k0 / 64)
  int off;   ///< k0 - 64 tile (0 in the kernels: their k0 are multiples of 64)
  int sh;    ///< off + c2 - 1: row 0's bit j is bit j + sh of its tile's keys
};

/// x rounded toward zero to an int, saturating (x an integer below 2^53 in
/// magnitude here). One F2I on the device, whose conversion saturates.
TESSERA_HD int toIntSat(double x) {
#if defined(__CUDA_ARCH__)
  return __double2int_rz(x);
#else
  return x >= 2147483647.0 ? 2147483647
                           : (x <= -2147483648.0 ? (-2147483647 - 1) : (int)x);
#endif
}

/// x clamped to [-2^30, 2^30] as an int.
TESSERA_HD int clampOffset(i64 x) {
  return (int)maxI(minI(x, kMaskClamp), -kMaskClamp);
}

/// For a tile that holds a key: 0 <= k0 < nk (the kernels call keep for
/// such tiles only).
/// `room`: min(nk - k0, 64), in [1, 64] (the tile holds a key); k0 a
/// multiple of 64 (the kernels' tiles; maskTile takes any k0).
TESSERA_HD MaskTile maskTileRoom(i64 rowPos, i64 k0, int c2, int room) {
  MaskTile t;
  t.kb = k0 + c2 - 1;
  t.d = t.kb - rowPos;
  t.p = rowPos;
  // The clamped copies. d through double (exact below 2^53): -d is
  // (rowPos - c2 + 1 - rem) - 64 tile, one DFMA a tile on the device (in
  // the kernels rem = 0 and the sum is loop invariant: converted once
  // before the tile loop), one saturating F2I, two clamps; negated, so that
  // the leaves' `c - t.dc` fold into one add. kb >= -1 (k0 >= 0): from the
  // tile's F2I, its clamp at 2^24 tiles (kbc <= 2^30 + 68). Was two 64-bit
  // subtractions, two I2F/F2I pairs and four clamps a tile.
  const double tile = (double)(k0 >> 6);
  const i64 rem = k0 & 63;
  const int nd = toIntSat((double)(rowPos - c2 + 1 - rem) - 64.0 * tile);
  t.kbc = minInt(toIntSat(tile), 1 << 24) * 64 + (int)rem + c2 - 1;
  t.dc = -maxInt(minInt(nd, (int)kMaskClamp), -(int)kMaskClamp);
  t.ec = room + (1 - c2);
  t.edge = bitRange(0, t.ec);
  t.tile = k0 >> 6;
  t.off = 0;
  t.sh = c2 - 1;
  return t;
}
TESSERA_HD MaskTile maskTile(i64 rowPos, i64 k0, int c2, i64 nk) {
  MaskTile t = maskTileRoom(rowPos, k0, c2, (int)minI(nk - k0, 64));
  t.off = (int)(k0 & 63);
  t.sh = t.off + c2 - 1;
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

/// The same for a period of at least 63: at most two occurrences meet the
/// 64 bits, the one holding bit 0 (bits [0, width - r)) and the next at
/// period - r. The generated code takes the two cheaper forms below.
TESSERA_HD u64 periodicLarge(int r, int period, int width) {
  return bitRange(0, width - r) | bitRange(period - r, period - r + width);
}
/// For a width of at most 64 (`run` = bits [0, width)): run >> r
/// and run << (period - r) (past 63, or r past the width, a saturating
/// shift gives no bit).
TESSERA_HD u64 periodicRun(u64 run, int r, int period) {
  return shrSat(run, r) | shlSat(run, period - r);
}
/// For a width of at least 64: the occurrence at period - r (>= 1) reaches
/// past bit 63, so it is every bit from there.
TESSERA_HD u64 periodicWide(int r, int period, int width) {
  return ~shlSat(~0ull, maxInt(width - r, 0)) | shlSat(~0ull, period - r);
}
/// Both in 64 bits, for periods past 2^29.
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

/// The two row masks of a thread (rows rowPos and rowPos + 8).
struct RowMasks {
  u64 r0, r1;
};

/// A set of diagonal offsets (k - p) as a bit table: entry m holds bits
/// [16 m, 16 m + 96) of the set's bitmap B (bit i: offset i + base, for the
/// base the emitter chose; the fourth word is padding), so that any 64-bit
/// window of B that starts in the entry's first 16 bits is two funnel
/// shifts of its words.
struct alignas(16) OffsetEntry {
  u32 w[4];
};

/// Bits [x, x + 32) of the 64-bit value hi:lo, x in [0, 31] (one SHF).
TESSERA_HD u32 funnelRight(u32 lo, u32 hi, int x) {
  return (u32)((((u64)hi << 32) | lo) >> x);
}

/// The two row masks of an offset table: `z` is row 1's index into B (the
/// offset of its bit 0, d - 10, less the base), clamped by the caller to
/// [0, zmax], past which B is zero for 80 bits. Row 0's bit 0 is offset d,
/// ten bits further: both rows lie in one entry (s + 10 + 63 < 96).
TESSERA_HD RowMasks offsetTableRows(const OffsetEntry *table, int z) {
  const OffsetEntry e = *reinterpret_cast<const OffsetEntry *>(
      reinterpret_cast<const char *>(table) + (z & ~15));
  const int s = z & 15;
  auto window = [&](int x) {
    return ((u64)funnelRight(e.w[1], e.w[2], x) << 32) |
           funnelRight(e.w[0], e.w[1], x);
  };
  return {window(s + 10), window(s)};
}

/// The 64 keys of one tile-table entry (blockTableBits).
TESSERA_HD u64 blockEntryKeys(const OffsetEntry &e) {
  return ((u64)((e.w[1] >> 8) | (e.w[2] << 24)) << 32) |
         ((e.w[0] >> 8) | (e.w[1] << 24));
}

/// The listed-block keys of a row from the leaf's tile table: entry T of a
/// table row holds keys [64 T, 64 T + 64) of the blocks listed in one query
/// block (`tiles` entries a row), as 96 bits X of which bit b + 8 is key
/// 64 T + b (w[0] = keys << 8, w[1] = keys >> 24, w[2] = keys >> 56; w[3]
/// unused), so that every frame of the kernels' tiles is a right shift of
/// X. Table row `row` (any value: rows outside [0, rows) list no key),
/// shifted so that bit j is key 64 tile + sh + j (sh in [-3, 68]; bits
/// below 0 come out as zeros, where the masks' frames are unread). With
/// off = 0 (the kernels' tiles start at multiples of 64: sh in [-3, 5]) one
/// 128-bit load and two funnel shifts; else the entry and its successor.
TESSERA_HD u64 blockTableBits(const OffsetEntry *table, i64 rows, i64 tiles,
                              i64 row, i64 tile, int sh, int off) {
  const bool in = (u64)row < (u64)rows && (u64)tile < (u64)tiles;
  const int at = in ? (int)row * (int)tiles + (int)tile : 0;
  OffsetEntry e = {{0u, 0u, 0u, 0u}};
  if (in)
    e = table[at];
  if (off == 0 && sh >= -8 && sh < 24) {
    const int x = sh + 8;
    return ((u64)funnelRight(e.w[1], e.w[2], x) << 32) |
           funnelRight(e.w[0], e.w[1], x);
  }
  const u64 lo = blockEntryKeys(e);
  const u64 hi = in && (u64)(tile + 1) < (u64)tiles
                     ? blockEntryKeys(table[at + 1])
                     : 0ull;
  return shrSat(lo, sh) | shlSat(lo, -sh) | shlSat(hi, 64 - sh) |
         shrSat(hi, sh - 64);
}

/// The generic form, for a leaf without a closed form: the leaf's element
/// predicate f(p, k) on this thread's 16 columns of one row, whose frame
/// puts key kb + j at bit j (the columns at bits 8 nt + {0, 1} + s).
template <class F>
TESSERA_HD u64 predicateBits(const F &f, i64 p, i64 kb, int s) {
  u64 m = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
  for (int i = 0; i < 16; ++i) {
    const int j = (i >> 1) * 8 + (i & 1) + s;
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

/// The keep bits of a tile from its row masks and Nk's edge: row 1's bit
/// j is key kb - 2 + j, so its mask shifted down two bits meets the edge
/// at the same keys as row 0's (one edge for both rows).
TESSERA_HD u32 keepBits(const RowMasks &m, const MaskTile &t) {
  return threadBits((m.r0 & t.edge) >> 1, ((m.r1 >> 2) & t.edge) >> 1);
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
