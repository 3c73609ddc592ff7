package hostgw

import (
	"net"
	"slices"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/lease"
)

func cidr(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	n.IP = n.IP.To4()
	return n
}

func TestHostGW(t *testing.T) {
	k := kernel.NewFake()
	eth0, _ := k.LinkByName("eth0")
	// A vxlan device left from before the switch to host-gw.
	old := vxlan.New(k, vxlan.Config{NodeName: "n1", VNI: 1, Port: 8472, Iface: eth0, IfaceAddr: net.ParseIP("172.18.0.2"), Subnet: cidr("10.244.1.0/24")})
	if _, err := old.Setup(); err != nil {
		t.Fatal(err)
	}
	b := New(k, Config{Iface: eth0, IfaceNets: []*net.IPNet{{IP: net.ParseIP("172.18.0.2").To4(), Mask: net.CIDRMask(16, 32)}}})
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LinkByName("flannel.1"); err == nil {
		t.Error("flannel.1 survived the switch to host-gw")
	}
	if b.MTU() != 1500 {
		t.Errorf("MTU %d, want the interface's 1500", b.MTU())
	}
	own := &lease.Lease{}
	b.Publish(own)
	if own.BackendType != "host-gw" || own.VtepMAC != nil {
		t.Errorf("published %+v", own)
	}
	near := &lease.Lease{Node: "n0", Subnet: cidr("10.244.0.0/24"), PublicIP: net.ParseIP("172.18.0.3").To4(), BackendType: "host-gw"}
	far := &lease.Lease{Node: "n2", Subnet: cidr("10.244.2.0/24"), PublicIP: net.ParseIP("10.1.0.4").To4(), BackendType: "host-gw"}
	e, err := b.Entries(near)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Entries(far); err == nil {
		t.Error("a peer off the L2 segment got a route (it would blackhole)")
	}
	table := backend.NewTable(k, cidr("10.244.0.0/16"), cidr("10.244.1.0/24"))
	if _, err := table.SyncAll(map[string]backend.Entries{"n0": e}, b.Scope()); err != nil {
		t.Fatal(err)
	}
	want := []string{"route 10.244.0.0/24 via 172.18.0.3 dev eth0"}
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
}
