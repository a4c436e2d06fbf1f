//===- runs_bench.cpp - one head of one pattern on the CPU at long lengths ===//
//
//   tessera-runs-bench --pattern '#attn.a_shape<sink = 64, before = 1024>'
//       --len 131072 [--head-dim 64] [--num-threads 2] [--repeats 3]
//
// Times one head (batch 1, fp32, Nq = Nk = len, 64 x 64 tiles) on the CPU
// executor, and, where the executor walks runs, the run enumeration alone
// (every query block's walk, no attention). Prints one JSON line.
//
//===----------------------------------------------------------------------===//

#include "Timing.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Executor.h"
#if __has_include("tessera/kernel/ProgramRuns.h")
#include "tessera/kernel/ProgramRuns.h"
#define TESSERA_HAS_RUNS 1
#endif

#include "mlir/AsmParser/AsmParser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>

using namespace tessera;
namespace cl = llvm::cl;

static cl::opt<std::string> pattern("pattern", cl::Required);
static cl::opt<int64_t> len("len", cl::init(32768));
static cl::opt<int64_t> headDim("head-dim", cl::init(64));
static cl::opt<int> threads("num-threads", cl::init(2));
static cl::opt<int> repeats("repeats", cl::init(3));

using tessera::bench::seconds;

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv);
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  auto attr = llvm::dyn_cast_or_null<attn::PatternAttrInterface>(
      mlir::parseAttribute(pattern, &ctx));
  if (!attr) {
    llvm::errs() << "not a pattern: " << pattern << "\n";
    return 1;
  }
  schedule::LayerSchedule table;
  std::string error;
  if (!schedule::buildLayerSchedule({{semantics::fromAttr(attr), {0}}}, 1,
                                    table, error)) {
    llvm::errs() << error << "\n";
    return 1;
  }
  int64_t L = len, d = headDim;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> dist(0, 1);
  size_t elems = size_t(L) * d;
  std::vector<float> q(elems), k(elems), v(elems), o(elems);
  for (auto *x : {&q, &k, &v})
    for (float &f : *x)
      f = dist(rng);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, L, 1, d);
  args.k = cpu::contiguous(k.data(), cpu::DType::F32, 1, L, 1, d);
  args.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, L, 1, d);
  args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, L, 1, d);
  args.numThreads = threads;
  cpu::RunStats stats;
  std::string err;
  double t = seconds([&] { err = cpu::runLayer(table.table(), args, &stats); },
                     repeats);
  if (!err.empty()) {
    llvm::errs() << err << "\n";
    return 1;
  }
  double tEnum = -1;
  int64_t runs = 0;
#ifdef TESSERA_HAS_RUNS
  kernel::ProgramRuns walker(table.nodes.data(), table.nodes.size(),
                             table.data.data());
  tEnum = seconds(
      [&] {
        runs = 0;
        for (int64_t q0 = 0; q0 < L; q0 += 64) {
          kernel::RunCtx c =
              kernel::makeRunCtx(q0, std::min(q0 + 64, L), L, L, 64, 0, 1);
          for (kernel::i64 kb = 0;; ++runs) {
            kernel::Run r = walker.runFrom(c, kb);
            if (!kernel::isRun(r))
              break;
            kb = r.hi + 1;
          }
        }
      },
      repeats);
#endif
  std::printf("{\"pattern\": \"%s\", \"len\": %lld, \"seconds\": %.6f, "
              "\"tiles_full\": %lld, \"tiles_partial\": %lld, \"runs\": %lld, "
              "\"enumeration_s\": %.6f}\n",
              pattern.c_str(), (long long)L, t, (long long)stats.tilesFull,
              (long long)stats.tilesPartial, (long long)runs, tEnum);
  return 0;
}
