//===- DynamicArgs.h - the arguments and workspace of dynamic kernels -*- C++ -*-===//
//
// What the index-building and index-attention kernels of a dynamic head
// group (DynamicIndex.cuh) take, and where in their workspace each array
// lies. Shared by the host (the runtime sizes and allocates the workspace,
// fills DynArgs from the validated manifest) and the device (the emitter
// pastes this file into bundles with dynamic groups, after Program.h).
// Plain C++14 like Program.h: no standard headers.
//
// The workspace holds one slice per (batch, slot of the group): slice
// s = b * numSlots + slot, each sliceBytes() long and 16-byte aligned. Its
// size is O(what the index visits): O(lastQ * Nk) scores for vertical-slash,
// O((Nq/B + 1) * Nk/B) pooled probabilities and kept-block lists for block
// top-k (with tau > 0 also O(Nk) masses of the last query block's rows),
// O(Nq + Nk + clusters * head_dim) for routing; never O(Nq * Nk).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_DYNAMICARGS_H
#define TESSERA_KERNEL_DYNAMICARGS_H

namespace tessera {
namespace kernel {

enum DynFamily : i64 { kVerticalSlash = 0, kBlockTopk = 1, kRouting = 2 };

/// The parameters of one dynamic group's launches (passed by value).
struct DynArgs {
  unsigned char *ws;      ///< the workspace: numSlots * batch slices
  const float *centroids; ///< routing with iterations = 0: fp32
                          ///< [numHeads][clusters][headDim]; else null
  i64 family;
  i64 numSlots; ///< heads of the group (grid y)
  i64 headDim;
  // vertical_slash
  i64 lastQ, vertical, slash, firstColumns, lastDiagonals;
  // block_topk
  i64 block, topK, minBlocks, maxBlocks;
  float gamma;
  float tau; ///< > 0: FlexPrefill's per-head choice (docs/patterns.md)
  // routing
  i64 clusters, iterations;
  i64 merge; ///< routing whose pattern allows pairs outside the clusters:
             ///< the segments' rows go to `partial`, and rtRest adds the
             ///< rest of the pattern and merges
  int layer; ///< the layer's position in the bundle
  int group; ///< the dynamic group's index within the layer
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
  // block_topk: pooled Q [tq][D], pooled K [tk][D], probabilities [tq][tk],
  // per query block its kept key blocks (capacity cap) and their count.
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
    l.probs = take(mul3(4, tq, tk));
    l.lists = take(mul3(8, tq, l.cap));
    l.listCount = take(8 * tq);
    if (a.tau > 0) {
      l.flexRows = take(mul3(8, btLastRows(a.block, nq, nk), tk));
      l.flexMass = take(mulSat(8, tk));
      l.flexFlags = take(mulSat(8, tk));
      l.flexMode = take(16);
    }
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

/// The launches of a dynamic group, in order (grid y: the group's heads,
/// z: the batch; 128 threads): vertical_slash scores, softmax, sums,
/// select, attend; block_topk pool, scores, (with tau > 0: flex rows, flex
/// mode,) take, select, attend; routing
/// seed, (assign keys, update) per k-means iteration, assign keys, assign
/// queries, sort, attend, and rest when merging.
TESSERA_HD i64 dynLaunchCount(const DynArgs &a) {
  if (a.family == kBlockTopk)
    return a.tau > 0 ? 7 : 5;
  return a.family == kRouting ? 5 + (a.merge ? 1 : 0) + 2 * a.iterations : 5;
}

/// Launch i: `kernel` indexes the group's kernel list (the manifest's
/// "kernels", in the order of dynamicKernels), gx is grid x.
TESSERA_HD void dynLaunch(const DynArgs &a, i64 nq, i64 nk, i64 i,
                          i64 &kernel, i64 &gx) {
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
    const i64 grids[5] = {tq + tk, tq, tq, tq, dynCeilDiv(nq, 64)};
    // tau > 0: flex rows (one block per row of the last query block) and
    // flex mode (one block) after the scores, kernels 2 and 3.
    const i64 flex[7] = {tq + tk, tq, btLastRows(a.block, nq, nk), 1, tq, tq,
                         dynCeilDiv(nq, 64)};
    kernel = i;
    gx = a.tau > 0 ? flex[i] : grids[i];
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

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_DYNAMICARGS_H
