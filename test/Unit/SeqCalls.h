//===- SeqCalls.h - per-sequence calls, float64 reference -----*- C++ -*-===//
//
// Shared by AttentionDescTest (the CPU) and EmulatorSeqTest (the `_seq`
// CUDA kernels under the emulator): a float64 reference written from
// docs/patterns.md's definitions of the tiny-mix layer's heads (A-shape,
// multi-diagonal, grid, causal strided shards, shifted groups), evaluated
// at each sequence's positions, and the buffers and tessera_attention_desc
// of a call in each layout (dense, packed, lengths, paged with shuffled
// pages; head ranges; f32 or bf16).
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TEST_SEQCALLS_H
#define TESSERA_TEST_SEQCALLS_H

#include "tessera/tessera.h"

#include "tessera/cpu/Half.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace tessera {
namespace seqcalls {
namespace { // each test file its own copy


/// tiny-mix layer 0 (patterns/tiny-mix.mlir).
constexpr int64_t H = 6, Hkv = 2, G = H / Hkv, D = 64;
constexpr int64_t kDefault = std::numeric_limits<int64_t>::min();
const double kInf = std::numeric_limits<double>::infinity();

int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}
int64_t floorMod(int64_t a, int64_t b) { return a - floorDiv(a, b) * b; }

/// Head h of tiny-mix layer 0 at query position p and key position k.
bool allowed(int64_t h, int64_t p, int64_t k) {
  const int64_t d = k - p;
  switch (h) {
  case 0: // a_shape<sink = 2, before = 4>
    return d <= 0 && (k < 2 || d >= -4);
  case 1: { // multi_diagonal<stride = 8, width = 1>
    int64_t m = floorMod(d, 8);
    return std::min(m, 8 - m) <= 1;
  }
  case 2: // grid<stride = 8, vertical_width = 1, slash_width = 1>
    return floorMod(k, 8) < 1 || floorMod(-d, 8) < 1;
  case 3:
  case 4: // causal and (window<before = 2> or strided_shards<2, block 4>)
    return d <= 0 && (d >= -2 || floorMod(floorDiv(k, 4), 2) == h % 2);
  default: // shifted_groups<size = 8, shift = 4>, head 5 >= H / 2
    return floorDiv(p - 4, 8) == floorDiv(k - 4, 8);
  }
}

/// One sequence: its query rows and keys, and its positions (kDefault:
/// the call passes no array, or this is the default the array would hold).
struct Seq {
  int64_t nq, nk;
  int64_t qStart = kDefault, kStart = kDefault;
};

/// The inputs of a call, per sequence, in no layout: q [nq][H][D],
/// k and v [nk][Hkv][D].
struct Logical {
  std::vector<Seq> seqs;
  std::vector<std::vector<float>> q, k, v;
};

Logical makeLogical(std::vector<Seq> seqs, uint64_t seed, bool bf16 = false) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  auto fill = [&](size_t n) {
    std::vector<float> x(n);
    for (float &e : x)
      e = bf16 ? cpu::bf16ToFloat(cpu::floatToBf16(u(rng))) : u(rng);
    return x;
  };
  Logical l;
  l.seqs = std::move(seqs);
  for (const Seq &s : l.seqs) {
    l.q.push_back(fill(size_t(s.nq * H * D)));
    l.k.push_back(fill(size_t(s.nk * Hkv * D)));
    l.v.push_back(fill(size_t(s.nk * Hkv * D)));
  }
  return l;
}

int64_t keyStart(const Seq &s) { return s.kStart == kDefault ? 0 : s.kStart; }
int64_t queryStart(const Seq &s) {
  return s.qStart == kDefault ? keyStart(s) + s.nk - s.nq : s.qStart;
}

/// float64 attention: o [s][i][h][x], lse [s][h][i].
struct Reference {
  std::vector<std::vector<double>> o, lse;
};

