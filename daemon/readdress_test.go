package daemon

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/iface"
)

func TestDecideMove(t *testing.T) {
	a, b := netip.MustParseAddr("172.18.0.12"), netip.MustParseAddr("172.18.0.42")
	eth0 := backend.Link{Index: 2, Name: "eth0", MTU: 1500}
	node := func(addr netip.Addr, l backend.Link) backend.Node {
		return backend.Node{Name: "n2", Iface: l, Addr: addr, Nets: []netip.Prefix{netip.PrefixFrom(addr, 16)}}
	}
	nat := netip.MustParseAddr("203.0.113.7")
	for _, c := range []struct {
		name      string
		old, now  backend.Node
		published netip.Addr
		explicit  string
		want      move
	}{
		{"unchanged", node(a, eth0), node(a, eth0), a, "", move{publish: a}},
		{"unchanged, explicit", node(a, eth0), node(a, eth0), nat, "--public-ip", move{publish: nat}},
		{"address moved: tunnel and publication follow", node(a, eth0), node(b, eth0), a, "", move{rebuild: true, publish: b}},
		{"address moved, public IP given: the tunnel follows, the publication stays", node(a, eth0), node(b, eth0), a, "--public-ip", move{rebuild: true, publish: a, kept: true}},
		{"behind NAT, address moved", node(a, eth0), node(b, eth0), nat, "the annotation", move{rebuild: true, publish: nat, kept: true}},
		{"another interface, same address", node(a, eth0), node(a, backend.Link{Index: 3, Name: "eth1", MTU: 9000}), a, "", move{rebuild: true, publish: a}},
		{"another interface, explicit, same address: nothing kept to report", node(a, eth0), node(a, backend.Link{Index: 3, Name: "eth1", MTU: 1500}), a, "--public-ip", move{rebuild: true, publish: a}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decideMove(c.old, c.now, c.published, c.explicit); got != c.want {
				t.Errorf("decideMove = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestStickyAddress(t *testing.T) {
	a, b := netip.MustParseAddr("fc00::12"), netip.MustParseAddr("fc00::99")
	eth0 := backend.Link{Index: 2, Name: "eth0", MTU: 1500}
	old := backend.Node{Iface: eth0, Addr: a, Nets: []netip.Prefix{netip.PrefixFrom(a, 64)}}
	// A temporary address listed first: the tunnel stays on a.
	now := backend.Node{Iface: eth0, Addr: b, Nets: []netip.Prefix{netip.PrefixFrom(b, 64), netip.PrefixFrom(a, 64)}}
	if got := sticky(old, now); got.Addr != a || len(got.Nets) != 2 {
		t.Errorf("with a still on eth0: %+v, want a kept and both subnets", got)
	}
	if m := decideMove(old, sticky(old, now), a, ""); m.publish != a {
		t.Errorf("published %s after a temporary address came, want %s", m.publish, a)
	}
	gone := backend.Node{Iface: eth0, Addr: b, Nets: []netip.Prefix{netip.PrefixFrom(b, 64)}}
	if got := sticky(old, gone); got.Addr != b {
		t.Errorf("with a gone: %s, want b", got.Addr)
	}
	other := backend.Node{Iface: backend.Link{Index: 3, Name: "eth1"}, Addr: b, Nets: []netip.Prefix{netip.PrefixFrom(b, 64), netip.PrefixFrom(a, 64)}}
	if got := sticky(old, other); got.Addr != b {
		t.Errorf("on another interface: %s, want that interface's choice b", got.Addr)
	}
}

// underlay is a ChooseIface whose answer the test changes.
type underlay struct {
	mu     sync.Mutex
	choice *iface.Choice
	err    error
}

func (u *underlay) set(addr string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.err = err
	if addr != "" {
		a := netip.MustParseAddr(addr)
		u.choice = &iface.Choice{Name: "eth0", Index: 2, MTU: 1500, Addrs: []iface.Addr{{Addr: a, Nets: []netip.Prefix{netip.PrefixFrom(a, 16)}}}}
	}
}

func (u *underlay) choose() (*iface.Choice, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.choice, u.err
}

func TestUnderlayAddressFollowed(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		name := "from the interface"
		if explicit {
			name = "given by --public-ip"
		}
		t.Run(name, func(t *testing.T) {
			u := &underlay{}
			u.set("172.18.0.2", nil)
			var reconnects atomic.Int32
			h := startTweaked(t, t.TempDir(), `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`, []string{"10.244.1.0/24"}, func(o *Options) {
				o.ChooseIface = u.choose
				o.Reconnect = func() { reconnects.Add(1) }
				if explicit {
					o.PublicIPs = []netip.Addr{netip.MustParseAddr("172.18.0.2")}
				}
			}, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
			h.eventually("peer programmed", h.node0Programmed())
			published := func() string {
				n, err := h.client.CoreV1().Nodes().Get(context.Background(), "node-1", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return n.Annotations[pfx+"public-ip"]
			}
			local := func() string {
				l, err := h.k.LinkByName("flannel.1")
				if err != nil || l.VXLAN == nil {
					return ""
				}
				return l.VXLAN.Local.String()
			}
			mac := func() string {
				l, _ := h.k.LinkByName("flannel.1")
				return l.MAC.String()
			}
			before := mac()

			// Mid-move: no address, so no interface to choose. Nothing
			// changes, and the problem is logged once however often the
			// reconcile runs.
			u.set("", errors.New("no IPv4 default route"))
			h.d.kernelLost(kernel.Loss{Underlay: true})
			for range 3 {
				h.full()
			}
			if n := h.warned("cannot choose the underlay interface again"); n != 1 {
				t.Errorf("%d warnings for one problem over 3 reconciles, want 1", n)
			}
			if local() != "172.18.0.2" || published() != "172.18.0.2" || reconnects.Load() != 0 {
				t.Fatalf("while no interface can be chosen: local %s, published %s, %d reconnects", local(), published(), reconnects.Load())
			}

			u.set("172.18.0.9", nil)
			h.d.kernelLost(kernel.Loss{Underlay: true})
			h.eventually("the tunnel starts from the new address", func() bool { return local() == "172.18.0.9" })
			h.eventually("peer programmed again", h.node0Programmed())
			if explicit {
				h.eventually("a warning that the given public IP stays", func() bool { return h.warned("stays published as given by --public-ip") == 1 })
				if got := published(); got != "172.18.0.2" {
					t.Errorf("published %s, want the given 172.18.0.2 kept", got)
				}
			} else {
				h.eventually("the new address published", func() bool { return published() == "172.18.0.9" })
			}
			if mac() != before {
				t.Errorf("the VTEP MAC changed from %s to %s: peers' FDB entries would go stale", before, mac())
			}
			if reconnects.Load() != 1 {
				t.Errorf("%d reconnects to the API server, want 1 (its connections are bound to the old address)", reconnects.Load())
			}
			// Level-triggered: another reconcile changes nothing more.
			h.full()
			if !h.node0Programmed()() {
				t.Errorf("peer entries after another reconcile: %v", h.k.Dump())
			}
			if reconnects.Load() != 1 {
				t.Errorf("%d reconnects after a reconcile with no move", reconnects.Load())
			}
		})
	}
}

// full queues a full reconcile, as the resync timer does, and waits for
// it to finish.
func (h *harness) full() {
	h.t.Helper()
	h.d.mu.Lock()
	runs := h.d.fullRuns
	h.d.mu.Unlock()
	h.d.queue.Add(fullKey)
	h.eventually("a full reconcile", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return h.d.fullRuns > runs
	})
}

// warned counts the warnings logged whose message contains s.
func (h *harness) warned(s string) int {
	n := 0
	for _, e := range h.logs.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, s) {
			n++
		}
	}
	return n
}
