//go:build tools

// Package conformance's tools file records agnhost, the e2e test images'
// program hack/conformance-build.sh builds, so that `go mod` keeps its
// dependencies in go.sum.
package conformance

import (
	_ "k8s.io/kubernetes/test/images/agnhost"
)
