package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/lease"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func vxlanData(vni int, vtep string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"VNI":%d,"VtepMAC":%q}`, vni, vtep))
}

func peer(name, subnet, ip, vtep string) *lease.Lease {
	return &lease.Lease{Node: name, BackendType: "vxlan", Nets: []lease.Net{{
		Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(ip), BackendData: vxlanData(1, vtep),
	}}}
}

type fixture struct {
	k     *fakekernel.Fake
	b     *Backend
	table *backend.Table
}

func testNode(name, ip, subnet string) backend.Node {
	return backend.Node{
		Name: name, Subnet: netip.MustParsePrefix(subnet), Network: netip.MustParsePrefix("10.244.0.0/16"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500},
		Addr:  netip.MustParseAddr(ip), Nets: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(ip), 16)},
	}
}

func newFixture(t *testing.T, direct bool) *fixture {
	t.Helper()
	k := fakekernel.New()
	b, err := NewBackend(k, Config{VNI: 1, Port: 8472, DirectRouting: direct}, testNode("node-1", "172.18.0.2", "10.244.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	return &fixture{k: k, b: b, table: backend.NewTable(k, nil)}
}

func entriesOf(t *testing.T, b backend.Backend, p *lease.Lease) backend.Entries {
	t.Helper()
	n, ok := p.Net(family.IPv4)
	if !ok {
		t.Fatalf("peer %s has no IPv4 net", p.Node)
	}
	e, err := b.Entries(p, n)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (f *fixture) syncAll(t *testing.T, peers ...*lease.Lease) backend.Stats {
	t.Helper()
	want := map[string]backend.Entries{}
	for _, p := range peers {
		want[p.Node] = entriesOf(t, f.b, p)
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
		e = entriesOf(t, f.b, p)
	}
	st, err := f.table.Sync(name, e)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func assertState(t *testing.T, k *fakekernel.Fake, want ...string) {
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
	if v == nil || v.VNI != 1 || v.Port != 8472 || v.Local != netip.MustParseAddr("172.18.0.2") || v.ParentIndex != 2 || v.Learning {
		t.Errorf("device: %+v", v)
	}
	if l.MTU != 1450 || f.b.MTU() != 1450 || !l.Up {
		t.Errorf("MTU %d (backend %d), up %v", l.MTU, f.b.MTU(), l.Up)
	}
	if l.MAC.String() != StableMAC("node-1", 1, family.IPv4).String() || l.MAC[0]&1 != 0 || l.MAC[0]&2 == 0 {
		t.Errorf("MAC %s is not the stable locally administered unicast MAC", l.MAC)
	}
	addrs, _ := f.k.Addrs(l.Index, family.IPv4)
	if len(addrs) != 1 || addrs[0].String() != "10.244.1.0/32" {
		t.Errorf("addresses %v, want [10.244.1.0/32]", addrs)
	}
	if got := string(f.b.Data()); got != `{"VNI":1,"VtepMAC":"`+StableMAC("node-1", 1, family.IPv4).String()+`"}` {
		t.Errorf("published data %s is not flannel's shape", got)
	}
	if d := f.b.Devices(); !slices.Equal(d, []string{"flannel.1"}) {
		t.Errorf("devices %v", d)
	}
	// A second setup changes nothing.
	f.k.ResetCalls()
	recreated, err := f.b.Setup()
	if err != nil || recreated || f.k.Mutations() != 0 {
		t.Errorf("second Setup: recreated=%v err=%v mutations=%d", recreated, err, f.k.Mutations())
	}
}

// TestSetupIPv6: the same backend over an IPv6 node makes flannel's
// flannel-v6.<VNI>, with the v6 subnet's address and a 70-byte overhead.
func TestSetupIPv6(t *testing.T) {
	k := fakekernel.New()
	n := backend.Node{
		Name: "node-1", Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Network: netip.MustParsePrefix("fd00:10:244::/56"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500},
		Addr:  netip.MustParseAddr("fc00:f853:ccd:e793::2"), Nets: []netip.Prefix{netip.MustParsePrefix("fc00:f853:ccd:e793::2/64")},
	}
	b, err := NewBackend(k, Config{VNI: 1, Port: 8472}, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	l, err := k.LinkByName("flannel-v6.1")
	if err != nil {
		t.Fatal(err)
	}
	if l.MTU != 1430 || l.VXLAN.Local != n.Addr || l.MAC.String() == StableMAC("node-1", 1, family.IPv4).String() {
		t.Errorf("v6 device: %+v", l)
	}
	if addrs, _ := k.Addrs(l.Index, family.IPv6); len(addrs) != 1 || addrs[0].String() != "fd00:10:244:1::/128" {
		t.Errorf("v6 device addresses %v", addrs)
	}
	p := &lease.Lease{Node: "node-2", BackendType: "vxlan", Nets: []lease.Net{{
		Subnet: netip.MustParsePrefix("fd00:10:244:2::/64"), PublicIP: netip.MustParseAddr("fc00:f853:ccd:e793::3"), BackendData: vxlanData(1, "0a:00:00:00:00:20"),
	}}}
	e, err := b.Entries(p, p.Nets[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.NewTable(k, nil).SyncAll(map[string]backend.Entries{"node-2": e}, b.Scope()); err != nil {
		t.Fatal(err)
	}
	assertState(t, k,
		"route fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink",
		"neigh fd00:10:244:2:: lladdr 0a:00:00:00:00:20 dev flannel-v6.1",
		"fdb 0a:00:00:00:00:20 dst fc00:f853:ccd:e793::3 dev flannel-v6.1",
	)

	// Check (what doctor runs) names the IPv6 device's faults with the
	// IPv6 overhead, and its address by family.
	if err := k.SetLinkMTU(l.Index, 1450); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteAddr(l.Index, netip.MustParsePrefix("fd00:10:244:1::/128")); err != nil {
		t.Fatal(err)
	}
	n.Published = b.Data()
	fresh, err := NewBackend(k, Config{VNI: 1, Port: 8472}, n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fresh.Check()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"flannel-v6.1 has MTU 1450, want 1430 (eth0's MTU 1500 minus VXLAN's 70 bytes)", "flannel-v6.1 lacks address fd00:10:244:1::/128"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("Check = %q, want a line with %q", got, want)
		}
	}
}

func TestSetupFixesWrongDevice(t *testing.T) {
	f := newFixture(t, false)
	l, _ := f.k.LinkByName("flannel.1")
	// Wrong MTU and MAC are fixed in place.
	_ = f.k.SetLinkMTU(l.Index, 1300)
	_ = f.k.SetLinkMAC(l.Index, mac("02:00:00:00:00:99"))
	_ = f.k.AddAddr(l.Index, netip.MustParsePrefix("10.9.9.0/24"))
	recreated, err := f.b.Setup()
	if err != nil || recreated {
		t.Fatalf("recreated=%v err=%v", recreated, err)
	}
	l2, _ := f.k.LinkByName("flannel.1")
	addrs, _ := f.k.Addrs(l2.Index, family.IPv4)
	if l2.Index != l.Index || l2.MTU != 1450 || l2.MAC.String() != StableMAC("node-1", 1, family.IPv4).String() || len(addrs) != 1 {
		t.Errorf("not fixed in place: %+v addrs %v", l2, addrs)
	}
	// A wrong local address needs a new device.
	f.b.node.Addr = netip.MustParseAddr("172.18.0.9")
	recreated, err = f.b.Setup()
	if err != nil || !recreated {
		t.Fatalf("recreated=%v err=%v", recreated, err)
	}
	l3, _ := f.k.LinkByName("flannel.1")
	if l3.VXLAN.Local != netip.MustParseAddr("172.18.0.9") {
		t.Errorf("local %s", l3.VXLAN.Local)
	}
}

func TestPeersProgrammedLikeFlannel(t *testing.T) {
	f := newFixture(t, false)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	p2 := peer("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20")
	st := f.syncAll(t, p0, p2)
	if tot := st.Total(); tot.Added != 6 || tot.Updated+tot.Removed != 0 {
		t.Errorf("stats %+v, want 6 added", tot)
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
		t.Errorf("second SyncAll changed %+v", st.Total())
	}
	if st := f.sync(t, "node-0", p0); st.Changed() || f.k.Mutations() != 0 {
		t.Errorf("Sync of unchanged peer: %+v, %d mutations", st.Total(), f.k.Mutations())
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
	f.k.Put(
		kernel.Neigh{LinkIndex: dev.Index, IP: netip.MustParseAddr("10.244.7.0"), MAC: mac("0a:00:00:00:00:77")},
		kernel.FDB{LinkIndex: dev.Index, MAC: mac("0a:00:00:00:00:77"), Dst: netip.MustParseAddr("172.18.0.77")},
		kernel.Route{Dst: netip.MustParsePrefix("10.244.7.0/24"), Gw: netip.MustParseAddr("10.244.7.0"), LinkIndex: dev.Index, Onlink: true},
		// Not ours: outside the cluster network, and our own subnet.
		kernel.Route{Dst: netip.MustParsePrefix("192.168.5.0/24"), Gw: netip.MustParseAddr("172.18.0.1"), LinkIndex: 2},
		kernel.Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), LinkIndex: 2},
	)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	st := f.syncAll(t, p0)
	if tot := st.Total(); tot.Removed != 3 || tot.Added != 3 {
		t.Errorf("stats %+v, want 3 removed, 3 added", tot)
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
	if st := f.syncAll(t, peers...); st.Total().Added != 6 {
		t.Errorf("after recreation: %+v, want 6 added", st.Total())
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

// TestDirectRoutingIPv6: DirectRouting decides per family, from the
// node's IPv6 subnets: a peer on one is routed via its IPv6 address on
// eth0, one behind a router over flannel-v6.1.
func TestDirectRoutingIPv6(t *testing.T) {
	k := fakekernel.New()
	n := backend.Node{
		Name: "node-1", Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Network: netip.MustParsePrefix("fd00:10:244::/56"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500},
		Addr:  netip.MustParseAddr("fc00:f853:ccd:e793::2"), Nets: []netip.Prefix{netip.MustParsePrefix("fc00:f853:ccd:e793::2/64")},
	}
	b, err := NewBackend(k, Config{VNI: 1, Port: 8472, DirectRouting: true}, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	v6peer := func(name, subnet, ip, vtep string) *lease.Lease {
		return &lease.Lease{Node: name, BackendType: "vxlan", Nets: []lease.Net{{
			Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(ip), BackendData: vxlanData(1, vtep),
		}}}
	}
	want := map[string]backend.Entries{}
	for _, p := range []*lease.Lease{
		v6peer("near", "fd00:10:244:2::/64", "fc00:f853:ccd:e793::3", "0a:00:00:00:00:30"),
		v6peer("far", "fd00:10:244:3::/64", "fc00:f853:ccd:e794::4", "0a:00:00:00:00:40"),
	} {
		e, err := b.Entries(p, p.Nets[0])
		if err != nil {
			t.Fatal(err)
		}
		want[p.Node] = e
	}
	if _, err := backend.NewTable(k, nil).SyncAll(want, b.Scope()); err != nil {
		t.Fatal(err)
	}
	assertState(t, k,
		"route fd00:10:244:2::/64 via fc00:f853:ccd:e793::3 dev eth0",
		"route fd00:10:244:3::/64 via fd00:10:244:3:: dev flannel-v6.1 onlink",
		"neigh fd00:10:244:3:: lladdr 0a:00:00:00:00:40 dev flannel-v6.1",
		"fdb 0a:00:00:00:00:40 dst fc00:f853:ccd:e794::4 dev flannel-v6.1",
	)
}

func TestEntriesRefusesMismatchedPeers(t *testing.T) {
	f := newFixture(t, false)
	hg := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	hg.BackendType, hg.Nets[0].BackendData = "host-gw", json.RawMessage("null")
	if _, err := f.b.Entries(hg, hg.Nets[0]); err == nil {
		t.Error("a host-gw peer without DirectRouting got vxlan entries")
	}
	other := peer("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20")
	other.Nets[0].BackendData = vxlanData(2, "0a:00:00:00:00:20")
	if _, err := f.b.Entries(other, other.Nets[0]); err == nil {
		t.Error("a peer with another VNI got entries")
	}
	clone := peer("node-3", "10.244.3.0/24", "172.18.0.5", f.b.mac.String())
	if _, err := f.b.Entries(clone, clone.Nets[0]); err == nil || !strings.Contains(err.Error(), "this node's own") {
		t.Errorf("a peer with this node's VTEP MAC: %v, want it refused", err)
	}
}

// TestBrokenPeerData: data that is not flannel's vxlan data is a
// *backend.DataError naming what is wrong (the daemon keeps the peer's
// entries and raises a warning).
func TestBrokenPeerData(t *testing.T) {
	f := newFixture(t, false)
	for _, tc := range []struct{ data, want string }{
		{"{{{", "is not backend data like"},
		{"", "is not backend data like"},
		{`{"VNI":1,"VtepMAC":"zz"}`, `VtepMAC "zz"`},
		{`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`, "unicast"},
		{`{"VNI":-4,"VtepMAC":"0a:00:00:00:00:01"}`, "VNI -4"},
	} {
		p := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
		p.Nets[0].BackendData = json.RawMessage(tc.data)
		_, err := f.b.Entries(p, p.Nets[0])
		var bad *backend.DataError
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.want) || bad.Family != family.IPv4 {
			t.Errorf("data %q: error %v, want a DataError with %q", tc.data, err, tc.want)
		}
	}
}

func TestLostRouteComesBack(t *testing.T) {
	f := newFixture(t, false)
	p0 := peer("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	f.syncAll(t, p0)
	dev := f.b.Device()
	lost := kernel.Route{Dst: netip.MustParsePrefix("10.244.0.0/24"), Gw: netip.MustParseAddr("10.244.0.0"), LinkIndex: dev.Index, Onlink: true}
	if name, ok := f.table.Owner(lost.Key()); !ok || name != "node-0" {
		t.Fatalf("Owner = %q %v", name, ok)
	}
	// Someone deletes the route; the table traces it and puts it back.
	f.k.Remove(lost)
	if name, ok := f.table.Lost(lost); !ok || name != "node-0" {
		t.Fatalf("Lost = %q %v", name, ok)
	}
	if st := f.sync(t, "node-0", p0); st.Kind(kernel.KindRoute).Repaired != 1 {
		t.Errorf("repair %+v", st.Total())
	}
	if n := len(f.k.Dump()); n != 3 {
		t.Errorf("%d entries after repair, want 3", n)
	}
	f.sync(t, "node-0", nil)
	if _, ok := f.table.Owner(lost.Key()); ok {
		t.Error("a removed peer still owns its route")
	}
}

func TestParseConfig(t *testing.T) {
	c, err := Plugin.ParseConfig(nil)
	if err != nil || c != (Config{VNI: 1, Port: 8472}) {
		t.Errorf("defaults: %+v %v", c, err)
	}
	c, err = Plugin.ParseConfig(json.RawMessage(`{"Type": "VXLAN", "VNI": 4096, "Port": 4789, "MTU": 1400, "DirectRouting": true}`))
	if err != nil || c != (Config{VNI: 4096, Port: 4789, MTU: 1400, DirectRouting: true}) {
		t.Errorf("full: %+v %v", c, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"Type": "vxlan", "GBP": true}`, `unknown key "GBP" in "Backend"`},
		{`{"Type": "vxlan", "VNI": 16777216}`, `"Backend.VNI"`},
		{`{"Type": "vxlan", "Port": 0}`, `"Backend.Port"`},
		{`{"Type": "vxlan", "MTU": 100}`, `"Backend.MTU"`},
		{`{"Type": "vxlan", "VNI": "x"}`, `"Backend.VNI": expected int`},
	} {
		if _, err := Plugin.ParseConfig(json.RawMessage(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseConfig(%s) = %v, want one line with %q", tc.in, err, tc.want)
		}
	}
}

func TestTeardownRemovesEveryFlannelDevice(t *testing.T) {
	k := fakekernel.New()
	for _, name := range []string{"flannel.1", "flannel.7", "flannel-v6.1"} {
		if _, err := k.AddVXLAN(kernel.VXLAN{Name: name, VNI: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.AddVXLAN(kernel.VXLAN{Name: "vxlan.calico", VNI: 4096}); err != nil {
		t.Fatal(err)
	}
	k.AddLink("flannel.2", 1500) // same name shape, not a VXLAN device: not ours
	if err := Plugin.Teardown(k); err != nil {
		t.Fatal(err)
	}
	var names []string
	links, _ := k.Links()
	for _, l := range links {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"eth0", "vxlan.calico", "flannel.2"}) {
		t.Errorf("links after teardown: %v", names)
	}
}

func TestCheckNamesEveryDeviceFault(t *testing.T) {
	setup := func(t *testing.T) (*fakekernel.Fake, *Backend) {
		t.Helper()
		f := newFixture(t, false)
		return f.k, f.b
	}
	// fresh is the backend doctor makes: it knows what the node publishes.
	fresh := func(k *fakekernel.Fake, published json.RawMessage) *Backend {
		n := testNode("node-1", "172.18.0.2", "10.244.1.0/24")
		n.Published = published
		b, err := NewBackend(k, Config{VNI: 1, Port: 8472}, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name    string
		breakIt func(t *testing.T, k *fakekernel.Fake, dev *kernel.Link)
		want    string
	}{
		{"missing", func(_ *testing.T, k *fakekernel.Fake, _ *kernel.Link) { k.RemoveLink("flannel.1") }, "flannel.1 does not exist"},
		{"wrong MTU", func(t *testing.T, k *fakekernel.Fake, dev *kernel.Link) {
			if err := k.SetLinkMTU(dev.Index, 1400); err != nil {
				t.Fatal(err)
			}
		}, "flannel.1 has MTU 1400, want 1450 (eth0's MTU 1500 minus VXLAN's 50 bytes)"},
		{"wrong MAC", func(t *testing.T, k *fakekernel.Fake, dev *kernel.Link) {
			if err := k.SetLinkMAC(dev.Index, mac("0a:00:00:00:00:99")); err != nil {
				t.Fatal(err)
			}
		}, "flannel.1 has MAC 0a:00:00:00:00:99"},
		{"no address", func(t *testing.T, k *fakekernel.Fake, dev *kernel.Link) {
			if err := k.DeleteAddr(dev.Index, netip.MustParsePrefix("10.244.1.0/32")); err != nil {
				t.Fatal(err)
			}
		}, "flannel.1 lacks address 10.244.1.0/32"},
		{"wrong VNI, port and local", func(t *testing.T, k *fakekernel.Fake, _ *kernel.Link) {
			k.RemoveLink("flannel.1")
			if _, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 2, Port: 4789, Local: netip.MustParseAddr("172.18.0.9"), ParentIndex: 2, MTU: 1450}); err != nil {
				t.Fatal(err)
			}
		}, "flannel.1 has VNI 2, want 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, b := setup(t)
			if got, err := b.Check(); err != nil || len(got) != 0 {
				t.Fatalf("after Setup, Check = %q, %v; want nothing", got, err)
			}
			c.breakIt(t, k, b.Device())
			before := k.Mutations()
			got, err := fresh(k, b.Data()).Check()
			if err != nil {
				t.Fatal(err)
			}
			if k.Mutations() != before {
				t.Error("Check changed the kernel")
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Errorf("Check = %q, want a line with %q", got, c.want)
			}
		})
	}
	t.Run("down", func(t *testing.T) {
		k := fakekernel.New()
		if _, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, Local: netip.MustParseAddr("172.18.0.2"), ParentIndex: 2, MTU: 1450, MAC: StableMAC("node-1", 1, family.IPv4)}); err != nil {
			t.Fatal(err)
		}
		got, _ := fresh(k, nil).Check()
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "flannel.1 is down") }) {
			t.Errorf("Check = %q, want the device down", got)
		}
	})
	t.Run("entries after check", func(t *testing.T) {
		k, _ := setup(t)
		b := fresh(k, nil)
		if _, err := b.Check(); err != nil {
			t.Fatal(err)
		}
		if es := entriesOf(t, b, peer("node-2", "10.244.2.0/24", "172.18.0.3", "0a:00:00:00:00:20")); len(es) != 3 {
			t.Errorf("entries after Check: %v", es)
		}
	})
	t.Run("MTU larger than the underlay", func(t *testing.T) {
		k := fakekernel.New()
		b, err := NewBackend(k, Config{VNI: 1, Port: 8472, MTU: 1480}, testNode("node-1", "172.18.0.2", "10.244.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Setup(); err != nil {
			t.Fatal(err)
		}
		got, _ := b.Check()
		if len(got) != 1 || !strings.Contains(got[0], "Backend.MTU 1480 is more than eth0's MTU 1500 minus VXLAN's 50 bytes") {
			t.Errorf("Check = %q", got)
		}
	})
}

// TestKeepsTheVTEPMACANodeHas: a node keeps the VTEP MAC its peers already
// hold (its own annotation first, then its existing device's) and gets a
// derived one only when it has neither, so a takeover from upstream
// flannel, an upgrade or a restart changes no peer's FDB entry.
func TestKeepsTheVTEPMACANodeHas(t *testing.T) {
	const published, onDevice = "0e:aa:bb:cc:dd:01", "0e:aa:bb:cc:dd:02"
	derived := StableMAC("node-1", 1, family.IPv4).String()
	cases := []struct {
		name      string
		published json.RawMessage
		device    string
		want      string
	}{
		{"annotation wins over the device", vxlanData(1, published), onDevice, published},
		{"annotation without a device", vxlanData(1, published), "", published},
		{"device without an annotation (upstream made it)", nil, onDevice, onDevice},
		{"annotation of another VNI is not ours", vxlanData(7, published), onDevice, onDevice},
		{"broken annotation", json.RawMessage(`{"VNI":1,"VtepMAC":"nope"}`), onDevice, onDevice},
		{"multicast MAC in the annotation", vxlanData(1, "01:00:5e:00:00:01"), "", derived},
		{"neither", nil, "", derived},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := fakekernel.New()
			if c.device != "" {
				if _, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, Local: netip.MustParseAddr("172.18.0.2"), ParentIndex: 2, MTU: 1450, MAC: mac(c.device)}); err != nil {
					t.Fatal(err)
				}
			}
			n := testNode("node-1", "172.18.0.2", "10.244.1.0/24")
			n.Published = c.published
			b, err := NewBackend(k, Config{VNI: 1, Port: 8472}, n)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Setup(); err != nil {
				t.Fatal(err)
			}
			l, err := k.LinkByName("flannel.1")
			if err != nil {
				t.Fatal(err)
			}
			if l.MAC.String() != c.want {
				t.Errorf("device MAC %s, want %s", l.MAC, c.want)
			}
			if got, want := string(b.Data()), `{"VNI":1,"VtepMAC":"`+c.want+`"}`; got != want {
				t.Errorf("published %s, want %s", got, want)
			}
		})
	}
}
