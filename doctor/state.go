package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/daemon"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// state is what the checks share: read once, before any check runs, so
// each check only judges.
type state struct {
	o Options
	r *Report

	// fams are the families net-conf.json enables.
	fams    []family.Family
	backend backend.Chosen
	// backendErr is why net-conf.json's Backend is unusable.
	backendErr error

	// node is this node as the API server has it; nodeErr why not.
	node    *v1.Node
	nodeErr error
	// own is the lease this node publishes, ownErr why it is not valid.
	own    *lease.Lease
	ownErr error
	// subnets are this node's podCIDRs, by family.
	subnets map[family.Family]netip.Prefix
	// peers are the other nodes with a valid lease; badPeers name those
	// whose annotations are broken, with why; peersErr is why the list
	// failed.
	peers    []*lease.Lease
	badPeers []string
	peersErr error

	// choice is flanneld's interface, choiceErr why there is none.
	choice    *iface.Choice
	choiceErr error

	// planes are the backend instances, one per family with a subnet.
	planes []*plane

	// env is subnet.env, envErr why it is unusable.
	env    *subnetenv.Env
	envErr error
}

// plane is one family's backend as doctor rebuilt it.
type plane struct {
	fam family.Family
	be  backend.Backend
	// err is why the backend could not be made; checkErr why its devices
	// could not be checked, diffs what Check found wrong.
	err      error
	checkErr error
	diffs    []string
}

// gather reads everything the checks judge.
func (s *state) gather(ctx context.Context) {
	o := s.o
	if o.Config != nil {
		s.fams = o.Config.Families()
		if o.Backends == nil {
			s.backendErr = errors.New("doctor was given no backends")
		} else {
			s.backend, s.backendErr = o.Backends.Parse(o.Config.Backend.Type, o.Config.Backend.Raw)
		}
	}
	s.env, s.envErr = subnetenv.Read(o.SubnetFile)
	s.subnets = map[family.Family]netip.Prefix{}
	s.gatherNodes(ctx)
	if s.node == nil && s.env != nil {
		// Without the API, subnet.env says which subnet this node has.
		for _, n := range s.env.Nets {
			s.subnets[n.Family()] = n.Subnet.Masked()
		}
	}
	if len(s.fams) > 0 && o.ChooseIface != nil {
		s.choice, s.choiceErr = o.ChooseIface(s.fams)
	}
	if s.backendErr == nil && s.choice != nil && o.Config != nil && o.Kernel != nil {
		for _, f := range s.fams {
			sub, ok := s.subnets[f]
			if !ok {
				continue
			}
			p := &plane{fam: f}
			s.planes = append(s.planes, p)
			n, err := daemon.BackendNode(o.NodeName, o.Config, f, sub, s.choice)
			if err != nil {
				p.err = err
				continue
			}
			if s.node != nil {
				n.Published = o.Annotations.Published(s.node.Annotations, s.backend.Plugin.Type(), f)
			}
			if p.be, p.err = s.backend.Config.New(o.Kernel, n); p.err != nil {
				continue
			}
			p.diffs, p.checkErr = p.be.Check()
		}
	}
}

// gatherNodes reads this node and its peers from the API server.
func (s *state) gatherNodes(ctx context.Context) {
	o := s.o
	if o.API == nil {
		s.nodeErr = o.APIErr
		if s.nodeErr == nil {
			s.nodeErr = errors.New("no API server to ask")
		}
		s.peersErr = s.nodeErr
		return
	}
	s.node, s.nodeErr = o.API.GetNode(ctx, o.NodeName)
	if s.nodeErr == nil {
		pn := o.Annotations.Strip(s.node)
		for _, c := range pn.PodCIDRs {
			if p, err := netip.ParsePrefix(c); err == nil {
				if _, dup := s.subnets[family.OfPrefix(p)]; !dup {
					s.subnets[family.OfPrefix(p)] = p.Masked()
				}
			}
		}
		s.own, s.ownErr = o.Annotations.Decode(pn)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := kube.NewManager(o.API, o.NodeName, o.Annotations, log, nil)
	nodes, err := m.List(ctx)
	if err != nil {
		s.peersErr = err
		return
	}
	for i := range nodes {
		if nodes[i].Name == o.NodeName {
			continue
		}
		l, err := o.Annotations.Decode(&nodes[i])
		switch {
		case errors.Is(err, kube.ErrNotReady):
		case err != nil:
			s.badPeers = append(s.badPeers, fmt.Sprintf("%s: %v", nodes[i].Name, err))
		default:
			s.peers = append(s.peers, l)
		}
	}
	sort.Slice(s.peers, func(i, j int) bool { return s.peers[i].Node < s.peers[j].Node })
	sort.Strings(s.badPeers)
}
