// Package vxlan is the VXLAN backend: one device per IP family (flannel.<VNI>
// for IPv4, flannel-v6.<VNI> for IPv6) and, for every peer, a permanent
// neighbour entry, an FDB entry and an onlink route, exactly as flannel
// programs them, so mixed clusters interoperate.
package vxlan

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/strictjson"
)

// Type is the backend's name in net-conf.json and the annotations.
const Type = "vxlan"

// Defaults of the section, as in flannel.
const (
	DefaultVNI  = 1
	DefaultPort = 8472
)

// perFamily is what differs between the families' devices.
type perFamily struct {
	// prefix is the device name before the VNI.
	prefix string
	// overhead is what encapsulation adds to every packet over an underlay
	// of the family: outer IP (20 or 40) + UDP 8 + VXLAN 8 + inner
	// Ethernet 14 bytes.
	overhead int
	// seed makes the families' MACs differ.
	seed string
}

var families = map[family.Family]perFamily{
	family.IPv4: {prefix: "flannel.", overhead: 50, seed: "twill-vtep"},
	family.IPv6: {prefix: "flannel-v6.", overhead: 70, seed: "twill-vtep-v6"},
}

// Overhead is what VXLAN encapsulation adds to every packet over an IPv4
// underlay.
var Overhead = families[family.IPv4].overhead

// DeviceName is flannel's name for the VXLAN device of a VNI and family.
func DeviceName(f family.Family, vni int) string { return families[f].prefix + strconv.Itoa(vni) }

// devicePattern matches every name DeviceName gives.
var devicePattern = regexp.MustCompile(`^flannel(-v6)?\.[0-9]+$`)

// StableMAC derives a locally administered unicast MAC from the node name,
// VNI and family, the same on every start and after the device is
// recreated, so peers' FDB entries for this node stay valid.
func StableMAC(node string, vni int, f family.Family) net.HardwareAddr {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", families[f].seed, node, vni)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// Plugin is the vxlan backend as the registry knows it.
var Plugin backend.Plugin = plugin{}

type plugin struct{}

// Type implements backend.Plugin.
func (plugin) Type() string { return Type }

// Config is the vxlan section of net-conf.json.
type Config struct {
	// VNI is the VXLAN network identifier.
	VNI int
	// Port is the VXLAN UDP port.
	Port int
	// MTU, when not zero, overrides the MTU derived from the interface.
	MTU int
	// DirectRouting routes to peers on the same L2 subnet directly, as
	// host-gw does.
	DirectRouting bool
}

type rawConfig struct {
	Type          string
	VNI           *int
	Port          *int
	MTU           *int
	DirectRouting bool
}

// ParseConfig implements backend.Plugin.
func (plugin) ParseConfig(raw json.RawMessage) (backend.Config, error) {
	var r rawConfig
	if raw != nil {
		if err := strictjson.Decode(raw, &r, "Backend"); err != nil {
			return nil, err
		}
	}
	c := Config{VNI: DefaultVNI, Port: DefaultPort, DirectRouting: r.DirectRouting}
	if r.VNI != nil {
		if *r.VNI < 0 || *r.VNI > 1<<24-1 {
			return nil, fmt.Errorf(`"Backend.VNI": %d is outside 0..16777215`, *r.VNI)
		}
		c.VNI = *r.VNI
	}
	if r.Port != nil {
		if *r.Port <= 0 || *r.Port > 65535 {
			return nil, fmt.Errorf(`"Backend.Port": %d is not a UDP port (1..65535)`, *r.Port)
		}
		c.Port = *r.Port
	}
	if r.MTU != nil {
		if *r.MTU < 576 || *r.MTU > 65535 {
			return nil, fmt.Errorf(`"Backend.MTU": %d must be between 576 and 65535, or left out to follow the interface`, *r.MTU)
		}
		c.MTU = *r.MTU
	}
	return c, nil
}

// Teardown implements backend.Plugin: it deletes every VXLAN device with a
// name of ours; the kernel drops its routes, neighbours and FDB entries
// with it.
func (plugin) Teardown(k kernel.Kernel) error {
	links, err := k.Links()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.VXLAN != nil && devicePattern.MatchString(l.Name) {
			if err := k.DeleteLink(l.Index); err != nil {
				return err
			}
		}
	}
	return nil
}

