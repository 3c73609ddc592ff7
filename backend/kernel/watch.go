package kernel

import (
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch says what WatchLosses reports: the deletion of any of Devices, and
// of any route into one of Networks.
type Watch struct {
	Devices  []string
	Networks []netip.Prefix
}

// Loss is state the kernel lost: a whole device (Device), or one entry
// (Entry, when Device is empty): a route into one of the Networks, or a
// neighbour or FDB entry (any: the daemon's table knows which are its
// own, as it must for a flushed FDB, which no resync but the full one
// would otherwise find).
type Loss struct {
	Device string
	Entry  Entry
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
			case u, ok := <-routes:
				if !ok {
					return
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
