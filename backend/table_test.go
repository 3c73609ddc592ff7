package backend_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/metrics"
)

var (
	network = netip.MustParsePrefix("10.244.0.0/16")
	own     = netip.MustParsePrefix("10.244.1.0/24")
)

// peer returns vxlan-style entries for a peer with subnet 10.244.i.0/24.
func peer(link, i int, mac byte, pub string) backend.Entries {
	gw := netip.AddrFrom4([4]byte{10, 244, byte(i), 0})
	vtep := net.HardwareAddr{0xaa, 0, 0, 0, 0, mac}
	return backend.Entries{
		kernel.Neigh{LinkIndex: link, IP: gw, MAC: vtep},
		kernel.FDB{LinkIndex: link, MAC: vtep, Dst: netip.MustParseAddr(pub)},
		kernel.Route{LinkIndex: link, Dst: netip.PrefixFrom(gw, 24), Gw: gw, Onlink: true},
	}
}

func vxlanScope(link int) backend.Scope {
	return backend.Scope{
		backend.Routes(link, network, own),
		{Kind: kernel.KindNeigh, Family: family.IPv4, Link: link},
		{Kind: kernel.KindFDB, Family: family.IPv4, Link: link},
	}
}

func newKernel(t *testing.T) (*fakekernel.Fake, int) {
	t.Helper()
	k := fakekernel.New()
	link, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	return k, link.Index
}

// TestFullSyncInParts: a full sync fed page by page leaves right entries
// alone, adds new ones as pages arrive, and fixes wrong ones and removes
// stale ones only at the end, when every peer is known (a wrong entry may
// be another peer's, which a later page brings: TestConflictAfterRestart). While it is open, the table refuses
// per-peer syncs.
func TestFullSyncInParts(t *testing.T) {
	k, link := newKernel(t)
	scope := vxlanScope(link)
	table := backend.NewTable(k, nil)

	// The kernel as a previous run left it: peer 2 right, peer 3 with an
	// old VTEP MAC, peer 9 gone from the cluster since.
	prev := map[string]backend.Entries{"n2": peer(link, 2, 2, "172.18.0.3"), "n3": peer(link, 3, 0x33, "172.18.0.4"), "n9": peer(link, 9, 9, "172.18.0.10")}
	if _, err := table.SyncAll(prev, scope); err != nil {
		t.Fatal(err)
	}
	k.ResetCalls()

	table = backend.NewTable(k, nil) // a restarted daemon
	full, err := table.Begin(scope)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := table.Begin(scope); !errors.Is(err, backend.ErrFullSyncOpen) {
		t.Errorf("a second Begin while one is open: %v", err)
	}
	if _, err := table.Sync("n2", peer(link, 2, 2, "172.18.0.3")); !errors.Is(err, backend.ErrFullSyncOpen) {
		t.Errorf("Sync during a full sync: %v, want ErrFullSyncOpen", err)
	}
	page1 := map[string]backend.Entries{"n2": peer(link, 2, 2, "172.18.0.3")}
	st, err := full.Add(page1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Changed() || k.Mutations() != 0 {
		t.Errorf("a peer already right was touched: %+v, %d kernel mutations", st.Total(), k.Mutations())
	}
	page2 := map[string]backend.Entries{"n3": peer(link, 3, 3, "172.18.0.4"), "n4": peer(link, 4, 4, "172.18.0.5")}
	st, err = full.Add(page2)
	if err != nil {
		t.Fatal(err)
	}
	// n4: three new entries; n3, whose VTEP MAC changed, waits for the
	// end.
	if tot := st.Total(); tot.Added != 3 || tot.Updated != 0 || tot.Removed != 0 {
		t.Errorf("page 2: %+v, want 3 added, none updated or removed", tot)
	}
	if c := st.Kind(kernel.KindNeigh); c.Added != 1 || c.Updated != 0 {
		t.Errorf("page 2 neighbours: %+v, want 1 added", c)
	}
	dump := k.Dump()
	if !slices.Contains(dump, "route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink") {
		t.Errorf("the stale peer's route went before the list was complete: %q", dump)
	}

	all := map[string]backend.Entries{}
	for _, m := range []map[string]backend.Entries{page1, page2} {
		for n, e := range m {
			all[n] = e
		}
	}
	st, err = full.Finish(all)
	if err != nil {
		t.Fatal(err)
	}
	// n3: an FDB entry for its new MAC and its neighbour updated, its
	// route unchanged; the 4 stale entries removed (n9's three, n3's old
	// FDB entry).
	if tot := st.Total(); tot.Added != 1 || tot.Updated != 1 || tot.Removed != 4 {
		t.Errorf("finish: %+v, want 1 added, 1 updated, 4 removed", tot)
	}
	want := freshDump(all, scope)
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Errorf("kernel after the full sync:\n got  %q\n want %q", got, want)
	}
	if owner, ok := table.Owner(kernel.Route{LinkIndex: link, Dst: netip.MustParsePrefix("10.244.4.0/24")}.Key()); !ok || owner != "n4" {
		t.Errorf("Owner(route 10.244.4.0/24) = %q, %v; want n4", owner, ok)
	}
	if _, err := full.Finish(all); err == nil {
		t.Error("a second Finish was accepted")
	}
	if _, err := full.Add(page1); err == nil {
		t.Error("Add after Finish was accepted")
	}
	// A full sync from scratch finds nothing left to do; Sync works again.
	st, err = table.SyncAll(all, scope)
	if err != nil || st.Changed() {
		t.Errorf("SyncAll after the full sync: %+v, %v; want no change", st.Total(), err)
	}
	if _, err := table.Sync("n2", all["n2"]); err != nil {
		t.Errorf("Sync after the full sync: %v", err)
	}
}

