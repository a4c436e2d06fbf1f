//===- Api.cpp - the Tessera runtime C API --------------------------------===//

#include "tessera/tessera.h"

#include "../cuda/Driver.h"
#include "DynamicCpu.h"
#include "Manifest.h"
#include "tessera/kernel/ProgramRuns.h"

#include "tessera/cpu/Executor.h"
#include "tessera/jit/Cache.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

using namespace tessera;
using namespace tessera::runtime;

struct tessera_context {
  tessera_device_kind kind = TESSERA_DEVICE_CPU;
  int device = 0;
  void *cuContext = nullptr;
  const Driver *driver = nullptr;
  std::string arch; ///< "sm_90"
  /// Bundles not yet destroyed, and whether tessera_context_destroy was
  /// called: the object lives until both say it is unused, so a bundle that
  /// outlives its context reports an error instead of reading freed memory.
  std::mutex lifetime;
  int64_t liveBundles = 0;
  bool destroyed = false;
};

struct tessera_bundle {
  tessera_context *context = nullptr;
  BundleDesc desc;
  std::map<int64_t, size_t> byIndex; ///< layer index -> position
  void *module = nullptr;
  std::map<std::string, void *> functions;
};

namespace {

thread_local std::string lastError;

tessera_status fail(tessera_status status, const std::string &message) {
  lastError = message;
  return status;
}

/// Makes the context's CUDA context current for the scope.
class CudaScope {
public:
  explicit CudaScope(const tessera_context *c) : c(c) {
    if (c->cuContext)
      c->driver->ctxPushCurrent(c->cuContext);
  }
  ~CudaScope() {
    if (c->cuContext) {
      void *old;
      c->driver->ctxPopCurrent(&old);
    }
  }

private:
  const tessera_context *c;
};

/// The largest manifest and kernel source a bundle may have.
constexpr size_t kMaxBundleFileBytes = size_t(64) << 20;

size_t elementSize(tessera_dtype t) { return t == TESSERA_DTYPE_F32 ? 4 : 2; }

const char *dtypeName(tessera_dtype t) {
  return t == TESSERA_DTYPE_F32   ? "f32"
         : t == TESSERA_DTYPE_F16 ? "f16"
                                  : "bf16";
}

tessera_status loadBundle(tessera_context *context, const std::string &manifest,
                          const std::string &source, tessera_bundle **out) {
  auto b = std::make_unique<tessera_bundle>();
  b->context = context;
  if (std::string e = parseManifest(manifest, source, b->desc); !e.empty())
    return fail(TESSERA_ERROR_BAD_BUNDLE, "bad bundle: " + e);
  for (size_t i = 0; i < b->desc.layers.size(); ++i)
    b->byIndex[b->desc.layers[i].index] = i;
  if (context->kind == TESSERA_DEVICE_CUDA) {
    std::string error;
    const jit::Nvrtc *nvrtc = jit::Nvrtc::get(error);
    if (!nvrtc)
      return fail(TESSERA_ERROR_NVRTC_UNAVAILABLE, error);
    jit::CachedCompile c =
        jit::compileCached(*nvrtc, source, context->arch, b->desc.nvrtcOptions,
                           jit::defaultCacheDir());
    if (!c.warning.empty()) {
      static std::once_flag warned;
      std::call_once(warned, [&] {
        std::fprintf(stderr, "tessera: warning: %s\n", c.warning.c_str());
      });
    }
    if (!c.ok)
      return fail(TESSERA_ERROR_COMPILE,
                  "NVRTC could not compile the bundle for " + context->arch +
                      ":\n" + c.error);
    CudaScope scope(context);
    const Driver &d = *context->driver;
    if (int rc = d.moduleLoadData(&b->module, c.binary.data()))
      return fail(TESSERA_ERROR_CUDA, d.message("cuModuleLoadData", rc));
    for (const LayerDesc &l : b->desc.layers) {
      std::vector<std::string> names = {l.fillKernel};
      for (const auto &k : l.kernels)
        names.push_back(k.first);
      for (const DynamicGroupDesc &g : l.dynamicGroups)
        names.insert(names.end(), g.kernels.begin(), g.kernels.end());
      for (const std::string &name : names) {
        if (name.empty() || b->functions.count(name))
          continue;
        void *f = nullptr;
        if (int rc = d.moduleGetFunction(&f, b->module, name.c_str())) {
          d.moduleUnload(b->module);
          return fail(TESSERA_ERROR_BAD_BUNDLE,
                      "the bundle has no kernel '" + name +
                          "': " + d.message("cuModuleGetFunction", rc));
        }
        b->functions[name] = f;
      }
      // Tiles above the 48 KiB a kernel gets by default (head_dim 256).
      for (const auto &k : l.kernels) {
        if (l.kernelDynamicShared <= 48 * 1024)
          break;
        if (int rc = d.funcSetAttribute(
                b->functions.at(k.first), kFuncAttrMaxDynamicSharedSize,
                static_cast<int>(l.kernelDynamicShared))) {
          d.moduleUnload(b->module);
          return fail(TESSERA_ERROR_CUDA,
                      "layer " + std::to_string(l.index) + " needs " +
                          std::to_string(l.kernelDynamicShared) +
                          " bytes of shared memory per block, which this "
                          "device does not grant: " +
                          d.message("cuFuncSetAttribute", rc));
        }
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(context->lifetime);
    if (context->destroyed) {
      if (b->module)
        context->driver->moduleUnload(b->module);
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "the context has been destroyed");
    }
    ++context->liveBundles;
  }
  *out = b.release();
  return TESSERA_OK;
}

/// The largest softmax scale accepted (2^16).
constexpr float kMaxScale = 65536.0f;

/// The bytes [lo, hi) a tensor's elements span.
struct Extent {
  uintptr_t lo, hi;
};

Extent extent(const tessera_tensor &t) {
  uint64_t last = uint64_t(t.batch - 1) * t.stride_batch +
                  uint64_t(t.seq - 1) * t.stride_seq +
                  uint64_t(t.heads - 1) * t.stride_head + uint64_t(t.head_dim);
  auto lo = reinterpret_cast<uintptr_t>(t.data);
  return {lo, lo + last * elementSize(t.dtype)};
}

bool overlap(Extent a, Extent b) { return a.lo < b.hi && b.lo < a.hi; }

bool sameLayout(const tessera_tensor &a, const tessera_tensor &b) {
  return a.data == b.data && a.dtype == b.dtype && a.batch == b.batch &&
         a.seq == b.seq && a.heads == b.heads && a.head_dim == b.head_dim &&
         a.stride_batch == b.stride_batch && a.stride_seq == b.stride_seq &&
         a.stride_head == b.stride_head;
}

/// Whether two distinct elements of a (validated) tensor share an address:
/// sorted by stride, each dimension must step past everything the smaller
/// ones span.
bool overlapsItself(const tessera_tensor &t) {
  std::pair<int64_t, int64_t> dims[4] = {{1, t.head_dim},
                                         {t.stride_head, t.heads},
                                         {t.stride_seq, t.seq},
                                         {t.stride_batch, t.batch}};
  std::sort(std::begin(dims), std::end(dims));
  int64_t span = 1;
  for (auto [stride, n] : dims) {
    if (n == 1)
      continue;
    if (stride < span)
      return true;
    span = stride * (n - 1) + span;
  }
  return false;
}

/// The engine's centroids (`count` floats): fp32-aligned, and read while o
/// and lse are written, so sharing memory with neither.
tessera_status checkCentroids(const float *centroids, int64_t count,
                              const tessera_tensor &o, const float *lse,
                              int64_t lseCount) {
  auto at = reinterpret_cast<uintptr_t>(centroids);
  if (at % alignof(float))
    return fail(TESSERA_ERROR_MISALIGNED,
                "centroids must be 4-byte aligned (fp32)");
  Extent c{at, at + sizeof(float) * uint64_t(count)};
  if (overlap(c, extent(o)))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "centroids overlap o (the output would overwrite centroids "
                "still to be read)");
  auto lseAt = reinterpret_cast<uintptr_t>(lse);
  if (lse && overlap(c, {lseAt, lseAt + sizeof(float) * uint64_t(lseCount)}))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "centroids overlap lse (the LSE would overwrite centroids "
                "still to be read)");
  return TESSERA_OK;
}

