package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
)

// Netlink is the real Kernel. It keeps one netlink socket per protocol for
// its whole life, so programming thousands of entries costs no socket churn.
type Netlink struct {
	h  *netlink.Handle
	ns netns.NsHandle // the namespace of NewNetlinkAt, else closed

	batchMu sync.Mutex
	batch   *nl.NetlinkSocket
	// acks receives the batch's acknowledgements (36 bytes each with
	// NETLINK_CAP_ACK); batchMu guards it too.
	acks [64 << 10]byte
	// reqs is the buffer batches are encoded into, reused; seq numbers
	// their messages on the batch socket. batchMu guards both.
	reqs []byte
	seq  uint32
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

// dumpRetries bounds how often a dump the kernel interrupted (because the
// table changed while it was being read, NLM_F_DUMP_INTR) is read again.
const dumpRetries = 5

// dump runs a netlink dump, reading it again while the kernel reports it
// interrupted; after dumpRetries it gives up with an error that says so.
func dump[T any](what string, read func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := read()
		if err == nil {
			return out, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("listing %s: %w", what, err)
		}
		if i == dumpRetries {
			return nil, fmt.Errorf("listing %s: interrupted by concurrent changes %d times in a row: %w", what, dumpRetries+1, err)
		}
	}
}

func toLink(l netlink.Link) *Link {
	a := l.Attrs()
	out := &Link{Index: a.Index, Name: a.Name, MTU: a.MTU, MAC: a.HardwareAddr, Up: a.Flags&net.FlagUp != 0, Master: a.MasterIndex}
	if v, ok := l.(*netlink.Vxlan); ok {
		out.VXLAN = &VXLAN{
			Name: a.Name, VNI: v.VxlanId, Port: v.Port, Local: addrOf(v.SrcAddr),
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

// Links implements Kernel.
func (k *Netlink) Links() ([]*Link, error) {
	ls, err := dump("links", k.h.LinkList)
	if err != nil {
		return nil, err
	}
	out := make([]*Link, len(ls))
	for i, l := range ls {
		out[i] = toLink(l)
	}
	return out, nil
}

// AddVXLAN implements Kernel.
func (k *Netlink) AddVXLAN(s VXLAN) (*Link, error) {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = s.Name, s.MTU, s.MAC
	v := &netlink.Vxlan{
		LinkAttrs: la, VxlanId: s.VNI, VtepDevIndex: s.ParentIndex, SrcAddr: net.IP(s.Local.AsSlice()),
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
		if isNotFound(err) {
			return nil, fmt.Errorf("link #%d: %w", index, ErrLinkNotFound)
		}
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
func (k *Netlink) Addrs(index int, f family.Family) ([]netip.Prefix, error) {
	l, err := k.link(index)
	if err != nil {
		return nil, err
	}
	addrs, err := dump("addresses of "+l.Attrs().Name, func() ([]netlink.Addr, error) { return k.h.AddrList(l, int(af(f))) })
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, prefixOf(a.IPNet))
	}
	return out, nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

// AddAddr implements Kernel.
func (k *Netlink) AddAddr(index int, addr netip.Prefix) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	a := toAddr(addr)
	// The VTEP address is unique by construction (a subnet's own network
	// address): without duplicate address detection an IPv6 one is usable
	// at once instead of "tentative" for a second (IPv4 ignores the flag).
	a.Flags |= unix.IFA_F_NODAD
	if err := k.h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// DeleteAddr implements Kernel.
func (k *Netlink) DeleteAddr(index int, addr netip.Prefix) error {
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(l, toAddr(addr)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("removing address %s from %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// List implements Kernel.
func (k *Netlink) List(kind Kind, f family.Family, link int) ([]Entry, error) {
	switch kind {
	case KindRoute:
		return k.routes(f, link)
	case KindNeigh:
		return k.neighs(f, link)
	case KindFDB:
		return k.fdbs(f, link)
	}
	return nil, fmt.Errorf("listing entries of unknown kind %d", kind)
}

func (k *Netlink) routes(f family.Family, link int) ([]Entry, error) {
	filter := &netlink.Route{LinkIndex: link, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}
	rs, err := dump(fmt.Sprintf("%s routes of link #%d", f, link), func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(int(af(f)), filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(rs))
	for _, r := range rs {
		if r.Dst == nil || r.Protocol == unix.RTPROT_KERNEL {
			continue // default routes and the kernel's own prefix routes are never ours
		}
		out = append(out, Route{Dst: prefixOf(r.Dst), Gw: addrOf(r.Gw), LinkIndex: r.LinkIndex, Onlink: r.Flags&unix.RTNH_F_ONLINK != 0})
	}
	return out, nil
}

func (k *Netlink) neighs(f family.Family, link int) ([]Entry, error) {
	ns, err := dump(fmt.Sprintf("%s neighbours of link #%d", f, link), func() ([]netlink.Neigh, error) {
		return k.h.NeighList(link, int(af(f)))
	})
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ns))
	for _, n := range ns {
		ip := addrOf(n.IP)
		if n.State&netlink.NUD_PERMANENT == 0 || !ip.IsValid() || family.Of(ip) != f {
			continue
		}
		out = append(out, Neigh{LinkIndex: n.LinkIndex, IP: ip, MAC: n.HardwareAddr})
	}
	return out, nil
}

func (k *Netlink) fdbs(f family.Family, link int) ([]Entry, error) {
	ns, err := dump(fmt.Sprintf("FDB entries of link #%d", link), func() ([]netlink.Neigh, error) {
		return k.h.NeighList(link, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ns))
	for _, n := range ns {
		dst := addrOf(n.IP)
		if n.State&netlink.NUD_PERMANENT == 0 || !dst.IsValid() || family.Of(dst) != f {
			continue
		}
		out = append(out, FDB{LinkIndex: n.LinkIndex, MAC: n.HardwareAddr, Dst: dst})
	}
	return out, nil
}

// RouteTo returns the link and source address the kernel would send a
// packet to dst from (`ip route get`).
func (k *Netlink) RouteTo(dst netip.Addr) (int, netip.Addr, error) {
	rs, err := k.h.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("looking up the route to %s: %w", dst, err)
	}
	if len(rs) == 0 {
		return 0, netip.Addr{}, fmt.Errorf("no route to %s", dst)
	}
	return rs[0].LinkIndex, addrOf(rs[0].Src), nil
}
