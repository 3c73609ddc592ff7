package kube

import (
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
)

// FuzzDecode: a peer's podCIDRs and annotations are outside input. Decode
// never panics; what it accepts is a consistent lease (masked subnets, one
// net per family, public addresses of the subnet's family), and publishing
// that lease with Encode and reading it back gives the same lease.
func FuzzDecode(f *testing.F) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	f.Add("10.244.1.0/24", "", "vxlan", `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`, "172.18.0.3", "", "", "", "")
	f.Add("10.244.1.0/24", "fd00:10:244:1::/64", "vxlan", `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`, "172.18.0.3", "", `{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`, "fc00::3", "")
	f.Add("fd00::/64", "", "host-gw", "null", "", "198.51.100.1", "null", "fc00::3", "fc00::9")
	f.Add("10.244.1.7/24", "10.244.2.0/24", "", "", "::ffff:1.2.3.4", "1.2.3.4%eth0", "", "", "")
	f.Fuzz(func(t *testing.T, cidr1, cidr2, btype, data4, pub4, over4, data6, pub6, over6 string) {
		ann := map[string]string{}
		set := func(k, v string) {
			if v != "" {
				ann[k] = v
			}
		}
		set(a.BackendType, btype)
		k4, k6 := a.For(family.IPv4), a.For(family.IPv6)
		set(k4.BackendData, data4)
		set(k4.PublicIP, pub4)
		set(k4.PublicIPOverwrite, over4)
		set(k6.BackendData, data6)
		set(k6.PublicIP, pub6)
		set(k6.PublicIPOverwrite, over6)
		node := &PeerNode{PodCIDRs: []string{cidr1, cidr2}}
		node.Name = "peer"
		node.Annotations = ann
		l, err := a.Decode(node)
		if err != nil {
			return
		}
		seen := map[family.Family]bool{}
		for _, n := range l.Nets {
			f := n.Family()
			if seen[f] || n.Subnet.Masked() != n.Subnet || family.Of(n.PublicIP) != f || n.PublicIP.Zone() != "" || n.PublicIP.Is4In6() {
				t.Fatalf("inconsistent lease %+v from %q", l, ann)
			}
			seen[f] = true
		}
		enc, err := a.Encode(l)
		if err != nil {
			t.Fatalf("Encode of an accepted lease: %v", err)
		}
		back := &PeerNode{PodCIDRs: subnets(l)}
		back.Name = "peer"
		back.Annotations = enc
		l2, err := a.Decode(back)
		if err != nil {
			t.Fatalf("Decode of what Encode wrote (%q): %v", enc, err)
		}
		if !sameLease(l, l2) {
			t.Fatalf("round trip changed the lease:\n %+v\n %+v", l, l2)
		}
	})
}

func subnets(l *lease.Lease) []string {
	out := make([]string, len(l.Nets))
	for i, n := range l.Nets {
		out[i] = n.Subnet.String()
	}
	return out
}

func sameLease(a, b *lease.Lease) bool {
	if a.BackendType != b.BackendType || len(a.Nets) != len(b.Nets) {
		return false
	}
	for i := range a.Nets {
		x, y := a.Nets[i], b.Nets[i]
		// Encode writes "null" for absent data, which Decode keeps raw.
		dx, dy := string(x.BackendData), string(y.BackendData)
		if dx == "" {
			dx = "null"
		}
		if x.Subnet != y.Subnet || x.PublicIP != y.PublicIP || strings.TrimSpace(dx) != strings.TrimSpace(dy) {
			return false
		}
	}
	return true
}
