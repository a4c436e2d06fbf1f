//===- EmulatorSeqTest.cpp - the `_seq` kernels under the emulator --------===//
//
// The per-sequence twins of the attention kernels (FlashForward.cuh's
// pipeForward with SEQ) run every mode of tessera_attention_desc under the
// thread-block emulator, with the runtime's own planning (SeqLaunch.h:
// AttnParams and grids from the description), against SeqCalls.h's
// float64 reference of the tiny-mix layer evaluated at each sequence's
// positions: packed ragged batches with empty sequences, static caches
// with NaN in unfilled rows, packed keys, paged caches with shuffled pages
// (sizes 16 and 256) and NaN in unused ones, decode with 1 and 16 queries,
// query and key offsets on and off multiples of 64, Nq < Nk and Nq > Nk,
// head ranges, LSE layouts. Out-of-range device arrays (which the host
// cannot read on CUDA) give NaN rows, never reads outside the tensors.
// Deliberately wrong plans must fail the same comparison.
//
//===----------------------------------------------------------------------===//

#include "tessera/kernel/Emulate.h"
#include "tessera/kernel/Program.h"
#include "tessera/kernel/SeqLaunch.h"

#include "SeqCalls.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

using namespace tessera;
using namespace tessera::seqcalls;
namespace json = llvm::json;

