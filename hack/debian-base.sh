#!/usr/bin/env bash
# Makes the base image docker.io/library/debian:bookworm-slim in buildah's
# local storage without a registry: debootstrap --variant=minbase from the
# Debian mirror, then the root filesystem is added to an image built from
# scratch. Twill's Dockerfile and the lab's test image start FROM this tag.
#
# Cached twice: nothing happens when buildah already has the tag, and the
# debootstrapped tarball is kept under ${TWILL_CACHE:-/var/cache/twill}/debian
# so that a wiped image store is refilled in seconds.
#
# Environment: TWILL_CACHE, DEBIAN_MIRROR (default: the Debian archive the
# host's own apt uses, from /etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list, else http://deb.debian.org/debian), DEBIAN_ARCH
# (default: the host's dpkg architecture), FORCE=1 to rebuild.
set -euo pipefail

# host_mirror prints the first Debian archive (not its security archive)
# the host's apt is configured with: a host that builds the lab reaches the
# mirror it installs its own packages from. Nothing on an Ubuntu host,
# whose archives hold no Debian suites.
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
  done
  if [ -r /etc/apt/sources.list ]; then
    awk '$1 == "deb" { line = $0; sub(/\[[^]]*\]/, "", line); split(line, f, " "); print f[2] }' /etc/apt/sources.list
  fi
}
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR=$(host_mirror | grep -v -e security -e ubuntu | grep -E '/debian/?$' | head -n1 || true)
fi

suite=bookworm
ref=docker.io/library/debian:bookworm-slim
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=${DEBIAN_ARCH:-$(dpkg --print-architecture)}
cache=${TWILL_CACHE:-/var/cache/twill}/debian
tarball=$cache/$suite-minbase-$arch.tar

if [ "$(id -u)" -ne 0 ]; then
  echo "debian-base.sh: debootstrap needs root; run it as root (sudo bash hack/debian-base.sh)" >&2
  exit 1
fi
for cmd in buildah debootstrap; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "debian-base.sh: $cmd is missing; run 'make deps'" >&2; exit 1; }
done

if [ "${FORCE:-0}" != 1 ] && buildah inspect --type image "$ref" >/dev/null 2>&1; then
  echo "$ref already in buildah's storage"
  exit 0
fi

mkdir -p "$cache"
# One build at a time: the lab's image builder and hack/image.sh may both
# call this script. The second waits, then finds the tag made.
exec 9>"$cache/.lock"
flock 9
if [ "${FORCE:-0}" != 1 ] && buildah inspect --type image "$ref" >/dev/null 2>&1; then
  echo "$ref already in buildah's storage"
  exit 0
fi
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$tarball" ]; then
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
  echo "debootstrap $suite ($arch, minbase) from $mirror"
  debootstrap --variant=minbase --arch="$arch" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    tail -n 20 "$cache/debootstrap.log" >&2
    echo "debian-base.sh: debootstrap failed (full log: $cache/debootstrap.log); check that $mirror is reachable" >&2
    exit 1
  }
  # Trim it like Debian's own -slim images: no package caches or lists
  # (apt-get update refills them), no docs, man pages or translations, and
  # dpkg told to leave them out of packages installed later.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/debootstrap
  # Licences stay.
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'END'
# Written by Twill's hack/debian-base.sh, as in Debian's -slim images.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
END
  # The host's resolver and hostname do not belong in an image; the runtime
  # supplies both.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
fi

echo "importing $tarball as $ref"
ctr=$(buildah from --pull=never scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$tarball" /
buildah config --arch "$arch" --os linux --cmd '["bash"]' \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
trap - EXIT
echo "$ref ready"
