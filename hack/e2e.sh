#!/usr/bin/env bash
# Runs Twill's end-to-end suite: one real 3-node lab (test/e2e) plus the lab
# packages' own root tests. `make e2e` calls it after `make k8s`. Needs root.
#
# Environment: E2E_RUN (a -run pattern), E2E_TIMEOUT (default 40m),
# TWILL_E2E_NAME (the labs' name, default e2e: give concurrent runs their own),
# TWILL_E2E_LAB (test an already running lab instead of a fresh one).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e: the suite creates network namespaces and runs kubelets; run it as root (sudo make e2e)" >&2
  exit 1
fi

# The lab's images live in buildah's storage (the Debian base is made there),
# so build Twill's with buildah too unless told otherwise.
export IMAGE_TOOL=${IMAGE_TOOL:-buildah}
# The lab imports Twill's image archive; make builds it (and the binaries)
# and is cheap when nothing changed. k8s is cached the same way.
make --no-print-directory image
make --no-print-directory k8s >/dev/null

args=(-tags e2e -count=1 -p 1 -timeout "${E2E_TIMEOUT:-40m}" -v)
[ -n "${E2E_RUN:-}" ] && args+=(-run "$E2E_RUN")
# -p 1: one package at a time, so no two labs compete for the two cores.
# The suites' labs have fixed names and each removes a leftover lab of its
# name before it starts: a second run at the same time (another checkout's
# `make test`) waits for this one instead of removing its labs.
mkdir -p /var/lib/twill-lab
exec flock /var/lib/twill-lab/.e2e.lock go test "${args[@]}" ./test/e2e/... ./lab/...