/// On the CPU: every centroid row a routing group of layer `l` reads (head
/// h's first `clusters` rows, rows `stride` apart per head) is finite. A
/// NaN or inf would silently move tokens between clusters.
tessera_status checkCentroidsFinite(const LayerDesc &l, int64_t layer,
                                    const float *centroids, int64_t stride) {
  for (const DynamicGroupDesc &g : l.dynamicGroups) {
    if (g.args.family != kernel::kRouting || g.args.iterations != 0)
      continue;
    for (int64_t h : g.heads)
      for (int64_t j = 0; j < g.args.clusters; ++j) {
        const float *row = centroids + (h * stride + j) * l.headDim;
        for (int64_t x = 0; x < l.headDim; ++x)
          if (!std::isfinite(row[x]))
            return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                        "layer " + std::to_string(layer) + ": centroid " +
                            std::to_string(j) + " of head " +
                            std::to_string(h) +
                            " is not finite (NaN or inf at element " +
                            std::to_string(x) + ")");
      }
  }
  return TESSERA_OK;
}

tessera_status checkTensor(const tessera_tensor *t, const char *name) {
  if (!t)
    return fail(TESSERA_ERROR_NULL_POINTER,
                std::string(name) + " is a null tensor pointer");
  if (!t->data)
    return fail(TESSERA_ERROR_NULL_POINTER,
                std::string(name) + "->data is null");
  // Read the enum as the int a C caller stored: an out-of-range value must
  // not be loaded as a C++ enum.
  int dtype;
  std::memcpy(&dtype, &t->dtype, sizeof(dtype));
  if (dtype != TESSERA_DTYPE_F32 && dtype != TESSERA_DTYPE_F16 &&
      dtype != TESSERA_DTYPE_BF16)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                std::string(name) + "->dtype is not a tessera_dtype value");
  const int64_t limit = int64_t(1) << 40;
  if (t->batch < 1 || t->seq < 1 || t->heads < 1 || t->head_dim < 1 ||
      t->batch > limit || t->seq > limit || t->heads > limit ||
      t->head_dim > limit)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                std::string(name) + " has a dimension below 1 or above 2^40");
  if (t->stride_batch < 0 || t->stride_seq < 0 || t->stride_head < 0 ||
      t->stride_batch > limit || t->stride_seq > limit ||
      t->stride_head > limit)
    return fail(TESSERA_ERROR_BAD_STRIDES,
                std::string(name) +
                    " has a negative or huge stride (head_dim must be "
                    "contiguous; strides are in elements)");
  // The elements must fit in an address space: the offset of the last one,
  // computed with checked arithmetic, below 2^56 bytes.
  int64_t last = t->head_dim, term;
  for (auto [n, stride] : {std::pair{t->batch, t->stride_batch},
                           {t->seq, t->stride_seq},
                           {t->heads, t->stride_head}})
    if (__builtin_mul_overflow(n - 1, stride, &term) ||
        __builtin_add_overflow(last, term, &last))
      last = INT64_MAX;
  if (last > (int64_t(1) << 56) / 4)
    return fail(TESSERA_ERROR_BAD_STRIDES,
                std::string(name) +
                    " spans more memory than an address space holds (its "
                    "shape times its strides)");
  if (reinterpret_cast<uintptr_t>(t->data) % elementSize(t->dtype))
    return fail(TESSERA_ERROR_MISALIGNED,
                std::string(name) + "->data is not aligned to its element");
  return TESSERA_OK;
}

