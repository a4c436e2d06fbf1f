//===- dynamic_bench.cpp - dynamic patterns on the CPU: index and attention ==//
//
//   tessera-dynamic-bench --len 32768 [--head-dim 128] [--repeats 3]
//                         [--families vs,bt,rt,dense]
//
// One head of LLM-like Q/K/V (locality of ~64 tokens from random Fourier
// features, 4 attention sinks and 16 vertical key columns planted, noise
// elsewhere; seed 0) at the given length, causal. Times
//   * the vertical-slash index (MInference's budgets: last_q 64, vertical
//     1000, slash 6096, 30 forced columns, 100 forced diagonals) and the
//     attention over it in contiguous and gathered tiles;
//   * the block top-k index (block 64, gamma 0.9, at least 16 blocks)
//     specialised to a block-sparse pattern and run by the CPU executor;
//   * routing (16 clusters, 2 k-means iterations on the keys) by segments;
//   * the same head dense (causal) with the CPU executor;
// and prints one JSON line: times, the index build's share of the sparse
// attention, speed-ups over dense, and the recall of the dense mass on the
// last 256 rows (float64, exact for those rows). Times are medians of
// `repeats`, sparse and dense alternating.
//
//===----------------------------------------------------------------------===//

#include "Timing.h"

#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Specialize.h"
#include "tessera/Support/Npy.h"
#include "tessera/Support/Progress.h"
#include "tessera/cpu/Dynamic.h"
#include "tessera/cpu/Executor.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <thread>

using namespace tessera;
namespace cl = llvm::cl;

static cl::opt<int64_t> len("len", cl::init(32768));
static cl::opt<int64_t> headDimOpt("head-dim", cl::init(128));
static cl::opt<int> repeats("repeats", cl::init(3));
static cl::opt<std::string>
    families("families", cl::init("vs,bt,rt,dense"),
             cl::desc("what to time (comma-separated: vs, bt, rt, dense); "
                      "skipped ones print 0 (long lengths: dense and the "
                      "vertical-slash attention take minutes)"));
