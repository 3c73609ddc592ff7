#!/usr/bin/env bash
# Builds what `twill lab conformance` runs, from k8s.io/kubernetes at the
# lab's Kubernetes version, through the module in hack/tools/conformance:
# e2e-network.test (Kubernetes' e2e suite with its network tests, see
# hack/tools/conformance/network_test.go) and agnhost (the test image's
# program), into ${TWILL_CACHE:-/var/cache/twill}/k8s/<version>/conformance,
# and prints that directory. A stamp makes a second run a no-op.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod=$root/hack/tools/conformance
cache=${TWILL_CACHE:-/var/cache/twill}

command -v go >/dev/null 2>&1 || { echo "conformance-build: go is not installed; install Go 1.26 or newer" >&2; exit 1; }

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$mod/go.mod")
[ -n "$version" ] || { echo "conformance-build: $mod/go.mod does not require k8s.io/kubernetes" >&2; exit 1; }
out=$cache/k8s/$version/conformance
stamp=$out/.stamp
want="$version $(go env GOVERSION) $(cat "$mod/go.mod" "$mod/go.sum" "$mod"/*.go | sha256sum | cut -d' ' -f1)"

complete() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$out/e2e-network.test" ] && [ -x "$out/agnhost" ]
}
if complete; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

echo "conformance-build: building e2e-network.test and agnhost ($version) into $out; several minutes cold" >&2
start=$SECONDS
tmp=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitTreeState=clean"
done
(cd "$mod" && go test -c -trimpath -ldflags "$ldflags" -o "$tmp/e2e-network.test" .)
(cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$tmp/agnhost" k8s.io/kubernetes/test/images/agnhost)
# The agnhost image carries porter's test certificate, as upstream's does.
porter=$(cd "$mod" && go list -f '{{.Dir}}' k8s.io/kubernetes/test/images/agnhost/porter)
cp "$porter/localhost.crt" "$porter/localhost.key" "$tmp/"
mv -f "$tmp/e2e-network.test" "$tmp/agnhost" "$tmp/localhost.crt" "$tmp/localhost.key" "$out/"
echo "$want" > "$stamp"
echo "conformance-build: done in $((SECONDS - start))s" >&2
echo "$out"