// TestAbort: an aborted full sync changes nothing more and lets Sync in.
func TestAbort(t *testing.T) {
	k, link := newKernel(t)
	table := backend.NewTable(k, nil)
	full, err := table.Begin(vxlanScope(link))
	if err != nil {
		t.Fatal(err)
	}
	full.Abort()
	if _, err := full.Add(map[string]backend.Entries{"n2": peer(link, 2, 2, "172.18.0.3")}); err == nil {
		t.Error("Add after Abort was accepted")
	}
	if len(k.Dump()) != 0 {
		t.Errorf("an aborted sync programmed %q", k.Dump())
	}
	if _, err := table.Sync("n2", peer(link, 2, 2, "172.18.0.3")); err != nil {
		t.Errorf("Sync after Abort: %v", err)
	}
}

// freshDump is what a fresh kernel holds after SyncAll(want): the
// reference a full sync in parts must match. Its flannel.1 gets the same
// index as the first device of any Fake.
func freshDump(want map[string]backend.Entries, scope backend.Scope) []string {
	ref := fakekernel.New()
	_, _ = ref.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, MTU: 1450})
	_, _ = backend.NewTable(ref, nil).SyncAll(want, scope)
	return ref.Dump()
}

// TestRepairsAndLost: a route deleted behind the table's back is traced to
// its peer and put back as one repair; drift found by a full sync is
// counted as repairs too; the recorder hears of both.
func TestRepairsAndLost(t *testing.T) {
	k, link := newKernel(t)
	rec := &recorder{}
	table := backend.NewTable(k, rec)
	scope := vxlanScope(link)
	p2 := peer(link, 2, 2, "172.18.0.3")
	if _, err := table.SyncAll(map[string]backend.Entries{"n2": p2}, scope); err != nil {
		t.Fatal(err)
	}
	if table.Held(kernel.KindRoute) != 1 || table.Held(kernel.KindFDB) != 1 {
		t.Errorf("held: %d routes, %d FDB entries; want 1 each", table.Held(kernel.KindRoute), table.Held(kernel.KindFDB))
	}
	route := p2[2].(kernel.Route)
	k.Remove(route)
	name, ok := table.Lost(route)
	if !ok || name != "n2" {
		t.Fatalf("Lost(%s) = %q %v, want n2", route, name, ok)
	}
	k.ResetCalls()
	st, err := table.Sync("n2", p2)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Kind(kernel.KindRoute); c.Repaired != 1 || st.Total().Added+st.Total().Updated != 0 || k.Mutations() != 1 {
		t.Errorf("repair of a lost route: %+v, %d mutations; want one route repaired, one change", st.Total(), k.Mutations())
	}
	if _, ok := table.Lost(kernel.Route{LinkIndex: link, Dst: netip.MustParsePrefix("10.244.7.0/24")}); ok {
		t.Error("a route of no peer has an owner")
	}
	// Drift a full sync finds: the FDB entry is gone.
	k.Remove(p2[1])
	st, err = table.SyncAll(map[string]backend.Entries{"n2": p2}, scope)
	if err != nil || st.Kind(kernel.KindFDB).Repaired != 1 || st.Total().Added != 0 {
		t.Errorf("full sync after drift: %+v %v; want one FDB entry repaired", st.Total(), err)
	}
	if rec.changed["route/repaired"] != 1 || rec.changed["fdb/repaired"] != 1 || rec.changed["route/added"] != 1 || rec.held["route"] != 1 {
		t.Errorf("recorded %v, held %v", rec.changed, rec.held)
	}
	// The peer leaves: its entries go, and so does its ownership.
	if _, err := table.Sync("n2", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := table.Owner(route.Key()); ok || len(k.Dump()) != 0 || table.Held(kernel.KindRoute) != 0 {
		t.Errorf("after the peer left: kernel %q, held %d", k.Dump(), table.Held(kernel.KindRoute))
	}
}

// TestFamiliesSideBySide: one table holds both families' entries; a full
// sync of one family's scope never touches the other's.
func TestFamiliesSideBySide(t *testing.T) {
	k := fakekernel.New()
	v6net, v6own := netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd00:10:244:1::/64")
	r4 := kernel.Route{LinkIndex: 2, Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("172.18.0.3")}
	r6 := kernel.Route{LinkIndex: 2, Dst: netip.MustParsePrefix("fd00:10:244:2::/64"), Gw: netip.MustParseAddr("fc00::3")}
	table := backend.NewTable(k, nil)
	both := backend.Scope{backend.Routes(2, network, own), backend.Routes(2, v6net, v6own)}
	if _, err := table.SyncAll(map[string]backend.Entries{"n2": {r4, r6}}, both); err != nil {
		t.Fatal(err)
	}
	want := []string{"route 10.244.2.0/24 via 172.18.0.3 dev eth0", "route fd00:10:244:2::/64 via fc00::3 dev eth0"}
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Fatalf("kernel %q, want %q", got, want)
	}
	// A stale v6 route is removed by a v6 scope and left by a v4 one.
	stale := kernel.Route{LinkIndex: 2, Dst: netip.MustParsePrefix("fd00:10:244:9::/64"), Gw: netip.MustParseAddr("fc00::9")}
	k.Put(stale)
	if st, err := backend.NewTable(k, nil).SyncAll(map[string]backend.Entries{"n2": {r4}}, both[:1]); err != nil || st.Total().Removed != 0 {
		t.Errorf("v4 scope: %+v %v; want nothing removed", st.Total(), err)
	}
	if st, err := backend.NewTable(k, nil).SyncAll(map[string]backend.Entries{"n2": {r4, r6}}, both); err != nil || st.Total().Removed != 1 {
		t.Errorf("both scopes: %+v %v; want the stale v6 route removed", st.Total(), err)
	}
}

