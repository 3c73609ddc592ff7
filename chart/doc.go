// Package chart holds the tests of Twill's Helm chart, chart/twill: the
// committed Documentation/kube-flannel.yml is the chart's rendering with
// its defaults (hack/manifest.sh, `make manifest`), `helm lint` passes, the
// values in testdata render what they say, bad values fail with an error
// naming them, and (chart_e2e_test.go, root) a real API server accepts
// every rendering. Helm is the real command, built by hack/helm-build.sh.
package chart
