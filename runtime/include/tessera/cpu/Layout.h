//===- Layout.h - token permutations of a head group ------------*- C++ -*-===//
//
// The layouts `--attn-permute` may give a head group, in closed form: where a
// token of a sequence of N tokens sits in the permuted order (`slot`) and
// which token a slot holds (`token`). Patterns are always evaluated on the
// ORIGINAL positions: a layout only changes which (query, key) pairs share a
// tile. Header-only and MLIR-free: --attn-permute and the CPU executor
// (tessera/cpu/Permuted.h) share this arithmetic, and the closed-form runs
// of a permuted order (PermutedRuns below).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_LAYOUT_H
#define TESSERA_CPU_LAYOUT_H

#include "tessera/kernel/Program.h"

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::layout {

/// The most kept ranges a layout holds (`#attn.period_transpose`'s `kept`,
/// the dialect's attn::kMaxKeptRanges): slot and token cost O(ranges).
inline constexpr int64_t kMaxKeptRanges = 64;

/// The period transpose of period P >= 2: tokens sorted stably by their
/// residue t mod P. With N = q * P + r (0 <= r < P), residue c holds
/// q + (c < r) tokens and starts at slot c * q + min(c, r):
///
///   slot(t) = (t mod P) * q + min(t mod P, r) + t div P
///
/// When P divides N this is (t mod P) * (N / P) + t div P, the transpose of
/// the (N / P) x P matrix of tokens (frames x pixels becomes pixels x
/// frames). It is a bijection of [0, N) for every N >= 0.
///
/// With a prefix S > 0 (a segment grouping: a prompt before the frames) the
/// first min(S, N) tokens keep their slots and the rest are transposed as a
/// sequence of their own: slot(t) = S + slot'(t - S).
///
/// With kept ranges [a0, b0, a1, b1, ...] (interleaved modalities: text
/// segments between video segments; `kept` non-empty, `prefix` 0) each
/// range clipped to [min(a, N), min(b, N)): the K kept tokens take slots
/// [0, K) in their order, and the N - K others (the video segments) follow
/// sorted stably by their residue (t - e) mod P, e the first token not
/// kept (0, or b0 when a0 = 0): the ORIGINAL positions' residues, so that
/// every video segment's tokens of one residue sit together whatever text
/// lies between the segments (a residue-only pattern sees one band of
/// residues, not one band a segment). With one range [0, S) this is the
/// prefix S. Still a bijection of [0, N) for every N; slot costs
/// O(ranges), token O(ranges * (log P + log(N / P))) (two binary
/// searches: the residue, then the frame).
struct PeriodTranspose {
  int64_t period = 2;
  int64_t prefix = 0;
  /// Kept ranges as [begin, end) pairs, flat: sorted, non-empty, disjoint
  /// and not touching, at most kMaxKeptRanges (layoutReason). Empty: the
  /// prefix form (`kept = [0, S]` is always written as prefix S).
  std::vector<int64_t> kept = {};

  bool interleaved() const { return !kept.empty(); }

  /// The tokens kept in front at length n (min(prefix, n) without ranges).
  int64_t keptCount(int64_t n) const {
    if (kept.empty())
      return std::min(std::max<int64_t>(prefix, 0), n);
    int64_t k = 0;
    for (size_t i = 0; i + 1 < kept.size(); i += 2)
      k += std::min(kept[i + 1], n) - std::min(kept[i], n);
    return k;
  }

  int64_t slot(int64_t t, int64_t n) const {
    if (kept.empty()) {
      int64_t front = keptCount(n);
      return t < front ? t : front + segmentSlot(t - front, n - front);
    }
    int64_t before = 0; // kept tokens before t
    for (size_t i = 0; i + 1 < kept.size(); i += 2) {
      int64_t a = std::min(kept[i], n), b = std::min(kept[i + 1], n);
      if (t < a)
        break;
      if (t < b)
        return before + (t - a);
      before += b - a;
    }
    int64_t c = residue(t, n);
    // The others of smaller residues, then those of residue c before t.
    return keptCount(n) + othersBelow(c, n) + othersOf(c, t, n);
  }

  /// The inverse of slot: the token at slot s.
  int64_t token(int64_t s, int64_t n) const {
    int64_t front = keptCount(n);
    if (kept.empty())
      return s < front ? s : front + segmentToken(s - front, n - front);
    if (s < front) {
      for (size_t i = 0; i + 1 < kept.size(); i += 2) {
        int64_t a = std::min(kept[i], n), b = std::min(kept[i + 1], n);
        if (s < b - a)
          return a + s;
        s -= b - a;
      }
    }
    s -= front;
    // The residue: the last c with othersBelow(c) <= s.
    int64_t lo = 0, hi = period - 1;
    while (lo < hi) {
      int64_t mid = lo + (hi - lo + 1) / 2;
      if (othersBelow(mid, n) <= s)
        lo = mid;
      else
        hi = mid - 1;
    }
    int64_t c = lo, j = s - othersBelow(c, n);
    // The (j + 1)-th other token of residue c: the first y0 + m P with
    // j + 1 others of residue c up to it.
    int64_t y0 = floorMod(firstOther(n) + c, period);
    int64_t mLo = 0, mHi = (n - 1 - y0) / period;
    while (mLo < mHi) {
      int64_t mid = mLo + (mHi - mLo) / 2;
      if (othersOf(c, y0 + mid * period + 1, n) >= j + 1)
        mHi = mid;
      else
        mLo = mid + 1;
    }
    return y0 + mLo * period;
  }

  /// The first slot of residue c (0 <= c <= period; start(period) = n) of
  /// a transpose without prefix.
  int64_t start(int64_t c, int64_t n) const {
    int64_t q = n / period, r = n % period;
    return c * q + std::min(c, r);
  }

private:
  static int64_t floorMod(int64_t a, int64_t b) {
    int64_t r = a % b;
    return r < 0 ? r + b : r;
  }
  /// With kept ranges: the first token not kept, where residue 0 starts.
  int64_t firstOther(int64_t n) const {
    return kept[0] > 0 ? 0 : std::min(kept[1], n);
  }
  /// A token's residue among the others: (t - e) mod P.
  int64_t residue(int64_t t, int64_t n) const {
    return floorMod(t - firstOther(n), period);
  }
  /// Tokens of [lo, hi) (0 <= lo <= hi) whose residue is below c.
  int64_t residuesBelow(int64_t c, int64_t lo, int64_t hi, int64_t n) const {
    // z = x - e + off >= 0 has x's residue; off: a multiple of P >= e.
    int64_t e = firstOther(n), off = (e + period - 1) / period * period;
    auto below = [&](int64_t z) { // #{0 <= y < z : y mod P < c}
      return z / period * c + std::min(z % period, c);
    };
    return below(hi - e + off) - below(lo - e + off);
  }
  /// Tokens of [lo, hi) of residue c.
  int64_t residuesOf(int64_t c, int64_t lo, int64_t hi, int64_t n) const {
    return residuesBelow(c + 1, lo, hi, n) - residuesBelow(c, lo, hi, n);
  }
  /// The tokens of [0, n) that are not kept and have a residue below c.
  int64_t othersBelow(int64_t c, int64_t n) const {
    int64_t k = residuesBelow(c, 0, n, n);
    for (size_t i = 0; i + 1 < kept.size(); i += 2)
      k -= residuesBelow(c, std::min(kept[i], n), std::min(kept[i + 1], n), n);
    return k;
  }
  /// The tokens of [0, x) that are not kept and have residue c.
  int64_t othersOf(int64_t c, int64_t x, int64_t n) const {
    int64_t k = residuesOf(c, 0, x, n);
    for (size_t i = 0; i + 1 < kept.size(); i += 2) {
      int64_t a = std::min(kept[i], n), b = std::min(kept[i + 1], x);
      if (a < b)
        k -= residuesOf(c, a, b, n);
    }
    return k;
  }

  int64_t segmentSlot(int64_t t, int64_t n) const {
    int64_t q = n / period, r = n % period, c = t % period;
    return c * q + std::min(c, r) + t / period;
  }

  int64_t segmentToken(int64_t s, int64_t n) const {
    int64_t q = n / period, r = n % period;
    int64_t longPart = r * (q + 1); // slots of the residues holding q + 1
    if (s < longPart)
      return (s % (q + 1)) * period + s / (q + 1);
    int64_t rest = s - longPart;
    return (rest % q) * period + r + rest / q;
  }
};

/// "" when `perm` is a layout slot and token take (period >= 2, prefix and
/// kept ranges in [0, 2^40], kept ranges as PeriodTranspose says, not with
/// a prefix), else what is wrong with it.
inline std::string layoutReason(const PeriodTranspose &perm) {
  constexpr int64_t kMax = int64_t(1) << 40;
  if (perm.period < 2 || perm.period > kMax)
    return "period must be in [2, 2^40], got " + std::to_string(perm.period);
  if (perm.prefix < 0 || perm.prefix > kMax)
    return "prefix must be in [0, 2^40], got " + std::to_string(perm.prefix);
  const std::vector<int64_t> &k = perm.kept;
  if (k.empty())
    return "";
  if (perm.prefix != 0)
    return "a prefix and kept ranges together (prefix S is kept [0, S])";
  if (k.size() % 2 != 0)
    return "kept must hold [begin, end) pairs, got " +
           std::to_string(k.size()) + " values";
  if (int64_t(k.size() / 2) > kMaxKeptRanges)
    return std::to_string(k.size() / 2) +
           " kept ranges, more than the limit of " +
           std::to_string(kMaxKeptRanges);
  for (size_t i = 0; i < k.size(); i += 2) {
    std::string range = "kept range " + std::to_string(i / 2) + " [" +
                        std::to_string(k[i]) + ", " + std::to_string(k[i + 1]) +
                        ")";
    if (k[i] < 0 || k[i + 1] > kMax)
      return range + " is outside [0, 2^40]";
    if (k[i] >= k[i + 1])
      return range + " is empty";
    if (i > 0 && k[i] <= k[i - 1])
      return range + " overlaps, touches or precedes the range before it";
  }
  if (k.size() == 2 && k[0] == 0)
    return "kept [0, " + std::to_string(k[1]) + "] is a prefix: give prefix " +
           std::to_string(k[1]);
  return "";
}

//===----------------------------------------------------------------------===//
// Closed-form runs of a period transpose
//===----------------------------------------------------------------------===//
//
// A program that reads positions only through p mod P and k mod P (periodic
// leaves whose period divides P, strided shards whose shards * block divides
// P, and combinators of them: multi_diagonal with a stride, grid, periodic
// stripes, strided shards) is, in the period transpose of P, a block
// matrix: a row of residue c (of its aligned position p) sees exactly the
// keys whose residues lie in a set R(c), whatever their frames. Slots are
// sorted by residue, so a query block holds the rows of consecutive
// residues c0..c1: it visits the key blocks that hold a residue of
// R(c0) u ... u R(c1), and those inside the slots of R(c0) n ... n R(c1)
// are FULL. Each leaf's R(c) is at most P / L intervals (L its period) in
// closed form, so a block's runs cost O((c1 - c0 + 1) * leaves * P / L),
// whatever the number of frames: no pair is evaluated.

/// Sorted, disjoint, non-touching half-open ranges.
using Ranges = std::vector<std::pair<int64_t, int64_t>>;

namespace detail {

/// Sorts and merges overlapping or touching ranges; drops empty ones.
inline Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (auto [lo, hi] : r) {
    if (lo >= hi)
      continue;
    if (!out.empty() && lo <= out.back().second)
      out.back().second = std::max(out.back().second, hi);
    else
      out.push_back({lo, hi});
  }
  return out;
}

inline Ranges unite(const Ranges &a, const Ranges &b) {
  Ranges all(a);
  all.insert(all.end(), b.begin(), b.end());
  return normalized(std::move(all));
}

inline Ranges intersect(const Ranges &a, const Ranges &b) {
  Ranges out;
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    int64_t lo = std::max(a[i].first, b[j].first);
    int64_t hi = std::min(a[i].second, b[j].second);
    if (lo < hi)
      out.push_back({lo, hi});
    if (a[i].second < b[j].second)
      ++i;
    else
      ++j;
  }
  return out;
}

