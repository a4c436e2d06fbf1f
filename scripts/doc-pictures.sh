#!/usr/bin/env bash
# Writes the pictures docs/patterns.md shows (make docs); the lit test
# test/Docs/pictures.test regenerates them and fails when they differ.
#   scripts/doc-pictures.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:-build}
out=${2:-docs/pictures}
src=$(cd "$(dirname "$0")/.." && pwd)
viz="$build/bin/attn-viz"
mkdir -p "$out"
"$viz" "$src/patterns/tiny-mix.mlir" --layer 0 --q-len 40 --k-len 48 \
  --block-q 16 --block-k 16 --format=svg -o "$out/tiny-mix-layer0.svg"
"$viz" "$src/patterns/llama3-8b-sparse.mlir" --layer 3 --head 0 \
  --q-len 32768 --size 128 --format=svg -o "$out/llama3-a-shape-32k.svg"
for h in 0 10; do
  "$viz" "$src/patterns/video-dit.mlir" --layer 0 --head $h --q-len 16384 \
    --size 64 --format=svg -o "$out/video-dit-head$h-16k.svg"
done
"$viz" "$src/patterns/s2-strided.mlir" --layer 0 --q-len 4096 --size 64 \
  --format=svg -o "$out/s2-strided-layer0-4k.svg"

# Indices built by the CPU builders on planted inputs (tessera-dynamic-dump),
# specialised to static patterns: what a dynamic pattern selects.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/test/Unit/tessera-dynamic-dump" "$work/dump" > /dev/null
/usr/bin/python3 "$src/scripts/index-patterns.py" "$work/dump" "$work"
"$viz" "$work/vertical-slash.mlir" --layer 0 --head 0 --q-len 256 \
  --format=svg -o "$out/index-vertical-slash.svg"
"$viz" "$work/block-topk.mlir" --layer 0 --head 0 --q-len 256 \
  --format=svg -o "$out/index-block-topk.svg"
