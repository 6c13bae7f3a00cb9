#!/usr/bin/env bash
# Make the base image localhost/debian:bookworm-slim from Debian's packages with debootstrap, when it is
# missing (no image registry is reachable on the project's machines). The mirror is the one apt already
# uses (the first `URIs:` of the Debian entry in /etc/apt/sources.list.d/debian.sources, else the first
# `deb` line of /etc/apt/sources.list): never a hard-coded host.
# Usage: docker/make-base-image.sh [IMAGE]   (as root; needs debootstrap and podman)
set -euo pipefail
image="${1:-${MPU_BASE_IMAGE:-localhost/debian:bookworm-slim}}"
if podman image exists "$image"; then
  echo "base image $image: present (cached)" >&2
  exit 0
fi
mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)"
fi
if [ -z "$mirror" ]; then
  echo "make-base-image: no Debian mirror found in apt's sources" >&2
  exit 1
fi
rootfs="$(mktemp -d /var/tmp/mpu-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "base image $image: debootstrap --variant=minbase bookworm from $mirror" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
# The image's apt uses apt's own sources of this machine (the same suites, updates and security, so
# the same package versions as the local stack); no package lists or caches in the layer.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "base image $image: made" >&2
