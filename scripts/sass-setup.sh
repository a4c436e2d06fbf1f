#!/usr/bin/env bash
# Installs nvdisasm (PyPI's nvidia-cuda-nvdisasm) into BUILD/sass-venv for
# the SASS scripts (scripts/sass-check.py, scripts/sass-counts.py,
# bench/sass_index_share.py), if it is not there yet. Run by scripts/check.sh
# before the tests; needs python3-venv and PyPI. Prints nothing when it is
# already installed.
#
#   scripts/sass-setup.sh [BUILD_DIR]        default: build
set -euo pipefail

build=${1:-build}
venv=$build/sass-venv
version=13.5.37

if compgen -G "$venv/lib/python3*/site-packages/nvidia/cu*/bin/nvdisasm" \
    >/dev/null; then
  exit 0
fi
echo "tessera: installing nvidia-cuda-nvdisasm==$version into $venv"
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "nvidia-cuda-nvdisasm==$version"
compgen -G "$venv/lib/python3*/site-packages/nvidia/cu*/bin/nvdisasm" >/dev/null
