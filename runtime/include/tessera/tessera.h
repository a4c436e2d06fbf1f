/*===- tessera.h - the Tessera runtime C API ------------------------------===*
 *
 * Engines load a compiled pattern bundle (attn-translate's bundle.cu and
 * manifest.json) and run attention for a layer on their own tensors: on a
 * CUDA device (JIT-compiled with NVRTC for the device, cached on disk) or on
 * the CPU. The library links neither MLIR nor the CUDA libraries: libcuda and
 * NVRTC are opened at run time, and their absence is an error code.
 *
 * Every function returns a tessera_status; on an error,
 * tessera_last_error() (per thread) says what went wrong, in words. No
 * function aborts the process on bad input.
 *
 *===----------------------------------------------------------------------===*/

#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TESSERA_API __attribute__((visibility("default")))
#else
#define TESSERA_API
#endif

/* The API version this header describes. Bumped when a function is added or
 * changed; tessera_api_version() returns the library's. Version 2 added
 * tessera_bundle_tile_classes; version 3 tessera_attention_dynamic and the
 * dynamic fields of tessera_layer_info; version 4 tessera_attention_desc
 * (packed, paged, positioned and head-range calls), tessera_attention_run
 * and tessera_context_set_num_threads; version 5 tessera_attention_backward;
 * version 6 tessera_bundle_visited_tiles, and head ranges for layers with
 * dynamic heads; version 7 a caller-owned workspace in
 * tessera_attention_desc (workspace, workspace_size) and
 * tessera_attention_workspace_size; version 8 the caller's block index of
 * block_index heads in tessera_attention_desc (block_index_offsets,
 * block_index_cols, block_index_nnz); version 9 per-token head routing
 * in tessera_attention_desc (head_active, head_active_size).
 */
#define TESSERA_API_VERSION 9

typedef enum tessera_status {
  TESSERA_OK = 0,
  TESSERA_ERROR_NULL_POINTER = 1,         /* a required pointer is null */
  TESSERA_ERROR_INVALID_ARGUMENT = 2,     /* an enum or value out of range */
  TESSERA_ERROR_UNSUPPORTED_DTYPE = 3,    /* dtype not the layer's, or none */
  TESSERA_ERROR_UNSUPPORTED_HEAD_DIM = 4, /* head_dim not the layer's */
  TESSERA_ERROR_SHAPE_MISMATCH = 5,       /* shapes disagree with each other
                                             or with the bundle */
  TESSERA_ERROR_BAD_STRIDES = 6,          /* negative, or head_dim not
                                             contiguous */
  TESSERA_ERROR_MISALIGNED = 7,           /* pointer or stride alignment */
  TESSERA_ERROR_LAYER_OUT_OF_RANGE = 8,   /* no such layer in the bundle */
  TESSERA_ERROR_WRONG_DEVICE = 9,         /* memory not on the context's
                                             device */
  TESSERA_ERROR_BAD_BUNDLE = 10,          /* malformed or inconsistent
                                             manifest or source */
  TESSERA_ERROR_IO = 11,                  /* a file could not be read */
  TESSERA_ERROR_CUDA_UNAVAILABLE = 12,    /* no libcuda, driver or device */
  TESSERA_ERROR_NVRTC_UNAVAILABLE = 13,   /* no NVRTC */
  TESSERA_ERROR_COMPILE = 14,             /* NVRTC rejected the source */
  TESSERA_ERROR_CUDA = 15,                /* a CUDA driver call failed */
  TESSERA_ERROR_INTERNAL = 16
} tessera_status;

typedef enum tessera_device_kind {
  TESSERA_DEVICE_CPU = 0,
  TESSERA_DEVICE_CUDA = 1
} tessera_device_kind;

typedef enum tessera_dtype {
  TESSERA_DTYPE_F32 = 0,
  TESSERA_DTYPE_F16 = 1,
  TESSERA_DTYPE_BF16 = 2
} tessera_dtype;

