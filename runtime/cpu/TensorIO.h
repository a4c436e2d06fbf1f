//===- TensorIO.h - rows of CPU tensors as floats (internal) ----*- C++ -*-===//
//
// Reading and writing rows of the [batch, seq, heads, head_dim] tensors of
// the CPU paths in fp32, whatever their element type, and the argument
// checks the executor and the backward share. Not installed.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_TENSORIO_H
#define TESSERA_CPU_TENSORIO_H

#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace tessera::cpu::io {

/// Reads `n` elements at element `offset` of `t` into floats.
inline void load(const Tensor &t, int64_t offset, int64_t n, float *dst) {
  const uint16_t *h = static_cast<const uint16_t *>(t.data) + offset;
  switch (t.dtype) {
  case DType::F32: {
    const float *s = static_cast<const float *>(t.data) + offset;
    std::copy(s, s + n, dst);
    return;
  }
  case DType::F16:
    for (int64_t i = 0; i < n; ++i)
      dst[i] = f16ToFloat(h[i]);
    return;
  case DType::BF16:
    for (int64_t i = 0; i < n; ++i)
      dst[i] = bf16ToFloat(h[i]);
    return;
  }
}

/// Writes `n` floats to element `offset` of `t`, rounded to its type.
inline void store(const Tensor &t, int64_t offset, int64_t n,
                  const float *src) {
  uint16_t *h = static_cast<uint16_t *>(t.data) + offset;
  switch (t.dtype) {
  case DType::F32:
    std::copy(src, src + n, static_cast<float *>(t.data) + offset);
    return;
  case DType::F16:
    for (int64_t i = 0; i < n; ++i)
      h[i] = floatToF16(src[i]);
    return;
  case DType::BF16:
    for (int64_t i = 0; i < n; ++i)
      h[i] = floatToBf16(src[i]);
    return;
  }
}

/// The element offset of row (b, s, h).
inline int64_t offsetOf(const Tensor &t, int64_t b, int64_t s, int64_t h) {
  return b * t.strideBatch + s * t.strideSeq + h * t.strideHead;
}

/// "" if `t` can be read or written as a tensor, else what is wrong with it.
inline std::string checkTensor(const Tensor &t, const char *name) {
  std::string n(name);
  if (!t.data)
    return n + " is a null pointer";
  if (t.batch < 1 || t.seq < 1 || t.heads < 1 || t.headDim < 1)
    return n + " has an empty or negative dimension";
  if (t.strideBatch < 0 || t.strideSeq < 0 || t.strideHead < 0)
    return n + " has a negative stride";
  return "";
}

/// "" if the tile sizes and the softmax scale are usable, else what is not.
inline std::string checkBlocksAndScale(int64_t blockQ, int64_t blockK,
                                       float scale) {
  if (blockQ < 1 || blockK < 1 || blockQ > 1024 || blockK > 1024)
    return "block sizes must be in [1, 1024]";
  if (!(scale >= 0) || std::isinf(scale))
    return "scale must be finite and not negative (0 selects 1/sqrt(d))";
  return "";
}

} // namespace tessera::cpu::io

#endif // TESSERA_CPU_TENSORIO_H
