//===- AttnOps.td - attn dialect operations ----------------*- tablegen -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNOPS_TD
#define TESSERA_DIALECT_ATTN_ATTNOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "tessera/Dialect/Attn/AttnDialect.td"
include "tessera/Dialect/Attn/AttnInterfaces.td"
include "tessera/Dialect/Attn/AttnAttributes.td"

/// A 64-bit integer attribute read as a signed value, so that negative
/// numbers in a pattern file reach the verifier as what they are.
def Attn_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t",
                                                "64-bit integer attribute">;

class Attn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Attn_Dialect, mnemonic, traits>;

def Attn_ModelOp : Attn_Op<"model", [Symbol, IsolatedFromAbove, NoTerminator,
                                     SingleBlock, NoRegionArguments]> {
  let summary = "A model: the attention layers of one network";
  let description = [{
    Holds `attn.layer` ops (L0) or `attn.schedule` ops (L1), each with a
    distinct layer index. A pattern file holds one or more models.

    ```mlir
    attn.model @llama_tiny {
      attn.layer 0 heads = 2 kv_heads = 1 head_dim = 128 dtype = f16 {
        attn.heads [0, 1] = #attn.causal
      }
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
}

def Attn_LayerOp : Attn_Op<"layer", [HasParent<"ModelOp">, NoTerminator,
                                     SingleBlock, NoRegionArguments]> {
  let summary = "One attention layer: its shape and the pattern of each head";
  let description = [{
    `heads` query heads read `kv_heads` key/value heads (grouped-query
    attention: query head `h` reads kv head `h / (heads / kv_heads)`), each of
    `head_dim` elements of type `dtype` (f16, bf16 or f32). The body holds
    `attn.heads` ops that together give every query head exactly one pattern.

    ```mlir
    attn.layer 3 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
      attn.heads [0, 1, 2, 3] = #attn.dense
      ...
    }
    ```
  }];
  let arguments = (ins Attn_I64Attr:$index, Attn_I64Attr:$num_heads,
                       Attn_I64Attr:$num_kv_heads, Attn_I64Attr:$head_dim,
                       TypeAttr:$dtype);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $index `heads` `=` $num_heads `kv_heads` `=` $num_kv_heads
    `head_dim` `=` $head_dim `dtype` `=` $dtype attr-dict-with-keyword $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    /// Returns the pattern of query head `head`, or null if none is given.
    ::tessera::attn::PatternAttrInterface getHeadPattern(int64_t head);
  }];
}

def Attn_HeadsOp : Attn_Op<"heads", [HasParent<"LayerOp">]> {
  let summary = "Assigns one pattern to a set of query heads";
  let description = [{
    ```mlir
    attn.heads [0, 1, 2, 3] = #attn.a_shape<sink = 4, before = 1024>
    ```

    A head list holds head indices and inclusive ranges `a to b`, in any
    mix: `[0 to 31]` is the 32 heads 0, 1, ..., 31, `[0 to 3, 8, 12 to 15]`
    nine heads. Ranges expand to at most 4096 heads; the printer writes
    every run of three or more consecutive heads as a range.
    Head indices are distinct and within the layer's `heads`. The
    canonicalizer simplifies the pattern (see `docs/patterns.md`); the
    simplified pattern allows exactly the same pairs.
  }];
  let arguments = (ins DenseI64ArrayAttr:$heads,
                       Attn_PatternAttrInterface:$pattern);
  let assemblyFormat = "custom<HeadList>($heads) `=` $pattern attr-dict";
  let hasVerifier = 1;
  let hasCanonicalizeMethod = 1;
}

//===----------------------------------------------------------------------===//
// L1: block schedules
//===----------------------------------------------------------------------===//

def Attn_ScheduleOp : Attn_Op<"schedule", [HasParent<"ModelOp">, NoTerminator,
                                           SingleBlock, NoRegionArguments]> {
  let summary = "A layer lowered to a block schedule (L1)";
  let description = [{
    Produced by `--attn-schedule`. A layer's query heads are fused into
    launch groups (`attn.group`): heads whose masks are identical at every
    length share one group and one schedule. Each group's pattern is
    evaluated per tile of `block_q` queries by `block_k` keys by the
    closed-form functions of `runtime/include/tessera/kernel/Program.h`
    (`classifyTile`, `keyHull`), so the schedule's size does not depend on
    the sequence lengths, which stay runtime values. One launch serves every
    group of the layer through a per-head dispatch table; the heads listed in
    `skipped` get no thread block at all (their output is defined as 0 and
    their LSE as -inf).

    ```mlir
    attn.schedule 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16
        block = [64, 64] skipped = [3] {
      attn.group 0 heads [0, 1] = #attn.causal
      attn.group 1 heads [2] = #attn.window<before = 256>
    }
    ```
  }];
  let arguments = (ins Attn_I64Attr:$index, Attn_I64Attr:$num_heads,
                       Attn_I64Attr:$num_kv_heads, Attn_I64Attr:$head_dim,
                       TypeAttr:$dtype, DenseI64ArrayAttr:$block,
                       DenseI64ArrayAttr:$skipped);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $index `heads` `=` $num_heads `kv_heads` `=` $num_kv_heads
    `head_dim` `=` $head_dim `dtype` `=` $dtype `block` `=` $block
    `skipped` `=` custom<HeadList>($skipped) attr-dict-with-keyword $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getBlockQ() { return getBlock()[0]; }
    int64_t getBlockK() { return getBlock()[1]; }
  }];
}

def Attn_GroupOp : Attn_Op<"group", [HasParent<"ScheduleOp">, NoTerminator,
                                     SingleBlock, NoRegionArguments]> {
  let summary = "A launch group: heads sharing one block schedule";
  let description = [{
    ```mlir
    attn.group 0 heads [0, 8] = #attn.strided_shards<shards = 8>
    ```
    Group ids are 0, 1, 2, ... in order. The heads of a group have identical
    masks; the pattern is never `#attn.skip`.

    After `--attn-lower-runs` the group's region holds its run expression:
    the runs of key blocks each query block visits, in closed form (see the
    `attn.run_*` ops). The CUDA emitter generates each group's code from its
    pattern and checks it against these ops when they are present.

    ```mlir
    attn.group 0 heads [0] = #attn.window<before = 256> runs {
      attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0]
          blocks [i - 4, i] full [i - 3, i - 1]
      attn.run_transposed {
        attn.run_positions [k0, k1 + 256] full [k1, k0 + 256]
            blocks [j, j + 4] full [j + 1, j + 3]
      }
    }
    ```

    A static group's region may end with an `attn.run_transposed`: the
    transposed schedule the backward walks (for each key block, the runs of
    query blocks that see it).

    The optional `layout` (set by `--attn-permute`) is the token
    permutation the group's queries and keys are tiled in, in closed form
    (`#attn.period_transpose`). The pattern is still evaluated on the
    original positions, so the group's output is the same with or without
    it; the layout only changes which pairs share a tile. Only static
    patterns take a layout.

    ```mlir
    attn.group 0 heads [0 to 5] = #attn.multi_diagonal<stride = 1024, width = 32>
        layout #attn.period_transpose<period = 1024>
    ```
  }];
  let arguments = (ins Attn_I64Attr:$id, DenseI64ArrayAttr:$heads,
                       Attn_PatternAttrInterface:$pattern,
                       OptionalAttr<Attn_PeriodTransposeAttr>:$layout);
  let regions = (region AnyRegion:$runs);
  let builders = [
    // A group in the original token order (no layout).
    OpBuilder<(ins "int64_t":$id, "::llvm::ArrayRef<int64_t>":$heads,
                   "::tessera::attn::PatternAttrInterface":$pattern), [{
      build($_builder, $_state, id, heads, pattern,
            ::tessera::attn::PeriodTransposeAttr());
    }]>
  ];
  let assemblyFormat = "$id `heads` custom<HeadList>($heads) `=` $pattern (`layout` qualified($layout)^)? (`runs` $runs^)? attr-dict";
  let hasRegionVerifier = 1;
}

