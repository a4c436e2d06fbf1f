//===- AttentionFuzzer.cpp - tessera_attention with random descriptors ----===//
//
// libFuzzer harness on a CPU context. The first byte picks one of two
// modes:
//
// - static (even): the bytes choose a layer, the scale, the lse pointer and
//   four tensor descriptors (dtype, shape, strides, an offset into one
//   shared arena, or a null pointer) for the tiny-mix bundle
//   ($TESSERA_FUZZ_BUNDLE) through tessera_attention;
// - dynamic (odd): the bytes choose a layer of the dynamic test bundle
//   ($TESSERA_FUZZ_DYNAMIC_BUNDLE, test/Unit/Inputs/dynamic-emulation.mlir:
//   vertical-slash, block top-k and routing under the combinators), Nq and
//   Nk (1, small, or up to 2^40 with stride-0 K/V), the layout and strides,
//   the scale (NaN, inf and out of range too), NaN or inf in the inputs,
//   the lse and the engine's centroids (absent, finite, NaN, inf, of the
//   wrong shape, misaligned, overlapping o or lse) through
//   tessera_attention_dynamic.
//
// Descriptors whose elements would leave the arena are not passed (the
// runtime cannot know a caller's allocation sizes); every other call must
// return a status, never crash, hang or write outside its output. The
// dynamic mode bounds its work: a call runs only where Nq x Nk x heads is
// at most 2^21 (seconds at most under the sanitizers), or where the documented
// index memory (docs/runtime.md; at least 4 x head_dim x (Nq + 2 Nk) bytes a
// head) is above the limit, which the harness sets to 64 MiB
// (TESSERA_CPU_INDEX_MEMORY, unless set), so the runtime must refuse it.
// TESSERA_FUZZ_VERBOSE=1 prints each dynamic call's status (to read a finding's
// input).
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

struct Bytes {
  const uint8_t *p;
  size_t n;
  uint64_t take(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      v = (v << 8) | (n ? *p : 0);
      if (n) {
        ++p;
        --n;
      }
    }
    return v;
  }
};

constexpr size_t kArena = 1 << 20; // floats
constexpr double kIndexMemory = 64.0 * 1024 * 1024;
constexpr int64_t kMaxWork = int64_t(1) << 21; // Nq x Nk x heads

std::vector<float> &arena() {
  static std::vector<float> a(kArena, 0.25f);
  return a;
}

/// The bytes [first, last) that a descriptor's elements span, where its
/// strides are non-negative (others are refused by the runtime unread).
struct Span {
  int64_t first, last;
};
Span spanOf(const tessera_tensor &x) {
  int64_t elem = x.dtype == TESSERA_DTYPE_F32 ? 4 : 2;
  int64_t last = x.head_dim;
  for (auto [n, s] : {std::pair{x.batch, x.stride_batch},
                      {x.seq, x.stride_seq},
                      {x.heads, x.stride_head}})
    last += (n - 1) * s;
  int64_t first = reinterpret_cast<const char *>(x.data) -
                  reinterpret_cast<const char *>(arena().data());
  return {first, first + last * elem};
}

int staticCall(Bytes &in, tessera_bundle *bundle) {
  std::vector<float> &mem = arena();
  int64_t layer = int64_t(in.take(1)) - 8;
  tessera_tensor t[4];
  int64_t extentBytes[4];
  for (int i = 0; i < 4; ++i) {
    tessera_tensor &x = t[i];
    uint64_t kind = in.take(1);
    x.dtype = tessera_dtype(kind % 4); // 3: not a dtype
    x.batch = int64_t(in.take(1) % 4);
    x.seq = int64_t(in.take(1) % 80);
    x.heads = int64_t(in.take(1) % 9);
    x.head_dim = int64_t(in.take(1) % 3 == 0 ? 32 : 64);
    x.stride_head = int64_t(in.take(2)) - 4;
    x.stride_seq = int64_t(in.take(2)) - 4;
    x.stride_batch = int64_t(in.take(3)) - 4;
    size_t offset = size_t(in.take(3)) % kArena;
    x.data = (kind & 0x80) ? nullptr : mem.data() + offset;
    // The last element's byte offset, as the runtime would reach it.
    int64_t last = 0;
    if (x.batch > 0 && x.seq > 0 && x.heads > 0)
      last = (x.batch - 1) * x.stride_batch + (x.seq - 1) * x.stride_seq +
             (x.heads - 1) * x.stride_head + x.head_dim;
    int64_t elem = x.dtype == TESSERA_DTYPE_F32 ? 4 : 2;
    extentBytes[i] = last * elem + int64_t(offset) * 4;
    if (x.data && (last < 0 || extentBytes[i] > int64_t(kArena) * 4))
      return 0; // would read or write outside the arena
  }
  float scale = float(in.take(1)) / 16.0f;
  std::vector<float> lse(4096);
  bool withLse = in.take(1) & 1;
  if (withLse && t[0].batch * 6 * t[0].seq > 4096)
    return 0;
  tessera_attention(bundle, layer, &t[0], &t[1], &t[2], &t[3],
                    withLse ? lse.data() : nullptr, scale, nullptr);
  return 0;
}

