//===- Executor.h - block-sparse attention on the CPU -----------*- C++ -*-===//
//
// Runs one layer's block schedule on the CPU: threads over (sequence,
// computed head, query block), or for decode steps (1-16 rows a sequence)
// over chunks of each head's visited key tiles merged by log-sum-exp; fp32
// accumulation with an online softmax; only the tiles the schedule visits
// are computed, and the element predicate is applied on partial tiles
// only. The index math is tessera/kernel/Program.h, the same source the
// CUDA kernels compile. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_EXECUTOR_H
#define TESSERA_CPU_EXECUTOR_H

#include "tessera/kernel/Program.h"

#include <cstdint>
#include <string>

namespace tessera::cpu {

enum class DType { F32, F16, BF16 };

class ThreadPool;

/// A [batch, seq, heads, head_dim] tensor with element strides for the first
/// three dimensions; head_dim is contiguous.
struct Tensor {
  void *data = nullptr;
  DType dtype = DType::F32;
  int64_t batch = 0, seq = 0, heads = 0, headDim = 0;
  int64_t strideBatch = 0, strideSeq = 0, strideHead = 0;
};

/// Returns a contiguous [batch, seq, heads, headDim] tensor view.
Tensor contiguous(void *data, DType dtype, int64_t batch, int64_t seq,
                  int64_t heads, int64_t headDim);

/// How a call's rows form sequences (tessera_attention_desc's modes), and
/// where each sequence sits. Everything here is trusted: the C API's
/// validate step checks it (lengths within the tensors and the block
/// table, pages in range, positions below 2^40) before the executor runs.
/// The default is dense: sequence s is batch entry s of q, k, v and o, its
/// queries bottom-right aligned with its keys.
struct Sequences {
  int64_t count = 0; ///< 0: dense (q.batch sequences)
  /// Packed queries: q and o have batch 1, sequence s's rows are
  /// [cuQ[s], cuQ[s + 1]). Null: dense, Nq = q.seq each.
  const int32_t *cuQ = nullptr;
  /// Packed keys and values (batch 1), like cuQ. Null: dense or paged.
  const int32_t *cuK = nullptr;
  /// Keys per sequence (dense keys: at most k.seq; paged: required). Null:
  /// every key of the sequence's rows.
  const int32_t *lensK = nullptr;
  /// Paged keys and values: k and v are [pages, page size, kv heads, D];
  /// sequence s's key j is row j % page size of page
  /// pages[s * pageStride + j / page size].
  const int32_t *pages = nullptr;
  int64_t pageStride = 0;
  /// Positions: query row i of sequence s at qStart[s] + i, key j at
  /// kStart[s] + j. Null qStart: kStart + Nk - Nq; null kStart: 0.
  const int64_t *qStart = nullptr, *kStart = nullptr;
};

struct LayerArgs {
  Tensor q, k, v; ///< read only
  Tensor o;       ///< written for every query head
  /// Optional fp32, natural-log LSE; -inf for rows with no allowed key.
  /// Dense queries: [batch, q.heads, Nq]; packed ones: [q.heads, q.seq].
  float *lse = nullptr;
  Sequences seqs;
  /// q and o hold the layer's heads [headStart, headStart + q.heads), k
  /// and v the kv heads those read, from headStart / G on (G = the
  /// layer's heads / numKvHeads).
  int64_t headStart = 0;
  int64_t numKvHeads = 0; ///< the layer's kv heads; 0: k.heads
  /// Per-token head routing (MoH): one byte per (query row, head of q),
  /// nonzero = active; dense queries [batch, q.seq, q.heads], packed ones
  /// [q.seq, q.heads]. Inactive pairs get O = 0 and LSE = -inf and cost
  /// nothing: a head's active rows of a sequence are compacted into blocks
  /// whose rows span fewer than blockQ positions (so a block walks about
  /// the tiles of one unrouted query block, for its active rows only; a
  /// wider span would walk the union of far-apart rows' tiles), the
  /// pattern evaluated at every row's own position. Work: the active rows'
  /// tiles, plus a byte read per pair. Null: every pair active. Trusted
  /// (the C API checks its size).
  const uint8_t *headActive = nullptr;
  float scale = 0; ///< 0: 1 / sqrt(head_dim)
  int64_t blockQ = 64, blockK = 64;
  int numThreads = 0; ///< 0: all hardware threads
  /// The threads to run on (a context's, kept across calls); null: threads
  /// started for this call.
  ThreadPool *pool = nullptr;
  /// Split-KV decode: sequences of 1-16 query rows cut long key walks into
  /// chunks merged by log-sum-exp (the results do not depend on the
  /// thread count either way); false: one task walks all of a head's keys.
  bool splitKeys = true;
  /// false: heads the table does not compute are left as they are (a
  /// dynamic head group computes one head through its own table).
  bool writeSkipped = true;
};

/// Counts of the tiles a run visited, for benchmarks and tests.
struct RunStats {
  int64_t tilesTotal = 0;   ///< all (query block, key block) tiles
  int64_t tilesFull = 0;    ///< visited without a mask
  int64_t tilesPartial = 0; ///< visited with the element predicate
  /// The visited tiles times the query rows each computed (per-token head
  /// routing computes only a block's active rows).
  int64_t rowTiles = 0;
};

/// Computes attention for every head of `args.q` (of the layer described by
/// `table`), the pattern evaluated at each sequence's positions. Heads the
/// table does not compute (skipped heads) get O = 0 and LSE = -inf.
/// Keys and values are converted to fp32 a tile at a time as the walk
/// visits them (never the whole tensor or cache).
/// Returns "" on success, else a message naming the problem (shapes, dtypes,
/// strides, null pointers); nothing is written then.
std::string runLayer(const kernel::LayerTable &table, const LayerArgs &args,
                     RunStats *stats = nullptr);

} // namespace tessera::cpu

#endif // TESSERA_CPU_EXECUTOR_H
