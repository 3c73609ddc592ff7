// Package family names the IP families and what differs between them as
// data (address length, multicast range, names), so the code that programs
// one family is the same code for the other: it is handed a family's values
// and never asks "is this IPv6?".
package family

import (
	"fmt"
	"net/netip"
)

// Family is an IP family.
type Family uint8

// The families, in the order Twill handles them (IPv4 first, as flannel).
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// All lists every family, IPv4 first.
var All = []Family{IPv4, IPv6}

var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// Of returns the family of a (an IPv4-mapped IPv6 address is IPv4).
func Of(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// OfPrefix returns the family of p.
func OfPrefix(p netip.Prefix) Family { return Of(p.Addr()) }

// String is "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Valid reports whether f is IPv4 or IPv6.
func (f Family) Valid() bool { return f == IPv4 || f == IPv6 }

// Bits is the length of the family's addresses: 32 or 128.
func (f Family) Bits() int {
	if f == IPv6 {
		return 128
	}
	return 32
}

// Host returns a as a prefix of its full length (a /32 or /128).
func Host(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// Multicast is the family's multicast range, which pod traffic reaches
// without masquerading.
func (f Family) Multicast() netip.Prefix {
	if f == IPv6 {
		return multicast6
	}
	return multicast4
}

// Any is the family's unspecified address (0.0.0.0 or ::), the destination
// of a default route as a /0.
func (f Family) Any() netip.Prefix {
	if f == IPv6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// ParsePrefix parses a CIDR of family f in canonical form (no host bits),
// with an error that says what is wrong with it and what would be right.
func ParsePrefix(f Family, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || Of(p.Addr()) != f || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is not an %s CIDR like %s", s, f, example(f))
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// ParseAddr parses an address of family f.
func ParseAddr(f Family, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() || Of(a) != f {
		return netip.Addr{}, fmt.Errorf("%q is not an %s address", s, f)
	}
	return a, nil
}

func example(f Family) string {
	if f == IPv6 {
		return "fd00:10:244::/56"
	}
	return "10.244.0.0/16"
}

// Valued is anything that belongs to one family: a lease's net, a
// configured network, a subnet.env pair, an interface address.
type Valued interface{ Family() Family }

// Pick returns the element of xs of family f.
func Pick[T Valued](xs []T, f Family) (T, bool) {
	for _, x := range xs {
		if x.Family() == f {
			return x, true
		}
	}
	var zero T
	return zero, false
}

// List returns the families of xs, in order.
func List[T Valued](xs []T) []Family {
	out := make([]Family, len(xs))
	for i, x := range xs {
		out[i] = x.Family()
	}
	return out
}
