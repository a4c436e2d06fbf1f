//===- cpu_bench.cpp - the CPU executor on shipped patterns ---------------===//
//
//   tessera-cpu-bench FILE --layer L --heads N --len 4096 [--dump DIR]
//                     [--backward]
//
// Times one layer of a pattern file (its first N computed heads; batch 1,
// fp32, head_dim 128) on the CPU executor with the layer's block schedule and
// with a dense schedule, and prints one JSON line. With --backward it also
// times the backward (cpu::runLayerBackward, sparse and dense, from the
// forward's LSE and a random dO). With --dump it writes what
// bench/torch_bench.py needs to run PyTorch on the same inputs and mask:
// q, k, v, our output (float32), the 64 x 64 tile classes and the dense mask,
// and with --backward dO and our dQ, dK, dV.
//
//===----------------------------------------------------------------------===//

#include "Timing.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Support/Progress.h"
#include "tessera/Transforms/HeadGroups.h"
#include "tessera/cpu/Backward.h"
#include "tessera/cpu/Executor.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>

using namespace tessera;
namespace cl = llvm::cl;

static cl::opt<std::string> file(cl::Positional, cl::Required);
static cl::opt<int64_t> layerIndex("layer", cl::init(0));
static cl::opt<int64_t> maxHeads("heads", cl::init(4));
static cl::opt<int64_t> len("len", cl::init(4096));
static cl::opt<int> repeats("repeats", cl::init(3));
static cl::opt<std::string> dump("dump", cl::init(""));
static cl::opt<bool> backward("backward", cl::init(false));

using tessera::bench::seconds;

