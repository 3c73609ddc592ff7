package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
)

// plane is one IP family's machinery on this node: the backend instance
// that programs it, the firewall that keeps its rules, and what the node
// publishes for it. A dual-stack node runs two, side by side; each is
// handed its family's values and never asks which family it has.
type plane struct {
	fam    family.Family
	be     backend.Backend
	fw     firewall.Firewall // nil: no rules kept
	policy firewall.Policy
	own    lease.Net
	// node is what the backend was made with: the underlay interface and
	// its address, which a re-address changes (see readdress).
	node backend.Node
	// explicit names where an explicitly given public IP came from
	// (--public-ip, an annotation); empty when it is the interface's.
	explicit string
}

// Policy is what the packet filter of family f must do on a node whose
// subnet of f is subnet, under cfg, masquerading when masq is true
// (--ip-masq). The daemon keeps it; flanneld doctor checks it.
func Policy(cfg *netconf.Config, f family.Family, subnet netip.Prefix, masq bool) firewall.Policy {
	network, _ := cfg.Network(f)
	return firewall.Policy{Network: network.Prefix, Subnet: subnet, NoMasquerade: cfg.NoMasquerade(f), Masquerade: masq}
}

// BackendNode is what the backend of family f knows of node name, whose
// subnet of f is subnet and whose underlay interface is c.
func BackendNode(name string, cfg *netconf.Config, f family.Family, subnet netip.Prefix, c *iface.Choice) (backend.Node, error) {
	network, _ := cfg.Network(f)
	addr, ok := c.For(f)
	if !ok {
		return backend.Node{}, fmt.Errorf("interface %s has no %s address, and net-conf.json enables %s", c.Name, f, f)
	}
	return backend.Node{
		Name: name, Subnet: subnet, Network: network.Prefix,
		Iface: backend.Link{Index: c.Index, Name: c.Name, MTU: c.MTU},
		Addr:  addr.Addr, Nets: addr.Nets,
	}, nil
}

// planes is the face the daemon uses: every method does its job for each
// family in turn, as kube-proxy's meta-proxier does over its per-family
// proxiers.
type planes []*plane

// setup sets up every family's devices; recreated is true when any device
// was created or recreated.
func (ps planes) setup() (bool, error) {
	recreated := false
	for _, p := range ps {
		r, err := p.be.Setup()
		if err != nil {
			return recreated, fmt.Errorf("%s: %w", p.fam, err)
		}
		recreated = recreated || r
	}
	return recreated, nil
}

// mtu is the MTU pods get: the smallest of the families' paths, as a pod
// has one MTU for both.
func (ps planes) mtu() int {
	m := 0
	for _, p := range ps {
		if v := p.be.MTU(); m == 0 || v < m {
			m = v
		}
	}
	return m
}

func (ps planes) scope() backend.Scope {
	var s backend.Scope
	for _, p := range ps {
		s = append(s, p.be.Scope()...)
	}
	return s
}

func (ps planes) devices() []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.be.Devices()...)
	}
	return out
}

// peerEntries is what reaching one peer takes, family by family.
type peerEntries struct {
	entries backend.Entries
	// leased are the families the peer has a lease of; families those
	// programmed; missing those of this node the peer has no lease of;
	// failed the errors of the others.
	leased   []family.Family
	families []family.Family
	missing  []family.Family
	failed   []error
	// public are the peer's public addresses of the families programmed:
	// what the tunnel guards accept.
	public []netip.Addr
	// bad is set when the peer's published backend data is broken.
	bad *backend.DataError
	// clean is set when nothing is wrong with the peer, so far.
	clean bool
}

// entries computes what the kernel must hold to reach peer l in every
// family both ends have.
func (ps planes) entries(l *lease.Lease) peerEntries {
	out := peerEntries{leased: l.Families()}
	for _, p := range ps {
		n, ok := l.Net(p.fam)
		if !ok {
			out.missing = append(out.missing, p.fam)
			continue
		}
		e, err := p.be.Entries(l, n)
		var bad *backend.DataError
		switch {
		case errors.As(err, &bad):
			out.bad = bad
		case err != nil && len(ps) > 1:
			out.failed = append(out.failed, fmt.Errorf("%s: %w", p.fam, err))
		case err != nil:
			out.failed = append(out.failed, err)
		default:
			out.entries = append(out.entries, e...)
			out.families = append(out.families, p.fam)
			out.public = append(out.public, n.PublicIP)
		}
	}
	return out
}
