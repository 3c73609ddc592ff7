// Package underlay wires the network between test hosts: a bridge with
// gateway addresses in an underlay namespace (a data-centre network, or
// kind's Docker network), nodes attached to it with eth0 and a default
// route through a gateway, and plain veth pairs between namespaces. The lab,
// the flanneld harness and the root tests all build their networks with it.
//
// Namespaces are given by path (netns.Path, NS.Path). Every namespace it
// wires gets its loopback up, as a host has it.
package underlay

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/internal/testenv/netns"
)

// End is one end of a veth pair.
type End struct {
	// NS is the path of the network namespace the end is in.
	NS string
	// Name is the interface's name there.
	Name string
	// Addrs are its addresses in CIDR notation (172.18.0.2/16,
	// fc00:f853:ccd:e793::2/64), of any family; IPv6 ones skip duplicate
	// address detection, so they are usable at once.
	Addrs []string
	// Gateways are the next hops of default routes through the end, one
	// per family at most.
	Gateways []string
	// Bridge, when set, is the bridge in NS the end is a port of.
	Bridge string
	// MAC, when set, is the end's Ethernet address (else the kernel's
	// random one). A host that comes back with the same addresses and MAC,
	// as a Docker container does, is reachable at once: its neighbours'
	// caches still hold the right entry.
	MAC string
}

// Bridge makes a bridge called name in the namespace at ns, up, holding the
// gateway addresses addrs (CIDR notation, any family).
func Bridge(ns, name string, addrs ...string) error {
	return in(ns, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("adding bridge %s: %w", name, err)
		}
		for _, a := range addrs {
			if err := addAddr(h, br, a); err != nil {
				return fmt.Errorf("addressing bridge %s: %w", name, err)
			}
		}
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("bringing bridge %s up: %w", name, err)
		}
		return nil
	})
}

// Attach puts the node namespace at node on bridge in the namespace at ns:
// a veth pair with the port called port on the bridge and eth0 in the node,
// addressed addrs (CIDR notation), with a default route via each of gws.
func Attach(ns, bridge, port, node string, addrs, gws []string) error {
	err := Connect(End{NS: ns, Name: port, Bridge: bridge}, End{NS: node, Name: "eth0", Addrs: addrs, Gateways: gws})
	if err != nil {
		return fmt.Errorf("attaching %s to bridge %s: %w", node, bridge, err)
	}
	return nil
}

// Detach removes the port called port, and with it the node's eth0, from
// the namespace at ns. A missing namespace or port is not an error.
func Detach(ns, port string) error {
	if _, err := os.Stat(ns); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return in(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(port)
		if err != nil {
			return nil
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("removing %s: %w", port, err)
		}
		return nil
	})
}

// Connect makes a veth pair between a and b (the same namespace or two)
// and configures both ends as they say, up.
func Connect(a, b End) error {
	peer, err := os.Open(b.NS)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", b.NS, err)
	}
	defer peer.Close()
	err = in(a.NS, func(h *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.Name}, PeerName: b.Name, PeerNamespace: netlink.NsFd(int(peer.Fd()))}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth %s: %w", a.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range []End{a, b} {
		if err := in(e.NS, e.configure); err != nil {
			return err
		}
	}
	return nil
}

// configure sets the end up as it says, with h bound to its namespace.
func (e End) configure(h *netlink.Handle) error {
	l, err := h.LinkByName(e.Name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", e.Name, err)
	}
	if e.MAC != "" {
		mac, err := net.ParseMAC(e.MAC)
		if err == nil {
			err = h.LinkSetHardwareAddr(l, mac)
		}
		if err != nil {
			return fmt.Errorf("setting %s's MAC to %s: %w", e.Name, e.MAC, err)
		}
	}
	if e.Bridge != "" {
		br, err := h.LinkByName(e.Bridge)
		if err != nil {
			return fmt.Errorf("finding bridge %s: %w", e.Bridge, err)
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("adding %s to bridge %s: %w", e.Name, e.Bridge, err)
		}
	}
	for _, a := range e.Addrs {
		if err := addAddr(h, l, a); err != nil {
			return fmt.Errorf("addressing %s: %w", e.Name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", e.Name, err)
	}
	for _, g := range e.Gateways {
		gw := net.ParseIP(g)
		if gw == nil {
			return fmt.Errorf("gateway %q is not an IP address", g)
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("adding default route via %s: %w", gw, err)
		}
	}
	return nil
}

// Veth is Connect for a root test: ifA in a and ifB in b, addressed addrA
// and addrB (CIDR notation, empty for none); a failure fails the test.
func Veth(t netns.T, a *netns.NS, ifA, addrA string, b *netns.NS, ifB, addrB string) {
	t.Helper()
	if err := Connect(End{NS: a.Path(), Name: ifA, Addrs: nonEmpty(addrA)}, End{NS: b.Path(), Name: ifB, Addrs: nonEmpty(addrB)}); err != nil {
		t.Fatalf("connecting %s and %s: %v", a.Name, b.Name, err)
	}
}

// in runs fn with a netlink handle bound to the namespace at ns, after
// bringing the namespace's loopback up.
func in(ns string, fn func(h *netlink.Handle) error) error {
	nsh, err := vnetns.GetFromPath(ns)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("opening netlink in %s: %w", ns, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing lo up in %s: %w", ns, err)
	}
	return fn(h)
}

// nonEmpty is s as a list, empty for "".
func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// addAddr adds cidr to l without duplicate address detection (IFA_F_NODAD,
// which IPv4 ignores): an IPv6 address would otherwise stay "tentative",
// unusable as a source, for a second or more after it is added.
func addAddr(h *netlink.Handle, l netlink.Link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	a.Flags |= unix.IFA_F_NODAD
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s: %w", cidr, err)
	}
	return nil
}