static void write(const std::string &path, const void *data, size_t bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char *>(data), std::streamsize(bytes));
}

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv);
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  auto module = mlir::parseSourceFile<mlir::ModuleOp>(file, &ctx);
  if (!module)
    return 1;
  attn::LayerOp layer;
  module->walk([&](attn::LayerOp l) {
    if (l.getIndex() == layerIndex)
      layer = l;
  });
  if (!layer) {
    llvm::errs() << "no layer " << layerIndex << "\n";
    return 1;
  }
  // The first `maxHeads` computed heads, renumbered 0..n-1 in a layer of n
  // heads; head-dependent patterns keep their own head's mask by giving each
  // bench head its own group with the original head index semantics.
  std::vector<int64_t> picked;
  std::vector<semantics::Pattern> patterns;
  for (int64_t h = 0;
       h < layer.getNumHeads() && int64_t(picked.size()) < maxHeads; ++h) {
    attn::PatternAttrInterface p = layer.getHeadPattern(h);
    if (mlir::isa<attn::SkipAttr>(p) || p.isHeadDependent())
      continue;
    picked.push_back(h);
    patterns.push_back(semantics::fromAttr(p));
  }
  // Head-dependent layers (S2): keep them with their own head indices.
  if (picked.empty())
    for (int64_t h = 0;
         h < layer.getNumHeads() && int64_t(picked.size()) < maxHeads; ++h) {
      picked.push_back(h);
      patterns.push_back(semantics::fromAttr(layer.getHeadPattern(h)));
    }
  int64_t n = picked.size(), d = 128, bq = 64, bk = 64;
  bool headDependent = false;
  for (int64_t h : picked)
    headDependent |= layer.getHeadPattern(h).isHeadDependent();
  // For head-dependent patterns the bench layer keeps the original heads and
  // head count, computing only the picked ones through the dispatch table.
  int64_t numHeads = headDependent ? layer.getNumHeads() : n;
  std::vector<schedule::HeadGroup> groups, denseGroups;
  std::vector<int64_t> benchHead(n);
  for (int64_t i = 0; i < n; ++i) {
    benchHead[i] = headDependent ? picked[i] : i;
    groups.push_back({patterns[i], {benchHead[i]}});
    denseGroups.push_back(
        {semantics::Pattern{semantics::Dense{}}, {benchHead[i]}});
  }
  std::vector<int64_t> others;
  for (int64_t h = 0; h < numHeads; ++h)
    if (std::find(benchHead.begin(), benchHead.end(), h) == benchHead.end())
      others.push_back(h);
  if (!others.empty()) {
    groups.push_back({semantics::Pattern{semantics::Skip{}}, others});
    denseGroups.push_back({semantics::Pattern{semantics::Skip{}}, others});
  }
  schedule::LayerSchedule sparse, dense;
  std::string error;
  if (!schedule::buildLayerSchedule(groups, numHeads, sparse, error) ||
      !schedule::buildLayerSchedule(denseGroups, numHeads, dense, error)) {
    llvm::errs() << error << "\n";
    return 1;
  }

  int64_t L = len;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> dist(0, 1);
  size_t elems = size_t(L) * numHeads * d;
  std::vector<float> q(elems), k(elems), v(elems), o(elems);
  for (auto *x : {&q, &k, &v})
    for (float &f : *x)
      f = dist(rng);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, L, numHeads, d);
  args.k = cpu::contiguous(k.data(), cpu::DType::F32, 1, L, numHeads, d);
  args.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, L, numHeads, d);
  args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, L, numHeads, d);
  args.blockQ = bq;
  args.blockK = bk;
  cpu::RunStats stats;
  std::string err;
  // Sparse and dense alternate, one run each, `repeats` times: the speed-up
  // is the median of the pairwise ratios, so a slow spell of the machine
  // hits both sides of a pair alike.
  std::vector<double> ts, td, ratio;
  std::vector<float> oSparse;
  Progress progress("tessera-cpu-bench", repeats);
  for (int r = 0; r < repeats; ++r) {
    progress.step(r, "sparse/dense pair " + std::to_string(r + 1));
    ts.push_back(seconds(
        [&] { err = cpu::runLayer(sparse.table(), args, &stats); }, 1));
    if (!err.empty()) {
      llvm::errs() << err << "\n";
      return 1;
    }
    oSparse = o;
    td.push_back(seconds([&] { cpu::runLayer(dense.table(), args); }, 1));
    ratio.push_back(td.back() / ts.back());
  }
  progress.finish();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double tSparse = median(ts), tDense = median(td), speedup = median(ratio);
  // The backward, sparse and dense alternating like the forward, each from
  // its own forward's LSE.
  std::vector<float> dO(elems), dq(elems), dk(elems), dv(elems);
  std::vector<float> lseSparse(size_t(numHeads) * L), lseDense(lseSparse);
  double tSparseBwd = 0, tDenseBwd = 0, bwdSpeedup = 0;
  if (backward) {
    for (float &f : dO)
      f = dist(rng);
    cpu::LayerArgs f = args;
    f.lse = lseSparse.data();
    cpu::runLayer(sparse.table(), f);
    oSparse = o;
    f.lse = lseDense.data();
    std::vector<float> oDense(elems);
    f.o = cpu::contiguous(oDense.data(), cpu::DType::F32, 1, L, numHeads, d);
    cpu::runLayer(dense.table(), f);
    cpu::BackwardArgs b;
    b.q = args.q;
    b.k = args.k;
    b.v = args.v;
    b.dO = cpu::contiguous(dO.data(), cpu::DType::F32, 1, L, numHeads, d);
    b.dq = cpu::contiguous(dq.data(), cpu::DType::F32, 1, L, numHeads, d);
    b.dk = cpu::contiguous(dk.data(), cpu::DType::F32, 1, L, numHeads, d);
    b.dv = cpu::contiguous(dv.data(), cpu::DType::F32, 1, L, numHeads, d);
    b.blockQ = bq;
    b.blockK = bk;
    cpu::BackwardArgs bd = b;
    b.o = args.o;
    b.lse = lseSparse.data();
    bd.o = f.o;
    bd.lse = lseDense.data();
    std::vector<float> dqKeep, dkKeep, dvKeep;
    std::vector<double> bs, bdn, bratio;
    Progress bprogress("tessera-cpu-bench backward", repeats);
    for (int r = 0; r < repeats; ++r) {
      bprogress.step(r, "sparse/dense backward pair " + std::to_string(r + 1));
      bs.push_back(
          seconds([&] { err = cpu::runLayerBackward(sparse.table(), b); }, 1));
      if (!err.empty()) {
        llvm::errs() << err << "\n";
        return 1;
      }
      dqKeep = dq, dkKeep = dk, dvKeep = dv;
      bdn.push_back(
          seconds([&] { cpu::runLayerBackward(dense.table(), bd); }, 1));
      bratio.push_back(bdn.back() / bs.back());
    }
    bprogress.finish();
    dq = dqKeep, dk = dkKeep, dv = dvKeep;
    tSparseBwd = median(bs);
    tDenseBwd = median(bdn);
    bwdSpeedup = median(bratio);
  }
  int64_t tiles = n * ((L + bq - 1) / bq) * ((L + bk - 1) / bk);
  double visited = double(stats.tilesFull + stats.tilesPartial) / tiles;
  int64_t allowed = 0;
  for (int64_t i = 0; i < n; ++i)
    allowed +=
        semantics::countAllowed(patterns[i], benchHead[i], L, L, numHeads);
  std::printf(
      "{\"file\": \"%s\", \"layer\": %lld, \"heads\": %lld, \"len\": %lld, "
      "\"sparse_s\": %.6f, \"dense_s\": %.6f, \"speedup\": %.4f, "
      "\"tile_density\": %.6f, "
      "\"partial_tiles\": %.6f, \"mask_density\": %.6f, "
      "\"sparse_bwd_s\": %.6f, \"dense_bwd_s\": %.6f, "
      "\"bwd_speedup\": %.4f}\n",
      file.c_str(), (long long)layerIndex.getValue(), (long long)n,
      (long long)L, tSparse, tDense, speedup, visited,
      double(stats.tilesPartial) / tiles,
      double(allowed) / (double(n) * L * L), tSparseBwd, tDenseBwd,
      bwdSpeedup);

  if (!dump.empty()) {
    llvm::sys::fs::create_directories(dump);
    // The bench heads only, as [1, L, n, d].
    auto pick = [&](const std::vector<float> &x) {
      std::vector<float> out(size_t(L) * n * d);
      for (int64_t s = 0; s < L; ++s)
        for (int64_t i = 0; i < n; ++i)
          std::copy_n(&x[(s * numHeads + benchHead[i]) * d], d,
                      &out[(s * n + i) * d]);
      return out;
    };
    for (auto [name, x] :
         {std::pair{"q", &q}, {"k", &k}, {"v", &v}, {"o", &oSparse},
          {"do", &dO}, {"dq", &dq}, {"dk", &dk}, {"dv", &dv}}) {
      if (!backward && name[0] == 'd')
        continue;
      std::vector<float> p = pick(*x);
      write(dump + "/" + name + ".f32", p.data(), p.size() * 4);
    }
    int64_t qbs = (L + bq - 1) / bq, kbs = (L + bk - 1) / bk;
    std::vector<int8_t> classes(size_t(n) * qbs * kbs);
    std::vector<uint8_t> mask(size_t(n) * L * L);
    kernel::LayerTable t = sparse.table();
    for (int64_t i = 0; i < n; ++i) {
      int64_t slot = std::find(sparse.computedHead.begin(),
                               sparse.computedHead.end(), benchHead[i]) -
                     sparse.computedHead.begin();
      int64_t g = sparse.headGroup[slot];
      const kernel::Node *nodes = t.nodes + t.groupBegin[g];
      kernel::i64 count = t.groupBegin[g + 1] - t.groupBegin[g];
      for (int64_t a = 0; a < qbs; ++a)
        for (int64_t b = 0; b < kbs; ++b) {
          kernel::Tile tile{a * bq,
                            std::min(L, (a + 1) * bq),
                            b * bk,
                            std::min(L, (b + 1) * bk),
                            L,
                            L,
                            benchHead[i],
                            numHeads};
          classes[(i * qbs + a) * kbs + b] =
              int8_t(kernel::classifyTile(nodes, count, t.data, tile));
        }
      for (int64_t a = 0; a < L; ++a)
        for (int64_t b = 0; b < L; ++b)
          mask[(i * L + a) * L + b] = semantics::allowed(
              patterns[i], a, b, benchHead[i], L, L, numHeads);
    }
    write(dump + "/tiles.i8", classes.data(), classes.size());
    write(dump + "/mask.u8", mask.data(), mask.size());
    std::ofstream(dump + "/meta.json")
        << "{\"len\": " << L << ", \"heads\": " << n << ", \"head_dim\": " << d
        << ", \"block\": 64, \"backward\": " << (backward ? "true" : "false")
        << "}\n";
  }
  return 0;
}
