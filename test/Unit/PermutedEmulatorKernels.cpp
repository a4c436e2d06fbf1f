//===- PermutedEmulatorKernels.cpp - the permuted kernel on the host ------===//
//
// Kernel/Permuted.cuh (or the copy broken on purpose that
// TESSERA_PERM_CUH names) with the dynamic kernels' headers, compiled for
// the emulator inside namespace TESSERA_PERM_NS (as the bundles' host
// translation units are), behind one launch function that
// PermutedEmulatorTest.cpp calls.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"

#include <cstdint>

namespace TESSERA_PERM_NS {
// In the bundles' order (each needs the ones before it).
// clang-format off
#include "tessera/kernel/Program.h"
#include "tessera/kernel/FlashForward.cuh"
#include "tessera/kernel/Masks.cuh"
#include "tessera/kernel/DynamicArgs.h"
#include "tessera/kernel/DynamicIndex.cuh"
#include TESSERA_PERM_CUH
// clang-format on

/// Launches permutedAttend<E, D> on `params` (an AttnParams) and `args` (a
/// PermArgs), both laid out as the test's copies of those structs: grid
/// (ceil(Nq / 64), heads, batch), 128 threads. false: no such kernel.
bool launch(int elem, int headDim, const void *params, const void *args,
            unsigned gx, unsigned gy, unsigned gz) {
  using namespace tessera::kernel;
  const AttnParams &p = *static_cast<const AttnParams *>(params);
  const PermArgs &a = *static_cast<const PermArgs *>(args);
  auto run = [&](auto kernel) {
    tessera_emu::launch(kernel, dim3{gx, gy, gz}, dim3{kDynThreads, 1, 1});
  };
  if (elem == kBF16 && headDim == 64)
    run([&] { permutedAttend<kBF16, 64>(p, a); });
  else if (elem == kF16 && headDim == 128)
    run([&] { permutedAttend<kF16, 128>(p, a); });
  else
    return false;
  return true;
}
} // namespace TESSERA_PERM_NS