cpu::Tensor toCpu(const tessera_tensor &t) {
  cpu::Tensor c;
  c.data = t.data;
  c.dtype = t.dtype == TESSERA_DTYPE_F32   ? cpu::DType::F32
            : t.dtype == TESSERA_DTYPE_F16 ? cpu::DType::F16
                                           : cpu::DType::BF16;
  c.batch = t.batch;
  c.seq = t.seq;
  c.heads = t.heads;
  c.headDim = t.head_dim;
  c.strideBatch = t.stride_batch;
  c.strideSeq = t.stride_seq;
  c.strideHead = t.stride_head;
  return c;
}

} // namespace

static tessera_status
attentionDynamic(tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
                 const tessera_tensor *k, const tessera_tensor *v,
                 const tessera_tensor *o, float *lse, float scale,
                 const tessera_dynamic_inputs *inputs, void *cuda_stream);

/// Runs f(), turning anything thrown into a status: nothing is thrown out
/// of the C API (STYLE.md: a runtime function never aborts the host).
template <typename F> static tessera_status guarded(F f) {
  try {
    return f();
  } catch (const std::bad_alloc &) {
    return fail(TESSERA_ERROR_INTERNAL, "out of host memory");
  } catch (const std::exception &e) {
    return fail(TESSERA_ERROR_INTERNAL, e.what());
  }
}

/// Bytes as GiB, for messages.
static std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / double(1 << 30));
  return buf;
}

extern "C" {

uint32_t tessera_api_version(void) { return TESSERA_API_VERSION; }

const char *tessera_last_error(void) { return lastError.c_str(); }

const char *tessera_status_string(tessera_status s) {
  switch (s) {
#define CASE(x)                                                                \
  case x:                                                                      \
    return #x;
    CASE(TESSERA_OK)
    CASE(TESSERA_ERROR_NULL_POINTER)
    CASE(TESSERA_ERROR_INVALID_ARGUMENT)
    CASE(TESSERA_ERROR_UNSUPPORTED_DTYPE)
    CASE(TESSERA_ERROR_UNSUPPORTED_HEAD_DIM)
    CASE(TESSERA_ERROR_SHAPE_MISMATCH)
    CASE(TESSERA_ERROR_BAD_STRIDES)
    CASE(TESSERA_ERROR_MISALIGNED)
    CASE(TESSERA_ERROR_LAYER_OUT_OF_RANGE)
    CASE(TESSERA_ERROR_WRONG_DEVICE)
    CASE(TESSERA_ERROR_BAD_BUNDLE)
    CASE(TESSERA_ERROR_IO)
    CASE(TESSERA_ERROR_CUDA_UNAVAILABLE)
    CASE(TESSERA_ERROR_NVRTC_UNAVAILABLE)
    CASE(TESSERA_ERROR_COMPILE)
    CASE(TESSERA_ERROR_CUDA)
    CASE(TESSERA_ERROR_INTERNAL)
#undef CASE
  }
  return "TESSERA_ERROR_UNKNOWN";
}

tessera_status tessera_context_create(tessera_device_kind kind,
                                      int device_ordinal,
                                      tessera_context **out) {
  lastError.clear();
  if (!out)
    return fail(TESSERA_ERROR_NULL_POINTER, "out is null");
  *out = nullptr;
  if (kind != TESSERA_DEVICE_CPU && kind != TESSERA_DEVICE_CUDA)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "kind is not a tessera_device_kind value");
  auto c = std::make_unique<tessera_context>();
  c->kind = kind;
  if (kind == TESSERA_DEVICE_CUDA) {
    std::string error;
    const Driver *d = Driver::get(error);
    if (!d)
      return fail(TESSERA_ERROR_CUDA_UNAVAILABLE, error);
    int count = 0;
    if (int rc = d->deviceGetCount(&count))
      return fail(TESSERA_ERROR_CUDA_UNAVAILABLE,
                  d->message("cuDeviceGetCount", rc));
    if (device_ordinal < 0 || device_ordinal >= count)
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "device_ordinal " + std::to_string(device_ordinal) +
                      " is out of range: " + std::to_string(count) +
                      " CUDA devices");
    int dev = 0, major = 0, minor = 0;
    d->deviceGet(&dev, device_ordinal);
    d->deviceGetAttribute(&major, kAttrComputeCapabilityMajor, dev);
    d->deviceGetAttribute(&minor, kAttrComputeCapabilityMinor, dev);
    if (major < 8)
      return fail(TESSERA_ERROR_CUDA_UNAVAILABLE,
                  "device " + std::to_string(device_ordinal) +
                      " has compute capability " + std::to_string(major) + "." +
                      std::to_string(minor) +
                      "; Tessera's kernels need 8.0 or later");
    if (int rc = d->primaryCtxRetain(&c->cuContext, dev))
      return fail(TESSERA_ERROR_CUDA,
                  d->message("cuDevicePrimaryCtxRetain", rc));
    c->driver = d;
    c->device = device_ordinal;
    c->arch = "sm_" + std::to_string(major) + std::to_string(minor);
  }
  *out = c.release();
  return TESSERA_OK;
}

