#!/usr/bin/env bash
# Installs the Debian packages that Twill's tests and lab use. Needs root on
# Debian or Ubuntu; elsewhere it prints what to install and fails.
set -euo pipefail

# command → package, from hack/deps.txt (`twill lab up` runs this script too)
declare -A want=()
while read -r cmd pkg extra; do
  case "$cmd" in ''|'#'*) continue ;; esac
  if [ -z "$pkg" ] || [ -n "$extra" ]; then
    echo "hack/deps.txt: bad line \"$cmd $pkg $extra\": want \"command package\"" >&2
    exit 1
  fi
  want[$cmd]=$pkg
done < "$(dirname "$0")/deps.txt"
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
for cmd in "${!want[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "$cmd is still missing after installing ${want[$cmd]}: install that package by hand" >&2
    exit 1
  fi
done
