package trace

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/trace/path"
)

// place is one network namespace of the lab that commands run in.
type place struct {
	path.Place
	// command makes a command running argv in the namespace.
	command func(ctx context.Context, argv ...string) *exec.Cmd
	addrs   []addr
}

func (p *place) run(ctx context.Context, argv ...string) (string, error) {
	out, err := p.command(ctx, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), p, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (p *place) owns(ip string) bool {
	for _, a := range p.addrs {
		if a.IP.String() == ip {
			return true
		}
	}
	return false
}

// routeGet asks the namespace's kernel how it routes dst (from src,
// arriving on iif when set: the lookup of a forwarded packet).
func (p *place) routeGet(ctx context.Context, dst, src, iif string) (route, path.Evidence, error) {
	argv := []string{"ip", "-j", "route", "get", dst}
	if iif != "" {
		argv = append(argv, "from", src, "iif", iif)
	}
	out, err := p.run(ctx, argv...)
	text := strings.Join(argv[0:1], "") + " route get " + strings.Join(argv[4:], " ")
	if err != nil {
		msg := strings.TrimSpace(out)
		return route{}, path.Evidence{Command: text, Output: msg}, fmt.Errorf("%s", msg)
	}
	r, err := parseRouteGet(out)
	if err != nil {
		return route{}, path.Evidence{Command: text, Output: out}, err
	}
	return r, path.Evidence{Command: text, Output: r.describe()}, nil
}

func (p *place) neigh(ctx context.Context, ip, dev string) ([]neigh, path.Evidence, error) {
	out, err := p.run(ctx, "ip", "-j", "neigh", "show", ip, "dev", dev)
	ev := path.Evidence{Command: "ip neigh show " + ip + " dev " + dev}
	if err != nil {
		ev.Output = out
		return nil, ev, err
	}
	ns, err := parseNeigh(out)
	ev.Output = "(none)"
	if len(ns) > 0 {
		ev.Output = fmt.Sprintf("%s lladdr %s %s", ns[0].Dst, ns[0].LLAddr, strings.Join(ns[0].State, ","))
	}
	return ns, ev, err
}

func (p *place) fdb(ctx context.Context, dev, mac string) ([]fdb, path.Evidence, error) {
	out, err := p.run(ctx, "bridge", "-j", "fdb", "show", "dev", dev)
	ev := path.Evidence{Command: "bridge fdb show dev " + dev + " | grep " + mac}
	if err != nil {
		ev.Output = out
		return nil, ev, err
	}
	fs, err := parseFDB(out)
	ev.Output = "(none)"
	if d := fdbDst(fs, mac); d != "" {
		ev.Output = mac + " dst " + d
	}
	return fs, ev, err
}

func (p *place) link(ctx context.Context, dev string) (link, path.Evidence, error) {
	out, err := p.run(ctx, "ip", "-d", "-j", "link", "show", "dev", dev)
	ev := path.Evidence{Command: "ip -d link show dev " + dev}
	if err != nil {
		return link{}, ev, err
	}
	l, err := parseLink(out)
	if l.Kind == "vxlan" {
		ev.Output = fmt.Sprintf("vxlan id %d local %s dstport %d mtu %d", l.VNI, l.Local, l.Port, l.MTU)
	} else {
		ev.Output = fmt.Sprintf("%s mtu %d", l.Kind, l.MTU)
	}
	return l, ev, err
}

// vxlanDev returns the namespace's VXLAN device listening on port.
func (p *place) vxlanDev(ctx context.Context, port int) (string, error) {
	out, err := p.run(ctx, "ip", "-d", "-j", "link", "show", "type", "vxlan")
	if err != nil {
		return "", err
	}
	ls, err := parseLinks(out)
	if err != nil {
		return "", err
	}
	for _, l := range ls {
		if l.Port == port {
			return l.Name, nil
		}
	}
	return "", fmt.Errorf("no VXLAN device on udp/%d: the outer packet would be dropped", port)
}

// conntrackSNAT returns the conntrack entry of src → dst and the reply
// tuple's destination: the address the source was translated to.
func (p *place) conntrackSNAT(ctx context.Context, proto, src, dst string) (line, to string) {
	out, err := p.run(ctx, "conntrack", "-L", "-p", proto, "-s", src, "-d", dst)
	if err != nil {
		return "", ""
	}
	return conntrackReplyDst(out, src, dst)
}

// owner is the namespace holding an address, and the device it is on.
type owner struct {
	place *place
	dev   string
}

// book knows every namespace of the lab and their addresses.
type book struct {
	c     *lab.Cluster
	nodes []*place
	under *place
	inet  *place
	// vm is the lab's VM, nil in a lab made before it had one.
	vm     *place
	pods   map[string]podRef // by ns/name
	podIPs map[string]string // IP → ns/name
	made   map[string]*place // pods whose namespace was found
}

type podRef struct {
	ns, name, node, ip string
}

func nsCommand(netns string) func(context.Context, ...string) *exec.Cmd {
	return func(ctx context.Context, argv ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, argv...)...)
	}
}

