#!/usr/bin/env bash
# Installs the data sets the image experiments read (Debian 12 packages),
# only what is missing. Not part of scripts/bootstrap.sh, so the build and
# CI stay fast: the tests write their own small image files.
#
#   bash scripts/get-data.sh            # Fashion-MNIST (experiments/images/)
#
# dataset-fashion-mnist puts {train,t10k}-images-idx3-ubyte.gz into
# /usr/share/datasets/fashion-mnist, the fashion-mnist data set's default
# [data] dir.
set -euo pipefail

PKGS=(dataset-fashion-mnist)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "get-data: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "get-data: Fashion-MNIST in /usr/share/datasets/fashion-mnist" >&2
