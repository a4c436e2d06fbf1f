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
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::layout {

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
struct PeriodTranspose {
  int64_t period = 2;
  int64_t prefix = 0;

  int64_t slot(int64_t t, int64_t n) const {
    int64_t kept = std::min(prefix, n);
    return t < kept ? t : kept + segmentSlot(t - kept, n - kept);
  }

  /// The inverse of slot: the token at slot s.
  int64_t token(int64_t s, int64_t n) const {
    int64_t kept = std::min(prefix, n);
    return s < kept ? s : kept + segmentToken(s - kept, n - kept);
  }

  /// The first slot of residue c (0 <= c <= period; start(period) = n) of
  /// a transpose without prefix.
  int64_t start(int64_t c, int64_t n) const {
    int64_t q = n / period, r = n % period;
    return c * q + std::min(c, r);
  }

private:
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

/// "" when the program nodes[0, count) reads positions only through their
/// residues mod `period` (for `head`), so that its permuted runs have the
/// closed form above; else why not, naming the leaf.
inline std::string residueOnlyReason(const kernel::Node *nodes, int64_t count,
                                     int64_t period, int64_t head) {
  for (int64_t i = 0; i < count; ++i) {
    const kernel::Node &n = nodes[i];
    switch (n.kind) {
    case kernel::kAll:
    case kernel::kNone:
    case kernel::kUnion:
    case kernel::kIntersect:
    case kernel::kDifference:
      continue;
    case kernel::kPeriodic:
      if (n.b >= n.a || period % n.a == 0)
        continue;
      return "a periodic leaf of period " + std::to_string(n.a) +
             " that does not divide " + std::to_string(period);
    case kernel::kShards: {
      kernel::i64 shardPeriod, phase;
      kernel::shardKeys(n.a, n.b, n.c, head, shardPeriod, phase);
      if (shardPeriod < kernel::kUnbounded && period % shardPeriod == 0)
        continue;
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
  return "";
}

/// "" when the runs of `perm` for the program have the closed form below
/// (no prefix, and a residue-only program for its period), else why not.
inline std::string closedFormReason(const kernel::Node *nodes, int64_t count,
                                    const PeriodTranspose &perm,
                                    int64_t head) {
  if (perm.prefix > 0)
    return "a prefix kept in place (residues shift at the segment)";
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

/// Key blocks [begin, end) of one class in a permuted query block's walk.
struct PermutedRun {
  int64_t begin = 0, end = 0;
  bool full = false;
};

/// The closed-form schedule of one head of a residue-only program in the
/// period transpose `perm` (without prefix: closedFormReason) of nq queries
/// and nk keys (each sequence
/// permuted over its own length), in tiles of bq x bk slots.
struct PermutedRuns {
  const kernel::Node *nodes = nullptr;
  int64_t count = 0;
  PeriodTranspose perm;
  int64_t nq = 0, nk = 0, bq = 64, bk = 64, head = 0;

  int64_t queryBlocks() const { return (nq + bq - 1) / bq; }

  /// Appends the runs of query block i (slots [i * bq, (i + 1) * bq)) to
  /// `out`, in key order; partial runs need the element predicate (on the
  /// original positions), full ones none.
  void runs(int64_t i, std::vector<PermutedRun> &out) const {
    int64_t p = perm.period, s0 = i * bq, s1 = std::min(nq, s0 + bq);
    int64_t c0 = perm.token(s0, nq) % p, c1 = perm.token(s1 - 1, nq) % p;
    Ranges visited, full{{0, p}};
    for (int64_t c = c0; c <= c1; ++c) {
      Ranges r = keyResidues(nodes, count, p,
                             kernel::floorMod(c + nk - nq, p), head);
      visited = detail::unite(visited, r);
      full = detail::intersect(full, r);
    }
    Ranges touched = blocksTouching(keySlots(visited));
    Ranges inside = blocksInside(keySlots(full));
    // Split each visited stretch by the full ones it contains.
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
    for (int64_t i = 0; i < queryBlocks(); ++i) {
      rs.clear();
      runs(i, rs);
      for (const PermutedRun &r : rs) {
        visited += r.end - r.begin;
        full += r.full ? r.end - r.begin : 0;
      }
    }
  }

private:
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
/// its leaf's period, e.g. "(k - p + 32) mod 1024 < 65".
inline std::string describeResidues(const kernel::Node *nodes,
                                    int64_t count) {
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

} // namespace tessera::layout

#endif // TESSERA_CPU_LAYOUT_H