//===----------------------------------------------------------------------===//
// L1 runs: the key-block runs of a head group, in closed form
//===----------------------------------------------------------------------===//

/// Ops that hold run expressions: a group and the run combinators.
defvar Attn_RunParents = ["GroupOp", "RunUnionOp", "RunIntersectOp",
                          "RunDifferenceOp", "RunTransposedOp"];

class Attn_RunOp<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat([ParentOneOf<Attn_RunParents>], traits)>;

class Attn_RunCombinatorOp<string mnemonic, string what>
    : Attn_RunOp<mnemonic, [NoTerminator, SingleBlock, NoRegionArguments]> {
  let summary = "The " # what # " of the runs of the ops in its region";
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
}

def Attn_RunIntervalOp : Attn_RunOp<"run_interval"> {
  let summary = "Runs of one key interval affine in the query block";
  let description = [{
    For the query block whose rows have the aligned positions `p0` (first
    row) to `p1` (last row), the keys `keys [lo, hi]` are seen by some row
    (each of them by at least one) and the keys `full [flo, fhi]` by every
    row. A bound is a constant, `p0 + c`, `p1 + c`, or the `max` (lower
    bounds) or `min` (upper bounds) of such terms; keys are clipped to
    [0, Nk), so a lower bound `0` is also the unbounded one and an upper
    bound `end` is Nk - 1. Key blocks inside `full` are FULL tiles (no mask),
    the other key blocks meeting `keys` PARTIAL.

    The optional `blocks [..] full [..]` is the same in key blocks for query
    block `i` of a sequence with Nq = Nk, when `block_q` is a multiple of
    `block_k`; the verifier checks it against the keys.

    ```mlir
    attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0]
        blocks [i - 4, i] full [i - 3, i - 1]
    ```
  }];
  let arguments = (ins DenseI64ArrayAttr:$keys_lo, DenseI64ArrayAttr:$keys_hi,
                       DenseI64ArrayAttr:$full_lo, DenseI64ArrayAttr:$full_hi,
                       OptionalAttr<DenseI64ArrayAttr>:$blocks_lo,
                       OptionalAttr<DenseI64ArrayAttr>:$blocks_hi,
                       OptionalAttr<DenseI64ArrayAttr>:$full_blocks_lo,
                       OptionalAttr<DenseI64ArrayAttr>:$full_blocks_hi);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The block form for tiles of block_q x block_k (block_q a multiple of
    /// block_k), as (coefficient of i, constant) pairs, in the order
    /// blocks_lo, blocks_hi, full_blocks_lo, full_blocks_hi.
    static ::llvm::SmallVector<::llvm::SmallVector<int64_t>, 4>
    deriveBlocks(::llvm::ArrayRef<int64_t> keysLo,
                 ::llvm::ArrayRef<int64_t> keysHi,
                 ::llvm::ArrayRef<int64_t> fullLo,
                 ::llvm::ArrayRef<int64_t> fullHi, int64_t blockQ,
                 int64_t blockK);
  }];
}

