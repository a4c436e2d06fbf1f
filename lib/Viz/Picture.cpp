//===- Picture.cpp - pictures of one head's mask --------------------------===//

#include "tessera/Viz/Picture.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/kernel/ProgramRuns.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <type_traits>

namespace tessera::viz {

namespace s = tessera::semantics;
namespace k = tessera::kernel;

static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

//===----------------------------------------------------------------------===//
// The grid
//===----------------------------------------------------------------------===//

/// Every pair through the schedule program's predicate (O(nodes) a pair,
/// whatever the pattern's lists hold).
static bool drawElements(const s::Pattern &pattern, int64_t head,
                         int64_t numHeads, HeadGrid &g, std::string &error) {
  g.elementLevel = true;
  g.rows = g.nq;
  g.cols = g.nk;
  g.cls.assign(size_t(g.rows * g.cols), kCellEmpty);
  g.density.assign(g.cls.size(), 0.0f);
  if (std::holds_alternative<s::Skip>(pattern.node))
    return true;
  schedule::Program program;
  if (!schedule::lowerPattern(pattern, program, error))
    return false;
  int64_t count = 0;
  for (int64_t q = 0; q < g.nq; ++q)
    for (int64_t k = 0; k < g.nk; ++k)
      if (k::allowedPair(program.nodes.data(), int64_t(program.nodes.size()),
                         program.data.data(), q, k, g.nq, g.nk, head,
                         numHeads)) {
        g.cls[size_t(q * g.cols + k)] = kCellFull;
        g.density[size_t(q * g.cols + k)] = 1.0f;
        ++count;
      }
  g.totalDensity = double(count) / (double(g.nq) * double(g.nk));
  return true;
}

namespace {
/// splitmix64: the deterministic jitter of sample positions (the same
/// picture every time).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// A seed for the draws of (a, b).
uint64_t seed(uint64_t a, uint64_t b) { return mix(mix(a) ^ b); }

/// A number in [0, n) drawn from (seed, i).
int64_t draw(uint64_t seed, uint64_t i, int64_t n) {
  return int64_t((unsigned __int128)mix(seed + i) * uint64_t(n) >> 64);
}

/// The block level of one head: the schedule walk (classes, full pairs)
/// and the shades of cells with partial tiles.
class BlockDrawer {
public:
  BlockDrawer(const s::Pattern &pattern, const schedule::Program &program,
              int64_t head, int64_t numHeads, int64_t f,
              const DrawOptions &options, HeadGrid &g)
      : pattern(pattern), program(program),
        runs(program.nodes.data(), int64_t(program.nodes.size()),
             program.data.data()),
        head(head), numHeads(numHeads), options(options), g(g), nq(g.nq),
        nk(g.nk), bq(g.blockQ), bk(g.blockK), tq(ceilDiv(nq, bq)),
        tk(ceilDiv(nk, bk)), f(f) {}

  /// The schedule walk: false when it would pass options.runBudget.
  bool walk();
  /// The shades after walk().
  void shade();
  /// Without the walk: the classes by tile tests, the shades by pairs.
  bool test(std::string &error);
  void sample();

private:
  k::RunCtx ctx(int64_t qb) const {
    int64_t q0 = qb * bq;
    return k::makeRunCtx(q0, std::min(q0 + bq, nq), nq, nk, bk, head,
                         numHeads);
  }
  void report(double share) const {
    if (options.progress)
      options.progress(share);
  }
  /// Pairs of cell (cr, cc).
  double cellPairs(int64_t cr, int64_t cc) const {
    int64_t r0 = cr * g.rowSpan, c0 = cc * g.colSpan;
    return double(std::min(r0 + g.rowSpan, nq) - r0) *
           double(std::min(c0 + g.colSpan, nk) - c0);
  }
  /// Tiles of cell (cr, cc).
  int64_t cellTiles(int64_t cr, int64_t cc) const {
    return (std::min(tq, (cr + 1) * f) - cr * f) *
           (std::min(tk, (cc + 1) * f) - cc * f);
  }
  /// The schedule program's predicate: O(nodes), whatever the pattern's
  /// lists hold.
  bool allowed(int64_t q, int64_t k) const {
    return k::allowedPair(program.nodes.data(), int64_t(program.nodes.size()),
                          program.data.data(), q, k, nq, nk, head, numHeads);
  }
  double rowEstimate(int64_t q, int64_t cell, int64_t segBegin,
                     int64_t segEnd, int64_t partialKeys, int64_t keys);

  void search(int64_t a0, int64_t a1, int64_t b0, int64_t b1, bool &nonEmpty,
              bool &nonFull);

  const s::Pattern &pattern;
  const schedule::Program &program;
  k::ProgramRuns runs;
  int64_t head, numHeads;
  const DrawOptions &options;
  HeadGrid &g;
  int64_t nq, nk, bq, bk, tq, tk, f;

  // From classify() for shade().
  std::vector<uint8_t> rowHasPartial; ///< per cell row
  int64_t partialCells = 0;
  double partialPairs = 0, total = 0;
  int64_t tests = 0; ///< tile tests of test()

