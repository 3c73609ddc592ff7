#!/usr/bin/env bash
# The fault suite (test/chaos, build tag chaos): each scenario in a fresh
# namespace harness with a real API server, under traffic. With no argument
# it runs every scenario and writes the "Reliability" section of
# bench/RESULTS.md; with "short" it runs make test's fixed subset and writes
# nothing: scenario 6, scenario 1 with a 10 s outage, and the scenarios of
# behaviour no other test of make test runs against real processes: a public
# IP change (5), subnet.env unwritable (8) and conflicting Nodes (9). Scenarios with
# random moments log their seed: CHAOS_SEED=<seed> repeats them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == short ]]; then
	CHAOS_SHORT=1 CGO_ENABLED=1 go test -tags chaos -count=1 -timeout 10m \
		-run 'TestRepairUnderTraffic$|TestAPIServerDown$|TestPublicIPChange$|TestSubnetFileUnwritable$|TestConflicts$' ./test/chaos/
	exit
fi
CHAOS_RESULTS="$PWD/bench/RESULTS.md" CGO_ENABLED=1 go test -tags chaos -count=1 -timeout 30m -v ./test/chaos/ 2>&1 | tee /tmp/twill-chaos.log | grep -E '^(=== RUN|--- |    [a-z_]+_test.go:[0-9]+: .*(converged|lost|stale|timed out|want))|^(ok|FAIL)'
exit "${PIPESTATUS[0]}"
