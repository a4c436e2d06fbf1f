//===- AttnOps.cpp - attn dialect operations ------------------------------===//

#include "tessera/Dialect/Attn/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <map>

using namespace mlir;
using namespace tessera::attn;

//===----------------------------------------------------------------------===//
// Head lists: `[0, 1, 2]`, `[0 to 31]`, `[0 to 3, 8, 12 to 15]`
//===----------------------------------------------------------------------===//

/// The most query heads a layer may have; also the most heads one head list
/// may name once its ranges are expanded (the verifier checks the indices
/// against the layer).
static constexpr int64_t kMaxHeads = 4096;

static ParseResult parseHeadList(OpAsmParser &parser,
                                 DenseI64ArrayAttr &heads) {
  SmallVector<int64_t> values;
  auto parseElement = [&]() -> ParseResult {
    llvm::SMLoc loc = parser.getCurrentLocation();
    int64_t first;
    if (parser.parseInteger(first))
      return failure();
    int64_t last = first;
    if (succeeded(parser.parseOptionalKeyword("to"))) {
      if (parser.parseInteger(last))
        return failure();
      if (last < first)
        return parser.emitError(loc, "head range ")
               << first << " to " << last
               << " is empty; write the smaller head first";
    }
    // Counted before expanding, so `[0 to 1099511627776]` costs nothing.
    if (uint64_t(last) - uint64_t(first) >=
        uint64_t(kMaxHeads) - values.size())
      return parser.emitError(loc, "head list names more than ")
             << kMaxHeads << " heads";
    for (int64_t h = first;; ++h) {
      values.push_back(h);
      if (h == last)
        break;
    }
    return success();
  };
  if (parser.parseCommaSeparatedList(OpAsmParser::Delimiter::Square,
                                     parseElement, "in the head list"))
    return failure();
  heads = parser.getBuilder().getDenseI64ArrayAttr(values);
  return success();
}

static void printHeadList(OpAsmPrinter &p, Operation *,
                          DenseI64ArrayAttr heads) {
  ArrayRef<int64_t> values = heads.asArrayRef();
  p << '[';
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    while (j + 1 < values.size() && values[j] != INT64_MAX &&
           values[j + 1] == values[j] + 1)
      ++j;
    if (i)
      p << ", ";
    if (j - i >= 2) { // Three or more consecutive heads: the range is shorter.
      p << values[i] << " to " << values[j];
      i = j + 1;
      continue;
    }
    p << values[i];
    ++i;
  }
  p << ']';
}

#define GET_OP_CLASSES
#include "tessera/Dialect/Attn/AttnOps.cpp.inc"

//===----------------------------------------------------------------------===//
// ModelOp
//===----------------------------------------------------------------------===//

