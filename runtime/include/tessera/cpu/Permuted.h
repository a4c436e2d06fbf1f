//===- Permuted.h - a head group run in a permuted token order --*- C++ -*-===//
//
// The CPU executor for a head group with a layout (`#attn.period_transpose`,
// docs/patterns.md "Layouts"): Q, K and V rows are gathered into the permuted
// order, the permuted order's tiles are walked, and O and LSE are scattered
// back to the original rows. The pattern is evaluated on the original
// positions, so the result is the group's unpermuted attention. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_PERMUTED_H
#define TESSERA_CPU_PERMUTED_H

#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Layout.h"

#include <cstdint>
#include <string>

namespace tessera::cpu {

/// How a permuted group ran, for benchmarks and tests.
struct PermutedInfo {
  /// True when the walk took the closed-form runs of layout::PermutedRuns;
  /// false when the program is not residue-only for the period and every
  /// pair was classified (`why` says which leaf), or the walk came from an
  /// earlier call's classification.
  bool closedForm = false;
  std::string why;
  double runsSeconds = 0;   ///< deriving (or classifying) the walk's runs
  double gatherSeconds = 0; ///< copying K and V into the permuted order
  double totalSeconds = 0;  ///< the whole call
};

/// Computes the heads of group `group` of `table` (the layer's launch
/// groups, as `--attn-schedule` numbers them) in the period transpose
/// `perm` (a period, and a prefix kept in place): per sequence, the key and
/// value rows of the group's kv heads are gathered into the permuted order
/// (over the keys' length), each query block of `args.blockQ` permuted
/// slots reads its rows through the permutation, walks its runs of key
/// blocks (fp32, online softmax, the predicate on the ORIGINAL positions on
/// partial tiles only), and O and LSE are written to the original rows.
/// Heads of other groups are not touched.
///
/// The runs come in closed form (layout::PermutedRuns) when the group's
/// program is residue-only for the period and there is no prefix
/// (layout::closedFormReason); otherwise every pair is classified once
/// (O(Nq * Nk)) and the walk, with its partial tiles' bit masks (no
/// predicate on them then), kept for later calls with the same program,
/// layout, lengths, tiles and head (the last 16 such walks, process-wide,
/// behind a mutex). The work runs on `args.numThreads` threads (of
/// `args.pool` when given), over (sequence, head, query block); results do
/// not depend on the thread count. Dense calls only (no packed, paged or
/// positioned sequences, headStart 0). Returns "" on success, else a
/// message naming the problem; nothing is written then.
std::string runPermutedGroup(const kernel::LayerTable &table, int64_t group,
                             const layout::PeriodTranspose &perm,
                             const LayerArgs &args, RunStats *stats = nullptr,
                             PermutedInfo *info = nullptr);

/// The same without prefix: `#attn.period_transpose<period = P>`.
inline std::string runPermutedGroup(const kernel::LayerTable &table,
                                    int64_t group, int64_t period,
                                    const LayerArgs &args,
                                    RunStats *stats = nullptr,
                                    PermutedInfo *info = nullptr) {
  return runPermutedGroup(table, group, layout::PeriodTranspose{period, 0},
                          args, stats, info);
}

} // namespace tessera::cpu

#endif // TESSERA_CPU_PERMUTED_H
