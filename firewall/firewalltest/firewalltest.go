// Package firewalltest is the behaviour every firewall.Firewall must show,
// as root tests in throwaway network namespaces that each implementation's
// tests run against its own firewall: rules that stay as they are across a
// second Ensure and a restart, and a guard that is installed only once its
// peers are known, then drops the tunnel's packets from strangers (and
// counts them) and accepts them from peers, updated element by element.
package firewalltest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// Port is the guarded port of Policy.
const Port = 8472

// Policy is a policy with masquerading, a no-masquerade destination and a
// guard on Port.
var Policy = firewall.Policy{
	Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"),
	NoMasquerade: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Masquerade: true, GuardPort: Port,
}

// UpstreamIPTables are the iptables rules upstream flannel leaves on a
// node with Policy's network 10.244.0.0/16 and subnet 10.244.1.0/24 (and no
// no-masquerade destination, which upstream does not have), by table, as `iptables -S` prints
// them. They were written from upstream's masqRules and forwardRules
// (pkg/trafficmngr/iptables/iptables.go of flannel-io/flannel, read at
// commit cdf76059, v0.28): rule for rule and in its order.
var UpstreamIPTables = map[string][]string{
	"nat": {
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	},
	"filter": {
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	},
}

// The guard test's underlay: the node, a peer (a node with a lease) and a
// stranger, the last two behind one veth.
var (
	NodeIP     = netip.MustParseAddr("10.99.0.1")
	PeerIP     = netip.MustParseAddr("10.99.0.2")
	StrangerIP = netip.MustParseAddr("10.99.0.3")
)

// Make makes a firewall; it is called inside the node's namespace.
type Make func() (firewall.Firewall, error)

// Node is a node's namespace with a firewall in it. Every call of the
// firewall runs inside the namespace, as implementations run commands
// (iptables, nft) in the calling thread's namespace.
type Node struct {
	t  *testing.T
	NS *netns.NS
	fw firewall.Firewall
}

// NewNode makes a namespace and a firewall in it with mk.
func NewNode(t *testing.T, mk Make) *Node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces")
	}
	n := &Node{t: t, NS: netns.New(t)}
	n.Restart(mk)
	return n
}

// Restart replaces the firewall with a new one, as a restarted flanneld
// makes.
func (n *Node) Restart(mk Make) {
	n.t.Helper()
	n.Do(func(firewall.Firewall) error {
		var err error
		if n.fw, err = mk(); err != nil {
			n.t.Skipf("no firewall here: %v", err)
		}
		return nil
	})
}

// Do runs fn with the firewall inside the namespace; an error fails the
// test.
func (n *Node) Do(fn func(fw firewall.Firewall) error) {
	n.t.Helper()
	if err := n.NS.Do(func() error { return fn(n.fw) }); err != nil {
		n.t.Fatal(err)
	}
}

// Ensure runs Ensure(p) and fails the test unless changed is as wanted.
func (n *Node) Ensure(p firewall.Policy, changed bool) {
	n.t.Helper()
	n.Do(func(fw firewall.Firewall) error {
		got, err := fw.Ensure(p)
		if err != nil {
			return fmt.Errorf("Ensure: %w", err)
		}
		if got != changed {
			return fmt.Errorf("Ensure: changed=%v, want %v", got, changed)
		}
		return nil
	})
}

// Sync runs SyncAllowed(addrs) and fails the test unless changed is as
// wanted.
func (n *Node) Sync(addrs []netip.Addr, changed bool) {
	n.t.Helper()
	n.Do(func(fw firewall.Firewall) error {
		got, err := fw.SyncAllowed(addrs)
		if err != nil {
			return fmt.Errorf("SyncAllowed: %w", err)
		}
		if got != changed {
			return fmt.Errorf("SyncAllowed: changed=%v, want %v", got, changed)
		}
		return nil
	})
}

// Dropped returns the guard's drop count.
func (n *Node) Dropped() uint64 {
	n.t.Helper()
	var d uint64
	n.Do(func(fw firewall.Firewall) error {
		var err error
		d, err = fw.Dropped()
		return err
	})
	return d
}

// wire is the node's listener on Port and the two senders behind the
// veth.
type wire struct {
	in             *net.UDPConn
	peer, stranger *net.UDPConn
	seq            int
}

