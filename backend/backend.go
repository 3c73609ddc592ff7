// Package backend defines what a backend (vxlan, host-gw, …) is to the
// daemon, the registry that maps a backend's type name to it, and the Table
// that keeps the kernel's per-peer entries equal to what the backend wants,
// both for one peer at a time (on a Node event) and for all peers at once
// (at start and on resync).
//
// A backend comes in three parts: a Plugin (its type name, how to read its
// net-conf.json section, how to remove what it leaves on a node), a Config
// (its parsed section) and a Backend, the per-family instance that programs
// one IP family of this node. A dual-stack node has one Backend per family;
// none of them knows about the other.
package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
)

// Plugin is one kind of backend, as the registry knows it.
type Plugin interface {
	// Type is the backend's name in net-conf.json's Backend.Type and in the
	// backend-type annotation, e.g. "vxlan".
	Type() string
	// ParseConfig reads the backend's section of net-conf.json: the whole
	// "Backend" object as written (Type included), nil when the file has
	// none. Errors name the key, as "Backend.VNI".
	ParseConfig(raw json.RawMessage) (Config, error)
	// Teardown removes what the backend leaves on a node (its devices, and
	// with them their entries) when the node runs another backend. What is
	// not there is not an error.
	Teardown(k kernel.Kernel) error
}

// Config is a backend's parsed configuration.
type Config interface {
	// New makes the backend's instance for one IP family of this node.
	New(k kernel.Kernel, n Node) (Backend, error)
}

// Node is what a backend knows of its node, for one IP family.
type Node struct {
	// Name is the Kubernetes Node name.
	Name string
	// Subnet is this node's pod subnet and Network the cluster's pod
	// network, both of the family.
	Subnet, Network netip.Prefix
	// Iface is the underlay link.
	Iface Link
	// Addr is the link's address of the family that tunnels start from.
	Addr netip.Addr
	// Nets are the link's subnets of the family: a peer inside one of them
	// is reachable without a router.
	Nets []netip.Prefix
	// Published is the backend data this node already publishes for the
	// family (its own backend-data annotation, when its backend-type is
	// this backend's), or nil. A backend keeps what peers already hold
	// from it, as the VTEP MAC of a node taken over from upstream flannel.
	Published json.RawMessage
}

// Link names a device by index, name and MTU.
type Link struct {
	Index int
	Name  string
	MTU   int
}

// Family is the node's family here.
func (n Node) Family() family.Family { return family.OfPrefix(n.Subnet) }

// Backend programs one IP family of this node. It never talks to
// Kubernetes.
type Backend interface {
	// Setup makes the node-local devices exist with the right attributes.
	// recreated is true when a device was created or recreated, so every
	// peer entry is gone and must be programmed again.
	Setup() (recreated bool, err error)
	// Check compares the node-local devices with what Setup would make,
	// changing nothing, and describes each difference in a line; none
	// means they are right (Setup puts any of them right). Afterwards Entries works for
	// the devices found, as after Setup (flanneld doctor uses it).
	Check() ([]string, error)
	// Data is the backend data this node publishes for the family (the
	// backend-data annotation's JSON), or nil for none.
	Data() json.RawMessage
	// MTU is the MTU pods get on this family's path.
	MTU() int
	// Entries computes what the kernel must hold to reach peer p, whose
	// part for this family is n. An error means this family of the peer
	// cannot be reached and gets no entries; a *DataError means the
	// peer's published data is broken.
	Entries(p *lease.Lease, n lease.Net) (Entries, error)
	// Scope says which kernel entries the backend owns, for full syncs.
	Scope() Scope
	// Devices names the backend's devices, whose loss means every peer of
	// the family must be programmed again.
	Devices() []string
	// TunnelPort is the UDP port peers' tunnelled packets arrive on, which
	// the firewall's guard opens to peers only; 0 for a backend without a
	// tunnel.
	TunnelPort() uint16
}

// Entries is what the kernel holds for one peer: entries of any kind, in
// any order.
type Entries []kernel.Entry

// DataError says a peer's published backend data is broken. The daemon
// keeps what it programmed for the peer before, rather than tear down a
// working path over a bad annotation, and raises a warning.
type DataError struct {
	// Family is the family whose data is broken.
	Family family.Family
	Err    error
}

func (e *DataError) Error() string { return e.Err.Error() }

func (e *DataError) Unwrap() error { return e.Err }

// DecodeData decodes the backend data of a peer's net into v; a failure
// is a *DataError whose message shows the data and the expected shape.
func DecodeData(n lease.Net, v any, shape string) error {
	if err := json.Unmarshal(n.BackendData, v); err != nil {
		return &DataError{Family: n.Family(), Err: fmt.Errorf("%q is not backend data like %s: %v", n.BackendData, shape, err)}
	}
	return nil
}

// Scope lists what kernel entries a backend owns. At a full sync the
// table reads them and removes those no peer wants: nodes deleted while
// the daemon was down, a peer's old VTEP MAC, entries of another backend.
type Scope []Owned

// Owned is one set of owned entries: those of a kind and family on a link,
// narrowed by destination.
type Owned struct {
	Kind   kernel.Kind
	Family family.Family
	Link   int
	// Within, when valid, limits ownership to entries whose destination
	// lies inside it (a route into the cluster network; a shorter prefix
	// that covers it is not ours). Except excludes entries whose
	// destination lies inside it (this node's own subnet).
	Within, Except netip.Prefix
}

// Owns reports whether e, listed from o's kind, family and link, is owned.
func (o Owned) Owns(e kernel.Entry) bool {
	dst := e.Key().Dst
	if o.Within.IsValid() && (!dst.IsValid() || dst.Bits() < o.Within.Bits() || !o.Within.Contains(dst.Addr())) {
		return false
	}
	return !o.Except.IsValid() || !dst.IsValid() || !o.Except.Contains(dst.Addr())
}

// Routes is the scope of routes into network (but for own) through link.
func Routes(link int, network, own netip.Prefix) Owned {
	return Owned{Kind: kernel.KindRoute, Family: family.OfPrefix(network), Link: link, Within: network, Except: own}
}

// OnLink reports whether a is inside one of nets, that is, reachable
// without a router.
func OnLink(a netip.Addr, nets []netip.Prefix) bool {
	for _, n := range nets {
		if n.Masked().Contains(a) {
			return true
		}
	}
	return false
}

// ErrUnknownType is returned (wrapped) for a backend type the registry does
// not have.
var ErrUnknownType = errors.New("unknown backend type")