Reference reference(const Logical &l, double scale) {
  Reference r;
  for (size_t s = 0; s < l.seqs.size(); ++s) {
    const Seq &sq = l.seqs[s];
    std::vector<double> o(size_t(sq.nq * H * D), 0.0),
        lse(size_t(H * sq.nq), -kInf);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < sq.nq; ++i) {
        const float *q = &l.q[s][size_t((i * H + h) * D)];
        std::vector<double> score;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < sq.nk; ++j) {
          if (!allowed(h, queryStart(sq) + i, keyStart(sq) + j))
            continue;
          const float *k = &l.k[s][size_t((j * Hkv + h / G) * D)];
          double dot = 0;
          for (int64_t x = 0; x < D; ++x)
            dot += double(q[x]) * double(k[x]);
          score.push_back(dot * scale);
          keys.push_back(j);
        }
        if (keys.empty())
          continue;
        double m = *std::max_element(score.begin(), score.end()), sum = 0;
        for (double &e : score)
          sum += (e = std::exp(e - m));
        for (size_t t = 0; t < keys.size(); ++t) {
          const float *v = &l.v[s][size_t((keys[t] * Hkv + h / G) * D)];
          for (int64_t x = 0; x < D; ++x)
            o[size_t((i * H + h) * D + x)] += score[t] / sum * double(v[x]);
        }
        lse[size_t(h * sq.nq + i)] = m + std::log(sum);
      }
    r.o.push_back(std::move(o));
    r.lse.push_back(std::move(lse));
  }
  return r;
}

enum class QLayout { Dense, Packed };
enum class KLayout { Dense, Lengths, Packed, Paged };

struct Layout {
  QLayout q = QLayout::Dense;
  KLayout k = KLayout::Dense;
  int64_t pageSize = 16;
  int64_t h0 = 0, n = 0; ///< head range (n = 0: every head)
  bool bf16 = false;
  bool lse = true;
};

constexpr float kSentinel = 7.0f; ///< o rows no sequence owns keep it
const float kNaN = std::numeric_limits<float>::quiet_NaN();

/// A call's buffers in a layout, its description, and where each logical
/// output lands.
struct Built {
  Layout lay;
  int64_t heads = H, kvLo = 0, kvHeads = Hkv, rowsQ = 0;
  std::vector<float> q, k, v, o, lse;
  std::vector<uint16_t> qh, kh, vh, oh; ///< the bf16 copies
  std::vector<int32_t> cuQ, cuK, lens, table;
  std::vector<int64_t> qStart, kStart;
  std::vector<int64_t> rowOf; ///< packed: sequence s's first query row
  tessera_attention_desc d;

  size_t oAt(int64_t s, int64_t i, int64_t hl) const {
    int64_t row = lay.q == QLayout::Packed ? rowOf[size_t(s)] + i
                                           : s * rowsQ + i;
    return size_t((row * heads + hl) * D);
  }
  size_t lseAt(int64_t s, int64_t i, int64_t hl) const {
    if (lay.q == QLayout::Packed)
      return size_t(hl * rowsQ + rowOf[size_t(s)] + i);
    return size_t((s * heads + hl) * rowsQ + i);
  }
  float out(size_t at) const {
    return lay.bf16 ? cpu::bf16ToFloat(oh[at]) : o[at];
  }
};

tessera_tensor tensorOf(void *data, bool bf16, int64_t b, int64_t s,
                        int64_t h) {
  return tessera_tensor{data,      bf16 ? TESSERA_DTYPE_BF16 : TESSERA_DTYPE_F32,
                        b,         s,
                        h,         D,
                        s * h * D, h * D,
                        D};
}

/// Copies row j (kv heads of the range) of sequence s's keys and values
/// to `dst` row `row` of a [rows][kvHeads][D] buffer.
void copyKeyRow(const Logical &l, const Built &b, int64_t s, int64_t j,
                int64_t row, std::vector<float> &k, std::vector<float> &v) {
  for (int64_t h = 0; h < b.kvHeads; ++h)
    for (int64_t x = 0; x < D; ++x) {
      size_t from = size_t((j * Hkv + b.kvLo + h) * D + x);
      size_t to = size_t((row * b.kvHeads + h) * D + x);
      k[to] = l.k[size_t(s)][from];
      v[to] = l.v[size_t(s)][from];
    }
}

