#!/usr/bin/env bash
# Installs flowlab's build dependencies (Debian 12) and builds it into
# ./build. Safe to run again: installs only what is missing, reconfigures
# only when needed. Usage: bash scripts/bootstrap.sh [BUILD_DIR [MESON_OPTIONS...]]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:-build}
shift || true

PKGS=(build-essential meson ninja-build pkg-config libinih-dev libcriterion-dev
      libopenblas-dev libopenblas-pthread-dev zlib1g-dev libpng-dev
      libcairo2-dev fonts-dejavu-core libcurl4-openssl-dev
      libopenmpi-dev openmpi-bin
      python3-numpy python3-pytest)  # python3-*: python/flowlab and its tests

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" "$@" >/dev/null
fi
ninja -C "$BUILD" >/dev/null
echo "bootstrap: built $BUILD" >&2
