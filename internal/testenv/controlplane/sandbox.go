package controlplane

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/twill-net/twill/internal/testenv/netns"
)

// Sandbox is a throwaway network namespace for a control plane outside the
// lab (benchmarks, tests): loopback up, with the advertise address on it.
type Sandbox struct {
	// Name is the namespace's name in /run/netns.
	Name string
	// NetNS is its path, for Options.NetNS.
	NetNS string
	// IP is the address for Options.AdvertiseIP.
	IP net.IP

	ns *netns.NS
}

// NewSandbox creates the network namespace called name with ip (default
// DefaultAdvertiseIP) as a /32 on its loopback device.
func NewSandbox(name string, ip net.IP) (*Sandbox, error) {
	if ip == nil {
		ip = net.ParseIP(DefaultAdvertiseIP)
	}
	ns, err := netns.Make(name)
	if err != nil {
		return nil, err
	}
	lo, err := ns.Netlink.LinkByName("lo")
	if err == nil {
		err = ns.Netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}})
	}
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("setting up sandbox %s: adding %s to lo: %w", name, ip, err)
	}
	return &Sandbox{Name: name, NetNS: ns.Path(), IP: ip, ns: ns}, nil
}

// Close removes the namespace; stop the control plane first.
func (s *Sandbox) Close() error { return s.ns.Close() }
