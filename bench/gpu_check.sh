#!/usr/bin/env bash
# The GPU check (docs/PERFORMANCE.md, "The GPU check"): correctness of every
# bundle against float64 and timings against PyTorch SDPA (flash backend),
# FlexAttention, flash_attn and FlashInfer, in under 8 minutes.
#
#   bench/gpu_check.sh --prepare [DIR]     here, after the build
#   bench/gpu_check.sh [--device cuda|cpu] [-- GPU_CHECK_PY_ARGS...]
#                                          on the GPU machine (or the CPU)
#
# --prepare (needs attn-translate and libtessera_runtime in $BUILD_DIR,
# default build: `make build`, or ninja those two targets) writes DIR
# (default $GPU_CHECK_DIR, else build/gpu-check), everything the GPU machine
# needs, which has no MLIR and no network:
#   DIR/bundles/<pattern>/  each patterns/*.mlir through attn-translate;
#   DIR/bundles/gpu-reference/  the dense kernel per static shape and the
#                           headline causal layer (gpu_check.py
#                           --write-reference);
#   DIR/lib/libtessera_runtime.so  the runtime, debug info stripped;
#   DIR/prepared.txt        the commit and date it was made from.
# Carry DIR (a few MiB) and run the check there. No Python package is
# installed: the machine's python3 must hold torch; flash_attn and
# flashinfer are timed where they import and reported absent otherwise.
#
# The run: gpu_check.py on every bundle (load, check, time; a soft budget
# and a hard timeout), then gpu_dynamic.py on the dynamic layers of
# minference-llm (check against the CPU runtime, time at 32K and 128K).
# Output: the tables on stdout, and in $OUT (default DIR): gpu_check.txt,
# gpu_check.json, gpu_dynamic.txt. Environment:
#   GPU_CHECK_BUDGET  whole run's seconds, default 430 (cuda) / 240 (cpu):
#                     70% to gpu_check.py, the rest to gpu_dynamic.py, each
#                     a hard timeout with a soft budget 25 s inside it;
#   PYTHON            the Python with torch (default python3);
#   TESSERA_NVRTC     NVRTC, where neither libnvrtc.so nor
#                     /usr/local/cuda has it (else looked up in the Python's
#                     nvidia-cuda-nvrtc package).
# --device cpu: the same scripts on the CPU with tiny shapes (a dry run;
# test/Python/gpu-check.test runs it in make check).
# Exit: 0 every check passed (goals may be unmet: see the goals table);
# 1 a wrong result; 2 missing inputs; 3 no CUDA device; 4 a phase was cut
# by its hard timeout with no wrong result seen.
set -uo pipefail
cd "$(dirname "$0")/.."

dir=${GPU_CHECK_DIR:-build/gpu-check}
device=cuda
prepare=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) prepare=1
      if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then dir=$2; shift; fi ;;
    --device) device=${2:?--device needs cuda or cpu}; shift ;;
    --help|-h) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    --) shift; break ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$prepare" = 1 ]; then
  build=${BUILD_DIR:-build}
  translate=$build/bin/attn-translate
  lib=$build/lib/libtessera_runtime.so
  for f in "$translate" "$lib"; do
    [ -e "$f" ] || { echo "gpu_check: no $f; build attn-translate and tessera_runtime first" >&2; exit 2; }
  done
  tmp=$dir.tmp
  rm -rf "$tmp" && mkdir -p "$tmp/bundles" "$tmp/lib" || exit 2
  for f in patterns/*.mlir; do
    "$translate" "$f" -o "$tmp/bundles/$(basename "$f" .mlir)" || exit 2
  done
  python3 bench/gpu_check.py --write-reference "$tmp/bundles" \
    --translate "$translate" || exit 2
  cp -L "$lib" "$tmp/lib/libtessera_runtime.so" || exit 2
  strip --strip-debug "$tmp/lib/libtessera_runtime.so" 2>/dev/null || true
  {
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (working tree with changes)')"
    echo "prepared $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m)"
  } > "$tmp/prepared.txt"
  rm -rf "$dir" && mv "$tmp" "$dir" || exit 2
  echo "gpu_check: prepared $dir ($(du -sh "$dir" | cut -f1)); carry it to the GPU machine"
  exit 0
fi

py=${PYTHON:-python3}
if ! ls "$dir"/bundles/*/manifest.json >/dev/null 2>&1 ||
   [ ! -f "$dir/lib/libtessera_runtime.so" ]; then
  echo "gpu_check: $dir is not prepared; run 'bench/gpu_check.sh --prepare' where the build is, and carry $dir" >&2
  exit 2
