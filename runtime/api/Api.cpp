//===- Api.cpp - the Tessera runtime C API --------------------------------===//

#include "tessera/tessera.h"

#include "../cpu/ThreadPool.h"
#include "../cuda/Driver.h"
#include "BackwardLaunch.h"
#include "DynamicCpu.h"
#include "HopperLaunch.h"
#include "Manifest.h"
#include "Visited.h"
#include "tessera/kernel/ProgramRuns.h"
#include "tessera/kernel/SeqLaunch.h"

#include "tessera/cpu/Backward.h"
#include "tessera/cpu/Executor.h"
#include "tessera/cpu/Permuted.h"
#include "tessera/cpu/RoutedWalk.h"
#include "tessera/jit/Cache.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <algorithm>
#include <atomic>
#include <cstddef>
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
  int ccMajor = 0, ccMinor = 0; ///< compute capability
  /// Bundles not yet destroyed, and whether tessera_context_destroy was
  /// called: the object lives until both say it is unused, so a bundle that
  /// outlives its context reports an error instead of reading freed memory.
  std::mutex lifetime;
  int64_t liveBundles = 0;
  bool destroyed = false;
  /// CPU calls' threads (0: every hardware thread).
  std::atomic<int> numThreads{0};
  /// Those threads, started by the first call that needs them and kept
  /// until the context is freed (tessera_context_set_num_threads resizes).
  cpu::ThreadPool pool;
};

struct tessera_bundle {
  tessera_context *context = nullptr;
  BundleDesc desc;
  std::map<int64_t, size_t> byIndex; ///< layer index -> position
  void *module = nullptr;
  std::map<std::string, void *> functions;
  /// CUDA: every attention and fill kernel has its per-sequence `_seq`
  /// twin (bundles emitted before them have none: dense calls only).
  bool seqKernels = false;
  /// CUDA: the kernels dense calls run where a layer has sm_90a twins
  /// (HopperLaunch.h), whether TESSERA_KERNEL_PATH chose it, and the
  /// tensor maps of those calls.
  KernelPath path = KernelPath::MmaSync;
  bool pathForced = false;
  TensorMapCache tensorMaps;
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

/// The suffix of the per-sequence twin of an attention or fill kernel
/// (EmitCuda.cpp's kSeqSuffix).
constexpr const char *kSeqSuffix = "_seq";

/// The split-KV merge kernel of a layer with attention kernels
/// (EmitCuda.cpp's mergeName).
std::string mergeKernel(const LayerDesc &l) {
  return "tessera_merge_" + l.dtype + "_d" + std::to_string(l.headDim);
}

/// A layer's per-sequence kernels: the twins of its fill kernel and
/// attention kernels, and the merge of their splits.
std::vector<std::string> seqTwins(const LayerDesc &l) {
  std::vector<std::string> twins;
  if (!l.fillKernel.empty())
    twins.push_back(l.fillKernel + kSeqSuffix);
  for (const auto &k : l.kernels)
    twins.push_back(k.first + kSeqSuffix);
  if (!l.kernels.empty())
    twins.push_back(mergeKernel(l));
  return twins;
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
    // The kernel path: on sm_90a the module has both the sm_90a twins and
    // the mma.sync kernels (which dense calls the twins cannot take, and
    // every other call, run).
    bool twins = false;
    for (const LayerDesc &l : b->desc.layers) {
      twins = twins || !l.wgmmaKernels.empty();
      for (const DynamicGroupDesc &g : l.dynamicGroups)
        twins = twins || !g.wgmmaKernels.empty();
    }
    const Driver &drv = *context->driver;
    if (std::string e = chooseKernelPath(context->ccMajor, context->ccMinor,
                                         drv.tensorMapEncodeTiled != nullptr,
                                         b->path, b->pathForced);
        !e.empty())
      return fail(TESSERA_ERROR_INVALID_ARGUMENT, e);
    if (!twins)
      b->path = KernelPath::MmaSync;
    const std::string arch =
        context->arch + (b->path == KernelPath::Wgmma ? "a" : "");
    jit::CachedCompile c = jit::compileCached(
        *nvrtc, source, arch, b->desc.nvrtcOptions, jit::defaultCacheDir());
    if (!c.warning.empty()) {
      static std::once_flag warned;
      std::call_once(warned, [&] {
        std::fprintf(stderr, "tessera: warning: %s\n", c.warning.c_str());
      });
    }
    if (!c.ok)
      return fail(TESSERA_ERROR_COMPILE,
                  "NVRTC could not compile the bundle for " + arch + ":\n" +
                      c.error);
    CudaScope scope(context);
    const Driver &d = *context->driver;
    if (int rc = d.moduleLoadData(&b->module, c.binary.data()))
      return fail(TESSERA_ERROR_CUDA, d.message("cuModuleLoadData", rc));
    for (const LayerDesc &l : b->desc.layers) {
      std::vector<std::string> names = {l.fillKernel};
      for (const auto &k : l.kernels)
        names.push_back(k.first);
      if (b->path == KernelPath::Wgmma)
        names.insert(names.end(), l.wgmmaKernels.begin(), l.wgmmaKernels.end());
      for (const DynamicGroupDesc &g : l.dynamicGroups) {
        names.insert(names.end(), g.kernels.begin(), g.kernels.end());
        if (b->path == KernelPath::Wgmma)
          for (const std::string &twin : g.wgmmaKernels)
            if (!twin.empty())
              names.push_back(twin);
      }
      names.push_back(l.permutedKernel); // empty: none
      const BackwardKernelsDesc &bwd = l.backward;
      names.insert(names.end(),
                   {bwd.preprocess, bwd.keyMajor, bwd.keyMajorGuarded,
                    bwd.queryMajor, bwd.queryMajorGuarded, bwd.zeroSkipped,
                    bwd.dynamicClear, bwd.dynamicAdd});
      for (const DynamicGroupDesc &g : l.dynamicGroups) {
        names.insert(names.end(), {g.backwardDq, g.backwardDkdv,
                                   g.backwardDqGuarded, g.backwardDkdvGuarded});
        names.insert(names.end(), g.backwardRest.begin(), g.backwardRest.end());
      }
      // The per-sequence twins of the attention and fill kernels, where
      // the bundle has them (bundles emitted before them do not).
      for (const std::string &twin : seqTwins(l)) {
        void *f = nullptr;
        if (!b->functions.count(twin) &&
            d.moduleGetFunction(&f, b->module, twin.c_str()) == 0)
          b->functions[twin] = f;
      }
      // ... and of the backward's two passes (BackwardEmit.cpp).
      for (const std::string &name : {bwd.keyMajor, bwd.keyMajorGuarded,
                                      bwd.queryMajor, bwd.queryMajorGuarded}) {
        const std::string twin = name + kSeqSuffix;
        void *f = nullptr;
        if (!name.empty() && !b->functions.count(twin) &&
            d.moduleGetFunction(&f, b->module, twin.c_str()) == 0)
          b->functions[twin] = f;
      }
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
      // Tiles above the 48 KiB a kernel gets by default (head_dim 256, the
      // sm_90a kernels).
      std::vector<std::pair<std::string, int64_t>> big;
      for (const auto &k : l.kernels)
        for (std::string name : {k.first, k.first + kSeqSuffix})
          if (l.kernelDynamicShared > 48 * 1024 && b->functions.count(name))
            big.push_back({name, l.kernelDynamicShared});
      if (b->path == KernelPath::Wgmma) {
        for (const std::string &name : l.wgmmaKernels)
          big.push_back({name, l.wgmmaDynamicShared});
        for (const DynamicGroupDesc &g : l.dynamicGroups)
          for (const std::string &name : g.wgmmaKernels)
            if (!name.empty() && g.wgmmaDynamicShared > 48 * 1024)
              big.push_back({name, g.wgmmaDynamicShared});
      }
      std::vector<std::string> keyMajor = {bwd.keyMajor, bwd.keyMajorGuarded};
      for (const std::string &name : {bwd.keyMajor, bwd.keyMajorGuarded})
        if (b->functions.count(name + kSeqSuffix)) // per-sequence twins
          keyMajor.push_back(name + kSeqSuffix);
      for (const DynamicGroupDesc &g : l.dynamicGroups)
        for (const std::string *name :
             {&g.backwardDkdv, &g.backwardDkdvGuarded,
              g.backwardRest.empty() ? &g.backwardDkdv : &g.backwardRest[1],
              g.backwardRest.empty() ? &g.backwardDkdv : &g.backwardRest[3]})
          if (!name->empty()) // the same tiles (DynamicBackward.cuh)
            keyMajor.push_back(*name);
      for (const std::string &name : keyMajor)
        if (bwd.keyMajorDynamicShared > 48 * 1024 &&
            std::find_if(big.begin(), big.end(), [&](const auto &b) {
              return b.first == name;
            }) == big.end())
          big.push_back({name, bwd.keyMajorDynamicShared});
      for (const auto &[name, bytes] : big) {
        if (int rc = d.funcSetAttribute(b->functions.at(name),
                                        kFuncAttrMaxDynamicSharedSize,
                                        static_cast<int>(bytes))) {
          d.moduleUnload(b->module);
          return fail(TESSERA_ERROR_CUDA,
                      "layer " + std::to_string(l.index) + " needs " +
                          std::to_string(bytes) +
                          " bytes of shared memory per block, which this "
                          "device does not grant: " +
                          d.message("cuFuncSetAttribute", rc));
        }
      }
    }
    b->seqKernels = true;
    for (const LayerDesc &l : b->desc.layers)
      for (const std::string &twin : seqTwins(l))
        b->seqKernels = b->seqKernels && b->functions.count(twin);
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

static tessera_status attentionRun(tessera_bundle *bundle,
                                   const tessera_attention_desc *desc);
static tessera_status attentionWorkspaceSize(tessera_bundle *bundle,
                                             const tessera_attention_desc *desc,
                                             size_t *bytes);
static tessera_status
attentionBackward(tessera_bundle *bundle, const tessera_attention_desc *desc,
                  const tessera_tensor *dO, const float *dLse,
                  const tessera_tensor *dq, const tessera_tensor *dk,
                  const tessera_tensor *dv);

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
    c->ccMajor = major;
    c->ccMinor = minor;
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

void tessera_attention_desc_init_size(tessera_attention_desc *desc,
                                      size_t size) {
  if (!desc || size < sizeof desc->struct_size || size > 65536)
    return; // the run then refuses the uninitialised struct_size
  std::memset(desc, 0, size);
  desc->struct_size = size;
}

// The symbol itself (the header's macro of this name passes the caller's
// sizeof): callers of API 4-6 and bindings calling it by name own the
// struct up to head_count, never more.
void(tessera_attention_desc_init)(tessera_attention_desc *desc) {
  tessera_attention_desc_init_size(
      desc, offsetof(tessera_attention_desc, head_count) + sizeof(int64_t));
}

tessera_status tessera_attention_run(tessera_bundle *bundle,
                                     const tessera_attention_desc *desc) {
  return guarded([&] { return attentionRun(bundle, desc); });
}

tessera_status
tessera_attention_workspace_size(const tessera_bundle *bundle,
                                 const tessera_attention_desc *desc,
                                 size_t *bytes) {
  // Validation takes the bundle as a run does; nothing here changes it.
  return guarded([&] {
    return attentionWorkspaceSize(const_cast<tessera_bundle *>(bundle), desc,
                                  bytes);
  });
}

tessera_status tessera_attention_backward(
    tessera_bundle *bundle, const tessera_attention_desc *desc,
    const tessera_tensor *d_o, const float *d_lse, const tessera_tensor *dq,
    const tessera_tensor *dk, const tessera_tensor *dv) {
  return guarded([&] {
    return attentionBackward(bundle, desc, d_o, d_lse, dq, dk, dv);
  });
}

tessera_status tessera_context_set_num_threads(tessera_context *context,
                                               int num_threads) {
  lastError.clear();
  if (!context)
    return fail(TESSERA_ERROR_NULL_POINTER, "context is null");
  if (num_threads < 0 || num_threads > 4096)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "num_threads must be in [0, 4096] (0: every hardware "
                "thread), got " +
                    std::to_string(num_threads));
  context->numThreads = num_threads;
  context->pool.resize(num_threads > 0
                           ? num_threads
                           : int(std::thread::hardware_concurrency()));
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

/// The version 3 call: a dense description. A null tensor pointer is
/// reported by name (the description holds tensors by value, where a
/// missing one is a null data pointer).
tessera_status tessera_attention_dynamic(
    tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
    const tessera_tensor *k, const tessera_tensor *v, const tessera_tensor *o,
    float *lse, float scale, const tessera_dynamic_inputs *inputs,
    void *cuda_stream) {
  lastError.clear();
  if (bundle)
    for (auto [t, name] : {std::pair{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}})
      if (!t)
        return fail(TESSERA_ERROR_NULL_POINTER,
                    std::string(name) + " is a null tensor pointer");
  tessera_attention_desc d;
  tessera_attention_desc_init(&d);
  d.layer = layer;
  if (bundle) {
    d.q = *q, d.k = *k, d.v = *v, d.o = *o;
  }
  d.lse = lse;
  d.scale = scale;
  d.dynamic_inputs = inputs;
  d.cuda_stream = cuda_stream;
  return tessera_attention_run(bundle, &d);
}

} // extern "C"

// The hooks of Visited.h (C++ linkage, for the C API's other files).
const LayerDesc *tessera::runtime::bundleLayer(const tessera_bundle *bundle,
                                               int64_t index) {
  return findLayer(bundle, index);
}

tessera_status tessera::runtime::setLastError(tessera_status status,
                                              const std::string &message) {
  lastError = message;
  return status;
}

/// The launches of dynamic group `g` of layer `layer` (its index kernels,
/// then the attention over the index; `a` its arguments but the workspace
/// and the chunk) on `stream`: in chunks of heads, batch entries and (block
/// top-k) query blocks whose workspace stays within the budget
/// (kernel::dynChunkPlan, docs/bundles.md), one workspace reused by every
/// chunk in stream order. `maps`: null, or the call's tensor maps, with
/// which the attention kernels' sm_90a twins run in their place. `attend`:
/// where set, launches in place of the attention over the index (a chunk's
/// DynArgs and batch entries; returns a driver status, -1 for a grid past
/// CUDA's limits): the backward's.
static tessera_status launchDynamicGroup(tessera_bundle *bundle, int64_t layer,
                                         const DynamicGroupDesc &g,
                                         kernel::DynArgs a,
                                         kernel::AttnParams &p, int64_t batch,
                                         void *stream, HopperMapsBytes *maps,
                                         const DynamicAttend &attend = {}) {
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
  unsigned long long ws = 0; // none where the group needs none (block_index)
  if (plan.bytes > 0)
    if (int rc = d.memAllocAsync(&ws, size_t(plan.bytes), stream))
      return fail(TESSERA_ERROR_CUDA, d.message("cuMemAllocAsync", rc));
  a.ws = reinterpret_cast<unsigned char *>(ws);
  a.qChunk = plan.qChunk;
  a.qChunks = plan.qChunks;
  void *args[] = {&p, &a};
  void *twinArgs[] = {&p, &a, maps};
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
          if (ws)
            d.memFreeAsync(ws, stream);
          return fail(TESSERA_ERROR_INTERNAL,
                      "a dynamic group's launch plan names a kernel it lacks");
        }
        const bool rest = a.family == kernel::kRouting && a.merge;
        if (attend && i >= kernel::dynLaunchCount(a) - (rest ? 2 : 1)) {
          // The backward's kernels over the index in the attention's place
          // (runBackwardCuda), and in rtRest's where routing merges.
          a.qBlock0 = 0;
          if (i == kernel::dynLaunchCount(a) - 1)
            failed = attend(a, batches);
          continue;
        }
        if (gx < 1)
          continue;
        a.qBlock0 = qBlock0; // (the arguments are copied at the launch)
        const bool twin = maps && !g.wgmmaKernels.empty() &&
                          !g.wgmmaKernels[size_t(kern)].empty();
        if (gx > 0x7fffffff)
          failed = -1;
        else if (twin) // kHopperDynParts query tiles a block
          failed = d.launchKernel(
              bundle->functions.at(g.wgmmaKernels[size_t(kern)]),
              static_cast<unsigned>(kernel::dynTwinGrid(gx)),
              static_cast<unsigned>(a.numSlots), static_cast<unsigned>(batches),
              static_cast<unsigned>(g.wgmmaThreads), 1, 1,
              static_cast<unsigned>(g.wgmmaDynamicShared), stream, twinArgs,
              nullptr);
        else
          failed = d.launchKernel(bundle->functions.at(g.kernels[size_t(kern)]),
                                  static_cast<unsigned>(gx),
                                  static_cast<unsigned>(a.numSlots),
                                  static_cast<unsigned>(batches), 128, 1, 1, 0,
                                  stream, args, nullptr);
      }
    }
  if (ws)
    d.memFreeAsync(ws, stream);
  if (failed < 0)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "a dynamic kernel's grid exceeds 2^31 - 1 blocks");
  if (failed)
    return fail(TESSERA_ERROR_CUDA, d.message("cuLaunchKernel", failed));
  return TESSERA_OK;
}

