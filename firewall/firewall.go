// Package firewall says what the node's packet filter must do for pod
// traffic (masquerade what leaves the cluster network, accept forwarding of
// the pod network) as a Policy per IP family, and names the interface its
// implementations keep it with. The daemon only knows this package; the
// iptables implementation is firewall/iptables, and others (nftables) sit
// beside it.
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
	// Remove deletes every rule and chain of ours, whatever policy made
	// them; what is not there is not an error.
	Remove() error
}

// Maker makes the firewall of a family.
type Maker func(f family.Family) (Firewall, error)
