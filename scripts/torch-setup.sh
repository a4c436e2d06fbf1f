#!/usr/bin/env bash
# Installs PyTorch (PyPI's plain wheel; its CPU part is what the tests use),
# numpy and transformers into BUILD/bench-venv, at the versions below, unless
# they are there already. Run by scripts/check.sh before the tests (the
# tessera.torch and tessera.transformers tests run in that venv) and by
# bench/run.sh; needs python3-venv and PyPI. Prints nothing when everything
# is installed.
#
#   scripts/torch-setup.sh [BUILD_DIR]        default: build
set -euo pipefail

build=${1:-build}
venv=$build/bench-venv
# Versions the tests are known to pass with; bump them together.
packages=(torch==2.11.0 numpy==2.4.6 transformers==5.25.0)

# Whether every pinned package is installed at its version (its dist-info
# directory is there: no Python start-up, so the common case costs nothing).
installed() {
  local p name version
  for p in "${packages[@]}"; do
    name=${p%%==*}
    version=${p#*==}
    compgen -G "$venv/lib/python3*/site-packages/$name-$version.dist-info" \
      >/dev/null || return 1
  done
}

if installed; then
  exit 0
fi
echo "tessera: installing ${packages[*]} into $venv"
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
installed
