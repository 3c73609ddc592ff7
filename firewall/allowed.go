package firewall

import (
	"net/netip"
	"slices"
)

// Allowed is an implementation's own copy of its guard's set: what the
// daemon said the set must hold, so that a set the kernel lost (a deleted
// table) is made again with its elements in the same step. It is not safe
// for concurrent use; implementations hold it under their lock.
type Allowed struct {
	addrs map[netip.Addr]struct{}
	// synced is set by the first Set: the copy is then the whole set, not
	// just the changes seen since the start.
	synced bool
}

// Add adds addrs.
func (a *Allowed) Add(addrs ...netip.Addr) {
	if a.addrs == nil {
		a.addrs = make(map[netip.Addr]struct{}, len(addrs))
	}
	for _, x := range addrs {
		a.addrs[x] = struct{}{}
	}
}

// Delete removes addrs.
func (a *Allowed) Delete(addrs ...netip.Addr) {
	for _, x := range addrs {
		delete(a.addrs, x)
	}
}

// Set makes the copy exactly addrs and marks it synced.
func (a *Allowed) Set(addrs []netip.Addr) {
	a.addrs = make(map[netip.Addr]struct{}, len(addrs))
	a.Add(addrs...)
	a.synced = true
}

// Synced reports whether Set was called: the copy is the whole set.
func (a *Allowed) Synced() bool { return a.synced }

// Has reports whether x is in the copy.
func (a *Allowed) Has(x netip.Addr) bool {
	_, ok := a.addrs[x]
	return ok
}

// Len is the number of addresses.
func (a *Allowed) Len() int { return len(a.addrs) }

// Sorted returns the addresses in order.
func (a *Allowed) Sorted() []netip.Addr {
	out := make([]netip.Addr, 0, len(a.addrs))
	for x := range a.addrs {
		out = append(out, x)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Diff returns what the kernel's have lacks (add) and holds in excess
// (del) for it to equal the copy, each in order.
func (a *Allowed) Diff(have []netip.Addr) (add, del []netip.Addr) {
	seen := make(map[netip.Addr]struct{}, len(have))
	for _, x := range have {
		seen[x] = struct{}{}
		if !a.Has(x) {
			del = append(del, x)
		}
	}
	for x := range a.addrs {
		if _, ok := seen[x]; !ok {
			add = append(add, x)
		}
	}
	slices.SortFunc(add, netip.Addr.Compare)
	slices.SortFunc(del, netip.Addr.Compare)
	return add, del
}

// GuardState is what an implementation remembers of its guard, under its
// lock: the set as the daemon gave it, the last policy Ensure was given,
// and whether the kernel holds the guard (as of the last look).
type GuardState struct {
	Allowed   Allowed
	Policy    Policy
	Ensured   bool
	Installed bool
}

// SyncStep is what SyncAllowed has to do.
type SyncStep int

// The steps.
const (
	// SyncNothing: no guard to keep (none ensured yet, or none wanted).
	SyncNothing SyncStep = iota
	// SyncInstall: the guard waits for its set; install it, filled.
	SyncInstall
	// SyncCompare: compare the kernel's set with Allowed and fix it.
	SyncCompare
)

// Sync records addrs as the whole set and says what SyncAllowed must do.
func (g *GuardState) Sync(addrs []netip.Addr) SyncStep {
	g.Allowed.Set(addrs)
	switch {
	case !g.Ensured || g.Policy.GuardPort == 0:
		return SyncNothing
	case !g.Installed:
		return SyncInstall
	default:
		return SyncCompare
	}
}

// Guarded says whether the guard is to be in the kernel under p: it is
// asked for, and either its set is known in full or the kernel holds it
// (setExists).
func (g *GuardState) Guarded(p Policy, setExists bool) bool {
	return p.GuardPort != 0 && (g.Allowed.Synced() || setExists)
}
