//===- HopperLaunch.cpp - the sm_90a kernels' path choice and tensor maps -===//

#include "HopperLaunch.h"

#include "../cuda/Driver.h"

#include <cstdlib>
#include <cstring>

using namespace tessera::runtime;

const char *tessera::runtime::kernelPathName(KernelPath p) {
  return p == KernelPath::Wgmma ? "wgmma" : "mma_sync";
}

std::string tessera::runtime::chooseKernelPath(int major, int minor, bool tma,
                                               KernelPath &out, bool &forced) {
  const char *env = std::getenv("TESSERA_KERNEL_PATH");
  const std::string want = env ? env : "";
  forced = want == "mma_sync" || want == "wgmma";
  const bool hopper = major == 9 && tma;
  if (want.empty() || want == "auto") {
    out = hopper ? KernelPath::Wgmma : KernelPath::MmaSync;
    return "";
  }
  if (want == "mma_sync") {
    out = KernelPath::MmaSync;
    return "";
  }
  if (want != "wgmma")
    return "TESSERA_KERNEL_PATH is '" + want +
           "': it takes mma_sync, wgmma or auto";
  if (major != 9)
    return "TESSERA_KERNEL_PATH=wgmma: the sm_90a kernels need compute "
           "capability 9.x, the device has " +
           std::to_string(major) + "." + std::to_string(minor);
  if (!tma)
    return "TESSERA_KERNEL_PATH=wgmma: the CUDA driver has no "
           "cuTensorMapEncodeTiled (CUDA 12.0 or later)";
  out = KernelPath::Wgmma;
  return "";
}

namespace {

// CUtensorMap enumerations (cuda.h).
enum : int {
  kDataTypeF16 = 6,
  kDataTypeBF16 = 9,
  kInterleaveNone = 0,
  kSwizzle128B = 3,
  kL2Promotion128B = 2,
  kOobFillZeros = 0,
};

} // namespace

std::string TensorMapCache::get(const Driver &d, const tessera_tensor &t,
                                uint32_t rows, TensorMapBytes &out) {
  const Key key{reinterpret_cast<uintptr_t>(t.data),
                t.batch,
                t.seq,
                t.heads,
                t.head_dim,
                t.stride_batch,
                t.stride_seq,
                t.stride_head,
                rows,
                int(t.dtype)};
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = maps.find(key); it != maps.end()) {
      out = it->second;
      return "";
    }
  }
  if (reinterpret_cast<uintptr_t>(t.data) % 16)
    return "its data is not 16-byte aligned";
  // Dims innermost first: head_dim, heads, tokens, batch. A dimension of
  // one index never moves, so its stride is free: the lower dimensions'
  // extent stands in (the caller's may be anything).
  using u64 = unsigned long long; // cuuint64_t
  const u64 dims[4] = {u64(t.head_dim), u64(t.heads), u64(t.seq), u64(t.batch)};
  const int64_t strides[3] = {t.stride_head, t.stride_seq, t.stride_batch};
  u64 bytes[3];
  u64 below = u64(t.head_dim) * 2;
  for (int i = 0; i < 3; ++i) {
    bytes[i] = dims[i + 1] == 1 ? (below + 15) / 16 * 16 : u64(strides[i]) * 2;
    if (bytes[i] % 16)
      return std::string("its ") +
             (i == 0   ? "head"
              : i == 1 ? "sequence"
                       : "batch") +
             " stride is not a multiple of 8 elements";
    below = bytes[i] * dims[i + 1];
  }
  const unsigned box[4] = {64, 1, rows, 1};
  const unsigned elementStrides[4] = {1, 1, 1, 1};
  TensorMapBytes map{};
  if (int rc = d.tensorMapEncodeTiled(
          &map, t.dtype == TESSERA_DTYPE_F16 ? kDataTypeF16 : kDataTypeBF16, 4,
          t.data, dims, bytes, box, elementStrides, kInterleaveNone,
          kSwizzle128B, kL2Promotion128B, kOobFillZeros))
    return d.message("cuTensorMapEncodeTiled", rc);
  std::lock_guard<std::mutex> lock(mutex);
  if (maps.size() >= kCapacity)
    maps.clear();
  maps.emplace(key, map);
  out = map;
  return "";
}

std::string tessera::runtime::hopperMaps(const Driver &d, TensorMapCache &cache,
                                         const tessera_attention_desc &desc,
                                         HopperMapsBytes &out) {
  for (auto [t, rows, map, name] : {std::tuple{&desc.q, 128u, &out.q, "q"},
                                    {&desc.k, 64u, &out.k, "k"},
                                    {&desc.v, 64u, &out.v, "v"}})
    if (std::string e = cache.get(d, *t, rows, *map); !e.empty())
      return std::string(name) + ": " + e;
  return "";
}
