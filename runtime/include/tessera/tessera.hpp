//===- tessera.hpp - a thin C++ wrapper of the runtime C API ----*- C++ -*-===//
//
// Owning handles over tessera.h, for C++ engines. No exceptions: fallible
// calls return a Result holding the status and tessera_last_error()'s text.
//
//   auto ctx = tessera::Context::create(TESSERA_DEVICE_CPU);
//   auto bundle = ctx.value.load("bundles/llama3-8b-sparse");
//   tessera::Result r = bundle.value.attention(2, q, k, v, o);
//   if (!r) std::cerr << r.message << "\n";
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TESSERA_HPP
#define TESSERA_TESSERA_HPP

#include "tessera/tessera.h"

#include <memory>
#include <string>
#include <utility>

namespace tessera {

/// A status and, on failure, what went wrong.
struct Result {
  tessera_status status = TESSERA_OK;
  std::string message;
  explicit operator bool() const { return status == TESSERA_OK; }
  static Result from(tessera_status s) {
    return {s, s == TESSERA_OK ? std::string() : tessera_last_error()};
  }
};

/// A value or the Result that explains its absence.
template <typename T> struct Expected {
  Result result;
  T value;
  explicit operator bool() const { return bool(result); }
};

class Bundle {
public:
  Bundle() = default;
  int64_t numLayers() const {
    int64_t n = 0;
    tessera_bundle_num_layers(handle.get(), &n);
    return n;
  }
  Expected<tessera_layer_info> layerInfo(int64_t layer) const {
    tessera_layer_info info{};
    Result r =
        Result::from(tessera_bundle_layer_info(handle.get(), layer, &info));
    return {r, info};
  }
  /// O = attention(Q, K, V) for `layer`; see tessera_attention.
  Result attention(int64_t layer, const tessera_tensor &q,
                   const tessera_tensor &k, const tessera_tensor &v,
                   const tessera_tensor &o, float *lse = nullptr,
                   float scale = 0.0f, void *cudaStream = nullptr) {
    return Result::from(tessera_attention(handle.get(), layer, &q, &k, &v, &o,
                                          lse, scale, cudaStream));
  }
  /// Runs a call description (packed, paged, positioned, head-range
  /// calls); see tessera_attention_run. Start from attentionDesc().
  Result run(const tessera_attention_desc &desc) {
    return Result::from(tessera_attention_run(handle.get(), &desc));
  }
  /// An initialised description (every mode off) for `layer`.
  static tessera_attention_desc attentionDesc(int64_t layer) {
    tessera_attention_desc d;
    tessera_attention_desc_init(&d);
    d.layer = layer;
    return d;
  }
  tessera_bundle *get() const { return handle.get(); }

private:
  friend class Context;
  struct Deleter {
    void operator()(tessera_bundle *b) const { tessera_bundle_destroy(b); }
  };
  explicit Bundle(tessera_bundle *b) : handle(b) {}
  std::unique_ptr<tessera_bundle, Deleter> handle;
};

class Context {
public:
  Context() = default;
  static Expected<Context> create(tessera_device_kind kind, int ordinal = 0) {
    tessera_context *c = nullptr;
    Result r = Result::from(tessera_context_create(kind, ordinal, &c));
    return {r, Context(c)};
  }
  /// Loads a bundle directory (manifest.json and bundle.cu).
  Expected<Bundle> load(const std::string &path) const {
    tessera_bundle *b = nullptr;
    Result r =
        Result::from(tessera_bundle_load_file(handle.get(), path.c_str(), &b));
    return {r, Bundle(b)};
  }
  /// The threads of CPU calls (0: every hardware thread).
  Result setNumThreads(int n) const {
    return Result::from(tessera_context_set_num_threads(handle.get(), n));
  }
  tessera_context *get() const { return handle.get(); }

private:
  struct Deleter {
    void operator()(tessera_context *c) const { tessera_context_destroy(c); }
  };
  explicit Context(tessera_context *c) : handle(c) {}
  std::unique_ptr<tessera_context, Deleter> handle;
};

} // namespace tessera

#endif // TESSERA_TESSERA_HPP