//===----------------------------------------------------------------------===//
// Attention calls: validate, plan, run
//===----------------------------------------------------------------------===//
//
// tessera_attention_run checks a whole description in one place
// (validateCall: every field, each error naming it), then runs it on the
// context's device (runCpu: the executor's plan of sequences; runCuda: the
// launches of the dense call). Nothing is read from the engine's arrays
// before the field that describes them has been checked.

namespace {

constexpr int64_t kMaxPosition = int64_t(1) << 40;

/// A call description once validated, with what validation derived.
struct Call {
  tessera_attention_desc d{};
  tessera_bundle *bundle = nullptr;
  const LayerDesc *l = nullptr;
  bool cuda = false;
  int64_t numSeqs = 0;           ///< sequences
  int64_t heads = 0, kvHeads = 0; ///< in the tensors
  int64_t lseCount = 0;          ///< floats the LSE holds
  const float *centroids = nullptr;
  int64_t needClusters = 0;
  /// The caller's block index, where a block_index group reads it (API 8).
  cpu::BlockIndexCsr blockIndex;
  bool hasBlockIndex = false;

  /// A call of version 3: one dense batch, every head, bottom-right.
  bool dense() const {
    return !d.cu_seqlens_q && !d.cu_seqlens_k && !d.seq_lens_k &&
           !d.block_table && !d.q_start && !d.k_start && d.head_count == 0;
  }
  std::string layerName() const { return "layer " + std::to_string(d.layer); }
};

/// The caller's description: the fields its struct_size covers, the rest
/// zero. A description larger than this library's may only add fields
/// left zero (else it asks for something this library cannot do).
tessera_status readDesc(const tessera_attention_desc *desc, Call &c) {
  if (!desc)
    return fail(TESSERA_ERROR_NULL_POINTER, "desc is null");
  constexpr size_t kMin = offsetof(tessera_attention_desc, head_count) +
                          sizeof(int64_t);
  size_t size = desc->struct_size;
  if (size < kMin || size > 65536)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "desc->struct_size is " + std::to_string(size) +
                    ": call tessera_attention_desc_init first (version 4 "
                    "descriptions have " +
                    std::to_string(kMin) + " bytes or more)");
  const auto *bytes = reinterpret_cast<const unsigned char *>(desc);
  for (size_t i = sizeof(tessera_attention_desc); i < size; ++i)
    if (bytes[i])
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "desc sets fields past the " +
                      std::to_string(sizeof(tessera_attention_desc)) +
                      " bytes this library knows (API version " +
                      std::to_string(TESSERA_API_VERSION) +
                      "): the caller's header is newer");
  std::memcpy(&c.d, desc, std::min(size, sizeof(tessera_attention_desc)));
  return TESSERA_OK;
}

/// The four tensors: each well formed, of one dtype (the layer's, or f32
/// on the CPU) and of the layer's head_dim.
tessera_status validateTensors(Call &c) {
  const tessera_attention_desc &d = c.d;
  for (auto [t, name] :
       {std::pair{&d.q, "q"}, {&d.k, "k"}, {&d.v, "v"}, {&d.o, "o"}})
    if (tessera_status s = checkTensor(t, name))
      return s;
  tessera_dtype layerType =
      c.l->dtype == "f16" ? TESSERA_DTYPE_F16 : TESSERA_DTYPE_BF16;
  if (d.k.dtype != d.q.dtype || d.v.dtype != d.q.dtype ||
      d.o.dtype != d.q.dtype)
    return fail(TESSERA_ERROR_UNSUPPORTED_DTYPE,
                "q, k, v and o must have one dtype");
  if (d.q.dtype != layerType && (c.cuda || d.q.dtype != TESSERA_DTYPE_F32))
    return fail(TESSERA_ERROR_UNSUPPORTED_DTYPE,
                c.layerName() + " takes " + dtypeName(layerType) +
                    (c.cuda ? "" : " (or f32 on the CPU)") + ", not " +
                    dtypeName(d.q.dtype));
  for (auto [t, name] :
       {std::pair{&d.q, "q"}, {&d.k, "k"}, {&d.v, "v"}, {&d.o, "o"}})
    if (t->head_dim != c.l->headDim)
      return fail(TESSERA_ERROR_UNSUPPORTED_HEAD_DIM,
                  std::string(name) + " has head_dim " +
                      std::to_string(t->head_dim) + "; " + c.layerName() +
                      " has " + std::to_string(c.l->headDim));
  return TESSERA_OK;
}

/// head_start / head_count, and the heads of q, o (the range) and of k, v
/// (the kv heads the range reads).
tessera_status validateHeads(Call &c) {
  const tessera_attention_desc &d = c.d;
  const int64_t H = c.l->numHeads, G = H / c.l->numKvHeads;
  if (d.head_count == 0 && d.head_start != 0)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_start is " + std::to_string(d.head_start) +
                    " with head_count 0 (every head): set head_count");
  if (d.head_count < 0 || d.head_start < 0 || d.head_count > H ||
      d.head_start > H - d.head_count)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_start " + std::to_string(d.head_start) +
                    " and head_count " + std::to_string(d.head_count) +
                    " are outside the " + std::to_string(H) + " heads of " +
                    c.layerName());
  const int64_t h0 = d.head_start, n = d.head_count ? d.head_count : H;
  c.heads = n;
  c.kvHeads = (h0 + n - 1) / G - h0 / G + 1;
  if (d.q.heads != n || d.o.heads != n)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                d.head_count ? "q.heads and o.heads must be head_count (" +
                                   std::to_string(n) + ")"
                             : "q and o must have the layer's " +
                                   std::to_string(H) + " heads");
  if (d.k.heads != c.kvHeads || d.v.heads != c.kvHeads)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                d.head_count
                    ? "k.heads and v.heads must be " +
                          std::to_string(c.kvHeads) + " (kv heads " +
                          std::to_string(h0 / G) + " to " +
                          std::to_string((h0 + n - 1) / G) +
                          ", read by heads " + std::to_string(h0) + " to " +
                          std::to_string(h0 + n - 1) + ")"
                    : "k and v must have the layer's " +
                          std::to_string(c.l->numKvHeads) + " kv heads");
  return TESSERA_OK;
}

/// A cu_seqlens array: num_seqs + 1 offsets from 0 or more, never
/// decreasing, ending within `rows`.
tessera_status checkCuSeqlens(const int32_t *cu, int64_t numSeqs,
                              int64_t rows, const char *name,
                              const char *tensor) {
  if (cu[0] < 0)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                std::string(name) + "[0] is negative (" +
                    std::to_string(cu[0]) + ")");
  for (int64_t s = 0; s < numSeqs; ++s)
    if (cu[s + 1] < cu[s])
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  std::string(name) + " decreases at sequence " +
                      std::to_string(s) + " (" + std::to_string(cu[s]) +
                      " then " + std::to_string(cu[s + 1]) + ")");
  if (cu[numSeqs] > rows)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                std::string(name) + "[num_seqs] = " +
                    std::to_string(cu[numSeqs]) + " is past the " +
                    std::to_string(rows) + " rows of " + tensor + ".seq");
  return TESSERA_OK;
}

/// The queries: dense (num_seqs 0 or q.batch) or packed (cu_seqlens_q).
tessera_status validateQueries(Call &c) {
  const tessera_attention_desc &d = c.d;
  if (d.num_seqs < 0 || d.num_seqs > INT32_MAX - 1)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "num_seqs must be in [0, 2^31 - 2], got " +
                    std::to_string(d.num_seqs));
  if (d.o.seq != d.q.seq)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "o must have the query length of q");
  if (!d.cu_seqlens_q) {
    if (d.num_seqs != 0 && d.num_seqs != d.q.batch)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "num_seqs (" + std::to_string(d.num_seqs) +
                      ") must be q.batch (" + std::to_string(d.q.batch) +
                      ") or 0 for dense queries");
    c.numSeqs = d.q.batch;
    if (d.o.batch != d.q.batch)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "q, k, v and o must have one batch size");
    c.lseCount = d.q.batch * c.heads * d.q.seq;
    return TESSERA_OK;
  }
  if (d.num_seqs < 1)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "num_seqs must be at least 1 with cu_seqlens_q");
  if (d.q.batch != 1 || d.o.batch != 1)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "q.batch and o.batch must be 1 with cu_seqlens_q (packed "
                "queries [1, T, H, D])");
  c.numSeqs = d.num_seqs;
  c.lseCount = c.heads * d.q.seq;
  if (c.cuda) // device memory: the kernels check it (seqView)
    return TESSERA_OK;
  return checkCuSeqlens(d.cu_seqlens_q, d.num_seqs, d.q.seq, "cu_seqlens_q",
                        "q");
}

/// Whether two pages in the first `count` entries of a block table row are
/// the same; `seen` is scratch (one stamp per page, reused across rows).
bool repeatsPage(const int32_t *row, int64_t count, int64_t numPages,
                 std::vector<uint32_t> &seen, uint32_t stamp, int64_t &at) {
  if (numPages <= (int64_t(1) << 24)) {
    for (at = 0; at < count; ++at) {
      if (seen[size_t(row[at])] == stamp)
        return true;
      seen[size_t(row[at])] = stamp;
    }
    return false;
  }
  std::vector<int32_t> sorted(row, row + count);
  std::sort(sorted.begin(), sorted.end());
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup == sorted.end())
    return false;
  at = std::find(row, row + count, *dup) - row;
  at = std::find(row + at + 1, row + count, *dup) - row;
  return true;
}

