#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang-22 (ASan + UBSan over all
# of Tessera's code) in build-fuzz/, makes their seed corpora from the
# shipped patterns, the lit tests and the test bundles, and runs each for
# SECONDS (default 60). LLVM's allocators poison memory under ASan in our
# inlined code while the uninstrumented libMLIR.so uses the same slabs, so
# user poisoning is off (allow_user_poisoning=0): real heap errors still show. Prints each harness's executions and findings; exits
# 1 on a finding (a crash, a sanitizer report, a simplification that changed
# a mask). Crash inputs are kept in build-fuzz/findings/.
#
#   scripts/fuzz.sh [SECONDS [RUNS]]   (make fuzz FUZZ_SECONDS=... FUZZ_RUNS=...)
#
# With RUNS each harness stops after that many executions (or SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
runs=${2:-}
packages=(clang-22 libfuzzer-22-dev libclang-rt-22-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tessera: make fuzz needs: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get install -y -q "${missing[@]}" >/dev/null
fi
build=build-fuzz
cmake -G Ninja -S . -B $build -DCMAKE_C_COMPILER=clang-22 \
  -DCMAKE_CXX_COMPILER=clang++-22 -DTESSERA_FUZZ=ON \
  -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
  -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >$build.cmake.log 2>&1 ||
  { cat $build.cmake.log; exit 1; }
ninja -C $build PatternFuzzer ManifestFuzzer AttentionFuzzer ImportFuzzer \
  LspFramingFuzzer attn-translate >/dev/null

# Seeds: pattern files, split at lit's "// -----"; manifests with their
# checksum replaced by @SHA@.
corpus=$build/corpus
rm -rf "$corpus" && mkdir -p "$corpus"/{pattern,manifest,attention,import,lsp} \
  $build/findings $build/seed-bundles
n=0
for f in patterns/*.mlir test/Dialect/Attn/*.mlir test/Transforms/*.mlir \
         test/Target/Cuda/*.mlir test/Unit/Inputs/*.mlir; do
  awk -v dir="$corpus/pattern" -v base="$n" '
    /^\/\/ -----/ { part++; next }
    { print > (dir "/" base "-" part) }' "$f"
  n=$((n + 1))
done
for f in patterns/*.mlir test/Unit/Inputs/emulation.mlir \
         test/Unit/Inputs/dynamic-emulation.mlir; do
  b=$build/seed-bundles/$(basename "$f" .mlir)
  ASAN_OPTIONS=detect_leaks=0:allow_user_poisoning=0 $build/bin/attn-translate "$f" -o "$b"
  # The CPU context never compiles the source: the harness's own small
  # source keeps each execution cheap.
  sed -E 's/"source_sha256": "[0-9a-f]+"/"source_sha256": "@SHA@"/' \
    "$b/manifest.json" >"$corpus/manifest/$(basename "$f" .mlir)"
done
head -c 64 /dev/urandom >"$corpus/attention/random"
# Dynamic calls (AttentionFuzzer's odd first byte; the byte layout is in
# fuzz/AttentionFuzzer.cpp): each layer of the dynamic test bundle (the
# second byte modulo the layer count) at Nq = 1 and Nk = 2^12, 2^16, 2^20
# or 2^40 with stride-0 K/V, contiguous q and o, an lse and finite
# centroids.
for layer in 8 9 10 11; do
  for nk in 4 8 12 32; do
    printf "\x01\x$(printf %02x $layer)\x06\x00\x00\x00\x00\x83\x00\x$(printf %02x $nk)\x00\x00\x00\x00\x02\x00\x10\x00\x02\x00\x20\x00\x00\x00\x30\x00\x00\x00\x00\x00\x00\x00\x01\x07" \
      >"$corpus/attention/dynamic-$layer-$nk"
  done
done
# MInference configs: the test inputs and a few hostile ones.
cp test/Tools/Inputs/minference-*.json "$corpus/import/"
printf '[{"0": ["stream_llm", 0, 8, 1], "\\u0030": ["block_sparse", 1, 1, 0.5]}]' \
  >"$corpus/import/escaped"
printf '[{"0": ["vertical_and_slash", 1000, 6096, 0.8], "1": ["stream_llm", 100, 800, 1]}]' \
  >"$corpus/import/small"
# LSP streams: the first byte picks the style (bit 0: delimited) and the
# read size; the hostile frames of lsp-hostile.test and the lit session.
for c in deep deep-delimited bad-length zero-length huge-length no-header \
         no-length truncated cut-headers long-header; do
  style='\000'
  [ $c = deep-delimited ] && style='\001'
  { printf "$style"; python3 test/Tools/Inputs/lsp_frames.py $c; } \
    >"$corpus/lsp/$c"
done
{ printf '\001'; cat test/Tools/lsp-server.test; } >"$corpus/lsp/lit-session"

status=0
echo "| harness | seconds | executions | executions/s | findings |"
echo "|---|---|---|---|---|"
for h in PatternFuzzer ManifestFuzzer AttentionFuzzer ImportFuzzer \
         LspFramingFuzzer; do
  case $h in
    PatternFuzzer) c=$corpus/pattern ;;
    ManifestFuzzer) c=$corpus/manifest ;;
    ImportFuzzer) c=$corpus/import ;;
    LspFramingFuzzer) c=$corpus/lsp ;;
    *) c=$corpus/attention ;;
  esac
  log=$build/$h.log
  start=$(date +%s)
  set +e
  TESSERA_FUZZ_BUNDLE=$build/seed-bundles/tiny-mix \
    TESSERA_FUZZ_DYNAMIC_BUNDLE=$build/seed-bundles/dynamic-emulation \
    ASAN_OPTIONS=detect_leaks=0:allow_user_poisoning=0 \
    UBSAN_OPTIONS=print_stacktrace=1 \
    $build/fuzz/$h "$c" -max_total_time="$seconds" ${runs:+-runs=$runs} \
      -timeout=20 \
      -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix=$build/findings/$h- >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  took=$(( $(date +%s) - start ))
  found=$(ls $build/findings | grep -c "^$h-" || true)
  echo "| $h | $took | ${execs:-?} | $(( ${execs:-0} / (took > 0 ? took : 1) )) | $found |"
  [ $rc -eq 0 ] && [ "$found" = 0 ] || status=1
done
exit $status
