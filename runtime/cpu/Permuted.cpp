//===- Permuted.cpp - a head group run in a permuted token order ----------===//
//
// Gather, walk, scatter: the key and value rows of one (sequence, kv head)
// are copied into the permuted order once (an explicit gather pass rather
// than an index map in every tile load: a key block is then read
// contiguously by every query block that visits it, and its keys are
// stored transposed for the S = Q K^T loop), each query block loads its
// own rows through the permutation, walks its runs, and writes each output
// row back to its original position.
//
//===----------------------------------------------------------------------===//

#include "tessera/cpu/Permuted.h"
#include "tessera/cpu/Layout.h"

#include "TensorIO.h"
#include "ThreadPool.h"
#include "VecMath.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

using namespace tessera;
using namespace tessera::cpu;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// "" if the call is one runPermutedGroup takes, else why not.
std::string checkCall(const kernel::LayerTable &table, int64_t group,
                      const layout::PeriodTranspose &perm,
                      const LayerArgs &a) {
  int64_t numGroups = 0;
  for (int64_t i = 0; i < table.numComputed; ++i)
    numGroups = std::max<int64_t>(numGroups, table.headGroup[i] + 1);
  if (group < 0 || group >= numGroups)
    return "group " + std::to_string(group) + " is not one of the layer's " +
           std::to_string(numGroups) + " computed groups";
  if (perm.period < 2)
    return "period must be at least 2, got " + std::to_string(perm.period);
  if (perm.prefix < 0)
    return "prefix must not be negative, got " + std::to_string(perm.prefix);
  if (std::string e = layout::layoutReason(perm); !e.empty())
    return e;
  const Sequences &s = a.seqs;
  if (s.count != 0 || s.cuQ || s.cuK || s.lensK || s.pages || s.qStart ||
      s.kStart || a.headStart != 0)
    return "a permuted group runs dense calls only (no packed, paged or "
           "positioned sequences, headStart 0)";
  for (auto [t, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"},
                         {&a.o, "o"}})
    if (std::string e = io::checkTensor(*t, name); !e.empty())
      return e;
  int64_t kvHeads = a.numKvHeads ? a.numKvHeads : a.k.heads;
  if (a.q.heads != table.numHeads || a.o.heads != a.q.heads ||
      a.o.seq != a.q.seq || a.o.batch != a.q.batch)
    return "q and o must hold the layer's " + std::to_string(table.numHeads) +
           " heads with the same batch and length";
  if (kvHeads < 1 || a.q.heads % kvHeads != 0 || a.k.heads != kvHeads ||
      a.v.heads != kvHeads || a.k.seq != a.v.seq ||
      a.k.batch != a.q.batch || a.v.batch != a.q.batch)
    return "k and v must hold the layer's kv heads (dividing its heads) "
           "with one length and q's batch";
  int64_t d = a.q.headDim;
  if (a.k.headDim != d || a.v.headDim != d || a.o.headDim != d)
    return "q, k, v and o must have one head_dim";
  return io::checkBlocksAndScale(a.blockQ, a.blockK, a.scale);
}

/// The walk of every query block (Permuted.h).
using BlockRuns = PermutedWalk;

/// The runs from the closed form (layout::PermutedRuns).
void closedFormRuns(const layout::PermutedRuns &pr, BlockRuns &out) {
  for (int64_t i = 0; i < pr.queryBlocks(); ++i) {
    pr.runs(i, out.runs);
    out.start.push_back(int64_t(out.runs.size()));
  }
}

