//===- CudaEmitter.h - block schedules to CUDA bundles ----------*- C++ -*-===//
//
// A bundle is one CUDA C++ source (the kernel body of
// runtime/include/tessera/kernel, the schedule tables of every layer, and one
// extern "C" kernel per element type and head_dim) plus a JSON manifest that
// says how to compile and launch it. See docs/bundles.md.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TARGET_CUDAEMITTER_H
#define TESSERA_TARGET_CUDAEMITTER_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/JSON.h"

#include <string>

namespace tessera {

struct Bundle {
  std::string source; ///< CUDA C++
  llvm::json::Object manifest;
};

/// The architectures every bundle is compiled and tested for.
inline constexpr const char *kBundleArchs[] = {"sm_80", "sm_86", "sm_89",
                                               "sm_90"};

/// Emits the bundle of the single attn.model in `module`, whose layers must
/// already be block schedules (`--attn-schedule`). Reports unsupported
/// layers (dtype, head_dim, tile sizes) as errors at their location.
/// `partBudget` > 0 replaces the per-head_dim register budget of one
/// attention kernel, in run-expression nodes (docs/bundles.md, "Split
/// kernels"; tests use a small one to split small layers). `headRouting`:
/// every layer of static heads (head_dim at most 128) gets the permuted
/// kernel (Permuted.cuh), which runs per-token head routing on CUDA
/// (docs/runtime.md, "Per-token head routing"); layers with layouts have
/// it regardless.
mlir::FailureOr<Bundle> emitCudaBundle(mlir::ModuleOp module,
                                       llvm::StringRef sourceName,
                                       int64_t partBudget = 0,
                                       bool headRouting = false);

} // namespace tessera

#endif // TESSERA_TARGET_CUDAEMITTER_H
