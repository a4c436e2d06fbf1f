//===- AttnAttributes.cpp - attn pattern attributes -----------------------===//
//
// Parameter verification of the pattern attributes. Every check here guards a
// user-facing error: each has a test in test/Dialect/Attn/invalid-*.mlir.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnAttributes.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include <algorithm>
#include <charconv>
#include <cmath>

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace tessera::attn;

#include "tessera/Dialect/Attn/AttnInterfaces.cpp.inc"

//===----------------------------------------------------------------------===//
// Parts of combinators: parsed through a nesting-depth guard
//===----------------------------------------------------------------------===//

/// The deepest nesting of union / intersect / difference a pattern file may
/// hold. Parsing, verifying, printing and every pass recurse over the
/// pattern tree; the limit keeps that recursion far from the stack's end.
static constexpr int kMaxPatternDepth = 64;
static thread_local int patternDepth = 0;

static ParseResult parsePart(AsmParser &p, PatternAttrInterface &out) {
  SMLoc loc = p.getCurrentLocation();
  if (patternDepth >= kMaxPatternDepth)
    return p.emitError(loc, "patterns nest more than ")
           << kMaxPatternDepth
           << " combinators deep (union, intersect, difference); flatten "
              "the pattern";
  ++patternDepth;
  Attribute a;
  ParseResult r = p.parseAttribute(a);
  --patternDepth;
  if (failed(r))
    return failure();
  out = dyn_cast<PatternAttrInterface>(a);
  if (!out)
    return p.emitError(loc, "expected an attention pattern, got ") << a;
  return success();
}

static void printPart(AsmPrinter &p, PatternAttrInterface part) {
  p.printAttribute(part);
}

static ParseResult parseParts(AsmParser &p,
                              SmallVector<PatternAttrInterface> &out) {
  return p.parseCommaSeparatedList([&]() {
    PatternAttrInterface part;
    if (failed(parsePart(p, part)))
      return failure();
    out.push_back(part);
    return success();
  });
}

static void printParts(AsmPrinter &p, ArrayRef<PatternAttrInterface> parts) {
  llvm::interleaveComma(parts, p,
                        [&](PatternAttrInterface a) { p.printAttribute(a); });
}

#define GET_ATTRDEF_CLASSES
#include "tessera/Dialect/Attn/AttnAttributes.cpp.inc"

void AttnDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "tessera/Dialect/Attn/AttnAttributes.cpp.inc"
      >();
}

FailureOr<SmallVector<int64_t>> tessera::attn::parseI64List(AsmParser &p) {
  SmallVector<int64_t> values;
  if (p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() {
        int64_t v;
        if (p.parseInteger(v))
          return failure();
        values.push_back(v);
        return success();
      }))
    return failure();
  return values;
}

void tessera::attn::printI64List(AsmPrinter &p, ArrayRef<int64_t> values) {
  p << '[';
  llvm::interleaveComma(values, p);
  p << ']';
}

