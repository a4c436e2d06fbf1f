//===- EmuParams.h - kernel arguments of a dense call, for the tests ------===//
//
// The AttnParams of one dense call over contiguous [B, N, heads, D] bf16 or
// f16 tensors (the softmax scale 1 / sqrt(D)), as the emulator tests pass
// them to the kernels they launch (DynamicEmulatorTest.cpp,
// PermutedEmulatorTest.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_EMUPARAMS_H
#define TESSERA_TEST_EMUPARAMS_H

#include "tessera/kernel/Program.h"

#include <cmath>
#include <cstdint>

namespace {

/// Dense contiguous tensors: q and o [B, nq, hq, d], k and v [B, nk, hkv, d];
/// lse [B, hq, nq] (or null).
inline tessera::kernel::AttnParams
denseParams(const uint16_t *q, const uint16_t *k, const uint16_t *v,
            uint16_t *o, float *lse, int64_t nq, int64_t nk, int64_t hq,
            int64_t hkv, int64_t d, bool vectorLoads) {
  tessera::kernel::AttnParams p{};
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.lse = lse;
  p.nq = nq;
  p.nk = nk;
  p.qStrideB = p.oStrideB = nq * hq * d;
  p.qStrideS = p.oStrideS = hq * d;
  p.qStrideH = p.oStrideH = d;
  p.kStrideB = p.vStrideB = nk * hkv * d;
  p.kStrideS = p.vStrideS = hkv * d;
  p.kStrideH = p.vStrideH = d;
  p.scaleLog2 = float(1.0 / std::sqrt(double(d)) * 1.4426950408889634);
  p.numHeads = int(hq);
  p.numKvHeads = int(hkv);
  p.vectorLoads = vectorLoads ? 1 : 0;
  return p;
}

} // namespace

#endif // TESSERA_TEST_EMUPARAMS_H
