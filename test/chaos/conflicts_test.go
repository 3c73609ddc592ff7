//go:build chaos

package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
)

// TestConflicts is scenario 9: simulated Nodes conflicting with n2 (one
// claiming its podCIDR, one its VTEP MAC, one its public IP) and a peer
// whose podCIDR is removed, then changed (the API server refuses either in
// place: the Node is created anew), then n1's flanneld restarted. Each
// conflict raises a Warning Event naming both Nodes, from each flanneld
// that sees it; n1↔n2 pings lose nothing, across the restart too; and
// over 10 s of full resyncs every 2 s, n2's kernel entries on
// n1 are never touched (ip monitor, bridge monitor fdb) and no Event more
// is recorded. Last, n2's own Node is created anew with another podCIDR:
// n2's flanneld keeps serving the old one, with a Warning.
func TestConflicts(t *testing.T) {
	h := newHarnessWith(t, "9 conflicts", "--resync-period=2s")
	n1, n2 := h.nodes[0], h.nodes[1]
	nodes := h.env.Client.CoreV1().Nodes()
	self, err := nodes.Get(h.ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var data struct{ VtepMAC string }
	if err := json.Unmarshal([]byte(self.Annotations["flannel.alpha.coreos.com/backend-data"]), &data); err != nil {
		t.Fatal(err)
	}
	n2MAC := data.VtepMAC
	monitors := []*exec.Cmd{
		monitor(t, n1, "ip", "monitor", "route", "neigh"),
		monitor(t, n1, "bridge", "monitor", "fdb"),
	}
	create := func(n *v1.Node) func() error {
		return func() error {
			_, err := nodes.Create(h.ctx, n, metav1.CreateOptions{})
			return err
		}
	}
	// events waits until the Warning Events of reason on node, recorded by
	// the flanneld of each of by, name every one of names.
	events := func(node, reason string, by []string, names ...string) {
		t.Helper()
		h.until(15*time.Second, fmt.Sprintf("a %s Event on %s from %v naming %v", reason, node, by, names), func() error {
			for _, from := range by {
				if n := countEvents(h, node, reason, from, names...); n == 0 {
					return fmt.Errorf("none from %s", from)
				}
			}
			return nil
		})
	}
	both := []string{"n1", "n2"}

	h.refused = append(h.refused, "dup")
	h.fault("Node dup claims n2's podCIDR", "PeerConflict (n1), PodCIDRConflict (n2)", 30*time.Second,
		create(simPeer("dup", "10.244.2.0/24", "172.18.0.97", "0a:00:00:00:00:97")))
	events("dup", "PeerConflict", []string{"n1"}, "dup", "n2")
	events("dup", "PodCIDRConflict", []string{"n2"}, "dup", "n2")

	h.refused = append(h.refused, "clone")
	h.fault("Node clone publishes n2's VTEP MAC", "PeerConflict (n1), PeerUnreachable: this node's own MAC (n2)", 30*time.Second,
		create(simPeer("clone", "10.244.6.0/24", "172.18.0.96", n2MAC)))
	events("clone", "PeerConflict", []string{"n1"}, "clone", "n2")
	events("clone", "PeerUnreachable", []string{"n2"}, "clone", "n2", "this node's own")

	h.fault("Node twin publishes n2's public IP", "PublicIPConflict on both (from n1 and n2); both stay programmed", 30*time.Second,
		create(simPeer("twin", "10.244.7.0/24", "172.18.0.12", "0a:00:00:00:00:95")))
	events("twin", "PublicIPConflict", both, "twin", "n2", "172.18.0.12")
	events("n2", "PublicIPConflict", []string{"n1"}, "twin", "n2", "172.18.0.12")

	// A peer's podCIDR: set once, never changed in place by the API server.
	if err := create(simPeer("p9", "10.244.9.0/24", "172.18.0.93", "0a:00:00:00:00:93"))(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.converge(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	p9, err := nodes.Get(h.ctx, "p9", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p9.Spec.PodCIDR, p9.Spec.PodCIDRs = "10.244.10.0/24", []string{"10.244.10.0/24"}
	if _, err := nodes.Update(h.ctx, p9, metav1.UpdateOptions{}); err == nil {
		t.Fatal("the API server changed a podCIDR in place")
	}
	recreate := func(cidr string) func() error {
		return func() error {
			if err := nodes.Delete(h.ctx, "p9", metav1.DeleteOptions{}); err != nil {
				return err
			}
			n := simPeer("p9", cidr, "172.18.0.93", "0a:00:00:00:00:93")
			if cidr == "" {
				n.Spec.PodCIDR = ""
			}
			return create(n)()
		}
	}
	h.fault("peer p9's podCIDR removed (created anew without)", "its entries go; no Warning: a Node without a podCIDR is one still joining", 30*time.Second, recreate(""))
	h.fault("peer p9's podCIDR changed (created anew)", "its entries move", 30*time.Second, recreate("10.244.10.0/24"))

	// A restart of n1's flanneld starts from an empty table: the entries
	// the kernel holds for n2 must stay n2's, not go to dup, first by name.
	restarted := time.Now().Truncate(time.Second)
	h.fault("n1's flanneld restarted with the conflicts in place", "the kernel's holder keeps its slot; then 10 s of resyncs every 2 s: n2's entries on n1 untouched (ip monitor, bridge monitor fdb), no Event more", 60*time.Second, func() error {
		if err := testenv.Stop(h.procs["n1"]); err != nil {
			return fmt.Errorf("stopping n1's flanneld: %w", err)
		}
		p, err := n1.StartFlanneld(netConf, append(slices.Clone(flannelArgs), "--resync-period=2s")...)
		if err != nil {
			return err
		}
		h.procs["n1"] = p
		deadline := time.Now().Add(time.Minute)
		for n1.Ready() != nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("n1's flanneld not ready after a minute: %v", n1.Ready())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	})

	// The new process reports each conflict once again: dup's and
	// clone's, and the public IP twin and n2 share (each at the first full
	// reconcile that has seen the other).
	h.until(15*time.Second, "n1's flanneld reporting the 4 conflicts again", func() error {
		list, err := h.env.Client.CoreV1().Events(metav1.NamespaceDefault).List(h.ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		n := 0
		for _, ev := range list.Items {
			if ev.Source.Host == "n1" && !ev.FirstTimestamp.Time.Before(restarted) {
				n++
			}
		}
		if n != 4 {
			return fmt.Errorf("%d Events from n1 since the restart", n)
		}
		return nil
	})

	// No flapping: full resyncs every 2 s change nothing of n2's on n1
	// and record no Event more. The window is a length of time by
	// definition.
	count := func() int { return countEvents(h, "", "", "") }
	before := count()
	window := 10 * time.Second
	time.Sleep(window)
	if after := count(); after != before {
		t.Errorf("%d Warning Events recorded over %s of resyncs with nothing changed, want none", after-before, window)
	}
	for _, m := range monitors {
		_ = m.Process.Kill()
		_ = m.Wait()
	}
	// Each monitor saw p9's entries come and go: it was watching.
	for name, seen := range map[string]string{"ip-monitor": "10.244.9.0", "bridge-monitor": "0a:00:00:00:00:93"} {
		out, err := os.ReadFile(filepath.Join(h.env.Dir, "chaosC-"+name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), seen) {
			t.Errorf("%s did not see p9's entries (%s): is it watching n1?\n%s", name, seen, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "10.244.2.0") || strings.Contains(strings.ToLower(line), strings.ToLower(n2MAC)) {
				t.Errorf("n2's entry on n1 changed during the conflicts: %s", line)
			}
		}
	}
	h.finish()
	for _, r := range results.list[len(results.list)-6:] {
		if r.lost > 0 {
			t.Errorf("%s: %d pings lost between n1 and n2, want 0", r.fault, r.lost)
		}
	}

	// n2's own Node created anew with another podCIDR: its flanneld
	// keeps serving the old one and says what to do.
	env, err := os.ReadFile(n2.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(h.ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(h.ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: v1.NodeSpec{PodCIDR: "10.244.12.0/24"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	events("n2", "PodCIDRChanged", []string{"n2"}, "10.244.12.0/24", "10.244.2.0/24", "restart flanneld's pod")
	if now, _ := os.ReadFile(n2.SubnetFile()); string(now) != string(env) {
		t.Errorf("n2's subnet.env changed:\n%s\nwas:\n%s", now, env)
	}
	if !testenv.Running(h.procs["n2"]) {
		t.Error("n2's flanneld exited")
	}
}

// monitor starts a monitor command in node's namespace, its output in the
// env's directory (chaosC-<command>-monitor.log), and returns it running.
func monitor(t *testing.T, n *testenv.Node, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(filepath.Join(filepath.Dir(n.Dir), "chaosC-"+args[0]+"-monitor.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NS, "--"}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// countEvents counts the Warning Events on node (any: "") of reason (any:
// "") recorded by the flanneld of from (any: "") whose message names every
// one of names.
func countEvents(h *harness, node, reason, from string, names ...string) int {
	h.t.Helper()
	list, err := h.env.Client.CoreV1().Events(metav1.NamespaceDefault).List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, ev := range list.Items {
		if ev.Type != v1.EventTypeWarning || (node != "" && ev.InvolvedObject.Name != node) || (reason != "" && ev.Reason != reason) || (from != "" && ev.Source.Host != from) {
			continue
		}
		ok := true
		for _, s := range names {
			ok = ok && strings.Contains(ev.Message, s)
		}
		if ok {
			n++
		}
	}
	return n
}
