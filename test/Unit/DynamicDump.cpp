//===- DynamicDump.cpp - the CPU index builders' results, for numpy -------===//
//
//   tessera-dynamic-dump OUTDIR
//
// Runs the CPU index builders of the dynamic patterns (tessera/cpu/Dynamic.h)
// and attention over their indices on deterministic inputs, and writes the
// inputs (.npy), the indices (index.json) and the outputs (.npy) of every
// case to OUTDIR/<case>/, for test/Python/Inputs/check_dynamic.py to compare
// with the float64 numpy references.
//
//===----------------------------------------------------------------------===//

#include "tessera/Support/Npy.h"
#include "tessera/cpu/Dynamic.h"
#include "tessera/kernel/Program.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace tessera::cpu;
using tessera::writeNpy;

namespace {

std::string list(const std::vector<int64_t> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

struct Case {
  std::string name;
  int64_t nq, nk, d;
  bool planted;
};

} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tessera-dynamic-dump OUTDIR\n");
    return 2;
  }
  std::string root = argv[1];
  mkdir(root.c_str(), 0755);
  const Case cases[] = {{"square", 200, 200, 32, false},
                        {"short-queries", 150, 200, 32, false},
                        {"long-queries", 230, 180, 16, false},
                        // Nk - Nq a non-zero multiple of block top-k's
                        // block (16): chunked prefill.
                        {"chunk", 64, 192, 32, false},
                        {"planted", 256, 256, 32, true}};
  for (const Case &c : cases) {
    std::string dir = root + "/" + c.name;
    mkdir(dir.c_str(), 0755);
    std::mt19937 rng(42);
    std::normal_distribution<float> normal;
    std::vector<float> q(static_cast<size_t>(c.nq * c.d)),
        k(static_cast<size_t>(c.nk * c.d)), v(static_cast<size_t>(c.nk * c.d));
    for (auto *x : {&q, &k, &v})
      for (float &e : *x)
        e = normal(rng);
    if (c.planted) {
      // Keys 7 and 100 attract every query (dimension 0); each query
      // matches the key 13 positions back through 8 frequencies in
      // dimensions 16..31 (q . k = A^2 sum_f cos(w_f (p - 13 - k)), peaked
      // there); little noise elsewhere. Both peaks have logit ~12.7.
      for (auto *x : {&q, &k})
        for (float &e : *x)
          e *= 0.3f;
      const double freqs[8] = {0.37, 0.23, 0.31, 0.43, 0.29, 0.41, 0.19, 0.47};
      const double amp = 3.0;
      auto code = [&](float *row, double t) {
        for (int f = 0; f < 8; ++f) {
          row[16 + 2 * f] = float(amp * std::cos(2 * M_PI * freqs[f] * t));
          row[17 + 2 * f] = float(amp * std::sin(2 * M_PI * freqs[f] * t));
        }
      };
      for (int64_t r = 0; r < c.nq; ++r) {
        q[size_t(r * c.d)] = 8.5f;
        code(&q[size_t(r * c.d)], double(r + c.nk - c.nq - 13));
      }
      for (int64_t r = 0; r < c.nk; ++r)
        code(&k[size_t(r * c.d)], double(r));
      k[size_t(7 * c.d)] = k[size_t(100 * c.d)] = 8.5f;
    }
    Rows qr{q.data(), c.nq, c.d}, kr{k.data(), c.nk, c.d},
        vr{v.data(), c.nk, c.d};
    float scale = 1.0f / std::sqrt(float(c.d));

    VerticalSlashParams vs;
    vs.lastQ = 16;
    vs.vertical = 20;
    vs.slash = 10;
    vs.firstColumns = 4;
    vs.lastDiagonals = 8;
    VerticalSlashIndex vsIndex = buildVerticalSlash(qr, kr, c.d, scale, vs);
    auto gamma = buildBlockTopk(qr, kr, c.d, scale, 16, 0.8, 0, 2, 6);
    auto fixed = buildBlockTopk(qr, kr, c.d, scale, 16, 0.0, 3, 0, 0);
    // FlexPrefill's per-head choice at tau = 0.2: the planted case's last
    // block attends its sinks and diagonal (vertical-slash), the random
    // ones spread their mass as the pooled estimate does (query-aware).
    auto flex = buildBlockTopkFlex(qr, kr, c.d, scale, 16, 0.8, 1, 0, 0.2);
    RoutingIndex kmeans = buildRouting(qr, kr, c.d, 4, 3, nullptr);
    std::vector<float> cents(static_cast<size_t>(4 * c.d));
    for (float &e : cents)
      e = normal(rng);
    RoutingIndex given = buildRouting(qr, kr, c.d, 4, 0, cents.data());

    // Attention over each index intersected with causal.
    std::vector<float> o(static_cast<size_t>(c.nq * c.d)),
        lse(static_cast<size_t>(c.nq));
    auto causalEnd = [&](int64_t row) {
      return std::min(row + c.nk - c.nq, c.nk - 1); // last key <= p
    };
    attendKeyLists(qr, kr, vr, o.data(), c.d, lse.data(), c.d, scale,
                   [&](int64_t row, std::vector<int64_t> &keys) {
                     int64_t p = row + c.nk - c.nq;
                     for (int64_t key = 0; key <= causalEnd(row); ++key)
                       if (verticalSlashAllows(vsIndex, row, key, c.nq, c.nk))
                         keys.push_back(key);
                     (void)p;
                   });
    writeNpy(dir + "/o_vertical_slash.npy", o, {c.nq, c.d});
    writeNpy(dir + "/lse_vertical_slash.npy", lse, {c.nq});
    // A block top-k index's keys of a row (block 16), with causality; its
    // query blocks are of positions p = row + Nk - Nq.
    auto blockTopkKeys = [&](const BlockTopkIndex &index) {
      return [&](int64_t row, std::vector<int64_t> &keys) {
        const int64_t qb =
            tessera::kernel::floorDiv(row + c.nk - c.nq, 16) - index.firstBlock;
        for (int64_t b : index.lists[size_t(qb)])
          for (int64_t key = b * 16;
               key < std::min((b + 1) * 16, c.nk) && key <= causalEnd(row);
               ++key)
            keys.push_back(key);
      };
    };
    attendKeyLists(qr, kr, vr, o.data(), c.d, lse.data(), c.d, scale,
                   blockTopkKeys(gamma));
    writeNpy(dir + "/o_block_topk.npy", o, {c.nq, c.d});
    writeNpy(dir + "/lse_block_topk.npy", lse, {c.nq});
    attendKeyLists(qr, kr, vr, o.data(), c.d, lse.data(), c.d, scale,
                   blockTopkKeys(flex));
    writeNpy(dir + "/o_block_topk_tau.npy", o, {c.nq, c.d});
    writeNpy(dir + "/lse_block_topk_tau.npy", lse, {c.nq});
    attendKeyLists(qr, kr, vr, o.data(), c.d, lse.data(), c.d, scale,
                   [&](int64_t row, std::vector<int64_t> &keys) {
                     for (int64_t key = 0; key <= causalEnd(row); ++key)
                       if (kmeans.keyCluster[size_t(key)] ==
                           kmeans.queryCluster[size_t(row)])
                         keys.push_back(key);
                   });
    writeNpy(dir + "/o_routing.npy", o, {c.nq, c.d});
    writeNpy(dir + "/lse_routing.npy", lse, {c.nq});
    // The same by segments (permutation, tiles, inverse permutation), in
    // tiles of 16 so that segments span several tiles.
    attendRoutingSegments(qr, kr, vr, o.data(), c.d, lse.data(), c.d, scale,
                          kmeans, 4, /*causal=*/true, 16);
    writeNpy(dir + "/o_routing_segments.npy", o, {c.nq, c.d});
    writeNpy(dir + "/lse_routing_segments.npy", lse, {c.nq});

    writeNpy(dir + "/q.npy", q, {c.nq, c.d});
    writeNpy(dir + "/k.npy", k, {c.nk, c.d});
    writeNpy(dir + "/v.npy", v, {c.nk, c.d});
    writeNpy(dir + "/centroids.npy", cents, {4, c.d});
    std::ofstream json(dir + "/index.json");
    json << "{\"vertical_slash\": {\"last_q\": 16, \"vertical\": 20, "
            "\"slash\": 10, \"first_columns\": 4, \"last_diagonals\": 8, "
            "\"columns\": "
         << list(vsIndex.columns)
         << ", \"diagonals\": " << list(vsIndex.diagonals)
         << "},\n \"block_topk_gamma\": {"
         << "\"block\": 16, \"gamma\": 0.8, \"min_blocks\": 2, "
            "\"max_blocks\": 6, \"first_block\": "
         << gamma.firstBlock << ", \"blocks\": [";
    for (size_t i = 0; i < gamma.lists.size(); ++i)
      json << (i ? ", " : "") << list(gamma.lists[i]);
    json << "]},\n \"block_topk_fixed\": {\"block\": 16, \"top_k\": 3, "
            "\"first_block\": "
         << fixed.firstBlock << ", \"blocks\": [";
    for (size_t i = 0; i < fixed.lists.size(); ++i)
      json << (i ? ", " : "") << list(fixed.lists[i]);
    char distance[32];
    std::snprintf(distance, sizeof distance, "%.17g", flex.distance);
    json << "]},\n \"block_topk_tau\": {\"block\": 16, \"gamma\": 0.8, "
            "\"min_blocks\": 1, \"tau\": 0.2, \"distance\": "
         << distance << ", \"mode\": \""
         << (flex.verticalSlash ? "vertical_slash" : "query_aware")
         << "\", \"blocks\": [";
    for (size_t i = 0; i < flex.lists.size(); ++i)
      json << (i ? ", " : "") << list(flex.lists[i]);
    auto ints = [](const std::vector<int32_t> &v) {
      return list(std::vector<int64_t>(v.begin(), v.end()));
    };
    json << "]},\n \"routing_kmeans\": {\"clusters\": 4, \"iterations\": 3, "
            "\"queries\": "
         << ints(kmeans.queryCluster)
         << ", \"keys\": " << ints(kmeans.keyCluster)
         << "},\n \"routing_given\": {\"clusters\": 4, \"queries\": "
         << ints(given.queryCluster) << ", \"keys\": " << ints(given.keyCluster)
         << "}}\n";
    std::printf("%s: Nq %lld, Nk %lld, head_dim %lld\n", c.name.c_str(),
                (long long)c.nq, (long long)c.nk, (long long)c.d);
  }
  return 0;
}