func newWire(t *testing.T, n *Node) *wire {
	t.Helper()
	far := netns.New(t)
	underlay.Veth(t, n.NS, "eth0", NodeIP.String()+"/24", far, "eth0", PeerIP.String()+"/24")
	l, err := far.Netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := far.Netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: StrangerIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	w := &wire{}
	// Sockets stay in the namespace they were made in.
	if err := n.NS.Do(func() error {
		w.in, err = net.ListenUDP("udp4", &net.UDPAddr{IP: NodeIP.AsSlice(), Port: Port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := far.Do(func() error {
		to := &net.UDPAddr{IP: NodeIP.AsSlice(), Port: Port}
		if w.peer, err = net.DialUDP("udp4", &net.UDPAddr{IP: PeerIP.AsSlice()}, to); err != nil {
			return err
		}
		w.stranger, err = net.DialUDP("udp4", &net.UDPAddr{IP: StrangerIP.AsSlice()}, to)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.in.Close(); w.peer.Close(); w.stranger.Close() })
	return w
}

// send sends one datagram from the stranger, then one from the peer, and
// reports whether each arrived. The peer's must arrive; as the two share
// one path in order, the stranger's, if it passed, is there before it.
func (w *wire) send(t *testing.T) (stranger bool) {
	t.Helper()
	w.seq++
	s, p := []byte(fmt.Sprintf("stranger %d", w.seq)), []byte(fmt.Sprintf("peer %d", w.seq))
	if _, err := w.stranger.Write(s); err != nil {
		t.Fatal(err)
	}
	if _, err := w.peer.Write(p); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := w.in.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		k, from, err := w.in.ReadFromUDP(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the peer's datagram %q did not arrive", p)
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.Equal(buf[:k], s):
			if from.IP.String() != StrangerIP.String() {
				t.Fatalf("%q came from %s", s, from)
			}
			stranger = true
		case bytes.Equal(buf[:k], p):
			return stranger
		}
	}
}

// Run checks the common behaviour of the firewalls mk makes. leftovers,
// run inside the namespace, describes whatever rules, chains or sets of
// ours the kernel still holds ("" for none).
func Run(t *testing.T, mk Make, leftovers func() (string, error)) {
	n := NewNode(t, mk)
	w := newWire(t, n)

	n.Ensure(Policy, true)
	n.Ensure(Policy, false)
	n.Do(func(fw firewall.Firewall) error {
		if diffs, err := fw.Check(Policy); err != nil || len(diffs) > 0 {
			return fmt.Errorf("checking right rules: %q %v", diffs, err)
		}
		return nil
	})
	// The peers are not known yet: no guard, nobody is refused.
	n.Do(func(fw firewall.Firewall) error { return fw.Allow(PeerIP) })
	if !w.send(t) {
		t.Fatal("the guard refused a stranger before its peers were known")
	}

	n.Sync([]netip.Addr{PeerIP}, true)
	n.Ensure(Policy, false)
	n.Sync([]netip.Addr{PeerIP}, false)
	if w.send(t) {
		t.Fatal("the guard let a stranger's packet through")
	}
	if d := n.Dropped(); d != 1 {
		t.Errorf("the guard counts %d drops, want 1", d)
	}

	// A node joins, then leaves: one element each.
	n.Do(func(fw firewall.Firewall) error { return fw.Allow(StrangerIP) })
	if !w.send(t) {
		t.Fatal("an address allowed later is still refused")
	}
	n.Do(func(fw firewall.Firewall) error { return fw.Disallow(StrangerIP) })
	n.Do(func(fw firewall.Firewall) error { return fw.Disallow(StrangerIP) })
	if w.send(t) {
		t.Fatal("a removed address is still accepted")
	}

	// A restart finds everything right and keeps the guard, peers
	// included, before it knows them again.
	n.Restart(mk)
	n.Ensure(Policy, false)
	if w.send(t) {
		t.Fatal("after a restart the guard let a stranger's packet through")
	}
	if d := n.Dropped(); d != 3 {
		t.Errorf("the guard counts %d drops after a restart, want 3", d)
	}
	n.Sync([]netip.Addr{PeerIP}, false)

	// The guard turned off goes, rules and set.
	off := Policy
	off.GuardPort = 0
	n.Ensure(off, true)
	n.Ensure(off, false)
	if !w.send(t) {
		t.Fatal("with the guard off a stranger is still refused")
	}

	n.Do(func(fw firewall.Firewall) error { return fw.Remove() })
	n.Do(func(fw firewall.Firewall) error { return fw.Remove() })
	n.Do(func(firewall.Firewall) error {
		left, err := leftovers()
		if err != nil {
			return err
		}
		if left != "" {
			return fmt.Errorf("left after Remove:\n%s", left)
		}
		return nil
	})
}