/// The bit masks of the partial tiles of a walk classified pair by pair:
/// the pairs of its partial tiles evaluated a second time, so that the
/// walk's later calls (WalkCache) test none.
void partialMasks(const kernel::Node *nodes, int64_t count,
                  const kernel::i64 *data, const std::vector<int64_t> &qTok,
                  const std::vector<int64_t> &kTok, int64_t bq, int64_t bk,
                  int64_t head, int64_t numHeads, BlockRuns &out) {
  int64_t nq = qTok.size(), nk = kTok.size();
  out.words = (bk + 63) / 64;
  out.maskAt.assign(out.runs.size(), -1);
  for (int64_t i = 0; i + 1 < int64_t(out.start.size()); ++i)
    for (int64_t x = out.start[i]; x < out.start[i + 1]; ++x) {
      const layout::PermutedRun &run = out.runs[x];
      if (run.full)
        continue;
      out.maskAt[x] = int64_t(out.masks.size());
      out.masks.resize(out.masks.size() +
                       (run.end - run.begin) * bq * out.words);
      for (int64_t j = run.begin; j < run.end; ++j) {
        uint64_t *tile = out.masks.data() + out.maskAt[x] +
                         (j - run.begin) * bq * out.words;
        for (int64_t s = i * bq; s < std::min(nq, (i + 1) * bq); ++s)
          for (int64_t t = j * bk; t < std::min(nk, (j + 1) * bk); ++t)
            if (kernel::allowedPair(nodes, count, data, qTok[s], kTok[t], nq,
                                    nk, head, numHeads))
              tile[(s - i * bq) * out.words + (t - j * bk) / 64] |=
                  uint64_t(1) << ((t - j * bk) % 64);
      }
    }
}

/// The runs from classifying every pair once at its original positions: for
/// programs that are not residue-only (bands, listed ranges, ...).
void pairwiseRuns(const kernel::Node *nodes, int64_t count,
                  const kernel::i64 *data, const std::vector<int64_t> &qTok,
                  const std::vector<int64_t> &kTok, int64_t bq, int64_t bk,
                  int64_t head, int64_t numHeads, BlockRuns &out) {
  int64_t nq = qTok.size(), nk = kTok.size();
  int64_t qBlocks = (nq + bq - 1) / bq, kBlocks = (nk + bk - 1) / bk;
  std::vector<int64_t> allowed(qBlocks * kBlocks, 0);
  for (int64_t s = 0; s < nq; ++s)
    for (int64_t t = 0; t < nk; ++t)
      allowed[(s / bq) * kBlocks + t / bk] +=
          kernel::allowedPair(nodes, count, data, qTok[s], kTok[t], nq, nk,
                              head, numHeads);
  for (int64_t i = 0; i < qBlocks; ++i) {
    for (int64_t j = 0; j < kBlocks; ++j) {
      int64_t pairs = std::min(bq, nq - i * bq) * std::min(bk, nk - j * bk);
      int64_t c = allowed[i * kBlocks + j];
      if (c == 0)
        continue;
      bool full = c == pairs;
      if (!out.runs.empty() && out.runs.back().end == j &&
          out.runs.back().full == full &&
          int64_t(out.runs.size()) > out.start.back())
        ++out.runs.back().end;
      else
        out.runs.push_back({j, j + 1, full});
    }
    out.start.push_back(int64_t(out.runs.size()));
  }
  partialMasks(nodes, count, data, qTok, kTok, bq, bk, head, numHeads, out);
}

/// What a walk classified pair by pair depends on: the group's program
/// (its nodes and the data they slice), the layout, the lengths, the tiles
/// and the head.
struct WalkKey {
  std::vector<kernel::i64> program; ///< the nodes' words, then their data
  std::vector<int64_t> shape;       ///< period, prefix, nq, nk, bq, bk, ...

  bool operator==(const WalkKey &o) const {
    return program == o.program && shape == o.shape;
  }
};

WalkKey walkKey(const kernel::Node *nodes, int64_t count,
                const kernel::i64 *data, const layout::PeriodTranspose &perm,
                std::vector<int64_t> shape) {
  WalkKey key;
  key.program.resize(count * (sizeof(kernel::Node) / sizeof(kernel::i64)));
  std::memcpy(key.program.data(), nodes, count * sizeof(kernel::Node));
  for (int64_t i = 0; i < count; ++i)
    key.program.insert(key.program.end(), data + nodes[i].dataBegin,
                       data + nodes[i].dataBegin + nodes[i].dataSize);
  key.shape = {perm.period, perm.prefix};
  key.shape.insert(key.shape.end(), perm.kept.begin(), perm.kept.end());
  key.shape.push_back(int64_t(perm.kept.size()));
  key.shape.insert(key.shape.end(), shape.begin(), shape.end());
  return key;
}

