// Every primitive of runtime/include/tessera/kernel/Hopper.cuh in one small
// sm_90a kernel, for hopper-ptx.test: NVRTC must accept the inline PTX and
// ptxas must turn it into HGMMA, UTMALDG and SYNCS instructions. Not meant
// to compute anything useful: one warpgroup of consumers, one producer warp
// that loads a 64 x 64 tile by TMA into each of two stages, S = Q K^T by
// wgmmaSS and O = P V by wgmmaRS and wgmmaRSTransB, at N = 64, 128 and 256,
// f16 and bf16.

#include "tessera/kernel/Hopper.cuh"

using namespace tessera::kernel;

struct alignas(1024) Tiles {
  u16 q[64 * 64];
  u16 kv[2][64 * 64];
  u64 full[2], empty[2];
};

template <int E, int N>
__device__ void products(Tiles &t, int stage, float *out) {
  float d[N / 2];
  const u64 a = smemDesc(t.q, 16, 1024, kDesc128B);
  const u64 b = smemDesc(t.kv[stage], 16, 1024, kDesc128B);
  wgmmaFence();
  wgmmaSS<E, N>(d, a, b, false);
  wgmmaSS<E, N>(d, a + 2, b + 2, true);
  wgmmaCommit();
  wgmmaWait<0>();
  wgmmaFenceRegs(d);
  u32 p[4];
  for (int i = 0; i < 4; ++i)
    p[i] = __float_as_uint(d[i]);
  wgmmaFence();
  wgmmaRS<E, N>(d, p, b, true);
  wgmmaRSTransB<E, N>(d, p, smemDesc(t.kv[stage], 8192, 1024, kDesc128B), true);
  wgmmaCommit();
  wgmmaWait<0>();
  wgmmaFenceRegs(d);
  float s = 0;
  for (int i = 0; i < N / 2; ++i)
    s += d[i];
  out[threadIdx.x] += s;
}

extern "C" __global__ void __launch_bounds__(160, 1)
    hopperPrimitives(const __grid_constant__ TensorMap qMap,
                     const __grid_constant__ TensorMap kvMap, float *out,
                     int tiles) {
  extern __shared__ __align__(1024) unsigned char smem[];
  Tiles &t = *reinterpret_cast<Tiles *>(smem);
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; ++s) {
      mbarInit(&t.full[s], 1);
      mbarInit(&t.empty[s], 128);
    }
    fenceBarrierInit();
  }
  __syncthreads();
  if (threadIdx.x >= 128) {
    setMaxNRegDec<40>();
    if (threadIdx.x == 128) {
      mbarArriveExpectTx(&t.full[0], 64 * 64 * 2);
      tmaLoad(t.q, &qMap, 0, 0, 0, 0, &t.full[0]);
      for (int i = 0; i < tiles; ++i) {
        const int s = i % 2;
        if (i >= 2)
          mbarWait(&t.empty[s], ((i / 2) - 1) & 1);
        mbarArriveExpectTx(&t.full[s], 64 * 64 * 2);
        tmaLoad(t.kv[s], &kvMap, 0, 1, 64 * i, 0, &t.full[s]);
      }
    }
    return;
  }
  setMaxNRegInc<232>();
  for (int i = 0; i < tiles; ++i) {
    const int s = i % 2;
    mbarWait(&t.full[s], (i / 2) & 1);
    products<kWgmmaBF16, 64>(t, s, out);
    products<kWgmmaF16, 128>(t, s, out);
    products<kWgmmaBF16, 256>(t, s, out);
    fenceProxyAsync();
    mbarArrive(&t.empty[s]);
  }
}
