// Package kernel is the narrow boundary between the backends and the Linux
// networking stack: links, addresses, and the entries Twill programs for
// peers (routes, neighbour and FDB entries) as plain values that carry their
// IP family in their addresses. Netlink implements it for real; the fake in
// internal/testenv/fakekernel implements it in memory for unit tests.
//
// Each kind of entry lives in its own file (route.go, neigh.go, fdb.go) with
// its identity, its rendering and its netlink encoding; adding a kind means
// adding such a file and listing it in Kinds.
package kernel

import (
	"errors"
	"net"
	"net/netip"

	"github.com/twill-net/twill/family"
)

// ErrLinkNotFound is returned (wrapped) when a link does not exist.
var ErrLinkNotFound = errors.New("link not found")

// VXLAN describes a VXLAN device.
type VXLAN struct {
	Name string
	VNI  int
	// Port is the UDP destination port.
	Port int
	// Local is the source address of encapsulated packets; its family is
	// the underlay's.
	Local netip.Addr
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
	// Master is the index of the bridge the link is a port of, 0 for none
	// (the host ends of pods' veths are ports of cni0).
	Master int
	// VXLAN is set when the link is a VXLAN device.
	VXLAN *VXLAN
}

// Kind is a kind of entry. Kinds are ordered as a packet needs them: the
// neighbour and FDB entries of a peer's VTEP exist before the route that
// sends traffic to it, and go after it.
type Kind uint8

// The kinds of entry.
const (
	KindNeigh Kind = iota + 1
	KindFDB
	KindRoute
)

// NumKinds is the number of kinds; a Kind k indexes arrays as k-1.
const NumKinds = 3

// Kinds lists every kind in the order entries are programmed (and the
// reverse of the order they are removed in).
var Kinds = []Kind{KindNeigh, KindFDB, KindRoute}

// String is the kind's name, as metrics and logs show it.
func (k Kind) String() string {
	switch k {
	case KindNeigh:
		return "neigh"
	case KindFDB:
		return "fdb"
	case KindRoute:
		return "route"
	}
	return "unknown"
}

// Key identifies an entry's slot in the kernel: the kernel holds at most one
// entry per key, and setting an entry replaces the one with its key. It is
// kept small: the table indexes one per programmed entry.
type Key struct {
	Kind Kind
	// MACLen is the length of MAC.
	MACLen uint8
	// Link is the device the entry is on.
	Link int32
	// MAC is an FDB entry's MAC address, zero-padded (EUI-48 or EUI-64).
	MAC [8]byte
	// Dst is a route's destination, or a neighbour's address as a host
	// prefix; the zero Prefix for kinds without one (FDB entries).
	Dst netip.Prefix
}

// Entry is one kernel object Twill programs for a peer.
type Entry interface {
	// Key is the entry's identity.
	Key() Key
	// Equal reports whether o is the same entry in every attribute Twill
	// sets.
	Equal(o Entry) bool
	// String renders the entry for logs and errors, e.g. "route
	// 10.244.2.0/24 via 10.244.2.0 dev#5 onlink".
	String() string
	// encode appends the netlink message (sequence number seq) that sets
	// (replacing) or deletes it.
	encode(e *encoder, seq uint32, del bool)
}

// Op is one change for Apply.
type Op struct {
	// Delete removes Entry; otherwise Entry is set, replacing any entry
	// with its key.
	Delete bool
	Entry  Entry
}

func (o Op) String() string {
	if o.Delete {
		return "deleting " + o.Entry.String()
	}
	return "setting " + o.Entry.String()
}

// Kernel is everything the backends do to the kernel.
type Kernel interface {
	LinkByName(name string) (*Link, error)
	// Links lists every link.
	Links() ([]*Link, error)
	AddVXLAN(spec VXLAN) (*Link, error)
	// DeleteLink deletes a link; a missing one is not an error.
	DeleteLink(index int) error
	SetLinkMTU(index, mtu int) error
	SetLinkMAC(index int, mac net.HardwareAddr) error
	SetLinkUp(index int) error
	// Addrs lists a link's addresses of family f.
	Addrs(index int, f family.Family) ([]netip.Prefix, error)
	// AddAddr adds addr to a link, without duplicate address detection.
	AddAddr(index int, addr netip.Prefix) error
	DeleteAddr(index int, addr netip.Prefix) error
	// List returns the entries of kind on link whose addresses are of
	// family f, of the sorts Twill programs: unicast routes of the main
	// table not made by the kernel itself, permanent neighbour entries,
	// static FDB entries with a destination.
	List(kind Kind, f family.Family, link int) ([]Entry, error)
	// Apply performs ops in order and returns one result per op. Deleting
	// what does not exist succeeds.
	Apply(ops []Op) []error
}

func macKey(mac net.HardwareAddr) ([8]byte, uint8) {
	var k [8]byte
	copy(k[:], mac)
	return k, uint8(len(mac))
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addrOf(n.IP), ones)
}
