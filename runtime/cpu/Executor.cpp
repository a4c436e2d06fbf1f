//===- Executor.cpp - block-sparse attention on the CPU -------------------===//

#include "tessera/cpu/Executor.h"

#include "TensorIO.h"
#include "ThreadPool.h"
#include "VecMath.h"
#include "tessera/cpu/Half.h"
#include "tessera/kernel/ProgramRuns.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
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


using namespace tessera::cpu::vec;
using namespace tessera::cpu::io;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// The most memory a worker's key/value block cache takes.
constexpr int64_t kCacheBytes = int64_t(64) << 20;


int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// A float array left uninitialised: the key/value cache is up to 64 MiB,
/// which std::vector would zero on every call (milliseconds for a decode
/// step over a long cache). Every element is written before it is read.
struct RawFloats {
  std::unique_ptr<float[]> p;
  int64_t size = 0;
  /// Grows only: a persistent worker keeps its buffer across calls.
  void resize(int64_t n) {
    if (n > size)
      p.reset(new float[size_t(n)]), size = n;
  }
  void release() { p.reset(), size = 0; }
  float &operator[](int64_t i) { return p[size_t(i)]; }
};

/// The work of one thread: scratch buffers reused across tasks and calls.
/// Row counts are padded to kRows and column counts to kLanes; a task
/// writes every element it reads (the products read `rows` rows and d
/// columns of q, a tile's padding keys are zero in the cache, a tile's
/// scores and P V are written whole), so the buffers are not cleared per
/// call: clearing 27 KiB cost a decode step about a microsecond.
struct Worker {
  int64_t rowsPad = 0, colsPad = 0, dPad = 0;
  std::vector<float> q;   ///< [rowsPad][dPad] query rows
  std::vector<float> s;   ///< [rowsPad][colsPad] scores, then probabilities
  std::vector<float> acc; ///< [rowsPad][dPad] one tile's P V
  /// Across tiles in double: the output accumulators ([rows][dPad]) and the
  /// row sums (a float running sum over 2^20 keys drifts by percents).
  std::vector<double> out, l;
  std::vector<float> m, corr; ///< row maxima; this tile's rescaling
  std::vector<uint8_t> keep; ///< [rowsPad][colsPad] element mask of a tile
  std::vector<float> bias;   ///< [colsPad] 0 or -inf per key of one row
  std::vector<float> biasLine; ///< a diagonal's or a row's bias, shared
  std::vector<uint8_t> line; ///< a diagonal mask's line
  /// A direct-mapped cache of converted key blocks of one (batch, kv head):
  /// key block kb lives in slot kb % slots, its keys transposed
  /// ([dPad][colsPad]) and its values ([colsPad][dPad]) as floats, reused by
  /// the query blocks of the heads that read them. Its size is bounded
  /// (kCacheBytes), not O(Nk): a walk's contiguous runs map to distinct
  /// slots.
  int64_t cachedBatch = -1, cachedKvHead = -1, slots = 0;
  RawFloats kT, vb;
  std::vector<int64_t> tag; ///< the key block in each slot, or -1
  /// Per slot: whether its values hold a NaN or an infinity. Then a
  /// partial tile adds P V row by row over the allowed keys only (0 * inf
  /// would put NaN into rows that cannot see the value).
  std::vector<uint8_t> nonFiniteV;
  std::vector<float> keyRows; ///< [kLanes][dPad] keys being transposed
  /// A one-row block's key and value rows of a tile (read in place).
  std::vector<const char *> keyPtrs, valuePtrs;
  /// One-row blocks over bf16 keys: a ring of tiles converted to float
  /// rows (keys and values [colsPad][dPad] each), tile kb in slot
  /// kb % ringSlots, so that the query heads of a kv head (tasks one after
  /// another) convert a tile once. Tagged like the cache above.
  int64_t ringBatch = -1, ringKvHead = -1, ringSlots = 0;
  RawFloats ringK, ringV;
  std::vector<int64_t> ringTag;
  /// Per head group: the (sequence, query block, tile) of the last walk
  /// start sought and its run and key block (firstTile).
  struct WalkStart {
    int64_t s = -1, qb = -1, tile = -1, kb = 0;
    k::Run run;
  };
  std::vector<WalkStart> walkStarts;
  /// This call's full and partial tiles, added to the job's once (an
  /// atomic add per task costs a decode step about a microsecond).
  int64_t full = 0, partial = 0;
  int64_t rowTiles = 0; ///< tiles times their query rows
};


/// Fills mask[(q - q0) * ld + (k - k0)] for the pairs of the partial tile
/// [q0, q1) x [k0, k1): 1 where allowed. Subdivides the tile with the tile
/// classifier (rows first, then keys), so the cost follows the mask's
/// boundaries rather than its area.
void tileMask(const k::Node *nodes, k::i64 count, const k::i64 *data,
              int64_t q0, int64_t k0, int64_t q1, int64_t k1, int64_t nq,
              int64_t nk, int64_t head, int64_t numHeads, uint8_t *mask,
              int64_t ld) {
  struct Box {
    int64_t q0, q1, k0, k1;
  };
  Box stack[256];
  int top = 0;
  stack[top++] = {q0, q1, k0, k1};
  while (top) {
    Box x = stack[--top];
    k::Tile t{x.q0, x.q1, x.k0, x.k1, nq, nk, head, numHeads};
    int cls = k::classifyTile(nodes, count, data, t);
    if (cls != k::kPartial || (x.q1 - x.q0 == 1 && x.k1 - x.k0 == 1)) {
      for (int64_t q = x.q0; q < x.q1; ++q)
        std::fill(mask + (q - q0) * ld + (x.k0 - k0),
                  mask + (q - q0) * ld + (x.k1 - k0), uint8_t(cls == k::kFull));
      continue;
    }
    // Split the longer side (rows win ties); the stack depth stays within
    // 2 * log2(rows * keys) entries.
    if (x.q1 - x.q0 >= x.k1 - x.k0) {
      int64_t mid = x.q0 + (x.q1 - x.q0) / 2;
      stack[top++] = {mid, x.q1, x.k0, x.k1};
      stack[top++] = {x.q0, mid, x.k0, x.k1};
    } else {
      int64_t mid = x.k0 + (x.k1 - x.k0) / 2;
      stack[top++] = {x.q0, x.q1, mid, x.k1};
      stack[top++] = {x.q0, x.q1, x.k0, mid};
    }
  }
}

/// What a group's mask depends on, for building partial-tile masks fast.
enum class MaskShape {
  Diagonal, ///< only d = k - p: rows are shifted copies of one line
  Columns,  ///< only k: every row is the same
  Rows,     ///< only p: each row is all or nothing
  General,
};

/// The shape of a partial tile's mask: leaves that are EMPTY or FULL on the
/// whole tile are constants there, so only the partial leaves' axes count
/// (an A-shape's diagonal tiles are diagonal: its sink leaf is empty there).
MaskShape maskShape(const k::Node *nodes, k::i64 count, const k::i64 *data,
                    const k::Tile &tile) {
  bool diag = false, key = false, row = false, other = false;
  for (k::i64 i = 0; i < count; ++i) {
    const k::Node &n = nodes[i];
    if (n.kind < k::kUnion && k::classifyLeaf(n, data, tile) != k::kPartial)
      continue;
    switch (n.kind) {
    case k::kIntervals:
    case k::kBand:
    case k::kPeriodic:
      (n.axis == k::kAxisK ? key : n.axis == k::kAxisP ? row : diag) = true;
      break;
    case k::kShards:
      key = true;
      break;
    case k::kGroups:
    case k::kBlocks:
      other = true;
      break;
    default: // all, none, combinators
      break;
    }
  }
  if (other || diag + key + row > 1)
    return MaskShape::General;
  return diag  ? MaskShape::Diagonal
         : key ? MaskShape::Columns
         : row ? MaskShape::Rows
               : MaskShape::General;
}

/// The element mask of a partial tile, by the cheapest route its shape
/// allows; the general route subdivides the tile.
/// Where the rows of a partial tile's mask are: row i at base + i * step
/// (step -1: a diagonal's shared line; 0: one row for all).
struct MaskRows {
  const uint8_t *base;
  int64_t step;
};

MaskRows partialTileMask(MaskShape shape, const k::ProgramRuns &runs,
                         const k::Node *nodes, k::i64 count,
                         const k::i64 *data, int64_t q0, int64_t k0,
                         int64_t q1, int64_t k1, int64_t nq, int64_t nk,
                         int64_t head, int64_t numHeads, uint8_t *mask,
                         int64_t ld, std::vector<uint8_t> &line) {
  int64_t rows = q1 - q0, cols = k1 - k0;
  switch (shape) {
  case MaskShape::Diagonal: {
    // Inside the tile allowed depends on d alone: one line over every d the
    // tile holds, read off the tile's first column (bottom row up) and first
    // row, points of the tile itself (outside it the constant leaves may
    // change); row i is the line shifted by i.
    int64_t span = rows + cols - 1;
    line.resize(span);
    tileMask(nodes, count, data, q0, k0, q1, k0 + 1, nq, nk, head, numHeads,
             line.data(), 1);
    std::reverse(line.begin(), line.begin() + rows);
    tileMask(nodes, count, data, q0, k0, q0 + 1, k1, nq, nk, head, numHeads,
             line.data() + rows - 1, span);
    return {line.data() + rows - 1, -1};
  }
  case MaskShape::Columns:
    tileMask(nodes, count, data, q0, k0, q0 + 1, k1, nq, nk, head, numHeads,
             mask, ld);
    return {mask, 0};
  case MaskShape::Rows:
    for (int64_t i = 0; i < rows; ++i) {
      k::Tile t{q0 + i, q0 + i + 1, k0, k1, nq, nk, head, numHeads};
      std::fill_n(mask + i * ld, cols,
                  uint8_t(k::classifyTile(nodes, count, data, t) == k::kFull));
    }
    return {mask, ld};
  case MaskShape::General:
    // Row by row, the runs of a one-row query block with one-key blocks:
    // exact (every 1 x 1 tile is EMPTY or FULL), O(runs in the tile) a row.
    for (int64_t i = 0; i < rows; ++i) {
      uint8_t *row = mask + i * ld;
      std::fill_n(row, cols, uint8_t(0));
      k::RunCtx c =
          k::makeRunCtx(q0 + i, q0 + i + 1, nq, nk, 1, head, numHeads);
      for (k::i64 kb = k0;;) {
        k::Run r = runs.runFrom(c, kb);
        if (!k::isRun(r) || r.lo >= k1)
          break;
        int64_t hi = std::min<int64_t>(r.hi, k1 - 1);
        if (r.cls == k::kFull)
          std::fill(row + (r.lo - k0), row + (hi - k0) + 1, uint8_t(1));
        else // not produced on 1 x 1 tiles; exact all the same
          for (int64_t kk = r.lo; kk <= hi; ++kk)
            row[kk - k0] = k::allowedPair(nodes, count, data, q0 + i, kk, nq,
                                          nk, head, numHeads);
        kb = r.hi + 1;
      }
    }
    return {mask, ld};
  }
  return {mask, ld};
}

