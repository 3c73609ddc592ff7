package expected

import (
	"net"
	"slices"
	"strings"
	"testing"
)

// save is iptables-save of a node with flanneld's rules and kube-proxy's
// jumps inserted before them.
const save = `*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
-A INPUT -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -m comment --comment "flanneld guard" -j FLANNEL-VXLAN-GUARD
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-VXLAN-GUARD -p udp -m udp --dport 8472 -m set ! --match-set FLANNEL-VXLAN-PEERS src -m comment --comment "flanneld guard" -j DROP
COMMIT
`

func TestRulesMissing(t *testing.T) {
	_, own, _ := net.ParseCIDR("10.244.1.0/24")
	r := Rules{Network: "10.244.0.0/16", IPMasq: true}
	without := func(sub string) string {
		var keep []string
		for _, l := range strings.Split(save, "\n") {
			if !strings.Contains(l, sub) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	cases := []struct {
		name string
		save string
		own  *net.IPNet
		r    Rules
		want []string
	}{
		{"all there, after kube-proxy's jumps", save, own, r, nil},
		{"FORWARD's jump gone", without("-A FORWARD -m comment --comment \"flanneld"), own, r, []string{"FORWARD → FLANNEL-FWD (0 of 1)"}},
		{"masquerade chain flushed", without("-A FLANNEL-POSTRTG"), own, r, []string{
			"FLANNEL-POSTRTG keeps 10.244.1.0/24's addresses (0 of 3)", "FLANNEL-POSTRTG masquerades (0 of 2)"}},
		{"no podCIDR yet: no masquerade asked", without("POSTRTG"), nil, r, nil},
		{"no --ip-masq", without("POSTRTG"), own, Rules{Network: r.Network}, nil},
		{"nothing", "", own, r, []string{
			"FORWARD → FLANNEL-FWD (0 of 1)", "FLANNEL-FWD accepts 10.244.0.0/16 both ways (0 of 2)",
			"POSTROUTING → FLANNEL-POSTRTG (0 of 1)", "FLANNEL-POSTRTG keeps 10.244.1.0/24's addresses (0 of 3)", "FLANNEL-POSTRTG masquerades (0 of 2)",
			"INPUT → FLANNEL-VXLAN-GUARD (0 of 1)", "FLANNEL-VXLAN-GUARD drops (0 of 1)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := RulesMissing(c.save, c.r, c.own); !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
