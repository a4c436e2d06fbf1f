//===- FakeCuda.cpp - libcuda's entry points over the emulator ------------===//
//
// A stand-in for libcuda.so.1 (the runtime opens it by TESSERA_LIBCUDA), so
// that the runtime's CUDA path runs end to end without a GPU: one device of
// compute capability 9.0; "device memory" is host memory the test
// registers; a module is the tiny-mix bundle (or another of those compiled
// in: fakecuda_use_bundle) compiled into this library for the host
// emulator (the NVRTC binary the runtime hands over is only
// checked to be non-empty); cuLaunchKernel runs the named kernel on the
// emulator at once. Every entry point appends its name to a log, so a test
// can say which driver calls a step made (FakeDriverTest: the run step of
// a call makes no synchronising call). Entry points the runtime does not
// use are not defined: a synchronising call would fail to resolve.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"
#include "tessera/kernel/Program.h"
#include "tessera/kernel/DynamicArgs.h"
#include "tessera/kernel/BackwardParams.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

std::mutex mutex;
std::vector<std::string> calls;
std::vector<std::string> launched;        ///< the kernels cuLaunchKernel ran
std::map<uintptr_t, size_t> deviceRanges; ///< start -> bytes
int liveModules = 0;
uintptr_t lastLaunchStream = 0; ///< the last launch's stream handle

void logCall(const char *name) {
  std::lock_guard<std::mutex> lock(mutex);
  calls.push_back(name);
}

/// `log` comma-separated into `out` (the caller's static string, which the
/// returned pointer points into).
const char *joinLogged(const std::vector<std::string> &log, std::string &out) {
  std::lock_guard<std::mutex> lock(mutex);
  out.clear();
  for (const std::string &entry : log)
    out += (out.empty() ? "" : ",") + entry;
  return out.c_str();
}

bool isDevice(unsigned long long at) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = deviceRanges.upper_bound(uintptr_t(at));
  if (it == deviceRanges.begin())
    return false;
  --it;
  return at < it->first + it->second;
}

constexpr int kSuccess = 0, kInvalidValue = 1, kNotFound = 500;

/// HopperForward.cuh's HopperLaunch: the call's parameters, then the three
/// tensor maps (128 bytes each, 64-byte aligned).
struct HopperPack {
  tessera::kernel::AttnParams p;
  alignas(64) unsigned char maps[3 * 128];
};
/// The dynamic groups' kernels' arguments (AttnParams, DynArgs), and of
/// their sm_90a twins (HopperDynamic.cuh's HopperDynLaunch) the tensor
/// maps after them.
struct DynPack {
  tessera::kernel::AttnParams p;
  tessera::kernel::DynArgs a;
  alignas(64) unsigned char maps[3 * 128];
};
/// A dynamic group's backward kernel's arguments (BwdParams, DynArgs),
/// packed as DynamicBackward.cuh's registrations read them; the runtime
/// names those kernels tessera_bwd_dyn_* (BackwardEmit.cpp).
struct BwdDynPack {
  tessera::kernel::BwdParams p;
  tessera::kernel::DynArgs a;
};
static_assert(offsetof(BwdDynPack, a) == sizeof(tessera::kernel::BwdParams),
              "the registrations read DynArgs right after BwdParams");
/// A permuted group's kernel's arguments (AttnParams, PermArgs: eight
/// pointers, Permuted.cuh), packed as TESSERA_EMU_PERM_KERNEL reads them;
/// the emitter names those kernels tessera_perm_attend_*.
struct PermPack {
  tessera::kernel::AttnParams p;
  const void *a[8];
};
static_assert(offsetof(PermPack, a) == sizeof(tessera::kernel::AttnParams),
              "the registrations read PermArgs right after AttnParams");
/// Whether `kernel` is one of a dynamic group's (DynamicKernels.h names
/// them tessera_vs_*, tessera_bt_*, tessera_rt_*, tessera_bi_*).
bool isDynamicKernel(const std::string &kernel) {
  for (const char *family :
       {"tessera_vs_", "tessera_bt_", "tessera_rt_", "tessera_bi_"})
    if (kernel.rfind(family, 0) == 0)
      return true;
  return false;
}
int moduleToken = 0;
/// The bundle whose emulated kernels modules load from (fakecuda_use_bundle).
std::string bundleName = TESSERA_EMU_BUNDLE;

} // namespace

