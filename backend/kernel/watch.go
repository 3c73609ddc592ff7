package kernel

import (
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchLosses calls lost whenever the kernel deletes a link named device
// (lost(nil)) or an IPv4 route into network (lost(dst)), so the daemon can
// put it back without waiting for its periodic resync. lost runs on one
// goroutine and must be quick.
func WatchLosses(done <-chan struct{}, device string, network *net.IPNet, lost func(dst *net.IPNet)) error {
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribe(links, done); err != nil {
		return err
	}
	routes := make(chan netlink.RouteUpdate, 256)
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
				if u.Header.Type == unix.RTM_DELLINK && u.Attrs().Name == device {
					lost(nil)
				}
			case u, ok := <-routes:
				if !ok {
					return
				}
				if u.Type == unix.RTM_DELROUTE && u.Dst != nil && network.Contains(u.Dst.IP) {
					lost(u.Dst)
				}
			}
		}
	}()
	return nil
}