// Backend is the vxlan backend for one IP family of this node.
type Backend struct {
	k    kernel.Kernel
	cfg  Config
	node backend.Node
	fam  family.Family
	mac  net.HardwareAddr
	dev  *kernel.Link
}

var _ backend.Backend = (*Backend)(nil)

// New implements backend.Config; Setup creates the device.
func (c Config) New(k kernel.Kernel, n backend.Node) (backend.Backend, error) {
	return NewBackend(k, c, n)
}

// NewBackend returns the backend for node n's family.
func NewBackend(k kernel.Kernel, c Config, n backend.Node) (*Backend, error) {
	f := n.Family()
	if !n.Subnet.IsValid() || !n.Network.IsValid() {
		return nil, errors.New("vxlan: the node's subnet and network are required")
	}
	if !n.Addr.IsValid() {
		return nil, fmt.Errorf("vxlan: interface %s has no %s address to send tunnelled %s traffic from", n.Iface.Name, f, f)
	}
	return &Backend{k: k, cfg: c, node: n, fam: f, mac: VTEPMAC(k, c, n)}, nil
}

// VTEPMAC chooses node n's VTEP MAC for c's VNI: the one the node already
// publishes, else the one its existing device has, so that peers' FDB
// entries stay valid across restarts, upgrades and a takeover from
// upstream flannel (whose peers never delete an FDB entry for an old MAC);
// derived from the node name (StableMAC) only when there is neither.
func VTEPMAC(k kernel.Kernel, c Config, n backend.Node) net.HardwareAddr {
	f := n.Family()
	if n.Published != nil {
		vni, mac, err := ParseData(lease.Net{Subnet: n.Subnet, BackendData: n.Published})
		if err == nil && vni == c.VNI && usable(mac) {
			return mac
		}
	}
	if l, err := k.LinkByName(DeviceName(f, c.VNI)); err == nil && l.VXLAN != nil && usable(l.MAC) {
		return l.MAC
	}
	return StableMAC(n.Name, c.VNI, f)
}

// usable says mac can be a VTEP's: six bytes, unicast, not all zero.
func usable(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make(net.HardwareAddr, 6))
}

// MTU implements backend.Backend.
func (b *Backend) MTU() int {
	if b.cfg.MTU != 0 {
		return b.cfg.MTU
	}
	return b.node.Iface.MTU - families[family.Of(b.node.Addr)].overhead
}

// data is the JSON of the backend-data annotation, in flannel's exact shape
// ({"VNI":1,"VtepMAC":"…"}) so upstream flannel nodes read ours and we
// theirs.
type data struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// dataShape is how the data looks, for error messages.
const dataShape = `{"VNI":1,"VtepMAC":"…"}`

// ParseData reads a peer's published vxlan data ({"VNI":1,"VtepMAC":"…"})
// for the family of n; broken data is a *backend.DataError.
func ParseData(n lease.Net) (vni int, mac net.HardwareAddr, err error) {
	var d data
	if err := backend.DecodeData(n, &d, dataShape); err != nil {
		return 0, nil, err
	}
	mac, err = net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		return 0, nil, &backend.DataError{Family: n.Family(), Err: fmt.Errorf("VtepMAC %q is not a unicast Ethernet MAC", d.VtepMAC)}
	}
	if d.VNI < 0 || d.VNI > 1<<24-1 {
		return 0, nil, &backend.DataError{Family: n.Family(), Err: fmt.Errorf("VNI %d is outside 0..16777215", d.VNI)}
	}
	return d.VNI, mac, nil
}

// Data implements backend.Backend.
func (b *Backend) Data() json.RawMessage {
	out, _ := json.Marshal(data{VNI: b.cfg.VNI, VtepMAC: b.mac.String()})
	return out
}