static cl::opt<std::string>
    dumpDir("dump",
            cl::desc("also write q, k, v, the vertical-slash index "
                     "and its output here (for bench/flex_dynamic.py)"),
            cl::init(""));

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv, "dynamic pattern benchmark\n");
  const int64_t n = len, d = headDimOpt;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  const size_t elems = static_cast<size_t>(n * d);
  std::vector<float> q(elems), k(elems), v(elems);
  for (auto *x : {&q, &k, &v})
    for (float &e : *x)
      e = normal(rng);
  // Planted structure. Locality: random Fourier features of a Gaussian
  // kernel of width ~64 tokens (logit ~12 exp(-(i - j)^2 / 2 64^2), no
  // periodic peaks), in the first 2 f dimensions; then sinks (logit ~11)
  // and columns (~9). Noise of logit std ~0.25 elsewhere: at long lengths
  // the planted peaks carry most of the mass, as in real heads.
  const int f = 24;
  std::vector<double> freqs(f);
  for (int i = 0; i < f; ++i)
    freqs[size_t(i)] = normal(rng) / 64.0;
  for (auto *x : {&q, &k})
    for (float &e : *x)
      e *= 0.3f;
  double amp = std::sqrt(12.0 * std::sqrt(double(d)) / f);
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < f; ++i) {
      float c = float(amp * std::cos(freqs[size_t(i)] * double(r)));
      float s = float(amp * std::sin(freqs[size_t(i)] * double(r)));
      q[size_t(r * d + 2 * i)] = k[size_t(r * d + 2 * i)] = c;
      q[size_t(r * d + 2 * i + 1)] = k[size_t(r * d + 2 * i + 1)] = s;
    }
  std::vector<int64_t> planted = {0, 1, 2, 3};
  std::uniform_int_distribution<int64_t> col(4, n - 1);
  for (int i = 0; i < 16; ++i)
    planted.push_back(col(rng));
  float g = float(std::sqrt(11.0 * std::sqrt(double(d))));
  for (int64_t r = 0; r < n; ++r)
    q[size_t(r * d + 2 * f)] = g;
  for (int64_t c : planted)
    k[size_t(c * d + 2 * f)] = c < 4 ? g : 0.82f * g;

  cpu::Rows qr{q.data(), n, d}, kr{k.data(), n, d}, vr{v.data(), n, d};
  float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> o(elems), lse(static_cast<size_t>(n));

  auto runSchedule = [&](const semantics::Pattern &p) {
    schedule::LayerSchedule table;
    std::string error;
    if (!schedule::buildLayerSchedule({{p, {0}}}, 1, table, error)) {
      llvm::errs() << error << "\n";
      std::exit(1);
    }
    cpu::LayerArgs args;
    args.q = cpu::contiguous(q.data(), cpu::DType::F32, 1, n, 1, d);
    args.k = cpu::contiguous(k.data(), cpu::DType::F32, 1, n, 1, d);
    args.v = cpu::contiguous(v.data(), cpu::DType::F32, 1, n, 1, d);
    args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, n, 1, d);
    args.lse = lse.data();
    std::string err = cpu::runLayer(table.table(), args);
    if (!err.empty()) {
      llvm::errs() << err << "\n";
      std::exit(1);
    }
  };

  const cpu::VerticalSlashParams vs{64, 1000, 6096, 30, 100};
  cpu::VerticalSlashIndex index;
  cpu::BlockTopkIndex blocks;
  std::vector<double> tVsIndex, tVsAttn, tBtIndex, tBtAttn, tDense, tRtIndex,
      tRtAttn;
  cpu::RoutingIndex route;
  int64_t routeTiles = 0;
  cpu::TileCounts tiles;
  Progress progress("tessera-dynamic-bench", repeats);
  auto timed = [&](const char *family) {
    return ("," + families + ",").find(std::string(",") + family + ",") !=
           std::string::npos;
  };
  for (int r = 0; r < repeats; ++r) {
    progress.step(r, "repeat " + std::to_string(r + 1));
    if (!timed("vs")) {
      for (auto *t : {&tVsIndex, &tVsAttn})
        t->push_back(0);
    } else {
    tVsIndex.push_back(bench::seconds(
        [&] { index = cpu::buildVerticalSlash(qr, kr, d, scale, vs); }, 1));
    tVsAttn.push_back(bench::seconds(
        [&] {
          tiles = cpu::attendVerticalSlashTiled(qr, kr, vr, o.data(), d,
                                                lse.data(), d, scale, index,
                                                /*causal=*/true);
        },
        1));
    }
    semantics::Pattern bt;
    if (!timed("bt")) {
      for (auto *t : {&tBtIndex, &tBtAttn})
        t->push_back(0);
    } else {
    tBtIndex.push_back(bench::seconds(
        [&] {
          blocks = cpu::buildBlockTopk(qr, kr, d, scale, 64, 0.9, 0, 16, 0);
          bt = semantics::Pattern{
              semantics::Intersect{{semantics::Pattern{semantics::Causal{}},
                                    schedule::blockTopkPattern(64, blocks.firstBlock,
                                                               blocks.lists)}}};
        },
        1));
    tBtAttn.push_back(bench::seconds([&] { runSchedule(bt); }, 1));
    }
    if (!timed("rt")) {
      for (auto *t : {&tRtIndex, &tRtAttn})
        t->push_back(0);
    } else {
    tRtIndex.push_back(bench::seconds(
        [&] { route = cpu::buildRouting(qr, kr, d, 16, 2, nullptr); }, 1));
    tRtAttn.push_back(bench::seconds(
        [&] {
          routeTiles =
              cpu::attendRoutingSegments(qr, kr, vr, o.data(), d, lse.data(), d,
                                         scale, route, 16, /*causal=*/true);
        },
        1));
    }
    tDense.push_back(timed("dense") ? bench::seconds(
                                          [&] {
                                            runSchedule(semantics::Pattern{
                                                semantics::Causal{}});
                                          },
                                          1)
                                    : 0.0);
  }
  progress.finish();

  if (!dumpDir.empty()) {
    // The vertical-slash output of the last run is in o.
    writeNpy(dumpDir + "/q.npy", q, {n, d});
    writeNpy(dumpDir + "/k.npy", k, {n, d});
    writeNpy(dumpDir + "/v.npy", v, {n, d});
    tiles = cpu::attendVerticalSlashTiled(qr, kr, vr, o.data(), d, lse.data(),
                                          d, scale, index, true);
    writeNpy(dumpDir + "/o_vertical_slash.npy", o, {n, d});
    std::ofstream json(dumpDir + "/index.json");
    json << "{\"columns\": [";
    for (size_t i = 0; i < index.columns.size(); ++i)
      json << (i ? ", " : "") << index.columns[i];
    json << "], \"diagonals\": [";
    for (size_t i = 0; i < index.diagonals.size(); ++i)
      json << (i ? ", " : "") << index.diagonals[i];
    json << "], \"vs_index_s\": " << median(tVsIndex)
         << ", \"vs_attention_s\": " << median(tVsAttn)
         << ", \"dense_causal_s\": " << median(tDense) << "}\n";
  }

  // Recall of the dense (causal) mass on the last 256 rows, in double.
  auto recallOf = [&](auto allowed) {
    double total = 0;
    int64_t rows = 0;
    std::vector<double> w(static_cast<size_t>(n));
    for (int64_t row = std::max<int64_t>(0, n - 256); row < n; ++row, ++rows) {
      double mx = -INFINITY;
      for (int64_t key = 0; key <= row; ++key) {
        double s = 0;
        for (int64_t i = 0; i < d; ++i)
          s += double(q[size_t(row * d + i)]) * double(k[size_t(key * d + i)]);
        w[size_t(key)] = s * scale;
        mx = std::max(mx, w[size_t(key)]);
      }
      double z = 0, kept = 0;
      for (int64_t key = 0; key <= row; ++key) {
        double e = std::exp(w[size_t(key)] - mx);
        z += e;
        if (allowed(row, key))
          kept += e;
      }
      total += kept / z;
    }
    return total / double(rows);
  };
  double vsRecall = !timed("vs") ? 0 : recallOf([&](int64_t row, int64_t key) {
    return cpu::verticalSlashAllows(index, row, key, n, n);
  });
  double btRecall = !timed("bt") ? 0 : recallOf([&](int64_t row, int64_t key) {
    const auto &b = blocks.lists[size_t(row / 64)]; // Nq = Nk
    return std::binary_search(b.begin(), b.end(), key / 64);
  });
  double rtRecall = !timed("rt") ? 0 : recallOf([&](int64_t row, int64_t key) {
    return route.queryCluster[size_t(row)] == route.keyCluster[size_t(key)];
  });
  int64_t btTiles = 0;
  for (size_t i = 0; i < blocks.lists.size(); ++i)
    for (int64_t b : blocks.lists[i])
      btTiles += b <= int64_t(i);
  double dense = median(tDense);
  llvm::outs() << llvm::formatv(
      "{{\"len\": {0}, \"head_dim\": {1}, \"threads\": {2}, "
      "\"dense_causal_s\": {3:f4}, "
      "\"vs_index_s\": {4:f4}, \"vs_attention_s\": {5:f4}, "
      "\"vs_index_share\": {6:f4}, \"vs_speedup\": {7:f2}, "
      "\"vs_columns\": {8}, \"vs_diagonals\": {9}, \"vs_tiles_contiguous\": "
      "{10}, \"vs_tiles_gathered\": {11}, \"vs_recall\": {12:f4}, "
      "\"bt_index_s\": {13:f4}, \"bt_attention_s\": {14:f4}, "
      "\"bt_index_share\": {15:f4}, \"bt_speedup\": {16:f2}, "
      "\"bt_tiles\": {17}, \"bt_recall\": {18:f4}, \"causal_tiles\": {19}, "
      "\"rt_index_s\": {20:f4}, \"rt_attention_s\": {21:f4}, "
      "\"rt_index_share\": {22:f4}, \"rt_speedup\": {23:f2}, "
      "\"rt_tiles\": {24}, \"rt_recall\": {25:f4}}\n",
      n, d, std::thread::hardware_concurrency(), dense, median(tVsIndex),
      median(tVsAttn), median(tVsIndex) / (median(tVsIndex) + median(tVsAttn)),
      dense / (median(tVsIndex) + median(tVsAttn)), index.columns.size(),
      index.diagonals.size(), tiles.contiguous, tiles.gathered, vsRecall,
      median(tBtIndex), median(tBtAttn),
      median(tBtIndex) / (median(tBtIndex) + median(tBtAttn)),
      dense / (median(tBtIndex) + median(tBtAttn)), btTiles, btRecall,
      ((n + 63) / 64) * ((n + 63) / 64 + 1) / 2, median(tRtIndex),
      median(tRtAttn), median(tRtIndex) / (median(tRtIndex) + median(tRtAttn)),
      dense / (median(tRtIndex) + median(tRtAttn)), routeTiles, rtRecall);
  return 0;
}
