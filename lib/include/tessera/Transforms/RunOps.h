//===- RunOps.h - run expressions as attn.run_* ops -------------*- C++ -*-===//
//
// The L1 IR form of a head group's run expression (tessera/Schedule/Runs.h):
// built by --attn-lower-runs, read back by the CUDA emitter to check that the
// IR and the pattern agree.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TRANSFORMS_RUNOPS_H
#define TESSERA_TRANSFORMS_RUNOPS_H

#include "tessera/Schedule/Runs.h"

#include "mlir/IR/Builders.h"

namespace tessera {

/// Creates the ops of `e` at the builder's insertion point; interval ops get
/// their block form when `blockQ` is a multiple of `blockK`.
void buildRunOps(mlir::OpBuilder &b, mlir::Location loc,
                 const schedule::RunExpr &e, int64_t blockQ, int64_t blockK);

/// The run expression of a run op (and its region), or failure with an
/// error at the op.
mlir::FailureOr<schedule::RunExpr> runExprFromOp(mlir::Operation *op);

} // namespace tessera

#endif // TESSERA_TRANSFORMS_RUNOPS_H
