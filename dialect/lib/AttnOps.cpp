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
  llvm::DenseMap<int64_t, LayerOp> seen;
  for (Operation &op : getBody().front()) {
    auto layer = dyn_cast<LayerOp>(op);
    if (!layer)
      return op.emitOpError("is not allowed in 'attn.model'; only "
                            "'attn.layer' ops are");
    auto [it, inserted] = seen.try_emplace(layer.getIndex(), layer);
    if (!inserted)
      return layer.emitOpError("index ")
                 .append(layer.getIndex(), " is used by another layer")
                 .attachNote(it->second.getLoc())
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

LogicalResult LayerOp::verify() {
  if (getIndex() < 0 || getIndex() > kMaxExtent)
    return emitOpError("index must be in [0, ")
           << kMaxExtent << "], got " << getIndex();
  if (getNumHeads() < 1 || getNumHeads() > kMaxHeads)
    return emitOpError("heads must be in [1, ")
           << kMaxHeads << "], got " << getNumHeads();
  if (getNumKvHeads() < 1 || getNumKvHeads() > getNumHeads())
    return emitOpError("kv_heads must be in [1, heads = ")
           << getNumHeads() << "], got " << getNumKvHeads();
  if (getNumHeads() % getNumKvHeads() != 0)
    return emitOpError("heads (")
           << getNumHeads() << ") must be a multiple of kv_heads ("
           << getNumKvHeads() << ") for grouped-query attention";
  if (getHeadDim() < 1 || getHeadDim() > kMaxHeadDim)
    return emitOpError("head_dim must be in [1, ")
           << kMaxHeadDim << "], got " << getHeadDim();
  Type t = getDtype();
  if (!t.isF16() && !t.isBF16() && !t.isF32())
    return emitOpError("dtype must be f16, bf16 or f32, got ") << t;
  return success();
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
