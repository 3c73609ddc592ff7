// Package lease holds the plain values that cross from the subnet manager
// (which reads them from Kubernetes) to the backends (which program the
// kernel): a node's pod subnet and public address for each IP family it
// has, and its backend's published data. Neither side imports the other.
package lease

import (
	"encoding/json"
	"net/netip"

	"github.com/twill-net/twill/family"
)

// Lease is what one node publishes about itself: enough for any other node
// to route to its pods.
type Lease struct {
	// Node is the Kubernetes Node name.
	Node string
	// BackendType is the backend-type annotation, e.g. "vxlan".
	BackendType string
	// Nets holds one Net for each IP family the node has a lease for, in
	// the order of family.All; a single-stack node has one.
	Nets []Net
}

// Net is a lease's part for one IP family.
type Net struct {
	// Subnet is the node's pod CIDR of this family (the network address,
	// e.g. 10.244.1.0/24).
	Subnet netip.Prefix
	// PublicIP is the node's underlay address of this family, where
	// tunnels end.
	PublicIP netip.Addr
	// BackendData is the backend's published data for this family, the raw
	// JSON of its annotation (vxlan: {"VNI":1,"VtepMAC":"…"}), kept as
	// flannel keeps it and decoded by the backend; nil when it has none.
	BackendData json.RawMessage
}

// Family is the family of the net's subnet.
func (n Net) Family() family.Family { return family.OfPrefix(n.Subnet) }

// Net returns the lease's part for family f.
func (l *Lease) Net(f family.Family) (Net, bool) { return family.Pick(l.Nets, f) }

// Families lists the families the lease has, in order.
func (l *Lease) Families() []family.Family { return family.List(l.Nets) }

// GatewayIP is the first address of the subnet, the node's cni0 address and
// the gateway pods use: 10.244.1.1 for 10.244.1.0/24, fd00:1::1 for
// fd00:1::/64.
func GatewayIP(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }
