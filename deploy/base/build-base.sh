#!/usr/bin/env bash
# Build the offline base image `sage-base:bookworm` from Debian packages alone.
#
# The project's machines reach Debian's mirror and PyPI but no container registry,
# so `FROM python:3.11-slim` cannot be pulled there. This script debootstraps a
# minimal bookworm root file system with Python 3.11 (Debian's 3.11.2, the same
# minor version the lock file was resolved for) and `docker import`s it.
# In a normal deployment, skip it and build with
#   --build-arg BASE_IMAGE=python:3.11-slim
#
#   deploy/base/build-base.sh [TAG]        # default sage-base:bookworm
#
# Environment:
#   DEBIAN_MIRROR   default http://deb.debian.org/debian
#   EXTRA_CA_DIR    *.crt files trusted inside the image (default: the host's
#                   /usr/local/share/ca-certificates, which holds the egress
#                   proxy's CA on machines that have one; set to "" to skip)
#   BASE_TIMEOUT_S  upper bound for debootstrap (default 900)
# Needs root, debootstrap and a running Docker engine.
set -euo pipefail

TAG="${1:-sage-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
EXTRA_CA_DIR="${EXTRA_CA_DIR-/usr/local/share/ca-certificates}"
TIMEOUT_S="${BASE_TIMEOUT_S:-900}"
# python3-venv: `python3 -m venv` with pip; apt stays in (minbase keeps it) because
# `sage assets prepare` downloads Debian's text packages for the corpus.
PACKAGES="python3,python3-venv,ca-certificates"

for tool in debootstrap docker; do
    command -v "$tool" >/dev/null || { echo "build-base: $tool is not installed" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "build-base: debootstrap needs root" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "build-base: no Docker engine answers (docker info failed)" >&2; exit 2; }

ROOTFS="$(mktemp -d /tmp/sage-base.XXXXXX)"
cleanup() {
    # debootstrap may leave /proc or /sys mounted inside when it is interrupted.
    for m in proc sys dev/pts dev; do umount -l "$ROOTFS/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

start=$(date +%s)
echo "build-base: debootstrap bookworm ($PACKAGES) from $MIRROR"
timeout "$TIMEOUT_S" debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" \
    > "$ROOTFS.log" 2>&1 || { tail -30 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"

cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
SOURCES

if [ -n "$EXTRA_CA_DIR" ] && compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
    echo "build-base: trusting $(ls "$EXTRA_CA_DIR"/*.crt | wc -l) extra CA certificate(s) from $EXTRA_CA_DIR"
    cp "$EXTRA_CA_DIR"/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null
fi

# Smaller image: no package lists, caches, docs or man pages (apt-get update restores the lists).
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG" >/dev/null
echo "build-base: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - start )) s"
