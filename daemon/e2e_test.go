//go:build e2e

package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

const netConf = `{"Network": "10.244.0.0/16", "NoMasqueradeCIDRs": ["203.0.113.0/24"], "Backend": {"Type": "vxlan"}}`

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cluster is a real API server with two node namespaces n1 and n2 whose
// podCIDRs are 10.244.1.0/24 and 10.244.2.0/24, each with cni0 holding its
// gateway address in place of pods.
type cluster struct {
	env   *testenv.Env
	nodes [3]*testenv.Node
	ctx   context.Context
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := newEnv(t)
	env, ctx := c.env, c.ctx
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("n%d", i)
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var err error
		if c.nodes[i], err = env.AddNode(name, fmt.Sprintf("172.18.0.%d", 10+i)); err != nil {
			t.Fatal(err)
		}
		if err := underlay.Bridge(c.nodes[i].NS, "cni0", fmt.Sprintf("10.244.%d.1/24", i)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// newEnv builds flanneld and starts the API server and underlay, with no
// node yet; everything goes when the test ends.
func newEnv(t *testing.T) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "flanneld")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/flanneld").CombinedOutput(); err != nil {
		t.Fatalf("building flanneld: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	env, err := testenv.Start(ctx, dir, fmt.Sprintf("tw%d", os.Getpid()%100000), bin)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{env: env, ctx: ctx}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("TWILL_SHOW_LOGS") != "" {
			for _, n := range []string{"n1", "n2"} {
				log, _ := os.ReadFile(filepath.Join(dir, n, "flanneld.log"))
				t.Logf("flanneld log of %s:\n%s", n, log)
			}
		}
		if err := env.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c
}

// vxlanPeer is a Node with a vxlan lease and no flanneld behind it.
func vxlanPeer(name, cidr, ip, mac string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			"flannel.alpha.coreos.com/backend-type": "vxlan",
			"flannel.alpha.coreos.com/backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`,
			"flannel.alpha.coreos.com/public-ip":    ip,
		}},
		Spec: v1.NodeSpec{PodCIDR: cidr},
	}
}

// startAll starts flanneld with conf and args on nodes and waits until
// each is ready.
func startAll(t *testing.T, conf string, args []string, nodes ...*testenv.Node) []*exec.Cmd {
	t.Helper()
	var p []*exec.Cmd
	for _, n := range nodes {
		cmd, err := n.StartFlanneld(conf, args...)
		if err != nil {
			t.Fatal(err)
		}
		p = append(p, cmd)
	}
	for _, n := range nodes {
		eventually(t, time.Minute, n.Name+" ready", func() error { return n.Ready() })
	}
	return p
}

// stop stops the flanneld processes p.
func stop(p []*exec.Cmd) {
	for _, cmd := range p {
		_ = testenv.Stop(cmd)
	}
}

// routeIs waits until node's route to dst reads want.
func routeIs(t *testing.T, n *testenv.Node, dst, want string) {
	t.Helper()
	eventually(t, 30*time.Second, "route "+want, func() error {
		out, _ := n.Exec("ip", "route", "show", dst)
		if strings.TrimSpace(out) != want {
			return fmt.Errorf("ip route show %s on %s: %q", dst, n.Name, out)
		}
		return nil
	})
}

func pings(t *testing.T, from *testenv.Node, src, dst string) {
	t.Helper()
	if out, _ := from.Exec("ping", "-c", "3", "-W", "5", "-I", src, dst); !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("%s → %s from %s:\n%s", src, dst, from.Name, out)
	}
}