/// Where a sequence's rows and keys are, precomputed once per call.
struct SeqPlan {
  int64_t nq = 0, nk = 0;        ///< its query rows and keys
  int64_t pStart = 0, kStart = 0; ///< positions of row 0 and key 0
  int64_t qBase = 0, oBase = 0;   ///< element offsets of row 0
  int64_t kBase = 0, vBase = 0;   ///< of key 0 (dense and packed keys)
  int64_t lseBase = 0;            ///< LSE index of row 0 of head 0
  int64_t rowBase = 0; ///< headActive's row of row 0 (b * Nq, or cuQ[s])
  int64_t firstTask = 0;          ///< tasks of earlier sequences
  int64_t numTasks = 0;           ///< its own
  /// Split key walks (decode): this sequence's tasks are the chunks
  /// Job::order[firstChunk, ...); -1: one task per (slot, query block).
  int64_t firstChunk = -1;
};

/// Split-KV decode: sequences with at most kDecodeRows query rows cut each
/// head's walk into chunks of visited tiles, run as separate tasks and
/// merged by log-sum-exp. The chunk size follows the number of tiles the
/// head visits (its key length and pattern), never the thread count, so
/// the results do not depend on it: at least kMinChunkTiles tiles (the
/// merge's cost stays small beside a chunk's), at most kMaxChunks chunks
/// (a chunk of a kv head's keys and values stays near L2's size at 128K
/// keys, so the query heads that share them read them there; their
/// partial results, d + 2 doubles a row, are 0.2% of what they read).
constexpr int64_t kDecodeRows = 16;
constexpr int64_t kMinChunkTiles = 8;
constexpr int64_t kMaxChunks = 128;

/// One task of a split walk: the visited tiles [tile0, tile1) of one
/// (sequence, launch slot) in walk order, and where its partial result
/// goes (`at` in Job::partials; -1: the pair's only chunk, which writes O
/// and LSE itself).
struct Chunk {
  int64_t slot, tile0, tile1, at;
  int64_t qb = 0; ///< its query block (routed: a RoutedBlock's index)
};

/// A (sequence, launch slot) pair whose chunks [first, first + count) of
/// Job::chunks are merged once they have run.
struct SplitPair {
  int64_t s, slot, first, count;
  int64_t qb = 0; ///< as Chunk::qb
};

/// Per-token head routing: rows [begin, end) of Job::activeRows, one
/// (sequence, launch slot)'s active rows, compacted into a query block.
struct RoutedBlock {
  int64_t begin, end, slotIndex; ///< slotIndex: of Job::slots
};

struct Job {
  const k::LayerTable &table;
  const std::vector<k::ProgramRuns> &runs; ///< per head group
  /// Per head group: whether its walks are the same for every head (no
  /// shards or shifted groups), so that its heads share a walk's start.
  std::vector<uint8_t> headFree;
  const LayerArgs &a;
  std::vector<SeqPlan> seqs;
  std::vector<int64_t> slots; ///< the launch slots of the tensors' heads
  int64_t d = 0, groupSize = 1, kvHead0 = 0, lseHeadStride = 0;
  int64_t pageSize = 0; ///< paged keys: rows per page
  float scale = 0;
  bool split = true; ///< split-KV decode allowed
  std::atomic<int64_t> full{0}, partial{0}, rowTiles{0};
  /// Split walks: chunks in (sequence, slot, chunk) order, the order tasks
  /// run them in, the pairs to merge, and the partial results ([rows][d +
  /// 2] doubles per chunk: the unnormalised output, the row max, the sum).
  std::vector<Chunk> chunks;
  std::vector<int64_t> order;
  std::vector<SplitPair> pairs;
  std::vector<double> partials;
  /// Per-token head routing (LayerArgs::headActive): each (sequence,
  /// launch slot)'s active rows in row order, cut into blocks; a task's
  /// query block qb is then an index of `blocks`, whose blocks run in
  /// (sequence, slot) order, those of sequence s from seqBlock[s] on.
  bool routed = false;
  std::vector<int64_t> activeRows;
  std::vector<RoutedBlock> blocks;
  std::vector<int64_t> seqBlock;

  Job(const k::LayerTable &table, const std::vector<k::ProgramRuns> &runs,
      const LayerArgs &a)
      : table(table), runs(runs), a(a) {}

  /// The element offset of key j of sequence s in `t` (k or v; head 0).
  int64_t keyOffset(const Tensor &t, int64_t base, int64_t s,
                    int64_t j) const {
    if (!a.seqs.pages)
      return base + j * t.strideSeq;
    int64_t page = a.seqs.pages[s * a.seqs.pageStride + j / pageSize];
    return page * t.strideBatch + (j % pageSize) * t.strideSeq;
  }
};

/// Converts key block kb's keys [k0, k1) (global positions; key j of the
/// sequence at position kStart + j) of sequence s and kv head `kvLocal`
/// into cache slot `slot`: keys transposed, values as rows, padding zero
/// (padded keys' scores are masked, their values meet zero probabilities).
TESSERA_CPU_CLONES
void convertBlock(const Job &job, Worker &w, const SeqPlan &sp, int64_t s,
                  int64_t kvLocal, int64_t k0, int64_t k1, int64_t slot) {
  const LayerArgs &a = job.a;
  int64_t d = job.d, dp = w.dPad, cp = w.colsPad, cols = k1 - k0;
  float *kT = &w.kT[slot * dp * cp], *vb = &w.vb[slot * cp * dp];
  // Keys go through kLanes rows at a time, so that the transposed block
  // is written kLanes contiguous floats at a time; only the columns the
  // tile's products read (its keys rounded up to kLanes).
  float *rows16 = w.keyRows.data();
  for (int64_t j0 = 0; j0 < roundUp(cols, kLanes); j0 += kLanes) {
    for (int64_t j = j0; j < j0 + kLanes; ++j) {
      float *row = rows16 + (j - j0) * dp;
      float *vrow = vb + j * dp;
      if (j < cols) {
        int64_t key = k0 - sp.kStart + j;
        load(a.k, job.keyOffset(a.k, sp.kBase, s, key) + kvLocal * a.k.strideHead,
             d, row);
        load(a.v, job.keyOffset(a.v, sp.vBase, s, key) + kvLocal * a.v.strideHead,
             d, vrow);
      } else {
        std::fill(row, row + d, 0.0f);
        std::fill(vrow, vrow + d, 0.0f);
      }
      std::fill(vrow + d, vrow + dp, 0.0f);
    }
    for (int64_t x = 0; x < d; ++x)
      for (int64_t jj = 0; jj < kLanes; ++jj)
        kT[x * cp + j0 + jj] = rows16[jj * dp + x];
  }
  // Non-finite values (the sum of x * 0 is NaN exactly then; in one
  // register-sized accumulator, which GCC keeps in a register).
  Vec8 poison = {};
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t x = 0; x < dp; x += 8)
      poison += loadVec8(vb + j * dp + x) * 0.0f;
  float sum = 0;
  for (int i = 0; i < 8; ++i)
    sum += poison[i];
  w.nonFiniteV[slot] = std::isnan(sum);
}

/// The rows of query block qb of a sequence: [q0, q0 + rows) of it, or,
/// routed, the block's active rows map[0, rows) (null map where they are
/// consecutive: the unrouted code then runs them, bit for bit). `end` is
/// one past the last row.
struct TaskRows {
  const int64_t *map;
  int64_t q0, rows, end;
};

TaskRows taskRows(const Job &job, const SeqPlan &sp, int64_t qb) {
  if (!job.routed) {
    int64_t q0 = qb * job.a.blockQ, q1 = std::min(q0 + job.a.blockQ, sp.nq);
    return {nullptr, q0, q1 - q0, q1};
  }
  const RoutedBlock &b = job.blocks[size_t(qb)];
  const int64_t *map = &job.activeRows[size_t(b.begin)];
  const int64_t rows = b.end - b.begin, end = map[rows - 1] + 1;
  return {end - map[0] == rows ? nullptr : map, map[0], rows, end};
}

/// One (sequence, launch slot, query block) task. The walk and the masks
/// take positions: rows [q0, q1) of the sequence sit at pStart + q0 on,
/// and key block kb covers positions [kb * bk, kb * bk + bk) clipped to the
/// sequence's keys [kStart, kStart + Nk). With nq = nk = kStart + Nk in the
/// run context and the tiles, Program.h's alignment p = q + Nk - Nq is the
/// identity, so its closed forms run on the positions themselves.
k::RunCtx walkCtx(const Job &job, const SeqPlan &sp, int64_t slot,
                  int64_t qb) {
  int64_t bk = job.a.blockK, kEnd = sp.kStart + sp.nk;
  TaskRows r = taskRows(job, sp, qb);
  int64_t p0 = sp.pStart + r.q0, p1 = sp.pStart + r.end;
  return k::RunCtx{p0,   p1, p0,   p1 - 1, kEnd,
                   kEnd, bk, (kEnd + bk - 1) / bk, job.table.computedHead[slot],
                   job.table.numHeads};
}

