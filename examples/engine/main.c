/* A minimal engine: loads a Tessera bundle and runs one layer on the CPU,
 * and on the first CUDA device when there is one.
 *
 *   engine BUNDLE_DIR [LAYER]
 */
#include <tessera/tessera.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef ENGINE_WITH_CUDA
#include <cuda_runtime.h>
#endif

#define CHECK(call)                                                            \
  do {                                                                         \
    tessera_status s_ = (call);                                                \
    if (s_ != TESSERA_OK) {                                                    \
      fprintf(stderr, "%s: %s\n", tessera_status_string(s_),                   \
              tessera_last_error());                                           \
      return 1;                                                                \
    }                                                                          \
  } while (0)

static tessera_tensor make(void *data, tessera_dtype t, int64_t seq,
                           int64_t heads, int64_t dim) {
  tessera_tensor x = {data,        t,  1, seq, heads, dim, seq * heads * dim,
                      heads * dim, dim};
  return x;
}

/* bf16 or f16 bits of x (round toward zero: enough for an example). */
static unsigned short half_bits(float x, tessera_dtype t) {
  union {
    float f;
    unsigned u;
  } v = {x};
  if (t == TESSERA_DTYPE_BF16)
    return (unsigned short)(v.u >> 16);
  unsigned sign = (v.u >> 16) & 0x8000u;
  int exp = (int)((v.u >> 23) & 0xff) - 127 + 15;
  if (exp <= 0)
    return (unsigned short)sign;
  return (unsigned short)(sign | ((unsigned)exp << 10) |
                          ((v.u >> 13) & 0x3ffu));
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: engine BUNDLE_DIR [LAYER]\n");
    return 2;
  }
  tessera_context *cpu;
  tessera_bundle *bundle;
  CHECK(tessera_context_create(TESSERA_DEVICE_CPU, 0, &cpu));
  CHECK(tessera_bundle_load_file(cpu, argv[1], &bundle));
  int64_t layer = 0;
  if (argc > 2)
    layer = atoll(argv[2]);
  else
    CHECK(tessera_bundle_layer_index(bundle, 0, &layer));
  tessera_layer_info info;
  CHECK(tessera_bundle_layer_info(bundle, layer, &info));
  const int64_t n = 200, h = info.num_heads, hkv = info.num_kv_heads,
                d = info.head_dim;
  float *q = malloc(sizeof(float) * n * h * d);
  float *k = malloc(sizeof(float) * n * hkv * d);
  float *v = malloc(sizeof(float) * n * hkv * d);
  float *o = malloc(sizeof(float) * n * h * d);
  for (int64_t i = 0; i < n * h * d; ++i)
    q[i] = sinf((float)i * 0.37f);
  for (int64_t i = 0; i < n * hkv * d; ++i) {
    k[i] = cosf((float)i * 0.11f);
    v[i] = sinf((float)i * 0.05f);
  }
  tessera_tensor tq = make(q, TESSERA_DTYPE_F32, n, h, d);
  tessera_tensor tk = make(k, TESSERA_DTYPE_F32, n, hkv, d);
  tessera_tensor tv = make(v, TESSERA_DTYPE_F32, n, hkv, d);
  tessera_tensor to = make(o, TESSERA_DTYPE_F32, n, h, d);
  CHECK(tessera_attention(bundle, layer, &tq, &tk, &tv, &to, NULL, 0, NULL));
  double sum = 0;
  for (int64_t i = 0; i < n * h * d; ++i)
    sum += o[i];
  printf("cpu: layer %lld, %lld heads (%lld computed), head_dim %lld: "
         "checksum %.6f\n",
         (long long)layer, (long long)h, (long long)info.num_computed_heads,
         (long long)d, sum);

  tessera_context *gpu;
  if (tessera_context_create(TESSERA_DEVICE_CUDA, 0, &gpu) != TESSERA_OK) {
    printf("gpu: skipped (%s)\n", tessera_last_error());
  } else {
#ifdef ENGINE_WITH_CUDA
    tessera_bundle *gb;
    CHECK(tessera_bundle_load_file(gpu, argv[1], &gb));
    size_t qn = (size_t)(n * h * d), kn = (size_t)(n * hkv * d);
    unsigned short *hq = malloc(2 * qn), *hk = malloc(2 * kn),
                   *hv = malloc(2 * kn), *ho = malloc(2 * qn);
    for (size_t i = 0; i < qn; ++i)
      hq[i] = half_bits(q[i], info.dtype);
    for (size_t i = 0; i < kn; ++i) {
      hk[i] = half_bits(k[i], info.dtype);
      hv[i] = half_bits(v[i], info.dtype);
    }
    void *dq, *dk, *dv, *dout;
    cudaMalloc(&dq, 2 * qn);
    cudaMalloc(&dk, 2 * kn);
    cudaMalloc(&dv, 2 * kn);
    cudaMalloc(&dout, 2 * qn);
    cudaMemcpy(dq, hq, 2 * qn, cudaMemcpyHostToDevice);
    cudaMemcpy(dk, hk, 2 * kn, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, hv, 2 * kn, cudaMemcpyHostToDevice);
    tessera_tensor gq = make(dq, info.dtype, n, h, d);
    tessera_tensor gk = make(dk, info.dtype, n, hkv, d);
    tessera_tensor gv = make(dv, info.dtype, n, hkv, d);
    tessera_tensor go = make(dout, info.dtype, n, h, d);
    CHECK(tessera_attention(gb, layer, &gq, &gk, &gv, &go, NULL, 0, NULL));
    cudaMemcpy(ho, dout, 2 * qn, cudaMemcpyDeviceToHost);
    printf("gpu: ran layer %lld on device 0\n", (long long)layer);
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
    tessera_bundle_destroy(gb);
#else
    printf("gpu: skipped (built without the CUDA runtime)\n");
#endif
    tessera_context_destroy(gpu);
  }
  tessera_bundle_destroy(bundle);
  tessera_context_destroy(cpu);
  free(q);
  free(k);
  free(v);
  free(o);
  return 0;
}
