//===- RunOps.cpp - run expressions as attn.run_* ops ---------------------===//

#include "tessera/Transforms/RunOps.h"

#include "tessera/Dialect/Attn/AttnOps.h"

using namespace mlir;
using namespace tessera;
using namespace tessera::attn;
using schedule::Atom;
using schedule::Bound;
using schedule::RunExpr;

namespace {

SmallVector<int64_t> flatten(const Bound &b) {
  SmallVector<int64_t> out;
  for (const Atom &a : b)
    out.append({a.var, a.c});
  return out;
}

Bound unflatten(ArrayRef<int64_t> flat) {
  Bound b;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    b.push_back(Atom{flat[i], flat[i + 1]});
  return b;
}

/// Positions' atoms k0 + c and k1 + c are variables 1 and 2 in the op.
SmallVector<int64_t> flattenPositions(const Bound &b) {
  SmallVector<int64_t> out;
  for (const Atom &a : b)
    out.append({a.var == Atom::Const ? 0 : a.var - Atom::K0 + 1, a.c});
  return out;
}

Bound unflattenPositions(ArrayRef<int64_t> flat) {
  Bound b;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    b.push_back(Atom{flat[i] == 0 ? Atom::Const : flat[i] - 1 + Atom::K0,
                     flat[i + 1]});
  return b;
}

SmallVector<int64_t> flattenPairs(
    const std::vector<std::pair<int64_t, int64_t>> &pairs) {
  SmallVector<int64_t> out;
  for (auto [a, b] : pairs)
    out.append({a, b});
  return out;
}

std::vector<std::pair<int64_t, int64_t>> pairs(ArrayRef<int64_t> flat) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    out.push_back({flat[i], flat[i + 1]});
  return out;
}

StringRef axisName(RunExpr::Kind k) {
  switch (k) {
  case RunExpr::PeriodicK:
  case RunExpr::ListedK:
    return "key";
  case RunExpr::PeriodicD:
  case RunExpr::ListedD:
    return "diagonal";
  default:
    return "row";
  }
}

template <typename OpTy>
void buildRegion(OpBuilder &b, Location loc, const RunExpr &e, int64_t bq,
                 int64_t bk) {
  auto op = OpTy::create(b, loc);
  Block *body = new Block();
  op.getBody().push_back(body);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToEnd(body);
  for (const RunExpr &c : e.children)
    buildRunOps(b, loc, c, bq, bk);
}

} // namespace

void tessera::buildRunOps(OpBuilder &b, Location loc, const RunExpr &e,
                          int64_t bq, int64_t bk) {
  switch (e.kind) {
  case RunExpr::All:
    RunAllOp::create(b, loc);
    return;
  case RunExpr::None:
    // A pattern that allows nothing (skipped heads have no group, but an
    // unsimplified intersect<skip, ...> does): an empty union.
    RunUnionOp::create(b, loc).getBody().push_back(new Block());
    return;
  case RunExpr::Interval: {
    SmallVector<int64_t> lo = flatten(e.lo), hi = flatten(e.hi),
                         flo = flatten(e.flo), fhi = flatten(e.fhi);
    auto op = RunIntervalOp::create(
        b, loc, b.getDenseI64ArrayAttr(lo), b.getDenseI64ArrayAttr(hi),
        b.getDenseI64ArrayAttr(flo), b.getDenseI64ArrayAttr(fhi), nullptr,
        nullptr, nullptr, nullptr);
    if (bq % bk == 0) {
      auto blocks = RunIntervalOp::deriveBlocks(lo, hi, flo, fhi, bq, bk);
      op.setBlocksLo(blocks[0]);
      op.setBlocksHi(blocks[1]);
      op.setFullBlocksLo(blocks[2]);
      op.setFullBlocksHi(blocks[3]);
    }
    return;
  }
  case RunExpr::Positions: {
    SmallVector<int64_t> lo = flattenPositions(e.lo),
                         hi = flattenPositions(e.hi),
                         flo = flattenPositions(e.flo),
                         fhi = flattenPositions(e.fhi);
    auto op = RunPositionsOp::create(
        b, loc, b.getDenseI64ArrayAttr(lo), b.getDenseI64ArrayAttr(hi),
        b.getDenseI64ArrayAttr(flo), b.getDenseI64ArrayAttr(fhi), nullptr,
        nullptr, nullptr, nullptr);
    if (bk % bq == 0) {
      // Key block j plays the forward's query block i, with the block
      // sizes swapped.
      auto blocks = RunIntervalOp::deriveBlocks(lo, hi, flo, fhi, bk, bq);
      op.setBlocksLo(blocks[0]);
      op.setBlocksHi(blocks[1]);
      op.setFullBlocksLo(blocks[2]);
      op.setFullBlocksHi(blocks[3]);
    }
    return;
  }
  case RunExpr::PeriodicK:
  case RunExpr::PeriodicD:
  case RunExpr::PeriodicP:
    RunPeriodicOp::create(b, loc, axisName(e.kind), e.a, e.b, e.c);
    return;
  case RunExpr::ListedK:
  case RunExpr::ListedD:
  case RunExpr::ListedP:
    RunListedOp::create(b, loc, axisName(e.kind), flattenPairs(e.ranges));
    return;
  case RunExpr::Shards:
    RunShardsOp::create(b, loc, e.a, e.b, e.c);
    return;
  case RunExpr::Groups:
    RunGroupsOp::create(b, loc, e.a, e.b);
    return;
  case RunExpr::Blocks:
    RunBlocksOp::create(b, loc, e.a, e.b, flattenPairs(e.blocks));
    return;
  case RunExpr::Union:
    buildRegion<RunUnionOp>(b, loc, e, bq, bk);
    return;
  case RunExpr::Intersect:
    buildRegion<RunIntersectOp>(b, loc, e, bq, bk);
    return;
  case RunExpr::Difference:
    buildRegion<RunDifferenceOp>(b, loc, e, bq, bk);
    return;
  }
}