namespace {
using EmitFn = function_ref<InFlightDiagnostic()>;

/// Checks `lo <= value <= kMaxExtent`.
LogicalResult checkRange(EmitFn emitError, StringRef attr, StringRef name,
                         int64_t value, int64_t lo) {
  if (value < lo || value > kMaxExtent)
    return emitError() << "'" << attr << "' parameter '" << name
                       << "' must be in [" << lo << ", " << kMaxExtent
                       << "], got " << value;
  return success();
}

/// Checks every list element is within [-kMaxExtent, kMaxExtent] or, with
/// `nonNegative`, within [0, kMaxExtent].
LogicalResult checkListRange(EmitFn emitError, StringRef attr, StringRef name,
                             ArrayRef<int64_t> values, bool nonNegative) {
  for (int64_t v : values)
    if (v > kMaxExtent || v < (nonNegative ? 0 : -kMaxExtent))
      return emitError() << "'" << attr << "' parameter '" << name << "' holds "
                         << v << ", outside ["
                         << (nonNegative ? 0 : -kMaxExtent) << ", "
                         << kMaxExtent << "]";
  return success();
}

/// Shared checks of the vertical and horizontal stripes.
LogicalResult verifyStripe(EmitFn emitError, StringRef attr,
                           ArrayRef<int64_t> ranges, int64_t period,
                           int64_t width, int64_t phase) {
  bool hasRanges = !ranges.empty();
  bool hasPeriod = period != 0 || width != 0 || phase != 0;
  if (hasRanges == hasPeriod)
    return emitError() << "'" << attr
                       << "' needs exactly one of 'ranges' or "
                          "'period'/'width'/'phase'";
  if (hasRanges) {
    if (ranges.size() % 2 != 0)
      return emitError() << "'" << attr
                         << "' ranges must hold [begin, end) pairs, got "
                         << ranges.size() << " values";
    if (failed(checkListRange(emitError, attr, "ranges", ranges, true)))
      return failure();
    for (size_t i = 0; i < ranges.size(); i += 2) {
      if (ranges[i] >= ranges[i + 1])
        return emitError() << "'" << attr << "' range " << i / 2 << " ["
                           << ranges[i] << ", " << ranges[i + 1]
                           << ") is empty";
      if (i > 0 && ranges[i] < ranges[i - 1])
        return emitError() << "'" << attr << "' range " << i / 2
                           << " overlaps or precedes the range before it";
    }
    return success();
  }
  if (failed(checkRange(emitError, attr, "period", period, 1)) ||
      failed(checkRange(emitError, attr, "width", width, 1)))
    return failure();
  if (width > period)
    return emitError() << "'" << attr << "' width " << width
                       << " exceeds its period " << period;
  if (phase < 0 || phase >= period)
    return emitError() << "'" << attr << "' phase must be in [0, " << period
                       << "), got " << phase;
  return success();
}

LogicalResult verifySetOp(EmitFn emitError, StringRef attr,
                          ArrayRef<PatternAttrInterface> patterns) {
  if (patterns.size() < 2)
    return emitError() << "'" << attr << "' needs at least two patterns, got "
                       << patterns.size();
  for (PatternAttrInterface p : patterns)
    if (!p)
      return emitError() << "'" << attr << "' holds a null pattern";
  return success();
}
} // namespace

LogicalResult WindowAttr::verify(EmitFn emitError, int64_t before,
                                 int64_t after) {
  if (failed(checkRange(emitError, "window", "before", before, 0)) ||
      failed(checkRange(emitError, "window", "after", after, 0)))
    return failure();
  return success();
}

LogicalResult PeriodTransposeAttr::verify(EmitFn emitError, int64_t period,
                                          int64_t prefix,
                                          ArrayRef<int64_t> kept) {
  // A period of 1 would be the identity: not a layout worth naming.
  if (failed(checkRange(emitError, "period_transpose", "period", period, 2)) ||
      failed(checkRange(emitError, "period_transpose", "prefix", prefix, 0)))
    return failure();
  if (kept.empty())
    return success();
  if (prefix != 0)
    return emitError() << "'period_transpose' takes 'prefix' or 'kept', not "
                          "both (prefix = S is kept = [0, S])";
  if (kept.size() % 2 != 0)
    return emitError()
           << "'period_transpose' kept must hold [begin, end) pairs, got "
           << kept.size() << " values";
  if (int64_t(kept.size() / 2) > kMaxKeptRanges)
    return emitError() << "'period_transpose' holds " << kept.size() / 2
                       << " kept ranges, more than the limit of "
                       << kMaxKeptRanges;
  if (failed(checkListRange(emitError, "period_transpose", "kept", kept, true)))
    return failure();
  for (size_t i = 0; i < kept.size(); i += 2) {
    if (kept[i] >= kept[i + 1])
      return emitError() << "'period_transpose' kept range " << i / 2 << " ["
                         << kept[i] << ", " << kept[i + 1] << ") is empty";
    if (i > 0 && kept[i] <= kept[i - 1])
      return emitError() << "'period_transpose' kept range " << i / 2 << " ["
                         << kept[i] << ", " << kept[i + 1]
                         << ") overlaps, touches or precedes the range "
                            "before it (merge touching ranges)";
  }
  if (kept.size() == 2 && kept[0] == 0)
    return emitError() << "'period_transpose' kept = [0, " << kept[1]
                       << "] is a prefix: write prefix = " << kept[1];
  return success();
}

