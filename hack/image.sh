#!/usr/bin/env bash
# Builds Twill's image ghcr.io/twill-net/twill:v$(cat VERSION) from
# images/Dockerfile with docker, podman or buildah (the first one installed,
# or IMAGE_TOOL=docker|podman|buildah; docker only when its daemon answers), and writes it as a docker-archive to
# _output/images/twill.tar, which `ctr -n k8s.io images import` and
# `docker load` accept with the reference intact.
#
# The tag and `flanneld --version` both come from the VERSION file: the
# binaries are (re)built with `make build plugins` when missing or stamped
# with another version.
#
# With buildah or podman and no debian:bookworm-slim in local storage, the
# base is made offline by hack/debian-base.sh (debootstrap) instead of pulled.
set -euo pipefail
cd "$(dirname "$0")/.."

version=v$(tr -d '[:space:]' <VERSION)
ref=ghcr.io/twill-net/twill:$version
base=docker.io/library/debian:bookworm-slim
archive=_output/images/twill.tar
plugins=(flannel bridge host-local portmap loopback)

stale() {
  [ -x bin/flanneld ] || return 0
  local p
  for p in "${plugins[@]}"; do [ -x "bin/cni/$p" ] || return 0; done
  # flanneld --version must print exactly this build's version.
  ! bin/flanneld --version 2>&1 | grep -qF -- "$version"
}
if stale; then
  echo "image.sh: building bin/ for $version"
  make --no-print-directory build plugins
  if stale; then
    echo "image.sh: bin/flanneld --version does not print $version after 'make build'; check the -ldflags in the Makefile" >&2
    exit 1
  fi
fi

tool=${IMAGE_TOOL:-}
if [ -z "$tool" ]; then
  for t in docker podman buildah; do
    command -v "$t" >/dev/null 2>&1 || continue
    # A docker client without a reachable daemon cannot build.
    if [ "$t" = docker ] && ! timeout 10 docker info >/dev/null 2>&1; then continue; fi
    tool=$t
    break
  done
fi
case $tool in
  docker | podman | buildah) command -v "$tool" >/dev/null 2>&1 || { echo "image.sh: IMAGE_TOOL=$tool is not installed" >&2; exit 1; } ;;
  "") echo "image.sh: none of docker, podman or buildah is installed; install one (make deps installs buildah)" >&2; exit 1 ;;
  *) echo "image.sh: IMAGE_TOOL must be docker, podman or buildah, not '$tool'" >&2; exit 1 ;;
esac

# The build context holds only what the Dockerfile copies.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/twill-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/cni"
cp bin/flanneld "$ctx/"
for p in "${plugins[@]}"; do cp "bin/cni/$p" "$ctx/cni/"; done
cp images/twill/iptables-wrapper images/twill/install-cni-plugins "$ctx/"
chmod 0755 "$ctx"/flanneld "$ctx"/cni/* "$ctx"/iptables-wrapper "$ctx"/install-cni-plugins

arch=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)
build_args=(--build-arg "VERSION=$version" --build-arg "BASE_IMAGE=$base" -f images/Dockerfile -t "$ref")
mkdir -p "$(dirname "$archive")"
tmp_archive=$archive.$$.tmp
trap 'rm -rf "$ctx" "$tmp_archive"' EXIT
start=$(date +%s)
case $tool in
  docker)
    docker build --platform "linux/$arch" "${build_args[@]}" "$ctx"
    docker save -o "$tmp_archive" "$ref"
    ;;
  podman | buildah)
    if ! { [ "$tool" = podman ] && podman image exists "$base"; } &&
      ! { command -v buildah >/dev/null 2>&1 && buildah inspect --type image "$base" >/dev/null 2>&1; }; then
      bash hack/debian-base.sh
    fi
    if [ "$tool" = podman ]; then
      podman build --pull=never --network host --arch "$arch" "${build_args[@]}" "$ctx"
      podman save --format docker-archive -o "$tmp_archive" "$ref"
    else
      # --network host: the RUN step fetches iptables and nftables from the
      # Debian mirror.
      buildah bud --quiet --pull=never --network host --layers --format docker --arch "$arch" "${build_args[@]}" "$ctx"
      buildah push --quiet "$ref" "docker-archive:$tmp_archive:$ref"
    fi
    ;;
esac
mv -f "$tmp_archive" "$archive"
echo "built $ref with $tool in $(($(date +%s) - start))s; archive $archive ($(du -h "$archive" | cut -f1))"