/// A paged cache: page size, block table and lengths.
tessera_status validatePages(Call &c) {
  const tessera_attention_desc &d = c.d;
  const int64_t pageSize = d.k.seq, numPages = d.k.batch;
  if (d.cu_seqlens_k)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "cu_seqlens_k and block_table exclude each other (packed or "
                "paged keys)");
  if (pageSize < 16 || pageSize > 256)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "the page size (k.seq of a paged cache) must be in [16, "
                "256], got " +
                    std::to_string(pageSize));
  if (!d.seq_lens_k)
    return fail(TESSERA_ERROR_NULL_POINTER,
                "seq_lens_k is null: a paged cache needs each sequence's "
                "length");
  if (d.max_pages_per_seq < 1 || d.max_pages_per_seq > INT32_MAX)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "max_pages_per_seq must be in [1, 2^31 - 1], got " +
                    std::to_string(d.max_pages_per_seq));
  const int64_t stride =
      d.block_table_stride ? d.block_table_stride : d.max_pages_per_seq;
  if (stride < d.max_pages_per_seq || stride > INT32_MAX)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "block_table_stride (" + std::to_string(stride) +
                    ") must be at least max_pages_per_seq (" +
                    std::to_string(d.max_pages_per_seq) + ")");
  if (c.cuda) // device memory: the kernels check lengths and pages
    return TESSERA_OK;
  thread_local std::vector<uint32_t> seen;
  thread_local uint32_t stamp = 0;
  if (numPages <= (int64_t(1) << 24) && seen.size() < size_t(numPages))
    seen.assign(size_t(numPages), 0), stamp = 0;
  for (int64_t s = 0; s < c.numSeqs; ++s) {
    const int64_t len = d.seq_lens_k[s];
    const std::string seq = "[" + std::to_string(s) + "]";
    if (len < 0)
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "seq_lens_k" + seq + " is negative (" +
                      std::to_string(len) + ")");
    const int64_t pages = (len + pageSize - 1) / pageSize;
    if (pages > d.max_pages_per_seq)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "seq_lens_k" + seq + " = " + std::to_string(len) +
                      " needs " + std::to_string(pages) +
                      " pages, past the block table's max_pages_per_seq (" +
                      std::to_string(d.max_pages_per_seq) + ")");
    const int32_t *row = d.block_table + s * stride;
    for (int64_t j = 0; j < pages; ++j)
      if (row[j] < 0 || row[j] >= numPages)
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    "block_table" + seq + "[" + std::to_string(j) + "] = " +
                        std::to_string(row[j]) + " is not a page of k (" +
                        std::to_string(numPages) + " pages)");
    if (++stamp == 0) // wrapped: start the stamps afresh
      std::fill(seen.begin(), seen.end(), 0), stamp = 1;
    int64_t at = 0;
    if (repeatsPage(row, pages, numPages, seen, stamp, at))
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "block_table" + seq + " lists page " +
                      std::to_string(row[at]) + " twice (entry " +
                      std::to_string(at) +
                      "): a sequence's pages must be distinct");
  }
  return TESSERA_OK;
}

/// The keys and values: dense, packed (cu_seqlens_k) or paged.
tessera_status validateKeys(Call &c) {
  const tessera_attention_desc &d = c.d;
  if (!d.cu_seqlens_q && !d.cu_seqlens_k && !d.block_table &&
      (d.k.batch != d.q.batch || d.v.batch != d.q.batch))
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "q, k, v and o must have one batch size");
  if (d.v.batch != d.k.batch || d.v.seq != d.k.seq)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                d.block_table ? "k and v must have one number of pages and "
                                "page size"
                              : "k and v must have one sequence length");
  if (d.block_table)
    return validatePages(c);
  if (d.cu_seqlens_k) {
    if (c.numSeqs < 1 || (!d.cu_seqlens_q && d.num_seqs == 0))
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  "num_seqs must be set (at least 1) with cu_seqlens_k");
    if (d.k.batch != 1)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "k.batch and v.batch must be 1 with cu_seqlens_k (packed "
                  "keys [1, T, Hkv, D])");
    if (!c.cuda)
      if (tessera_status s = checkCuSeqlens(d.cu_seqlens_k, c.numSeqs,
                                            d.k.seq, "cu_seqlens_k", "k"))
        return s;
  } else if (d.k.batch != c.numSeqs) {
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "k.batch (" + std::to_string(d.k.batch) +
                    ") must be num_seqs (" + std::to_string(c.numSeqs) +
                    ") for dense keys");
  }
  for (int64_t s = 0; !c.cuda && d.seq_lens_k && s < c.numSeqs; ++s) {
    int64_t most = d.cu_seqlens_k ? d.cu_seqlens_k[s + 1] - d.cu_seqlens_k[s]
                                  : d.k.seq;
    if (d.seq_lens_k[s] < 0 || d.seq_lens_k[s] > most)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  "seq_lens_k[" + std::to_string(s) + "] = " +
                      std::to_string(d.seq_lens_k[s]) + " is outside [0, " +
                      std::to_string(most) + "] (the sequence's keys)");
  }
  return TESSERA_OK;
}

/// Sequence s's query rows and keys.
int64_t queryCount(const Call &c, int64_t s) {
  const tessera_attention_desc &d = c.d;
  return d.cu_seqlens_q ? d.cu_seqlens_q[s + 1] - d.cu_seqlens_q[s] : d.q.seq;
}
int64_t keyCount(const Call &c, int64_t s) {
  const tessera_attention_desc &d = c.d;
  return d.seq_lens_k    ? d.seq_lens_k[s]
         : d.cu_seqlens_k ? d.cu_seqlens_k[s + 1] - d.cu_seqlens_k[s]
                          : d.k.seq;
}

/// q_start and k_start: non-negative, positions below 2^40.
tessera_status validatePositions(Call &c) {
  const tessera_attention_desc &d = c.d;
  if (c.cuda) // device memory: the kernels check it (seqView)
    return TESSERA_OK;
  for (auto [starts, name] :
       {std::pair{d.q_start, "q_start"}, {d.k_start, "k_start"}}) {
    for (int64_t s = 0; starts && s < c.numSeqs; ++s) {
      int64_t n = starts == d.q_start ? queryCount(c, s) : keyCount(c, s);
      if (starts[s] < 0 || starts[s] > kMaxPosition - n)
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    std::string(name) + "[" + std::to_string(s) + "] = " +
                        std::to_string(starts[s]) +
                        (starts[s] < 0 ? " is negative"
                                       : " puts positions past 2^40"));
    }
  }
  return TESSERA_OK;
}

/// The engine's centroids, where a routing group takes them.
tessera_status validateCentroids(Call &c) {
  const LayerDesc &l = *c.l;
  const DynamicGroupDesc *needing = nullptr;
  for (const DynamicGroupDesc &g : l.dynamicGroups)
    if (g.args.family == kernel::kRouting && g.args.iterations == 0 &&
        g.args.clusters > c.needClusters) {
      c.needClusters = g.args.clusters;
      needing = &g;
    }
  if (!needing)
    return TESSERA_OK;
  const tessera_dynamic_inputs *in = c.d.dynamic_inputs;
  std::string want = "[" + std::to_string(l.numHeads) + ", " +
                     std::to_string(c.needClusters) + ", " +
                     std::to_string(l.headDim) + "]";
  if (!in || !in->centroids)
    return fail(TESSERA_ERROR_NULL_POINTER,
                c.layerName() + ": the routing group of head " +
                    std::to_string(needing->heads.front()) +
                    " takes the engine's centroids (kmeans_iterations = "
                    "0): pass tessera_dynamic_inputs with fp32 centroids " +
                    want + " to tessera_attention_dynamic");
  if (in->centroid_heads != l.numHeads ||
      in->centroid_clusters != c.needClusters ||
      in->centroid_head_dim != l.headDim)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                c.layerName() + ": centroids must be " + want + ", got [" +
                    std::to_string(in->centroid_heads) + ", " +
                    std::to_string(in->centroid_clusters) + ", " +
                    std::to_string(in->centroid_head_dim) + "]");
  c.centroids = in->centroids;
  return TESSERA_OK;
}

tessera_status refuseDeviceMemory(
    std::initializer_list<std::pair<const void *, const char *>> pointers);

/// The layer's block_index groups, which must share one block size (a
/// call passes one index layout); null where there are none.
const DynamicGroupDesc *blockIndexGroup(const Call &c, std::string &clash) {
  const DynamicGroupDesc *first = nullptr;
  for (const DynamicGroupDesc &g : c.l->dynamicGroups) {
    if (g.args.family != kernel::kBlockIndex)
      continue;
    if (!first)
      first = &g;
    else if (g.args.blockQ != first->args.blockQ ||
             g.args.blockK != first->args.blockK)
      clash = c.layerName() + ": the block_index groups of heads " +
              std::to_string(first->heads.front()) + " and " +
              std::to_string(g.heads.front()) +
              " differ in block_q or block_k (a call passes one index "
              "layout)";
  }
  return first;
}

/// Sequence s's query and key blocks under block_index groups of `g`'s
/// sizes (docs/runtime.md): R and ceil(Nk / block_k).
void blockIndexShape(const Call &c, const DynamicGroupDesc &g, int64_t s,
                     cpu::BlockIndexCsr &x) {
  const int64_t nq = queryCount(c, s), nk = keyCount(c, s);
  x.rows = nq > 0 && nk > 0 ? kernel::btQueryBlocks(g.args.blockQ, nq, nk) : 0;
  x.keyBlocks = kernel::dynCeilDiv(nk, g.args.blockK);
}

/// The caller's block index (tessera.h, API 8), where a block_index group
/// reads it: on the CPU; every row of those heads checked.
tessera_status validateBlockIndex(Call &c) {
  const tessera_attention_desc &d = c.d;
  std::string clash;
  const DynamicGroupDesc *first = blockIndexGroup(c, clash);
  if (!first)
    return TESSERA_OK;
  if (!clash.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT, clash);
  const std::string who = c.layerName() + ": the block_index group of head " +
                          std::to_string(first->heads.front());
  // On CUDA the index is host memory too: checked here, then uploaded
  // with the call's stream (runCuda) for tessera_bi_attend.
  if (c.cuda && first->kernels.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                who + " has no CUDA kernel in this bundle (emitted before "
                      "tessera_bi_attend): emit it again with attn-translate, "
                      "or run it on a CPU context");
  // Dense: R rows per (batch entry, head), exactly; per sequence (packed
  // or lengths): the caller's stride holds every sequence's R.
  cpu::BlockIndexCsr &x = c.blockIndex;
  x.heads = c.heads;
  int64_t most = 0, at = 0;
  for (int64_t s = 0; s < c.numSeqs; ++s) {
    blockIndexShape(c, *first, s, x);
    if (x.rows > most)
      most = x.rows, at = s;
  }
  const bool dense = !d.cu_seqlens_q && !d.cu_seqlens_k && !d.seq_lens_k;
  const std::string shape = "int32 [" + std::to_string(c.numSeqs) + ", " +
                            std::to_string(c.heads) + ", " +
                            std::to_string(most + 1) + "]";
  if (!d.block_index_offsets)
    return fail(TESSERA_ERROR_NULL_POINTER,
                who + " reads the caller's block index: set "
                      "desc.block_index_offsets (" +
                    shape + ") and block_index_cols");
  if (dense ? d.block_index_rows != most : d.block_index_rows < most)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "block_index_rows is " + std::to_string(d.block_index_rows) +
                    "; " + who + " has " + std::to_string(most) +
                    " query blocks of " + std::to_string(first->args.blockQ) +
                    " positions at Nq = " + std::to_string(queryCount(c, at)) +
                    ", Nk = " + std::to_string(keyCount(c, at)) +
                    (dense ? "" : " (sequence " + std::to_string(at) + ")") +
                    ": block_index_offsets is " +
                    (dense ? shape : shape + " or more rows"));
  x.stride = d.block_index_rows;
  if (d.block_index_nnz < 0 || d.block_index_nnz > INT32_MAX)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "block_index_nnz is " + std::to_string(d.block_index_nnz) +
                    ": the entries of block_index_cols, in [0, 2^31)");
  if (!d.block_index_cols && d.block_index_nnz > 0)
    return fail(TESSERA_ERROR_NULL_POINTER,
                "block_index_cols is null with block_index_nnz = " +
                    std::to_string(d.block_index_nnz));
  if (tessera_status s = refuseDeviceMemory(
          {{d.block_index_offsets, "block_index_offsets"},
           {d.block_index_cols, "block_index_cols"}}))
    return c.cuda ? fail(s, lastError.substr(0, lastError.find(' ')) +
                                " is CUDA device memory: the block index is "
                                "host memory on CUDA contexts too (checked "
                                "on the host, uploaded by the call)")
                  : s;
  x.offsets = d.block_index_offsets;
  x.cols = d.block_index_cols;
  x.nnz = d.block_index_nnz;
  for (const DynamicGroupDesc &g : c.l->dynamicGroups)
    for (kernel::i64 h : g.heads) {
      const int64_t slot = h - d.head_start;
      if (g.args.family != kernel::kBlockIndex || slot < 0 || slot >= c.heads)
        continue;
      for (int64_t b = 0; b < c.numSeqs; ++b) {
        blockIndexShape(c, *first, b, x);
        if (std::string e = cpu::checkBlockIndex(x, b, slot, h); !e.empty())
          return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                      c.layerName() + ": " + e);
      }
    }
  c.hasBlockIndex = true;
  return TESSERA_OK;
}

