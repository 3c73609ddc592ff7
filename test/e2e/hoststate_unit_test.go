package e2e

import (
	"net"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
)

// goodState is hostStateScript's output on node a (172.18.0.3, 10.244.1.0/24)
// with one peer b (172.18.0.4, 10.244.2.0/24) and one pod, in the formats
// iproute2 6.1 and iptables 1.8.9 print.
const goodState = `### link@4
[{"ifindex":5,"ifname":"flannel.1","mtu":1450,"address":"aa:aa:aa:aa:aa:01","linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"172.18.0.3","dev":"eth0","port":8472,"learning":false}}}]
### eth0
[{"ifindex":2,"ifname":"eth0","mtu":1500,"address":"02:42:ac:12:00:03"}]
### addr@4
[{"ifindex":5,"ifname":"flannel.1","mtu":1450,"addr_info":[{"family":"inet","local":"10.244.1.0","prefixlen":32},{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]
### route@4
[{"dst":"10.244.2.0/24","gateway":"10.244.2.0","flags":["onlink"]}]
### neigh@4
[{"dst":"10.244.2.0","lladdr":"bb:bb:bb:bb:bb:02","state":["PERMANENT"]}]
### fdb@4
[{"mac":"bb:bb:bb:bb:bb:02","dst":"172.18.0.4","flags":["self"],"state":"permanent"}]
### subnetenv
FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
### cni0
[{"ifindex":6,"ifname":"cni0","mtu":1450,"addr_info":[{"family":"inet","local":"10.244.1.1","prefixlen":24}]}]
### ports
[{"ifindex":7,"ifname":"veth1234","mtu":1450}]
### nat@4
*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
### filter@4
*filter
:FORWARD ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
`

func TestCheckHostState(t *testing.T) {
	_, aCIDR, _ := net.ParseCIDR("10.244.1.0/24")
	_, bCIDR, _ := net.ParseCIDR("10.244.2.0/24")
	a := overlayNode{Name: "a", IP: net.ParseIP("172.18.0.3"), PodCIDR: aCIDR, VtepMAC: "aa:aa:aa:aa:aa:01"}
	b := overlayNode{Name: "b", IP: net.ParseIP("172.18.0.4"), PodCIDR: bCIDR, VtepMAC: "BB:BB:BB:BB:BB:02"}

	cases := []struct {
		name     string
		old, new string // a replacement in goodState
		peers    []overlayNode
		pods     []string
		want     string // a substring of one problem; "" = no problem
	}{
		{name: "good", peers: []overlayNode{b}, pods: []string{"10.244.1.5"}},
		{name: "learning on", old: `"learning":false`, new: `"learning":true`, peers: []overlayNode{b}, want: "learning is on"},
		{name: "wrong VNI", old: `"id":1,`, new: `"id":2,`, peers: []overlayNode{b}, want: "VNI = 2"},
		{name: "wrong port", old: `"port":8472`, new: `"port":4789`, peers: []overlayNode{b}, want: "dstport = 4789"},
		{name: "wrong local", old: `"local":"172.18.0.3","dev"`, new: `"local":"172.18.0.9","dev"`, peers: []overlayNode{b}, want: "local = \"172.18.0.9\""},
		{name: "wrong MTU", old: `"ifname":"flannel.1","mtu":1450,"address"`, new: `"ifname":"flannel.1","mtu":1500,"address"`, peers: []overlayNode{b}, want: "MTU = 1500"},
		{name: "no device", old: `[{"ifindex":5,"ifname":"flannel.1","mtu":1450,"address":"aa:aa:aa:aa:aa:01","linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"172.18.0.3","dev":"eth0","port":8472,"learning":false}}}]`, new: `Device "flannel.1" does not exist.`, peers: []overlayNode{b}, want: "no flannel.1"},
		{name: "route without onlink", old: `"flags":["onlink"]`, new: `"flags":[]`, peers: []overlayNode{b}, want: "want `via 10.244.2.0 onlink`"},
		{name: "stale peer", peers: nil, want: "stale route"},
		{name: "missing peer", peers: []overlayNode{b, {Name: "c", IP: net.ParseIP("172.18.0.5"), PodCIDR: &net.IPNet{IP: net.IP{10, 244, 3, 0}, Mask: net.CIDRMask(24, 32)}, VtepMAC: "cc:cc:cc:cc:cc:03"}}, want: "no FDB entry for c"},
		{name: "neighbour not permanent", old: `"state":["PERMANENT"]`, new: `"state":["REACHABLE"]`, peers: []overlayNode{b}, want: "want lladdr BB:BB:BB:BB:BB:02 PERMANENT"},
		{name: "FDB to wrong node", old: `"dst":"172.18.0.4"`, new: `"dst":"172.18.0.7"`, peers: []overlayNode{b}, want: "has dst 172.18.0.7"},
		{name: "subnet.env wrong subnet", old: "FLANNEL_SUBNET=10.244.1.1/24", new: "FLANNEL_SUBNET=10.244.7.1/24", peers: []overlayNode{b}, want: "FLANNEL_SUBNET"},
		{name: "no masquerade", old: "FLANNEL_IPMASQ=true", new: "FLANNEL_IPMASQ=false", peers: []overlayNode{b}, want: "FLANNEL_IPMASQ"},
		{name: "nat chain not hooked", old: `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`, new: "", peers: []overlayNode{b}, want: "POSTROUTING does not jump"},
		{name: "older Twill's network-wide RETURN", old: "-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16", new: "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16", peers: []overlayNode{b}},
		{name: "pod-to-pod masqueraded", old: "-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN\n", new: "", peers: []overlayNode{b}, want: "-j RETURN"},
		{name: "masquerade rule missing", old: "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n", new: "", peers: []overlayNode{b}, want: "MASQUERADE"},
		{name: "inbound to own subnet masqueraded", old: "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24", new: "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.7.0/24", peers: []overlayNode{b}, want: "10\\.244\\.1\\.0/24 .*-j RETURN"},
		{name: "forward chain missing", old: ":FLANNEL-FWD - [0:0]", new: "", peers: []overlayNode{b}, want: "no chain FLANNEL-FWD"},
		{name: "bridge address", old: `"local":"10.244.1.1","prefixlen":24`, new: `"local":"10.244.1.2","prefixlen":24`, peers: []overlayNode{b}, pods: []string{"10.244.1.5"}, want: "cni0 addresses"},
		{name: "veth per pod", peers: []overlayNode{b}, pods: []string{"10.244.1.5", "10.244.1.6"}, want: "cni0 has 1 ports"},
		{name: "pod outside podCIDR", peers: []overlayNode{b}, pods: []string{"10.244.9.5"}, want: "outside the node's podCIDR"},
		{name: "a second family in subnet.env", old: "FLANNEL_MTU=1450", new: "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1450", peers: []overlayNode{b}, want: "families [IPv4 IPv6]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			judgeCase(t, goodState, tc.old, tc.new, tc.want, func(out string) ([]error, []string) {
				v4 := specsOf([]family.Family{family.IPv4})
				st, errs := parseHostState(out, v4)
				problems := checkHostState(a, tc.peers, v4[0], st)
				problems = append(problems, checkSubnetEnv(v4, st)...)
				return errs, append(problems, checkBridge([]overlayNode{a}, len(tc.pods), tc.pods, st)...)
			})
		})
	}
}

