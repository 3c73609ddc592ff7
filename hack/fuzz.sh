#!/usr/bin/env bash
# Runs the fuzz targets of the configuration parsers (CNI plugin, subnet.env,
# net-conf.json, and the node list skimmer) briefly
# (make test) or longer by hand: FUZZTIME=10000000x hack/fuzz.sh
#
# The default budget is a count of executions, not a duration: with a
# duration, Go before 1.27 can fail a target with a bare "context deadline
# exceeded" when a busy worker misses the end of the window (golang/go#75804;
# seen here in CI on go1.26.8 under load). A count has no deadline to miss.
# 100000 executions take 2-9 s a target on our 2-core machines.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-100000x}
go test -run='^$' -fuzz='^FuzzDelegateConfig$' -fuzztime="$FUZZTIME" ./cniplugin
go test -run='^$' -fuzz='^FuzzParse$' -fuzztime="$FUZZTIME" ./subnet/subnetenv
go test -run='^$' -fuzz='^FuzzParse$' -fuzztime="$FUZZTIME" ./netconf
go test -run='^$' -fuzz='^FuzzSkimNodeList$' -fuzztime="$FUZZTIME" ./subnet/kube
