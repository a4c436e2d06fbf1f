//===- Hopper.cuh - sm_90a primitives: wgmma, mbarrier, TMA ---*- CUDA -*-===//
//
// The pieces the Hopper kernels (issue 18) are built from, each one
// instruction or a short loop of them: the wgmma shared-memory matrix
// descriptor, warpgroup MMA with A and B in shared memory (wgmmaSS) or A in
// registers (wgmmaRS; wgmmaRSTransB with B MN-major), its fence / commit /
// wait, mbarriers, the 4-D tiled TMA load, the async-proxy fence and
// setmaxnreg. Pasted by the emitter
// after FlashForward.cuh; needs no header, so NVRTC compiles it without the
// CUDA include directory (for sm_90a: wgmma and setmaxnreg exist only
// there). Under TESSERA_EMULATE each primitive calls its model in Emulate.h
// ("Hopper primitives" there says what is modelled and what is not).
//
// Layouts (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-
// Accumulate", register fragments and shared-memory matrix layouts), for
// thread t of a warpgroup, w = t / 32 its warp, g = (t % 32) / 4,
// q = t % 4:
// * D (m64nN, f32): d[4 j + 0], d[4 j + 1] = D[16 w + g][8 j + 2 q + {0, 1}]
//   and d[4 j + 2], d[4 j + 3] = D[16 w + g + 8][8 j + 2 q + {0, 1}], for
//   j in [0, N / 8).
// * A in registers (m64k16, f16 / bf16, the lower index in the lower 16
//   bits): a[0] = A[16 w + g][2 q, 2 q + 1], a[1] = A[16 w + g + 8][2 q,
//   2 q + 1], a[2] = A[16 w + g][2 q + 8, 2 q + 9], a[3] = A[16 w + g + 8]
//   [2 q + 8, 2 q + 9]: mma.m16n8k16's A fragment, one per warp. So the D
//   fragment of a product, packed in pairs (d[4 j], d[4 j + 1]) ->
//   a[2 (j % 2)] of k-block j / 2, (d[4 j + 2], d[4 j + 3]) -> a[2 (j % 2) +
//   1], is the A operand of the next product (FlashAttention-3's P V).
// * A and B in shared memory, both K-major (imm-trans-a = imm-trans-b = 0):
//   A is 64 rows (m) of 16 k, B is N rows (n) of 16 k; with S the start
//   address, LBO / SBO the descriptor's byte offsets, element (row r, k) of
//   16 bits lies at
//     no swizzle:   S + (r / 8) SBO + (r % 8) 16 + (k / 8) LBO + (k % 8) 2
//                   (8 x 8 "core matrices" of 16-byte rows);
//     W-byte swizzle (W = 32, 64, 128): a = S + (r / 8) SBO + (r % 8) W +
//                   2 k, then bits [4, 4 + log2(W / 16)) of a XORed with
//                   the bits above bit 7 of the same width (bits 7-9 for
//                   128B): 16-byte chunks permuted within a W-byte row, by
//                   the absolute shared address, so a swizzled tile starts
//                   at a multiple of 8 W bytes (1024 for 128B). LBO is
//                   unused (one k16 step never leaves a swizzle row).
//   A k-step of 16 moves S by 32 bytes inside a swizzled row, or by 2 LBO
//   without swizzle.
// The TMA writes a box in the same swizzle (CU_TENSOR_MAP_SWIZZLE_{32,64,
// 128}B <-> descriptor modes 3, 2, 1), rows of box[0] elements one after
// another, so a [rows][W / 2] tile loaded with W-byte swizzle is a K-major
// operand with SBO = 8 W.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_HOPPER_CUH
#define TESSERA_KERNEL_HOPPER_CUH

