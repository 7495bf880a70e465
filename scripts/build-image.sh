#!/usr/bin/env bash
# Builds kmshost's container image from deploy/image/Containerfile with
# buildah (no daemon; chroot isolation and vfs storage by default, so it
# runs inside a container too).
#
#   scripts/build-image.sh [--tag TAG] [--binary PATH] [--root DIR] [--base IMAGE]
#
#   --tag     the image's name (default localhost/kmshost:<version>)
#   --binary  a kmshost binary to ship (default: cargo build --release);
#             its debug info is stripped into the build context
#   --root    buildah's storage directory (default: buildah's own)
#   --base    the base image (default: docker.io/library/debian:bookworm-slim
#             when a registry answers; else localhost/kmshost-base:bookworm,
#             made here from Debian's packages with mmdebstrap)
#
# Prints the image's name and size last.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="" binary="" root="" base=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

for tool in buildah mmdebstrap objcopy; do
    command -v "$tool" >/dev/null || {
        echo "build-image.sh: $tool is missing (scripts/bootstrap.sh installs it)" >&2
        exit 1
    }
done
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
bah=(buildah)
if [ -n "$root" ]; then
    bah+=(--root "$root/storage" --runroot "$root/run")
fi

if [ -z "$binary" ]; then
    cargo build --release --locked -p kmshost
    binary=target/release/kmshost
fi
version=$("$binary" --version | awk '{print $2}')
tag="${tag:-localhost/kmshost:$version}"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
objcopy --strip-debug "$binary" "$ctx/kmshost"
cp deploy/image/Containerfile "$ctx/"

# The base: Debian's slim image when a registry answers, else the same
# Debian release from Debian's own packages.
if [ -z "$base" ]; then
    if timeout 20 "${bah[@]}" pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
        base=docker.io/library/debian:bookworm-slim
    else
        base=localhost/kmshost-base:bookworm
        if ! "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
            echo "== no registry: making $base from Debian's packages"
            mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
            # Trimmed as Debian's slim images are (no manuals, docs or
            # translations; copyright files kept), for this layer and the
            # packages the Containerfile adds.
            mmdebstrap --quiet --variant=minbase \
                --dpkgopt='path-exclude=/usr/share/man/*' \
                --dpkgopt='path-exclude=/usr/share/doc/*' \
                --dpkgopt='path-include=/usr/share/doc/*/copyright' \
                --dpkgopt='path-exclude=/usr/share/locale/*' \
                --dpkgopt='path-exclude=/usr/share/info/*' \
                --aptopt='Acquire::Languages "none"' \
                bookworm "$ctx/base.tar" \
                "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
                "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main"
            c=$("${bah[@]}" from scratch)
            "${bah[@]}" add --quiet "$c" "$ctx/base.tar" / >/dev/null
            rm -f "$ctx/base.tar"
            "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                --cmd /bin/bash "$c"
            "${bah[@]}" commit --quiet --rm "$c" "$base" >/dev/null
        fi
    fi
fi

echo "== building $tag from $base"
"${bah[@]}" bud --quiet --build-arg "BASE=$base" -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
size=$("${bah[@]}" images --format '{{.Size}}' "$tag" | head -n1)
echo "image $tag size $size"