// TestOwned: routes are owned inside the cluster network only, never the
// node's own subnet or a covering prefix; entries without a destination
// (FDB) are owned on their link whatever they point at.
func TestOwned(t *testing.T) {
	o := backend.Routes(2, network, own)
	for dst, want := range map[string]bool{
		"10.244.2.0/24": true, "10.244.0.0/16": true, "10.244.1.0/24": false, "10.244.1.128/25": false,
		"10.0.0.0/8": false, "192.168.1.0/24": false,
	} {
		if got := o.Owns(kernel.Route{LinkIndex: 2, Dst: netip.MustParsePrefix(dst)}); got != want {
			t.Errorf("Owns(route %s) = %v, want %v", dst, got, want)
		}
	}
	fdb := backend.Owned{Kind: kernel.KindFDB, Family: family.IPv4, Link: 5}
	if !fdb.Owns(kernel.FDB{LinkIndex: 5, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Dst: netip.MustParseAddr("1.2.3.4")}) {
		t.Error("an FDB entry on our device is not owned")
	}
}

// recorder counts what the table reports.
type recorder struct {
	metrics.Nop
	mu      sync.Mutex
	changed map[string]int
	held    map[string]int
}

func (r *recorder) EntriesChanged(kind string, ch metrics.Change, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = map[string]int{}
	}
	r.changed[kind+"/"+string(ch)] += n
}

func (r *recorder) EntriesHeld(kind string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[string]int{}
	}
	r.held[kind] = n
}

