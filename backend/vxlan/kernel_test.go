package vxlan

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
	"github.com/twill-net/twill/lease"
)

// node is one side of the root test: a namespace with an underlay eth0, a
// cni0 bridge holding the pod gateway address, and the real backend.
type node struct {
	ns     *netns.NS
	k      *kernel.Netlink
	b      *Backend
	table  *backend.Table
	lease  *lease.Lease
	subnet netip.Prefix
}

func newNode(t *testing.T, ns *netns.NS, name, ip, subnet string) *node {
	t.Helper()
	k, eth0 := ns.Kernel(t, "eth0")
	n := testNode(name, ip, subnet)
	n.Iface = backend.Link{Index: eth0.Index, Name: "eth0", MTU: eth0.MTU}
	b, err := NewBackend(k, Config{VNI: 1, Port: 8472}, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	// cni0 with the gateway address stands in for the pods.
	if err := underlay.Bridge(ns.Path(), "cni0", netip.PrefixFrom(lease.GatewayIP(n.Subnet), n.Subnet.Bits()).String()); err != nil {
		t.Fatal(err)
	}
	l := &lease.Lease{Node: name, BackendType: Type, Nets: []lease.Net{{Subnet: n.Subnet, PublicIP: n.Addr, BackendData: b.Data()}}}
	return &node{ns: ns, k: k, b: b, table: backend.NewTable(k, nil), lease: l, subnet: n.Subnet}
}

func (n *node) syncAll(t *testing.T, peers ...*lease.Lease) backend.Stats {
	t.Helper()
	want := map[string]backend.Entries{}
	for _, p := range peers {
		want[p.Node] = entriesOf(t, n.b, p)
	}
	st, err := n.table.SyncAll(want, n.b.Scope())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestKernelOverlay(t *testing.T) {
	netns.RequireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (make deps installs iputils-ping)")
	}
	ns1, ns2 := netns.New(t), netns.New(t)
	underlay.Veth(t, ns1, "eth0", "172.18.0.2/16", ns2, "eth0", "172.18.0.3/16")
	n1 := newNode(t, ns1, "node-1", "172.18.0.2", "10.244.1.0/24")
	n2 := newNode(t, ns2, "node-2", "172.18.0.3", "10.244.2.0/24")

	if st := n1.syncAll(t, n2.lease); st.Total().Added != 3 {
		t.Errorf("node-1 first sync %+v, want 3 added", st.Total())
	}
	n2.syncAll(t, n1.lease)

	// Exactly flannel's view of the world.
	route := ns1.Run(t, "ip", "route", "show", "10.244.2.0/24")
	if strings.TrimSpace(route) != "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" {
		t.Errorf("ip route: %q", route)
	}
	mac2 := StableMAC("node-2", 1, family.IPv4).String()
	neigh := ns1.Run(t, "ip", "neigh", "show", "dev", "flannel.1")
	if strings.TrimSpace(neigh) != "10.244.2.0 lladdr "+mac2+" PERMANENT" {
		t.Errorf("ip neigh: %q", neigh)
	}
	fdb := ns1.Run(t, "bridge", "fdb", "show", "dev", "flannel.1")
	if !strings.Contains(fdb, mac2+" dst 172.18.0.3 self permanent") || strings.Count(strings.TrimSpace(fdb), "\n") != 0 {
		t.Errorf("bridge fdb: %q", fdb)
	}
	link := ns1.Run(t, "ip", "-d", "link", "show", "flannel.1")
	for _, want := range []string{"mtu 1450", "vxlan id 1", "local 172.18.0.2", "dev eth0", "dstport 8472", "nolearning", "link/ether " + StableMAC("node-1", 1, family.IPv4).String()} {
		if !strings.Contains(link, want) {
			t.Errorf("ip -d link lacks %q:\n%s", want, link)
		}
	}
	addr := ns1.Run(t, "ip", "-4", "-o", "addr", "show", "dev", "flannel.1")
	if !strings.Contains(addr, "inet 10.244.1.0/32") {
		t.Errorf("flannel.1 address: %q", addr)
	}

	// Pod subnets reach each other through the tunnel.
	ns1.Run(t, "ping", "-c", "2", "-W", "5", "-I", "10.244.1.1", "10.244.2.1")

	// A second reconcile changes nothing.
	if st := n1.syncAll(t, n2.lease); st.Changed() {
		t.Errorf("second sync changed %+v", st.Total())
	}
	if recreated, err := n1.b.Setup(); err != nil || recreated {
		t.Errorf("second Setup: recreated=%v err=%v", recreated, err)
	}

	// Stale entries of a node that vanished while we were down are removed.
	gone := peer("gone", "10.244.9.0/24", "172.18.0.9", "0a:00:00:00:00:09")
	if _, err := backend.NewTable(n1.k, nil).Sync("gone", entriesOf(t, n1.b, gone)); err != nil {
		t.Fatal(err)
	}
	if st := n1.syncAll(t, n2.lease); st.Total().Removed != 3 {
		t.Errorf("stale entries: %+v, want 3 removed", st.Total())
	}
	if out := ns1.Run(t, "ip", "route", "show", "10.244.9.0/24"); out != "" {
		t.Errorf("stale route left: %q", out)
	}

	// A deleted device comes back with every peer.
	ns1.Run(t, "ip", "link", "del", "flannel.1")
	recreated, err := n1.b.Setup()
	if err != nil || !recreated {
		t.Fatalf("Setup after deletion: recreated=%v err=%v", recreated, err)
	}
	n1.table.Forget()
	if st := n1.syncAll(t, n2.lease); st.Total().Added != 3 {
		t.Errorf("after recreation %+v, want 3 added", st.Total())
	}
	ns1.Run(t, "ping", "-c", "1", "-W", "5", "-I", "10.244.1.1", "10.244.2.1")
}
