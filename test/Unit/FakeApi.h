//===- FakeApi.h - the fake CUDA driver's test entry points -----*- C++ -*-===//
//
// FakeCuda.cpp's functions for the tests (FakeDriverTest.cpp,
// BackwardFakeDriverTest.cpp): which host ranges are device memory, the
// driver calls and kernels of the last step, the bundle modules load from.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_FAKEAPI_H
#define TESSERA_TEST_FAKEAPI_H

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstddef>
#include <type_traits>

namespace {

/// The fake driver's test entry points (FakeCuda.cpp).
struct FakeApi {
  void (*registerRange)(const void *, size_t) = nullptr;
  void (*clear)() = nullptr;
  const char *(*calls)() = nullptr;
  const char *(*kernels)() = nullptr;
  void (*useBundle)(const char *) = nullptr;

  static FakeApi &get() {
    static FakeApi f = [] {
      FakeApi x;
      void *h = dlopen(TESSERA_FAKECUDA, RTLD_NOW | RTLD_LOCAL);
      EXPECT_NE(h, nullptr) << dlerror();
      if (!h)
        return x;
      auto sym = [&](auto &fn, const char *name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
            dlsym(h, name));
        EXPECT_NE(fn, nullptr) << name;
      };
      sym(x.registerRange, "fakecuda_register");
      sym(x.clear, "fakecuda_clear");
      sym(x.calls, "fakecuda_calls");
      sym(x.kernels, "fakecuda_kernels");
      sym(x.useBundle, "fakecuda_use_bundle");
      return x;
    }();
    return f;
  }
};

} // namespace

#endif // TESSERA_TEST_FAKEAPI_H