// TestConflicts: two peers that want one slot (one podCIDR, or one VTEP
// MAC) never take it from each other: the holder keeps its entries
// untouched, the other gets none (what it had goes), and repeated syncs in
// any order give the same answer.
func TestConflicts(t *testing.T) {
	k, link := newKernel(t)
	table := backend.NewTable(k, nil)
	scope := vxlanScope(link)
	a := peer(link, 5, 5, "172.18.0.5")
	if _, err := table.Sync("a", a); err != nil {
		t.Fatal(err)
	}
	holder := freshDump(map[string]backend.Entries{"a": a}, scope)
	// b claims a's podCIDR (its own MAC and address); it had 10.244.7.0
	// before, which goes.
	if _, err := table.Sync("b", peer(link, 7, 7, "172.18.0.7")); err != nil {
		t.Fatal(err)
	}
	dup := peer(link, 5, 7, "172.18.0.7")
	_, err := table.Sync("b", dup)
	var c *backend.ConflictError
	if !errors.As(err, &c) || c.Peer != "b" || c.Holder != "a" {
		t.Fatalf("Sync of a duplicate podCIDR: %v, want a conflict of b with a", err)
	}
	if got := k.Dump(); !slices.Equal(got, holder) {
		t.Errorf("after the conflict the kernel holds %q, want only a's entries %q", got, holder)
	}
	// Full syncs, whatever the order of the map: a keeps its slot, even
	// though "a" < "b" would not matter; the holder wins over a newcomer
	// whose name sorts first too.
	for i := 0; i < 5; i++ {
		st, err := table.SyncAll(map[string]backend.Entries{"a": a, "b": dup, "0first": peer(link, 5, 0x50, "172.18.0.50")}, scope)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Conflicts) != 2 || st.Changed() {
			t.Fatalf("full sync %d: %d conflicts, changes %+v; want 2 conflicts and no change", i, len(st.Conflicts), st.Total())
		}
		if got := k.Dump(); !slices.Equal(got, holder) {
			t.Fatalf("full sync %d flapped: %q", i, got)
		}
	}
	// The holder leaves: a newcomer takes the slot, the first by name.
	st, err := table.SyncAll(map[string]backend.Entries{"b": dup, "0first": peer(link, 5, 0x50, "172.18.0.50")}, scope)
	if err != nil || len(st.Conflicts) != 1 || st.Conflicts[0].Peer != "b" || st.Conflicts[0].Holder != "0first" {
		t.Fatalf("after the holder left: %v %+v", err, st.Conflicts)
	}
	// One VTEP MAC on two peers (FDB entries keyed by MAC) is a conflict too.
	table = backend.NewTable(k, nil)
	sameMAC := peer(link, 9, 0x50, "172.18.0.9")
	st, err = table.SyncAll(map[string]backend.Entries{"0first": peer(link, 5, 0x50, "172.18.0.50"), "z": sameMAC}, scope)
	if err != nil || len(st.Conflicts) != 1 || st.Conflicts[0].Peer != "z" {
		t.Fatalf("one MAC on two peers: %v %+v", err, st.Conflicts)
	}
	if _, ok := st.Conflicts[0].Entry.(kernel.FDB); !ok {
		t.Errorf("the conflict names %s, want the FDB entry", st.Conflicts[0].Entry)
	}
}

// TestConflictAfterRestart: a new table (flanneld restarted) over a kernel
// that holds a working peer's entries, when another peer wants its slot
// (one podCIDR): the peer the kernel holds keeps it, whatever the names'
// order, and whether the newcomer comes in an earlier page of the initial
// list or in the same one. Nothing in the kernel changes.
func TestConflictAfterRestart(t *testing.T) {
	for _, pages := range [][][]string{nil, {{"a-dup", "n2"}}, {{"a-dup"}, {"n2"}}} {
		k, link := newKernel(t)
		scope := vxlanScope(link)
		n2 := peer(link, 2, 0x02, "172.18.0.12")
		if _, err := backend.NewTable(k, nil).SyncAll(map[string]backend.Entries{"n2": n2}, scope); err != nil {
			t.Fatal(err)
		}
		before := k.Dump()
		want := map[string]backend.Entries{"n2": n2, "a-dup": peer(link, 2, 0x97, "172.18.0.97")}
		table := backend.NewTable(k, nil)
		f, err := table.Begin(scope)
		if err != nil {
			t.Fatal(err)
		}
		for _, page := range pages {
			part := map[string]backend.Entries{}
			for _, name := range page {
				part[name] = want[name]
			}
			if _, err := f.Add(part); err != nil {
				t.Fatal(err)
			}
			if got := k.Dump(); !slices.Equal(got, before) {
				t.Fatalf("pages %v: page %v changed the kernel: %q, was %q", pages, page, got, before)
			}
		}
		st, err := f.Finish(want)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Conflicts) != 1 || st.Conflicts[0].Peer != "a-dup" || st.Conflicts[0].Holder != "n2" {
			t.Errorf("pages %v: conflicts %+v, want a-dup refused for n2", pages, st.Conflicts)
		}
		if got := k.Dump(); !slices.Equal(got, before) {
			t.Errorf("pages %v: the kernel changed: %q, was %q", pages, got, before)
		}
		// And the next full sync (the table now knows its holders) too.
		if st, err := table.SyncAll(want, scope); err != nil || len(st.Conflicts) != 1 || st.Changed() {
			t.Errorf("pages %v: the next full sync: %v, %+v", pages, err, st)
		}
	}
}
