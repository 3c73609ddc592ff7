package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twill-net/twill/subnet/kube"
)

// checkDaemon: flanneld runs on this node and is ready.
func (s *state) checkDaemon(ctx context.Context) {
	f := Finding{Check: "flanneld"}
	d := s.o.Daemon
	switch {
	case d == nil:
		f.Status = Warn
		f.Summary = "no flanneld runs on this node: nothing repairs the network, and doctor judges by its own flags"
		f.Fix = "check the DaemonSet's pod on this node: kubectl -n kube-flannel get pods -o wide --field-selector spec.nodeName=" + s.o.NodeName
	case s.o.DaemonReady == nil:
		f.Status = OK
		f.Summary = fmt.Sprintf("pid %d runs (no --healthz-port, so its readiness is not asked)", d.PID)
	default:
		if err := s.o.DaemonReady(ctx); err != nil {
			f.Status = Fail
			f.Summary = fmt.Sprintf("pid %d runs but is not ready: %v", d.PID, err)
			f.Fix = "its log says what it waits for: kubectl -n kube-flannel logs <its pod> -c kube-flannel; a daemon that does not answer at all is stuck or stopped"
		} else {
			f.Status = OK
			f.Summary = fmt.Sprintf("pid %d runs and is ready", d.PID)
		}
	}
	s.add(f)
}

// checkConfig: net-conf.json reads and names a backend this build has.
func (s *state) checkConfig(context.Context) {
	f := Finding{Check: "net-conf", Status: OK}
	switch {
	case s.o.Config == nil:
		f.Status = Fail
		f.Summary = "no net-conf.json"
		if s.o.ConfigErr != nil {
			f.Summary = s.o.ConfigErr.Error()
		}
		f.Fix = "fix net-conf.json in the kube-flannel-cfg ConfigMap (keys in Documentation/configuration.md) and restart the DaemonSet; most other checks need it"
	case s.backendErr != nil:
		f.Status = Fail
		f.Summary = fmt.Sprintf("%s: %v", s.o.ConfigPath, s.backendErr)
		f.Fix = "fix the Backend section of net-conf.json and restart the DaemonSet"
	default:
		var nets []string
		for _, n := range s.o.Config.Networks {
			nets = append(nets, n.Prefix.String())
		}
		f.Summary = fmt.Sprintf("%s: network %s, backend %s", s.o.ConfigPath, strings.Join(nets, " and "), s.backend.Plugin.Type())
	}
	s.add(f)
}

// checkNode: the Node has a podCIDR of each family inside the network,
// and publishes valid annotations that match what flanneld would publish.
func (s *state) checkNode(context.Context) {
	f := Finding{Check: "node", Status: OK}
	defer func() { s.add(f) }()
	if s.node == nil {
		f.Status = Fail
		f.Summary = fmt.Sprintf("cannot read node %s from the API server: %v", s.o.NodeName, s.nodeErr)
		f.Fix = "doctor needs the API server for the node's podCIDR and its peers: in the pod it uses the pod's ServiceAccount; elsewhere pass --kubeconfig-file (and --node if the hostname is not the node name)"
		if s.o.API == nil {
			f.Status = Skip
		}
		return
	}
	if s.o.Config == nil {
		f.Status = Skip
		f.Summary = "needs net-conf.json"
		return
	}
	var problems, ok []string
	for _, fam := range s.fams {
		sub, has := s.subnets[fam]
		switch {
		case !has:
			problems = append(problems, fmt.Sprintf("no %s podCIDR: kube-controller-manager must run with --allocate-node-cidrs and a --cluster-cidr of each family net-conf.json enables", fam))
		case s.o.Config.CheckSubnet(sub) != nil:
			problems = append(problems, fmt.Sprintf("podCIDR %s: %v; make kube-controller-manager's --cluster-cidr match net-conf.json's Network", sub, s.o.Config.CheckSubnet(sub)))
		default:
			ok = append(ok, "podCIDR "+sub.String())
		}
	}
	switch {
	case errors.Is(s.ownErr, kube.ErrNotReady):
		problems = append(problems, "no flannel annotations: flanneld has not published this node's lease yet, so no peer can reach it")
	case s.ownErr != nil:
		problems = append(problems, "annotations: "+s.ownErr.Error())
	case s.backendErr == nil && s.own.BackendType != s.backend.Plugin.Type():
		problems = append(problems, fmt.Sprintf("publishes backend %q, net-conf.json says %q: peers program it as the other backend", s.own.BackendType, s.backend.Plugin.Type()))
	default:
		problems = append(problems, s.staleAnnotations()...)
	}
	if len(problems) > 0 {
		f.Status = Fail
		f.Summary = fmt.Sprintf("node %s: %s", s.o.NodeName, problems[0])
		f.Details = first(problems[1:], 5)
		f.Fix = "flanneld publishes the annotations at start and at every full reconcile; if they stay wrong, its log says why"
		return
	}
	f.Summary = fmt.Sprintf("node %s: %s, annotations valid", s.o.NodeName, strings.Join(ok, ", "))
	if len(s.badPeers) > 0 {
		f.Status = Warn
		f.Summary += fmt.Sprintf("; %d peers have broken annotations and are skipped", len(s.badPeers))
		f.Details = first(s.badPeers, 5)
		f.Fix = "see the Warning events on those Nodes (kubectl describe node); their flanneld or another tool wrote them"
	}
}

