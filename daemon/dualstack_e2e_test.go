//go:build e2e

package daemon_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

const dualNetConf = `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "NoMasqueradeCIDRs": ["2001:db8::/64"], "Backend": {"Type": "vxlan"}}`

// v6State is what the IPv6 plane of a node shows, each part as the tools
// print it.
const v6State = `
echo "### link";   ip -d -o link show flannel-v6.1
echo "### addr";   ip -6 -o addr show dev flannel-v6.1 scope global
echo "### route";  ip -6 route show dev flannel-v6.1
echo "### neigh";  ip -6 neigh show dev flannel-v6.1
echo "### fdb";    bridge fdb show dev flannel-v6.1
echo "### nat";    ip6tables-save -t nat | grep -e FLANNEL
echo "### filter"; ip6tables-save -t filter | grep -e FLANNEL
echo "### guard";  ipset save FLANNEL-VXLAN-PEERS-V6 | grep ^add
`

// TestDualStack runs two dual-stack flanneld processes against a real API
// server and checks the IPv6 plane on n1 exactly: the device flannel-v6.1
// (VNI 1, the node's IPv6 underlay address as local, MTU 1500 − 70, the v6
// subnet address as a /128), one neighbour, FDB entry and onlink route for
// the peer, flannel's ip6tables chains with the IPv6 no-masquerade
// destination and the tunnel guard with its IPv6 set of peers; pods'
// subnets reach each other over IPv6; and further full
// reconciles (every second) change nothing: the state stays byte for byte
// the same and every reconcile reports no change.
func TestDualStack(t *testing.T) {
	c := newDualCluster(t)
	ns := c.nodes
	args := []string{"--ip-masq", "--healthz-port=10268", "--iptables-resync=1s", "--resync-period=1s", "--log-level=debug"}
	for i := 1; i <= 2; i++ {
		if _, err := ns[i].StartFlanneld(dualNetConf, args...); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		n := ns[i]
		eventually(t, 60*time.Second, n.Name+" ready", func() error { return n.Ready() })
	}
	mac2 := vxlan.StableMAC("n2", 1, family.IPv6).String()
	want := map[string][]string{
		"link": {`flannel-v6\.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1430 .*link/ether ` + regexp.QuoteMeta(vxlan.StableMAC("n1", 1, family.IPv6).String()) +
			` .* vxlan id 1 local fc00:f853:ccd:e793::11 dev eth0 .*dstport 8472 nolearning `},
		"addr":  {`^\d+: flannel-v6\.1    inet6 fd00:10:244:1::/128 scope global`},
		"route": {`^fd00:10:244:1:: proto kernel metric 256 pref medium$`, `^fd00:10:244:2::/64 via fd00:10:244:2:: metric 1024 onlink pref medium$`, `^fe80::/64 proto kernel metric 256 pref medium$`},
		"neigh": {`^fd00:10:244:2:: lladdr ` + mac2 + ` PERMANENT $`},
		"fdb":   {`^` + mac2 + ` dst fc00:f853:ccd:e793::12 self permanent$`},
		"nat": {
			`^:FLANNEL-POSTRTG - \[0:0\]$`,
			`^-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG$`,
			`^-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN$`,
			`^-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN$`,
			`^-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN$`,
			`^-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN$`,
			`^-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d 2001:db8::/64 -m comment --comment "flanneld masq" -j RETURN$`,
			`^-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE( --random-fully)?$`,
			`^-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE( --random-fully)?$`,
		},
		"filter": {
			`^:FLANNEL-FWD - \[0:0\]$`,
			`^:FLANNEL-VXLAN-GUARD - \[0:0\]$`,
			`^-A INPUT -m comment --comment "flanneld vxlan guard" -j FLANNEL-VXLAN-GUARD$`,
			`^-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD$`,
			`^-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT$`,
			`^-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT$`,
			`^-A FLANNEL-VXLAN-GUARD -p udp -m udp --dport 8472 -m set ! --match-set FLANNEL-VXLAN-PEERS-V6 src -m comment --comment "flanneld vxlan guard" -j DROP$`,
		},
		// The tunnel guard lets in VXLAN from the one IPv6 peer.
		"guard": {`^add FLANNEL-VXLAN-PEERS-V6 fc00:f853:ccd:e793::12$`},
	}
	var state string
	eventually(t, 30*time.Second, "n1's IPv6 plane", func() error {
		out, err := ns[1].Exec("sh", "-c", v6State)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		state = out
		return sectionsMatch(out, want)
	})
	pings(t, ns[1], "fd00:10:244:1::1", "fd00:10:244:2::1")
	pings(t, ns[2], "fd00:10:244:2::1", "fd00:10:244:1::1")
	pings(t, ns[1], "10.244.1.1", "10.244.2.1")

	// Three more full reconciles and rule checks: each finds nothing to
	// change (a change is logged at info as "full reconcile", or as a
	// rule repair), and the state stays as it was.
	log := ns[1].LogFile()
	const changed, unchanged, rules = `msg="full reconcile" `, `msg="full reconcile: nothing to change"`, "packet-filter rules installed or repaired"
	changes, repairs, quiet := countLines(t, log, changed), countLines(t, log, rules), countLines(t, log, unchanged)
	eventually(t, 30*time.Second, "three more full reconciles", func() error {
		if n := countLines(t, log, unchanged); n < quiet+3 {
			return fmt.Errorf("%d full reconciles with nothing to change, want %d", n, quiet+3)
		}
		return nil
	})
	if n := countLines(t, log, changed); n != changes {
		t.Errorf("full reconciles after the first changed something:\n%s", strings.Join(grepLines(t, log, changed)[changes:], "\n"))
	}
	if n := countLines(t, log, rules); n != repairs {
		t.Errorf("the packet-filter rules were repaired again:\n%s", strings.Join(grepLines(t, log, rules)[repairs:], "\n"))
	}
	if out, _ := ns[1].Exec("sh", "-c", v6State); out != state {
		t.Errorf("n1's IPv6 plane changed with no change of desired state:\nbefore:\n%s\nafter:\n%s", state, out)
	}
}