LogicalResult ModelOp::verifyRegions() {
  llvm::DenseMap<int64_t, Operation *> seen;
  for (Operation &op : getBody().front()) {
    int64_t index;
    if (auto layer = dyn_cast<LayerOp>(op))
      index = layer.getIndex();
    else if (auto schedule = dyn_cast<ScheduleOp>(op))
      index = schedule.getIndex();
    else
      return op.emitOpError("is not allowed in 'attn.model'; only "
                            "'attn.layer' and 'attn.schedule' ops are");
    auto [it, inserted] = seen.try_emplace(index, &op);
    if (!inserted)
      return op.emitOpError("index ")
                 .append(index, " is used by another layer")
                 .attachNote(it->second->getLoc())
             << "first used here";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

/// The largest head dimension a layer may declare (kMaxHeads: above).
static constexpr int64_t kMaxHeadDim = 1024;

/// The checks of a layer's shape, shared by attn.layer and attn.schedule.
static LogicalResult verifyLayerShape(Operation *op, int64_t index,
                                      int64_t numHeads, int64_t numKvHeads,
                                      int64_t headDim, Type dtype) {
  auto emit = [&]() { return op->emitOpError(); };
  if (index < 0 || index > kMaxExtent)
    return emit() << "index must be in [0, " << kMaxExtent << "], got "
                  << index;
  if (numHeads < 1 || numHeads > kMaxHeads)
    return emit() << "heads must be in [1, " << kMaxHeads << "], got "
                  << numHeads;
  if (numKvHeads < 1 || numKvHeads > numHeads)
    return emit() << "kv_heads must be in [1, heads = " << numHeads << "], got "
                  << numKvHeads;
  if (numHeads % numKvHeads != 0)
    return emit() << "heads (" << numHeads
                  << ") must be a multiple of kv_heads (" << numKvHeads
                  << ") for grouped-query attention";
  if (headDim < 1 || headDim > kMaxHeadDim)
    return emit() << "head_dim must be in [1, " << kMaxHeadDim << "], got "
                  << headDim;
  if (!dtype.isF16() && !dtype.isBF16() && !dtype.isF32())
    return emit() << "dtype must be f16, bf16 or f32, got " << dtype;
  return success();
}

LogicalResult LayerOp::verify() {
  return verifyLayerShape(*this, getIndex(), getNumHeads(), getNumKvHeads(),
                          getHeadDim(), getDtype());
}

LogicalResult LayerOp::verifyRegions() {
  int64_t numHeads = getNumHeads();
  // Where each head got its pattern; null while unassigned.
  SmallVector<Operation *> owner(numHeads, nullptr);
  for (Operation &op : getBody().front()) {
    auto heads = dyn_cast<HeadsOp>(op);
    if (!heads)
      return op.emitOpError("is not allowed in 'attn.layer'; only "
                            "'attn.heads' ops are");
    for (int64_t h : heads.getHeads()) {
      if (h < 0 || h >= numHeads)
        return heads.emitOpError("head ")
               << h << " is out of range for a layer of " << numHeads
               << " heads";
      if (owner[h]) {
        InFlightDiagnostic diag = heads.emitOpError("head ")
                                  << h << " is assigned more than one pattern";
        if (owner[h] != heads.getOperation())
          diag.attachNote(owner[h]->getLoc()) << "first assigned here";
        return diag;
      }
      owner[h] = heads.getOperation();
    }
  }
  SmallVector<int64_t> missing;
  for (int64_t h = 0; h < numHeads; ++h)
    if (!owner[h])
      missing.push_back(h);
  if (!missing.empty()) {
    InFlightDiagnostic diag = emitOpError("head");
    if (missing.size() > 1)
      diag << "s";
    diag << " ";
    constexpr size_t kShown = 8;
    for (size_t i = 0; i < missing.size() && i < kShown; ++i)
      diag << (i ? ", " : "") << missing[i];
    if (missing.size() > kShown)
      diag << " and " << missing.size() - kShown << " more";
    diag << (missing.size() > 1 ? " have" : " has") << " no pattern";
    return diag;
  }
  return success();
}

PatternAttrInterface LayerOp::getHeadPattern(int64_t head) {
  for (auto heads : getBody().front().getOps<HeadsOp>())
    if (llvm::is_contained(heads.getHeads(), head))
      return heads.getPattern();
  return {};
}

//===----------------------------------------------------------------------===//
// HeadsOp
//===----------------------------------------------------------------------===//

LogicalResult HeadsOp::verify() {
  if (getHeads().empty())
    return emitOpError("needs at least one head");
  return success();
}

LogicalResult HeadsOp::canonicalize(HeadsOp op, PatternRewriter &rewriter) {
  PatternAttrInterface simplified = simplifyPattern(op.getPattern());
  if (simplified == op.getPattern())
    return failure();
  rewriter.modifyOpInPlace(op, [&] { op.setPatternAttr(simplified); });
  return success();
}

//===----------------------------------------------------------------------===//
// ScheduleOp
//===----------------------------------------------------------------------===//

/// The largest tile edge a schedule may use.
static constexpr int64_t kMaxBlock = 1024;

LogicalResult ScheduleOp::verify() {
  if (failed(verifyLayerShape(*this, getIndex(), getNumHeads(), getNumKvHeads(),
                              getHeadDim(), getDtype())))
    return failure();
  if (getBlock().size() != 2)
    return emitOpError("block must hold [block_q, block_k], got ")
           << getBlock().size() << " values";
  for (int64_t b : getBlock())
    if (b < 1 || b > kMaxBlock)
      return emitOpError("block sizes must be in [1, ")
             << kMaxBlock << "], got " << b;
  return success();
}

LogicalResult ScheduleOp::verifyRegions() {
  int64_t numHeads = getNumHeads();
  SmallVector<Operation *> owner(numHeads, nullptr);
  auto claim = [&](int64_t h, Operation *by) -> LogicalResult {
    if (h < 0 || h >= numHeads)
      return by->emitOpError("head ")
             << h << " is out of range for a layer of " << numHeads << " heads";
    if (owner[h])
      return by->emitOpError("head ") << h << " is scheduled more than once";
    owner[h] = by;
    return success();
  };
  for (int64_t h : getSkipped())
    if (failed(claim(h, *this)))
      return failure();
  int64_t expectedId = 0;
  for (Operation &op : getBody().front()) {
    auto group = dyn_cast<GroupOp>(op);
    if (!group)
      return op.emitOpError("is not allowed in 'attn.schedule'; only "
                            "'attn.group' ops are");
    if (group.getId() != expectedId)
      return group.emitOpError("id must be ")
             << expectedId << " (groups are numbered in order), got "
             << group.getId();
    ++expectedId;
    if (group.getHeads().empty())
      return group.emitOpError("needs at least one head");
    if (isa<SkipAttr>(group.getPattern()))
      return group.emitOpError("cannot hold #attn.skip; list skipped heads "
                               "in the schedule's 'skipped'");
    for (int64_t h : group.getHeads())
      if (failed(claim(h, group)))
        return failure();
  }
  for (int64_t h = 0; h < numHeads; ++h)
    if (!owner[h])
      return emitOpError("head ") << h << " is neither scheduled nor skipped";
  return success();
}

//===----------------------------------------------------------------------===//
// GroupOp and the run ops
//===----------------------------------------------------------------------===//

static bool isRunOp(Operation *op) {
  return isa<RunIntervalOp, RunPeriodicOp, RunListedOp, RunShardsOp,
             RunGroupsOp, RunBlocksOp, RunAllOp, RunUnionOp, RunIntersectOp,
             RunDifferenceOp, BuildIndexOp, RunPositionsOp>(op);
}

/// The ops of a region holding run expressions: all run ops, between `min`
/// and `max` of them.
static LogicalResult verifyRunRegion(Operation *owner, Region &region,
                                     size_t min, size_t max) {
  if (region.empty())
    return success();
  size_t n = 0;
  for (Operation &op : region.front()) {
    if (!isRunOp(&op))
      return op.emitOpError("is not a run op ('attn.run_*')");
    ++n;
  }
  if (n < min || n > max) {
    InFlightDiagnostic d = owner->emitOpError("needs ");
    if (min == max)
      d << min;
    else if (max == SIZE_MAX)
      d << "at least " << min;
    else
      d << min << " to " << max;
    return d << " run ops, got " << n;
  }
  return success();
}

StringRef BuildIndexOp::layoutFor(PatternAttrInterface p) {
  if (isa<VerticalSlashAttr>(p))
    return "columns_and_diagonals";
  // block_index: the caller's lists, read rather than built.
  if (isa<BlockTopkAttr, BlockIndexAttr>(p))
    return "block_lists";
  if (isa<RoutingAttr>(p))
    return "segments";
  return "";
}

LogicalResult BuildIndexOp::verify() {
  StringRef want = layoutFor(getPattern());
  if (want.empty())
    return emitOpError("builds the index of a dynamic leaf (vertical_slash, "
                       "block_topk, routing, block_index), not of ")
           << getPattern();
  if (getLayout() != want)
    return emitOpError("layout of ")
           << getPattern() << " is \"" << want << "\", got \""
           << getLayout() << "\"";
  return success();
}

LogicalResult GroupOp::verifyRegions() {
  // A dynamic leaf's index is built per input on the original order (and
  // routing permutes the tokens itself): no static layout applies.
  if (getLayout() && !getPattern().isStatic())
    return emitOpError("layout needs a static pattern; ")
           << getPattern() << " is dynamic";
  Region &runs = getRuns();
  if (runs.empty() || runs.front().empty() ||
      !isa<RunTransposedOp>(runs.front().back()))
    return verifyRunRegion(*this, runs, 1, 1);
  // The forward runs, then their transpose.
  Block &body = runs.front();
  if (body.getOperations().size() != 2)
    return emitOpError("needs 1 run op before 'attn.run_transposed', got ")
           << body.getOperations().size() - 1;
  if (!isRunOp(&body.front()))
    return body.front().emitOpError("is not a run op ('attn.run_*')");
  return success();
}

LogicalResult RunTransposedOp::verifyRegions() {
  if (failed(verifyRunRegion(*this, getBody(), 1, 1)))
    return failure();
  WalkResult r = getBody().walk([](Operation *op) {
    if (isa<RunIntervalOp, BuildIndexOp>(op)) {
      op->emitOpError("has no transposed meaning: inside "
                      "'attn.run_transposed' use 'attn.run_positions'");
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}

LogicalResult RunUnionOp::verifyRegions() {
  // An empty union visits no key block: the runs of a pattern that allows
  // nothing (e.g. an unsimplified intersect<skip, ...>).
  return verifyRunRegion(*this, getBody(), 0, SIZE_MAX);
}

LogicalResult RunIntersectOp::verifyRegions() {
  return verifyRunRegion(*this, getBody(), 1, SIZE_MAX);
}

LogicalResult RunDifferenceOp::verifyRegions() {
  return verifyRunRegion(*this, getBody(), 2, 2);
}

static LogicalResult verifyAxis(Operation *op, StringRef axis) {
  if (axis != "key" && axis != "diagonal" && axis != "row")
    return op->emitOpError("axis must be \"key\", \"diagonal\" or \"row\", "
                           "got \"")
           << axis << "\"";
  return success();
}

LogicalResult RunPeriodicOp::verify() {
  if (failed(verifyAxis(*this, getAxis())))
    return failure();
  if (getPeriod() < 1 || getWidth() < 1)
    return emitOpError("period and width must be at least 1, got ")
           << getPeriod() << " and " << getWidth();
  return success();
}

LogicalResult RunListedOp::verify() {
  if (failed(verifyAxis(*this, getAxis())))
    return failure();
  ArrayRef<int64_t> r = getRanges();
  if (r.size() % 2 != 0)
    return emitOpError("ranges must hold [begin, end) pairs");
  for (size_t i = 0; i < r.size(); i += 2) {
    if (r[i] >= r[i + 1])
      return emitOpError("range [") << r[i] << ", " << r[i + 1] << ") is empty";
    if (i > 0 && r[i] <= r[i - 1])
      return emitOpError("ranges must be sorted, disjoint and not touching");
  }
  return success();
}

// Bounds: (variable, constant) pairs for keys (variable 0: none, 1: p0,
// 2: p1) and (coefficient of i, constant) pairs for blocks. Lower bounds are
// maxima, upper bounds minima. The transposed forms: positions (1: k0,
// 2: k1) and query blocks (coefficient of j).

namespace {
enum class BoundForm { Keys, Blocks, Positions, QueryBlocks };
} // namespace

static bool isBlockForm(BoundForm form) {
  return form == BoundForm::Blocks || form == BoundForm::QueryBlocks;
}

static void printAtom(OpAsmPrinter &p, BoundForm form, int64_t var,
                      int64_t c) {
  if (var == 0) {
    p << c;
    return;
  }
  const char *index = form == BoundForm::QueryBlocks ? "j" : "i";
  if (form == BoundForm::Keys)
    p << (var == 1 ? "p0" : "p1");
  else if (form == BoundForm::Positions)
    p << (var == 1 ? "k0" : "k1");
  else if (var == 1)
    p << index;
  else
    p << var << " * " << index;
  if (c != 0)
    p << (c < 0 ? " - " : " + ") << (c < 0 ? -c : c);
}

static void printBound(OpAsmPrinter &p, BoundForm form, ArrayRef<int64_t> b,
                       bool upper) {
  if (b.empty()) {
    // Positions are not clipped at 0 (they are before row 0 when Nq > Nk).
    p << (upper ? "end" : form == BoundForm::Positions ? "begin" : "0");
    return;
  }
  if (b.size() > 2)
    p << (upper ? "min(" : "max(");
  for (size_t i = 0; i < b.size(); i += 2) {
    if (i)
      p << ", ";
    printAtom(p, form, b[i], b[i + 1]);
  }
  if (b.size() > 2)
    p << ")";
}

static ParseResult parseAtom(OpAsmParser &parser, BoundForm form,
                             SmallVectorImpl<int64_t> &out) {
  int64_t var = 0, c = 0;
  int64_t value;
  OptionalParseResult num = parser.parseOptionalInteger(value);
  if (num.has_value()) {
    if (failed(*num))
      return failure();
    if (isBlockForm(form) && succeeded(parser.parseOptionalStar())) {
      if (parser.parseKeyword(form == BoundForm::Blocks ? "i" : "j"))
        return failure();
      var = value;
    } else {
      out.append({0, value});
      return success();
    }
  } else {
    StringRef name;
    SMLoc loc = parser.getCurrentLocation();
    if (parser.parseKeyword(&name))
      return failure();
    if (form == BoundForm::Keys && (name == "p0" || name == "p1"))
      var = name == "p0" ? 1 : 2;
    else if (form == BoundForm::Positions && (name == "k0" || name == "k1"))
      var = name == "k0" ? 1 : 2;
    else if (form == BoundForm::Blocks && name == "i")
      var = 1;
    else if (form == BoundForm::QueryBlocks && name == "j")
      var = 1;
    else
      return parser.emitError(loc, "expected ")
             << (form == BoundForm::Keys        ? "'p0' or 'p1'"
                 : form == BoundForm::Positions ? "'k0' or 'k1'"
                 : form == BoundForm::Blocks    ? "'i'"
                                                : "'j'")
             << " or an integer, got '" << name << "'";
  }
  bool minus = succeeded(parser.parseOptionalMinus());
  if (minus || succeeded(parser.parseOptionalPlus())) {
    if (parser.parseInteger(c))
      return failure();
    if (minus)
      c = -c;
  }
  out.append({var, c});
  return success();
}

static ParseResult parseBound(OpAsmParser &parser, BoundForm form, bool upper,
                              SmallVectorImpl<int64_t> &out) {
  if (upper && succeeded(parser.parseOptionalKeyword("end")))
    return success();
  if (!upper && form == BoundForm::Positions &&
      succeeded(parser.parseOptionalKeyword("begin")))
    return success();
  if (succeeded(parser.parseOptionalKeyword(upper ? "min" : "max"))) {
    if (parser.parseLParen())
      return failure();
    do {
      if (parseAtom(parser, form, out))
        return failure();
    } while (succeeded(parser.parseOptionalComma()));
    return parser.parseRParen();
  }
  if (parseAtom(parser, form, out))
    return failure();
  // A lower bound 0 is the clip itself: the canonical form is empty (not
  // for positions, which are not clipped at 0).
  if (!upper && form != BoundForm::Positions && out.size() == 2 &&
      out[0] == 0 && out[1] == 0)
    out.clear();
  return success();
}

static ParseResult parseRange(OpAsmParser &parser, BoundForm form,
                              SmallVectorImpl<int64_t> &lo,
                              SmallVectorImpl<int64_t> &hi) {
  if (parser.parseLSquare() || parseBound(parser, form, false, lo) ||
      parser.parseComma() || parseBound(parser, form, true, hi) ||
      parser.parseRSquare())
    return failure();
  return success();
}

/// The interval form attn.run_interval and attn.run_positions share:
/// `[lo, hi] full [flo, fhi]` in `form`, then optionally
/// `blocks [blo, bhi] full [fblo, fbhi]` in `blockForm`; the bounds become
/// the attributes `names` (eight, the block ones last).
static ParseResult parseIntervalForm(OpAsmParser &parser,
                                     OperationState &result, BoundForm form,
                                     BoundForm blockForm,
                                     const char *const (&names)[8]) {
  SmallVector<int64_t> lists[8];
  if (parseRange(parser, form, lists[0], lists[1]) ||
      parser.parseKeyword("full") ||
      parseRange(parser, form, lists[2], lists[3]))
    return failure();
  bool blocks = succeeded(parser.parseOptionalKeyword("blocks"));
  if (blocks && (parseRange(parser, blockForm, lists[4], lists[5]) ||
                 parser.parseKeyword("full") ||
                 parseRange(parser, blockForm, lists[6], lists[7])))
    return failure();
  Builder &b = parser.getBuilder();
  for (int i = 0; i < (blocks ? 8 : 4); ++i)
    result.addAttribute(names[i], b.getDenseI64ArrayAttr(lists[i]));
  return parser.parseOptionalAttrDict(result.attributes);
}

/// Prints what parseIntervalForm reads (after the op's keyword, if any).
static void printIntervalForm(OpAsmPrinter &p, Operation *op, BoundForm form,
                              BoundForm blockForm,
                              const char *const (&names)[8]) {
  auto bounds = [&](int i) {
    auto a = op->getAttrOfType<DenseI64ArrayAttr>(names[i]);
    return a ? a.asArrayRef() : ArrayRef<int64_t>();
  };
  auto range = [&](BoundForm f, int i) {
    p << "[";
    printBound(p, f, bounds(i), false);
    p << ", ";
    printBound(p, f, bounds(i + 1), true);
    p << "]";
  };
  range(form, 0);
  p << " full ";
  range(form, 2);
  if (op->getAttr(names[4])) {
    p << " blocks ";
    range(blockForm, 4);
    p << " full ";
    range(blockForm, 6);
  }
  SmallVector<StringRef> elided(std::begin(names), std::end(names));
  p.printOptionalAttrDict(op->getAttrs(), elided);
}

static const char *const kIntervalNames[8] = {
    "keys_lo",   "keys_hi",   "full_lo",        "full_hi",
    "blocks_lo", "blocks_hi", "full_blocks_lo", "full_blocks_hi"};

ParseResult RunIntervalOp::parse(OpAsmParser &parser, OperationState &result) {
  if (parser.parseKeyword("keys"))
    return failure();
  return parseIntervalForm(parser, result, BoundForm::Keys, BoundForm::Blocks,
                           kIntervalNames);
}

void RunIntervalOp::print(OpAsmPrinter &p) {
  p << " keys ";
  printIntervalForm(p, *this, BoundForm::Keys, BoundForm::Blocks,
                    kIntervalNames);
}

static int64_t floorDivI(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

/// Keeps the tightest term per coefficient; drops lower constants <= 0.
static SmallVector<int64_t> tighten(ArrayRef<int64_t> pairs, bool upper) {
  std::map<int64_t, int64_t> best;
  for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
    auto [it, fresh] = best.insert({pairs[i], pairs[i + 1]});
    if (!fresh)
      it->second = upper ? std::min(it->second, pairs[i + 1])
                         : std::max(it->second, pairs[i + 1]);
  }
  SmallVector<int64_t> out;
  for (auto [coef, c] : best)
    if (upper || coef != 0 || c > 0)
      out.append({coef, c});
  return out;
}

SmallVector<SmallVector<int64_t>, 4>
RunIntervalOp::deriveBlocks(ArrayRef<int64_t> keysLo, ArrayRef<int64_t> keysHi,
                            ArrayRef<int64_t> fullLo, ArrayRef<int64_t> fullHi,
                            int64_t blockQ, int64_t blockK) {
  // Query block i of Nq = Nk: p0 = i * bq, p1 = i * bq + bq - 1.
  int64_t r = blockQ / blockK;
  // Key x of term (var, c) is r_var * i * bk + off_var + c.
  auto map = [&](ArrayRef<int64_t> terms, bool upper, int mode) {
    SmallVector<int64_t> out;
    for (size_t i = 0; i + 1 < terms.size(); i += 2) {
      int64_t var = terms[i], c = terms[i + 1];
      int64_t off = var == 2 ? blockQ - 1 : 0, coef = var == 0 ? 0 : r;
      int64_t x = off + c, blk;
      if (mode == 0) // floor(x / bk)
        blk = floorDivI(x, blockK);
      else if (mode == 1) // ceil(x / bk)
        blk = -floorDivI(-x, blockK);
      else // floor((x + 1) / bk) - 1
        blk = floorDivI(x + 1, blockK) - 1;
      out.append({coef, blk});
    }
    return tighten(out, upper);
  };
  return {map(keysLo, false, 0), map(keysHi, true, 0), map(fullLo, false, 1),
          map(fullHi, true, 2)};
}

/// The checks attn.run_interval and attn.run_positions share. `bounds`:
/// lo, hi, full lo, full hi as (variable, constant) pairs whose variables
/// are 0 (none), 1 and 2 (named in `vars`); `blocks`: the four block bounds,
/// all or none, which must follow from the bounds at the enclosing
/// schedule's tiles. The forward's bounds count keys (their blocks are query
/// blocks' key blocks, block_q a multiple of block_k); the transposed ones
/// (`transposed`) count positions of a key block (block_k a multiple of
/// block_q), the roles of the block sizes swapped.
static LogicalResult
verifyIntervalForm(Operation *op, const ArrayRef<int64_t> (&bounds)[4],
                   const std::optional<ArrayRef<int64_t>> (&blocks)[4],
                   const char *vars, bool transposed) {
  for (ArrayRef<int64_t> b : bounds) {
    if (b.size() % 2 != 0)
      return op->emitOpError("bounds must hold (variable, constant) pairs");
    for (size_t i = 0; i < b.size(); i += 2)
      if (b[i] < 0 || b[i] > 2)
        return op->emitOpError("bound variables are ") << vars;
  }
  int present = 0;
  for (const auto &b : blocks)
    present += b.has_value();
  if (present == 0)
    return success();
  if (present != 4)
    return op->emitOpError("needs all four block bounds or none");
  auto schedule = op->getParentOfType<ScheduleOp>();
  if (!schedule)
    return op->emitOpError("block bounds need an enclosing 'attn.schedule'");
  int64_t bq = schedule.getBlockQ(), bk = schedule.getBlockK();
  int64_t rows = transposed ? bk : bq, cols = transposed ? bq : bk;
  if (rows % cols != 0)
    return op->emitOpError(transposed
                               ? "block bounds need block_k to be a multiple "
                                 "of block_q, the schedule has "
                               : "block bounds need block_q to be a multiple "
                                 "of block_k, the schedule has ")
           << bq << " x " << bk;
  // For the transposed form, key block j of Nq = Nk has k0 = j * bk and
  // k1 = j * bk + bk - 1: the forward's p0 and p1 with the sizes swapped.
  auto expected = RunIntervalOp::deriveBlocks(bounds[0], bounds[1], bounds[2],
                                              bounds[3], rows, cols);
  for (int i = 0; i < 4; ++i)
    if (ArrayRef<int64_t>(expected[i]) != *blocks[i])
      return op->emitOpError(transposed
                                 ? "block bounds do not follow from the "
                                   "positions at "
                                 : "block bounds do not follow from the key "
                                   "bounds at ")
             << bq << " x " << bk << " tiles";
  return success();
}

LogicalResult RunIntervalOp::verify() {
  return verifyIntervalForm(
      *this, {getKeysLo(), getKeysHi(), getFullLo(), getFullHi()},
      {getBlocksLo(), getBlocksHi(), getFullBlocksLo(), getFullBlocksHi()},
      "0 (none), 1 (p0), 2 (p1)", /*transposed=*/false);
}

static const char *const kPositionNames[8] = {
    "lo",        "hi",        "full_lo",        "full_hi",
    "blocks_lo", "blocks_hi", "full_blocks_lo", "full_blocks_hi"};

ParseResult RunPositionsOp::parse(OpAsmParser &parser,
                                  OperationState &result) {
  return parseIntervalForm(parser, result, BoundForm::Positions,
                           BoundForm::QueryBlocks, kPositionNames);
}

void RunPositionsOp::print(OpAsmPrinter &p) {
  p << " ";
  printIntervalForm(p, *this, BoundForm::Positions, BoundForm::QueryBlocks,
                    kPositionNames);
}

LogicalResult RunPositionsOp::verify() {
  if (!(*this)->getParentOfType<RunTransposedOp>())
    return emitOpError("is only meaningful inside 'attn.run_transposed'");
  return verifyIntervalForm(
      *this, {getLo(), getHi(), getFullLo(), getFullHi()},
      {getBlocksLo(), getBlocksHi(), getFullBlocksLo(), getFullBlocksHi()},
      "0 (none), 1 (k0), 2 (k1)", /*transposed=*/true);
}