FailureOr<RunExpr> tessera::runExprFromOp(Operation *op) {
  RunExpr e;
  auto children = [&](Region &r, RunExpr::Kind kind) -> LogicalResult {
    e.kind = kind;
    for (Operation &child : r.front()) {
      FailureOr<RunExpr> c = runExprFromOp(&child);
      if (failed(c))
        return failure();
      e.children.push_back(std::move(*c));
    }
    return success();
  };
  auto axisKind = [](StringRef axis, RunExpr::Kind k, RunExpr::Kind d,
                     RunExpr::Kind p) {
    return axis == "key" ? k : axis == "diagonal" ? d : p;
  };
  if (auto i = dyn_cast<RunIntervalOp>(op)) {
    e.kind = RunExpr::Interval;
    e.lo = unflatten(i.getKeysLo());
    e.hi = unflatten(i.getKeysHi());
    e.flo = unflatten(i.getFullLo());
    e.fhi = unflatten(i.getFullHi());
  } else if (auto ps = dyn_cast<RunPositionsOp>(op)) {
    e.kind = RunExpr::Positions;
    e.lo = unflattenPositions(ps.getLo());
    e.hi = unflattenPositions(ps.getHi());
    e.flo = unflattenPositions(ps.getFullLo());
    e.fhi = unflattenPositions(ps.getFullHi());
  } else if (auto p = dyn_cast<RunPeriodicOp>(op)) {
    e.kind = axisKind(p.getAxis(), RunExpr::PeriodicK, RunExpr::PeriodicD,
                      RunExpr::PeriodicP);
    e.a = p.getPeriod();
    e.b = p.getWidth();
    e.c = p.getPhase();
  } else if (auto l = dyn_cast<RunListedOp>(op)) {
    e.kind = axisKind(l.getAxis(), RunExpr::ListedK, RunExpr::ListedD,
                      RunExpr::ListedP);
    e.ranges = pairs(l.getRanges());
  } else if (auto s = dyn_cast<RunShardsOp>(op)) {
    e.kind = RunExpr::Shards;
    e.a = s.getBlock();
    e.b = s.getShards();
    e.c = s.getOffset();
  } else if (auto g = dyn_cast<RunGroupsOp>(op)) {
    e.kind = RunExpr::Groups;
    e.a = g.getSize();
    e.b = g.getShift();
  } else if (auto bl = dyn_cast<RunBlocksOp>(op)) {
    e.kind = RunExpr::Blocks;
    e.a = bl.getBlockQ();
    e.b = bl.getBlockK();
    e.blocks = pairs(bl.getBlocks());
  } else if (isa<RunAllOp>(op)) {
    e.kind = RunExpr::All;
  } else if (auto u = dyn_cast<RunUnionOp>(op)) {
    if (failed(children(u.getBody(), RunExpr::Union)))
      return failure();
    if (e.children.empty())
      e = RunExpr{RunExpr::None};
  } else if (auto n = dyn_cast<RunIntersectOp>(op)) {
    if (failed(children(n.getBody(), RunExpr::Intersect)))
      return failure();
  } else if (auto d = dyn_cast<RunDifferenceOp>(op)) {
    if (failed(children(d.getBody(), RunExpr::Difference)))
      return failure();
  } else {
    return op->emitOpError("is not a run op");
  }
  return e;
}
