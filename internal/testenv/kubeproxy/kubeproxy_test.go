package kubeproxy

import (
	"strings"
	"testing"
	"time"
)

func TestYAML(t *testing.T) {
	cases := []struct {
		name      string
		c         Config
		want, not []string
	}{
		{"lab defaults", Config{Kubeconfig: "/k", ClusterCIDRs: []string{"10.244.0.0/16"}, NodeName: "n1"},
			[]string{"kubeconfig: /k\n", "clusterCIDR: 10.244.0.0/16\n", "hostnameOverride: n1\n", `healthzBindAddress: "0.0.0.0:10256"`, "mode: iptables\n", "maxPerCore: 0\n"},
			[]string{"iptables:", "syncPeriod"}},
		{"dual-stack, IPv6 first", Config{ClusterCIDRs: []string{"fd00:10:244::/56", "10.244.0.0/16"}, IPv6: true},
			[]string{"clusterCIDR: fd00:10:244::/56,10.244.0.0/16\n", `healthzBindAddress: "[::]:10256"`}, nil},
		{"fast syncs", Config{SyncPeriod: time.Second, MinSyncPeriod: 100 * time.Millisecond},
			[]string{"iptables:\n  syncPeriod: 1s\n  minSyncPeriod: 100ms\n"}, nil},
		{"sync period only", Config{SyncPeriod: 2 * time.Second},
			[]string{"iptables:\n  syncPeriod: 2s\n"}, []string{"minSyncPeriod"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			y := c.c.YAML()
			for _, w := range c.want {
				if !strings.Contains(y, w) {
					t.Errorf("missing %q in\n%s", w, y)
				}
			}
			for _, n := range c.not {
				if strings.Contains(y, n) {
					t.Errorf("unexpected %q in\n%s", n, y)
				}
			}
		})
	}
}
