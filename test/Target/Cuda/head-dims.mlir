// RUN: attn-translate %s --emit=cuda | FileCheck %s
// RUN: attn-translate %s --emit=manifest | FileCheck %s --check-prefix=MANIFEST

// The kernel's shape per head_dim (docs/bundles.md, "Launch"): 8 warps and
// static tiles up to 128; at 256, 4 warps with Q resident in dynamic shared
// memory, (64 + 2 x 64) rows x 256 x 2 bytes = 98304 bytes.
attn.model @dims {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 96 dtype = f16 {
    attn.heads [0, 1] = #attn.causal
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 256 dtype = bf16 {
    attn.heads [0, 1] = #attn.causal
  }
}

// CHECK: __launch_bounds__(128, 1)
// CHECK-NEXT: tessera_attn_bf16_d256(tessera::kernel::AttnParams p, int layer) {
// CHECK: TESSERA_DYNAMIC_TILES(smem, PipeTiles<256, 64>);
// CHECK-NEXT: pipeForward<kBF16, 256, 4, true, bundle::Groups_bf16_d256>
// CHECK: __launch_bounds__(256, 1)
// CHECK-NEXT: tessera_attn_f16_d96(tessera::kernel::AttnParams p, int layer) {
// CHECK: __shared__ __align__(128) PipeTiles<96> smem;
// CHECK-NEXT: pipeForward<kF16, 96, 8, false, bundle::Groups_f16_d96>

// MANIFEST: "name": "tessera_attn_bf16_d256",
// MANIFEST: "name": "tessera_attn_f16_d96",
// MANIFEST: "layers": [
// MANIFEST: "head_dim": 96,
// MANIFEST: "kernel_block_q": 128,
// MANIFEST-NEXT: "kernel_dynamic_shared": 0,
// MANIFEST-NEXT: "kernel_threads": 256,
// MANIFEST: "head_dim": 256,
// MANIFEST: "kernel_block_q": 64,
// MANIFEST-NEXT: "kernel_dynamic_shared": 98304,
// MANIFEST-NEXT: "kernel_threads": 128,