/// The run after key block kb; none past the last key block without
/// evaluating the pattern (a decode step's one-tile walk ends there).
k::Run nextRun(const k::ProgramRuns &runs, const k::RunCtx &ctx, int64_t kb) {
  return kb + 1 < ctx.nkb ? runs.runFrom(ctx, kb + 1) : k::noRun();
}

/// The run holding visited tile `tile` (in walk order) of a query block's
/// walk, and that tile's key block; no run if the walk has fewer tiles.
std::pair<k::Run, int64_t> seekTile(const k::ProgramRuns &runs,
                                    const k::RunCtx &ctx, const SeqPlan &sp,
                                    int64_t tile) {
  k::Run run =
      sp.nk > 0 ? runs.runFrom(ctx, sp.kStart / ctx.bk) : k::noRun();
  for (; k::isRun(run) && run.hi - run.lo < tile;
       run = nextRun(runs, ctx, run.hi))
    tile -= run.hi - run.lo + 1;
  return {run, run.lo + tile};
}

/// seekTile for task (s, slot of `group`, qb) from visited tile `tile`;
/// the heads of a head-free group share one search (a decode step's
/// pattern evaluation, once per group instead of once per head).
std::pair<k::Run, int64_t> firstTile(const Job &job, Worker &w,
                                     const k::ProgramRuns &runs,
                                     const k::RunCtx &ctx, const SeqPlan &sp,
                                     int64_t s, int64_t group, int64_t qb,
                                     int64_t tile) {
  if (!job.headFree[size_t(group)])
    return seekTile(runs, ctx, sp, tile);
  Worker::WalkStart &start = w.walkStarts[size_t(group)];
  if (start.s != s || start.qb != qb || start.tile != tile) {
    auto [run, kb] = seekTile(runs, ctx, sp, tile);
    start = {s, qb, tile, kb, run};
  }
  return {start.run, start.kb};
}

/// The tiles query block qb's walk visits: O(runs).
int64_t visitedTiles(const Job &job, const SeqPlan &sp, int64_t slot,
                     int64_t qb) {
  const k::ProgramRuns &runs =
      job.runs[size_t(job.table.headGroup[slot])];
  k::RunCtx ctx = walkCtx(job, sp, slot, qb);
  int64_t n = 0;
  for (k::Run run = seekTile(runs, ctx, sp, 0).first; k::isRun(run);
       run = nextRun(runs, ctx, run.hi))
    n = std::min(k::kUnbounded, n + run.hi - run.lo + 1);
  return n;
}

typedef uint16_t VecH8 __attribute__((vector_size(8 * sizeof(uint16_t))));
typedef uint32_t VecU8 __attribute__((vector_size(8 * sizeof(uint32_t))));
typedef uint16_t VecH16 __attribute__((vector_size(16 * sizeof(uint16_t))));
typedef double VecD4 __attribute__((vector_size(4 * sizeof(double))));
typedef float Vec4 __attribute__((vector_size(4 * sizeof(float))));
typedef int32_t VecI8 __attribute__((vector_size(8 * sizeof(int32_t))));

/// out[0, 8) * inv rounded to float and then to bf16 as floatToBf16 does
/// (nearest even; a NaN stays a quiet NaN), in the low halves of 8 lanes.
__attribute__((always_inline)) inline VecU8 bf16Round8(const double *out,
                                                       double inv) {
  VecD4 lo, hi;
  std::memcpy(&lo, out, sizeof lo);
  std::memcpy(&hi, out + 4, sizeof hi);
  Vec4 flo = __builtin_convertvector(lo * inv, Vec4),
       fhi = __builtin_convertvector(hi * inv, Vec4);
  // Joined in registers: two 16-byte stores read back as one 32-byte load
  // would stall on store forwarding.
  VecU8 u = (VecU8)__builtin_shufflevector(flo, fhi, 0, 1, 2, 3, 4, 5, 6, 7);
  VecI8 nan = (VecI8)(u & 0x7fffffffu) > 0x7f800000;
  VecU8 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return nan ? (u >> 16) | 0x40u : rounded;
}

/// Writes out[0, n) * inv, rounded to float and then to t's type, to
/// element `offset` of t; `staging` holds the floats. bf16 rows of whole
/// 16-element vectors are rounded 16 at a time, bit for bit as
/// floatToBf16.
TESSERA_CPU_CLONES
void storeScaled(const Tensor &t, int64_t offset, int64_t n, const double *out,
                 double inv, float *staging) {
  if (t.dtype != DType::BF16 || n % 16 != 0) {
    for (int64_t x = 0; x < n; ++x)
      staging[x] = float(out[x] * inv);
    store(t, offset, n, staging);
    return;
  }
  uint16_t *h = static_cast<uint16_t *>(t.data) + offset;
  for (int64_t x = 0; x < n; x += 16) {
    // The low half of each 32-bit lane (little-endian: even elements).
    VecH16 a = (VecH16)bf16Round8(out + x, inv),
           b = (VecH16)bf16Round8(out + x + 8, inv);
    VecH16 packed = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14,
                                            16, 18, 20, 22, 24, 26, 28, 30);
    std::memcpy(h + x, &packed, sizeof packed);
  }
}

/// Writes rows [q0, q0 + rows) of one head (routed: rows map[0, rows)) from
/// the accumulators `out` ([rows][dPad], unnormalised), the row maxima m
/// and sums l; `staging` holds a row as floats.
void writeRows(const Job &job, const SeqPlan &sp, int64_t headLocal,
               const TaskRows &tr, const double *out, int64_t ldOut,
               const float *m, const double *l, float *staging) {
  const LayerArgs &a = job.a;
  for (int64_t i = 0; i < tr.rows; ++i) {
    const int64_t row = tr.map ? tr.map[i] : tr.q0 + i;
    // l == 0: no key (O = 0, LSE = -inf); l NaN: the row saw a NaN (or
    // infinities that made one), and O and LSE are NaN.
    double inv = l[i] != 0 ? 1.0 / l[i] : 0.0;
    storeScaled(a.o,
                sp.oBase + row * a.o.strideSeq + headLocal * a.o.strideHead,
                job.d, out + i * ldOut, inv, staging);
    if (a.lse)
      a.lse[sp.lseBase + headLocal * job.lseHeadStride + row] =
          l[i] != 0 ? float(double(m[i]) + std::log(l[i])) : kNegInf;
  }
}

/// Whether a sequence of one query row (a decode step) reads its keys and
/// values straight from the tensors (f32 or bf16 rows of whole vectors):
/// converting and transposing a tile for one row's products costs more
/// than the products. Only whole one-row sequences: a query block size of
/// 1 still gives the same bits as any other (the tile products' order).
bool readsDirect(const LayerArgs &a, const SeqPlan &sp) {
  auto vectorRows = [&](const Tensor &t) {
    return t.dtype != DType::F16 && t.headDim % kLanes == 0;
  };
  return sp.nq == 1 && vectorRows(a.k) && vectorRows(a.v);
}

/// 8 elements of a bf16 row at p as floats (one register on AVX2: a
/// kLanes vector would be split and spilled).
__attribute__((always_inline)) inline Vec8 bf16Lanes(const char *p) {
  VecH8 h;
  std::memcpy(&h, p, sizeof(h));
  VecU8 u = __builtin_convertvector(h, VecU8) << 16;
  Vec8 f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}


/// 16 elements of a bf16 row at p as floats at out: one 32-byte load, each
/// element interleaved with a zero (the float's low half).
__attribute__((always_inline)) inline void bf16Lanes16(const char *p,
                                                       float *out) {
  VecH16 h, zero = {};
  std::memcpy(&h, p, sizeof(h));
  VecH16 lo = __builtin_shufflevector(zero, h, 0, 16, 1, 17, 2, 18, 3, 19, 4,
                                      20, 5, 21, 6, 22, 7, 23),
         hi = __builtin_shufflevector(zero, h, 8, 24, 9, 25, 10, 26, 11, 27,
                                      12, 28, 13, 29, 14, 30, 15, 31);
  std::memcpy(out, &lo, sizeof(lo));
  std::memcpy(out + 8, &hi, sizeof(hi));
}

/// load(), with bf16 rows of whole 16-element vectors converted 16 at a
/// time (the same floats).
__attribute__((always_inline)) inline void loadRow(const Tensor &t,
                                                   int64_t offset, int64_t n,
                                                   float *dst) {
  if (t.dtype != DType::BF16 || n % 16 != 0)
    return load(t, offset, n, dst);
  const char *src = static_cast<const char *>(t.data) + 2 * offset;
  for (int64_t x = 0; x < n; x += 16)
    bf16Lanes16(src + 2 * x, dst + x);
}

__attribute__((always_inline)) inline Vec8 lanes8(const char *p, bool bf16) {
  return bf16 ? bf16Lanes(p) : loadVec8(reinterpret_cast<const float *>(p));
}

