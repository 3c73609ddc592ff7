package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/twill-net/twill/family"
)

// Replacing returns a Maker whose firewalls keep their rules with mk and
// remove, once, whatever the firewalls of others left: a node moved from
// one implementation to another (iptables ↔ nftables, with a restart)
// loses every rule of the old one, and never goes without masquerading or
// forwarding, as the old rules go only after the new ones are in. With a
// guard, they go only once the new guard holds its peers (its first
// SyncAllowed), so the tunnel stays guarded by the old set meanwhile.
//
// Remove removes what every implementation may have left. An implementation
// of others whose firewall cannot be made (its tool is not installed) is
// taken to have left nothing.
func Replacing(mk Maker, others ...Maker) Maker {
	return func(f family.Family) (Firewall, error) {
		fw, err := mk(f)
		if err != nil {
			return nil, err
		}
		r := &replacing{Firewall: fw}
		for _, o := range others {
			if old, err := o(f); err == nil {
				r.old = append(r.old, old)
			}
		}
		return r, nil
	}
}

// replacing is a firewall that removes the others' rules once its own hold.
type replacing struct {
	Firewall
	old []Firewall

	mu sync.Mutex
	// guarded is the last policy's GuardPort; synced is set by the first
	// SyncAllowed that succeeded; done once the others are removed.
	guarded      bool
	ensured      bool
	synced, done bool
}

func (r *replacing) Ensure(p Policy) (bool, error) {
	changed, err := r.Firewall.Ensure(p)
	if err != nil {
		return changed, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ensured, r.guarded = true, p.GuardPort != 0
	return changed, r.retire()
}

func (r *replacing) SyncAllowed(addrs []netip.Addr) (bool, error) {
	changed, err := r.Firewall.SyncAllowed(addrs)
	if err != nil {
		return changed, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = true
	return changed, r.retire()
}

// retire removes the others' rules once this firewall's are complete.
// r.mu is held.
func (r *replacing) retire() error {
	if r.done || !r.ensured || (r.guarded && !r.synced) {
		return nil
	}
	var errs []error
	for _, o := range r.old {
		if err := o.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing the rules of the other firewall: %w", errors.Join(errs...))
	}
	r.done = true
	return nil
}

func (r *replacing) Remove() error {
	errs := []error{r.Firewall.Remove()}
	for _, o := range r.old {
		errs = append(errs, o.Remove())
	}
	return errors.Join(errs...)
}
