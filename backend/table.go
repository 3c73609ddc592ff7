package backend

import (
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"sync"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/metrics"
)

// ErrFullSyncOpen is returned by Sync while a full sync is in progress: its
// view of the kernel would not see the change.
var ErrFullSyncOpen = errors.New("a full sync is in progress")

// ConflictError says a peer wants a kernel entry's slot that another peer
// holds: two Nodes with one podCIDR, or one VTEP MAC. The holder keeps its
// entries untouched; the peer gets none of its own (what it had goes), so
// the two never take the slot from each other in turn.
type ConflictError struct {
	// Peer is the peer refused, Holder the one that keeps the slot.
	Peer, Holder string
	// Entry is the peer's entry whose slot is taken.
	Entry kernel.Entry
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("node %s wants the slot of node %s's %s", e.Peer, e.Holder, e.Entry)
}

// Table applies peers' entries to the kernel and remembers what it applied,
// so a change of one peer costs work for that peer only. It knows no kind
// of entry in particular: every kind is handled by the same code, in the
// order of kernel.Kinds. It is safe for concurrent use.
type Table struct {
	k   kernel.Kernel
	rec metrics.Recorder

	mu      sync.Mutex
	applied map[string]Entries
	// owner maps the hash of every applied entry's key to its peer, so an
	// entry the kernel lost is traced to one peer and two peers never hold
	// one slot. A hash of 8 bytes instead of the 48-byte key keeps it small
	// at 15,000 entries; a hash that two keys share is told apart by
	// looking at the owner's applied entries (see ownerOf).
	seed  maphash.Seed
	owner map[uint64]string
	// lost holds keys of applied entries the kernel lost (see Lost): their
	// return counts as a repair.
	lost map[kernel.Key]bool
	held [kernel.NumKinds]int
	// full is the full sync in progress, if any.
	full *FullSync
}

// NewTable returns an empty table over k, reporting to rec (nil: nowhere).
func NewTable(k kernel.Kernel, rec metrics.Recorder) *Table {
	return &Table{k: k, rec: metrics.OrNop(rec), applied: map[string]Entries{}, seed: maphash.MakeSeed(), owner: map[uint64]string{}, lost: map[kernel.Key]bool{}}
}

// Count says how many entries of one kind a sync changed, by change.
type Count struct {
	Added, Updated, Removed, Repaired int
}

// Stats says what a sync changed, by kind of entry, and which peers it
// refused for a conflict.
type Stats struct {
	kinds [kernel.NumKinds]Count
	// Conflicts are the peers a full sync refused (see ConflictError).
	Conflicts []*ConflictError
}

// Kind returns the changes to entries of kind k.
func (s Stats) Kind(k kernel.Kind) Count { return s.kinds[k-1] }

// Total sums the changes of every kind.
func (s Stats) Total() Count {
	var t Count
	for _, c := range s.kinds {
		t.Added += c.Added
		t.Updated += c.Updated
		t.Removed += c.Removed
		t.Repaired += c.Repaired
	}
	return t
}

// Changed reports whether anything was changed.
func (s Stats) Changed() bool {
	t := s.Total()
	return t.Added+t.Updated+t.Removed+t.Repaired > 0
}

func (s *Stats) counter(k kernel.Kind, ch metrics.Change) *int {
	c := &s.kinds[k-1]
	switch ch {
	case metrics.Added:
		return &c.Added
	case metrics.Updated:
		return &c.Updated
	case metrics.Removed:
		return &c.Removed
	default:
		return &c.Repaired
	}
}

