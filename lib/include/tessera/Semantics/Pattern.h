//===- Pattern.h - reference semantics of attention patterns ----*- C++ -*-===//
//
// The single source of truth for what each pattern means. A Pattern is a plain
// C++ value (no MLIR) so that the runtime and the CPU executor can use it too.
// `allowed` answers, for one head of a layer with `numHeads` query heads and
// query/key lengths Nq/Nk, whether query row q may attend to key k. The
// meaning of every pattern is written in docs/patterns.md.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SEMANTICS_PATTERN_H
#define TESSERA_SEMANTICS_PATTERN_H

#include <cstdint>
#include <utility>
#include <variant>
#include <vector>

namespace tessera::semantics {

/// Floor division and modulo for a positive divisor.
inline int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
inline int64_t floorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  return r < 0 ? r + b : r;
}

/// One (query, key, head) triple with the derived positions every pattern
/// uses: the bottom-right aligned query position `pos = q + Nk - Nq` and the
/// key's offset from the query's diagonal `d = k - pos`.
struct Coord {
  int64_t q, k, head, numHeads;
  int64_t pos, d;
  Coord(int64_t q, int64_t k, int64_t head, int64_t nq, int64_t nk,
        int64_t numHeads)
      : q(q), k(k), head(head), numHeads(numHeads), pos(q + nk - nq),
        d(k - (q + nk - nq)) {}
};

struct Pattern;

struct Dense {};
struct Causal {};
struct Window {
  int64_t before = 0, after = 0;
};
struct Sink {
  int64_t count = 0;
};
struct AShape {
  int64_t sink = 0, before = 0, after = 0;
};
struct MultiDiagonal {
  int64_t stride = 0;           ///< 0: use offsets.
  std::vector<int64_t> offsets; ///< Strictly increasing.
  int64_t width = 0;
};
/// The index set of a stripe: half-open ranges, or (x - phase) mod period <
/// width.
struct IndexSet {
  std::vector<std::pair<int64_t, int64_t>> ranges; ///< Sorted, disjoint.
  int64_t period = 0, width = 0, phase = 0;
  bool contains(int64_t x) const;
};
struct VerticalStripe {
  IndexSet keys;
};
struct HorizontalStripe {
  IndexSet queries;
};
struct Grid {
  int64_t stride = 1, verticalWidth = 0, slashWidth = 0, phase = 0;
};
struct StridedShards {
  int64_t shards = 1, block = 1, offset = 0;
};
struct ShiftedGroups {
  int64_t size = 1, shift = 0;
};
struct BlockSparse {
  int64_t blockQ = 1, blockK = 1;
  std::vector<std::pair<int64_t, int64_t>> blocks; ///< Sorted, unique.
};
struct Skip {};
struct Union {
  std::vector<Pattern> parts;
};
struct Intersect {
  std::vector<Pattern> parts;
};
struct Difference {
  std::vector<Pattern> parts; ///< Exactly two: lhs minus rhs.
};

struct Pattern {
  std::variant<Dense, Causal, Window, Sink, AShape, MultiDiagonal,
               VerticalStripe, HorizontalStripe, Grid, StridedShards,
               ShiftedGroups, BlockSparse, Skip, Union, Intersect, Difference>
      node;
};

/// One reference predicate per pattern.
bool allowed(const Dense &, const Coord &c);
bool allowed(const Causal &, const Coord &c);
bool allowed(const Window &p, const Coord &c);
bool allowed(const Sink &p, const Coord &c);
bool allowed(const AShape &p, const Coord &c);
bool allowed(const MultiDiagonal &p, const Coord &c);
bool allowed(const VerticalStripe &p, const Coord &c);
bool allowed(const HorizontalStripe &p, const Coord &c);
bool allowed(const Grid &p, const Coord &c);
bool allowed(const StridedShards &p, const Coord &c);
bool allowed(const ShiftedGroups &p, const Coord &c);
bool allowed(const BlockSparse &p, const Coord &c);
bool allowed(const Skip &, const Coord &c);
bool allowed(const Union &p, const Coord &c);
bool allowed(const Intersect &p, const Coord &c);
bool allowed(const Difference &p, const Coord &c);
bool allowed(const Pattern &p, const Coord &c);

/// Convenience: may query row `q` attend to key `k` in head `head`?
inline bool allowed(const Pattern &p, int64_t q, int64_t k, int64_t head,
                    int64_t nq, int64_t nk, int64_t numHeads) {
  return allowed(p, Coord(q, k, head, nq, nk, numHeads));
}

/// The dense Nq x Nk mask of one head, row-major, 1 where allowed.
std::vector<uint8_t> denseMask(const Pattern &p, int64_t head, int64_t nq,
                               int64_t nk, int64_t numHeads);

/// Number of allowed pairs of one head.
int64_t countAllowed(const Pattern &p, int64_t head, int64_t nq, int64_t nk,
                     int64_t numHeads);

} // namespace tessera::semantics

#endif // TESSERA_SEMANTICS_PATTERN_H
