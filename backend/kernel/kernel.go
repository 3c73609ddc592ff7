// Package kernel is the narrow boundary between the backends and the Linux
// networking stack: links, addresses, routes, neighbour (ARP) and FDB entries
// as plain values. Netlink implements it for real; Fake implements it in
// memory for unit tests.
package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrLinkNotFound is returned (wrapped) when a link does not exist.
var ErrLinkNotFound = errors.New("link not found")

// VXLAN describes a VXLAN device.
type VXLAN struct {
	Name string
	VNI  int
	// Port is the UDP destination port.
	Port int
	// Local is the source address of encapsulated packets.
	Local net.IP
	// ParentIndex is the index of the underlay device the tunnel is bound to.
	ParentIndex int
	MTU         int
	MAC         net.HardwareAddr
	// Learning is the kernel's source-address learning; Twill keeps it off
	// and programs every FDB entry itself.
	Learning bool
}

// Link is a network device as the backends see it.
type Link struct {
	Index int
	Name  string
	MTU   int
	MAC   net.HardwareAddr
	Up    bool
	// VXLAN is set when the link is a VXLAN device.
	VXLAN *VXLAN
}

// Route is a unicast IPv4 route in the main table.
type Route struct {
	Dst       *net.IPNet
	Gw        net.IP
	LinkIndex int
	Onlink    bool
}

// Neigh is a permanent neighbour (ARP) entry.
type Neigh struct {
	LinkIndex int
	IP        net.IP
	MAC       net.HardwareAddr
}

// FDB is a forwarding-database entry of a VXLAN device: frames for MAC are
// sent to the tunnel endpoint Dst.
type FDB struct {
	LinkIndex int
	MAC       net.HardwareAddr
	Dst       net.IP
}

// Kernel is everything the backends do to the kernel.
type Kernel interface {
	LinkByName(name string) (*Link, error)
	LinkByIndex(index int) (*Link, error)
	AddVXLAN(spec VXLAN) (*Link, error)
	DeleteLink(index int) error
	SetLinkMTU(index, mtu int) error
	SetLinkMAC(index int, mac net.HardwareAddr) error
	SetLinkUp(index int) error
	// Addrs lists the IPv4 addresses of a link.
	Addrs(index int) ([]*net.IPNet, error)
	AddAddr(index int, addr *net.IPNet) error
	DeleteAddr(index int, addr *net.IPNet) error
	// Routes lists the IPv4 unicast routes of the main table that leave
	// through the link.
	Routes(linkIndex int) ([]Route, error)
	ReplaceRoute(r Route) error
	DeleteRoute(r Route) error
	// Neighs lists the permanent IPv4 neighbour entries of the link.
	Neighs(linkIndex int) ([]Neigh, error)
	SetNeigh(n Neigh) error
	DeleteNeigh(n Neigh) error
	// FDBs lists the static FDB entries of the link.
	FDBs(linkIndex int) ([]FDB, error)
	SetFDB(f FDB) error
	DeleteFDB(f FDB) error
}

// RouteKey identifies a route: destination and device.
type RouteKey struct {
	Dst       netip.Prefix
	LinkIndex int
}

// Key returns a comparable identity of the route (destination and device).
func (r Route) Key() RouteKey { return RouteKey{Dst: PrefixOf(r.Dst), LinkIndex: r.LinkIndex} }

// PrefixOf converts n to a netip.Prefix (IPv4 addresses unmapped); nil
// gives the zero Prefix.
func PrefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// Equal reports whether two routes are the same in every attribute Twill sets.
func (r Route) Equal(o Route) bool {
	return r.Key() == o.Key() && r.Gw.Equal(o.Gw) && r.Onlink == o.Onlink
}

func (r Route) String() string {
	s := fmt.Sprintf("%s via %s dev#%d", r.Dst, r.Gw, r.LinkIndex)
	if r.Onlink {
		s += " onlink"
	}
	return s
}

// NeighKey identifies a neighbour entry: address and device.
type NeighKey struct {
	IP        netip.Addr
	LinkIndex int
}

// Key returns a comparable identity of the neighbour entry.
func (n Neigh) Key() NeighKey {
	a, _ := netip.AddrFromSlice(n.IP)
	return NeighKey{IP: a.Unmap(), LinkIndex: n.LinkIndex}
}

// Equal reports whether two neighbour entries are identical.
func (n Neigh) Equal(o Neigh) bool { return n.Key() == o.Key() && bytes.Equal(n.MAC, o.MAC) }

// FDBKey identifies an FDB entry: MAC address and device.
type FDBKey struct {
	MAC       [8]byte // the MAC, zero-padded (EUI-48 or EUI-64)
	Len       int
	LinkIndex int
}

// Key returns a comparable identity of the FDB entry.
func (f FDB) Key() FDBKey {
	k := FDBKey{Len: len(f.MAC), LinkIndex: f.LinkIndex}
	copy(k.MAC[:], f.MAC)
	return k
}

// Equal reports whether two FDB entries are identical.
func (f FDB) Equal(o FDB) bool { return f.Key() == o.Key() && f.Dst.Equal(o.Dst) }
