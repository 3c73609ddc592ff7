package kube

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
)

func node(name, cidr string, ann map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}, Spec: v1.NodeSpec{PodCIDR: cidr}}
}

func TestEncodeMatchesFlannel(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	n := node("n1", "10.244.1.0/24", map[string]string{
		"flannel.alpha.coreos.com/backend-type": "vxlan",
		"flannel.alpha.coreos.com/backend-data": `{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}`,
		"flannel.alpha.coreos.com/public-ip":    "172.18.0.3",
	})
	l, err := a.Decode(a.Strip(n))
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Encode(l)
	if err != nil {
		t.Fatal(err)
	}
	if d := got["flannel.alpha.coreos.com/backend-data"]; d != `{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}` {
		t.Errorf("backend-data %s is not flannel's shape", d)
	}
	if got["flannel.alpha.coreos.com/kube-subnet-manager"] != "true" || got["flannel.alpha.coreos.com/public-ip"] != "172.18.0.3" || len(got) != 4 {
		t.Errorf("annotations %v", got)
	}
	hg, _ := a.Encode(&lease.Lease{BackendType: "host-gw", Nets: []lease.Net{{Subnet: l.Nets[0].Subnet, PublicIP: l.Nets[0].PublicIP}}})
	if hg["flannel.alpha.coreos.com/backend-data"] != "null" {
		t.Errorf("host-gw backend-data %q", hg["flannel.alpha.coreos.com/backend-data"])
	}
	// Dual-stack: flannel's v6 keys beside the v4 ones.
	dual, _ := a.Encode(&lease.Lease{BackendType: "vxlan", Nets: []lease.Net{
		{Subnet: netip.MustParsePrefix("10.244.1.0/24"), PublicIP: netip.MustParseAddr("172.18.0.3"), BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`)},
		{Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), PublicIP: netip.MustParseAddr("fc00::3"), BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`)},
	}})
	if dual["flannel.alpha.coreos.com/public-ipv6"] != "fc00::3" || dual["flannel.alpha.coreos.com/backend-v6-data"] != `{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}` || len(dual) != 6 {
		t.Errorf("dual-stack annotations %v", dual)
	}
}

