#!/usr/bin/env bash
# Installs the Debian packages Tessera builds and tests with, if any is missing.
# As root with apt-get it installs them; otherwise it prints the exact command
# and fails.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ ccache python3
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  libfmt-dev libgtest-dev libpng-dev pkg-config python3-numpy
  python3-pip python3-venv python3-setuptools python3-wheel
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tessera: missing Debian packages: ${missing[*]}" >&2
  echo "tessera: install them as root, then run make again:" >&2
  echo "  $command" >&2
  exit 1
fi
echo "tessera: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