/// Frees a context once it is destroyed and has no live bundle.
static void releaseContext(tessera_context *context) {
  if (context->cuContext)
    context->driver->primaryCtxRelease(context->device);
  delete context;
}

tessera_status tessera_context_destroy(tessera_context *context) {
  lastError.clear();
  if (!context)
    return fail(TESSERA_ERROR_NULL_POINTER, "context is null");
  bool unused;
  {
    std::lock_guard<std::mutex> lock(context->lifetime);
    context->destroyed = true;
    unused = context->liveBundles == 0;
  }
  if (unused)
    releaseContext(context);
  return TESSERA_OK;
}

/// Whether the bundle's context has been destroyed (its bundles still
/// answer, with an error).
static bool contextGone(const tessera_bundle *bundle) {
  std::lock_guard<std::mutex> lock(bundle->context->lifetime);
  return bundle->context->destroyed;
}

tessera_status tessera_bundle_load_file(tessera_context *context,
                                        const char *path,
                                        tessera_bundle **out) {
  lastError.clear();
  if (!context || !path || !out)
    return fail(TESSERA_ERROR_NULL_POINTER, "context, path and out must "
                                            "not be null");
  *out = nullptr;
  std::string manifest, source, dir(path), error;
  if (!jit::readRegularFile(dir + "/manifest.json", kMaxBundleFileBytes,
                            manifest, error) ||
      !jit::readRegularFile(dir + "/bundle.cu", kMaxBundleFileBytes, source,
                            error))
    return fail(TESSERA_ERROR_IO, "cannot read the bundle: " + error);
  return guarded([&] { return loadBundle(context, manifest, source, out); });
}

tessera_status
tessera_bundle_load_memory(tessera_context *context, const char *manifest,
                           size_t manifest_size, const char *source,
                           size_t source_size, tessera_bundle **out) {
  lastError.clear();
  if (!context || !manifest || !source || !out)
    return fail(TESSERA_ERROR_NULL_POINTER, "context, manifest, source and "
                                            "out must not be null");
  *out = nullptr;
  return guarded([&] {
    return loadBundle(context, std::string(manifest, manifest_size),
                      std::string(source, source_size), out);
  });
}

tessera_status tessera_bundle_destroy(tessera_bundle *bundle) {
  lastError.clear();
  if (!bundle)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle is null");
  tessera_context *context = bundle->context;
  if (bundle->module) {
    CudaScope scope(context);
    context->driver->moduleUnload(bundle->module);
  }
  delete bundle;
  bool release;
  {
    std::lock_guard<std::mutex> lock(context->lifetime);
    release = --context->liveBundles == 0 && context->destroyed;
  }
  if (release)
    releaseContext(context);
  return TESSERA_OK;
}

tessera_status tessera_bundle_num_layers(const tessera_bundle *bundle,
                                         int64_t *out) {
  lastError.clear();
  if (!bundle || !out)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle and out must not be null");
  *out = static_cast<int64_t>(bundle->desc.layers.size());
  return TESSERA_OK;
}

tessera_status tessera_bundle_layer_index(const tessera_bundle *bundle,
                                          int64_t position, int64_t *out) {
  lastError.clear();
  if (!bundle || !out)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle and out must not be null");
  if (position < 0 ||
      position >= static_cast<int64_t>(bundle->desc.layers.size()))
    return fail(TESSERA_ERROR_LAYER_OUT_OF_RANGE,
                "position " + std::to_string(position) +
                    " is out of range: the bundle has " +
                    std::to_string(bundle->desc.layers.size()) + " layers");
  *out = bundle->desc.layers[position].index;
  return TESSERA_OK;
}

static const LayerDesc *findLayer(const tessera_bundle *b, int64_t index) {
  auto it = b->byIndex.find(index);
  return it == b->byIndex.end() ? nullptr : &b->desc.layers[it->second];
}

/// The layer `index` of a bundle for the queries that write to `out`.
static tessera_status lookUpLayer(const tessera_bundle *bundle,
                                  const void *out, int64_t index,
                                  const LayerDesc *&layer) {
  if (!bundle || !out)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle and out must not be null");
  layer = findLayer(bundle, index);
  if (!layer)
    return fail(TESSERA_ERROR_LAYER_OUT_OF_RANGE,
                "the bundle has no layer " + std::to_string(index));
  return TESSERA_OK;
}

