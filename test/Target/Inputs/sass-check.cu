// Hand-written kernels for test/Target/sass-check-rules.test: one that
// follows every rule of scripts/sass-check.py and one breaking each rule
// (left out where SASS_CHECK_GOOD_ONLY is defined).
// Plain NVRTC (no CUDA headers); 32 threads, one 16x16 bf16 tile.

typedef unsigned int u32;
typedef unsigned short u16;

__device__ __forceinline__ u32 sharedAddr(const void *p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
      : "=r"(r)
      : "l"(p));
  return r;
}

// The tile through cp.async (LDGSTS): 16 bytes a thread.
__device__ __forceinline__ void copyAsync(u16 *tile, const uint4 *src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                   sharedAddr(tile + threadIdx.x * 8)),
               "l"(src + threadIdx.x));
  asm volatile("cp.async.commit_group;");
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();
}

// The tile through registers (LDG then STS).
__device__ __forceinline__ void copySync(u16 *tile, const uint4 *src) {
  *reinterpret_cast<uint4 *>(tile + threadIdx.x * 8) = src[threadIdx.x];
  __syncthreads();
}

// The A fragment through ldmatrix (LDSM).
__device__ __forceinline__ void fragment(const u16 *tile, u32 (&a)[4]) {
  const u16 *p = tile + (threadIdx.x % 16) * 16 + (threadIdx.x / 16) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(sharedAddr(p)));
}

__device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0,
                                    u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                 "r"(b1));
}

__device__ __forceinline__ void store(float *out, const float (&c)[4]) {
  for (int e = 0; e < 4; ++e)
    out[threadIdx.x * 4 + e] = c[e];
}

// Every rule kept.
extern "C" __global__ void __launch_bounds__(32)
    good_pipeline(const uint4 *src, float *out) {
  __shared__ __align__(128) u16 tile[256];
  copyAsync(tile, src);
  u32 a[4];
  fragment(tile, a);
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma(c, a, a[0], a[1]);
  store(out, c);
}

#ifndef SASS_CHECK_GOOD_ONLY
// K/V copied synchronously: no LDGSTS.
extern "C" __global__ void __launch_bounds__(32)
    no_cp_async(const uint4 *src, float *out) {
  __shared__ __align__(128) u16 tile[256];
  copySync(tile, src);
  u32 a[4];
  fragment(tile, a);
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma(c, a, a[0], a[1]);
  store(out, c);
}

// The B fragment assembled from 16-bit shared loads (LDS.U16).
extern "C" __global__ void __launch_bounds__(32)
    halfword_loads(const uint4 *src, float *out) {
  __shared__ __align__(128) u16 tile[256];
  copyAsync(tile, src);
  u32 a[4];
  fragment(tile, a);
  const int r = threadIdx.x / 4, k = (threadIdx.x % 4) * 2;
  const u32 b0 = tile[k * 16 + r] | ((u32)tile[(k + 1) * 16 + r] << 16);
  const u32 b1 = tile[(k + 8) * 16 + r] | ((u32)tile[(k + 9) * 16 + r] << 16);
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma(c, a, b0, b1);
  store(out, c);
}

// A per-thread array indexed at run time lives in local memory (STL/LDL).
extern "C" __global__ void __launch_bounds__(32)
    local_array(const uint4 *src, float *out, int pick) {
  __shared__ __align__(128) u16 tile[256];
  copyAsync(tile, src);
  u32 a[4];
  fragment(tile, a);
  u32 spill[16];
  for (int i = 0; i < 16; ++i)
    spill[i] = a[i % 4] + i;
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma(c, a, spill[pick & 15], spill[(pick + threadIdx.x) & 15]);
  store(out, c);
}

#endif // SASS_CHECK_GOOD_ONLY

// No tensor-core instruction: not checked.
extern "C" __global__ void __launch_bounds__(32)
    plain_copy(const uint4 *src, uint4 *dst) {
  dst[threadIdx.x] = src[threadIdx.x];
}
