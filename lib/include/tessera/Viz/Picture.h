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
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tessera::viz {

/// The longest sequence a picture is drawn for (queries and keys).
constexpr int64_t kMaxPictureLength = int64_t(1) << 22;
/// The pairs one picture evaluates for the shades of its partial cells: the
/// pairs of the partial tiles are counted exactly while they are at most
/// this many, else each cell's are estimated from about kPairBudget / (cells
/// with partial tiles) sampled pairs (the caption says so with a "~").
constexpr int64_t kPairBudget = int64_t(1) << 26;
/// The query blocks and runs one picture's schedule walks may visit. A
/// schedule with more is classified by tile tests instead (classifyTile on
/// squares of tiles, halved until they decide a cell), at most kTestBudget
/// of them per picture, or the picture is refused.
constexpr int64_t kRunBudget = int64_t(1) << 24;
constexpr int64_t kTestBudget = int64_t(1) << 26;

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
  bool sampled = false;             ///< some partial cells were sampled
  int64_t walked = 0; ///< query blocks + runs the schedule walk visited
};

/// How much work one head's picture may do, and where it reports progress.
struct DrawOptions {
  /// Pair evaluations for the shades of partial cells (see kPairBudget).
  int64_t pairBudget = kPairBudget;
  /// Query blocks + runs the schedule walk may visit (see kRunBudget).
  int64_t runBudget = kRunBudget;
  /// Tile tests without the walk; drawHead fails above.
  int64_t testBudget = kTestBudget;
  /// Called now and then with the share of the head's work done, in [0, 1].
  std::function<void(double)> progress;
};

/// Draws head `head` of a layer with `numHeads` heads at Nq x Nk. The element
/// level is used when Nq and Nk are at most `maxCells`, else the block level
/// with blockQ x blockK tiles, at most maxCells x maxCells cells. The block
/// level costs O(min(query blocks + runs, runBudget) + cells + testBudget +
/// pairBudget): its classes come from the schedule's runs (or the same
/// classes from tile tests), full pairs are counted per run, and only the
/// pairs of partial tiles or cells are evaluated (all of them, or a sample).
/// False with `error` set for lengths outside [1, kMaxPictureLength], tiles
/// outside [1, 1024], maxCells outside [1, 4096], a pattern whose schedule
/// cannot be built, or tile tests over options.testBudget.
bool drawHead(const semantics::Pattern &pattern, int64_t head, int64_t numHeads,
              int64_t nq, int64_t nk, int64_t blockQ, int64_t blockK,
              int64_t maxCells, HeadGrid &out, std::string &error,
              const DrawOptions &options = DrawOptions());

/// What a pattern's mask takes from the head (the shard of each strided
/// shards leaf, the half of each shifted groups leaf): heads with the same
/// pattern and signature have the same picture.
std::vector<int64_t> headSignature(const semantics::Pattern &pattern,
                                   int64_t head, int64_t numHeads);

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
