//===- Visited.cpp - visited tiles of a query range x key range -----------===//
//
// tessera_bundle_visited_tiles: how many tiles a layer's schedule visits in
// a rectangle of its tile grid, per head, for tools that split a sequence
// over devices (python/tessera/distributed.py: which (query shard, key
// shard) pairs to compute and exchange, and each shard's modelled work).
// The count comes from the runs of each query block of the rectangle,
// started at its first key block (ProgramRuns::runFrom), so the time is
// proportional to the rectangle's query blocks times their runs, never to
// its area.
//
//===----------------------------------------------------------------------===//

#include "Visited.h"

#include "tessera/kernel/ProgramRuns.h"

#include <algorithm>
#include <cstring>

using namespace tessera;
using namespace tessera::runtime;

namespace {

constexpr int64_t kMaxLen = int64_t(1) << 40, kMaxTile = int64_t(1) << 20;

std::string str(int64_t x) { return std::to_string(x); }

/// The lengths, tiles and the rectangle [qb0, qb1) x [kb0, kb1) of the
/// Tq x Tk grid.
tessera_status checkGrid(int64_t qLen, int64_t kLen, int64_t blockQ,
                         int64_t blockK, int64_t qb0, int64_t qb1,
                         int64_t kb0, int64_t kb1) {
  if (qLen < 1 || qLen > kMaxLen || kLen < 1 || kLen > kMaxLen)
    return setLastError(TESSERA_ERROR_INVALID_ARGUMENT,
                        "q_len and k_len must be in [1, 2^40], got " +
                            str(qLen) + " and " + str(kLen));
  if (blockQ < 1 || blockQ > kMaxTile || blockK < 1 || blockK > kMaxTile)
    return setLastError(TESSERA_ERROR_INVALID_ARGUMENT,
                        "block_q and block_k must be in [1, 2^20], got " +
                            str(blockQ) + " and " + str(blockK));
  const int64_t tq = (qLen + blockQ - 1) / blockQ,
                tk = (kLen + blockK - 1) / blockK;
  if (qb0 < 0 || qb1 < qb0 || qb1 > tq)
    return setLastError(TESSERA_ERROR_INVALID_ARGUMENT,
                        "q_block_begin " + str(qb0) + " and q_block_end " +
                            str(qb1) + " must satisfy 0 <= begin <= end <= " +
                            str(tq) + " (the query blocks)");
  if (kb0 < 0 || kb1 < kb0 || kb1 > tk)
    return setLastError(TESSERA_ERROR_INVALID_ARGUMENT,
                        "k_block_begin " + str(kb0) + " and k_block_end " +
                            str(kb1) + " must satisfy 0 <= begin <= end <= " +
                            str(tk) + " (the key blocks)");
  return TESSERA_OK;
}

/// Adds the partial and full tiles of query block qb in key blocks
/// [kb0, kb1) to counts[0] and counts[1].
void countBlock(const kernel::ProgramRuns &runs, const kernel::RunCtx &ctx,
                int64_t kb0, int64_t kb1, int64_t *counts) {
  for (kernel::Run r = runs.runFrom(ctx, kb0); kernel::isRun(r) && r.lo < kb1;
       r = runs.runFrom(ctx, r.hi + 1)) {
    const int64_t lo = std::max<int64_t>(r.lo, kb0),
                  hi = std::min<int64_t>(r.hi, kb1 - 1);
    if (lo <= hi && r.cls != kernel::kEmpty)
      counts[r.cls == kernel::kFull ? 1 : 0] += hi - lo + 1;
  }
}

} // namespace

extern "C" tessera_status tessera_bundle_visited_tiles(
    const tessera_bundle *bundle, int64_t layer, int64_t q_len, int64_t k_len,
    int64_t block_q, int64_t block_k, int64_t q_block_begin,
    int64_t q_block_end, int64_t k_block_begin, int64_t k_block_end,
    int64_t *out, size_t out_count) {
  setLastError(TESSERA_OK, "");
  if (!bundle || !out)
    return setLastError(TESSERA_ERROR_NULL_POINTER,
                        "bundle and out must not be null");
  const LayerDesc *l = bundleLayer(bundle, layer);
  if (!l)
    return setLastError(TESSERA_ERROR_LAYER_OUT_OF_RANGE,
                        "the bundle has no layer " + str(layer));
  if (tessera_status s =
          checkGrid(q_len, k_len, block_q, block_k, q_block_begin,
                    q_block_end, k_block_begin, k_block_end))
    return s;
  if (out_count < size_t(2 * l->numHeads))
    return setLastError(TESSERA_ERROR_SHAPE_MISMATCH,
                        "out holds " + std::to_string(out_count) +
                            " counts; the " + str(l->numHeads) +
                            " heads of layer " + str(layer) + " need " +
                            str(2 * l->numHeads));
  std::memset(out, 0, sizeof(int64_t) * size_t(2 * l->numHeads));
  for (const DynamicGroupDesc &g : l->dynamicGroups)
    for (kernel::i64 h : g.heads)
      out[2 * h] = out[2 * h + 1] = -1; // their tiles depend on the input
  for (size_t slot = 0; slot < l->computedHead.size(); ++slot) {
    const int64_t head = l->computedHead[slot], group = l->headGroup[slot];
    const kernel::i64 begin = l->groupBegin[size_t(group)];
    kernel::ProgramRuns runs(l->nodes.data() + begin,
                             l->groupBegin[size_t(group) + 1] - begin,
                             l->data.data());
    for (int64_t qb = q_block_begin; qb < q_block_end; ++qb) {
      const int64_t q0 = qb * block_q, q1 = std::min(q0 + block_q, q_len);
      kernel::RunCtx ctx = kernel::makeRunCtx(q0, q1, q_len, k_len, block_k,
                                              head, l->numHeads);
      countBlock(runs, ctx, k_block_begin, k_block_end, out + 2 * head);
    }
  }
  return TESSERA_OK;
}