/// a less b, both within [0, n).
inline Ranges subtract(const Ranges &a, const Ranges &b, int64_t n) {
  Ranges complement;
  int64_t at = 0;
  for (auto [lo, hi] : b) {
    if (at < lo)
      complement.push_back({at, lo});
    at = hi;
  }
  if (at < n)
    complement.push_back({at, n});
  return intersect(a, complement);
}

/// {x in [0, p) : (x - phase) mod period < width}, period dividing p.
inline Ranges periodicSet(int64_t period, int64_t width, int64_t phase,
                          int64_t p) {
  if (width >= period)
    return {{0, p}};
  Ranges out;
  for (int64_t lo = kernel::floorMod(phase, period); lo < p; lo += period) {
    int64_t hi = lo + width;
    out.push_back({lo, std::min(hi, p)});
    if (hi > p) // the last copy wraps around to residue 0
      out.push_back({0, hi - p});
  }
  return normalized(std::move(out));
}

/// The key residues (mod p) leaf `n` allows a row whose aligned position
/// has residue `a`; the leaf is residue-only (residueOnlyReason).
inline Ranges leafResidues(const kernel::Node &n, int64_t p, int64_t a,
                           int64_t head) {
  switch (n.kind) {
  case kernel::kAll:
    return {{0, p}};
  case kernel::kPeriodic: {
    int64_t period = n.a, width = n.b, phase = n.c;
    switch (n.axis) {
    case kernel::kAxisK: // (k - phase) mod L < w
      return periodicSet(period, width, phase, p);
    case kernel::kAxisD: // (k - a - phase) mod L < w
      return periodicSet(period, width, phase + a, p);
    case kernel::kAxisNegD: // (a - k - phase) mod L < w: a - phase - [0, w)
      return periodicSet(period, width, a - phase - width + 1, p);
    default: // the row's own residue decides: every key or none
      return kernel::floorMod(a - phase, period) < width ? Ranges{{0, p}}
                                                         : Ranges{};
    }
  }
  case kernel::kShards: {
    kernel::i64 period, phase;
    kernel::shardKeys(n.a, n.b, n.c, head, period, phase);
    return periodicSet(period, n.a, phase, p);
  }
  default: // kNone (others never reach here)
    return {};
  }
}

} // namespace detail

