//===- Driver.cpp - the CUDA driver API, opened at run time ---------------===//

#include "Driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <type_traits>

using namespace tessera::runtime;

const Driver *Driver::get(std::string &error) {
  static std::once_flag once;
  static Driver driver;
  static bool ok = false;
  static std::string loadError;
  std::call_once(once, [] {
    const char *path = std::getenv("TESSERA_LIBCUDA");
    void *h = dlopen(path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      loadError = "the CUDA driver (libcuda.so.1) is not available: no "
                  "NVIDIA driver on this machine";
      return;
    }
    bool all = true;
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
          dlsym(h, name));
      all = all && fn;
    };
    sym(driver.init, "cuInit");
    sym(driver.deviceGetCount, "cuDeviceGetCount");
    sym(driver.deviceGet, "cuDeviceGet");
    sym(driver.deviceGetAttribute, "cuDeviceGetAttribute");
    sym(driver.primaryCtxRetain, "cuDevicePrimaryCtxRetain");
    sym(driver.primaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    sym(driver.ctxPushCurrent, "cuCtxPushCurrent_v2");
    sym(driver.ctxPopCurrent, "cuCtxPopCurrent_v2");
    sym(driver.moduleLoadData, "cuModuleLoadData");
    sym(driver.moduleUnload, "cuModuleUnload");
    sym(driver.moduleGetFunction, "cuModuleGetFunction");
    sym(driver.launchKernel, "cuLaunchKernel");
    sym(driver.pointerGetAttribute, "cuPointerGetAttribute");
    sym(driver.getErrorString, "cuGetErrorString");
    sym(driver.memAllocAsync, "cuMemAllocAsync");
    sym(driver.memFreeAsync, "cuMemFreeAsync");
    sym(driver.memcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    sym(driver.funcSetAttribute, "cuFuncSetAttribute");
    // Optional: the sm_90a kernels' tensor maps (HopperLaunch.cpp).
    driver.tensorMapEncodeTiled =
        reinterpret_cast<decltype(driver.tensorMapEncodeTiled)>(
            dlsym(h, "cuTensorMapEncodeTiled"));
    if (!all) {
      loadError = "the CUDA driver lacks an entry point Tessera needs";
      return;
    }
    if (int rc = driver.init(0)) {
      loadError = driver.message("cuInit", rc);
      return;
    }
    ok = true;
  });
  if (!ok) {
    error = loadError;
    return nullptr;
  }
  return &driver;
}

std::string Driver::message(const char *call, int rc) const {
  const char *text = nullptr;
  if (getErrorString)
    getErrorString(rc, &text);
  return std::string(call) +
         " failed: " + (text ? text : "CUDA error " + std::to_string(rc));
}
