package kernel_test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/twill-net/twill/backend/kernel"
)

// losses collects what WatchLosses reports, in order.
type losses struct {
	mu   sync.Mutex
	list []kernel.Loss
}

func (l *losses) add(x kernel.Loss) {
	l.mu.Lock()
	l.list = append(l.list, x)
	l.mu.Unlock()
}

// next waits up to 5 s for the first loss at or after index from that
// match accepts, and returns its index and the loss.
func (l *losses) next(t *testing.T, from int, what string, match func(kernel.Loss) bool) (int, kernel.Loss) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		list := append([]kernel.Loss(nil), l.list...)
		l.mu.Unlock()
		for i := from; i < len(list); i++ {
			if match(list[i]) {
				return i, list[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no loss of %s reported; got %s", what, describe(list[from:]))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describe(ls []kernel.Loss) string {
	s := ""
	for _, l := range ls {
		s += fmt.Sprintf("{device %q entry %v underlay %v} ", l.Device, l.Entry, l.Underlay)
	}
	return s
}

// TestWatchLosses: in a namespace, WatchLosses reports a deleted route
// into the watched network (not one outside it), a deleted neighbour and
// FDB entry, the watched device deleted (not another), and, for the
// underlay link, an address added or removed and a default route added
// through it.
func TestWatchLosses(t *testing.T) {
	a, k, dev := vxlanHost(t, "flannel.1", "172.18.0.2/16", "172.18.0.3/16")
	eth0, err := k.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// No IPv6 on eth0: its link-local address finishing DAD after the
	// watch starts would be an underlay report of its own.
	a.Run(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
	a.Run(t, "ip", "link", "add", "other", "type", "bridge")
	a.Run(t, "ip", "link", "set", "other", "up")
	a.Run(t, "ip", "route", "add", "10.244.2.0/24", "via", "10.244.2.0", "dev", "flannel.1", "onlink")
	a.Run(t, "ip", "route", "add", "192.168.5.0/24", "dev", "other")
	a.Run(t, "ip", "neigh", "add", "10.244.2.0", "lladdr", "0a:00:00:00:00:02", "dev", "flannel.1", "nud", "permanent")
	a.Run(t, "bridge", "fdb", "add", "0a:00:00:00:00:02", "dev", "flannel.1", "dst", "172.18.0.3")

	var got losses
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	w := kernel.Watch{Devices: []string{"flannel.1"}, Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Underlay: eth0.Index}
	if err := a.Do(func() error { return kernel.WatchLosses(done, w, got.add) }); err != nil {
		t.Fatal(err)
	}

	isRoute := func(l kernel.Loss) bool { _, ok := l.Entry.(kernel.Route); return ok }
	// The route outside the network first: the route events come in order,
	// so the first route reported must be the one inside it.
	a.Run(t, "ip", "route", "del", "192.168.5.0/24", "dev", "other")
	a.Run(t, "ip", "route", "del", "10.244.2.0/24")
	_, x := got.next(t, 0, "a route", isRoute)
	if r := x.Entry.(kernel.Route); r.Dst != netip.MustParsePrefix("10.244.2.0/24") || r.LinkIndex != dev.Index {
		t.Errorf("route reported: %+v, want 10.244.2.0/24 on flannel.1 (192.168.5.0/24 is outside the network)", r)
	}

	a.Run(t, "ip", "neigh", "del", "10.244.2.0", "dev", "flannel.1")
	_, x = got.next(t, 0, "the neighbour", func(l kernel.Loss) bool { _, ok := l.Entry.(kernel.Neigh); return ok })
	if n := x.Entry.(kernel.Neigh); n.IP != netip.MustParseAddr("10.244.2.0") || n.LinkIndex != dev.Index {
		t.Errorf("neighbour reported: %+v", n)
	}
	a.Run(t, "bridge", "fdb", "del", "0a:00:00:00:00:02", "dev", "flannel.1", "dst", "172.18.0.3")
	_, x = got.next(t, 0, "the FDB entry", func(l kernel.Loss) bool { _, ok := l.Entry.(kernel.FDB); return ok })
	if f := x.Entry.(kernel.FDB); f.MAC.String() != "0a:00:00:00:00:02" || f.LinkIndex != dev.Index {
		t.Errorf("FDB entry reported: %+v", f)
	}

	underlay := func(l kernel.Loss) bool { return l.Underlay }
	got.mu.Lock()
	from := len(got.list)
	got.mu.Unlock()
	// The default route first: no address has changed since the watch
	// began, so the next underlay report is the route's.
	a.Run(t, "ip", "route", "add", "default", "via", "172.18.0.3", "dev", "eth0")
	from, _ = got.next(t, from, "a default route added through the underlay", underlay)
	a.Run(t, "ip", "addr", "add", "172.18.0.42/16", "dev", "eth0")
	from, _ = got.next(t, from+1, "an underlay address added", underlay)
	a.Run(t, "ip", "addr", "del", "172.18.0.42/16", "dev", "eth0")
	got.next(t, from+1, "an underlay address removed", underlay)

	// Another device deleted first: the link events come in order, so the
	// first device reported must be flannel.1.
	a.Run(t, "ip", "link", "del", "other")
	a.Run(t, "ip", "link", "del", "flannel.1")
	_, x = got.next(t, 0, "a device", func(l kernel.Loss) bool { return l.Device != "" })
	if d := x.Device; d != "flannel.1" {
		t.Errorf("device reported: %q, want flannel.1 (other is not watched)", d)
	}
}
