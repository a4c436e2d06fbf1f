//===- Permuted.cuh - a head group in a permuted token order on CUDA ------===//
//
// The attention of a static head group with a layout (`#attn.period_
// transpose`, docs/patterns.md "Layouts") on the dynamic kernels' pipeline
// (DynamicIndex.cuh, which must come first): a block's query tile is 64
// permuted slots whose rows are gathered through the slot -> row map
// (DynQueries' gathered rows, as routing's clusters), its key tiles are 64
// permuted key slots gathered through the key map (a kAllGathered walk), and
// each row's O and LSE are stored at its ORIGINAL row (dynStore takes each
// row's index): no gather or scatter pass. The walk is the host's
// (cpu::permutedWalk at 64 x 64, the CPU executor's own), flattened to a
// list of key tiles per query tile, each FULL (unmasked) or masked by its
// 64 x 64 bits (bit c of row r: slot pair allowed; 0 past Nq and Nk).
//
// Per-token head routing (MoH, tessera.h's head_active) runs on the same
// kernel: there the "permutation" of head slot y of batch entry b is its
// ACTIVE query rows in row order (PermArgs::routed: one table per (b, y)),
// packed 64 to a query tile, each tile with its own list of key tiles
// (the union of its rows' key runs, keys in their original order: keyOf
// the identity) and bits evaluated at the rows' own positions; the tiles
// after a table's active ones store O = 0 and LSE = -inf to its inactive
// rows (no other kernel, no synchronisation). The host builds the tables
// (cpu::routedWalk).
//
// Emitted into bundles whose layers have layouts, or whose emitter was
// asked for head routing (tessera_perm_attend_*), and launched by the
// runtime on dense CUDA calls; run under the emulator by
// test/Unit/PermutedEmulatorTest.cpp, HeadRoutedEmulatorTest.cpp,
// FakeDriverPermutedTest.cpp and FakeDriverHeadRoutingTest.cpp
// (docs/bundles.md, "Layouts"; docs/runtime.md, "Per-token head routing").
//
//===----------------------------------------------------------------------===//

namespace tessera {
namespace kernel {

/// A permuted group's call: device arrays the host derives per shape.
struct PermArgs {
  const i64 *heads;     ///< launch slot (blockIdx.y) -> head
  const int *tileStart; ///< query tile x's key tiles: [tileStart[x],
                        ///< tileStart[x + 1]) of tileKey and tileMask
  const int *tileKey;   ///< the key tile (64 permuted key slots)
  const int *tileMask;  ///< its mask (64 u64 rows in masks), -1: full
  const unsigned long long *masks;
  const i64 *rowOf; ///< query slot -> original query row, [nq]
  const i64 *keyOf; ///< key slot -> original key row, [nk]
  /// Head routing (null: a layout, one walk for every (b, y)): table t =
  /// b * gridDim.y + y is routed[4 t, 4 t + 4) = {first slot in rowOf,
  /// active rows, first query tile (of tileStart), inactive rows}; its
  /// active rows, then its inactive ones, from rowOf[first].
  const i64 *routed;
};

/// The rows and tiles of block (blockIdx.y, blockIdx.z)'s table: slots
/// rowOf[row0, row0 + active) are walked, query tile x's key tiles are
/// tileStart[tile0 + x], and the `inactive` slots after them are zeroed.
struct PermTable {
  i64 row0, active, tile0, inactive;
};

__device__ __forceinline__ PermTable permTable(const AttnParams &p,
                                               const PermArgs &a) {
  PermTable t = {0, p.nq, 0, 0};
  if (a.routed) {
    const i64 *r = a.routed + ((i64)blockIdx.z * gridDim.y + blockIdx.y) * 4;
    t.row0 = r[0];
    t.active = r[1];
    t.tile0 = r[2];
    t.inactive = r[3];
  }
  return t;
}

/// O = 0 and LSE = -inf for rows[0, count) of (b, head) (the block's 128
/// threads; an inactive (row, head) pair of head routing).
template <int D>
__device__ __forceinline__ void permZeroRows(const AttnParams &p, i64 b,
                                             i64 head, const i64 *rows,
                                             int count) {
  u16 *o = p.o + b * p.oStrideB + head * p.oStrideH;
  for (int i = (int)threadIdx.x; i < count * D; i += (int)blockDim.x)
    o[rows[i / D] * p.oStrideS + i % D] = 0;
  if (p.lse)
    for (int i = (int)threadIdx.x; i < count; i += (int)blockDim.x)
      p.lse[(b * p.numHeads + head) * p.nq + rows[i]] =
          __int_as_float(0xff800000);
}

/// The walk of one query tile over its listed key tiles (thread 0's
/// cursor; keep() every thread's).
struct PermWalk {
  static constexpr int kRows = kAllGathered;
  const int *key, *mask;
  const unsigned long long *masks;
  const i64 *keyOf;
  i64 nk;
  int n, at;