def Attn_RunPeriodicOp : Attn_RunOp<"run_periodic"> {
  let summary = "Runs of a periodic set of keys, offsets or rows";
  let description = [{
    The values x of the axis ("key": k, "diagonal": d = k - p, "row": p)
    with `(x - phase) mod period < width`: every occurrence is an interval
    (a key interval, a band of offsets, or all keys for the rows it holds),
    enumerated from the first one reaching the current key block, so a walk
    costs O(occurrences visited).

    ```mlir
    attn.run_periodic "diagonal" period = 1024 width = 65 phase = -32
    ```
  }];
  let arguments = (ins StrAttr:$axis, Attn_I64Attr:$period,
                       Attn_I64Attr:$width, Attn_I64Attr:$phase);
  let assemblyFormat = [{
    $axis `period` `=` $period `width` `=` $width `phase` `=` $phase attr-dict
  }];
  let hasVerifier = 1;
}

def Attn_RunListedOp : Attn_RunOp<"run_listed"> {
  let summary = "Runs of listed ranges of keys, offsets or rows";
  let description = [{
    `ranges` are sorted, disjoint half-open [begin, end) pairs on the axis
    ("key", "diagonal" or "row"); a walk finds the first range reaching the
    current key block by binary search. Short lists are lowered to unions of
    `attn.run_interval` instead.

    ```mlir
    attn.run_listed "key" ranges = [0, 8, 16, 20, 64, 70, 100, 104, 200, 204]
    ```
  }];
  let arguments = (ins StrAttr:$axis, DenseI64ArrayAttr:$ranges);
  let assemblyFormat = "$axis `ranges` `=` $ranges attr-dict";
  let hasVerifier = 1;
}

