#!/usr/bin/env bash
# Runs Twill's benchmarks and writes their sections of bench/RESULTS.md.
# Needs root (network namespaces) and, for flanneld, the Kubernetes
# binaries (make k8s). `make bench` builds everything first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root to create network namespaces (sudo make bench)" >&2
  exit 1
fi
go run ./bench/cni -bin bin/cni -pods "${CNI_PODS:-200}" -results bench/RESULTS.md
go run ./bench/flanneld -flanneld bin/flanneld -peers "${FLANNELD_PEERS:-1000,5000}" -results bench/RESULTS.md
echo "results: bench/RESULTS.md"
