//===- AttnOps.td - attn dialect operations ----------------*- tablegen -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNOPS_TD
#define TESSERA_DIALECT_ATTN_ATTNOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "tessera/Dialect/Attn/AttnDialect.td"
include "tessera/Dialect/Attn/AttnInterfaces.td"

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

    Head indices are distinct and within the layer's `heads`. The
    canonicalizer simplifies the pattern (see `docs/patterns.md`); the
    simplified pattern allows exactly the same pairs.
  }];
  let arguments = (ins DenseI64ArrayAttr:$heads,
                       Attn_PatternAttrInterface:$pattern);
  let assemblyFormat = "$heads `=` $pattern attr-dict";
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
    `skipped` `=` $skipped attr-dict-with-keyword $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getBlockQ() { return getBlock()[0]; }
    int64_t getBlockK() { return getBlock()[1]; }
  }];
}

def Attn_GroupOp : Attn_Op<"group", [HasParent<"ScheduleOp">]> {
  let summary = "A launch group: heads sharing one block schedule";
  let description = [{
    ```mlir
    attn.group 0 heads [0, 8] = #attn.strided_shards<shards = 8>
    ```
    Group ids are 0, 1, 2, ... in order. The heads of a group have identical
    masks; the pattern is never `#attn.skip`.
  }];
  let arguments = (ins Attn_I64Attr:$id, DenseI64ArrayAttr:$heads,
                       Attn_PatternAttrInterface:$pattern);
  let assemblyFormat = "$id `heads` $heads `=` $pattern attr-dict";
}

#endif // TESSERA_DIALECT_ATTN_ATTNOPS_TD
