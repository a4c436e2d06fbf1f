//===- EmulatorMmaTest.cpp - the emulator's own intrinsics ----------------===//
//
// mma.sync.m16n8k16 on hand-built matrices, distributed to the 32 lanes by
// the fragment layouts as the PTX ISA states them (written here apart from
// the emulator's own lookup), and the rounding of cvt.rn.{f16,bf16}x2.f32.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"

#include <gtest/gtest.h>

namespace {

template <int E> uint16_t round16(float x) {
  return E == 0 ? tessera::cpu::floatToF16(x) : tessera::cpu::floatToBf16(x);
}

template <int E> uint32_t pack(float lo, float hi) {
  return uint32_t(round16<E>(lo)) | (uint32_t(round16<E>(hi)) << 16);
}

/// D = A B + C through the emulated warp; returns max |D - exact|.
template <int E> double runMma() {
  float A[16][16], B[16][8], C[16][8];
  // Small integers: exact in f16 and bf16, and every product sum exact in
  // f32, so any misplaced element shows as a difference.
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k)
      A[r][k] = float((r * 7 + k * 3) % 11 - 5);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n)
      B[k][n] = float((k * 5 + n * 13) % 9 - 4);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n)
      C[r][n] = float(r - n);
  float D[16][8];
  tessera_emu::launch(
      [&] {
        int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
        uint32_t a[4] = {pack<E>(A[g][2 * t], A[g][2 * t + 1]),
                         pack<E>(A[g + 8][2 * t], A[g + 8][2 * t + 1]),
                         pack<E>(A[g][2 * t + 8], A[g][2 * t + 9]),
                         pack<E>(A[g + 8][2 * t + 8], A[g + 8][2 * t + 9])};
        uint32_t b0 = pack<E>(B[2 * t][g], B[2 * t + 1][g]);
        uint32_t b1 = pack<E>(B[2 * t + 8][g], B[2 * t + 9][g]);
        float c[4] = {C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t],
                      C[g + 8][2 * t + 1]};
        tessera_emu::mma16816<E>(c, a, b0, b1);
        D[g][2 * t] = c[0];
        D[g][2 * t + 1] = c[1];
        D[g + 8][2 * t] = c[2];
        D[g + 8][2 * t + 1] = c[3];
      },
      dim3{1, 1, 1}, dim3{32, 1, 1});
  double err = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double exact = C[r][n];
      for (int k = 0; k < 16; ++k)
        exact += double(A[r][k]) * B[k][n];
      err = std::max(err, std::abs(D[r][n] - exact));
    }
  return err;
}

TEST(EmulatorMma, F16FragmentsMatchThePtxLayout) { EXPECT_EQ(runMma<0>(), 0); }
TEST(EmulatorMma, Bf16FragmentsMatchThePtxLayout) { EXPECT_EQ(runMma<1>(), 0); }

TEST(EmulatorCvt, RoundsToNearestEven) {
  // f16: 11 significant bits. 1 + 2^-11 is halfway between 1 and 1 + 2^-10:
  // even is 1. 1 + 3 * 2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9:
  // even is 1 + 2^-9.
  uint32_t h = tessera_emu::packHalf2<0>(1.0f + 0x1p-11f, 1.0f + 0x3p-11f);
  EXPECT_EQ(h & 0xffffu, 0x3c00u);
  EXPECT_EQ(h >> 16, 0x3c02u);
  // Just above a tie rounds up; 65520 and more overflow to infinity.
  h = tessera_emu::packHalf2<0>(1.0f + 0x1p-11f + 0x1p-20f, 65520.0f);
  EXPECT_EQ(h & 0xffffu, 0x3c01u);
  EXPECT_EQ(h >> 16, 0x7c00u);
  // bf16: 8 significant bits; the same ties.
  uint32_t b = tessera_emu::packHalf2<1>(1.0f + 0x1p-8f, 1.0f + 0x3p-8f);
  EXPECT_EQ(b & 0xffffu, 0x3f80u);
  EXPECT_EQ(b >> 16, 0x3f82u);
  // The first operand goes to the lower half.
  b = tessera_emu::packHalf2<1>(-2.0f, 0.5f);
  EXPECT_EQ(b & 0xffffu, 0xc000u);
  EXPECT_EQ(b >> 16, 0x3f00u);
}

/// __shfl_xor_sync exchanges within a warp, and __syncthreads orders a
/// block's shared-memory writes before reads.
TEST(EmulatorThreads, ShuffleAndBarrier) {
  std::vector<float> got(64);
  tessera_emu::launch(
      [&] {
        __shared__ float cell[64];
        int i = int(threadIdx.x);
        float v = __shfl_xor_sync(0xffffffffu, float(i), 5);
        cell[63 - i] = v;
        __syncthreads();
        got[i] = cell[i];
      },
      dim3{1, 1, 1}, dim3{64, 1, 1});
  for (int i = 0; i < 64; ++i) {
    int writer = 63 - i; // wrote the value it got from lane writer ^ 5
    EXPECT_EQ(got[i], float(writer ^ 5)) << i;
  }
}

} // namespace
