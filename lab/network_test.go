package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
)

// TestUnderlayTopology wires a dual-stack lab's network without the rest of
// the lab: the underlay with both segments and the internet, one node on
// each segment. The names and addresses are those of kind's network that
// users and the e2e suite rely on, and every path a packet can take works,
// in both families.
func TestUnderlayTopology(t *testing.T) {
	netns.RequireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (make deps installs iputils-ping)")
	}
	name := fmt.Sprintf("tnet%d", os.Getpid()%100000)
	flat, routed := nodeName(name, 1), nodeName(name, 2)
	t.Cleanup(func() {
		for _, ns := range []string{flat, routed, underlayNS(name), internetNS(name)} {
			if err := netns.Delete(ns); err != nil {
				t.Errorf("removing %s: %v", ns, err)
			}
		}
	})
	dual := []family.Family{family.IPv4, family.IPv6}
	if err := createUnderlay(name, dual, true); err != nil {
		t.Fatal(err)
	}
	if _, err := attachNode(name, flat, 1, flatSegment, dual); err != nil {
		t.Fatal(err)
	}
	if _, err := attachNode(name, routed, 2, routedSegment, dual); err != nil {
		t.Fatal(err)
	}
	run := func(ns string, args ...string) string {
		t.Helper()
		out, err := netns.Exec(ns, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}

	under := underlayNS(name)
	for dev, want := range map[string]string{"br0": "172.18.0.1/16", "br1": "172.19.0.1/16", "inet0": "203.0.113.1/24"} {
		if got := run(under, "ip", "-o", "-4", "addr", "show", "dev", dev); !strings.Contains(got, "inet "+want+" ") {
			t.Errorf("underlay %s: %q, want %s", dev, got, want)
		}
	}
	for dev, want := range map[string]string{"br0": "fc00:f853:ccd:e793::1/64", "br1": "fc00:f853:ccd:e794::1/64", "inet0": "2001:db8::1/64"} {
		if got := run(under, "ip", "-o", "-6", "addr", "show", "dev", dev, "scope", "global"); !strings.Contains(got, "inet6 "+want+" ") || strings.Contains(got, "tentative") {
			t.Errorf("underlay %s: %q, want %s (not tentative)", dev, got, want)
		}
	}
	for port, br := range map[string]string{"veth1": "br0", "veth2": "br1"} {
		if got := run(under, "ip", "-o", "link", "show", port); !strings.Contains(got, "master "+br) || !strings.Contains(got, "state UP") {
			t.Errorf("underlay port %s: %q, want up on %s", port, got, br)
		}
	}
	if got := run(under, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"); got != "1\n1" {
		t.Errorf("underlay ip_forward, IPv6 forwarding = %q, want 1, 1", got)
	}
	for _, c := range []struct{ ns, addr, route, addr6, route6 string }{
		{flat, "172.18.0.3/16", "default via 172.18.0.1 dev eth0", "fc00:f853:ccd:e793::3/64", "default via fc00:f853:ccd:e793::1 dev eth0 metric 1024 pref medium"},
		{routed, "172.19.0.4/16", "default via 172.19.0.1 dev eth0", "fc00:f853:ccd:e794::4/64", "default via fc00:f853:ccd:e794::1 dev eth0 metric 1024 pref medium"},
		{internetNS(name), "203.0.113.10/24", "default via 203.0.113.1 dev eth0", "2001:db8::10/64", "default via 2001:db8::1 dev eth0 metric 1024 pref medium"},
	} {
		if got := run(c.ns, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(got, "inet "+c.addr+" ") {
			t.Errorf("%s eth0: %q, want %s", c.ns, got, c.addr)
		}
		if got := run(c.ns, "ip", "route", "show", "default"); got != c.route {
			t.Errorf("%s default route: %q, want %q", c.ns, got, c.route)
		}
		if got := run(c.ns, "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "global"); !strings.Contains(got, "inet6 "+c.addr6+" ") {
			t.Errorf("%s eth0: %q, want %s", c.ns, got, c.addr6)
		}
		if got := run(c.ns, "ip", "-6", "route", "show", "default"); got != c.route6 {
			t.Errorf("%s IPv6 default route: %q, want %q", c.ns, got, c.route6)
		}
		if got := run(c.ns, "ip", "-o", "link", "show", "lo"); !strings.Contains(got, "UP") {
			t.Errorf("%s lo: %q, want up", c.ns, got)
		}
	}
	// eth0's MAC follows the node's address, as Docker's does.
	for ns, want := range map[string]string{flat: "link/ether 02:42:ac:12:00:03 ", routed: "link/ether 02:42:ac:13:00:04 "} {
		if got := run(ns, "ip", "-o", "link", "show", "eth0"); !strings.Contains(got, want) {
			t.Errorf("%s eth0: %q, want %s", ns, got, want)
		}
	}
	for _, ns := range []string{flat, routed} {
		if got := run(ns, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/all/rp_filter", "/proc/sys/net/ipv6/conf/all/forwarding"); got != "1\n0\n1" {
			t.Errorf("%s ip_forward, rp_filter, IPv6 forwarding = %q, want 1, 0, 1", ns, got)
		}
	}
	run(flat, "ping", "-c", "1", "-W", "5", "172.19.0.4")
	run(routed, "ping", "-c", "1", "-W", "5", InternetIP.String())
	run(flat, "ping", "-6", "-c", "1", "-W", "5", "fc00:f853:ccd:e794::4")
	run(routed, "ping", "-6", "-c", "1", "-W", "5", InternetAddr(family.IPv6).String())

	if err := detachNode(name, 2); err != nil {
		t.Fatal(err)
	}
	if out, err := netns.Exec(under, "ip", "link", "show", "veth2"); err == nil {
		t.Errorf("veth2 left after detachNode: %s", out)
	}
	if err := detachNode(name, 2); err != nil {
		t.Errorf("second detachNode: %v", err)
	}
}
