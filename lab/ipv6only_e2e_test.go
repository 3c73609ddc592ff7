//go:build e2e

package lab

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestIPv6Only brings up a 2-node IPv6-only lab (kind's ipFamily: ipv6)
// and checks the IPv4-less path end to end: the API server is advertised
// and reached on IPv6, nodes and pods have no IPv4 address, flanneld keeps
// no IPv4 device, route or rule of its own (subnet.env has no IPv4 keys),
// and pods on the two nodes reach each other through flannel-v6.1.
func TestIPv6Only(t *testing.T) {
	ctx, c := upLab(t, Options{Name: e2eName("ipv6"), Nodes: 2, CNI: "twill", Backend: "vxlan", IPFamily: IPv6}, 15*time.Minute)

	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if want := "server: https://[fc00:f853:ccd:e793::2]:6443"; !strings.Contains(string(kc), want) {
		t.Errorf("the admin kubeconfig lacks %q:\n%s", want, kc)
	}
	if out, err := c.Kubectl(ctx, "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIPs}"); err != nil || out != `["fd00:10:96::1"]` {
		t.Errorf("Service kubernetes has the ClusterIPs %s (%v), want only fd00:10:96::1", out, err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if len(s.PodCIDRs) != 1 || !strings.HasPrefix(s.PodCIDR, "fd00:10:244:") {
			t.Errorf("%s: podCIDRs %v, want one IPv6 podCIDR", s.Name, s.PodCIDRs)
		}
		env := s.SubnetEnvText
		if strings.Contains(env, "FLANNEL_NETWORK=") || strings.Contains(env, "FLANNEL_SUBNET=") || !strings.Contains(env, "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\n") || !strings.Contains(env, "FLANNEL_IPV6_SUBNET=") {
			t.Errorf("%s: subnet.env has IPv4 keys or lacks the IPv6 ones:\n%s", s.Name, env)
		}
	}

	// Nothing IPv4 of ours on any node: no address but loopback's, no
	// route, no flannel.1, no FLANNEL chain in iptables; flannel-v6.1 and
	// the ip6tables chains are there instead.
	for _, n := range c.Nodes {
		for _, chk := range []struct {
			cmd       string
			want, not []string
		}{
			{cmd: "ip -4 -o addr show | grep -v ' lo '", not: []string{"inet "}},
			{cmd: "ip -4 route show table all | grep -v ' dev lo '", not: []string{"."}},
			{cmd: "ip -o link show", want: []string{"flannel-v6.1:"}, not: []string{"flannel.1:"}},
			{cmd: "iptables-save", not: []string{"FLANNEL"}},
			{cmd: "ip6tables-save", want: []string{":FLANNEL-POSTRTG", ":FLANNEL-FWD", "-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8"}},
		} {
			out, _ := c.Exec(ctx, n.Name, "sh", "-c", chk.cmd)
			for _, w := range chk.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s: `%s` lacks %q:\n%s", n.Name, chk.cmd, w, out)
				}
			}
			for _, w := range chk.not {
				if strings.Contains(out, w) {
					t.Errorf("%s: `%s` shows %q:\n%s", n.Name, chk.cmd, w, out)
				}
			}
		}
	}

	pods := runLabPods(ctx, t, c)
	cp, worker := pods[c.Nodes[0].Name], pods[c.Nodes[1].Name]
	for _, p := range []labPod{cp, worker} {
		if p.ip.To4() != nil {
			t.Errorf("pod %s has the IPv4 address %s", p.name, p.ip)
		}
		if out, err := c.Kubectl(ctx, "exec", p.name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("pod %s: ip -4 addr show eth0 = %q (%v), want nothing", p.name, out, err)
		}
	}
	for _, p := range [][2]labPod{{cp, worker}, {worker, cp}} {
		took, err := poll(ctx, 30*time.Second, func() error { return pingFromPod(ctx, c, p[0].name, p[1].ip.String()) })
		if err != nil {
			t.Errorf("pod %s cannot reach %s over IPv6: %v", p[0].name, p[1].ip, err)
			continue
		}
		t.Logf("pod %s reaches %s over flannel-v6.1 (after %v)", p[0].name, p[1].ip, took.Round(time.Millisecond))
	}
}
