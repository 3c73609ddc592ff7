package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/firewall/firewalltest"
	"github.com/twill-net/twill/internal/testenv/netns"
)

var testPolicy = firewalltest.Policy

// counting counts the transactions sent.
type counting struct {
	knftables.Interface
	runs int
}

func (c *counting) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs++
	return c.Interface.Run(ctx, tx)
}

func TestChains(t *testing.T) {
	chains := Chains(testPolicy, true)
	var names []string
	for _, c := range chains {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{MasqChain, ForwardChain, GuardChain}) {
		t.Fatalf("chains %v", names)
	}
	// Upstream flannel's rules (addMasqRules in
	// pkg/trafficmngr/nftables/nftables.go of flannel-io/flannel, read at
	// commit cdf76059, v0.28), rule for rule and in its order, with
	// Twill's NoMasqueradeCIDRs rule before the masquerading ones.
	want := []string{
		`meta mark 0x4000 return`,
		`ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return`,
		`ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return`,
		`ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return`,
		`ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 return`,
		`ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random`,
		`ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random`,
	}
	if !slices.Equal(chains[0].Rules, want) {
		t.Errorf("masq rules:\n%s\nwant:\n%s", strings.Join(chains[0].Rules, "\n"), strings.Join(want, "\n"))
	}
	if got := chains[2].Rules; len(got) != 1 || got[0] != `udp dport 8472 ip saddr != @vxlan-peers counter name "vxlan-guard-drops" drop` {
		t.Errorf("guard rule %q", got)
	}
	// Each comment is a digest of its chain and the rules up to it: a
	// changed rule changes its comment and every later one.
	other := testPolicy
	other.NoMasquerade = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	oc := Chains(other, true)[0].Comments
	if oc[3] != chains[0].Comments[3] || oc[4] == chains[0].Comments[4] || oc[6] == chains[0].Comments[6] {
		t.Errorf("comments do not follow the rules:\n%q\n%q", chains[0].Comments, oc)
	}
	if !strings.HasPrefix(chains[0].Comments[0], "flanneld masq ") {
		t.Errorf("comment %q", chains[0].Comments[0])
	}
	if c := Chains(testPolicy, false); len(c) != 2 {
		t.Errorf("a guard not ready yet has a chain: %v", c)
	}
	off := testPolicy
	off.Masquerade, off.GuardPort = false, 0
	if c := Chains(off, true); len(c) != 1 || c[0].Name != ForwardChain {
		t.Errorf("without --ip-masq and guard: %+v", c)
	}
	v6 := Chains(firewall.Policy{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Masquerade: true, GuardPort: 8472}, true)
	if got := v6[0].Rules[4]; got != `ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random` {
		t.Errorf("IPv6 masquerade rule: %s", got)
	}
	if got := v6[2].Rules[0]; got != `udp dport 8472 ip6 saddr != @vxlan-peers counter name "vxlan-guard-drops" drop` {
		t.Errorf("IPv6 guard rule: %s", got)
	}
}

