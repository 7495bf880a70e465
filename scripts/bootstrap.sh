#!/usr/bin/env bash
# Installs what building and testing kmshost needs on Debian 12, idempotently:
# the C libraries and tools (libcryptsetup, clang for bindgen, cryptsetup,
# mkfs/blkid for the tests) and the wasm32-wasip2 Rust target for plugins.
set -euo pipefail

APT_PACKAGES=(
  build-essential pkg-config clang libclang-dev
  libcryptsetup-dev cryptsetup-bin
  e2fsprogs util-linux
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "bootstrap: adding the wasm32-wasip2 Rust target" >&2
  rustup target add wasm32-wasip2
fi
