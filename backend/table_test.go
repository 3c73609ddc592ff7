package backend_test

import (
	"net"
	"slices"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
)

func cidr(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	n.IP = n.IP.To4()
	return n
}

// peer returns vxlan-style entries for a peer with subnet 10.244.i.0/24.
func peer(link, i int, mac byte, pub string) backend.Entries {
	gw := net.IPv4(10, 244, byte(i), 0).To4()
	vtep := net.HardwareAddr{0xaa, 0, 0, 0, 0, mac}
	return backend.Entries{
		Neighs: []kernel.Neigh{{LinkIndex: link, IP: gw, MAC: vtep}},
		FDBs:   []kernel.FDB{{LinkIndex: link, MAC: vtep, Dst: net.ParseIP(pub).To4()}},
		Routes: []kernel.Route{{LinkIndex: link, Dst: cidr(net.IPv4(10, 244, byte(i), 0).String() + "/24"), Gw: gw, Onlink: true}},
	}
}

// TestFullSyncInParts: a full sync fed page by page leaves right entries
// alone, fixes wrong ones as pages arrive, and removes stale ones only at
// the end, when every peer is known.
func TestFullSyncInParts(t *testing.T) {
	k := kernel.NewFake()
	link, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	scope := backend.Scope{RouteLinks: []int{link.Index}, NeighLinks: []int{link.Index}}
	table := backend.NewTable(k, cidr("10.244.0.0/16"), cidr("10.244.1.0/24"))

	// The kernel as a previous run left it: peer 2 right, peer 3 with an
	// old VTEP MAC, peer 9 gone from the cluster since.
	prev := map[string]backend.Entries{"n2": peer(link.Index, 2, 2, "172.18.0.3"), "n3": peer(link.Index, 3, 0x33, "172.18.0.4"), "n9": peer(link.Index, 9, 9, "172.18.0.10")}
	if _, err := table.SyncAll(prev, scope); err != nil {
		t.Fatal(err)
	}
	k.ResetCalls()

	table = backend.NewTable(k, cidr("10.244.0.0/16"), cidr("10.244.1.0/24")) // a restarted daemon
	if _, err := table.AddPeers(nil); err == nil {
		t.Error("AddPeers outside a full sync was accepted")
	}
	if err := table.BeginFull(scope); err != nil {
		t.Fatal(err)
	}
	page1 := map[string]backend.Entries{"n2": peer(link.Index, 2, 2, "172.18.0.3")}
	st, err := table.AddPeers(page1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Changed() || k.Mutations() != 0 {
		t.Errorf("a peer already right was touched: %+v, %d kernel mutations", st, k.Mutations())
	}
	page2 := map[string]backend.Entries{"n3": peer(link.Index, 3, 3, "172.18.0.4"), "n4": peer(link.Index, 4, 4, "172.18.0.5")}
	st, err = table.AddPeers(page2)
	if err != nil {
		t.Fatal(err)
	}
	// n4: three new entries; n3: an FDB entry for its new MAC and its
	// neighbour updated, its route unchanged.
	if st.Added != 4 || st.Updated != 1 || st.Deleted != 0 {
		t.Errorf("page 2: %+v, want 4 added, 1 updated, none deleted", st)
	}
	dump := k.Dump()
	if !slices.ContainsFunc(dump, func(s string) bool { return s == "route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink" }) {
		t.Errorf("the stale peer's route went before the list was complete: %q", dump)
	}

	all := map[string]backend.Entries{}
	for _, m := range []map[string]backend.Entries{page1, page2} {
		for n, e := range m {
			all[n] = e
		}
	}
	st, err = table.FinishFull(all)
	if err != nil {
		t.Fatal(err)
	}
	if st.Added != 0 || st.Updated != 0 || st.Deleted != 4 {
		t.Errorf("finish: %+v, want only the 4 stale entries deleted (n9's three, n3's old FDB entry)", st)
	}
	want := freshDump(all, scope)
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Errorf("kernel after the full sync:\n got  %q\n want %q", got, want)
	}
	if owner, ok := table.RouteOwner(cidr("10.244.4.0/24")); !ok || owner != "n4" {
		t.Errorf("RouteOwner(10.244.4.0/24) = %q, %v; want n4", owner, ok)
	}
	if _, err := table.FinishFull(all); err == nil {
		t.Error("a second FinishFull was accepted")
	}
	// A full sync from scratch finds nothing left to do.
	st, err = table.SyncAll(all, scope)
	if err != nil || st.Changed() {
		t.Errorf("SyncAll after the full sync: %+v, %v; want no change", st, err)
	}
}

// freshDump is what a fresh kernel holds after SyncAll(want): the
// reference a full sync in parts must match. Its flannel.1 gets the same
// index as the first device of any Fake.
func freshDump(want map[string]backend.Entries, scope backend.Scope) []string {
	ref := kernel.NewFake()
	_, _ = ref.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, MTU: 1450})
	table := backend.NewTable(ref, cidr("10.244.0.0/16"), cidr("10.244.1.0/24"))
	_, _ = table.SyncAll(want, scope)
	return ref.Dump()
}
