//go:build e2e

package daemon_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/firewall/firewalltest"
	"github.com/twill-net/twill/internal/testenv"
)

// upstreamMAC is the VTEP MAC of the node prepared as upstream flannel
// leaves it (upstream gives flannel.1 a random locally administered MAC
// and publishes it).
const upstreamMAC = "4e:2a:91:c3:5d:07"

// upstreamSubnetEnv is subnet.env as upstream flannel writes it for n1
// (WriteSubnetFile in pkg/subnet/subnet.go of flannel-io/flannel).
const upstreamSubnetEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

// prepareUpstream leaves node n1 (10.244.1.0/24 on 172.18.0.11) exactly
// as upstream flannel v0.28 in vxlan mode leaves it, with one peer
// (peerMAC behind peerIP, subnet 10.244.2.0/24): flannel.1 made with
// upstream's attributes and MAC, its address and routes, the peer's
// neighbour and FDB entries, upstream's iptables rules, subnet.env and the
// Node's annotations. What each step copies was read in upstream's
// pkg/backend/vxlan (device.go, vxlan_network.go), pkg/trafficmngr/iptables
// and pkg/subnet/kube at commit cdf76059.
func prepareUpstream(t *testing.T, c *cluster, n *testenv.Node, peerMAC, peerIP string) {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := n.Exec(args...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "link", "add", "flannel.1", "address", upstreamMAC, "mtu", "1450", "type", "vxlan", "id", "1", "local", "172.18.0.11", "dev", "eth0", "dstport", "8472", "nolearning")
	run("ip", "addr", "add", "10.244.1.0/32", "dev", "flannel.1")
	run("ip", "link", "set", "flannel.1", "up")
	run("ip", "neigh", "replace", "10.244.2.0", "lladdr", peerMAC, "dev", "flannel.1", "nud", "permanent")
	run("bridge", "fdb", "replace", peerMAC, "dev", "flannel.1", "dst", peerIP, "self", "permanent")
	run("ip", "route", "replace", "10.244.2.0/24", "via", "10.244.2.0", "dev", "flannel.1", "onlink")
	for _, table := range []string{"nat", "filter"} {
		run("iptables", "-w", "-t", table, "-N", map[string]string{"nat": "FLANNEL-POSTRTG", "filter": "FLANNEL-FWD"}[table])
		for _, r := range firewalltest.UpstreamIPTables[table] {
			run(append([]string{"iptables", "-w", "-t", table}, splitQuoted(r)...)...)
		}
	}
	if err := os.WriteFile(n.SubnetFile(), []byte(upstreamSubnetEnv), 0o644); err != nil {
		t.Fatal(err)
	}
	node, err := c.env.Client.CoreV1().Nodes().Get(c.ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Annotations = map[string]string{
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"` + upstreamMAC + `"}`,
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/public-ip":           "172.18.0.11",
	}
	if _, err := c.env.Client.CoreV1().Nodes().Update(c.ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// splitQuoted splits an `iptables -S` line into arguments, keeping a
// quoted comment whole.
func splitQuoted(line string) []string {
	var out []string
	for i, part := range strings.Split(line, `"`) {
		if i%2 == 1 {
			out = append(out, part)
			continue
		}
		out = append(out, strings.Fields(part)...)
	}
	return out
}

// monitor records what `ip monitor` and `bridge monitor fdb` print in
// node n until the returned function is called, which returns it.
func monitor(t *testing.T, n *testenv.Node) func() string {
	t.Helper()
	var buf syncBuffer
	var cmds []*exec.Cmd
	for _, args := range [][]string{{"ip", "monitor", "link", "route", "neigh"}, {"bridge", "monitor", "fdb"}} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.NSName}, args...)...)
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	stopped := false
	stopAll := func() string {
		if !stopped {
			stopped = true
			for _, cmd := range cmds {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}
		return buf.String()
	}
	t.Cleanup(func() { stopAll() })
	return stopAll
}

// syncBuffer is a bytes.Buffer two processes may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hostState is what a takeover must leave as it was: flannel.1 (index,
// MAC, attributes), its addresses, routes, neighbours and FDB entries,
// and the iptables rules.
func hostState(t *testing.T, n *testenv.Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, args := range map[string][]string{
		"link":   {"ip", "-d", "-o", "link", "show", "flannel.1"},
		"addr":   {"ip", "-o", "addr", "show", "dev", "flannel.1"},
		"route":  {"ip", "route", "show", "dev", "flannel.1"},
		"neigh":  {"ip", "neigh", "show", "dev", "flannel.1"},
		"fdb":    {"bridge", "fdb", "show", "dev", "flannel.1"},
		"nat":    {"iptables", "-w", "-t", "nat", "-S"},
		"filter": {"iptables", "-w", "-t", "filter", "-S"},
	} {
		s, err := n.Exec(args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, s)
		}
		// Counters and the link's statistics move; nothing else may.
		out[name] = regexp.MustCompile(`\s+(used|updated) \d+/\d+(/\d+)?`).ReplaceAllString(s, "")
	}
	// The VXLAN guard is Twill's addition, with chains of its own.
	var filter []string
	for _, l := range strings.Split(out["filter"], "\n") {
		if !strings.Contains(l, "VXLAN-GUARD") {
			filter = append(filter, l)
		}
	}
	out["filter"] = strings.Join(filter, "\n")
	return out
}

