// Package iface chooses the underlay interface and address that flanneld
// uses as its public IP and tunnel endpoint, from flannel's flags (--iface,
// --iface-regex, --iface-can-reach) or, by default, the default route.
package iface

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options are the selection flags.
type Options struct {
	// Ifaces are interface names or IP addresses, tried in order.
	Ifaces []string
	// Regexes match interface names or IP addresses, tried in order.
	Regexes []string
	// CanReach is an address: the interface of the route to it is chosen.
	CanReach string
}

// Choice is the chosen interface.
type Choice struct {
	Name  string
	Index int
	MTU   int
	// Addr is the interface's IPv4 address used as the tunnel's source.
	Addr net.IP
	// Nets are the IPv4 subnets of the interface (for host-gw and
	// DirectRouting: a peer in one of them is directly reachable).
	Nets []*net.IPNet
	// Reason says why this interface was chosen, for the startup log.
	Reason string
}

// Choose picks the interface as the options say.
func Choose(o Options) (*Choice, error) {
	switch {
	case len(o.Ifaces) > 0:
		for _, s := range o.Ifaces {
			if c, err := byNameOrIP(s); err == nil {
				c.Reason = fmt.Sprintf("--iface=%s", s)
				return c, nil
			}
		}
		return nil, fmt.Errorf("none of --iface %s exists with an IPv4 address", strings.Join(o.Ifaces, ", "))
	case len(o.Regexes) > 0:
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing interfaces: %w", err)
		}
		for _, expr := range o.Regexes {
			re, err := regexp.Compile(expr)
			if err != nil {
				return nil, fmt.Errorf("--iface-regex %q: %w", expr, err)
			}
			for _, l := range links {
				c, err := fromLink(l)
				if err != nil {
					continue
				}
				if re.MatchString(c.Name) || re.MatchString(c.Addr.String()) {
					c.Reason = fmt.Sprintf("--iface-regex=%s matched", expr)
					return c, nil
				}
			}
		}
		return nil, fmt.Errorf("no interface with an IPv4 address matches --iface-regex %s", strings.Join(o.Regexes, ", "))
	case o.CanReach != "":
		ip := net.ParseIP(o.CanReach)
		if ip == nil {
			return nil, fmt.Errorf("--iface-can-reach %q is not an IP address", o.CanReach)
		}
		routes, err := netlink.RouteGet(ip)
		if err != nil || len(routes) == 0 {
			return nil, fmt.Errorf("no route to --iface-can-reach %s: %v", ip, err)
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("interface of the route to %s: %w", ip, err)
		}
		c, err := fromLink(l)
		if err != nil {
			return nil, err
		}
		if src := routes[0].Src; src != nil {
			c.Addr = src.To4()
		}
		c.Reason = fmt.Sprintf("it has the route to --iface-can-reach=%s", ip)
		return c, nil
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: nil, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		c, err := fromLink(l)
		if err != nil {
			continue
		}
		c.Reason = "it has the default route (choose another with --iface, --iface-regex or --iface-can-reach)"
		return c, nil
	}
	return nil, errors.New("no default route, so no interface to choose: pass --iface, --iface-regex or --iface-can-reach")
}

func byNameOrIP(s string) (*Choice, error) {
	if ip := net.ParseIP(s); ip != nil {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			c, err := fromLink(l)
			if err != nil {
				continue
			}
			for _, n := range c.Nets {
				if n.IP.Equal(ip) {
					c.Addr = ip.To4()
					return c, nil
				}
			}
		}
		return nil, fmt.Errorf("no interface has address %s", ip)
	}
	l, err := netlink.LinkByName(s)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", s, err)
	}
	return fromLink(l)
}

func fromLink(l netlink.Link) (*Choice, error) {
	a := l.Attrs()
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
	}
	c := &Choice{Name: a.Name, Index: a.Index, MTU: a.MTU}
	for _, ad := range addrs {
		if ad.IP.IsLoopback() || ad.IP.IsLinkLocalUnicast() {
			continue
		}
		c.Nets = append(c.Nets, ad.IPNet)
		if c.Addr == nil {
			c.Addr = ad.IP.To4()
		}
	}
	if c.Addr == nil {
		return nil, fmt.Errorf("interface %s has no IPv4 address", a.Name)
	}
	return c, nil
}
