package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/twill-net/twill/backend/kernel"
)

// Table applies peers' entries to the kernel and remembers what it applied,
// so a change of one peer costs work for that peer only. It is safe for
// concurrent use.
type Table struct {
	k       kernel.Kernel
	network *net.IPNet
	own     *net.IPNet

	mu      sync.Mutex
	applied map[string]Entries
	// routeOwner maps an applied route's destination to its peer, so a
	// route deleted behind our back is traced to one peer.
	routeOwner map[netip.Prefix]string
	// full is the kernel's state during a full sync (see BeginFull).
	full *fullSync
}

// NewTable returns a table for routes inside network; own (the node's own
// subnet) is never touched.
func NewTable(k kernel.Kernel, network, own *net.IPNet) *Table {
	return &Table{k: k, network: network, own: own, applied: map[string]Entries{}, routeOwner: map[netip.Prefix]string{}}
}

// Stats says what a sync changed.
type Stats struct {
	Added, Updated, Deleted int
}

// Changed reports whether anything was changed.
func (s Stats) Changed() bool { return s.Added+s.Updated+s.Deleted > 0 }

// plan collects kernel changes in the order they must happen, with the
// statistic each one counts towards.
type plan struct {
	ops    []kernel.Op
	counts []*int
}

func (p *plan) add(op kernel.Op, n *int) {
	p.ops = append(p.ops, op)
	p.counts = append(p.counts, n)
}

// apply performs the plan in as few system calls as the kernel allows.
func (p *plan) apply(k kernel.Kernel) error {
	if len(p.ops) == 0 {
		return nil
	}
	var errs []error
	seen := map[string]bool{}
	failed := 0
	for i, err := range kernel.Apply(k, p.ops) {
		if err == nil {
			*p.counts[i]++
			continue
		}
		failed++
		// One broken socket fails every op alike: say it once.
		if msg := err.Error(); !seen[msg] && len(errs) < 3 {
			seen[msg] = true
			errs = append(errs, err)
		}
	}
	if failed > len(errs) {
		errs = append(errs, fmt.Errorf("%d of %d kernel changes failed in all", failed, len(p.ops)))
	}
	return errors.Join(errs...)
}

// Sync makes the kernel hold want for peer name (an empty want removes the
// peer), touching only entries that differ from what was applied before.
func (t *Table) Sync(name string, want Entries) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.applied[name]
	var st Stats
	var p plan
	// Removal first, routes before the entries they depend on.
	for _, r := range old.Routes {
		if !containsRoute(want.Routes, r) {
			p.add(kernel.Op{Kind: kernel.OpDeleteRoute, Route: r}, &st.Deleted)
		}
	}
	for _, f := range old.FDBs {
		if !containsKey(want.FDBs, f.Key(), kernel.FDB.Key) {
			p.add(kernel.Op{Kind: kernel.OpDeleteFDB, FDB: f}, &st.Deleted)
		}
	}
	for _, n := range old.Neighs {
		if !containsKey(want.Neighs, n.Key(), kernel.Neigh.Key) {
			p.add(kernel.Op{Kind: kernel.OpDeleteNeigh, Neigh: n}, &st.Deleted)
		}
	}
	// Then, in the order a packet needs them: neighbour, FDB, route.
	for _, n := range want.Neighs {
		if o, ok := findKey(old.Neighs, n.Key(), kernel.Neigh.Key); !ok || !o.Equal(n) {
			p.add(kernel.Op{Kind: kernel.OpSetNeigh, Neigh: n}, counter(&st, ok))
		}
	}
	for _, f := range want.FDBs {
		if o, ok := findKey(old.FDBs, f.Key(), kernel.FDB.Key); !ok || !o.Equal(f) {
			p.add(kernel.Op{Kind: kernel.OpSetFDB, FDB: f}, counter(&st, ok))
		}
	}
	for _, r := range want.Routes {
		if o, ok := findKey(old.Routes, r.Key(), kernel.Route.Key); !ok || !o.Equal(r) {
			p.add(kernel.Op{Kind: kernel.OpReplaceRoute, Route: r}, counter(&st, ok))
		}
	}
	if err := p.apply(t.k); err != nil {
		// What was applied is unknown: forget it, so the next sync
		// programs everything again.
		t.setApplied(name, old, Entries{})
		return st, fmt.Errorf("programming peer %s: %w", name, err)
	}
	t.setApplied(name, old, want)
	return st, nil
}