// newDualCluster is newCluster with dual-stack nodes n1 and n2: eth0 with
// 172.18.0.1i and fc00:f853:ccd:e793::1i, podCIDRs 10.244.i.0/24 and
// fd00:10:244:i::/64, cni0 with both gateways.
func newDualCluster(t *testing.T) *cluster {
	t.Helper()
	c := newEnv(t)
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("n%d", i)
		cidrs := []string{fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("fd00:10:244:%d::/64", i)}
		if _, err := c.env.Client.CoreV1().Nodes().Create(c.ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var err error
		if c.nodes[i], err = c.env.AddNode(name, fmt.Sprintf("172.18.0.%d", 10+i), fmt.Sprintf("fc00:f853:ccd:e793::%d", 10+i)); err != nil {
			t.Fatal(err)
		}
		if err := underlay.Bridge(c.nodes[i].NS, "cni0", fmt.Sprintf("10.244.%d.1/24", i), fmt.Sprintf("fd00:10:244:%d::1/64", i)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func grepLines(t *testing.T, path, s string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func countLines(t *testing.T, path, s string) int { return len(grepLines(t, path, s)) }

// sectionsMatch checks that every "### name" section of out has exactly
// one line per pattern of want[name], each line matching its pattern, in
// order.
func sectionsMatch(out string, want map[string][]string) error {
	got := map[string][]string{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(l, "### "); ok {
			cur = name
			got[cur] = []string{}
			continue
		}
		if cur != "" && strings.TrimSpace(l) != "" {
			got[cur] = append(got[cur], l)
		}
	}
	var errs []string
	for name, pats := range want {
		lines := got[name]
		if len(lines) != len(pats) {
			errs = append(errs, fmt.Sprintf("%s: %d lines, want %d:\n  %s", name, len(lines), len(pats), strings.Join(lines, "\n  ")))
			continue
		}
		for i, p := range pats {
			if !regexp.MustCompile(p).MatchString(lines[i]) {
				errs = append(errs, fmt.Sprintf("%s: line %q does not match %s", name, lines[i], p))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}
