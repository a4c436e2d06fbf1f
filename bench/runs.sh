#!/usr/bin/env bash
# The A-shape / window pair of docs/PERFORMANCE.md: one head, head_dim 64,
# fp32, 2 threads, the same visited tiles; prints a Markdown table with the
# median times, the median of the pairwise time ratios, the A-shape's time
# per visited tile, and the run enumeration alone and its share of the
# A-shape's time.
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
# The two patterns alternate, one run each, 5 times; the ratio is the median
# of the 5 pairs (the machine's drift hits both sides of a pair alike).
for len in "${lengths[@]}"; do
  # Progress on stderr when it is a terminal (TESSERA_PROGRESS=0: off).
  if [ "${TESSERA_PROGRESS:-}" = 1 ] || { [ -t 2 ] && [ "${TESSERA_PROGRESS:-}" != 0 ]; }; then
    echo "[bench/runs.sh] $len tokens: 5 A-shape/window pairs" >&2
  fi
  pairs=()
  for rep in 1 2 3 4 5; do
    a=$("$bench" --pattern "$ashape" --len "$len" --repeats 1)
    w=$("$bench" --pattern "$window" --len "$len" --repeats 1)
    pairs+=("$a" "$w")
  done
  python3 - "${pairs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(x) for x in sys.argv[1:]]
a, w = runs[0::2], runs[1::2]
tiles = a[0]["tiles_full"] + a[0]["tiles_partial"]
assert tiles == w[0]["tiles_full"] + w[0]["tiles_partial"], "visited tiles differ"
ratio = statistics.median(x["seconds"] / y["seconds"] for x, y in zip(a, w))
ta = statistics.median(x["seconds"] for x in a)
tw = statistics.median(y["seconds"] for y in w)
e = statistics.median(x["enumeration_s"] for x in a)
es = f"{e:.6f}" if e >= 0 else "n/a"
share = f"{100 * e / ta:.3f}%" if e >= 0 else "n/a"
print(f"| {a[0]['len']} | {tiles} | {ta:.4f} | {tw:.4f} | {ratio:.3f} "
      f"| {ta / tiles * 1e6:.2f} | {es} | {share} |")
PY
done