// TestTwoNodesAgainstARealAPIServer runs two flanneld processes in two
// namespaces against one real API server and checks that their pod subnets
// reach each other over VXLAN, that restarts lose no packet, and that a
// deleted Node and a deleted route are handled.
func TestTwoNodesAgainstARealAPIServer(t *testing.T) {
	c := newCluster(t)
	env, ctx, ns := c.env, c.ctx, c.nodes
	nodes := env.Client.CoreV1().Nodes()
	var err error
	args := []string{"--ip-masq", "--healthz-port=10268", "--iptables-resync=1s"}
	procs := map[int]*exec.Cmd{}
	for i := 1; i <= 2; i++ {
		if procs[i], err = ns[i].StartFlanneld(netConf, args...); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		eventually(t, time.Minute, ns[i].Name+" ready", func() error { return ns[i].Ready() })
	}

	// The routing table reads exactly like flannel's.
	eventually(t, 30*time.Second, "route to n2's pods", func() error {
		out, _ := ns[1].Exec("ip", "route", "show", "10.244.2.0/24")
		if strings.TrimSpace(out) != "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" {
			return fmt.Errorf("ip route: %q", out)
		}
		return nil
	})
	if out, _ := ns[1].Exec("ping", "-c", "3", "-W", "5", "-I", "10.244.1.1", "10.244.2.1"); !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("pod subnets do not reach each other:\n%s", out)
	}
	env1, _ := os.ReadFile(ns[1].SubnetFile())
	if string(env1) != "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n" {
		t.Errorf("subnet.env of n1:\n%s", env1)
	}
	n2, err := nodes.Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n2.Annotations["flannel.alpha.coreos.com/public-ip"] != "172.18.0.12" || !strings.HasPrefix(n2.Annotations["flannel.alpha.coreos.com/backend-data"], `{"VNI":1,"VtepMAC":"`) {
		t.Errorf("n2 annotations: %v", n2.Annotations)
	}
	netOK := false
	for _, c := range n2.Status.Conditions {
		netOK = netOK || (c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionFalse)
	}
	if !netOK {
		t.Errorf("n2 NetworkUnavailable is not False: %+v", n2.Status.Conditions)
	}
	nat, _ := ns[1].Exec("iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
	if !strings.Contains(nat, "-d 203.0.113.0/24") || !strings.Contains(nat, "MASQUERADE") {
		t.Errorf("masquerade rules:\n%s", nat)
	}

	// A restart changes nothing and loses no packet.
	before, _ := ns[1].Exec("ip", "-o", "link", "show", "flannel.1")
	ping := exec.Command("ip", "netns", "exec", ns[1].NSName, "ping", "-i", "0.05", "-c", "100", "-W", "1", "-I", "10.244.1.1", "10.244.2.1")
	var pingOut strings.Builder
	ping.Stdout = &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Stop(procs[1]); err != nil {
		t.Logf("flanneld exit: %v", err)
	}
	if procs[1], err = ns[1].StartFlanneld(netConf, args...); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "n1 ready again", func() error { return ns[1].Ready() })
	_ = ping.Wait()
	if !strings.Contains(pingOut.String(), " 0% packet loss") {
		t.Errorf("packets lost across a flanneld restart:\n%s", pingOut.String())
	}
	after, _ := ns[1].Exec("ip", "-o", "link", "show", "flannel.1")
	if strings.Fields(before)[0] != strings.Fields(after)[0] {
		t.Errorf("flannel.1 was recreated by a restart: %q → %q", before, after)
	}

	// A route deleted by hand comes back.
	if _, err := ns[1].Exec("ip", "route", "del", "10.244.2.0/24"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "route restored", func() error {
		out, _ := ns[1].Exec("ip", "route", "show", "10.244.2.0/24")
		if !strings.Contains(out, "via 10.244.2.0 dev flannel.1 onlink") {
			return fmt.Errorf("route: %q", out)
		}
		return nil
	})
	// So does a deleted rule.
	if _, err := ns[1].Exec("iptables", "-t", "filter", "-F", "FLANNEL-FWD"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "forward rules restored", func() error {
		out, _ := ns[1].Exec("iptables", "-t", "filter", "-S", "FLANNEL-FWD")
		if strings.Count(out, "-j ACCEPT") != 2 {
			return fmt.Errorf("FLANNEL-FWD: %q", out)
		}
		return nil
	})

	// A node with garbage annotations is skipped with a Warning event.
	broken := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "broken", Annotations: map[string]string{
			"flannel.alpha.coreos.com/backend-type": "vxlan",
			"flannel.alpha.coreos.com/backend-data": "{{garbage",
			"flannel.alpha.coreos.com/public-ip":    "172.18.0.99",
		}},
		Spec: v1.NodeSpec{PodCIDR: "10.244.9.0/24"},
	}
	if _, err := nodes.Create(ctx, broken, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a Warning event on node broken", func() error {
		evs, err := env.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == v1.EventTypeWarning && strings.Contains(e.Message, "backend-data") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none about backend-data", len(evs.Items))
	})
	if out, _ := ns[1].Exec("ip", "route", "show", "10.244.9.0/24"); strings.TrimSpace(out) != "" {
		t.Errorf("a route for a node with broken annotations: %q", out)
	}
	if err := nodes.Delete(ctx, "broken", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// A deleted Node disappears from the other node's kernel.
	if err := testenv.Stop(procs[2]); err != nil {
		t.Logf("flanneld n2 exit: %v", err)
	}
	if err := nodes.Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "n2 removed from n1", func() error {
		var left []string
		for _, c := range [][]string{{"ip", "route", "show", "10.244.2.0/24"}, {"ip", "neigh", "show", "dev", "flannel.1"}, {"bridge", "fdb", "show", "dev", "flannel.1"}} {
			if out, _ := ns[1].Exec(c...); strings.TrimSpace(out) != "" {
				left = append(left, out)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left: %q", left)
		}
		return nil
	})
}

