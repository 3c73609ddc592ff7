#!/usr/bin/env bash
# Builds Helm, for the chart's tests and `make manifest`, from its Go module
# through the tools module in hack/tools/helm (the release its go.mod pins)
# into ${TWILL_CACHE:-/var/cache/twill}/helm/<version>/, and prints the
# binary's path. A stamp makes a second run a no-op (hack/lib/cached-build.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/hack/tools/helm
cache=${TWILL_CACHE:-/var/cache/twill}
. "$root/hack/lib/cached-build.sh"

command -v go >/dev/null 2>&1 || { echo "helm-build: go is not installed; install Go 1.26 or newer" >&2; exit 1; }

version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" { print $3 }' "$tools/go.mod")
[ -n "$version" ] || { echo "helm-build: $tools/go.mod does not require helm.sh/helm/v4 on its require line" >&2; exit 1; }
out=$cache/helm/$version
want="$version $(go env GOVERSION) $(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -d' ' -f1)"

build() {
  echo "helm-build: building Helm $version into $out" >&2
  # Helm prints its version from this variable; its release builds set it
  # the same way.
  (cd "$tools" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" -o "$1/helm" helm.sh/helm/v4/cmd/helm)
}
cached_build helm-build "$out" "$want" build helm
