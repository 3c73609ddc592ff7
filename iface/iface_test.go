package iface

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// host makes a namespace with two interfaces: eth0 (dual-stack, default
// routes of both families) and eth1 (IPv4 only, no default route).
func host(t *testing.T) *netns.NS {
	t.Helper()
	a, b := netns.New(t), netns.New(t)
	underlay.Veth(t, a, "eth0", "172.18.0.2/16", b, "eth0", "172.18.0.1/16")
	underlay.Veth(t, a, "eth1", "192.168.7.2/24", b, "eth1", "192.168.7.1/24")
	a.Run(t, "ip", "-6", "addr", "add", "fc00:f853:ccd:e793::2/64", "dev", "eth0", "nodad")
	a.Run(t, "ip", "route", "add", "default", "via", "172.18.0.1")
	a.Run(t, "ip", "-6", "route", "add", "default", "via", "fc00:f853:ccd:e793::1", "dev", "eth0")
	return a
}

func choose(t *testing.T, ns *netns.NS, o Options, fams ...family.Family) (*Choice, error) {
	t.Helper()
	var c *Choice
	var cerr error
	if err := ns.Do(func() error { c, cerr = Choose(o, fams); return nil }); err != nil {
		t.Fatal(err)
	}
	return c, cerr
}

func TestChoose(t *testing.T) {
	ns := host(t)
	both := []family.Family{family.IPv4, family.IPv6}
	for _, tc := range []struct {
		name   string
		o      Options
		fams   []family.Family
		iface  string
		v4, v6 string
		reason string
	}{
		{"default route, dual-stack", Options{}, both, "eth0", "172.18.0.2", "fc00:f853:ccd:e793::2", "IPv4 default route"},
		{"default route, IPv6 only", Options{}, []family.Family{family.IPv6}, "eth0", "", "fc00:f853:ccd:e793::2", "IPv6 default route"},
		{"--iface by name", Options{Ifaces: []string{"eth1"}}, []family.Family{family.IPv4}, "eth1", "192.168.7.2", "", "--iface=eth1"},
		{"--iface by IPv6 address picks the IPv4 one too", Options{Ifaces: []string{"fc00:f853:ccd:e793::2"}}, both, "eth0", "172.18.0.2", "fc00:f853:ccd:e793::2", "--iface="},
		{"--iface-regex", Options{Regexes: []string{"^192\\.168\\."}}, []family.Family{family.IPv4}, "eth1", "192.168.7.2", "", "--iface-regex"},
		{"--iface-can-reach", Options{CanReach: "192.168.7.1"}, []family.Family{family.IPv4}, "eth1", "192.168.7.2", "", "--iface-can-reach"},
		{"a local public IP picks its interface", Options{PublicIPs: []netip.Addr{netip.MustParseAddr("192.168.7.2")}}, []family.Family{family.IPv4}, "eth1", "192.168.7.2", "", "public IP 192.168.7.2"},
		{"a public IP behind NAT keeps the default route", Options{PublicIPs: []netip.Addr{netip.MustParseAddr("198.51.100.9")}}, []family.Family{family.IPv4}, "eth0", "172.18.0.2", "", "default route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := choose(t, ns, tc.o, tc.fams...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != tc.iface || !strings.Contains(c.Reason, tc.reason) {
				t.Errorf("chose %s because %q; want %s because …%s…", c.Name, c.Reason, tc.iface, tc.reason)
			}
			for f, want := range map[family.Family]string{family.IPv4: tc.v4, family.IPv6: tc.v6} {
				a, ok := c.For(f)
				if want == "" {
					if ok {
						t.Errorf("%s address %s chosen, none wanted", f, a.Addr)
					}
					continue
				}
				if !ok || a.Addr.String() != want || !onLink(a) {
					t.Errorf("%s address %+v, want %s", f, a, want)
				}
			}
		})
	}
	// eth1 has no IPv6 address: asking for both families there fails,
	// naming what is missing.
	if _, err := choose(t, ns, Options{Ifaces: []string{"eth1"}}, both...); err == nil || !strings.Contains(err.Error(), "no IPv6 address") {
		t.Errorf("eth1 for both families: %v", err)
	}
	if _, err := choose(t, ns, Options{CanReach: "not-an-ip"}, family.IPv4); err == nil {
		t.Error("--iface-can-reach with garbage accepted")
	}
}

// onLink reports whether the chosen address lies in one of its subnets.
func onLink(a Addr) bool {
	for _, n := range a.Nets {
		if n.Contains(a.Addr) {
			return true
		}
	}
	return false
}
