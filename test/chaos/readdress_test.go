//go:build chaos

package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPublicIPChange is scenario 5: n2's eth0 is re-addressed under
// traffic (172.18.0.12 → 172.18.0.42, the old address deleted, the new
// one added, the default route put back) and its Node's InternalIP
// updated. n2's flanneld follows by itself: its flannel.1 sends from the
// new address and it publishes it; n1 moves its FDB entry for n2 there.
// Pings are lost during the move, but the longest gap, counted from the
// re-address, is at most 5 s, and nothing is left stale or missing.
func TestPublicIPChange(t *testing.T) {
	h := newHarness(t, "5 public IP change")
	n1, n2 := h.nodes[0], h.nodes[1]
	const oldIP, newIP = "172.18.0.12", "172.18.0.42"
	nodes := h.env.Client.CoreV1().Nodes()
	before := h.marks()
	start := time.Now()
	for _, args := range [][]string{
		{"ip", "addr", "del", oldIP + "/16", "dev", "eth0"},
		{"ip", "addr", "add", newIP + "/16", "dev", "eth0"},
		// Deleting the address took the default route with it.
		{"ip", "route", "replace", "default", "via", "172.18.0.1", "dev", "eth0"},
	} {
		if out, err := n2.Exec(args...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	node, err := nodes.Get(h.ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: newIP}}
	if _, err := nodes.UpdateStatus(h.ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	// Moved: n2 publishes the new address and sends from it, and n1's
	// FDB entry for n2 points there, and at the old address no more.
	h.until(30*time.Second, "n2's move to "+newIP, func() error {
		n, err := nodes.Get(h.ctx, "n2", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ip := n.Annotations["flannel.alpha.coreos.com/public-ip"]; ip != newIP {
			return fmt.Errorf("n2 publishes %s", ip)
		}
		if out, _ := n2.Exec("ip", "-d", "link", "show", "flannel.1"); !strings.Contains(out, "local "+newIP+" ") {
			return fmt.Errorf("n2's flannel.1: %s", out)
		}
		if out, _ := n1.Exec("bridge", "fdb", "show", "dev", "flannel.1"); !strings.Contains(out, "dst "+newIP+" ") || strings.Contains(out, "dst "+oldIP+" ") {
			return fmt.Errorf("n1's FDB: %s", out)
		}
		return nil
	})
	moved := time.Since(start)
	took, err := h.converge(30 * time.Second)
	if err != nil {
		t.Error(err)
	}
	r := record{scenario: h.name, fault: "n2's eth0 re-addressed " + oldIP + " → " + newIP + ", its InternalIP updated", converge: moved + took}
	h.answeredAgain(15*time.Second, "pings answered both ways after the move")
	r.note = fmt.Sprintf("the InternalIP updated %s after the re-address; n2 sending from and publishing the new address, and n1's FDB entry pointing there, %s after the re-address; limit: a ping gap of 5 s (n2's flanneld watches its interface's addresses)",
		updated.Sub(start).Round(time.Millisecond), moved.Round(time.Millisecond))
	h.file(r, before)
	h.finish()
	last := results.list[len(results.list)-1]
	if limit := 5*time.Second + updated.Sub(start); last.gap > limit {
		t.Errorf("pings to and from n2 had a gap of %s, want at most 5s after the InternalIP update", last.gap)
	}
}
