#!/usr/bin/env bash
# Proves offline that images/Dockerfile builds and that the image works: makes
# the debian:bookworm-slim base locally (hack/debian-base.sh), builds the image
# with buildah (hack/image.sh), then checks inside it that flanneld prints this
# build's version, the CNI plugins run, the iptables wrapper picks the
# back-end a node uses, install-cni-plugins never replaces a node's own
# plugins, and the archive and the manifest carry the same reference.
#
# The iptables checks run the image in network namespaces made here (and
# removed on exit); nothing touches the host's own network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "image-test.sh: needs root (buildah and network namespaces); run it as root" >&2
  exit 1
fi

version=v$(tr -d '[:space:]' <VERSION)
ref=ghcr.io/twill-net/twill:$version
archive=_output/images/twill.tar
plugins=(flannel bridge host-local portmap loopback)

bash hack/debian-base.sh
IMAGE_TOOL=buildah bash hack/image.sh

tag=twill-imgtest-$$
ctrs=()
netnses=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$tag.XXXXXX")
cpid=
cleanup() {
  local c n
  if [ -n "$cpid" ]; then kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true; fi
  for c in "${ctrs[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  for n in "${netnses[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }

# container: sets c to a fresh working container of the image (the iptables
# wrapper rewrites its links on first use, so each case starts from the
# image). Not a $(…) subshell, so cleanup sees every container.
container() {
  c=$(buildah from --pull=never --name "$tag-${#ctrs[@]}" "$ref")
  ctrs+=("$c")
}
# run CONTAINER NETWORK ARGS...: the command with flanneld's capabilities.
run() {
  local c=$1 net=$2
  shift 2
  buildah run --cap-add CAP_NET_ADMIN,CAP_NET_RAW --network "$net" "$c" -- "$@"
}
# netns NAME: sets n to a new network namespace, removed on exit.
netns() {
  n=$tag-$1
  ip netns add "$n"
  netnses+=("$n")
}

# 1. flanneld prints the version the tag carries.
container
out=$(run "$c" none /usr/local/bin/flanneld --version 2>&1) || true
if grep -qF -- "$version" <<<"$out"; then pass "flanneld --version: $out"; else fail "flanneld --version printed '$out', want $version"; fi

# 2. Every plugin answers CNI's VERSION command.
for p in "${plugins[@]}"; do
  out=$(run "$c" none env CNI_COMMAND=VERSION "/opt/cni/bin/$p" </dev/null 2>&1) || true
  if grep -q '"supportedVersions":\[.*"1.0.0"' <<<"$out"; then pass "$p runs: $out"; else fail "$p VERSION printed '$out'"; fi
done

# 3. The iptables wrapper follows the node: name | setup | want.
iptables_case() {
  local name=$1 setup=$2 want=$3 env=$4 n c out
  netns "$name"
  ip netns exec "$n" sh -c "$setup"
  container
  out=$(run "$c" "ns:/run/netns/$n" env $env iptables --version 2>&1) || true
  if grep -qF "($want)" <<<"$out"; then
    pass "iptables ($name): $out"
  else
    fail "iptables ($name): got '$out', want ($want)"
  fi
  # The chosen back-end must also see the node's rules.
  out=$(run "$c" "ns:/run/netns/$n" iptables-save 2>&1) || true
  if [ -n "$setup" ] && [ "$setup" != : ] && ! grep -q -- '192.0.2\|KUBE-IPTABLES-HINT' <<<"$out"; then
    fail "iptables-save ($name) does not show the node's rules: $out"
  fi
}
iptables_case empty : nf_tables ""
iptables_case legacy-rules 'iptables-legacy -A INPUT -s 192.0.2.1 -j ACCEPT' legacy ""
iptables_case nft-rules 'iptables-nft -A INPUT -s 192.0.2.1 -j ACCEPT' nf_tables ""
iptables_case legacy-hint 'iptables-nft -A INPUT -s 192.0.2.1 -j ACCEPT; iptables-nft -A INPUT -s 192.0.2.2 -j ACCEPT; iptables-legacy -t mangle -N KUBE-IPTABLES-HINT' legacy ""
iptables_case forced : legacy TWILL_IPTABLES_MODE=legacy

# 3b. nft is there and works in a node's namespace (flanneld's nftables
#     mode runs it; people debug with it).
container
netns nft
out=$(run "$c" "ns:/run/netns/$n" sh -c 'nft add table ip imgtest && nft list tables' 2>&1) || true
if grep -q "table ip imgtest" <<<"$out"; then pass "nft runs in the image"; else fail "nft in the image: $out"; fi

# 4. install-cni-plugins: flannel always, the others only where missing.
node=$tmp/opt-cni-bin
mkdir -p "$node"
echo "the node's own bridge" >"$node/bridge"
chmod 0755 "$node/bridge"
container
for round in 1 2; do
  if ! out=$(buildah run --network none -v "$node:/host/opt/cni/bin" "$c" -- install-cni-plugins /host/opt/cni/bin 2>&1); then
    fail "install-cni-plugins (round $round): $out"
  fi
done
[ "$(cat "$node/bridge")" = "the node's own bridge" ] && pass "install-cni-plugins kept the node's bridge" || fail "install-cni-plugins replaced the node's bridge"
for p in flannel host-local portmap loopback; do
  if [ -x "$node/$p" ] && cmp -s "$node/$p" "bin/cni/$p"; then pass "install-cni-plugins installed $p"; else fail "install-cni-plugins did not install $p"; fi
done
left=$(find "$node" -name '.*' -type f | wc -l)
[ "$left" -eq 0 ] && pass "install-cni-plugins left no temporary files" || fail "install-cni-plugins left $left temporary files in $node"

# 5. The archive carries the reference ctr import needs, and the manifest
#    deploys exactly this image.
if tar -xOf "$archive" manifest.json | grep -qF "\"$ref\""; then pass "$archive is tagged $ref"; else fail "$archive's manifest.json lacks $ref"; fi
want=$(grep -c 'image: ' Documentation/kube-flannel.yml)
got=$(grep -cF "image: $ref" Documentation/kube-flannel.yml)
if [ "$want" -gt 0 ] && [ "$want" -eq "$got" ]; then pass "Documentation/kube-flannel.yml uses $ref"; else fail "Documentation/kube-flannel.yml: $got of $want images are $ref; update the image lines to the VERSION file"; fi

# 6. containerd imports the archive with its reference, as the lab and kind
#    nodes do: a private containerd (own root, state and socket; no CRI).
if command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; then
  cdir=$tmp/containerd
  mkdir -p "$cdir"
  cat >"$cdir/config.toml" <<END
version = 2
root = "$cdir/root"
state = "$cdir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$cdir/sock"
[ttrpc]
  address = "$cdir/sock.ttrpc"
END
  containerd --config "$cdir/config.toml" >"$cdir/log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do [ -S "$cdir/sock" ] && break; sleep 0.1; done
  if out=$(ctr --address "$cdir/sock" -n k8s.io images import "$archive" 2>&1) &&
    ctr --address "$cdir/sock" -n k8s.io images ls -q | grep -qxF "$ref"; then
    pass "ctr -n k8s.io images import: $ref"
  else
    fail "ctr -n k8s.io images import $archive: $out"
  fi
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  cpid=
else
  echo "skip ctr import: containerd or ctr is not installed"
fi

echo "image $ref: archive $(du -h "$archive" | cut -f1)"
if [ "$failures" -gt 0 ]; then
  echo "image-test: $failures check(s) failed" >&2
  exit 1
fi
echo "image-test: all checks passed"