LogicalResult SinkAttr::verify(EmitFn emitError, int64_t count) {
  return checkRange(emitError, "sink", "count", count, 1);
}

LogicalResult AShapeAttr::verify(EmitFn emitError, int64_t sink, int64_t before,
                                 int64_t after) {
  if (failed(checkRange(emitError, "a_shape", "sink", sink, 1)) ||
      failed(checkRange(emitError, "a_shape", "before", before, 0)) ||
      failed(checkRange(emitError, "a_shape", "after", after, 0)))
    return failure();
  return success();
}

LogicalResult MultiDiagonalAttr::verify(EmitFn emitError, int64_t stride,
                                        ArrayRef<int64_t> offsets,
                                        int64_t width) {
  if ((stride != 0) == !offsets.empty())
    return emitError()
           << "'multi_diagonal' needs exactly one of 'stride' or 'offsets'";
  if (failed(checkRange(emitError, "multi_diagonal", "width", width, 0)))
    return failure();
  if (stride != 0)
    return checkRange(emitError, "multi_diagonal", "stride", stride, 1);
  if (failed(checkListRange(emitError, "multi_diagonal", "offsets", offsets,
                            false)))
    return failure();
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] <= offsets[i - 1])
      return emitError()
             << "'multi_diagonal' offsets must be strictly increasing, got "
             << offsets[i - 1] << " then " << offsets[i];
  return success();
}

LogicalResult VerticalStripeAttr::verify(EmitFn emitError,
                                         ArrayRef<int64_t> ranges,
                                         int64_t period, int64_t width,
                                         int64_t phase) {
  return verifyStripe(emitError, "vertical_stripe", ranges, period, width,
                      phase);
}

LogicalResult HorizontalStripeAttr::verify(EmitFn emitError,
                                           ArrayRef<int64_t> ranges,
                                           int64_t period, int64_t width,
                                           int64_t phase) {
  return verifyStripe(emitError, "horizontal_stripe", ranges, period, width,
                      phase);
}

LogicalResult GridAttr::verify(EmitFn emitError, int64_t stride,
                               int64_t verticalWidth, int64_t slashWidth,
                               int64_t phase) {
  if (failed(checkRange(emitError, "grid", "stride", stride, 1)) ||
      failed(
          checkRange(emitError, "grid", "vertical_width", verticalWidth, 0)) ||
      failed(checkRange(emitError, "grid", "slash_width", slashWidth, 0)))
    return failure();
  if (verticalWidth == 0 && slashWidth == 0)
    return emitError() << "'grid' needs a non-zero vertical_width or "
                          "slash_width";
  if (verticalWidth > stride || slashWidth > stride)
    return emitError() << "'grid' line widths must not exceed the stride "
                       << stride;
  if (phase < 0 || phase >= stride)
    return emitError() << "'grid' phase must be in [0, " << stride << "), got "
                       << phase;
  return success();
}

LogicalResult StridedShardsAttr::verify(EmitFn emitError, int64_t shards,
                                        int64_t block, int64_t offset) {
  if (failed(checkRange(emitError, "strided_shards", "shards", shards, 1)) ||
      failed(checkRange(emitError, "strided_shards", "block", block, 1)))
    return failure();
  if (offset < 0 || offset >= shards)
    return emitError() << "'strided_shards' offset must be in [0, " << shards
                       << "), got " << offset;
  return success();
}

bool StridedShardsAttr::isHeadDependent() const { return getShards() > 1; }

LogicalResult ShiftedGroupsAttr::verify(EmitFn emitError, int64_t size,
                                        int64_t shift) {
  if (failed(checkRange(emitError, "shifted_groups", "size", size, 1)))
    return failure();
  if (shift < 0 || shift >= size)
    return emitError() << "'shifted_groups' shift must be in [0, " << size
                       << "), got " << shift;
  return success();
}

bool ShiftedGroupsAttr::isHeadDependent() const { return getShift() != 0; }

