//===- DynamicArgs.h - the arguments and workspace of dynamic kernels -*- C++ -*-===//
//
// What the index-building and index-attention kernels of a dynamic head
// group (DynamicIndex.cuh) take, and where in their workspace each array
// lies. Shared by the host (the runtime sizes and allocates the workspace,
// fills DynArgs from the validated manifest) and the device (the emitter
// pastes this file into bundles with dynamic groups, after Program.h).
// Plain C++14 like Program.h: no standard headers.
//
// The workspace holds one slice per (batch, slot) of the chunk a launch
// covers: slice s = (b - batch0) * numSlots + (slot - slot0), each
// dynLayout().size bytes and 16-byte aligned. A slice's size is O(what the
// index visits): O(lastQ * Nk) scores for vertical-slash, O(qChunk * Nk/B)
// pooled probabilities (qChunk of the Nq/B + 1 query blocks at a time) and
// kept-block lists for block top-k (with tau > 0 also O(Nk) masses of the
// last query block's rows), O(Nq + Nk + clusters * head_dim) for routing;
// never O(Nq * Nk). The runtime splits a group's launches into chunks of
// slots, batch entries and (block top-k) query blocks so that the
// workspace stays within a budget (dynChunkPlan, docs/bundles.md).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_DYNAMICARGS_H
#define TESSERA_KERNEL_DYNAMICARGS_H

