//===- Passes.td - Tessera passes --------------------------*- tablegen -*-===//

#ifndef TESSERA_TRANSFORMS_PASSES_TD
#define TESSERA_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnReport : Pass<"attn-report", "::mlir::ModuleOp"> {
  let summary = "Print each head group's pattern and its density";
  let description = [{
    Prints, for every model, layer and head group, the heads, the pattern
    and its density: the share of (query, key) pairs it allows at the given
    lengths, counted exactly with the reference semantics. For patterns that
    depend on the head, the smallest and largest density over the group's
    heads are printed. The IR is not changed.

    ```
    attn-opt patterns/llama3-8b-sparse.mlir --attn-report="q-len=4096" -o /dev/null
    ```
  }];
  let options = [
    Option<"qLen", "q-len", "int64_t", "4096", "query length Nq">,
    Option<"kLen", "k-len", "int64_t", "0",
           "key length Nk (0: the same as q-len)">,
  ];
  let dependentDialects = ["::tessera::attn::AttnDialect"];
}

#endif // TESSERA_TRANSFORMS_PASSES_TD
