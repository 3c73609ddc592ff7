package firewall_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/firewall/firewalltest"
	"github.com/twill-net/twill/firewall/iptables"
	"github.com/twill-net/twill/firewall/nftables"
)

// fake is a firewall that logs what it is asked.
type fake struct {
	name string
	log  *[]string
}

func (f fake) note(s string)                           { *f.log = append(*f.log, f.name+" "+s) }
func (f fake) Ensure(firewall.Policy) (bool, error)    { f.note("ensure"); return true, nil }
func (f fake) Check(firewall.Policy) ([]string, error) { return nil, nil }
func (f fake) Remove() error                           { f.note("remove"); return nil }
func (f fake) Allow(...netip.Addr) error               { return nil }
func (f fake) Disallow(...netip.Addr) error            { return nil }
func (f fake) SyncAllowed([]netip.Addr) (bool, error)  { f.note("sync"); return true, nil }
func (f fake) Dropped() (uint64, error)                { return 0, nil }
func maker(name string, log *[]string) firewall.Maker {
	return func(family.Family) (firewall.Firewall, error) { return fake{name, log}, nil }
}

func TestReplacing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		guard uint16
		want  string
	}{
		{"without a guard the old rules go after the first Ensure", 0, "new ensure, old remove, new sync, new ensure"},
		{"with a guard they go after the first sync", 8472, "new ensure, new sync, old remove, new ensure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			fw, err := firewall.Replacing(maker("new", &log), maker("old", &log))(family.IPv4)
			if err != nil {
				t.Fatal(err)
			}
			p := firewalltest.Policy
			p.GuardPort = tc.guard
			_, _ = fw.Ensure(p)
			_, _ = fw.SyncAllowed(nil)
			_, _ = fw.Ensure(p)
			if got := strings.Join(log, ", "); got != tc.want {
				t.Errorf("calls: %s\nwant:  %s", got, tc.want)
			}
			log = nil
			_ = fw.Remove()
			if got := strings.Join(log, ", "); got != "new remove, old remove" {
				t.Errorf("Remove: %s", got)
			}
		})
	}
}

// rules lists, inside the namespace, what of each mode is there.
func rules() (string, error) {
	var b strings.Builder
	for _, cmd := range [][]string{{"iptables-save"}, {"nft", "list", "ruleset"}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %w\n%s", cmd[0], err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "FLANNEL") || strings.Contains(l, "flannel") || strings.Contains(l, "masquerade") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String(), nil
}

// TestSwitchModesInNamespace moves a node from iptables to nftables and
// back, as a restart with EnableNFTables flipped does: masquerading is
// there at every step, the old mode's rules stay until the new guard holds
// its peers, and then nothing of the old mode is left.
func TestSwitchModesInNamespace(t *testing.T) {
	ipt := firewall.Replacing(iptables.New, nftables.New)
	nft := firewall.Replacing(nftables.New, iptables.New)
	mk := func(m firewall.Maker) firewalltest.Make {
		return func() (firewall.Firewall, error) { return m(family.IPv4) }
	}
	peers := []netip.Addr{firewalltest.PeerIP}
	n := firewalltest.NewNode(t, mk(ipt))
	state := func() string {
		t.Helper()
		var s string
		n.Do(func(firewall.Firewall) error {
			var err error
			s, err = rules()
			return err
		})
		return s
	}
	n.Ensure(firewalltest.Policy, true)
	n.Sync(peers, true)
	for _, step := range []struct {
		to         firewall.Maker
		name       string
		has, hasnt string
	}{
		{nft, "nftables", "table ip flannel-ipv4", "FLANNEL-"},
		{ipt, "iptables", "FLANNEL-POSTRTG", "flannel-ipv4"},
	} {
		n.Restart(mk(step.to))
		n.Ensure(firewalltest.Policy, true)
		mid := state()
		if !strings.Contains(mid, "FLANNEL-POSTRTG") || !strings.Contains(mid, "flannel-ipv4") {
			t.Errorf("moving to %s, before the new guard holds its peers both modes must be there:\n%s", step.name, mid)
		}
		n.Sync(peers, true)
		end := state()
		if !strings.Contains(end, step.has) || strings.Contains(end, step.hasnt) {
			t.Errorf("after moving to %s:\n%s", step.name, end)
		}
		n.Do(func(fw firewall.Firewall) error {
			if d, err := fw.Check(firewalltest.Policy); err != nil || len(d) > 0 {
				return fmt.Errorf("Check after moving to %s: %q %v", step.name, d, err)
			}
			return nil
		})
	}
	n.Do(func(fw firewall.Firewall) error { return fw.Remove() })
	if left := state(); left != "" {
		t.Errorf("left after Remove:\n%s", left)
	}
}