// SyncAll makes the kernel hold exactly the union of want within scope: it
// reads the kernel once per link and kind, adds what is missing, fixes what
// differs and removes owned entries that no peer wants (nodes deleted while
// the daemon was down, a peer's old VTEP MAC, entries of another backend).
func (t *Table) SyncAll(want map[string]Entries, scope Scope) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.begin(scope); err != nil {
		return Stats{}, err
	}
	return t.finish(want)
}

// BeginFull starts a full sync that is fed in parts: it reads the kernel's
// entries within scope once, so that AddPeers, called as peers become
// known (a page of the initial node list at a time), programs only what
// differs, and FinishFull removes what no peer wanted. Until FinishFull
// the table holds the kernel's state as read; Sync must not be used.
func (t *Table) BeginFull(scope Scope) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.begin(scope)
}

// AddPeers adds and fixes the entries of the peers in want, inside a full
// sync started by BeginFull. It never removes anything.
func (t *Table) AddPeers(want map[string]Entries) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full == nil {
		return Stats{}, errors.New("AddPeers outside a full sync")
	}
	var st Stats
	var p plan
	t.full.addOrFix(want, &p, &st)
	err := p.apply(t.k)
	for name, e := range want {
		t.setApplied(name, t.applied[name], e)
	}
	if err != nil {
		return st, fmt.Errorf("programming peers: %w", err)
	}
	return st, nil
}

// FinishFull ends a full sync started by BeginFull: want is every peer's
// entries; what differs is fixed and owned entries no peer wants are
// removed.
func (t *Table) FinishFull(want map[string]Entries) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full == nil {
		return Stats{}, errors.New("FinishFull without BeginFull")
	}
	return t.finish(want)
}

// fullSync is the kernel's state within a scope, read at the start of a
// full sync and kept up to date by the changes the sync makes.
type fullSync struct {
	routes map[kernel.RouteKey]kernel.Route
	neighs map[kernel.NeighKey]kernel.Neigh
	fdbs   map[kernel.FDBKey]kernel.FDB
}

// begin reads the kernel within scope. t.mu is held.
func (t *Table) begin(scope Scope) error {
	f := &fullSync{
		routes: map[kernel.RouteKey]kernel.Route{},
		neighs: map[kernel.NeighKey]kernel.Neigh{},
		fdbs:   map[kernel.FDBKey]kernel.FDB{},
	}
	for _, link := range scope.RouteLinks {
		rs, err := t.k.Routes(link)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if t.ownsRoute(r) {
				f.routes[r.Key()] = r
			}
		}
	}
	for _, link := range scope.NeighLinks {
		ns, err := t.k.Neighs(link)
		if err != nil {
			return err
		}
		for _, n := range ns {
			f.neighs[n.Key()] = n
		}
		fs, err := t.k.FDBs(link)
		if err != nil {
			return err
		}
		for _, e := range fs {
			f.fdbs[e.Key()] = e
		}
	}
	t.full = f
	return nil
}

// addOrFix plans, in the order a packet needs them (neighbour, FDB,
// route), the changes that make the kernel hold want, and records them as
// held. A change that then fails is retried by the next sync, which reads
// the kernel afresh.
func (f *fullSync) addOrFix(want map[string]Entries, p *plan, st *Stats) {
	for _, e := range want {
		for _, n := range e.Neighs {
			if h, ok := f.neighs[n.Key()]; !ok || !h.Equal(n) {
				p.add(kernel.Op{Kind: kernel.OpSetNeigh, Neigh: n}, counter(st, ok))
				f.neighs[n.Key()] = n
			}
		}
	}
	for _, e := range want {
		for _, fd := range e.FDBs {
			if h, ok := f.fdbs[fd.Key()]; !ok || !h.Equal(fd) {
				p.add(kernel.Op{Kind: kernel.OpSetFDB, FDB: fd}, counter(st, ok))
				f.fdbs[fd.Key()] = fd
			}
		}
	}
	for _, e := range want {
		for _, r := range e.Routes {
			if h, ok := f.routes[r.Key()]; !ok || !h.Equal(r) {
				p.add(kernel.Op{Kind: kernel.OpReplaceRoute, Route: r}, counter(st, ok))
				f.routes[r.Key()] = r
			}
		}
	}
}

