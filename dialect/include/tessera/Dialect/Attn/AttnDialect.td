//===- AttnDialect.td - the attn dialect -------------------*- tablegen -*-===//
//
// Part of Tessera. The attn dialect describes which query-key pairs each
// attention head of a model may look at.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_DIALECT_ATTN_ATTNDIALECT_TD
#define TESSERA_DIALECT_ATTN_ATTNDIALECT_TD

include "mlir/IR/OpBase.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let cppNamespace = "::tessera::attn";
  let summary = "Per-head sparse attention patterns";
  let description = [{
    The `attn` dialect is Tessera's pattern IR (level L0). A pattern file holds
    one `attn.model`; a model holds `attn.layer` ops, each with the shape of
    its attention (query heads, key/value heads, head dimension, element
    type); a layer holds `attn.heads` ops that assign one *pattern attribute*
    to a set of query heads. Every head of every layer has exactly one pattern.

    A pattern attribute describes the set of (query, key) pairs a head may
    attend to, for any query length `Nq` and key length `Nk`. Its meaning is
    the predicate `allowed(q, k, head)` written in `docs/patterns.md`. Query
    positions are bottom-right aligned: query row `q` sits at position
    `p(q) = q + Nk - Nq`, as in FlashAttention, so that causal masks stay
    correct when `Nq != Nk`.

    Example:

    ```mlir
    attn.model @tiny {
      attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
        attn.heads [0, 1] = #attn.causal
        attn.heads [2, 3] = #attn.a_shape<sink = 4, before = 256>
      }
    }
    ```
  }];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

#endif // TESSERA_DIALECT_ATTN_ATTNDIALECT_TD