func TestDecode(t *testing.T) {
	a, _ := NewAnnotations("example.com")
	good := func() map[string]string {
		return map[string]string{
			"example.com/backend-type": "vxlan",
			"example.com/backend-data": `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`,
			"example.com/public-ip":    "172.18.0.3",
		}
	}
	with := func(k, v string) map[string]string {
		m := good()
		if v == "<del>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		node     *v1.Node
		notReady bool
		wantErr  string
	}{
		{name: "no annotations at all", node: node("n", "10.244.0.0/24", nil), notReady: true},
		{name: "no podCIDR", node: node("n", "", good()), notReady: true},
		{name: "other prefix only", node: node("n", "10.244.0.0/24", map[string]string{"flannel.alpha.coreos.com/backend-type": "vxlan"}), notReady: true},
		{name: "bad podCIDR", node: node("n", "10.244.0.0/99", good()), wantErr: "spec.podCIDR"},
		{name: "missing public-ip", node: node("n", "10.244.0.0/24", with("example.com/public-ip", "<del>")), wantErr: "public-ip is missing"},
		{name: "garbage public-ip", node: node("n", "10.244.0.0/24", with("example.com/public-ip", "over there")), wantErr: "not an IPv4 address"},
		{name: "v6 public-ip for a v4 subnet", node: node("n", "10.244.0.0/24", with("example.com/public-ip", "fc00::1")), wantErr: "not an IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := a.Decode(a.Strip(tc.node))
			switch {
			case tc.notReady:
				if err != ErrNotReady {
					t.Errorf("got %v, %v; want ErrNotReady", l, err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("got error %v, want one with %q", err, tc.wantErr)
			}
		})
	}
	over := node("n", "10.244.0.0/24", with("example.com/public-ip-overwrite", "198.51.100.7"))
	l, err := a.Decode(a.Strip(over))
	if err != nil || len(l.Nets) != 1 || l.Nets[0].PublicIP.String() != "198.51.100.7" || string(l.Nets[0].BackendData) != `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}` {
		t.Errorf("overwrite: %+v %v", l, err)
	}
	// The backend's data is kept raw, for the backend to judge.
	if l, err := a.Decode(a.Strip(node("n", "10.244.0.0/24", with("example.com/backend-data", "{{{")))); err != nil || string(l.Nets[0].BackendData) != "{{{" {
		t.Errorf("raw backend data: %+v %v", l, err)
	}
	// Host bits in a podCIDR are masked, as the kernel would.
	if l, err := a.Decode(a.Strip(node("n", "10.244.0.7/24", good()))); err != nil || l.Nets[0].Subnet.String() != "10.244.0.0/24" {
		t.Errorf("podCIDR with host bits: %+v %v", l, err)
	}
}

// TestDecodeFamilies: a node's podCIDRs give one net per family that has a
// public address: a flannel running IPv4 only on a dual-stack cluster
// publishes no public-ipv6, and its node is an IPv4 peer.
func TestDecodeFamilies(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	v4 := map[string]string{
		"flannel.alpha.coreos.com/backend-type": "vxlan",
		"flannel.alpha.coreos.com/backend-data": `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`,
		"flannel.alpha.coreos.com/public-ip":    "172.18.0.3",
	}
	dualNode := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "d", Annotations: v4}, Spec: v1.NodeSpec{PodCIDR: "fd00:10:244:3::/64", PodCIDRs: []string{"fd00:10:244:3::/64", "10.244.3.0/24"}}}
	l, err := a.Decode(a.Strip(dualNode))
	if err != nil || len(l.Nets) != 1 || l.Nets[0].Subnet.String() != "10.244.3.0/24" {
		t.Fatalf("v4 annotations on a dual-stack node: %+v %v", l, err)
	}
	// As upstream flannel writes a dual-stack node (upstream's annotation
	// names and shapes, byte for byte).
	both := map[string]string{}
	for k, v := range v4 {
		both[k] = v
	}
	both["flannel.alpha.coreos.com/backend-v6-data"] = `{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`
	both["flannel.alpha.coreos.com/public-ipv6"] = "fc00:f853:ccd:e793::3"
	dualNode.Annotations = both
	l, err = a.Decode(a.Strip(dualNode))
	if err != nil || len(l.Nets) != 2 {
		t.Fatalf("dual-stack node: %+v %v", l, err)
	}
	if n, ok := l.Net(family.IPv4); !ok || n.Subnet.String() != "10.244.3.0/24" || n.PublicIP.String() != "172.18.0.3" {
		t.Errorf("IPv4 net %+v", n)
	}
	if n, ok := l.Net(family.IPv6); !ok || n.Subnet.String() != "fd00:10:244:3::/64" || n.PublicIP.String() != "fc00:f853:ccd:e793::3" || string(n.BackendData) != `{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}` {
		t.Errorf("IPv6 net %+v", n)
	}
	if l.Nets[0].Family() != family.IPv4 {
		t.Errorf("nets are not in family order: %+v", l.Nets)
	}
	// public-ipv6-overwrite replaces the IPv6 address only, as flannel's
	// public-ip-overwrite does the IPv4 one.
	both["flannel.alpha.coreos.com/public-ipv6-overwrite"] = "2001:db8::7"
	l, err = a.Decode(a.Strip(dualNode))
	if n, ok := l.Net(family.IPv6); err != nil || !ok || n.PublicIP.String() != "2001:db8::7" {
		t.Errorf("IPv6 net with public-ipv6-overwrite: %+v %v", n, err)
	}
	if n, _ := l.Net(family.IPv4); n.PublicIP.String() != "172.18.0.3" {
		t.Errorf("public-ipv6-overwrite changed the IPv4 address: %+v", n)
	}
	delete(both, "flannel.alpha.coreos.com/public-ipv6-overwrite")
	both["flannel.alpha.coreos.com/public-ipv6"] = "172.18.0.3"
	if _, err := a.Decode(a.Strip(dualNode)); err == nil || !strings.Contains(err.Error(), "public-ipv6") {
		t.Errorf("a v4 address in public-ipv6: %v", err)
	}
}

func TestStripKeepsOnlyWhatPeersNeed(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	n := node("n1", "10.244.1.0/24", map[string]string{
		"flannel.alpha.coreos.com/public-ip": "172.18.0.3",
		"node.alpha.kubernetes.io/ttl":       "0",
	})
	n.Labels = map[string]string{"a": "b"}
	n.Status.Images = make([]v1.ContainerImage, 30)
	if dual := a.Strip(&v1.Node{Spec: v1.NodeSpec{PodCIDR: "fd00::/64", PodCIDRs: []string{"fd00::/64", "10.244.3.0/24"}}}); !slices.Equal(dual.PodCIDRs, []string{"fd00::/64", "10.244.3.0/24"}) {
		t.Errorf("dual-stack podCIDRs: got %q", dual.PodCIDRs)
	}
	s := a.Strip(n)
	if s.Name != "n1" || !slices.Equal(s.PodCIDRs, []string{"10.244.1.0/24"}) || len(s.Annotations) != 1 || s.Labels != nil {
		t.Errorf("stripped node: %+v", s)
	}
}

func TestNewAnnotationsRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"", "a/b", "with space"} {
		if _, err := NewAnnotations(p); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}