/// The last few pair-by-pair walks, kept across calls: an engine repeats
/// its shapes, and classifying every pair costs O(Nq * Nk) predicate calls
/// (seconds at 16K tokens) where the walk itself is small.
class WalkCache {
public:
  bool find(const WalkKey &key, BlockRuns &out) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &[k, walk] : entries_)
      if (k == key) {
        out = walk;
        return true;
      }
    return false;
  }

  void add(WalkKey key, const BlockRuns &walk) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.emplace_back(std::move(key), walk);
    if (entries_.size() > kEntries)
      entries_.pop_front();
  }

private:
  static constexpr size_t kEntries = 16;
  std::mutex mutex_;
  std::deque<std::pair<WalkKey, BlockRuns>> entries_;
};

WalkCache &walkCache() {
  static WalkCache cache;
  return cache;
}

/// Keys and values of one (sequence, kv head) in the permuted order as
/// floats, zero past Nk: keys transposed per key block (kT[(j * d + e) *
/// bkPad + t] is element e of slot j * bk + t), values row-major in rows of
/// dPad, so that both products run on the executor's microkernel
/// (vec::gemm, whose column counts are multiples of its vector width).
struct KvRows {
  std::vector<float> kT, v;
};

/// Everything the tasks share.
struct Job {
  const LayerArgs &a;
  const kernel::Node *nodes;
  int64_t count;
  const kernel::i64 *data;
  std::vector<int64_t> qTok, kTok, heads, kvHeads;
  BlockRuns walk;
  std::vector<KvRows> kv; ///< per (batch entry, index in kvHeads)
  int64_t nq, nk, d, perKv, numHeads, bq, bk;
  int64_t bkPad, dPad; ///< bk and d rounded up to the vector width
  float scale;
  /// A closed-form walk's relation R as bits (row residue a, key residue c
  /// at a * period + c), for its partial tiles; empty: test each pair.
  std::vector<uint64_t> residueBits;
  int64_t period = 0;

  bool residueAllowed(int64_t q, int64_t k) const {
    int64_t a = kernel::floorMod(q + nk - nq, period), c = k % period;
    int64_t bit = a * period + c;
    return residueBits[bit / 64] >> (bit % 64) & 1;
  }

  const KvRows &rows(int64_t b, int64_t h) const {
    int64_t kvh = h / perKv;
    size_t at = std::lower_bound(kvHeads.begin(), kvHeads.end(), kvh) -
                kvHeads.begin();
    return kv[b * kvHeads.size() + at];
  }
};

/// Fills job.kv[task]: batch entry task / kvHeads, kv head kvHeads[...].
void gatherKv(Job &job, int64_t task) {
  int64_t b = task / int64_t(job.kvHeads.size());
  int64_t kvh = job.kvHeads[task % job.kvHeads.size()];
  int64_t d = job.d, bk = job.bk, kBlocks = (job.nk + bk - 1) / bk;
  KvRows &r = job.kv[task];
  r.kT.assign(kBlocks * d * job.bkPad, 0.0f);
  r.v.assign(kBlocks * bk * job.dPad, 0.0f);
  std::vector<float> row(d);
  for (int64_t t = 0; t < job.nk; ++t) {
    io::load(job.a.k, io::offsetOf(job.a.k, b, job.kTok[t], kvh), d,
             row.data());
    float *col = r.kT.data() + (t / bk) * d * job.bkPad + t % bk;
    for (int64_t e = 0; e < d; ++e)
      col[e * job.bkPad] = row[e];
    io::load(job.a.v, io::offsetOf(job.a.v, b, job.kTok[t], kvh), d,
             r.v.data() + t * job.dPad);
  }
}