/// "" when leaf `n` reads positions only through their residues mod
/// `period` (for `head`), else why not, naming it.
inline std::string leafReason(const kernel::Node &n, int64_t period,
                              int64_t head) {
  switch (n.kind) {
  case kernel::kAll:
  case kernel::kNone:
  case kernel::kUnion:
  case kernel::kIntersect:
  case kernel::kDifference:
    return "";
  case kernel::kPeriodic:
    if (n.b >= n.a || period % n.a == 0)
      return "";
    return "a periodic leaf of period " + std::to_string(n.a) +
           " that does not divide " + std::to_string(period);
  case kernel::kShards: {
    kernel::i64 shardPeriod, phase;
    kernel::shardKeys(n.a, n.b, n.c, head, shardPeriod, phase);
    if (shardPeriod < kernel::kUnbounded && period % shardPeriod == 0)
      return "";
    return "strided shards repeating every " + std::to_string(n.a) + " x " +
           std::to_string(n.b) + " keys, which does not divide " +
           std::to_string(period);
  }
  case kernel::kBand:
    return "a band leaf (causal, window, sink): not periodic";
  case kernel::kIntervals:
    return "a listed-ranges leaf (listed diagonals or stripe ranges): not "
           "periodic";
  case kernel::kGroups:
    return "a shifted-groups leaf: not periodic";
  default:
    return "a listed-blocks leaf: not periodic";
  }
}