LogicalResult BlockSparseAttr::verify(EmitFn emitError, int64_t blockQ,
                                      int64_t blockK,
                                      ArrayRef<int64_t> blocks) {
  if (failed(checkRange(emitError, "block_sparse", "block_q", blockQ, 1)) ||
      failed(checkRange(emitError, "block_sparse", "block_k", blockK, 1)))
    return failure();
  if (blocks.size() % 2 != 0)
    return emitError() << "'block_sparse' blocks must hold (query block, key "
                          "block) pairs, got "
                       << blocks.size() << " values";
  if (failed(checkListRange(emitError, "block_sparse", "blocks", blocks, true)))
    return failure();
  llvm::DenseSet<std::pair<int64_t, int64_t>> seen;
  for (size_t i = 0; i < blocks.size(); i += 2)
    if (!seen.insert({blocks[i], blocks[i + 1]}).second)
      return emitError() << "'block_sparse' lists block (" << blocks[i] << ", "
                         << blocks[i + 1] << ") twice";
  return success();
}

LogicalResult UnionAttr::verify(EmitFn emitError,
                                ArrayRef<PatternAttrInterface> patterns) {
  return verifySetOp(emitError, "union", patterns);
}

LogicalResult IntersectAttr::verify(EmitFn emitError,
                                    ArrayRef<PatternAttrInterface> patterns) {
  return verifySetOp(emitError, "intersect", patterns);
}

static bool anyHeadDependent(ArrayRef<PatternAttrInterface> patterns) {
  return llvm::any_of(
      patterns, [](PatternAttrInterface p) { return p.isHeadDependent(); });
}

bool UnionAttr::isHeadDependent() const {
  return anyHeadDependent(getPatterns());
}

bool IntersectAttr::isHeadDependent() const {
  return anyHeadDependent(getPatterns());
}

bool DifferenceAttr::isHeadDependent() const {
  return getLhs().isHeadDependent() || getRhs().isHeadDependent();
}

//===----------------------------------------------------------------------===//
// Dynamic patterns
//===----------------------------------------------------------------------===//

FailureOr<Real> tessera::attn::parseReal(AsmParser &p) {
  llvm::SMLoc loc = p.getCurrentLocation();
  double value;
  int64_t integer;
  // `1` reads as 1.0: a coverage or threshold is a real number either way.
  // The sign is taken first, so that `-0.5` is not half an integer.
  bool negative = succeeded(p.parseOptionalMinus());
  OptionalParseResult asInteger = p.parseOptionalInteger(integer);
  if (asInteger.has_value()) {
    if (failed(*asInteger))
      return failure();
    value = double(integer);
  } else if (p.parseFloat(value)) {
    return failure();
  }
  if (negative)
    value = -value;
  if (!std::isfinite(value))
    return p.emitError(loc, "expected a finite number");
  return Real{value};
}

void tessera::attn::printReal(AsmPrinter &p, Real real) {
  double value = real.value;
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  std::string text(buf, ec == std::errc() ? end : buf);
  // The shortest form that reads back as the same double; MLIR's lexer
  // takes a real only with a decimal point before any exponent (`1e-05` is
  // the integer 1 and an identifier), so `1e-05` prints as `1.0e-05`.
  if (text.find('.') == std::string::npos)
    text.insert(std::min(text.find('e'), text.size()), ".0");
  p << text;
}

bool VerticalSlashAttr::isStatic() const { return false; }
bool BlockTopkAttr::isStatic() const { return false; }
bool RoutingAttr::isStatic() const { return false; }
bool BlockIndexAttr::isStatic() const { return false; }

static bool allStatic(ArrayRef<PatternAttrInterface> patterns) {
  return llvm::all_of(patterns,
                      [](PatternAttrInterface p) { return p.isStatic(); });
}
bool UnionAttr::isStatic() const { return allStatic(getPatterns()); }
bool IntersectAttr::isStatic() const { return allStatic(getPatterns()); }
bool DifferenceAttr::isStatic() const {
  return getLhs().isStatic() && getRhs().isStatic();
}

