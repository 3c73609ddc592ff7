#!/usr/bin/env bash
# Runs the fuzz targets of the configuration parsers (CNI plugin, subnet.env,
# net-conf.json, and the node list skimmer) briefly
# (make test) or longer by hand: FUZZTIME=10m hack/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
go test -run='^$' -fuzz='^FuzzDelegateConfig$' -fuzztime="$FUZZTIME" ./cniplugin
go test -run='^$' -fuzz='^FuzzParse$' -fuzztime="$FUZZTIME" ./subnet/subnetenv
go test -run='^$' -fuzz='^FuzzParse$' -fuzztime="$FUZZTIME" ./netconf
go test -run='^$' -fuzz='^FuzzSkimNodeList$' -fuzztime="$FUZZTIME" ./subnet/kube