/// "" when the program nodes[0, count) reads positions only through their
/// residues mod `period` (for `head`), so that its permuted runs have the
/// closed form above; else why not, naming the leaf.
inline std::string residueOnlyReason(const kernel::Node *nodes, int64_t count,
                                     int64_t period, int64_t head) {
  for (int64_t i = 0; i < count; ++i)
    if (std::string why = leafReason(nodes[i], period, head); !why.empty())
      return why;
  return "";
}

/// Why kept ranges (interleaved segments) have no closed-form runs: the
/// kept rows and keys are not one interval of positions (the prefix's
/// quadrants do not carry over), so each pair is classified once.
inline constexpr const char *kInterleavedReason =
    "kept ranges (interleaved segments): each pair classified";

/// "" when the runs of `perm` for the program have the closed form below
/// (no prefix, and a residue-only program for its period), else why not.
/// A prefix needs the program's data and the lengths: the overload below.
inline std::string closedFormReason(const kernel::Node *nodes, int64_t count,
                                    const PeriodTranspose &perm,
                                    int64_t head) {
  if (perm.interleaved())
    return kInterleavedReason;
  if (perm.prefix > 0)
    return "a prefix kept in place (decided with the program's data and the "
           "lengths)";
  return residueOnlyReason(nodes, count, perm.period, head);
}

/// The key residues mod p a row whose aligned position has residue `a`
/// sees under a residue-only program (postfix evaluation on range sets).
inline Ranges keyResidues(const kernel::Node *nodes, int64_t count, int64_t p,
                          int64_t a, int64_t head) {
  std::vector<Ranges> stack;
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    if (n.kind < kernel::kUnion) {
      stack.push_back(detail::leafResidues(n, p, a, head));
      continue;
    }
    size_t base = stack.size() - size_t(n.axis);
    Ranges r = stack[base];
    for (size_t j = base + 1; j < stack.size(); ++j)
      r = n.kind == kernel::kUnion       ? detail::unite(r, stack[j])
          : n.kind == kernel::kIntersect ? detail::intersect(r, stack[j])
                                         : detail::subtract(r, stack[j], p);
    stack.resize(base);
    stack.push_back(std::move(r));
  }
  return stack.size() == 1 ? stack.front() : Ranges{};
}

//===----------------------------------------------------------------------===//
// Closed-form runs with a prefix (segment groupings)
//===----------------------------------------------------------------------===//
//
// With a prefix S, each sequence of n tokens has two parts: the prompt,
// tokens [0, min(S, n)), in place, and the segment after it, sorted by its
// own residues (t - min(S, n)) mod P. Rows and keys each lie in one part,
// which cuts the pairs into four quadrants (prompt rows x prompt keys,
// prompt rows x segment keys, ...). On a quadrant, each leaf is one of
//   - constant: it allows every pair of the quadrant or none
//     (kernel::classifyLeaf on the quadrant's rectangle says FULL or EMPTY:
//     a prompt's stripe ranges, a band that misses the quadrant);
//   - residue-only for P (leafReason): periodic leaves whose period divides
//     P, strided shards;
//   - neither (unknown).
// The combinators decide the quadrant's class with classifyTile's algebra
// on these (an unknown child is hidden only by a child that decides alone:
// a constant-all child of a union, a constant-none child of an
// intersection). A program has closed-form runs when no quadrant that
// holds pairs is unknown. A row then allows, in each part of the keys,
// either every key, none, or the keys whose residues mod P lie in the
// quadrant's residue set R(a) of its aligned position's residue a (the
// program with its constant leaves replaced by all or none: exact, as
// every leaf is exact and the set algebra is). A query block's rows are
// prompt rows of consecutive positions and segment rows of consecutive
// residues; its visited key slots are the union over its rows of their
// allowed slots, its full ones the intersection: in the prompt, the keys
// of those residues in place; in the segment, the slots of those residues
// (shifted by the prompt). Blocks straddling the prompt's end hold both.

namespace detail {

/// A leaf's or a program's class on a quadrant: kernel::kEmpty or kFull
/// (constant), kPartial (through residues), or kUnknown.
constexpr int kUnknown = -1;

/// Each leaf's class on the rectangle of `t` (combinators: unused).
inline std::vector<int> leafClasses(const kernel::Node *nodes, int64_t count,
                                    const kernel::i64 *data, int64_t period,
                                    const kernel::Tile &t) {
  std::vector<int> cls(count, kernel::kPartial);
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    if (n.kind >= kernel::kUnion)
      continue;
    int c = kernel::kPartial;
    // Shifted groups depend on the head count, which the runs do not take.
    bool known = n.kind != kernel::kGroups && (data || n.dataSize == 0);
    if (known)
      c = kernel::classifyLeaf(n, data, t);
    if (c == kernel::kPartial && !leafReason(n, period, t.head).empty())
      c = kUnknown;
    cls[i] = c;
  }
  return cls;
}

