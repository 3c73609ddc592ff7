#!/usr/bin/env bash
# Builds CoreDNS, the lab's cluster DNS, from its Go module through the tools
# module in hack/tools/coredns (the release go.mod pins, with the plugins
# main.go lists) into ${TWILL_CACHE:-/var/cache/twill}/coredns/<version>/,
# and prints the binary's path. A stamp makes a second run a no-op
# (hack/lib/cached-build.sh); a cold build takes 2-4 minutes on 2 cores.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/hack/tools/coredns
cache=${TWILL_CACHE:-/var/cache/twill}
. "$root/hack/lib/cached-build.sh"

command -v go >/dev/null 2>&1 || { echo "coredns-build: go is not installed; install Go 1.26 or newer" >&2; exit 1; }

version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$tools/go.mod")
[ -n "$version" ] || { echo "coredns-build: $tools/go.mod does not require github.com/coredns/coredns" >&2; exit 1; }
out=$cache/coredns/$version
want="$version $(go env GOVERSION) $(cat "$tools/go.mod" "$tools/go.sum" "$tools/main.go" | sha256sum | cut -d' ' -f1)"

build() {
  echo "coredns-build: building CoreDNS $version into $out; 2-4 min cold, seconds warm" >&2
  (cd "$tools" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$1/coredns" .)
}
cached_build coredns-build "$out" "$want" build coredns
