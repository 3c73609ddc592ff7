package trace

import (
	"fmt"
	"testing"
)

// A ruleset as `nft list ruleset` prints it: iptables-nft's filter table
// with a rule dropping one pod's traffic, flanneld's own table, and a
// chain whose policy is drop.
const ruleset = `# Warning: table ip filter is managed by iptables-nft, do not touch!
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.1.2 ip daddr 10.244.2.3 counter packets %d bytes 252 drop
		ip protocol tcp counter packets 0 bytes 0 reject with tcp reset
		counter packets 40 bytes 3360 jump FLANNEL-FWD
	}
	chain FLANNEL-FWD {
		ip saddr 10.244.0.0/16 counter packets 20 bytes 1680 accept
	}
}
table ip flannel-ipv4 {
	chain vxlan-guard {
		type filter hook input priority filter; policy drop;
		udp dport 8472 ip saddr != @vxlan-peers drop
	}
}
`

func TestParseNftDrops(t *testing.T) {
	rules := parseNftDrops(fmt.Sprintf(ruleset, 5))
	want := []dropRule{
		{Where: "table ip filter chain FORWARD", Rule: "ip saddr 10.244.1.2 ip daddr 10.244.2.3 drop", Packets: 5},
		{Where: "table ip filter chain FORWARD", Rule: "ip protocol tcp reject with tcp reset"},
		{Where: "table ip flannel-ipv4 chain vxlan-guard", Rule: "policy drop"},
		{Where: "table ip flannel-ipv4 chain vxlan-guard", Rule: "udp dport 8472 ip saddr != @vxlan-peers drop"},
	}
	if len(rules) != len(want) {
		t.Fatalf("rules %+v, want %+v", rules, want)
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d: %+v, want %+v", i, rules[i], want[i])
		}
	}
}

func TestCounted(t *testing.T) {
	before, after := parseNftDrops(fmt.Sprintf(ruleset, 5)), parseNftDrops(fmt.Sprintf(ruleset, 8))
	rose := counted(before, after)
	if len(rose) != 1 || rose[0].Packets != 3 || rose[0].Rule != "ip saddr 10.244.1.2 ip daddr 10.244.2.3 drop" {
		t.Errorf("rules that counted the probes: %+v, want the pod's drop rule, +3", rose)
	}
	if rose := counted(after, after); len(rose) != 0 {
		t.Errorf("no probe, yet rules counted: %+v", rose)
	}
	// A rule added between the two reads counts from zero.
	if rose := counted(nil, after); len(rose) != 1 || rose[0].Packets != 8 {
		t.Errorf("a new rule: %+v", rose)
	}
}