// TestHostGWAndBackendSwitch moves a running vxlan pair to host-gw and back:
// each time the routes read as the backend describes, pods reach each other,
// and nothing of the other backend is left.
func TestHostGWAndBackendSwitch(t *testing.T) {
	c := newCluster(t)
	n1, n2 := c.nodes[1], c.nodes[2]
	start := func(conf string) []*exec.Cmd { return startAll(t, conf, []string{"--healthz-port=10268"}, n1, n2) }
	const vxlanConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`
	const hostGWConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`

	p := start(vxlanConf)
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	stop(p)

	p = start(hostGWConf)
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 172.18.0.12 dev eth0")
	routeIs(t, n2, "10.244.1.0/24", "10.244.1.0/24 via 172.18.0.11 dev eth0")
	for _, n := range []*testenv.Node{n1, n2} {
		if out, err := n.Exec("ip", "link", "show", "flannel.1"); err == nil {
			t.Errorf("flannel.1 left on %s after moving to host-gw: %s", n.Name, out)
		}
		env, _ := os.ReadFile(n.SubnetFile())
		if !strings.Contains(string(env), "FLANNEL_MTU=1500\n") {
			t.Errorf("host-gw subnet.env of %s:\n%s", n.Name, env)
		}
	}
	// host-gw has no tunnel, so no guard: the vxlan run's chain and set go.
	for _, n := range []*testenv.Node{n1, n2} {
		eventually(t, 15*time.Second, "no VXLAN guard on "+n.Name+" with host-gw", func() error {
			ipt, _ := n.Exec("iptables-save")
			sets, _ := n.Exec("ipset", "list", "-n")
			if strings.Contains(ipt, "VXLAN-GUARD") || strings.TrimSpace(sets) != "" {
				return fmt.Errorf("guard left:\n%s\n%s", ipt, sets)
			}
			return nil
		})
	}
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	got, err := c.env.Client.CoreV1().Nodes().Get(c.ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Annotations["flannel.alpha.coreos.com/backend-type"] != "host-gw" || got.Annotations["flannel.alpha.coreos.com/backend-data"] != "null" {
		t.Errorf("host-gw annotations: %v", got.Annotations)
	}
	stop(p)

	// And back: no direct route survives next to the tunnel.
	p = start(vxlanConf)
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	if out, _ := n1.Exec("ip", "route", "show", "dev", "eth0"); strings.Contains(out, "10.244.") {
		t.Errorf("host-gw route left on eth0:\n%s", out)
	}
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	stop(p)
}

// TestDirectRoutingMixed: with DirectRouting, a peer on the same L2 subnet
// is routed directly and a peer behind a router over VXLAN, and traffic
// reaches both.
func TestDirectRoutingMixed(t *testing.T) {
	c := newCluster(t)
	n1, n2 := c.nodes[1], c.nodes[2]
	if _, err := c.env.Client.CoreV1().Nodes().Create(c.ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n3"}, Spec: v1.NodeSpec{PodCIDR: "10.244.3.0/24"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n3, err := c.env.AddNode("n3", "172.20.0.13")
	if err != nil {
		t.Fatal(err)
	}
	if err := underlay.Bridge(n3.NS, "cni0", "10.244.3.1/24"); err != nil {
		t.Fatal(err)
	}
	const conf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}`
	for _, n := range []*testenv.Node{n1, n2, n3} {
		if _, err := n.StartFlanneld(conf, "--healthz-port=10268"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*testenv.Node{n1, n2, n3} {
		eventually(t, time.Minute, n.Name+" ready", func() error { return n.Ready() })
	}
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 172.18.0.12 dev eth0")
	routeIs(t, n1, "10.244.3.0/24", "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink")
	routeIs(t, n3, "10.244.1.0/24", "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink")
	if out, _ := n1.Exec("bridge", "fdb", "show", "dev", "flannel.1"); strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "dst 172.20.0.13") {
		t.Errorf("n1 FDB should hold n3 only:\n%s", out)
	}
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	pings(t, n1, "10.244.1.1", "10.244.3.1")
	pings(t, n3, "10.244.3.1", "10.244.2.1")
}

// TestAPIServerOutage cuts n1 off from the API server: pods keep talking,
// flanneld keeps running, and once the API server is reachable again a node
// created meanwhile reaches n1's kernel.
func TestAPIServerOutage(t *testing.T) {
	c := newCluster(t)
	n1, n2 := c.nodes[1], c.nodes[2]
	var procs []*exec.Cmd
	for _, n := range []*testenv.Node{n1, n2} {
		p, err := n.StartFlanneld(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`, "--healthz-port=10268")
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	for _, n := range []*testenv.Node{n1, n2} {
		eventually(t, time.Minute, n.Name+" ready", func() error { return n.Ready() })
	}
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")

	cut := []string{"OUTPUT", "-d", testenv.GatewayIP, "-p", "tcp", "--dport", "6443", "-j", "REJECT", "--reject-with", "tcp-reset"}
	if _, err := n1.Exec(append([]string{"iptables", "-I"}, cut...)...); err != nil {
		t.Fatal(err)
	}
	// The outage lasts as long as this ping: the data plane must not notice.
	if out, _ := n1.Exec("ping", "-c", "40", "-i", "0.1", "-W", "1", "-I", "10.244.1.1", "10.244.2.1"); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("pods lost packets while the API server was unreachable:\n%s", out)
	}
	if !testenv.Running(procs[0]) {
		t.Fatal("flanneld exited during the outage")
	}
	if err := n1.Ready(); err != nil {
		t.Errorf("n1 not ready during the outage: %v", err)
	}
	n3 := vxlanPeer("n3", "10.244.3.0/24", "172.18.0.13", "0a:00:00:00:00:33")
	if _, err := c.env.Client.CoreV1().Nodes().Create(c.ctx, n3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Exec(append([]string{"iptables", "-D"}, cut...)...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "n1 learns of n3 after reconnecting", func() error {
		out, _ := n1.Exec("ip", "route", "show", "10.244.3.0/24")
		if strings.TrimSpace(out) != "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink" {
			return fmt.Errorf("route: %q", out)
		}
		return nil
	})
}

