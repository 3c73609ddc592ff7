package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/twill-net/twill/lease"
)

// publicIPs indexes the peers by the public addresses they publish, so
// that two Nodes publishing one address are found without reading every
// lease at each event. Such peers take no kernel slot from each other (the
// FDB is keyed by MAC), so both stay programmed; each is warned about.
type publicIPs struct {
	mu sync.Mutex
	by map[netip.Addr][]string // sorted names
	of map[string][]netip.Addr
}

func newPublicIPs() *publicIPs {
	return &publicIPs{by: map[netip.Addr][]string{}, of: map[string][]netip.Addr{}}
}

// set records the addresses peer name publishes (none forgets it) and
// returns the first of them another peer publishes too, with that peer
// (the first by name), or an invalid address.
func (p *publicIPs) set(name string, addrs []netip.Addr) (netip.Addr, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.of[name] {
		names := slices.DeleteFunc(p.by[a], func(n string) bool { return n == name })
		if len(names) == 0 {
			delete(p.by, a)
		} else {
			p.by[a] = names
		}
	}
	delete(p.of, name)
	if len(addrs) == 0 {
		return netip.Addr{}, ""
	}
	p.of[name] = slices.Clone(addrs)
	var shared netip.Addr
	other := ""
	for _, a := range addrs {
		names := p.by[a]
		if len(names) > 0 && !shared.IsValid() {
			shared, other = a, names[0]
		}
		i, _ := slices.BinarySearch(names, name)
		p.by[a] = slices.Insert(names, i, name)
	}
	return shared, other
}

// publicIPConflict returns what is wrong when peer l publishes a public
// address that this node or another peer publishes too, or nil.
func (d *Daemon) publicIPConflict(l *lease.Lease) error {
	var addrs []netip.Addr
	for _, n := range l.Nets {
		if n.PublicIP.IsValid() {
			addrs = append(addrs, n.PublicIP)
		}
	}
	shared, other := d.publicIPs.set(l.Node, addrs)
	for _, n := range l.Nets {
		if own, ok := d.own.Net(n.Family()); ok && own.PublicIP == n.PublicIP {
			shared, other = n.PublicIP, d.o.NodeName
			break
		}
	}
	if other == "" {
		return nil
	}
	return fmt.Errorf("node %s publishes public IP %s, which node %s publishes too: tunnelled packets for both go to one host, so pods on one of them are unreachable; give each node its own address (its interface's, or --public-ip / the public-ip-overwrite annotation behind NAT)", l.Node, shared, other)
}

// ownPodCIDRChanged returns what is wrong when this node's Node has other
// podCIDRs (cidrs) than the subnets flanneld serves (a family this node
// does not run is not looked at), or nil. The API server
// never changes a podCIDR once set: the Node was deleted and created anew.
func (d *Daemon) ownPodCIDRChanged(cidrs []string) error {
	var serving []string
	changed := false
	for _, n := range d.own.Nets {
		serving = append(serving, n.Subnet.String())
		changed = changed || !slices.ContainsFunc(cidrs, func(c string) bool {
			p, err := netip.ParsePrefix(c)
			return err == nil && p == n.Subnet
		})
	}
	if !changed {
		return nil
	}
	now := "no podCIDR"
	if len(cidrs) > 0 {
		now = "podCIDR " + strings.Join(cidrs, ",")
	}
	return fmt.Errorf("this node's Node has %s now, but flanneld serves %s, which its pods have addresses from, and keeps serving it: drain the node, then restart flanneld's pod to take the new podCIDR", now, strings.Join(serving, ","))
}