// goodStateV6 is hostStateScript's output for the IPv6 plane of dual-stack
// node a (fc00:f853:ccd:e793::3, fd00:10:244:1::/64) with one peer b
// (fc00:f853:ccd:e793::4, fd00:10:244:2::/64), as iproute2 6.1 and
// ip6tables 1.8.9 print it; the IPv4 plane is goodState's.
const goodStateV6 = `### link@6
[{"ifindex":8,"ifname":"flannel-v6.1","mtu":1430,"address":"aa:aa:aa:aa:aa:61","linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local6":"fc00:f853:ccd:e793::3","dev":"eth0","port":8472,"learning":false}}}]
### addr@6
[{"ifindex":8,"ifname":"flannel-v6.1","mtu":1430,"addr_info":[{"family":"inet6","local":"fd00:10:244:1::","prefixlen":128,"scope":"global"},{"family":"inet6","local":"fe80::a8aa:aaff:feaa:aa61","prefixlen":64,"scope":"link"}]}]
### route@6
[{"dst":"fd00:10:244:1::","dev":"flannel-v6.1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fd00:10:244:2::/64","gateway":"fd00:10:244:2::","dev":"flannel-v6.1","metric":1024,"flags":["onlink"],"pref":"medium"},{"dst":"fe80::/64","dev":"flannel-v6.1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}]
### neigh@6
[{"dst":"fd00:10:244:2::","lladdr":"bb:bb:bb:bb:bb:62","state":["PERMANENT"]}]
### fdb@6
[{"mac":"bb:bb:bb:bb:bb:62","dst":"fc00:f853:ccd:e793::4","flags":["self"],"state":"permanent"}]
### nat@6
*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
### filter@6
*filter
:FORWARD ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
`