// staleAnnotations compares what the node publishes with what flanneld
// would: the backend's data and the public address of each family.
func (s *state) staleAnnotations() []string {
	var out []string
	for _, p := range s.planes {
		if p.be == nil {
			continue
		}
		n, ok := s.own.Net(p.fam)
		if !ok {
			out = append(out, fmt.Sprintf("publishes no %s address (annotation %s)", p.fam, s.o.Annotations.For(p.fam).PublicIP))
			continue
		}
		if want := p.be.Data(); want != nil && !bytes.Equal(bytes.TrimSpace(n.BackendData), want) {
			out = append(out, fmt.Sprintf("annotation %s is %s, flanneld would publish %s: peers send to a VTEP that is not this node's", s.o.Annotations.For(p.fam).BackendData, n.BackendData, want))
		}
	}
	return out
}

// checkInterface: which interface flanneld uses and why; the published
// address should be on it, and the routes to the peers should use it.
func (s *state) checkInterface(context.Context) {
	f := Finding{Check: "interface", Status: OK}
	defer func() { s.add(f) }()
	if s.choice == nil {
		if s.choiceErr == nil {
			f.Status, f.Summary = Skip, "needs net-conf.json"
			return
		}
		f.Status = Fail
		f.Summary = "flanneld cannot choose an interface: " + s.choiceErr.Error()
		f.Fix = "pass --iface, --iface-regex or --iface-can-reach in the DaemonSet's args"
		return
	}
	c := s.choice
	var addrs []string
	for _, a := range c.Addrs {
		addrs = append(addrs, a.Addr.String())
	}
	f.Summary = fmt.Sprintf("%s (%s, MTU %d), because %s", c.Name, strings.Join(addrs, ", "), c.MTU, c.Reason)
	var warns []string
	if s.own != nil {
		for _, a := range c.Addrs {
			n, ok := s.own.Net(a.Family())
			if ok && n.PublicIP != a.Addr {
				warns = append(warns, fmt.Sprintf("this node publishes %s (--public-ip or annotation %s), not %s's %s: peers send their tunnels there; right behind NAT, wrong otherwise", n.PublicIP, s.o.Annotations.For(a.Family()).PublicIPOverwrite, c.Name, a.Addr))
			}
		}
	}
	warns = append(warns, s.peersRoutedElsewhere()...)
	if len(warns) > 0 {
		f.Status = Warn
		f.Details = first(warns, 5)
		f.Fix = "if another interface reaches the peers, choose it: --iface=<name>, or --iface-can-reach=<a peer's address>"
	}
}

