#!/usr/bin/env bash
# Runs every test: the lit/FileCheck suite and the GoogleTest units, then the
# FileCheck tests that call attn-opt again with every attn-opt run under
# --verify-roundtrip (the packaged LLVM has assertions off). Ends with one
# line "N passed, N failed".
set -uo pipefail

build=${1:-build}
lit=${LIT:-/usr/lib/llvm-22/bin/lit}
# nvdisasm (PyPI) for the SASS tests, installed into $build/sass-venv once.
"$(dirname "$0")/sass-setup.sh" "$build" ||
  echo "tessera: nvdisasm is not installed; the SASS tests will fail" >&2
# PyTorch, numpy and transformers (PyPI) for the tessera.torch and
# tessera.transformers tests, into $build/bench-venv once; lit's
# require_torch makes those tests fail, not skip, where they are missing.
"$(dirname "$0")/torch-setup.sh" "$build" ||
  echo "tessera: PyTorch is not installed; the PyTorch tests will fail" >&2
passed=0
failed=0
skipped=0

# Prints the count lit reported for a result kind ($2) in a log ($1), or 0.
num() {
  local v
  v=$(sed -nE "s/^ *$2 *: *([0-9]+).*/\1/p" "$1" | tail -n 1)
  echo "${v:-0}"
}

# Adds the counts of a lit summary to the totals.
count() {
  local log=$1
  passed=$((passed + $(num "$log" Passed) + $(num "$log" 'Expectedly Failed')))
  failed=$((failed + $(num "$log" Failed) + $(num "$log" Unresolved) \
    + $(num "$log" 'Timed Out') + $(num "$log" 'Unexpectedly Passed')))
  skipped=$((skipped + $(num "$log" Unsupported) + $(num "$log" Skipped) \
    + $(num "$log" Excluded)))
}

run() {
  local log
  log=$(mktemp)
  echo "== lit $*"
  "$lit" "$@" 2>&1 | tee "$log" | grep -E '^(FAIL|UNRESOLVED|TIMEOUT|XPASS):|^(Total|  [A-Z])' || true
  if ! grep -qE '^Total Discovered Tests: [0-9]+' "$log"; then
    echo "tessera: lit did not run ($*); its output:" >&2
    cat "$log" >&2
    failed=$((failed + 1))
  fi
  count "$log"
  rm -f "$log"
}

run -sv --param require_torch=1 "$build/test" "$build/test/Unit"
# The round trip changes only what attn-opt runs: the tests that call it,
# again (the others, the PyTorch ones among them, would repeat themselves).
src_test=$(cd "$(dirname "$0")/../test" && pwd)
mapfile -t opt_tests < <(cd "$src_test" &&
  grep -rlE 'attn-opt' --include='*.test' --include='*.mlir' . |
  grep -vE '(^|/)(Inputs|Unit)/' | sed "s|^\./|$build/test/|" | sort)
run -sv --param require_torch=1 --param verify_roundtrip=1 "${opt_tests[@]}"

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
