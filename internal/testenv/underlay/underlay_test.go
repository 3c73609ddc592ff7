package underlay

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/twill-net/twill/internal/testenv/netns"
)

func requirePing(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (make deps installs iputils-ping)")
	}
}

// TestBridgeAttachDetach builds a two-subnet underlay with a node on each
// subnet: both reach their gateway and each other through the routing
// underlay, and a detached node is cut off.
func TestBridgeAttachDetach(t *testing.T) {
	under, n1, n2 := netns.New(t), netns.New(t), netns.New(t)
	requirePing(t)
	if err := Bridge(under.Path(), "br0", "172.18.0.1/16", "172.20.0.1/16"); err != nil {
		t.Fatal(err)
	}
	if err := netns.SetSysctl(under.Path(), "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := Attach(under.Path(), "br0", "v1", n1.Path(), []string{"172.18.0.10/16"}, []string{"172.18.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := Attach(under.Path(), "br0", "v2", n2.Path(), []string{"172.20.0.10/16"}, []string{"172.20.0.1"}); err != nil {
		t.Fatal(err)
	}

	br := under.Run(t, "ip", "-o", "-4", "addr", "show", "dev", "br0")
	for _, want := range []string{"inet 172.18.0.1/16", "inet 172.20.0.1/16"} {
		if !strings.Contains(br, want) {
			t.Errorf("br0 lacks %s:\n%s", want, br)
		}
	}
	if port := under.Run(t, "ip", "-o", "link", "show", "v1"); !strings.Contains(port, "master br0") || !strings.Contains(port, "state UP") {
		t.Errorf("port v1: %q, want on br0 and up", port)
	}
	if eth0 := n1.Run(t, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(eth0, "inet 172.18.0.10/16") {
		t.Errorf("node eth0: %q", eth0)
	}
	if route := n1.Run(t, "ip", "route", "show", "default"); strings.TrimSpace(route) != "default via 172.18.0.1 dev eth0" {
		t.Errorf("node default route: %q", route)
	}
	n1.Run(t, "ping", "-c", "1", "-W", "5", "172.18.0.1")
	n1.Run(t, "ping", "-c", "1", "-W", "5", "172.20.0.10")

	if err := Detach(under.Path(), "v2"); err != nil {
		t.Fatal(err)
	}
	if out, err := n2.Exec("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("eth0 left in the detached node: %s", out)
	}
	if err := Detach(under.Path(), "v2"); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if err := Detach(netns.Path("twill-no-such-namespace"), "v2"); err != nil {
		t.Errorf("Detach in a missing namespace: %v", err)
	}
}

// TestConnect checks plain pairs: between two namespaces with addresses of
// both families and a default route per family, and both ends in one
// namespace.
func TestConnect(t *testing.T) {
	a, b := netns.New(t), netns.New(t)
	requirePing(t)
	err := Connect(End{NS: a.Path(), Name: "inet0", Addrs: []string{"203.0.113.1/24", "2001:db8::1/64"}},
		End{NS: b.Path(), Name: "eth0", Addrs: []string{"203.0.113.10/24", "2001:db8::10/64"}, Gateways: []string{"203.0.113.1", "2001:db8::1"}})
	if err != nil {
		t.Fatal(err)
	}
	if route := b.Run(t, "ip", "route", "show", "default"); strings.TrimSpace(route) != "default via 203.0.113.1 dev eth0" {
		t.Errorf("default route: %q", route)
	}
	if route := b.Run(t, "ip", "-6", "route", "show", "default"); !strings.HasPrefix(strings.TrimSpace(route), "default via 2001:db8::1 dev eth0 ") {
		t.Errorf("IPv6 default route: %q", route)
	}
	// Without duplicate address detection the address is usable at once:
	// no "tentative" flag, and the first ping is answered.
	if addr := b.Run(t, "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "global"); !strings.Contains(addr, "2001:db8::10/64") || strings.Contains(addr, "tentative") {
		t.Errorf("IPv6 address: %q, want 2001:db8::10/64, not tentative", addr)
	}
	b.Run(t, "ping", "-c", "1", "-W", "5", "203.0.113.1")
	b.Run(t, "ping", "-6", "-c", "1", "-W", "5", "2001:db8::1")

	Veth(t, a, "twl0", "172.18.0.10/16", a, "twl1", "")
	out := a.Run(t, "ip", "-o", "link", "show", "type", "veth")
	if !strings.Contains(out, "twl0@twl1") || !strings.Contains(out, "twl1@twl0") {
		t.Errorf("veths in one namespace: %q", out)
	}
	if addr := a.Run(t, "ip", "-o", "-4", "addr", "show", "dev", "twl1"); addr != "" {
		t.Errorf("twl1 has addresses: %q", addr)
	}

	if err := Connect(End{NS: a.Path(), Name: "x0", Addrs: []string{"not-an-address"}}, End{NS: b.Path(), Name: "x1"}); err == nil || !strings.Contains(err.Error(), "addressing x0") {
		t.Errorf("bad address: %v, want an error about addressing x0", err)
	}
}