// peersRoutedElsewhere names peers (of the first 50) whose public address
// the kernel routes through another interface than flanneld's.
func (s *state) peersRoutedElsewhere() []string {
	if s.o.Router == nil || s.o.Kernel == nil {
		return nil
	}
	names := map[int]string{}
	if links, err := s.o.Kernel.Links(); err == nil {
		for _, l := range links {
			names[l.Index] = l.Name
		}
	}
	byLink := map[int][]string{}
	var order []int
	for i, p := range s.peers {
		if i == 50 {
			break
		}
		for _, n := range p.Nets {
			link, _, err := s.o.Router.RouteTo(n.PublicIP)
			if err != nil || link == s.choice.Index {
				continue
			}
			if _, seen := byLink[link]; !seen {
				order = append(order, link)
			}
			byLink[link] = append(byLink[link], fmt.Sprintf("%s (%s)", p.Node, n.PublicIP))
		}
	}
	var out []string
	for _, link := range order {
		name := names[link]
		if name == "" {
			name = fmt.Sprintf("link #%d", link)
		}
		out = append(out, fmt.Sprintf("the route to %s goes through %s, not %s: their tunnels leave by another interface than the one flanneld sends from", strings.Join(first(byLink[link], 3), ", "), name, s.choice.Name))
	}
	return out
}

// checkDevices: the backend's devices are as flanneld makes them.
func (s *state) checkDevices(context.Context) {
	if len(s.planes) == 0 {
		s.add(Finding{Check: "device", Status: Skip, Summary: "needs net-conf.json, this node's podCIDR and the interface"})
		return
	}
	for _, p := range s.planes {
		f := Finding{Check: "device", Family: s.famLabel(p.fam), Status: OK}
		switch {
		case p.err != nil:
			f.Status, f.Summary = Fail, "the backend cannot be set up: "+p.err.Error()
			f.Fix = "flanneld fails the same way; fix what the message names"
		case p.checkErr != nil:
			f.Status, f.Summary = Fail, "reading the devices: "+p.checkErr.Error()
		case len(p.diffs) > 0:
			f.Status, f.Summary = Fail, p.diffs[0]
			f.Details = p.diffs[1:]
			f.Fix = "flanneld repairs its devices at start and at every full reconcile (--resync-period, default 1m), reprogramming every peer; if the fault stays while it runs, its log says why"
		default:
			f.Summary = s.describeDevices(p)
		}
		s.add(f)
	}
}

// describeDevices says what a healthy plane's devices are.
func (s *state) describeDevices(p *plane) string {
	devs := p.be.Devices()
	if len(devs) == 0 {
		return fmt.Sprintf("%s has no device; pods' MTU %d", s.backend.Plugin.Type(), p.be.MTU())
	}
	var out []string
	for _, name := range devs {
		l, err := s.o.Kernel.LinkByName(name)
		if err != nil {
			continue
		}
		d := fmt.Sprintf("%s up, MTU %d", name, l.MTU)
		if v := l.VXLAN; v != nil {
			d += fmt.Sprintf(", VNI %d, UDP %d, local %s", v.VNI, v.Port, v.Local)
		}
		out = append(out, d)
	}
	return strings.Join(out, "; ")
}

// tunnel describes how plane p's packets travel, for messages about a
// peer that does not answer.
func (s *state) tunnel(p *plane) string {
	for _, name := range p.be.Devices() {
		if l, err := s.o.Kernel.LinkByName(name); err == nil && l.VXLAN != nil {
			return fmt.Sprintf("VXLAN (UDP %d)", l.VXLAN.Port)
		}
	}
	return "the tunnel"
}

// mtu is the MTU pods must have: the smallest of the planes', as flanneld
// writes it to subnet.env; 0 when unknown.
func (s *state) mtu() int {
	m := 0
	for _, p := range s.planes {
		if p.be == nil {
			continue
		}
		if v := p.be.MTU(); m == 0 || v < m {
			m = v
		}
	}
	return m
}
