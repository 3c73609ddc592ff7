//go:build e2e

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twill-net/twill/lab/trace/path"
)

// traceLab runs `twill lab trace --json` on lab c (the command the tests
// check end to end) and returns the path; a path that breaks exits 1 after
// printing it, which is not an error here.
func traceLab(ctx context.Context, t *testing.T, c *Cluster, args ...string) *path.Path {
	t.Helper()
	argv := append([]string{"lab", "trace", "--name", c.Name, "--json"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.RepoRoot, "bin", "twill"), argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var p path.Path
	if jerr := json.Unmarshal(stdout.Bytes(), &p); jerr != nil {
		t.Fatalf("twill %s: %v, output not a path (%v):\n%s\n%s", strings.Join(argv, " "), err, jerr, stdout.String(), stderr.String())
	}
	if (err != nil) != (p.Break != nil) {
		t.Errorf("twill %s: exit error %v, but break %+v; stderr:\n%s", strings.Join(argv, " "), err, p.Break, stderr.String())
	}
	var table bytes.Buffer
	_ = p.WriteTable(&table)
	t.Logf("twill lab trace %s:\n%s", strings.Join(args, " "), table.String())
	return &p
}

// wantHop is a hop a trace must have: in place, on iface, in or out, and
// seen by its capture.
type wantHop struct {
	dir    path.Direction
	place  string
	iface  string
	in     bool
	action string
}

// checkHops fails unless p has the hops of want in that order (others may
// come between), each seen by its capture.
func checkHops(t *testing.T, p *path.Path, want []wantHop) {
	t.Helper()
	i := 0
	for _, h := range p.Hops {
		if i == len(want) {
			break
		}
		w := want[i]
		if h.Dir == w.dir && h.Place.Name == w.place && h.Interface == w.iface && h.In == w.in && strings.Contains(h.Action, w.action) {
			if !h.Proven() {
				t.Errorf("hop %s %s %s: no capture saw the probe", w.dir, w.place, w.iface)
			}
			i++
		}
	}
	if i < len(want) {
		var got []string
		for _, h := range p.Hops {
			got = append(got, fmt.Sprintf("%s %s %s in=%v %q", h.Dir, h.Place.Name, h.Interface, h.In, h.Action))
		}
		t.Errorf("trace lacks hop %+v (and those after it); hops:\n%s", want[i], strings.Join(got, "\n"))
	}
}

// hopAt returns the first hop of direction d in place on iface.
func hopAt(p *path.Path, d path.Direction, place, iface string, in bool) *path.Hop {
	for i, h := range p.Hops {
		if h.Dir == d && h.Place.Name == place && h.Interface == iface && h.In == in {
			return &p.Hops[i]
		}
	}
	return nil
}

// testTrace traces in the DirectRouting lab: pod → pod across the routed
// subnet (VXLAN), pod → pod on the node's own subnet (a plain next hop, as
// host-gw routes), pod → internet (masqueraded), and with a deleted FDB
// entry while flanneld is stopped, where the trace must stop.
func testTrace(ctx context.Context, t *testing.T, c *Cluster, pods map[string]labPod) {
	cp, worker, worker2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	src, near, far := pods[cp.Name], pods[worker.Name], pods[worker2.Name]
	srcName, nearName, farName := "default/"+src.name, "default/"+near.name, "default/"+far.name
	under, inet := c.Name+"-underlay", c.Name+"-internet"

	t.Run("vxlan", func(t *testing.T) {
		p := traceLab(ctx, t, c, src.name, far.name)
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		checkHops(t, p, []wantHop{
			{path.Request, srcName, "eth0", false, "sent: " + far.ip.String() + " via 10.244."},
			{path.Request, cp.Name, "cni0", true, "route lookup: " + far.ip.String() + " via "},
			{path.Request, cp.Name, "flannel.1", false, "encapsulated by flannel.1"},
			{path.Request, cp.Name, "eth0", false, "outer packet sent: " + worker2.IP.String() + " via 172.18.0.1 dev eth0"},
			{path.Request, under, "br0", true, "outer packet arrives at the underlay's gateway"},
			{path.Request, under, "br1", false, "outer packet routed"},
			{path.Request, worker2.Name, "eth0", true, "decapsulated (VNI 1)"},
			{path.Request, worker2.Name, "flannel.1", true, "dev cni0"},
			{path.Request, worker2.Name, "cni0", false, "sent: " + far.ip.String() + " dev cni0"},
			{path.Request, farName, "eth0", true, "delivered"},
			{path.Reply, farName, "eth0", false, "sent"},
			{path.Reply, worker2.Name, "flannel.1", false, "encapsulated"},
			{path.Reply, cp.Name, "eth0", true, "decapsulated"},
			{path.Reply, srcName, "eth0", true, "delivered"},
		})
		fl := hopAt(p, path.Request, cp.Name, "flannel.1", false)
		if fl == nil || fl.Adds == nil || fl.Adds.Src != cp.IP.String() || fl.Adds.Dst != worker2.IP.String() || fl.Adds.Port != 8472 || fl.Adds.VNI != 1 {
			t.Errorf("flannel.1 hop's outer header: %+v", fl)
		} else if !strings.Contains(evidenceText(fl), "dst "+worker2.IP.String()) {
			t.Errorf("flannel.1 hop lacks the FDB entry to %s: %s", worker2.IP, evidenceText(fl))
		}
		// The capture on the wire: outer addresses, UDP 8472, VNI 1, the
		// pods' addresses inside.
		wire := hopAt(p, path.Request, cp.Name, "eth0", false)
		if wire == nil || !wire.Proven() {
			t.Fatalf("no capture on %s's eth0", cp.Name)
		}
		want := []string{"IP " + cp.IP.String() + ".", " > " + worker2.IP.String() + ".8472: ", "instance 1", "IP " + src.ip.String() + " > " + far.ip.String() + ": ICMP echo request"}
		for _, w := range want {
			if !strings.Contains(wire.Seen[0], w) {
				t.Errorf("capture on %s's eth0 lacks %q: %s", cp.Name, w, wire.Seen[0])
			}
		}
	})

	t.Run("node to pod over vxlan", func(t *testing.T) {
		// A node sends into the tunnel from flannel.1's address, the one
		// its kernel picks for the route: the trace must follow that
		// source, not the node's eth0 address.
		p := traceLab(ctx, t, c, cp.Name, far.name)
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		if !strings.HasPrefix(p.SrcIP, "10.244.") || !strings.HasSuffix(p.SrcIP, ".0") {
			t.Errorf("source %s, want %s's flannel.1 address", p.SrcIP, cp.Name)
		}
		checkHops(t, p, []wantHop{
			{path.Request, cp.Name, "flannel.1", false, "encapsulated by flannel.1"},
			{path.Request, worker2.Name, "eth0", true, "decapsulated (VNI 1)"},
			{path.Request, farName, "eth0", true, "delivered"},
			{path.Reply, cp.Name, "flannel.1", true, "delivered"},
		})
	})

	t.Run("plain next hop", func(t *testing.T) {
		// DirectRouting routes a peer on the node's own subnet as host-gw
		// does: to the peer node's address, no tunnel.
		p := traceLab(ctx, t, c, src.name, near.ip.String(), "--proto", "tcp", "--port", "7")
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		checkHops(t, p, []wantHop{
			{path.Request, srcName, "eth0", false, "sent"},
			{path.Request, cp.Name, "cni0", true, "via " + worker.IP.String() + " dev eth0"},
			{path.Request, cp.Name, "eth0", false, "via " + worker.IP.String() + " dev eth0"},
			{path.Request, under, "br0", true, "switched"},
			{path.Request, worker.Name, "eth0", true, "dev cni0"},
			{path.Request, nearName, "eth0", true, "delivered"},
			// Port 7 is closed: the reply is the pod's RST.
			{path.Reply, nearName, "eth0", false, "sent"},
			{path.Reply, srcName, "eth0", true, "delivered"},
		})
		for _, h := range p.Hops {
			if h.Tunnel || h.Outer != nil {
				t.Errorf("hop %s %s is in a tunnel on a plainly routed path", h.Place.Name, h.Interface)
			}
		}
	})

	t.Run("internet", func(t *testing.T) {
		p := traceLab(ctx, t, c, src.name, "internet")
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		out := hopAt(p, path.Request, cp.Name, "eth0", false)
		if out == nil || !strings.Contains(out.NAT, "masquerade: source "+src.ip.String()+" → "+cp.IP.String()) || !strings.Contains(evidenceText(out), "dst="+cp.IP.String()) {
			t.Fatalf("no masquerade with its conntrack entry on %s's eth0: %+v", cp.Name, out)
		}
		if !out.Proven() || !strings.Contains(out.Seen[0], "IP "+cp.IP.String()+" > "+InternetIP.String()) {
			t.Errorf("the capture on %s's eth0 does not show the translated source: %v", cp.Name, out.Seen)
		}
		checkHops(t, p, []wantHop{
			{path.Request, under, "br0", true, "route lookup"},
			{path.Request, under, "inet0", false, "sent"},
			{path.Request, inet, "eth0", true, "delivered"},
			{path.Reply, inet, "eth0", false, "sent"},
			{path.Reply, cp.Name, "eth0", true, "route lookup"},
			{path.Reply, srcName, "eth0", true, "delivered"},
		})
		if in := hopAt(p, path.Request, inet, "eth0", true); in == nil || in.Src != cp.IP.String() {
			t.Errorf("the internet host should see %s's address: %+v", cp.Name, in)
		}
		if back := hopAt(p, path.Reply, cp.Name, "eth0", true); back == nil || !strings.Contains(back.NAT, "destination "+cp.IP.String()+" → "+src.ip.String()) {
			t.Errorf("the reply's un-NAT on %s is missing: %+v", cp.Name, back)
		}
	})

	t.Run("missing FDB entry", func(t *testing.T) {
		// flanneld watches its FDB entries and puts a deleted one back at
		// once: stop it first, then delete worker2's entry on cp.
		pid := flanneldPID(ctx, t, c, cp)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
		defer resume()
		facts := overlayFacts(ctx, t, c)
		mac := facts[worker2.Name].mac
		if out, err := c.Exec(ctx, cp.Name, "bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", worker2.IP.String()); err != nil {
			t.Fatalf("deleting the FDB entry: %v\n%s", err, out)
		}
		p := traceLab(ctx, t, c, src.name, far.name)
		resume()
		if p.Break == nil {
			t.Fatal("the trace did not break without the FDB entry")
		}
		h := p.Hops[p.Break.Hop]
		if h.Place.Name != cp.Name || h.Interface != "flannel.1" || !strings.Contains(p.Break.Reason, "no FDB entry for "+mac+" on flannel.1") {
			t.Errorf("break at %s %s: %q; want %s flannel.1 naming the FDB entry of %s", h.Place.Name, h.Interface, p.Break.Reason, cp.Name, mac)
		}
		if !h.Proven() {
			t.Errorf("the probe should reach flannel.1 (where the kernel drops it): %+v", h)
		}
		for _, later := range p.Hops[p.Break.Hop+1:] {
			t.Errorf("hop after the break: %s %s", later.Place.Name, later.Interface)
		}
		// Resumed, flanneld puts the entry back at its next resync; the
		// lab is removed before that matters.
	})
}

func evidenceText(h *path.Hop) string {
	var b strings.Builder
	for _, e := range h.Evidence {
		b.WriteString(e.Command + ": " + e.Output + "\n")
	}
	return b.String()
}

// flanneldPID finds the flanneld process of node n: the one in the node's
// pods cgroup whose command is flanneld.
func flanneldPID(ctx context.Context, t *testing.T, c *Cluster, n Node) int {
	t.Helper()
	var pid int
	_, err := poll(ctx, 30*time.Second, func() error {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return err
		}
		for _, e := range ents {
			p, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
			if strings.TrimSpace(string(comm)) == "flanneld" && strings.Contains(string(cg), podsCgroup(c.Name, n.Name)+"/") {
				pid = p
				return nil
			}
		}
		return fmt.Errorf("no flanneld in %s's pods cgroup", n.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// underlayRoute returns the underlay's route to cidr ("" if none).
func underlayRoute(ctx context.Context, c *Cluster, cidr string) (string, error) {
	out, err := nsRun(ctx, c.UnderlayNetNS(), "ip", "-4", "route", "show", cidr, "proto", "116")
	return strings.TrimSpace(out), err
}

// waitUnderlayRoute waits until the underlay routes cidr via node n.
func waitUnderlayRoute(ctx context.Context, c *Cluster, cidr string, n Node) error {
	_, err := poll(ctx, 30*time.Second, func() error {
		r, err := underlayRoute(ctx, c, cidr)
		if err == nil && !strings.HasPrefix(r, cidr+" via "+n.IP.String()+" ") {
			err = fmt.Errorf("underlay route to %s: %q, want via %s", cidr, r, n.IP)
		}
		return err
	})
	return err
}

// podCIDR is node's podCIDR from the API.
func podCIDR(ctx context.Context, c *Cluster, node string) (string, error) {
	out, err := c.Kubectl(ctx, "get", "node", node, "-o", "jsonpath={.spec.podCIDR}")
	return strings.TrimSpace(out), err
}

// testUnderlayRoutes checks --underlay-routes: the underlay routes every
// node's podCIDR via the node, the VM reaches pods by their addresses and
// the pods answer from them, pods reach the VM unmasqueraded, and a node
// added later gets its route (and loses it when removed).
func testUnderlayRoutes(ctx context.Context, t *testing.T, c *Cluster, pods map[string]labPod) {
	for _, n := range c.Nodes {
		cidr, err := podCIDR(ctx, c, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitUnderlayRoute(ctx, c, cidr, n); err != nil {
			t.Error(err)
		}
	}
	vm := c.Name + "-vm"
	far := pods[c.Nodes[2].Name]
	farName := "default/" + far.name
	t.Run("VM to pod", func(t *testing.T) {
		p := traceLab(ctx, t, c, "vm", far.name)
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		checkHops(t, p, []wantHop{
			{path.Request, vm, "eth0", false, "via 172.18.0.1"},
			{path.Request, c.Name + "-underlay", "br0", true, far.ip.String() + " via " + c.Nodes[2].IP.String()},
			{path.Request, farName, "eth0", true, "delivered"},
			{path.Reply, farName, "eth0", false, "sent"},
			{path.Reply, vm, "eth0", true, "delivered"},
		})
		if h := hopAt(p, path.Request, farName, "eth0", true); h == nil || h.Src != VMIP.String() {
			t.Errorf("the pod should see the VM's own address: %+v", h)
		}
		if h := hopAt(p, path.Reply, vm, "eth0", true); h == nil || h.Src != far.ip.String() || !h.Proven() {
			t.Errorf("the VM should get the reply from the pod's address %s: %+v", far.ip, h)
		}
	})
	t.Run("pod to VM", func(t *testing.T) {
		src := pods[c.Nodes[1].Name]
		p := traceLab(ctx, t, c, src.name, "vm")
		if p.Break != nil {
			t.Fatalf("path breaks: %+v", p.Break)
		}
		h := hopAt(p, path.Request, vm, "eth0", true)
		if h == nil || h.Src != src.ip.String() || !h.Proven() {
			t.Errorf("the VM should see the pod's own address %s (its range is in NoMasqueradeCIDRs): %+v", src.ip, h)
		}
		for _, h := range p.Hops {
			if h.NAT != "" {
				t.Errorf("%s %s translates: %s", h.Place.Name, h.Interface, h.NAT)
			}
		}
	})
	t.Run("a node added later", func(t *testing.T) {
		n, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cidr, err := podCIDR(ctx, c, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitUnderlayRoute(ctx, c, cidr, n); err != nil {
			t.Error(err)
		}
		if err := c.RemoveNode(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := poll(ctx, 30*time.Second, func() error {
			r, err := underlayRoute(ctx, c, cidr)
			if err == nil && r != "" {
				err = fmt.Errorf("the removed node's route stays: %q", r)
			}
			return err
		}); err != nil {
			t.Error(err)
		}
	})
}
