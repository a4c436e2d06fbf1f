// A tile loop shaped like a bundle's, for test/Docs/sass-counts-tile.test:
// per 64-key tile a K/V copy strided by blockDim.x (8 trips of one 16-byte
// load at 128 threads: 2 x 64 x 64 x 2 bytes), then on partial tiles a
// rolled 32-step mask loop over the "generated" predicate (one MUFU.SIN a
// step), then two mma.sync. The guarded part stands for the pasted headers;
// the rest is "generated" code, whose functions are mask code.

#ifndef TESSERA_KERNEL_TILETEST_H
#define TESSERA_KERNEL_TILETEST_H

typedef unsigned int u32;

__device__ __forceinline__ void mma(float (&c)[4], const u32 (&a)[4], u32 b0,
                                    u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                 "r"(b1));
}

template <class G> __device__ __forceinline__ u32 keepBits(int row, int k0) {
  u32 bits = 0;
#pragma unroll 1
  for (int i = 0; i < 32; ++i)
    if (G::allowed(row, k0 + i))
      bits |= 1u << i;
  return bits;
}

template <class G>
__device__ __forceinline__ void tileLoop(const uint4 *src, const int *cls,
                                         int tiles, float *out) {
  __shared__ uint4 tile[1024];
  const u32 *t32 = reinterpret_cast<const u32 *>(tile);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int t = 0; t < tiles; ++t) {
    for (int c = threadIdx.x; c < 1024; c += blockDim.x)
      tile[c] = src[t * 1024 + c];
    __syncthreads();
    const u32 keep = cls[t] ? G::keep(threadIdx.x, t * 64) : 0xffffffffu;
    const int lane = threadIdx.x % 32;
    u32 a[4] = {t32[lane], t32[lane + 32], t32[lane + 64], t32[lane + 96]};
    a[0] &= keep;
    mma(acc, a, t32[lane + 128], t32[lane + 160]);
    mma(acc, a, t32[lane + 192], t32[lane + 224]);
    __syncthreads();
  }
  for (int e = 0; e < 4; ++e)
    out[threadIdx.x * 4 + e] = acc[e];
}

#endif // TESSERA_KERNEL_TILETEST_H

// "Generated": the leaf's predicate and its mask.
struct Leaf {
  static __device__ __forceinline__ bool allowed(int p, int k) {
    return __sinf((float)(k - p)) > 0.f;
  }
  static __device__ __forceinline__ u32 keep(int row, int k0) {
    return keepBits<Leaf>(row, k0);
  }
};

extern "C" __global__ void __launch_bounds__(128)
    tile_test(const uint4 *src, const int *cls, int tiles, float *out) {
  tileLoop<Leaf>(src, cls, tiles, out);
}

// A mask whose loop runs a data-dependent number of steps: counted once,
// the figure marked "~".
struct Listed {
  static __device__ __forceinline__ u32 keep(int row, int k0) {
    u32 bits = 0;
#pragma unroll 1
    for (int j = 0; j <= row % 7; ++j)
      bits |= 1u << ((k0 + j * 5) & 31);
    return bits;
  }
};

extern "C" __global__ void __launch_bounds__(128)
    tile_test_listed(const uint4 *src, const int *cls, int tiles, float *out) {
  tileLoop<Listed>(src, cls, tiles, out);
}
