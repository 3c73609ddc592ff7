// Package vxlan is the VXLAN backend: one flannel.<VNI> device per node and,
// for every peer, a permanent neighbour entry, an FDB entry and an onlink
// route, exactly as flannel programs them, so mixed clusters interoperate.
package vxlan

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
)

// Overhead is what VXLAN encapsulation adds to every packet over IPv4:
// outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 bytes.
const Overhead = 50

// Config is what the backend needs to know about its node.
type Config struct {
	// NodeName seeds the device MAC, so it stays the same across restarts
	// and peers' FDB entries for this node stay valid.
	NodeName string
	VNI      int
	Port     int
	// MTU overrides the device MTU when not zero.
	MTU int
	// DirectRouting routes to peers on the same L2 subnet without the tunnel.
	DirectRouting bool
	// Iface is the underlay link, IfaceAddr its address used as the tunnel's
	// local address, IfaceNets its subnets (for DirectRouting).
	Iface     *kernel.Link
	IfaceAddr net.IP
	IfaceNets []*net.IPNet
	// Subnet is the node's own pod subnet.
	Subnet *net.IPNet
}

// Backend implements backend.Backend for VXLAN.
type Backend struct {
	k   kernel.Kernel
	cfg Config
	mac net.HardwareAddr
	dev *kernel.Link
}

var _ backend.Backend = (*Backend)(nil)

// New returns a VXLAN backend; Setup creates the device.
func New(k kernel.Kernel, cfg Config) *Backend {
	return &Backend{k: k, cfg: cfg, mac: StableMAC(cfg.NodeName, cfg.VNI)}
}

// DeviceName is flannel's name for the VXLAN device of a VNI.
func DeviceName(vni int) string { return "flannel." + strconv.Itoa(vni) }

