//===- Executor.cpp - block-sparse attention on the CPU -------------------===//

#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Half.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

using namespace tessera;
using namespace tessera::cpu;
namespace k = tessera::kernel;

Tensor tessera::cpu::contiguous(void *data, DType dtype, int64_t batch,
                                int64_t seq, int64_t heads, int64_t headDim) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.batch = batch;
  t.seq = seq;
  t.heads = heads;
  t.headDim = headDim;
  t.strideHead = headDim;
  t.strideSeq = heads * headDim;
  t.strideBatch = seq * heads * headDim;
  return t;
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Reads `n` elements at `src` (of `dtype`) into floats.
void load(const Tensor &t, int64_t offset, int64_t n, float *dst) {
  switch (t.dtype) {
  case DType::F32: {
    const float *s = static_cast<const float *>(t.data) + offset;
    std::copy(s, s + n, dst);
    return;
  }
  case DType::F16: {
    const uint16_t *s = static_cast<const uint16_t *>(t.data) + offset;
    for (int64_t i = 0; i < n; ++i)
      dst[i] = f16ToFloat(s[i]);
    return;
  }
  case DType::BF16: {
    const uint16_t *s = static_cast<const uint16_t *>(t.data) + offset;
    for (int64_t i = 0; i < n; ++i)
      dst[i] = bf16ToFloat(s[i]);
    return;
  }
  }
}

void store(const Tensor &t, int64_t offset, int64_t n, const float *src) {
  switch (t.dtype) {
  case DType::F32:
    std::copy(src, src + n, static_cast<float *>(t.data) + offset);
    return;
  case DType::F16: {
    uint16_t *d = static_cast<uint16_t *>(t.data) + offset;
    for (int64_t i = 0; i < n; ++i)
      d[i] = floatToF16(src[i]);
    return;
  }
  case DType::BF16: {
    uint16_t *d = static_cast<uint16_t *>(t.data) + offset;
    for (int64_t i = 0; i < n; ++i)
      d[i] = floatToBf16(src[i]);
    return;
  }
  }
}

int64_t offsetOf(const Tensor &t, int64_t b, int64_t s, int64_t h) {
  return b * t.strideBatch + s * t.strideSeq + h * t.strideHead;
}

std::string checkTensor(const Tensor &t, const char *name) {
  std::string n(name);
  if (!t.data)
    return n + " is a null pointer";
  if (t.batch < 1 || t.seq < 1 || t.heads < 1 || t.headDim < 1)
    return n + " has an empty or negative dimension";
  if (t.strideBatch < 0 || t.strideSeq < 0 || t.strideHead < 0)
    return n + " has a negative stride";
  return "";
}

/// The work of one thread: scratch buffers reused across tasks.
struct Worker {
  std::vector<float> q, kt, v, s, acc, m, l;
};

struct Job {
  const k::LayerTable &table;
  const LayerArgs &a;
  int64_t nq, nk, d, numQBlocks, groupSize;
  float scale;
  std::atomic<int64_t> full{0}, partial{0};
};