// TestFake drives the firewall against knftables' fake: what each call
// sends, and that nothing is sent when nothing differs.
func TestFake(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, TableIPv4)
	nft := &counting{Interface: fake}
	fw := NewWith(nft, family.IPv4)
	peer, other := netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("172.18.0.4")

	if changed, err := fw.Ensure(testPolicy); err != nil || !changed || nft.runs != 1 {
		t.Fatalf("first Ensure: changed=%v err=%v transactions=%d", changed, err, nft.runs)
	}
	if fake.Table.Chains[GuardChain] != nil || fake.Table.Sets[PeersSet] != nil {
		t.Fatal("the guard was installed before its peers were known")
	}
	// Before the first sync an Allow only records.
	if err := fw.Allow(peer); err != nil || nft.runs != 1 {
		t.Fatalf("Allow before the sync: err=%v transactions=%d", err, nft.runs)
	}
	if changed, err := fw.SyncAllowed([]netip.Addr{peer}); err != nil || !changed || nft.runs != 2 {
		t.Fatalf("first SyncAllowed: changed=%v err=%v transactions=%d", changed, err, nft.runs)
	}
	if fake.Table.Sets[PeersSet].FindElement(peer.String()) == nil || len(fake.Table.Chains[GuardChain].Rules) != 1 {
		t.Fatalf("the guard after the first sync:\n%s", fake.Dump())
	}
	for i := 0; i < 2; i++ {
		if changed, err := fw.Ensure(testPolicy); err != nil || changed {
			t.Fatalf("Ensure of right rules: changed=%v err=%v", changed, err)
		}
		if changed, err := fw.SyncAllowed([]netip.Addr{peer}); err != nil || changed {
			t.Fatalf("SyncAllowed of a right set: changed=%v err=%v", changed, err)
		}
	}
	if nft.runs != 2 {
		t.Fatalf("reconciles of right state sent %d transactions", nft.runs-2)
	}
	// A join and a leave: one transaction each, touching only the element.
	if err := fw.Allow(other); err != nil || nft.runs != 3 || fake.LastTransaction.NumOperations() != 1 {
		t.Fatalf("Allow: err=%v transactions=%d\n%s", err, nft.runs, fake.LastTransaction)
	}
	if err := fw.Disallow(other); err != nil || nft.runs != 4 || fake.Table.Sets[PeersSet].FindElement(other.String()) != nil {
		t.Fatalf("Disallow: err=%v transactions=%d", err, nft.runs)
	}
	if strings.Contains(fake.LastTransaction.String(), "rule") {
		t.Errorf("a leave touched rules:\n%s", fake.LastTransaction)
	}
	// An extra element is found and removed by the next sync.
	tx := fake.NewTransaction()
	tx.Add(&knftables.Element{Set: PeersSet, Key: []string{"192.0.2.66"}})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if changed, err := fw.SyncAllowed([]netip.Addr{peer}); err != nil || !changed || fake.Table.Sets[PeersSet].FindElement("192.0.2.66") != nil {
		t.Fatalf("SyncAllowed with an extra element: changed=%v err=%v\n%s", changed, err, fake.Dump())
	}
	// A rule whose comment changed (an edit) has its chain rebuilt.
	fake.Table.Chains[ForwardChain].Rules[0].Comment = knftables.PtrTo("edited")
	if diffs, err := fw.Check(testPolicy); err != nil || len(diffs) != 1 || !strings.Contains(diffs[0], "chain forward does not hold exactly its 2 rules") {
		t.Fatalf("Check of an edited rule: %q %v", diffs, err)
	}
	if changed, err := fw.Ensure(testPolicy); err != nil || !changed {
		t.Fatalf("Ensure after an edit: changed=%v err=%v", changed, err)
	}
	if diffs, _ := fw.Check(testPolicy); len(diffs) != 0 {
		t.Errorf("after the repair: %q", diffs)
	}
	// Masquerading and the guard off: their chain, set and counter go.
	off := testPolicy
	off.Masquerade, off.GuardPort = false, 0
	if changed, err := fw.Ensure(off); err != nil || !changed {
		t.Fatalf("Ensure with masquerading and guard off: changed=%v err=%v", changed, err)
	}
	if fake.Table.Chains[MasqChain] != nil || fake.Table.Chains[GuardChain] != nil || fake.Table.Sets[PeersSet] != nil || fake.Table.Counters[DropCounter] != nil {
		t.Errorf("left with masquerading and guard off:\n%s", fake.Dump())
	}
}

// nftIn runs nft in the namespace.
func nftIn(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	return ns.Run(t, append([]string{"nft"}, args...)...)
}

