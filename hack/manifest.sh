#!/usr/bin/env bash
# Renders Documentation/kube-flannel.yml from the chart (chart/twill with its
# default values, in namespace kube-flannel) with real Helm
# (hack/helm-build.sh). `make manifest` writes the file; with no argument the
# manifest goes to standard output, which is what the chart's test compares
# with the committed file.
#
#   hack/manifest.sh [OUTPUT]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
helm=$(bash "$root/hack/helm-build.sh")

render() {
  cat <<'HEADER'
# Twill: a flannel-compatible VXLAN overlay for Kubernetes.
#
#   kubectl apply -f kube-flannel.yml
#
# Apply it to a cluster created without a CNI (kind with
# networking.disableDefaultCNI: true, or kubeadm init
# --pod-network-cidr=10.244.0.0/16). If your cluster's pod CIDR is not
# 10.244.0.0/16, change "Network" in net-conf.json below to match it.
# Dual-stack: add "EnableIPv6": true and "IPv6Network" (the IPv6 pod CIDR,
# e.g. fd00:10:244::/56); IPv6-only: also "EnableIPv4": false.
# Guides, the configuration reference and troubleshooting: Documentation/.
#
# Generated from the Helm chart chart/twill (its default values) by
# `make manifest`: edit the chart, not this file. With Helm, values set the
# network, backend, image and the rest: chart/twill/README.md.
HEADER
  # Helm's "# Source:" lines name the chart's files, and its documents end
  # in blank lines: the manifest needs neither.
  "$helm" template twill "$root/chart/twill" --namespace kube-flannel |
    awk '/^# Source: / { next }
         /^$/ { blank++; next }
         /^---$/ { blank = 0 }
         { while (blank > 0) { print ""; blank-- } print }'
}

if [ $# -eq 0 ]; then
  render
  exit 0
fi
out=$1
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
render >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
