// Kernels of FlashBackward.cuh for backward-kernel.test, appended to the
// bundle of Inputs/backward-kernel.mlir after FlashBackward.cuh: per
// attention kernel of the bundle, the three backward kernels as the
// emitter will write them (tiles in dynamic shared memory). The bundle has
// no runFromT yet: CausalT adds the transposed schedule of its one pattern
// (#attn.causal, pattern 0: offsets d = k - p <= 0) from Program.h's
// closed-form transposed leaf, as generated code would call it.

namespace tessera {
namespace kernel {
template <class G> struct CausalT : G {
  static __device__ __forceinline__ Run runFromT(i64 pattern,
                                                 const TRunCtx &c, i64 qb) {
    return pattern == 0 ? bandDRunT(c, qb, -kUnbounded, 0) : noRun();
  }
};
} // namespace kernel
} // namespace tessera

#define TESSERA_BACKWARD_PASSES(suffix, E, D, name, G)                         \
  TESSERA_EXTERN_C __global__ void                                             \
  __launch_bounds__(tessera::kernel::BwdKeyShape<D>::kThreads)                 \
      tessera_bwd_dkdv##name##_##suffix(const tessera::kernel::BwdParams p,    \
                                        int layer) {                           \
    using namespace tessera::kernel;                                           \
    TESSERA_DYNAMIC_TILES(sm, BwdKeyTiles<D>);                                 \
    bwdKeyMajor<E, D, CausalT<bundle::Groups_##suffix>, G>(                    \
        *bundle::tables[layer], bundle::patternOf[layer], p, sm);              \
  }                                                                            \
  TESSERA_EXTERN_C __global__ void __launch_bounds__(128)                      \
      tessera_bwd_dq##name##_##suffix(const tessera::kernel::BwdParams p,      \
                                      int layer) {                             \
    using namespace tessera::kernel;                                           \
    const LayerTable &t = *bundle::tables[layer];                              \
    const i64 slot = blockIdx.y;                                               \
    TESSERA_DYNAMIC_TILES(sm, PipeTiles<D>);                                   \
    bwdQueryMajor<E, D, CausalT<bundle::Groups_##suffix>, G>(                  \
        t, p, sm, slot, bundle::patternOf[layer][t.headGroup[slot]]);          \
  }

// The unguarded kernels, and the guarded second launches (_guarded).
#define TESSERA_BACKWARD_KERNELS(suffix, E, D)                                 \
  TESSERA_EXTERN_C __global__ void __launch_bounds__(128)                      \
      tessera_bwd_pre_##suffix(const tessera::kernel::BwdParams p) {           \
    tessera::kernel::bwdPreprocess<E, D>(p);                                   \
  }                                                                            \
  TESSERA_BACKWARD_PASSES(suffix, E, D, , false)                               \
  TESSERA_BACKWARD_PASSES(suffix, E, D, _guarded, true)

TESSERA_BACKWARD_KERNELS(f16_d64, tessera::kernel::kF16, 64)
TESSERA_BACKWARD_KERNELS(bf16_d128, tessera::kernel::kBF16, 128)
