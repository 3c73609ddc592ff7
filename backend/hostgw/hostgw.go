// Package hostgw is the host-gw backend: no tunnel; every peer's pod subnet
// is routed via the peer's node address on the underlay, which requires all
// nodes on one L2 segment, unless the underlay's routers know every pod
// subnet themselves (UnderlayRoutes, as a VPC route table does).
package hostgw

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/strictjson"
)

// Type is the backend's name in net-conf.json and the annotations.
const Type = "host-gw"

// Plugin is the host-gw backend as the registry knows it.
var Plugin backend.Plugin = plugin{}

type plugin struct{}

// Type implements backend.Plugin.
func (plugin) Type() string { return Type }

// Config is the host-gw section of net-conf.json.
type Config struct {
	// MTU overrides the interface MTU when not zero.
	MTU int
	// UnderlayRoutes says the underlay routes every node's pod subnet to
	// its node (a VPC route table, a cloud route controller): a peer off
	// this node's segment then gets no route of its own, its pods'
	// traffic follows the node's default route to the underlay's router.
	UnderlayRoutes bool
}

type rawConfig struct {
	Type           string
	MTU            *int
	UnderlayRoutes *bool
	// The vxlan keys, refused with a message that says why.
	VNI, Port     *int
	DirectRouting *bool
}

// ParseConfig implements backend.Plugin.
func (plugin) ParseConfig(raw json.RawMessage) (backend.Config, error) {
	var r rawConfig
	if raw != nil {
		if err := strictjson.Decode(raw, &r, "Backend"); err != nil {
			return nil, err
		}
	}
	if r.VNI != nil || r.Port != nil || r.DirectRouting != nil {
		return nil, errors.New(`"Backend": VNI, Port and DirectRouting apply to vxlan only; remove them for host-gw`)
	}
	var c Config
	if r.MTU != nil {
		if *r.MTU < 576 || *r.MTU > 65535 {
			return nil, fmt.Errorf(`"Backend.MTU": %d must be between 576 and 65535, or left out to follow the interface`, *r.MTU)
		}
		c.MTU = *r.MTU
	}
	if r.UnderlayRoutes != nil {
		c.UnderlayRoutes = *r.UnderlayRoutes
	}
	return c, nil
}

// Teardown implements backend.Plugin: host-gw leaves only routes on the
// underlay link, which the next backend's full sync removes (its scope
// covers them).
func (plugin) Teardown(kernel.Kernel) error { return nil }

// Backend is the host-gw backend for one IP family of this node.
type Backend struct {
	cfg  Config
	node backend.Node
}

var _ backend.Backend = (*Backend)(nil)

// New implements backend.Config.
func (c Config) New(_ kernel.Kernel, n backend.Node) (backend.Backend, error) {
	if !n.Subnet.IsValid() || !n.Network.IsValid() {
		return nil, errors.New("host-gw: the node's subnet and network are required")
	}
	return &Backend{cfg: c, node: n}, nil
}

// MTU implements backend.Backend: no encapsulation, the interface's MTU.
func (b *Backend) MTU() int {
	if b.cfg.MTU != 0 {
		return b.cfg.MTU
	}
	return b.node.Iface.MTU
}

// Data implements backend.Backend: host-gw publishes none ("null").
func (b *Backend) Data() json.RawMessage { return nil }

// Setup implements backend.Backend: host-gw has no device.
func (b *Backend) Setup() (bool, error) { return false, nil }

// Check implements backend.Backend: there is no device to check.
func (b *Backend) Check() ([]string, error) { return nil, nil }

// Scope implements backend.Backend.
func (b *Backend) Scope() backend.Scope {
	return backend.Scope{backend.Routes(b.node.Iface.Index, b.node.Network, b.node.Subnet)}
}

// Devices implements backend.Backend: none.
func (b *Backend) Devices() []string { return nil }

// TunnelPort implements backend.Backend: host-gw has no tunnel to guard.
func (b *Backend) TunnelPort() uint16 { return 0 }

// Entries implements backend.Backend. A peer that is not on our L2 segment
// gets no route: a route via an address we cannot reach directly would
// blackhole its pods' traffic. That is an error, unless the underlay
// routes pod subnets itself (UnderlayRoutes).
func (b *Backend) Entries(_ *lease.Lease, n lease.Net) (backend.Entries, error) {
	if !backend.OnLink(n.PublicIP, b.node.Nets) {
		if b.cfg.UnderlayRoutes {
			return nil, nil
		}
		return nil, fmt.Errorf("node address %s is not on this node's L2 segment (%v): host-gw needs all nodes on one segment, or \"UnderlayRoutes\": true when the underlay routes every node's podCIDR; else use vxlan, or vxlan with DirectRouting", n.PublicIP, b.node.Nets)
	}
	return backend.Entries{kernel.Route{Dst: n.Subnet, Gw: n.PublicIP, LinkIndex: b.node.Iface.Index}}, nil
}