/// The class of a combinator over its children's classes [args, args +
/// arity) (classifyTile's algebra, kUnknown hidden only by a deciding
/// child).
inline int combineClasses(int64_t kind, const int *args, int64_t arity) {
  bool any[3] = {false, false, false}, unknown = false;
  for (int64_t j = 0; j < arity; ++j) {
    if (args[j] == kUnknown)
      unknown = true;
    else
      any[args[j]] = true;
  }
  if (kind == kernel::kUnion) {
    if (any[kernel::kFull])
      return kernel::kFull;
    if (unknown)
      return kUnknown;
    return any[kernel::kPartial] ? kernel::kPartial : kernel::kEmpty;
  }
  if (kind == kernel::kIntersect) {
    if (any[kernel::kEmpty])
      return kernel::kEmpty;
    if (unknown)
      return kUnknown;
    return any[kernel::kPartial] ? kernel::kPartial : kernel::kFull;
  }
  // kDifference: args[0] less args[1].
  if (args[0] == kernel::kEmpty || args[1] == kernel::kFull)
    return kernel::kEmpty;
  if (unknown)
    return kUnknown;
  if (args[0] == kernel::kFull && args[1] == kernel::kEmpty)
    return kernel::kFull;
  return kernel::kPartial;
}

/// The program's class on a quadrant from its leaves' (leafClasses);
/// `unknownLeaf` is set to the first unknown leaf that decides a kUnknown.
inline int programClass(const kernel::Node *nodes, int64_t count,
                        const std::vector<int> &leaf, int64_t &unknownLeaf) {
  std::vector<int> stack;
  std::vector<int64_t> blame; // the first unknown leaf under each entry
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    if (n.kind < kernel::kUnion) {
      stack.push_back(leaf[i]);
      blame.push_back(leaf[i] == kUnknown ? i : -1);
      continue;
    }
    if (n.axis < 1 || size_t(n.axis) > stack.size()) { // not a program
      unknownLeaf = -1;
      return kUnknown;
    }
    size_t base = stack.size() - size_t(n.axis);
    int c = combineClasses(n.kind, stack.data() + base, n.axis);
    int64_t b = -1;
    for (size_t j = base; j < stack.size() && b < 0; ++j)
      b = stack[j] == kUnknown ? blame[j] : -1;
    stack.resize(base);
    blame.resize(base);
    stack.push_back(c);
    blame.push_back(c == kUnknown ? b : -1);
  }
  if (stack.size() != 1) {
    unknownLeaf = -1;
    return kUnknown;
  }
  unknownLeaf = blame.front();
  return stack.front();
}

/// The key residues mod p a row of aligned residue `a` sees on a quadrant
/// whose program class is kPartial: keyResidues with each constant leaf
/// replaced by all or none.
inline Ranges quadrantResidues(const kernel::Node *nodes, int64_t count,
                               const std::vector<int> &leaf, int64_t p,
                               int64_t a, int64_t head) {
  std::vector<int> cls;
  std::vector<Ranges> stack;
  auto constant = [&](int c) {
    return c == kernel::kFull ? Ranges{{0, p}} : Ranges{};
  };
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    if (n.kind < kernel::kUnion) {
      cls.push_back(leaf[i]);
      stack.push_back(leaf[i] == kernel::kPartial ? leafResidues(n, p, a, head)
                                                  : constant(leaf[i]));
      continue;
    }
    if (n.axis < 1 || size_t(n.axis) > stack.size())
      return {}; // not a program (programClass says kUnknown)
    size_t base = stack.size() - size_t(n.axis);
    int c = combineClasses(n.kind, cls.data() + base, n.axis);
    Ranges r = constant(c);
    if (c == kernel::kPartial) { // no unknown child: every set is exact
      r = stack[base];
      for (size_t j = base + 1; j < stack.size(); ++j)
        r = n.kind == kernel::kUnion       ? unite(r, stack[j])
            : n.kind == kernel::kIntersect ? intersect(r, stack[j])
                                           : subtract(r, stack[j], p);
    }
    cls.resize(base);
    stack.resize(base);
    cls.push_back(c);
    stack.push_back(std::move(r));
  }
  return stack.size() == 1 ? stack.front() : Ranges{};
}

/// Ranges shifted by `by` modulo p (split where they wrap).
inline Ranges rotated(const Ranges &r, int64_t by, int64_t p) {
  Ranges out;
  for (auto [lo, hi] : r) {
    int64_t at = kernel::floorMod(lo + by, p), end = at + (hi - lo);
    out.push_back({at, std::min(end, p)});
    if (end > p)
      out.push_back({0, end - p});
  }
  return normalized(std::move(out));
}

} // namespace detail

/// The four quadrants of a prefix layout at nq queries and nk keys: rows
/// and keys each in the prompt (part 0: the first min(S, n) tokens) or the
/// segment (part 1). A quadrant without pairs has class kEmpty.
struct PrefixQuadrants {
  int64_t sq = 0, sk = 0;      ///< prompt rows, prompt keys
  std::vector<int> leaf[2][2]; ///< [row part][key part]: leafClasses
  int cls[2][2] = {{0, 0}, {0, 0}};
  int64_t unknownLeaf[2][2] = {{-1, -1}, {-1, -1}};