/// One thread's buffers for a query block: Q (rows x d), S and P (rows x
/// bkPad), O (rows x dPad), the running max and sum.
struct Scratch {
  std::vector<float> q, s, o, m, l;
};

/// S = scale * Q K^T for the block's rows against key block j; the padding
/// columns and, on a partial tile, the masked pairs at -inf.
void scores(const Job &job, const KvRows &kv, int64_t head, int64_t s0,
            int64_t rows, int64_t j, bool full, const uint64_t *mask,
            Scratch &w) {
  int64_t bk = job.bk, ld = job.bkPad;
  int64_t cols = std::min(bk, job.nk - j * bk);
  vec::gemm(w.q.data(), job.d, kv.kT.data() + j * job.d * ld, ld,
            w.s.data(), ld, rows, ld, job.d, /*accumulate=*/false);
  for (int64_t r = 0; r < rows; ++r) {
    float *sr = w.s.data() + r * ld;
    for (int64_t t = 0; t < cols; ++t)
      sr[t] *= job.scale;
    std::fill(sr + cols, sr + ld, kNegInf);
    if (mask) // the walk's own bits: no predicate
      for (int64_t t = 0; t < cols; ++t) {
        if (!(mask[r * job.walk.words + t / 64] >> (t % 64) & 1))
          sr[t] = kNegInf;
      }
    else if (!full && !job.residueBits.empty())
      for (int64_t t = 0; t < cols; ++t) {
        if (!job.residueAllowed(job.qTok[s0 + r], job.kTok[j * bk + t]))
          sr[t] = kNegInf;
      }
    else if (!full)
      for (int64_t t = 0; t < cols; ++t)
        if (!kernel::allowedPair(job.nodes, job.count, job.data,
                                 job.qTok[s0 + r], job.kTok[j * bk + t],
                                 job.nq, job.nk, head, job.numHeads))
          sr[t] = kNegInf;
  }
}

/// The online softmax of the block's rows over key block j (S becomes P)
/// and O += P V.
TESSERA_CPU_CLONES
void accumulate(const Job &job, const KvRows &kv, int64_t rows, int64_t j,
                Scratch &w) {
  int64_t ld = job.bkPad, dPad = job.dPad;
  for (int64_t r = 0; r < rows; ++r) {
    float *sr = w.s.data() + r * ld;
    float mt = *std::max_element(sr, sr + ld);
    float mNew = std::max(w.m[r], mt);
    if (mNew == kNegInf) { // nothing allowed yet: P = 0 (never exp(nan))
      std::fill(sr, sr + ld, 0.0f);
      continue;
    }
    float shrink = w.m[r] == kNegInf ? 0.0f : std::exp(w.m[r] - mNew);
    float sum = 0;
    for (int64_t t = 0; t < ld; t += vec::kLanes) { // exp is 0 at -inf
      vec::Vec p = vec::expVec(vec::loadVec(sr + t) - mNew);
      vec::storeVec(sr + t, p);
      sum += vec::horizontalSum(p);
    }
    float *orow = w.o.data() + r * dPad;
    for (int64_t e = 0; e < dPad; ++e)
      orow[e] *= shrink;
    w.l[r] = w.l[r] * shrink + sum;
    w.m[r] = mNew;
  }
  vec::gemm(w.s.data(), ld, kv.v.data() + j * job.bk * dPad, dPad,
            w.o.data(), dPad, rows, dPad, job.bk, /*accumulate=*/true);
}

