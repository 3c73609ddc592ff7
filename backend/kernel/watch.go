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

// Loss is state the kernel lost: a whole device (Device) or one route
// (Route, when Device is empty). Lost neighbour and FDB entries are found
// by the next full resync.
type Loss struct {
	Device string
	Route  Route
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
					lost(Loss{Route: r})
				}
			}
		}
	}()
	return nil
}
