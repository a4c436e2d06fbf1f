//===- AttnAttributes.td - attn pattern attributes ---------*- tablegen -*-===//
//
// One attribute per static pattern of the catalogue, plus the combinators.
// The exact meaning of each is written in docs/patterns.md; positions use the
// bottom-right aligned query position p(q) = q + Nk - Nq and the offset
// d = k - p(q) of a key from the query's diagonal.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_TD
#define TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_TD

include "mlir/IR/AttrTypeBase.td"
include "tessera/Dialect/Attn/AttnDialect.td"
include "tessera/Dialect/Attn/AttnInterfaces.td"

class Attn_PatternAttr<string name, string attrMnemonic,
                       list<string> overridden = []>
    : AttrDef<Attn_Dialect, name,
              [DeclareAttrInterfaceMethods<Attn_PatternAttrInterface,
                                           overridden>]> {
  let mnemonic = attrMnemonic;
}

/// A list of integers written `[a, b, c]`; may be empty or left out.
class Attn_I64ListParameter<string desc>
    : OptionalArrayRefParameter<"int64_t", desc> {
  let parser = [{ ::tessera::attn::parseI64List($_parser) }];
  let printer = [{ ::tessera::attn::printI64List($_printer, $_self) }];
}

class Attn_DefaultZero<string desc>
    : DefaultValuedParameter<"int64_t", "0", desc>;

/// A real number written as a decimal (`0.95`), printed in its shortest form
/// that reads back exactly; 0 when left out.
class Attn_RealParameter<string desc>
    : DefaultValuedParameter<"::tessera::attn::Real",
                             "::tessera::attn::Real{0.0}", desc> {
  let parser = [{ ::tessera::attn::parseReal($_parser) }];
  let printer = [{ ::tessera::attn::printReal($_printer, $_self) }];
}

//===----------------------------------------------------------------------===//
// Leaves
//===----------------------------------------------------------------------===//

def Attn_DenseAttr : Attn_PatternAttr<"Dense", "dense"> {
  let summary = "Every query sees every key";
  let description = [{
    `allowed(q, k) = true`. Bidirectional attention (encoders, DiT).

    ```mlir
    attn.heads [0] = #attn.dense
    ```
  }];
}

def Attn_CausalAttr : Attn_PatternAttr<"Causal", "causal"> {
  let summary = "Keys at or before the query's aligned position";
  let description = [{
    `allowed(q, k) = d <= 0` with `d = k - (q + Nk - Nq)`: bottom-right
    aligned causal masking, as FlashAttention does when `Nq != Nk`.

    ```mlir
    attn.heads [0, 1] = #attn.causal
    ```
  }];
}

