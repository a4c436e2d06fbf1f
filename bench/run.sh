#!/usr/bin/env bash
# The CPU benchmark of docs/PERFORMANCE.md. Builds tessera-cpu-bench, sets up
# its Python environment with PyTorch from PyPI (scripts/torch-setup.sh: the
# one make check uses), and for each shipped pattern file and length runs, in
# one go:
# Tessera's sparse executor, its dense path, PyTorch SDPA (dense) and
# FlexAttention with the identical block mask. Prints a Markdown table.
#
#   bench/run.sh [LENGTHS...]        default: 4096 8192 16384
set -euo pipefail
cd "$(dirname "$0")/.."
lengths=("${@:-4096 8192 16384}")
[ $# -gt 0 ] || lengths=(4096 8192 16384)
build=${BUILD_DIR:-build}
venv=${BENCH_VENV:-$build/bench-venv}

make -s configure >/dev/null
ninja -C "$build" tessera-cpu-bench >/dev/null
if [ "$venv" = "$build/bench-venv" ]; then
  scripts/torch-setup.sh "$build"   # the venv make check uses
elif [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi
dump=$(mktemp -d)
trap 'rm -rf "$dump"' EXIT

# file:layer pairs: one layer per shipped model (the Llama layer mixes
# A-shape, window and causal heads; S2's layer has head-dependent shards).
cases=(patterns/llama3-8b-sparse.mlir:2 patterns/video-dit.mlir:0
       patterns/s2-strided.mlir:1)
echo "| pattern | len | visited tiles | mask density | tessera sparse (s) | tessera dense (s) | speed-up | 0.8/visited | torch SDPA dense (s) | FlexAttention (s) | sparse vs Flex |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
# Progress on stderr when it is a terminal (TESSERA_PROGRESS=0: off).
total=$(( ${#cases[@]} * ${#lengths[@]} ))
done_cases=0
progress() {
  if [ "${TESSERA_PROGRESS:-}" = 1 ] || { [ -t 2 ] && [ "${TESSERA_PROGRESS:-}" != 0 ]; }; then
    echo "[bench/run.sh] $done_cases/$total: $*" >&2
  fi
}
for c in "${cases[@]}"; do
  file=${c%%:*}
  layer=${c##*:}
  for len in "${lengths[@]}"; do
    progress "$file layer $layer at $len tokens"
    done_cases=$((done_cases + 1))
    ours=$("$build/bin/tessera-cpu-bench" "$file" --layer "$layer" --heads 4 \
      --len "$len" --repeats 5 --dump "$dump")
    theirs=$("$venv/bin/python" bench/torch_bench.py "$dump" --threads 2 \
      --repeats 3 2>/dev/null)
    python3 - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
name = o["file"].split("/")[-1].replace(".mlir", "") + f" (layer {o['layer']})"
print(f"| {name} | {o['len']} | {o['tile_density']:.3f} | {o['mask_density']:.3f} "
      f"| {o['sparse_s']:.4f} | {o['dense_s']:.4f} | {o['speedup']:.2f} "
      f"| {0.8/o['tile_density']:.2f} | {t['sdpa_dense_s']:.4f} | {t['flex_s']:.4f} "
      f"| {t['flex_s']/o['sparse_s']:.2f}x |")
PY
  done
done