/// A sequence length: 1, small, or a power of two up to 2^40 (plus a
/// little), the large ones only where the tensor's rows may share memory.
int64_t length(Bytes &in, bool large) {
  uint64_t kind = in.take(1), v = in.take(2);
  switch (kind % 4) {
  case 0:
    return 1;
  case 1:
    return int64_t(1 + v % 300);
  case 2:
    return int64_t(1 + v % 2048);
  default:
    if (!large)
      return int64_t(1 + v % 300);
    return (int64_t(1) << (8 + v % 33)) + int64_t(kind >> 2) - 32;
  }
}

int dynamicCall(Bytes &in, tessera_bundle *bundle) {
  std::vector<float> &mem = arena();
  int64_t numLayers = 0;
  tessera_bundle_num_layers(bundle, &numLayers);
  uint64_t pick = in.take(1);
  int64_t layer = pick < 8 ? int64_t(pick) - 4 : int64_t(pick) % numLayers;
  tessera_layer_info info{};
  if (tessera_bundle_layer_info(bundle, layer, &info) != TESSERA_OK) {
    // Not a layer of the bundle: refused whatever the tensors.
    info.num_heads = info.num_kv_heads = 1;
    info.head_dim = 64;
    info.dtype = TESSERA_DTYPE_BF16;
  }
  uint64_t shape = in.take(1);
  tessera_dtype dtype = shape % 4 == 0   ? TESSERA_DTYPE_F32
                        : shape % 4 == 1 ? tessera_dtype((info.dtype % 2) + 1)
                                         : info.dtype;
  int64_t heads = info.num_heads + (shape >> 6 == 3 ? 1 : 0);
  int64_t kvHeads = info.num_kv_heads;
  int64_t dim = info.head_dim * ((shape >> 2) % 16 == 0 ? 2 : 1);
  int64_t batch = 1 + int64_t((shape >> 4) % 2);
  bool sharedKv = in.take(1) & 1; // k and v one tensor
  int64_t nq = length(in, false);
  int64_t nk = length(in, true);
  // Each tensor: contiguous, head-major (heads outermost), stride-0 rows,
  // or fuzzed strides; placed at a fuzzed offset in the arena.
  tessera_tensor t[4];
  int64_t seqs[4] = {nq, nk, nk, nq}, hs[4] = {heads, kvHeads, kvHeads, heads};
  for (int i = 0; i < 4; ++i) {
    tessera_tensor &x = t[i];
    uint64_t layout = in.take(1);
    x.dtype = dtype;
    x.batch = batch;
    x.seq = seqs[i];
    x.heads = hs[i];
    x.head_dim = dim;
    switch (layout % 4) {
    case 0: // [B, N, H, D]
      x.stride_head = dim;
      x.stride_seq = hs[i] * dim;
      x.stride_batch = x.seq * x.stride_seq;
      break;
    case 1: // [B, H, N, D]
      x.stride_seq = dim;
      x.stride_head = x.seq * dim;
      x.stride_batch = hs[i] * x.stride_head;
      break;
    case 2: // every row the same (a broadcast cache slot)
      x.stride_head = dim * int64_t((layout >> 2) & 1);
      x.stride_seq = 0;
      x.stride_batch = int64_t((layout >> 3) & 1) * hs[i] * dim;
      break;
    default:
      x.stride_head = int64_t(in.take(2)) - 2;
      x.stride_seq = int64_t(in.take(2)) - 2;
      x.stride_batch = int64_t(in.take(3)) - 2;
    }
    size_t offset = size_t(in.take(3)) % kArena;
    x.data = reinterpret_cast<char *>(mem.data()) +
             (layout & 0x80 ? offset * 2 : offset * 4) % (kArena * 4);
    if (x.stride_head < 0 || x.stride_seq < 0 || x.stride_batch < 0)
      continue; // refused before anything is read
    if (spanOf(x).last > int64_t(kArena) * 4)
      return 0; // would read or write outside the arena
  }
  if (sharedKv)
    t[2] = t[1];
  // Inputs: a deterministic fill (the arena also holds earlier outputs),
  // and a NaN or inf at a chosen element.
  uint64_t fill = in.take(2);
  for (size_t i = 0; i < kArena; ++i) {
    uint32_t h = uint32_t(i) * 2654435761u + uint32_t(fill);
    mem[i] = (float((h >> 7) % 2001) - 1000.0f) / 512.0f;
  }
  uint64_t poison = in.take(3);
  if (poison & 1)
    mem[(poison >> 2) % kArena] = (poison & 2)
                                      ? std::numeric_limits<float>::quiet_NaN()
                                      : std::numeric_limits<float>::infinity();
  uint64_t s = in.take(1);
  float scale = s == 255   ? std::numeric_limits<float>::quiet_NaN()
                : s == 254 ? std::numeric_limits<float>::infinity()
                : s == 253 ? -1.0f
                : s == 252 ? 65537.0f
                           : float(s) / 16.0f;
  // lse: none, its own buffer, or overlapping o.
  uint64_t l = in.take(1);
  int64_t lseCount = batch * heads * nq;
  std::vector<float> lseBuffer;
  float *lse = nullptr;
  if (l % 3 == 1) {
    lseBuffer.resize(size_t(lseCount));
    lse = lseBuffer.data();
  } else if (l % 3 == 2) {
    lse = static_cast<float *>(t[3].data);
    if (spanOf(t[3]).first + lseCount * 4 > int64_t(kArena) * 4)
      return 0;
  }
  // The engine's centroids: none, finite, with a NaN or inf, of another
  // shape, misaligned, or overlapping o or lse.
  uint64_t c = in.take(1);
  int64_t clusters = info.centroid_clusters + ((c >> 3) % 8 == 7 ? 1 : 0);
  int64_t count = info.num_heads * clusters * info.head_dim;
  std::vector<float> centroidBuffer(size_t(count) + 1);
  for (size_t i = 0; i < centroidBuffer.size(); ++i)
    centroidBuffer[i] = float(int(i * 40503u % 61) - 30) / 16.0f;
  tessera_dynamic_inputs inputs{centroidBuffer.data(), info.num_heads, clusters,
                                info.head_dim};
  const tessera_dynamic_inputs *dyn = &inputs;
  switch (c % 8) {
  case 0:
    dyn = nullptr;
    break;
  case 1:
    inputs.centroids = nullptr;
    break;
  case 2:
    centroidBuffer[size_t(in.take(2)) % centroidBuffer.size()] =
        std::numeric_limits<float>::quiet_NaN();
    break;
  case 3:
    centroidBuffer[size_t(in.take(2)) % centroidBuffer.size()] =
        -std::numeric_limits<float>::infinity();
    break;
  case 4:
    inputs.centroids = reinterpret_cast<const float *>(
        reinterpret_cast<const char *>(centroidBuffer.data()) + 2);
    break;
  case 5:
    inputs.centroids = static_cast<const float *>(t[3].data);
    if (spanOf(t[3]).first + count * 4 > int64_t(kArena) * 4)
      return 0;
    break;
  case 6:
    if (lse) {
      inputs.centroids = lse;
      if (lse == lseBuffer.data() && count > lseCount)
        return 0; // past the lse buffer
    }
    break;
  default:
    break;
  }
  // Bounded work: small enough to run, or certainly refused for memory.
  bool refused =
      4.0 * double(dim) * (double(nq) + 2.0 * double(nk)) > kIndexMemory;
  if (!refused && nq * nk * heads > kMaxWork)
    return 0;
  tessera_status status = tessera_attention_dynamic(
      bundle, layer, &t[0], &t[1], &t[2], &t[3], lse, scale, dyn, nullptr);
  if (std::getenv("TESSERA_FUZZ_VERBOSE"))
    std::fprintf(stderr, "layer %lld Nq %lld Nk %lld: %s %s\n",
                 (long long)layer, (long long)nq, (long long)nk,
                 tessera_status_string(status), tessera_last_error());
  return 0;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tessera_context *ctx = nullptr;
  static tessera_bundle *bundle = nullptr, *dynamicBundle = nullptr;
  if (!ctx) {
    setenv("TESSERA_CPU_INDEX_MEMORY", "67108864", /*overwrite=*/0);
    tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx);
    const char *dir = std::getenv("TESSERA_FUZZ_BUNDLE");
    const char *dynamicDir = std::getenv("TESSERA_FUZZ_DYNAMIC_BUNDLE");
    // The harness needs the tiny-mix bundle and the dynamic test bundle.
    if (!dir || tessera_bundle_load_file(ctx, dir, &bundle) != TESSERA_OK ||
        !dynamicDir ||
        tessera_bundle_load_file(ctx, dynamicDir, &dynamicBundle) != TESSERA_OK)
      std::abort();
  }
  Bytes in{data, size};
  if (in.take(1) & 1)
    return dynamicCall(in, dynamicBundle);
  return staticCall(in, bundle);
}
