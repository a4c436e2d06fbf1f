//===- AttnOps.cpp - attn dialect operations ------------------------------===//

#include "tessera/Dialect/Attn/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

using namespace mlir;
using namespace tessera::attn;

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

/// The largest head count and head dimension a layer may declare.
static constexpr int64_t kMaxHeads = 4096;
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