// want is the table `nft list table` must print for testPolicy's chains
// with the guard's set holding elems.
func want(elems string) string {
	var b strings.Builder
	b.WriteString("table ip flannel-ipv4 {\n\tcomment \"rules of flanneld (Twill)\"\n")
	b.WriteString("\tcounter vxlan-guard-drops {\n\t\tcomment \"VXLAN packets dropped: not from a node\"\n\t\tpackets 0 bytes 0\n\t}\n\n")
	b.WriteString("\tset vxlan-peers {\n\t\ttype ipv4_addr\n\t\tcomment \"nodes whose VXLAN packets are accepted\"\n\t\telements = { " + elems + " }\n\t}\n")
	heads := map[string]string{
		MasqChain:    "type nat hook postrouting priority srcnat; policy accept;",
		ForwardChain: "type filter hook forward priority filter; policy accept;",
		GuardChain:   "type filter hook input priority filter; policy accept;",
	}
	for _, c := range Chains(testPolicy, true) {
		fmt.Fprintf(&b, "\n\tchain %s {\n\t\t%s\n", c.Name, heads[c.Name])
		for i, r := range c.Rules {
			// nft prints marks in full.
			r = strings.ReplaceAll(r, "0x4000", "0x00004000")
			fmt.Fprintf(&b, "\t\t%s comment %q\n", r, c.Comments[i])
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// TestNFTablesInNamespace runs the real nft in a throwaway namespace: the
// exact table after a reconcile, no transaction for a second one, and
// drift (a flushed table, a deleted rule, an extra set element, a deleted
// table) put right in one transaction each.
func TestNFTablesInNamespace(t *testing.T) {
	var nft *counting
	n := firewalltest.NewNode(t, func() (firewall.Firewall, error) {
		real, err := knftables.New(knftables.IPv4Family, TableIPv4)
		if err != nil {
			return nil, err
		}
		nft = &counting{Interface: real}
		return NewWith(nft, family.IPv4), nil
	})
	peers := []netip.Addr{netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("172.18.0.4")}
	n.Ensure(testPolicy, true)
	n.Sync(peers, true)
	if got := nftIn(t, n.NS, "list", "table", "ip", TableIPv4); got != want("172.18.0.3, 172.18.0.4") {
		t.Fatalf("table after the first reconcile:\n%s\nwant:\n%s", got, want("172.18.0.3, 172.18.0.4"))
	}
	runs := nft.runs
	n.Ensure(testPolicy, false)
	n.Sync(peers, false)
	if nft.runs != runs {
		t.Fatalf("a second reconcile sent %d transactions", nft.runs-runs)
	}

	check := func(what string, diffs int) {
		t.Helper()
		n.Do(func(fw firewall.Firewall) error {
			d, err := fw.Check(testPolicy)
			if err != nil || len(d) != diffs {
				return fmt.Errorf("Check after %s: %q %v, want %d differences", what, d, err, diffs)
			}
			return nil
		})
	}
	repaired := func(what string) {
		t.Helper()
		runs := nft.runs
		n.Ensure(testPolicy, true)
		if nft.runs != runs+1 {
			t.Errorf("repairing %s took %d transactions, want 1", what, nft.runs-runs)
		}
		if got := nftIn(t, n.NS, "list", "table", "ip", TableIPv4); got != want("172.18.0.3, 172.18.0.4") {
			t.Fatalf("table after repairing %s:\n%s", what, got)
		}
	}

	nftIn(t, n.NS, "flush", "table", "ip", TableIPv4)
	check("a flush", 3)
	repaired("a flushed table")

	handles := nftIn(t, n.NS, "-a", "list", "chain", "ip", TableIPv4, MasqChain)
	var handle string
	for _, l := range strings.Split(handles, "\n") {
		if strings.Contains(l, "203.0.113.0/24") {
			handle = l[strings.LastIndex(l, " ")+1:]
		}
	}
	nftIn(t, n.NS, "delete", "rule", "ip", TableIPv4, MasqChain, "handle", handle)
	check("a deleted rule", 1)
	repaired("a deleted rule")

	nftIn(t, n.NS, "add", "element", "ip", TableIPv4, PeersSet, "{ 192.0.2.66 }")
	runs = nft.runs
	n.Sync(peers, true)
	if nft.runs != runs+1 || strings.Contains(nftIn(t, n.NS, "list", "set", "ip", TableIPv4, PeersSet), "192.0.2.66") {
		t.Fatalf("an extra element: %d transactions", nft.runs-runs)
	}

	nftIn(t, n.NS, "delete", "table", "ip", TableIPv4)
	repaired("a deleted table")

	n.Do(func(fw firewall.Firewall) error { return fw.Remove() })
	if got := nftIn(t, n.NS, "list", "ruleset"); got != "" {
		t.Errorf("left after Remove:\n%s", got)
	}
}

// TestGuardInNamespace runs the behaviour every firewall shares
// (firewalltest.Run) against nftables.
func TestGuardInNamespace(t *testing.T) {
	firewalltest.Run(t, func() (firewall.Firewall, error) { return New(family.IPv4) }, func() (string, error) {
		out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nft list ruleset: %w\n%s", err, out)
		}
		return string(out), nil
	})
}

// TestNFTablesIPv6InNamespace: the same code keeps an IPv6 policy in the
// ip6 table, and Remove clears it.
func TestNFTablesIPv6InNamespace(t *testing.T) {
	p := firewall.Policy{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Masquerade: true, GuardPort: 8472}
	n := firewalltest.NewNode(t, func() (firewall.Firewall, error) { return New(family.IPv6) })
	n.Ensure(p, true)
	n.Sync([]netip.Addr{netip.MustParseAddr("fd00:18::3")}, true)
	n.Ensure(p, false)
	got := nftIn(t, n.NS, "list", "ruleset")
	for _, w := range []string{"table ip6 flannel-ipv6", "type ipv6_addr", "elements = { fd00:18::3 }", "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random", "ip6 saddr != @vxlan-peers"} {
		if !strings.Contains(got, w) {
			t.Errorf("no %q in:\n%s", w, got)
		}
	}
	if strings.Contains(got, "table ip ") {
		t.Errorf("an IPv6 policy wrote an IPv4 table:\n%s", got)
	}
	n.Do(func(fw firewall.Firewall) error { return fw.Remove() })
	if got := nftIn(t, n.NS, "list", "ruleset"); got != "" {
		t.Errorf("left after Remove:\n%s", got)
	}
}

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("nft"); err != nil && os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "nftables tests: the nft command is missing (make deps installs it)")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestTakesOverFlannelsTable: a node that ran upstream flannel in
// nftables mode has a flannel-ipv4 table with flannel's chains and rules;
// one Ensure makes them Twill's, and nothing of flannel's rules is left.
func TestTakesOverFlannelsTable(t *testing.T) {
	n := firewalltest.NewNode(t, func() (firewall.Firewall, error) { return New(family.IPv4) })
	flannels := `add table ip flannel-ipv4 { comment "rules for flannel-ipv4"; }
add chain ip flannel-ipv4 forward { type filter hook forward priority filter; comment "chain to accept flannel traffic"; }
add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept
add rule ip flannel-ipv4 forward ip daddr 10.244.0.0/16 accept
add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat; comment "chain to manage traffic masquerading by flannel"; }
add rule ip flannel-ipv4 postrtg meta mark 0x4000 return
add rule ip flannel-ipv4 postrtg ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade
`
	cmd := exec.Command("ip", "netns", "exec", n.NS.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(flannels)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flannel's table: %v\n%s", err, out)
	}
	n.Ensure(testPolicy, true)
	n.Sync([]netip.Addr{netip.MustParseAddr("172.18.0.3")}, true)
	n.Ensure(testPolicy, false)
	got := nftIn(t, n.NS, "list", "table", "ip", TableIPv4)
	for _, l := range strings.Split(got, "\n") {
		rule := strings.HasPrefix(l, "\t\tip ") || strings.HasPrefix(l, "\t\tmeta ") || strings.HasPrefix(l, "\t\tudp ")
		if rule && !strings.Contains(l, `comment "flanneld `) {
			t.Errorf("a rule of flannel's is left: %s\n%s", l, got)
		}
	}
	if !strings.Contains(got, "chain vxlan-guard") || !strings.Contains(got, "masquerade fully-random") {
		t.Errorf("Twill's rules are not in:\n%s", got)
	}
}

// TestMasqueradeReadsLikeUpstream: without NoMasqueradeCIDRs, the
// masquerade chain `nft list` prints is upstream flannel's rule for rule
// and in its order (addMasqRules in pkg/trafficmngr/nftables/nftables.go
// of flannel-io/flannel, read at commit cdf76059, v0.28), only with
// Twill's digest comment on each rule.
func TestMasqueradeReadsLikeUpstream(t *testing.T) {
	n := firewalltest.NewNode(t, func() (firewall.Firewall, error) { return New(family.IPv4) })
	p := testPolicy
	p.NoMasquerade, p.GuardPort = nil, 0
	n.Ensure(p, true)
	upstream := []string{
		"meta mark 0x00004000 return",
		"ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
		"ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
	}
	comment := regexp.MustCompile(` comment "flanneld masq [0-9a-f]{16}"$`)
	var got []string
	for _, l := range strings.Split(nftIn(t, n.NS, "list", "chain", "ip", TableIPv4, MasqChain), "\n") {
		if l = strings.TrimSpace(l); comment.MatchString(l) {
			got = append(got, comment.ReplaceAllString(l, ""))
		}
	}
	if !slices.Equal(got, upstream) {
		t.Errorf("masquerade chain:\n%s\nwant upstream's:\n%s", strings.Join(got, "\n"), strings.Join(upstream, "\n"))
	}
}
