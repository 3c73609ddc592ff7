// Package chaos is Twill's fault suite: each scenario starts a fresh
// namespace harness (internal/testenv: a real etcd and kube-apiserver,
// node namespaces on a bridge underlay, real flanneld processes), keeps
// pings every 50 ms and a TCP stream flowing both ways between pod
// addresses on two nodes, injects a fault, and checks every node's routes,
// neighbours, FDB entries, rules and guard set against what the Nodes ask
// for (internal/testenv/expected). Each scenario leaves a result record;
// with CHAOS_RESULTS set, the suite writes them as the "Reliability"
// section of that markdown file.
//
// Scenarios that draw random moments (kill -9, churn) log their seed;
// CHAOS_SEED=<seed> repeats a run's draws.
//
// The tests carry the chaos build tag, so that `go test ./...` and the e2e
// step leave them out: `make chaos` runs them all (hack/chaos.sh), and
// `make test` a short fixed subset (CHAOS_SHORT=1).
package chaos
