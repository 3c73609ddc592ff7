package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// The underlay stands for kind's Docker network: a bridge in its own
// namespace, the nodes on it, and one more namespace behind its gateway
// standing for the internet (documentation addresses), so masquerading
// can be watched. Nothing links it to the host.
//
// Every subnet has one range per IP family; a lab uses those of the
// families it runs (Options.IPFamily). The IPv6 ranges are kind's choice, a
// ULA, and its layout: gateway ::1, node i at ::(i+2).
//
// With Options.RoutedNodes the underlay namespace also holds a second
// bridge on another subnet, and routes between the two: its nodes share no
// layer-2 segment with the others, as nodes in another rack or zone.
var (
	// flatSegment is kind's network; every node is on it by default.
	flatSegment = segment{bridge: "br0", gateways: prefixes("172.18.0.1/16", "fc00:f853:ccd:e793::1/64")}
	// routedSegment holds the last Options.RoutedNodes nodes. 172.19/16
	// clashes with none of the lab's other ranges: 172.18/16 (the flat
	// segment), 10.244/16 (pods), 10.96/12 (Services), 203.0.113/24 (the
	// internet) and 172.20/16 (the daemon tests' routed subnet); its IPv6
	// range is the /64 after the flat segment's.
	routedSegment = segment{bridge: "br1", gateways: prefixes("172.19.0.1/16", "fc00:f853:ccd:e794::1/64")}
	// internet is the link between the underlay's gateway and the
	// "internet" namespace: the gateway's side and the far side.
	internetGateways = prefixes("203.0.113.1/24", "2001:db8::1/64")
	internetHosts    = prefixes("203.0.113.10/24", "2001:db8::10/64")
	// InternetIP is the lab's stand-in for an IPv4 address on the internet.
	InternetIP = InternetAddr(family.IPv4)
)

// InternetAddr is the lab's stand-in for an address of family f on the
// internet: 203.0.113.10 or 2001:db8::10.
func InternetAddr(f family.Family) net.IP {
	p, _ := pick(internetHosts, f)
	return net.IP(p.Addr().AsSlice())
}

// InternetPrefix is the network of InternetAddr(f): 203.0.113.0/24 or
// 2001:db8::/64.
func InternetPrefix(f family.Family) netip.Prefix {
	p, _ := pick(internetHosts, f)
	return p.Masked()
}

// segment is one subnet of the underlay: a bridge in the underlay
// namespace holding the subnet's gateway addresses, one per family, with
// the eth0 of every node on the subnet attached to it.
type segment struct {
	bridge string
	// gateways are the gateway's addresses with the subnets' lengths.
	gateways []netip.Prefix
}

// gateway is the segment's gateway of family f, e.g. 172.18.0.1/16.
func (s segment) gateway(f family.Family) netip.Prefix {
	p, _ := pick(s.gateways, f)
	return p
}

// subnet is the segment's network of family f, e.g. 172.18.0.0/16.
func (s segment) subnet(f family.Family) netip.Prefix { return s.gateway(f).Masked() }

// nodeAddr is the address of family f of the node with index i (0 is the
// control plane) on the segment: (i+2) counted from the subnet's base, as
// Docker hands them out on kind's network, with the subnet's length.
func (s segment) nodeAddr(f family.Family, i int) netip.Prefix {
	sub := s.subnet(f)
	b := sub.Addr().AsSlice()
	carry := i + 2
	for j := len(b) - 1; j >= 0 && carry > 0; j-- {
		v := int(b[j]) + carry
		b[j], carry = byte(v%256), v/256
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, sub.Bits())
}

// nodeIP is the segment's address of family f of the node with index i.
func (s segment) nodeIP(f family.Family, i int) net.IP {
	return net.IP(s.nodeAddr(f, i).Addr().AsSlice())
}

func underlayNS(lab string) string { return lab + "-underlay" }
func internetNS(lab string) string { return lab + "-internet" }

// nodeIP is the flat segment's IPv4 address of the node with index i:
// 172.18.0.(i+2).
func nodeIP(i int) net.IP { return flatSegment.nodeIP(family.IPv4, i) }

// isRouted reports whether the node with index i, in a lab of nodes nodes
// whose last routed ones are on the routed segment, is one of those.
func isRouted(i, nodes, routed int) bool { return routed > 0 && i >= nodes-routed }

