//===- Runs.h - run expressions: what a head group's walk visits -*- C++ -*-===//
//
// The compile-time form of a head group's block schedule: a tree whose
// leaves are closed-form run families (a key interval with bounds affine in
// the query block's first and last positions p0 and p1, periodic families,
// listed ranges, shards, shifted groups, listed blocks, row-only sets) and
// whose inner nodes are the run algebra (union, intersection, difference).
// Built from a pattern's reference meaning and simplified (intersections of
// intervals are one interval); printed in the L1 IR by --attn-lower-runs and
// turned into the generated C++ of each bundle. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SCHEDULE_RUNS_H
#define TESSERA_SCHEDULE_RUNS_H

#include "tessera/Semantics/Pattern.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::schedule {

/// c, p0 + c or p1 + c; in the transposed runs (Positions), c, k0 + c or
/// k1 + c.
struct Atom {
  enum Var : int64_t { Const = 0, P0 = 1, P1 = 2, K0 = 3, K1 = 4 };
  int64_t var = Const;
  int64_t c = 0;
  bool operator==(const Atom &o) const { return var == o.var && c == o.c; }
};

/// The maximum (lower bounds) or minimum (upper bounds) of its atoms; an
/// empty lower bound is 0, an empty upper bound Nk - 1 (keys are always
/// clipped to [0, Nk)).
using Bound = std::vector<Atom>;

struct RunExpr {
  enum Kind {
    All,
    None,
    Interval,   ///< keys [lo, hi], every row sees [flo, fhi]
    PeriodicK,  ///< keys with (k - phase) mod period < width
    PeriodicD,  ///< offsets d with (d - phase) mod period < width
    PeriodicP,  ///< rows with (p - phase) mod period < width
    ListedK,    ///< keys in `ranges` (half-open, sorted, disjoint)
    ListedD,    ///< offsets in `ranges`
    ListedP,    ///< rows in `ranges`
    Shards,     ///< a = block, b = shards, c = offset
    Groups,     ///< a = size, b = shift
    Blocks,     ///< a = block_q, b = block_k, `blocks` listed
    Union,
    Intersect,
    Difference,
    /// Transposed runs only: for the key block [k0, k1], the query
    /// positions [lo, hi] see some key, [flo, fhi] every key (atoms Const,
    /// K0, K1; an empty bound is the first or the last query's position).
    Positions,
  };
  Kind kind = All;
  Bound lo, hi, flo, fhi;     ///< Interval
  int64_t a = 0, b = 0, c = 0; ///< period, width, phase (Periodic*); others
  std::vector<std::pair<int64_t, int64_t>> ranges; ///< Listed*
  std::vector<std::pair<int64_t, int64_t>> blocks; ///< Blocks, sorted
  std::vector<RunExpr> children;

  bool operator==(const RunExpr &o) const;
};

/// The simplified run expression of a pattern (not `skip`).
RunExpr buildRuns(const semantics::Pattern &pattern);

/// The transposed run expression of a forward one (as buildRuns makes it):
/// walked per key block [k0, k1], it yields the runs of query blocks that
/// see the block. Offset constraints of an Interval become Positions (d in
/// [a, b]: positions [k0 - b, k1 - a], full [k1 - b, k0 - a]); its key
/// constraints a ListedK leaf (one class for the whole key block); a
/// block list is transposed to (key block, query block) pairs; every other
/// leaf keeps its set (its walk is the transposed one, see
/// kernel::leafRunFromT); combinators stay.
RunExpr transposeRuns(const RunExpr &forward);

/// Simplifies in place: flattens nested unions and intersections, drops
/// neutral children, merges the intervals of an intersection into one.
void simplifyRuns(RunExpr &e);

/// Adds the implied clip to a lower bound and drops atoms made redundant by
/// another of the same variable (keeps the bound's meaning).
void normalizeBounds(RunExpr &e);

/// C++ of a head group for tessera/kernel/Program.h: the data arrays the
/// code reads and `struct NAME { static bool allowed(p, k, head, numHeads);
/// static Run runFrom(const RunCtx &, i64 kb); }`, straight-line code with
/// the pattern's constants; host and device (TESSERA_HD).
std::string emitGroupCode(const semantics::Pattern &pattern,
                          const RunExpr &runs, const std::string &name);

/// "p0 - 256", "min(p1, 63)", "k1 + 256": a bound as printed in the IR.
/// `upper` selects min and the empty form "end".
std::string printBound(const Bound &b, bool upper);

} // namespace tessera::schedule

#endif // TESSERA_SCHEDULE_RUNS_H