/// One (batch, launch slot, query block) task.
void runTask(Job &job, Worker &w, int64_t b, int64_t slot, int64_t qb) {
  const LayerArgs &a = job.a;
  const k::LayerTable &t = job.table;
  int64_t d = job.d, nq = job.nq, nk = job.nk;
  int64_t bq = a.blockQ, bk = a.blockK;
  int64_t head = t.computedHead[slot], group = t.headGroup[slot];
  int64_t kvHead = head / job.groupSize;
  const k::Node *nodes = t.nodes + t.groupBegin[group];
  k::i64 count = t.groupBegin[group + 1] - t.groupBegin[group];
  int64_t q0 = qb * bq, q1 = std::min(q0 + bq, nq), rows = q1 - q0;

  for (int64_t i = 0; i < rows; ++i)
    load(a.q, offsetOf(a.q, b, q0 + i, head), d, &w.q[i * d]);
  std::fill(w.acc.begin(), w.acc.begin() + rows * d, 0.0f);
  std::fill(w.m.begin(), w.m.begin() + rows, kNegInf);
  std::fill(w.l.begin(), w.l.begin() + rows, 0.0f);

  k::i64 kLo, kHi;
  k::keyHull(nodes, count, t.data, q0, q1, nq, nk, kLo, kHi);
  int64_t full = 0, partial = 0;
  for (int64_t kb = kLo >= 0 ? kLo / bk : 0; kLo <= kHi && kb * bk <= kHi;
       ++kb) {
    int64_t k0 = kb * bk, k1 = std::min(k0 + bk, nk), cols = k1 - k0;
    k::Tile tile{q0, q1, k0, k1, nq, nk, head, t.numHeads};
    int cls = k::classifyTile(nodes, count, t.data, tile);
    if (cls == k::kEmpty)
      continue;
    (cls == k::kFull ? full : partial) += 1;
    // K transposed [d][cols] and V [cols][d] of this tile, as floats.
    for (int64_t j = 0; j < cols; ++j) {
      load(a.k, offsetOf(a.k, b, k0 + j, kvHead), d, &w.v[j * d]);
      for (int64_t x = 0; x < d; ++x)
        w.kt[x * bk + j] = w.v[j * d + x];
    }
    for (int64_t j = 0; j < cols; ++j)
      load(a.v, offsetOf(a.v, b, k0 + j, kvHead), d, &w.v[j * d]);
    for (int64_t i = 0; i < rows; ++i) {
      float *s = &w.s[i * bk];
      std::fill(s, s + cols, 0.0f);
      const float *qi = &w.q[i * d];
      for (int64_t x = 0; x < d; ++x) {
        float qx = qi[x];
        const float *kx = &w.kt[x * bk];
        for (int64_t j = 0; j < cols; ++j)
          s[j] += qx * kx[j];
      }
      float rowMax = kNegInf;
      for (int64_t j = 0; j < cols; ++j) {
        s[j] *= job.scale;
        if (cls == k::kPartial &&
            !k::allowedPair(nodes, count, t.data, q0 + i, k0 + j, nq, nk,
                            head, t.numHeads))
          s[j] = kNegInf;
        rowMax = std::max(rowMax, s[j]);
      }
      if (rowMax == kNegInf)
        continue; // nothing allowed in this row of the tile
      float mOld = w.m[i], mNew = std::max(mOld, rowMax);
      float correction = std::exp(mOld - mNew); // 0 when mOld is -inf
      float sum = 0;
      for (int64_t j = 0; j < cols; ++j) {
        s[j] = std::exp(s[j] - mNew);
        sum += s[j];
      }
      w.l[i] = w.l[i] * correction + sum;
      w.m[i] = mNew;
      float *acc = &w.acc[i * d];
      for (int64_t x = 0; x < d; ++x)
        acc[x] *= correction;
      for (int64_t j = 0; j < cols; ++j) {
        float p = s[j];
        const float *vj = &w.v[j * d];
        for (int64_t x = 0; x < d; ++x)
          acc[x] += p * vj[x];
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    float *acc = &w.acc[i * d];
    float inv = w.l[i] > 0 ? 1.0f / w.l[i] : 0.0f;
    for (int64_t x = 0; x < d; ++x)
      acc[x] *= inv;
    store(a.o, offsetOf(a.o, b, q0 + i, head), d, acc);
    if (a.lse)
      a.lse[(b * a.q.heads + head) * nq + q0 + i] =
          w.l[i] > 0 ? w.m[i] + std::log(w.l[i]) : kNegInf;
  }
  job.full += full;
  job.partial += partial;
}

} // namespace

std::string tessera::cpu::runLayer(const k::LayerTable &table,
                                   const LayerArgs &a, RunStats *stats) {
  for (auto [t, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"},
                         {&a.o, "o"}})
    if (std::string e = checkTensor(*t, name); !e.empty())
      return e;
  if (a.q.heads != table.numHeads || a.o.heads != table.numHeads)
    return "q and o must have " + std::to_string(table.numHeads) +
           " heads (the layer's), got " + std::to_string(a.q.heads) +
           " and " + std::to_string(a.o.heads);
  if (a.k.heads != a.v.heads || a.k.heads < 1 ||
      table.numHeads % a.k.heads != 0)
    return "k and v must have the same number of heads, dividing the " +
           std::to_string(table.numHeads) + " query heads";
  if (a.k.seq != a.v.seq)
    return "k and v must have the same sequence length";
  if (a.o.seq != a.q.seq)
    return "o must have the query length";
  if (a.q.headDim != a.k.headDim || a.q.headDim != a.v.headDim ||
      a.q.headDim != a.o.headDim)
    return "q, k, v and o must have the same head_dim";
  if (a.q.batch != a.k.batch || a.q.batch != a.v.batch ||
      a.q.batch != a.o.batch)
    return "q, k, v and o must have the same batch size";
  if (a.blockQ < 1 || a.blockK < 1 || a.blockQ > 1024 || a.blockK > 1024)
    return "block sizes must be in [1, 1024]";
  if (!(a.scale >= 0) || std::isinf(a.scale))
    return "scale must be finite and not negative (0 selects 1/sqrt(d))";

  int64_t nq = a.q.seq, d = a.q.headDim;
  std::vector<float> zeros(d, 0.0f);
  // Skipped heads: O = 0 and LSE = -inf.
  std::vector<bool> computed(table.numHeads, false);
  for (int64_t i = 0; i < table.numComputed; ++i)
    computed[table.computedHead[i]] = true;
  for (int64_t b = 0; b < a.q.batch; ++b)
    for (int64_t h = 0; h < table.numHeads; ++h) {
      if (computed[h])
        continue;
      for (int64_t s = 0; s < nq; ++s) {
        store(a.o, offsetOf(a.o, b, s, h), d, zeros.data());
        if (a.lse)
          a.lse[(b * table.numHeads + h) * nq + s] = kNegInf;
      }
    }

  Job job{table, a, nq, a.k.seq, d, (nq + a.blockQ - 1) / a.blockQ,
          table.numHeads / a.k.heads,
          a.scale > 0 ? a.scale : 1.0f / std::sqrt(float(d))};
  int64_t tasks = a.q.batch * table.numComputed * job.numQBlocks;
  int threads = a.numThreads > 0
                    ? a.numThreads
                    : std::max(1u, std::thread::hardware_concurrency());
  threads = int(std::min<int64_t>(threads, std::max<int64_t>(tasks, 1)));
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    Worker w;
    w.q.resize(a.blockQ * d);
    w.kt.resize(d * a.blockK);
    w.v.resize(a.blockK * d);
    w.s.resize(a.blockQ * a.blockK);
    w.acc.resize(a.blockQ * d);
    w.m.resize(a.blockQ);
    w.l.resize(a.blockQ);
    for (int64_t i; (i = next++) < tasks;) {
      int64_t qb = i % job.numQBlocks;
      int64_t rest = i / job.numQBlocks;
      runTask(job, w, rest / table.numComputed, rest % table.numComputed, qb);
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back(work);
  work();
  for (std::thread &th : pool)
    th.join();
  if (stats) {
    stats->tilesTotal = a.q.batch * table.numHeads * job.numQBlocks *
                        ((a.k.seq + a.blockK - 1) / a.blockK);
    stats->tilesFull = job.full;
    stats->tilesPartial = job.partial;
  }
  return "";
}