// Scope implements backend.Backend. The underlay link is in scope so that
// direct routes left by DirectRouting or host-gw are removed when no longer
// wanted.
func (b *Backend) Scope() backend.Scope {
	s := backend.Scope{backend.Routes(b.node.Iface.Index, b.node.Network, b.node.Subnet)}
	if b.dev != nil {
		under := family.Of(b.node.Addr)
		s = append(s,
			backend.Routes(b.dev.Index, b.node.Network, b.node.Subnet),
			backend.Owned{Kind: kernel.KindNeigh, Family: b.fam, Link: b.dev.Index},
			backend.Owned{Kind: kernel.KindFDB, Family: under, Link: b.dev.Index},
		)
	}
	return s
}

// Devices implements backend.Backend.
func (b *Backend) Devices() []string { return []string{DeviceName(b.fam, b.cfg.VNI)} }

// TunnelPort implements backend.Backend: the VXLAN port.
func (b *Backend) TunnelPort() uint16 { return uint16(b.cfg.Port) }

// Device returns the VXLAN link after Setup.
func (b *Backend) Device() *kernel.Link { return b.dev }

func (b *Backend) spec() kernel.VXLAN {
	return kernel.VXLAN{
		Name: DeviceName(b.fam, b.cfg.VNI), VNI: b.cfg.VNI, Port: b.cfg.Port, Local: b.node.Addr,
		ParentIndex: b.node.Iface.Index, MTU: b.MTU(), MAC: b.mac, Learning: false,
	}
}

