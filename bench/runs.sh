#!/usr/bin/env bash
# The A-shape / window pair of docs/PERFORMANCE.md: one head, head_dim 64,
# fp32, 2 threads, the same visited tiles; prints a Markdown table with the
# time ratio and the run enumeration's share of the A-shape's time.
#
#   bench/runs.sh [LENGTHS...]            default: 32768 131072 524288 1048576
#   BENCH=path/to/tessera-runs-bench bench/runs.sh ...   another build's binary
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
lengths=("$@")
[ $# -gt 0 ] || lengths=(32768 131072 524288 1048576)
bench=${BENCH:-}
if [ -z "$bench" ]; then
  make -s configure >/dev/null
  ninja -C "$build" tessera-runs-bench >/dev/null
  bench=$build/bin/tessera-runs-bench
fi
ashape='#attn.a_shape<sink = 64, before = 1024>'
window='#attn.window<before = 1088>'
echo "| len | visited tiles | A-shape (s) | window (s) | ratio | A-shape s per 1M tiles | enumeration (s) | enumeration share |"
echo "|---|---|---|---|---|---|---|---|"
for len in "${lengths[@]}"; do
  a=$("$bench" --pattern "$ashape" --len "$len" --repeats 3)
  w=$("$bench" --pattern "$window" --len "$len" --repeats 3)
  python3 - "$a" "$w" <<'PY'
import json, sys
a, w = json.loads(sys.argv[1]), json.loads(sys.argv[2])
tiles = a["tiles_full"] + a["tiles_partial"]
assert tiles == w["tiles_full"] + w["tiles_partial"], "visited tiles differ"
e = a["enumeration_s"]
es = f"{e:.6f}" if e >= 0 else "n/a"
share = f"{100 * e / a['seconds']:.3f}%" if e >= 0 else "n/a"
print(f"| {a['len']} | {tiles} | {a['seconds']:.4f} | {w['seconds']:.4f} "
      f"| {a['seconds'] / w['seconds']:.3f} | {a['seconds'] / tiles * 1e6:.2f} "
      f"| {es} | {share} |")
PY
done
