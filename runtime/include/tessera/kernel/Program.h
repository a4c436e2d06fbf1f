//===- Program.h - block schedules of attention patterns --------*- C++ -*-===//
//
// The index math of Tessera's block schedules, compiled for the host (the CPU
// executor, the compiler's tests) and for the device (the CUDA kernels, where
// the emitter pastes this file into every bundle). It must therefore stay
// plain C++14: no standard headers, no exceptions, no allocation.
//
// A head's pattern is a *program*: a postfix sequence of primitive nodes over
// the query position p = q + Nk - Nq, the key k and the diagonal offset
// d = k - p. `classifyTile` says, for a tile of query rows [q0, q1) and keys
// [k0, k1), whether no pair, some pairs or every pair is allowed, in O(1)
// per node (O(log n) for listed ranges and blocks): this is the closed-form
// block schedule of L1, its memory independent of the sequence length.
// `allowedPair` is the same function on a 1 x 1 tile.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_PROGRAM_H
#define TESSERA_KERNEL_PROGRAM_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define TESSERA_HD __host__ __device__ __forceinline__
#else
#define TESSERA_HD inline
#endif

namespace tessera {
namespace kernel {

typedef long long i64;

/// Larger than any position or offset (lengths are at most 2^40).
static const i64 kUnbounded = 1LL << 62;

/// Node kinds. Leaves test one axis value against a set; combinators pop
/// their children's results.
enum NodeKind : i64 {
  kAll = 0,        ///< every pair
  kNone = 1,       ///< no pair
  kIntervals = 2,  ///< axis value in sorted disjoint [lo, hi) ranges (data)
  kBand = 3,       ///< axis value in [a, b] (inclusive)
  kPeriodic = 4,   ///< (x - phase) mod period < width; a = period, b = width,
                   ///< c = phase
  kShards = 5,     ///< k in shard (h + offset) mod n of blocks of size b:
                   ///< a = block, b = shards, c = offset
  kGroups = 6,     ///< group(p) == group(k), group(x) = floor((x - s) / a),
                   ///< s = b for heads h >= numHeads / 2, else 0
  kBlocks = 7,     ///< (floor(p / a), k / b) listed; data = CSR rows then
                   ///< columns, c = number of query-block rows
  kUnion = 8,      ///< any of the last `arity` results
  kIntersect = 9,  ///< all of the last `arity` results
  kDifference = 10 ///< first and not second of the last two results
};

/// The axis a leaf looks at.
enum Axis : i64 { kAxisK = 0, kAxisP = 1, kAxisD = 2, kAxisNegD = 3 };

/// One node of a program: 8 words, the same layout on host and device.
struct Node {
  i64 kind;
  i64 axis; ///< for leaves on one axis; the arity for combinators
  i64 a, b, c;
  i64 dataBegin, dataSize; ///< a slice of the program's data array
  i64 reserved;
};

/// The result of a tile test.
enum TileClass : int { kEmpty = 0, kPartial = 1, kFull = 2 };

/// A tile of query rows [q0, q1) and keys [k0, k1) (already clipped to Nq, Nk
/// and non-empty), with the lengths and the head.
struct Tile {
  i64 q0, q1, k0, k1;
  i64 nq, nk;
  i64 head, numHeads;
};

TESSERA_HD i64 floorDiv(i64 a, i64 b) {
  i64 q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

TESSERA_HD i64 floorMod(i64 a, i64 b) {
  i64 r = a % b;
  return r < 0 ? r + b : r;
}

TESSERA_HD i64 minI(i64 a, i64 b) { return a < b ? a : b; }
TESSERA_HD i64 maxI(i64 a, i64 b) { return a > b ? a : b; }

/// The inclusive range [lo, hi] of an axis over a tile. Every integer in it
/// occurs in the tile (tiles are rectangles in (p, k)).
TESSERA_HD void axisRange(const Tile &t, i64 axis, i64 &lo, i64 &hi) {
  i64 shift = t.nk - t.nq;
  i64 p0 = t.q0 + shift, p1 = t.q1 - 1 + shift;
  switch (axis) {
  case kAxisK:
    lo = t.k0;
    hi = t.k1 - 1;
    return;
  case kAxisP:
    lo = p0;
    hi = p1;
    return;
  case kAxisD:
    lo = t.k0 - p1;
    hi = t.k1 - 1 - p0;
    return;
  default: // kAxisNegD
    lo = p0 - (t.k1 - 1);
    hi = p1 - t.k0;
    return;
  }
}

/// [lo, hi] against sorted disjoint half-open ranges (pairs in `r`).
TESSERA_HD int classifyIntervals(const i64 *r, i64 count, i64 lo, i64 hi) {
  // First range whose end lies beyond lo.
  i64 first = 0, last = count;
  while (first < last) {
    i64 mid = (first + last) / 2;
    if (r[2 * mid + 1] <= lo)
      first = mid + 1;
    else
      last = mid;
  }
  if (first == count || r[2 * first] > hi)
    return kEmpty;
  if (r[2 * first] <= lo && r[2 * first + 1] > hi)
    return kFull;
  return kPartial;
}

/// [lo, hi] against [a, b].
TESSERA_HD int classifyBand(i64 a, i64 b, i64 lo, i64 hi) {
  if (hi < a || lo > b)
    return kEmpty;
  if (lo >= a && hi <= b)
    return kFull;
  return kPartial;
}

/// [lo, hi] against {x : (x - phase) mod period < width}, 1 <= width <= period.
TESSERA_HD int classifyPeriodic(i64 period, i64 width, i64 phase, i64 lo,
                                i64 hi) {
  if (width >= period)
    return kFull;
  i64 r = floorMod(lo - phase, period);
  i64 span = hi - lo;
  if (r < width)
    return r + span < width ? kFull : kPartial;
  return r + span < period ? kEmpty : kPartial;
}

/// Number of listed key blocks in [kb0, kb1] of CSR row `row`.
TESSERA_HD i64 countInRow(const i64 *rowStart, const i64 *cols, i64 row,
                          i64 kb0, i64 kb1) {
  i64 begin = rowStart[row], end = rowStart[row + 1];
  // Lower bound of kb0 and upper bound of kb1 in cols[begin, end).
  i64 a = begin, b = end;
  while (a < b) {
    i64 m = (a + b) / 2;
    if (cols[m] < kb0)
      a = m + 1;
    else
      b = m;
  }
  i64 lo = a;
  b = end;
  while (a < b) {
    i64 m = (a + b) / 2;
    if (cols[m] <= kb1)
      a = m + 1;
    else
      b = m;
  }
  return a - lo;
}

TESSERA_HD int classifyLeaf(const Node &n, const i64 *data, const Tile &t) {
  switch (n.kind) {
  case kAll:
    return kFull;
  case kNone:
    return kEmpty;
  case kIntervals: {
    i64 lo, hi;
    axisRange(t, n.axis, lo, hi);
    return classifyIntervals(data + n.dataBegin, n.dataSize / 2, lo, hi);
  }
  case kBand: {
    i64 lo, hi;
    axisRange(t, n.axis, lo, hi);
    return classifyBand(n.a, n.b, lo, hi);
  }
  case kPeriodic: {
    i64 lo, hi;
    axisRange(t, n.axis, lo, hi);
    return classifyPeriodic(n.a, n.b, n.c, lo, hi);
  }
  case kShards: {
    i64 shard = floorMod(t.head + n.c, n.b);
    return classifyPeriodic(n.a * n.b, n.a, shard * n.a, t.k0, t.k1 - 1);
  }
  case kGroups: {
    i64 s = t.head >= t.numHeads / 2 ? n.b : 0;
    i64 shift = t.nk - t.nq;
    i64 gp0 = floorDiv(t.q0 + shift - s, n.a);
    i64 gp1 = floorDiv(t.q1 - 1 + shift - s, n.a);
    i64 gk0 = floorDiv(t.k0 - s, n.a), gk1 = floorDiv(t.k1 - 1 - s, n.a);
    if (gp1 < gk0 || gk1 < gp0)
      return kEmpty;
    if (gp0 == gp1 && gk0 == gk1)
      return kFull;
    return kPartial;
  }
  case kBlocks: {
    i64 shift = t.nk - t.nq;
    i64 qb0 = floorDiv(t.q0 + shift, n.a),
        qb1 = floorDiv(t.q1 - 1 + shift, n.a);
    i64 kb0 = t.k0 / n.b, kb1 = (t.k1 - 1) / n.b;
    i64 rows = n.c;
    const i64 *rowStart = data + n.dataBegin;
    const i64 *cols = rowStart + rows + 1;
    i64 listed = 0;
    for (i64 qb = maxI(qb0, 0); qb <= minI(qb1, rows - 1); ++qb)
      listed += countInRow(rowStart, cols, qb, kb0, kb1);
    if (listed == 0)
      return kEmpty;
    if (qb0 >= 0 && qb1 < rows && listed == (qb1 - qb0 + 1) * (kb1 - kb0 + 1))
      return kFull;
    return kPartial;
  }
  default:
    return kPartial;
  }
}

/// The deepest combinator nesting a program may have.
static const int kMaxStack = 32;

/// Classifies a tile for the program nodes[0, count) (postfix order).
/// FULL: every pair allowed; EMPTY: none; PARTIAL: possibly mixed.
TESSERA_HD int classifyTile(const Node *nodes, i64 count, const i64 *data,
                            const Tile &t) {
  int stack[kMaxStack];
  int top = 0;
  for (i64 i = 0; i < count; ++i) {
    const Node &n = nodes[i];
    if (n.kind < kUnion) {
      stack[top++] = classifyLeaf(n, data, t);
      continue;
    }
    int arity = (int)n.axis;
    int *args = stack + top - arity;
    int r;
    if (n.kind == kUnion) {
      bool anyFull = false, allEmpty = true;
      for (int j = 0; j < arity; ++j) {
        anyFull |= args[j] == kFull;
        allEmpty &= args[j] == kEmpty;
      }
      r = anyFull ? kFull : (allEmpty ? kEmpty : kPartial);
    } else if (n.kind == kIntersect) {
      bool anyEmpty = false, allFull = true;
      for (int j = 0; j < arity; ++j) {
        anyEmpty |= args[j] == kEmpty;
        allFull &= args[j] == kFull;
      }
      r = anyEmpty ? kEmpty : (allFull ? kFull : kPartial);
    } else { // kDifference
      if (args[0] == kEmpty || args[1] == kFull)
        r = kEmpty;
      else if (args[0] == kFull && args[1] == kEmpty)
        r = kFull;
      else
        r = kPartial;
    }
    top -= arity;
    stack[top++] = r;
  }
  return top == 1 ? stack[0] : kPartial;
}

/// Is query row q allowed to see key k? Exact: every leaf is exact on a
/// single pair, and the combinators are exact on exact inputs.
TESSERA_HD bool allowedPair(const Node *nodes, i64 count, const i64 *data,
                            i64 q, i64 k, i64 nq, i64 nk, i64 head,
                            i64 numHeads) {
  Tile t = {q, q + 1, k, k + 1, nq, nk, head, numHeads};
  return classifyTile(nodes, count, data, t) == kFull;
}

/// The inclusive range of keys a query row range [q0, q1) can reach:
/// [kLo, kHi], possibly empty (kLo > kHi). A hull: keys outside it are never
/// allowed, keys inside may or may not be.
TESSERA_HD void keyHull(const Node *nodes, i64 count, const i64 *data, i64 q0,
                        i64 q1, i64 nq, i64 nk, i64 &kLo, i64 &kHi) {
  i64 lo[kMaxStack], hi[kMaxStack];
  int top = 0;
  i64 shift = nk - nq;
  for (i64 i = 0; i < count; ++i) {
    const Node &n = nodes[i];
    i64 l = 0, h = nk - 1;
    if (n.kind == kNone) {
      l = 1;
      h = 0;
    } else if (n.kind == kBand && n.axis == kAxisD) {
      // k - p in [a, b] with p in [p0, p1].
      l = n.a <= -kUnbounded ? 0 : q0 + shift + n.a;
      h = n.b >= kUnbounded ? nk - 1 : q1 - 1 + shift + n.b;
    } else if (n.kind == kBand && n.axis == kAxisK) {
      l = n.a;
      h = n.b;
    } else if (n.kind == kIntervals && n.axis == kAxisK && n.dataSize > 0) {
      l = data[n.dataBegin];
      h = data[n.dataBegin + n.dataSize - 1] - 1;
    } else if (n.kind >= kUnion) {
      int arity = (int)n.axis;
      int base = top - arity;
      if (n.kind == kUnion) {
        l = kUnbounded;
        h = -kUnbounded;
        for (int j = base; j < top; ++j) {
          if (lo[j] > hi[j])
            continue;
          l = minI(l, lo[j]);
          h = maxI(h, hi[j]);
        }
      } else if (n.kind == kIntersect) {
        l = -kUnbounded;
        h = kUnbounded;
        for (int j = base; j < top; ++j) {
          l = maxI(l, lo[j]);
          h = minI(h, hi[j]);
        }
      } else {
        l = lo[base];
        h = hi[base];
      }
      top = base;
    }
    lo[top] = maxI(l, 0);
    hi[top] = minI(h, nk - 1);
    ++top;
  }
  kLo = top == 1 ? lo[0] : 0;
  kHi = top == 1 ? hi[0] : nk - 1;
}

typedef unsigned short u16;

/// Kernel arguments, passed by value. Strides are in elements; head_dim is
/// contiguous.
struct AttnParams {
  const u16 *q;
  const u16 *k;
  const u16 *v;
  u16 *o;
  float *lse; ///< [batch, heads, Nq] or null
  i64 nq, nk;
  i64 qStrideB, qStrideS, qStrideH;
  i64 kStrideB, kStrideS, kStrideH;
  i64 vStrideB, vStrideS, vStrideH;
  i64 oStrideB, oStrideS, oStrideH;
  float scaleLog2; ///< softmax scale times log2(e)
  int numHeads, numKvHeads;
  int vectorLoads; ///< 1: every row start is 16-byte aligned
};

/// One layer's schedule tables: the programs of its head groups and the
/// heads that are computed (skipped heads are not listed).
struct LayerTable {
  const Node *nodes;
  const i64 *data;
  const i64 *groupBegin;   ///< group g's nodes are [groupBegin[g],
                           ///< groupBegin[g + 1])
  const i64 *computedHead; ///< computedHead[i]: the head of launch slot i
  const i64 *headGroup;    ///< headGroup[i]: the group of launch slot i
  i64 numComputed;         ///< launch slots (heads that are not skipped)
  i64 numHeads;
  const i64 *skippedHead; ///< heads that get O = 0, LSE = -inf
  i64 numSkipped;
};

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_PROGRAM_H
