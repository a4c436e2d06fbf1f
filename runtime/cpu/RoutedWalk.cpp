//===- RoutedWalk.cpp - head routing's tables for the CUDA kernel ---------===//
//
// cpu::routedWalk (RoutedWalk.h): per (batch entry, launch slot), the
// active rows packed into query tiles of 64, each tile's key tiles the
// union of its rows' runs at 64 x 64, its masks evaluated per row.
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/RoutedWalk.h"
#include "tessera/kernel/ProgramRuns.h"

#include <algorithm>
#include <climits>

namespace tessera::cpu {

namespace k = tessera::kernel;

namespace {

/// One visited (key tile, tile row) pair of a query tile and its class.
struct Visit {
  int64_t key;
  int row;
  int cls;
  bool operator<(const Visit &o) const {
    return key != o.key ? key < o.key : row < o.row;
  }
};

/// Appends query tile `rows` (active rows of head `head`, at most 64) of
/// the group `runs` (its program nodes[0, count)) to `w`.
void appendTile(const k::LayerTable &t, const k::ProgramRuns &runs,
                const k::Node *nodes, int64_t count, int64_t head,
                const int64_t *rows, int n, int64_t nq, int64_t nk,
                std::vector<Visit> &visits, RoutedWalk &w) {
  visits.clear();
  for (int i = 0; i < n; ++i) {
    const k::RunCtx c =
        k::makeRunCtx(rows[i], rows[i] + 1, nq, nk, 64, head, t.numHeads);
    runs.forEachRun(c, [&](const k::Run &r) {
      for (int64_t j = r.lo; j <= r.hi; ++j)
        visits.push_back({j, i, r.cls});
    });
  }
  std::sort(visits.begin(), visits.end());
  for (size_t v = 0; v < visits.size();) {
    const int64_t key = visits[v].key;
    size_t end = v;
    bool full = true;
    for (; end < visits.size() && visits[end].key == key; ++end)
      full &= visits[end].cls == k::kFull;
    // Full: every row of the tile sees every key of it (rows past n are
    // padding, never stored).
    full &= int64_t(end - v) == n;
    w.tileKey.push_back(int(key));
    if (full) {
      w.tileMask.push_back(-1);
      ++w.fullTiles;
    } else {
      w.tileMask.push_back(int(w.masks.size() / 64));
      ++w.partialTiles;
      const size_t at = w.masks.size();
      w.masks.resize(at + 64, 0);
      const int64_t k0 = key * 64, cols = std::min<int64_t>(64, nk - k0);
      const uint64_t below = cols == 64 ? ~0ull : (1ull << cols) - 1;
      for (size_t x = v; x < end; ++x) {
        uint64_t &bits = w.masks[at + size_t(visits[x].row)];
        if (visits[x].cls == k::kFull) {
          bits = below;
          continue;
        }
        const int64_t q = rows[visits[x].row];
        for (int64_t c = 0; c < cols; ++c)
          if (k::allowedPair(nodes, count, t.data, q, k0 + c, nq, nk, head,
                             t.numHeads))
            bits |= 1ull << c;
      }
    }
    v = end;
  }
  w.tileStart.push_back(int(w.tileKey.size()));
}

} // namespace

std::string routedWalk(const k::LayerTable &table, int64_t batch, int64_t nq,
                       int64_t nk, const uint8_t *active, RoutedWalk &w) {
  w = RoutedWalk{};
  if ((nk + 63) / 64 > INT_MAX)
    return "head routing on CUDA: " + std::to_string(nk) +
           " keys are past 2^31 key tiles";
  const int64_t H = table.numHeads, slots = table.numComputed;
  int64_t numGroups = 0;
  for (int64_t i = 0; i < slots; ++i)
    numGroups = std::max<int64_t>(numGroups, table.headGroup[i] + 1);
  std::vector<k::ProgramRuns> runs;
  runs.reserve(size_t(numGroups));
  for (int64_t g = 0; g < numGroups; ++g)
    runs.emplace_back(table.nodes + table.groupBegin[g],
                      table.groupBegin[g + 1] - table.groupBegin[g],
                      table.data);
  w.heads.assign(table.computedHead, table.computedHead + slots);
  w.keyOf.resize(size_t(nk));
  for (int64_t x = 0; x < nk; ++x)
    w.keyOf[size_t(x)] = x;
  std::vector<Visit> visits;
  std::vector<int64_t> idle;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t y = 0; y < slots; ++y) {
      const int64_t head = table.computedHead[y], g = table.headGroup[y];
      const int64_t row0 = int64_t(w.rowOf.size());
      const int64_t tile0 = int64_t(w.tileStart.size()) - 1;
      idle.clear();
      for (int64_t r = 0; r < nq; ++r)
        (active[(b * nq + r) * H + head] ? w.rowOf : idle).push_back(r);
      const int64_t n = int64_t(w.rowOf.size()) - row0;
      for (int64_t x = 0; x < n; x += 64)
        appendTile(table, runs[size_t(g)], table.nodes + table.groupBegin[g],
                   table.groupBegin[g + 1] - table.groupBegin[g], head,
                   w.rowOf.data() + row0 + x, int(std::min<int64_t>(64, n - x)),
                   nq, nk, visits, w);
      if (w.tileKey.size() > size_t(INT_MAX))
        return "head routing on CUDA: the call's walk has past 2^31 tiles";
      w.rowOf.insert(w.rowOf.end(), idle.begin(), idle.end());
      w.tables.insert(w.tables.end(), {row0, n, tile0, int64_t(idle.size())});
      w.gridX =
          std::max(w.gridX, (n + 63) / 64 + (int64_t(idle.size()) + 63) / 64);
    }
  return "";
}

} // namespace tessera::cpu