/// The rows of keys [k0, k0 + cols) (positions of sequence s) of kv head
/// kvLocal in `t`, as byte pointers; paged tensors step through the
/// pages without a division per key.
void directRows(const Job &job, const Tensor &t, int64_t base,
                const SeqPlan &sp, int64_t s, int64_t kvLocal, int64_t k0,
                int64_t cols, const char **rows) {
  const int64_t esize = t.dtype == DType::F32 ? 4 : 2;
  const char *data = static_cast<const char *>(t.data);
  const int64_t j0 = k0 - sp.kStart, head = kvLocal * t.strideHead;
  if (!job.a.seqs.pages) {
    for (int64_t j = 0; j < cols; ++j)
      rows[j] = data + (base + (j0 + j) * t.strideSeq + head) * esize;
    return;
  }
  const int32_t *table = job.a.seqs.pages + s * job.a.seqs.pageStride;
  int64_t page = j0 / job.pageSize, r = j0 % job.pageSize;
  for (int64_t j = 0; j < cols; ++j) {
    rows[j] = data + (table[page] * t.strideBatch + r * t.strideSeq + head) *
                         esize;
    if (++r == job.pageSize)
      r = 0, ++page;
  }
}

/// Row 0 (q) dotted with the key row at r: two 8-lane partial sums over
/// alternate halves of each 16 elements, added. The element type is a
/// template argument, so that the row's offsets are constants.
template <bool BF16>
__attribute__((always_inline)) inline Vec8 dotLanes(const float *q,
                                                    const char *r, int64_t d) {
  constexpr int64_t esize = BF16 ? 2 : 4;
  Vec8 acc0 = {}, acc1 = {};
#pragma GCC unroll 8
  for (int64_t x = 0; x < d; x += 16) {
    acc0 += loadVec8(q + x) * lanes8(r + x * esize, BF16);
    acc1 += loadVec8(q + x + 8) * lanes8(r + (x + 8) * esize, BF16);
  }
  return acc0 + acc1;
}

/// dotLanes for N key rows at once (each row's sums as dotLanes forms
/// them): 2 N independent chains of multiply-adds instead of 2 (N = 6
/// keeps AVX2's two multiply-add units busy: 12 chains, 16 registers).
template <int N, bool BF16>
__attribute__((always_inline)) inline void
dotLanesN(const float *q, const char *const *rows, int64_t d, Vec8 *out) {
  constexpr int64_t esize = BF16 ? 2 : 4;
  Vec8 acc0[N] = {}, acc1[N] = {};
  for (int64_t x = 0; x < d; x += 16) {
    const Vec8 q0 = loadVec8(q + x), q1 = loadVec8(q + x + 8);
#pragma GCC unroll 8
    for (int i = 0; i < N; ++i) {
      acc0[i] += q0 * lanes8(rows[i] + x * esize, BF16);
      acc1[i] += q1 * lanes8(rows[i] + (x + 8) * esize, BF16);
    }
  }
  for (int i = 0; i < N; ++i)
    out[i] = acc0[i] + acc1[i];
}