fi
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: $py has no torch (set PYTHON)" >&2
  exit 2
fi
if [ "$device" = cuda ]; then
  "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' || {
    echo "gpu_check: PyTorch sees no CUDA device" >&2; exit 3; }
  # NVRTC where the runtime will not find it itself: the Python's pip copy.
  if [ -z "${TESSERA_NVRTC:-}" ] && ! "$py" - <<'PY' 2>/dev/null
import ctypes, os, sys
names = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
names += [os.path.join(r, "lib64/libnvrtc.so")
          for r in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if r]
for n in names:
    try:
        ctypes.CDLL(n)
        sys.exit(0)
    except OSError:
        pass
sys.exit(1)
PY
  then
    nvrtc=$("$py" - <<'PY' 2>/dev/null
import glob, os, site
for d in site.getsitepackages():
    hits = sorted(glob.glob(os.path.join(d, "nvidia", "**", "libnvrtc.so*"),
                            recursive=True))
    hits = [h for h in hits if "builtins" not in h]
    if hits:
        print(hits[-1])
        break
PY
)
    [ -n "$nvrtc" ] && export TESSERA_NVRTC=$nvrtc
  fi
fi
budget=${GPU_CHECK_BUDGET:-$([ "$device" = cuda ] && echo 430 || echo 240)}
t_static=$((budget * 7 / 10))
t_dynamic=$((budget - t_static - 5))
out=${OUT:-$dir}
mkdir -p "$out"
export TESSERA_RUNTIME_LIB=$PWD/$dir/lib/libtessera_runtime.so
[ "${dir#/}" != "$dir" ] && export TESSERA_RUNTIME_LIB=$dir/lib/libtessera_runtime.so
# One fresh cache for both scripts: gpu_check.py's loads are cold, and
# gpu_dynamic.py finds minference-llm compiled.
cache=$(mktemp -d "${TMPDIR:-/tmp}/tessera-gpu-check-cache.XXXXXX")
trap 'rm -rf "$cache"' EXIT
export TESSERA_CACHE_DIR=$cache
export PYTHONUNBUFFERED=1
start=$(date +%s)

echo "gpu_check: phase 1, static bundles (hard limit ${t_static} s)" >&2
timeout --preserve-status -k 10 "$t_static" "$py" bench/gpu_check.py "$dir"/bundles/*/ \
  --device "$device" --budget $((t_static - 25)) --json "$out/gpu_check.json" \
  "$@" | tee "$out/gpu_check.txt"
rc_static=${PIPESTATUS[0]}

rc_dynamic=0
if [ -f "$dir/bundles/minference-llm/manifest.json" ]; then
  echo "gpu_check: phase 2, dynamic layers (hard limit ${t_dynamic} s)" >&2
  if [ "$device" = cuda ]; then
    lens=(--check-len 2048 --time-lens 32768,131072 --repeats 2)
  else
    lens=(--check-len 128 --time-lens 128 --repeats 1)
  fi
  timeout --preserve-status -k 10 "$t_dynamic" "$py" bench/gpu_dynamic.py \
    "$dir/bundles/minference-llm" --device "$device" "${lens[@]}" \
    --budget $((t_dynamic - 25)) | tee "$out/gpu_dynamic.txt"
  rc_dynamic=${PIPESTATUS[0]}
fi

echo "gpu_check: static rc $rc_static, dynamic rc $rc_dynamic, $(( $(date +%s) - start )) s (budget $budget s)"
for rc in "$rc_static" "$rc_dynamic"; do
  [ "$rc" = 1 ] && { echo "gpu_check: WRONG RESULTS (see the tables)"; exit 1; }
done
for rc in "$rc_static" "$rc_dynamic"; do
  case "$rc" in
    0) ;;
    4|124|137|143) echo "gpu_check: cut by a hard timeout; the tables above are partial"; exit 4 ;;
    *) echo "gpu_check: a phase failed (rc $rc)"; exit "$rc" ;;
  esac
done
exit 0