namespace tessera {
namespace kernel {

/// kBlockIndex: the caller's block lists (block_index): no index kernel and
/// no workspace; the runtime uploads the caller's CSR (biOffsets, biCols)
/// and one attention kernel walks it.
enum DynFamily : i64 {
  kVerticalSlash = 0,
  kBlockTopk = 1,
  kRouting = 2,
  kBlockIndex = 3
};

/// The 64-row query tiles one block of an attention kernel's sm_90a twin
/// walks (HopperDynamic.cuh: one per consumer warpgroup), and so the twin's
/// grid (x) for the mma.sync kernel's `gx` (one tile a block).
constexpr int kHopperDynParts = 2;
TESSERA_HD i64 dynTwinGrid(i64 gx) {
  return (gx + kHopperDynParts - 1) / kHopperDynParts;
}

/// The parameters of one dynamic group's launches (passed by value).
struct DynArgs {
  unsigned char *ws;      ///< the workspace: the chunk's slices
  const float *centroids; ///< routing with iterations = 0: fp32
                          ///< [numHeads][clusters][headDim]; else null
  i64 family;
  i64 numSlots; ///< slots (heads) of this launch's chunk (grid y)
  i64 slot0;    ///< the chunk's first slot: grid y is slots slot0 + y
  i64 batch0;   ///< the chunk's first batch entry: grid z is batch0 + z
  i64 headDim;
  // vertical_slash
  i64 lastQ, vertical, slash, firstColumns, lastDiagonals;
  // block_topk
  i64 block, topK, minBlocks, maxBlocks;
  float gamma;
  float tau; ///< > 0: FlexPrefill's per-head choice (docs/patterns.md)
  i64 qChunk;  ///< query blocks whose probabilities a slice holds (0: all)
  i64 qChunks; ///< the chunks of query blocks (0 or 1: one)
  i64 qBlock0; ///< this launch's first query block (scores, take, select)
  // routing
  i64 clusters, iterations;
  i64 merge; ///< routing whose pattern allows pairs outside the clusters:
             ///< the segments' rows go to `partial`, and rtRest adds the
             ///< rest of the pattern and merges
  int layer; ///< the layer's position in the bundle
  int group; ///< the dynamic group's index within the layer
  // block_index: its query blocks (block_q) and key blocks (block_k), and
  // the caller's CSR in device memory (tessera.h, API 8; validated on the
  // host): row i of (batch entry b, head h) is biCols[o[i] .. o[i + 1]),
  // o = biOffsets + (b * biHeads + h) * (biStride + 1).
  i64 blockQ, blockK;
  const int *biOffsets, *biCols;
  i64 biHeads, biStride;
  /// The backward's kernels over the index (DynamicBackward.cuh): an int
  /// per block of the chunk's grid, where the unguarded dK / dV pass
  /// stopped for the guarded one (-1: it did every tile); else null.
  int *bwdStop;
};

/// A dynamic group of a layer as the bundle's tables give it to the
/// kernels: its heads (launch slot -> head) and the generated code of its
/// pattern with the dynamic leaf read as dense (`with`) and as skip
/// (`without`): allowed = (leaf and with) or (not leaf and without).
struct DynGroupTable {
  const i64 *heads;
  i64 numHeads;
  i64 withId, withoutId;
};

TESSERA_HD i64 alignUp16(i64 x) { return (x + 15) / 16 * 16; }
TESSERA_HD i64 dynCeilDiv(i64 a, i64 b) { return (a + b - 1) / b; }

/// Offsets (bytes) of one slice's arrays, and the slice's size.
struct DynLayout {
  // vertical_slash: L = min(lastQ, Nq) score rows, then per key column /
  // diagonal (i = -d) sums, the kept columns (ascending), diagonals
  // (ascending d), diagonal groups (pairs dFirst, dLast), three counts, and
  // the kept columns and diagonals as bitmaps (u32 words, vsBitmapWords;
  // the diagonals' bit j is i = Nk - 1 - j).
  i64 scores, colSum, diagSum, cols, diags, groups, counts, colBits, diagBits;
  // block_topk: pooled Q [tq][D], pooled K [tk][D], probabilities of the
  // chunk's query blocks [btProbRows][tk], per query block its kept key
  // blocks (capacity cap) and their count.
  // With tau > 0: per row of the last query block its column and slash
  // masses [rows][2 tk], their means [2 tk], the kept columns' and slash
  // groups' flags (int [2 tk]), and the choice (i64 mode, float distance).
  i64 pooledQ, pooledK, probs, lists, listCount, cap;
  i64 flexRows, flexMass, flexFlags, flexMode;
  // routing: centroids [C][D], new centroids, clusters of queries and keys,
  // per-cluster query/key counts and segment starts (C + 1), query-tile
  // starts (C + 1), permutations (segment order -> position).
  i64 cent, qCluster, kCluster, qStart, kStart, tileStart, qCursor, kCursor,
      permQ, permK, partial;
  i64 size;
};

TESSERA_HD i64 vsRows(const DynArgs &a, i64 nq) { return minI(a.lastQ, nq); }
TESSERA_HD i64 vsColCap(const DynArgs &a, i64 nk) {
  return minI(maxI(a.vertical, a.firstColumns), nk);
}
TESSERA_HD i64 vsDiagCap(const DynArgs &a, i64 nk) {
  return minI(maxI(a.slash, a.lastDiagonals), nk);
}
/// The u32 words of a vertical-slash bitmap: Nk bits, whole 128-bit chunks
/// (vsSelect writes one chunk per pass of its 128 threads).
TESSERA_HD i64 vsBitmapWords(i64 nk) { return dynCeilDiv(nk, 128) * 4; }
/// Block top-k's query blocks are blocks of positions p = q + Nk - Nq
/// (docs/patterns.md), like every pattern that looks at a query: index
/// entry i (0 <= i < btQueryBlocks) is position block btFirstBlock + i and
/// holds rows [btRowBegin, btRowEnd); the first and last may be partial.
TESSERA_HD i64 btFirstBlock(i64 block, i64 nq, i64 nk) {
  return floorDiv(nk - nq, block);
}
TESSERA_HD i64 btQueryBlocks(i64 block, i64 nq, i64 nk) {
  return floorDiv(nk - 1, block) - btFirstBlock(block, nq, nk) + 1;
}
TESSERA_HD i64 btRowBegin(i64 block, i64 nq, i64 nk, i64 i) {
  return maxI((btFirstBlock(block, nq, nk) + i) * block - (nk - nq), 0);
}
TESSERA_HD i64 btRowEnd(i64 block, i64 nq, i64 nk, i64 i) {
  return minI((btFirstBlock(block, nq, nk) + i + 1) * block - (nk - nq), nq);
}
/// A kept list's capacity: top_k or max_blocks (else every key block);
/// with tau > 0 the vertical-slash-like lists hold up to that many
/// columns and two key blocks per slash group.
TESSERA_HD i64 btCap(const DynArgs &a, i64 tk) {
  i64 cap = a.topK > 0 ? a.topK : (a.maxBlocks > 0 ? a.maxBlocks : tk);
  cap = minI(maxI(cap, 1), tk);
  return a.tau > 0 ? minI(3 * cap, tk) : cap;
}
/// The query blocks whose probabilities a slice holds at once.
TESSERA_HD i64 btProbRows(const DynArgs &a, i64 nq, i64 nk) {
  const i64 tq = btQueryBlocks(a.block, nq, nk);
  return a.qChunk > 0 ? minI(a.qChunk, tq) : tq;
}
/// With tau > 0: the rows of the last query block (position Nk - 1's).
TESSERA_HD i64 btLastRows(i64 block, i64 nq, i64 nk) {
  const i64 last = btQueryBlocks(block, nq, nk) - 1;
  return btRowEnd(block, nq, nk, last) - btRowBegin(block, nq, nk, last);
}

/// Offsets and size of a slice. Products and sums saturate at kUnbounded
/// (2^62), so that parameters up to 2^40 never overflow: a size of
/// kUnbounded means "does not fit" (the runtime refuses it).
TESSERA_HD DynLayout dynLayout(const DynArgs &a, i64 nq, i64 nk) {
  DynLayout l = {};
  i64 at = 0;
  auto take = [&at](i64 bytes) {
    i64 here = at;
    at = bytes >= kUnbounded - at ? kUnbounded : minI(alignUp16(at + bytes),
                                                      kUnbounded);
    return here;
  };
  auto mul3 = [](i64 x, i64 y, i64 z) { return mulSat(mulSat(x, y), z); };
  if (a.family == kVerticalSlash) {
    l.scores = take(mul3(4, vsRows(a, nq), nk));
    l.colSum = take(4 * nk);
    l.diagSum = take(4 * nk);
    l.cols = take(8 * vsColCap(a, nk));
    l.diags = take(8 * vsDiagCap(a, nk));
    l.groups = take(16 * vsDiagCap(a, nk));
    l.counts = take(8 * 4);
    l.colBits = take(4 * vsBitmapWords(nk));
    l.diagBits = take(4 * vsBitmapWords(nk));
  } else if (a.family == kBlockTopk) {
    i64 tq = btQueryBlocks(a.block, nq, nk), tk = dynCeilDiv(nk, a.block);
    l.cap = btCap(a, tk);
    l.pooledQ = take(mul3(4, tq, a.headDim));
    l.pooledK = take(mul3(4, tk, a.headDim));
    l.probs = take(mul3(4, btProbRows(a, nq, nk), tk));
    l.lists = take(mul3(8, tq, l.cap));
    l.listCount = take(8 * tq);
    if (a.tau > 0) {
      l.flexRows = take(mul3(8, btLastRows(a.block, nq, nk), tk));
      l.flexMass = take(mulSat(8, tk));
      l.flexFlags = take(mulSat(8, tk));
      l.flexMode = take(16);
    }
  } else if (a.family == kBlockIndex) {
    // Nothing: the caller's lists are the index.
  } else {
    i64 c = a.clusters;
    l.cent = take(4 * c * a.headDim);
    l.qCluster = take(4 * nq);
    l.kCluster = take(4 * nk);
    l.qStart = take(8 * (c + 1));
    l.kStart = take(8 * (c + 1));
    l.tileStart = take(8 * (c + 1));
    l.qCursor = take(8 * c);
    l.kCursor = take(8 * c);
    l.permQ = take(8 * nq);
    l.permK = take(8 * nk);
    // Merging: the segments' normalised rows and their LSE, fp32.
    l.partial = a.merge ? take(mul3(4, nq, a.headDim + 1)) : 0;
  }
  l.size = at;
  return l;
}

/// Query tiles of the routing attention launch (grid x): at most one
/// partial tile per cluster beyond ceil(Nq / 64).
TESSERA_HD i64 routingTiles(const DynArgs &a, i64 nq) {
  return dynCeilDiv(nq, 64) + minI(a.clusters, nq);
}

/// The launches of a dynamic group's chunk, in order (grid y: the chunk's
/// slots, z: its batch entries; 128 threads): vertical_slash scores,
/// softmax, sums, select, attend; block_index attend (one launch);
/// block_topk pool, then per chunk of query blocks scores, (with tau > 0,
/// in the chunk holding the last query block, which goes first: flex rows,
/// flex mode,) take, select, then attend;
/// routing seed, (assign keys, update) per k-means iteration, assign keys,
/// assign queries, sort, attend, and rest when merging.
TESSERA_HD i64 dynLaunchCount(const DynArgs &a) {
  if (a.family == kBlockIndex)
    return 1; // the caller's index: nothing to build, the attention only
  if (a.family == kBlockTopk) {
    const i64 chunks = a.qChunks > 1 ? a.qChunks : 1;
    return (a.tau > 0 ? 4 : 2) + 3 * chunks;
  }
  return a.family == kRouting ? 5 + (a.merge ? 1 : 0) + 2 * a.iterations : 5;
}

/// Launch i: `kernel` indexes the group's kernel list (the manifest's
/// "kernels", in the order of dynamicKernels), gx is grid x, qBlock0 the
/// first query block of a block top-k launch (DynArgs::qBlock0; 0 for the
/// others).
TESSERA_HD void dynLaunch(const DynArgs &a, i64 nq, i64 nk, i64 i, i64 &kernel,
                          i64 &gx, i64 &qBlock0) {
  qBlock0 = 0;
  if (a.family == kBlockIndex) {
    kernel = 0;
    gx = dynCeilDiv(nq, 64);
    return;
  }
  if (a.family == kVerticalSlash) {
    const i64 grids[5] = {dynCeilDiv(nk, 128), vsRows(a, nq),
                          dynCeilDiv(nk, 128), 2, dynCeilDiv(nq, 64)};
    kernel = i;
    gx = grids[i];
    return;
  }
  if (a.family == kBlockTopk) {
    const i64 tq = btQueryBlocks(a.block, nq, nk),
              tk = dynCeilDiv(nk, a.block);
    const bool flex = a.tau > 0;
    const i64 chunks = a.qChunks > 1 ? a.qChunks : 1;
    const i64 size = a.qChunk > 0 ? a.qChunk : tq;
    // Kernels: pool 0, scores 1, (flex rows 2, flex mode 3,) take, select,
    // attend.
    const i64 take = flex ? 4 : 2;
    if (i == 0) {
      kernel = 0;
      gx = tq + tk;
      return;
    }
    if (i == dynLaunchCount(a) - 1) {
      kernel = take + 2;
      gx = dynCeilDiv(nq, 64);
      return;
    }
    // The steps of the first chunk processed (the last one, which holds
    // the last query block that FlexPrefill's choice reads): scores,
    // (flex rows, flex mode,) take, select; then 3 per other chunk.
    const i64 first = flex ? 5 : 3;
    i64 chunk, step;
    if (i <= first) {
      chunk = chunks - 1;
      step = i - 1;
    } else {
      chunk = (i - first - 1) / 3;
      step = (i - first - 1) % 3;
      step = step == 0 ? 0 : step + (flex ? 2 : 0);
    }
    qBlock0 = chunk * size;
    const i64 rows = minI(tq, qBlock0 + size) - qBlock0;
    kernel = 1 + step;
    if (flex && kernel == 2)
      gx = btLastRows(a.block, nq, nk);
    else if (flex && kernel == 3)
      gx = 1;
    else
      gx = rows;
    return;
  }
  // Routing: kernels seed 0, assign keys 1, update 2, assign queries 3,
  // sort 4, attend 5, and when merging rest 6.
  const i64 iter = 2 * a.iterations;
  if (i == 0) {
    kernel = 0;
    gx = a.clusters;
  } else if (i <= iter) {
    kernel = (i % 2) ? 1 : 2;
    gx = kernel == 1 ? dynCeilDiv(nk, 128) : a.clusters;
  } else if (i == iter + 1) {
    kernel = 1;
    gx = dynCeilDiv(nk, 128);
  } else if (i == iter + 2) {
    kernel = 3;
    gx = dynCeilDiv(nq, 128);
  } else if (i == iter + 3) {
    kernel = 4;
    gx = 2;
  } else if (i == iter + 4) {
    kernel = 5;
    gx = routingTiles(a, nq);
  } else {
    kernel = 6;
    gx = dynCeilDiv(nq, 64);
  }
}

/// How a dynamic group's launches are split so that its workspace stays
/// within a budget: chunks of `slots` slots x `batches` batch entries, each
/// (batch, slot) a slice of sliceBytes; block top-k whose one slice does
/// not fit holds the probabilities of qChunk query blocks at a time
/// (qChunks chunks of them, in turn). bytes = slots x batches x sliceBytes
/// is the workspace to allocate (reused by every chunk, in stream order).
struct DynChunks {
  i64 slots, batches, qChunk, qChunks, sliceBytes, bytes;
};

/// The bytes of one slice (block top-k: holding qChunk query blocks'
/// probabilities, 0: all of them); kUnbounded when it does not fit in 2^62.
TESSERA_HD i64 dynSliceBytes(DynArgs a, i64 nq, i64 nk, i64 qChunk) {
  a.qChunk = qChunk;
  return dynLayout(a, nq, nk).size;
}

/// The least workspace a group needs at Nq, Nk: one slice, of one query
/// block's probabilities for block top-k.
TESSERA_HD i64 dynMinWorkspace(const DynArgs &a, i64 nq, i64 nk) {
  return dynSliceBytes(a, nq, nk, a.family == kBlockTopk ? 1 : 0);
}

/// The chunks of a group of `slots` slots over `batch` batch entries whose
/// workspace is at most `budget` bytes: as many whole slices as fit
/// (S = full slice): floor(budget / S) slices, every batch entry of as
/// many slots as fit, else one slot of as many batch entries as fit; when
/// not even one slice fits, block top-k takes the most query blocks q with
/// slice(q) <= budget. false where even dynMinWorkspace does not fit.
TESSERA_HD bool dynChunkPlan(const DynArgs &a, i64 nq, i64 nk, i64 slots,
                             i64 batch, i64 budget, DynChunks &c) {
  c.slots = c.batches = c.qChunks = 1;
  c.qChunk = 0;
  c.sliceBytes = dynSliceBytes(a, nq, nk, 0);
  if (c.sliceBytes == 0) { // block_index: no workspace, one chunk
    c.slots = slots;
    c.batches = batch;
  } else if (c.sliceBytes < kUnbounded && c.sliceBytes <= budget) {
    const i64 fit = budget / c.sliceBytes; // whole slices, >= 1
    if (fit >= mulSat(slots, batch)) {
      c.slots = slots;
      c.batches = batch;
    } else if (fit >= batch) {
      c.slots = fit / batch;
      c.batches = batch;
    } else {
      c.batches = fit;
    }
  } else {
    if (a.family != kBlockTopk || dynMinWorkspace(a, nq, nk) > budget)
      return false;
    // The slice grows with its query blocks: the largest q that fits.
    i64 lo = 1, hi = btQueryBlocks(a.block, nq, nk);
    while (lo < hi) {
      const i64 mid = lo + (hi - lo + 1) / 2;
      if (dynSliceBytes(a, nq, nk, mid) <= budget)
        lo = mid;
      else
        hi = mid - 1;
    }
    c.qChunk = lo;
    c.qChunks = dynCeilDiv(btQueryBlocks(a.block, nq, nk), lo);
    c.sliceBytes = dynSliceBytes(a, nq, nk, lo);
  }
  c.bytes = c.slots * c.batches * c.sliceBytes; // <= budget
  return true;
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_DYNAMICARGS_H