/* A [batch, seq, heads, head_dim] tensor; strides in elements; head_dim is
 * contiguous (its stride is 1). */
typedef struct tessera_tensor {
  void *data;
  tessera_dtype dtype;
  int64_t batch, seq, heads, head_dim;
  int64_t stride_batch, stride_seq, stride_head;
} tessera_tensor;

typedef struct tessera_layer_info {
  int64_t index; /* the layer's index in the pattern file */
  int64_t num_heads, num_kv_heads, head_dim;
  tessera_dtype dtype;
  int64_t num_computed_heads, num_skipped_heads;
  /* Heads of dynamic groups (their index is built per call; counted in
   * num_computed_heads too), and the largest cluster count of the layer's
   * routing groups that take the engine's centroids (0: none). */
  int64_t num_dynamic_heads, centroid_clusters;
} tessera_layer_info;

/* What a layer's dynamic patterns take from the engine. centroids: fp32
 * [centroid_heads, centroid_clusters, centroid_head_dim], contiguous,
 * where a layer's routing groups with kmeans_iterations = 0 read head h's
 * first `clusters` rows; host memory on the CPU, device memory on CUDA.
 * The shape must be the layer's (num_heads, centroid_clusters of
 * tessera_layer_info, head_dim). */
typedef struct tessera_dynamic_inputs {
  const float *centroids;
  int64_t centroid_heads, centroid_clusters, centroid_head_dim;
} tessera_dynamic_inputs;

typedef struct tessera_context tessera_context;
typedef struct tessera_bundle tessera_bundle;

TESSERA_API uint32_t tessera_api_version(void);

/* What went wrong in this thread's last failing call ("" if none). Valid
 * until this thread's next call into the library. */
TESSERA_API const char *tessera_last_error(void);

/* A constant name for a status, e.g. "TESSERA_ERROR_SHAPE_MISMATCH". */
TESSERA_API const char *tessera_status_string(tessera_status status);

/* A context for the CPU (device_ordinal ignored) or one CUDA device. */
TESSERA_API tessera_status tessera_context_create(tessera_device_kind kind,
                                                  int device_ordinal,
                                                  tessera_context **out);
TESSERA_API tessera_status tessera_context_destroy(tessera_context *context);

/* Loads the bundle in directory `path` (manifest.json and bundle.cu), or
 * from memory. On a CUDA context its kernels are compiled for the device's
 * compute capability with NVRTC, through the disk cache
 * ($TESSERA_CACHE_DIR, default ~/.cache/tessera), and loaded. */
TESSERA_API tessera_status tessera_bundle_load_file(tessera_context *context,
                                                    const char *path,
                                                    tessera_bundle **out);
TESSERA_API tessera_status tessera_bundle_load_memory(
    tessera_context *context, const char *manifest, size_t manifest_size,
    const char *source, size_t source_size, tessera_bundle **out);
TESSERA_API tessera_status tessera_bundle_destroy(tessera_bundle *bundle);

/* Layers are looked up by their index in the pattern file. */
TESSERA_API tessera_status
tessera_bundle_num_layers(const tessera_bundle *bundle, int64_t *out);
TESSERA_API tessera_status tessera_bundle_layer_index(
    const tessera_bundle *bundle, int64_t position, int64_t *out);
TESSERA_API tessera_status tessera_bundle_layer_info(
    const tessera_bundle *bundle, int64_t layer, tessera_layer_info *out);

/* O = attention(Q, K, V) for `layer` (a dense tessera_attention_desc).
 * q: [B, Nq, H, D], k and v:
 * [B, Nk, Hkv, D], o: [B, Nq, H, D], all of the layer's dtype (the CPU also
 * takes f32), lse: null or [B, H, Nq] float32. scale: 0 selects
 * 1/sqrt(D). On CUDA the work is queued on `cuda_stream` (a CUstream; null
 * is the default stream); on the CPU it runs now, on the context's threads
 * (tessera_context_set_num_threads). */