void buildQueries(const Logical &l, Built &b) {
  const int64_t S = int64_t(l.seqs.size());
  int64_t rows = 0;
  for (const Seq &s : l.seqs)
    rows += s.nq;
  if (b.lay.q == QLayout::Packed) {
    b.rowsQ = rows + 3; // rows no sequence owns
    b.cuQ.push_back(0);
    for (const Seq &s : l.seqs) {
      b.rowOf.push_back(b.cuQ.back());
      b.cuQ.push_back(b.cuQ.back() + int32_t(s.nq));
    }
  } else {
    b.rowsQ = l.seqs[0].nq;
  }
  const int64_t batches = b.lay.q == QLayout::Packed ? 1 : S;
  b.q.assign(size_t(batches * b.rowsQ * b.heads * D), kNaN);
  b.o.assign(b.q.size(), kSentinel);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < l.seqs[size_t(s)].nq; ++i)
      for (int64_t hl = 0; hl < b.heads; ++hl)
        std::copy_n(&l.q[size_t(s)][size_t((i * H + b.lay.h0 + hl) * D)], D,
                    &b.q[b.oAt(s, i, hl)]);
  b.lse.assign(b.lay.q == QLayout::Packed ? size_t(b.heads * b.rowsQ)
                                          : size_t(S * b.heads * b.rowsQ),
               kSentinel);
  b.d.q = tensorOf(b.q.data(), false, batches, b.rowsQ, b.heads);
  b.d.o = tensorOf(b.o.data(), false, batches, b.rowsQ, b.heads);
  if (b.lay.q == QLayout::Packed) {
    b.d.cu_seqlens_q = b.cuQ.data();
    b.d.num_seqs = S;
  }
}

void buildKeys(const Logical &l, Built &b, std::mt19937_64 &rng) {
  const int64_t S = int64_t(l.seqs.size());
  int64_t most = 0, total = 0;
  for (const Seq &s : l.seqs)
    most = std::max(most, s.nk), total += s.nk;
  const int64_t kvRow = b.kvHeads * D;
  if (b.lay.k == KLayout::Paged) {
    const int64_t ps = b.lay.pageSize;
    int64_t maxPages = 1, pages = 3; // three spare pages
    for (const Seq &s : l.seqs) {
      maxPages = std::max(maxPages, (s.nk + ps - 1) / ps);
      pages += (s.nk + ps - 1) / ps;
    }
    std::vector<int32_t> order(static_cast<size_t>(pages));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const int64_t stride = maxPages + 2;
    b.table.assign(size_t(S * stride), -5); // entries past a sequence's
    b.k.assign(size_t(pages * ps * kvRow), kNaN); // unused rows: NaN
    b.v = b.k;
    size_t next = 0;
    for (int64_t s = 0; s < S; ++s) {
      b.lens.push_back(int32_t(l.seqs[size_t(s)].nk));
      for (int64_t j = 0; j < l.seqs[size_t(s)].nk; ++j) {
        if (j % ps == 0)
          b.table[size_t(s * stride + j / ps)] = order[next++];
        int64_t page = b.table[size_t(s * stride + j / ps)];
        copyKeyRow(l, b, s, j, page * ps + j % ps, b.k, b.v);
      }
    }
    b.d.k = tensorOf(b.k.data(), false, pages, ps, b.kvHeads);
    b.d.block_table = b.table.data();
    b.d.max_pages_per_seq = maxPages;
    b.d.block_table_stride = stride;
    b.d.seq_lens_k = b.lens.data();
  } else if (b.lay.k == KLayout::Packed) {
    b.k.assign(size_t((total + 2) * kvRow), kNaN);
    b.v = b.k;
    b.cuK.push_back(0);
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t j = 0; j < l.seqs[size_t(s)].nk; ++j)
        copyKeyRow(l, b, s, j, b.cuK.back() + j, b.k, b.v);
      b.cuK.push_back(b.cuK.back() + int32_t(l.seqs[size_t(s)].nk));
    }
    b.d.k = tensorOf(b.k.data(), false, 1, total + 2, b.kvHeads);
    b.d.cu_seqlens_k = b.cuK.data();
    b.d.num_seqs = S;
  } else {
    // Dense: every sequence has `most` rows; with lengths, those past a
    // sequence's length hold NaN (an unfilled static cache).
    const int64_t rows = b.lay.k == KLayout::Lengths ? most + 5 : most;
    b.k.assign(size_t(S * rows * kvRow), kNaN);
    b.v = b.k;
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t j = 0; j < l.seqs[size_t(s)].nk; ++j)
        copyKeyRow(l, b, s, j, s * rows + j, b.k, b.v);
      b.lens.push_back(int32_t(l.seqs[size_t(s)].nk));
    }
    b.d.k = tensorOf(b.k.data(), false, S, rows, b.kvHeads);
    if (b.lay.k == KLayout::Lengths)
      b.d.seq_lens_k = b.lens.data();
  }
  b.d.v = b.d.k;
  b.d.v.data = b.v.data();
}

