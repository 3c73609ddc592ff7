package kernel

import (
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch says what WatchLosses reports: the deletion of any of Devices, and
// of any route into one of Networks; with Underlay set, a change of that
// link's addresses and the addition of a default route through it.
type Watch struct {
	Devices  []string
	Networks []netip.Prefix
	// Underlay is the index of the underlay link, 0 for none.
	Underlay int
}

// Loss is state the kernel lost: a whole device (Device), or one entry
// (Entry, when Device is empty): a route into one of the Networks, or a
// neighbour or FDB entry (any: the daemon's table knows which are its
// own, as it must for a flushed FDB, which no resync but the full one
// would otherwise find).
//
// Underlay, set alone, says the underlay may have moved: an address of
// the watched link was added or removed, or a default route through it
// added (after a re-address the default route comes back last), so the
// node's public address may be another now.
type Loss struct {
	Device   string
	Entry    Entry
	Underlay bool
}

// WatchLosses calls lost whenever the kernel deletes what w names, so the
// daemon can put it back without waiting for its periodic resync. lost runs
// on one goroutine and must be quick.
func WatchLosses(done <-chan struct{}, w Watch, lost func(Loss)) error {
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribe(links, done); err != nil {
		return err
	}
	routes := make(chan netlink.RouteUpdate, 256)
	// Both families: RouteSubscribe joins the IPv4 and IPv6 route groups.
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		return err
	}
	neighs := make(chan netlink.NeighUpdate, 256)
	// Every family: the neighbour group carries the bridge family's FDB
	// entries too (what `bridge monitor fdb` reads).
	if err := netlink.NeighSubscribe(neighs, done); err != nil {
		return err
	}
	addrs := make(chan netlink.AddrUpdate, 64)
	if w.Underlay != 0 {
		if err := netlink.AddrSubscribe(addrs, done); err != nil {
			return err
		}
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case u, ok := <-links:
				if !ok {
					return
				}
				if u.Header.Type == unix.RTM_DELLINK && slices.Contains(w.Devices, u.Attrs().Name) {
					lost(Loss{Device: u.Attrs().Name})
				}
			case u, ok := <-addrs:
				if !ok {
					return
				}
				if u.LinkIndex == w.Underlay {
					lost(Loss{Underlay: true})
				}
			case u, ok := <-routes:
				if !ok {
					return
				}
				if w.Underlay != 0 && u.Type == unix.RTM_NEWROUTE && u.LinkIndex == w.Underlay && isDefault(u.Dst) && (u.Table == unix.RT_TABLE_MAIN || u.Table == 0) {
					lost(Loss{Underlay: true})
					continue
				}
				if u.Type != unix.RTM_DELROUTE || u.Dst == nil {
					continue
				}
				r := Route{Dst: prefixOf(u.Dst), Gw: addrOf(u.Gw), LinkIndex: u.LinkIndex, Onlink: u.Flags&unix.RTNH_F_ONLINK != 0}
				if slices.ContainsFunc(w.Networks, func(n netip.Prefix) bool { return n.Contains(r.Dst.Addr()) }) {
					lost(Loss{Entry: r})
				}
			case u, ok := <-neighs:
				if !ok {
					return
				}
				if u.Type != unix.RTM_DELNEIGH {
					continue
				}
				if u.Family == unix.AF_BRIDGE && len(u.HardwareAddr) > 0 {
					lost(Loss{Entry: FDB{LinkIndex: u.LinkIndex, MAC: u.HardwareAddr, Dst: addrOf(u.IP)}})
				} else if u.IP != nil {
					lost(Loss{Entry: Neigh{LinkIndex: u.LinkIndex, IP: addrOf(u.IP), MAC: u.HardwareAddr}})
				}
			}
		}
	}()
	return nil
}

// isDefault reports whether dst is a default route's destination (netlink
// gives nil or a zero-length prefix).
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