/// Query block i of head h of batch entry b: load, walk, write back.
void runBlock(const Job &job, int64_t b, int64_t h, int64_t i, Scratch &w) {
  int64_t d = job.d, s0 = i * job.bq;
  int64_t rows = std::min(job.bq, job.nq - s0);
  w.q.resize(rows * d);
  w.s.resize(rows * job.bkPad);
  w.o.assign(rows * job.dPad, 0.0f);
  w.m.assign(rows, kNegInf);
  w.l.assign(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    io::load(job.a.q, io::offsetOf(job.a.q, b, job.qTok[s0 + r], h), d,
             w.q.data() + r * d);
  const KvRows &kv = job.rows(b, h);
  for (int64_t x = job.walk.start[i]; x < job.walk.start[i + 1]; ++x) {
    const layout::PermutedRun &run = job.walk.runs[x];
    for (int64_t j = run.begin; j < run.end; ++j) {
      scores(job, kv, h, s0, rows, j, run.full,
             run.full ? nullptr : job.walk.mask(x, j, job.bq), w);
      accumulate(job, kv, rows, j, w);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float *orow = w.o.data() + r * job.dPad;
    float lse = kNegInf; // no allowed key: O = 0, LSE = -inf
    if (w.l[r] > 0) {
      for (int64_t e = 0; e < d; ++e)
        orow[e] /= w.l[r];
      lse = w.m[r] + std::log(w.l[r]);
    }
    // Scatter: permuted row s0 + r is original query row qTok[s0 + r].
    int64_t row = job.qTok[s0 + r];
    io::store(job.a.o, io::offsetOf(job.a.o, b, row, h), d, orow);
    if (job.a.lse)
      job.a.lse[(b * job.a.q.heads + h) * job.nq + row] = lse;
  }
}

/// Fills job.residueBits with the closed form's relation R (P^2 bits, for
/// periods up to kMaxRelation): a partial tile then tests a bit per pair
/// instead of the predicate.
void residueRelation(Job &job, int64_t head) {
  constexpr int64_t kMaxRelation = 8192; // 8 MiB of bits
  int64_t p = job.period;
  if (p > kMaxRelation)
    return;
  job.residueBits.assign((p * p + 63) / 64, 0);
  for (int64_t a = 0; a < p; ++a)
    for (auto [lo, hi] : layout::keyResidues(job.nodes, job.count, p, a, head))
      for (int64_t c = lo; c < hi; ++c)
        job.residueBits[(a * p + c) / 64] |= uint64_t(1) << ((a * p + c) % 64);
}

/// Runs `tasks` calls of f(task) on the call's threads, an atomic counter
/// handing them out.
template <typename F>
void parallelFor(const LayerArgs &a, int64_t tasks, F &&f) {
  int threads = a.numThreads > 0
                    ? a.numThreads
                    : int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, tasks)));
  ThreadPool local; // no pool given: threads for this call only
  ThreadPool &pool = a.pool ? *a.pool : local;
  std::atomic<int64_t> next{0};
  pool.run(threads, [&] {
    for (int64_t t; (t = next++) < tasks;)
      f(t);
  });
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

/// The walk of `head`'s program in `perm` (qTok and kTok: the tokens of
/// the slots): closed-form runs where layout::closedFormReason gives none
/// (returned ""), else every pair classified (the reason returned); the
/// partial tiles' bit masks with every walk but a closed form without
/// prefix (whose partial tiles the CPU tests by its residue relation),
/// and with that one too when `masks`. Walks with masks are kept
/// (WalkCache).
std::string walkOf(const kernel::Node *nodes, int64_t count,
                   const kernel::i64 *data, const layout::PeriodTranspose &perm,
                   int64_t head, int64_t numHeads,
                   const std::vector<int64_t> &qTok,
                   const std::vector<int64_t> &kTok, int64_t bq, int64_t bk,
                   bool masks, PermutedWalk &walk) {
  const int64_t nq = int64_t(qTok.size()), nk = int64_t(kTok.size());
  std::string why =
      layout::closedFormReason(nodes, count, data, perm, head, nq, nk);
  if (why.empty() && perm.prefix == 0 && !masks) {
    closedFormRuns({nodes, count, perm, nq, nk, bq, bk, head}, walk);
    return why;
  }
  WalkKey key =
      walkKey(nodes, count, data, perm, {nq, nk, bq, bk, head, numHeads});
  if (walkCache().find(key, walk))
    return why;
  if (why.empty()) { // closed-form runs, their partial masks
    closedFormRuns({nodes, count, perm, nq, nk, bq, bk, head, data}, walk);
    partialMasks(nodes, count, data, qTok, kTok, bq, bk, head, numHeads, walk);
  } else {
    pairwiseRuns(nodes, count, data, qTok, kTok, bq, bk, head, numHeads, walk);
  }
  walkCache().add(std::move(key), walk);
  return why;
}