// StableMAC derives a locally administered unicast MAC from the node name and
// VNI, the same on every start and after the device is recreated.
func StableMAC(node string, vni int) net.HardwareAddr {
	sum := sha256.Sum256([]byte(fmt.Sprintf("twill-vtep/%s/%d", node, vni)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return netconf.BackendVXLAN }

// MTU implements backend.Backend.
func (b *Backend) MTU() int {
	if b.cfg.MTU != 0 {
		return b.cfg.MTU
	}
	return b.cfg.Iface.MTU - Overhead
}

// Publish implements backend.Backend.
func (b *Backend) Publish(own *lease.Lease) {
	own.BackendType = netconf.BackendVXLAN
	own.VNI = b.cfg.VNI
	own.VtepMAC = b.mac
}

// Scope implements backend.Backend. The underlay link is in scope so that
// direct routes left by DirectRouting or host-gw are removed when no longer
// wanted.
func (b *Backend) Scope() backend.Scope {
	s := backend.Scope{RouteLinks: []int{b.cfg.Iface.Index}}
	if b.dev != nil {
		s.RouteLinks = append(s.RouteLinks, b.dev.Index)
		s.NeighLinks = []int{b.dev.Index}
	}
	return s
}

// Device returns the VXLAN link after Setup.
func (b *Backend) Device() *kernel.Link { return b.dev }

func (b *Backend) spec() kernel.VXLAN {
	return kernel.VXLAN{
		Name: DeviceName(b.cfg.VNI), VNI: b.cfg.VNI, Port: b.cfg.Port, Local: b.cfg.IfaceAddr,
		ParentIndex: b.cfg.Iface.Index, MTU: b.MTU(), MAC: b.mac, Learning: false,
	}
}

// Setup implements backend.Backend: the device exists, with the right VNI,
// port, local address, parent, MTU and MAC, the subnet's network address as
// its only address, and is up. Attributes the kernel cannot change in place
// (VNI, port, local address, parent, learning) are fixed by recreating the
// device; MTU and MAC are fixed in place.
func (b *Backend) Setup() (bool, error) {
	want := b.spec()
	recreated := false
	l, err := b.k.LinkByName(want.Name)
	switch {
	case errors.Is(err, kernel.ErrLinkNotFound):
		l, err = b.k.AddVXLAN(want)
		if err != nil {
			return false, err
		}
		recreated = true
	case err != nil:
		return false, err
	case !compatible(l, want):
		if err := b.k.DeleteLink(l.Index); err != nil {
			return false, fmt.Errorf("removing %s to recreate it with the right attributes: %w", want.Name, err)
		}
		if l, err = b.k.AddVXLAN(want); err != nil {
			return false, err
		}
		recreated = true
	}
	if l.MTU != want.MTU {
		if err := b.k.SetLinkMTU(l.Index, want.MTU); err != nil {
			return recreated, err
		}
	}
	if !bytes.Equal(l.MAC, want.MAC) {
		if err := b.k.SetLinkMAC(l.Index, want.MAC); err != nil {
			return recreated, err
		}
	}
	addr := &net.IPNet{IP: b.cfg.Subnet.IP.To4(), Mask: net.CIDRMask(32, 32)}
	if err := ensureOnlyAddr(b.k, l.Index, addr); err != nil {
		return recreated, err
	}
	if !l.Up {
		if err := b.k.SetLinkUp(l.Index); err != nil {
			return recreated, err
		}
	}
	b.dev = l
	return recreated, nil
}

func compatible(l *kernel.Link, want kernel.VXLAN) bool {
	v := l.VXLAN
	return v != nil && v.VNI == want.VNI && v.Port == want.Port && v.Local.Equal(want.Local) &&
		v.ParentIndex == want.ParentIndex && v.Learning == want.Learning
}

func ensureOnlyAddr(k kernel.Kernel, index int, want *net.IPNet) error {
	addrs, err := k.Addrs(index)
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		if a.String() == want.String() {
			found = true
			continue
		}
		if err := k.DeleteAddr(index, a); err != nil {
			return err
		}
	}
	if !found {
		return k.AddAddr(index, want)
	}
	return nil
}

// Entries implements backend.Backend.
func (b *Backend) Entries(p *lease.Lease) (backend.Entries, error) {
	if b.cfg.DirectRouting && backend.InSubnetOf(p.PublicIP, b.cfg.IfaceNets) {
		return backend.Entries{Routes: []kernel.Route{{Dst: p.Subnet, Gw: p.PublicIP, LinkIndex: b.cfg.Iface.Index}}}, nil
	}
	if p.BackendType != netconf.BackendVXLAN {
		return backend.Entries{}, fmt.Errorf("node uses backend %q, this node vxlan: it is reachable only with DirectRouting on a shared L2 subnet", p.BackendType)
	}
	if p.VNI != b.cfg.VNI {
		return backend.Entries{}, fmt.Errorf("node uses VNI %d, this node %d", p.VNI, b.cfg.VNI)
	}
	if b.dev == nil {
		return backend.Entries{}, errors.New("vxlan device not set up yet")
	}
	vtep := p.Subnet.IP.To4()
	idx := b.dev.Index
	return backend.Entries{
		Neighs: []kernel.Neigh{{LinkIndex: idx, IP: vtep, MAC: p.VtepMAC}},
		FDBs:   []kernel.FDB{{LinkIndex: idx, MAC: p.VtepMAC, Dst: p.PublicIP}},
		Routes: []kernel.Route{{Dst: p.Subnet, Gw: vtep, LinkIndex: idx, Onlink: true}},
	}, nil
}

// Remove deletes any flannel.* VXLAN device, when the node moves to another
// backend; the kernel drops its routes, neighbours and FDB entries with it.
func Remove(k kernel.Kernel, vni int) error {
	l, err := k.LinkByName(DeviceName(vni))
	if errors.Is(err, kernel.ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.VXLAN == nil {
		return nil // not ours
	}
	return k.DeleteLink(l.Index)
}