/// out[j] = ((0 + a[j][0]) + a[j][1]) + ... + a[j][7] for 8 keys j: the
/// same sums in the same order as one key at a time, through an 8 x 8
/// transpose, so that 8 additions of vectors replace 64 dependent scalar
/// ones.
__attribute__((always_inline)) inline void sumLanes8(const Vec8 *a,
                                                     float *out) {
  Vec8 u[8], v[8];
  for (int i = 0; i < 8; i += 2) {
    u[i] = __builtin_shufflevector(a[i], a[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    u[i + 1] =
        __builtin_shufflevector(a[i], a[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      v[i + 2 * h] = __builtin_shufflevector(u[i + h], u[i + h + 2], 0, 1, 8,
                                             9, 4, 5, 12, 13);
      v[i + 2 * h + 1] = __builtin_shufflevector(u[i + h], u[i + h + 2], 2, 3,
                                                 10, 11, 6, 7, 14, 15);
    }
  // v[i] (i < 4) holds lanes i and i + 4 of keys 0-3, v[i + 4] of keys 4-7.
  Vec8 sum = Vec8{};
  for (int i = 0; i < 4; ++i)
    sum += __builtin_shufflevector(v[i], v[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
  for (int i = 0; i < 4; ++i)
    sum += __builtin_shufflevector(v[i], v[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  storeVec8(out, sum);
}

/// Scores of row q against `cols` key rows into `scores`.
template <bool BF16>
__attribute__((always_inline)) inline void
scoresOf(const float *q, const char *const *rows, int64_t cols, int64_t d,
         float *scores) {
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16) {
    Vec8 a[16];
    dotLanesN<6, BF16>(q, rows + j, d, a);
    dotLanesN<6, BF16>(q, rows + j + 6, d, a + 6);
    dotLanesN<4, BF16>(q, rows + j + 12, d, a + 12);
    sumLanes8(a, scores + j);
    sumLanes8(a + 8, scores + j + 8);
  }
  for (; j + 8 <= cols; j += 8) {
    Vec8 a[8];
    dotLanesN<4, BF16>(q, rows + j, d, a);
    dotLanesN<4, BF16>(q, rows + j + 4, d, a + 4);
    sumLanes8(a, scores + j);
  }
  for (; j < cols; ++j) {
    Vec8 a = dotLanes<BF16>(q, rows[j], d);
    float sum = 0;
    for (int i = 0; i < 8; ++i)
      sum += a[i];
    scores[j] = sum;
  }
}

/// Scores of row 0 (w.q) against the key rows `rows` (bf16 or f32) into
/// w.s; the padding columns 0.
TESSERA_CPU_CLONES
void directScores(const Job &job, Worker &w, const char *const *rows,
                  int64_t cols, bool bf16) {
  float *scores = w.s.data();
  if (bf16)
    scoresOf<true>(w.q.data(), rows, cols, job.d, scores);
  else
    scoresOf<false>(w.q.data(), rows, cols, job.d, scores);
  std::fill(scores + cols, scores + roundUp(cols, kLanes), 0.0f);
}

/// The most tiles a worker's ring of converted one-row tiles holds
/// (512 KiB at head_dim 128): a split chunk's 8 tiles.
constexpr int64_t kRingTiles = 8;

/// Whether a one-row task over `tiles` key tiles at most goes through the
/// ring (bf16 keys; f32 rows are read in place): each tile is converted
/// once for the query heads of its kv head instead of once per head.
bool usesRing(const Job &job, const Worker &w, int64_t tiles) {
  return job.a.k.dtype == DType::BF16 && job.a.v.dtype == DType::BF16 &&
         tiles <= w.ringSlots;
}

/// Converts the bf16 rows w.keyPtrs / w.valuePtrs [0, cols) into float
/// rows kr and vr ([cols][dPad]); exact.
TESSERA_CPU_CLONES
void convertRing(const Job &job, Worker &w, int64_t cols, float *kr,
                 float *vr) {
  const int64_t d = job.d, dp = w.dPad;
  const char *const *keys = w.keyPtrs.data(), *const *values =
                                                  w.valuePtrs.data();
  for (int64_t j = 0; j < cols; ++j) {
    const char *key = keys[j], *value = values[j];
    float *kRow = kr + j * dp, *vRow = vr + j * dp;
    for (int64_t x = 0; x < d; x += 16) {
      bf16Lanes16(key + 2 * x, kRow + x);
      bf16Lanes16(value + 2 * x, vRow + x);
    }
  }
}

/// Columns [x0, x0 + 8 R) of P V, the sum over the keys j of p[j] *
/// value row j in key order, added to the double
/// accumulators: o = o * c + P V. R accumulators stay in registers across
/// the keys (each element the same chain of multiply-adds from 0 as one
/// key at a time into memory, then the same o * c + P V as runTask's).
/// `first`: the row's first tile with a key (o is +0 and c is 0), so o is
/// not read.
template <int R, bool BF16>
__attribute__((always_inline)) inline void
directPVBlock(const char *const *vRows, const float *p, int64_t cols,
              int64_t x0, double *o, double c, bool first) {
  constexpr int64_t esize = BF16 ? 2 : 4;
  Vec8 r[R];
  for (int i = 0; i < R; ++i)
    r[i] = Vec8{};
  for (int64_t j = 0; j < cols; ++j) {
    const char *v = vRows[j] + x0 * esize;
    const float pj = p[j];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
      r[i] += pj * lanes8(v + 8 * i * esize, BF16);
  }
  for (int i = 0; i < R; ++i) {
    const Vec4 half[2] = {__builtin_shufflevector(r[i], r[i], 0, 1, 2, 3),
                          __builtin_shufflevector(r[i], r[i], 4, 5, 6, 7)};
    for (int h = 0; h < 2; ++h) {
      double *at = o + x0 + 8 * i + 4 * h;
      const VecD4 pv = __builtin_convertvector(half[h], VecD4);
      VecD4 ov;
      if (first) {
        ov = pv + 0.0; // +0 * 0 + P V: -0 becomes +0
      } else {
        std::memcpy(&ov, at, sizeof ov);
        ov = ov * c + pv;
      }
      std::memcpy(at, &ov, sizeof ov);
    }
  }
}

/// A one-row block's P V over the allowed keys, into o = o * c + P V
/// (head_dim a multiple of 16): blocks of 64 columns, then 16 at a time.
template <bool BF16>
__attribute__((always_inline)) inline void
directPVOf(const char *const *vRows, const float *p, int64_t cols, int64_t d,
           double *o, double c, bool first) {
  int64_t x0 = 0;
  for (; x0 + 64 <= d; x0 += 64)
    directPVBlock<8, BF16>(vRows, p, cols, x0, o, c, first);
  for (; x0 < d; x0 += 16)
    directPVBlock<2, BF16>(vRows, p, cols, x0, o, c, first);
}

/// directPVOf over the keys the row may see (bias 0; a masked key's value
/// may be infinite, and 0 * inf is NaN): their value rows and
/// probabilities first packed to the front of vRows and p (in key order,
/// so the sums are the same), which the caller no longer needs.
__attribute__((always_inline)) inline void
directPV(const Job &job, const char **vRows, float *p, const float *bias,
         int64_t cols, bool bf16, double *o, double c, bool first) {
  int64_t n = 0;
  for (int64_t j = 0; j < cols; ++j)
    if (bias[j] == 0.0f)
      vRows[n] = vRows[j], p[n++] = p[j];
  if (bf16)
    directPVOf<true>(vRows, p, n, job.d, o, c, first);
  else
    directPVOf<false>(vRows, p, n, job.d, o, c, first);
}

/// Points w.keyPtrs / w.valuePtrs at the key and value rows of a one-row
/// block's tile kb (keys [k0, k0 + cols)) and computes its scores.
/// Through the ring (`ring`), they are float rows converted once per
/// (sequence, kv head, tile); else the tensors' own.
void directTile(const Job &job, Worker &w, const SeqPlan &sp, int64_t s,
                int64_t kvLocal, int64_t kb, int64_t k0, int64_t cols,
                bool ring) {
  const LayerArgs &a = job.a;
  const char **keys = w.keyPtrs.data(), **values = w.valuePtrs.data();
  float *kr = nullptr, *vr = nullptr;
  bool fresh = true;
  if (ring) {
    const int64_t slot = kb % w.ringSlots, size = w.colsPad * w.dPad;
    kr = &w.ringK[slot * size], vr = &w.ringV[slot * size];
    fresh = w.ringTag[slot] != kb;
    w.ringTag[slot] = kb;
  }
  if (fresh) {
    directRows(job, a.k, sp.kBase, sp, s, kvLocal, k0, cols, keys);
    directRows(job, a.v, sp.vBase, sp, s, kvLocal, k0, cols, values);
  }
  if (ring) {
    if (fresh)
      convertRing(job, w, cols, kr, vr);
    for (int64_t j = 0; j < cols; ++j) {
      keys[j] = reinterpret_cast<const char *>(kr + j * w.dPad);
      values[j] = reinterpret_cast<const char *>(vr + j * w.dPad);
    }
  }
  directScores(job, w, keys, cols, !ring && a.k.dtype == DType::BF16);
}

/// The largest lane of v, whose lanes are not NaN, in registers.
__attribute__((always_inline)) inline float maxOf8(Vec8 v) {
  Vec8 m = v, t = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  m = m > t ? m : t;
  t = __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5);
  m = m > t ? m : t;
  t = __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6);
  m = m > t ? m : t;
  return m[0];
}

/// A row's correction once a direct row has added its tile's P V to the
/// double accumulators itself (a correction is in [0, 1] or NaN).
constexpr float kAccumulated = -1.0f;

/// The element mask of partial tile [k0, k1) for a routed block's rows
/// tr.map[0, rows) into w.keep (row i at i * colsPad), every row masked at
/// its own position. Where the mask over the block's whole span of
/// positions is one line (diagonal) or one row (columns), that line is
/// built once, O(span + cols), and each row copied from its own place in
/// it; else each run of rows at consecutive positions is a tile of its own
/// (the row-by-row shapes cost a row each either way).
void routedTileMask(const Job &job, Worker &w, const SeqPlan &sp,
                    const TaskRows &tr, const k::Node *nodes, k::i64 count,
                    const k::ProgramRuns &runs, int64_t head, int64_t k0,
                    int64_t k1) {
  const k::LayerTable &t = job.table;
  const int64_t cp = w.colsPad, cols = k1 - k0, kEnd = sp.kStart + sp.nk;
  const int64_t s0 = sp.pStart + tr.q0, s1 = sp.pStart + tr.end;
  const MaskShape spanShape =
      maskShape(nodes, count, t.data,
                k::Tile{s0, s1, k0, k1, kEnd, kEnd, head, t.numHeads});
  if (spanShape == MaskShape::Diagonal || spanShape == MaskShape::Columns) {
    MaskRows m = partialTileMask(spanShape, runs, nodes, count, t.data, s0, k0,
                                 s1, k1, kEnd, kEnd, head, t.numHeads,
                                 w.keep.data(), cp, w.line);
    // Row 0 first stays where it is (columns: it is the shared row).
    for (int64_t i = 0; i < tr.rows; ++i) {
      const uint8_t *src = m.base + (tr.map[i] - tr.q0) * m.step;
      if (src != w.keep.data() + i * cp)
        std::memmove(w.keep.data() + i * cp, src, size_t(cols));
    }
    return;
  }
  for (int64_t i0 = 0; i0 < tr.rows;) {
    int64_t i1 = i0 + 1;
    while (i1 < tr.rows && tr.map[i1] == tr.map[i1 - 1] + 1)
      ++i1;
    const int64_t a0 = sp.pStart + tr.map[i0], a1 = a0 + (i1 - i0);
    uint8_t *dst = w.keep.data() + i0 * cp;
    MaskRows m = partialTileMask(
        maskShape(nodes, count, t.data,
                  k::Tile{a0, a1, k0, k1, kEnd, kEnd, head, t.numHeads}),
        runs, nodes, count, t.data, a0, k0, a1, k1, kEnd, kEnd, head,
        t.numHeads, dst, cp, w.line);
    // The shared line (diagonal) or row (columns) as rows of w.keep.
    for (int64_t i = 0; i < i1 - i0; ++i)
      if (m.base + i * m.step != dst + i * cp)
        std::memmove(dst + i * cp, m.base + i * m.step, size_t(cols));
    i0 = i1;
  }
}

/// One (sequence, launch slot, query block) task, or one chunk of its
/// visited tiles (`chunk`; null: all of them).
TESSERA_CPU_CLONES
void runTask(Job &job, Worker &w, int64_t s, int64_t slot, int64_t qb,
             const Chunk *chunk = nullptr) {
  const LayerArgs &a = job.a;
  const k::LayerTable &t = job.table;
  const SeqPlan &sp = job.seqs[s];
  int64_t d = job.d, kEnd = sp.kStart + sp.nk;
  int64_t bk = a.blockK;
  int64_t dp = w.dPad, cp = w.colsPad;
  int64_t head = t.computedHead[slot], group = t.headGroup[slot];
  int64_t kvLocal = head / job.groupSize - job.kvHead0;
  int64_t headLocal = head - a.headStart;
  const k::Node *nodes = t.nodes + t.groupBegin[group];
  k::i64 count = t.groupBegin[group + 1] - t.groupBegin[group];
  // Rows [q0, q0 + rows), or (routed) the block's rows tr.map[0, rows),
  // among the positions [p0, p1).
  const TaskRows tr = taskRows(job, sp, qb);
  int64_t q0 = tr.q0, rows = tr.rows;
  int64_t p0 = sp.pStart + q0, p1 = sp.pStart + tr.end;

  for (int64_t i = 0; i < rows; ++i)
    loadRow(a.q,
            sp.qBase + (tr.map ? tr.map[i] : q0 + i) * a.q.strideSeq +
                headLocal * a.q.strideHead,
            d, &w.q[i * dp]);
  std::fill(w.out.begin(), w.out.begin() + rows * dp, 0.0);
  std::fill(w.m.begin(), w.m.begin() + rows, kNegInf);
  std::fill(w.l.begin(), w.l.begin() + rows, 0.0);

  if (w.cachedBatch != s || w.cachedKvHead != kvLocal) {
    std::fill(w.tag.begin(), w.tag.end(), -1);
    w.cachedBatch = s;
    w.cachedKvHead = kvLocal;
  }
  const bool direct = readsDirect(a, sp);
  // A chunk's tiles, or at most the sequence's span of tiles.
  const bool ring =
      direct && usesRing(job, w,
                         chunk ? chunk->tile1 - chunk->tile0
                               : (sp.kStart % bk + sp.nk + bk - 1) / bk);
  if (ring && (w.ringBatch != s || w.ringKvHead != kvLocal)) {
    std::fill(w.ringTag.begin(), w.ringTag.end(), -1);
    w.ringBatch = s;
    w.ringKvHead = kvLocal;
  }
  const bool valuesBf16 = !ring && a.v.dtype == DType::BF16; // direct rows
  int64_t full = 0, partial = 0;
  // The tiles of this query block: the group's runs, in key order, as the
  // CUDA kernel walks them.
  const k::ProgramRuns &runs = job.runs[group];
  k::RunCtx ctx = walkCtx(job, sp, slot, qb);
  int64_t tile = chunk ? chunk->tile0 : 0,
          lastTile = chunk ? chunk->tile1 : k::kUnbounded;
  auto [run, kb] = firstTile(job, w, runs, ctx, sp, s, group, qb, tile);
  for (; k::isRun(run) && tile < lastTile;
       ++tile, kb < run.hi ? ++kb : (run = nextRun(runs, ctx, kb),
                                     kb = run.lo)) {
    int cls = run.cls;
    int64_t k0 = std::max(kb * bk, sp.kStart), k1 = std::min(kb * bk + bk, kEnd);
    int64_t cols = k1 - k0;
    int64_t colsPad = roundUp(cols, kLanes);
    (cls == k::kFull ? full : partial) += 1;
    const float *kT = nullptr, *vb = nullptr;
    if (direct) {
      directTile(job, w, sp, s, kvLocal, kb, k0, cols, ring);
    } else {
      int64_t slot = kb % w.slots;
      kT = &w.kT[slot * dp * cp], vb = &w.vb[slot * cp * dp];
      if (w.tag[slot] != kb) {
        convertBlock(job, w, sp, s, kvLocal, k0, k1, slot);
        w.tag[slot] = kb;
      }
      gemm(w.q.data(), dp, kT, cp, w.s.data(), cp, rows, colsPad, d,
           /*accumulate=*/false);
    }
    // Rows add P V through the allowed keys only (below) where a masked
    // key's value could turn a probability of 0 into NaN, and a direct
    // row always (its values are not in the cache).
    const bool selectPV =
        direct || (cls == k::kPartial && w.nonFiniteV[kb % w.slots]);
    if (selectPV && !direct) // direct rows: only where they see nothing
      std::fill(w.acc.begin(), w.acc.begin() + rows * dp, 0.0f);
    // The bias of row i, at biasBase + i * biasStep: 0 for a key that
    // counts, -inf for a masked or padding key. Full tiles share one row;
    // a partial tile whose rows are one line (diagonal) or one row
    // (columns) converts that line once.
    float *bias = w.bias.data();
    for (int64_t j = 0; j < colsPad; ++j)
      bias[j] = j < cols ? 0.0f : kNegInf;
    const float *biasBase = bias;
    int64_t biasStep = 0;
    MaskRows keep{nullptr, 0};
    if (cls == k::kPartial && tr.map) {
      routedTileMask(job, w, sp, tr, nodes, count, runs, head, k0, k1);
      keep = {w.keep.data(), cp};
    } else if (cls == k::kPartial) {
      keep = partialTileMask(
          maskShape(nodes, count, t.data,
                    k::Tile{p0, p1, k0, k1, kEnd, kEnd, head, t.numHeads}),
          runs, nodes, count, t.data, p0, k0, p1, k1, kEnd, kEnd, head,
          t.numHeads, w.keep.data(), cp, w.line);
      if (keep.step <= 0 && colsPad == cols) {
        int64_t first = keep.step < 0 ? rows - 1 : 0;
        const uint8_t *src = keep.base - first;
        float *line = w.biasLine.data();
        for (int64_t j = 0; j < first + cols; ++j)
          line[j] = src[j] ? 0.0f : kNegInf;
        biasBase = line + first;
        biasStep = keep.step;
        keep.base = nullptr; // no per-row conversion
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      float *s = &w.s[i * cp];
      const float *rowBias = biasBase + i * biasStep;
      if (keep.base) {
        const uint8_t *k8 = keep.base + i * keep.step;
        for (int64_t j = 0; j < cols; ++j)
          bias[j] = k8[j] ? 0.0f : kNegInf;
      }
      // Masked keys are selected to -inf, never added to: a NaN or an
      // infinity in a key the row cannot see must not reach it. Full tiles
      // without padding have nothing to mask. 8 floats at a time: GCC
      // lowers a select on a whole Vec for AVX2 to scalar code through the
      // stack.
      const float scale = job.scale;
      Vec8 vmax = Vec8{} + kNegInf;
      if (cls == k::kFull && colsPad == cols) {
        for (int64_t j = 0; j < colsPad; j += 8) {
          Vec8 x = loadVec8(s + j) * scale;
          storeVec8(s + j, x);
          vmax = x > vmax ? x : vmax;
        }
      } else {
        for (int64_t j = 0; j < colsPad; j += 8) {
          Vec8 b = loadVec8(rowBias + j);
          Vec8 x = b == 0.0f ? loadVec8(s + j) * scale : b;
          storeVec8(s + j, x);
          vmax = x > vmax ? x : vmax;
        }
      }
      float rowMax = maxOf8(vmax); // NaN lanes ignored: never NaN
      if (rowMax == kNegInf) {
        // Nothing finite allowed in this row of the tile: no contribution,
        // unless an allowed score is NaN (a NaN the row sees): then the
        // row is NaN (its sum NaN from here on).
        for (int64_t j = 0; j < cols; ++j)
          if (std::isnan(s[j]))
            w.l[i] = std::numeric_limits<double>::quiet_NaN();
        std::fill(s, s + colsPad, 0.0f);
        if (direct)
          std::fill_n(&w.acc[i * dp], dp, 0.0f);
        w.corr[i] = 1.0f;
        continue;
      }
      float mOld = w.m[i], mNew = std::max(mOld, rowMax);
      // 0 when mOld is -inf (as expVec gives it: the first tile a row
      // sees needs no exponential).
      float correction =
          mOld == kNegInf ? 0.0f : expVec(Vec{} + (mOld - mNew))[0];
      // Lane i of sum0 / sum1 adds columns i and 8 + i of each kLanes
      // columns, and their 16 lanes are added in order: a Vec's sums and
      // horizontalSum's order, in registers.
      Vec8 sum0 = {}, sum1 = {};
      for (int64_t j = 0; j < colsPad; j += kLanes) {
        Vec8 e0 = expLanes(loadVec8(s + j) - mNew),
             e1 = expLanes(loadVec8(s + j + 8) - mNew);
        storeVec8(s + j, e0);
        storeVec8(s + j + 8, e1);
        sum0 += e0;
        sum1 += e1;
      }
      float rowSum = 0;
      for (int x = 0; x < 8; ++x)
        rowSum += sum0[x];
      for (int x = 0; x < 8; ++x)
        rowSum += sum1[x];
      w.l[i] = w.l[i] * correction + rowSum;
      w.m[i] = mNew;
      w.corr[i] = correction;
      if (direct) {
        // Straight into the double accumulators (the loop below skips
        // the row).
        directPV(job, w.valuePtrs.data(), s, rowBias, cols, valuesBf16,
                 &w.out[i * dp], correction, mOld == kNegInf);
        w.corr[i] = kAccumulated;
      } else if (selectPV) {
        float *acc = &w.acc[i * dp];
        for (int64_t j = 0; j < cols; ++j) {
          if (rowBias[j] != 0.0f)
            continue;
          const float *v = vb + j * dp;
          for (int64_t x = 0; x < dp; x += kLanes)
            storeVec(acc + x, loadVec(acc + x) + s[j] * loadVec(v + x));
        }
      }
    }
    if (!selectPV)
      gemm(w.s.data(), cp, vb, dp, w.acc.data(), dp, rows, dp, colsPad,
           /*accumulate=*/false);
    // This tile's P V into the double accumulators, rescaled by the row's
    // correction (rows that saw nothing here: a zero P row, correction 1).
    for (int64_t i = 0; i < rows; ++i) {
      const double c = w.corr[i];
      if (c == kAccumulated)
        continue;
      double *o = &w.out[i * dp];
      const float *pv = &w.acc[i * dp];
      for (int64_t x = 0; x < d; ++x)
        o[x] = o[x] * c + pv[x];
    }
  }
  if (chunk && chunk->at >= 0) {
    // A chunk of a split walk: its state, merged later (mergePair).
    double *part = &job.partials[size_t(chunk->at)];
    for (int64_t i = 0; i < rows; ++i, part += d + 2) {
      std::copy_n(&w.out[i * dp], d, part);
      part[d] = w.m[i];
      part[d + 1] = w.l[i];
    }
  } else {
    writeRows(job, sp, headLocal, tr, w.out.data(), dp, w.m.data(), w.l.data(),
              w.acc.data());
  }
  w.full += full;
  w.partial += partial;
  w.rowTiles += (full + partial) * rows;
}

/// Merges the chunks of a split pair by log-sum-exp, in chunk order (the
/// same order whichever threads ran them), and writes O and LSE.
void mergePair(Job &job, Worker &w, const SplitPair &pair) {
  const SeqPlan &sp = job.seqs[size_t(pair.s)];
  const TaskRows tr = taskRows(job, sp, pair.qb); // (routed: fewer rows)
  const int64_t d = job.d, rows = tr.rows, dp = w.dPad;
  const double *first = &job.partials[size_t(job.chunks[pair.first].at)];
  for (int64_t i = 0; i < rows; ++i) {
    // The largest chunk maximum among chunks that saw a key (l != 0).
    double mMax = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < pair.count; ++c) {
      const double *part = first + (c * sp.nq + i) * (d + 2);
      if (part[d + 1] != 0)
        mMax = std::max(mMax, part[d]);
    }
    double *out = &w.out[i * dp], l = 0;
    std::fill_n(out, d, 0.0);
    for (int64_t c = 0; c < pair.count; ++c) {
      const double *part = first + (c * sp.nq + i) * (d + 2);
      if (part[d + 1] == 0)
        continue; // saw no key; a NaN sum is not 0 and poisons the row
      double scale = std::exp(part[d] - mMax);
      l += part[d + 1] * scale;
      for (int64_t x = 0; x < d; ++x)
        out[x] += part[x] * scale;
    }
    w.l[i] = l;
    w.m[i] = float(mMax);
  }
  // m as float loses nothing here: every chunk maximum is a float.
  const int64_t head = job.table.computedHead[pair.slot];
  writeRows(job, sp, head - job.a.headStart, tr, w.out.data(), dp, w.m.data(),
            w.l.data(), w.acc.data());
}

/// Splits sequence s's walks (one query block of at most kDecodeRows rows)
/// into chunks: appends its chunks, its pairs and its task order to the
/// job; returns its number of tasks.
int64_t planSplit(Job &job, int64_t s) {
  SeqPlan &sp = job.seqs[size_t(s)];
  sp.firstChunk = int64_t(job.order.size());
  const int64_t numSlots = int64_t(job.slots.size());
  std::vector<int64_t> begin(size_t(numSlots) + 1); // each slot's chunks
  int64_t mostChunks = 0;
  for (int64_t si = 0; si < numSlots; ++si) {
    const int64_t slot = job.slots[size_t(si)];
    begin[size_t(si)] = int64_t(job.chunks.size());
    // Routed: the slot's block (one: the sequence is one query block), if
    // the slot has active rows.
    int64_t qb = 0;
    if (job.routed) {
      qb = job.seqBlock[size_t(s)];
      while (qb < int64_t(job.blocks.size()) &&
             job.blocks[size_t(qb)].slotIndex != si)
        ++qb;
      if (qb == int64_t(job.blocks.size()))
        continue; // no active row: no chunk
    }
    const int64_t visited = visitedTiles(job, sp, slot, qb);
    const int64_t size = std::max(kMinChunkTiles,
                                  (visited + kMaxChunks - 1) / kMaxChunks);
    const int64_t count = std::max<int64_t>(1, (visited + size - 1) / size);
    mostChunks = std::max(mostChunks, count);
    if (count > 1)
      job.pairs.push_back({s, slot, int64_t(job.chunks.size()), count, qb});
    for (int64_t c = 0; c < count; ++c) {
      int64_t at = -1;
      if (count > 1) {
        at = int64_t(job.partials.size());
        job.partials.resize(job.partials.size() +
                            size_t(sp.nq * (job.d + 2)));
      }
      job.chunks.push_back(
          {slot, c * size, std::min(visited, c * size + size), at, qb});
    }
  }
  begin[size_t(numSlots)] = int64_t(job.chunks.size());
  // Tasks in (kv head, chunk, slot) order: the heads that share a kv head
  // run the same chunk one after another, and a worker converts its key
  // tiles once for all of them.
  std::vector<int64_t> bySlot(static_cast<size_t>(numSlots));
  std::iota(bySlot.begin(), bySlot.end(), 0);
  auto kvOf = [&](int64_t si) {
    return job.table.computedHead[job.slots[size_t(si)]] / job.groupSize;
  };
  std::stable_sort(bySlot.begin(), bySlot.end(),
                   [&](int64_t x, int64_t y) { return kvOf(x) < kvOf(y); });
  for (size_t g0 = 0; g0 < bySlot.size();) {
    size_t g1 = g0;
    while (g1 < bySlot.size() && kvOf(bySlot[g1]) == kvOf(bySlot[g0]))
      ++g1;
    for (int64_t c = 0; c < mostChunks; ++c)
      for (size_t i = g0; i < g1; ++i) {
        size_t si = size_t(bySlot[i]);
        if (begin[si] + c < begin[si + 1])
          job.order.push_back(begin[si] + c);
      }
    g0 = g1;
  }
  return int64_t(job.order.size()) - sp.firstChunk;
}

/// Whether sequence s's walks are split: a decode step (one query block of
/// at most kDecodeRows rows) over more key tiles than one chunk takes.
bool splits(const Job &job, const SeqPlan &sp) {
  const int64_t bk = job.a.blockK;
  return job.split && sp.nq > 0 && sp.nq <= kDecodeRows &&
         sp.nq <= job.a.blockQ &&
         (sp.kStart % bk + sp.nk + bk - 1) / bk > kMinChunkTiles;
}

/// Per-token head routing: sequence s's active rows of each launch slot,
/// cut into blocks whose rows span fewer than blockQ positions (so a block
/// walks about the tiles of one unrouted query block, with only its active
/// rows: a span of 4 blockQ cost windowed heads 0.69x of the unrouted time
/// at a quarter of the rows, blockQ 0.43x; docs/runtime.md); inactive
/// pairs of computed heads get O = 0 and LSE = -inf here (skipped heads:
/// writeSkippedHeads). A byte read per (row, slot).
void planRoutedBlocks(Job &job, int64_t s) {
  const LayerArgs &a = job.a;
  const SeqPlan &p = job.seqs[size_t(s)];
  const int64_t H = a.q.heads, bq = a.blockQ;
  std::vector<float> zeros(size_t(job.d), 0.0f);
  job.seqBlock[size_t(s)] = int64_t(job.blocks.size());
  for (size_t si = 0; si < job.slots.size(); ++si) {
    const int64_t hl = job.table.computedHead[job.slots[si]] - a.headStart;
    int64_t first = 0;
    for (int64_t i = 0; i < p.nq; ++i) {
      if (!a.headActive[(p.rowBase + i) * H + hl]) {
        store(a.o, p.oBase + i * a.o.strideSeq + hl * a.o.strideHead, job.d,
              zeros.data());
        if (a.lse)
          a.lse[p.lseBase + hl * job.lseHeadStride + i] = kNegInf;
        continue;
      }
      const int64_t at = int64_t(job.activeRows.size());
      if (job.blocks.size() == size_t(job.seqBlock[size_t(s)]) ||
          job.blocks.back().slotIndex != int64_t(si) || i - first >= bq) {
        job.blocks.push_back({at, at, int64_t(si)});
        first = i;
      }
      job.activeRows.push_back(i);
      job.blocks.back().end = at + 1;
    }
  }
  job.seqBlock[size_t(s) + 1] = int64_t(job.blocks.size());
}

/// The sequences of a call: their lengths, positions and offsets, and the
/// tasks (query blocks times launch slots, or chunks) before each.
void planSequences(Job &job) {
  const LayerArgs &a = job.a;
  const Sequences &q = a.seqs;
  int64_t n = q.count > 0 ? q.count : a.q.batch;
  job.seqs.resize(size_t(n));
  job.lseHeadStride = a.q.seq; // [B, H, Nq] or [H, T]
  job.routed = a.headActive != nullptr;
  if (job.routed)
    job.seqBlock.assign(size_t(n) + 1, 0);
  int64_t tasks = 0;
  for (int64_t s = 0; s < n; ++s) {
    SeqPlan &p = job.seqs[size_t(s)];
    int64_t row0 = q.cuQ ? q.cuQ[s] : 0;
    p.nq = q.cuQ ? q.cuQ[s + 1] - q.cuQ[s] : a.q.seq;
    p.qBase = q.cuQ ? row0 * a.q.strideSeq : s * a.q.strideBatch;
    p.oBase = q.cuQ ? row0 * a.o.strideSeq : s * a.o.strideBatch;
    p.lseBase = q.cuQ ? row0 : s * a.q.heads * a.q.seq;
    p.rowBase = q.cuQ ? row0 : s * a.q.seq;
    int64_t key0 = q.cuK ? q.cuK[s] : 0;
    p.nk = q.lensK ? q.lensK[s] : q.cuK ? q.cuK[s + 1] - q.cuK[s] : a.k.seq;
    p.kBase = q.cuK ? key0 * a.k.strideSeq : s * a.k.strideBatch;
    p.vBase = q.cuK ? key0 * a.v.strideSeq : s * a.v.strideBatch;
    p.kStart = q.kStart ? q.kStart[s] : 0;
    p.pStart = q.qStart ? q.qStart[s] : p.kStart + p.nk - p.nq;
    p.firstTask = tasks;
    if (job.routed)
      planRoutedBlocks(job, s);
    p.numTasks =
        splits(job, p) ? planSplit(job, s)
        : job.routed
            ? job.seqBlock[size_t(s) + 1] - job.seqBlock[size_t(s)]
            : (p.nq + a.blockQ - 1) / a.blockQ * int64_t(job.slots.size());
    tasks += p.numTasks;
  }
}

/// The scratch of one worker for the call's largest tiles; the key/value
/// cache (withCache: the walk's workers, not the merge's) holds as many
/// blocks as the longest sequence spans (at most kCacheBytes), left
/// uninitialised: every slot is written before it is read.
void prepareWorker(const Job &job, Worker &w, bool withCache) {
  const LayerArgs &a = job.a;
  // Rows for the largest query block of the call (a decode step's one row
  // needs kRows, not blockQ).
  int64_t rows = 1;
  for (const SeqPlan &p : job.seqs)
    rows = std::max(rows, std::min(p.nq, a.blockQ));
  w.rowsPad = roundUp(rows, kRows);
  w.full = w.partial = w.rowTiles = 0;
  w.walkStarts.assign(job.runs.size(), Worker::WalkStart{});
  w.colsPad = roundUp(a.blockK, kLanes);
  w.dPad = roundUp(job.d, kLanes);
  w.q.resize(w.rowsPad * w.dPad);
  if (withCache) {
    int64_t span = 1;
    for (const SeqPlan &p : job.seqs)
      span = std::max(span, (p.kStart % a.blockK + p.nk + a.blockK - 1) /
                                a.blockK);
    int64_t blockBytes = 2 * w.dPad * w.colsPad * int64_t(sizeof(float));
    w.slots = std::max<int64_t>(1, std::min(span, kCacheBytes / blockBytes));
    w.kT.resize(w.slots * w.dPad * w.colsPad);
    w.vb.resize(w.slots * w.colsPad * w.dPad);
    // The inputs may have changed since the worker's last call.
    w.cachedBatch = w.cachedKvHead = -1;
    w.tag.assign(w.slots, -1);
    w.nonFiniteV.assign(w.slots, 0);
    // One-row sequences' ring: at most the longest span of tiles.
    bool anyDirect = false;
    for (const SeqPlan &p : job.seqs)
      anyDirect |= readsDirect(a, p);
    w.ringSlots = anyDirect ? std::min(span, kRingTiles) : 0;
    w.ringK.resize(w.ringSlots * w.colsPad * w.dPad);
    w.ringV.resize(w.ringSlots * w.colsPad * w.dPad);
    w.ringBatch = w.ringKvHead = -1;
    w.ringTag.assign(w.ringSlots, -1);
  }
  w.keyRows.resize(kLanes * w.dPad);
  w.keyPtrs.resize(w.colsPad);
  w.valuePtrs.resize(w.colsPad);
  w.s.resize(w.rowsPad * w.colsPad);
  w.acc.resize((w.rowsPad + 1) * w.dPad);
  w.m.resize(w.rowsPad);
  w.l.resize(w.rowsPad);
  w.corr.resize(w.rowsPad);
  w.out.resize(w.rowsPad * w.dPad);
  w.keep.resize(w.rowsPad * w.colsPad);
  w.bias.resize(w.colsPad);
  w.biasLine.resize(w.rowsPad + w.colsPad);
}

/// Skipped heads of the tensors' range: O = 0 and LSE = -inf on every row.
void writeSkippedHeads(const Job &job) {
  const LayerArgs &a = job.a;
  const k::LayerTable &t = job.table;
  std::vector<bool> computed(size_t(t.numHeads), false);
  for (int64_t i = 0; i < t.numComputed; ++i)
    computed[size_t(t.computedHead[i])] = true;
  std::vector<float> zeros(size_t(job.d), 0.0f);
  for (const SeqPlan &p : job.seqs)
    for (int64_t hl = 0; hl < a.q.heads; ++hl) {
      if (computed[size_t(a.headStart + hl)])
        continue;
      for (int64_t i = 0; i < p.nq; ++i) {
        store(a.o, p.oBase + i * a.o.strideSeq + hl * a.o.strideHead, job.d,
              zeros.data());
        if (a.lse)
          a.lse[p.lseBase + hl * job.lseHeadStride + i] = kNegInf;
      }
    }
}

/// The key tiles of every (sequence, slot, query block), saturated, for
/// sizing a call's threads: a sequence of at most kDecodeRows rows (a
/// decode step's) counts a quarter of its tiles, whose one to 16 rows cost
/// a fraction of a full query block's.
int64_t keyTiles(const Job &job) {
  const int64_t bq = job.a.blockQ, bk = job.a.blockK;
  int64_t tiles = 0;
  for (const SeqPlan &p : job.seqs) {
    const int64_t n = k::mulSat(
        k::mulSat((p.nq + bq - 1) / bq, int64_t(job.slots.size())),
        (p.kStart % bk + p.nk + bk - 1) / bk);
    tiles = std::min<int64_t>(k::kUnbounded,
                              tiles + (p.nq <= kDecodeRows ? (n + 3) / 4 : n));
  }
  return tiles;
}

/// Runs task i; `s` is the sequence of the thread's previous task (tasks
/// are taken in increasing order, so the search is short).
void runTaskAt(Job &job, Worker &w, int64_t i, size_t &s) {
  while (s + 1 < job.seqs.size() && job.seqs[s + 1].firstTask <= i)
    ++s;
  while (job.seqs[s].firstTask > i)
    --s;
  const SeqPlan &p = job.seqs[s];
  int64_t rest = i - p.firstTask;
  if (p.firstChunk >= 0) {
    const Chunk &c = job.chunks[size_t(job.order[size_t(p.firstChunk + rest)])];
    runTask(job, w, int64_t(s), c.slot, c.qb, &c);
    return;
  }
  if (job.routed) { // the sequence's blocks, in slot order
    const int64_t b = job.seqBlock[s] + rest;
    runTask(job, w, int64_t(s),
            job.slots[size_t(job.blocks[size_t(b)].slotIndex)], b);
    return;
  }
  // Slot-major query blocks, so that a worker's consecutive tasks share
  // keys.
  int64_t qBlocks = (p.nq + job.a.blockQ - 1) / job.a.blockQ;
  runTask(job, w, int64_t(s), job.slots[size_t(rest / qBlocks)],
          rest % qBlocks);
}

/// This thread's worker, kept across calls (a persistent pool's threads
/// and the caller's allocate their scratch once), prepared for `job`.
Worker &threadWorker(const Job &job, bool withCache) {
  thread_local Worker w;
  prepareWorker(job, w, withCache);
  return w;
}

/// A worker keeps at most this much key/value cache between calls (a long
/// prefill's 64 MiB go back to the system).
constexpr int64_t kKeptCacheBytes = int64_t(4) << 20;

void releaseLargeCache(Worker &w) {
  if ((w.kT.size + w.vb.size) * int64_t(sizeof(float)) > kKeptCacheBytes) {
    w.kT.release();
    w.vb.release();
  }
}

/// The hardware threads, counted once: std::thread::hardware_concurrency
/// reads /sys on every call (6 us on the 2-core machine of
/// docs/PERFORMANCE.md, a third of a decode step over a short cache).
int hardwareThreads() {
  static const int n = int(std::max(1u, std::thread::hardware_concurrency()));
  return n;
}

/// TESSERA_CPU_SPLIT_KV=0 turns split-KV decode off (for benchmarks and
/// tests that compare the two walks); read by each call (tens of
/// nanoseconds).
bool splitAllowedByEnvironment() {
  const char *e = std::getenv("TESSERA_CPU_SPLIT_KV");
  return !e || std::strcmp(e, "0") != 0;
}

std::string checkArgs(const k::LayerTable &table, const LayerArgs &a) {
  for (auto [t, name] :
       {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}, {&a.o, "o"}})
    if (std::string e = checkTensor(*t, name); !e.empty())
      return e;
  int64_t kvHeads = a.numKvHeads > 0 ? a.numKvHeads : a.k.heads;
  if (a.headStart < 0 || a.q.heads > table.numHeads - a.headStart ||
      a.o.heads != a.q.heads)
    return "q and o must have " + std::to_string(table.numHeads) +
           " heads (the layer's) or a range of them, got " +
           std::to_string(a.q.heads) + " and " + std::to_string(a.o.heads) +
           " from head " + std::to_string(a.headStart);
  if (a.k.heads != a.v.heads || kvHeads < 1 || table.numHeads % kvHeads != 0)
    return "k and v must have the same number of heads, dividing the " +
           std::to_string(table.numHeads) + " query heads";
  int64_t g = table.numHeads / kvHeads;
  if (a.k.heads != (a.headStart + a.q.heads - 1) / g - a.headStart / g + 1)
    return "k and v must have the kv heads that q's heads read";
  if (a.seqs.count == 0) {
    if (a.k.seq != a.v.seq)
      return "k and v must have the same sequence length";
    if (a.o.seq != a.q.seq)
      return "o must have the query length";
    if (a.q.batch != a.k.batch || a.q.batch != a.v.batch ||
        a.q.batch != a.o.batch)
      return "q, k, v and o must have the same batch size";
  }
  if (a.q.headDim != a.k.headDim || a.q.headDim != a.v.headDim ||
      a.q.headDim != a.o.headDim)
    return "q, k, v and o must have the same head_dim";
  return checkBlocksAndScale(a.blockQ, a.blockK, a.scale);
}

} // namespace

std::string tessera::cpu::runLayer(const k::LayerTable &table,
                                   const LayerArgs &a, RunStats *stats) {
  if (std::string e = checkArgs(table, a); !e.empty())
    return e;
  // Each head group's run walker, shared by every worker.
  int64_t numGroups = 0;
  for (int64_t i = 0; i < table.numComputed; ++i)
    numGroups = std::max<int64_t>(numGroups, table.headGroup[i] + 1);
  std::vector<k::ProgramRuns> groupRuns;
  groupRuns.reserve(size_t(numGroups)); // allocations cost a decode step
  for (int64_t g = 0; g < numGroups; ++g)
    groupRuns.emplace_back(table.nodes + table.groupBegin[g],
                           table.groupBegin[g + 1] - table.groupBegin[g],
                           table.data);
  Job job(table, groupRuns, a);
  job.headFree.reserve(size_t(numGroups));
  for (int64_t g = 0; g < numGroups; ++g) {
    bool free = true;
    for (int64_t i = table.groupBegin[g]; i < table.groupBegin[g + 1]; ++i)
      free &= table.nodes[i].kind != k::kShards &&
              table.nodes[i].kind != k::kGroups;
    job.headFree.push_back(free);
  }
  job.d = a.q.headDim;
  job.groupSize = table.numHeads / (a.numKvHeads > 0 ? a.numKvHeads : a.k.heads);
  job.kvHead0 = a.headStart / job.groupSize;
  job.pageSize = a.k.seq;
  job.scale = a.scale > 0 ? a.scale : 1.0f / std::sqrt(float(job.d));
  job.slots.reserve(size_t(table.numComputed));
  for (int64_t i = 0; i < table.numComputed; ++i)
    if (table.computedHead[i] >= a.headStart &&
        table.computedHead[i] < a.headStart + a.q.heads)
      job.slots.push_back(i);
  job.split = a.splitKeys && splitAllowedByEnvironment();
  planSequences(job);
  if (a.writeSkipped)
    writeSkippedHeads(job);

  const int64_t tasks = job.seqs.empty() ? 0
                                         : job.seqs.back().firstTask +
                                               job.seqs.back().numTasks;
  int threads = a.numThreads > 0 ? a.numThreads : hardwareThreads();
  // Waking a thread costs microseconds: small calls keep to the threads
  // that 16 key tiles each pay for (64 of a decode step's, keyTiles: its
  // 32 one-row tiles over a 16-key cache took 18.8 us on one thread, 24.1
  // us on two, 2026-12-06; 128 of them, 250 and 244 us).
  threads = int(std::min<int64_t>(
      threads, std::max<int64_t>(1, std::min(tasks, keyTiles(job) / 16))));
  ThreadPool local; // no pool given: threads for this call only
  ThreadPool &pool = a.pool ? *a.pool : local;
  std::atomic<int64_t> next{0};
  pool.run(threads, [&] {
    Worker &w = threadWorker(job, /*withCache=*/true);
    size_t s = 0;
    if (threads == 1) // every task in order, without the shared counter
      for (int64_t i = 0; i < tasks; ++i)
        runTaskAt(job, w, i, s);
    else
      for (int64_t i; (i = next++) < tasks;)
        runTaskAt(job, w, i, s);
    job.full += w.full;
    job.partial += w.partial;
    job.rowTiles += w.rowTiles;
    releaseLargeCache(w);
  });
  // The split pairs' merges: a second pass once every chunk has run.
  const int64_t merges = int64_t(job.pairs.size());
  next = 0;
  if (merges > 0)
    pool.run(int(std::min<int64_t>(threads, merges)), [&] {
      Worker &w = threadWorker(job, /*withCache=*/false);
      for (int64_t i; (i = next++) < merges;)
        mergePair(job, w, job.pairs[size_t(i)]);
    });
  if (stats) {
    // Saturated (stride-0 shapes reach 2^40 key blocks).
    int64_t total = 0;
    for (const SeqPlan &p : job.seqs)
      total = std::min(k::kUnbounded,
                       total + k::mulSat(k::mulSat(a.q.heads, (p.nq + a.blockQ -
                                                               1) / a.blockQ),
                                         (p.nk + a.blockK - 1) / a.blockK));
    stats->tilesTotal = total;
    stats->tilesFull = job.full;
    stats->tilesPartial = job.partial;
    stats->rowTiles = job.rowTiles;
  }
  return "";
}