/// What the head-dependent leaves of a group's program read of head `h`
/// (strided shards' shard, shifted groups' shift): heads with equal keys
/// have equal masks, hence one walk.
std::vector<int64_t> headMaskKey(const kernel::Node *nodes, int64_t count,
                                 int64_t h, int64_t numHeads) {
  std::vector<int64_t> key;
  for (int64_t i = 0; i < count; ++i) {
    if (nodes[i].kind == kernel::kShards)
      key.push_back(kernel::floorMod(h + nodes[i].c, nodes[i].b));
    else if (nodes[i].kind == kernel::kGroups)
      key.push_back(h >= numHeads / 2);
  }
  return key;
}

/// The computed heads of group `group`, split into classes of equal masks
/// (headMaskKey), in head order within each class.
std::vector<std::vector<int64_t>> headClasses(const kernel::LayerTable &table,
                                              int64_t group) {
  const kernel::Node *nodes = table.nodes + table.groupBegin[group];
  int64_t count = table.groupBegin[group + 1] - table.groupBegin[group];
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> classes;
  for (int64_t i = 0; i < table.numComputed; ++i) {
    if (table.headGroup[i] != group)
      continue;
    int64_t h = table.computedHead[i];
    std::vector<int64_t> key = headMaskKey(nodes, count, h, table.numHeads);
    auto it = std::find_if(classes.begin(), classes.end(),
                           [&](const auto &c) { return c.first == key; });
    if (it == classes.end())
      classes.push_back({std::move(key), {h}});
    else
      it->second.push_back(h);
  }
  std::vector<std::vector<int64_t>> out;
  for (auto &c : classes)
    out.push_back(std::move(c.second));
  return out;
}

std::string runHeads(const kernel::LayerTable &table, int64_t group,
                     const layout::PeriodTranspose &perm, const LayerArgs &a,
                     const std::vector<int64_t> &heads, RunStats *stats,
                     PermutedInfo *info);

} // namespace

std::string cpu::runPermutedGroup(const kernel::LayerTable &table,
                                  int64_t group,
                                  const layout::PeriodTranspose &perm,
                                  const LayerArgs &a, RunStats *stats,
                                  PermutedInfo *info) {
  auto t0 = std::chrono::steady_clock::now();
  if (std::string e = checkCall(table, group, perm, a); !e.empty())
    return "runPermutedGroup: " + e;
  // Heads whose masks differ (strided shards, shifted groups) walk apart:
  // one walk a class of equal masks.
  PermutedInfo total;
  total.closedForm = true;
  for (const std::vector<int64_t> &heads : headClasses(table, group)) {
    PermutedInfo one;
    if (std::string e = runHeads(table, group, perm, a, heads, stats, &one);
        !e.empty())
      return e;
    total.closedForm = total.closedForm && one.closedForm;
    if (total.why.empty())
      total.why = one.why;
    total.runsSeconds += one.runsSeconds;
    total.gatherSeconds += one.gatherSeconds;
  }
  total.totalSeconds = secondsSince(t0);
  if (info)
    *info = total;
  return "";
}