/// Converts the buffers to bf16 and points the description at the copies.
void toBf16(Built &b) {
  auto conv = [](const std::vector<float> &f, std::vector<uint16_t> &h) {
    h.resize(f.size());
    for (size_t i = 0; i < f.size(); ++i)
      h[i] = cpu::floatToBf16(f[i]);
  };
  conv(b.q, b.qh), conv(b.k, b.kh), conv(b.v, b.vh), conv(b.o, b.oh);
  for (auto [t, data] : {std::pair{&b.d.q, (void *)b.qh.data()},
                         {&b.d.k, (void *)b.kh.data()},
                         {&b.d.v, (void *)b.vh.data()},
                         {&b.d.o, (void *)b.oh.data()}}) {
    t->data = data;
    t->dtype = TESSERA_DTYPE_BF16;
  }
}

Built build(const Logical &l, const Layout &lay, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  Built b;
  b.lay = lay;
  // As tessera_attention_desc_init (the emulator's tests link no runtime).
  b.d = tessera_attention_desc{};
  b.d.struct_size = sizeof(tessera_attention_desc);
  if (lay.n) {
    b.heads = lay.n;
    b.kvLo = lay.h0 / G;
    b.kvHeads = (lay.h0 + lay.n - 1) / G - b.kvLo + 1;
    b.d.head_start = lay.h0;
    b.d.head_count = lay.n;
  }
  buildQueries(l, b);
  buildKeys(l, b, rng);
  bool anyQ = false, anyK = false;
  for (const Seq &s : l.seqs) {
    anyQ |= s.qStart != kDefault;
    anyK |= s.kStart != kDefault;
  }
  for (const Seq &s : l.seqs) {
    b.qStart.push_back(queryStart(s));
    b.kStart.push_back(keyStart(s));
  }
  b.d.q_start = anyQ ? b.qStart.data() : nullptr;
  b.d.k_start = anyK ? b.kStart.data() : nullptr;
  b.d.lse = lay.lse ? b.lse.data() : nullptr;
  if (lay.bf16)
    toBf16(b);
  return b;
}

/// Tolerances of a comparison with the reference: |o - ref| <= out, and
/// |lse - ref| <= lseAbs + lseRel |ref| (an LSE of -inf must be -inf).
struct Tolerance {
  double out, lseAbs, lseRel;
};

/// The number of output and LSE elements of `b` (the tensors' heads of
/// every sequence of `l`) off the reference `r`, plus packed rows no
/// sequence owns that lost their sentinel; `report(message)` is called for
/// the first five.
template <class Report>
int64_t countMismatches(const Logical &l, const Built &b, const Reference &r,
                        const Tolerance &tol, Report report) {
  int64_t bad = 0;
  auto fail = [&](const std::string &message) {
    if (bad++ < 5)
      report(message);
  };
  for (size_t s = 0; s < l.seqs.size(); ++s)
    for (int64_t i = 0; i < l.seqs[s].nq; ++i)
      for (int64_t hl = 0; hl < b.heads; ++hl) {
        const int64_t h = b.lay.h0 + hl;
        const std::string where = "sequence " + std::to_string(s) + " row " +
                                  std::to_string(i) + " head " +
                                  std::to_string(h);
        for (int64_t x = 0; x < D; ++x) {
          double want = r.o[s][size_t((i * H + h) * D + x)];
          float got = b.out(b.oAt(int64_t(s), i, hl) + size_t(x));
          if (!(std::abs(got - want) <= tol.out))
            fail("o: " + where + " element " + std::to_string(x) + ": " +
                 std::to_string(got) + " vs " + std::to_string(want));
        }
        if (!b.lay.lse)
          continue;
        double want = r.lse[s][size_t(h * l.seqs[s].nq + i)];
        float got = b.lse[b.lseAt(int64_t(s), i, hl)];
        if (!(want == -kInf ? got == -kInf
                            : std::abs(got - want) <=
                                  tol.lseAbs + tol.lseRel * std::abs(want)))
          fail("lse: " + where + ": " + std::to_string(got) + " vs " +
               std::to_string(want));
      }
  if (b.lay.q == QLayout::Packed)
    for (int64_t row = b.cuQ.back(); row < b.rowsQ; ++row)
      if (b.out(size_t(row * b.heads * D)) != kSentinel)
        fail("packed row " + std::to_string(row) + " belongs to no sequence");
  return bad;
}

} // namespace
} // namespace seqcalls
} // namespace tessera

#endif // TESSERA_TEST_SEQCALLS_H
