//===- attn-viz.cpp - pictures of attention masks -------------------------===//
//
//   attn-viz FILE --layer L --head H --q-len N [--k-len M]      text mask
//   attn-viz FILE --layer L --head H --q-len N --format=svg -o F.svg
//   attn-viz FILE --layer L --q-len N --format=png -o F.png     overview
//
// Text: one line per query row, '#' where the key is allowed, '.' where it
// is not, from the reference semantics (docs/patterns.md). SVG and PNG: the
// element mask while both lengths fit the picture, above that the block
// level (tiles of the schedule coloured full / partial / empty, partial ones
// shaded by density). Without --head, SVG and PNG show every head of the
// layer as a thumbnail with its pattern and density.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Support/InputFile.h"
#include "tessera/Support/Progress.h"
#include "tessera/Support/ToolOptions.h"
#include "tessera/Viz/Picture.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

using namespace mlir;
using namespace tessera;
namespace cl = llvm::cl;

/// Text is for terminals: keep it to a size one can read.
static constexpr int64_t kMaxPrinted = 16384;
/// The most cells (heads x size x size) one SVG or PNG holds.
static constexpr int64_t kMaxCells = int64_t(1) << 24;
/// SVG spends about 80 bytes a cell (one element each): a quarter as many
/// cells keep its files and time bounded like PNG's (2^24 cells in SVG
/// were a 1.3 GB file and 10 s here).
static constexpr int64_t kMaxSvgCells = int64_t(1) << 22;

enum class Format { Text, Svg, Png };

static cl::OptionCategory toolOptions("attn-viz options");
static cl::opt<std::string>
    inputFile(cl::Positional, cl::desc("<pattern file, or - for stdin>"),
              cl::Required, cl::cat(toolOptions));
static cl::opt<int64_t> layerIndex("layer", cl::desc("layer index"),
                                   cl::Required, cl::cat(toolOptions));
static cl::opt<int64_t>
    headIndex("head",
              cl::desc("query head (svg/png without it: every head of the "
                       "layer)"),
              cl::init(-1), cl::cat(toolOptions));
static cl::opt<int64_t> qLen("q-len", cl::desc("query length Nq"), cl::Required,
                             cl::cat(toolOptions));
static cl::opt<int64_t> kLen("k-len", cl::desc("key length Nk (default: Nq)"),
                             cl::init(0), cl::cat(toolOptions));
static cl::opt<std::string>
    modelName("model", cl::desc("model symbol (default: the only model)"),
              cl::init(""), cl::cat(toolOptions));
static cl::opt<Format> format(
    "format", cl::desc("what to write"), cl::init(Format::Text),
    cl::values(clEnumValN(Format::Text, "text", "'#'/'.' mask of one head"),
               clEnumValN(Format::Svg, "svg", "SVG picture"),
               clEnumValN(Format::Png, "png", "PNG picture (needs -o)")),
    cl::cat(toolOptions));
static cl::opt<std::string> outputFile("o", cl::desc("output file"),
                                       cl::value_desc("file"), cl::init("-"),
                                       cl::cat(toolOptions));
static cl::opt<int64_t> blockQ("block-q",
                               cl::desc("queries per tile of the block level"),
                               cl::init(64), cl::cat(toolOptions));
static cl::opt<int64_t> blockK("block-k",
                               cl::desc("keys per tile of the block level"),
                               cl::init(64), cl::cat(toolOptions));
static cl::opt<int64_t> pixels(
    "size",
    cl::desc("longer side of a picture in cells (one head: 512; overview "
             "thumbnails: 128); element level up to this length"),
    cl::init(0), cl::cat(toolOptions));

// The picture's budgets (tessera/Viz/Picture.h), for tests that reach the
// sampled shades and the tile tests at small sizes.
static cl::opt<int64_t> pairBudget("pair-budget", cl::Hidden,
                                   cl::init(viz::kPairBudget),
                                   cl::cat(toolOptions));
static cl::opt<int64_t> runBudget("run-budget", cl::Hidden,
                                  cl::init(viz::kRunBudget),
                                  cl::cat(toolOptions));
static cl::opt<int64_t> testBudget("test-budget", cl::Hidden,
                                   cl::init(viz::kTestBudget),
                                   cl::cat(toolOptions));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "attn-viz: error: " << message << "\n";
  return 1;
}

