// Package hostgw is the host-gw backend: no tunnel; every peer's pod subnet
// is routed via the peer's node address on the underlay, which requires all
// nodes on one L2 segment (like native routing in a VPC).
package hostgw

import (
	"fmt"
	"net"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
)

// Config is what the backend needs to know about its node.
type Config struct {
	Iface     *kernel.Link
	IfaceNets []*net.IPNet
	// MTU overrides the interface MTU when not zero.
	MTU int
	// StaleVNIs are VNIs whose flannel.<VNI> devices are removed at Setup.
	StaleVNIs []int
}

// Backend implements backend.Backend for host-gw.
type Backend struct {
	k   kernel.Kernel
	cfg Config
}

var _ backend.Backend = (*Backend)(nil)

// New returns a host-gw backend.
func New(k kernel.Kernel, cfg Config) *Backend {
	if len(cfg.StaleVNIs) == 0 {
		cfg.StaleVNIs = []int{netconf.DefaultVNI}
	}
	return &Backend{k: k, cfg: cfg}
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return netconf.BackendHostGW }

// MTU implements backend.Backend: no encapsulation, the interface's MTU.
func (b *Backend) MTU() int {
	if b.cfg.MTU != 0 {
		return b.cfg.MTU
	}
	return b.cfg.Iface.MTU
}

// Publish implements backend.Backend.
func (b *Backend) Publish(own *lease.Lease) {
	own.BackendType = netconf.BackendHostGW
	own.VNI, own.VtepMAC = 0, nil
}

// Setup implements backend.Backend: it removes the VXLAN device a previous
// vxlan configuration left.
func (b *Backend) Setup() (bool, error) {
	for _, vni := range b.cfg.StaleVNIs {
		if err := vxlan.Remove(b.k, vni); err != nil {
			return false, fmt.Errorf("removing the vxlan device left from the vxlan backend: %w", err)
		}
	}
	return false, nil
}

// Scope implements backend.Backend.
func (b *Backend) Scope() backend.Scope {
	return backend.Scope{RouteLinks: []int{b.cfg.Iface.Index}}
}

// Entries implements backend.Backend. A peer that is not on our L2 segment
// gets no route: a route via an address we cannot reach directly would
// blackhole its pods' traffic.
func (b *Backend) Entries(p *lease.Lease) (backend.Entries, error) {
	if !backend.InSubnetOf(p.PublicIP, b.cfg.IfaceNets) {
		return backend.Entries{}, fmt.Errorf("node address %s is not on this node's L2 segment (%v): host-gw needs all nodes on one segment; use vxlan, or vxlan with DirectRouting", p.PublicIP, b.cfg.IfaceNets)
	}
	return backend.Entries{Routes: []kernel.Route{{Dst: p.Subnet, Gw: p.PublicIP, LinkIndex: b.cfg.Iface.Index}}}, nil
}