// report hands the stats to the recorder.
func (t *Table) report(st Stats) {
	for _, k := range kernel.Kinds {
		c := st.Kind(k)
		for _, x := range [...]struct {
			ch metrics.Change
			n  int
		}{{metrics.Added, c.Added}, {metrics.Updated, c.Updated}, {metrics.Removed, c.Removed}, {metrics.Repaired, c.Repaired}} {
			if x.n > 0 {
				t.rec.EntriesChanged(k.String(), x.ch, x.n)
			}
		}
		t.rec.EntriesHeld(k.String(), t.held[k-1])
	}
}

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
	for i, err := range k.Apply(p.ops) {
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

// change is how setting peer name's entry e counts: a repair when the
// table had applied it and the kernel lost it, else an addition or (held:
// the kernel had another entry in its slot) an update. t.mu is held.
func (t *Table) change(name string, e kernel.Entry, held bool) metrics.Change {
	key := e.Key()
	if t.lost[key] {
		return metrics.Repaired
	}
	if old, ok := find(t.applied[name], key); ok && old.Equal(e) {
		return metrics.Repaired
	}
	if held {
		return metrics.Updated
	}
	return metrics.Added
}

// Sync makes the kernel hold want for peer name (an empty want removes the
// peer), touching only entries that differ from what was applied before.
func (t *Table) Sync(name string, want Entries) (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full != nil {
		return Stats{}, ErrFullSyncOpen
	}
	var conflict *ConflictError
	for _, e := range want {
		if holder, ok := t.ownerOf(e.Key()); ok && holder != name {
			conflict = &ConflictError{Peer: name, Holder: holder, Entry: e}
			want = nil // the peer gets none: what it had goes
			break
		}
	}
	old := t.applied[name]
	var st Stats
	var p plan
	// Removal first, last kind first: routes before the entries they
	// depend on.
	for i := len(kernel.Kinds) - 1; i >= 0; i-- {
		k := kernel.Kinds[i]
		for _, e := range old {
			if e.Key().Kind == k && !contains(want, e.Key()) {
				p.add(kernel.Op{Delete: true, Entry: e}, st.counter(k, metrics.Removed))
			}
		}
	}
	// Then in the order a packet needs them.
	for _, k := range kernel.Kinds {
		for _, e := range want {
			if e.Key().Kind != k {
				continue
			}
			o, ok := find(old, e.Key())
			if ok && o.Equal(e) && !t.lost[e.Key()] {
				continue
			}
			ch := metrics.Added
			switch {
			case t.lost[e.Key()]:
				ch = metrics.Repaired
			case ok:
				ch = metrics.Updated
			}
			p.add(kernel.Op{Entry: e}, st.counter(k, ch))
		}
	}
	err := p.apply(t.k)
	if err != nil {
		// What was applied is unknown: forget it, so the next sync
		// programs everything again.
		t.setApplied(name, old, nil)
		err = fmt.Errorf("programming peer %s: %w", name, err)
	} else {
		t.setApplied(name, old, want)
	}
	t.report(st)
	if err == nil && conflict != nil {
		return st, conflict
	}
	return st, err
}

// ownerOf returns the peer whose applied entry has key. t.mu is held.
func (t *Table) ownerOf(key kernel.Key) (string, bool) {
	name, ok := t.owner[maphash.Comparable(t.seed, key)]
	if !ok {
		return "", false
	}
	if _, ok := find(t.applied[name], key); !ok {
		return "", false // another key with the same hash
	}
	return name, true
}

// resolve finds the peers of want that want a slot another peer wants too
// or holds. The peer that holds the slot wins: the one the table applied
// it for, else (a new table, after a restart or a recreated device, over
// a kernel read as held) one whose every entry the kernel holds as it
// wants it; between two
// newcomers, the name first in order, so every node of a cluster makes the
// same choice. It returns want without the losers (a copy, when there are
// any), the slots the rest want, by peer, and the conflicts. t.mu is held.
func (t *Table) resolve(want map[string]Entries, held map[kernel.Key]kernel.Entry) (map[string]Entries, map[kernel.Key]string, []*ConflictError) {
	names := make([]string, 0, len(want))
	n := 0
	for name, es := range want {
		names = append(names, name)
		n += len(es)
	}
	slices.Sort(names)
	checkHolders := len(t.applied) > 0
	if held != nil && !checkHolders {
		// The peers the kernel holds intact first: a restart must not
		// hand a working peer's slot to a newcomer earlier by name.
		broken := make(map[string]bool, len(want))
		for name, es := range want {
			broken[name] = len(es) == 0 || slices.ContainsFunc(es, func(e kernel.Entry) bool {
				h, ok := held[e.Key()]
				return !ok || !h.Equal(e)
			})
		}
		slices.SortStableFunc(names, func(a, b string) int {
			switch {
			case broken[a] == broken[b]:
				return 0
			case broken[b]:
				return -1
			}
			return 1
		})
	}
	claims := make(map[kernel.Key]string, n)
	var out []*ConflictError
	for _, name := range names {
		var lost *ConflictError
		for _, e := range want[name] {
			key := e.Key()
			if checkHolders {
				if holder, ok := t.ownerOf(key); ok && holder != name {
					if _, stays := want[holder]; stays {
						lost = &ConflictError{Peer: name, Holder: holder, Entry: e}
						break
					}
				}
			}
			if c, ok := claims[key]; ok && c != name {
				lost = &ConflictError{Peer: name, Holder: c, Entry: e}
				break
			}
		}
		if lost != nil {
			out = append(out, lost)
			continue
		}
		for _, e := range want[name] {
			claims[e.Key()] = name
		}
	}
	if len(out) > 0 {
		want = maps.Clone(want)
		for _, c := range out {
			delete(want, c.Peer)
		}
		// A loser's claims made before it lost stay out of claims: its
		// slots are nobody's this time round.
		for key, name := range claims {
			if _, ok := want[name]; !ok {
				delete(claims, key)
			}
		}
	}
	return want, claims, out
}

// FullSync is a full sync of the table in progress. Begin reads the
// kernel's owned entries once; Add programs the peers given to it (a page
// of the initial node list at a time) and never removes anything; Finish
// gets every peer's entries, fixes what differs and removes owned entries
// no peer wants. While it is open the table refuses Sync, so nothing
// changes the kernel behind its view; Abort ends it without finishing.
type FullSync struct {
	t     *Table
	scope Scope
	// held is the kernel's owned entries as read, kept up to date by the
	// changes the sync makes.
	held map[kernel.Key]kernel.Entry
}

// Begin starts a full sync over scope. Only one can be open at a time.
func (t *Table) Begin(scope Scope) (*FullSync, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full != nil {
		return nil, ErrFullSyncOpen
	}
	lists := make([][]kernel.Entry, len(scope))
	n := 0
	for i, o := range scope {
		es, err := t.k.List(o.Kind, o.Family, o.Link)
		if err != nil {
			return nil, fmt.Errorf("reading the kernel's peer entries: %w", err)
		}
		lists[i] = es
		n += len(es)
	}
	f := &FullSync{t: t, scope: scope, held: make(map[kernel.Key]kernel.Entry, n)}
	for i, o := range scope {
		for _, e := range lists[i] {
			if o.Owns(e) {
				f.held[e.Key()] = e
			}
		}
	}
	t.full = f
	return f, nil
}

// SyncAll makes the kernel hold exactly the union of want within scope, in
// one full sync.
func (t *Table) SyncAll(want map[string]Entries, scope Scope) (Stats, error) {
	f, err := t.Begin(scope)
	if err != nil {
		return Stats{}, err
	}
	return f.Finish(want)
}

// open checks that f is the table's open full sync. t.mu is held.
func (f *FullSync) open() error {
	if f.t.full != f {
		return errors.New("the full sync has already ended")
	}
	return nil
}

// Add adds and fixes the entries of the peers in want. It never removes
// anything: a partial list of peers must not delete the others' entries.
func (f *FullSync) Add(want map[string]Entries) (Stats, error) {
	t := f.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := f.open(); err != nil {
		return Stats{}, err
	}
	var st Stats
	var p plan
	want = f.withoutChanges(want)
	want, _, st.Conflicts = t.resolve(want, f.held)
	f.addOrFix(want, &p, &st)
	err := p.apply(t.k)
	for name, e := range want {
		t.setApplied(name, t.applied[name], e)
	}
	t.report(st)
	if err != nil {
		return st, fmt.Errorf("programming peers: %w", err)
	}
	return st, nil
}

// withoutChanges returns want without the peers that would change an
// entry the kernel holds (a copy, when there are any): they wait for
// Finish, which knows every peer, as the entry may be another peer's that
// a later page brings. t.mu is held.
func (f *FullSync) withoutChanges(want map[string]Entries) map[string]Entries {
	changes := func(es Entries) bool {
		return slices.ContainsFunc(es, func(e kernel.Entry) bool {
			h, ok := f.held[e.Key()]
			return ok && !h.Equal(e)
		})
	}
	var out map[string]Entries
	for name, es := range want {
		if !changes(es) {
			continue
		}
		if out == nil {
			out = maps.Clone(want)
		}
		delete(out, name)
	}
	if out == nil {
		return want
	}
	return out
}

// Finish ends the full sync: want is every peer's entries. Owned entries
// no peer wants are removed (routes first, then the FDB and neighbour
// entries they relied on), and the rest added and fixed.
func (f *FullSync) Finish(want map[string]Entries) (Stats, error) {
	t := f.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := f.open(); err != nil {
		return Stats{}, err
	}
	t.full = nil
	var st Stats
	var p plan
	want, wanted, conflicts := t.resolve(want, f.held)
	st.Conflicts = conflicts
	n := len(wanted)
	for i := len(kernel.Kinds) - 1; i >= 0; i-- {
		k := kernel.Kinds[i]
		for key, e := range f.held {
			if _, ok := wanted[key]; key.Kind == k && !ok {
				p.add(kernel.Op{Delete: true, Entry: e}, st.counter(k, metrics.Removed))
			}
		}
	}
	f.addOrFix(want, &p, &st)
	err := p.apply(t.k)
	t.applied = make(map[string]Entries, len(want))
	t.owner = make(map[uint64]string, n)
	t.lost = map[kernel.Key]bool{}
	t.held = [kernel.NumKinds]int{}
	for name, e := range want {
		t.setApplied(name, nil, e)
	}
	t.report(st)
	if err != nil {
		return st, fmt.Errorf("full resync: %w", err)
	}
	return st, nil
}

// Abort ends the full sync without finishing it; the table then knows only
// what earlier syncs applied.
func (f *FullSync) Abort() {
	f.t.mu.Lock()
	defer f.t.mu.Unlock()
	if f.t.full == f {
		f.t.full = nil
	}
}

// addOrFix plans, in the order of kernel.Kinds, the changes that make the
// kernel hold want, and records them as held. A change that then fails is
// retried by the next full sync, which reads the kernel afresh. t.mu is
// held.
func (f *FullSync) addOrFix(want map[string]Entries, p *plan, st *Stats) {
	for _, k := range kernel.Kinds {
		for name, es := range want {
			for _, e := range es {
				key := e.Key()
				if key.Kind != k {
					continue
				}
				h, ok := f.held[key]
				if ok && h.Equal(e) {
					continue
				}
				p.add(kernel.Op{Entry: e}, st.counter(k, f.t.change(name, e, ok)))
				f.held[key] = e
			}
		}
	}
}

// Forget drops the record of applied entries, after the kernel lost them
// (a recreated device), so the next sync programs everything.
func (t *Table) Forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applied = map[string]Entries{}
	t.owner = map[uint64]string{}
	t.lost = map[kernel.Key]bool{}
	t.held = [kernel.NumKinds]int{}
}