namespace {

/// runPermutedGroup for heads `heads` of the group, whose masks are equal.
std::string runHeads(const kernel::LayerTable &table, int64_t group,
                     const layout::PeriodTranspose &perm, const LayerArgs &a,
                     const std::vector<int64_t> &heads, RunStats *stats,
                     PermutedInfo *info) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t kvHeadCount = a.numKvHeads ? a.numKvHeads : a.k.heads;
  Job job{a, table.nodes + table.groupBegin[group],
          table.groupBegin[group + 1] - table.groupBegin[group], table.data};
  job.nq = a.q.seq;
  job.nk = a.k.seq;
  job.d = a.q.headDim;
  job.perKv = a.q.heads / kvHeadCount;
  job.numHeads = table.numHeads;
  job.bq = a.blockQ;
  job.bk = a.blockK;
  auto roundUp = [](int64_t x) {
    return (x + vec::kLanes - 1) / vec::kLanes * vec::kLanes;
  };
  job.period = perm.period;
  job.bkPad = roundUp(job.bk);
  job.dPad = roundUp(job.d);
  job.scale = a.scale > 0 ? a.scale : 1.0f / std::sqrt(float(job.d));
  job.qTok.resize(job.nq);
  job.kTok.resize(job.nk);
  for (int64_t s = 0; s < job.nq; ++s)
    job.qTok[s] = perm.token(s, job.nq);
  for (int64_t s = 0; s < job.nk; ++s)
    job.kTok[s] = perm.token(s, job.nk);
  job.heads = heads;
  for (int64_t h : job.heads)
    job.kvHeads.push_back(h / job.perKv);
  job.kvHeads.erase(std::unique(job.kvHeads.begin(), job.kvHeads.end()),
                    job.kvHeads.end());

  // The heads have identical masks (runPermutedGroup's classes): the first
  // one's walk, residue relation and bit masks serve them all.
  int64_t head = job.heads.front();
  auto tRuns = std::chrono::steady_clock::now();
  std::string why = walkOf(job.nodes, job.count, job.data, perm, head,
                           table.numHeads, job.qTok, job.kTok, job.bq, job.bk,
                           /*masks=*/false, job.walk);
  if (why.empty() && job.walk.maskAt.empty())
    residueRelation(job, head);

  double runsSeconds = secondsSince(tRuns);
  auto tGather = std::chrono::steady_clock::now();
  job.kv.resize(a.q.batch * job.kvHeads.size());
  parallelFor(a, int64_t(job.kv.size()),
              [&](int64_t t) { gatherKv(job, t); });
  double gatherSeconds = secondsSince(tGather);

  int64_t qBlocks = (job.nq + job.bq - 1) / job.bq;
  int64_t perSeq = int64_t(job.heads.size()) * qBlocks;
  parallelFor(a, a.q.batch * perSeq, [&](int64_t t) {
    thread_local Scratch w;
    int64_t b = t / perSeq, rest = t % perSeq;
    runBlock(job, b, job.heads[rest / qBlocks], rest % qBlocks, w);
  });

  if (stats) {
    int64_t kBlocks = (job.nk + job.bk - 1) / job.bk, full = 0, visited = 0;
    for (const layout::PermutedRun &r : job.walk.runs) {
      visited += r.end - r.begin;
      full += r.full ? r.end - r.begin : 0;
    }
    int64_t copies = a.q.batch * int64_t(job.heads.size());
    stats->tilesTotal += copies * qBlocks * kBlocks;
    stats->tilesFull += copies * full;
    stats->tilesPartial += copies * (visited - full);
  }
  if (info) {
    info->closedForm = why.empty();
    info->why = why;
    info->runsSeconds = runsSeconds;
    info->gatherSeconds = gatherSeconds;
    info->totalSeconds = secondsSince(t0);
  }
  return "";
}

} // namespace

