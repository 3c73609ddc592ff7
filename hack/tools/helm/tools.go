//go:build tools

// Package tools records the helm command built by hack/helm-build.sh, so
// that `go mod` keeps its dependencies in go.sum.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