namespace tessera {
namespace kernel {

// The same typedefs as FlashForward.cuh and Masks.cuh (a typedef may be
// repeated), so that this file also compiles on its own.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/// The element types of wgmmaSS / wgmmaRS: FlashForward.cuh's kF16 (0) and
/// kBF16 (1).
enum { kWgmmaF16 = 0, kWgmmaBF16 = 1 };

/// Descriptor swizzle modes (bits 62-63).
enum { kDescNoSwizzle = 0, kDesc128B = 1, kDesc64B = 2, kDesc32B = 3 };

//===----------------------------------------------------------------------===//
// wgmma
//===----------------------------------------------------------------------===//

/// The shared-window address of `smem` (what shared-state-space
/// instructions take). Under the emulator, an address in the emulated
/// window of 256 KiB that Emulate.h maps back (see sharedWindow there).
__device__ __forceinline__ u32 smemWindowAddress(const void *smem) {
#ifdef TESSERA_EMULATE
  return tessera_emu::sharedWindow(smem);
#else
  return (u32)__cvta_generic_to_shared(smem);
#endif
}

/// The wgmma matrix descriptor of a K-major operand at `smem` (16-byte
/// aligned): bits 0-13 start address >> 4, 16-29 leading byte offset >> 4,
/// 32-45 stride byte offset >> 4, 49-51 base offset 0, 62-63 `swizzle`
/// (kDescNoSwizzle, kDesc128B, kDesc64B, kDesc32B). The layouts: this
/// file's header.
__device__ __forceinline__ u64 smemDesc(const void *smem, u32 leadingBytes,
                                        u32 strideBytes, int swizzle) {
  return (u64)((smemWindowAddress(smem) >> 4) & 0x3fffu) |
         (u64)((leadingBytes >> 4) & 0x3fffu) << 16 |
         (u64)((strideBytes >> 4) & 0x3fffu) << 32 | (u64)(swizzle & 3) << 62;
}

#ifndef TESSERA_EMULATE
// Register lists of the accumulators (N / 2 of them) in the inline PTX.
#define TESSERA_WGMMA_D32                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, "                                          \
  "%8, %9, %10, %11, %12, %13, %14, %15, "                                     \
  "%16, %17, %18, %19, %20, %21, %22, %23, "                                   \
  "%24, %25, %26, %27, %28, %29, %30, %31}"
#define TESSERA_WGMMA_D64                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, "                                          \
  "%8, %9, %10, %11, %12, %13, %14, %15, "                                     \
  "%16, %17, %18, %19, %20, %21, %22, %23, "                                   \
  "%24, %25, %26, %27, %28, %29, %30, %31, "                                   \
  "%32, %33, %34, %35, %36, %37, %38, %39, "                                   \
  "%40, %41, %42, %43, %44, %45, %46, %47, "                                   \
  "%48, %49, %50, %51, %52, %53, %54, %55, "                                   \
  "%56, %57, %58, %59, %60, %61, %62, %63}"
#define TESSERA_WGMMA_D128                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, "                                          \
  "%8, %9, %10, %11, %12, %13, %14, %15, "                                     \
  "%16, %17, %18, %19, %20, %21, %22, %23, "                                   \
  "%24, %25, %26, %27, %28, %29, %30, %31, "                                   \
  "%32, %33, %34, %35, %36, %37, %38, %39, "                                   \
  "%40, %41, %42, %43, %44, %45, %46, %47, "                                   \
  "%48, %49, %50, %51, %52, %53, %54, %55, "                                   \
  "%56, %57, %58, %59, %60, %61, %62, %63, "                                   \
  "%64, %65, %66, %67, %68, %69, %70, %71, "                                   \
  "%72, %73, %74, %75, %76, %77, %78, %79, "                                   \
  "%80, %81, %82, %83, %84, %85, %86, %87, "                                   \
  "%88, %89, %90, %91, %92, %93, %94, %95, "                                   \
  "%96, %97, %98, %99, %100, %101, %102, %103, "                               \
  "%104, %105, %106, %107, %108, %109, %110, %111, "                           \
  "%112, %113, %114, %115, %116, %117, %118, %119, "                           \
  "%120, %121, %122, %123, %124, %125, %126, %127}"

// The accumulators as read-write operands, 4 / 16 / 32 / ... at a time.
#define TESSERA_WGMMA_F4(d, i)                                                 \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define TESSERA_WGMMA_F16(d, i)                                                \
  TESSERA_WGMMA_F4(d, i), TESSERA_WGMMA_F4(d, i + 4),                          \
      TESSERA_WGMMA_F4(d, i + 8), TESSERA_WGMMA_F4(d, i + 12)
#define TESSERA_WGMMA_F32(d, i)                                                \
  TESSERA_WGMMA_F16(d, i), TESSERA_WGMMA_F16(d, i + 16)
#define TESSERA_WGMMA_F64(d, i)                                                \
  TESSERA_WGMMA_F32(d, i), TESSERA_WGMMA_F32(d, i + 32)
#define TESSERA_WGMMA_F128(d, i)                                               \
  TESSERA_WGMMA_F64(d, i), TESSERA_WGMMA_F64(d, i + 64)

// One wgmma.mma_async with scale-d from a register (a predicate: 0 means
// D = A B, ignoring the accumulators' values), scale-a = scale-b = 1, and
// K-major operands (imm-trans 0). SS: "a-desc, b-desc, p, 1, 1, 0, 0";
// RS: "{a0, a1, a2, a3}, b-desc, p, 1, 1, 0".
#define TESSERA_WGMMA(shape, type, dregs, pred, operands, trans)               \
  "{\n.reg .pred p;\nsetp.ne.b32 p, " pred ", 0;\n"                            \
  "wgmma.mma_async.sync.aligned." shape ".f32." type "." type " " dregs        \
  ", " operands ", p, 1, 1, " trans ";\n}\n"
#endif

/// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16} with A and B in
/// shared memory (descriptors from smemDesc), both K-major: d = A B, plus d
/// when `accumulate`. Issued by all 128 threads of a warpgroup alike; d is
/// undefined until a wgmmaWait covers the commit group of this issue, and
/// must not be touched in between (Emulate.h makes it NaN meanwhile).
/// Precede it by wgmmaFence when d (or, for wgmmaRS, a) was written by
/// other instructions. E: kWgmmaF16 / kWgmmaBF16; N: 64, 128 or 256.
template <int E, int N>
__device__ __forceinline__ void wgmmaSS(float (&d)[N / 2], u64 descA, u64 descB,
                                        bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma N: 64, 128 or 256");
#ifdef TESSERA_EMULATE
  tessera_emu::wgmmaSS<E, N>(d, descA, descB, accumulate);
#else
  const u32 scale = accumulate ? 1u : 0u;
  if constexpr (N == 64) {
    if (E == kWgmmaF16)
      asm volatile(TESSERA_WGMMA("m64n64k16", "f16", TESSERA_WGMMA_D32, "%34",
                                 "%32, %33", "0, 0")
                   : TESSERA_WGMMA_F32(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
    else
      asm volatile(TESSERA_WGMMA("m64n64k16", "bf16", TESSERA_WGMMA_D32, "%34",
                                 "%32, %33", "0, 0")
                   : TESSERA_WGMMA_F32(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
  } else if constexpr (N == 128) {
    if (E == kWgmmaF16)
      asm volatile(TESSERA_WGMMA("m64n128k16", "f16", TESSERA_WGMMA_D64, "%66",
                                 "%64, %65", "0, 0")
                   : TESSERA_WGMMA_F64(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
    else
      asm volatile(TESSERA_WGMMA("m64n128k16", "bf16", TESSERA_WGMMA_D64, "%66",
                                 "%64, %65", "0, 0")
                   : TESSERA_WGMMA_F64(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
  } else {
    if (E == kWgmmaF16)
      asm volatile(TESSERA_WGMMA("m64n256k16", "f16", TESSERA_WGMMA_D128,
                                 "%130", "%128, %129", "0, 0")
                   : TESSERA_WGMMA_F128(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
    else
      asm volatile(TESSERA_WGMMA("m64n256k16", "bf16", TESSERA_WGMMA_D128,
                                 "%130", "%128, %129", "0, 0")
                   : TESSERA_WGMMA_F128(d, 0)
                   : "l"(descA), "l"(descB), "r"(scale));
  }
#endif
}

#ifndef TESSERA_EMULATE
// wgmma with A in registers, imm-trans-b from TRANS_B (a constexpr bool in
// scope), N / 2 accumulators `outs`.
#define TESSERA_WGMMA_RS(shape, type, dregs, pred, operands, outs)             \
  do {                                                                         \
    if constexpr (TRANS_B)                                                     \
      asm volatile(TESSERA_WGMMA(shape, type, dregs, pred, operands, "1")      \
                   : outs                                                      \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB),   \
                     "r"(scale));                                              \
    else                                                                       \
      asm volatile(TESSERA_WGMMA(shape, type, dregs, pred, operands, "0")      \
                   : outs                                                      \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB),   \
                     "r"(scale));                                              \
  } while (0)
#endif

/// wgmmaRS and wgmmaRSTransB: A from registers, B from shared memory,
/// K-major or (TRANS_B) MN-major.
template <int E, int N, bool TRANS_B>
__device__ __forceinline__ void
wgmmaRSImpl(float (&d)[N / 2], const u32 (&a)[4], u64 descB, bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma N: 64, 128 or 256");
#ifdef TESSERA_EMULATE
  if (TRANS_B)
    tessera_emu::wgmmaRSTransB<E, N>(d, a, descB, accumulate);
  else
    tessera_emu::wgmmaRS<E, N>(d, a, descB, accumulate);
#else
  const u32 scale = accumulate ? 1u : 0u;
  if constexpr (N == 64) {
    if (E == kWgmmaF16)
      TESSERA_WGMMA_RS("m64n64k16", "f16", TESSERA_WGMMA_D32, "%37",
                       "{%32, %33, %34, %35}, %36", TESSERA_WGMMA_F32(d, 0));
    else
      TESSERA_WGMMA_RS("m64n64k16", "bf16", TESSERA_WGMMA_D32, "%37",
                       "{%32, %33, %34, %35}, %36", TESSERA_WGMMA_F32(d, 0));
  } else if constexpr (N == 128) {
    if (E == kWgmmaF16)
      TESSERA_WGMMA_RS("m64n128k16", "f16", TESSERA_WGMMA_D64, "%69",
                       "{%64, %65, %66, %67}, %68", TESSERA_WGMMA_F64(d, 0));
    else
      TESSERA_WGMMA_RS("m64n128k16", "bf16", TESSERA_WGMMA_D64, "%69",
                       "{%64, %65, %66, %67}, %68", TESSERA_WGMMA_F64(d, 0));
  } else {
    if (E == kWgmmaF16)
      TESSERA_WGMMA_RS("m64n256k16", "f16", TESSERA_WGMMA_D128, "%133",
                       "{%128, %129, %130, %131}, %132",
                       TESSERA_WGMMA_F128(d, 0));
    else
      TESSERA_WGMMA_RS("m64n256k16", "bf16", TESSERA_WGMMA_D128, "%133",
                       "{%128, %129, %130, %131}, %132",
                       TESSERA_WGMMA_F128(d, 0));
  }
#endif
}

/// The same with A in registers (this thread's m64k16 A fragment, the
/// layout in this file's header; FlashAttention-3's P in O += P V) and B in
/// shared memory, K-major.
template <int E, int N>
__device__ __forceinline__ void wgmmaRS(float (&d)[N / 2], const u32 (&a)[4],
                                        u64 descB, bool accumulate) {
  wgmmaRSImpl<E, N, false>(d, a, descB, accumulate);
}

/// wgmmaRS with B MN-major (imm-trans-b 1): B's N dimension contiguous, as
/// V [keys][head_dim] is for O += P V (keys are k, head-dim columns n).
/// Layouts (the PTX ISA's "Canonical Layouts", MN-major): W-byte swizzle: W / 2
/// columns in a W-byte line, the 16 keys of a k-step on lines W bytes apart
/// in two groups SBO apart, the next W / 2 columns LBO on; no swizzle: core
/// matrices of 8 keys (16 bytes apart) by 8 columns, SBO apart along n and
/// LBO apart along k.
template <int E, int N>
__device__ __forceinline__ void wgmmaRSTransB(float (&d)[N / 2],
                                              const u32 (&a)[4], u64 descB,
                                              bool accumulate) {
  wgmmaRSImpl<E, N, true>(d, a, descB, accumulate);
}

/// wgmma.fence.sync.aligned: orders this warpgroup's earlier register and
/// shared-memory accesses before the wgmma.mma_async that follow (needed
/// before the first wgmma and whenever its accumulators or A registers were
/// written by other instructions).
__device__ __forceinline__ void wgmmaFence() {
#ifdef TESSERA_EMULATE
  tessera_emu::wgmmaFence();
#else
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

/// wgmma.commit_group.sync.aligned: the wgmma.mma_async issued since the
/// last commit form a group.
__device__ __forceinline__ void wgmmaCommit() {
#ifdef TESSERA_EMULATE
  tessera_emu::wgmmaCommit();
#else
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}

/// wgmma.wait_group.sync.aligned N: every group but the newest N has
/// completed; their accumulators may be read.
template <int N> __device__ __forceinline__ void wgmmaWait() {
#ifdef TESSERA_EMULATE
  tessera_emu::wgmmaWait(N);
#else
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}

/// Ties registers to this point for the compiler (no instruction): call it
/// on the accumulators after wgmmaWait (and on d / a before a wgmma) so that
/// no access to them moves across the asynchronous MMA.
template <int K> __device__ __forceinline__ void wgmmaFenceRegs(float (&r)[K]) {
#ifdef TESSERA_EMULATE
  (void)r;
#else
#pragma unroll
  for (int i = 0; i < K; ++i)
    asm volatile("" : "+f"(r[i])::"memory");
#endif
}

//===----------------------------------------------------------------------===//
// mbarrier (in shared memory, 8-byte aligned)
//===----------------------------------------------------------------------===//

/// mbarrier.init.shared::cta.b64: `count` arrivals complete a phase (with
/// the transactions announced by mbarArriveExpectTx); the phase is 0.
__device__ __forceinline__ void mbarInit(u64 *bar, u32 count) {
#ifdef TESSERA_EMULATE
  tessera_emu::mbarInit(bar, count);
#else
  asm volatile(
      "mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smemWindowAddress(bar)),
      "r"(count)
      : "memory");
#endif
}

/// fence.mbarrier_init.release.cluster: makes mbarInit visible to the
/// async proxy (the TMA unit) and to other threads; then __syncthreads.
__device__ __forceinline__ void fenceBarrierInit() {
#ifndef TESSERA_EMULATE
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

/// mbarrier.arrive.shared::cta.b64: one arrival on the current phase.
__device__ __forceinline__ void mbarArrive(u64 *bar) {
#ifdef TESSERA_EMULATE
  tessera_emu::mbarArrive(bar);
#else
  asm volatile(
      "mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smemWindowAddress(bar))
      : "memory");
#endif
}

/// mbarrier.arrive.expect_tx.shared::cta.b64: announces `bytes` of
/// transactions (TMA loads completing on this barrier) for the current
/// phase, then arrives.
__device__ __forceinline__ void mbarArriveExpectTx(u64 *bar, u32 bytes) {
#ifdef TESSERA_EMULATE
  tessera_emu::mbarArriveExpectTx(bar, bytes);
#else
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                   smemWindowAddress(bar)),
               "r"(bytes)
               : "memory");
#endif
}

/// mbarrier.try_wait.parity.shared::cta.b64: true once the phase of parity
/// `parity` has completed (the current phase's parity differs); may
/// suspend the thread for a while first. A consumer of the k-th use of a
/// barrier waits with parity k % 2.
__device__ __forceinline__ bool mbarTryWait(u64 *bar, u32 parity) {
#ifdef TESSERA_EMULATE
  return tessera_emu::mbarTryWait(bar, parity);
#else
  u32 done;
  asm volatile("{\n.reg .pred p;\n"
               "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
               "selp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(done)
               : "r"(smemWindowAddress(bar)), "r"(parity)
               : "memory");
  return done != 0;
#endif
}

/// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarWait(u64 *bar, u32 parity) {
#ifdef TESSERA_EMULATE
  tessera_emu::mbarWait(bar, parity);
#else
  while (!mbarTryWait(bar, parity)) {
  }
#endif
}

//===----------------------------------------------------------------------===//
// TMA
//===----------------------------------------------------------------------===//

#ifdef TESSERA_EMULATE
typedef tessera_emu::TensorMap TensorMap;
#else
/// A tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned), made on
/// the host by cuTensorMapEncodeTiled and passed to the kernel as a
/// __grid_constant__ parameter (or copied to global memory).
struct alignas(64) TensorMap {
  u64 opaque[16];
};
#endif

/// cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::
/// complete_tx::bytes: the box of `map` at coordinates (c0, c1, c2, c3),
/// innermost first (for a [B, N, H, D] tensor: c0 the element in D, c1 the
/// head, c2 the token, c3 the batch), into `smemDst` (128-byte aligned) in
/// the map's swizzle; out-of-bound elements are filled (zeros). Completes
/// as transactions of the box's bytes on `bar`, which a thread announced
/// with mbarArriveExpectTx; the data may be read after a wait on `bar`
/// sees that phase complete. Issued by one thread.
__device__ __forceinline__ void tmaLoad(void *smemDst, const TensorMap *map,
                                        int c0, int c1, int c2, int c3,
                                        u64 *bar) {
#ifdef TESSERA_EMULATE
  tessera_emu::tmaLoadTile4d(smemDst, map, c0, c1, c2, c3, bar);
#else
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile"
               ".mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
               "[%6];" ::"r"(smemWindowAddress(smemDst)),
               "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
               "r"(smemWindowAddress(bar))
               : "memory");
#endif
}

/// fence.proxy.async.shared::cta: orders this thread's generic-proxy
/// shared-memory accesses with later async-proxy ones (a TMA store of data
/// written by st.shared, or a TMA load into a buffer read by ld.shared).
__device__ __forceinline__ void fenceProxyAsync() {
#ifndef TESSERA_EMULATE
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/// setmaxnreg.inc.sync.aligned.u32 R: the warpgroup's threads may use up to
/// R registers (R a multiple of 8 in [24, 256]); all 128 threads execute it.
template <int R> __device__ __forceinline__ void setMaxNRegInc() {
  static_assert(R % 8 == 0 && R >= 24 && R <= 256, "setmaxnreg: R");
#ifdef TESSERA_EMULATE
  tessera_emu::setMaxNReg(R, true);
#else
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R));
#endif
}

/// setmaxnreg.dec.sync.aligned.u32 R: releases registers down to R.
template <int R> __device__ __forceinline__ void setMaxNRegDec() {
  static_assert(R % 8 == 0 && R >= 24 && R <= 256, "setmaxnreg: R");
#ifdef TESSERA_EMULATE
  tessera_emu::setMaxNReg(R, false);
#else
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R));
#endif
}

} // namespace kernel
} // namespace tessera

#endif // TESSERA_KERNEL_HOPPER_CUH
