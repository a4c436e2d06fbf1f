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
// Emitted into bundles whose layers have layouts (tessera_perm_attend_*)
// and launched by the runtime on dense CUDA calls; run under the emulator
// by test/Unit/PermutedEmulatorTest.cpp and FakeDriverPermutedTest.cpp
// (docs/bundles.md, "Layouts").
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
};

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
/// LSE to the original rows.
template <int E, int D>
__device__ __forceinline__ void permutedAttend(const AttnParams &p,
                                               const PermArgs &a) {
  __shared__ DynTiles<D> sh;
  __shared__ PermWalk ws[1];
  DynSlice sl;
  sl.b = blockIdx.z;
  sl.head = a.heads[blockIdx.y];
  sl.kvHead = sl.head / (p.numHeads / p.numKvHeads);
  sl.lay = DynLayout{};
  sl.ws = nullptr;
  const i64 q0 = (i64)blockIdx.x * 64;
  DynQueries<1> qt;
  qt.q0[0] = q0;
  qt.rows[0] = a.rowOf + q0;
  qt.count[0] = (int)minI(64, p.nq - q0);
  qt.live[0] = q0 < p.nq;
  if (!qt.live[0])
    return;
  if (threadIdx.x == 0) {
    PermWalk &w = ws[0];
    const int x = (int)blockIdx.x;
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
  dynStore<E, D>(acc, p, sl.b, sl.head, s < p.nq ? a.rowOf[s] : -1,
                 s + 8 < p.nq ? a.rowOf[s + 8] : -1);
}

} // namespace kernel
} // namespace tessera