// Lost records that the kernel lost applied entry e (someone deleted it),
// so the next Sync of its peer puts it back and counts a repair. It returns
// that peer; ok is false when no peer's applied entry has e's key (the
// table itself removed it, or never had it).
func (t *Table) Lost(e kernel.Entry) (peer string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := e.Key()
	name, ok := t.ownerOf(key)
	if !ok {
		return "", false
	}
	old := t.applied[name]
	kept := make(Entries, 0, len(old))
	for _, x := range old {
		if x.Key() != key {
			kept = append(kept, x)
		}
	}
	t.setApplied(name, old, kept)
	t.lost[key] = true
	return name, true
}

// Owner returns the peer whose applied entry has key.
func (t *Table) Owner(key kernel.Key) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ownerOf(key)
}

// setApplied records want as applied for name, replacing old. t.mu is held.
func (t *Table) setApplied(name string, old, want Entries) {
	for _, e := range old {
		key := e.Key()
		t.held[key.Kind-1]--
		if h := maphash.Comparable(t.seed, key); t.owner[h] == name {
			delete(t.owner, h)
		}
	}
	for _, e := range want {
		key := e.Key()
		t.held[key.Kind-1]++
		t.owner[maphash.Comparable(t.seed, key)] = name
		if len(t.lost) > 0 {
			delete(t.lost, key)
		}
	}
	if len(want) == 0 {
		delete(t.applied, name)
		return
	}
	t.applied[name] = want
}

// Applied returns what was applied for peer name.
func (t *Table) Applied(name string) (Entries, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.applied[name]
	return e, ok
}

// Held returns how many applied entries of kind k the table holds.
func (t *Table) Held(k kernel.Kind) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held[k-1]
}

func contains(es Entries, key kernel.Key) bool {
	_, ok := find(es, key)
	return ok
}

func find(es Entries, key kernel.Key) (kernel.Entry, bool) {
	for _, e := range es {
		if e.Key() == key {
			return e, true
		}
	}
	return nil, false
}