tessera_status tessera_bundle_layer_info(const tessera_bundle *bundle,
                                         int64_t layer,
                                         tessera_layer_info *out) {
  lastError.clear();
  const LayerDesc *l;
  if (tessera_status s = lookUpLayer(bundle, out, layer, l))
    return s;
  out->index = l->index;
  out->num_heads = l->numHeads;
  out->num_kv_heads = l->numKvHeads;
  out->head_dim = l->headDim;
  out->dtype = l->dtype == "f16" ? TESSERA_DTYPE_F16 : TESSERA_DTYPE_BF16;
  out->num_dynamic_heads = 0;
  out->centroid_clusters = 0;
  for (const DynamicGroupDesc &g : l->dynamicGroups) {
    out->num_dynamic_heads += static_cast<int64_t>(g.heads.size());
    if (g.args.family == kernel::kRouting && g.args.iterations == 0)
      out->centroid_clusters =
          std::max<int64_t>(out->centroid_clusters, g.args.clusters);
  }
  out->num_computed_heads =
      static_cast<int64_t>(l->computedHead.size()) + out->num_dynamic_heads;
  out->num_skipped_heads = static_cast<int64_t>(l->skippedHeads.size());
  return TESSERA_OK;
}

tessera_status tessera_bundle_tile_classes(const tessera_bundle *bundle,
                                           int64_t layer, int64_t q_len,
                                           int64_t k_len, int64_t block_q,
                                           int64_t block_k, uint8_t *out,
                                           size_t out_size) {
  lastError.clear();
  const LayerDesc *l;
  if (tessera_status s = lookUpLayer(bundle, out, layer, l))
    return s;
  constexpr int64_t kMaxLen = int64_t(1) << 40, kMaxTile = int64_t(1) << 20;
  if (q_len < 1 || q_len > kMaxLen || k_len < 1 || k_len > kMaxLen)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "q_len and k_len must be in [1, 2^40], got " +
                    std::to_string(q_len) + " and " + std::to_string(k_len));
  if (block_q < 1 || block_q > kMaxTile || block_k < 1 || block_k > kMaxTile)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "block_q and block_k must be in [1, 2^20], got " +
                    std::to_string(block_q) + " and " +
                    std::to_string(block_k));
  if (!l->dynamicGroups.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "layer " + std::to_string(layer) + " has dynamic heads (from " +
                    std::to_string(l->dynamicGroups.front().heads.front()) +
                    "): their tiles depend on the input");
  int64_t tq = (q_len + block_q - 1) / block_q;
  int64_t tk = (k_len + block_k - 1) / block_k;
  int64_t perHead, need;
  if (__builtin_mul_overflow(tq, tk, &perHead) ||
      __builtin_mul_overflow(perHead, l->numHeads, &need) ||
      uint64_t(need) > out_size)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "out holds " + std::to_string(out_size) + " bytes; " +
                    std::to_string(l->numHeads) + " heads of " +
                    std::to_string(tq) + " x " + std::to_string(tk) +
                    " tiles need more");
  std::memset(out, 0, size_t(need));
  for (size_t slot = 0; slot < l->computedHead.size(); ++slot) {
    int64_t head = l->computedHead[slot], group = l->headGroup[slot];
    kernel::ProgramRuns runs(l->nodes.data() + l->groupBegin[size_t(group)],
                             l->groupBegin[size_t(group) + 1] -
                                 l->groupBegin[size_t(group)],
                             l->data.data());
    uint8_t *classes = out + head * perHead;
    for (int64_t qb = 0; qb < tq; ++qb) {
      int64_t q0 = qb * block_q, q1 = std::min(q0 + block_q, q_len);
      kernel::RunCtx ctx = kernel::makeRunCtx(q0, q1, q_len, k_len, block_k,
                                              head, l->numHeads);
      runs.forEachRun(ctx, [&](const kernel::Run &r) {
        std::memset(classes + qb * tk + r.lo, r.cls, size_t(r.hi - r.lo + 1));
      });
    }
  }
  return TESSERA_OK;
}

tessera_status tessera_attention(tessera_bundle *bundle, int64_t layer,
                                 const tessera_tensor *q,
                                 const tessera_tensor *k,
                                 const tessera_tensor *v,
                                 const tessera_tensor *o, float *lse,
                                 float scale, void *cuda_stream) {
  return tessera_attention_dynamic(bundle, layer, q, k, v, o, lse, scale,
                                   nullptr, cuda_stream);
}

tessera_status tessera_attention_dynamic(
    tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
    const tessera_tensor *k, const tessera_tensor *v, const tessera_tensor *o,
    float *lse, float scale, const tessera_dynamic_inputs *inputs,
    void *cuda_stream) {
  return guarded([&] {
    return attentionDynamic(bundle, layer, q, k, v, o, lse, scale, inputs,
                            cuda_stream);
  });
}

} // extern "C"

