//===- BackwardEmit.h - the backward kernels of a bundle --------*- C++ -*-===//
//
// The emitter's backward part (issue 20; docs/backward.md): per element
// type and head dim of a bundle's attention kernels, a dispatch class over
// every pattern of that type and dim with the generated transposed walk
// (runFromT), and the kernels of FlashBackward.cuh as extern "C" entry
// points; per layer, the manifest entry the runtime launches them from.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TARGET_CUDA_BACKWARDEMIT_H
#define TESSERA_TARGET_CUDA_BACKWARDEMIT_H

#include "tessera/Schedule/Runs.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <set>
#include <string>

namespace tessera::backward {

/// Head dims the backward kernels are built for (256 would need dK and dV
/// partly in shared memory).
bool hasBackwardKernels(int64_t headDim);

/// The generated transposed walk of pattern P<id> (struct P<id>T with
/// runFromT), from the pattern's forward runs.
std::string transposedPatternCode(const schedule::RunExpr &forward, int64_t id);

/// The backward dispatch class and kernels of (dtype, head_dim) over the
/// bundle's patterns `patterns` of that type and dim (their P<id> and
/// P<id>T structs and masks already emitted), inside no namespace; their
/// manifest entries appended to `kernels`.
void emitBackwardKernels(llvm::raw_ostream &os, const std::string &dtype,
                         int64_t headDim, const std::set<int64_t> &patterns,
                         llvm::json::Array &kernels);

/// The kernel that writes dQ = 0 for the rows of skipped heads (head dim
/// `headDim`, either element type); its manifest entry appended.
void emitZeroKernel(llvm::raw_ostream &os, int64_t headDim,
                    llvm::json::Array &kernels);

/// A layer's "backward" manifest entry: its kernels, their threads and
/// dynamic shared memory, and the f32 delta workspace.
llvm::json::Object layerBackwardJson(const std::string &dtype, int64_t headDim,
                                     bool hasSkipped, bool dynamic = false);

/// Whether a dynamic family has CUDA backward kernels (DynamicBackward.cuh:
/// vertical_slash, block_topk, a caller's block_index and routing; routing
/// whose pattern allows pairs outside its clusters, `merge`, also has the
/// rest's kernels, family "routing_rest" of emitDynamicBackwardKernels).
bool hasDynamicBackward(llvm::StringRef family, int64_t headDim,
                        bool merge = false);

/// The backward kernels of the dynamic groups of one element type and head
/// dim (DynamicBackward.cuh): per family of `families` that has them, its
/// query-major (dQ) and key-major (dK, dV by atomics) kernels over the
/// forward's walk, taking (BwdParams, DynArgs); and the zeroing and adding
/// of the dK / dV sums, taking (BwdParams, int layer). Their manifest
/// entries appended. After the dynamic groups' tables (bundle::dynTables,
/// bundle::DynPats).
void emitDynamicBackwardKernels(llvm::raw_ostream &os, const std::string &dtype,
                                int64_t headDim,
                                const std::set<std::string> &families,
                                llvm::json::Array &kernels);

/// A dynamic group's "backward" manifest entry (its dq and dkdv kernels and
/// their guarded launches; a merging routing group's also rest_dq,
/// rest_dkdv and theirs).
llvm::json::Object dynamicGroupBackwardJson(llvm::StringRef family,
                                            const std::string &dtype,
                                            int64_t headDim,
                                            bool merge = false);

} // namespace tessera::backward

#endif // TESSERA_TARGET_CUDA_BACKWARDEMIT_H
