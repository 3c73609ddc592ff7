// Package firewall says what the node's packet filter must do for pod
// traffic (masquerade what leaves the cluster network, accept forwarding of
// the pod network, accept the tunnel only from peers) as a Policy per IP
// family, and names the interface its implementations keep it with. The
// daemon only knows this package; the implementations are firewall/iptables
// and firewall/nftables.
package firewall

import (
	"net/netip"

	"github.com/twill-net/twill/family"
)

// Policy is what the packet filter must do for one IP family of this node.
type Policy struct {
	// Network is the cluster's pod network and Subnet this node's pod
	// subnet, of the family.
	Network, Subnet netip.Prefix
	// NoMasquerade are destinations pods reach with their own address.
	NoMasquerade []netip.Prefix
	// Masquerade makes pod traffic that leaves the cluster network leave
	// with the node's address (--ip-masq). Off, no masquerade rule of ours
	// may exist.
	Masquerade bool
	// GuardPort, when not zero, is the UDP port this node's tunnel
	// receives on (VXLAN's). Packets of the family to it are accepted only
	// from the addresses the Guard holds, and dropped and counted
	// otherwise. Zero: no guard rule of ours may exist.
	GuardPort uint16
}

// Family is the policy's family.
func (p Policy) Family() family.Family { return family.OfPrefix(p.Network) }

// Firewall keeps the rules of one IP family.
type Firewall interface {
	// Ensure makes the rules exactly what p says, without a moment with
	// fewer rules than before: a drifted set is rebuilt beside the old one
	// and swapped in. changed reports whether anything had to be written.
	Ensure(p Policy) (changed bool, err error)
	// Check compares the rules with p without changing anything and
	// describes each difference; none means they are right.
	Check(p Policy) ([]string, error)
	// Remove deletes every rule, chain and set of ours, whatever policy
	// made them; what is not there is not an error.
	Remove() error
	Guard
}

// Guard is the set of underlay addresses the policy's GuardPort accepts
// packets from: the public addresses of the peers with a valid lease. The
// daemon adds a peer's address before it programs the peer's tunnel
// entries and removes it after they are gone; each is a change of set
// elements, never of rules.
//
// Until the first SyncAllowed, a guard the kernel does not hold yet is not
// installed: a node that turns the guard on, or moves from another
// firewall, drops no peer's packets while its peer list arrives. A guard
// the kernel holds (a restart) is kept as it is and updated.
type Guard interface {
	// Allow adds addrs to the set.
	Allow(addrs ...netip.Addr) error
	// Disallow removes addrs from the set; an address not there is not an
	// error.
	Disallow(addrs ...netip.Addr) error
	// SyncAllowed makes the set exactly addrs, reading the kernel's: a
	// set that drifted is put right in one step (one transaction, or a
	// set built beside and swapped in), so no peer is refused meanwhile.
	// changed reports whether anything had to be written.
	SyncAllowed(addrs []netip.Addr) (changed bool, err error)
	// Dropped is how many packets the guard has dropped since its rules
	// were made; 0 when there is no guard.
	Dropped() (uint64, error)
}

// Maker makes the firewall of a family.
type Maker func(f family.Family) (Firewall, error)
