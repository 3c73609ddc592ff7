package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// events counts the Warning Events of reason on node whose message names
// every one of names.
func (h *harness) events(node, reason string, names ...string) int {
	h.t.Helper()
	events, err := h.client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, ev := range events.Items {
		if ev.Reason != reason || ev.InvolvedObject.Name != node || ev.Type != v1.EventTypeWarning {
			continue
		}
		if !slices.ContainsFunc(names, func(s string) bool { return !strings.Contains(ev.Message, s) }) {
			n++
		}
	}
	return n
}

func TestPublicIPsIndex(t *testing.T) {
	p := newPublicIPs()
	a, b := netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("172.18.0.4")
	check := func(name string, addrs []netip.Addr, wantIP netip.Addr, wantOther string) {
		t.Helper()
		if ip, other := p.set(name, addrs); ip != wantIP || other != wantOther {
			t.Errorf("set(%s, %v) = %v, %q; want %v, %q", name, addrs, ip, other, wantIP, wantOther)
		}
	}
	check("n0", []netip.Addr{a}, netip.Addr{}, "")
	check("n0", []netip.Addr{a}, netip.Addr{}, "") // set again: not its own twin
	check("n9", []netip.Addr{a}, a, "n0")
	check("n0", []netip.Addr{a}, a, "n9")
	check("n9", []netip.Addr{b}, netip.Addr{}, "") // moved away
	check("n0", []netip.Addr{a}, netip.Addr{}, "")
	check("n5", []netip.Addr{b}, b, "n9")
	check("n9", nil, netip.Addr{}, "") // forgotten
	check("n5", []netip.Addr{b}, netip.Addr{}, "")
}

// TestSharedPublicIP: two peers publishing one public address are both
// programmed (they take no kernel slot from each other) and warned about,
// once each, naming both, however many full reconciles follow; a peer
// publishing this node's own address is warned about too.
func TestSharedPublicIP(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("node-0 programmed", h.node0Programmed())
	ctx := context.Background()
	nodes := h.client.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, peerNode("node-7", "10.244.7.0/24", "172.18.0.3", "0a:00:00:00:00:70"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(ctx, peerNode("node-8", "10.244.8.0/24", "172.18.0.2", "0a:00:00:00:00:80"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	both := h.stateIs(
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:10 dev flannel.1",
		"fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1",
		"route 10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink",
		"neigh 10.244.7.0 lladdr 0a:00:00:00:00:70 dev flannel.1",
		"fdb 0a:00:00:00:00:70 dst 172.18.0.3 dev flannel.1",
		"route 10.244.8.0/24 via 10.244.8.0 dev flannel.1 onlink",
		"neigh 10.244.8.0 lladdr 0a:00:00:00:00:80 dev flannel.1",
		"fdb 0a:00:00:00:00:80 dst 172.18.0.2 dev flannel.1",
	)
	h.eventually("all three programmed", both)
	h.eventually("a PublicIPConflict on node-7 naming node-0", func() bool { return h.events("node-7", "PublicIPConflict", "node-7", "node-0", "172.18.0.3") == 1 })
	h.eventually("a PublicIPConflict on node-8 naming this node", func() bool { return h.events("node-8", "PublicIPConflict", "node-8", "node-1", "172.18.0.2") == 1 })
	for range 3 {
		h.full()
		if !both() {
			t.Fatalf("a full reconcile changed the entries: %q", h.k.Dump())
		}
	}
	// node-0 is warned about at the first full reconcile that sees node-7.
	for _, c := range []struct{ node, other string }{{"node-7", "node-0"}, {"node-0", "node-7"}, {"node-8", "node-1"}} {
		if n := h.events(c.node, "PublicIPConflict", c.node, c.other); n != 1 {
			t.Errorf("%d PublicIPConflict events on %s naming %s after three full reconciles, want 1", n, c.node, c.other)
		}
	}
	// node-7 goes: node-0 is clean again, and stays programmed.
	if err := nodes.Delete(ctx, "node-7", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-7's entries gone", func() bool {
		return !slices.ContainsFunc(h.k.Dump(), func(s string) bool { return strings.Contains(s, "0a:00:00:00:00:70") })
	})
	h.full()
	if !slices.Contains(h.k.Dump(), "fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1") {
		t.Errorf("node-0 lost its entries: %q", h.k.Dump())
	}
	if n := h.events("node-0", "PublicIPConflict"); n != 1 {
		t.Errorf("%d PublicIPConflict events on node-0 after node-7 went, want the 1 from before", n)
	}
}

// TestOwnPodCIDRChanged: this node's Node created anew with another
// podCIDR under a running flanneld: the old subnet stays served (subnet.env,
// the device, the peers' entries) and a Warning says what to do.
func TestOwnPodCIDRChanged(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("node-0 programmed", h.node0Programmed())
	env := filepath.Join(h.dir, "run/flannel/subnet.env")
	before, err := os.ReadFile(env)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nodes := h.client.CoreV1().Nodes()
	if err := nodes.Delete(ctx, "node-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: v1.NodeSpec{PodCIDR: "10.244.5.0/24", PodCIDRs: []string{"10.244.5.0/24"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("a PodCIDRChanged event", func() bool {
		return h.events("node-1", "PodCIDRChanged", "10.244.5.0/24", "10.244.1.0/24", "restart flanneld's pod") == 1
	})
	for range 3 {
		h.full()
	}
	if n := h.events("node-1", "PodCIDRChanged"); n != 1 {
		t.Errorf("%d PodCIDRChanged events after three full reconciles, want 1", n)
	}
	if after, _ := os.ReadFile(env); string(after) != string(before) {
		t.Errorf("subnet.env changed:\n%s\nwas:\n%s", after, before)
	}
	if !h.node0Programmed()() {
		t.Errorf("peer entries changed: %q", h.k.Dump())
	}
	// The annotations of the Node created anew are published again.
	h.eventually("annotations published again", func() bool {
		n, err := nodes.Get(ctx, "node-1", metav1.GetOptions{})
		return err == nil && n.Annotations[pfx+"public-ip"] == "172.18.0.2"
	})
}
