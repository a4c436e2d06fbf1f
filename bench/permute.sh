#!/usr/bin/env bash
# The permutation figures of docs/PERFORMANCE.md (issue 23): tile counts from
# --attn-permute, the CPU executor's time in the original order and in the
# period transpose (tessera-permute-bench: one head, head_dim 128, fp32,
# 2 threads), FlexAttention on the CPU in both orders (bench/flex_permute.py)
# and the S2 head's orders counted from its mask (bench/permute_s2.py).
# Prints JSON lines, one per measurement.
#
#   ninja -C build attn-opt tessera-permute-bench && bench/permute.sh
#
# (build/ must hold both tools and the bench venv; the script builds nothing.)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
py=$build/bench-venv/bin/python
bench=$build/bin/tessera-permute-bench
echo "# $(date -u +%F) $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"$build/bin/attn-opt" patterns/video-dit.mlir --attn-schedule \
  --attn-permute="seq-len=16384 report=true" -o /dev/null
"$build/bin/attn-opt" patterns/s2-strided.mlir --attn-schedule \
  --attn-permute="seq-len=8192 report=true" -o /dev/null | sed -n '3,6p'
# video-DiT layer 0's permuted groups at their length (16 frames of 1024).
"$bench" --pattern '#attn.multi_diagonal<stride = 1024, width = 32>' \
  --period 1024 --len 16384 --repeats 3
"$bench" --pattern '#attn.grid<stride = 1024, vertical_width = 64, slash_width = 64>' \
  --period 1024 --len 16384 --repeats 3
# S2 layer 1, head 0: the token-level transpose --attn-permute rejects.
"$bench" --pattern '#attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64>>>' \
  --period 512 --len 8192 --head 0 --num-heads 16 --repeats 1
"$py" bench/permute_s2.py 8192
# The MMInference-style layer: the whole-sequence transpose and the segment
# grouping (prompt in place, video transposed), counted by the pass and from
# the masks, and its two permuted groups on the CPU.
"$build/bin/attn-opt" patterns/mminference-video.mlir --attn-schedule \
  --attn-permute="seq-len=15616 report=true" -o /dev/null
"$py" bench/permute_segments.py
prompt='#attn.vertical_stripe<ranges = [0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>'
for video in '#attn.grid<stride = 1024, vertical_width = 32, slash_width = 32, phase = 256>' \
             '#attn.multi_diagonal<stride = 1024, width = 16>'; do
  "$bench" --pattern "#attn.union<$prompt, $video>" --period 1024 --prefix 256 \
    --len 15616 --repeats 3
done
"$py" bench/flex_permute.py --len 16384 --repeats 3 2>/dev/null
