#!/usr/bin/env bash
# Release packaging: for each architecture (DIST_ARCHES, default "amd64
# arm64") a tarball _output/dist/twill-v<VERSION>-linux-<arch>.tar.gz holding
# flanneld, the flannel and standard CNI plugins (static, CGO_ENABLED=0,
# version stamped from the VERSION file), the manifest with this release's
# image tag (IMAGE, default ghcr.io/twill-net/twill) and a SHA256SUMS of its
# files; next to the tarballs, kube-flannel.yml and a SHA256SUMS of all.
#
# The tarballs are reproducible: the same sources give the same bytes
# (sorted entries, fixed owner and mtime, gzip without a timestamp).
set -euo pipefail
cd "$(dirname "$0")/.."

version=v$(tr -d '[:space:]' <VERSION)
image=${IMAGE:-ghcr.io/twill-net/twill}:$version
arches=${DIST_ARCHES:-amd64 arm64}
out=_output/dist
pkg=github.com/twill-net/twill
ldflags="-s -w -X $pkg/version.Version=$version"
cni_pkgs=(
  github.com/containernetworking/plugins/plugins/main/bridge
  github.com/containernetworking/plugins/plugins/ipam/host-local
  github.com/containernetworking/plugins/plugins/meta/portmap
  github.com/containernetworking/plugins/plugins/main/loopback
)
cni_version=$(go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
# A fixed mtime: the last commit's, so tarballs of one commit are identical.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

[ -d cmd/flanneld ] || { echo "dist.sh: cmd/flanneld does not exist yet; nothing to release" >&2; exit 1; }
grep -q 'image: ghcr.io/twill-net/twill:' Documentation/kube-flannel.yml ||
  { echo "dist.sh: Documentation/kube-flannel.yml has no ghcr.io/twill-net/twill image line to fill in" >&2; exit 1; }

# elf_machine FILE: the ELF e_machine field (62 = x86-64, 183 = AArch64).
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }
declare -A machine=([amd64]=62 [arm64]=183)

rm -rf "$out"
mkdir -p "$out"
sed -E "s#image: ghcr.io/twill-net/twill:[^[:space:]\"]+#image: $image#" Documentation/kube-flannel.yml >"$out/kube-flannel.yml"

export CGO_ENABLED=0 GOOS=linux GOFLAGS=-buildvcs=false
for arch in $arches; do
  [ -n "${machine[$arch]:-}" ] || { echo "dist.sh: unsupported architecture $arch (amd64, arm64)" >&2; exit 1; }
  name=twill-$version-linux-$arch
  dir=$out/build/$name
  mkdir -p "$dir/bin" "$dir/cni"
  echo "dist: building $name"
  GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$dir/bin/flanneld" ./cmd/flanneld
  GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$dir/cni/flannel" ./cmd/flannel
  GOARCH=$arch go build -trimpath -ldflags '-s -w' -o "$dir/cni/" "${cni_pkgs[@]}"
  for f in "$dir"/bin/* "$dir"/cni/*; do
    m=$(elf_machine "$f")
    [ "$m" = "${machine[$arch]}" ] || { echo "dist.sh: $f is ELF machine $m, not $arch" >&2; exit 1; }
  done
  if [ "$arch" = "$(go env GOHOSTARCH)" ]; then
    got=$("$dir/bin/flanneld" --version 2>&1 || true)
    grep -qF -- "$version" <<<"$got" || { echo "dist.sh: $dir/bin/flanneld --version printed '$got', not $version" >&2; exit 1; }
  fi
  cp "$out/kube-flannel.yml" "$dir/"
  sed -e "s#@VERSION@#$version#g" -e "s#@ARCH@#$arch#g" -e "s#@IMAGE@#$image#g" -e "s#@CNI_VERSION@#$cni_version#g" \
    dist/README.md >"$dir/README.md"
  (cd "$dir" && find . -type f ! -name SHA256SUMS | sed 's#^\./##' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
  find "$dir" -exec touch -h -d "@$epoch" {} +
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode='u+rw,go+r,go-w' \
    -C "$out/build" -cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"
done
rm -rf "$out/build"
(cd "$out" && sha256sum -- *.tar.gz kube-flannel.yml >SHA256SUMS)
echo "dist: $out"
(cd "$out" && ls -l -- *.tar.gz kube-flannel.yml SHA256SUMS | awk '{print "  " $5 "\t" $9}')
