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

    With `target=` (a built-in target, `a100`, `h100`, `h200`, or a target
    file, docs/cost-model.md) it also prints the cost model's prediction:
    per head group its full and partial tiles and its work (the sum of its
    work items' times), per layer the predicted time of the launch against
    the same layer dense. Densities are counted only up to
    q-len * k-len <= 2^28; predictions work at any length.

    ```
    attn-opt patterns/llama3-8b-sparse.mlir --attn-report="q-len=4096" -o /dev/null
    attn-opt patterns/video-dit.mlir --attn-report="q-len=131072 target=h100" -o /dev/null
    ```
  }];
  let options = [
    Option<"qLen", "q-len", "int64_t", "4096", "query length Nq">,
    Option<"kLen", "k-len", "int64_t", "0",
           "key length Nk (0: the same as q-len)">,
    Option<"target", "target", "std::string", "\"\"",
           "predict times on this target (a100, h100, h200 or a file)">,
    Option<"batch", "batch", "int64_t", "1",
           "sequences per launch, for the prediction">,
  ];
  let dependentDialects = ["::tessera::attn::AttnDialect"];
}

def AttnSelect : Pass<"attn-select", "::mlir::ModuleOp"> {
  let summary = "Pick each head's cheapest pattern that meets a recall floor";
  let description = [{
    Rewrites every `attn.layer` from a calibration file (written by
    `attn-calibrate accuracy`, docs/cost-model.md): for each head, the
    candidates whose measured recall (share of the dense softmax mass kept)
    is at least `min-recall` and whose output error is at most `max-error`
    are feasible, and the one with the least predicted work on `target` is
    chosen. Then head groups are merged where one feasible pattern serves
    both and the predicted layer time does not grow; a layer whose
    predicted time is not below the calibration's reference pattern (by
    `min-gain`) keeps the reference for every head. A head is skipped only
    when `skip-below` > 0 and its measured contribution is below it. A head
    with no feasible candidate keeps the reference with a warning (or, with
    `fallback=error`, the pass fails). Each layer's predicted output error
    (the relative Frobenius error over all its heads, skipped ones
    included, on the calibration sample) must stay within
    `max-layer-error`: where the per-head choices together pass it, heads
    move to more accurate candidates (or the reference), those that add the
    least work per unit of squared error removed first, and merges keep it.
    The result is an ordinary pattern file. Remarks report each layer's
    choice, its predicted time and its predicted error.

    ```
    attn-opt model.mlir --attn-select="target=cpu.json calibration=calib.json seq-len=8192 min-recall=0.95"
    ```
  }];
  let options = [
    Option<"target", "target", "std::string", "\"\"",
           "target (a100, h100, h200 or a target file)">,
    Option<"calibration", "calibration", "std::string", "\"\"",
           "calibration file (attn-calibrate accuracy)">,
    Option<"seqLen", "seq-len", "int64_t", "0",
           "sequence length the times are predicted at (0: the "
           "calibration's)">,
    Option<"batch", "batch", "int64_t", "1", "sequences per launch">,
    Option<"minRecall", "min-recall", "double", "0.95",
           "recall floor: mean share of the dense softmax mass kept">,
    Option<"maxError", "max-error", "double", "1.0",
           "ceiling of the relative output error ||O - O_dense|| / "
           "||O_dense||">,
    Option<"maxLayerError", "max-layer-error", "double", "0.1",
           "ceiling of the layer's predicted relative output error over "
           "all heads, skipped heads included (docs/cost-model.md)">,
    Option<"skipBelow", "skip-below", "double", "0.0",
           "skip heads whose contribution is below this (0: never)">,
    Option<"minGain", "min-gain", "double", "0.0",
           "keep the reference unless sparse is predicted at least this "
           "share faster">,
    Option<"fallback", "fallback", "std::string", "\"reference\"",
           "a head no candidate serves: 'reference' (warn) or 'error'">,
  ];
  let dependentDialects = ["::tessera::attn::AttnDialect"];
}

def AttnFuseHeads : Pass<"attn-fuse-heads", "::mlir::ModuleOp"> {
  let summary = "Regroup each layer's heads by identical masks";
  let description = [{
    Rewrites the `attn.heads` ops of every layer so that each op holds
    exactly the heads whose masks are identical at every length: heads with
    the same head-independent pattern are merged; heads of a head-dependent
    pattern are split by what their mask depends on (the shard a head sees,
    whether its groups are shifted). Groups are ordered by their first head.
    These are the launch groups `--attn-schedule` produces.
  }];
}

