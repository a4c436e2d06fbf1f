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
#define TESSERA_CONST __device__ const
#else
#define TESSERA_HD inline
#define TESSERA_CONST static const
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
  kBlocks = 7,     ///< (floor(p / a), k / b) listed; data = the c listed
                   ///< query-block ids (sorted), their CSR row starts (c + 1),
                   ///< then the columns
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

/// a * b clamped to [-kUnbounded, kUnbounded] (operands within that range).
TESSERA_HD i64 mulSat(i64 a, i64 b) {
  if (a == 0 || b == 0)
    return 0;
  i64 ma = a < 0 ? -a : a, mb = b < 0 ? -b : b;
  if (ma > kUnbounded / mb)
    return (a < 0) != (b < 0) ? -kUnbounded : kUnbounded;
  return a * b;
}

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

/// The first of the sorted disjoint half-open ranges (pairs in `r`) whose
/// end lies beyond x, or `count`.
TESSERA_HD i64 firstRangeEndingAfter(const i64 *r, i64 count, i64 x) {
  i64 first = 0, last = count;
  while (first < last) {
    i64 mid = (first + last) / 2;
    if (r[2 * mid + 1] <= x)
      first = mid + 1;
    else
      last = mid;
  }
  return first;
}

/// [lo, hi] against sorted disjoint half-open ranges (pairs in `r`).
TESSERA_HD int classifyIntervals(const i64 *r, i64 count, i64 lo, i64 hi) {
  i64 first = firstRangeEndingAfter(r, count, lo);
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

/// The listed rows [first, last) of a block list whose ids (sorted, distinct
/// query-block indices, `rows` of them) lie in [qb0, qb1].
TESSERA_HD void listedRows(const i64 *ids, i64 rows, i64 qb0, i64 qb1,
                           i64 &first, i64 &last) {
  i64 a = 0, b = rows;
  while (a < b) {
    i64 m = (a + b) / 2;
    if (ids[m] < qb0)
      a = m + 1;
    else
      b = m;
  }
  first = a;
  b = rows;
  while (a < b) {
    i64 m = (a + b) / 2;
    if (ids[m] <= qb1)
      a = m + 1;
    else
      b = m;
  }
  last = a;
}

/// The keys of shard (head + offset) mod shards of blocks of `block` keys:
/// those with (k - phase) mod period < block, period = block * shards,
/// phase = shard * block. Both products may pass 2^62 (the factors are up to
/// 2^41): they are saturated, and a saturated period (>= kUnbounded) means
/// the shard's keys are the one block [phase, phase + block - 1], since the
/// next period starts past every key (< 2^41) and the previous one ends
/// before key 0. A saturated phase is then past every key too. (Taking a
/// saturated phase modulo a saturated period is not exact: 2^62 mod 2^62
/// is 0.)
TESSERA_HD void shardKeys(i64 block, i64 shards, i64 offset, i64 head,
                          i64 &period, i64 &phase) {
  period = mulSat(block, shards);
  phase = mulSat(floorMod(head + offset, shards), block);
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
    i64 period, phase;
    shardKeys(n.a, n.b, n.c, t.head, period, phase);
    if (period >= kUnbounded)
      return classifyBand(phase, phase + n.a - 1, t.k0, t.k1 - 1);
    return classifyPeriodic(period, n.a, phase, t.k0, t.k1 - 1);
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
    const i64 *ids = data + n.dataBegin;
    const i64 *rowStart = ids + n.c;
    const i64 *cols = rowStart + n.c + 1;
    i64 first, last;
    listedRows(ids, n.c, qb0, qb1, first, last);
    i64 listed = 0;
    for (i64 r = first; r < last; ++r)
      listed += countInRow(rowStart, cols, r, kb0, kb1);
    if (listed == 0)
      return kEmpty;
    if (last - first == qb1 - qb0 + 1 &&
        listed == (qb1 - qb0 + 1) * (kb1 - kb0 + 1))
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

//===----------------------------------------------------------------------===//
// Runs: the key blocks a query block visits, in closed form
//===----------------------------------------------------------------------===//
//
// A query block's schedule is a sequence of runs of key blocks [lo, hi], each
// of one class (every tile of a FULL run needs no mask; every tile of a
// PARTIAL run holds allowed and masked pairs, or at least may). A run source
// is a function `runFrom(kb)`: the first run whose blocks are at or after key
// block kb (clipped to start at kb at the earliest), or no run. Walking
// `kb = run.hi + 1` visits every non-empty tile once, in increasing order, at
// a cost of O(runs): empty tiles are never looked at. The leaves below are
// closed forms (O(1), O(log n) for listed data); the combinators merge their
// children's runs with the same class algebra as classifyTile, so the tiles a
// walk visits and their classes are exactly those classifyTile gives.

/// Key blocks [lo, hi] of one class (kFull or kPartial); no run when lo > hi.
struct Run {
  i64 lo, hi;
  int cls;
};

TESSERA_HD Run noRun() {
  Run r = {1, 0, kEmpty};
  return r;
}

TESSERA_HD Run makeRun(i64 lo, i64 hi, int cls) {
  Run r = {lo, hi, cls};
  return r;
}

TESSERA_HD bool isRun(const Run &r) { return r.lo <= r.hi; }

/// The query block a walk serves: rows [q0, q1), their aligned positions
/// p0 = q0 + Nk - Nq and p1 = q1 - 1 + Nk - Nq, the key block size and the
/// number of key blocks.
struct RunCtx {
  i64 q0, q1, p0, p1;
  i64 nq, nk, bk, nkb;
  i64 head, numHeads;
};

TESSERA_HD RunCtx makeRunCtx(i64 q0, i64 q1, i64 nq, i64 nk, i64 bk, i64 head,
                             i64 numHeads) {
  RunCtx c = {q0,          q1, q0 + nk - nq, q1 - 1 + nk - nq, nq, nk, bk,
              (nk + bk - 1) / bk, head, numHeads};
  return c;
}

TESSERA_HD i64 ceilDiv(i64 a, i64 b) { return -floorDiv(-a, b); }


/// A key-interval leaf: V = [vlo, vhi] are the keys some row of the block
/// may see (every one of them is seen by at least one row), F = [flo, fhi]
/// (inside V) the keys every row sees.
TESSERA_HD Run intervalRun(const RunCtx &c, i64 kb, i64 vlo, i64 vhi, i64 flo,
                           i64 fhi) {
  vlo = maxI(vlo, 0);
  vhi = minI(vhi, c.nk - 1);
  if (vlo > vhi)
    return noRun();
  i64 b0 = maxI(kb, vlo / c.bk), bEnd = vhi / c.bk;
  if (b0 > bEnd)
    return noRun();
  flo = maxI(flo, 0);
  fhi = minI(fhi, c.nk - 1);
  if (flo <= fhi) {
    // A block is full when its keys (clipped to Nk) lie in F.
    i64 ffb = ceilDiv(flo, c.bk);
    i64 flb = fhi == c.nk - 1 ? fhi / c.bk : (fhi + 1) / c.bk - 1;
    if (ffb <= flb) {
      if (b0 < ffb)
        return makeRun(b0, minI(ffb - 1, bEnd), kPartial);
      if (b0 <= flb)
        return makeRun(b0, flb, kFull);
    }
  }
  return makeRun(b0, bEnd, kPartial);
}

/// Every key block from kb on, of class `cls` (kEmpty: no run).
TESSERA_HD Run allRun(const RunCtx &c, i64 kb, int cls) {
  if (cls == kEmpty || kb >= c.nkb)
    return noRun();
  return makeRun(maxI(kb, 0), c.nkb - 1, cls);
}

/// Keys in [a, b].
TESSERA_HD Run bandKRun(const RunCtx &c, i64 kb, i64 a, i64 b) {
  return intervalRun(c, kb, a, b, a, b);
}

/// Offsets d = k - p in [a, b].
TESSERA_HD Run bandDRun(const RunCtx &c, i64 kb, i64 a, i64 b) {
  return intervalRun(c, kb, c.p0 + a, c.p1 + b, c.p1 + a, c.p0 + b);
}

/// Row-only leaves: the class of the block's rows for every key block.
TESSERA_HD Run bandPRun(const RunCtx &c, i64 kb, i64 a, i64 b) {
  return allRun(c, kb, classifyBand(a, b, c.p0, c.p1));
}

/// Keys in sorted disjoint half-open ranges r[0, 2 * count).
TESSERA_HD Run intervalsKRun(const RunCtx &c, i64 kb, const i64 *r,
                             i64 count) {
  i64 first = firstRangeEndingAfter(r, count, mulSat(kb, c.bk));
  if (first == count)
    return noRun();
  i64 lo = r[2 * first], hi = r[2 * first + 1] - 1;
  return intervalRun(c, kb, lo, hi, lo, hi);
}

/// Offsets in sorted disjoint half-open ranges r[0, 2 * count).
TESSERA_HD Run intervalsDRun(const RunCtx &c, i64 kb, const i64 *r,
                             i64 count) {
  // The first band whose last key (p1 + its last offset) reaches block kb.
  i64 first = firstRangeEndingAfter(r, count, mulSat(kb, c.bk) - c.p1);
  if (first == count)
    return noRun();
  return bandDRun(c, kb, r[2 * first], r[2 * first + 1] - 1);
}

TESSERA_HD Run intervalsPRun(const RunCtx &c, i64 kb, const i64 *r,
                             i64 count) {
  return allRun(c, kb, classifyIntervals(r, count, c.p0, c.p1));
}

/// Keys with (k - phase) mod period < width.
TESSERA_HD Run periodicKRun(const RunCtx &c, i64 kb, i64 period, i64 width,
                            i64 phase) {
  if (width >= period)
    return allRun(c, kb, kFull);
  i64 j = ceilDiv(mulSat(kb, c.bk) - phase - width + 1, period);
  i64 lo = phase + mulSat(j, period);
  return intervalRun(c, kb, lo, lo + width - 1, lo, lo + width - 1);
}

/// Offsets with (d - phase) mod period < width.
TESSERA_HD Run periodicDRun(const RunCtx &c, i64 kb, i64 period, i64 width,
                            i64 phase) {
  if (width >= period)
    return allRun(c, kb, kFull);
  i64 j = ceilDiv(mulSat(kb, c.bk) - c.p1 - phase - width + 1, period);
  i64 lo = phase + mulSat(j, period);
  return bandDRun(c, kb, lo, lo + width - 1);
}

TESSERA_HD Run periodicPRun(const RunCtx &c, i64 kb, i64 period, i64 width,
                            i64 phase) {
  return allRun(c, kb, classifyPeriodic(period, width, phase, c.p0, c.p1));
}

/// Keys in shard (head + offset) mod shards of blocks of `block` keys.
TESSERA_HD Run shardsRun(const RunCtx &c, i64 kb, i64 block, i64 shards,
                         i64 offset) {
  i64 period, phase;
  shardKeys(block, shards, offset, c.head, period, phase);
  if (period >= kUnbounded)
    return bandKRun(c, kb, phase, phase + block - 1);
  return periodicKRun(c, kb, period, block, phase);
}

/// group(p) == group(k), group(x) = floor((x - s) / size), s = shift for the
/// upper half of the heads. The block's rows span groups [g0, g1]: they see
/// every key of those groups, and all of them see a key only when g0 == g1.
TESSERA_HD Run groupsRun(const RunCtx &c, i64 kb, i64 size, i64 shift) {
  i64 s = c.head >= c.numHeads / 2 ? shift : 0;
  i64 g0 = floorDiv(c.p0 - s, size), g1 = floorDiv(c.p1 - s, size);
  i64 lo = mulSat(g0, size) + s, hi = mulSat(g1, size) + s + size - 1;
  if (g0 == g1)
    return intervalRun(c, kb, lo, hi, lo, hi);
  return intervalRun(c, kb, lo, hi, 1, 0);
}

/// Listed (query block, key block) pairs of blockQ x blockK: `rows` listed
/// query-block ids, their CSR row starts, then the columns (the kBlocks data
/// layout). One run per visited tile.
TESSERA_HD Run blocksRun(const RunCtx &c, i64 kb, i64 blockQ, i64 blockK,
                         i64 rows, const i64 *ids) {
  const i64 *rowStart = ids + rows;
  const i64 *cols = rowStart + rows + 1;
  i64 first, last;
  listedRows(ids, rows, floorDiv(c.p0, blockQ), floorDiv(c.p1, blockQ), first,
             last);
  i64 from = mulSat(kb, c.bk), minCol = from / blockK;
  i64 best = kUnbounded;
  for (i64 row = first; row < last; ++row) {
    i64 a = rowStart[row], b = rowStart[row + 1];
    while (a < b) {
      i64 m = (a + b) / 2;
      if (cols[m] < minCol)
        a = m + 1;
      else
        b = m;
    }
    if (a < rowStart[row + 1])
      best = minI(best, maxI(from, mulSat(cols[a], blockK)));
  }
  if (best >= c.nk)
    return noRun();
  i64 b0 = best / c.bk;
  Node n = {kBlocks, kAxisP, blockQ, blockK, rows, 0, 0, 0};
  Tile t = {c.q0, c.q1, b0 * c.bk, minI(b0 * c.bk + c.bk, c.nk),
            c.nq, c.nk, c.head, c.numHeads};
  return makeRun(b0, b0, classifyLeaf(n, ids, t));
}

/// The union of two runs that start at or after the same block.
TESSERA_HD Run unionOf(Run a, Run b) {
  if (!isRun(a))
    return b;
  if (!isRun(b))
    return a;
  if (b.lo < a.lo) {
    Run t = a;
    a = b;
    b = t;
  }
  if (a.lo < b.lo) // a alone up to b.lo; a full run covers b where they meet
    return a.cls == kFull ? a : makeRun(a.lo, minI(a.hi, b.lo - 1), kPartial);
  if (a.cls == kFull && b.cls == kFull)
    return makeRun(a.lo, maxI(a.hi, b.hi), kFull);
  if (a.cls == kFull)
    return a;
  if (b.cls == kFull)
    return b;
  return makeRun(a.lo, minI(a.hi, b.hi), kPartial);
}

/// The intersection of two run sources (callables kb -> Run).
template <class A, class B>
TESSERA_HD Run intersectRuns(const A &a, const B &b, i64 kb) {
  for (i64 x = kb;;) {
    Run ra = a(x);
    if (!isRun(ra))
      return ra;
    Run rb = b(ra.lo);
    if (!isRun(rb))
      return rb;
    if (rb.lo == ra.lo)
      return makeRun(ra.lo, minI(ra.hi, rb.hi),
                     ra.cls < rb.cls ? ra.cls : rb.cls);
    x = rb.lo; // nothing of b in [ra.lo, rb.lo)
  }
}

/// a minus b, for two run sources.
template <class A, class B>
TESSERA_HD Run differenceRuns(const A &a, const B &b, i64 kb) {
  for (i64 x = kb;;) {
    Run ra = a(x);
    if (!isRun(ra))
      return ra;
    Run rb = b(ra.lo);
    if (!isRun(rb) || rb.lo > ra.hi)
      return ra;
    if (rb.lo > ra.lo)
      return makeRun(ra.lo, rb.lo - 1, ra.cls);
    if (rb.cls != kFull)
      return makeRun(ra.lo, minI(ra.hi, rb.hi), kPartial);
    x = rb.hi + 1; // b takes every pair of these blocks
  }
}

/// Is x in the sorted disjoint half-open ranges r[0, 2 * count)? (The
/// generated predicates' lookup for long lists.)
TESSERA_HD bool inRanges(const i64 *r, i64 count, i64 x) {
  return classifyIntervals(r, count, x, x) == kFull;
}

/// Is (qb, kb) listed in a block list (the kBlocks data layout, `rows`
/// listed query-block ids first)?
TESSERA_HD bool blockListed(const i64 *ids, i64 rows, i64 qb, i64 kb) {
  i64 first, last;
  listedRows(ids, rows, qb, qb, first, last);
  return first < last &&
         countInRow(ids + rows, ids + 2 * rows + 1, first, kb, kb) != 0;
}

/// The run of one program leaf: the closed forms above on its parameters.
TESSERA_HD Run leafRunFrom(const Node &n, const i64 *data, const RunCtx &c,
                           i64 kb) {
  switch (n.kind) {
  case kAll:
    return allRun(c, kb, kFull);
  case kNone:
    return noRun();
  case kIntervals: {
    const i64 *r = data + n.dataBegin;
    i64 count = n.dataSize / 2;
    if (n.axis == kAxisK)
      return intervalsKRun(c, kb, r, count);
    if (n.axis == kAxisP)
      return intervalsPRun(c, kb, r, count);
    if (n.axis == kAxisD)
      return intervalsDRun(c, kb, r, count);
    break;
  }
  case kBand:
    if (n.axis == kAxisK)
      return bandKRun(c, kb, n.a, n.b);
    if (n.axis == kAxisP)
      return bandPRun(c, kb, n.a, n.b);
    if (n.axis == kAxisD)
      return bandDRun(c, kb, n.a, n.b);
    return bandDRun(c, kb, n.b <= -kUnbounded ? kUnbounded : -n.b,
                    n.a >= kUnbounded ? -kUnbounded : -n.a);
  case kPeriodic:
    if (n.axis == kAxisK)
      return periodicKRun(c, kb, n.a, n.b, n.c);
    if (n.axis == kAxisP)
      return periodicPRun(c, kb, n.a, n.b, n.c);
    if (n.axis == kAxisD)
      return periodicDRun(c, kb, n.a, n.b, n.c);
    // (-d - phase) mod period < width  <=>  (d - (1 - width - phase)) mod
    // period < width.
    return periodicDRun(c, kb, n.a, n.b, 1 - n.b - n.c);
  case kShards:
    return shardsRun(c, kb, n.a, n.b, n.c);
  case kGroups:
    return groupsRun(c, kb, n.a, n.b);
  case kBlocks:
    return blocksRun(c, kb, n.a, n.b, n.c, data + n.dataBegin);
  default:
    break;
  }
  return allRun(c, kb, kPartial); // not produced by the lowering: masked
}

//===----------------------------------------------------------------------===//
// Transposed runs: the query blocks that see a key block, in closed form
//===----------------------------------------------------------------------===//
//
// The backward's key-major pass serves one key block [k0, k1] and needs the
// query blocks whose tile with it is not empty: the transposed schedule. The
// same run algebra applies (a run source is now `runFrom(qb)` over query
// blocks; unionOf, intersectRuns and differenceRuns do not look at the axis),
// and each leaf transposes in closed form:
//   - an offset band d in [a, b] allows the positions p in [k - b, k - a]:
//     for the block, positions [k0 - b, k1 - a], every key seen by the
//     positions [k1 - b, k0 - a] (causal, d <= 0: [k0, inf), full from k1);
//   - periodic and listed offsets are families of such bands (a period in d
//     is a period in p with the order reversed);
//   - key-axis leaves (vertical stripes, sinks' key bound, shards) are one
//     class for the whole key block: every query block, full, partial or
//     none as the block meets the key set;
//   - position-axis leaves (horizontal stripes) are sets of positions;
//   - shifted groups are symmetric in (p, k);
//   - a block list reads its column-major transpose (blockListT).
// Positions p become rows q = p - (Nk - Nq), clipped to [0, Nq), and rows
// become query blocks of `bq` rows. As in the forward, the tiles a walk
// visits and their classes are exactly those classifyTile gives.

/// The key block a transposed walk serves: keys [k0, k1] (inclusive, inside
/// [0, Nk)), the query block size and the number of query blocks.
struct TRunCtx {
  i64 k0, k1;
  i64 nq, nk, bq, nqb, shift; ///< shift = Nk - Nq: p = q + shift
  i64 head, numHeads;
};

TESSERA_HD TRunCtx makeTRunCtx(i64 k0, i64 k1, i64 nq, i64 nk, i64 bq,
                               i64 head, i64 numHeads) {
  TRunCtx c = {k0, k1 - 1, nq, nk, bq, (nq + bq - 1) / bq, nk - nq,
               head, numHeads};
  return c;
}

/// The aligned position of query block qb's first row.
TESSERA_HD i64 firstPosition(const TRunCtx &c, i64 qb) {
  return mulSat(maxI(qb, 0), c.bq) + c.shift;
}

/// The blocks of `bs` items (n in all) that meet [vlo, vhi], from block
/// `from` on: FULL where the block's items (clipped to n) lie in
/// [flo, fhi], PARTIAL elsewhere. intervalRun's rule on any axis.
TESSERA_HD Run spanRun(i64 n, i64 bs, i64 from, i64 vlo, i64 vhi, i64 flo,
                       i64 fhi) {
  vlo = maxI(vlo, 0);
  vhi = minI(vhi, n - 1);
  if (vlo > vhi)
    return noRun();
  i64 b0 = maxI(from, vlo / bs), bEnd = vhi / bs;
  if (b0 > bEnd)
    return noRun();
  flo = maxI(flo, 0);
  fhi = minI(fhi, n - 1);
  if (flo <= fhi) {
    i64 ffb = ceilDiv(flo, bs);
    i64 flb = fhi == n - 1 ? fhi / bs : (fhi + 1) / bs - 1;
    if (ffb <= flb) {
      if (b0 < ffb)
        return makeRun(b0, minI(ffb - 1, bEnd), kPartial);
      if (b0 <= flb)
        return makeRun(b0, flb, kFull);
    }
  }
  return makeRun(b0, bEnd, kPartial);
}

/// Positions [vlo, vhi] see some key of the block, [flo, fhi] every key.
TESSERA_HD Run positionRunT(const TRunCtx &c, i64 qb, i64 vlo, i64 vhi,
                            i64 flo, i64 fhi) {
  return spanRun(c.nq, c.bq, qb, vlo - c.shift, vhi - c.shift, flo - c.shift,
                 fhi - c.shift);
}

/// Every query block from qb on, of class `cls` (kEmpty: no run).
TESSERA_HD Run allRunT(const TRunCtx &c, i64 qb, int cls) {
  if (cls == kEmpty || qb >= c.nqb)
    return noRun();
  return makeRun(maxI(qb, 0), c.nqb - 1, cls);
}

/// Offsets d = k - p in [a, b] (a may be -kUnbounded, b kUnbounded).
TESSERA_HD Run bandDRunT(const TRunCtx &c, i64 qb, i64 a, i64 b) {
  return positionRunT(c, qb, c.k0 - b, c.k1 - a, c.k1 - b, c.k0 - a);
}

/// Positions in sorted disjoint half-open ranges r[0, 2 * count).
TESSERA_HD Run intervalsPRunT(const TRunCtx &c, i64 qb, const i64 *r,
                              i64 count) {
  i64 first = firstRangeEndingAfter(r, count, firstPosition(c, qb));
  if (first == count)
    return noRun();
  i64 lo = r[2 * first], hi = r[2 * first + 1] - 1;
  return positionRunT(c, qb, lo, hi, lo, hi);
}

/// Offsets in sorted disjoint half-open ranges: the band with the lowest
/// positions that reaches query block qb is the last one starting at or
/// before k1 - firstPosition (larger offsets, lower positions).
TESSERA_HD Run intervalsDRunT(const TRunCtx &c, i64 qb, const i64 *r,
                              i64 count) {
  i64 x = c.k1 - firstPosition(c, qb);
  i64 a = 0, b = count; // the first range starting after x
  while (a < b) {
    i64 m = (a + b) / 2;
    if (r[2 * m] <= x)
      a = m + 1;
    else
      b = m;
  }
  if (a == 0)
    return noRun();
  return bandDRunT(c, qb, r[2 * (a - 1)], r[2 * (a - 1) + 1] - 1);
}

/// Positions with (p - phase) mod period < width.
TESSERA_HD Run periodicPRunT(const TRunCtx &c, i64 qb, i64 period, i64 width,
                             i64 phase) {
  if (width >= period)
    return allRunT(c, qb, kFull);
  i64 j = ceilDiv(firstPosition(c, qb) - phase - width + 1, period);
  i64 lo = phase + mulSat(j, period);
  return positionRunT(c, qb, lo, lo + width - 1, lo, lo + width - 1);
}

/// Offsets with (d - phase) mod period < width: the bands
/// [phase + j period, phase + j period + width - 1]; the one with the
/// lowest positions reaching qb has the largest j with
/// phase + j period <= k1 - firstPosition.
TESSERA_HD Run periodicDRunT(const TRunCtx &c, i64 qb, i64 period, i64 width,
                             i64 phase) {
  if (width >= period)
    return allRunT(c, qb, kFull);
  i64 j = floorDiv(c.k1 - firstPosition(c, qb) - phase, period);
  i64 lo = phase + mulSat(j, period);
  return bandDRunT(c, qb, lo, lo + width - 1);
}

/// group(p) == group(k): the key block spans groups [g0, g1]; positions in
/// them see it, and all of its keys only when g0 == g1.
TESSERA_HD Run groupsRunT(const TRunCtx &c, i64 qb, i64 size, i64 shift) {
  i64 s = c.head >= c.numHeads / 2 ? shift : 0;
  i64 g0 = floorDiv(c.k0 - s, size), g1 = floorDiv(c.k1 - s, size);
  i64 lo = mulSat(g0, size) + s, hi = mulSat(g1, size) + s + size - 1;
  if (g0 == g1)
    return positionRunT(c, qb, lo, hi, lo, hi);
  return positionRunT(c, qb, lo, hi, 1, 0);
}

/// The key tile of the block with one row, for leaves that look at keys
/// only (their class is the same for every query block).
TESSERA_HD Tile keyTileT(const TRunCtx &c) {
  Tile t = {0, 1, c.k0, c.k1 + 1, c.nq, c.nk, c.head, c.numHeads};
  return t;
}

/// Listed (query block, key block) pairs of blockQ x blockK. `ids` is the
/// kBlocks layout (`rows` listed query-block ids first); `tids`, when not
/// null, its transpose (blockListT: `cols` listed key-block ids, their CSR
/// starts, then the query-block ids of each). One run per visited tile, its
/// class by classifyLeaf. Without `tids` the listed rows are searched in
/// order from qb's (O(listed rows) at worst).
TESSERA_HD Run blocksRunT(const TRunCtx &c, i64 qb, i64 blockQ, i64 blockK,
                          i64 rows, const i64 *ids, i64 cols,
                          const i64 *tids) {
  if (qb >= c.nqb)
    return noRun();
  i64 from = firstPosition(c, qb), minRow = floorDiv(from, blockQ);
  i64 kc0 = c.k0 / blockK, kc1 = c.k1 / blockK;
  i64 best = kUnbounded;
  if (tids) {
    const i64 *colStart = tids + cols;
    const i64 *qids = colStart + cols + 1;
    i64 first, last;
    listedRows(tids, cols, kc0, kc1, first, last);
    for (i64 col = first; col < last; ++col) {
      i64 a = colStart[col], b = colStart[col + 1];
      while (a < b) {
        i64 m = (a + b) / 2;
        if (qids[m] < minRow)
          a = m + 1;
        else
          b = m;
      }
      if (a < colStart[col + 1])
        best = minI(best, maxI(from, mulSat(qids[a], blockQ)));
    }
  } else {
    i64 first, last;
    listedRows(ids, rows, minRow, kUnbounded, first, last);
    for (i64 r = first; r < last && best == kUnbounded; ++r)
      if (countInRow(ids + rows, ids + 2 * rows + 1, r, kc0, kc1) != 0)
        best = maxI(from, mulSat(ids[r], blockQ));
  }
  if (best >= kUnbounded || best - c.shift >= c.nq)
    return noRun();
  i64 b0 = (best - c.shift) / c.bq;
  Node n = {kBlocks, kAxisP, blockQ, blockK, rows, 0, 0, 0};
  Tile t = {b0 * c.bq, minI(b0 * c.bq + c.bq, c.nq), c.k0, c.k1 + 1,
            c.nq, c.nk, c.head, c.numHeads};
  return makeRun(b0, b0, classifyLeaf(n, ids, t));
}

/// The first non-empty tile of a leaf at or after query block qb, by
/// classification: for leaves the lowering does not produce.
TESSERA_HD Run scanRunT(const Node &n, const i64 *data, const TRunCtx &c,
                        i64 qb) {
  for (i64 b = maxI(qb, 0); b < c.nqb; ++b) {
    Tile t = {b * c.bq, minI(b * c.bq + c.bq, c.nq), c.k0, c.k1 + 1,
              c.nq, c.nk, c.head, c.numHeads};
    int cls = classifyLeaf(n, data, t);
    if (cls != kEmpty)
      return makeRun(b, b, cls);
  }
  return noRun();
}

/// The transposed run of one program leaf. `tblocks`: for a kBlocks leaf,
/// its transposed list (blockListT) or null.
TESSERA_HD Run leafRunFromT(const Node &n, const i64 *data, const TRunCtx &c,
                            i64 qb, const i64 *tblocks, i64 tcols) {
  switch (n.kind) {
  case kAll:
    return allRunT(c, qb, kFull);
  case kNone:
    return noRun();
  case kShards:
    return allRunT(c, qb, classifyLeaf(n, data, keyTileT(c)));
  case kGroups:
    return groupsRunT(c, qb, n.a, n.b);
  case kBlocks:
    return blocksRunT(c, qb, n.a, n.b, n.c, data + n.dataBegin, tcols,
                      tblocks);
  case kIntervals:
  case kBand:
  case kPeriodic:
    break;
  default:
    return scanRunT(n, data, c, qb);
  }
  if (n.axis == kAxisK)
    return allRunT(c, qb, classifyLeaf(n, data, keyTileT(c)));
  if (n.kind == kIntervals) {
    const i64 *r = data + n.dataBegin;
    i64 count = n.dataSize / 2;
    if (n.axis == kAxisP)
      return intervalsPRunT(c, qb, r, count);
    if (n.axis == kAxisD)
      return intervalsDRunT(c, qb, r, count);
    return scanRunT(n, data, c, qb);
  }
  if (n.kind == kBand) {
    if (n.axis == kAxisP)
      return positionRunT(c, qb, n.a, n.b, n.a, n.b);
    if (n.axis == kAxisD)
      return bandDRunT(c, qb, n.a, n.b);
    return bandDRunT(c, qb, n.b <= -kUnbounded ? kUnbounded : -n.b,
                     n.a >= kUnbounded ? -kUnbounded : -n.a);
  }
  if (n.axis == kAxisP)
    return periodicPRunT(c, qb, n.a, n.b, n.c);
  if (n.axis == kAxisD)
    return periodicDRunT(c, qb, n.a, n.b, n.c);
  return periodicDRunT(c, qb, n.a, n.b, 1 - n.b - n.c);
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

  // Per-sequence calls (tessera_attention_desc's modes), read by the
  // `_seq` kernels only; the dense kernels ignore them. Device arrays, null
  // where not used; nq and nk are then the tensors' rows (q.seq: Nq, or T
  // when packed; k.seq: Nk, Tk when packed, the page size when paged).
  const int *cuQ;      ///< packed queries: sequence s's rows [cuQ[s], cuQ[s + 1])
  const int *cuK;      ///< packed keys, likewise
  const int *lensK;    ///< keys per sequence (dense-with-lengths or paged)
  const int *pages;    ///< paged keys: the block table
  const i64 *qStart;   ///< query row 0's position per sequence (null: bottom-right)
  const i64 *kStart;   ///< key 0's position per sequence (null: 0)
  i64 pageStride;      ///< block-table entries between rows
  i64 maxPages;        ///< entries a sequence may use
  i64 numPages;        ///< pages of k and v (k.batch)
  int pageSize;        ///< keys per page (16 to 256)
  int numSeqs;
  int headStart;       ///< the tensors' first head (layer index)
  int headCount;       ///< the tensors' heads (0: every head)
  /// Split-KV (decode; `_seq` kernels): numSplits > 1 cuts each sequence's
  /// key tiles from kStart / 64 on into ranges of splitTiles tiles, one
  /// per split; blockIdx.x is query block + seqBlocks * split. Each block
  /// writes its normalised partial O (fp32) and LSE to splitO / splitLse
  /// ([numSplits, splitRows, heads, D] and [numSplits, splitRows, heads],
  /// heads the tensors'; rows: numSeqs * Nq dense, T packed), and the
  /// merge kernel (seqMergeSplits) combines them into o and lse.
  float *splitO;
  float *splitLse;
  i64 splitRows;
  int numSplits, splitTiles, seqBlocks;
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