namespace {

/// tiny-mix's layer 0 as the runtime reads it from the manifest.
struct LayerKernels {
  std::vector<std::pair<std::string, int64_t>> kernels; ///< name, slots
  std::string fill;
  int64_t skipped = 0, blockQ = 0, threads = 0, position = 0;
};

LayerKernels tinyMixLayer0() {
  LayerKernels l;
  std::string path =
      std::string(TESSERA_BINARY_DIR) + "/test/bundles/tiny-mix/manifest.json";
  auto buf = llvm::MemoryBuffer::getFile(path);
  EXPECT_TRUE(bool(buf)) << path;
  if (!buf)
    return l;
  llvm::Expected<json::Value> m = json::parse((*buf)->getBuffer());
  EXPECT_TRUE(bool(m));
  if (!m)
    return l;
  const json::Object &layer =
      *(*m->getAsObject()->getArray("layers"))[0].getAsObject();
  for (const json::Value &k : *layer.getArray("kernels"))
    l.kernels.push_back({k.getAsObject()->getString("name")->str(),
                         *k.getAsObject()->getInteger("slots")});
  l.fill = layer.getString("fill_kernel").value_or("").str();
  l.skipped = int64_t(layer.getArray("skipped_heads")->size());
  l.blockQ = *layer.getInteger("kernel_block_q");
  l.threads = *layer.getInteger("kernel_threads");
  l.position = *layer.getInteger("position");
  return l;
}

/// Launches a built call's `_seq` kernels as runCudaSeq does, split as
/// `split` says (its workspace poisoned first: every entry the merge reads
/// must have been written); `tweak` may change the planned arguments (the
/// broken plans).
void launchSeq(const Built &b, int64_t numSeqs,
               const std::function<void(kernel::AttnParams &)> &tweak = {},
               kernel::SplitPlan split = {}) {
  LayerKernels l = tinyMixLayer0();
  kernel::AttnParams p = kernel::makeAttnParams(b.d, H, Hkv, D, numSeqs);
  std::vector<float> workspace;
  int64_t computed = 0;
  for (const auto &k : l.kernels)
    computed += k.second;
  if (split.splits > 1) {
    workspace.assign(size_t(kernel::splitWorkspaceBytes(b.d, numSeqs, b.heads,
                                                        D, split) /
                            4),
                     std::numeric_limits<float>::quiet_NaN());
    kernel::setSplitParams(p, b.d, numSeqs, l.blockQ, b.heads, D, split,
                           workspace.data());
  }
  if (tweak)
    tweak(p);
  auto &reg = tessera_emu::registry();
  for (const auto &[name, slots] : l.kernels) {
    auto fn = reg.find("tiny-mix/" + name + "_seq");
    ASSERT_NE(fn, reg.end()) << name << "_seq";
    kernel::SeqGrid g = kernel::seqAttentionGrid(b.d, numSeqs, l.blockQ, slots,
                                                 split.splits);
    if (g.x == 0 || g.z == 0)
      continue;
    tessera_emu::launch([&] { fn->second(&p, int(l.position)); },
                        dim3{unsigned(g.x), unsigned(g.y), unsigned(g.z)},
                        dim3{unsigned(l.threads), 1, 1});
  }
  if (split.splits > 1) {
    auto merge = reg.find("tiny-mix/tessera_merge_bf16_d64");
    ASSERT_NE(merge, reg.end());
    kernel::SeqGrid g = kernel::seqMergeGrid(b.d, numSeqs, computed);
    if (g.x > 0)
      tessera_emu::launch([&] { merge->second(&p, int(l.position)); },
                          dim3{unsigned(g.x), 1, 1}, dim3{128, 1, 1});
  }
  ASSERT_EQ(l.skipped, 0) << "tiny-mix layer 0 computes every head";
}

/// The inputs, already bf16 values (the kernels' dtype), so that the
/// reference sees what the kernels read.
Logical logical(std::vector<Seq> seqs, uint64_t seed) {
  return makeLogical(std::move(seqs), seed, /*bf16=*/true);
}

int64_t seqCount(const Built &b) {
  return b.d.cu_seqlens_q || b.d.num_seqs ? b.d.num_seqs : b.d.q.batch;
}

/// Runs `l` in layout `lay` (bf16: the kernels' dtype) and returns the
/// number of output and LSE elements off the float64 reference (the first
/// five reported when `report`); rows no sequence owns must keep the
/// sentinel.
int64_t mismatches(const Logical &l, Layout lay, bool report = true,
                   const std::function<void(kernel::AttnParams &)> &tweak = {},
                   kernel::SplitPlan split = {}) {
  lay.bf16 = true;
  Built b = build(l, lay);
  launchSeq(b, seqCount(b), tweak, split);
  Reference r = reference(l, 1.0 / std::sqrt(double(D)));
  // bf16 inputs and probabilities (2^-9 relative each) on outputs of
  // magnitude up to 2; the LSE from fp32 and ex2.approx.
  return countMismatches(l, b, r, Tolerance{3e-2, 1e-3, 1e-3},
                         [&](const std::string &m) {
                           if (report)
                             ADD_FAILURE() << m;
                         });
}

void check(const Logical &l, const Layout &lay) {
  EXPECT_EQ(mismatches(l, lay), 0);
}

TEST(EmulatorSeq, DenseWithPositions) {
  // Bottom-right (no arrays) through the _seq kernel, then offsets on and
  // off multiples of 64, Nq < Nk and Nq > Nk.
  Layout withLse;
  check(logical({{70, 70}, {70, 70}}, 1), withLse);
  check(logical({{20, 150, 64, 0}, {20, 150, 300, 64}}, 2), withLse);
  check(logical({{150, 40, 37, 5}, {150, 40, 200, 131}}, 3), withLse);
  check(logical({{90, 200, 500, 333}}, 4), withLse);
}

TEST(EmulatorSeq, PackedRaggedBatches) {
  Layout lay;
  lay.q = QLayout::Packed;
  lay.k = KLayout::Packed;
  // Empty sequences, sequences shorter and longer than a block, one
  // starting inside a block of the packed rows.
  check(logical({{0, 0}, {130, 130}, {1, 7}, {0, 5}, {200, 60, 9, 100},
                     {5, 300}},
                    5),
        lay);
  lay.k = KLayout::Lengths;
  check(logical({{40, 100}, {3, 0}, {129, 129}}, 6), lay);
}

TEST(EmulatorSeq, StaticCacheLengths) {
  Layout lay;
  lay.k = KLayout::Lengths; // rows past each length hold NaN
  check(logical({{16, 90}, {16, 3}, {16, 200}}, 7), lay);
  check(logical({{1, 77, 76, 0}, {1, 300, 299, 0}}, 8), lay); // decode
}

TEST(EmulatorSeq, PagedCaches) {
  for (int64_t ps : {16, 256}) {
    SCOPED_TRACE("page size " + std::to_string(ps));
    Layout lay;
    lay.k = KLayout::Paged;
    lay.pageSize = ps;
    // Decode with 1 and 16 queries (dense queries: one count a call).
    check(logical({{1, 300}, {1, 555}, {1, 1}, {1, 40}}, 9), lay);
    check(logical({{16, 300}, {16, 555}, {16, 16}}, 19), lay);
    lay.q = QLayout::Packed;
    check(logical({{1, 300}, {0, 12}, {16, 555, 700, 160},
                       {100, 100, 0, 0}},
                      10),
          lay);
  }
}

TEST(EmulatorSeq, HeadRanges) {
  for (auto [h0, n] : {std::pair{0, 2}, {2, 3}, {4, 2}, {5, 1}}) {
    SCOPED_TRACE("heads " + std::to_string(h0) + " + " + std::to_string(n));
    Layout lay;
    lay.h0 = h0;
    lay.n = n;
    check(logical({{70, 130, 61, 0}, {70, 130}}, 11), lay);
    lay.q = QLayout::Packed;
    lay.k = KLayout::Paged;
    check(logical({{33, 90}, {0, 4}, {1, 200}}, 12), lay);
  }
}

/// Split-KV decode: each sequence's key tiles cut into ranges of 1, 2 or
/// 3 tiles (ranges past a sequence's keys empty), partials merged by LSE;
/// the same results as the reference, for dense and paged caches, packed
/// and dense queries, positions and head ranges. The planner splits decode
/// calls with few blocks and not prefill.
TEST(EmulatorSeq, SplitKvDecode) {
  for (int64_t tiles : {1, 2, 3}) {
    SCOPED_TRACE("tiles per split " + std::to_string(tiles));
    kernel::SplitPlan split{(700 + 63) / 64 / tiles + 2, tiles};
    Layout paged;
    paged.k = KLayout::Paged;
    EXPECT_EQ(mismatches(logical({{1, 300}, {1, 555}, {1, 1}, {1, 40}}, 21),
                         paged, true, {}, split),
              0);
    paged.q = QLayout::Packed;
    EXPECT_EQ(mismatches(logical({{16, 300}, {0, 9}, {3, 555, 700, 160},
                                  {1, 64, 0, 1}},
                                 22),
                         paged, true, {}, split),
              0);
    Layout range = paged;
    range.h0 = 1;
    range.n = 4;
    EXPECT_EQ(mismatches(logical({{2, 130, 500, 37}, {1, 700}}, 23), range,
                         true, {}, split),
              0);
    Layout dense;
    EXPECT_EQ(mismatches(logical({{16, 200}, {16, 200}}, 24), dense, true, {},
                         split),
              0);
  }
  // Splits that cover too few tiles (1 a split where the plan has 2): the
  // keys past them are lost.
  kernel::SplitPlan split{8, 2};
  Layout paged;
  paged.k = KLayout::Paged;
  EXPECT_GT(mismatches(logical({{1, 300}, {1, 555}}, 25), paged, false,
                       [](kernel::AttnParams &p) { p.splitTiles = 1; }, split),
            0);
  // A bad sequence's NaN partials survive the merge; the others do not
  // see them.
  paged.bf16 = true;
  Built b = build(logical({{1, 300}, {1, 555}}, 26), paged);
  b.lens[1] = -7;
  launchSeq(b, 2, {}, split);
  for (int64_t h = 0; h < H; ++h) {
    EXPECT_TRUE(std::isnan(b.out(b.oAt(1, 0, h))));
    EXPECT_TRUE(std::isnan(b.lse[b.lseAt(1, 0, h)]));
    EXPECT_FALSE(std::isnan(b.out(b.oAt(0, 0, h))));
  }
  // The planner: decode over a long cache splits, prefill does not.
  tessera_attention_desc d{};
  d.q.seq = 1;
  d.k.seq = 32768;
  EXPECT_GT(kernel::planSplitKv(d, 4, 128, 6).splits, 1);
  d.q.seq = 512;
  EXPECT_EQ(kernel::planSplitKv(d, 4, 128, 6).splits, 1);
}

/// A bad device array cannot be refused by the host on CUDA: the kernels
/// give the sequence's rows NaN (o and LSE) without reading through the
/// bad entries; the other sequences are unaffected. A bad block-table entry
/// is seen by the query blocks whose walk reaches it (`someRows`): their
/// rows are NaN, the others' correct.
TEST(EmulatorSeq, BadDeviceArraysGiveNaNRows) {
  Logical l = logical({{20, 100}, {20, 100}}, 13);
  auto nanRows = [&](const std::function<void(Built &)> &edit,
                     const Layout &lay, bool someRows = false) {
    Layout bf = lay;
    bf.bf16 = true;
    Built b = build(l, bf);
    edit(b);
    launchSeq(b, seqCount(b));
    int64_t nan0 = 0, fine0 = 0, fine1 = 0;
    Reference r = reference(l, 1.0 / std::sqrt(double(D)));
    auto fine = [&](int64_t s, int64_t i, int64_t h) {
      return std::abs(b.out(b.oAt(s, i, h)) -
                      r.o[size_t(s)][size_t((i * H + h) * D)]) <= 3e-2;
    };
    for (int64_t i = 0; i < 20; ++i)
      for (int64_t h = 0; h < H; ++h) {
        nan0 += std::isnan(b.out(b.oAt(0, i, h))) &&
                std::isnan(b.lse[b.lseAt(0, i, h)]);
        fine0 += fine(0, i, h);
        fine1 += fine(1, i, h);
      }
    if (someRows) {
      EXPECT_GT(nan0, 0) << "a row that reads the bad entry is NaN";
      EXPECT_EQ(nan0 + fine0, 20 * H) << "the others are correct";
    } else {
      EXPECT_EQ(nan0, 20 * H) << "sequence 0's rows are NaN";
    }
    EXPECT_EQ(fine1, 20 * H) << "sequence 1 is unaffected";
  };
  Layout paged;
  paged.k = KLayout::Paged;
  nanRows([](Built &b) { b.table[0] = 1 << 20; }, paged, true); // no page
  nanRows([](Built &b) { b.table[1] = -1; }, paged, true);
  nanRows([](Built &b) { b.lens[0] = 1 << 30; }, paged); // past the table
  Layout lengths;
  lengths.k = KLayout::Lengths;
  nanRows([](Built &b) { b.lens[0] = -3; }, lengths);
  Layout positioned;
  nanRows(
      [](Built &b) {
        b.kStart[0] = -64;
        b.d.k_start = b.kStart.data();
      },
      positioned);
  nanRows(
      [](Built &b) {
        b.qStart[0] = int64_t(1) << 41;
        b.d.q_start = b.qStart.data();
      },
      positioned);
  nanRows( // the first row below 2^40, the last one past it
      [](Built &b) {
        b.qStart[0] = (int64_t(1) << 40) - 5;
        b.d.q_start = b.qStart.data();
      },
      positioned);
  Layout packed;
  packed.q = QLayout::Packed;
  packed.k = KLayout::Packed;
  nanRows([](Built &b) { b.cuK[0] = b.cuK[1] + 1; }, packed); // decreasing
}

/// Plans that break one part of the mapping must fail the comparison: the
/// test sees each field.
TEST(EmulatorSeq, BrokenPlansFail) {
  Logical l = logical({{20, 150, 64, 3}, {1, 300}, {16, 40}}, 14);
  Layout paged;
  paged.k = KLayout::Paged;
  paged.q = QLayout::Packed;
  EXPECT_EQ(mismatches(l, paged, true), 0);
  // Table rows a wrong distance apart.
  EXPECT_GT(mismatches(l, paged, false,
                       [](kernel::AttnParams &p) { p.pageStride -= 1; }),
            0);
  // Key positions ignored (every sequence's keys from 0).
  EXPECT_GT(mismatches(l, paged, false,
                       [](kernel::AttnParams &p) { p.kStart = nullptr; }),
            0);
  // Query positions ignored (bottom-right alignment).
  EXPECT_GT(mismatches(l, paged, false,
                       [](kernel::AttnParams &p) { p.qStart = nullptr; }),
            0);
  // The head range read as the layer's first heads.
  Layout range = paged;
  range.h0 = 3;
  range.n = 2;
  EXPECT_EQ(mismatches(l, range, true), 0);
  EXPECT_GT(mismatches(l, range, false,
                       [](kernel::AttnParams &p) { p.headStart = 0; }),
            0);
  // Packed queries read as dense rows of entry 0.
  EXPECT_GT(mismatches(l, paged, false,
                       [](kernel::AttnParams &p) { p.numSeqs = 1; }),
            0);
}

} // namespace
