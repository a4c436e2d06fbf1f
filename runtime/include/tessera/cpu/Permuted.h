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
#include <vector>

namespace tessera::cpu {

/// How a permuted group ran, for benchmarks and tests.
struct PermutedInfo {
  /// True when the walk (of every head class) took the closed-form runs of
  /// layout::PermutedRuns; false when layout::closedFormReason refused the
  /// program and every pair was classified (`why` says which leaf and, with
  /// a prefix, which quadrant), or the walk came from an earlier call's
  /// classification.
  bool closedForm = false;
  std::string why;
  double runsSeconds = 0;   ///< deriving (or classifying) the walk's runs
  double gatherSeconds = 0; ///< copying K and V into the permuted order
  double totalSeconds = 0;  ///< the whole call
};

/// The walk of a permuted group at one shape: per query block of bq
/// permuted slots (CSR: runs[start[i], start[i + 1])), its runs of key
/// blocks of bk slots, each FULL (every pair allowed: unmasked) or partial.
struct PermutedWalk {
  std::vector<int64_t> start{0};
  std::vector<layout::PermutedRun> runs;
  /// The partial tiles' bit masks (bit t of row r: slot pair allowed):
  /// run x's tile j has bq rows of `words` 64-bit words at masks[maskAt[x]
  /// + (j - begin) * bq * words]; maskAt[x] < 0 for a full run. maskAt
  /// empty: no masks (the CPU executor's closed form without prefix tests
  /// its residue relation instead).
  std::vector<int64_t> maskAt;
  std::vector<uint64_t> masks;
  int64_t words = 0;

  const uint64_t *mask(int64_t x, int64_t j, int64_t bq) const {
    if (maskAt.empty() || maskAt[x] < 0)
      return nullptr;
    return masks.data() + maskAt[x] + (j - runs[x].begin) * bq * words;
  }
};

/// The walk runPermutedGroup derives for group `group` of `table` in
/// `perm` at lengths nq and nk in tiles of bq x bk slots — closed-form runs
/// where the group has them, else every pair classified — with the bit
/// masks of every partial tile (for a kernel that masks by bits: the CUDA
/// runtime's; classified walks are kept, as runPermutedGroup's). The
/// group's first head stands for all: a group whose heads have different
/// masks (strided shards, shifted groups) is refused by name, as are tiles
/// outside [1, 1024]. `info`
/// (optional): closedForm, why and runsSeconds. Returns "" or a message.
std::string permutedWalk(const kernel::LayerTable &table, int64_t group,
                         const layout::PeriodTranspose &perm, int64_t nq,
                         int64_t nk, int64_t bq, int64_t bk, PermutedWalk &walk,
                         PermutedInfo *info = nullptr);

/// Why a context should run group `group` of `table` in its original order
/// rather than in the period transpose `perm` at Nq = nq, Nk = nk, or ""
/// when the permuted order is the one to run (both are exact): the
/// transpose is the identity at these lengths (no part after the prefix
/// longer than the period), or deriving its walk would cost too much: its
/// closed form lists, per residue, period / L intervals of every periodic
/// leaf of period L (strided shards: shards x block), at most 4096 in all;
/// without a closed form every pair is classified, Nq x Nk at most 2^30.
/// The C API's CPU context asks it for every group with a layout.
std::string originalOrderReason(const kernel::LayerTable &table, int64_t group,
                                const layout::PeriodTranspose &perm, int64_t nq,
                                int64_t nk);

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
/// Heads whose masks differ (strided shards' shard, shifted groups'
/// shift) are run in classes of equal masks, each with its own walk. The
/// runs come in closed form (layout::PermutedRuns) when
/// layout::closedFormReason accepts the program (residue-only for the
/// period; with a prefix, every quadrant all, none or residue-only; the
/// partial tiles' bit masks are then computed once); otherwise every pair
/// is classified once (O(Nq * Nk)). Masked walks are kept for later calls
/// with the same program, layout, lengths, tiles and head (the last 16
/// such walks, process-wide, behind a mutex). The work runs on
/// `args.numThreads` threads (of `args.pool` when given), over (sequence, head,
/// query block); results do not depend on the thread count. Dense calls only
/// (no packed, paged or positioned sequences, headStart 0). Returns "" on
/// success, else a message naming the problem; nothing is written then.
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