// TestCapabilitiesNeeded proves that each capability the DaemonSet adds
// back after dropping all is needed, and that flanneld says clearly what
// failed without it: NET_ADMIN for its device (and netlink, iptables over
// nf_tables, /proc/sys/net), NET_RAW for iptables' legacy back-end, which
// nodes whose kubelet uses legacy iptables make the image's wrapper pick.
func TestCapabilitiesNeeded(t *testing.T) {
	c := newCluster(t)
	n := c.nodes[1]
	legacy := t.TempDir()
	for _, name := range []string{"iptables", "ip6tables"} {
		target, err := exec.LookPath(name + "-legacy")
		if err != nil {
			t.Skipf("%s-legacy not installed: %v", name, err)
		}
		if err := os.Symlink(target, filepath.Join(legacy, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, caps string
		env        []string
		want       []string
	}{
		{"without NET_ADMIN", "-all,+net_raw", nil, []string{"creating vxlan device flannel.1", "operation not permitted", "needs the NET_ADMIN capability"}},
		{"without NET_RAW, legacy iptables", "-all,+net_admin", []string{"PATH=" + legacy + ":" + os.Getenv("PATH")}, []string{"keeping IPv4 rules", "ermission denied", "needs the NET_RAW capability"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Truncate(n.LogFile(), 0); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			cmd, err := n.StartFlanneldWith(tc.caps, tc.env, netConf, "--ip-masq")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("flanneld exited 0")
				}
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				<-done
				log, _ := os.ReadFile(n.LogFile())
				t.Fatalf("flanneld kept running with %s:\n%s", tc.caps, log)
			}
			log, _ := os.ReadFile(n.LogFile())
			t.Logf("flanneld with %s:\n%s", tc.caps, lastLines(string(log), 2))
			for _, w := range tc.want {
				if !strings.Contains(string(log), w) {
					t.Errorf("log does not say %q:\n%s", w, log)
				}
			}
		})
	}
	// With both, it works (as every other test here shows at length).
	if _, err := n.StartFlanneld(netConf, "--ip-masq", "--healthz-port=10268"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "ready with NET_ADMIN and NET_RAW only", func() error { return n.Ready() })
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// guardDrops reads n's tunnel guard counter in nftables mode.
func guardDrops(t *testing.T, n *testenv.Node) int {
	t.Helper()
	out, err := n.Exec("nft", "list", "counter", "ip", "flannel-ipv4", "vxlan-guard-drops")
	if err != nil {
		t.Fatalf("reading the guard counter on %s: %v\n%s", n.Name, err, out)
	}
	m := regexp.MustCompile(`packets (\d+) bytes`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("counter on %s: %q", n.Name, out)
	}
	v, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatalf("counter on %s: %q", n.Name, out)
	}
	return v
}