/// The pattern of a head as written in pattern files.
static std::string patternText(Attribute pattern) {
  std::string text;
  llvm::raw_string_ostream os(text);
  pattern.print(os);
  return text;
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  hideForeignOptions(&toolOptions);
  setVersionPrinter("attn-viz");
  cl::ParseCommandLineOptions(argc, argv,
                              "Pictures of the attention masks of a pattern "
                              "file\n");
  int64_t nq = qLen, nk = kLen.getNumOccurrences() ? int64_t(kLen) : nq;
  bool picture = format != Format::Text;
  int64_t maxLen = picture ? viz::kMaxPictureLength : kMaxPrinted;
  if (nq < 1 || nq > maxLen)
    return fail("--q-len must be in [1, " + llvm::Twine(maxLen) + "], got " +
                llvm::Twine(nq));
  if (nk < 1 || nk > maxLen)
    return fail("--k-len must be in [1, " + llvm::Twine(maxLen) + "], got " +
                llvm::Twine(nk));
  if (!picture && headIndex.getNumOccurrences() == 0)
    return fail("the text mask shows one head: give --head H, or use "
                "--format=svg / --format=png for the whole layer");
  if (format == Format::Png && outputFile == "-")
    return fail("a PNG needs an output file: -o FILE.png");
  if (blockQ < 1 || blockQ > 1024 || blockK < 1 || blockK > 1024)
    return fail("--block-q and --block-k must be in [1, 1024]");
  if (pixels.getNumOccurrences() && (pixels < 8 || pixels > 4096))
    return fail("--size must be in [8, 4096], got " +
                llvm::Twine(int64_t(pixels)));

  MLIRContext context;
  context.getOrLoadDialect<attn::AttnDialect>();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string errorMessage;
  auto file = openPatternFile(inputFile, errorMessage);
  if (!file)
    return fail(errorMessage);
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1; // The parser or verifier has reported the problem.

  SmallVector<attn::ModelOp> models;
  for (auto model : module->getOps<attn::ModelOp>())
    if (modelName.empty() || model.getSymName() == modelName)
      models.push_back(model);
  if (models.empty())
    return fail(modelName.empty()
                    ? inputFile + " holds no attn.model"
                    : inputFile + " has no attn.model named @" + modelName);
  if (models.size() > 1)
    return fail(inputFile + " holds several models; choose one with --model");

  attn::LayerOp layer;
  for (auto l : models.front().getBody().front().getOps<attn::LayerOp>())
    if (l.getIndex() == layerIndex)
      layer = l;
  if (!layer)
    return fail("model @" + models.front().getSymName() + " has no layer " +
                llvm::Twine(int64_t(layerIndex)) +
                " (layers are attn.layer ops; a scheduled file has none)");
  int64_t numHeads = layer.getNumHeads();
  if (headIndex.getNumOccurrences() && (headIndex < 0 || headIndex >= numHeads))
    return fail("--head must be in [0, " + llvm::Twine(numHeads) +
                ") for layer " + llvm::Twine(int64_t(layerIndex)) + ", got " +
                llvm::Twine(int64_t(headIndex)));

  // Dynamic patterns choose their keys from the input: no mask to draw.
  for (int64_t h = headIndex.getNumOccurrences() ? int64_t(headIndex) : 0;
       h < (headIndex.getNumOccurrences() ? headIndex + 1 : numHeads); ++h)
    if (!layer.getHeadPattern(h).isStatic())
      return fail("head " + llvm::Twine(h) +
                  " has a dynamic pattern (its keys depend on the input); "
                  "attn-viz draws static patterns only");

  std::string error;
  auto out = openOutputFile(outputFile, &error);
  if (!out)
    return fail(error);

  if (!picture) {
    semantics::Pattern pattern =
        semantics::fromAttr(layer.getHeadPattern(headIndex));
    llvm::raw_ostream &os = out->os();
    std::string line(static_cast<size_t>(nk), '.');
    for (int64_t q = 0; q < nq; ++q) {
      for (int64_t k = 0; k < nk; ++k)
        line[k] = semantics::allowed(pattern, q, k, headIndex, nq, nk, numHeads)
                      ? '#'
                      : '.';
      os << line << '\n';
    }
    out->keep();
    return 0;
  }

  bool overview = headIndex.getNumOccurrences() == 0;
  int64_t size = pixels.getNumOccurrences() ? int64_t(pixels)
                 : overview                 ? 128
                                            : 512;
  std::vector<viz::Panel> panels;
  int64_t firstHead = overview ? 0 : int64_t(headIndex);
  int64_t endHead = overview ? numHeads : headIndex + 1;
  // A picture holds at most kMaxCells cells (and about as many pixels):
  // bounded memory and files, whatever the layer's head count.
  int64_t cells = (endHead - firstHead) * size * size;
  const int64_t maxCells = format == Format::Svg ? kMaxSvgCells : kMaxCells;
  if (cells > maxCells)
    return fail("a picture of " + llvm::Twine(endHead - firstHead) +
                " heads at --size " + llvm::Twine(size) + " would hold " +
                llvm::Twine(cells) + " cells, more than " +
                llvm::Twine(maxCells) + " (" +
                (format == Format::Svg ? "SVG" : "PNG") +
                (format == Format::Svg
                     ? "): use a smaller --size, one --head or --format=png"
                     : "): use a smaller --size or one --head"));
  // Heads with the same pattern that does not depend on the head have the
  // same grid: draw it once. The pair and run budgets are the picture's,
  // shared by the grids drawn.
  using GridKey = std::pair<const void *, std::vector<int64_t>>;
  auto gridKey = [&](int64_t h, const semantics::Pattern &meaning) {
    Attribute attr = layer.getHeadPattern(h);
    return GridKey(attr.getAsOpaquePointer(),
                   viz::headSignature(meaning, h, numHeads));
  };
  std::vector<semantics::Pattern> meanings;
  std::map<GridKey, size_t> drawn; // key -> index in panels
  for (int64_t h = firstHead; h < endHead; ++h) {
    meanings.push_back(semantics::fromAttr(layer.getHeadPattern(h)));
    drawn.emplace(gridKey(h, meanings.back()), SIZE_MAX);
  }
  int64_t grids = int64_t(drawn.size()), done = 0;
  viz::DrawOptions options;
  if (pairBudget < 1 || pairBudget > viz::kPairBudget || runBudget < 1 ||
      runBudget > viz::kRunBudget || testBudget < 1 ||
      testBudget > viz::kTestBudget)
    return fail("--pair-budget, --run-budget and --test-budget must be in "
                "[1, their defaults]");
  options.pairBudget = std::max<int64_t>(1, pairBudget / grids);
  options.runBudget = std::max<int64_t>(1, runBudget / grids);
  options.testBudget = std::max<int64_t>(1, testBudget / grids);
  // Progress in thousandths of the grids to draw.
  Progress progress("attn-viz", 1000 * grids);
  for (int64_t h = firstHead; h < endHead; ++h) {
    attn::PatternAttrInterface attr = layer.getHeadPattern(h);
    const semantics::Pattern &meaning = meanings[size_t(h - firstHead)];
    viz::Panel panel;
    panel.head = h;
    panel.title =
        "layer " + std::to_string(layerIndex) + " head " + std::to_string(h);
    panel.subtitle = patternText(attr);
    size_t &same = drawn[gridKey(h, meaning)];
    if (same != SIZE_MAX) {
      panel.grid = panels[same].grid;
      panels.push_back(std::move(panel));
      continue;
    }
    std::string detail = "head " + std::to_string(h);
    options.progress = [&](double share) {
      progress.step(1000 * done + int64_t(1000 * share), detail);
    };
    progress.step(1000 * done, detail);
    if (!viz::drawHead(meaning, h, numHeads, nq, nk, blockQ, blockK, size,
                       panel.grid, error, options))
      return fail("head " + llvm::Twine(h) + ": " + error);
    ++done;
    same = panels.size();
    panels.push_back(std::move(panel));
  }
  progress.step(1000 * grids);
  progress.finish();
  viz::Layout layout;
  layout.columns = overview ? std::min<int64_t>(numHeads, 8) : 1;
  layout.panelPixels = overview ? size : std::max<int64_t>(size, 256);
  if (format == Format::Svg) {
    out->os() << viz::renderSvg(panels, layout);
    out->keep();
    return 0;
  }
  out.reset(); // libpng writes the file itself.
  if (!viz::writePng(viz::renderRaster(panels, layout), outputFile, error))
    return fail(error);
  return 0;
}
