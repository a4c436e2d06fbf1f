//===- Manifest.h - bundle manifests, parsed and validated ------*- C++ -*-===//
//
// A manifest comes from outside (a file an engine ships): everything in it is
// checked before the schedule tables are handed to the executor or a kernel,
// so that a corrupt or hostile manifest is an error, never a crash.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_RUNTIME_MANIFEST_H
#define TESSERA_RUNTIME_MANIFEST_H

#include "tessera/cpu/Layout.h"
#include "tessera/kernel/DynamicArgs.h"
#include "tessera/kernel/OwnedTable.h"

#include <string>
#include <vector>

namespace tessera::runtime {

/// A dynamic head group: its leaf's family and parameters (in DynArgs'
/// fields), its heads, the programs of its pattern with the leaf read as
/// dense and as skip, and its kernels in launch order.
struct DynamicGroupDesc {
  kernel::DynArgs args{}; ///< family and parameters; the rest per call
  std::vector<kernel::i64> heads;
  kernel::ProgramArrays with, without;
  std::vector<std::string> kernels;
  /// The sm_90a twins (HopperDynamic.cuh) by position in `kernels`: empty
  /// where a kernel has none (index kernels, head_dim 96, older bundles).
  std::vector<std::string> wgmmaKernels;
  int64_t wgmmaThreads = 0, wgmmaDynamicShared = 0;
  /// The CUDA backward over the index (DynamicBackward.cuh: dQ, and dK and
  /// dV by atomics), from the layer's "backward" entry; empty where the
  /// bundle has none (routing that merges with rows outside its clusters,
  /// older bundles).
  std::string backwardDq, backwardDkdv;
  /// Their guarded second launches (non-finite inputs in masked pairs).
  std::string backwardDqGuarded, backwardDkdvGuarded;
  /// Routing that merges (args.merge): the rest's kernels (rtRest's pairs:
  /// dQ, dK / dV, and their guarded launches), in that order; else empty.
  std::vector<std::string> backwardRest;
};

/// A layer's backward kernels (FlashBackward.cuh, docs/backward.md): the
/// preprocess (D = rowsum(dO * O) into an f32 [batch, heads, Nq]
/// workspace), the key-major (dK, dV) and query-major (dQ) passes and their
/// guarded second launches, the zero fill of skipped heads' dQ; the passes'
/// threads and dynamic shared memory. Empty names where the bundle has
/// none (head_dim 256, dynamic heads, bundles emitted before them).
struct BackwardKernelsDesc {
  std::string preprocess, keyMajor, keyMajorGuarded, queryMajor,
      queryMajorGuarded, zeroSkipped;
  /// Layers with dynamic heads: the zeroing of their f32 dK / dV sums and
  /// their adding to dk and dv (DynamicBackward.cuh).
  std::string dynamicClear, dynamicAdd;
  int64_t keyMajorThreads = 0, keyMajorDynamicShared = 0;
  int64_t queryMajorThreads = 0, queryMajorDynamicShared = 0;
  bool present() const { return !preprocess.empty(); }
};

/// A static launch group's layout (`#attn.period_transpose`, written by
/// `--attn-permute`): the group runs in that token order
/// (tessera/cpu/Permuted.h); the output does not depend on it.
struct GroupLayout {
  int64_t group = 0; ///< the program's group (head_groups' numbering)
  layout::PeriodTranspose perm;
};

/// A layer of a manifest: its schedule tables and what launching needs.
struct LayerDesc : kernel::OwnedLayerTable {
  std::vector<DynamicGroupDesc> dynamicGroups;
  int64_t index = 0, position = 0;
  int64_t numKvHeads = 0, headDim = 0;
  /// The attention kernel's query rows and threads per block (the emitter's
  /// choice per head_dim: 64 and 128, or 128 and 256).
  int64_t kernelBlockQ = 0, kernelThreads = 0;
  /// Dynamic shared memory of the attention kernel's launch (bytes; 0: its
  /// tiles are static).
  int64_t kernelDynamicShared = 0;
  std::string dtype; ///< "f16" or "bf16"
  /// The attention kernels and their launch slots (grid.y) in launch order:
  /// a layer whose patterns do not fit one kernel's registers has several
  /// (docs/bundles.md, "Split kernels").
  std::vector<std::pair<std::string, int64_t>> kernels;
  std::string fillKernel;
  /// The sm_90a twins of `kernels` (the same order and slots; dense calls
  /// on compute capability 9.x: HopperLaunch.h), their query rows, threads
  /// and dynamic shared memory; empty where the layer has none (head_dim
  /// other than 64 and 128, bundles emitted before them).
  std::vector<std::string> wgmmaKernels;
  int64_t wgmmaBlockQ = 0, wgmmaThreads = 0, wgmmaDynamicShared = 0;
  BackwardKernelsDesc backward; ///< "backward", optional
  /// "layouts", optional: the groups with a layout, by group, each once.
  std::vector<GroupLayout> layouts;
  /// "permuted_kernel", optional: the kernel that runs those groups in
  /// their permuted order on CUDA (Permuted.cuh: (AttnParams, PermArgs),
  /// 128 threads); empty (bundles emitted before it, head_dim 256): the
  /// CUDA context runs them in the original order. Also the kernel of
  /// per-token head routing on CUDA (head_active; layers with or without
  /// layouts, given it by attn-translate --head-routing); without it a
  /// CUDA context refuses head_active by name.
  std::string permutedKernel;
  /// "permuted_routes": the kernel reads PermArgs::routed (bundles emitted
  /// since head routing ran on CUDA); false: head_active refused by name.
  bool permutedRoutes = false;
  /// "permuted_position" and "permuted_slots", optional: the tables' entry
  /// whose attention kernels' slots leave out the heads of the groups with
  /// layouts, and each kernel's slot count there (`kernels`' order; 0: not
  /// launched). A call that runs every such group permuted launches them
  /// so; -1: none (the layer's kernels compute those heads too).
  int64_t permutedPosition = -1;
  std::vector<int64_t> permutedSlots;
};

struct BundleDesc {
  std::string model;
  std::vector<std::string> archs;
  std::vector<std::string> nvrtcOptions;
  std::vector<LayerDesc> layers;
};

/// Parses and validates a manifest against its CUDA source. Returns "" or a
/// message naming the first problem.
std::string parseManifest(const std::string &json, const std::string &source,
                          BundleDesc &out);

/// Checks a schedule program: node kinds, axes, parameters, data slices,
/// evaluation-stack depth. Returns "" or a message.
std::string validateProgram(const std::vector<kernel::Node> &nodes,
                            const std::vector<kernel::i64> &data,
                            const std::vector<kernel::i64> &groupBegin);

/// Lower-case hex SHA-256.
std::string sha256Hex(const std::string &bytes);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_MANIFEST_H