// forgedPing pings 10.244.1.1 (n1's cni0) from x's own VXLAN device with
// the source 10.244.3.1, while tcpdump on n1's flannel.1 watches for what
// arrives; it returns how many echo requests n1's tunnel delivered and
// whether x got answers.
func forgedPing(t *testing.T, n1, x *testenv.Node) (arrived int, answered bool) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		out, _ := n1.Exec("timeout", "4", "tcpdump", "-i", "flannel.1", "-nn", "-l", "-c", "3", "icmp[icmptype] == icmp-echo and src host 10.244.3.1")
		done <- out
	}()
	// tcpdump needs a moment to open its socket; the pings outlast it.
	out, _ := x.Exec("ping", "-c", "15", "-i", "0.2", "-W", "1", "-I", "10.244.3.1", "10.244.1.1")
	cap := <-done
	return strings.Count(cap, "ICMP echo request"), !strings.Contains(out, " 100% packet loss")
}

// TestNFTablesGuardAndSwitch runs two nodes in nftables mode: their pod
// subnets reach each other; the tunnel guard drops forged VXLAN from a host
// on the underlay that is not a node (nothing reaches flannel.1, the
// counter rises), accepts it once that host is a Node, without a restart,
// and refuses it again once the Node is deleted. Then the nodes move to
// iptables and back, and no rule of the mode left behind survives.
func TestNFTablesGuardAndSwitch(t *testing.T) {
	c := newCluster(t)
	n1, n2 := c.nodes[1], c.nodes[2]
	args := []string{"--ip-masq", "--healthz-port=10268", "--iptables-resync=1s"}
	const nftConf = `{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}`
	const iptConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`
	p := startAll(t, nftConf, args, n1, n2)
	routeIs(t, n1, "10.244.2.0/24", "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	eventually(t, 30*time.Second, "n1's nftables table", func() error {
		out, _ := n1.Exec("nft", "list", "table", "ip", "flannel-ipv4")
		for _, want := range []string{"chain postrtg", "chain forward", "elements = { 172.18.0.12 }", `udp dport 8472 ip saddr != @vxlan-peers counter name "vxlan-guard-drops" drop`} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in:\n%s", want, out)
			}
		}
		if ipt, _ := n1.Exec("iptables-save"); strings.Contains(ipt, "FLANNEL") {
			return fmt.Errorf("iptables rules next to nftables:\n%s", ipt)
		}
		return nil
	})

	// Flushed rules and a removed set element come back within a few
	// rule checks (--iptables-resync=1s) of a running flanneld.
	for _, cmd := range [][]string{
		{"nft", "flush", "table", "ip", "flannel-ipv4"},
		{"nft", "delete", "element", "ip", "flannel-ipv4", "vxlan-peers", "{ 172.18.0.12 }"},
	} {
		if out, err := n1.Exec(cmd...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
		eventually(t, 15*time.Second, "n1's table repaired after "+strings.Join(cmd[:2], " "), func() error {
			out, _ := n1.Exec("nft", "list", "table", "ip", "flannel-ipv4")
			for _, want := range []string{"masquerade fully-random", "ip saddr 10.244.0.0/16 accept", "elements = { 172.18.0.12 }", "drop"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("no %q in:\n%s", want, out)
				}
			}
			return nil
		})
	}
	pings(t, n1, "10.244.1.1", "10.244.2.1")

	// x is on the underlay, not a node: its VXLAN device aims at n1 with
	// n1's VNI, port and VTEP MAC.
	x, err := c.env.AddNode("x", "172.18.0.50")
	if err != nil {
		t.Fatal(err)
	}
	nodes := c.env.Client.CoreV1().Nodes()
	self, err := nodes.Get(c.ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var vtep struct{ VtepMAC string }
	if err := json.Unmarshal([]byte(self.Annotations["flannel.alpha.coreos.com/backend-data"]), &vtep); err != nil {
		t.Fatal(err)
	}
	const xMAC = "0a:00:00:00:00:50"
	for _, cmd := range [][]string{
		{"ip", "link", "add", "vx0", "address", xMAC, "type", "vxlan", "id", "1", "dstport", "8472", "local", "172.18.0.50", "dev", "eth0", "nolearning"},
		{"ip", "addr", "add", "10.244.3.1/24", "dev", "vx0"},
		{"ip", "link", "set", "vx0", "up"},
		{"ip", "neigh", "add", "10.244.1.0", "lladdr", vtep.VtepMAC, "dev", "vx0", "nud", "permanent"},
		{"bridge", "fdb", "add", vtep.VtepMAC, "dev", "vx0", "dst", "172.18.0.11"},
		{"ip", "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "vx0", "onlink"},
	} {
		if out, err := x.Exec(cmd...); err != nil {
			t.Fatalf("on x: %s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	before := guardDrops(t, n1)
	if arrived, answered := forgedPing(t, n1, x); arrived > 0 || answered {
		t.Fatalf("forged VXLAN from a host that is not a node: %d echo requests reached n1's flannel.1, answered %v", arrived, answered)
	}
	if after := guardDrops(t, n1); after < before+5 {
		t.Errorf("guard counter %d → %d after 15 forged packets", before, after)
	}

	// x becomes a Node: accepted without a restart.
	if _, err := nodes.Create(c.ctx, vxlanPeer("x", "10.244.3.0/24", "172.18.0.50", xMAC), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "x accepted once it is a Node", func() error {
		if out, _ := x.Exec("ping", "-c", "1", "-W", "1", "-I", "10.244.3.1", "10.244.1.1"); !strings.Contains(out, " 0% packet loss") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	if arrived, answered := forgedPing(t, n1, x); arrived == 0 || !answered {
		t.Fatalf("from a Node: %d echo requests reached n1's flannel.1, answered %v", arrived, answered)
	}

	// Deleted, refused again.
	if err := nodes.Delete(c.ctx, "x", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "x refused once its Node is gone", func() error {
		before := guardDrops(t, n1)
		_, _ = x.Exec("ping", "-c", "1", "-W", "1", "-I", "10.244.3.1", "10.244.1.1")
		if guardDrops(t, n1) == before {
			return errors.New("the guard does not drop x's packets")
		}
		return nil
	})

	// To iptables, then back: nothing of the other mode is left.
	for _, step := range []struct{ conf, mode string }{{iptConf, "iptables"}, {nftConf, "nftables"}} {
		stop(p)
		p = startAll(t, step.conf, args, n1, n2)
		pings(t, n1, "10.244.1.1", "10.244.2.1")
		eventually(t, 30*time.Second, "only "+step.mode+" rules on the nodes", func() error {
			for _, n := range []*testenv.Node{n1, n2} {
				nft, _ := n.Exec("nft", "list", "ruleset")
				ipt, _ := n.Exec("iptables-save")
				sets, _ := n.Exec("ipset", "list", "-n")
				inNFT, inIPT := strings.Contains(nft, "flannel-ipv4"), strings.Contains(ipt, "FLANNEL-VXLAN-GUARD") && strings.Contains(ipt, "FLANNEL-POSTRTG")
				if step.mode == "iptables" && (inNFT || !inIPT || !strings.Contains(sets, "FLANNEL-VXLAN-PEERS")) {
					return fmt.Errorf("%s after moving to iptables:\n%s\n%s\n%s", n.Name, nft, ipt, sets)
				}
				if step.mode == "nftables" && (!inNFT || strings.Contains(ipt, "FLANNEL") || strings.TrimSpace(sets) != "") {
					return fmt.Errorf("%s after moving to nftables:\n%s\n%s\n%s", n.Name, nft, ipt, sets)
				}
			}
			return nil
		})
	}
	stop(p)
}
