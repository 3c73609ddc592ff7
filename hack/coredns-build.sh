#!/usr/bin/env bash
# Builds CoreDNS, the lab's cluster DNS, from its Go module through the tools
# module in hack/tools/coredns (the release go.mod pins, with the plugins
# main.go lists) into ${TWILL_CACHE:-/var/cache/twill}/coredns/<version>/,
# and prints the binary's path. A stamp makes a second run a no-op; a cold
# build takes 2-4 minutes on 2 cores.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/hack/tools/coredns
cache=${TWILL_CACHE:-/var/cache/twill}

command -v go >/dev/null 2>&1 || { echo "coredns-build: go is not installed; install Go 1.26 or newer" >&2; exit 1; }

version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$tools/go.mod")
[ -n "$version" ] || { echo "coredns-build: $tools/go.mod does not require github.com/coredns/coredns" >&2; exit 1; }
out=$cache/coredns/$version
bin=$out/coredns
stamp=$out/.stamp
want="$version $(go env GOVERSION) $(cat "$tools/go.mod" "$tools/go.sum" "$tools/main.go" | sha256sum | cut -d' ' -f1)"

complete() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin" ]; }

if complete; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out"
# One build at a time: a second caller waits, then finds the stamp.
exec 9>"$out/.lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

echo "coredns-build: building CoreDNS $version into $out; 2-4 min cold, seconds warm" >&2
start=$SECONDS
tmp=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tools" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)
mv -f "$tmp/coredns" "$bin"
echo "$want" > "$stamp"
echo "coredns-build: done in $((SECONDS - start))s" >&2
echo "$bin"
