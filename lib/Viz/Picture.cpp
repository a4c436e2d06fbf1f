//===- Picture.cpp - pictures of one head's mask --------------------------===//

#include "tessera/Viz/Picture.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/kernel/ProgramRuns.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace tessera::viz {

namespace s = tessera::semantics;
namespace k = tessera::kernel;

static int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

//===----------------------------------------------------------------------===//
// The grid
//===----------------------------------------------------------------------===//

static void drawElements(const s::Pattern &pattern, int64_t head,
                         int64_t numHeads, HeadGrid &g) {
  g.elementLevel = true;
  g.rows = g.nq;
  g.cols = g.nk;
  g.cls.assign(size_t(g.rows * g.cols), kCellEmpty);
  g.density.assign(g.cls.size(), 0.0f);
  int64_t count = 0;
  for (int64_t q = 0; q < g.nq; ++q)
    for (int64_t k = 0; k < g.nk; ++k)
      if (s::allowed(pattern, q, k, head, g.nq, g.nk, numHeads)) {
        g.cls[size_t(q * g.cols + k)] = kCellFull;
        g.density[size_t(q * g.cols + k)] = 1.0f;
        ++count;
      }
  g.totalDensity = double(count) / (double(g.nq) * double(g.nk));
}

namespace {
/// Accumulates the tiles of the block level into cells.
struct CellSums {
  std::vector<double> allowed; ///< allowed pairs per cell
  std::vector<int64_t> full;   ///< full tiles per cell
  std::vector<uint8_t> seen;   ///< some tile of the cell is visited
};
} // namespace

static bool drawBlocks(const s::Pattern &pattern, int64_t head,
                       int64_t numHeads, int64_t maxCells, HeadGrid &g,
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
  if (std::holds_alternative<s::Skip>(pattern.node)) {
    g.tiles[kCellEmpty] = tq * tk;
    return true;
  }
  schedule::Program program;
  if (!schedule::lowerPattern(pattern, program, error))
    return false;
  k::ProgramRuns runs(program.nodes.data(), int64_t(program.nodes.size()),
                      program.data.data());

  // Walks every visited run of every query block: fn(qb, run).
  auto walk = [&](auto &&fn) {
    for (int64_t qb = 0; qb < tq; ++qb) {
      int64_t q0 = qb * bq, q1 = std::min(q0 + bq, nq);
      k::RunCtx ctx = k::makeRunCtx(q0, q1, nq, nk, bk, head, numHeads);
      runs.forEachRun(ctx, [&](const k::Run &r) { fn(qb, r); });
    }
  };

  // Pass 1: how many pairs the partial tiles hold, to choose exact counts or
  // samples.
  int64_t partialTiles = 0, fullTiles = 0;
  double partialPairs = 0;
  walk([&](int64_t qb, const k::Run &r) {
    int64_t n = int64_t(r.hi - r.lo + 1);
    if (r.cls == k::kFull) {
      fullTiles += n;
      return;
    }
    partialTiles += n;
    partialPairs += double(std::min(bq, nq - qb * bq)) * double(n * bk);
  });
  g.tiles[kCellPartial] = partialTiles;
  g.tiles[kCellFull] = fullTiles;
  g.tiles[kCellEmpty] = tq * tk - partialTiles - fullTiles;
  int64_t samples = 0; // per side of a partial tile; 0: exact
  if (partialPairs > double(kMaxCountedPairs)) {
    samples = int64_t(std::sqrt(double(kMaxCountedPairs) /
                                double(std::max<int64_t>(partialTiles, 1))));
    samples = std::clamp<int64_t>(samples, 1, std::min(bq, bk));
    g.sampled = true;
  }

  CellSums sums;
  sums.allowed.assign(cells, 0.0);
  sums.full.assign(cells, 0);
  sums.seen.assign(cells, 0);
  double total = 0;
  walk([&](int64_t qb, const k::Run &r) {
    int64_t q0 = qb * bq, q1 = std::min(q0 + bq, nq), rowsIn = q1 - q0;
    int64_t cr = qb / f, lo = r.lo, hi = r.hi;
    if (r.cls == k::kFull) {
      // Every pair of the run's tiles: add them cell by cell.
      int64_t k0 = lo * bk, k1 = std::min((hi + 1) * bk, nk);
      for (int64_t cc = lo / f; cc <= hi / f; ++cc) {
        int64_t c0 = std::max(k0, cc * f * bk),
                c1 = std::min(k1, (cc + 1) * f * bk);
        size_t at = size_t(cr * g.cols + cc);
        double pairs = double(rowsIn) * double(c1 - c0);
        sums.allowed[at] += pairs;
        sums.full[at] +=
            std::min(hi, (cc + 1) * f - 1) - std::max(lo, cc * f) + 1;
        sums.seen[at] = 1;
        total += pairs;
      }
      return;
    }
    for (int64_t kb = lo; kb <= hi; ++kb) {
      int64_t k0 = kb * bk, k1 = std::min(k0 + bk, nk), colsIn = k1 - k0;
      double allowed = 0;
      if (!samples) {
        for (int64_t q = q0; q < q1; ++q)
          for (int64_t k = k0; k < k1; ++k)
            allowed += s::allowed(pattern, q, k, head, nq, nk, numHeads);
      } else {
        // An even grid of samples x samples pairs at the centres of equal
        // strips of the tile.
        int64_t sq = std::min(samples, rowsIn), sk = std::min(samples, colsIn);
        int64_t hits = 0;
        for (int64_t i = 0; i < sq; ++i)
          for (int64_t j = 0; j < sk; ++j)
            hits += s::allowed(pattern, q0 + (2 * i + 1) * rowsIn / (2 * sq),
                               k0 + (2 * j + 1) * colsIn / (2 * sk), head, nq,
                               nk, numHeads);
        allowed = double(hits) / double(sq * sk) * double(rowsIn * colsIn);
      }
      size_t at = size_t(cr * g.cols + kb / f);
      sums.allowed[at] += allowed;
      sums.seen[at] = 1;
      total += allowed;
    }
  });

  for (int64_t cr = 0; cr < g.rows; ++cr)
    for (int64_t cc = 0; cc < g.cols; ++cc) {
      size_t at = size_t(cr * g.cols + cc);
      int64_t r0 = cr * g.rowSpan, r1 = std::min(r0 + g.rowSpan, nq);
      int64_t c0 = cc * g.colSpan, c1 = std::min(c0 + g.colSpan, nk);
      int64_t tilesIn =
          (ceilDiv(r1, bq) - r0 / bq) * (ceilDiv(c1, bk) - c0 / bk);
      g.density[at] =
          float(sums.allowed[at] / (double(r1 - r0) * double(c1 - c0)));
      g.cls[at] = !sums.seen[at]             ? kCellEmpty
                  : sums.full[at] == tilesIn ? kCellFull
                                             : kCellPartial;
    }
  g.totalDensity = total / (double(nq) * double(nk));
  return true;
}

bool drawHead(const s::Pattern &pattern, int64_t head, int64_t numHeads,
              int64_t nq, int64_t nk, int64_t blockQ, int64_t blockK,
              int64_t maxCells, HeadGrid &out, std::string &error) {
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
    drawElements(pattern, head, numHeads, out);
    return true;
  }
  return drawBlocks(pattern, head, numHeads, maxCells, out, error);
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

std::string hex(Rgb c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c.r, c.g, c.b);
  return buf;
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
        std::string colour = hex(cellColour(g, at));
        while (e < g.cols && g.cls[size_t(r * g.cols + e)] == g.cls[at] &&
               hex(cellColour(g, size_t(r * g.cols + e))) == colour)
          ++e;
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
