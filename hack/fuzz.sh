#!/usr/bin/env bash
# Runs every fuzz target listed in hack/fuzz-targets.txt (the parsers of
# outside input) briefly (make test) or longer: FUZZTIME=10000000x
# hack/fuzz.sh, or `make fuzz-long`, which also records the results.
#
# The default budget is a count of executions, not a duration: with a
# duration, Go before 1.27 can fail a target with a bare "context deadline
# exceeded" when a busy worker misses the end of the window (golang/go#75804;
# seen here in CI on go1.26.8 under load). A count has no deadline to miss.
# 100000 executions take 2-9 s a target on our 2-core machines.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-100000x}
grep -v '^#' hack/fuzz-targets.txt | while read -r pkg target; do
  [ -n "$pkg" ] || continue
  go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg"
done
