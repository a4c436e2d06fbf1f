//===- VecMath.h - the CPU kernels' vector helpers (internal) ---*- C++ -*-===//
//
// GCC vectors of kLanes floats, unaligned loads and stores, a branch-free
// exp and horizontal reductions, shared by the CPU executor (Executor.cpp)
// and the dynamic patterns' tiles (Dynamic.cpp). Not installed.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_VECMATH_H
#define TESSERA_CPU_VECMATH_H

#include <algorithm>
#include <cstdint>
#include <cstring>

// The hot loops are compiled for several x86-64 levels and picked at load
// time, so one library runs everywhere and uses AVX-512 or AVX2 where present.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&         \
    !defined(__SANITIZE_ADDRESS__)
#define TESSERA_CPU_CLONES                                                     \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define TESSERA_CPU_CLONES
#endif

namespace tessera::cpu::vec {

/// The vector width in floats.
constexpr int64_t kLanes = 16;

/// kLanes floats as one GCC vector; loads and stores go through memcpy, so
/// no alignment is assumed.
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Vec never crosses a non-inlined call (the helpers below are always
// inlined), so GCC's note that its ABI depends on AVX-512 does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

__attribute__((always_inline)) inline Vec loadVec(const float *p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

__attribute__((always_inline)) inline void storeVec(float *p, const Vec &v) {
  std::memcpy(p, &v, sizeof(Vec));
}

typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t VecU __attribute__((vector_size(kLanes * sizeof(uint32_t))));

/// exp(x) for x <= 0, on the lanes of a float vector V at once: about 2
/// ulp, exactly 0 below -87 (and for -inf); branch-free. Each lane's
/// result depends on that lane alone, whatever V's width.
template <typename V>
__attribute__((always_inline)) inline V expLanes(const V &x) {
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  typedef uint32_t VU __attribute__((vector_size(sizeof(V))));
  const float log2e = 1.44269504088896341f;
  const float shifter = 12582912.0f; // 1.5 * 2^23: adds round to integers
  V xc = x < -87.0f ? V{} - 87.0f : x;
  V n = (xc * log2e + shifter) - shifter;
  V r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  V p = V{} + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  VU bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += (VU) __builtin_convertvector(n, VI) << 23;
  V e;
  std::memcpy(&e, &bits, sizeof(e));
  return x < -87.0f ? V{} : e;
}

/// expLanes on kLanes floats.
__attribute__((always_inline)) inline Vec expVec(const Vec &x) {
  return expLanes(x);
}

__attribute__((always_inline)) inline float horizontalMax(const Vec &v) {
  float m = v[0];
  for (int64_t i = 1; i < kLanes; ++i)
    m = std::max(m, v[i]);
  return m;
}

__attribute__((always_inline)) inline float horizontalSum(const Vec &v) {
  float s = 0;
  for (int64_t i = 0; i < kLanes; ++i)
    s += v[i];
  return s;
}

/// Rows the callers pad their row blocks to (the microkernel takes any
/// count).
constexpr int64_t kRows = 8;

/// Half a Vec: the microkernel's accumulators are 8-float vectors, one AVX
/// register each. (GCC keeps an array of 16-float vectors on the stack when
/// the target has 8-float registers, storing every accumulator on every
/// step: 2 to 8 times slower on AVX2.)
typedef float Vec8 __attribute__((vector_size(8 * sizeof(float))));

__attribute__((always_inline)) inline Vec8 loadVec8(const float *p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

__attribute__((always_inline)) inline void storeVec8(float *p, Vec8 v) {
  std::memcpy(p, &v, sizeof v);
}

/// R rows of C[R][N] (+)= A[R][K] * B[K][N], N a multiple of kLanes: for
/// each kLanes columns, 2 R accumulators in registers (R <= 6 leaves room
/// for B's two halves and A's broadcast in AVX2's 16 registers). Always
/// inlined, so that it takes the ISA of the clone that calls it. Every
/// element is the same chain of multiply-adds over x whatever R is.
template <int R>
__attribute__((always_inline)) inline void
gemmRows(const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
         int64_t ldc, int64_t n, int64_t k, bool accumulate) {
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    float *c0 = c + j0;
    Vec8 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      lo[r] = accumulate ? loadVec8(c0 + r * ldc) : Vec8{};
      hi[r] = accumulate ? loadVec8(c0 + r * ldc + 8) : Vec8{};
    }
    for (int64_t x = 0; x < k; ++x) {
      Vec8 b0 = loadVec8(b + x * ldb + j0), b1 = loadVec8(b + x * ldb + j0 + 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        float ax = a[r * lda + x];
        lo[r] += ax * b0;
        hi[r] += ax * b1;
      }
    }
    for (int r = 0; r < R; ++r) {
      storeVec8(c0 + r * ldc, lo[r]);
      storeVec8(c0 + r * ldc + 8, hi[r]);
    }
  }
}

/// Same microkernel for S = Q K^T and O += P V:
/// C[M][N] (+)= A[M][K] * B[K][N], N a multiple of kLanes, any M: blocks of
/// six rows, then the rest in one block (a decode step's single query row
/// costs one row, not kRows).
TESSERA_CPU_CLONES
inline void gemm(const float *a, int64_t lda, const float *b, int64_t ldb,
                 float *c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                 bool accumulate) {
  constexpr int64_t kBlock = 6;
  int64_t i0 = 0;
  for (; i0 + kBlock <= m; i0 += kBlock)
    gemmRows<kBlock>(a + i0 * lda, lda, b, ldb, c + i0 * ldc, ldc, n, k,
                     accumulate);
  a += i0 * lda, c += i0 * ldc;
  switch (m - i0) {
  case 1:
    return gemmRows<1>(a, lda, b, ldb, c, ldc, n, k, accumulate);
  case 2:
    return gemmRows<2>(a, lda, b, ldb, c, ldc, n, k, accumulate);
  case 3:
    return gemmRows<3>(a, lda, b, ldb, c, ldc, n, k, accumulate);
  case 4:
    return gemmRows<4>(a, lda, b, ldb, c, ldc, n, k, accumulate);
  case 5:
    return gemmRows<5>(a, lda, b, ldb, c, ldc, n, k, accumulate);
  default:
    return;
  }
}

} // namespace tessera::cpu::vec

#endif // TESSERA_CPU_VECMATH_H
