//===- Executor.h - block-sparse attention on the CPU -----------*- C++ -*-===//
//
// Runs one layer's block schedule on the CPU: threads over (batch, computed
// head, query block); fp32 accumulation with an online softmax; only the
// tiles the schedule visits are computed, and the element predicate is
// applied on partial tiles only. The index math is tessera/kernel/Program.h,
// the same source the CUDA kernels compile. MLIR-free.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_EXECUTOR_H
#define TESSERA_CPU_EXECUTOR_H

#include "tessera/kernel/Program.h"

#include <cstdint>
#include <string>

namespace tessera::cpu {

enum class DType { F32, F16, BF16 };

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

struct LayerArgs {
  Tensor q, k, v; ///< read only
  Tensor o;       ///< written for every query head
  /// Optional [batch, heads, Nq] fp32, natural-log LSE; -inf for rows with no
  /// allowed key.
  float *lse = nullptr;
  float scale = 0; ///< 0: 1 / sqrt(head_dim)
  int64_t blockQ = 64, blockK = 64;
  int numThreads = 0; ///< 0: all hardware threads
  /// false: heads the table does not compute are left as they are (a
  /// dynamic head group computes one head through its own table).
  bool writeSkipped = true;
};

/// Counts of the tiles a run visited, for benchmarks and tests.
struct RunStats {
  int64_t tilesTotal = 0;   ///< all (query block, key block) tiles
  int64_t tilesFull = 0;    ///< visited without a mask
  int64_t tilesPartial = 0; ///< visited with the element predicate
};

/// Computes attention for every head of the layer described by `table`.
/// Heads the table does not compute (skipped heads) get O = 0 and LSE = -inf.
/// Returns "" on success, else a message naming the problem (shapes, dtypes,
/// strides, null pointers); nothing is written then.
std::string runLayer(const kernel::LayerTable &table, const LayerArgs &args,
                     RunStats *stats = nullptr);

} // namespace tessera::cpu

#endif // TESSERA_CPU_EXECUTOR_H
