package simnodes

import (
	"encoding/json"
	"net"
	"testing"
)

// TestDistinct checks that no two simulated Nodes share a name, podCIDR,
// public IP or VTEP MAC, which would make them conflicting peers.
func TestDistinct(t *testing.T) {
	seen := map[string]int{}
	for i := 0; i < Max; i++ {
		for _, k := range []string{Name(i), PodCIDR(i), PublicIP(i).String(), MAC(i).String()} {
			if j, ok := seen[k]; ok {
				t.Fatalf("Nodes %d and %d share %s", j, i, k)
			}
			seen[k] = i
		}
	}
}

// TestNode checks that a Node carries what a vxlan peer publishes.
func TestNode(t *testing.T) {
	for _, o := range []Options{{}, {Dual: true}} {
		n := Node(4321, o)
		a := n.Annotations
		var data struct{ VtepMAC string }
		if err := json.Unmarshal([]byte(a["flannel.alpha.coreos.com/backend-data"]), &data); err != nil || data.VtepMAC != MAC(4321).String() {
			t.Errorf("%+v: backend-data %q", o, a["flannel.alpha.coreos.com/backend-data"])
		}
		if ip := net.ParseIP(a["flannel.alpha.coreos.com/public-ip"]); !ip.Equal(PublicIP(4321)) {
			t.Errorf("%+v: public-ip %q", o, a["flannel.alpha.coreos.com/public-ip"])
		}
		if _, cidr, err := net.ParseCIDR(n.Spec.PodCIDR); err != nil || cidr.String() != PodCIDR(4321) {
			t.Errorf("%+v: podCIDR %q", o, n.Spec.PodCIDR)
		}
		if want := map[bool]int{false: 0, true: 2}[o.Dual]; len(n.Spec.PodCIDRs) != want {
			t.Errorf("%+v: podCIDRs %q", o, n.Spec.PodCIDRs)
		}
	}
}
