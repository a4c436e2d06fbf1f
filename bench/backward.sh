#!/usr/bin/env bash
# The CPU backward benchmark of docs/PERFORMANCE.md: for one layer of each
# shipped model and each length, Tessera's backward (cpu::runLayerBackward,
# sparse and with a dense schedule) against PyTorch SDPA's backward (dense,
# and with the same boolean mask up to 8K tokens, whose gradients are
# compared with ours), in one go; fp32, 4 heads, head_dim 128, 2 threads.
# FlexAttention has no CPU backward (torch 2.11): its column says so.
#
#   bench/backward.sh [LENGTHS...]        default: 4096 8192 16384
set -euo pipefail
cd "$(dirname "$0")/.."
lengths=("$@")
[ $# -gt 0 ] || lengths=(4096 8192 16384)
build=${BUILD_DIR:-build}

make -s configure >/dev/null
ninja -C "$build" tessera-cpu-bench >/dev/null
scripts/torch-setup.sh "$build"
venv=$build/bench-venv
dump=$(mktemp -d)
trap 'rm -rf "$dump"' EXIT

cases=(patterns/llama3-8b-sparse.mlir:2 patterns/video-dit.mlir:0
       patterns/s2-strided.mlir:1)
echo "| pattern | len | visited tiles | tessera fwd (s) | tessera bwd (s) | bwd / fwd | tessera dense bwd (s) | bwd speed-up | SDPA dense bwd (s) | SDPA masked bwd (s) | grad err vs SDPA masked | FlexAttention bwd |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
  file=${c%%:*}
  layer=${c##*:}
  for len in "${lengths[@]}"; do
    ours=$("$build/bin/tessera-cpu-bench" "$file" --layer "$layer" --heads 4 \
      --len "$len" --repeats 3 --backward --dump "$dump")
    theirs=$("$venv/bin/python" bench/torch_bench.py "$dump" --threads 2 \
      --repeats 3 2>/dev/null)
    python3 - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
name = o["file"].split("/")[-1].replace(".mlir", "") + f" (layer {o['layer']})"
masked = t.get("sdpa_masked_bwd_s")
err = t.get("sdpa_masked_vs_tessera_grad_rel_err")
flex = t.get("flex_bwd_s")
print(f"| {name} | {o['len']} | {o['tile_density']:.3f} | {o['sparse_s']:.3f} "
      f"| {o['sparse_bwd_s']:.3f} | {o['sparse_bwd_s']/o['sparse_s']:.2f} "
      f"| {o['dense_bwd_s']:.3f} | {o['bwd_speedup']:.2f} | {t['sdpa_dense_bwd_s']:.3f} "
      f"| {'-' if masked is None else f'{masked:.3f}'} "
      f"| {'-' if err is None else f'{err:.1e}'} "
      f"| {'none on the CPU' if flex is None else f'{flex:.3f}'} |")
PY
  done
done
