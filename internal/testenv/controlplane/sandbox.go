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
}

// NewSandbox creates the network namespace called name with ip (default
// DefaultAdvertiseIP) as a /32 on its loopback device.
func NewSandbox(name string, ip net.IP) (*Sandbox, error) {
	if ip == nil {
		ip = net.ParseIP(DefaultAdvertiseIP)
	}
	path, err := netns.Create(name)
	if err != nil {
		return nil, err
	}
	err = netns.Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo: %w", err)
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("adding %s to lo: %w", ip, err)
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		_ = netns.Delete(name)
		return nil, fmt.Errorf("setting up sandbox %s: %w", name, err)
	}
	return &Sandbox{Name: name, NetNS: path, IP: ip}, nil
}

// Close removes the namespace; stop the control plane first.
func (s *Sandbox) Close() error { return netns.Delete(s.Name) }