TESSERA_API tessera_status tessera_attention(
    tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
    const tessera_tensor *k, const tessera_tensor *v, const tessera_tensor *o,
    float *lse, float scale, void *cuda_stream);

/* tessera_attention with the inputs of the layer's dynamic patterns
 * (null: none; an error names the group that needs them). */
TESSERA_API tessera_status tessera_attention_dynamic(
    tessera_bundle *bundle, int64_t layer, const tessera_tensor *q,
    const tessera_tensor *k, const tessera_tensor *v, const tessera_tensor *o,
    float *lse, float scale, const tessera_dynamic_inputs *inputs,
    void *cuda_stream);

/* One attention call, described (docs/runtime.md, "Calls"). Fill it with
 * tessera_attention_desc_init, which zeroes it and sets struct_size to this
 * header's sizeof: a library built from a newer header reads only the
 * fields an older caller knows (the rest keep their defaults), and a
 * library older than the caller's header refuses a description that sets
 * fields it does not know. A null pointer or a zero count is "not used".
 *
 * Sequences. Dense (cu_seqlens_q, cu_seqlens_k, seq_lens_k and block_table
 * null): q, o [B, Nq, H, D], k, v [B, Nk, Hkv, D], B sequences. Otherwise
 * num_seqs sequences, each part chosen on its own:
 *  - queries: cu_seqlens_q null: q, o dense, num_seqs = q.batch; else
 *    packed: q, o [1, T, H, D], sequence s's rows are
 *    [cu_seqlens_q[s], cu_seqlens_q[s + 1]) (int32 [num_seqs + 1],
 *    non-decreasing, from 0 or more, ending at T at most; FlashAttention's
 *    varlen convention); empty sequences allowed;
 *  - keys and values: dense (k.batch = num_seqs, Nk keys each, or
 *    seq_lens_k[s] <= Nk of them: a static cache filled in part); packed
 *    with cu_seqlens_k like the queries (k, v [1, Tk, Hkv, D]); or paged:
 *    block_table non-null, k and v [num_pages, page_size, Hkv, D] as
 *    tessera_tensor batch = num_pages, seq = page_size (16 to 256), the
 *    caches of vLLM and FlashInfer; sequence s's key j is row j % page_size
 *    of page block_table[s * block_table_stride + j / page_size]; int32
 *    block table [num_seqs, max_pages_per_seq], rows block_table_stride
 *    (>= max_pages_per_seq) apart; seq_lens_k[s] keys (required); a
 *    sequence's pages are distinct, and only its first
 *    ceil(seq_lens_k[s] / page_size) entries are read.
 * Positions. Query row i of sequence s sits at position q_start[s] + i and
 * key j at k_start[s] + j (int64 [num_seqs], each >= 0; positions below
 * 2^40); the pattern is evaluated on these positions. Null q_start:
 * bottom-right alignment, q_start[s] = k_start[s] + Nk_s - Nq_s (today's
 * rule); null k_start: 0. Chunked prefill: q_start = tokens already cached,
 * k_start null; context parallelism: the chunk's own offsets.
 * Heads. head_count = 0: every head of the layer. Otherwise q and o hold
 * the layer's heads [head_start, head_start + head_count), and k and v the
 * kv heads they read, [head_start / G, (head_start + head_count - 1) / G]
 * (G = num_heads / num_kv_heads); patterns and GQA take the layer's head
 * index.
 * LSE (float32, natural log; -inf for a row without keys): dense queries
 * [B, head_count or H, Nq]; packed queries [head_count or H, T], row t the
 * packed row. Results of two calls over disjoint key sets of the same
 * queries merge as O = sum_i exp(lse_i - lse) O_i, lse = log sum_i
 * exp(lse_i).
 * On CUDA the sequence arrays are device memory, which the host does not
 * read: the kernels check them, and a sequence with an entry out of range
 * gets NaN in its rows of o and lse (docs/runtime.md, "Devices"); static
 * heads take every mode, dynamic heads dense calls only. Dynamic patterns take dense and packed
 * calls on the CPU, and (API 6) head ranges (no paged keys or positions):
 * a head's index is built from its own full rows, so a head range gives
 * those heads' results of the whole-layer call.
 * Workspace (API 7). On CUDA a decode-like per-sequence call may split each
 * sequence's keys and merge the partial results (docs/runtime.md, "Decode
 * steps"), which needs tessera_attention_workspace_size bytes of device
 * memory for them. workspace null: the run allocates and frees it in
 * stream order (cuMemAllocAsync / cuMemFreeAsync, memory nodes in a
 * captured graph); else workspace is device memory of the context's device,
 * 16-byte aligned, of workspace_size bytes, which the call uses instead
 * (no allocation at all), and too small a one is
 * TESSERA_ERROR_INVALID_ARGUMENT naming the bytes needed. The caller owns
 * it and must not reuse it until the call's work on cuda_stream is done.
 * A CPU context ignores both fields (its executor's scratch is host
 * memory of its own).
 * Block index (API 8; docs/runtime.md, "Caller-provided block indices"):
 * the key blocks of each query block for the layer's block_index heads
 * (#attn.block_index<block_q = BQ, block_k = BK>), as CSR over int32 host
 * arrays. R = floor((Nk - 1) / BQ) - floor((Nk - Nq) / BQ) + 1 query
 * blocks of positions (ceil(N / BQ) when Nq = Nk = N; row i is position
 * block floor((Nk - Nq) / BQ) + i); for batch entry b and head slot h of
 * the call (0 <= h < head_count, or H), row i's key blocks are
 * block_index_cols[o[i] .. o[i + 1]), o = block_index_offsets + (b * heads
 * + h) * (R + 1): offsets [B, heads, R + 1] within [0, block_index_nnz]
 * and non-decreasing per (b, h), each row's key blocks strictly increasing
 * in [0, ceil(Nk / BK)); block_index_rows is the caller's R, which must
 * be the call's (so that the library never reads past the caller's
 * offsets). Per-sequence calls (cu_seqlens_q, cu_seqlens_k, seq_lens_k):
 * b is the sequence, offsets [num_seqs, heads, block_index_rows + 1] with
 * block_index_rows >= every sequence's R (from its own Nq, Nk), of which
 * sequence s reads its first R_s + 1. Only the rows of block_index heads
 * are read (and checked: an error names the field, the batch entry and
 * the head). Host memory on every context, read during the call only
 * (a CUDA context validates it on the host and uploads a copy on
 * cuda_stream; dense whole-layer calls there); no paged keys or positions,
 * as for every dynamic head; a layer's block_index groups share BQ and BK.
 * Per-token head routing (API 9; docs/runtime.md, "Per-token head
 * routing"; MoH, Mixture-of-Head attention): head_active says which heads
 * each query row uses, one uint8 per (query row, head slot), nonzero =
 * active, row-major and contiguous: dense queries [B, Nq, heads], packed
 * queries [T, heads] (row t the packed row), with heads = head_count (the
 * call's head slots, head_start on) or H; head_active_size is its bytes
 * (checked: rows * heads). An inactive (row, head) pair gets O = 0 and
 * LSE = -inf and costs nothing: each head's active rows are compacted into
 * query blocks (keeping their positions, which the pattern sees). Keys and
 * values are not routed: an active pair sees every key its pattern
 * allows. Null: every pair active. Layers of static heads (dynamic heads
 * are refused by name); CPU contexts take every call mode, CUDA contexts
 * dense whole-layer calls of bundles emitted with attn-translate
 * --head-routing (host memory there too: the host builds each head's
 * walk; other calls refused by name). The backward (CPU contexts) gives
 * inactive rows dq = 0 and no share of dk and dv. */
