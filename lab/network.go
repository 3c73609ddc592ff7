package lab

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/twill-net/twill/lab/netns"
)

// The underlay stands for kind's Docker network: a bridge in its own
// namespace, the nodes on it, and one more namespace behind its gateway
// standing for the internet (a documentation address), so masquerading
// can be watched. Nothing links it to the host.
var (
	underlayGateway = net.IPv4(172, 18, 0, 1)
	underlayMask    = net.CIDRMask(16, 32)
	// InternetIP is the lab's stand-in for an address on the internet.
	InternetIP     = net.IPv4(203, 0, 113, 10)
	internetGW     = net.IPv4(203, 0, 113, 1)
	internetMask   = net.CIDRMask(24, 32)
	underlayBridge = "br0"
)

func underlayNS(lab string) string { return lab + "-underlay" }
func internetNS(lab string) string { return lab + "-internet" }

// nodeIP is the underlay address of the node with index i (0 is the
// control plane): 172.18.0.(i+2), as Docker hands them out on kind's network.
func nodeIP(i int) net.IP { return net.IPv4(172, 18, byte((i+2)/256), byte((i+2)%256)) }

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

// createUnderlay makes the underlay and internet namespaces and wires them.
func createUnderlay(lab string) error {
	under, err := netns.Create(underlayNS(lab))
	if err != nil {
		return err
	}
	inet, err := netns.Create(internetNS(lab))
	if err != nil {
		return err
	}
	err = netns.Do(under, func() error {
		if err := upLoopback(); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: underlayBridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("adding bridge: %w", err)
		}
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: underlayGateway, Mask: underlayMask}}); err != nil {
			return fmt.Errorf("addressing bridge: %w", err)
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return fmt.Errorf("bringing bridge up: %w", err)
		}
		return addVeth("inet0", &net.IPNet{IP: internetGW, Mask: internetMask}, inet, &net.IPNet{IP: InternetIP, Mask: internetMask}, internetGW)
	})
	if err != nil {
		return fmt.Errorf("wiring the underlay: %w", err)
	}
	// The gateway routes between the nodes and the "internet", nowhere else.
	return netns.SetSysctl(under, "net/ipv4/ip_forward", "1")
}

// attachNode creates the node's network namespace with eth0 on the
// underlay bridge.
func attachNode(lab, name string, index int, ip net.IP) (string, error) {
	path, err := netns.Create(name)
	if err != nil {
		return "", err
	}
	host := fmt.Sprintf("veth%d", index)
	err = netns.Do(netns.Path(underlayNS(lab)), func() error {
		if err := addVeth(host, nil, path, &net.IPNet{IP: ip, Mask: underlayMask}, underlayGateway); err != nil {
			return err
		}
		br, err := netlink.LinkByName(underlayBridge)
		if err != nil {
			return fmt.Errorf("finding bridge: %w", err)
		}
		l, err := netlink.LinkByName(host)
		if err != nil {
			return err
		}
		return netlink.LinkSetMaster(l, br)
	})
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
	under := netns.Path(underlayNS(lab))
	if _, err := os.Stat(under); err != nil {
		return nil
	}
	return netns.Do(under, func() error {
		l, err := netlink.LinkByName(fmt.Sprintf("veth%d", index))
		if err != nil {
			return nil
		}
		return netlink.LinkDel(l)
	})
}

// addVeth, called inside one namespace, makes a veth pair: local end
// hostName (addressed with hostAddr unless nil) and peer eth0 in the
// namespace at peerNS, addressed peerAddr with a default route via gw.
func addVeth(hostName string, hostAddr *net.IPNet, peerNS string, peerAddr *net.IPNet, gw net.IP) error {
	f, err := os.Open(peerNS)
	if err != nil {
		return err
	}
	defer f.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(f.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", hostName, err)
	}
	l, err := netlink.LinkByName(hostName)
	if err != nil {
		return err
	}
	if hostAddr != nil {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: hostAddr}); err != nil {
			return fmt.Errorf("addressing %s: %w", hostName, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	return netns.Do(peerNS, func() error {
		if err := upLoopback(); err != nil {
			return err
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth, &netlink.Addr{IPNet: peerAddr}); err != nil {
			return fmt.Errorf("addressing eth0: %w", err)
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("adding default route: %w", err)
		}
		return nil
	})
}

func upLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}
