#!/usr/bin/env bash
# `make conformance`: Kubernetes' [sig-network] [Conformance] tests against a
# fresh 3-node lab of its own, the summary written to bench/conformance.md.
# Needs root. Environment: CONFORMANCE_FOCUS (a regular expression on test
# names instead of every network conformance test), CONFORMANCE_NAME (the
# lab's name, default conformance), CONFORMANCE_RESULTS (default
# bench/conformance.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "conformance: the lab needs root; run it as root (sudo make conformance)" >&2
  exit 1
fi
name=${CONFORMANCE_NAME:-conformance}
results=${CONFORMANCE_RESULTS:-bench/conformance.md}
export IMAGE_TOOL=${IMAGE_TOOL:-buildah}
make --no-print-directory image
bash hack/conformance-build.sh >/dev/null

bin/twill lab down --name "$name" >/dev/null
trap 'bin/twill lab down --name "$name" >/dev/null || true' EXIT
bin/twill lab up --name "$name"
args=(--name "$name" --results "$results")
[ -n "${CONFORMANCE_FOCUS:-}" ] && args+=(--focus "$CONFORMANCE_FOCUS")
bin/twill lab conformance "${args[@]}"
