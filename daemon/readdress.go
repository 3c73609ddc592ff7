package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/twill-net/twill/backend"
)

// move is what one family does after the underlay interface is chosen
// again: nothing, or its backend is made anew for the new interface or
// address (the tunnel then starts from the new address) and it publishes
// publish.
type move struct {
	rebuild bool
	publish netip.Addr
	// kept is set when the interface's address changed but the published
	// address stays, because it was given explicitly.
	kept bool
}

// decideMove compares the backend node a family was made with (old) with
// the one the interface gives now (now). The tunnel always follows the
// interface: a VXLAN device must send from an address the node holds. The
// published address follows it too, unless it was given explicitly
// (explicit names where from): then it stays and the change is reported,
// as the operator who set it must set it again.
func decideMove(old, now backend.Node, published netip.Addr, explicit string) move {
	if old.Addr == now.Addr && old.Iface == now.Iface && slices.Equal(old.Nets, now.Nets) {
		return move{publish: published}
	}
	m := move{rebuild: true, publish: now.Addr}
	if explicit != "" {
		m.publish = published
		m.kept = old.Addr != now.Addr
	}
	return m
}

// sticky keeps old's address in now when the interface still has it: an
// interface with several addresses of a family (IPv6 temporary addresses
// come and go) moves the tunnel only when its address is gone.
func sticky(old, now backend.Node) backend.Node {
	if old.Iface.Index == now.Iface.Index && slices.ContainsFunc(now.Nets, func(p netip.Prefix) bool { return p.Addr() == old.Addr }) {
		now.Addr = old.Addr
	}
	return now
}

// readdress follows a change of the underlay: it chooses the interface
// again as at start and, for each family whose interface or address
// changed, makes the backend anew (the next Setup recreates the device
// with the new local address, and every peer is programmed again) and
// publishes the new address (the next Publish; peers follow on their node
// watch). When no interface can be chosen (the address is gone, no new one
// yet), everything stays as it is and the problem is logged once. It
// reports whether any family's backend was made anew.
func (d *Daemon) readdress() (bool, error) {
	if d.o.ChooseIface == nil {
		return false, nil
	}
	c, err := d.o.ChooseIface()
	if err != nil {
		d.noteIface(fmt.Sprintf("cannot choose the underlay interface again: %v; keeping %s and the addresses published", err, d.o.Iface.Name))
		return false, nil
	}
	d.noteIface("")
	rebuilt, moved := false, false
	for i, p := range d.planes {
		n, err := BackendNode(d.o.NodeName, d.o.Config, p.fam, p.own.Subnet, c)
		if err != nil {
			d.noteIface(fmt.Sprintf("%v; keeping %s and the addresses published", err, d.o.Iface.Name))
			return false, nil
		}
		n = sticky(p.node, n)
		m := decideMove(p.node, n, p.own.PublicIP, p.explicit)
		if !m.rebuild {
			continue
		}
		n.Published = p.own.BackendData // keep the VTEP MAC peers hold
		be, err := d.o.Backend.Config.New(d.o.Kernel, n)
		if err != nil {
			return rebuilt, fmt.Errorf("following %s's new address %s: %w", n.Iface.Name, n.Addr, err)
		}
		log := d.log.WithFields(logrus.Fields{"family": p.fam, "iface": n.Iface.Name, "was": p.node.Addr, "addr": n.Addr})
		switch {
		case p.node.Addr == n.Addr:
			log.Debug("the underlay interface's subnets changed")
		case m.kept:
			log.Warnf("the underlay interface's address changed; the tunnel now starts from %s, but %s stays published as given by %s: set it to the new address and restart flanneld, or peers keep sending to the old one", n.Addr, p.own.PublicIP, p.explicit)
		default:
			log.Infof("the underlay interface's address changed: the tunnel now starts from %s and %s is published", n.Addr, m.publish)
		}
		moved = moved || p.node.Addr != n.Addr
		rebuilt = true
		p.be, p.node = be, n
		p.own.PublicIP, p.own.BackendData = m.publish, be.Data()
		d.own.Nets[i] = p.own
	}
	d.o.Iface = c
	if moved && d.o.Reconnect != nil {
		// The connections to the API server are bound to the old address.
		d.o.Reconnect()
	}
	if d.env != nil {
		d.env.MTU = d.planes.mtu()
	}
	return rebuilt, nil
}

// noteIface logs problem (a Warning) when it differs from the last one
// logged; "" says there is none now.
func (d *Daemon) noteIface(problem string) {
	d.mu.Lock()
	old := d.ifaceProblem
	d.ifaceProblem = problem
	d.mu.Unlock()
	if problem != "" && problem != old {
		d.log.Warn(problem)
	}
}
