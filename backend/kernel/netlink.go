package kernel

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is the real Kernel. It keeps one netlink socket per protocol for
// its whole life, so programming thousands of entries costs no socket churn.
type Netlink struct {
	h  *netlink.Handle
	ns netns.NsHandle // the namespace of NewNetlinkAt, else closed

	batchMu sync.Mutex
	batch   *nl.NetlinkSocket
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink opens netlink sockets in the current network namespace.
func NewNetlink() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	return &Netlink{h: h, ns: netns.None()}, nil
}

// NewNetlinkAt opens netlink sockets in the network namespace ns, whatever
// namespace the calling thread is in (used by tests).
func NewNetlinkAt(ns netns.NsHandle) (*Netlink, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket in namespace: %w", err)
	}
	return &Netlink{h: h, ns: ns}, nil
}

// Close releases the sockets.
func (k *Netlink) Close() {
	k.h.Close()
	k.batchMu.Lock()
	defer k.batchMu.Unlock()
	if k.batch != nil {
		k.batch.Close()
		k.batch = nil
	}
}

func toLink(l netlink.Link) *Link {
	a := l.Attrs()
	out := &Link{Index: a.Index, Name: a.Name, MTU: a.MTU, MAC: a.HardwareAddr, Up: a.Flags&net.FlagUp != 0}
	if v, ok := l.(*netlink.Vxlan); ok {
		out.VXLAN = &VXLAN{
			Name: a.Name, VNI: v.VxlanId, Port: v.Port, Local: v.SrcAddr,
			ParentIndex: v.VtepDevIndex, MTU: a.MTU, MAC: a.HardwareAddr, Learning: v.Learning,
		}
	}
	return out
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// LinkByName implements Kernel.
func (k *Netlink) LinkByName(name string) (*Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%s: %w", name, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("looking up link %s: %w", name, err)
	}
	return toLink(l), nil
}

// LinkByIndex implements Kernel.
func (k *Netlink) LinkByIndex(index int) (*Link, error) {
	l, err := k.h.LinkByIndex(index)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("link #%d: %w", index, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("looking up link #%d: %w", index, err)
	}
	return toLink(l), nil
}

// AddVXLAN implements Kernel.
func (k *Netlink) AddVXLAN(s VXLAN) (*Link, error) {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = s.Name, s.MTU, s.MAC
	v := &netlink.Vxlan{
		LinkAttrs: la, VxlanId: s.VNI, VtepDevIndex: s.ParentIndex, SrcAddr: s.Local,
		Port: s.Port, Learning: s.Learning,
	}
	if err := k.h.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("creating vxlan device %s (VNI %d, port %d, local %s): %w", s.Name, s.VNI, s.Port, s.Local, err)
	}
	return k.LinkByName(s.Name)
}

// DeleteLink implements Kernel.
func (k *Netlink) DeleteLink(index int) error {
	l, err := k.h.LinkByIndex(index)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up link #%d: %w", index, err)
	}
	if err := k.h.LinkDel(l); err != nil {
		return fmt.Errorf("deleting link %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func (k *Netlink) link(index int) (netlink.Link, error) {
	l, err := k.h.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("looking up link #%d: %w", index, err)
	}
	return l, nil
}

// SetLinkMTU implements Kernel.
func (k *Netlink) SetLinkMTU(index, mtu int) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("setting MTU of %s to %d: %w", l.Attrs().Name, mtu, err)
	}
	return nil
}

// SetLinkMAC implements Kernel. A device that refuses a new address while up
// is taken down for the change and brought up again.
func (k *Netlink) SetLinkMAC(index int, mac net.HardwareAddr) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.LinkSetHardwareAddr(l, mac); err == nil {
		return nil
	} else if !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("setting MAC of %s to %s: %w", l.Attrs().Name, mac, err)
	}
	if err := k.h.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down to change its MAC: %w", l.Attrs().Name, err)
	}
	if err := k.h.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("setting MAC of %s to %s: %w", l.Attrs().Name, mac, err)
	}
	return k.SetLinkUp(index)
}

// SetLinkUp implements Kernel.
func (k *Netlink) SetLinkUp(index int) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// Addrs implements Kernel.
func (k *Netlink) Addrs(index int) ([]*net.IPNet, error) {
	l, err := k.link(index)
	if err != nil {
		return nil, err
	}
	addrs, err := k.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	out := make([]*net.IPNet, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.IPNet)
	}
	return out, nil
}

