//===- Half.h - fp16 and bf16 conversions on the host -----------*- C++ -*-===//

#ifndef TESSERA_CPU_HALF_H
#define TESSERA_CPU_HALF_H

#include <cstdint>
#include <cstring>

namespace tessera::cpu {

inline float bitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t floatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// bf16 -> f32: the upper half of the f32 bits.
inline float bf16ToFloat(uint16_t h) { return bitsToFloat(uint32_t(h) << 16); }

/// f32 -> bf16, round to nearest even; NaN stays NaN.
inline uint16_t floatToBf16(float f) {
  uint32_t u = floatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// IEEE binary16 -> f32, subnormals, infinities and NaN included.
inline float f16ToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f)
    return bitsToFloat(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0)
      return bitsToFloat(sign);
    // Subnormal: mant * 2^-24.
    float v = float(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

/// f32 -> IEEE binary16, round to nearest even, overflow to infinity.
inline uint16_t floatToF16(float f) {
  uint32_t u = floatToBits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u)
    return uint16_t(sign | 0x7e00u);
  if (a >= 0x477ff000u) // rounds to 65520 or more: infinity
    return uint16_t(sign | 0x7c00u);
  if (a < 0x38800000u) { // below the smallest normal half: subnormal or 0
    float v = bitsToFloat(a) * 16777216.0f; // in units of 2^-24
    uint32_t m = uint32_t(v);
    float rest = v - float(m);
    if (rest > 0.5f || (rest == 0.5f && (m & 1u)))
      ++m;
    return uint16_t(sign | m);
  }
  uint32_t exp = (a >> 23) - 112u, mant = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    ++h;
  return uint16_t(sign | h);
}

} // namespace tessera::cpu

#endif // TESSERA_CPU_HALF_H
