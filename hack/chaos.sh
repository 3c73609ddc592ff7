#!/usr/bin/env bash
# The fault suite (test/chaos, build tag chaos): each scenario in a fresh
# namespace harness with a real API server, under traffic. With no argument
# it runs every scenario and writes the "Reliability" section of
# bench/RESULTS.md; with "short" it runs make test's fixed subset (scenario
# 6, and scenario 1 with a 10 s outage) and writes nothing. Scenarios with
# random moments log their seed: CHAOS_SEED=<seed> repeats them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == short ]]; then
	CHAOS_SHORT=1 CGO_ENABLED=1 go test -tags chaos -count=1 -timeout 10m \
		-run 'TestRepairUnderTraffic$|TestAPIServerDown$' ./test/chaos/
	exit
fi
CHAOS_RESULTS="$PWD/bench/RESULTS.md" CGO_ENABLED=1 go test -tags chaos -count=1 -timeout 30m -v ./test/chaos/ 2>&1 | tee /tmp/twill-chaos.log | grep -E '^(=== RUN|--- |    [a-z_]+_test.go:[0-9]+: .*(converged|lost|stale|timed out|want))|^(ok|FAIL)'
exit "${PIPESTATUS[0]}"
