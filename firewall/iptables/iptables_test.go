package iptables

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/firewall/firewalltest"
	"github.com/twill-net/twill/internal/testenv/netns"
)

var testPolicy = firewall.Policy{
	Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"),
	NoMasquerade: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Masquerade: true,
}

func TestChains(t *testing.T) {
	chains := Chains(testPolicy, true, false)
	if len(chains) != 2 || chains[0].Name != MasqChain || chains[1].Name != ForwardChain {
		t.Fatalf("chains %+v", chains)
	}
	var rules []string
	for _, r := range chains[0].Rules {
		rules = append(rules, strings.Join(r, " "))
	}
	want := []string{
		`-m mark --mark 0x4000/0x4000 -m comment --comment flanneld masq -j RETURN`,
		`-s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment flanneld masq -j RETURN`,
		`-s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment flanneld masq -j RETURN`,
		`! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment flanneld masq -j RETURN`,
		`-s 10.244.0.0/16 -d 203.0.113.0/24 -m comment --comment flanneld masq -j RETURN`,
		`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully`,
		`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully`,
	}
	if !slices.Equal(rules, want) {
		t.Errorf("masq rules:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
	}
	if noMasq := Chains(firewall.Policy{Network: testPolicy.Network, Subnet: testPolicy.Subnet}, false, false); len(noMasq) != 1 || noMasq[0].Name != ForwardChain {
		t.Errorf("without --ip-masq: %+v", noMasq)
	}
	if plain := Chains(testPolicy, false, false); strings.Contains(strings.Join(plain[0].Rules[5], " "), "random-fully") {
		t.Error("--random-fully used where unsupported")
	}
	v6 := Chains(firewall.Policy{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Masquerade: true}, false, false)
	if got := strings.Join(v6[0].Rules[4], " "); got != `-s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment flanneld masq -j MASQUERADE` {
		t.Errorf("IPv6 masquerade rule: %s", got)
	}
}

// sets returns a netlink handle for ipsets in the calling thread's
// network namespace.
func sets(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestSameRule(t *testing.T) {
	spec := []string{"-s", "10.244.0.0/16", "-m", "comment", "--comment", "flanneld forward", "-j", "ACCEPT"}
	if !sameRule(`-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`, spec) {
		t.Error("identical rule not recognised")
	}
	if sameRule(`-A FLANNEL-FWD -s 10.245.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`, spec) {
		t.Error("different rule taken as the same")
	}
}

// TestIPTablesInNamespace runs the real iptables inside a throwaway network
// namespace: rules appear exactly once, a second Ensure changes nothing, a
// rule deleted by hand comes back, Check names what drifted, turning
// masquerading off removes its chain, and Remove leaves nothing.
func TestIPTablesInNamespace(t *testing.T) {
	ns := netns.New(t)
	chains := Chains(testPolicy, true, false)
	err := ns.Do(func() error {
		ipt, err := goipt.New(goipt.Timeout(10))
		if err != nil {
			t.Skipf("iptables: %v", err)
		}
		fw := NewWith(ipt, sets(t), family.IPv4)
		chains = Chains(testPolicy, ipt.HasRandomFully(), false)
		changed, err := fw.Ensure(testPolicy)
		if err != nil || !changed {
			t.Fatalf("first Ensure: changed=%v err=%v", changed, err)
		}
		changed, err = fw.Ensure(testPolicy)
		if err != nil || changed {
			t.Fatalf("second Ensure: changed=%v err=%v", changed, err)
		}
		if diffs, err := fw.Check(testPolicy); err != nil || len(diffs) != 0 {
			t.Fatalf("Check of right rules: %q %v", diffs, err)
		}
		if err := ipt.Delete("nat", MasqChain, chains[0].Rules[1]...); err != nil {
			t.Fatal(err)
		}
		if err := ipt.Delete("filter", "FORWARD", chains[1].Jump...); err != nil {
			t.Fatal(err)
		}
		diffs, err := fw.Check(testPolicy)
		if err != nil || len(diffs) != 2 || !strings.Contains(diffs[0], "nat chain FLANNEL-POSTRTG does not hold exactly its 7 rules") || !strings.Contains(diffs[1], "jump from filter FORWARD to FLANNEL-FWD is missing") {
			t.Fatalf("Check after tampering: %q %v", diffs, err)
		}
		changed, err = fw.Ensure(testPolicy)
		if err != nil || !changed {
			t.Fatalf("Ensure after tampering: changed=%v err=%v", changed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nat := ns.Run(t, "iptables", "-t", "nat", "-S")
	if strings.Count(nat, "-j FLANNEL-POSTRTG") != 1 || strings.Count(nat, "-A FLANNEL-POSTRTG") != 7 || strings.Contains(nat, "-NEW") {
		t.Errorf("nat table after repair:\n%s", nat)
	}
	if !strings.Contains(nat, `-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 203.0.113.0/24 -m comment --comment "flanneld masq" -j RETURN`) {
		t.Errorf("no-masquerade rule missing:\n%s", nat)
	}
	filter := ns.Run(t, "iptables", "-t", "filter", "-S")
	if !strings.Contains(filter, `-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`) ||
		!strings.Contains(filter, `-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`) {
		t.Errorf("filter table:\n%s", filter)
	}
	// Masquerading off: its chain goes, forwarding stays.
	err = ns.Do(func() error {
		ipt, err := goipt.New(goipt.Timeout(10))
		if err != nil {
			return err
		}
		off := testPolicy
		off.Masquerade = false
		if changed, err := NewWith(ipt, sets(t), family.IPv4).Ensure(off); err != nil || !changed {
			t.Errorf("Ensure with masquerading off: changed=%v err=%v", changed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if all := ns.Run(t, "iptables-save"); strings.Contains(all, "FLANNEL-POSTRTG") || !strings.Contains(all, "FLANNEL-FWD") {
		t.Errorf("rules with masquerading off:\n%s", all)
	}
	err = ns.Do(func() error {
		ipt, err := goipt.New(goipt.Timeout(10))
		if err != nil {
			return err
		}
		return NewWith(ipt, sets(t), family.IPv4).Remove()
	})
	if err != nil {
		t.Fatal(err)
	}
	if all := ns.Run(t, "iptables-save"); strings.Contains(all, "FLANNEL") {
		t.Errorf("rules left after Remove:\n%s", all)
	}
}

// TestIP6TablesInNamespace: the same code keeps an IPv6 policy in
// ip6tables, and Remove clears it.
func TestIP6TablesInNamespace(t *testing.T) {
	ns := netns.New(t)
	p := firewall.Policy{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Masquerade: true}
	err := ns.Do(func() error {
		fw, err := New(family.IPv6)
		if err != nil {
			t.Skipf("ip6tables: %v", err)
		}
		if changed, err := fw.Ensure(p); err != nil || !changed {
			t.Fatalf("Ensure: changed=%v err=%v", changed, err)
		}
		if changed, err := fw.Ensure(p); err != nil || changed {
			t.Fatalf("second Ensure: changed=%v err=%v", changed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nat := ns.Run(t, "ip6tables", "-t", "nat", "-S")
	if !strings.Contains(nat, `-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE`) {
		t.Errorf("ip6tables nat:\n%s", nat)
	}
	if v4 := ns.Run(t, "iptables-save"); strings.Contains(v4, "FLANNEL") {
		t.Errorf("an IPv6 policy wrote IPv4 rules:\n%s", v4)
	}
	if err := ns.Do(func() error {
		fw, err := New(family.IPv6)
		if err != nil {
			return err
		}
		return fw.Remove()
	}); err != nil {
		t.Fatal(err)
	}
	if all := ns.Run(t, "ip6tables-save"); strings.Contains(all, "FLANNEL") {
		t.Errorf("rules left after Remove:\n%s", all)
	}
}

// TestGuardInNamespace runs the behaviour every firewall shares
// (firewalltest.Run) against iptables and an ipset.
func TestGuardInNamespace(t *testing.T) {
	firewalltest.Run(t, func() (firewall.Firewall, error) { return New(family.IPv4) }, func() (string, error) {
		out, err := exec.Command("iptables-save").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("iptables-save: %w\n%s", err, out)
		}
		var left []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "FLANNEL") {
				left = append(left, l)
			}
		}
		h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			return "", err
		}
		defer h.Close()
		sets, err := h.IpsetListAll()
		if err != nil {
			return "", err
		}
		for _, s := range sets {
			left = append(left, "ipset "+s.SetName)
		}
		return strings.Join(left, "\n"), nil
	})
}

// TestForwardPolicyInNamespace reads FORWARD's policy as the kernel has it.
func TestForwardPolicyInNamespace(t *testing.T) {
	ns := netns.New(t)
	for _, want := range []string{"ACCEPT", "DROP"} {
		ns.Run(t, "iptables", "-P", "FORWARD", want)
		err := ns.Do(func() error {
			ipt, err := goipt.New(goipt.Timeout(10))
			if err != nil {
				t.Skipf("iptables: %v", err)
			}
			got, err := NewWith(ipt, sets(t), family.IPv4).ForwardPolicy()
			if err != nil || got != want {
				t.Errorf("ForwardPolicy = %q, %v; want %s", got, err, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestUpstreamChainsKeptAsTheyAre: on a node whose rules upstream flannel
// wrote, Twill finds its own rules already in place and changes nothing,
// and the rules it writes on a fresh node read exactly like upstream's.
func TestUpstreamChainsKeptAsTheyAre(t *testing.T) {
	policy := firewall.Policy{Network: testPolicy.Network, Subnet: testPolicy.Subnet, Masquerade: true}
	rulesOf := func(ns *netns.NS, table string) []string {
		var out []string
		for _, l := range strings.Split(ns.Run(t, "iptables", "-w", "-t", table, "-S"), "\n") {
			if strings.HasPrefix(l, "-A ") {
				out = append(out, l)
			}
		}
		return out
	}
	ensure := func(ns *netns.NS) bool {
		var changed bool
		if err := ns.Do(func() error {
			ipt, err := goipt.New(goipt.Timeout(10))
			if err != nil {
				t.Skipf("iptables: %v", err)
			}
			if !ipt.HasRandomFully() {
				t.Skip("iptables lacks --random-fully, which upstream's rules use here")
			}
			changed, err = NewWith(ipt, sets(t), family.IPv4).Ensure(policy)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return changed
	}

	t.Run("fresh node reads like upstream", func(t *testing.T) {
		ns := netns.New(t)
		if !ensure(ns) {
			t.Fatal("first Ensure changed nothing")
		}
		for table, want := range firewalltest.UpstreamIPTables {
			if got := rulesOf(ns, table); !slices.Equal(got, want) {
				t.Errorf("%s table:\n%s\nwant upstream's:\n%s", table, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})
	t.Run("upstream's node left as it is", func(t *testing.T) {
		ns := netns.New(t)
		for _, table := range []string{"nat", "filter"} {
			chain := map[string]string{"nat": MasqChain, "filter": ForwardChain}[table]
			ns.Run(t, "iptables", "-w", "-t", table, "-N", chain)
			for _, r := range firewalltest.UpstreamIPTables[table] {
				ns.Run(t, append([]string{"iptables", "-w", "-t", table}, splitRule(r)...)...)
			}
		}
		before := map[string][]string{"nat": rulesOf(ns, "nat"), "filter": rulesOf(ns, "filter")}
		if ensure(ns) {
			t.Error("Ensure rewrote upstream's rules, which are already Twill's")
		}
		for table, want := range before {
			if got := rulesOf(ns, table); !slices.Equal(got, want) {
				t.Errorf("%s table changed:\n%s\nwas:\n%s", table, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})
}

// TestDriftRepairedInNamespace: a flushed chain and an ipset element
// nobody asked for are found and put right, and the repaired state is
// exact: the chains' rules, and the set's members.
func TestDriftRepairedInNamespace(t *testing.T) {
	n := firewalltest.NewNode(t, func() (firewall.Firewall, error) { return New(family.IPv4) })
	p := firewalltest.Policy
	n.Ensure(p, true)
	peer := netip.MustParseAddr("172.18.0.3")
	n.Sync([]netip.Addr{peer}, true)
	n.Ensure(p, false) // SyncAllowed installed the guard with its set
	saved := func() string {
		var keep []string
		for _, l := range strings.Split(n.NS.Run(t, "iptables-save"), "\n") {
			if strings.HasPrefix(l, "-A ") && strings.Contains(l, "FLANNEL") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	members := func() string {
		var out []string
		for _, l := range strings.Split(n.NS.Run(t, "ipset", "save", SetName(family.IPv4)), "\n") {
			if strings.HasPrefix(l, "add ") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	rules := saved()
	if strings.Count(rules, "-A FLANNEL-POSTRTG") != 7 || !strings.Contains(rules, "-A FLANNEL-VXLAN-GUARD") {
		t.Fatalf("rules after Ensure:\n%s", rules)
	}
	n.NS.Run(t, "iptables", "-w", "-t", "nat", "-F", MasqChain)
	n.Ensure(p, true)
	if got := saved(); got != rules {
		t.Errorf("after a flushed %s and Ensure:\n%s\nwant:\n%s", MasqChain, got, rules)
	}
	n.NS.Run(t, "ipset", "add", SetName(family.IPv4), "192.0.2.66")
	n.Sync([]netip.Addr{peer}, true)
	if got, want := members(), "add "+SetName(family.IPv4)+" 172.18.0.3"; got != want {
		t.Errorf("set after an added element and SyncAllowed:\n%s\nwant:\n%s", got, want)
	}
	n.Sync([]netip.Addr{peer}, false)
	n.Ensure(p, false)
}
