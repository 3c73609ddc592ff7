package lab

import (
	"fmt"
	"net"

	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// The underlay stands for kind's Docker network: a bridge in its own
// namespace, the nodes on it, and one more namespace behind its gateway
// standing for the internet (a documentation address), so masquerading
// can be watched. Nothing links it to the host.
//
// With Options.RoutedNodes the underlay namespace also holds a second
// bridge on another subnet, and routes between the two: its nodes share no
// layer-2 segment with the others, as nodes in another rack or zone.
var (
	// flatSegment is kind's network; every node is on it by default.
	flatSegment = segment{bridge: "br0", gateway: net.IPv4(172, 18, 0, 1), mask: net.CIDRMask(16, 32)}
	// routedSegment holds the last Options.RoutedNodes nodes. 172.19/16
	// clashes with none of the lab's other ranges: 172.18/16 (the flat
	// segment), 10.244/16 (pods), 10.96/12 (Services), 203.0.113/24 (the
	// internet) and 172.20/16 (the daemon tests' routed subnet).
	routedSegment = segment{bridge: "br1", gateway: net.IPv4(172, 19, 0, 1), mask: net.CIDRMask(16, 32)}
	// InternetIP is the lab's stand-in for an address on the internet.
	InternetIP   = net.IPv4(203, 0, 113, 10)
	internetGW   = net.IPv4(203, 0, 113, 1)
	internetMask = net.CIDRMask(24, 32)
)

// segment is one subnet of the underlay: a bridge in the underlay
// namespace holding the subnet's gateway address, with the eth0 of every
// node on the subnet attached to it.
type segment struct {
	bridge  string
	gateway net.IP
	mask    net.IPMask
}

// subnet is the segment's network, e.g. 172.18.0.0/16.
func (s segment) subnet() *net.IPNet {
	return &net.IPNet{IP: s.gateway.Mask(s.mask), Mask: s.mask}
}

// nodeIP is the address of the node with index i (0 is the control plane)
// on the segment: .(i+2) counted from the subnet's base, as Docker hands
// them out on kind's network.
func (s segment) nodeIP(i int) net.IP {
	base := s.gateway.Mask(s.mask).To4()
	return net.IPv4(base[0], base[1], byte((i+2)/256), byte((i+2)%256))
}

func underlayNS(lab string) string { return lab + "-underlay" }
func internetNS(lab string) string { return lab + "-internet" }

// nodeIP is the flat segment's address of the node with index i:
// 172.18.0.(i+2).
func nodeIP(i int) net.IP { return flatSegment.nodeIP(i) }

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

// createUnderlay makes the underlay and internet namespaces and wires them;
// with routed, the underlay holds the routed segment's bridge too.
func createUnderlay(lab string, routed bool) error {
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
		if err := underlay.Bridge(under, s.bridge, s.gatewayCIDR()); err != nil {
			return fmt.Errorf("wiring the underlay: %w", err)
		}
	}
	err = underlay.Connect(
		underlay.End{NS: under, Name: "inet0", Addr: (&net.IPNet{IP: internetGW, Mask: internetMask}).String()},
		underlay.End{NS: inet, Name: "eth0", Addr: (&net.IPNet{IP: InternetIP, Mask: internetMask}).String(), Gateway: internetGW.String()})
	if err != nil {
		return fmt.Errorf("wiring the underlay: %w", err)
	}
	// The gateway routes between the segments and the "internet", nowhere
	// else: its only routes are those of its own addresses.
	return netns.SetSysctl(under, "net/ipv4/ip_forward", "1")
}

// gatewayCIDR is the gateway's address on the segment, e.g. 172.18.0.1/16.
func (s segment) gatewayCIDR() string {
	return (&net.IPNet{IP: s.gateway, Mask: s.mask}).String()
}

// attachNode creates the node's network namespace with eth0 on the
// segment's bridge, addressed ip, with a default route via the segment's
// gateway.
func attachNode(lab, name string, index int, seg segment, ip net.IP) (string, error) {
	path, err := netns.Create(name)
	if err != nil {
		return "", err
	}
	err = underlay.Attach(netns.Path(underlayNS(lab)), seg.bridge, fmt.Sprintf("veth%d", index), path, (&net.IPNet{IP: ip, Mask: seg.mask}).String(), seg.gateway.String())
	if err != nil {
		return "", fmt.Errorf("attaching %s to the underlay: %w", name, err)
	}
	for key, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0"} {
		if err := netns.SetSysctl(path, key, v); err != nil {
			return "", err
		}
	}
	return path, nil
}

// detachNode removes the node's underlay port (its namespace goes with
// Down or RemoveNode).
func detachNode(lab string, index int) error {
	return underlay.Detach(netns.Path(underlayNS(lab)), fmt.Sprintf("veth%d", index))
}
