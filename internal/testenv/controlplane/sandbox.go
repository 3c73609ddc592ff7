package controlplane

import (
	"context"
	"errors"
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

// StartInSandbox starts a control plane (Options o, with NetNS and
// AdvertiseIP set to its own) in a new sandbox called name. stop stops it
// and removes the sandbox; call it however Start ended.
func StartInSandbox(ctx context.Context, name string, o Options) (cp *ControlPlane, stop func() error, err error) {
	sb, err := NewSandbox(name, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the sandbox: %w", err)
	}
	o.NetNS, o.AdvertiseIP = sb.NetNS, sb.IP
	cp, err = Start(ctx, o)
	if err != nil {
		// Start may have left processes behind before it failed.
		return nil, nil, errors.Join(fmt.Errorf("starting the API server: %w", err), StopDir(o.Dir), sb.Close())
	}
	return cp, func() error { return errors.Join(cp.Stop(), sb.Close()) }, nil
}
