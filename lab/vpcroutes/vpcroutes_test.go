package vpcroutes

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv/netns"
)

func node(name, ip string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
	}
	return n
}

func r(dst, via string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Via: netip.MustParseAddr(via)}
}

func TestDesired(t *testing.T) {
	nodes := []*corev1.Node{
		node("b", "172.18.0.3", "10.244.1.0/24"),
		node("a", "172.18.0.2", "10.244.0.0/24"),
		node("no-cidr-yet", "172.18.0.4"),
		node("no-address-yet", "", "10.244.3.0/24"),
		// Dual-stack: each family's CIDR via that family's address; a
		// family without an address is left out.
		{ObjectMeta: metav1.ObjectMeta{Name: "dual"},
			Spec:   corev1.NodeSpec{PodCIDRs: []string{"10.244.5.0/24", "fd00:10:244:5::/64"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.18.0.7"}, {Type: corev1.NodeInternalIP, Address: "fc00::7"}}}},
		node("v4-address-only", "172.18.0.8", "fd00:10:244:8::/64"),
	}
	got := Desired(nodes)
	want := []Route{r("10.244.0.0/24", "172.18.0.2"), r("10.244.1.0/24", "172.18.0.3"), r("10.244.5.0/24", "172.18.0.7"), r("fd00:10:244:5::/64", "fc00::7")}
	if !slices.Equal(got, want) {
		t.Errorf("Desired = %v, want %v", got, want)
	}
}

func TestDiff(t *testing.T) {
	have := []Route{r("10.244.0.0/24", "172.18.0.2"), r("10.244.1.0/24", "172.18.0.9"), r("10.244.2.0/24", "172.18.0.4")}
	want := []Route{r("10.244.0.0/24", "172.18.0.2"), r("10.244.1.0/24", "172.18.0.3"), r("10.244.3.0/24", "172.18.0.5")}
	put, remove := Diff(have, want)
	if !slices.Equal(put, []Route{r("10.244.1.0/24", "172.18.0.3"), r("10.244.3.0/24", "172.18.0.5")}) {
		t.Errorf("put = %v: want the moved and the new route", put)
	}
	if !slices.Equal(remove, []Route{r("10.244.2.0/24", "172.18.0.4")}) {
		t.Errorf("remove = %v: want the gone node's route only (the moved one is replaced)", remove)
	}
	if put, remove := Diff(want, want); len(put)+len(remove) != 0 {
		t.Errorf("no change: put %v, remove %v", put, remove)
	}
}

// TestKernel reconciles a throwaway namespace's real route table: routes
// appear, move and go, and routes it does not own stay.
func TestKernel(t *testing.T) {
	n := netns.New(t)
	n.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	n.Run(t, "ip", "addr", "add", "172.18.0.1/16", "dev", "br0")
	n.Run(t, "ip", "link", "set", "br0", "up")
	n.Run(t, "ip", "route", "add", "10.99.0.0/16", "via", "172.18.0.50")
	k := Kernel{H: n.Netlink}
	want := []Route{r("10.244.0.0/24", "172.18.0.2"), r("10.244.1.0/24", "172.18.0.3")}
	if _, _, err := Reconcile(k, want); err != nil {
		t.Fatal(err)
	}
	got, err := k.List()
	if err != nil {
		t.Fatal(err)
	}
	if slices.SortFunc(got, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) }); !slices.Equal(got, want) {
		t.Errorf("after reconcile the table holds %v, want %v", got, want)
	}
	want = []Route{r("10.244.1.0/24", "172.18.0.4")}
	put, remove, err := Reconcile(k, want)
	if err != nil || len(put) != 1 || len(remove) != 1 {
		t.Fatalf("second reconcile: put %v, remove %v, %v", put, remove, err)
	}
	out := n.Run(t, "ip", "-4", "route", "show")
	for _, s := range []string{"10.244.1.0/24 via 172.18.0.4 dev br0 proto 116", "10.99.0.0/16 via 172.18.0.50 dev br0"} {
		if !contains(out, s) {
			t.Errorf("route table lacks %q:\n%s", s, out)
		}
	}
	if contains(out, "10.244.0.0/24") {
		t.Errorf("the gone node's route stayed:\n%s", out)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