func newBook(ctx context.Context, c *lab.Cluster) (*book, error) {
	b := &book{c: c, pods: map[string]podRef{}, podIPs: map[string]string{}, made: map[string]*place{}}
	for _, n := range c.Nodes {
		name := n.Name
		b.nodes = append(b.nodes, &place{Place: path.Place{Kind: path.Node, Name: name},
			command: func(ctx context.Context, argv ...string) *exec.Cmd {
				cmd, _ := c.ExecCmd(ctx, name, argv...)
				return cmd
			}})
	}
	b.under = &place{Place: path.Place{Kind: path.Underlay, Name: c.Name + "-underlay"}, command: nsCommand(c.UnderlayNetNS())}
	b.inet = &place{Place: path.Place{Kind: path.Internet, Name: c.Name + "-internet"}, command: nsCommand(c.InternetNetNS())}
	if _, err := os.Stat(c.VMNetNS()); err == nil {
		b.vm = &place{Place: path.Place{Kind: path.VM, Name: c.Name + "-vm"}, command: nsCommand(c.VMNetNS())}
	}
	for _, p := range b.fixed() {
		if err := p.readAddrs(ctx); err != nil {
			return nil, err
		}
	}
	out, err := c.Kubectl(ctx, "get", "pods", "-A", "-o", "json")
	if err != nil {
		return nil, err
	}
	l, err := parsePods(out)
	if err != nil {
		return nil, err
	}
	for _, it := range l.Items {
		if it.Spec.HostNetwork || it.Status.PodIP == "" {
			continue
		}
		r := podRef{ns: it.Metadata.Namespace, name: it.Metadata.Name, node: it.Spec.NodeName, ip: it.Status.PodIP}
		b.pods[r.ns+"/"+r.name] = r
		b.podIPs[r.ip] = r.ns + "/" + r.name
	}
	return b, nil
}

// fixed returns the namespaces that are not pods.
func (b *book) fixed() []*place {
	ps := append(append([]*place{}, b.nodes...), b.under, b.inet)
	if b.vm != nil {
		ps = append(ps, b.vm)
	}
	return ps
}

func (p *place) readAddrs(ctx context.Context) error {
	out, err := p.run(ctx, "ip", "-j", "-4", "addr", "show")
	if err != nil {
		return err
	}
	p.addrs, err = parseAddrs(out)
	return err
}

