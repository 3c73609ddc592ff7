package vxlan

import (
	"net"
	"slices"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
)

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = n.IP.To4()
	return n
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func peer(name, subnet, ip, vtep string) *lease.Lease {
	return &lease.Lease{Node: name, Subnet: cidr(subnet), PublicIP: net.ParseIP(ip).To4(), BackendType: "vxlan", VNI: 1, VtepMAC: mac(vtep)}
}

type fixture struct {
	k     *kernel.Fake
	b     *Backend
	table *backend.Table
}

func newFixture(t *testing.T, direct bool) *fixture {
	t.Helper()
	k := kernel.NewFake()
	eth0, _ := k.LinkByName("eth0")
	b := New(k, Config{
		NodeName: "node-1", VNI: 1, Port: 8472, DirectRouting: direct,
		Iface: eth0, IfaceAddr: net.ParseIP("172.18.0.2").To4(), IfaceNets: []*net.IPNet{{IP: net.ParseIP("172.18.0.2").To4(), Mask: net.CIDRMask(16, 32)}},
		Subnet: cidr("10.244.1.0/24"),
	})
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	return &fixture{k: k, b: b, table: backend.NewTable(k, cidr("10.244.0.0/16"), cidr("10.244.1.0/24"))}
}

func (f *fixture) syncAll(t *testing.T, peers ...*lease.Lease) backend.Stats {
	t.Helper()
	want := map[string]backend.Entries{}
	for _, p := range peers {
		e, err := f.b.Entries(p)
		if err != nil {
			t.Fatal(err)
		}
		want[p.Node] = e
	}
	st, err := f.table.SyncAll(want, f.b.Scope())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *fixture) sync(t *testing.T, name string, p *lease.Lease) backend.Stats {
	t.Helper()
	var e backend.Entries
	if p != nil {
		var err error
		if e, err = f.b.Entries(p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.table.Sync(name, e)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func assertState(t *testing.T, k *kernel.Fake, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Errorf("kernel state:\n got %q\nwant %q", got, want)
	}
}

func TestSetupDevice(t *testing.T) {
	f := newFixture(t, false)
	l, err := f.k.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	v := l.VXLAN
	if v == nil || v.VNI != 1 || v.Port != 8472 || !v.Local.Equal(net.ParseIP("172.18.0.2")) || v.ParentIndex != 2 || v.Learning {
		t.Errorf("device: %+v", v)
	}
	if l.MTU != 1450 || f.b.MTU() != 1450 || !l.Up {
		t.Errorf("MTU %d (backend %d), up %v", l.MTU, f.b.MTU(), l.Up)
	}
	if l.MAC.String() != StableMAC("node-1", 1).String() || l.MAC[0]&1 != 0 || l.MAC[0]&2 == 0 {
		t.Errorf("MAC %s is not the stable locally administered unicast MAC", l.MAC)
	}
	addrs, _ := f.k.Addrs(l.Index)
	if len(addrs) != 1 || addrs[0].String() != "10.244.1.0/32" {
		t.Errorf("addresses %v, want [10.244.1.0/32]", addrs)
	}
	// A second setup changes nothing.
	f.k.ResetCalls()
	recreated, err := f.b.Setup()
	if err != nil || recreated || f.k.Mutations() != 0 {
		t.Errorf("second Setup: recreated=%v err=%v mutations=%d", recreated, err, f.k.Mutations())
	}
}

func TestSetupFixesWrongDevice(t *testing.T) {
	f := newFixture(t, false)
	l, _ := f.k.LinkByName("flannel.1")
	// Wrong MTU and MAC are fixed in place.
	_ = f.k.SetLinkMTU(l.Index, 1300)
	_ = f.k.SetLinkMAC(l.Index, mac("02:00:00:00:00:99"))
	_ = f.k.AddAddr(l.Index, cidr("10.9.9.0/24"))
	recreated, err := f.b.Setup()
	if err != nil || recreated {
		t.Fatalf("recreated=%v err=%v", recreated, err)
	}
	l2, _ := f.k.LinkByName("flannel.1")
	addrs, _ := f.k.Addrs(l2.Index)
	if l2.Index != l.Index || l2.MTU != 1450 || l2.MAC.String() != StableMAC("node-1", 1).String() || len(addrs) != 1 {
		t.Errorf("not fixed in place: %+v addrs %v", l2, addrs)
	}
	// A wrong local address needs a new device.
	f.b.cfg.IfaceAddr = net.ParseIP("172.18.0.9").To4()
	recreated, err = f.b.Setup()
	if err != nil || !recreated {
		t.Fatalf("recreated=%v err=%v", recreated, err)
	}
	l3, _ := f.k.LinkByName("flannel.1")
	if !l3.VXLAN.Local.Equal(net.ParseIP("172.18.0.9")) {
		t.Errorf("local %s", l3.VXLAN.Local)
	}
}

func TestPeersProgrammedLikeFlannel(t *testing.T) {
	f := newFixture(t, false)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	p2 := peer("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20")
	st := f.syncAll(t, p0, p2)
	if st.Added != 6 || st.Updated+st.Deleted != 0 {
		t.Errorf("stats %+v, want 6 added", st)
	}
	assertState(t, f.k,
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:10 dev flannel.1",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:20 dev flannel.1",
		"fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1",
		"fdb 0a:00:00:00:00:20 dst 172.18.0.4 dev flannel.1",
	)
	// Idempotent: a second full sync and a per-peer sync change nothing.
	f.k.ResetCalls()
	if st := f.syncAll(t, p0, p2); st.Changed() {
		t.Errorf("second SyncAll changed %+v", st)
	}
	if st := f.sync(t, "node-0", p0); st.Changed() || f.k.Mutations() != 0 {
		t.Errorf("Sync of unchanged peer: %+v, %d mutations", st, f.k.Mutations())
	}
}

func TestPeerChangeLeavesNothingStale(t *testing.T) {
	f := newFixture(t, false)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	f.syncAll(t, p0)
	// The peer restarted with a new VTEP MAC and moved to a new address.
	moved := peer("node-0", "10.244.0.0/24", "172.18.0.30", "0a:00:00:00:00:11")
	f.k.ResetCalls()
	f.sync(t, "node-0", moved)
	assertState(t, f.k,
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:11 dev flannel.1",
		"fdb 0a:00:00:00:00:11 dst 172.18.0.30 dev flannel.1",
	)
	if n := f.k.Mutations(); n > 3 {
		t.Errorf("one peer's change cost %d kernel changes, want at most 3", n)
	}
	// The peer leaves.
	f.sync(t, "node-0", nil)
	assertState(t, f.k)
}

func TestSyncAllRemovesOnlyOwnedStaleEntries(t *testing.T) {
	f := newFixture(t, false)
	dev := f.b.Device()
	// Left from a node deleted while the daemon was down.
	_ = f.k.SetNeigh(kernel.Neigh{LinkIndex: dev.Index, IP: net.ParseIP("10.244.7.0").To4(), MAC: mac("0a:00:00:00:00:77")})
	_ = f.k.SetFDB(kernel.FDB{LinkIndex: dev.Index, MAC: mac("0a:00:00:00:00:77"), Dst: net.ParseIP("172.18.0.77").To4()})
	_ = f.k.ReplaceRoute(kernel.Route{Dst: cidr("10.244.7.0/24"), Gw: net.ParseIP("10.244.7.0").To4(), LinkIndex: dev.Index, Onlink: true})
	// Not ours: outside the cluster network, and our own subnet.
	_ = f.k.ReplaceRoute(kernel.Route{Dst: cidr("192.168.5.0/24"), Gw: net.ParseIP("172.18.0.1").To4(), LinkIndex: 2})
	_ = f.k.ReplaceRoute(kernel.Route{Dst: cidr("10.244.1.0/24"), LinkIndex: 2})
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	st := f.syncAll(t, p0)
	if st.Deleted != 3 || st.Added != 3 {
		t.Errorf("stats %+v, want 3 deleted, 3 added", st)
	}
	assertState(t, f.k,
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:10 dev flannel.1",
		"fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1",
		"route 192.168.5.0/24 via 172.18.0.1 dev eth0",
		"route 10.244.1.0/24 via <nil> dev eth0",
	)
}

func TestRecreatedDeviceGetsEveryPeerBack(t *testing.T) {
	f := newFixture(t, false)
	peers := []*lease.Lease{
		peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"),
		peer("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20"),
	}
	f.syncAll(t, peers...)
	f.k.RemoveLink("flannel.1")
	recreated, err := f.b.Setup()
	if err != nil || !recreated {
		t.Fatalf("recreated=%v err=%v", recreated, err)
	}
	f.table.Forget()
	if st := f.syncAll(t, peers...); st.Added != 6 {
		t.Errorf("after recreation: %+v, want 6 added", st)
	}
	if n := len(f.k.Dump()); n != 6 {
		t.Errorf("%d entries, want 6", n)
	}
}

func TestDirectRouting(t *testing.T) {
	f := newFixture(t, true)
	near := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	far := peer("node-2", "10.244.2.0/24", "192.168.9.4", "0a:00:00:00:00:20")
	f.syncAll(t, near, far)
	assertState(t, f.k,
		"route 10.244.0.0/24 via 172.18.0.3 dev eth0",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:20 dev flannel.1",
		"fdb 0a:00:00:00:00:20 dst 192.168.9.4 dev flannel.1",
	)
	// Switching DirectRouting off leaves no direct route behind.
	f.b.cfg.DirectRouting = false
	f.syncAll(t, near, far)
	assertState(t, f.k,
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:10 dev flannel.1",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:20 dev flannel.1",
		"fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1",
		"fdb 0a:00:00:00:00:20 dst 192.168.9.4 dev flannel.1",
	)
}

func TestEntriesRefusesMismatchedPeers(t *testing.T) {
	f := newFixture(t, false)
	hg := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	hg.BackendType, hg.VtepMAC = "host-gw", nil
	if _, err := f.b.Entries(hg); err == nil {
		t.Error("a host-gw peer without DirectRouting got vxlan entries")
	}
	other := peer("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20")
	other.VNI = 2
	if _, err := f.b.Entries(other); err == nil {
		t.Error("a peer with another VNI got entries")
	}
}

func TestRouteOwnerAndInvalidate(t *testing.T) {
	f := newFixture(t, false)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	f.syncAll(t, p0)
	if name, ok := f.table.RouteOwner(cidr("10.244.0.0/24")); !ok || name != "node-0" {
		t.Fatalf("RouteOwner = %q %v", name, ok)
	}
	// Someone deletes the route; invalidating the peer puts it back.
	dev := f.b.Device()
	_ = f.k.DeleteRoute(kernel.Route{Dst: cidr("10.244.0.0/24"), LinkIndex: dev.Index})
	f.table.Invalidate("node-0")
	f.sync(t, "node-0", p0)
	if n := len(f.k.Dump()); n != 3 {
		t.Errorf("%d entries after repair, want 3", n)
	}
	f.sync(t, "node-0", nil)
	if _, ok := f.table.RouteOwner(cidr("10.244.0.0/24")); ok {
		t.Error("a removed peer still owns its route")
	}
}
