// Kernels of HopperForward.cuh for hopper-kernel.test, appended to the
// bundle of Inputs/hopper-kernel.mlir after Hopper.cuh and
// HopperForward.cuh: one per attention kernel of the bundle, as the
// emitter will write them (the runtime passes the call's parameters and
// tensor maps as __grid_constant__ parameters; the tiles in dynamic shared
// memory).
#define TESSERA_HOPPER_KERNEL(suffix, E, D)                                    \
  TESSERA_EXTERN_C __global__ void __launch_bounds__(384, 1)                  \
      tessera_attn_##suffix##_wgmma(                                          \
          const __grid_constant__ tessera::kernel::AttnParams p,              \
          const __grid_constant__ tessera::kernel::HopperMaps maps,           \
          int layer) {                                                         \
    using namespace tessera::kernel;                                           \
    const LayerTable &t = *bundle::tables[layer];                              \
    const i64 slot = bundle::slots_tessera_attn_##suffix[layer][blockIdx.y];   \
    extern __shared__ __align__(1024) unsigned char hopperBytes[];             \
    HopperTiles<D> &sm = *reinterpret_cast<HopperTiles<D> *>(hopperBytes);     \
    hopperForward<E, D, bundle::Groups_##suffix>(                              \
        t, p, maps, sm, slot, bundle::patternOf[layer][t.headGroup[slot]]);    \
  }

TESSERA_HOPPER_KERNEL(bf16_d128, tessera::kernel::kBF16, 128)
TESSERA_HOPPER_KERNEL(f16_d64, tessera::kernel::kF16, 64)
