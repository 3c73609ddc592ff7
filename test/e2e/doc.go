// Package e2e is Twill's end-to-end suite: it brings up one real 3-node lab
// (package lab) with Twill applied by Documentation/kube-flannel.yml and
// checks, from pods and from every node's kernel, that the overlay behaves
// like flannel's. The tests are behind the build tag e2e and need root:
//
//	go test -tags e2e -count=1 -timeout 40m -v ./test/e2e/...
//
// or `make e2e`, which builds what the lab needs first. Set TWILL_E2E_LAB to
// the name of a running lab (`twill lab up`) to run against it instead of a
// fresh one; the suite then neither creates nor removes the lab.
package e2e
