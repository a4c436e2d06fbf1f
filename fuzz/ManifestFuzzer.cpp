//===- ManifestFuzzer.cpp - bundle manifests through the runtime loader ---===//
//
// libFuzzer harness: the input is a manifest, then optionally a NUL byte and
// a kernel source (else a fixed one). The text "@SHA@" in the manifest is
// replaced by the source's SHA-256, so that mutations reach past the
// checksum into the validation of layers and schedule programs. A bundle that
// loads is run on the CPU for its first layer on small random inputs, so
// fuzzed schedule programs reach the executor too.
//
//===----------------------------------------------------------------------===//

#include "tessera/tessera.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"

#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tessera_context *ctx = [] {
    tessera_context *c = nullptr;
    tessera_context_create(TESSERA_DEVICE_CPU, 0, &c);
    return c;
  }();
  std::string input(reinterpret_cast<const char *>(data), size);
  size_t nul = input.find('\0');
  std::string manifest = input.substr(0, nul);
  std::string source = nul == std::string::npos ? std::string("// kernels\n")
                                                : input.substr(nul + 1);
  llvm::SHA256 hash;
  hash.update(source);
  std::string sha = llvm::toHex(hash.final(), /*LowerCase=*/true);
  for (size_t at; (at = manifest.find("@SHA@")) != std::string::npos;)
    manifest.replace(at, 5, sha);
  tessera_bundle *bundle = nullptr;
  if (tessera_bundle_load_memory(ctx, manifest.data(), manifest.size(),
                                 source.data(), source.size(),
                                 &bundle) != TESSERA_OK)
    return 0;
  int64_t index = 0;
  tessera_layer_info info;
  if (tessera_bundle_layer_index(bundle, 0, &index) == TESSERA_OK &&
      tessera_bundle_layer_info(bundle, index, &info) == TESSERA_OK &&
      info.num_heads <= 64 && info.head_dim <= 128) {
    const int64_t n = 1 + int64_t(size % 70), d = info.head_dim;
    std::vector<float> q(n * info.num_heads * d, 0.5f),
        k(n * info.num_kv_heads * d, 0.25f), v(k.size(), 1.0f), o(q.size()),
        lse(info.num_heads * n);
    auto t = [&](std::vector<float> &x, int64_t h) {
      return tessera_tensor{x.data(), TESSERA_DTYPE_F32, 1, n, h, d,
                            n * h * d, h * d, d};
    };
    tessera_tensor tq = t(q, info.num_heads), tk = t(k, info.num_kv_heads),
                   tv = t(v, info.num_kv_heads), to = t(o, info.num_heads);
    // Dynamic groups: the centroids the layer asks for (k-means with many
    // clusters only costs time, so such layers are not run).
    if (info.centroid_clusters <= 64) {
      std::vector<float> cent(
          size_t(info.num_heads * (info.centroid_clusters + 1) * d), 0.1f);
      tessera_dynamic_inputs dyn{cent.data(), info.num_heads,
                                 info.centroid_clusters, d};
      tessera_attention_dynamic(bundle, index, &tq, &tk, &tv, &to, lse.data(),
                                0, &dyn, nullptr);
    }
  }
  tessera_bundle_destroy(bundle);
  return 0;
}
