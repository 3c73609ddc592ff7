package kube

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	if got["flannel.alpha.coreos.com/kube-subnet-manager"] != "true" || got["flannel.alpha.coreos.com/public-ip"] != "172.18.0.3" {
		t.Errorf("annotations %v", got)
	}
	hg, _ := a.Encode(&lease.Lease{BackendType: "host-gw", PublicIP: l.PublicIP})
	if hg["flannel.alpha.coreos.com/backend-data"] != "null" {
		t.Errorf("host-gw backend-data %q", hg["flannel.alpha.coreos.com/backend-data"])
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
		{name: "garbage backend-data", node: node("n", "10.244.0.0/24", with("example.com/backend-data", "{{{")), wantErr: "backend-data"},
		{name: "bad mac", node: node("n", "10.244.0.0/24", with("example.com/backend-data", `{"VNI":1,"VtepMAC":"zz"}`)), wantErr: "VtepMAC"},
		{name: "multicast mac", node: node("n", "10.244.0.0/24", with("example.com/backend-data", `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`)), wantErr: "unicast"},
		{name: "bad vni", node: node("n", "10.244.0.0/24", with("example.com/backend-data", `{"VNI":-4,"VtepMAC":"0a:00:00:00:00:01"}`)), wantErr: "VNI -4"},
		{name: "unknown backend", node: node("n", "10.244.0.0/24", with("example.com/backend-type", "udp")), wantErr: "not a known backend"},
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
	if err != nil || l.PublicIP.String() != "198.51.100.7" || l.VtepMAC.String() != "0a:00:00:00:00:01" {
		t.Errorf("overwrite: %+v %v", l, err)
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
	if dual := a.Strip(&v1.Node{Spec: v1.NodeSpec{PodCIDRs: []string{"fd00::/64", "10.244.3.0/24"}}}); dual.PodCIDR != "10.244.3.0/24" {
		t.Errorf("dual-stack podCIDRs: got %q", dual.PodCIDR)
	}
	s := a.Strip(n)
	if s.Name != "n1" || s.PodCIDR != "10.244.1.0/24" || len(s.Annotations) != 1 || s.Labels != nil {
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
