package iptables

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
)

// errNoElement is the kernel's answer to deleting an element the set does
// not hold.
var errNoElement = nl.IPSetError(nl.IPSET_ERR_EXIST)

// probe is an address tested against a set only to learn whether the set
// exists: the test's answer is ignored.
var probe = map[family.Family]net.IP{family.IPv4: net.IPv4zero.To4(), family.IPv6: net.IPv6zero}

// setExists reports whether the kernel holds the ipset name, without
// listing its elements.
func (fw *Firewall) setExists(name string) (bool, error) {
	_, err := fw.sets.IpsetTest(name, &netlink.IPSetEntry{IP: probe[fw.fam]})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("looking up ipset %s: %w", name, err)
	}
}

// createSet makes the empty ipset name of the firewall's family.
func (fw *Firewall) createSet(name string) error {
	fam := uint8(unix.AF_INET)
	if fw.fam == family.IPv6 {
		fam = unix.AF_INET6
	}
	if err := fw.sets.IpsetCreate(name, "hash:ip", netlink.IpsetCreateOptions{Family: fam}); err != nil {
		return fmt.Errorf("creating ipset %s: %w", name, err)
	}
	return nil
}

// fillSet makes the ipset name and adds every allowed address.
func (fw *Firewall) fillSet(name string) error {
	if err := fw.createSet(name); err != nil {
		return err
	}
	return fw.add(name, fw.g.Allowed.Sorted())
}

func (fw *Firewall) add(name string, addrs []netip.Addr) error {
	for _, a := range addrs {
		// Replace: an element already there is not an error.
		if err := fw.sets.IpsetAdd(name, &netlink.IPSetEntry{IP: a.AsSlice(), Replace: true}); err != nil {
			return fmt.Errorf("adding %s to ipset %s: %w", a, name, err)
		}
	}
	return nil
}

// destroySets removes the guard's set and a half-built replacement of it.
// The rule that names the set must be gone.
func (fw *Firewall) destroySets() error {
	var errs []error
	for _, name := range []string{SetName(fw.fam), SetName(fw.fam) + "-NEW"} {
		if err := fw.sets.IpsetDestroy(name); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing ipset %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Allow implements firewall.Guard: one netlink message per address.
func (fw *Firewall) Allow(addrs ...netip.Addr) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.g.Allowed.Add(addrs...)
	if !fw.g.Installed {
		return nil
	}
	return fw.add(SetName(fw.fam), addrs)
}

// Disallow implements firewall.Guard.
func (fw *Firewall) Disallow(addrs ...netip.Addr) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.g.Allowed.Delete(addrs...)
	if !fw.g.Installed {
		return nil
	}
	name := SetName(fw.fam)
	for _, a := range addrs {
		if err := fw.sets.IpsetDel(name, &netlink.IPSetEntry{IP: a.AsSlice()}); err != nil && !errors.Is(err, errNoElement) {
			return fmt.Errorf("removing %s from ipset %s: %w", a, name, err)
		}
	}
	return nil
}

// SyncAllowed implements firewall.Guard. A set that drifted is rebuilt
// under a temporary name and swapped in, so no peer is refused meanwhile;
// a guard not installed yet is installed now, its set filled first.
func (fw *Firewall) SyncAllowed(addrs []netip.Addr) (bool, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	switch fw.g.Sync(addrs) {
	case firewall.SyncNothing:
		return false, nil
	case firewall.SyncInstall:
		return fw.installGuard()
	}
	name := SetName(fw.fam)
	res, err := fw.sets.IpsetList(name)
	if errors.Is(err, unix.ENOENT) {
		return fw.installGuard()
	}
	if err != nil {
		return false, fmt.Errorf("reading ipset %s: %w", name, err)
	}
	have := make([]netip.Addr, 0, len(res.Entries))
	for _, e := range res.Entries {
		if a, ok := netip.AddrFromSlice(e.IP); ok {
			have = append(have, a.Unmap())
		}
	}
	if add, del := fw.g.Allowed.Diff(have); len(add)+len(del) == 0 {
		return false, nil
	}
	tmp := name + "-NEW"
	if err := fw.sets.IpsetDestroy(tmp); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("removing ipset %s: %w", tmp, err)
	}
	if err := fw.fillSet(tmp); err != nil {
		return false, err
	}
	if err := fw.sets.IpsetSwap(name, tmp); err != nil {
		return false, fmt.Errorf("swapping ipset %s into %s: %w", tmp, name, err)
	}
	if err := fw.sets.IpsetDestroy(tmp); err != nil {
		return true, fmt.Errorf("removing ipset %s: %w", tmp, err)
	}
	return true, nil
}

// Dropped implements firewall.Guard: the packet counter of the guard's
// DROP rule.
func (fw *Firewall) Dropped() (uint64, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !fw.g.Installed {
		return 0, nil
	}
	lines, err := fw.ipt.ListWithCounters("filter", GuardChain)
	if err != nil {
		return 0, fmt.Errorf("reading the counters of %s: %w", GuardChain, err)
	}
	var n uint64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-A" || !strings.HasSuffix(l, "-j DROP") {
			continue
		}
		for i := range f[:len(f)-1] {
			if f[i] == "-c" {
				v, err := strconv.ParseUint(f[i+1], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: packet count in %q: %w", GuardChain, l, err)
				}
				n += v
			}
		}
	}
	return n, nil
}
