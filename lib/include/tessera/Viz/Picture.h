//===- Picture.h - pictures of one head's mask ------------------*- C++ -*-===//
//
// attn-viz's pictures, MLIR-free. A head's mask becomes a grid of cells:
// one cell per (query, key) pair when both lengths fit (element level),
// else one cell per tile of the block schedule, or per square of tiles when
// the tile grid is larger than the picture (block level). Block-level cells
// carry the tile class the kernels see (empty / partial / full, from the
// same run enumeration the CPU executor and the CUDA kernels walk) and the
// density of allowed pairs. The grid is rendered as SVG (text, with
// captions) or as an RGB raster written as PNG through libpng.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_VIZ_PICTURE_H
#define TESSERA_VIZ_PICTURE_H

#include "tessera/Semantics/Pattern.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::viz {

/// The longest sequence a picture is drawn for (queries and keys).
constexpr int64_t kMaxPictureLength = int64_t(1) << 22;
/// Partial tiles are counted exactly up to this many pairs in all; above it
/// each partial tile's density is estimated from an even grid of samples
/// (the caption says so with a "~").
constexpr int64_t kMaxCountedPairs = int64_t(1) << 26;

enum CellClass : uint8_t { kCellEmpty = 0, kCellPartial = 1, kCellFull = 2 };

struct HeadGrid {
  bool elementLevel = false;
  int64_t nq = 0, nk = 0;
  int64_t blockQ = 0, blockK = 0;   ///< the tile of the block level
  int64_t rows = 0, cols = 0;       ///< cells
  int64_t rowSpan = 1, colSpan = 1; ///< queries / keys per cell
  std::vector<uint8_t> cls;         ///< rows x cols CellClass
  std::vector<float> density;       ///< rows x cols, allowed share of a cell
  double totalDensity = 0;          ///< allowed share of all Nq x Nk pairs
  bool sampled = false;             ///< some partial tiles were sampled
  int64_t tiles[3] = {0, 0, 0};     ///< empty, partial, full tiles
};

/// Draws head `head` of a layer with `numHeads` heads at Nq x Nk. The element
/// level is used when Nq and Nk are at most `maxCells`, else the block level
/// with blockQ x blockK tiles, at most maxCells x maxCells cells. False with
/// `error` set for lengths outside [1, kMaxPictureLength], tiles outside
/// [1, 1024], maxCells outside [1, 4096] or a pattern whose schedule cannot be
/// built.
bool drawHead(const semantics::Pattern &pattern, int64_t head, int64_t numHeads,
              int64_t nq, int64_t nk, int64_t blockQ, int64_t blockK,
              int64_t maxCells, HeadGrid &out, std::string &error);

/// One panel of a picture: a head's grid and its caption.
struct Panel {
  HeadGrid grid;
  int64_t head = 0;
  std::string title;    ///< e.g. "layer 0 head 3"
  std::string subtitle; ///< e.g. the pattern
};

/// Panels in a grid of `columns`, each scaled to about `panelPixels` pixels
/// on its longer side.
struct Layout {
  int64_t columns = 1;
  int64_t panelPixels = 512;
};

std::string renderSvg(const std::vector<Panel> &panels, const Layout &layout);

/// The same picture as an RGB raster. Captions are reduced to the head
/// number and the density (digits of a built-in 3x5 font); the full captions
/// go into the PNG's text chunks.
struct Raster {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
  std::vector<std::pair<std::string, std::string>> text; ///< tEXt chunks
};
Raster renderRaster(const std::vector<Panel> &panels, const Layout &layout);

/// Writes `raster` as PNG (libpng); false with `error` set on failure.
bool writePng(const Raster &raster, const std::string &path,
              std::string &error);

/// The caption's density, e.g. "50.01%" ("~50.01%" when sampled).
std::string formatDensity(const HeadGrid &grid);

} // namespace tessera::viz

#endif // TESSERA_VIZ_PICTURE_H
