package kernel_test

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// TestApplyBatches checks batched changes against the real kernel: more ops
// than one batch holds all land, deleting what is missing succeeds, and a
// failing op reports its own error without stopping the others.
func TestApplyBatches(t *testing.T) {
	a, k, dev := vxlanHost(t, "flannel.1", "172.18.0.2/16", "172.18.0.3/16")
	const peers = 600 // more than two batches of ops
	var ops []kernel.Op
	for i := 0; i < peers; i++ {
		vtep := netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i % 256), 0})
		mac := net.HardwareAddr{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}
		ops = append(ops,
			kernel.Op{Entry: kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac}},
			kernel.Op{Entry: kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: netip.AddrFrom4([4]byte{172, 19, byte(i / 256), byte(i % 256)})}},
			kernel.Op{Entry: kernel.Route{Dst: netip.PrefixFrom(vtep, 24), Gw: vtep, LinkIndex: dev.Index, Onlink: true}},
		)
	}
	// A route through a link that does not exist fails alone.
	ops = append(ops, kernel.Op{Entry: kernel.Route{Dst: netip.MustParsePrefix("10.99.0.0/24"), Gw: netip.MustParseAddr("10.99.0.0"), LinkIndex: 9999, Onlink: true}})
	// Deleting what is not there succeeds.
	ops = append(ops, kernel.Op{Delete: true, Entry: kernel.Route{Dst: netip.MustParsePrefix("10.98.0.0/24"), LinkIndex: dev.Index}})
	errs := k.Apply(ops)
	for i, err := range errs[:len(errs)-2] {
		if err != nil {
			t.Fatalf("op %d (%s): %v", i, ops[i], err)
		}
	}
	if errs[len(errs)-2] == nil || !strings.Contains(errs[len(errs)-2].Error(), "setting route 10.99.0.0/24") {
		t.Errorf("bad route: %v", errs[len(errs)-2])
	}
	if errs[len(errs)-1] != nil {
		t.Errorf("deleting a missing route: %v", errs[len(errs)-1])
	}
	counts := func() [3]int {
		t.Helper()
		var n [3]int
		for i, kind := range []kernel.Kind{kernel.KindRoute, kernel.KindNeigh, kernel.KindFDB} {
			es, err := k.List(kind, family.IPv4, dev.Index)
			if err != nil {
				t.Fatal(err)
			}
			n[i] = len(es)
		}
		return n
	}
	if n := counts(); n != [3]int{peers, peers, peers} {
		t.Errorf("kernel has %d routes, %d neighbours, %d FDB entries; want %d each", n[0], n[1], n[2], peers)
	}
	if out := a.Run(t, "ip", "route", "show", "10.100.5.0/24"); strings.TrimSpace(out) != "10.100.5.0/24 via 10.100.5.0 dev flannel.1 onlink" {
		t.Errorf("batched route reads %q", out)
	}
	// What List reads back is what was set.
	routes, _ := k.List(kernel.KindRoute, family.IPv4, dev.Index)
	if !slices.ContainsFunc(routes, func(e kernel.Entry) bool { return e.Equal(ops[2].Entry) }) {
		t.Errorf("route %s not read back as set", ops[2].Entry)
	}
	// And the same ops deleted, in reverse.
	var dels []kernel.Op
	for _, o := range ops[:3*peers] {
		dels = append([]kernel.Op{{Delete: true, Entry: o.Entry}}, dels...)
	}
	for i, err := range k.Apply(dels) {
		if err != nil {
			t.Fatalf("delete op %d: %v", i, err)
		}
	}
	if n := counts(); n != [3]int{} {
		t.Errorf("left after deletion: %d routes, %d neighbours, %d FDB entries", n[0], n[1], n[2])
	}
}

