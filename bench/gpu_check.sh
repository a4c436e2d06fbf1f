#!/usr/bin/env bash
# The GPU check (docs/PERFORMANCE.md): on a machine with an NVIDIA GPU, the
# CUDA driver, NVRTC and PyTorch. Needs, from a build here (`make bundles`;
# the GPU machine needs no MLIR): build/bundles and build/lib (the runtime
# library; carry both). Loads every bundle through the Python binding (NVRTC
# for the device, cold and from the cache), checks it against a float64
# reference, and times it against torch SDPA and FlexAttention; then the
# dynamic layers of minference-llm with bench/gpu_dynamic.py (against the CPU
# runtime, timed at 128K-1M against SDPA's causal flash attention). Prints
# the tables; exits 1 on a wrong result.
set -euo pipefail
cd "$(dirname "$0")/.."
bundles=${BUNDLES:-build/bundles}
if ! ls "$bundles"/*/manifest.json >/dev/null 2>&1; then
  echo "gpu_check: no bundles in $bundles; run 'make bundles' first" >&2
  exit 2
fi
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' || {
  echo "gpu_check: PyTorch sees no CUDA device" >&2; exit 3; }
if [ ! -f build/lib/libtessera_runtime.so ]; then
  echo "gpu_check: no build/lib/libtessera_runtime.so; build it here and carry build/lib" >&2
  exit 2
fi
export TESSERA_RUNTIME_LIB=$PWD/build/lib/libtessera_runtime.so
out=${OUT:-build}
timeout 420 python3 bench/gpu_check.py "$bundles"/*/ "$@" | tee "$out/gpu_check.txt"
# Dynamic layers (index kernels and attention over the index) at 128K-1M.
if [ -f "$bundles/minference-llm/manifest.json" ]; then
  timeout 300 python3 bench/gpu_dynamic.py "$bundles/minference-llm" \
    --repeats 2 | tee "$out/gpu_dynamic.txt"
fi
