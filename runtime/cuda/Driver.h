//===- Driver.h - the CUDA driver API, opened at run time -------*- C++ -*-===//

#ifndef TESSERA_RUNTIME_DRIVER_H
#define TESSERA_RUNTIME_DRIVER_H

#include <string>

namespace tessera::runtime {

/// The driver entry points Tessera uses, with the driver's C signatures
/// (handles as void *).
struct Driver {
  int (*init)(unsigned) = nullptr;
  int (*deviceGetCount)(int *) = nullptr;
  int (*deviceGet)(int *, int) = nullptr;
  int (*deviceGetAttribute)(int *, int, int) = nullptr;
  int (*primaryCtxRetain)(void **, int) = nullptr;
  int (*primaryCtxRelease)(int) = nullptr;
  int (*ctxPushCurrent)(void *) = nullptr;
  int (*ctxPopCurrent)(void **) = nullptr;
  int (*moduleLoadData)(void **, const void *) = nullptr;
  int (*moduleUnload)(void *) = nullptr;
  int (*moduleGetFunction)(void **, void *, const char *) = nullptr;
  int (*launchKernel)(void *, unsigned, unsigned, unsigned, unsigned, unsigned,
                      unsigned, unsigned, void *, void **, void **) = nullptr;
  int (*pointerGetAttribute)(void *, int, unsigned long long) = nullptr;
  int (*getErrorString)(int, const char **) = nullptr;
  int (*memAllocAsync)(unsigned long long *, size_t, void *) = nullptr;
  int (*memFreeAsync)(unsigned long long, void *) = nullptr;
  /// cuMemcpyHtoDAsync_v2 (a caller's block index, from host memory).
  int (*memcpyHtoDAsync)(unsigned long long, const void *, size_t,
                         void *) = nullptr;
  int (*funcSetAttribute)(void *, int, int) = nullptr;
  /// cuTensorMapEncodeTiled (CUDA 12.0 and later; null where the driver
  /// lacks it: then no sm_90a kernels run). Enumerations as int.
  int (*tensorMapEncodeTiled)(void *, int, unsigned, void *,
                              const unsigned long long *,
                              const unsigned long long *, const unsigned *,
                              const unsigned *, int, int, int, int) = nullptr;

  /// The driver, or null with `error` set when libcuda.so.1 cannot be
  /// opened or lacks an entry point.
  static const Driver *get(std::string &error);

  /// "cuFoo failed: <driver's message>".
  std::string message(const char *call, int rc) const;
};

// Attribute numbers of the driver API (cuda.h).
enum : int {
  kAttrComputeCapabilityMajor = 75,
  kAttrComputeCapabilityMinor = 76,
  kPointerAttrMemoryType = 2,
  kPointerAttrIsManaged = 8,
  kPointerAttrDeviceOrdinal = 9,
  kMemoryTypeDevice = 2,
  kFuncAttrMaxDynamicSharedSize = 8,
};

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_DRIVER_H
