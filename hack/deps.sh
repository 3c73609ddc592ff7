#!/usr/bin/env bash
# Installs the Debian packages that Twill's tests and lab use. Needs root on
# Debian or Ubuntu; elsewhere it prints what to install and fails.
set -euo pipefail

# command → package
declare -A want=(
  [iptables]=iptables
  [ip]=iproute2
  [etcd]=etcd-server
  [containerd]=containerd
  [runc]=runc
  [buildah]=buildah
  [debootstrap]=debootstrap
  [tcpdump]=tcpdump
  [iperf3]=iperf3
  [conntrack]=conntrack
  [ethtool]=ethtool
  [nsenter]=util-linux
  [ping]=iputils-ping
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing packages: $pkgs— install them (as root on Debian/Ubuntu: apt-get install $pkgs)" >&2
  exit 1
fi
echo "installing: $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
