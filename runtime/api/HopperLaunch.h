//===- HopperLaunch.h - the sm_90a kernels' path choice and tensor maps ---===//
//
// Which kernels a CUDA bundle runs (docs/runtime.md, "Kernel paths"): on
// compute capability 9.x the sm_90a twins of the attention kernels
// (HopperForward.cuh: wgmma, TMA, warp specialisation) where a layer has
// them, elsewhere the mma.sync kernels; TESSERA_KERNEL_PATH forces either.
// A dense call on the sm_90a path passes the kernel three tensor maps (Q,
// K, V), encoded by the driver's cuTensorMapEncodeTiled and kept in a small
// per-bundle cache keyed by everything a map encodes.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_RUNTIME_HOPPERLAUNCH_H
#define TESSERA_RUNTIME_HOPPERLAUNCH_H

#include "tessera/tessera.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace tessera::runtime {

struct Driver;

/// The kernels a bundle runs.
enum class KernelPath { MmaSync, Wgmma };

/// The path of bundles loaded on a device of compute capability
/// major.minor whose driver does (`tma`) or does not encode tensor maps:
/// TESSERA_KERNEL_PATH "mma_sync", "wgmma", or "auto" / unset (wgmma on
/// 9.x where the driver can, else mma_sync). `forced` says whether the
/// variable chose. Returns "" or why the setting cannot be honoured (an
/// unknown value; wgmma asked of a device other than 9.x or a driver
/// without cuTensorMapEncodeTiled).
std::string chooseKernelPath(int major, int minor, bool tma, KernelPath &out,
                             bool &forced);

/// "mma_sync" or "wgmma".
const char *kernelPathName(KernelPath p);

/// A CUtensorMap's bytes (128, 64-byte aligned), as the kernel takes it.
struct alignas(64) TensorMapBytes {
  uint64_t opaque[16];
};

/// HopperForward.cuh's HopperMaps: the kernel's second parameter.
struct HopperMapsBytes {
  TensorMapBytes q, k, v;
};
static_assert(sizeof(HopperMapsBytes) == 384, "three CUtensorMaps");

/// Tensor maps already encoded, by what they encode (address, sizes,
/// strides, box rows, dtype); at most kCapacity, emptied when full.
class TensorMapCache {
public:
  static constexpr size_t kCapacity = 256;
  /// The map of `t` ([batch, seq, heads, head_dim], 16-bit elements) with
  /// boxes of 64 elements x 1 head x `rows` tokens x 1 batch entry and the
  /// 128-byte swizzle, out-of-bound elements read as zeros; "" or why the
  /// driver cannot describe it (alignment, strides).
  std::string get(const Driver &d, const tessera_tensor &t, uint32_t rows,
                  TensorMapBytes &out);

private:
  using Key = std::tuple<uintptr_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, uint32_t, int>;
  std::mutex mutex;
  std::map<Key, TensorMapBytes> maps;
};

/// The three maps of a dense call (Q with 128-row boxes, K and V with 64);
/// "" or why the call cannot take the sm_90a kernels.
std::string hopperMaps(const Driver &d, TensorMapCache &cache,
                       const tessera_attention_desc &desc,
                       HopperMapsBytes &out);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_HOPPERLAUNCH_H
