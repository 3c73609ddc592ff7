// Package iface chooses the underlay interface and the addresses that
// flanneld uses as its public IPs and tunnel endpoints, one per IP family,
// from flannel's flags (--iface, --iface-regex, --iface-can-reach) or, by
// default, the default route of the first family.
package iface

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
)

// Options are the selection flags.
type Options struct {
	// Ifaces are interface names or IP addresses, tried in order.
	Ifaces []string
	// Regexes match interface names or IP addresses, tried in order.
	Regexes []string
	// CanReach is an address: the interface of the route to it is chosen.
	CanReach string
	// PublicIPs are the addresses to publish (--public-ip, --public-ipv6,
	// node-public-ip): with no other option, the interface holding one of
	// them is chosen, as flannel does; none holds one behind NAT, and the
	// default route's interface is chosen then.
	PublicIPs []netip.Addr
}

// Choice is the chosen interface.
type Choice struct {
	Name  string
	Index int
	MTU   int
	// Addrs holds, for each family asked for, the address tunnels start
	// from and the interface's subnets of that family.
	Addrs []Addr
	// Reason says why this interface was chosen, for the startup log.
	Reason string
}

// Addr is the chosen interface's part for one family.
type Addr struct {
	// Addr is the interface's address used as the tunnel's source.
	Addr netip.Addr
	// Nets are the interface's subnets of the family (for host-gw and
	// DirectRouting: a peer in one of them is directly reachable).
	Nets []netip.Prefix
}

// Family is the address's family.
func (a Addr) Family() family.Family { return family.Of(a.Addr) }

// For returns the choice's part for family f.
func (c *Choice) For(f family.Family) (Addr, bool) { return family.Pick(c.Addrs, f) }

// Choose picks the interface as the options say; it must have an address
// of each of fams (at least one).
func Choose(o Options, fams []family.Family) (*Choice, error) {
	if len(fams) == 0 {
		return nil, errors.New("choosing an interface for no IP family")
	}
	want := familyNames(fams)
	switch {
	case len(o.Ifaces) > 0:
		var errs []string
		for _, s := range o.Ifaces {
			c, err := byNameOrIP(s, fams)
			if err == nil {
				c.Reason = fmt.Sprintf("--iface=%s", s)
				return c, nil
			}
			errs = append(errs, err.Error())
		}
		return nil, fmt.Errorf("none of --iface %s exists with an %s address (%s)", strings.Join(o.Ifaces, ", "), want, strings.Join(errs, "; "))
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
				c, err := fromLink(l, fams, netip.Addr{})
				if err != nil {
					continue
				}
				if re.MatchString(c.Name) || re.MatchString(c.Addrs[0].Addr.String()) {
					c.Reason = fmt.Sprintf("--iface-regex=%s matched", expr)
					return c, nil
				}
			}
		}
		return nil, fmt.Errorf("no interface with an %s address matches --iface-regex %s", want, strings.Join(o.Regexes, ", "))
	case o.CanReach != "":
		ip, err := netip.ParseAddr(o.CanReach)
		if err != nil {
			return nil, fmt.Errorf("--iface-can-reach %q is not an IP address", o.CanReach)
		}
		routes, err := netlink.RouteGet(ip.AsSlice())
		if err != nil || len(routes) == 0 {
			return nil, fmt.Errorf("no route to --iface-can-reach %s: %v", ip, err)
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("interface of the route to %s: %w", ip, err)
		}
		var src netip.Addr
		if routes[0].Src != nil {
			src, _ = netip.AddrFromSlice(routes[0].Src)
			src = src.Unmap()
		}
		c, err := fromLink(l, fams, src)
		if err != nil {
			return nil, err
		}
		c.Reason = fmt.Sprintf("it has the route to --iface-can-reach=%s", ip)
		return c, nil
	}
	for _, ip := range o.PublicIPs {
		if c, err := byNameOrIP(ip.String(), fams); err == nil {
			c.Reason = fmt.Sprintf("it has the public IP %s", ip)
			return c, nil
		}
	}
	f := fams[0]
	routes, err := netlink.RouteListFiltered(int(afOf(f)), &netlink.Route{Dst: nil, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		c, err := fromLink(l, fams, netip.Addr{})
		if err != nil {
			continue
		}
		c.Reason = fmt.Sprintf("it has the %s default route (choose another with --iface, --iface-regex or --iface-can-reach)", f)
		return c, nil
	}
	return nil, fmt.Errorf("no %s default route, so no interface to choose: pass --iface, --iface-regex or --iface-can-reach", f)
}

func familyNames(fams []family.Family) string {
	names := make([]string, len(fams))
	for i, f := range fams {
		names[i] = f.String()
	}
	return strings.Join(names, " and an ")
}

func afOf(f family.Family) int {
	if f == family.IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func byNameOrIP(s string, fams []family.Family) (*Choice, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			c, err := fromLink(l, fams, ip)
			if err != nil {
				continue
			}
			if a, ok := c.For(family.Of(ip)); ok && a.Addr == ip {
				return c, nil
			}
		}
		return nil, fmt.Errorf("no interface has address %s", ip)
	}
	l, err := netlink.LinkByName(s)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", s, err)
	}
	return fromLink(l, fams, netip.Addr{})
}

// fromLink reads the link's addresses of each family; prefer, when it is
// one of them, is that family's chosen address.
func fromLink(l netlink.Link, fams []family.Family, prefer netip.Addr) (*Choice, error) {
	a := l.Attrs()
	c := &Choice{Name: a.Name, Index: a.Index, MTU: a.MTU}
	for _, f := range fams {
		addrs, err := netlink.AddrList(l, afOf(f))
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		var fa Addr
		for _, ad := range addrs {
			ip, _ := netip.AddrFromSlice(ad.IP)
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || family.Of(ip) != f {
				continue
			}
			ones, _ := ad.Mask.Size()
			fa.Nets = append(fa.Nets, netip.PrefixFrom(ip, ones))
			if !fa.Addr.IsValid() || ip == prefer {
				fa.Addr = ip
			}
		}
		if !fa.Addr.IsValid() {
			return nil, fmt.Errorf("interface %s has no %s address", a.Name, f)
		}
		c.Addrs = append(c.Addrs, fa)
	}
	return c, nil
}
