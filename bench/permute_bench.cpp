//===- permute_bench.cpp - a head in the original and a permuted order ----===//
//
//   tessera-permute-bench --pattern '#attn.multi_diagonal<stride = 1024,
//       width = 32>' --period 1024 [--prefix S | --kept a0,b0,...]
//       --len 16384
//       [--head H --num-heads N]
//       [--head-dim 128] [--num-threads 2] [--repeats 1]
//
// One head of `pattern` (head H of a layer of N heads, for head-dependent
// patterns), batch 1, fp32: the CPU executor's original order
// (cpu::runLayer) against the same head run in the period transpose
// (cpu::runPermutedGroup) on the same inputs, alternating one run each
// `repeats` times. Prints one JSON line: the tiles each order visits and
// their full/partial split, the median times and the median of the pairwise
// ratios, the shares of the permuted call's time spent gathering K and V
// and deriving its runs, whether they came in closed form, and the largest
// difference between the two outputs.
//
//===----------------------------------------------------------------------===//

#include "Timing.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Permuted.h"

#include "mlir/AsmParser/AsmParser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

using namespace tessera;
namespace cl = llvm::cl;

static cl::opt<std::string> pattern("pattern", cl::Required);
static cl::opt<int64_t> period("period", cl::Required);
static cl::opt<int64_t> prefix("prefix", cl::init(0),
                               cl::desc("tokens kept in place before the "
                                        "transposed segment"));
static cl::list<int64_t> kept("kept", cl::CommaSeparated,
                              cl::desc("kept ranges (interleaved segments), "
                                       "[begin, end) pairs"));
static cl::opt<int64_t> len("len", cl::init(16384));
static cl::opt<int64_t> head("head", cl::init(0));
static cl::opt<int64_t> numHeads("num-heads", cl::init(1));
static cl::opt<int64_t> headDim("head-dim", cl::init(128));
static cl::opt<int> threads("num-threads", cl::init(2));
static cl::opt<int> repeats("repeats", cl::init(1));

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The head's table: `head` computed (group 0), the other heads skipped.
bool buildTable(const semantics::Pattern &p, schedule::LayerSchedule &out) {
  std::vector<schedule::HeadGroup> groups = {{p, {head}}};
  std::vector<int64_t> others;
  for (int64_t h = 0; h < numHeads; ++h)
    if (h != head)
      others.push_back(h);
  if (!others.empty())
    groups.push_back({semantics::Pattern{semantics::Skip{}}, others});
  std::string error;
  if (schedule::buildLayerSchedule(groups, numHeads, out, error))
    return true;
  llvm::errs() << error << "\n";
  return false;
}

} // namespace

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv);
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  auto attr = llvm::dyn_cast_or_null<attn::PatternAttrInterface>(
      mlir::parseAttribute(pattern, &ctx));
  if (!attr || head < 0 || head >= numHeads) {
    llvm::errs() << "need a pattern and 0 <= head < num-heads\n";
    return 1;
  }
  schedule::LayerSchedule table;
  if (!buildTable(semantics::fromAttr(attr), table))
    return 1;
  int64_t L = len, d = headDim, H = numHeads;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> dist(0, 1);
  size_t elems = size_t(L) * H * d;
  std::vector<float> q(elems), k(elems), v(elems), o(elems), oPerm(elems);
  for (auto *x : {&q, &k, &v})
    for (float &f : *x)
      f = dist(rng);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, L, H, d);
  args.k = cpu::contiguous(k.data(), cpu::DType::F32, 1, L, H, d);
  args.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, L, H, d);
  args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, L, H, d);
  args.numThreads = threads;
  args.writeSkipped = false;
  cpu::LayerArgs permArgs = args;
  permArgs.o = cpu::contiguous(oPerm.data(), cpu::DType::F32, 1, L, H, d);

  std::vector<double> to, tp, ratio, gather, runsShare;
  cpu::RunStats so, sp;
  cpu::PermutedInfo info;
  std::string err;
  for (int r = 0; r < repeats; ++r) {
    so = sp = cpu::RunStats();
    to.push_back(tessera::bench::seconds(
        [&] { err = cpu::runLayer(table.table(), args, &so); }, 1));
    if (err.empty())
      tp.push_back(tessera::bench::seconds(
          [&] {
            err = cpu::runPermutedGroup(
                table.table(), 0,
                layout::PeriodTranspose{
                    period, prefix,
                    std::vector<int64_t>(kept.begin(), kept.end())},
                permArgs, &sp, &info);
          },
          1));
    if (!err.empty()) {
      llvm::errs() << err << "\n";
      return 1;
    }
    ratio.push_back(to.back() / tp.back());
    gather.push_back(info.gatherSeconds / info.totalSeconds);
    runsShare.push_back(info.runsSeconds / info.totalSeconds);
  }
  double maxDiff = 0;
  for (int64_t t = 0; t < L; ++t)
    for (int64_t x = 0; x < d; ++x) {
      size_t i = (size_t(t) * H + head) * d + x;
      maxDiff = std::max(maxDiff, double(std::abs(o[i] - oPerm[i])));
    }
  int64_t tiles = ((L + 63) / 64) * ((L + 63) / 64);
  std::string keptJson = "[";
  for (size_t i = 0; i < kept.size(); ++i)
    keptJson += (i ? ", " : "") + std::to_string(kept[i]);
  keptJson += "]";
  std::printf(
      "{\"pattern\": \"%s\", \"period\": %lld, \"prefix\": %lld, "
      "\"kept\": %s, "
      "\"len\": %lld, \"head_dim\": %lld, \"threads\": %d, \"tiles\": %lld, "
      "\"original\": {\"visited\": %lld, \"full\": %lld, \"partial\": "
      "%lld, \"s\": %.4f}, \"permuted\": {\"visited\": %lld, \"full\": "
      "%lld, \"partial\": %lld, \"s\": %.4f, "
      "\"gather_share\": %.4f, \"runs_share\": %.4f, \"closed_form\": %s}, "
      "\"speedup\": %.3f, \"max_abs_diff\": %.3g}\n",
      pattern.c_str(), (long long)period, (long long)prefix, keptJson.c_str(),
      (long long)L, (long long)d, int(threads), (long long)tiles,
      (long long)(so.tilesFull + so.tilesPartial), (long long)so.tilesFull,
      (long long)so.tilesPartial, median(to),
      (long long)(sp.tilesFull + sp.tilesPartial), (long long)sp.tilesFull,
      (long long)sp.tilesPartial, median(tp), median(gather), median(runsShare),
      info.closedForm ? "true" : "false", median(ratio), maxDiff);
  return 0;
}