/// Per-token head routing (tessera.h, API 9): head_active holds one byte
/// per (query row, head slot) of the call, host memory; static heads; on
/// CUDA, dense calls of layers whose bundle has the permuted kernel.
tessera_status validateHeadActive(Call &c) {
  const tessera_attention_desc &d = c.d;
  if (!d.head_active && d.head_active_size == 0)
    return TESSERA_OK;
  const int64_t rows = d.cu_seqlens_q ? d.q.seq : d.q.batch * d.q.seq;
  const std::string shape = "uint8 [" +
                            (d.cu_seqlens_q ? std::to_string(d.q.seq)
                                            : std::to_string(d.q.batch) + ", " +
                                                  std::to_string(d.q.seq)) +
                            ", " + std::to_string(c.heads) + "]";
  if (!d.head_active)
    return fail(TESSERA_ERROR_NULL_POINTER,
                "head_active is null with head_active_size = " +
                    std::to_string(d.head_active_size) + " (expected " + shape +
                    ", or both unset)");
  if (d.head_active_size != rows * c.heads)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "head_active_size is " + std::to_string(d.head_active_size) +
                    "; head_active must be " + shape + ": " +
                    std::to_string(rows * c.heads) +
                    " bytes, one per (query row, head of the call)");
  if (!c.l->dynamicGroups.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_active (per-token head routing): " + c.layerName() +
                    " has dynamic heads (from head " +
                    std::to_string(c.l->dynamicGroups.front().heads.front()) +
                    "), which do not take it yet (static heads only)");
  if (tessera_status s = refuseDeviceMemory({{d.head_active, "head_active"}}))
    return c.cuda ? fail(s, "head_active is CUDA device memory: it is host "
                            "memory on CUDA contexts too (the host packs "
                            "each head's active rows and builds their walk)")
                  : s;
  if (!c.cuda)
    return TESSERA_OK;
  // CUDA: the bundle's permuted kernel (Permuted.cuh) on dense calls.
  if (!c.dense())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_active (per-token head routing) on a CUDA context "
                "takes dense calls only for now (one batch of equal "
                "lengths, every head: no cu_seqlens, seq_lens_k, "
                "block_table, q_start / k_start or head range); the CPU "
                "context takes every mode");
  if (c.l->permutedKernel.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_active (per-token head routing) on a CUDA context: " +
                    c.layerName() +
                    " has no permuted kernel in its bundle (emit it with "
                    "attn-translate --head-routing; head_dim 64, 96 or 128)");
  if (!c.l->permutedRoutes)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_active (per-token head routing) on a CUDA context: " +
                    c.layerName() +
                    "'s permuted kernel was emitted before it took head "
                    "routing (no permuted_routes in its manifest): emit the "
                    "bundle again with attn-translate --head-routing");
  return TESSERA_OK;
}

/// o is written while q, k and v are read: it may not share memory with k
/// or v, nor with q unless it is q itself (each query block reads its own
/// rows before writing them), nor write one element twice; lse neither.
tessera_status validateAliasing(const Call &c) {
  const tessera_attention_desc &d = c.d;
  if (overlapsItself(d.o))
    return fail(TESSERA_ERROR_BAD_STRIDES,
                "o has overlapping elements (a zero or short stride)");
  for (auto [t, name] : {std::pair{&d.k, "k"}, {&d.v, "v"}})
    if (overlap(extent(d.o), extent(*t)))
      return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                  std::string("o overlaps ") + name +
                      " (the output would overwrite inputs still to be read)");
  if (overlap(extent(d.o), extent(d.q)) && !sameLayout(d.o, d.q))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "o overlaps q without being q itself");
  if (d.lse) {
    auto at = reinterpret_cast<uintptr_t>(d.lse);
    Extent lse{at, at + sizeof(float) * uint64_t(c.lseCount)};
    for (auto [t, name] :
         {std::pair{&d.q, "q"}, {&d.k, "k"}, {&d.v, "v"}, {&d.o, "o"}})
      if (overlap(lse, extent(*t)))
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    std::string("lse overlaps ") + name);
  }
  if (c.centroids)
    return checkCentroids(c.centroids,
                          c.l->numHeads * c.needClusters * c.l->headDim, d.o,
                          d.lse, c.lseCount);
  return TESSERA_OK;
}

/// Which modes a device and the layer's dynamic groups take.
tessera_status validateModes(const Call &c) {
  const tessera_attention_desc &d = c.d;
  if (c.cuda && !c.dense() && !c.bundle->seqKernels)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "the bundle has no per-sequence (_seq) kernels (emitted "
                "before them): it takes dense calls only on CUDA; emit it "
                "again with attn-translate for packed, paged, length, "
                "position or head-range calls");
  if (c.cuda && !c.dense() && !c.l->dynamicGroups.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                c.layerName() + " has dynamic heads (from head " +
                    std::to_string(c.l->dynamicGroups.front().heads.front()) +
                    "): on CUDA their kernels take dense calls only (the "
                    "CPU context also takes packed calls)");
  if (!c.l->dynamicGroups.empty() &&
      (d.block_table || d.q_start || d.k_start))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                c.layerName() + " has dynamic heads (from head " +
                    std::to_string(c.l->dynamicGroups.front().heads.front()) +
                    "): their index is built from a sequence's own queries "
                    "and keys, bottom-right aligned, so they take dense, "
                    "packed and head-range calls only (no block_table, "
                    "q_start or k_start)");
  return TESSERA_OK;
}

tessera_status checkHostArrays(const Call &c);

/// Everything about a call that does not depend on the device's memory.
tessera_status validateCall(tessera_bundle *bundle,
                            const tessera_attention_desc *desc, Call &c) {
  if (!bundle)
    return fail(TESSERA_ERROR_NULL_POINTER, "bundle is null");
  if (tessera_status s = readDesc(desc, c))
    return s;
  if (contextGone(bundle))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "the bundle's context has been destroyed");
  c.bundle = bundle;
  c.cuda = bundle->context->kind == TESSERA_DEVICE_CUDA;
  c.l = findLayer(bundle, c.d.layer);
  if (!c.l)
    return fail(TESSERA_ERROR_LAYER_OUT_OF_RANGE,
                "the bundle has no layer " + std::to_string(c.d.layer));
  if (!(c.d.scale >= 0) || c.d.scale > kMaxScale)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "scale must be in [0, 65536] (0: 1/sqrt(head_dim)); larger "
                "scales overflow the fp32 scores");
  for (auto step : {validateTensors, validateHeads})
    if (tessera_status s = step(c))
      return s;
  if (tessera_status s = validateModes(c))
    return s;
  if (!c.cuda)
    if (tessera_status s = checkHostArrays(c))
      return s;
  for (auto step : {validateQueries, validateKeys, validatePositions,
                    validateCentroids, validateBlockIndex, validateHeadActive})
    if (tessera_status s = step(c))
      return s;
  return validateAliasing(c);
}

//===- The CPU ------------------------------------------------------------===//

/// On a CPU context where a CUDA driver is present: none of `pointers` is
/// plain device memory (managed memory is host-accessible), so that device
/// memory handed to the CPU is caught before it is dereferenced.
tessera_status refuseDeviceMemory(
    std::initializer_list<std::pair<const void *, const char *>> pointers) {
  std::string ignored;
  const Driver *drv = Driver::get(ignored);
  if (!drv)
    return TESSERA_OK;
  for (auto [ptr, name] : pointers) {
    unsigned type = 0, managed = 0;
    auto at = reinterpret_cast<unsigned long long>(ptr);
    if (ptr &&
        drv->pointerGetAttribute(&type, kPointerAttrMemoryType, at) == 0 &&
        type == kMemoryTypeDevice &&
        !(drv->pointerGetAttribute(&managed, kPointerAttrIsManaged, at) == 0 &&
          managed))
      return fail(TESSERA_ERROR_WRONG_DEVICE,
                  std::string(name) +
                      " is CUDA device memory; the context is the CPU");
  }
  return TESSERA_OK;
}

/// On the CPU, before validation reads them: the sequence arrays are host
/// memory.
tessera_status checkHostArrays(const Call &c) {
  const tessera_attention_desc &d = c.d;
  return refuseDeviceMemory({{d.cu_seqlens_q, "cu_seqlens_q"},
                             {d.cu_seqlens_k, "cu_seqlens_k"},
                             {d.seq_lens_k, "seq_lens_k"},
                             {d.block_table, "block_table"},
                             {d.q_start, "q_start"},
                             {d.k_start, "k_start"}});
}

/// On the CPU: the tensors are host memory, the centroids finite.
tessera_status checkHostMemory(const Call &c) {
  const tessera_attention_desc &d = c.d;
  if (tessera_status s = refuseDeviceMemory({{d.q.data, "q"},
                                             {d.k.data, "k"},
                                             {d.v.data, "v"},
                                             {d.o.data, "o"},
                                             {d.lse, "lse"},
                                             {c.centroids, "centroids"}}))
    return s;
  if (c.centroids)
    return checkCentroidsFinite(*c.l, c.d.layer, c.centroids, c.needClusters);
  return TESSERA_OK;
}

/// The executor's arguments for a validated call.
cpu::LayerArgs planCpu(const Call &c) {
  const tessera_attention_desc &d = c.d;
  cpu::LayerArgs a;
  a.q = toCpu(d.q);
  a.k = toCpu(d.k);
  a.v = toCpu(d.v);
  a.o = toCpu(d.o);
  a.lse = d.lse;
  a.scale = d.scale;
  // The query block of the CUDA kernels (and of the cost model).
  a.blockQ = c.l->kernelBlockQ > 0 ? c.l->kernelBlockQ : 64;
  a.numThreads = c.bundle->context->numThreads;
  a.pool = &c.bundle->context->pool;
  a.headStart = d.head_start;
  a.numKvHeads = c.l->numKvHeads;
  a.headActive = d.head_active;
  if (!c.dense()) {
    a.seqs.count = c.numSeqs;
    a.seqs.cuQ = d.cu_seqlens_q;
    a.seqs.cuK = d.cu_seqlens_k;
    a.seqs.lensK = d.seq_lens_k;
    a.seqs.pages = d.block_table;
    a.seqs.pageStride =
        d.block_table_stride ? d.block_table_stride : d.max_pages_per_seq;
    a.seqs.qStart = d.q_start;
    a.seqs.kStart = d.k_start;
  }
  return a;
}

/// A tensor's rows [row0, row0 + rows) of batch entry b as a batch-1 view.
cpu::Tensor rowsView(const cpu::Tensor &t, int64_t b, int64_t row0,
                     int64_t rows) {
  cpu::Tensor v = t;
  size_t size = t.dtype == cpu::DType::F32 ? 4 : 2;
  v.data = static_cast<char *>(t.data) +
           size_t(b * t.strideBatch + row0 * t.strideSeq) * size;
  v.batch = 1;
  v.seq = rows;
  return v;
}

/// Dynamic group g over one sequence s of a packed or length call: the
/// sequence as a dense batch-1 call (its index is built from its own rows),
/// LSE through a buffer in the dense layout.
tessera_status runDynamicSequence(const Call &c, const cpu::LayerArgs &a,
                                  const DynamicGroupDesc &g, int64_t s) {
  const tessera_attention_desc &d = c.d;
  const int64_t nq = queryCount(c, s), nk = keyCount(c, s), H = c.heads;
  const int64_t q0 = d.cu_seqlens_q ? d.cu_seqlens_q[s] : 0,
                qb = d.cu_seqlens_q ? 0 : s;
  const int64_t k0 = d.cu_seqlens_k ? d.cu_seqlens_k[s] : 0,
                kb = d.cu_seqlens_k ? 0 : s;
  if (nq == 0 || nk == 0) // no rows, or rows without keys (already 0, -inf)
    return TESSERA_OK;
  cpu::LayerArgs one = a;
  one.seqs = cpu::Sequences{};
  one.q = rowsView(a.q, qb, q0, nq);
  one.o = rowsView(a.o, qb, q0, nq);
  one.k = rowsView(a.k, kb, k0, nk);
  one.v = rowsView(a.v, kb, k0, nk);
  std::vector<float> lse(d.lse ? size_t(H * nq) : 0);
  one.lse = d.lse ? lse.data() : nullptr;
  cpu::BlockIndexCsr index = c.blockIndex; // sequence s's rows
  const bool listed = c.hasBlockIndex && g.args.family == kernel::kBlockIndex;
  if (listed) { // (the other families have no block sizes)
    index.batch0 = s;
    index.rows = kernel::btQueryBlocks(g.args.blockQ, nq, nk);
    index.keyBlocks = kernel::dynCeilDiv(nk, g.args.blockK);
  }
  if (std::string e =
          runDynamicGroupCpu(g, one, c.l->numHeads, c.centroids,
                             c.needClusters, listed ? &index : nullptr);
      !e.empty())
    return fail(TESSERA_ERROR_INTERNAL, e);
  const int64_t base = d.cu_seqlens_q ? q0 : s * H * d.q.seq;
  for (kernel::i64 h : g.heads) {
    const int64_t local = h - d.head_start; // the tensors' head
    if (local < 0 || local >= H)
      continue;
    for (int64_t i = 0; d.lse && i < nq; ++i)
      d.lse[base + local * d.q.seq + i] = lse[size_t(local * nq + i)];
  }
  return TESSERA_OK;
}

