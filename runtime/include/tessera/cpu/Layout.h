//===- Layout.h - token permutations of a head group ------------*- C++ -*-===//
//
// The layouts `--attn-permute` may give a head group, in closed form: where a
// token of a sequence of N tokens sits in the permuted order (`slot`) and
// which token a slot holds (`token`). Patterns are always evaluated on the
// ORIGINAL positions: a layout only changes which (query, key) pairs share a
// tile. Header-only and MLIR-free: --attn-permute and the CPU executor
// (tessera/cpu/Permuted.h) share this arithmetic.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_LAYOUT_H
#define TESSERA_CPU_LAYOUT_H

#include <algorithm>
#include <cstdint>

namespace tessera::layout {

/// The period transpose of period P >= 2: tokens sorted stably by their
/// residue t mod P. With N = q * P + r (0 <= r < P), residue c holds
/// q + (c < r) tokens and starts at slot c * q + min(c, r):
///
///   slot(t) = (t mod P) * q + min(t mod P, r) + t div P
///
/// When P divides N this is (t mod P) * (N / P) + t div P, the transpose of
/// the (N / P) x P matrix of tokens (frames x pixels becomes pixels x
/// frames). It is a bijection of [0, N) for every N >= 0.
struct PeriodTranspose {
  int64_t period = 2;

  int64_t slot(int64_t t, int64_t n) const {
    int64_t q = n / period, r = n % period, c = t % period;
    return c * q + std::min(c, r) + t / period;
  }

  /// The inverse of slot: the token at slot s.
  int64_t token(int64_t s, int64_t n) const {
    int64_t q = n / period, r = n % period;
    int64_t longPart = r * (q + 1); // slots of the residues holding q + 1
    if (s < longPart)
      return (s % (q + 1)) * period + s / (q + 1);
    int64_t rest = s - longPart;
    return (rest % q) * period + r + rest / q;
  }
};

} // namespace tessera::layout

#endif // TESSERA_CPU_LAYOUT_H