def Attn_WindowAttr : Attn_PatternAttr<"Window", "window"> {
  let summary = "A diagonal band: `before` keys behind, `after` keys ahead";
  let description = [{
    `allowed(q, k) = -before <= d <= after`. A sliding window is
    `#attn.window<before = W>`; Sparse-vDiT's diagonal heads use a symmetric
    band. The band always contains the diagonal itself.

    ```mlir
    attn.heads [3] = #attn.window<before = 1024>
    attn.heads [4] = #attn.window<before = 64, after = 64>
    ```
  }];
  let parameters = (ins
    Attn_DefaultZero<"keys allowed before the diagonal">:$before,
    Attn_DefaultZero<"keys allowed after the diagonal">:$after);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_SinkAttr : Attn_PatternAttr<"Sink", "sink"> {
  let summary = "The first `count` keys, causally (attention sinks)";
  let description = [{
    `allowed(q, k) = k < count && d <= 0`: the initial tokens of
    StreamingLLM and MInference, seen by every query at or after them. Keys
    that every query sees regardless of position are a
    `#attn.vertical_stripe`.

    ```mlir
    attn.heads [0] = #attn.sink<4>
    ```
  }];
  let parameters = (ins "int64_t":$count);
  let assemblyFormat = "`<` $count `>`";
  let genVerifyDecl = 1;
}

def Attn_AShapeAttr : Attn_PatternAttr<"AShape", "a_shape"> {
  let summary = "Sink keys plus a diagonal band (MInference A-shape)";
  let description = [{
    Exactly `#attn.sink<sink> ∪ #attn.window<before, after>`. With the
    default `after = 0` the pattern is causal.

    ```mlir
    attn.heads [0, 1, 2] = #attn.a_shape<sink = 4, before = 1024>
    ```
  }];
  let parameters = (ins "int64_t":$sink, "int64_t":$before,
                        Attn_DefaultZero<"keys after the diagonal">:$after);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_MultiDiagonalAttr
    : Attn_PatternAttr<"MultiDiagonal", "multi_diagonal"> {
  let summary = "Several diagonal bands: at a stride, or at listed offsets";
  let description = [{
    Sparse-vDiT's multi-diagonal heads: in a video of frames of `F` tokens a
    query attends to the same place in other frames, i.e. to diagonals at
    offsets that are multiples of `F`. Each diagonal at offset `o` covers the
    keys with `|d - o| <= width`.

    Exactly one form is given:
    * `stride = S`: diagonals at every multiple of `S` (all of them);
    * `offsets = [o1, o2, ...]`: strictly increasing offsets.

    ```mlir
    attn.heads [0] = #attn.multi_diagonal<stride = 1560, width = 8>
    attn.heads [1] = #attn.multi_diagonal<offsets = [-3120, 0, 3120], width = 4>
    ```
  }];
  let parameters = (ins
    Attn_DefaultZero<"distance between diagonals (0: use offsets)">:$stride,
    Attn_I64ListParameter<"offsets of the diagonals">:$offsets,
    Attn_DefaultZero<"keys on each side of each diagonal">:$width);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

class Attn_StripeAttr<string name, string attrMnemonic, string axis>
    : Attn_PatternAttr<name, attrMnemonic> {
  let parameters = (ins
    Attn_I64ListParameter<"[begin, end) pairs of " # axis # " indices">:$ranges,
    Attn_DefaultZero<"period of the periodic form (0: use ranges)">:$period,
    Attn_DefaultZero<"indices selected in each period">:$width,
    Attn_DefaultZero<"offset of the first selected index">:$phase);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_VerticalStripeAttr
    : Attn_StripeAttr<"VerticalStripe", "vertical_stripe", "key"> {
  let summary = "Keys that every query sees";
  let description = [{
    Global keys (Sparse-vDiT vertical stripes, MMInference text tokens), given
    in exactly one form:
    * `ranges = [b0, e0, b1, e1, ...]`: keys in `[b_i, e_i)`; the ranges are
      non-empty, sorted and disjoint;
    * `period = P, width = W, phase = F`: keys with `(k - F) mod P < W`.

    Keys are absolute indices `0 <= k < Nk`; causality does not apply.

    ```mlir
    attn.heads [0] = #attn.vertical_stripe<ranges = [0, 226]>
    attn.heads [1] = #attn.vertical_stripe<period = 1560, width = 16>
    ```
  }];
}

def Attn_HorizontalStripeAttr
    : Attn_StripeAttr<"HorizontalStripe", "horizontal_stripe", "query"> {
  let summary = "Queries that see every key";
  let description = [{
    Global queries, in the same two forms as `#attn.vertical_stripe`, over
    the aligned query position `p(q) = q + Nk - Nq`.

    ```mlir
    attn.heads [0] = #attn.horizontal_stripe<ranges = [0, 16]>
    ```
  }];
}

def Attn_GridAttr : Attn_PatternAttr<"Grid", "grid"> {
  let summary = "Vertical and slash lines at a fixed stride (MMInference)";
  let description = [{
    `allowed(q, k) = (k - phase) mod stride < vertical_width
                  || (-d - phase) mod stride < slash_width`.
    Vertical lines are key columns; slash lines are diagonals (constant
    `q - k`). Both repeat every `stride` positions, in both directions.

    ```mlir
    attn.heads [0] = #attn.grid<stride = 1560, vertical_width = 8, slash_width = 8>
    ```
  }];
  let parameters = (ins "int64_t":$stride,
    Attn_DefaultZero<"width of each vertical line">:$vertical_width,
    Attn_DefaultZero<"width of each slash line">:$slash_width,
    Attn_DefaultZero<"offset of the lines">:$phase);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_StridedShardsAttr
    : Attn_PatternAttr<"StridedShards", "strided_shards",
                       ["isHeadDependent"]> {
  let summary = "Each head sees one strided shard of the keys (S2-Attention)";
  let description = [{
    Keys are cut into blocks of `block` tokens; block `b` belongs to shard
    `b mod shards`; head `h` sees shard `(h + offset) mod shards`:
    `allowed(q, k, h) = (k / block) mod shards == (h + offset) mod shards`.
    Heads together cover the whole context. S2-Attention unions this with a
    local window and intersects it with causal.

    ```mlir
    attn.heads [0, 1, 2, 3] = #attn.strided_shards<shards = 4, block = 64>
    ```
  }];
  let parameters = (ins "int64_t":$shards,
    DefaultValuedParameter<"int64_t", "1", "tokens per block">:$block,
    Attn_DefaultZero<"shard of head 0">:$offset);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_ShiftedGroupsAttr
    : Attn_PatternAttr<"ShiftedGroups", "shifted_groups",
                       ["isHeadDependent"]> {
  let summary = "Attention within groups; the upper half of the heads shifted";
  let description = [{
    LongLoRA's S²-Attn and SinkLoRA's SF-Attn. Positions are cut into groups of
    `size` tokens and a query sees the keys of its own group. Heads
    `h >= num_heads / 2` (of the layer) use groups shifted by `shift` tokens:
    `group(x) = floor((x - s) / size)` with `s = shift` for those heads and
    `s = 0` for the others, and `allowed(q, k, h) = group(p(q)) == group(k)`.
    Unlike LongLoRA's token roll, the shifted groups do not wrap around: the
    first `shift` tokens form a short group of their own.

    ```mlir
    attn.heads [0, 1, 2, 3] = #attn.shifted_groups<size = 2048, shift = 1024>
    ```
  }];
  let parameters = (ins "int64_t":$size, "int64_t":$shift);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_BlockSparseAttr : Attn_PatternAttr<"BlockSparse", "block_sparse"> {
  let summary = "An explicit list of (query block, key block) pairs";
  let description = [{
    FlexAttention's BlockMask and Block-Sparse-Attention's layouts.
    `blocks = [qb0, kb0, qb1, kb1, ...]` lists the allowed blocks, each
    `block_q x block_k` tokens; `allowed(q, k) = (floor(p(q) / block_q),
    k / block_k)` is listed. No pair may be listed twice. An empty list
    allows nothing.

    ```mlir
    attn.heads [0] = #attn.block_sparse<block_q = 64, block_k = 64,
                                        blocks = [0, 0, 1, 0, 1, 1]>
    ```
  }];
  let parameters = (ins "int64_t":$block_q, "int64_t":$block_k,
    Attn_I64ListParameter<"flattened (query block, key block) pairs">:$blocks);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_SkipAttr : Attn_PatternAttr<"Skip", "skip"> {
  let summary = "The head is not computed: no key is allowed";
  let description = [{
    `allowed(q, k) = false`: Sparse-vDiT's head skipping. Every row of a
    skipped head has no allowed key, so its output is 0 and its LSE is
    -inf. Canonicalization produces it for patterns found to be empty.

    ```mlir
    attn.heads [7] = #attn.skip
    ```
  }];
}

//===----------------------------------------------------------------------===//
// Dynamic leaves: keys chosen from the input at run time
//===----------------------------------------------------------------------===//

class Attn_DynamicAttr<string name, string attrMnemonic>
    : Attn_PatternAttr<name, attrMnemonic, ["isStatic"]> {
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Attn_VerticalSlashAttr : Attn_DynamicAttr<"VerticalSlash", "vertical_slash"> {
  let summary = "MInference's vertical-slash: top key columns and diagonals";
  let description = [{
    Chosen per head and input: the scores of the last `last_q` queries
    against the keys at or before their positions (softmax per query at
    the call's scale) are summed per key column and per diagonal
    `d = k - p` (`-(Nk - 1) <= d <= 0`); the head keeps the `vertical`
    columns and the `slash` diagonals of largest total. The first
    `first_columns` columns and the `last_diagonals` diagonals nearest the
    query (`-last_diagonals < d <= 0`) are always among them, whatever
    their scores: they count towards `vertical` and `slash`, as in
    MInference, which forces 30 columns and 100 diagonals, so the head
    keeps `max(vertical, first_columns)` columns and `max(slash,
    last_diagonals)` diagonals, each at most `Nk` (a budget above `Nk`
    keeps them all: `slash >= Nk` keeps every key at or before the query).
    Ties go to the smaller column index and to the diagonal nearer the
    query. The selected set is not known before the input is: `isStatic()`
    is false, and the pattern needs an index-building step
    (docs/patterns.md). `last_q >= 1`; at least one of `vertical`,
    `slash`, `first_columns` and `last_diagonals` is positive (the forced
    entries alone are an index: `last_q = 1, first_columns = 4` keeps
    columns 0-3).

    ```mlir
    attn.heads [0] = #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>
    attn.heads [1] = #attn.intersect<#attn.causal,
        #attn.vertical_slash<last_q = 64, vertical = 500, slash = 2000,
                             first_columns = 4, last_diagonals = 64>>
    ```
  }];
  let parameters = (ins "int64_t":$last_q, Attn_DefaultZero<"key columns kept">:$vertical,
    Attn_DefaultZero<"diagonals kept">:$slash,
    Attn_DefaultZero<"first key columns always kept">:$first_columns,
    Attn_DefaultZero<"diagonals nearest the query always kept">:$last_diagonals);
}

def Attn_BlockTopkAttr : Attn_DynamicAttr<"BlockTopk", "block_topk"> {
  let summary = "Adaptive block top-k (FlexPrefill, SpargeAttn)";
  let description = [{
    Chosen per head, query block and input: queries and keys are mean-pooled
    over `block`-token blocks; per query block the pooled scores against
    all key blocks are turned into a softmax (at the call's scale), and
    the query block keeps
    the fewest key blocks (largest first) whose mass reaches `gamma`,
    clamped to `[min_blocks, max_blocks]` (`max_blocks = 0`: no upper
    bound), or exactly the `top_k` largest. With `tau > 0`, FlexPrefill's
    per-head choice: when the Jensen-Shannon distance between the pooled
    distribution and the one estimated from the last query block exceeds
    `tau`, the head uses vertical-slash budgets reaching `gamma` instead of
    query-aware blocks. Ties go to the smaller key block. Exactly one of
    `gamma` (in (0, 1]) and `top_k` (>= 1) is given; `block` in [1, 1024];
    `tau` in [0, 1], and `min_blocks` and `max_blocks`, only with `gamma`
    (`top_k` keeps exactly `top_k` blocks).

    ```mlir
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 0.9, min_blocks = 2, max_blocks = 256>
    attn.heads [1] = #attn.block_topk<block = 64, top_k = 16>
    attn.heads [2] = #attn.block_topk<block = 128, gamma = 0.95, tau = 0.1>
    ```
  }];
  let parameters = (ins "int64_t":$block,
    Attn_RealParameter<"softmax mass to cover (0: use top_k)">:$gamma,
    Attn_DefaultZero<"fixed number of key blocks (0: use gamma)">:$top_k,
    Attn_DefaultZero<"fewest key blocks per query block">:$min_blocks,
    Attn_DefaultZero<"most key blocks per query block (0: no bound)">:$max_blocks,
    Attn_RealParameter<"FlexPrefill's Jensen-Shannon threshold (0: off)">:$tau);
}

def Attn_RoutingAttr : Attn_DynamicAttr<"Routing", "routing"> {
  let summary = "Routing Transformer clusters: attend within your cluster";
  let description = [{
    Chosen per head and input: queries and keys are assigned to the nearest
    of `clusters` centroids (by dot product, unscaled; ties to the smaller
    centroid index), and a query attends to the keys of its own cluster.
    The centroids come from the engine (a tensor passed with the call,
    finite) when `kmeans_iterations = 0`, else from that many k-means
    iterations on the keys at run time, seeded with evenly spaced keys
    (each iteration moves a centroid to the mean of its keys; one left
    without keys keeps its previous value). Executed by permuting
    tokens by cluster into contiguous segments, block-diagonal attention
    over the segments, and the inverse permutation of the output. Compose
    with causal through `#attn.intersect`. `clusters` in [1, 65536],
    `kmeans_iterations` in [0, 100].

    ```mlir
    attn.heads [0] = #attn.routing<clusters = 16>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.routing<clusters = 8, kmeans_iterations = 3>>
    ```
  }];
  let parameters = (ins "int64_t":$clusters,
    Attn_DefaultZero<"k-means iterations on the keys (0: the engine's centroids)">:$kmeans_iterations);
}

def Attn_BlockIndexAttr : Attn_DynamicAttr<"BlockIndex", "block_index"> {
  let summary = "A block mask the engine passes with each call (CSR)";
  let description = [{
    Chosen by the caller per call, batch entry and head: an index computed
    outside Tessera (Sparsifiner's or SpargeAttn's predictors, LongHeads'
    chunk choice, FlashInfer's BSR, FlexAttention's BlockMask) is passed
    with the call as compressed sparse rows: per query block the sorted key
    blocks it may see. Row `q` may attend key `k` when `floor(k / block_k)`
    is listed in the row of its query block `floor(p / block_q)` (blocks of
    positions `p = q + Nk - Nq`, like `block_sparse` and `block_topk`).
    Composes with the static patterns through the combinators
    (`#attn.intersect<#attn.causal, #attn.block_index<...>>` keeps the
    causal pairs of the listed blocks). `block_q` and `block_k` are
    multiples of 64 in [64, 1024] (whole key tiles of the kernels).
    docs/runtime.md gives the layout of the index in a call.

    ```mlir
    attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
    attn.heads [1] = #attn.intersect<#attn.causal,
        #attn.block_index<block_q = 128, block_k = 64>>
    ```
  }];
  let parameters = (ins
    AttrParameter<"int64_t", "positions per query block">:$block_q,
    AttrParameter<"int64_t", "keys per key block">:$block_k);
}

//===----------------------------------------------------------------------===//
// Combinators
//===----------------------------------------------------------------------===//

class Attn_SetOpAttr<string name, string attrMnemonic>
    : Attn_PatternAttr<name, attrMnemonic, ["isHeadDependent", "isStatic"]> {
  let parameters = (ins
    ArrayRefParameter<"::tessera::attn::PatternAttrInterface",
                      "the combined patterns">:$patterns);
  // Parts are parsed through a depth guard: at most 64 nested combinators.
  let assemblyFormat = "`<` custom<Parts>($patterns) `>`";
  let genVerifyDecl = 1;
}

def Attn_UnionAttr : Attn_SetOpAttr<"Union", "union"> {
  let summary = "Pairs allowed by any of the patterns";
  let description = [{
    ```mlir
    attn.heads [0] = #attn.union<#attn.sink<4>, #attn.window<before = 512>>
    ```
  }];
}

def Attn_IntersectAttr : Attn_SetOpAttr<"Intersect", "intersect"> {
  let summary = "Pairs allowed by all of the patterns";
  let description = [{
    ```mlir
    attn.heads [0] = #attn.intersect<#attn.strided_shards<shards = 4>, #attn.causal>
    ```
  }];
}

def Attn_DifferenceAttr
    : Attn_PatternAttr<"Difference", "difference",
                       ["isHeadDependent", "isStatic"]> {
  let summary = "Pairs allowed by the first pattern and not by the second";
  let description = [{
    ```mlir
    attn.heads [0] = #attn.difference<#attn.causal, #attn.window<before = 128>>
    ```
  }];
  let parameters = (ins "::tessera::attn::PatternAttrInterface":$lhs,
                        "::tessera::attn::PatternAttrInterface":$rhs);
  let assemblyFormat = "`<` custom<Part>($lhs) `,` custom<Part>($rhs) `>`";
}

//===----------------------------------------------------------------------===//
// Layouts: token permutations of a head group (--attn-permute)
//===----------------------------------------------------------------------===//

def Attn_PeriodTransposeAttr
    : AttrDef<Attn_Dialect, "PeriodTranspose"> {
  let mnemonic = "period_transpose";
  let summary = "A token permutation: tokens sorted by their position mod P";
  let description = [{
    A layout, not a pattern: the order in which a head group's queries and
    keys are tiled. Token `t` of a sequence of `N` tokens moves to

    `slot(t) = (t mod P) * q + min(t mod P, r) + t div P`, `N = q * P + r`,

    i.e. tokens are sorted stably by their residue mod `P`; when `P` divides
    `N` this is `(t mod P) * (N / P) + t div P`, the transpose of the
    `(N / P) x P` matrix of tokens (a video's frames x pixels becomes
    pixels x frames). Queries and keys are permuted alike, each over its own
    length. Patterns are still evaluated on the original positions: the
    permutation changes which pairs share a tile (diagonals a period apart
    become a contiguous band), never which pairs are allowed.
    `--attn-permute` chooses it; `period >= 2`.

    With `prefix = S` (a segment grouping, MMInference's text + frames
    layout) the first `S` tokens (a prompt) keep their places and only the
    segment after them is transposed, on its own positions:
    `slot(t) = t` for `t < S`, else `S + slot'(t - S)` with `slot'` the
    transpose above over the `N - S` tokens of the segment. `prefix >= 0`
    (0, the default, is printed as nothing).

    With `kept = [a0, b0, a1, b1, ...]` (interleaved modalities: several
    text segments between video frames) the tokens of the kept ranges
    `[a_i, b_i)` come first, in their order, and the remaining tokens (the
    frames of every video segment) follow, sorted stably by their original
    residue `(t - e) mod P`, `e` the first token not kept (`0`, or `b0`
    when `a0 = 0`): the tokens of one residue in every video segment sit
    together, whatever text lies between the segments. Each range is
    clipped to the sequence (`[min(a_i, N), min(b_i, N))`), so the
    permutation is a bijection of `[0, N)` for every `N`. The ranges are
    non-empty, sorted,
    disjoint and not touching, at most 64 of them (`kMaxKeptRanges`);
    `kept = [0, S]` is spelled `prefix = S`, and `prefix` and `kept` are
    not given together.

    ```mlir
    attn.group 0 heads [0 to 5] = #attn.multi_diagonal<stride = 1024, width = 32>
        layout #attn.period_transpose<period = 1024>
    attn.group 1 heads [6] = #attn.union<#attn.vertical_stripe<ranges = [0, 256]>, ...>
        layout #attn.period_transpose<period = 1024, prefix = 256>
    attn.group 2 heads [7] = #attn.union<#attn.vertical_stripe<ranges = [0, 200, 2248, 2348]>, ...>
        layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]>
    ```
  }];
  let parameters = (ins "int64_t":$period,
                        DefaultValuedParameter<"int64_t", "0">:$prefix,
                        Attn_I64ListParameter<
                            "[begin, end) pairs of the tokens kept first">:$kept);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_TD
