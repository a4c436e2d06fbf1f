//===- decode_bench.cpp - a decode step through tessera_attention_run -----===//
//
// The CPU time of one decode step (one sequence, 1 query per head) over a
// paged bf16 cache, through the C API, for a bundle's layers: the per-call
// overhead at short caches, and the cost per key at long ones, with the
// key/value bytes the step reads (the layer's visited tiles, counted by
// tessera_bundle_visited_tiles, times the bytes of a tile's keys and
// values per kv head it reads).
//
//   tessera-decode-bench BUNDLE_DIR [--keys=N,...] [--threads=T,...]
//                        [--split=1,0] [LAYER...]
//
// Prints one line per (layer, cache length, threads, split): the median of
// many calls in microseconds. threads 0: every hardware thread. split 0
// runs with TESSERA_CPU_SPLIT_KV=0 (one task walks all of a head's keys).
//
//===----------------------------------------------------------------------===//

#include "Timing.h"

#include "tessera/tessera.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

/// The median microseconds of one decode step of `layer` over `nk` keys in
/// pages of 16, on `threads` threads.
double decodeStep(tessera_context *ctx, tessera_bundle *bundle, int64_t layer,
                  int64_t nk, int threads) {
  tessera_layer_info info;
  if (tessera_bundle_layer_info(bundle, layer, &info))
    return -1;
  const int64_t H = info.num_heads, Hkv = info.num_kv_heads,
                D = info.head_dim, ps = 16, pages = (nk + ps - 1) / ps;
  std::vector<uint16_t> q(size_t(H * D), 0x3f80), o(q.size()),
      k(size_t(pages * ps * Hkv * D)), v(k.size());
  std::mt19937 rng(1);
  for (uint16_t &x : k)
    x = uint16_t(0x3c00 + rng() % 0x200); // bf16 in [2^-7, 2^-6)
  v = k;
  std::vector<int32_t> table(static_cast<size_t>(pages)), len = {int32_t(nk)};
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<float> lse(static_cast<size_t>(H));
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.layer = layer;
  d.q = {q.data(), info.dtype, 1, 1, H, D, H * D, H * D, D};
  d.o = {o.data(), info.dtype, 1, 1, H, D, H * D, H * D, D};
  d.k = {k.data(), info.dtype, pages, ps, Hkv, D, ps * Hkv * D, Hkv * D, D};
  d.v = d.k;
  d.v.data = v.data();
  d.lse = lse.data();
  d.block_table = table.data();
  d.max_pages_per_seq = pages;
  d.seq_lens_k = len.data();
  tessera_context_set_num_threads(ctx, threads);
  int failures = 0;
  auto step = [&] { failures += tessera_attention_run(bundle, &d) != 0; };
  step();
  if (failures) {
    std::fprintf(stderr, "%s\n", tessera_last_error());
    return -1;
  }
  int reps = nk <= 256 ? 2000 : nk <= 4096 ? 200 : nk <= 32768 ? 20 : 5;
  return 1e6 * tessera::bench::seconds(step, reps);
}

/// The K/V bytes a decode step of `layer` over `nk` keys reads: for each
/// query head the key and value rows of the tiles its walk visits (a kv
/// head's tiles shared by its query heads counted once per query head, as
/// the walk reads them), bf16.
double bytesRead(tessera_bundle *bundle, int64_t layer, int64_t nk) {
  tessera_layer_info info;
  if (tessera_bundle_layer_info(bundle, layer, &info))
    return -1;
  const int64_t bk = 64, tk = (nk + bk - 1) / bk;
  std::vector<int64_t> tiles(size_t(2 * info.num_heads));
  if (tessera_bundle_visited_tiles(bundle, layer, 1, nk, 128, bk, 0, 1, 0, tk,
                                   tiles.data(), tiles.size()))
    return -1;
  // Whole tiles of bk keys, but the last tile (which a decode row's walk
  // always visits) holds only the keys up to nk.
  double keys = 0;
  for (int64_t h = 0; h < info.num_heads; ++h) {
    int64_t visited = tiles[size_t(2 * h)] + tiles[size_t(2 * h + 1)];
    if (visited > 0)
      keys += double(visited * bk - (tk * bk - nk));
  }
  return keys * 2 * double(info.head_dim) * 2;
}

/// Comma-separated integers.
std::vector<int64_t> parseList(const char *s) {
  std::vector<int64_t> out;
  for (char *end; *s; s = *end ? end + 1 : end)
    out.push_back(std::strtoll(s, &end, 10));
  return out;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s BUNDLE_DIR [--keys=N,...] [--threads=T,...] "
                 "[--split=1,0] [LAYER...]\n",
                 argv[0]);
    return 2;
  }
  tessera_context *ctx;
  tessera_bundle *bundle;
  if (tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx) ||
      tessera_bundle_load_file(ctx, argv[1], &bundle)) {
    std::fprintf(stderr, "%s\n", tessera_last_error());
    return 1;
  }
  std::vector<int64_t> layers, keys = {16, 256, 4096, 32768, 131072},
                               threadCounts = {1, 0}, splits = {1};
  for (int i = 2; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--keys=", 7))
      keys = parseList(argv[i] + 7);
    else if (!std::strncmp(argv[i], "--threads=", 10))
      threadCounts = parseList(argv[i] + 10);
    else if (!std::strncmp(argv[i], "--split=", 8))
      splits = parseList(argv[i] + 8);
    else
      layers.push_back(std::atoll(argv[i]));
  }
  if (layers.empty())
    layers.push_back(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("layer  keys     threads  split  KV MiB read  us/step\n");
  for (int64_t layer : layers)
    for (int64_t nk : keys)
      for (int64_t threads : threadCounts)
        for (int64_t split : splits) {
          setenv("TESSERA_CPU_SPLIT_KV", split ? "1" : "0", 1);
          double us = decodeStep(ctx, bundle, layer, nk, int(threads));
          std::printf("%-6lld %-8lld %-8s %-6lld %-12.2f %.1f\n",
                      (long long)layer, (long long)nk,
                      threads ? std::to_string(threads).c_str() : "all",
                      (long long)split,
                      bytesRead(bundle, layer, nk) / (1 << 20), us);
        }
  tessera_bundle_destroy(bundle);
  tessera_context_destroy(ctx);
  return 0;
}