/// The dynamic groups of the layer: each needs host memory for its index
/// (docs/runtime.md), refused before anything is allocated where it would
/// not fit.
tessera_status runDynamicCpu(const Call &c, const cpu::LayerArgs &a) {
  if (c.l->dynamicGroups.empty())
    return TESSERA_OK; // (the limit below costs a sysinfo call)
  const double limit = dynamicCpuMemoryLimit();
  for (const DynamicGroupDesc &g : c.l->dynamicGroups)
    for (int64_t s = 0; s < c.numSeqs; ++s) {
      const int64_t nq = queryCount(c, s), nk = keyCount(c, s);
      const double need = dynamicGroupCpuBytes(g.args, nq, nk, c.l->headDim);
      if (need > limit)
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    c.layerName() + ": the dynamic group of head " +
                        std::to_string(g.heads.front()) + " needs " +
                        gib(need) + " of host memory per head at Nq = " +
                        std::to_string(nq) + ", Nk = " + std::to_string(nk) +
                        ", more than the limit of " + gib(limit) +
                        " (half the physical memory, or "
                        "TESSERA_CPU_INDEX_MEMORY)");
      if (c.dense())
        break; // the same lengths for every batch entry
    }
  for (const DynamicGroupDesc &g : c.l->dynamicGroups) {
    if (c.dense()) {
      if (std::string e = runDynamicGroupCpu(
              g, a, c.l->numHeads, c.centroids, c.needClusters,
              c.hasBlockIndex ? &c.blockIndex : nullptr);
          !e.empty())
        return fail(TESSERA_ERROR_INTERNAL, e);
      continue;
    }
    for (int64_t s = 0; s < c.numSeqs; ++s)
      if (tessera_status st = runDynamicSequence(c, a, g, s))
        return st;
  }
  return TESSERA_OK;
}

/// Whether the layer's groups with a layout may run in their permuted
/// order, on either device (cpu::runPermutedGroup, the bundle's permuted
/// kernel): on dense calls (one batch of equal lengths, every head,
/// bottom-right) without per-token head routing. Other calls run those
/// groups in the original order: exact (the output does not depend on the
/// layout), without the layout's gain.
bool permutedCall(const Call &c) {
  return !c.l->layouts.empty() && c.dense() && c.d.head_start == 0 &&
         !c.d.head_active;
}

/// The static heads of a layer with layouts: the groups without a layout,
/// and those cpu::originalOrderReason keeps in their order at this call's
/// lengths (an identity transpose, a walk too costly to derive), by the
/// executor (the permuted groups' heads listed as skipped there, so
/// written as O = 0 first), then each permuted group in its order.
tessera_status runPermutedCpu(const Call &c, const cpu::LayerArgs &a) {
  const LayerDesc &l = *c.l;
  std::vector<bool> permuted(l.groupBegin.size(), false);
  std::vector<const GroupLayout *> runs;
  for (const GroupLayout &g : l.layouts)
    if (cpu::originalOrderReason(l.table(), g.group, g.perm, a.q.seq, a.k.seq)
            .empty()) {
      permuted[size_t(g.group)] = true;
      runs.push_back(&g);
    }
  std::vector<kernel::i64> head, group, skipped = l.skippedHeads;
  for (size_t i = 0; i < l.computedHead.size(); ++i)
    if (permuted[size_t(l.headGroup[i])]) {
      skipped.push_back(l.computedHead[i]);
    } else {
      head.push_back(l.computedHead[i]);
      group.push_back(l.headGroup[i]);
    }
  std::sort(skipped.begin(), skipped.end());
  kernel::LayerTable rest = l.table();
  rest.numComputed = kernel::i64(head.size());
  rest.numSkipped = kernel::i64(skipped.size());
  for (auto *v : {&head, &group, &skipped})
    v->push_back(0); // data() never null
  rest.computedHead = head.data();
  rest.headGroup = group.data();
  rest.skippedHead = skipped.data();
  if (std::string e = cpu::runLayer(rest, a); !e.empty())
    return fail(TESSERA_ERROR_INTERNAL, e);
  for (const GroupLayout *g : runs)
    if (std::string e = cpu::runPermutedGroup(l.table(), g->group, g->perm, a);
        !e.empty())
      return fail(TESSERA_ERROR_INTERNAL, c.layerName() + ": " + e);
  return TESSERA_OK;
}

tessera_status runCpu(const Call &c) {
  if (tessera_status s = checkHostMemory(c))
    return s;
  cpu::LayerArgs a = planCpu(c);
  if (permutedCall(c)) {
    if (tessera_status s = runPermutedCpu(c, a))
      return s;
  } else if (std::string e = cpu::runLayer(c.l->table(), a); !e.empty()) {
    return fail(TESSERA_ERROR_INTERNAL, e);
  }
  return runDynamicCpu(c, a);
}

//===- CUDA ---------------------------------------------------------------===//

/// Every non-null pointer of `ptrs` (each with its field's name) is memory
/// of the context's CUDA device; else TESSERA_ERROR_WRONG_DEVICE naming it.
tessera_status checkOnDevice(
    const Call &c,
    std::initializer_list<std::pair<const void *, const char *>> ptrs) {
  const Driver &drv = *c.bundle->context->driver;
  for (auto [ptr, name] : ptrs) {
    if (!ptr)
      continue;
    unsigned type = 0;
    int ordinal = -1;
    auto at = reinterpret_cast<unsigned long long>(ptr);
    if (drv.pointerGetAttribute(&type, kPointerAttrMemoryType, at) ||
        type != kMemoryTypeDevice ||
        drv.pointerGetAttribute(&ordinal, kPointerAttrDeviceOrdinal, at) ||
        ordinal != c.bundle->context->device)
      return fail(TESSERA_ERROR_WRONG_DEVICE,
                  std::string(name) + " is not memory of CUDA device " +
                      std::to_string(c.bundle->context->device));
  }
  return TESSERA_OK;
}

/// On CUDA: o's alignment, every pointer on the context's device.
tessera_status checkDeviceMemory(const Call &c) {
  const tessera_attention_desc &d = c.d;
  if (reinterpret_cast<uintptr_t>(d.o.data) % 4 || d.o.stride_batch % 2 ||
      d.o.stride_seq % 2 || d.o.stride_head % 2)
    return fail(TESSERA_ERROR_MISALIGNED,
                "o must be 4-byte aligned with even strides on CUDA");
  if (d.q.batch > 65535)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "batch must be at most 65535 on CUDA");
  return checkOnDevice(c, {{d.q.data, "q"},
                           {d.k.data, "k"},
                           {d.v.data, "v"},
                           {d.o.data, "o"},
                           {d.lse, "lse"},
                           {c.centroids, "centroids"},
                           {d.cu_seqlens_q, "cu_seqlens_q"},
                           {d.cu_seqlens_k, "cu_seqlens_k"},
                           {d.seq_lens_k, "seq_lens_k"},
                           {d.block_table, "block_table"},
                           {d.q_start, "q_start"},
                           {d.k_start, "k_start"}});
}

/// The kernels' arguments for a validated call (SeqLaunch.h).
kernel::AttnParams planCuda(const Call &c) {
  return kernel::makeAttnParams(c.d, c.l->numHeads, c.l->numKvHeads,
                                c.l->headDim, c.dense() ? 0 : c.numSeqs);
}

/// Launches `function` of the call's bundle over grid `g` (nothing for an
/// empty grid) on the call's stream; an error names CUDA's grid limits or
/// the driver's message.
tessera_status launchGrid(const Call &c, const std::string &function,
                          kernel::SeqGrid g, unsigned threads, unsigned shared,
                          void **args) {
  if (g.x == 0 || g.y == 0 || g.z == 0)
    return TESSERA_OK;
  if (g.x > INT32_MAX || g.z > 65535)
    return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                "the call needs " + std::to_string(g.x) + " x " +
                    std::to_string(g.z) +
                    " blocks: past CUDA's grid limits (2^31 - 1 x 65535)");
  const Driver &drv = *c.bundle->context->driver;
  if (int rc = drv.launchKernel(c.bundle->functions.at(function),
                                unsigned(g.x), unsigned(g.y), unsigned(g.z),
                                threads, 1, 1, shared, c.d.cuda_stream, args,
                                nullptr))
    return fail(TESSERA_ERROR_CUDA, drv.message("cuLaunchKernel", rc));
  return TESSERA_OK;
}

/// The split-KV plan of a validated CUDA call (SeqLaunch.h's planSplitKv;
/// none for a dense call, a layer without computed heads, or with
/// TESSERA_CUDA_SPLIT_KV=0) and the bytes of its workspace (0: none).
/// tessera_attention_workspace_size and runCudaSeq both plan through it,
/// so the size the caller is told is the size the run uses.
kernel::SplitPlan planCudaSplit(const Call &c, int64_t &bytes) {
  const LayerDesc &l = *c.l;
  int64_t computed = 0;
  for (const auto &k : l.kernels)
    computed += k.second;
  const char *off = std::getenv("TESSERA_CUDA_SPLIT_KV");
  kernel::SplitPlan split;
  if (c.cuda && !c.dense() && computed > 0 && !(off && std::string(off) == "0"))
    split = kernel::planSplitKv(c.d, c.numSeqs, l.kernelBlockQ, computed);
  bytes = split.splits > 1 ? kernel::splitWorkspaceBytes(c.d, c.numSeqs,
                                                         c.heads, l.headDim,
                                                         split)
                           : 0;
  return split;
}

/// The caller's workspace for `bytes` of split results (desc->workspace,
/// API 7): large enough, 16-byte aligned (the kernels access it as floats
/// today; 16 bytes keeps vector access open without an ABI change) and on
/// the context's device; `out` null when the caller gave none.
tessera_status callerWorkspace(const Call &c, int64_t bytes, void *&out,
                               const char *use = "split-KV decode") {
  const tessera_attention_desc &d = c.d;
  out = d.workspace;
  if (!d.workspace)
    return TESSERA_OK;
  if (d.workspace_size < size_t(bytes))
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "desc->workspace_size is " + std::to_string(d.workspace_size) +
                    " bytes; this call's " + use + " needs " +
                    std::to_string(bytes) +
                    " (tessera_attention_workspace_size)");
  if (reinterpret_cast<uintptr_t>(d.workspace) % 16)
    return fail(TESSERA_ERROR_MISALIGNED,
                "desc->workspace must be 16-byte aligned");
  const Driver &drv = *c.bundle->context->driver;
  unsigned type = 0;
  int ordinal = -1;
  auto at = reinterpret_cast<unsigned long long>(d.workspace);
  if (drv.pointerGetAttribute(&type, kPointerAttrMemoryType, at) ||
      type != kMemoryTypeDevice ||
      drv.pointerGetAttribute(&ordinal, kPointerAttrDeviceOrdinal, at) ||
      ordinal != c.bundle->context->device)
    return fail(TESSERA_ERROR_WRONG_DEVICE,
                "desc->workspace is not memory of CUDA device " +
                    std::to_string(c.bundle->context->device));
  return TESSERA_OK;
}

/// A per-sequence call (static heads only: validateModes): the `_seq`
/// twins of the layer's kernels, on SeqLaunch.h's grids. No host memory is
/// read and nothing synchronises: the launches are all (CUDA-graph
/// capturable, as the dense call). A decode-like call may split each
/// sequence's keys (planCudaSplit): then the partial results go to the
/// caller's workspace (desc->workspace), or without one to a stream-ordered
/// allocation (cuMemAllocAsync, which graphs capture as memory nodes) freed
/// in stream order after the merge kernel has combined them.
tessera_status runCudaSeq(const Call &c, kernel::AttnParams &p) {
  const Driver &drv = *c.bundle->context->driver;
  const LayerDesc &l = *c.l;
  int position = static_cast<int>(l.position);
  void *args[] = {&p, &position};
  int64_t computed = 0;
  for (const auto &k : l.kernels)
    computed += k.second;
  int64_t bytes = 0;
  const kernel::SplitPlan split = planCudaSplit(c, bytes);
  auto launch = [&](const std::string &function, kernel::SeqGrid g,
                    unsigned threads, unsigned shared) {
    return launchGrid(c, function, g, threads, shared, args);
  };
  unsigned long long owned = 0; // a stream-ordered allocation of ours
  if (split.splits > 1) {
    void *workspace = nullptr;
    if (tessera_status s = callerWorkspace(c, bytes, workspace))
      return s;
    if (!workspace) {
      if (int rc = drv.memAllocAsync(&owned, size_t(bytes), c.d.cuda_stream))
        return fail(TESSERA_ERROR_CUDA,
                    "the split-KV workspace (" + std::to_string(bytes) +
                        " bytes): " + drv.message("cuMemAllocAsync", rc));
      workspace = reinterpret_cast<void *>(owned);
    }
    kernel::setSplitParams(p, c.d, c.numSeqs, l.kernelBlockQ, c.heads,
                           l.headDim, split, workspace);
  }
  tessera_status status = TESSERA_OK;
  for (const auto &[kernel, slots] : l.kernels)
    if (!status)
      status = launch(kernel + kSeqSuffix,
                      kernel::seqAttentionGrid(c.d, c.numSeqs, l.kernelBlockQ,
                                               slots, split.splits),
                      static_cast<unsigned>(l.kernelThreads),
                      static_cast<unsigned>(l.kernelDynamicShared));
  if (!status && split.splits > 1)
    status = launch(mergeKernel(l),
                    kernel::seqMergeGrid(c.d, c.numSeqs, computed), 128, 0);
  if (owned)
    if (int rc = drv.memFreeAsync(owned, c.d.cuda_stream); rc && !status)
      status = fail(TESSERA_ERROR_CUDA, drv.message("cuMemFreeAsync", rc));
  if (status)
    return status;
  return launch(l.fillKernel + kSeqSuffix,
                kernel::seqFillGrid(c.d, c.numSeqs,
                                    int64_t(l.skippedHeads.size())),
                128, 0);
}

