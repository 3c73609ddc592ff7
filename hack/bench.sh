#!/usr/bin/env bash
# Runs Twill's benchmarks and writes their sections of bench/RESULTS.md.
# Needs root (network namespaces) and, for flanneld, the Kubernetes
# binaries (make k8s). `make bench` builds everything first.
#
# `hack/bench.sh steady` runs only the steady-state benchmark; STEADY_PEERS,
# STEADY_UPDATES, STEADY_DURATION and STEADY_ANNOTATION_CHANGES size it
# (`make bench-steady` runs a short form: 500 peers, 500 updates in 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root to create network namespaces (sudo make bench)" >&2
  exit 1
fi
steady() {
  go run ./bench/flanneld -steady -flanneld bin/flanneld -peers "${STEADY_PEERS:-5000}" \
    -updates "${STEADY_UPDATES:-5000}" -duration "${STEADY_DURATION:-60s}" \
    -annotation-changes "${STEADY_ANNOTATION_CHANGES:-50}" -results bench/RESULTS.md
}
if [ "${1:-}" = steady ]; then
  steady
  echo "results: bench/RESULTS.md"
  exit 0
fi
go run ./bench/cni -bin bin/cni -pods "${CNI_PODS:-200}" -results bench/RESULTS.md
go run ./bench/flanneld -flanneld bin/flanneld -peers "${FLANNELD_PEERS:-1000,5000}" -results bench/RESULTS.md
steady
echo "results: bench/RESULTS.md"