  PrefixQuadrants(const kernel::Node *nodes, int64_t count,
                  const kernel::i64 *data, const PeriodTranspose &perm,
                  int64_t head, int64_t nq, int64_t nk)
      : sq(std::min(std::max<int64_t>(perm.prefix, 0), nq)),
        sk(std::min(std::max<int64_t>(perm.prefix, 0), nk)) {
    int64_t rows[3] = {0, sq, nq}, keys[3] = {0, sk, nk};
    for (int r = 0; r < 2; ++r)
      for (int k = 0; k < 2; ++k) {
        if (rows[r] == rows[r + 1] || keys[k] == keys[k + 1])
          continue;
        kernel::Tile t = {rows[r], rows[r + 1], keys[k], keys[k + 1],
                          nq,      nk,          head,    0};
        leaf[r][k] = detail::leafClasses(nodes, count, data, perm.period, t);
        cls[r][k] =
            detail::programClass(nodes, count, leaf[r][k], unknownLeaf[r][k]);
      }
  }

  static const char *name(int r, int k) {
    static const char *names[2][2] = {
        {"prompt rows x prompt keys", "prompt rows x segment keys"},
        {"segment rows x prompt keys", "segment rows x segment keys"}};
    return names[r][k];
  }
};

/// "" when the runs of `perm` (with or without prefix) for the program have
/// a closed form at nq queries and nk keys (`data`: the program's data
/// array), else why not, naming the leaf (and, with a prefix, the quadrant
/// where it is neither all nor none).
inline std::string closedFormReason(const kernel::Node *nodes, int64_t count,
                                    const kernel::i64 *data,
                                    const PeriodTranspose &perm, int64_t head,
                                    int64_t nq, int64_t nk) {
  if (perm.interleaved())
    return kInterleavedReason;
  if (perm.prefix <= 0)
    return residueOnlyReason(nodes, count, perm.period, head);
  PrefixQuadrants quad(nodes, count, data, perm, head, nq, nk);
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 2; ++k) {
      if (quad.cls[r][k] != detail::kUnknown)
        continue;
      int64_t at = quad.unknownLeaf[r][k];
      std::string leaf = at < 0 ? std::string("the program")
                                : leafReason(nodes[at], perm.period, head);
      return leaf + ", and neither all nor none of the " +
             PrefixQuadrants::name(r, k) + " (prefix " +
             std::to_string(perm.prefix) + ")";
    }
  return "";
}

/// Key blocks [begin, end) of one class in a permuted query block's walk.
struct PermutedRun {
  int64_t begin = 0, end = 0;
  bool full = false;
};

/// The closed-form schedule of one head of a program in the period
/// transpose `perm` of nq queries and nk keys (each sequence permuted over
/// its own length), in tiles of bq x bk slots, for a program that has one
/// (closedFormReason: residue-only without prefix; with a prefix, no
/// quadrant unknown, which `data`, the program's data array, decides).
struct PermutedRuns {
  const kernel::Node *nodes = nullptr;
  int64_t count = 0;
  PeriodTranspose perm;
  int64_t nq = 0, nk = 0, bq = 64, bk = 64, head = 0;
  const kernel::i64 *data = nullptr; ///< read with a prefix only

  int64_t queryBlocks() const { return (nq + bq - 1) / bq; }

  /// Appends the runs of query block i (slots [i * bq, (i + 1) * bq)) to
  /// `out`, in key order; partial runs need the element predicate (on the
  /// original positions), full ones none.
  void runs(int64_t i, std::vector<PermutedRun> &out) const {
    assert(perm.kept.empty() && "kept ranges have no closed form: "
                                "closedFormReason says so, check it first");
    if (perm.prefix > 0) {
      PrefixQuadrants quad(nodes, count, data, perm, head, nq, nk);
      prefixRuns(quad, i, out);
      return;
    }
    int64_t p = perm.period, s0 = i * bq, s1 = std::min(nq, s0 + bq);
    int64_t c0 = perm.token(s0, nq) % p, c1 = perm.token(s1 - 1, nq) % p;
    Ranges visited, full{{0, p}};
    for (int64_t c = c0; c <= c1; ++c) {
      Ranges r = keyResidues(nodes, count, p,
                             kernel::floorMod(c + nk - nq, p), head);
      visited = detail::unite(visited, r);
      full = detail::intersect(full, r);
    }
    split(blocksTouching(keySlots(visited)), blocksInside(keySlots(full)), out);
  }