// TestIPv6Entries: the same entry types carry IPv6 routes, neighbours and
// FDB entries to an IPv6 underlay; the batch encoder takes the family from
// the addresses.
func TestIPv6Entries(t *testing.T) {
	a, k, dev := vxlanHost(t, "flannel-v6.1", "fc00::2/64", "fc00::3/64")
	mac := net.HardwareAddr{0x0a, 0, 0, 0, 0, 0x20}
	vtep := netip.MustParseAddr("fd00:10:244:2::")
	entries := []kernel.Entry{
		kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac},
		kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: netip.MustParseAddr("fc00::3")},
		kernel.Route{Dst: netip.MustParsePrefix("fd00:10:244:2::/64"), Gw: vtep, LinkIndex: dev.Index, Onlink: true},
	}
	var ops []kernel.Op
	for _, e := range entries {
		ops = append(ops, kernel.Op{Entry: e})
	}
	for i, err := range k.Apply(ops) {
		if err != nil {
			t.Fatalf("op %s: %v", ops[i], err)
		}
	}
	if out := a.Run(t, "ip", "-6", "route", "show", "fd00:10:244:2::/64"); !strings.HasPrefix(strings.TrimSpace(out), "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1") || !strings.Contains(out, "onlink") {
		t.Errorf("ip -6 route: %q", out)
	}
	if out := a.Run(t, "bridge", "fdb", "show", "dev", "flannel-v6.1"); !strings.Contains(out, "0a:00:00:00:00:20 dst fc00::3 self permanent") {
		t.Errorf("bridge fdb: %q", out)
	}
	for i, kind := range []kernel.Kind{kernel.KindNeigh, kernel.KindFDB, kernel.KindRoute} {
		got, err := k.List(kind, family.IPv6, dev.Index)
		if err != nil || len(got) != 1 || !got[0].Equal(entries[i]) {
			t.Errorf("List(%s, IPv6) = %v %v, want [%s]", kind, got, err, entries[i])
		}
		if v4, _ := k.List(kind, family.IPv4, dev.Index); len(v4) != 0 {
			t.Errorf("List(%s, IPv4) on the v6 device = %v", kind, v4)
		}
	}
}

// TestReplaceRouteOntoVXLAN moves a peer's route from the underlay (as
// host-gw or DirectRouting programs it) to the VXLAN device, in both
// families: IPv6 refuses to replace it in one step, since the route being
// replaced covers the new onlink gateway; Apply still ends with only the
// new route.
func TestReplaceRouteOntoVXLAN(t *testing.T) {
	for _, tc := range []struct {
		name, local, peer, dst, gw, vtep string
		flag                             string
	}{
		{"IPv4", "172.18.0.2/16", "172.18.0.3/16", "10.244.2.0/24", "172.18.0.3", "10.244.2.0", "-4"},
		{"IPv6", "fc00::2/64", "fc00::3/64", "fd00:10:244:2::/64", "fc00::3", "fd00:10:244:2::", "-6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, k, dev := vxlanHost(t, "flannel-x.1", tc.local, tc.peer)
			eth0, err := k.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			dst := netip.MustParsePrefix(tc.dst)
			direct := kernel.Route{Dst: dst, Gw: netip.MustParseAddr(tc.gw), LinkIndex: eth0.Index}
			vxlan := kernel.Route{Dst: dst, Gw: netip.MustParseAddr(tc.vtep), LinkIndex: dev.Index, Onlink: true}
			for _, want := range []kernel.Route{direct, vxlan, direct} {
				for i, err := range k.Apply([]kernel.Op{{Entry: want}}) {
					if err != nil {
						t.Fatalf("op %d, %s: %v", i, want, err)
					}
				}
				got := strings.TrimSpace(a.Run(t, "ip", tc.flag, "route", "show", tc.dst))
				if lines := strings.Split(got, "\n"); len(lines) != 1 {
					t.Fatalf("after %s: ip route show %s = %q, want one route", want, tc.dst, got)
				}
				for i, e := range []kernel.Route{direct, vxlan} {
					es, err := k.List(kernel.KindRoute, family.OfPrefix(dst), e.LinkIndex)
					if err != nil {
						t.Fatal(err)
					}
					if has := len(es) == 1 && es[0].Equal(e); has != (e == want) {
						t.Errorf("after %s: routes on link %d = %v (case %d)", want, e.LinkIndex, es, i)
					}
				}
			}
		})
	}
}

// vxlanHost makes two namespaces joined by a veth pair (local and peer
// addresses in CIDR notation) and, in the first, an up VXLAN device called
// name on eth0; it returns that namespace, its kernel and the device.
func vxlanHost(tb testing.TB, name, local, peer string) (*netns.NS, *kernel.Netlink, *kernel.Link) {
	tb.Helper()
	a, b := netns.New(tb), netns.New(tb)
	underlay.Veth(tb, a, "eth0", local, b, "eth0", peer)
	k, eth0 := a.Kernel(tb, "eth0")
	dev, err := k.AddVXLAN(kernel.VXLAN{Name: name, VNI: 1, Port: 8472, Local: netip.MustParsePrefix(local).Addr(), ParentIndex: eth0.Index, MTU: 1430})
	if err != nil {
		tb.Fatal(err)
	}
	if err := k.SetLinkUp(dev.Index); err != nil {
		tb.Fatal(err)
	}
	return a, k, dev
}