/// The attention kernels of a dense call: their sm_90a twins where the
/// bundle runs them and the call's tensors have tensor maps (16-byte
/// aligned, strides multiples of 8 elements), else the mma.sync kernels;
/// where TESSERA_KERNEL_PATH=wgmma chose the twins, a call they cannot take
/// is refused instead.
template <class Grid>
tessera_status launchAttention(const Call &c, kernel::AttnParams &p,
                               int &position, const Grid &grid,
                               const std::vector<int64_t> *slots = nullptr) {
  const LayerDesc &l = *c.l;
  HopperMapsBytes maps;
  if (c.bundle->path == KernelPath::Wgmma && !l.wgmmaKernels.empty()) {
    std::string why =
        hopperMaps(*c.bundle->context->driver, c.bundle->tensorMaps, c.d, maps);
    if (why.empty()) {
      void *args[] = {&p, &maps, &position};
      for (size_t i = 0; i < l.kernels.size(); ++i)
        if (tessera_status s = launchGrid(
                c, l.wgmmaKernels[i],
                grid(l.wgmmaBlockQ, slots ? (*slots)[i] : l.kernels[i].second),
                static_cast<unsigned>(l.wgmmaThreads),
                static_cast<unsigned>(l.wgmmaDynamicShared), args))
          return s;
      return TESSERA_OK;
    }
    if (c.bundle->pathForced)
      return fail(TESSERA_ERROR_MISALIGNED,
                  "TESSERA_KERNEL_PATH=wgmma: the sm_90a kernels cannot read " +
                      why);
  }
  void *args[] = {&p, &position};
  for (size_t i = 0; i < l.kernels.size(); ++i)
    if (tessera_status s = launchGrid(
            c, l.kernels[i].first,
            grid(l.kernelBlockQ, slots ? (*slots)[i] : l.kernels[i].second),
            static_cast<unsigned>(l.kernelThreads),
            static_cast<unsigned>(l.kernelDynamicShared), args))
      return s;
  return TESSERA_OK;
}

/// On CUDA, the routing groups of a layer that take the engine's centroids
/// read them as [heads, clusters, head_dim]: one cluster count.
tessera_status checkCudaCentroids(const Call &c, const kernel::DynArgs &a) {
  if (a.family == kernel::kRouting && a.iterations == 0 &&
      a.clusters != c.needClusters)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "on CUDA, a layer's routing groups that take centroids must "
                "share one cluster count");
  return TESSERA_OK;
}

/// Copies `bytes` at `host` into a new stream-ordered allocation `mem` with
/// the call's stream: no synchronising call (cuMemcpyHtoDAsync has read a
/// pageable source when it returns, so `host` may go after it). The owner
/// frees `mem` in stream order (also after a failed copy); `what` names
/// the data in an allocation's error.
tessera_status uploadAsync(const Driver &d, void *stream, const void *host,
                           size_t bytes, unsigned long long &mem,
                           const std::string &what) {
  if (int rc = d.memAllocAsync(&mem, bytes, stream)) {
    mem = 0;
    return fail(TESSERA_ERROR_CUDA, d.message("cuMemAllocAsync", rc) + " (" +
                                        what + ", " + std::to_string(bytes) +
                                        " bytes)");
  }
  if (int rc = d.memcpyHtoDAsync(mem, host, bytes, stream))
    return fail(TESSERA_ERROR_CUDA, d.message("cuMemcpyHtoDAsync", rc));
  return TESSERA_OK;
}

/// A call's block index on the device (block_index groups, docs/runtime.md):
/// the caller's host arrays, validated, staged into a host copy of this
/// call's own (pageable memory, whatever the caller's is: cuMemcpyHtoDAsync
/// has read a pageable source when it returns, so the caller's arrays are
/// read during the call only, as on the CPU, and nothing synchronises),
/// copied with the call's stream into one stream-ordered allocation
/// (offsets [B, heads, R + 1], then every column) and freed in stream
/// order after the launches that read it.
struct DeviceIndex {
  const Driver &d;
  void *stream;
  unsigned long long mem = 0;
  const int *offsets = nullptr, *cols = nullptr;

  DeviceIndex(const Driver &driver, void *s) : d(driver), stream(s) {}
  ~DeviceIndex() {
    if (mem)
      d.memFreeAsync(mem, stream);
  }

  tessera_status upload(const Call &c) {
    const cpu::BlockIndexCsr &x = c.blockIndex;
    const size_t numOffsets =
        size_t(c.numSeqs) * size_t(x.heads) * size_t(x.stride + 1);
    const size_t colsAt = (numOffsets + 3) / 4 * 4; // 16-byte aligned
    std::vector<int32_t> staged(colsAt + size_t(x.nnz));
    std::copy(x.offsets, x.offsets + numOffsets, staged.begin());
    std::copy(x.cols, x.cols + x.nnz, staged.begin() + std::ptrdiff_t(colsAt));
    if (tessera_status s =
            uploadAsync(d, stream, staged.data(), staged.size() * 4, mem,
                        "the block index"))
      return s;
    offsets = reinterpret_cast<const int *>(mem);
    cols = reinterpret_cast<const int *>(mem) + colsAt;
    return TESSERA_OK;
  }

  /// A block_index group's arguments: the uploaded index (others: none).
  void bind(kernel::DynArgs &a, const Call &c) const {
    if (a.family != kernel::kBlockIndex)
      return;
    a.biOffsets = offsets;
    a.biCols = cols;
    a.biHeads = c.blockIndex.heads;
    a.biStride = c.blockIndex.stride;
  }
};

/// kernel::PermArgs (Permuted.cuh) as the host lays it out.
struct PermArgsHost {
  const kernel::i64 *heads;
  const int *tileStart, *tileKey, *tileMask;
  const unsigned long long *masks;
  const kernel::i64 *rowOf, *keyOf;
  const kernel::i64 *routed = nullptr; ///< head routing's tables, or null
};

/// The layer's groups that a dense CUDA call runs in their permuted order
/// (the bundle's permuted kernel, Permuted.cuh), and their walks and maps
/// on the device: for each layout that cpu::originalOrderReason accepts at
/// the call's lengths and whose walk cpu::permutedWalk derives at 64 x 64
/// (classified walks come from its cache), the group's heads, the slot ->
/// row maps of queries and keys, and the walk flattened to key tiles per
/// query tile (each with its 64 mask rows, or -1 where the tile is full),
/// all of them in one host buffer uploaded with the call's stream and
/// freed in stream order after the launches. Other groups (and every
/// group of other calls, or of bundles without the kernel) run in the
/// original order.
struct PermutedGroups {
  struct Group {
    int64_t numHeads = 0;
    size_t heads, rowOf, keyOf, masks, tileStart, tileKey, tileMask;
  };
  const Driver &d;
  void *stream;
  unsigned long long mem = 0;
  std::vector<Group> groups;

  PermutedGroups(const Driver &driver, void *s) : d(driver), stream(s) {}
  ~PermutedGroups() {
    if (mem)
      d.memFreeAsync(mem, stream);
  }

  /// Appends `n` elements at `data` to `w` (8-byte aligned); their word.
  template <class T>
  static size_t put(std::vector<uint64_t> &w, const T *data, size_t n) {
    const size_t at = w.size();
    w.resize(at + (n * sizeof(T) + 7) / 8);
    if (n)
      std::memcpy(w.data() + at, data, n * sizeof(T));
    return at;
  }

  tessera_status upload(const Call &c, int64_t nq, int64_t nk) {
    const LayerDesc &l = *c.l;
    std::vector<uint64_t> w;
    for (const GroupLayout &g : l.layouts) {
      if (!cpu::originalOrderReason(l.table(), g.group, g.perm, nq, nk).empty())
        continue;
      cpu::PermutedWalk walk;
      if (!cpu::permutedWalk(l.table(), g.group, g.perm, nq, nk, 64, 64, walk)
               .empty())
        continue; // heads of unequal masks: the original order
      Group out;
      std::vector<kernel::i64> heads;
      std::vector<kernel::i64> rowOf(static_cast<size_t>(nq)),
          keyOf(static_cast<size_t>(nk));
      for (size_t i = 0; i < l.computedHead.size(); ++i)
        if (l.headGroup[i] == g.group)
          heads.push_back(l.computedHead[i]);
      if (heads.empty())
        continue;
      for (int64_t x = 0; x < nq; ++x)
        rowOf[size_t(x)] = g.perm.token(x, nq);
      for (int64_t x = 0; x < nk; ++x)
        keyOf[size_t(x)] = g.perm.token(x, nk);
      std::vector<int> start{0}, key, mask;
      std::vector<uint64_t> masks;
      const int64_t keyTiles = (nk + 63) / 64;
      for (size_t i = 0; i + 1 < walk.start.size(); ++i) {
        for (int64_t x = walk.start[i]; x < walk.start[i + 1]; ++x) {
          const layout::PermutedRun &r = walk.runs[size_t(x)];
          for (int64_t j = r.begin; j < std::min(r.end, keyTiles); ++j) {
            key.push_back(int(j));
            const uint64_t *m = walk.mask(x, j, 64);
            mask.push_back(m ? int(masks.size() / 64) : -1);
            if (m)
              masks.insert(masks.end(), m, m + 64);
          }
        }
        start.push_back(int(key.size()));
      }
      out.numHeads = int64_t(heads.size());
      out.heads = put(w, heads.data(), heads.size());
      out.rowOf = put(w, rowOf.data(), rowOf.size());
      out.keyOf = put(w, keyOf.data(), keyOf.size());
      out.masks = put(w, masks.data(), masks.size());
      out.tileStart = put(w, start.data(), start.size());
      out.tileKey = put(w, key.data(), key.size());
      out.tileMask = put(w, mask.data(), mask.size());
      groups.push_back(out);
    }
    if (groups.empty())
      return TESSERA_OK;
    return uploadAsync(d, stream, w.data(), w.size() * 8, mem,
                       "the permuted groups' walks and maps");
  }

  /// Launches the permuted kernel over (query tiles, the group's heads,
  /// batch) for each group, after the layer's kernels (which, where they
  /// launched over all their slots, computed those heads in the original
  /// order too: their rows are overwritten).
  tessera_status launch(const Call &c, kernel::AttnParams &p) const {
    auto at = [&](size_t word) {
      return reinterpret_cast<const void *>(mem + word * 8);
    };
    for (const Group &g : groups) {
      PermArgsHost a{static_cast<const kernel::i64 *>(at(g.heads)),
                     static_cast<const int *>(at(g.tileStart)),
                     static_cast<const int *>(at(g.tileKey)),
                     static_cast<const int *>(at(g.tileMask)),
                     static_cast<const unsigned long long *>(at(g.masks)),
                     static_cast<const kernel::i64 *>(at(g.rowOf)),
                     static_cast<const kernel::i64 *>(at(g.keyOf))};
      void *args[] = {&p, &a};
      if (tessera_status s = launchGrid(
              c, c.l->permutedKernel,
              kernel::SeqGrid{(p.nq + 63) / 64, g.numHeads, c.d.q.batch}, 128,
              0, args))
        return s;
    }
    return TESSERA_OK;
  }
};

