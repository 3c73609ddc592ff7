// Package lease holds the plain values that cross from the subnet manager
// (which reads them from Kubernetes) to the backends (which program the
// kernel): a node's pod subnet, its public IP and its backend data. Neither
// side imports the other.
package lease

import (
	"bytes"
	"net"
)

// Lease is what one node publishes about itself: enough for any other node
// to route to its pods.
type Lease struct {
	// Node is the Kubernetes Node name.
	Node string
	// Subnet is the node's pod CIDR (network address, e.g. 10.244.1.0/24).
	Subnet *net.IPNet
	// PublicIP is the node's address on the underlay, where tunnels end.
	PublicIP net.IP
	// BackendType is "vxlan" or "host-gw".
	BackendType string
	// VNI and VtepMAC are the vxlan backend's data; zero for host-gw.
	VNI     int
	VtepMAC net.HardwareAddr
}

// Equal reports whether two leases would program the kernel identically.
func (l *Lease) Equal(o *Lease) bool {
	if l == nil || o == nil {
		return l == o
	}
	return l.Node == o.Node && l.BackendType == o.BackendType && l.VNI == o.VNI &&
		ipNetEqual(l.Subnet, o.Subnet) && l.PublicIP.Equal(o.PublicIP) &&
		bytes.Equal(l.VtepMAC, o.VtepMAC)
}

// GatewayIP is the first address of the subnet, the node's cni0 address and
// the gateway pods use, e.g. 10.244.1.1 for 10.244.1.0/24.
func GatewayIP(subnet *net.IPNet) net.IP {
	ip := append(net.IP(nil), subnet.IP.To4()...)
	ip[3]++
	return ip
}

func ipNetEqual(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IP.Equal(b.IP) && bytes.Equal(a.Mask, b.Mask)
}
