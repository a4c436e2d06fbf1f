//===- Lower.h - patterns to block-schedule programs ------------*- C++ -*-===//
//
// Lowers the reference meaning of a pattern (semantics::Pattern) to the
// postfix program of tessera/kernel/Program.h that the CPU executor and the
// CUDA kernels evaluate, and gathers the programs of a layer's head groups
// into one table. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SCHEDULE_LOWER_H
#define TESSERA_SCHEDULE_LOWER_H

#include "tessera/Semantics/Pattern.h"
#include "tessera/kernel/OwnedTable.h"

#include <string>
#include <vector>

namespace tessera::schedule {

/// A program: nodes in postfix order and the data they slice.
using Program = kernel::ProgramArrays;

/// Appends the program of `pattern` to `out`. Fails (with `error` set) when the
/// program would need a deeper evaluation stack than kernel::kMaxStack.
bool lowerPattern(const semantics::Pattern &pattern, Program &out,
                  std::string &error);

/// One group of heads sharing a pattern (and, for head-dependent patterns, the
/// same mask).
struct HeadGroup {
  semantics::Pattern pattern;
  std::vector<int64_t> heads;
};

/// The schedule tables of one layer, owning the arrays LayerTable points to.
using LayerSchedule = kernel::OwnedLayerTable;

/// Builds a layer's schedule from its head groups. Groups whose pattern is
/// `Skip` contribute skipped heads and no program.
bool buildLayerSchedule(const std::vector<HeadGroup> &groups, int64_t numHeads,
                        LayerSchedule &out, std::string &error);

} // namespace tessera::schedule

#endif // TESSERA_SCHEDULE_LOWER_H
