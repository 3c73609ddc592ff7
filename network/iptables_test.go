package network

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"

	"github.com/twill-net/twill/internal/testenv/netns"
)

func cidr(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	return n
}

var testCfg = Config{
	Network: cidr("10.244.0.0/16"), Subnet: cidr("10.244.1.0/24"),
	NoMasquerade: []*net.IPNet{cidr("203.0.113.0/24")}, Masquerade: true,
}

func TestChains(t *testing.T) {
	chains := Chains(testCfg, true)
	if len(chains) != 2 || chains[0].Name != MasqChain || chains[1].Name != ForwardChain {
		t.Fatalf("chains %+v", chains)
	}
	var rules []string
	for _, r := range chains[0].Rules {
		rules = append(rules, strings.Join(r, " "))
	}
	want := []string{
		`-m mark --mark 0x4000/0x4000 -j RETURN -m comment --comment flanneld masq`,
		`-s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN -m comment --comment flanneld masq`,
		`-s 10.244.0.0/16 -d 203.0.113.0/24 -j RETURN -m comment --comment flanneld masq`,
		`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully`,
		`! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN -m comment --comment flanneld masq`,
		`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully`,
	}
	if !slices.Equal(rules, want) {
		t.Errorf("masq rules:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
	}
	if noMasq := Chains(Config{Network: testCfg.Network, Subnet: testCfg.Subnet}, false); len(noMasq) != 1 || noMasq[0].Name != ForwardChain {
		t.Errorf("without --ip-masq: %+v", noMasq)
	}
	if plain := Chains(testCfg, false); strings.Contains(strings.Join(plain[0].Rules[3], " "), "random-fully") {
		t.Error("--random-fully used where unsupported")
	}
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
// rule deleted by hand comes back, and Remove leaves nothing.
func TestIPTablesInNamespace(t *testing.T) {
	ns := netns.New(t)
	chains := Chains(testCfg, true)
	err := ns.Do(func() error {
		ipt, err := iptables.New(iptables.Timeout(10))
		if err != nil {
			t.Skipf("iptables: %v", err)
		}
		r := NewRules(ipt)
		chains = Chains(testCfg, r.RandomFully())
		changed, err := r.Ensure(chains)
		if err != nil || !changed {
			t.Fatalf("first Ensure: changed=%v err=%v", changed, err)
		}
		changed, err = r.Ensure(chains)
		if err != nil || changed {
			t.Fatalf("second Ensure: changed=%v err=%v", changed, err)
		}
		if err := ipt.Delete("nat", MasqChain, chains[0].Rules[1]...); err != nil {
			t.Fatal(err)
		}
		if err := ipt.Delete("filter", "FORWARD", chains[1].Jump...); err != nil {
			t.Fatal(err)
		}
		changed, err = r.Ensure(chains)
		if err != nil || !changed {
			t.Fatalf("Ensure after tampering: changed=%v err=%v", changed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nat := ns.Run(t, "iptables", "-t", "nat", "-S")
	if strings.Count(nat, "-j FLANNEL-POSTRTG") != 1 || strings.Count(nat, "-A FLANNEL-POSTRTG") != 6 || strings.Contains(nat, "-NEW") {
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
	err = ns.Do(func() error {
		ipt, err := iptables.New(iptables.Timeout(10))
		if err != nil {
			return err
		}
		return NewRules(ipt).Remove(chains)
	})
	if err != nil {
		t.Fatal(err)
	}
	if all := ns.Run(t, "iptables-save"); strings.Contains(all, "FLANNEL") {
		t.Errorf("rules left after Remove:\n%s", all)
	}
}