// TestCheckHostStateDualStack judges a dual-stack node: both planes, the
// shared subnet.env (both pairs of keys, the narrower MTU) and cni0 with a
// gateway of each family.
func TestCheckHostStateDualStack(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	a4 := overlayNode{Name: "a", IP: net.ParseIP("172.18.0.3"), PodCIDR: cidr("10.244.1.0/24"), VtepMAC: "aa:aa:aa:aa:aa:01"}
	b4 := overlayNode{Name: "b", IP: net.ParseIP("172.18.0.4"), PodCIDR: cidr("10.244.2.0/24"), VtepMAC: "bb:bb:bb:bb:bb:02"}
	a6 := overlayNode{Name: "a", IP: net.ParseIP("fc00:f853:ccd:e793::3"), PodCIDR: cidr("fd00:10:244:1::/64"), VtepMAC: "aa:aa:aa:aa:aa:61"}
	b6 := overlayNode{Name: "b", IP: net.ParseIP("fc00:f853:ccd:e793::4"), PodCIDR: cidr("fd00:10:244:2::/64"), VtepMAC: "bb:bb:bb:bb:bb:62"}
	dual := strings.NewReplacer(
		"FLANNEL_MTU=1450", "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430",
		`"prefixlen":24}]}]`, `"prefixlen":24},{"family":"inet6","local":"fd00:10:244:1::1","prefixlen":64,"scope":"global"}]}]`,
	).Replace(goodState) + goodStateV6
	pods := []string{"10.244.1.5", "fd00:10:244:1::5"}

	cases := []struct {
		name, old, new string
		want           string // a substring of one problem; "" = no problem
	}{
		{name: "good"},
		{name: "v6 MTU of IPv4", old: `"ifname":"flannel-v6.1","mtu":1430,"address"`, new: `"ifname":"flannel-v6.1","mtu":1450,"address"`, want: "flannel-v6.1 MTU = 1450, want eth0 MTU 1500 - 70 = 1430"},
		{name: "pods get the IPv4 MTU", old: "FLANNEL_MTU=1430", new: "FLANNEL_MTU=1450", want: "FLANNEL_MTU = 1450, want 1430"},
		{name: "v6 local is the IPv4 address", old: `"local6":"fc00:f853:ccd:e793::3"`, new: `"local":"172.18.0.3"`, want: "flannel-v6.1 local"},
		{name: "VTEP address not a /128", old: `"local":"fd00:10:244:1::","prefixlen":128`, new: `"local":"fd00:10:244:1::","prefixlen":64`, want: "want [fd00:10:244:1::/128]"},
		{name: "v6 route without onlink", old: `"metric":1024,"flags":["onlink"]`, new: `"metric":1024,"flags":[]`, want: "want `via fd00:10:244:2:: onlink`"},
		{name: "v6 FDB to the IPv4 address", old: `"dst":"fc00:f853:ccd:e793::4"`, new: `"dst":"172.18.0.4"`, want: "has dst 172.18.0.4"},
		{name: "stale v6 neighbour", old: `"state":["PERMANENT"]}]
### fdb@6`, new: `"state":["PERMANENT"]},{"dst":"fd00:10:244:9::","lladdr":"cc:cc:cc:cc:cc:63","state":["PERMANENT"]}]
### fdb@6`, want: "stale neighbour on flannel-v6.1"},
		{name: "no IPv6 keys in subnet.env", old: "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n", new: "", want: "subnet.env FLANNEL_IPV6_NETWORK"},
		{name: "IPv6 subnet of another node", old: "FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64", new: "FLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64", want: "FLANNEL_IPV6_SUBNET = fd00:10:244:2::1/64, want fd00:10:244:1::1/64"},
		{name: "no ip6tables masquerade", old: "-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n", new: "", want: "ip6tables-save nat: no rule matching"},
		{name: "no IPv6 gateway on cni0", old: `,{"family":"inet6","local":"fd00:10:244:1::1","prefixlen":64,"scope":"global"}`, new: "", want: "cni0 addresses"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			judgeCase(t, dual, tc.old, tc.new, tc.want, func(out string) ([]error, []string) {
				specs := specsOf([]family.Family{family.IPv4, family.IPv6})
				st, errs := parseHostState(out, specs)
				problems := append(checkHostState(a4, []overlayNode{b4}, specs[0], st), checkHostState(a6, []overlayNode{b6}, specs[1], st)...)
				problems = append(problems, checkSubnetEnv(specs, st)...)
				return errs, append(problems, checkBridge([]overlayNode{a4, a6}, 1, pods, st)...)
			})
		})
	}
}

// judgeCase replaces old by new in fixture (no change for an empty old),
// judges the result, and wants no problem (want empty) or one mentioning
// want.
func judgeCase(t *testing.T, fixture, old, new, want string, judge func(out string) ([]error, []string)) {
	t.Helper()
	out := fixture
	if old != "" {
		if !strings.Contains(out, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		out = strings.Replace(out, old, new, 1)
	}
	errs, problems := judge(out)
	if want == "" {
		if len(errs) > 0 || len(problems) > 0 {
			t.Fatalf("parse errors %v, problems %v; want none", errs, problems)
		}
		return
	}
	for _, p := range problems {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Fatalf("problems %q (parse errors %v) do not mention %q", problems, errs, want)
}
