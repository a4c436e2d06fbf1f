//===- AttentionFuzzer.cpp - tessera_attention with random descriptors ----===//
//
// libFuzzer harness: the input bytes choose a layer, the scale, the lse
// pointer and four tensor descriptors (dtype, shape, strides, an offset into
// one shared arena, or a null pointer) for the tiny-mix bundle on a CPU
// context. Descriptors whose elements would leave the arena are not passed
// (the runtime cannot know a caller's allocation sizes); every other call
// must return a status, never crash or write outside its output.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include <cstdlib>
#include <cstring>
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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tessera_context *ctx = nullptr;
  static tessera_bundle *bundle = nullptr;
  static std::vector<float> arena(kArena, 0.25f);
  if (!ctx) {
    tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx);
    const char *dir = std::getenv("TESSERA_FUZZ_BUNDLE");
    if (!dir ||
        tessera_bundle_load_file(ctx, dir, &bundle) != TESSERA_OK)
      std::abort(); // the harness needs the tiny-mix bundle
  }
  Bytes in{data, size};
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
    x.data = (kind & 0x80) ? nullptr : arena.data() + offset;
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