def Attn_RunShardsOp : Attn_RunOp<"run_shards"> {
  let summary = "Runs of a head's strided shard of key blocks";
  let description = [{
    The keys of shard `(head + offset) mod shards` of blocks of `block`
    keys: a periodic set of keys whose phase depends on the head.

    ```mlir
    attn.run_shards block = 64 shards = 8 offset = 0
    ```
  }];
  let arguments = (ins Attn_I64Attr:$block, Attn_I64Attr:$shards,
                       Attn_I64Attr:$offset);
  let assemblyFormat = [{
    `block` `=` $block `shards` `=` $shards `offset` `=` $offset attr-dict
  }];
}

def Attn_RunGroupsOp : Attn_RunOp<"run_groups"> {
  let summary = "Runs of shifted groups: the keys of the query block's groups";
  let description = [{
    The rows of a query block span groups g0 to g1 (groups of `size`
    positions, shifted by `shift` in the upper half of the heads): they see
    the keys of those groups, and every row sees them only when g0 = g1.

    ```mlir
    attn.run_groups size = 4096 shift = 2048
    ```
  }];
  let arguments = (ins Attn_I64Attr:$size, Attn_I64Attr:$shift);
  let assemblyFormat = "`size` `=` $size `shift` `=` $shift attr-dict";
}

def Attn_RunBlocksOp : Attn_RunOp<"run_blocks"> {
  let summary = "Runs of listed (query block, key block) pairs";
  let description = [{
    The listed blocks of a block-sparse pattern (in its own block sizes),
    looked up per row of pattern blocks the query block covers; one run per
    visited tile.

    ```mlir
    attn.run_blocks block_q = 64 block_k = 64 blocks = [0, 0, 1, 0, 1, 1]
    ```
  }];
  let arguments = (ins Attn_I64Attr:$block_q, Attn_I64Attr:$block_k,
                       DenseI64ArrayAttr:$blocks);
  let assemblyFormat = [{
    `block_q` `=` $block_q `block_k` `=` $block_k `blocks` `=` $blocks attr-dict
  }];
}

def Attn_RunAllOp : Attn_RunOp<"run_all"> {
  let summary = "Every key block, FULL";
  let assemblyFormat = "attr-dict";
}

def Attn_BuildIndexOp : Attn_RunOp<"build_index"> {
  let summary = "The run-time step of a dynamic pattern: build its index";
  let description = [{
    Where a head group's pattern holds a dynamic leaf (`vertical_slash`,
    `block_topk`, `routing`, `block_index`), `--attn-lower-runs` puts this
    op in its place:
    at run time, per head and input, the index is built from Q and K
    (docs/patterns.md, "Dynamic patterns") and the key blocks it selects
    are visited, combined with the static parts' runs as the surrounding
    `attn.run_*` combinators say. `layout` names the index the builder
    writes:

    * `"columns_and_diagonals"` (vertical_slash): kept key columns and
      diagonals; per query block the diagonals' merged key ranges are read
      contiguously and the remaining columns gathered;
    * `"block_lists"` (block_topk): per query block its key blocks;
      block_index reads the caller's lists of that layout instead of
      building them;
    * `"segments"` (routing): tokens permuted by cluster into contiguous
      segments, block-diagonal over the segments, the output permuted back.

    All its key blocks are PARTIAL (masked by the index). The CPU library
    (tessera/cpu/Dynamic.h) builds and runs these indices; bundles and the
    CUDA emitter do not take them yet.

    ```mlir
    attn.group 0 heads [0 to 3] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>> runs {
      attn.run_intersect {
        attn.run_interval keys [0, p1] full [0, p0] blocks [0, i] full [0, i - 1]
        attn.build_index #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096> layout "columns_and_diagonals"
      }
    }
    ```
  }];
  let arguments = (ins Attn_PatternAttrInterface:$pattern, StrAttr:$layout);
  let assemblyFormat = "$pattern `layout` $layout attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The layout the index of `pattern` has, or "" if it is not a dynamic
    /// leaf.
    static ::llvm::StringRef layoutFor(
        ::tessera::attn::PatternAttrInterface pattern);
  }];
}

