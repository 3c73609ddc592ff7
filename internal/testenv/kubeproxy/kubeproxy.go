// Package kubeproxy writes kube-proxy's configuration for a node that shares
// its kernel with other nodes: the lab's nodes (lab/node) and the namespace
// harness's (the fault suite's kube-proxy contention scenario).
package kubeproxy

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is what differs between the nodes and the users of this package.
type Config struct {
	// Kubeconfig is kube-proxy's client kubeconfig (user system:kube-proxy).
	Kubeconfig string
	// ClusterCIDRs are the pod networks, one per family; kube-proxy runs
	// one iptables proxier per family.
	ClusterCIDRs []string
	// NodeName is the node's name in the API (--hostname-override).
	NodeName string
	// IPv6 says the node's primary family is IPv6: the health server then
	// listens on [::].
	IPv6 bool
	// SyncPeriod and MinSyncPeriod are the iptables proxier's: a full
	// resync every SyncPeriod, and at most one sync per MinSyncPeriod after
	// changes; zero keeps kube-proxy's defaults (30 s and 1 s; kube-proxy
	// reads a zero minSyncPeriod as unset).
	SyncPeriod, MinSyncPeriod time.Duration
}

// YAML is c as a KubeProxyConfiguration in iptables mode.
func (c Config) YAML() string {
	healthz := "0.0.0.0:10256"
	if c.IPv6 {
		healthz = "[::]:10256"
	}
	sync := ""
	if c.SyncPeriod > 0 || c.MinSyncPeriod > 0 {
		sync = "iptables:\n"
		if c.SyncPeriod > 0 {
			sync += "  syncPeriod: " + c.SyncPeriod.String() + "\n"
		}
		if c.MinSyncPeriod > 0 {
			sync += "  minSyncPeriod: " + c.MinSyncPeriod.String() + "\n"
		}
	}
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
healthzBindAddress: %q
metricsBindAddress: 127.0.0.1:10249
# Zero leaves the host-wide conntrack sysctls alone: nodes share a kernel.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
%s`, c.Kubeconfig, strings.Join(c.ClusterCIDRs, ","), c.NodeName, healthz, sync)
}

// Write writes c's YAML to path, for kube-proxy's --config.
func Write(path string, c Config) error {
	if err := os.WriteFile(path, []byte(c.YAML()), 0o644); err != nil {
		return fmt.Errorf("writing kube-proxy config: %w", err)
	}
	return nil
}