/// A dense CUDA call with per-token head routing (docs/runtime.md,
/// "Per-token head routing"): cpu::routedWalk's tables from the caller's
/// head_active (host memory, read during the call only), uploaded into one
/// stream-ordered allocation (cuMemcpyHtoDAsync has read a pageable source
/// when it returns) and freed in stream order after the launches; the
/// fill kernel zeroes the skipped heads, and the bundle's permuted kernel
/// (Permuted.cuh, PermArgs::routed) computes each computed head's active
/// rows and zeroes its inactive ones. The layer's attention kernels are
/// not launched: an inactive pair costs its zero stores only.
tessera_status runCudaRouted(const Call &c, kernel::AttnParams &p) {
  const LayerDesc &l = *c.l;
  const Driver &d = *c.bundle->context->driver;
  int position = static_cast<int>(l.position);
  void *fillArgs[] = {&p, &position};
  // The walk first: a call it refuses writes nothing.
  cpu::RoutedWalk w;
  if (std::string e = cpu::routedWalk(l.table(), c.d.q.batch, p.nq, p.nk,
                                      c.d.head_active, w);
      !e.empty())
    return fail(TESSERA_ERROR_SHAPE_MISMATCH, c.layerName() + ": " + e);
  if (tessera_status s = launchGrid(
          c, l.fillKernel,
          kernel::SeqGrid{(p.nq + 127) / 128, int64_t(l.skippedHeads.size()),
                          c.d.q.batch},
          128, 0, fillArgs))
    return s;
  if (w.heads.empty() || w.gridX == 0)
    return TESSERA_OK;
  // Every array 8-byte aligned in one buffer; each one's word.
  std::vector<uint64_t> buf;
  auto put = [&](const auto &v) {
    const size_t at = buf.size();
    const char *bytes = reinterpret_cast<const char *>(v.data());
    buf.resize(at + (v.size() * sizeof(v[0]) + 7) / 8);
    std::copy(bytes, bytes + v.size() * sizeof(v[0]),
              reinterpret_cast<char *>(buf.data() + at));
    return at;
  };
  const size_t heads = put(w.heads), tables = put(w.tables),
               rowOf = put(w.rowOf), keyOf = put(w.keyOf),
               masks = put(w.masks), start = put(w.tileStart),
               key = put(w.tileKey), mask = put(w.tileMask);
  struct Owned { // freed in stream order, after the launch
    const Driver &d;
    void *stream;
    unsigned long long mem = 0;
    ~Owned() {
      if (mem)
        d.memFreeAsync(mem, stream);
    }
  } owned{d, c.d.cuda_stream};
  if (tessera_status s =
          uploadAsync(d, c.d.cuda_stream, buf.data(), buf.size() * 8, owned.mem,
                      "head routing's walk and rows"))
    return s;
  auto at = [&](size_t word) {
    return reinterpret_cast<const void *>(owned.mem + word * 8);
  };
  PermArgsHost a{static_cast<const kernel::i64 *>(at(heads)),
                 static_cast<const int *>(at(start)),
                 static_cast<const int *>(at(key)),
                 static_cast<const int *>(at(mask)),
                 static_cast<const unsigned long long *>(at(masks)),
                 static_cast<const kernel::i64 *>(at(rowOf)),
                 static_cast<const kernel::i64 *>(at(keyOf)),
                 static_cast<const kernel::i64 *>(at(tables))};
  void *args[] = {&p, &a};
  return launchGrid(
      c, l.permutedKernel,
      kernel::SeqGrid{w.gridX, int64_t(w.heads.size()), c.d.q.batch}, 128, 0,
      args);
}

tessera_status runCuda(const Call &c) {
  CudaScope scope(c.bundle->context);
  if (tessera_status s = checkDeviceMemory(c))
    return s;
  const LayerDesc &l = *c.l;
  kernel::AttnParams p = planCuda(c);
  int position = static_cast<int>(l.position);
  void *args[] = {&p, &position};
  if (!c.dense())
    return runCudaSeq(c, p);
  if (c.d.head_active)
    return runCudaRouted(c, p);
  // The attention kernel over the computed heads (the manifest's rows and
  // threads per block), then the fill kernel over the skipped ones (128
  // rows, 128 threads).
  auto grid = [&](int64_t rowsPerBlock, int64_t heads) {
    return kernel::SeqGrid{(p.nq + rowsPerBlock - 1) / rowsPerBlock, heads,
                           c.d.q.batch};
  };
  // The groups with layouts, in their permuted order where the bundle has
  // the kernel (docs/bundles.md, "Layouts"). Where every such group runs
  // permuted and the bundle has the tables' entry without their heads,
  // the layer's kernels launch over that entry's slots; otherwise they
  // compute those heads too, and the permuted kernel, launched after
  // them, overwrites their rows.
  PermutedGroups permuted(*c.bundle->context->driver, c.d.cuda_stream);
  if (!l.permutedKernel.empty() && permutedCall(c))
    if (tessera_status s = permuted.upload(c, p.nq, p.nk))
      return s;
  const bool allPermuted =
      l.permutedPosition >= 0 && permuted.groups.size() == l.layouts.size();
  int layerAt = allPermuted ? static_cast<int>(l.permutedPosition) : position;
  if (tessera_status s = launchAttention(
          c, p, layerAt, grid, allPermuted ? &l.permutedSlots : nullptr))
    return s;
  if (tessera_status s =
          launchGrid(c, l.fillKernel,
                     grid(128, int64_t(l.skippedHeads.size())), 128, 0, args))
    return s;
  if (tessera_status s = permuted.launch(c, p))
    return s;
  // Dynamic groups: the index kernels, then the attention over the index,
  // in stream order, with a stream-ordered workspace (docs/runtime.md);
  // the attention by its sm_90a twin where the bundle runs them and TMA
  // can read the call's K and V (as the static heads' kernels).
  HopperMapsBytes dynMaps;
  HopperMapsBytes *twinMaps = nullptr;
  bool twins = false;
  for (const DynamicGroupDesc &g : l.dynamicGroups)
    twins = twins || !g.wgmmaKernels.empty();
  if (c.bundle->path == KernelPath::Wgmma && twins) {
    std::string why = hopperMaps(*c.bundle->context->driver,
                                 c.bundle->tensorMaps, c.d, dynMaps);
    if (why.empty())
      twinMaps = &dynMaps;
    else if (c.bundle->pathForced)
      return fail(TESSERA_ERROR_MISALIGNED,
                  "TESSERA_KERNEL_PATH=wgmma: the sm_90a kernels cannot read " +
                      why);
  }
  // The caller's block index (validated on the host), copied into one
  // stream-ordered allocation: offsets [B, heads, R + 1], then the columns.
  DeviceIndex index(*c.bundle->context->driver, c.d.cuda_stream);
  if (c.hasBlockIndex)
    if (tessera_status s = index.upload(c))
      return s;
  for (size_t gi = 0; gi < l.dynamicGroups.size(); ++gi) {
    const DynamicGroupDesc &g = l.dynamicGroups[gi];
    kernel::DynArgs a = g.args;
    index.bind(a, c);
    a.headDim = l.headDim;
    a.layer = position;
    a.group = static_cast<int>(gi);
    a.centroids = c.centroids;
    if (tessera_status s = checkCudaCentroids(c, a))
      return s;
    if (tessera_status s =
            launchDynamicGroup(c.bundle, c.d.layer, g, a, p, c.d.q.batch,
                               c.d.cuda_stream, twinMaps))
      return s;
  }
  return TESSERA_OK;
}

} // namespace

static tessera_status attentionRun(tessera_bundle *bundle,
                                   const tessera_attention_desc *desc) {
  lastError.clear();
  Call c;
  if (tessera_status s = validateCall(bundle, desc, c))
    return s;
  return c.cuda ? runCuda(c) : runCpu(c);
}

static tessera_status attentionWorkspaceSize(tessera_bundle *bundle,
                                             const tessera_attention_desc *desc,
                                             size_t *bytes) {
  lastError.clear();
  if (!bytes)
    return fail(TESSERA_ERROR_NULL_POINTER, "bytes is null");
  *bytes = 0;
  Call c;
  if (tessera_status s = validateCall(bundle, desc, c))
    return s;
  int64_t need = 0;
  planCudaSplit(c, need);
  *bytes = size_t(need);
  return TESSERA_OK;
}

//===- The backward -------------------------------------------------------===//

namespace {

/// What the backward takes beyond its forward call: the device, the mode,
/// the layer's heads, and the forward's LSE.
tessera_status validateBackwardCall(const Call &c) {
  if (c.cuda)
    if (std::string why = cudaBackwardRefusal(c.d, *c.l); !why.empty())
      return fail(TESSERA_ERROR_INVALID_ARGUMENT, why);
  const tessera_attention_desc &d = c.d;
  if (d.block_table || d.q_start || d.k_start)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "the backward takes dense, packed (cu_seqlens), length "
                "(seq_lens_k) and head-range calls only for now: desc sets "
                "block_table, q_start or k_start");
  if (!c.dense() && !c.l->dynamicGroups.empty())
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                c.layerName() + " has dynamic heads: their backward takes "
                                "dense calls only for now");
  if (!c.d.lse)
    return fail(TESSERA_ERROR_NULL_POINTER,
                "desc->lse is null: the backward recomputes the "
                "probabilities from the forward's LSE");
  return TESSERA_OK;
}

/// d_o like o, dq like q, dk and dv like k, all of q's dtype; the outputs
/// write each element once and overlap nothing else of the call.
tessera_status validateGradients(const Call &c, const tessera_tensor *dO,
                                 const float *dLse, const tessera_tensor *dq,
                                 const tessera_tensor *dk,
                                 const tessera_tensor *dv) {
  const tessera_attention_desc &d = c.d;
  for (auto [t, like, name, likeName] :
       {std::tuple{dO, &d.o, "d_o", "o"},
        {dq, &d.q, "dq", "q"},
        {dk, &d.k, "dk", "k"},
        {dv, &d.k, "dv", "k"}}) {
    if (tessera_status s = checkTensor(t, name))
      return s;
    if (t->dtype != d.q.dtype)
      return fail(TESSERA_ERROR_UNSUPPORTED_DTYPE,
                  std::string(name) + " must have q's dtype (" +
                      dtypeName(d.q.dtype) + "), got " + dtypeName(t->dtype));
    if (t->batch != like->batch || t->seq != like->seq ||
        t->heads != like->heads || t->head_dim != like->head_dim)
      return fail(TESSERA_ERROR_SHAPE_MISMATCH,
                  std::string(name) + " must have " + likeName + "'s shape");
  }
  std::vector<std::pair<Extent, const char *>> inputs = {
      {extent(d.q), "q"}, {extent(d.k), "k"}, {extent(d.v), "v"},
      {extent(d.o), "o"}, {extent(*dO), "d_o"}};
  auto floats = [](const float *p, int64_t n) {
    auto at = reinterpret_cast<uintptr_t>(p);
    return Extent{at, at + sizeof(float) * uint64_t(n)};
  };
  inputs.push_back({floats(d.lse, c.lseCount), "lse"});
  if (dLse)
    inputs.push_back({floats(dLse, c.lseCount), "d_lse"});
  std::vector<std::pair<Extent, const char *>> outputs = {
      {extent(*dq), "dq"}, {extent(*dk), "dk"}, {extent(*dv), "dv"}};
  for (size_t i = 0; i < outputs.size(); ++i) {
    const tessera_tensor *t = i == 0 ? dq : i == 1 ? dk : dv;
    if (overlapsItself(*t))
      return fail(TESSERA_ERROR_BAD_STRIDES,
                  std::string(outputs[i].second) +
                      " has overlapping elements (a zero or short stride)");
    for (const auto &[e, name] : inputs)
      if (overlap(outputs[i].first, e))
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    std::string(outputs[i].second) + " overlaps " + name);
    for (size_t j = 0; j < i; ++j)
      if (overlap(outputs[i].first, outputs[j].first))
        return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                    std::string(outputs[i].second) + " overlaps " +
                        outputs[j].second);
  }
  return TESSERA_OK;
}

/// On CUDA: the gradients' tensors and d_lse on the context's device; dq,
/// dk and dv 4-byte aligned with even strides (the kernels store element
/// pairs).
tessera_status checkBackwardDeviceMemory(const Call &c,
                                         const tessera_tensor &dO,
                                         const float *dLse,
                                         const tessera_tensor &dq,
                                         const tessera_tensor &dk,
                                         const tessera_tensor &dv) {
  for (auto [t, name] : {std::pair{&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}})
    if (reinterpret_cast<uintptr_t>(t->data) % 4 || t->stride_batch % 2 ||
        t->stride_seq % 2 || t->stride_head % 2)
      return fail(TESSERA_ERROR_MISALIGNED,
                  std::string(name) +
                      " must be 4-byte aligned with even strides on CUDA");
  return checkOnDevice(c, {{dO.data, "d_o"},
                           {dLse, "d_lse"},
                           {dq.data, "dq"},
                           {dk.data, "dk"},
                           {dv.data, "dv"}});
}