// resolve finds the namespace and address an endpoint names; the place is
// nil for an address outside the lab, the address nil for a node (its
// kernel picks the source by route).
func (b *book) resolve(ctx context.Context, s string) (*place, net.IP, error) {
	switch {
	case s == "":
		return nil, nil, fmt.Errorf("empty endpoint: name a pod (ns/name), a node, an IPv4 address or internet")
	case s == "internet":
		return b.inet, lab.InternetIP, nil
	case s == "vm" || b.vm != nil && s == b.vm.Name:
		if b.vm == nil {
			return nil, nil, fmt.Errorf("lab %s has no VM: bring it up again with this version of twill", b.c.Name)
		}
		return b.vm, lab.VMIP, nil
	}
	if ip := net.ParseIP(s); ip != nil {
		if ip.To4() == nil {
			return nil, nil, fmt.Errorf("%s: trace follows IPv4 only", s)
		}
		o := b.owner(ctx, ip.String())
		if o == nil {
			return nil, ip, nil
		}
		return o.place, ip, nil
	}
	for _, n := range b.nodes {
		if n.Name == s {
			if len(b.c.Nodes) > 0 {
				nd, _ := b.c.NodeByName(s)
				return n, nd.IP, nil
			}
		}
	}
	key := s
	if !strings.Contains(s, "/") {
		key = "default/" + s
		if _, ok := b.pods[key]; !ok {
			var found []string
			for k, r := range b.pods {
				if r.name == s {
					found = append(found, k)
				}
			}
			switch len(found) {
			case 1:
				key = found[0]
			case 0:
				return nil, nil, fmt.Errorf("%q is no pod (with an IP, not hostNetwork), node, IPv4 address or internet in lab %s", s, b.c.Name)
			default:
				return nil, nil, fmt.Errorf("pod name %q is in several namespaces (%s): say ns/name", s, strings.Join(found, ", "))
			}
		}
	}
	r, ok := b.pods[key]
	if !ok {
		return nil, nil, fmt.Errorf("no pod %s with an IP (hostNetwork pods are their node: name the node) in lab %s", key, b.c.Name)
	}
	p, err := b.pod(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	return p, net.ParseIP(r.ip), nil
}

// pod returns the namespace of pod r, found by its address among the
// network namespaces containerd made on its node.
func (b *book) pod(ctx context.Context, r podRef) (*place, error) {
	if p, ok := b.made[r.ns+"/"+r.name]; ok {
		return p, nil
	}
	node := b.node(r.node)
	if node == nil {
		return nil, fmt.Errorf("pod %s/%s runs on %q, no node of lab %s", r.ns, r.name, r.node, b.c.Name)
	}
	out, err := node.run(ctx, "sh", "-c", `for f in /run/netns/*; do echo "$f $(nsenter --net="$f" ip -o -4 addr show dev eth0 2>/dev/null)"; done`)
	if err != nil {
		return nil, err
	}
	netns := ""
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, " inet "+r.ip+"/") {
			netns = f[0]
		}
	}
	if netns == "" {
		return nil, fmt.Errorf("no network namespace on %s has pod %s/%s's address %s (is the pod running?)", r.node, r.ns, r.name, r.ip)
	}
	nodeCmd := node.command
	p := &place{Place: path.Place{Kind: path.Pod, Name: r.ns + "/" + r.name, Node: r.node},
		command: func(ctx context.Context, argv ...string) *exec.Cmd {
			return nodeCmd(ctx, append([]string{"nsenter", "--net=" + netns, "--"}, argv...)...)
		}}
	if err := p.readAddrs(ctx); err != nil {
		return nil, err
	}
	b.made[r.ns+"/"+r.name] = p
	return p, nil
}

func (b *book) node(name string) *place {
	for _, n := range b.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// owner returns the namespace holding ip and the device it is on, nil if
// none of the lab's namespaces does.
func (b *book) owner(ctx context.Context, ip string) *owner {
	for _, p := range b.fixed() {
		for _, a := range p.addrs {
			if a.IP.String() == ip {
				return &owner{place: p, dev: a.Dev}
			}
		}
	}
	if key, ok := b.podIPs[ip]; ok {
		p, err := b.pod(ctx, b.pods[key])
		if err == nil {
			return &owner{place: p, dev: "eth0"}
		}
	}
	return nil
}

// switched returns the underlay bridge a frame crosses when it leaves
// place from on dev for the next hop nh on the underlay: nil when dev is
// not a node's link to the underlay.
func (b *book) switched(from *place, dev, nh string) *owner {
	if from.Kind != path.Node && from.Kind != path.VM || dev != "eth0" {
		return nil
	}
	ip := net.ParseIP(nh)
	for _, a := range b.under.addrs {
		if a.Net.Contains(ip) && strings.HasPrefix(a.Dev, "br") {
			return &owner{place: b.under, dev: a.Dev}
		}
	}
	return nil
}

// placeOf returns the namespace of a path.Place the plan made.
func (b *book) placeOf(pl path.Place) *place {
	for _, p := range b.fixed() {
		if p.Place == pl {
			return p
		}
	}
	for _, p := range b.made {
		if p.Place == pl {
			return p
		}
	}
	return nil
}
