//===- BackwardRuns.h - generated code of the transposed runs --*- C++ -*-===//
//
// The backward's key-major pass walks, for each key block, the query blocks
// that see it (the transposed schedule, schedule::transposeRuns, shown in
// the L1 IR as attn.run_transposed). This turns a transposed run
// expression into straight-line C++ over tessera/kernel/Program.h's
// closed-form transposed leaves (positionRunT, bandDRunT, ...), as
// emitGroupCode does for the forward runs. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SCHEDULE_BACKWARDRUNS_H
#define TESSERA_SCHEDULE_BACKWARDRUNS_H

#include "tessera/Schedule/Runs.h"

#include <string>

namespace tessera::schedule {

/// C++ of `struct NAME { static Run runFromT(const TRunCtx &ctx, i64 qb); }`
/// (host and device, TESSERA_HD) and the data arrays it reads (named
/// NAME_d0, NAME_d1, ...), from the transposed run expression `transposed`
/// (as transposeRuns makes it): the first run of query blocks at or after
/// qb that see the key block of `ctx`, FULL exactly where every pair of the
/// tile is allowed. A node the transposition does not produce (a forward
/// Interval) walks every query block as PARTIAL: slower, never wrong, since
/// partial tiles apply the pattern's masks.
std::string emitTransposedCode(const RunExpr &transposed,
                               const std::string &name);

} // namespace tessera::schedule

#endif // TESSERA_SCHEDULE_BACKWARDRUNS_H
