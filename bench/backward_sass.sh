#!/usr/bin/env bash
# The CUDA backward kernels from their SASS (issue 20 item 7;
# docs/PERFORMANCE.md "The CUDA backward from its SASS"): per-tile SASS
# instruction and HMMA counts of the dK/dV (key-major) and dQ (query-major)
# kernels beside the forward kernel of the same bundle, for one causal and
# one A-shape layer (partial tiles with generated masks) at head_dim 64 and
# 128, bf16, sm_80 and sm_90. The counting method is scripts/sass-counts.py's
# (--cu: every tile loop of every kernel of a bundle, NVRTC as the runtime
# compiles, nvdisasm from scripts/sass-setup.sh).
#
#   bench/backward_sass.sh [BUILD_DIR]      default: build
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
scripts/sass-setup.sh "$build" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for d in 64 128; do
  for pat in causal "a_shape<sink = 64, before = 1024>"; do
    name=$(echo "$pat" | sed 's/[^a-z].*//')$d
    cat > "$tmp/$name.mlir" <<MLIR
attn.model @bwd_$name {
  attn.layer 0 heads = 32 kv_heads = 8 head_dim = $d dtype = bf16 {
    attn.heads [0 to 31] = #attn.$pat
  }
}
MLIR
    "$build/bin/attn-translate" "$tmp/$name.mlir" -o "$tmp/$name"
    for arch in sm_80 sm_90; do
      python3 scripts/sass-counts.py --build "$build" --cu "$tmp/$name/bundle.cu" \
        --head-dim "$d" --arch "$arch" |
        grep -E 'tessera_(bwd_(dkdv|dq)|attn)_bf16_d[0-9]+ ' |
        sed "s/^bundle.cu/$name/"
    done
  done
done
