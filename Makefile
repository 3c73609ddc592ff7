# Twill's build, test and lab entry points. Every target installs what it
# needs (Debian packages through hack/deps.sh, Go modules through the module
# proxy), so a fresh Debian/Ubuntu machine needs nothing but `make`.

SHELL := /bin/bash
GO ?= go
VERSION := $(shell cat VERSION)
PKG := github.com/twill-net/twill
LDFLAGS := -s -w -X $(PKG)/version.Version=v$(VERSION)
GOARCH ?= $(shell $(GO) env GOARCH)
BIN := bin
CNI_PLUGINS := \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/ipam/host-local \
	github.com/containernetworking/plugins/plugins/meta/portmap \
	github.com/containernetworking/plugins/plugins/main/loopback

export CGO_ENABLED := 0
export GOFLAGS := -buildvcs=false

.PHONY: all build plugins deps k8s coredns helm manifest conformance-build conformance image image-test lab lab-down test unit e2e bench bench-steady fuzz-long lint dist compare chaos clean

all: build plugins

## build: flanneld, the flannel CNI plugin, the twill CLI and the lab's pause program into bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## plugins: flannel + the standard bridge, host-local, portmap, loopback plugins into bin/cni/
plugins:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cni/flannel ./cmd/flannel
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/cni/ $(CNI_PLUGINS)

## deps: install the Debian packages the tests and the lab use (as root)
deps:
	bash hack/deps.sh

## k8s: build the Kubernetes binaries for the lab (cached after the first run)
k8s:
	bash hack/k8s-build.sh

## coredns: build CoreDNS, the lab's cluster DNS, from its Go module (cached)
coredns:
	bash hack/coredns-build.sh

## helm: build Helm from its Go module for the chart's tests (cached)
helm:
	@bash hack/helm-build.sh >/dev/null

## manifest: regenerate Documentation/kube-flannel.yml from the chart (chart/twill)
manifest: helm
	bash hack/manifest.sh Documentation/kube-flannel.yml

## conformance-build: build Kubernetes' network e2e suite and agnhost for the lab (cached)
conformance-build:
	bash hack/conformance-build.sh

## conformance: Kubernetes' [sig-network] [Conformance] tests on a fresh lab; summary in bench/conformance.md
conformance: deps build plugins k8s conformance-build
	bash hack/conformance.sh

## image: build Twill's container image with docker, podman or buildah
image: build plugins
	bash hack/image.sh

## image-test: build the image offline with buildah and check what is inside
image-test: deps build plugins
	bash hack/image-test.sh

## lab: a 3-node Kubernetes cluster in network namespaces, with Twill applied
lab: deps build plugins k8s
	$(BIN)/twill lab up

## lab-down: remove everything the lab made
lab-down: build
	$(BIN)/twill lab down

## test: vet, unit and root tests with -race, then the end-to-end suite
test: deps build plugins unit e2e

unit: helm
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags chaos ./test/chaos/
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	bash hack/fuzz.sh

e2e: k8s conformance-build
	CGO_ENABLED=1 $(GO) test -race -tags e2e -count=1 -timeout 10m ./daemon/... ./chart/...
	bash hack/chaos.sh short
	bash hack/e2e.sh

## bench: benchmarks; results go to bench/RESULTS.md
bench: deps build plugins k8s
	bash hack/bench.sh

## bench-steady: the steady-state benchmark in its short form (500 peers, 500 status updates in 10 s); results go to bench/RESULTS.md
bench-steady: deps build k8s
	STEADY_PEERS=500 STEADY_UPDATES=500 STEADY_DURATION=10s STEADY_ANNOTATION_CHANGES=10 bash hack/bench.sh steady

## fuzz-long: every fuzz target for 10^6 executions; results go to bench/RESULTS.md
fuzz-long:
	$(GO) run ./bench/fuzz -fuzztime $${FUZZTIME:-1000000x} -results bench/RESULTS.md

## chaos: the fault suite (test/chaos): every scenario under traffic; results go to the Reliability section of bench/RESULTS.md
chaos: deps k8s
	bash hack/chaos.sh

## lint: gofmt, go mod tidy, go vet and staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags e2e,chaos ./...

## dist: release tarballs per architecture with checksums
dist:
	bash hack/dist.sh

## compare: the full overlay-vs-native comparison in the lab
compare: deps build plugins k8s
	$(BIN)/twill lab compare

clean:
	rm -rf $(BIN) _output