typedef struct tessera_attention_desc {
  size_t struct_size; /* sizeof(tessera_attention_desc) of the caller */
  int64_t layer;
  tessera_tensor q, k, v, o;
  float *lse;
  float scale; /* 0: 1/sqrt(D) */
  const tessera_dynamic_inputs *dynamic_inputs;
  void *cuda_stream;
  int64_t num_seqs;
  const int32_t *cu_seqlens_q, *cu_seqlens_k, *seq_lens_k;
  const int32_t *block_table;
  int64_t max_pages_per_seq, block_table_stride;
  const int64_t *q_start, *k_start;
  int64_t head_start, head_count;
  void *workspace;       /* API 7: null, or caller-owned device memory */
  size_t workspace_size; /* its bytes (0 with a null workspace) */
  const int32_t *block_index_offsets; /* API 8: [B, heads, R + 1], or null */
  const int32_t *block_index_cols;    /* [block_index_nnz] key blocks */
  int64_t block_index_nnz;
  int64_t block_index_rows; /* R as the caller counted it (checked) */
  const uint8_t *head_active; /* API 9: [B, Nq, heads] or [T, heads] */
  int64_t head_active_size;   /* its bytes (checked) */
} tessera_attention_desc;

/* Zeroes the caller's `size` bytes of *desc (its sizeof, 64 KiB at most)
 * and sets struct_size to `size` (API 7). */