// Setup implements backend.Backend: the device exists, with the right VNI,
// port, local address, parent, MTU and MAC, the subnet's network address as
// its only address of the family, and is up. Attributes the kernel cannot
// change in place (VNI, port, local address, parent, learning) are fixed by
// recreating the device; MTU and MAC are fixed in place.
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
	if err := ensureOnlyAddr(b.k, l.Index, b.fam, family.Host(b.node.Subnet.Addr())); err != nil {
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

// Check implements backend.Backend.
func (b *Backend) Check() ([]string, error) {
	want := b.spec()
	l, err := b.k.LinkByName(want.Name)
	if errors.Is(err, kernel.ErrLinkNotFound) {
		return []string{fmt.Sprintf("%s does not exist: no pod traffic leaves or enters this node through the overlay", want.Name)}, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	v := l.VXLAN
	if v == nil {
		return []string{fmt.Sprintf("%s is not a VXLAN device: remove it (ip link del %s) and flanneld recreates it", want.Name, want.Name)}, nil
	}
	b.dev = l
	if v.VNI != want.VNI {
		out = append(out, fmt.Sprintf("%s has VNI %d, want %d (net-conf.json's Backend.VNI)", want.Name, v.VNI, want.VNI))
	}
	if v.Port != want.Port {
		out = append(out, fmt.Sprintf("%s sends to UDP port %d, want %d (Backend.Port)", want.Name, v.Port, want.Port))
	}
	if v.Local != want.Local {
		out = append(out, fmt.Sprintf("%s sends from %s, want %s, the address of %s", want.Name, v.Local, want.Local, b.node.Iface.Name))
	}
	if v.ParentIndex != want.ParentIndex {
		out = append(out, fmt.Sprintf("%s is bound to link #%d, want %s (#%d)", want.Name, v.ParentIndex, b.node.Iface.Name, want.ParentIndex))
	}
	if v.Learning != want.Learning {
		out = append(out, fmt.Sprintf("%s has address learning on; flanneld programs every FDB entry and keeps it off", want.Name))
	}
	if l.MTU != want.MTU {
		out = append(out, fmt.Sprintf("%s has MTU %d, want %d (%s)", want.Name, l.MTU, want.MTU, b.mtuReason()))
	}
	if over := families[family.Of(b.node.Addr)].overhead; b.cfg.MTU != 0 && b.cfg.MTU > b.node.Iface.MTU-over {
		out = append(out, fmt.Sprintf("Backend.MTU %d is more than %s's MTU %d minus VXLAN's %d bytes: large packets are dropped; set Backend.MTU to %d or less, or remove it", b.cfg.MTU, b.node.Iface.Name, b.node.Iface.MTU, over, b.node.Iface.MTU-over))
	}
	if !bytes.Equal(l.MAC, want.MAC) {
		out = append(out, fmt.Sprintf("%s has MAC %s, want %s (the one this node publishes)", want.Name, l.MAC, want.MAC))
	}
	if !l.Up {
		out = append(out, fmt.Sprintf("%s is down: ip link set %s up (flanneld does within --resync-period)", want.Name, want.Name))
	}
	addrs, err := b.k.Addrs(l.Index, b.fam)
	if err != nil {
		return out, err
	}
	wantAddr := family.Host(b.node.Subnet.Addr())
	if !slices.Contains(addrs, wantAddr) {
		out = append(out, fmt.Sprintf("%s lacks address %s (this node's subnet's network address, its VTEP address)", want.Name, wantAddr))
	}
	return out, nil
}

// mtuReason says where the wanted MTU comes from.
func (b *Backend) mtuReason() string {
	if b.cfg.MTU != 0 {
		return "net-conf.json's Backend.MTU"
	}
	return fmt.Sprintf("%s's MTU %d minus VXLAN's %d bytes", b.node.Iface.Name, b.node.Iface.MTU, families[family.Of(b.node.Addr)].overhead)
}

func compatible(l *kernel.Link, want kernel.VXLAN) bool {
	v := l.VXLAN
	return v != nil && v.VNI == want.VNI && v.Port == want.Port && v.Local == want.Local &&
		v.ParentIndex == want.ParentIndex && v.Learning == want.Learning
}

// ensureOnlyAddr makes want the link's only address of family f, but for
// the link-local addresses the kernel gives every IPv6 device itself.
func ensureOnlyAddr(k kernel.Kernel, index int, f family.Family, want netip.Prefix) error {
	addrs, err := k.Addrs(index, f)
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		if a == want {
			found = true
			continue
		}
		if a.Addr().IsLinkLocalUnicast() {
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
func (b *Backend) Entries(p *lease.Lease, n lease.Net) (backend.Entries, error) {
	if b.cfg.DirectRouting && backend.OnLink(n.PublicIP, b.node.Nets) {
		return backend.Entries{kernel.Route{Dst: n.Subnet, Gw: n.PublicIP, LinkIndex: b.node.Iface.Index}}, nil
	}
	if p.BackendType != Type {
		return nil, fmt.Errorf("node uses backend %q, this node vxlan: it is reachable only with DirectRouting on a shared L2 subnet", p.BackendType)
	}
	vni, mac, err := ParseData(n)
	if err != nil {
		return nil, err
	}
	if vni != b.cfg.VNI {
		return nil, fmt.Errorf("node uses VNI %d, this node %d", vni, b.cfg.VNI)
	}
	if bytes.Equal(mac, b.mac) {
		// Its FDB entry would take this node's own MAC on the device.
		return nil, fmt.Errorf("node publishes VTEP MAC %s, which is this node's own: two Nodes with one VTEP MAC (a cloned machine's backend data?)", mac)
	}
	if b.dev == nil {
		return nil, errors.New("vxlan device not set up yet")
	}
	if family.Of(n.PublicIP) != family.Of(b.node.Addr) {
		return nil, fmt.Errorf("node's public address %s is not of this node's underlay family %s", n.PublicIP, family.Of(b.node.Addr))
	}
	vtep := n.Subnet.Addr()
	idx := b.dev.Index
	return backend.Entries{
		kernel.Neigh{LinkIndex: idx, IP: vtep, MAC: mac},
		kernel.FDB{LinkIndex: idx, MAC: mac, Dst: n.PublicIP},
		kernel.Route{Dst: n.Subnet, Gw: vtep, LinkIndex: idx, Onlink: true},
	}, nil
}