  /// runs() with a prefix, the quadrants' classes given (computed once for
  /// every block by countTiles).
  void prefixRuns(const PrefixQuadrants &quad, int64_t i,
                  std::vector<PermutedRun> &out) const {
    int64_t p = perm.period, sq = quad.sq, sk = quad.sk, shift = nk - nq;
    int64_t s0 = i * bq, s1 = std::min(nq, s0 + bq);
    // The aligned residues of the block's prompt rows (consecutive
    // positions) and of its segment rows (consecutive residues).
    std::vector<int64_t> residues[2];
    for (int64_t s = s0; s < std::min(s1, sq) && s < s0 + p; ++s)
      residues[0].push_back(kernel::floorMod(s + shift, p));
    if (s1 > sq) {
      int64_t c0 = (perm.token(std::max(s0, sq), nq) - sq) % p;
      int64_t c1 = (perm.token(s1 - 1, nq) - sq) % p;
      for (int64_t c = c0; c <= c1; ++c)
        residues[1].push_back(kernel::floorMod(sq + c + shift, p));
    }
    Ranges visitedSlots, fullSlots;
    for (int k = 0; k < 2; ++k) {
      if (k == 0 ? sk == 0 : sk == nk)
        continue;
      // Key residues some row sees (visited) and every row sees (full).
      Ranges visited, full{{0, p}};
      for (int r = 0; r < 2; ++r) {
        if (residues[r].empty())
          continue;
        int cls = quad.cls[r][k];
        if (cls != kernel::kPartial) {
          // Constant (unknown, never taken with a closed form: visited,
          // not full, which is safe).
          visited = detail::unite(
              visited, cls == kernel::kEmpty ? Ranges{} : Ranges{{0, p}});
          if (cls != kernel::kFull)
            full.clear();
          continue;
        }
        for (int64_t a : residues[r]) {
          Ranges rs = detail::quadrantResidues(nodes, count, quad.leaf[r][k], p,
                                               a, head);
          visited = detail::unite(visited, rs);
          full = detail::intersect(full, rs);
        }
      }
      Ranges v =
          k == 0 ? promptSlots(visited, sk, true) : segmentSlots(visited, sk);
      Ranges f = k == 0 ? promptSlots(full, sk, false) : segmentSlots(full, sk);
      visitedSlots.insert(visitedSlots.end(), v.begin(), v.end());
      fullSlots.insert(fullSlots.end(), f.begin(), f.end());
    }
    split(blocksTouching(detail::normalized(std::move(visitedSlots))),
          blocksInside(detail::normalized(std::move(fullSlots))), out);
  }

  /// Splits each visited stretch of key blocks by the full ones it contains
  /// and appends the runs.
  static void split(const Ranges &touched, const Ranges &inside,
                    std::vector<PermutedRun> &out) {
    for (auto [lo, hi] : touched) {
      int64_t at = lo;
      for (auto [flo, fhi] : inside) {
        if (fhi <= lo || flo >= hi)
          continue;
        if (at < flo)
          out.push_back({at, flo, false});
        out.push_back({flo, fhi, true});
        at = fhi;
      }
      if (at < hi)
        out.push_back({at, hi, false});
    }
  }

  /// Visited and full tiles of every query block.
  void countTiles(int64_t &visited, int64_t &full) const {
    visited = full = 0;
    std::vector<PermutedRun> rs;
    PrefixQuadrants quad(nodes, count, data, perm, head, nq, nk);
    for (int64_t i = 0; i < queryBlocks(); ++i) {
      rs.clear();
      if (perm.prefix > 0)
        prefixRuns(quad, i, rs);
      else
        runs(i, rs);
      for (const PermutedRun &r : rs) {
        visited += r.end - r.begin;
        full += r.full ? r.end - r.begin : 0;
      }
    }
  }

private:
  /// The prompt's key slots (its keys in place) of a set of key residues:
  /// the keys k < sk with k mod P in the set. With P <= bk, a key block
  /// wholly in the prompt holds every residue: it meets any non-empty set
  /// and lies inside none but the set of all residues, so such blocks give
  /// one range when `visited` (a superset meeting the same blocks) and
  /// none otherwise: O(bk / P) ranges rather than O(sk / P).
  Ranges promptSlots(const Ranges &residues, int64_t sk, bool visited) const {
    int64_t p = perm.period;
    if (residues.empty())
      return {};
    if (residues.front() == std::make_pair(int64_t(0), p))
      return {{0, sk}};
    Ranges out;
    int64_t from = 0;
    if (p <= bk && sk >= bk) {
      int64_t whole = sk / bk * bk;
      if (visited)
        out.push_back({0, whole});
      from = whole / p * p;
    }
    for (int64_t base = from; base < sk; base += p)
      for (auto [lo, hi] : residues)
        if (base + lo < sk)
          out.push_back({base + lo, std::min(base + hi, sk)});
    return detail::normalized(std::move(out));
  }
  /// The segment's key slots of a set of key residues (of k mod P): key
  /// k = sk + v sits at slot sk + (its slot in the transpose of the nk - sk
  /// segment keys, by v mod P).
  Ranges segmentSlots(const Ranges &residues, int64_t sk) const {
    Ranges out;
    for (auto [lo, hi] : detail::rotated(residues, -sk, perm.period))
      out.push_back(
          {sk + perm.start(lo, nk - sk), sk + perm.start(hi, nk - sk)});
    return detail::normalized(std::move(out));
  }
  /// The key slots of a set of key residues.
  Ranges keySlots(const Ranges &residues) const {
    Ranges out;
    for (auto [lo, hi] : residues)
      out.push_back({perm.start(lo, nk), perm.start(hi, nk)});
    return detail::normalized(std::move(out));
  }
  /// The key blocks meeting any of the slots.
  Ranges blocksTouching(const Ranges &slots) const {
    Ranges out;
    for (auto [lo, hi] : slots)
      out.push_back({lo / bk, (hi - 1) / bk + 1});
    return detail::normalized(std::move(out));
  }
  /// The key blocks all of whose slots are in `slots` (the last block may
  /// be short).
  Ranges blocksInside(const Ranges &slots) const {
    Ranges out;
    for (auto [lo, hi] : slots)
      out.push_back({(lo + bk - 1) / bk, hi == nk ? (nk + bk - 1) / bk
                                                  : hi / bk});
    return detail::normalized(std::move(out));
  }
};

