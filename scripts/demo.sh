#!/usr/bin/env bash
# What `make demo` shows: shipped pattern files checked and summarised per
# layer and head, a simplification, pictures of a few masks, a CUDA bundle,
# and that bundle run by the runtime on the CPU.
set -euo pipefail
build=${1:-build}
bin=$build/bin

echo "== attn-opt patterns/llama3-8b-sparse.mlir --attn-report=\"q-len=4096\""
echo "   (first 8 layers of 32; density = share of (query, key) pairs computed)"
"$bin/attn-opt" patterns/llama3-8b-sparse.mlir --attn-report="q-len=4096" \
  -o /dev/null | awk 'NR <= 2 || ($1 ~ /^[0-9]+$/ && $1 < 8) || /^mean/'
echo
echo "== attn-opt patterns/video-dit.mlir --attn-report=\"q-len=16384\""
"$bin/attn-opt" patterns/video-dit.mlir --attn-report="q-len=16384" -o /dev/null
echo "== attn-opt --canonicalize: causal ∩ (sink ∪ band) becomes one A-shape"
input='attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.union<#attn.sink<4>, #attn.window<before = 64, after = 8>>>
  }
}'
echo "before: $(grep attn.heads <<<"$input" | sed 's/^ *//')"
echo "after:  $("$bin/attn-opt" --canonicalize <<<"$input" | grep attn.heads | sed 's/^ *//')"
echo
for head in 0 2 3; do
  echo "== attn-viz patterns/tiny-mix.mlir --layer 0 --head $head --q-len 16 --k-len 24"
  "$bin/attn-viz" patterns/tiny-mix.mlir --layer 0 --head "$head" --q-len 16 --k-len 24
  echo
done
mkdir -p "$build/pictures"
echo "== attn-viz patterns/video-dit.mlir --layer 0 --q-len 16384 --format=png"
"$bin/attn-viz" patterns/video-dit.mlir --layer 0 --q-len 16384 --size 64 \
  --format=png -o "$build/pictures/video-dit-layer0.png"
"$bin/attn-viz" patterns/llama3-8b-sparse.mlir --layer 3 --head 0 \
  --q-len 32768 --format=svg -o "$build/pictures/llama3-a-shape.svg"
echo "picture of every head of the video-DiT layer at 16K tokens (tiles:"
echo "blue full, orange partial by density, white skipped):"
echo "  $build/pictures/video-dit-layer0.png"
echo "the Llama-3 A-shape head at 32K as SVG: $build/pictures/llama3-a-shape.svg"
echo
echo "== attn-translate patterns/video-dit.mlir -o $build/bundles/video-dit"
"$bin/attn-translate" patterns/video-dit.mlir -o "$build/bundles/video-dit"
"$bin/attn-nvrtc-check" "$build/bundles/video-dit" --arch sm_90 2>/dev/null |
  grep -E "tessera_attn|cubin" || echo "(NVRTC absent: no GPU compile shown)"
echo
echo "== the runtime on the CPU, through the Python binding: layer 0 at 4096 tokens"
PYTHONPATH=python TESSERA_RUNTIME_LIB="$build/lib/libtessera_runtime.so" \
  /usr/bin/python3 - "$build/bundles/video-dit" <<'PY'
import sys, time
import numpy as np
import tessera
bundle = tessera.Context("cpu").load(sys.argv[1])
info = bundle.layer_info(0)
print(info)
n, h, d = 4096, info["num_heads"], info["head_dim"]
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((1, n, h, d), dtype=np.float32) for _ in range(3))
t = time.perf_counter()
o, lse = bundle.attention(0, q, k, v)
print(f"O {o.shape}, {time.perf_counter() - t:.2f} s on the CPU; "
      f"skipped heads give 0: {bool((o[..., 22:, :] == 0).all())}")
PY

echo
echo "== pattern selection: synthetic Q/K/V -> calibration -> attn-select -> bundle"
work="$build/demo-select"
mkdir -p "$work"
"$bin/attn-calibrate" synth -o "$work/sample.npz" --seq-len 2048 --layers 2 \
  --heads 8 --kv-heads 2 --head-dim 64
"$bin/attn-calibrate" accuracy "$work/sample.npz" -o "$work/calib.json"
"$bin/attn-calibrate" target -o "$work/cpu.json" --lengths 512 1024 --repeats 2
cat > "$work/model.mlir" <<'MLIR'
attn.model @demo {
  attn.layer 0 heads = 8 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 7] = #attn.causal
  }
  attn.layer 1 heads = 8 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 7] = #attn.causal
  }
}
MLIR
echo "-- attn-opt model.mlir --attn-select=\"target=cpu.json calibration=calib.json min-recall=0.95 skip-below=0.01\""
"$bin/attn-opt" "$work/model.mlir" \
  --attn-select="target=$work/cpu.json calibration=$work/calib.json min-recall=0.95 skip-below=0.01" \
  -o "$work/selected.mlir" 2>&1 | grep -E "remark|warning" | sed 's/^.*: \(remark\|warning\): /  /'
cat "$work/selected.mlir"
"$bin/attn-opt" "$work/selected.mlir" --attn-report="q-len=2048 target=$work/cpu.json" -o /dev/null | tail -8
"$bin/attn-translate" "$work/selected.mlir" -o "$work/selected-bundle"
"$bin/attn-translate" "$work/model.mlir" -o "$work/reference-bundle"
PYTHONPATH=python TESSERA_RUNTIME_LIB="$build/lib/libtessera_runtime.so" \
  /usr/bin/python3 - "$work" <<'PY'
import sys, time
import numpy as np
import tessera
work = sys.argv[1]
data = np.load(f"{work}/sample.npz")
sel = tessera.Context("cpu").load(f"{work}/selected-bundle")
ref = tessera.Context("cpu").load(f"{work}/reference-bundle")
for layer in (0, 1):
    q, k, v = (data[f"{x}{layer}"][None] for x in "qkv")
    t = time.perf_counter(); o_s, _ = sel.attention(layer, q, k, v); ts = time.perf_counter() - t
    t = time.perf_counter(); o_r, _ = ref.attention(layer, q, k, v); tr = time.perf_counter() - t
    err = np.linalg.norm(o_s - o_r) / np.linalg.norm(o_r)
    print(f"layer {layer}: selected {1e3 * ts:.1f} ms, causal {1e3 * tr:.1f} ms "
          f"({tr / ts:.1f}x); output error against causal {err:.3f}")
PY