/// The launches of dynamic group `g` of layer `layer` (its index kernels,
/// then the attention over the index; `a` its arguments but the workspace
/// and the chunk) on `stream`: in chunks of heads, batch entries and (block
/// top-k) query blocks whose workspace stays within the budget
/// (kernel::dynChunkPlan, docs/bundles.md), one workspace reused by every
/// chunk in stream order.
static tessera_status launchDynamicGroup(tessera_bundle *bundle, int64_t layer,
                                         const DynamicGroupDesc &g,
                                         kernel::DynArgs a,
                                         kernel::AttnParams &p, int64_t batch,
                                         void *stream) {
  const Driver &d = *bundle->context->driver;
  const int64_t slots = static_cast<int64_t>(g.heads.size());
  const int64_t budget = dynamicWorkspaceBudget();
  kernel::DynChunks plan;
  if (!kernel::dynChunkPlan(a, p.nq, p.nk, slots, batch, budget, plan)) {
    const kernel::i64 least = kernel::dynMinWorkspace(a, p.nq, p.nk);
    return fail(
        TESSERA_ERROR_INVALID_ARGUMENT,
        "layer " + std::to_string(layer) + ": the dynamic group of head " +
            std::to_string(g.heads.front()) + " needs at least " +
            (least >= kernel::kUnbounded ? std::string("2^62 bytes")
                                         : gib(double(least))) +
            " of CUDA workspace at Nq = " + std::to_string(p.nq) +
            ", Nk = " + std::to_string(p.nk) + " (one head's index" +
            (a.family == kernel::kBlockTopk ? ", one query block at a time"
                                            : "") +
            "), more than the budget of " + gib(double(budget)) +
            " (TESSERA_DYNAMIC_WORKSPACE; docs/bundles.md)");
  }
  unsigned long long ws = 0;
  if (int rc = d.memAllocAsync(&ws, size_t(plan.bytes), stream))
    return fail(TESSERA_ERROR_CUDA, d.message("cuMemAllocAsync", rc));
  a.ws = reinterpret_cast<unsigned char *>(ws);
  a.qChunk = plan.qChunk;
  a.qChunks = plan.qChunks;
  void *args[] = {&p, &a};
  int failed = 0;
  for (int64_t b0 = 0; b0 < batch && !failed; b0 += plan.batches)
    for (int64_t s0 = 0; s0 < slots && !failed; s0 += plan.slots) {
      a.batch0 = b0;
      a.slot0 = s0;
      a.numSlots = std::min<int64_t>(plan.slots, slots - s0);
      const int64_t batches = std::min<int64_t>(plan.batches, batch - b0);
      for (int64_t i = 0; i < kernel::dynLaunchCount(a) && !failed; ++i) {
        kernel::i64 kern, gx, qBlock0;
        kernel::dynLaunch(a, p.nq, p.nk, i, kern, gx, qBlock0);
        if (kern < 0 || size_t(kern) >= g.kernels.size()) {
          d.memFreeAsync(ws, stream);
          return fail(TESSERA_ERROR_INTERNAL,
                      "a dynamic group's launch plan names a kernel it lacks");
        }
        if (gx < 1)
          continue;
        a.qBlock0 = qBlock0; // (the arguments are copied at the launch)
        if (gx > 0x7fffffff)
          failed = -1;
        else
          failed = d.launchKernel(bundle->functions.at(g.kernels[size_t(kern)]),
                                  static_cast<unsigned>(gx),
                                  static_cast<unsigned>(a.numSlots),
                                  static_cast<unsigned>(batches), 128, 1, 1, 0,
                                  stream, args, nullptr);
      }
    }
  d.memFreeAsync(ws, stream);
  if (failed < 0)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "a dynamic kernel's grid exceeds 2^31 - 1 blocks");
  if (failed)
    return fail(TESSERA_ERROR_CUDA, d.message("cuLaunchKernel", failed));
  return TESSERA_OK;
}

