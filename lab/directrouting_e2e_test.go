//go:build e2e

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/trace/path"
)

// TestDirectRoutingMixedRoutes brings up a 3-node lab whose last node sits
// on a second, routed subnet, with the vxlan backend's DirectRouting on.
// It checks the layout (addresses, gateways, no route out of the lab), then
// the kernel state flanneld leaves on every node: a peer on the node's own
// subnet is routed plainly via eth0 with no neighbour or FDB entry, a peer
// on the other subnet through flannel.1 with both. Pods on every pair of
// nodes then ping each other, and a capture on the control plane's eth0
// shows which packets leave plain and which as VXLAN.
func TestDirectRoutingMixedRoutes(t *testing.T) {
	name := e2eName("direct")
	hostLinks := linkNames(t)
	ctx, c := upLab(t, Options{Name: name, Nodes: 3, CNI: "twill", Backend: "vxlan", DirectRouting: true, RoutedNodes: 1, UnderlayRoutes: true}, 25*time.Minute)
	cp, worker, worker2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	t.Run("layout", func(t *testing.T) {
		for _, want := range []struct {
			n      Node
			ip, gw string
			routed bool
		}{
			{cp, "172.18.0.2", "172.18.0.1", false},
			{worker, "172.18.0.3", "172.18.0.1", false},
			{worker2, "172.19.0.4", "172.19.0.1", true},
		} {
			if want.n.IP.String() != want.ip || want.n.Routed != want.routed {
				t.Errorf("%s: IP %s, routed %v; want %s, %v", want.n.Name, want.n.IP, want.n.Routed, want.ip, want.routed)
			}
			out, err := c.Exec(ctx, want.n.Name, "sh", "-c", "ip -4 -o addr show eth0; ip route show default")
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{want.ip + "/16", "default via " + want.gw + " dev eth0"} {
				if !strings.Contains(out, s) {
					t.Errorf("%s lacks %q:\n%s", want.n.Name, s, out)
				}
			}
		}
		// The state file keeps the layout for later commands.
		loaded, err := Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if !loaded.DirectRouting || loaded.RoutedNodes != 1 || len(loaded.Nodes) != 3 || !loaded.Nodes[2].Routed || !loaded.Nodes[2].IP.Equal(worker2.IP) {
			t.Errorf("loaded state: DirectRouting %v, RoutedNodes %d, nodes %+v", loaded.DirectRouting, loaded.RoutedNodes, loaded.Nodes)
		}
		// Every node registered with its own address, and runs its daemons.
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if !s.Ready || s.SubnetEnv == nil {
				t.Errorf("%s: Ready %v, subnet.env %q", s.Name, s.Ready, s.SubnetEnvText)
			}
			for d, up := range s.Running {
				if !up {
					t.Errorf("%s: %s not running", s.Name, d)
				}
			}
		}
		out, err := c.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			if !strings.Contains(out, n.Name+" "+n.IP.String()+"\n") {
				t.Errorf("node %s does not have InternalIP %s:\n%s", n.Name, n.IP, out)
			}
		}
		// Both subnets reach each other and the "internet"; the underlay
		// has routes to its own networks and (UnderlayRoutes) the
		// podCIDRs only, and the host is untouched.
		for _, p := range [][2]string{{worker2.Name, cp.IP.String()}, {worker2.Name, InternetIP.String()}, {cp.Name, worker2.IP.String()}, {worker.Name, InternetIP.String()}} {
			if out, err := c.Exec(ctx, p[0], "ping", "-n", "-c", "1", "-W", "5", p[1]); err != nil {
				t.Errorf("%s cannot reach %s: %v\n%s", p[0], p[1], err, out)
			}
		}
		out, err = nsRun(ctx, c.UnderlayNetNS(), "ip", "-4", "route", "show", "table", "all")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !regexp.MustCompile(`^(172\.18\.0\.0/16 dev br0|172\.19\.0\.0/16 dev br1|203\.0\.113\.0/24 dev inet0) proto kernel |^(local|broadcast) |^10\.244\.\d+\.0/24 via 172\.1[89]\.0\.\d+ dev br[01] proto 116 `).MatchString(l) {
				t.Errorf("underlay route %q: want only the connected routes of its three networks and the podCIDRs'", l)
			}
		}
		if names := linkNames(t); strings.Join(names, ",") != strings.Join(hostLinks, ",") {
			t.Errorf("host links changed: before %v, now %v", hostLinks, names)
		}
	})

	facts := overlayFacts(ctx, t, c)
	t.Run("kernel state", func(t *testing.T) {
		for _, n := range c.Nodes {
			var want peerState
			for _, p := range c.Nodes {
				if p.Name != n.Name {
					want.add(facts[p.Name], p.Routed == n.Routed)
				}
			}
			took, err := poll(ctx, time.Minute, func() error {
				got, err := readPeerState(ctx, c, n.Name, facts)
				if err != nil {
					return err
				}
				if d := want.diff(got); d != "" {
					return fmt.Errorf("%s", d)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%s (%s): %v", n.Name, n.IP, err)
				continue
			}
			t.Logf("%s (%s): %d routes, %d neighbour and %d FDB entries as expected (after %v)", n.Name, n.IP, len(want.routes), len(want.neighs), len(want.fdb), took.Round(time.Millisecond))
		}
	})

	pods := runLabPods(ctx, t, c)
	t.Run("pods ping each other", func(t *testing.T) {
		for _, a := range c.Nodes {
			for _, b := range c.Nodes {
				if a.Name == b.Name {
					continue
				}
				if _, err := poll(ctx, 30*time.Second, func() error { return pingFromPod(ctx, c, pods[a.Name].name, pods[b.Name].ip.String()) }); err != nil {
					t.Errorf("pod on %s → pod on %s (%s): %v", a.Name, b.Name, pods[b.Name].ip, err)
				}
			}
		}
		if err := pingFromPod(ctx, c, pods[worker2.Name].name, InternetIP.String()); err != nil {
			t.Errorf("pod on the routed node → the internet: %v", err)
		}
	})

	t.Run("on the wire", func(t *testing.T) {
		src := pods[cp.Name]
		ts := `(?m)^\d\d:\d\d:\d\d\.\d+ IP `
		// To worker: the pod's own packet on eth0, no VXLAN.
		dst := pods[worker.Name]
		out := captureWhilePinging(ctx, t, c, cp.Name, src, dst.ip, wireFilter(src.ip, dst.ip, worker.IP))
		if n := len(regexp.MustCompile(ts+regexp.QuoteMeta(src.ip.String()+" > "+dst.ip.String()+": ICMP echo request")).FindAllString(out, -1)); n < 3 || strings.Contains(out, ".8472: ") {
			t.Errorf("to %s: want 3 plain ICMP packets %s → %s and no VXLAN on %s's eth0, saw %d:\n%s", worker.Name, src.ip, dst.ip, cp.Name, n, out)
		}
		// To worker2: VXLAN to its node address, the pod's packet inside.
		dst = pods[worker2.Name]
		out = captureWhilePinging(ctx, t, c, cp.Name, src, dst.ip, wireFilter(src.ip, dst.ip, worker2.IP))
		outer := regexp.MustCompile(ts + regexp.QuoteMeta(cp.IP.String()) + `\.\d+ > ` + regexp.QuoteMeta(worker2.IP.String()) + `\.8472: `)
		plain := regexp.MustCompile(ts + regexp.QuoteMeta(src.ip.String()+" > "))
		if n := len(outer.FindAllString(out, -1)); n < 3 || plain.MatchString(out) || !strings.Contains(out, "IP "+src.ip.String()+" > "+dst.ip.String()+": ICMP echo request") {
			t.Errorf("to %s: want 3 VXLAN packets %s → %s:8472 carrying ICMP %s → %s, and no plain ones, on %s's eth0; saw %d:\n%s", worker2.Name, cp.IP, worker2.IP, src.ip, dst.ip, cp.Name, n, out)
		}
	})

	t.Run("underlay routes", func(t *testing.T) { testUnderlayRoutes(ctx, t, c, pods) })
	// It stops flanneld on a node and deletes an FDB entry.
	t.Run("trace", func(t *testing.T) { testTrace(ctx, t, c, pods) })
	// Last: it moves the lab to host-gw.
	t.Run("host-gw across the routed subnet", func(t *testing.T) { testHostGWRouted(ctx, t, c, pods) })
}

// testHostGWRouted moves the lab to host-gw (with "UnderlayRoutes": true,
// as --underlay-routes sets it): a node keeps a route via the peer's
// address for the peers on its own subnet and none for the others, whose
// pods it reaches through its default route, the underlay's router
// knowing every podCIDR as a VPC's route table does. Pods on the routed
// node and on the first subnet then ping each other with no VXLAN on the
// wire, and traces show the plain next hops.
func testHostGWRouted(ctx context.Context, t *testing.T, c *Cluster, pods map[string]labPod) {
	cp, worker, worker2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	cidrs := map[string]string{}
	for _, n := range c.Nodes {
		cidr, err := podCIDR(ctx, c, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		cidrs[n.Name] = cidr
	}
	if err := c.ApplyManifest(ctx, "host-gw"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		// Every route of the node into the pod network but its own
		// podCIDR's: exactly one via each peer on its subnet.
		var want []string
		for _, p := range c.Nodes {
			if p.Name != n.Name && p.Routed == n.Routed {
				want = append(want, cidrs[p.Name]+" via "+p.IP.String()+" dev eth0")
			}
		}
		sort.Strings(want)
		if _, err := poll(ctx, time.Minute, func() error {
			out, err := c.Exec(ctx, n.Name, "sh", "-c", "ip -4 route show; ip -o link show flannel.1 2>/dev/null || true")
			if err != nil {
				return err
			}
			if strings.Contains(out, "flannel.1") {
				return fmt.Errorf("flannel.1 is still there:\n%s", out)
			}
			var got []string
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "10.244.") && !strings.HasPrefix(l, cidrs[n.Name]+" ") {
					got = append(got, strings.TrimSpace(l))
				}
			}
			sort.Strings(got)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				return fmt.Errorf("routes into the pod network:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			return nil
		}); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
	}
	// "UnderlayRoutes": true: to host-gw a peer off the segment is no
	// problem to report. (While the DaemonSet rolls, a node still on
	// vxlan reports its peers already on host-gw: another message.)
	out, err := c.Kubectl(ctx, "get", "events", "-A", "--field-selector", "reason=PeerUnreachable", "-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`)
	if err != nil || strings.Contains(out, "L2 segment") {
		t.Errorf("host-gw with underlay routes reports peers off the segment (%v):\n%s", err, out)
	}
	for _, pair := range [][2]Node{{worker2, cp}, {worker2, worker}, {cp, worker2}, {worker, worker2}, {cp, worker}} {
		a, b := pair[0], pair[1]
		if _, err := poll(ctx, 30*time.Second, func() error { return pingFromPod(ctx, c, pods[a.Name].name, pods[b.Name].ip.String()) }); err != nil {
			t.Errorf("pod on %s → pod on %s (%s) over host-gw: %v", a.Name, b.Name, pods[b.Name].ip, err)
		}
	}
	src, dst := pods[worker2.Name], pods[cp.Name]
	out = captureWhilePinging(ctx, t, c, worker2.Name, src, dst.ip, wireFilter(src.ip, dst.ip, cp.IP))
	plain := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d+ IP ` + regexp.QuoteMeta(src.ip.String()+" > "+dst.ip.String()+": ICMP echo request"))
	if n := len(plain.FindAllString(out, -1)); n < 3 || strings.Contains(out, ".8472: ") {
		t.Errorf("want 3 plain ICMP packets %s → %s and no VXLAN on %s's eth0, saw %d:\n%s", src.ip, dst.ip, worker2.Name, n, out)
	}
	under := c.Name + "-underlay"
	noTunnel := func(t *testing.T, p *path.Path) {
		t.Helper()
		for _, h := range p.Hops {
			if h.Tunnel || h.Outer != nil || h.Adds != nil {
				t.Errorf("hop %s %s is in a tunnel on host-gw", h.Place.Name, h.Interface)
			}
		}
	}
	t.Run("trace on the node's subnet", func(t *testing.T) {
		a, b := pods[cp.Name], pods[worker.Name]
		p := traceLab(ctx, t, c, a.name, b.name)
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		checkHops(t, p, []wantHop{
			{path.Request, "default/" + a.name, "eth0", false, "sent"},
			{path.Request, cp.Name, "cni0", true, "route lookup: " + b.ip.String() + " via " + worker.IP.String() + " dev eth0"},
			{path.Request, cp.Name, "eth0", false, "sent: " + b.ip.String() + " via " + worker.IP.String() + " dev eth0"},
			{path.Request, under, "br0", true, "switched"},
			{path.Request, worker.Name, "eth0", true, "dev cni0"},
			{path.Request, "default/" + b.name, "eth0", true, "delivered"},
			{path.Reply, "default/" + b.name, "eth0", false, "sent"},
			{path.Reply, worker.Name, "eth0", false, "via " + cp.IP.String() + " dev eth0"},
			{path.Reply, "default/" + a.name, "eth0", true, "delivered"},
		})
		noTunnel(t, p)
		if h := hopAt(p, path.Request, cp.Name, "eth0", false); h == nil || !h.Proven() || !strings.Contains(h.Seen[0], "IP "+a.ip.String()+" > "+b.ip.String()+": ICMP echo request") {
			t.Errorf("the capture on %s's eth0 should show the pods' own packet: %+v", cp.Name, h)
		}
	})
	t.Run("trace across the routed subnet", func(t *testing.T) {
		p := traceLab(ctx, t, c, src.name, dst.name)
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		checkHops(t, p, []wantHop{
			{path.Request, "default/" + src.name, "eth0", false, "sent"},
			{path.Request, worker2.Name, "cni0", true, "route lookup: " + dst.ip.String() + " via 172.19.0.1 dev eth0"},
			{path.Request, worker2.Name, "eth0", false, "sent: " + dst.ip.String() + " via 172.19.0.1 dev eth0"},
			{path.Request, under, "br1", true, "route lookup: " + dst.ip.String() + " via " + cp.IP.String() + " dev br0"},
			{path.Request, under, "br0", false, "sent"},
			{path.Request, cp.Name, "eth0", true, "dev cni0"},
			{path.Request, "default/" + dst.name, "eth0", true, "delivered"},
			{path.Reply, "default/" + dst.name, "eth0", false, "sent"},
			{path.Reply, cp.Name, "eth0", false, "via 172.18.0.1 dev eth0"},
			{path.Reply, under, "br0", true, "via " + worker2.IP.String() + " dev br1"},
			{path.Reply, "default/" + src.name, "eth0", true, "delivered"},
		})
		noTunnel(t, p)
		if h := hopAt(p, path.Request, under, "br1", true); h == nil || !strings.Contains(evidenceText(h), dst.ip.String()+" via "+cp.IP.String()) {
			t.Errorf("the underlay's hop should show its route to the pod via %s: %+v", cp.Name, h)
		}
	})
	t.Run("dropped by a rule", func(t *testing.T) {
		// A DROP rule in the sending node's FORWARD chain: the trace must
		// stop on its eth0 and name the rule by its counter, not guess
		// between a rule and the MTU.
		a, b := pods[cp.Name], pods[worker.Name]
		rule := []string{"FORWARD", "-s", a.ip.String(), "-d", b.ip.String(), "-j", "DROP"}
		if out, err := c.Exec(ctx, cp.Name, append([]string{"iptables", "-I"}, rule...)...); err != nil {
			t.Fatalf("adding the rule: %v\n%s", err, out)
		}
		defer func() {
			if out, err := c.Exec(ctx, cp.Name, append([]string{"iptables", "-D"}, rule...)...); err != nil {
				t.Errorf("removing the rule: %v\n%s", err, out)
			}
		}()
		p := traceLab(ctx, t, c, a.name, b.name)
		if p.Break == nil {
			t.Fatal("the path did not break at the DROP rule")
		}
		h := p.Hops[p.Break.Hop]
		want := "ip saddr " + a.ip.String() + " ip daddr " + b.ip.String() + " drop"
		if h.Place.Name != cp.Name || h.Interface != "eth0" || h.In || !strings.Contains(p.Break.Reason, "dropped by a packet-filter rule") || !strings.Contains(p.Break.Reason, want) || strings.Contains(p.Break.Reason, "MTU?") {
			t.Errorf("break at %s %s: %q; want %s's eth0, naming the rule %q", h.Place.Name, h.Interface, p.Break.Reason, cp.Name, want)
		}
	})
}

// wireFilter matches, on the sending node's eth0, pings from the pod at src
// to the pod at dst, plain or inside VXLAN to the node at dstNode.
func wireFilter(src, dst, dstNode net.IP) string {
	return fmt.Sprintf("(icmp and src host %s and dst host %s) or (udp dst port 8472 and dst host %s)", src, dst, dstNode)
}

// vtep is what a peer's entries are made of.
type vtep struct {
	node    Node
	podCIDR *net.IPNet
	mac     string
}

// overlayFacts reads every node's podCIDR from the API and VTEP MAC from
// its flannel.1 device.
func overlayFacts(ctx context.Context, t *testing.T, c *Cluster) map[string]vtep {
	t.Helper()
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	cidrs := map[string]*net.IPNet{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("node without a podCIDR: %q", l)
		}
		_, n, err := net.ParseCIDR(f[1])
		if err != nil {
			t.Fatalf("node %s podCIDR %q: %v", f[0], f[1], err)
		}
		cidrs[f[0]] = n
	}
	res := map[string]vtep{}
	for _, n := range c.Nodes {
		out, err := c.Exec(ctx, n.Name, "ip", "-j", "link", "show", "flannel.1")
		var links []struct {
			Address string `json:"address"`
		}
		if err != nil || json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 || cidrs[n.Name] == nil {
			t.Fatalf("%s: flannel.1 %v %s, podCIDR %v", n.Name, err, out, cidrs[n.Name])
		}
		res[n.Name] = vtep{node: n, podCIDR: cidrs[n.Name], mac: strings.ToLower(links[0].Address)}
	}
	return res
}

// peerState is a node's routes to its peers' podCIDRs (as `ip route show
// CIDR` prints them), its flannel.1 neighbours ("IP MAC") and FDB entries
// ("MAC dst IP").
type peerState struct {
	routes      map[string]string
	neighs, fdb []string
}

// add records what a node needs for peer p: a plain route via its address
// when direct, else a route through flannel.1 with a neighbour and an FDB
// entry.
func (s *peerState) add(p vtep, direct bool) {
	if s.routes == nil {
		s.routes = map[string]string{}
	}
	gw := p.podCIDR.IP.String()
	if direct {
		s.routes[p.podCIDR.String()] = fmt.Sprintf("%s via %s dev eth0", p.podCIDR, p.node.IP)
		return
	}
	s.routes[p.podCIDR.String()] = fmt.Sprintf("%s via %s dev flannel.1 onlink", p.podCIDR, gw)
	s.neighs = append(s.neighs, gw+" "+p.mac)
	s.fdb = append(s.fdb, p.mac+" dst "+p.node.IP.String())
	sort.Strings(s.neighs)
	sort.Strings(s.fdb)
}

// diff describes how got differs from s, or returns "".
func (s peerState) diff(got peerState) string {
	var d []string
	for cidr, want := range s.routes {
		if got.routes[cidr] != want {
			d = append(d, fmt.Sprintf("route to %s: %q, want %q", cidr, got.routes[cidr], want))
		}
	}
	if strings.Join(got.neighs, ",") != strings.Join(s.neighs, ",") {
		d = append(d, fmt.Sprintf("flannel.1 neighbours %q, want %q", got.neighs, s.neighs))
	}
	if strings.Join(got.fdb, ",") != strings.Join(s.fdb, ",") {
		d = append(d, fmt.Sprintf("flannel.1 FDB %q, want %q", got.fdb, s.fdb))
	}
	return strings.Join(d, "; ")
}

// readPeerState reads node's routes to the other nodes' podCIDRs and its
// flannel.1 neighbour and FDB entries.
func readPeerState(ctx context.Context, c *Cluster, node string, facts map[string]vtep) (peerState, error) {
	st := peerState{routes: map[string]string{}}
	for name, f := range facts {
		if name == node {
			continue
		}
		out, err := c.Exec(ctx, node, "ip", "route", "show", f.podCIDR.String())
		if err != nil {
			return st, fmt.Errorf("ip route show %s: %w: %s", f.podCIDR, err, out)
		}
		st.routes[f.podCIDR.String()] = strings.TrimSpace(out)
	}
	out, err := c.Exec(ctx, node, "ip", "-j", "neigh", "show", "dev", "flannel.1")
	if err != nil {
		return st, fmt.Errorf("ip neigh: %w: %s", err, out)
	}
	var neighs []struct {
		Dst    string `json:"dst"`
		LLAddr string `json:"lladdr"`
	}
	if err := json.Unmarshal([]byte(out), &neighs); err != nil {
		return st, fmt.Errorf("parsing ip -j neigh: %w: %s", err, out)
	}
	for _, n := range neighs {
		st.neighs = append(st.neighs, n.Dst+" "+strings.ToLower(n.LLAddr))
	}
	out, err = c.Exec(ctx, node, "bridge", "-j", "fdb", "show", "dev", "flannel.1")
	if err != nil {
		return st, fmt.Errorf("bridge fdb: %w: %s", err, out)
	}
	var fdb []struct {
		MAC string `json:"mac"`
		Dst string `json:"dst"`
	}
	if err := json.Unmarshal([]byte(out), &fdb); err != nil {
		return st, fmt.Errorf("parsing bridge -j fdb: %w: %s", err, out)
	}
	for _, f := range fdb {
		st.fdb = append(st.fdb, strings.ToLower(f.MAC)+" dst "+f.Dst)
	}
	sort.Strings(st.neighs)
	sort.Strings(st.fdb)
	return st, nil
}

// labPod is a test pod and its address.
type labPod struct {
	name string
	ip   net.IP
}

// runLabPods starts one netshoot pod on every node and waits until they are
// Ready; it returns them by node name.
func runLabPods(ctx context.Context, t *testing.T, c *Cluster) map[string]labPod {
	t.Helper()
	items := []any{}
	for _, n := range c.Nodes {
		items = append(items, map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "net-" + n.Name, "namespace": "default"},
			"spec": map[string]any{
				"nodeSelector":                  map[string]string{"kubernetes.io/hostname": n.Name},
				"tolerations":                   []map[string]string{{"operator": "Exists"}},
				"terminationGracePeriodSeconds": 0,
				"containers": []any{map[string]any{
					"name": "main", "image": images.NetshootRef, "imagePullPolicy": "Never",
					"command": []string{"sleep", "infinity"},
				}},
			},
		})
	}
	manifest, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := c.KubectlCmd(ctx, "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("creating the pods: %v\n%s", err, out)
	}
	if out, err := c.Kubectl(ctx, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=180s"); err != nil {
		pods, _ := c.Kubectl(ctx, "get", "pods", "-o", "wide")
		t.Fatalf("pods not Ready: %v\n%s\n%s", err, out, pods)
	}
	out, err := c.Kubectl(ctx, "get", "pods", "-o", `jsonpath={range .items[*]}{.spec.nodeName} {.metadata.name} {.status.podIP}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]labPod{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && net.ParseIP(f[2]) != nil {
			pods[f[0]] = labPod{name: f[1], ip: net.ParseIP(f[2])}
		}
	}
	for _, n := range c.Nodes {
		if _, ok := pods[n.Name]; !ok {
			t.Fatalf("no pod with an IP on %s:\n%s", n.Name, out)
		}
	}
	return pods
}

// pingFromPod sends three pings from pod to ip and fails unless all are
// answered.
func pingFromPod(ctx context.Context, c *Cluster, pod, ip string) error {
	out, err := c.Kubectl(ctx, "exec", pod, "--", "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", ip)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "3 received") {
		return fmt.Errorf("want 3 replies:\n%s", out)
	}
	return nil
}

// captureWhilePinging runs tcpdump on node's eth0 until it has seen three
// packets matching filter (or 15 seconds pass) while src pings dst, and
// returns what tcpdump printed.
func captureWhilePinging(ctx context.Context, t *testing.T, c *Cluster, node string, src labPod, dst net.IP, filter string) string {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.Exec(ctx, node, "timeout", "15", "tcpdump", "-i", "eth0", "-nn", "-l", "-c", "3", filter)
		done <- result{out, err}
	}()
	// The pings last long enough (several seconds) for tcpdump to open
	// its socket first and see three of them.
	_, _ = c.Kubectl(ctx, "exec", src.name, "--", "ping", "-n", "-c", "30", "-i", "0.2", "-w", "8", dst.String())
	res := <-done
	if res.err != nil && !strings.Contains(res.out, "packets captured") {
		t.Fatalf("tcpdump on %s: %v\n%s", node, res.err, res.out)
	}
	return res.out
}

// poll calls cond every half second until it returns nil, and returns
// cond's last error when timeout passes first; it returns how long it took.
func poll(ctx context.Context, timeout time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("still failing after %v: %w", timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// nsRun runs a command in the network namespace at path.
func nsRun(ctx context.Context, path string, cmd ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path, "--"}, cmd...)...).CombinedOutput()
	return string(out), err
}