extern "C" {

// The test's side.
__attribute__((visibility("default"))) void fakecuda_register(const void *p,
                                                              size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex);
  deviceRanges[uintptr_t(p)] = bytes;
}
__attribute__((visibility("default"))) void fakecuda_clear() {
  std::lock_guard<std::mutex> lock(mutex);
  deviceRanges.clear();
  calls.clear();
  launched.clear();
}
/// The bundle whose kernels the next loaded module runs ("tiny-mix" until
/// set; others: test/Unit/CMakeLists.txt's fake_sources, e.g. a copy broken
/// on purpose of the bundle the runtime loads).
__attribute__((visibility("default"))) void fakecuda_use_bundle(const char *n) {
  std::lock_guard<std::mutex> lock(mutex);
  bundleName = n;
}
/// The calls since the last clear, comma-separated.
__attribute__((visibility("default"))) const char *fakecuda_calls() {
  static std::string joined;
  return joinLogged(calls, joined);
}
/// The stream handle of the last cuLaunchKernel.
__attribute__((visibility("default"))) uintptr_t fakecuda_last_stream() {
  std::lock_guard<std::mutex> lock(mutex);
  return lastLaunchStream;
}
/// The kernels launched since the last clear, comma-separated.
__attribute__((visibility("default"))) const char *fakecuda_kernels() {
  static std::string joined;
  return joinLogged(launched, joined);
}

