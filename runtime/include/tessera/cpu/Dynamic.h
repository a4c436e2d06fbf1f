//===- Dynamic.h - index builders of the dynamic patterns (CPU) -*- C++ -*-===//
//
// The run-time step of the dynamic patterns (docs/patterns.md, "Dynamic
// patterns"): for one head, the index that Q and K select, and attention
// over it. The builders follow the definitions word for word, with the
// documented tie rules; test/Python/Inputs/dynamic_reference.py is their
// float64 oracle (test/Unit/DynamicDump.cpp, test/Python/dynamic-cpu.test).
// Memory is O(Nq + Nk + the index), never O(Nq * Nk).
//
// Not yet wired into bundles and the C API (the schedule refuses dynamic
// patterns): this is the CPU half of the index-building step.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_DYNAMIC_H
#define TESSERA_CPU_DYNAMIC_H

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::cpu {

/// One head's rows: element (row, i) at data[row * stride + i].
struct Rows {
  const float *data = nullptr;
  int64_t count = 0, stride = 0;
  const float *row(int64_t r) const { return data + r * stride; }
};

struct VerticalSlashParams {
  int64_t lastQ = 64, vertical = 0, slash = 0;
  int64_t firstColumns = 0, lastDiagonals = 0;
};

/// Kept key columns and diagonals (d = k - p <= 0), both ascending.
struct VerticalSlashIndex {
  std::vector<int64_t> columns, diagonals;
};

/// MInference's vertical-slash index of one head: the causal softmax of the
/// last lastQ queries against all keys (accumulated in double), summed per
/// column and per diagonal; forced entries count towards the budgets; ties
/// to the smaller column and the diagonal nearer the query.
VerticalSlashIndex buildVerticalSlash(const Rows &q, const Rows &k,
                                      int64_t headDim, float scale,
                                      const VerticalSlashParams &params);

/// Whether the pattern allows (row q, key k): k a kept column or k - p a
/// kept diagonal (p = q + Nk - Nq). For tests and masks.
bool verticalSlashAllows(const VerticalSlashIndex &index, int64_t q, int64_t k,
                         int64_t nq, int64_t nk);

/// Adaptive block top-k's index (query-aware mode). Query blocks are
/// blocks of positions p = q + Nk - Nq, like every pattern that looks at a
/// query: lists[i] belongs to position block firstBlock + i, i.e. to the
/// rows with floor(p / block) == firstBlock + i (the first and last such
/// blocks may hold fewer than `block` rows).
struct BlockTopkIndex {
  int64_t firstBlock = 0; ///< floor((Nk - Nq) / block): the block of row 0
  std::vector<std::vector<int64_t>> lists; ///< kept key blocks, ascending
  /// With tau > 0 (buildBlockTopkFlex): FlexPrefill's Jensen-Shannon
  /// distance and whether the head took the vertical-slash-like selection.
  double distance = 0;
  bool verticalSlash = false;
};

/// Q mean-pooled per query block and K per `block` keys (each over the
/// tokens present), the softmax of the pooled scores, then per query block
/// the fewest largest key blocks reaching gamma clamped to [minBlocks,
/// maxBlocks] (0: no bound), or the topK largest; ties to the smaller
/// block.
BlockTopkIndex buildBlockTopk(const Rows &q, const Rows &k, int64_t headDim,
                              float scale, int64_t block, double gamma,
                              int64_t topK, int64_t minBlocks,
                              int64_t maxBlocks);

/// Block top-k with FlexPrefill's per-head choice (tau > 0; gamma only,
/// docs/patterns.md). The last query block's true attention (each row's
/// softmax over the keys at or before its position, averaged over its
/// rows) per key block against its pooled estimate: at a Jensen-Shannon
/// distance above tau the head keeps, for every query block I, the fewest
/// largest key-block columns and the fewest largest diagonal groups u
/// (floor((p - k) / block)) of that true attention reaching gamma, each
/// clamped to [minBlocks, maxBlocks], a group as key blocks I - u - 1 and
/// I - u; otherwise buildBlockTopk's query-aware lists.
BlockTopkIndex buildBlockTopkFlex(const Rows &q, const Rows &k, int64_t headDim,
                                  float scale, int64_t block, double gamma,
                                  int64_t minBlocks, int64_t maxBlocks,
                                  double tau);

/// Routing clusters: each query and key goes to the centroid of largest dot
/// product (ties: smaller index). `centroids` (clusters x headDim, row
/// major) are used as given when iterations is 0, else `iterations` rounds
/// of k-means on the keys seeded with keys floor(i * Nk / clusters).
struct RoutingIndex {
  std::vector<int32_t> queryCluster, keyCluster;
};
RoutingIndex buildRouting(const Rows &q, const Rows &k, int64_t headDim,
                          int64_t clusters, int64_t iterations,
                          const float *centroids);

/// A caller's block index (block_index heads, docs/runtime.md): for batch
/// entry (sequence) b and head slot h of a call (its heads in order), the
/// int32 offsets from offsets[(b * heads + h) * (stride + 1)], row i
/// holding the key blocks cols[offsets[i] .. offsets[i + 1]) of query
/// block firstBlock + i (blocks of positions, block_q rows); the first
/// rows + 1 offsets are read. Host memory.
struct BlockIndexCsr {
  const int32_t *offsets = nullptr, *cols = nullptr;
  int64_t nnz = 0;       ///< entries of cols
  int64_t heads = 0;     ///< head slots per batch entry
  int64_t stride = 0;    ///< rows the caller's offsets hold per (b, h)
  int64_t rows = 0;      ///< query blocks of this sequence (<= stride)
  int64_t keyBlocks = 0; ///< ceil(Nk / block_k): columns are below it
  int64_t batch0 = 0;    ///< the batch entry that b = 0 stands for
};

/// "" when the lists of (batch entry b, head slot `slot`) are well formed:
/// offsets in [0, nnz] and non-decreasing, each row's key blocks strictly
/// increasing and in [0, keyBlocks). Else a message naming the field, the
/// batch entry, `head` (the layer's index of the slot) and the row.
std::string checkBlockIndex(const BlockIndexCsr &index, int64_t b,
                            int64_t slot, int64_t head);

/// The key blocks of every row of (b, slot) (checked by checkBlockIndex).
std::vector<std::vector<int64_t>> blockIndexLists(const BlockIndexCsr &index,
                                                  int64_t b, int64_t slot);

/// Attention of one head over a vertical-slash index in tiles of `block`
/// query rows by up to `block` keys: per query block, the diagonals' key
/// ranges (merged) are read contiguously and the remaining columns are
/// gathered, 64 at a time, so a tile is either contiguous or gathered and
/// never a scan over unselected keys; elements are masked by the index (and
/// causality when `causal`). fp32 with an online softmax, threads over query
/// blocks. Rows without keys give 0 and -inf. Returns the numbers of
/// contiguous and gathered tiles visited.
struct TileCounts {
  int64_t contiguous = 0, gathered = 0;
};
TileCounts attendVerticalSlashTiled(const Rows &q, const Rows &k, const Rows &v,
                                    float *o, int64_t oStride, float *lse,
                                    int64_t headDim, float scale,
                                    const VerticalSlashIndex &index,
                                    bool causal, int64_t block = 64,
                                    int threads = 0);

/// Routing attention by segments: tokens permuted by cluster into contiguous
/// segments (queries and keys of a cluster in position order), attention
/// within each segment in tiles of `block` (masked by causality when
/// `causal`), and the inverse permutation of the output. Rows whose
/// cluster has no key they may see give 0 and -inf. Returns the tiles
/// visited.
int64_t attendRoutingSegments(const Rows &q, const Rows &k, const Rows &v,
                              float *o, int64_t oStride, float *lse,
                              int64_t headDim, float scale,
                              const RoutingIndex &index, int64_t clusters,
                              bool causal, int64_t block = 64, int threads = 0);

/// Attention of one head over per-row key lists: keysOf(row, keys) fills the
/// sorted, distinct keys row `row` attends to. o: Nq rows of headDim (with
/// oStride); lse: Nq floats or null. Rows without keys give 0 and -inf.
/// Runs on `threads` threads (0: all hardware threads) over query rows.
template <typename KeysOf>
void attendKeyLists(const Rows &q, const Rows &k, const Rows &v, float *o,
                    int64_t oStride, float *lse, int64_t headDim, float scale,
                    KeysOf keysOf, int threads = 0);

} // namespace tessera::cpu

#include "tessera/cpu/DynamicAttend.h"

#endif // TESSERA_CPU_DYNAMIC_H