def AttnSchedule : Pass<"attn-schedule", "::mlir::ModuleOp"> {
  let summary = "Lower every layer to a block schedule (L0 to L1)";
  let description = [{
    Replaces each `attn.layer` with an `attn.schedule` for tiles of
    `block-q` queries by `block-k` keys: heads are fused into launch groups
    (as `--attn-fuse-heads` does) and skipped heads are listed apart. Every
    pattern must be static and lower to a kernel program (nesting within the
    kernel's evaluation stack); otherwise the pass fails with an error at
    the pattern.
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", "64", "queries per tile">,
    Option<"blockK", "block-k", "int64_t", "64", "keys per tile">,
  ];
}

def AttnLowerRuns : Pass<"attn-lower-runs", "::mlir::ModuleOp"> {
  let summary = "Show each head group's key-block runs in closed form (L1)";
  let description = [{
    Fills the region of every `attn.group` of a block schedule with the run
    expression the CUDA emitter generates code from: for a query block whose
    rows have the aligned positions p0 to p1, the runs of key blocks it
    visits, each FULL or PARTIAL, as closed forms (`attn.run_interval`
    bounds affine in p0 and p1, periodic and listed families, shards,
    groups, listed blocks) combined by `attn.run_union`,
    `attn.run_intersect` and `attn.run_difference` after simplification
    (an intersection of intervals is one interval). Intervals also show
    their key blocks for query block `i` when `block_q` is a multiple of
    `block_k` (Nq = Nk). A static group's runs are followed by their
    transpose (`attn.run_transposed`): for a key block with keys k0 to k1,
    the runs of query blocks that see it, which the backward walks. Existing
    run regions are replaced.

    ```
    attn-opt patterns/video-dit.mlir --attn-schedule --attn-lower-runs
    ```
  }];
  let dependentDialects = ["::tessera::attn::AttnDialect"];
}

def AttnPermute : Pass<"attn-permute", "::mlir::ModuleOp"> {
  let summary = "Give head groups a token layout where it pays (period transposes)";
  let description = [{
    Runs on block schedules (after `--attn-schedule`). For every static head
    group it considers the period transposes its pattern suggests
    (`#attn.period_transpose<period = P>` for the stride of a
    `multi_diagonal` (the gcd of its offsets when listed), the stride of a
    `grid`, `shards * block` of `strided_shards`, and the period of a
    periodic `vertical_stripe` or `horizontal_stripe`, anywhere in its
    combinator tree; 2 <= P <= seq-len / 2) and sets the group's `layout`
    to the best one when it pays. Patterns keep their meaning on the
    original positions: only which pairs share a tile changes.

    Whether it pays is decided at `Nq = Nk = seq-len` (a representative
    length; the schedule itself holds none) at the schedule's tile sizes:
    the visited tiles of the group in the original order and in each
    permuted order are counted exactly (every pair's predicate, on original
    positions, counted into the tile its permuted row and key fall in), each
    FULL (every pair allowed) or PARTIAL. A head's work is full and partial
    tiles at `target`'s tile times (docs/cost-model.md; scaled to the
    schedule's tile area and the layer's head_dim as the cost model does);
    a permutation adds its gather: Q, K and V rows gathered and O scattered
    back, four row blocks' moves (`row_block_s`) per `block_q` of the
    target's rows. The best permutation is chosen when its work plus gather
    is below the original work by at least `min-gain` (a share). Existing
    layouts are decided afresh. With `report` the counts and works of every
    considered layout are printed.

    ```
    attn-opt patterns/video-dit.mlir --attn-schedule --attn-permute="seq-len=16384 report=true"
    ```
  }];
  let options = [
    Option<"seqLen", "seq-len", "int64_t", "4096",
           "sequence length (Nq = Nk) the tiles are counted at">,
    Option<"target", "target", "std::string", "\"h100\"",
           "target whose tile times weigh full and partial tiles">,
    Option<"minGain", "min-gain", "double", "0.05",
           "permute only when the predicted work drops by this share">,
    Option<"report", "report", "bool", "false",
           "print each group's tile counts and works per layout">,
  ];
  let dependentDialects = ["::tessera::attn::AttnDialect"];
}

#endif // TESSERA_TRANSFORMS_PASSES_TD