  __device__ __forceinline__ void begin() { at = 0; }

  __device__ __forceinline__ bool next(DynTile &t) {
    t.count = 0;
    if (at >= n)
      return false;
    const i64 k0 = (i64)key[at] * 64;
    t.k0 = k0;
    t.list = keyOf + k0;
    t.count = (int)minI(64, nk - k0);
    t.flags = mask[at]; // the mask's index, -1: full
    t.mode = t.flags < 0 ? kFull : kPartial;
    t.masked = t.flags >= 0 || t.count < 64;
    ++at;
    return true;
  }

  /// This thread's first row in the tile (its second is + 8).
  struct Lane {
    int row;
  };
  __device__ __forceinline__ Lane lane() const { return {dynRow()}; }

  __device__ __forceinline__ u32 keep(const DynTile &t, const DynRows *,
                                      const Lane &l) const {
    const int c2 = dynC2();
    if (t.flags < 0) // full: the columns below the count
      return columnsKeep(t.count, c2);
    const unsigned long long *m = masks + (i64)t.flags * 64;
    return rowsKeep(m[l.row], m[l.row + 8], c2);
  }
};

/// The attention of query tile blockIdx.x of head heads[blockIdx.y] of
/// batch entry blockIdx.z (128 threads) over its listed key tiles, O and
/// LSE to the original rows; with head routing, the tiles past the
/// table's active ones zero its inactive rows.
template <int E, int D>
__device__ __forceinline__ void permutedAttend(const AttnParams &p,
                                               const PermArgs &a) {
  __shared__ DynTiles<D> sh;
  __shared__ PermWalk ws[1];
  const PermTable tb = permTable(p, a);
  const i64 *rows = a.rowOf + tb.row0;
  DynSlice sl;
  sl.b = blockIdx.z;
  sl.head = a.heads[blockIdx.y];
  sl.kvHead = sl.head / (p.numHeads / p.numKvHeads);
  sl.lay = DynLayout{};
  sl.ws = nullptr;
  const i64 q0 = (i64)blockIdx.x * 64;
  if (q0 >= tb.active) { // head routing's zero tiles, then nothing
    const i64 z0 = q0 - (tb.active + 63) / 64 * 64;
    if (z0 >= 0 && z0 < tb.inactive)
      permZeroRows<D>(p, sl.b, sl.head, rows + tb.active + z0,
                      (int)minI(64, tb.inactive - z0));
    return;
  }
  DynQueries<1> qt;
  qt.q0[0] = q0;
  qt.rows[0] = rows + q0;
  qt.count[0] = (int)minI(64, tb.active - q0);
  qt.live[0] = true;
  if (threadIdx.x == 0) {
    PermWalk &w = ws[0];
    const i64 x = tb.tile0 + (i64)blockIdx.x;
    w.key = a.tileKey + a.tileStart[x];
    w.mask = a.tileMask + a.tileStart[x];
    w.n = a.tileStart[x + 1] - a.tileStart[x];
    w.masks = a.masks;
    w.keyOf = a.keyOf;
    w.nk = p.nk;
    w.begin();
  }
  FlashAcc<D> acc;
  dynAttendWalk<E, D>(p, sl, ws, sh, qt, acc);
  const i64 s = q0 + dynRow(); // the thread's slots s and s + 8
  dynStore<E, D>(acc, p, sl.b, sl.head, s < tb.active ? rows[s] : -1,
                 s + 8 < tb.active ? rows[s + 8] : -1);
}

} // namespace kernel
} // namespace tessera