  /// A key range of one partial run inside one cell; `offset`: the partial
  /// keys of the cell before it.
  struct Segment {
    int64_t k0, length, offset;
  };
  std::vector<Segment> segments;
};
} // namespace

/// Walks every query block's runs once: exact classes and full pairs per
/// cell, cell row by cell row, with O(1) work per run (difference arrays
/// over the cells a run covers).
bool BlockDrawer::walk() {
  // Runs per query block vary little: when 64 query blocks spread over the
  // sequence say the walk would pass the budget, do not start it.
  if (tq > 64) {
    int64_t probed = 0;
    for (int64_t i = 0; i < 64; ++i) {
      k::RunCtx c = ctx(i * tq / 64);
      for (k::Run r = runs.runFrom(c, 0); k::isRun(r) && probed <= 64 * 1024;
           r = runs.runFrom(c, r.hi + 1))
        ++probed;
    }
    if (double(probed + 64) / 64.0 * double(tq) > double(options.runBudget))
      return false;
  }
  const int64_t cols = g.cols;
  std::vector<int64_t> visited(size_t(cols + 1)), full(size_t(cols + 1));
  std::vector<double> fullPairs(size_t(cols + 1));
  rowHasPartial.assign(size_t(g.rows), 0);
  double fullTotal = 0;
  // Adds `v` to cells [c0, c1] of a difference array.
  auto addRange = [](auto &diff, int64_t c0, int64_t c1, auto v) {
    if (c0 > c1)
      return;
    diff[size_t(c0)] += v;
    diff[size_t(c1 + 1)] -= v;
  };
  for (int64_t cr = 0; cr < g.rows; ++cr) {
    std::fill(visited.begin(), visited.end(), 0);
    std::fill(full.begin(), full.end(), 0);
    std::fill(fullPairs.begin(), fullPairs.end(), 0.0);
    for (int64_t qb = cr * f; qb < std::min(tq, (cr + 1) * f); ++qb) {
      if ((qb & 1023) == 0)
        report(0.5 * double(qb) / double(tq));
      k::RunCtx c = ctx(qb);
      double rowsIn = double(c.q1 - c.q0);
      ++g.walked;
      for (k::Run r = runs.runFrom(c, 0); k::isRun(r);
           r = runs.runFrom(c, r.hi + 1)) {
        if (++g.walked > options.runBudget)
          return false;
        int64_t lo = r.lo, hi = r.hi, n = hi - lo + 1, k0 = lo * bk,
                k1 = std::min((hi + 1) * bk, nk);
        int64_t c0 = lo / f, c1 = hi / f;
        bool isFull = r.cls == k::kFull;
        if (!isFull) {
          partialPairs += rowsIn * double(k1 - k0);
          rowHasPartial[size_t(cr)] = 1;
        }
        // The first and last cells by hand, the ones between whole.
        auto addCell = [&](int64_t cc, int64_t tiles, int64_t keys) {
          addRange(visited, cc, cc, tiles);
          if (isFull) {
            addRange(full, cc, cc, tiles);
            addRange(fullPairs, cc, cc, rowsIn * double(keys));
          }
        };
        if (c0 == c1) {
          addCell(c0, n, k1 - k0);
          continue;
        }
        addCell(c0, (c0 + 1) * f - lo, (c0 + 1) * g.colSpan - k0);
        addCell(c1, hi - c1 * f + 1, k1 - c1 * g.colSpan);
        addRange(visited, c0 + 1, c1 - 1, f);
        if (isFull) {
          addRange(full, c0 + 1, c1 - 1, f);
          addRange(fullPairs, c0 + 1, c1 - 1, rowsIn * double(g.colSpan));
        }
      }
    }
    int64_t v = 0, fu = 0;
    double fp = 0;
    for (int64_t cc = 0; cc < cols; ++cc) {
      v += visited[size_t(cc)];
      fu += full[size_t(cc)];
      fp += fullPairs[size_t(cc)];
      size_t at = size_t(cr * cols + cc);
      g.cls[at] = v == 0                     ? kCellEmpty
                  : fu == cellTiles(cr, cc) ? kCellFull
                                             : kCellPartial;
      g.density[at] = float(fp / cellPairs(cr, cc));
      partialCells += v > fu;
      fullTotal += fp;
    }
  }
  total = fullTotal;
  return true;
}

/// The allowed pairs of row q among the `partialKeys` keys of cell `cell`'s
/// partial tiles (segments [segBegin, segEnd)): all of them counted when
/// `keys` is at least partialKeys, else estimated from `keys` samples, one
/// at a random place in each of `keys` equal strata of those keys.
double BlockDrawer::rowEstimate(int64_t q, int64_t cell, int64_t segBegin,
                                int64_t segEnd, int64_t partialKeys,
                                int64_t keys) {
  int64_t hits = 0;
  if (keys >= partialKeys) {
    for (int64_t i = segBegin; i < segEnd; ++i) {
      const Segment &sg = segments[size_t(i)];
      for (int64_t k = sg.k0; k < sg.k0 + sg.length; ++k)
        hits += allowed(q, k);
    }
    return double(hits);
  }
  g.sampled = true;
  auto first = segments.begin() + segBegin, last = segments.begin() + segEnd;
  uint64_t sd = seed(uint64_t(q), uint64_t(cell));
  for (int64_t j = 0; j < keys; ++j) {
    int64_t from = j * partialKeys / keys,
            to = (j + 1) * partialKeys / keys; // stratum [from, to)
    int64_t pos = from + draw(sd, uint64_t(j), std::max<int64_t>(to - from, 1));
    auto it = std::upper_bound(
                  first, last, pos,
                  [](int64_t p, const Segment &sg) { return p < sg.offset; }) -
              1;
    hits += allowed(q, it->k0 + (pos - it->offset));
  }
  return double(hits) * double(partialKeys) / double(keys);
}

/// Shades the cells with partial tiles: their full pairs are known from the
/// walk; the pairs of their partial tiles are counted on every row when
/// they hold at most options.pairBudget pairs in all, else on `rows` rows
/// per cell row (one at a random place in each of `rows` equal strata) and
/// `keys` keys per row and cell, rows x keys ~ pairBudget / partialCells.
void BlockDrawer::shade() {
  bool exact = partialPairs <= double(options.pairBudget);
  int64_t perCell = std::max<int64_t>(
      1, options.pairBudget / std::max<int64_t>(partialCells, 1));
  int64_t sampleRows = std::max<int64_t>(1, int64_t(std::sqrt(perCell)));
  std::vector<double> partialAllowed(size_t(g.cols));
  // The cells of the current query block's partial keys: cell, segments
  // [begin, end), partial keys.
  struct Touched {
    int64_t cell, begin, end, keys;
  };
  std::vector<Touched> touched;
  for (int64_t cr = 0; cr < g.rows; ++cr) {
    report(0.5 + 0.5 * double(cr) / double(g.rows));
    if (!rowHasPartial[size_t(cr)])
      continue;
    int64_t r0 = cr * g.rowSpan, r1 = std::min(r0 + g.rowSpan, nq);
    int64_t n = r1 - r0;
    int64_t strata = exact ? n : std::min(n, sampleRows);
    int64_t keys = exact ? std::numeric_limits<int64_t>::max()
                         : std::max<int64_t>(1, perCell / strata);
    if (strata < n)
      g.sampled = true;
    std::fill(partialAllowed.begin(), partialAllowed.end(), 0.0);
    int64_t builtFor = -1; // the query block whose segments are built
    for (int64_t i = 0; i < strata; ++i) {
      int64_t from = r0 + i * n / strata, to = r0 + (i + 1) * n / strata;
      int64_t q = from + (strata == n ? 0
                                      : draw(seed(uint64_t(head), uint64_t(cr)),
                                             uint64_t(i), to - from));
      double weight = double(to - from);
      int64_t qb = q / bq;
      if (qb != builtFor) {
        // The partial runs of query block qb, cut at cell boundaries.
        builtFor = qb;
        segments.clear();
        touched.clear();
        k::RunCtx c = ctx(qb);
        for (k::Run r = runs.runFrom(c, 0); k::isRun(r);
             r = runs.runFrom(c, r.hi + 1)) {
          if (r.cls == k::kFull)
            continue;
          for (int64_t k0 = int64_t(r.lo) * bk,
                       k1 = std::min(int64_t(r.hi + 1) * bk, nk);
               k0 < k1;) {
            int64_t cc = k0 / g.colSpan;
            int64_t e = std::min(k1, (cc + 1) * g.colSpan);
            if (touched.empty() || touched.back().cell != cc)
              touched.push_back({cc, int64_t(segments.size()),
                                 int64_t(segments.size()), 0});
            Touched &t = touched.back();
            segments.push_back({k0, e - k0, t.keys});
            t.keys += e - k0;
            t.end = int64_t(segments.size());
            k0 = e;
          }
        }
      }
      for (const Touched &t : touched)
        partialAllowed[size_t(t.cell)] +=
            weight * rowEstimate(q, t.cell, t.begin, t.end, t.keys, keys);
    }
    for (int64_t cc = 0; cc < g.cols; ++cc) {
      double a = partialAllowed[size_t(cc)];
      if (a == 0)
        continue;
      size_t at = size_t(cr * g.cols + cc);
      g.density[at] = float(std::min(
          1.0, double(g.density[at]) + a / cellPairs(cr, cc)));
      total += a;
    }
  }
  g.totalDensity = total / (double(nq) * double(nk));
}

/// Finds whether the tiles [a0, a1) x [b0, b1) (in tiles) hold a tile that
/// is not empty and one that is not full: classifyTile on the rectangle
/// (every tile of a full rectangle is full, of an empty one empty), else on
/// its halves, until both are found.
void BlockDrawer::search(int64_t a0, int64_t a1, int64_t b0, int64_t b1,
                         bool &nonEmpty, bool &nonFull) {
  ++tests;
  k::Tile t = {a0 * bq, std::min(a1 * bq, nq), b0 * bk, std::min(b1 * bk, nk),
               nq,      nk,                    head,    numHeads};
  int cls = k::classifyTile(program.nodes.data(),
                            int64_t(program.nodes.size()),
                            program.data.data(), t);
  bool tile = a1 - a0 == 1 && b1 - b0 == 1;
  if (cls != k::kEmpty && (cls == k::kFull || tile))
    nonEmpty = true;
  if (cls != k::kFull && (cls == k::kEmpty || tile))
    nonFull = true;
  if (cls != k::kPartial || tile)
    return;
  // A partial rectangle of several tiles decides nothing: split its longer
  // side (in keys and queries).
  bool rows = (a1 - a0) * bq >= (b1 - b0) * bk ? a1 - a0 > 1 : b1 - b0 == 1;
  for (int half = 0; half < 2; ++half) {
    if ((nonEmpty && nonFull) || tests > options.testBudget)
      return;
    int64_t am = (a0 + a1) / 2, bm = (b0 + b1) / 2;
    if (rows)
      search(half ? am : a0, half ? a1 : am, b0, b1, nonEmpty, nonFull);
    else
      search(a0, a1, half ? bm : b0, half ? b1 : bm, nonEmpty, nonFull);
  }
}

/// The classes of every cell by tile tests: O(tests per cell), which is
/// O(log(tiles per cell)) for the patterns of the catalogue.
bool BlockDrawer::test(std::string &error) {
  for (int64_t cr = 0; cr < g.rows; ++cr) {
    report(0.5 * double(cr) / double(g.rows));
    for (int64_t cc = 0; cc < g.cols; ++cc) {
      bool nonEmpty = false, nonFull = false;
      search(cr * f, std::min(tq, (cr + 1) * f), cc * f,
             std::min(tk, (cc + 1) * f), nonEmpty, nonFull);
      if (tests > options.testBudget) {
        error = "classifying the tiles needs more than " +
                std::to_string(options.testBudget) + " tile tests at " +
                std::to_string(bq) + " x " + std::to_string(bk) +
                " tiles (larger tiles or shorter lengths need fewer)";
        return false;
      }
      size_t at = size_t(cr * g.cols + cc);
      g.cls[at] = !nonEmpty ? kCellEmpty : !nonFull ? kCellFull : kCellPartial;
      g.density[at] = g.cls[at] == kCellFull ? 1.0f : 0.0f;
      partialCells += g.cls[at] == kCellPartial;
      if (g.cls[at] == kCellPartial)
        partialPairs += cellPairs(cr, cc);
      else if (g.cls[at] == kCellFull)
        total += cellPairs(cr, cc);
    }
  }
  return true;
}

/// The shades of partial cells from their pairs: all of them when the
/// partial cells hold at most options.pairBudget pairs in all, else about
/// pairBudget / partialCells per cell, one at a random place in each cell
/// of an even grid of strata (rows x keys).
void BlockDrawer::sample() {
  bool exact = partialPairs <= double(options.pairBudget);
  int64_t perCell = std::max<int64_t>(
      1, options.pairBudget / std::max<int64_t>(partialCells, 1));
  int64_t side = std::max<int64_t>(1, int64_t(std::sqrt(perCell)));
  for (int64_t cr = 0; cr < g.rows; ++cr) {
    report(0.5 + 0.5 * double(cr) / double(g.rows));
    int64_t r0 = cr * g.rowSpan, n = std::min(r0 + g.rowSpan, nq) - r0;
    for (int64_t cc = 0; cc < g.cols; ++cc) {
      size_t at = size_t(cr * g.cols + cc);
      if (g.cls[at] != kCellPartial)
        continue;
      int64_t c0 = cc * g.colSpan, m = std::min(c0 + g.colSpan, nk) - c0;
      int64_t sr = exact ? n : std::min(n, side);
      int64_t sk = exact ? m : std::min(m, std::max<int64_t>(1, perCell / sr));
      if (sr < n || sk < m)
        g.sampled = true;
      double hits = 0;
      for (int64_t i = 0; i < sr; ++i) {
        int64_t q0 = r0 + i * n / sr, q1 = r0 + (i + 1) * n / sr;
        int64_t q =
            q0 + (sr == n ? 0
                          : draw(seed(uint64_t(head), at), uint64_t(i), q1 - q0));
        uint64_t sd = seed(uint64_t(q), at);
        for (int64_t j = 0; j < sk; ++j) {
          int64_t k0 = c0 + j * m / sk, k1 = c0 + (j + 1) * m / sk;
          int64_t k = k0 + (sk == m ? 0 : draw(sd, uint64_t(j), k1 - k0));
          if (allowed(q, k))
            hits += double(q1 - q0) * double(k1 - k0);
        }
      }
      g.density[at] = float(hits / (double(n) * double(m)));
      total += hits;
    }
  }
  g.totalDensity = total / (double(nq) * double(nk));
}

static bool drawBlocks(const s::Pattern &pattern, int64_t head,
                       int64_t numHeads, int64_t maxCells,
                       const DrawOptions &options, HeadGrid &g,
                       std::string &error) {
  const int64_t nq = g.nq, nk = g.nk, bq = g.blockQ, bk = g.blockK;
  const int64_t tq = ceilDiv(nq, bq), tk = ceilDiv(nk, bk);
  const int64_t f = ceilDiv(std::max(tq, tk), maxCells); // tiles per cell side
  g.rows = ceilDiv(tq, f);
  g.cols = ceilDiv(tk, f);
  g.rowSpan = f * bq;
  g.colSpan = f * bk;
  const size_t cells = size_t(g.rows * g.cols);
  g.cls.assign(cells, kCellEmpty);
  g.density.assign(cells, 0.0f);
  if (std::holds_alternative<s::Skip>(pattern.node))
    return true;
  schedule::Program program;
  if (!schedule::lowerPattern(pattern, program, error))
    return false;
  // The walk over the schedule's runs while it fits options.runBudget (the
  // shades then count the pairs of partial tiles only), else tile tests.
  // Every walk step, tile test and pair costs O(program nodes): the budgets
  // are for programs of up to 4 nodes, and shrink for larger ones.
  DrawOptions scaled = options;
  int64_t nodes = ceilDiv(std::max<int64_t>(1, int64_t(program.nodes.size())), 4);
  scaled.runBudget = std::max<int64_t>(1, options.runBudget / nodes);
  scaled.testBudget = std::max<int64_t>(1, options.testBudget / nodes);
  scaled.pairBudget = std::max<int64_t>(1, options.pairBudget / nodes);
  BlockDrawer drawer(pattern, program, head, numHeads, f, scaled, g);
  if (drawer.walk()) {
    drawer.shade();
  } else {
    g.cls.assign(cells, kCellEmpty);
    g.density.assign(cells, 0.0f);
    BlockDrawer tester(pattern, program, head, numHeads, f, scaled, g);
    if (!tester.test(error))
      return false;
    tester.sample();
  }
  if (options.progress)
    options.progress(1.0);
  return true;
}

bool drawHead(const s::Pattern &pattern, int64_t head, int64_t numHeads,
              int64_t nq, int64_t nk, int64_t blockQ, int64_t blockK,
              int64_t maxCells, HeadGrid &out, std::string &error,
              const DrawOptions &options) {
  auto outside = [](int64_t v, int64_t lo, int64_t hi) {
    return v < lo || v > hi;
  };
  if (outside(nq, 1, kMaxPictureLength) || outside(nk, 1, kMaxPictureLength)) {
    error = "pictures are drawn for lengths in [1, " +
            std::to_string(kMaxPictureLength) + "], got " + std::to_string(nq) +
            " x " + std::to_string(nk);
    return false;
  }
  if (outside(blockQ, 1, 1024) || outside(blockK, 1, 1024)) {
    error = "tile sizes must be in [1, 1024], got " + std::to_string(blockQ) +
            " x " + std::to_string(blockK);
    return false;
  }
  if (outside(maxCells, 1, 4096)) {
    error = "a picture holds 1 to 4096 cells per side, got " +
            std::to_string(maxCells);
    return false;
  }
  if (outside(head, 0, numHeads - 1)) {
    error = "head " + std::to_string(head) + " is not in [0, " +
            std::to_string(numHeads) + ")";
    return false;
  }
  out = HeadGrid();
  out.nq = nq;
  out.nk = nk;
  out.blockQ = blockQ;
  out.blockK = blockK;
  if (nq <= maxCells && nk <= maxCells) {
    return drawElements(pattern, head, numHeads, out, error);
  }
  return drawBlocks(pattern, head, numHeads, maxCells, options, out, error);
}

/// Appends what the leaves of `pattern` take from the head.
static void addHeadSignature(const s::Pattern &pattern, int64_t head,
                             int64_t numHeads, std::vector<int64_t> &out) {
  std::visit(
      [&](const auto &node) {
        using T = std::decay_t<decltype(node)>;
        if constexpr (std::is_same_v<T, s::StridedShards>)
          out.push_back(s::floorMod(head + node.offset, node.shards));
        else if constexpr (std::is_same_v<T, s::ShiftedGroups>)
          out.push_back(head >= numHeads / 2);
        else if constexpr (std::is_same_v<T, s::Union> ||
                           std::is_same_v<T, s::Intersect> ||
                           std::is_same_v<T, s::Difference>)
          for (const s::Pattern &part : node.parts)
            addHeadSignature(part, head, numHeads, out);
      },
      pattern.node);
}

std::vector<int64_t> headSignature(const s::Pattern &pattern, int64_t head,
                                   int64_t numHeads) {
  std::vector<int64_t> out;
  addHeadSignature(pattern, head, numHeads, out);
  return out;
}

std::string formatDensity(const HeadGrid &grid) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%.2f%%", grid.sampled ? "~" : "",
                100.0 * grid.totalDensity);
  return buf;
}