// AddAddr implements Kernel.
func (k *Netlink) AddAddr(index int, addr *net.IPNet) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.AddrReplace(l, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// DeleteAddr implements Kernel.
func (k *Netlink) DeleteAddr(index int, addr *net.IPNet) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(l, &netlink.Addr{IPNet: addr}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("removing address %s from %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// Routes implements Kernel.
func (k *Netlink) Routes(linkIndex int) ([]Route, error) {
	filter := &netlink.Route{LinkIndex: linkIndex, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err != nil {
		return nil, fmt.Errorf("listing routes of link #%d: %w", linkIndex, err)
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Dst == nil || r.Protocol == unix.RTPROT_KERNEL {
			continue // default routes and the kernel's own prefix routes are never ours
		}
		out = append(out, Route{Dst: r.Dst, Gw: r.Gw, LinkIndex: r.LinkIndex, Onlink: r.Flags&unix.RTNH_F_ONLINK != 0})
	}
	return out, nil
}

func toNetlinkRoute(r Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: r.LinkIndex, Dst: r.Dst, Gw: r.Gw, Table: unix.RT_TABLE_MAIN}
	if r.Onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// ReplaceRoute implements Kernel. The route gets protocol "boot", the same
// as `ip route add` and flannel, so `ip route` prints it just as flannel's.
func (k *Netlink) ReplaceRoute(r Route) error {
	if err := k.h.RouteReplace(toNetlinkRoute(r)); err != nil {
		return fmt.Errorf("replacing route %s: %w", r, err)
	}
	return nil
}

// DeleteRoute implements Kernel.
func (k *Netlink) DeleteRoute(r Route) error {
	if err := k.h.RouteDel(toNetlinkRoute(r)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("deleting route %s: %w", r, err)
	}
	return nil
}

// Neighs implements Kernel.
func (k *Netlink) Neighs(linkIndex int) ([]Neigh, error) {
	ns, err := k.h.NeighList(linkIndex, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of link #%d: %w", linkIndex, err)
	}
	out := make([]Neigh, 0, len(ns))
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP.To4() == nil {
			continue
		}
		out = append(out, Neigh{LinkIndex: n.LinkIndex, IP: n.IP, MAC: n.HardwareAddr})
	}
	return out, nil
}

// SetNeigh implements Kernel.
func (k *Netlink) SetNeigh(n Neigh) error {
	err := k.h.NeighSet(&netlink.Neigh{
		LinkIndex: n.LinkIndex, Family: nl.FAMILY_V4, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: n.IP, HardwareAddr: n.MAC,
	})
	if err != nil {
		return fmt.Errorf("setting neighbour %s → %s: %w", n.IP, n.MAC, err)
	}
	return nil
}

// DeleteNeigh implements Kernel.
func (k *Netlink) DeleteNeigh(n Neigh) error {
	err := k.h.NeighDel(&netlink.Neigh{LinkIndex: n.LinkIndex, Family: nl.FAMILY_V4, IP: n.IP, HardwareAddr: n.MAC})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting neighbour %s: %w", n.IP, err)
	}
	return nil
}

// FDBs implements Kernel.
func (k *Netlink) FDBs(linkIndex int) ([]FDB, error) {
	ns, err := k.h.NeighList(linkIndex, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("listing FDB entries of link #%d: %w", linkIndex, err)
	}
	out := make([]FDB, 0, len(ns))
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil {
			continue
		}
		out = append(out, FDB{LinkIndex: n.LinkIndex, MAC: n.HardwareAddr, Dst: n.IP})
	}
	return out, nil
}

// SetFDB implements Kernel. Replace semantics: an entry for the same MAC
// pointing elsewhere is changed in place.
func (k *Netlink) SetFDB(f FDB) error {
	err := k.h.NeighSet(&netlink.Neigh{
		LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: f.Dst, HardwareAddr: f.MAC,
	})
	if err != nil {
		return fmt.Errorf("setting FDB entry %s → %s: %w", f.MAC, f.Dst, err)
	}
	return nil
}

// DeleteFDB implements Kernel.
func (k *Netlink) DeleteFDB(f FDB) error {
	err := k.h.NeighDel(&netlink.Neigh{
		LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: f.Dst, HardwareAddr: f.MAC,
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting FDB entry %s → %s: %w", f.MAC, f.Dst, err)
	}
	return nil
}