std::string cpu::originalOrderReason(const kernel::LayerTable &table,
                                     int64_t group,
                                     const layout::PeriodTranspose &perm,
                                     int64_t nq, int64_t nk) {
  const int64_t p = perm.period;
  auto segment = [&](int64_t n) { return n - perm.keptCount(n); };
  // (With kept ranges the others may span more than a period, their
  // residues out of their order: no such shortcut.)
  if (!perm.interleaved() && segment(nq) <= p && segment(nk) <= p)
    return "the transpose is the identity at Nq = " + std::to_string(nq) +
           ", Nk = " + std::to_string(nk) + " (period " + std::to_string(p) +
           ")";
  const kernel::Node *nodes = table.nodes + table.groupBegin[group];
  int64_t count = table.groupBegin[group + 1] - table.groupBegin[group];
  for (const std::vector<int64_t> &heads : headClasses(table, group)) {
    if (!layout::closedFormReason(nodes, count, table.data, perm, heads.front(),
                                  nq, nk)
             .empty()) {
      if (double(nq) * double(nk) > double(int64_t(1) << 30))
        return "no closed form, and classifying Nq x Nk = " +
               std::to_string(nq) + " x " + std::to_string(nk) +
               " pairs exceeds 2^30";
      continue;
    }
    // The closed form lists, per residue, period / L intervals of each
    // periodic leaf of period L (strided shards: shards x block).
    double intervals = 0;
    for (int64_t i = 0; i < count; ++i) {
      const kernel::Node &n = nodes[i];
      if (n.kind == kernel::kPeriodic)
        intervals += double(p) / double(n.a);
      else if (n.kind == kernel::kShards)
        intervals += double(p) / (double(n.a) * double(n.b));
    }
    if (intervals > 4096)
      return "the closed form would list " +
             std::to_string(int64_t(intervals)) +
             " intervals a residue (period " + std::to_string(p) +
             " against its leaves' periods; at most 4096)";
  }
  return "";
}

std::string cpu::permutedWalk(const kernel::LayerTable &table, int64_t group,
                              const layout::PeriodTranspose &perm, int64_t nq,
                              int64_t nk, int64_t bq, int64_t bk,
                              PermutedWalk &walk, PermutedInfo *info) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t numGroups = 0, head = -1;
  for (int64_t i = 0; i < table.numComputed; ++i) {
    numGroups = std::max<int64_t>(numGroups, table.headGroup[i] + 1);
    if (table.headGroup[i] == group && head < 0)
      head = table.computedHead[i];
  }
  if (group < 0 || group >= numGroups || head < 0)
    return "permutedWalk: group " + std::to_string(group) +
           " is not one of the layer's " + std::to_string(numGroups) +
           " computed groups";
  if (perm.period < 2 || perm.prefix < 0)
    return "permutedWalk: the period must be at least 2 and the prefix not "
           "negative";
  if (std::string e = layout::layoutReason(perm); !e.empty())
    return "permutedWalk: " + e;
  if (nq < 0 || nk < 0 || bq < 1 || bk < 1 || bq > 1024 || bk > 1024)
    return "permutedWalk: lengths must not be negative and tiles in [1, "
           "1024], got Nq = " +
           std::to_string(nq) + ", Nk = " + std::to_string(nk) + ", tiles " +
           std::to_string(bq) + " x " + std::to_string(bk);
  if (headClasses(table, group).size() > 1)
    return "permutedWalk: the heads of group " + std::to_string(group) +
           " have different masks (strided shards or shifted groups): one "
           "walk does not serve them all";
  std::vector<int64_t> qTok(nq), kTok(nk);
  for (int64_t s = 0; s < nq; ++s)
    qTok[s] = perm.token(s, nq);
  for (int64_t s = 0; s < nk; ++s)
    kTok[s] = perm.token(s, nk);
  walk = PermutedWalk();
  const kernel::Node *nodes = table.nodes + table.groupBegin[group];
  std::string why = walkOf(
      nodes, table.groupBegin[group + 1] - table.groupBegin[group], table.data,
      perm, head, table.numHeads, qTok, kTok, bq, bk, /*masks=*/true, walk);
  if (info) {
    info->closedForm = why.empty();
    info->why = why;
    info->runsSeconds = secondsSince(t0);
  }
  return "";
}