static tessera_status attentionDynamic(
    tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
    const tessera_tensor *k, const tessera_tensor *v, const tessera_tensor *o,
    float *lse, float scale, const tessera_dynamic_inputs *inputs,
    void *cuda_stream) {
  lastError.clear();
  if (!bundle)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle is null");
  if (contextGone(bundle))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "the bundle's context has been destroyed");
  const LayerDesc *l = findLayer(bundle, layer);
  if (!l)
    return fail(TESSERA_ERROR_LAYER_OUT_OF_RANGE,
                "the bundle has no layer " + std::to_string(layer));
  for (auto [t, name] : {std::pair{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}})
    if (tessera_status s = checkTensor(t, name))
      return s;
  bool cuda = bundle->context->kind == TESSERA_DEVICE_CUDA;
  tessera_dtype layerType =
      l->dtype == "f16" ? TESSERA_DTYPE_F16 : TESSERA_DTYPE_BF16;
  if (k->dtype != q->dtype || v->dtype != q->dtype || o->dtype != q->dtype)
    return fail(TESSERA_ERROR_UNSUPPORTED_DTYPE,
                "q, k, v and o must have one dtype");
  if (q->dtype != layerType && (cuda || q->dtype != TESSERA_DTYPE_F32))
    return fail(TESSERA_ERROR_UNSUPPORTED_DTYPE,
                std::string("layer ") + std::to_string(layer) + " takes " +
                    dtypeName(layerType) +
                    (cuda ? "" : " (or f32 on the CPU)") + ", not " +
                    dtypeName(q->dtype));
  for (auto [t, name] : {std::pair{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}})
    if (t->head_dim != l->headDim)
      return fail(TESSERA_ERROR_UNSUPPORTED_HEAD_DIM,
                  std::string(name) + " has head_dim " +
                      std::to_string(t->head_dim) + "; layer " +
                      std::to_string(layer) + " has " +
                      std::to_string(l->headDim));
  if (q->heads != l->numHeads || o->heads != l->numHeads)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH, "q and o must have the layer's " +
                                                  std::to_string(l->numHeads) +
                                                  " heads");
  if (k->heads != l->numKvHeads || v->heads != l->numKvHeads)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "k and v must have the layer's " +
                    std::to_string(l->numKvHeads) + " kv heads");
  if (k->batch != q->batch || v->batch != q->batch || o->batch != q->batch)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "q, k, v and o must have one batch size");
  if (v->seq != k->seq)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "k and v must have one sequence length");
  if (o->seq != q->seq)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "o must have the query length of q");
  if (!(scale >= 0) || scale > kMaxScale)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "scale must be in [0, 65536] (0: 1/sqrt(head_dim)); larger "
                "scales overflow the fp32 scores");
  // The engine's centroids, where a routing group takes them.
  int64_t needClusters = 0;
  const DynamicGroupDesc *needing = nullptr;
  for (const DynamicGroupDesc &g : l->dynamicGroups)
    if (g.args.family == kernel::kRouting && g.args.iterations == 0 &&
        g.args.clusters > needClusters) {
      needClusters = g.args.clusters;
      needing = &g;
    }
  const float *centroids = nullptr;
  if (needing) {
    std::string want = "[" + std::to_string(l->numHeads) + ", " +
                       std::to_string(needClusters) + ", " +
                       std::to_string(l->headDim) + "]";
    if (!inputs || !inputs->centroids)
      return fail(TESSERA_ERROR_NULL_POINTER,
                  "layer " + std::to_string(layer) +
                      ": the routing group of head " +
                      std::to_string(needing->heads.front()) +
                      " takes the engine's centroids (kmeans_iterations = "
                      "0): pass tessera_dynamic_inputs with fp32 centroids " +
                      want + " to tessera_attention_dynamic");
    if (inputs->centroid_heads != l->numHeads ||
        inputs->centroid_clusters != needClusters ||
        inputs->centroid_head_dim != l->headDim)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "layer " + std::to_string(layer) + ": centroids must be " +
                      want + ", got [" +
                      std::to_string(inputs->centroid_heads) + ", " +
                      std::to_string(inputs->centroid_clusters) + ", " +
                      std::to_string(inputs->centroid_head_dim) + "]");
    centroids = inputs->centroids;
  }
  // (After the shape checks: the extents below assume consistent shapes.)
  // o is written while q, k and v are read: it may not share memory with k
  // or v, nor with q unless it is q itself (each query block reads its own
  // rows before writing them), nor write one element twice; lse neither.
  if (overlapsItself(*o))
    return fail(TESSERA_ERROR_BAD_STRIDES,
                "o has overlapping elements (a zero or short stride)");
  for (auto [t, name] : {std::pair{k, "k"}, {v, "v"}})
    if (overlap(extent(*o), extent(*t)))
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  std::string("o overlaps ") + name +
                      " (the output would overwrite inputs still to be read)");
  if (overlap(extent(*o), extent(*q)) && !sameLayout(*o, *q))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "o overlaps q without being q itself");
  if (lse) {
    Extent lseExtent{reinterpret_cast<uintptr_t>(lse),
                     reinterpret_cast<uintptr_t>(lse) +
                         sizeof(float) * uint64_t(q->batch) * l->numHeads *
                             uint64_t(q->seq)};
    for (auto [t, name] : {std::pair{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}})
      if (overlap(lseExtent, extent(*t)))
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    std::string("lse overlaps ") + name);
  }
  if (centroids)
    if (tessera_status s =
            checkCentroids(centroids, l->numHeads * needClusters * l->headDim,
                           *o, lse, q->batch * l->numHeads * q->seq))
      return s;
  if (!cuda) {
    // Where a CUDA driver is present, device memory handed to the CPU is
    // caught before it is dereferenced.
    std::string ignored;
    if (const Driver *d = Driver::get(ignored))
      for (auto [ptr, name] : {std::pair{q->data, "q"},
                               {k->data, "k"},
                               {v->data, "v"},
                               {o->data, "o"},
                               {static_cast<void *>(lse), "lse"},
                               {const_cast<float *>(centroids), "centroids"}}) {
        unsigned type = 0, managed = 0;
        auto at = reinterpret_cast<unsigned long long>(ptr);
        // Managed memory is host-accessible: only plain device memory is
        // refused.
        if (ptr &&
            d->pointerGetAttribute(&type, kPointerAttrMemoryType, at) == 0 &&
            type == kMemoryTypeDevice &&
            !(d->pointerGetAttribute(&managed, kPointerAttrIsManaged, at) ==
                  0 &&
              managed))
          return fail(TESSERA_ERROR_WRONG_DEVICE,
                      std::string(name) +
                          " is CUDA device memory; the context is the CPU");
      }
    if (centroids)
      if (tessera_status s =
              checkCentroidsFinite(*l, layer, centroids, needClusters))
        return s;
    cpu::LayerArgs args;
    args.q = toCpu(*q);
    args.k = toCpu(*k);
    args.v = toCpu(*v);
    args.o = toCpu(*o);
    args.lse = lse;
    args.scale = scale;
    if (std::string e = cpu::runLayer(l->table(), args); !e.empty())
      return fail(TESSERA_ERROR_INTERNAL, e);
    // Dynamic groups; routing groups read the engine's centroids with the
    // stride of the layer's largest cluster count. Each needs host memory
    // for its index (docs/runtime.md): refused before anything is
    // allocated where it would not fit.
    const double limit = dynamicCpuMemoryLimit();
    for (const DynamicGroupDesc &g : l->dynamicGroups) {
      const double need =
          dynamicGroupCpuBytes(g.args, q->seq, k->seq, l->headDim);
      if (need > limit)
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    "layer " + std::to_string(layer) + ": the dynamic group "
                    "of head " + std::to_string(g.heads.front()) + " needs " +
                    gib(need) + " of host memory per head at Nq = " +
                    std::to_string(q->seq) + ", Nk = " +
                    std::to_string(k->seq) + ", more than the limit of " +
                    gib(limit) + " (half the physical memory, or "
                    "TESSERA_CPU_INDEX_MEMORY)");
    }
    for (const DynamicGroupDesc &g : l->dynamicGroups) {
      if (std::string e = runDynamicGroupCpu(g, args, l->numHeads, centroids,
                                             needClusters);
          !e.empty())
        return fail(TESSERA_ERROR_INTERNAL, e);
    }
    return TESSERA_OK;
  }

  // CUDA: alignment, device residency, launch.
  if (reinterpret_cast<uintptr_t>(o->data) % 4 || o->stride_batch % 2 ||
      o->stride_seq % 2 || o->stride_head % 2)
    return fail(TESSERA_ERROR_MISALIGNED,
                "o must be 4-byte aligned with even strides on CUDA");
  const Driver &d = *bundle->context->driver;
  CudaScope scope(bundle->context);
  for (auto [ptr, name] : {std::pair{q->data, "q"},
                           {k->data, "k"},
                           {v->data, "v"},
                           {o->data, "o"},
                           {static_cast<void *>(lse), "lse"},
                           {const_cast<float *>(centroids), "centroids"}}) {
    if (!ptr)
      continue;
    unsigned type = 0;
    int ordinal = -1;
    if (d.pointerGetAttribute(&type, kPointerAttrMemoryType,
                              reinterpret_cast<unsigned long long>(ptr)) ||
        type != kMemoryTypeDevice ||
        d.pointerGetAttribute(&ordinal, kPointerAttrDeviceOrdinal,
                              reinterpret_cast<unsigned long long>(ptr)) ||
        ordinal != bundle->context->device)
      return fail(TESSERA_ERROR_WRONG_DEVICE,
                  std::string(name) + " is not memory of CUDA device " +
                      std::to_string(bundle->context->device));
  }
  bool vec = true;
  for (const tessera_tensor *t : {q, k, v})
    vec = vec && reinterpret_cast<uintptr_t>(t->data) % 16 == 0 &&
          t->stride_batch % 8 == 0 && t->stride_seq % 8 == 0 &&
          t->stride_head % 8 == 0;
  kernel::AttnParams p{};
  p.q = static_cast<const kernel::u16 *>(q->data);
  p.k = static_cast<const kernel::u16 *>(k->data);
  p.v = static_cast<const kernel::u16 *>(v->data);
  p.o = static_cast<kernel::u16 *>(o->data);
  p.lse = lse;
  p.nq = q->seq;
  p.nk = k->seq;
  p.qStrideB = q->stride_batch, p.qStrideS = q->stride_seq,
  p.qStrideH = q->stride_head;
  p.kStrideB = k->stride_batch, p.kStrideS = k->stride_seq,
  p.kStrideH = k->stride_head;
  p.vStrideB = v->stride_batch, p.vStrideS = v->stride_seq,
  p.vStrideH = v->stride_head;
  p.oStrideB = o->stride_batch, p.oStrideS = o->stride_seq,
  p.oStrideH = o->stride_head;
  float s = scale > 0 ? scale : 1.0f / std::sqrt(float(l->headDim));
  p.scaleLog2 = s * 1.4426950408889634f;
  p.numHeads = static_cast<int>(l->numHeads);
  p.numKvHeads = static_cast<int>(l->numKvHeads);
  p.vectorLoads = vec ? 1 : 0;
  int position = static_cast<int>(l->position);
  void *args[] = {&p, &position};
  if (q->batch > 65535)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "batch must be at most 65535 on CUDA");
  // The attention kernel over the computed heads (the manifest's rows and
  // threads per block), then the fill kernel over the skipped ones (128
  // rows, 128 threads).
  auto launch = [&](const std::string &kernel, int64_t rowsPerBlock,
                    unsigned threads, unsigned shared, size_t heads) -> int {
    if (heads == 0)
      return 0;
    return d.launchKernel(
        bundle->functions.at(kernel),
        static_cast<unsigned>((q->seq + rowsPerBlock - 1) / rowsPerBlock),
        static_cast<unsigned>(heads), static_cast<unsigned>(q->batch),
        threads, 1, 1, shared, cuda_stream, args, nullptr);
  };
  for (const auto &[kernel, slots] : l->kernels)
    if (int rc = launch(kernel, l->kernelBlockQ,
                        static_cast<unsigned>(l->kernelThreads),
                        static_cast<unsigned>(l->kernelDynamicShared),
                        size_t(slots)))
      return fail(TESSERA_ERROR_CUDA, d.message("cuLaunchKernel", rc));
  if (int rc = launch(l->fillKernel, 128, 128, 0, l->skippedHeads.size()))
    return fail(TESSERA_ERROR_CUDA, d.message("cuLaunchKernel", rc));
  // Dynamic groups: the index kernels, then the attention over the index,
  // in stream order, with a stream-ordered workspace (docs/runtime.md).
  for (size_t gi = 0; gi < l->dynamicGroups.size(); ++gi) {
    const DynamicGroupDesc &g = l->dynamicGroups[gi];
    kernel::DynArgs a = g.args;
    a.headDim = l->headDim;
    a.layer = position;
    a.group = static_cast<int>(gi);
    a.centroids = centroids;
    if (a.family == kernel::kRouting && a.iterations == 0 &&
        a.clusters != needClusters)
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "on CUDA, a layer's routing groups that take centroids must "
                  "share one cluster count");
    if (tessera_status s =
            launchDynamicGroup(bundle, layer, g, a, p, q->batch, cuda_stream))
      return s;
  }
  return TESSERA_OK;
}