// The driver's side (the signatures of runtime/cuda/Driver.h).
int cuInit(unsigned) { return logCall("cuInit"), kSuccess; }
int cuDeviceGetCount(int *n) {
  logCall("cuDeviceGetCount");
  *n = 1;
  return kSuccess;
}
int cuDeviceGet(int *d, int ordinal) {
  logCall("cuDeviceGet");
  *d = ordinal;
  return ordinal == 0 ? kSuccess : kInvalidValue;
}
int cuDeviceGetAttribute(int *v, int attr, int) {
  logCall("cuDeviceGetAttribute");
  *v = attr == 75 ? 9 : 0; // compute capability 9.0
  return kSuccess;
}
int cuDevicePrimaryCtxRetain(void **ctx, int) {
  logCall("cuDevicePrimaryCtxRetain");
  static int token;
  *ctx = &token;
  return kSuccess;
}
int cuDevicePrimaryCtxRelease_v2(int) {
  return logCall("cuDevicePrimaryCtxRelease"), kSuccess;
}
int cuCtxPushCurrent_v2(void *) { return logCall("cuCtxPushCurrent"), kSuccess; }
int cuCtxPopCurrent_v2(void **ctx) {
  logCall("cuCtxPopCurrent");
  if (ctx)
    *ctx = nullptr;
  return kSuccess;
}
int cuModuleLoadData(void **module, const void *image) {
  logCall("cuModuleLoadData");
  if (!image)
    return kInvalidValue;
  ++liveModules;
  *module = &moduleToken;
  return kSuccess;
}
int cuModuleUnload(void *) {
  logCall("cuModuleUnload");
  --liveModules;
  return kSuccess;
}
/// A function handle is its registry entry's name (kept alive by the map).
int cuModuleGetFunction(void **f, void *, const char *name) {
  logCall("cuModuleGetFunction");
  static std::map<std::string, std::string> names;
  std::lock_guard<std::mutex> lock(mutex);
  std::string key = bundleName + "/" + name;
  if (!tessera_emu::registry().count(key))
    return kNotFound;
  *f = const_cast<char *>(names.emplace(key, key).first->second.c_str());
  return kSuccess;
}
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned,
                   void *stream, void **args, void **) {
  logCall("cuLaunchKernel");
  {
    std::lock_guard<std::mutex> lock(mutex);
    lastLaunchStream = uintptr_t(stream);
  }
  auto fn = tessera_emu::registry().find(static_cast<const char *>(f));
  if (fn == tessera_emu::registry().end() || !args)
    return kInvalidValue;
  // (AttnParams, HopperMaps, int layer): the sm_90a kernels, whose
  // registrations take HopperForward.cuh's HopperLaunch (laid out as
  // HopperPack); (AttnParams, int layer): the other attention and fill
  // kernels; (BwdParams, int layer): the backward kernels, whose
  // registrations read their BwdParams from args[0] likewise;
  // (AttnParams, DynArgs[, HopperMaps]): the dynamic groups' kernels and
  // their sm_90a twins, packed as DynPack.
  const std::string name = static_cast<const char *>(f);
  {
    std::lock_guard<std::mutex> lock(mutex);
    launched.push_back(name.substr(name.find('/') + 1));
  }
  const bool wgmma =
      name.size() > 6 && name.compare(name.size() - 6, 6, "_wgmma") == 0;
  if (name.compare(name.find('/') + 1, 16, "tessera_bwd_dyn_") == 0) {
    BwdDynPack pack;
    std::memcpy(&pack.p, args[0], sizeof pack.p);
    std::memcpy(&pack.a, args[1], sizeof pack.a);
    tessera_emu::launch([&] { fn->second(&pack, 0); }, dim3{gx, gy, gz},
                        dim3{bx, by, bz});
    return kSuccess;
  }
  if (name.compare(name.find('/') + 1, 13, "tessera_perm_") == 0) {
    PermPack pack;
    std::memcpy(&pack.p, args[0], sizeof pack.p);
    std::memcpy(pack.a, args[1], sizeof pack.a);
    tessera_emu::launch([&] { fn->second(&pack, 0); }, dim3{gx, gy, gz},
                        dim3{bx, by, bz});
    return kSuccess;
  }
  if (isDynamicKernel(name.substr(name.find('/') + 1))) {
    DynPack pack;
    std::memcpy(&pack.p, args[0], sizeof pack.p);
    std::memcpy(&pack.a, args[1], sizeof pack.a);
    if (wgmma)
      std::memcpy(pack.maps, args[2], sizeof pack.maps);
    tessera_emu::launch([&] { fn->second(&pack, 0); }, dim3{gx, gy, gz},
                        dim3{bx, by, bz});
    return kSuccess;
  }
  if (wgmma) {
    HopperPack pack;
    std::memcpy(&pack.p, args[0], sizeof pack.p);
    std::memcpy(pack.maps, args[1], sizeof pack.maps);
    const int layer = *static_cast<const int *>(args[2]);
    tessera_emu::launch([&] { fn->second(&pack, layer); }, dim3{gx, gy, gz},
                        dim3{bx, by, bz});
    return kSuccess;
  }
  const int layer = *static_cast<const int *>(args[1]);
  tessera_emu::launch([&] { fn->second(args[0], layer); }, dim3{gx, gy, gz},
                      dim3{bx, by, bz});
  return kSuccess;
}
/// cuTensorMapEncodeTiled over the emulator's model (rank 4, 16-bit
/// elements, no interleave, element strides 1: what the runtime asks for).
int cuTensorMapEncodeTiled(void *map, int dataType, unsigned rank, void *global,
                           const unsigned long long *dims,
                           const unsigned long long *strides,
                           const unsigned *box, const unsigned *elementStrides,
                           int interleave, int swizzle, int, int oobFill) {
  logCall("cuTensorMapEncodeTiled");
  for (unsigned i = 0; elementStrides && i < rank; ++i)
    if (elementStrides[i] != 1)
      return kInvalidValue;
  if (interleave != 0 || !dims || !strides || !box)
    return kInvalidValue;
  const uint64_t d[4] = {dims[0], dims[1], dims[2], dims[3]};
  const uint64_t st[3] = {strides[0], strides[1], strides[2]};
  const uint32_t b[4] = {box[0], box[1], box[2], box[3]};
  return tessera_emu::encodeTensorMapTiled(
      static_cast<tessera_emu::TensorMap *>(map), dataType, int(rank), global,
      d, st, b, swizzle, oobFill == 0);
}
int cuPointerGetAttribute(void *out, int attr, unsigned long long at) {
  logCall("cuPointerGetAttribute");
  const bool device = isDevice(at);
  if (attr == 2) // memory type
    *static_cast<unsigned *>(out) = device ? 2u : 1u;
  else if (attr == 8) // managed
    *static_cast<unsigned *>(out) = 0;
  else if (attr == 9) // ordinal
    *static_cast<int *>(out) = 0;
  else
    return kInvalidValue;
  return device || attr == 2 ? kSuccess : kInvalidValue;
}
int cuGetErrorString(int rc, const char **s) {
  *s = rc == kNotFound ? "not found (fake driver)" : "error (fake driver)";
  return kSuccess;
}
int cuMemAllocAsync(unsigned long long *p, size_t bytes, void *) {
  logCall("cuMemAllocAsync");
  void *m = std::malloc(bytes ? bytes : 1);
  *p = reinterpret_cast<unsigned long long>(m);
  fakecuda_register(m, bytes);
  return kSuccess;
}
int cuMemFreeAsync(unsigned long long p, void *) {
  logCall("cuMemFreeAsync");
  {
    std::lock_guard<std::mutex> lock(mutex);
    deviceRanges.erase(uintptr_t(p));
  }
  std::free(reinterpret_cast<void *>(p));
  return kSuccess;
}
int cuMemcpyHtoDAsync_v2(unsigned long long dst, const void *src, size_t bytes,
                         void *) {
  logCall("cuMemcpyHtoDAsync");
  if (bytes && !isDevice(dst))
    return kInvalidValue;
  std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return kSuccess;
}
int cuFuncSetAttribute(void *, int, int) {
  return logCall("cuFuncSetAttribute"), kSuccess;
}

} // extern "C"