def Attn_RunTransposedOp : Attn_Op<"run_transposed", [HasParent<"GroupOp">,
    NoTerminator, SingleBlock, NoRegionArguments]> {
  let summary = "The transposed schedule: the query blocks each key block meets";
  let description = [{
    Follows a static group's forward runs. Its one run expression is walked
    per key block, whose keys are `k0` to `k1`, and yields runs of query
    blocks, each FULL or PARTIAL (the backward's key-major pass). Inside it
    the run ops keep their sets and change their walk:

    * `attn.run_positions`: the query positions (p = q + Nk - Nq) that see
      some key of the block, and those that see all of them, affine in
      `k0` and `k1` (an offset band d = k - p in [a, b] gives
      [k0 - b, k1 - a], full [k1 - b, k0 - a]);
    * key sets (`attn.run_listed "key"`, `attn.run_periodic "key"`,
      `attn.run_shards`) are one class for the whole key block: every
      query block FULL, every one PARTIAL, or none;
    * row sets (`"row"`) are walked as runs of positions; offset families
      (`"diagonal"`) as their bands, in reverse order (a larger offset is
      seen by lower positions);
    * `attn.run_groups` is symmetric in (p, k);
    * `attn.run_blocks` lists (key block, query block) pairs: the
      column-major transpose of the forward's list;
    * the combinators combine runs exactly as in the forward.

    ```mlir
    attn.run_transposed {
      attn.run_intersect {
        attn.run_listed "key" ranges = [0, 64]
        attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
      }
    }
    ```
  }];
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
}

def Attn_RunPositionsOp : Attn_RunOp<"run_positions"> {
  let summary = "Transposed runs of one position interval affine in the key block";
  let description = [{
    Only inside `attn.run_transposed`. For the key block with keys `k0` to
    `k1`, the query positions `[lo, hi]` see some of its keys (each of them
    sees at least one) and the positions `full [flo, fhi]` see every one.
    A bound is a constant, `k0 + c`, `k1 + c`, or the `max` (lower bounds)
    or `min` (upper bounds) of such terms; `begin` and `end` are the first
    and the last query's positions. Positions become rows
    q = p - (Nk - Nq), clipped to [0, Nq); query blocks inside `full` are
    FULL tiles, the other query blocks meeting `[lo, hi]` PARTIAL.

    The optional `blocks [..] full [..]` is the same in query blocks for
    key block `j` of a sequence with Nq = Nk, when `block_k` is a multiple
    of `block_q`; the verifier checks it against the positions.

    ```mlir
    attn.run_positions [k0, k1 + 256] full [k1, k0 + 256]
        blocks [j, j + 4] full [j + 1, j + 3]
    ```
  }];
  let arguments = (ins DenseI64ArrayAttr:$lo, DenseI64ArrayAttr:$hi,
                       DenseI64ArrayAttr:$full_lo, DenseI64ArrayAttr:$full_hi,
                       OptionalAttr<DenseI64ArrayAttr>:$blocks_lo,
                       OptionalAttr<DenseI64ArrayAttr>:$blocks_hi,
                       OptionalAttr<DenseI64ArrayAttr>:$full_blocks_lo,
                       OptionalAttr<DenseI64ArrayAttr>:$full_blocks_hi);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
}

def Attn_RunUnionOp : Attn_RunCombinatorOp<"run_union", "union"> {
  let description = [{
    A key block is visited when any part visits it, FULL when any part
    calls it FULL. The walk merges the parts' runs in key order. An empty
    union visits nothing.
  }];
}

def Attn_RunIntersectOp : Attn_RunCombinatorOp<"run_intersect",
                                               "intersection"> {
  let description = [{
    A key block is visited when every part visits it, FULL when every part
    calls it FULL. The walk leapfrogs: each part skips to where the others
    are, so its cost follows the smallest part, not the largest.
  }];
}

def Attn_RunDifferenceOp : Attn_RunCombinatorOp<"run_difference",
                                                "difference"> {
  let description = [{
    The first part's runs less the key blocks the second part calls FULL;
    blocks the second part calls PARTIAL become PARTIAL.
  }];
}

#endif // TESSERA_DIALECT_ATTN_ATTNOPS_TD