/// The residue relation of a residue-only program as text, for the IR:
/// which keys k a row at aligned position p sees, every position read mod
/// its leaf's period, e.g. "(k - p + 32) mod 1024 < 65". With `leaf` (a
/// quadrant's leafClasses), constant leaves read "all" or "none" and the
/// combinators fold them.
inline std::string describeResidues(const kernel::Node *nodes, int64_t count,
                                    const std::vector<int> *leaf = nullptr) {
  std::vector<std::string> stack;
  auto modTest = [](const char *x, int64_t phase, int64_t period,
                    int64_t width) {
    std::string v = x;
    if (phase != 0)
      v += (phase > 0 ? " - " : " + ") +
           std::to_string(phase > 0 ? phase : -phase);
    if (v != "k" && v != "p")
      v = "(" + v + ")";
    return v + " mod " + std::to_string(period) + " < " +
           std::to_string(width);
  };
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    if (leaf && n.kind >= kernel::kUnion) { // constants folded away
      size_t base = stack.size() - size_t(n.axis);
      std::vector<std::string> kept;
      std::string drop = n.kind == kernel::kUnion ? "none" : "all";
      std::string decide = n.kind == kernel::kUnion ? "all" : "none";
      bool decided = false;
      if (n.kind == kernel::kDifference) {
        decided = stack[base] == "none" || stack[base + 1] == "all";
        if (stack[base + 1] != "none")
          kept = {stack[base], stack[base + 1]};
        else
          kept = {stack[base]};
      } else {
        for (size_t j = base; j < stack.size(); ++j) {
          decided |= stack[j] == decide;
          if (stack[j] != drop)
            kept.push_back(stack[j]);
        }
      }
      std::string r;
      if (decided)
        r = decide;
      else if (kept.empty())
        r = drop;
      else if (kept.size() == 1)
        r = kept.front();
      else {
        r = n.kind == kernel::kUnion       ? "union("
            : n.kind == kernel::kIntersect ? "intersect("
                                           : "difference(";
        for (size_t j = 0; j < kept.size(); ++j)
          r += (j == 0 ? "" : ", ") + kept[j];
        r += ")";
      }
      stack.resize(base);
      stack.push_back(r);
      continue;
    }
    if (leaf && (*leaf)[i] != kernel::kPartial) {
      stack.push_back((*leaf)[i] == kernel::kFull ? "all" : "none");
      continue;
    }
    if (n.kind >= kernel::kUnion) {
      size_t base = stack.size() - size_t(n.axis);
      std::string r = n.kind == kernel::kUnion       ? "union("
                      : n.kind == kernel::kIntersect ? "intersect("
                                                     : "difference(";
      for (size_t j = base; j < stack.size(); ++j)
        r += (j == base ? "" : ", ") + stack[j];
      stack.resize(base);
      stack.push_back(r + ")");
      continue;
    }
    static const char *axes[] = {"k", "p", "k - p", "p - k"};
    switch (n.kind) {
    case kernel::kAll:
      stack.push_back("all");
      break;
    case kernel::kPeriodic:
      stack.push_back(modTest(axes[n.axis], n.c, n.a, n.b));
      break;
    case kernel::kShards:
      stack.push_back("k div " + std::to_string(n.a) + " mod " +
                      std::to_string(n.b) + " = (h + " + std::to_string(n.c) +
                      ") mod " + std::to_string(n.b));
      break;
    default:
      stack.push_back("none");
    }
  }
  return stack.size() == 1 ? stack.front() : "none";
}

/// The closed form of a prefix layout as text, for the IR: what the prompt
/// rows and the segment rows see of the prompt keys and of the segment
/// keys, at Nq = Nk = n, e.g. "prefix 256, residues mod 1024 after it:
/// prompt rows: all keys; segment rows: prompt keys all, segment keys R(p)
/// = {k : (k - p + 16) mod 1024 < 33}". The program must have a closed
/// form there (closedFormReason).
inline std::string describePrefixed(const kernel::Node *nodes, int64_t count,
                                    const kernel::i64 *data,
                                    const PeriodTranspose &perm, int64_t head,
                                    int64_t n) {
  PrefixQuadrants quad(nodes, count, data, perm, head, n, n);
  auto part = [&](int r, int k) -> std::string {
    if (quad.cls[r][k] == kernel::kFull)
      return "all";
    if (quad.cls[r][k] == kernel::kEmpty)
      return "none";
    return "R(p) = {k : " + describeResidues(nodes, count, &quad.leaf[r][k]) +
           "}";
  };
  std::string out = "prefix " + std::to_string(perm.prefix) +
                    ", residues mod " + std::to_string(perm.period) +
                    " after it";
  const char *rowNames[2] = {"prompt rows", "segment rows"};
  for (int r = 0; r < 2; ++r) {
    std::string prompt = part(r, 0), segment = part(r, 1);
    out += std::string(r == 0 ? ": " : "; ") + rowNames[r] + ": ";
    if (prompt == segment && (prompt == "all" || prompt == "none"))
      out += prompt == "all" ? "all keys" : "no key";
    else
      out += "prompt keys " + prompt + ", segment keys " + segment;
  }
  return out;
}

} // namespace tessera::layout

#endif // TESSERA_CPU_LAYOUT_H
