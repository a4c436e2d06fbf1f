//===- Pattern.cpp - reference semantics of attention patterns ------------===//

#include "tessera/Semantics/Pattern.h"

#include <algorithm>
#include <cstdlib>

using namespace tessera::semantics;

bool IndexSet::contains(int64_t x) const {
  if (period > 0)
    return floorMod(x - phase, period) < width;
  // First range whose end is beyond x.
  auto it =
      std::upper_bound(ranges.begin(), ranges.end(), x,
                       [](int64_t v, const std::pair<int64_t, int64_t> &r) {
                         return v < r.second;
                       });
  return it != ranges.end() && it->first <= x;
}

bool tessera::semantics::allowed(const Dense &, const Coord &) { return true; }

bool tessera::semantics::allowed(const Causal &, const Coord &c) {
  return c.d <= 0;
}

bool tessera::semantics::allowed(const Window &p, const Coord &c) {
  return -p.before <= c.d && c.d <= p.after;
}

bool tessera::semantics::allowed(const Sink &p, const Coord &c) {
  return c.k < p.count && c.d <= 0;
}

bool tessera::semantics::allowed(const AShape &p, const Coord &c) {
  return allowed(Sink{p.sink}, c) || allowed(Window{p.before, p.after}, c);
}

bool tessera::semantics::allowed(const MultiDiagonal &p, const Coord &c) {
  if (p.stride > 0) {
    int64_t r = floorMod(c.d, p.stride);
    return r <= p.width || p.stride - r <= p.width;
  }
  for (int64_t o : p.offsets)
    if (c.d - o <= p.width && o - c.d <= p.width)
      return true;
  return false;
}

bool tessera::semantics::allowed(const VerticalStripe &p, const Coord &c) {
  return p.keys.contains(c.k);
}

bool tessera::semantics::allowed(const HorizontalStripe &p, const Coord &c) {
  return p.queries.contains(c.pos);
}

bool tessera::semantics::allowed(const Grid &p, const Coord &c) {
  return floorMod(c.k - p.phase, p.stride) < p.verticalWidth ||
         floorMod(-c.d - p.phase, p.stride) < p.slashWidth;
}

bool tessera::semantics::allowed(const StridedShards &p, const Coord &c) {
  return floorMod(c.k / p.block, p.shards) ==
         floorMod(c.head + p.offset, p.shards);
}

bool tessera::semantics::allowed(const ShiftedGroups &p, const Coord &c) {
  int64_t s = c.head >= c.numHeads / 2 ? p.shift : 0;
  return floorDiv(c.pos - s, p.size) == floorDiv(c.k - s, p.size);
}

bool tessera::semantics::allowed(const BlockSparse &p, const Coord &c) {
  std::pair<int64_t, int64_t> key{floorDiv(c.pos, p.blockQ), c.k / p.blockK};
  return std::binary_search(p.blocks.begin(), p.blocks.end(), key);
}

bool tessera::semantics::allowed(const Skip &, const Coord &) { return false; }

bool tessera::semantics::allowed(const Union &p, const Coord &c) {
  return std::any_of(p.parts.begin(), p.parts.end(),
                     [&](const Pattern &x) { return allowed(x, c); });
}

bool tessera::semantics::allowed(const Intersect &p, const Coord &c) {
  return std::all_of(p.parts.begin(), p.parts.end(),
                     [&](const Pattern &x) { return allowed(x, c); });
}

bool tessera::semantics::allowed(const Difference &p, const Coord &c) {
  return allowed(p.parts[0], c) && !allowed(p.parts[1], c);
}

bool tessera::semantics::allowed(const Pattern &p, const Coord &c) {
  return std::visit([&](const auto &node) { return allowed(node, c); }, p.node);
}

std::vector<uint8_t> tessera::semantics::denseMask(const Pattern &p,
                                                   int64_t head, int64_t nq,
                                                   int64_t nk,
                                                   int64_t numHeads) {
  std::vector<uint8_t> mask(static_cast<size_t>(nq * nk));
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t k = 0; k < nk; ++k)
      mask[q * nk + k] = allowed(p, Coord(q, k, head, nq, nk, numHeads));
  return mask;
}

int64_t tessera::semantics::countAllowed(const Pattern &p, int64_t head,
                                         int64_t nq, int64_t nk,
                                         int64_t numHeads) {
  int64_t n = 0;
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t k = 0; k < nk; ++k)
      n += allowed(p, Coord(q, k, head, nq, nk, numHeads));
  return n;
}