// nodeName follows kind: NAME-control-plane, NAME-worker, NAME-worker2, …
func nodeName(lab string, i int) string {
	switch i {
	case 0:
		return lab + "-control-plane"
	case 1:
		return lab + "-worker"
	default:
		return fmt.Sprintf("%s-worker%d", lab, i)
	}
}

// forwarding is the sysctl that makes a namespace route packets of a
// family.
var forwarding = map[family.Family]string{
	family.IPv4: "net/ipv4/ip_forward",
	family.IPv6: "net/ipv6/conf/all/forwarding",
}

// createUnderlay makes the underlay and internet namespaces and wires them
// for the families fams; with routed, the underlay holds the routed
// segment's bridge too.
func createUnderlay(lab string, fams []family.Family, routed bool) error {
	under, err := netns.Create(underlayNS(lab))
	if err != nil {
		return err
	}
	inet, err := netns.Create(internetNS(lab))
	if err != nil {
		return err
	}
	segs := []segment{flatSegment}
	if routed {
		segs = append(segs, routedSegment)
	}
	for _, s := range segs {
		if err := underlay.Bridge(under, s.bridge, cidrs(s.gateways, fams)...); err != nil {
			return fmt.Errorf("wiring the underlay: %w", err)
		}
	}
	err = underlay.Connect(
		underlay.End{NS: under, Name: "inet0", Addrs: cidrs(internetGateways, fams)},
		underlay.End{NS: inet, Name: "eth0", Addrs: cidrs(internetHosts, fams), Gateways: addrs(internetGateways, fams)})
	if err != nil {
		return fmt.Errorf("wiring the underlay: %w", err)
	}
	// The gateway routes between the segments and the "internet", nowhere
	// else: its only routes are those of its own addresses.
	for _, f := range fams {
		if err := netns.SetSysctl(under, forwarding[f], "1"); err != nil {
			return err
		}
	}
	return nil
}

// attachNode creates the node's network namespace with eth0 on the
// segment's bridge, holding the node's addresses of the families fams, with
// a default route per family via the segment's gateway.
func attachNode(lab, name string, index int, seg segment, fams []family.Family) (string, error) {
	path, err := netns.Create(name)
	if err != nil {
		return "", err
	}
	var as []string
	for _, f := range fams {
		as = append(as, seg.nodeAddr(f, index).String())
	}
	err = underlay.Connect(underlay.End{NS: netns.Path(underlayNS(lab)), Name: fmt.Sprintf("veth%d", index), Bridge: seg.bridge},
		underlay.End{NS: path, Name: "eth0", Addrs: as, Gateways: addrs(seg.gateways, fams), MAC: nodeMAC(seg, index)})
	if err != nil {
		return "", fmt.Errorf("attaching %s to the underlay: %w", name, err)
	}
	sysctls := map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0"}
	for _, f := range fams {
		sysctls[forwarding[f]] = "1"
	}
	for key, v := range sysctls {
		if err := netns.SetSysctl(path, key, v); err != nil {
			return "", err
		}
	}
	return path, nil
}

// nodeMAC is the eth0 MAC of the node with index i on the segment, made as
// Docker makes a container's: 02:42 and the node's IPv4 address on the
// segment (whatever the lab's families). A node removed and added again
// (the same index, so the same addresses) keeps its MAC, so its peers'
// neighbour caches stay right: the lab's IPv6 addresses skip duplicate
// address detection, so no unsolicited advertisement would correct them.
func nodeMAC(s segment, i int) string {
	a := s.nodeAddr(family.IPv4, i).Addr().As4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

// detachNode removes the node's underlay port (its namespace goes with
// Down or RemoveNode).
func detachNode(lab string, index int) error {
	return underlay.Detach(netns.Path(underlayNS(lab)), fmt.Sprintf("veth%d", index))
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// pick returns the prefix of family f in ps.
func pick(ps []netip.Prefix, f family.Family) (netip.Prefix, bool) {
	for _, p := range ps {
		if family.OfPrefix(p) == f {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// cidrs returns the prefixes of ps of the families fams, in CIDR notation.
func cidrs(ps []netip.Prefix, fams []family.Family) []string {
	var out []string
	for _, f := range fams {
		if p, ok := pick(ps, f); ok {
			out = append(out, p.String())
		}
	}
	return out
}

// addrs returns the addresses of ps of the families fams.
func addrs(ps []netip.Prefix, fams []family.Family) []string {
	var out []string
	for _, f := range fams {
		if p, ok := pick(ps, f); ok {
			out = append(out, p.Addr().String())
		}
	}
	return out
}