//===----------------------------------------------------------------------===//
// Colours and geometry shared by both renderers
//===----------------------------------------------------------------------===//

namespace {
struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kFull = {0x1f, 0x4e, 0x9c};
constexpr Rgb kPartialLow = {0xfd, 0xe9, 0xc8};
constexpr Rgb kPartialHigh = {0xd9, 0x5f, 0x02};
constexpr Rgb kEmpty = {0xff, 0xff, 0xff};
constexpr Rgb kGridLine = {0xc8, 0xc8, 0xc8};
constexpr Rgb kFrame = {0x40, 0x40, 0x40};
constexpr Rgb kInk = {0x20, 0x20, 0x20};

Rgb cellColour(const HeadGrid &g, size_t at) {
  switch (g.cls[at]) {
  case kCellFull:
    return kFull;
  case kCellEmpty:
    return kEmpty;
  default: {
    double t = std::clamp(double(g.density[at]), 0.0, 1.0);
    auto mix = [t](uint8_t a, uint8_t b) {
      return uint8_t(std::lround(a + (double(b) - double(a)) * t));
    };
    return {mix(kPartialLow.r, kPartialHigh.r),
            mix(kPartialLow.g, kPartialHigh.g),
            mix(kPartialLow.b, kPartialHigh.b)};
  }
  }
}

bool operator==(Rgb a, Rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }

std::string hex(Rgb c) {
  static const char digits[] = "0123456789abcdef";
  std::string out = "#";
  for (uint8_t v : {c.r, c.g, c.b}) {
    out += digits[v >> 4];
    out += digits[v & 15];
  }
  return out;
}

/// Pixels per cell: the largest whole number that keeps the longer side
/// within `pixels` (at least 1).
int64_t cellPixels(const HeadGrid &g, int64_t pixels) {
  return std::max<int64_t>(1, pixels / std::max(g.rows, g.cols));
}

/// Tile-grid lines, in cells: every `stepRows` rows and `stepCols` columns,
/// or none when they would be closer than 4 pixels.
void gridSteps(const HeadGrid &g, int64_t scale, int64_t &stepRows,
               int64_t &stepCols) {
  stepRows = g.elementLevel ? g.blockQ : 1;
  stepCols = g.elementLevel ? g.blockK : 1;
  if (stepRows * scale < 4 || stepCols * scale < 4)
    stepRows = stepCols = 0;
}

std::string xmlEscape(const std::string &text) {
  std::string out;
  for (char c : text) {
    switch (c) {
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '&':
      out += "&amp;";
      break;
    case '"':
      out += "&quot;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

constexpr int64_t kMargin = 12;
constexpr int64_t kSvgCaption = 40;    ///< two caption lines above a panel
constexpr int64_t kRasterCaption = 16; ///< one line of the 3x5 font, x2
constexpr int64_t kLegend = 28;

/// Where the panels go: a grid of `columns`, each panel as wide as the
/// widest (at least `minWidth`) with `caption` pixels above its cells.
struct PanelGrid {
  int64_t columns, panelW, panelH, width, height;
  PanelGrid(const std::vector<Panel> &panels, const Layout &layout,
            int64_t minWidth, int64_t caption) {
    columns = std::max<int64_t>(1, layout.columns);
    int64_t cellW = 0, cellH = 0;
    for (const Panel &p : panels) {
      int64_t scale = cellPixels(p.grid, layout.panelPixels);
      cellW = std::max(cellW, p.grid.cols * scale);
      cellH = std::max(cellH, p.grid.rows * scale);
    }
    panelW = std::max(cellW, minWidth) + 2 * kMargin;
    panelH = cellH + caption + kMargin;
    width = columns * panelW + kMargin;
    height = ceilDiv(int64_t(panels.size()), columns) * panelH + kMargin;
  }
  /// The top-left corner of panel i.
  void origin(size_t i, int64_t &x0, int64_t &y0) const {
    x0 = kMargin + int64_t(i % size_t(columns)) * panelW;
    y0 = kMargin + int64_t(i / size_t(columns)) * panelH;
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// SVG
//===----------------------------------------------------------------------===//

std::string renderSvg(const std::vector<Panel> &panels, const Layout &layout) {
  PanelGrid pg(panels, layout, 160, kSvgCaption);
  int64_t width = pg.width, height = pg.height + kLegend;
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
     << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << ' '
     << height << "\" font-family=\"sans-serif\">\n";
  os << "<rect width=\"" << width << "\" height=\"" << height
     << "\" fill=\"#ffffff\"/>\n";
  for (size_t i = 0; i < panels.size(); ++i) {
    const Panel &p = panels[i];
    const HeadGrid &g = p.grid;
    int64_t scale = cellPixels(g, layout.panelPixels), x0, y0;
    pg.origin(i, x0, y0);
    os << "<text x=\"" << x0 << "\" y=\"" << y0 + 13
       << "\" font-size=\"13\" font-weight=\"bold\">" << xmlEscape(p.title)
       << " (" << formatDensity(g) << ")</text>\n";
    os << "<text x=\"" << x0 << "\" y=\"" << y0 + 29 << "\" font-size=\"11\">"
       << xmlEscape(p.subtitle) << "</text>\n";
    int64_t cx = x0, cy = y0 + kSvgCaption - 6;
    // Cells: one rect per run of equal colour in a row; the background is
    // the empty colour. data-* attributes let tests read the grid back.
    os << "<g class=\"cells\" transform=\"translate(" << cx << ',' << cy
       << ")\" data-head=\"" << p.head << "\" data-rows=\"" << g.rows
       << "\" data-cols=\"" << g.cols << "\" data-cell=\"" << scale
       << "\" data-row-span=\"" << g.rowSpan << "\" data-col-span=\""
       << g.colSpan << "\" data-level=\""
       << (g.elementLevel ? "element" : "block") << "\" data-density=\""
       << g.totalDensity << "\">\n";
    os << "<rect width=\"" << g.cols * scale << "\" height=\"" << g.rows * scale
       << "\" fill=\"" << hex(kEmpty) << "\"/>\n";
    for (int64_t r = 0; r < g.rows; ++r) {
      for (int64_t c = 0; c < g.cols;) {
        size_t at = size_t(r * g.cols + c);
        int64_t e = c + 1;
        if (g.cls[at] == kCellEmpty) {
          c = e;
          continue;
        }
        Rgb rgb = cellColour(g, at);
        while (e < g.cols && g.cls[size_t(r * g.cols + e)] == g.cls[at] &&
               cellColour(g, size_t(r * g.cols + e)) == rgb)
          ++e;
        std::string colour = hex(rgb);
        os << "<rect class=\"" << (g.cls[at] == kCellFull ? "full" : "partial")
           << "\" x=\"" << c * scale << "\" y=\"" << r * scale << "\" width=\""
           << (e - c) * scale << "\" height=\"" << scale << "\" fill=\""
           << colour << "\"/>\n";
        c = e;
      }
    }
    int64_t stepR, stepC;
    gridSteps(g, scale, stepR, stepC);
    if (stepR) {
      os << "<g stroke=\"" << hex(kGridLine) << "\" stroke-width=\"0.5\">";
      for (int64_t r = stepR; r < g.rows; r += stepR)
        os << "<line x1=\"0\" y1=\"" << r * scale << "\" x2=\""
           << g.cols * scale << "\" y2=\"" << r * scale << "\"/>";
      for (int64_t c = stepC; c < g.cols; c += stepC)
        os << "<line x1=\"" << c * scale << "\" y1=\"0\" x2=\"" << c * scale
           << "\" y2=\"" << g.rows * scale << "\"/>";
      os << "</g>\n";
    }
    os << "<rect width=\"" << g.cols * scale << "\" height=\"" << g.rows * scale
       << "\" fill=\"none\" stroke=\"" << hex(kFrame) << "\"/>\n</g>\n";
  }
  // The legend.
  int64_t ly = height - kLegend + 6;
  auto swatch = [&](int64_t x, Rgb c, const char *label) {
    os << "<rect x=\"" << x << "\" y=\"" << ly << "\" width=\"12\" "
       << "height=\"12\" fill=\"" << hex(c) << "\" stroke=\"" << hex(kFrame)
       << "\"/><text x=\"" << x + 16 << "\" y=\"" << ly + 10
       << "\" font-size=\"11\">" << label << "</text>\n";
  };
  bool anyBlock = std::any_of(panels.begin(), panels.end(), [](const Panel &p) {
    return !p.grid.elementLevel;
  });
  if (anyBlock) {
    swatch(kMargin, kFull, "full tile");
    swatch(kMargin + 80, kPartialLow, "partial tile, sparse");
    swatch(kMargin + 225, kPartialHigh, "partial tile, dense");
    swatch(kMargin + 365, kEmpty, "empty tile (skipped)");
  } else {
    swatch(kMargin, kFull, "allowed (query row, key column)");
    swatch(kMargin + 220, kEmpty, "not allowed; grid: tiles");
  }
  os << "</svg>\n";
  return os.str();
}

//===----------------------------------------------------------------------===//
// Raster and PNG
//===----------------------------------------------------------------------===//

namespace {
/// A 3x5 font for captions: each glyph is five rows of three bits.
struct Glyph {
  char c;
  uint8_t rows[5];
};
constexpr Glyph kFont[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}},
    {'3', {7, 1, 7, 1, 7}}, {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}},
    {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}}, {'8', {7, 5, 7, 5, 7}},
    {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'%', {5, 1, 2, 4, 5}},
    {'h', {4, 4, 7, 5, 5}}, {'~', {0, 3, 6, 0, 0}}, {' ', {0, 0, 0, 0, 0}}};

struct Canvas {
  Raster &r;
  void put(int64_t x, int64_t y, Rgb c) {
    if (x < 0 || y < 0 || x >= r.width || y >= r.height)
      return;
    uint8_t *p = &r.rgb[size_t((y * r.width + x) * 3)];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void fill(int64_t x, int64_t y, int64_t w, int64_t h, Rgb c) {
    for (int64_t j = y; j < y + h; ++j)
      for (int64_t i = x; i < x + w; ++i)
        put(i, j, c);
  }
  /// Text of the 3x5 font at 2 pixels per font pixel.
  void text(int64_t x, int64_t y, const std::string &s) {
    for (char ch : s) {
      for (const Glyph &gl : kFont)
        if (gl.c == ch)
          for (int row = 0; row < 5; ++row)
            for (int col = 0; col < 3; ++col)
              if (gl.rows[row] & (4 >> col))
                fill(x + 2 * col, y + 2 * row, 2, 2, kInk);
      x += 8;
    }
  }
};
} // namespace

Raster renderRaster(const std::vector<Panel> &panels, const Layout &layout) {
  PanelGrid pg(panels, layout, 80, kRasterCaption);
  Raster out;
  out.width = pg.width;
  out.height = pg.height;
  out.rgb.assign(size_t(out.width * out.height * 3), 0xff);
  Canvas canvas{out};
  for (size_t i = 0; i < panels.size(); ++i) {
    const Panel &p = panels[i];
    const HeadGrid &g = p.grid;
    int64_t scale = cellPixels(g, layout.panelPixels), x0, y0;
    pg.origin(i, x0, y0);
    canvas.text(x0, y0, "h" + std::to_string(p.head) + " " + formatDensity(g));
    int64_t cx = x0, cy = y0 + kRasterCaption;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = 0; c < g.cols; ++c)
        canvas.fill(cx + c * scale, cy + r * scale, scale, scale,
                    cellColour(g, size_t(r * g.cols + c)));
    int64_t stepR, stepC;
    gridSteps(g, scale, stepR, stepC);
    if (stepR) {
      for (int64_t r = stepR; r < g.rows; r += stepR)
        canvas.fill(cx, cy + r * scale, g.cols * scale, 1, kGridLine);
      for (int64_t c = stepC; c < g.cols; c += stepC)
        canvas.fill(cx + c * scale, cy, 1, g.rows * scale, kGridLine);
    }
    // The frame, just outside the cells so that no cell is covered.
    int64_t w = g.cols * scale, h = g.rows * scale;
    canvas.fill(cx - 1, cy - 1, w + 2, 1, kFrame);
    canvas.fill(cx - 1, cy + h, w + 2, 1, kFrame);
    canvas.fill(cx - 1, cy - 1, 1, h + 2, kFrame);
    canvas.fill(cx + w, cy - 1, 1, h + 2, kFrame);
    out.text.push_back({"Title", p.title + " (" + formatDensity(g) + ")"});
    // Where the cells are, for tools and tests that read the picture back.
    out.text.push_back(
        {"Tessera-Cells",
         "head=" + std::to_string(p.head) + " x=" + std::to_string(cx) +
             " y=" + std::to_string(cy) + " cell=" + std::to_string(scale) +
             " rows=" + std::to_string(g.rows) + " cols=" +
             std::to_string(g.cols) + " rspan=" + std::to_string(g.rowSpan) +
             " cspan=" + std::to_string(g.colSpan)});
    out.text.push_back({"Description", p.subtitle});
  }
  out.text.push_back({"Software", "Tessera attn-viz"});
  return out;
}

bool writePng(const Raster &raster, const std::string &path,
              std::string &error) {
  FILE *file = path == "-" ? stdout : std::fopen(path.c_str(), "wb");
  if (!file) {
    error = "cannot create " + path;
    return false;
  }
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  bool ok = png && info;
  if (ok && setjmp(png_jmpbuf(png))) {
    ok = false;
  } else if (ok) {
    png_init_io(png, file);
    // Flat colours compress well at the fastest level; the default level
    // takes seconds on the largest pictures.
    png_set_compression_level(png, 1);
    png_set_IHDR(png, info, png_uint_32(raster.width),
                 png_uint_32(raster.height), 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    std::vector<png_text> texts(raster.text.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      texts[i] = png_text();
      texts[i].compression = PNG_TEXT_COMPRESSION_NONE;
      texts[i].key = const_cast<char *>(raster.text[i].first.c_str());
      texts[i].text = const_cast<char *>(raster.text[i].second.c_str());
    }
    if (!texts.empty())
      png_set_text(png, info, texts.data(), int(texts.size()));
    png_write_info(png, info);
    for (int64_t y = 0; y < raster.height; ++y)
      png_write_row(png, raster.rgb.data() + size_t(y * raster.width * 3));
    png_write_end(png, info);
  }
  if (png)
    png_destroy_write_struct(&png, info ? &info : nullptr);
  bool closed =
      file == stdout ? std::fflush(file) == 0 : std::fclose(file) == 0;
  if (!ok || !closed) {
    error = "cannot write the PNG " + path;
    return false;
  }
  return true;
}

} // namespace tessera::viz