TESSERA_API void tessera_attention_desc_init_size(tessera_attention_desc *desc,
                                                  size_t size);

/* Zeroes *desc and sets its struct_size: through the macro below, this
 * header's sizeof (tessera_attention_desc_init_size), so that a caller
 * built against an older header is never written past its struct. The
 * library's symbol of this name (for binaries built against API 4-6, and
 * bindings that call it by name) initialises the API 6 fields only: such
 * a description has no workspace. */
TESSERA_API void tessera_attention_desc_init(tessera_attention_desc *desc);
#define tessera_attention_desc_init(desc)                                      \
  tessera_attention_desc_init_size((desc), sizeof *(desc))

/* Validates *desc (every field, each error naming its field), then runs
 * it: on the CPU before returning, on CUDA queued on desc->cuda_stream. */
TESSERA_API tessera_status tessera_attention_run(
    tessera_bundle *bundle, const tessera_attention_desc *desc);

/* The bytes of workspace the run of *desc needs on the bundle's device
 * (0: none, e.g. on a CPU context, for a dense call, or for a call that
 * does not split its keys), for desc->workspace: validates *desc as
 * tessera_attention_run does (its workspace fields excepted) and plans the
 * call the same way, from shapes alone (no device memory is read). The
 * answer depends on the shapes, num_seqs, the modes (which pointers are
 * null), head_count and TESSERA_CUDA_SPLIT_KV, not on the data. */
TESSERA_API tessera_status
tessera_attention_workspace_size(const tessera_bundle *bundle,
                                 const tessera_attention_desc *desc,
                                 size_t *bytes);