// TestTakeOverFromUpstream moves a node from upstream flannel to Twill in
// place, beside a Twill node, while its pods ping the other node's: the
// half-upstream cluster works (each side reads the other's annotations),
// and the takeover loses no packet, adds the VXLAN guard and leaves the node's device (index and
// VTEP MAC), routes, neighbour and FDB entries, rules, subnet.env and
// annotations exactly as upstream left them, so the peer keeps its FDB
// entry and nothing is deleted and re-added on either node.
func TestTakeOverFromUpstream(t *testing.T) {
	c := newCluster(t)
	n1, n2 := c.nodes[1], c.nodes[2]
	const conf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`
	args := []string{"--ip-masq", "--healthz-port=10268", "--iptables-resync=1s"}

	// n2 runs Twill; n1 is an upstream node, prepared as upstream leaves
	// one, and programmed for n2 as upstream programs a peer.
	procs := startAll(t, conf, args, n2)
	defer func() { stop(procs) }()
	peer, err := c.env.Client.CoreV1().Nodes().Get(c.ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var data struct{ VtepMAC string }
	if err := json.Unmarshal([]byte(peer.Annotations["flannel.alpha.coreos.com/backend-data"]), &data); err != nil {
		t.Fatalf("n2's backend-data: %v", err)
	}
	prepareUpstream(t, c, n1, data.VtepMAC, "172.18.0.12")
	wantFDB := upstreamMAC + " dst 172.18.0.11 self permanent"
	eventually(t, 30*time.Second, "n2's FDB entry for the upstream node", func() error {
		out, _ := n2.Exec("bridge", "fdb", "show", "dev", "flannel.1")
		if !strings.Contains(out, wantFDB) {
			return fmt.Errorf("n2's FDB:\n%s", out)
		}
		return nil
	})
	pings(t, n1, "10.244.1.1", "10.244.2.1")
	pings(t, n2, "10.244.2.1", "10.244.1.1")

	before := hostState(t, n1)
	if got := strings.Split(strings.TrimSpace(before["nat"]), "\n"); !slices.Equal(got[len(got)-len(firewalltest.UpstreamIPTables["nat"]):], firewalltest.UpstreamIPTables["nat"]) {
		t.Fatalf("the prepared node's nat rules are not upstream's:\n%s", before["nat"])
	}
	peerFDB, _ := n2.Exec("bridge", "fdb", "show", "dev", "flannel.1")
	watch1, watch2 := monitor(t, n1), monitor(t, n2)
	ping := exec.Command("ip", "netns", "exec", n1.NSName, "ping", "-i", "0.05", "-c", "400", "-W", "1", "-I", "10.244.1.1", "10.244.2.1")
	var pingOut strings.Builder
	ping.Stdout = &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}

	// The takeover: Twill's flanneld starts on n1.
	procs = append(procs, startAll(t, conf, args, n1)...)
	_ = ping.Wait()
	if !strings.Contains(pingOut.String(), " 0% packet loss") {
		t.Errorf("packets lost during the takeover:\n%s", lastLines(pingOut.String(), 3))
	}

	after := hostState(t, n1)
	if rules, _ := n1.Exec("iptables", "-w", "-S", "FLANNEL-VXLAN-GUARD"); !strings.Contains(rules, "-j DROP") {
		t.Errorf("n1 has no VXLAN guard after the takeover:\n%s", rules)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("n1's %s changed in the takeover:\nbefore:\n%s\nafter:\n%s", k, v, after[k])
		}
	}
	if got, _ := n2.Exec("bridge", "fdb", "show", "dev", "flannel.1"); got != peerFDB || strings.Count(got, "dst 172.18.0.11") != 1 {
		t.Errorf("n2's FDB changed:\nbefore:\n%s\nafter:\n%s", peerFDB, got)
	}
	if env, err := os.ReadFile(n1.SubnetFile()); err != nil || string(env) != upstreamSubnetEnv {
		t.Errorf("subnet.env after the takeover: %q, %v; want upstream's %q", env, err, upstreamSubnetEnv)
	}
	node, err := c.env.Client.CoreV1().Nodes().Get(c.ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Annotations["flannel.alpha.coreos.com/backend-data"]; got != `{"VNI":1,"VtepMAC":"`+upstreamMAC+`"}` {
		t.Errorf("n1 publishes %s, want upstream's MAC kept", got)
	}
	if node.Spec.PodCIDR != "10.244.1.0/24" {
		t.Errorf("n1's podCIDR became %s", node.Spec.PodCIDR)
	}
	for name, out := range map[string]string{"n1": watch1(), "n2": watch2()} {
		var deleted []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "Deleted") {
				deleted = append(deleted, l)
			}
		}
		if len(deleted) > 0 {
			t.Errorf("%s: entries deleted during the takeover:\n%s", name, strings.Join(deleted, "\n"))
		}
	}
	pings(t, n2, "10.244.2.1", "10.244.1.1")
}