/// The backward of a call of static heads on CUDA (docs/backward.md, "On
/// CUDA"; dense, packed, length and head-range calls, dense ones only for
/// dynamic heads): D = rowsum(dO * O) into an f32 workspace (the caller's
/// desc->workspace, else a stream-ordered allocation freed in stream order
/// after the launches), the key-major (dK, dV; GQA sums inside the block)
/// and query-major (dQ) passes, their guarded second launches, and dQ = 0
/// for skipped heads, all on the call's stream; nothing synchronises.
tessera_status runBackwardCuda(const Call &c, const tessera_tensor &dO,
                               const float *dLse, const tessera_tensor &dq,
                               const tessera_tensor &dk,
                               const tessera_tensor &dv) {
  CudaScope scope(c.bundle->context);
  if (tessera_status s = checkDeviceMemory(c))
    return s;
  if (tessera_status s = checkBackwardDeviceMemory(c, dO, dLse, dq, dk, dv))
    return s;
  const LayerDesc &l = *c.l;
  const BackwardKernelsDesc &k = l.backward;
  const Driver &drv = *c.bundle->context->driver;
  // Packed, length and head-range calls: the passes' `_seq` twins.
  const std::string seq = c.dense() ? "" : kSeqSuffix;
  auto twin = [&](const std::string &name) {
    return name.empty() ? name : name + seq;
  };
  // Every pass's twin, before anything is allocated or launched.
  bool twins = true;
  for (const std::string *name :
       {&k.keyMajor, &k.queryMajor, &k.keyMajorGuarded, &k.queryMajorGuarded})
    twins = twins && (name->empty() || c.bundle->functions.count(twin(*name)));
  if (!twins)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                c.layerName() + "'s bundle has no per-sequence backward "
                                "kernels (emitted before them: emit it again "
                                "with attn-translate)");
  const int64_t bytes = backwardWorkspaceBytes(c.d, l);
  void *delta = nullptr;
  if (tessera_status s = callerWorkspace(c, bytes, delta, "backward (D)"))
    return s;
  unsigned long long owned = 0;
  if (!delta && bytes > 0) {
    if (int rc = drv.memAllocAsync(&owned, size_t(bytes), c.d.cuda_stream))
      return fail(TESSERA_ERROR_CUDA,
                  "the backward's workspace (" + std::to_string(bytes) +
                      " bytes): " + drv.message("cuMemAllocAsync", rc));
    delta = reinterpret_cast<void *>(owned);
  }
  kernel::BwdParams p = makeBwdParams(c.d, l, dO, dLse, dq, dk, dv,
                                      static_cast<float *>(delta));
  // The forward's arguments, for the dynamic groups' index kernels.
  kernel::AttnParams forward = planCuda(c);
  int position = static_cast<int>(l.position);
  void *args[] = {&p, &position};
  const BackwardGrids g = backwardGrids(c.d, l);
  const unsigned kt = unsigned(k.keyMajorThreads),
                 ks = unsigned(k.keyMajorDynamicShared),
                 qs = unsigned(k.queryMajorDynamicShared);
  // Preprocess (and the zeroing of the dynamic heads' dK / dV sums), then
  // the two passes, then their guarded launches (each after its own pass),
  // then the zero fill; then the dynamic groups and their sums' adding.
  const std::tuple<std::string, kernel::SeqGrid, unsigned, unsigned>
      steps[] = {{k.preprocess, g.preprocess, 128, 0},
                 {k.dynamicClear, g.dynamicSums, 128, 0},
                 {k.keyMajor + seq, g.keyMajor, kt, ks},
                 {k.queryMajor + seq, g.queryMajor, 128, qs},
                 {twin(k.keyMajorGuarded), g.keyMajor, kt, ks},
                 {twin(k.queryMajorGuarded), g.queryMajor, 128, qs},
                 {k.zeroSkipped, g.zeroSkipped, 128, 0}};
  tessera_status status = TESSERA_OK;
  for (const auto &[name, grid, threads, shared] : steps)
    if (!status && !name.empty())
      status = launchGrid(c, name, grid, threads, shared, args);
  // Each dynamic group: its index built again by the forward's kernels
  // (the same index; a caller's block index uploaded as for the forward),
  // then dQ and the dK / dV sums over it, chunk by chunk
  // (launchDynamicGroup's chunks, in its workspace).
  DeviceIndex index(drv, c.d.cuda_stream);
  if (!status && c.hasBlockIndex)
    status = index.upload(c);
  for (size_t gi = 0; gi < l.dynamicGroups.size() && !status; ++gi) {
    const DynamicGroupDesc &dg = l.dynamicGroups[gi];
    kernel::DynArgs a = dg.args;
    index.bind(a, c);
    a.headDim = l.headDim;
    a.layer = position;
    a.group = static_cast<int>(gi);
    a.centroids = c.centroids;
    a.bwdStop = backwardStops(c.d, l, static_cast<float *>(delta));
    if ((status = checkCudaCentroids(c, a)))
      break;
    // A block per 64 query rows; routing: per segment tile (rtAttend's).
    // dQ and the dK / dV sums, then their guarded launches (blocks whose dQ
    // came out non-finite, or whose dK / dV pass stopped at a masked tile
    // with non-finite sums, walk again with the guard; the others return).
    const DynamicAttend attend = [&](kernel::DynArgs &chunk, int64_t batches) {
      void *dynArgs[] = {&p, &chunk};
      const int64_t gx = chunk.family == kernel::kRouting
                             ? kernel::routingTiles(chunk, c.d.q.seq)
                             : (c.d.q.seq + 63) / 64;
      if (gx > 0x7fffffff)
        return -1;
      for (auto [name, threads, shared] : {std::tuple{&dg.backwardDq, 128u, qs},
                                           {&dg.backwardDkdv, kt, ks},
                                           {&dg.backwardDqGuarded, 128u, qs},
                                           {&dg.backwardDkdvGuarded, kt, ks}})
        if (int rc = drv.launchKernel(c.bundle->functions.at(*name),
                                      unsigned(gx), unsigned(chunk.numSlots),
                                      unsigned(batches), threads, 1, 1, shared,
                                      c.d.cuda_stream, dynArgs, nullptr))
          return rc;
      // Routing that merges: then the rest of its pattern (rtRest's pairs),
      // a block per 64 query rows, its dQ adding the segments' f32 rows.
      for (size_t r = 0; r < dg.backwardRest.size(); ++r)
        if (int rc = drv.launchKernel(
                c.bundle->functions.at(dg.backwardRest[r]),
                unsigned((c.d.q.seq + 63) / 64), unsigned(chunk.numSlots),
                unsigned(batches), r % 2 ? kt : 128u, 1, 1, r % 2 ? ks : qs,
                c.d.cuda_stream, dynArgs, nullptr))
          return rc;
      return 0;
    };
    status = launchDynamicGroup(c.bundle, c.d.layer, dg, a, forward,
                                c.d.q.batch, c.d.cuda_stream, nullptr, attend);
  }
  if (!status && !k.dynamicAdd.empty())
    status = launchGrid(c, k.dynamicAdd, g.dynamicSums, 128, 0, args);
  if (owned)
    if (int rc = drv.memFreeAsync(owned, c.d.cuda_stream); rc && !status)
      status = fail(TESSERA_ERROR_CUDA, drv.message("cuMemFreeAsync", rc));
  return status;
}

} // namespace

/// Zeroes every element of a tensor (the gradients rows no sequence owns
/// keep).
static void zeroTensor(const cpu::Tensor &t) {
  const size_t size = t.dtype == cpu::DType::F32 ? 4 : 2;
  for (int64_t b = 0; b < t.batch; ++b)
    for (int64_t i = 0; i < t.seq; ++i)
      for (int64_t h = 0; h < t.heads; ++h)
        std::memset(static_cast<char *>(t.data) +
                        size_t(b * t.strideBatch + i * t.strideSeq +
                               h * t.strideHead) *
                            size,
                    0, size_t(t.headDim) * size);
}

/// The backward of a packed or length call (static heads, bottom-right
/// positions): each sequence as a dense batch-1 backward over its rows
/// and keys, the LSE (and its gradient) through buffers in the dense
/// layout; rows and keys no sequence owns get zero gradients.
static tessera_status sequenceBackward(const Call &c,
                                       const cpu::BackwardArgs &a) {
  const tessera_attention_desc &d = c.d;
  for (const cpu::Tensor *t : {&a.dq, &a.dk, &a.dv})
    zeroTensor(*t);
  const int64_t H = c.heads;
  std::vector<float> lse, dLse;
  for (int64_t s = 0; s < c.numSeqs; ++s) {
    const int64_t nq = queryCount(c, s), nk = keyCount(c, s);
    if (nq == 0 || nk == 0) // no rows, or rows without keys: zeros
      continue;
    const int64_t q0 = d.cu_seqlens_q ? d.cu_seqlens_q[s] : 0,
                  qb = d.cu_seqlens_q ? 0 : s;
    const int64_t k0 = d.cu_seqlens_k ? d.cu_seqlens_k[s] : 0,
                  kb = d.cu_seqlens_k ? 0 : s;
    cpu::BackwardArgs one = a;
    for (auto [from, to] : {std::pair{&a.q, &one.q}, {&a.o, &one.o},
                            {&a.dO, &one.dO}, {&a.dq, &one.dq}})
      *to = rowsView(*from, qb, q0, nq);
    for (auto [from, to] : {std::pair{&a.k, &one.k}, {&a.v, &one.v},
                            {&a.dk, &one.dk}, {&a.dv, &one.dv}})
      *to = rowsView(*from, kb, k0, nk);
    // The LSE rows of the sequence: [H, T] packed, [B, H, Nq] dense.
    const int64_t base = d.cu_seqlens_q ? q0 : s * H * d.q.seq;
    lse.resize(size_t(H * nq));
    dLse.resize(a.dLse ? size_t(H * nq) : 0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        lse[size_t(h * nq + i)] = a.lse[base + h * d.q.seq + i];
        if (a.dLse)
          dLse[size_t(h * nq + i)] = a.dLse[base + h * d.q.seq + i];
      }
    one.lse = lse.data();
    one.dLse = a.dLse ? dLse.data() : nullptr;
    if (a.headActive) // the sequence's rows: packed from q0, else batch qb
      one.headActive = a.headActive + (qb * d.q.seq + q0) * H;
    if (std::string e = cpu::runLayerBackward(c.l->table(), one); !e.empty())
      return fail(TESSERA_ERROR_INTERNAL, e);
  }
  return TESSERA_OK;
}

/// The backward of a layer with dynamic (vertical-slash, block top-k)
/// heads: per batch entry, the layer's table with each dynamic head's index
/// rebuilt from the same rows as in the forward (the same index: its
/// selection carries no gradient, docs/backward.md), then the static
/// backward over it.
static tessera_status dynamicBackward(const Call &c,
                                      const cpu::BackwardArgs &a) {
  const float scale = c.d.scale > 0 ? c.d.scale
                                    : 1.0f / std::sqrt(float(c.l->headDim));
  for (int64_t b = 0; b < c.d.q.batch; ++b) {
    kernel::OwnedLayerTable t;
    if (std::string e =
            layerTableWithDynamicHeads(*c.l, a.q, a.k, b, scale, t,
                                       c.hasBlockIndex ? &c.blockIndex
                                                       : nullptr);
        !e.empty())
      return fail(TESSERA_ERROR_INVALID_ARGUMENT, c.layerName() + ": " + e);
    cpu::BackwardArgs one = a;
    for (auto [from, to] :
         {std::pair{&a.q, &one.q}, {&a.k, &one.k}, {&a.v, &one.v},
          {&a.o, &one.o}, {&a.dO, &one.dO}, {&a.dq, &one.dq},
          {&a.dk, &one.dk}, {&a.dv, &one.dv}})
      *to = rowsView(*from, b, 0, from->seq);
    const int64_t rows = c.l->numHeads * c.d.q.seq;
    one.lse = a.lse + b * rows;
    one.dLse = a.dLse ? a.dLse + b * rows : nullptr;
    if (std::string e = cpu::runLayerBackward(t.table(), one); !e.empty())
      return fail(TESSERA_ERROR_INTERNAL, e);
    // Routing heads: left out of the table (dq = 0 there), added here.
    for (const DynamicGroupDesc &g : c.l->dynamicGroups)
      if (g.args.family == kernel::kRouting)
        if (std::string e = routingBackwardCpu(g, a, b, c.l->numHeads,
                                               c.centroids, c.needClusters);
            !e.empty())
          return fail(TESSERA_ERROR_INTERNAL, c.layerName() + ": " + e);
  }
  return TESSERA_OK;
}

static tessera_status
attentionBackward(tessera_bundle *bundle, const tessera_attention_desc *desc,
                  const tessera_tensor *dO, const float *dLse,
                  const tessera_tensor *dq, const tessera_tensor *dk,
                  const tessera_tensor *dv) {
  lastError.clear();
  Call c;
  if (tessera_status s = validateCall(bundle, desc, c))
    return s;
  if (tessera_status s = validateBackwardCall(c))
    return s;
  if (tessera_status s = validateGradients(c, dO, dLse, dq, dk, dv))
    return s;
  if (c.cuda && c.d.head_active)
    return fail(TESSERA_ERROR_INVALID_ARGUMENT,
                "head_active (per-token head routing): the backward runs on "
                "CPU contexts only for now (no CUDA backward kernel skips "
                "the inactive rows)");
  if (c.cuda)
    return runBackwardCuda(c, *dO, dLse, *dq, *dk, *dv);
  if (tessera_status s = checkHostMemory(c))
    return s;
  cpu::LayerArgs f = planCpu(c);
  cpu::BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.o = f.o;
  a.dO = toCpu(*dO);
  a.lse = c.d.lse;
  a.headActive = c.d.head_active; // inactive pairs: dq = 0, no dk / dv
  a.dLse = dLse;
  a.dq = toCpu(*dq);
  a.dk = toCpu(*dk);
  a.dv = toCpu(*dv);
  a.scale = c.d.scale;
  a.headStart = c.d.head_start;
  a.numKvHeads = c.l->numKvHeads;
  a.blockQ = f.blockQ;
  a.numThreads = f.numThreads;
  a.pool = &c.bundle->context->pool;
  if (!c.dense())
    return sequenceBackward(c, a);
  if (c.l->dynamicGroups.empty()) {
    if (std::string e = cpu::runLayerBackward(c.l->table(), a); !e.empty())
      return fail(TESSERA_ERROR_INTERNAL, e);
    return TESSERA_OK;
  }
  return dynamicBackward(c, a);
}
