package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
)

// guards keeps the tunnel guards' allowed sets, one guard per plane that
// has one: which peer brought which public address. A peer's address is
// added before its entries are programmed and removed after they are gone,
// once no other peer has it; a full reconcile makes every set exact.
type guards struct {
	mu    sync.Mutex
	by    map[family.Family]firewall.Guard
	peers map[string][]netip.Addr
	refs  map[netip.Addr]int
	// pending are the addresses admitted for each peer whose entries are
	// being programmed (admit, not yet settle): resync keeps them.
	pending map[string][]netip.Addr
	// synced is true once a full reconcile made the sets exact: only then
	// is a guard installed, and may resync put its set right.
	synced bool
}

// newGuards returns the guards of the planes whose policy has a guard.
func newGuards(ps planes) *guards {
	g := &guards{by: map[family.Family]firewall.Guard{}, peers: map[string][]netip.Addr{}, refs: map[netip.Addr]int{}}
	for _, p := range ps {
		if p.fw != nil && p.policy.GuardPort != 0 {
			g.by[p.fam] = p.fw
		}
	}
	return g
}

// on reports whether any plane has a guard.
func (g *guards) on() bool { return g != nil && len(g.by) > 0 }

// byFamily groups addrs by family, dropping those of families without a
// guard.
func (g *guards) byFamily(addrs []netip.Addr) map[family.Family][]netip.Addr {
	out := map[family.Family][]netip.Addr{}
	for _, a := range addrs {
		if f := family.Of(a); g.by[f] != nil {
			out[f] = append(out[f], a)
		}
	}
	return out
}

// admit adds the addresses of want (peer → its public addresses) that no
// peer brought yet: one Allow per family.
func (g *guards) admit(want map[string][]netip.Addr) error {
	if !g.on() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[netip.Addr]bool{}
	var fresh []netip.Addr
	for _, addrs := range want {
		for _, a := range addrs {
			if g.refs[a] == 0 && !seen[a] {
				seen[a] = true
				fresh = append(fresh, a)
			}
		}
	}
	if g.pending == nil {
		g.pending = map[string][]netip.Addr{}
	}
	for name, addrs := range want {
		g.pending[name] = slices.Clone(addrs)
	}
	var errs []error
	for f, addrs := range g.byFamily(fresh) {
		if err := g.by[f].Allow(addrs...); err != nil {
			errs = append(errs, fmt.Errorf("%s tunnel guard: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// settle records that peer name now brings addrs (none: it is gone), after
// its entries were programmed or removed, and removes the addresses no
// peer brings any more.
func (g *guards) settle(name string, addrs []netip.Addr) error {
	if !g.on() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pending, name)
	old := g.peers[name]
	for _, a := range addrs {
		if !slices.Contains(old, a) {
			g.refs[a]++
		}
	}
	var gone []netip.Addr
	for _, a := range old {
		if slices.Contains(addrs, a) {
			continue
		}
		if g.refs[a]--; g.refs[a] <= 0 {
			delete(g.refs, a)
			gone = append(gone, a)
		}
	}
	if len(addrs) == 0 {
		delete(g.peers, name)
	} else {
		g.peers[name] = slices.Clone(addrs)
	}
	var errs []error
	for f, addrs := range g.byFamily(gone) {
		if err := g.by[f].Disallow(addrs...); err != nil {
			errs = append(errs, fmt.Errorf("%s tunnel guard: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// held returns the addresses peer name brought.
func (g *guards) held(name string) []netip.Addr {
	if !g.on() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peers[name]
}

// reset replaces the record with want, after a full reconcile programmed
// it, and makes every guard's set exactly its family's addresses.
// changed reports whether any set had to be written.
func (g *guards) reset(want map[string][]netip.Addr) (bool, error) {
	if !g.on() {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.peers = make(map[string][]netip.Addr, len(want))
	g.pending = nil
	g.refs = make(map[netip.Addr]int, len(want))
	var all []netip.Addr
	for name, addrs := range want {
		if len(addrs) == 0 {
			continue
		}
		g.peers[name] = slices.Clone(addrs)
		for _, a := range addrs {
			if g.refs[a] == 0 {
				all = append(all, a)
			}
			g.refs[a]++
		}
	}
	g.synced = true
	return g.syncAll(all)
}

// resync makes every guard's set exactly the addresses the peers bring
// now, after a full reconcile made them exact once: an element deleted or
// added by hand, or a flushed set, is put right on the next rule check
// rather than the next full reconcile. changed reports whether any set
// had to be written.
func (g *guards) resync() (bool, error) {
	if !g.on() {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.synced {
		return false, nil
	}
	seen := make(map[netip.Addr]bool, len(g.refs))
	all := make([]netip.Addr, 0, len(g.refs))
	for a := range g.refs {
		seen[a] = true
		all = append(all, a)
	}
	for _, addrs := range g.pending {
		for _, a := range addrs {
			if !seen[a] {
				seen[a] = true
				all = append(all, a)
			}
		}
	}
	return g.syncAll(all)
}

// syncAll makes each guard's set exactly its family's addresses of all;
// g.mu is held.
func (g *guards) syncAll(all []netip.Addr) (bool, error) {
	fams := g.byFamily(all)
	changed := false
	var errs []error
	for f, gd := range g.by {
		ch, err := gd.SyncAllowed(fams[f])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s tunnel guard: %w", f, err))
		}
		changed = changed || ch
	}
	return changed, errors.Join(errs...)
}