LogicalResult VerticalSlashAttr::verify(EmitFn emitError, int64_t lastQ,
                                        int64_t vertical, int64_t slash,
                                        int64_t firstColumns,
                                        int64_t lastDiagonals) {
  const char *name = "vertical_slash";
  if (failed(checkRange(emitError, name, "last_q", lastQ, 1)) ||
      failed(checkRange(emitError, name, "vertical", vertical, 0)) ||
      failed(checkRange(emitError, name, "slash", slash, 0)) ||
      failed(checkRange(emitError, name, "first_columns", firstColumns, 0)) ||
      failed(checkRange(emitError, name, "last_diagonals", lastDiagonals, 0)))
    return failure();
  if (vertical + slash + firstColumns + lastDiagonals == 0)
    return emitError() << "'vertical_slash' keeps nothing: give 'vertical', "
                          "'slash', 'first_columns' or 'last_diagonals'";
  return success();
}

LogicalResult BlockTopkAttr::verify(EmitFn emitError, int64_t block,
                                    Real gammaReal, int64_t topK,
                                    int64_t minBlocks, int64_t maxBlocks,
                                    Real tauReal) {
  double gamma = gammaReal.value, tau = tauReal.value;
  const char *name = "block_topk";
  if (block < 1 || block > 1024)
    return emitError() << "'block_topk' parameter 'block' must be in [1, "
                          "1024], got "
                       << block;
  if (failed(checkRange(emitError, name, "top_k", topK, 0)) ||
      failed(checkRange(emitError, name, "min_blocks", minBlocks, 0)) ||
      failed(checkRange(emitError, name, "max_blocks", maxBlocks, 0)))
    return failure();
  if ((gamma > 0) == (topK > 0))
    return emitError() << "'block_topk' needs exactly one of 'gamma' (a "
                          "coverage in (0, 1]) and 'top_k' (a count)";
  if (!(gamma >= 0 && gamma <= 1))
    return emitError() << "'block_topk' parameter 'gamma' must be in (0, 1], "
                          "got "
                       << gamma;
  if (!(tau >= 0 && tau <= 1))
    return emitError() << "'block_topk' parameter 'tau' must be in [0, 1], "
                          "got "
                       << tau;
  if (tau > 0 && topK > 0)
    return emitError() << "'block_topk' takes 'tau' (FlexPrefill's choice) "
                          "only with 'gamma'";
  if (topK > 0 && (minBlocks > 0 || maxBlocks > 0))
    return emitError() << "'block_topk' takes 'min_blocks' and 'max_blocks' "
                          "only with 'gamma' ('top_k' keeps exactly top_k "
                          "blocks)";
  if (maxBlocks > 0 && minBlocks > maxBlocks)
    return emitError() << "'block_topk' min_blocks " << minBlocks
                       << " exceeds max_blocks " << maxBlocks;
  return success();
}

LogicalResult RoutingAttr::verify(EmitFn emitError, int64_t clusters,
                                  int64_t kmeansIterations) {
  if (clusters < 1 || clusters > 65536)
    return emitError() << "'routing' parameter 'clusters' must be in [1, "
                          "65536], got "
                       << clusters;
  if (kmeansIterations < 0 || kmeansIterations > 100)
    return emitError() << "'routing' parameter 'kmeans_iterations' must be "
                          "in [0, 100], got "
                       << kmeansIterations;
  // k-means costs clusters x iterations x head_dim multiply-adds per key:
  // bounded per token, so its time follows the sequence length.
  if (clusters * kmeansIterations > 65536)
    return emitError() << "'routing' clusters x kmeans_iterations must be at "
                          "most 65536 (k-means' work per key), got "
                       << clusters << " x " << kmeansIterations;
  return success();
}

LogicalResult BlockIndexAttr::verify(EmitFn emitError, int64_t blockQ,
                                     int64_t blockK) {
  // The kernels' key tiles and query blocks are 64 rows: a block of the
  // caller's index is whole tiles, so that a listed block never cuts one.
  for (auto [name, value] : {std::pair{"block_q", blockQ}, {"block_k", blockK}})
    if (value < 64 || value > 1024 || value % 64)
      return emitError() << "'block_index' parameter '" << name
                         << "' must be a multiple of 64 in [64, 1024], got "
                         << value;
  return success();
}
