package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/twill-net/twill/daemon"
	"github.com/twill-net/twill/sysctl"
)

// checkSysctls: forwarding is on, and bridged pod traffic passes the packet
// filter (br_netfilter), for every family.
func (s *state) checkSysctls(context.Context) {
	f := Finding{Check: "sysctl", Status: OK}
	if len(s.fams) == 0 {
		f.Status, f.Summary = Skip, "needs net-conf.json"
		s.add(f)
		return
	}
	var bad, good []string
	for _, fam := range s.fams {
		for _, sc := range sysctl.Prerequisites(fam) {
			if err := sysctl.Check(s.o.ProcSys, sc); err != nil {
				bad = append(bad, err.Error())
			} else {
				good = append(good, sc.Name+"="+sc.Want)
			}
		}
	}
	if len(bad) > 0 {
		f.Status = Fail
		f.Summary = bad[0]
		f.Details = bad[1:]
		f.Fix = "without forwarding no pod reaches another node; without bridge-nf-call-iptables Services and network policies between pods on one node break. flanneld sets them at start where it may"
	} else {
		f.Summary = strings.Join(good, ", ")
	}
	s.add(f)
}

// forwardPolicy is a rule checker that can also read FORWARD's policy.
type forwardPolicy interface {
	ForwardPolicy() (string, error)
}

// checkFirewall: the forward and masquerade rules are as flanneld keeps
// them, and whether FORWARD drops what they do not accept.
func (s *state) checkFirewall(context.Context) {
	if s.o.Firewall == nil || s.o.Config == nil {
		s.add(Finding{Check: "firewall", Status: Skip, Summary: "needs net-conf.json"})
		return
	}
	masq := s.o.IPMasq
	if masq == nil && s.env != nil {
		masq = &s.env.IPMasq
	}
	for _, fam := range s.fams {
		f := Finding{Check: "firewall", Family: s.famLabel(fam), Status: OK}
		sub, ok := s.subnets[fam]
		if !ok || masq == nil {
			f.Status, f.Summary = Skip, "needs this node's subnet and whether flanneld masquerades (subnet.env or --ip-masq)"
			s.add(f)
			continue
		}
		fw, err := s.o.Firewall(fam)
		if err != nil {
			f.Status, f.Summary = Fail, err.Error()
			s.add(f)
			continue
		}
		want := daemon.Policy(s.o.Config, fam, sub, *masq)
		if s.o.TunnelGuard {
			for _, p := range s.planes {
				if p.fam == fam && p.be != nil {
					want.GuardPort = p.be.TunnelPort()
				}
			}
		}
		diffs, err := fw.Check(want)
		policy := ""
		if fp, ok := fw.(forwardPolicy); ok {
			policy, _ = fp.ForwardPolicy()
		}
		switch {
		case err != nil:
			f.Status, f.Summary = Fail, "reading the rules: "+err.Error()
			f.Fix = "doctor reads them with iptables, as flanneld does: it needs NET_ADMIN and the node's xtables lock"
		case len(diffs) > 0:
			f.Status = Fail
			f.Summary = diffs[0]
			f.Details = diffs[1:]
			if policy == "DROP" {
				f.Details = append(f.Details, "FORWARD's policy is DROP: without the accept rules, pod traffic between nodes is dropped")
			}
			f.Fix = "flanneld restores them every --iptables-resync (5s); if they stay wrong while it runs, another tool removes them, or flanneld writes to the other iptables back-end (TWILL_IPTABLES_MODE, see configuration.md)"
		default:
			what := "forward accept rules"
			if *masq {
				what += " and masquerade rules"
			}
			f.Summary = what + " in place"
			if policy != "" {
				f.Summary += fmt.Sprintf(" (FORWARD policy %s)", policy)
			}
		}
		s.add(f)
	}
}