// finish removes the owned entries want does not hold (routes first, then
// the FDB and neighbour entries they relied on), adds and fixes the rest,
// and ends the full sync. t.mu is held and t.full set.
func (t *Table) finish(want map[string]Entries) (Stats, error) {
	f := t.full
	t.full = nil
	var st Stats
	var p plan
	n := 0
	for _, e := range want {
		n += len(e.Routes)
	}
	wantRoutes := make(map[kernel.RouteKey]bool, n)
	wantNeighs := make(map[kernel.NeighKey]bool, n)
	wantFDBs := make(map[kernel.FDBKey]bool, n)
	for _, e := range want {
		for _, r := range e.Routes {
			wantRoutes[r.Key()] = true
		}
		for _, n := range e.Neighs {
			wantNeighs[n.Key()] = true
		}
		for _, fd := range e.FDBs {
			wantFDBs[fd.Key()] = true
		}
	}
	for k, r := range f.routes {
		if !wantRoutes[k] {
			p.add(kernel.Op{Kind: kernel.OpDeleteRoute, Route: r}, &st.Deleted)
		}
	}
	for k, fd := range f.fdbs {
		if !wantFDBs[k] {
			p.add(kernel.Op{Kind: kernel.OpDeleteFDB, FDB: fd}, &st.Deleted)
		}
	}
	for k, n := range f.neighs {
		if !wantNeighs[k] {
			p.add(kernel.Op{Kind: kernel.OpDeleteNeigh, Neigh: n}, &st.Deleted)
		}
	}
	f.addOrFix(want, &p, &st)
	err := p.apply(t.k)
	t.applied = make(map[string]Entries, len(want))
	t.routeOwner = make(map[netip.Prefix]string, len(want))
	for name, e := range want {
		t.setApplied(name, Entries{}, e)
	}
	if err != nil {
		return st, fmt.Errorf("full resync: %w", err)
	}
	return st, nil
}

// Forget drops the record of applied entries, after the kernel lost them
// (a recreated device), so the next sync programs everything.
func (t *Table) Forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applied = map[string]Entries{}
	t.routeOwner = map[netip.Prefix]string{}
}

// Invalidate forgets what was applied for peer name, so its next Sync
// programs all its entries again (after the kernel lost one of them).
func (t *Table) Invalidate(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setApplied(name, t.applied[name], Entries{})
}

// RouteOwner returns the peer whose applied route has destination dst.
func (t *Table) RouteOwner(dst *net.IPNet) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	name, ok := t.routeOwner[kernel.PrefixOf(dst)]
	return name, ok
}

// setApplied records want as applied for name, replacing old. t.mu is held.
func (t *Table) setApplied(name string, old, want Entries) {
	for _, r := range old.Routes {
		if t.routeOwner[kernel.PrefixOf(r.Dst)] == name {
			delete(t.routeOwner, kernel.PrefixOf(r.Dst))
		}
	}
	if want.Len() == 0 {
		delete(t.applied, name)
		return
	}
	t.applied[name] = want
	for _, r := range want.Routes {
		t.routeOwner[kernel.PrefixOf(r.Dst)] = name
	}
}

// Applied returns what was applied for peer name.
func (t *Table) Applied(name string) (Entries, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.applied[name]
	return e, ok
}

// ownsRoute: routes to subnets of the cluster network other than our own.
func (t *Table) ownsRoute(r kernel.Route) bool {
	if r.Dst == nil || !t.network.Contains(r.Dst.IP) {
		return false
	}
	ones, _ := r.Dst.Mask.Size()
	netOnes, _ := t.network.Mask.Size()
	if ones < netOnes {
		return false
	}
	return t.own == nil || !t.own.Contains(r.Dst.IP)
}

func counter(st *Stats, existed bool) *int {
	if existed {
		return &st.Updated
	}
	return &st.Added
}

func containsRoute(rs []kernel.Route, r kernel.Route) bool {
	return containsKey(rs, r.Key(), kernel.Route.Key)
}

func containsKey[T any, K comparable](xs []T, key K, keyOf func(T) K) bool {
	_, ok := findKey(xs, key, keyOf)
	return ok
}

func findKey[T any, K comparable](xs []T, key K, keyOf func(T) K) (T, bool) {
	for _, x := range xs {
		if keyOf(x) == key {
			return x, true
		}
	}
	var zero T
	return zero, false
}
