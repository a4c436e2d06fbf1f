//===- Masks.h - partial-tile mask code from run expressions ----*- C++ -*-===//
//
// The generated code of a pattern's partial-tile masks: for the kernels'
// `Groups::keep`, one struct per pattern whose `keep(rowPos, k0, c2, nk,
// head, numHeads)` builds a thread's keep bits (tessera/kernel/Masks.cuh)
// from the closed form of every leaf of the pattern's run expression, the
// same tree its runs come from. The form of each leaf is chosen here and
// written beside its code. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SCHEDULE_MASKS_H
#define TESSERA_SCHEDULE_MASKS_H

#include "tessera/Schedule/Runs.h"

#include <string>
#include <vector>

namespace tessera::schedule {

/// How one leaf's row masks are built.
enum class MaskForm {
  All,       ///< every key
  None,      ///< no key
  Interval,  ///< one key interval per row (causal, windows, sinks, key
             ///< ranges, shifted groups, saturated shards): two shifts
  Periodic,  ///< a periodic key or diagonal set (multi-diagonal, grid
             ///< lines, periodic stripes, strided shards): a phase per row,
             ///< then a shifted constant (period <= 62) or two intervals
  Row,       ///< a set of rows (horizontal stripes): all or nothing per row
  Listed,    ///< listed key or offset ranges, listed blocks: the ranges
             ///< that meet the tile, from the leaf's list
  Predicate, ///< the leaf's element predicate on the thread's 16 columns
};

/// "interval", "periodic", ...: the name the generated comments use.
const char *maskFormName(MaskForm form);

struct MaskOptions {
  /// False: every leaf takes the predicate form (the generic fallback, for
  /// tests and for comparing code size).
  bool closedForms = true;
};

/// The forms of the leaves of `runs`, in the order the generated code
/// numbers them (depth first, left to right).
std::vector<MaskForm> maskForms(const RunExpr &runs,
                                const MaskOptions &options = {});

/// C++ for tessera/kernel/Masks.cuh (after Program.h): the data arrays the
/// code reads and `struct NAME { static u32 keep(i64 rowPos, i64 k0, int c2,
/// i64 nk, i64 head, i64 numHeads); }`, host and device (TESSERA_HD), with
/// a comment per leaf naming its form.
std::string emitMaskCode(const RunExpr &runs, const std::string &name,
                         const MaskOptions &options = {});

} // namespace tessera::schedule

#endif // TESSERA_SCHEDULE_MASKS_H