/* The backward of a forward call (docs/backward.md): from the forward's
 * description `desc` (its q, k, v, o, and lse, required: the probabilities
 * are recomputed from it; layer and scale as in the forward) and d_o, the
 * gradient of the loss by o (o's shape), writes every element of dq (q's
 * shape), dk and dv (k's shape; with grouped-query attention the sums over
 * each kv head's query heads). d_lse: null, or the gradient of the loss by
 * the LSE ([B, H, Nq] float32), for losses that read it. All tensors of the
 * forward's dtype. Dense calls of every head family (dynamic heads: their
 * index rebuilt from the same rows, the selection carrying no gradient;
 * routing heads: gradients within their clusters and through the rest of
 * their pattern, the centroids the caller's), and packed (cu_seqlens),
 * length (seq_lens_k) and head-range calls of layers of static heads (each
 * sequence's gradients those of its own dense call; rows and keys no
 * sequence owns get zeros; a head range's dk and dv sum over its own query
 * heads); no block_table, q_start or k_start. On CUDA contexts the
 * bundle's backward kernels run on desc->cuda_stream without
 * synchronising, in a workspace from desc->workspace if set (else
 * allocated in stream order): the f32 D rows ([B, call heads, Nq];
 * packed [call heads, T]), and with dynamic heads their f32 dK / dV sums
 * ([B, kv heads, Nk, 2 head_dim]) and an int per block of the guarded
 * launches; a smaller workspace is refused naming the bytes it needs
 * (docs/backward.md). CUDA refuses head_active (CPU contexts run it).
 * Anything else is TESSERA_ERROR_INVALID_ARGUMENT saying which. */
TESSERA_API tessera_status tessera_attention_backward(
    tessera_bundle *bundle, const tessera_attention_desc *desc,
    const tessera_tensor *d_o, const float *d_lse, const tessera_tensor *dq,
    const tessera_tensor *dk, const tessera_tensor *dv);

/* The number of threads a CPU context's calls use (0, the default: every
 * hardware thread). Takes effect from the next call; safe to call while
 * other threads run calls. A CUDA context ignores it. */
TESSERA_API tessera_status
tessera_context_set_num_threads(tessera_context *context, int num_threads);

/* The tile classes the kernels see for every head of `layer` at Nq = q_len,
 * Nk = k_len in block_q x block_k tiles: out[(h * Tq + i) * Tk + j] is 0
 * (empty: the tile is skipped), 1 (partial: masked element by element) or 2
 * (full: every pair allowed), with Tq = ceil(q_len / block_q) and
 * Tk = ceil(k_len / block_k); skipped heads are all 0. out_size (bytes) must
 * be at least heads * Tq * Tk. Lengths are in [1, 2^40], tiles in
 * [1, 2^20]. For tools that mirror the schedule, e.g. tessera.torch's
 * FlexAttention BlockMask export. Runs on the host, in time proportional to
 * the visited tiles plus the size of `out`. A layer with dynamic heads is
 * TESSERA_ERROR_INVALID_ARGUMENT: their tiles depend on the input. */
TESSERA_API tessera_status tessera_bundle_tile_classes(
    const tessera_bundle *bundle, int64_t layer, int64_t q_len, int64_t k_len,
    int64_t block_q, int64_t block_k, uint8_t *out, size_t out_size);

/* The tiles `layer`'s schedule visits in the rectangle of query blocks
 * [q_block_begin, q_block_end) x key blocks [k_block_begin, k_block_end) of
 * a call with Nq = q_len, Nk = k_len (bottom-right aligned) in
 * block_q x block_k tiles, per head: out[2 * h] partial tiles, out[2 * h + 1]
 * full tiles of head h; skipped heads 0 and 0; dynamic heads -1 and -1
 * (their tiles depend on the input). out_count (entries) must be at least
 * 2 * heads. Lengths in [1, 2^40], tiles in [1, 2^20], 0 <= begin <= end <=
 * the grid's blocks. Counted from the runs of each query block of the
 * rectangle, started at its first key block: time proportional to the
 * query blocks times their runs, never to the rectangle's area. For
 * splitting a sequence over devices (docs/distributed.md): a
 * (query shard, key shard) pair without a visited tile needs neither
 * computing nor exchanging. */
TESSERA_API tessera_status tessera_bundle_visited_tiles(
    const tessera_bundle *bundle, int64_t layer, int64_t q_len, int64_t k_len,
    int64_t block_q, int64_t block_k, int64_t q_block_begin,
    int64_t q_block_end, int64_t k_block_begin, int64_t k_block_end,
    int64_t *out, size_t out_count);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_TESSERA_H */
