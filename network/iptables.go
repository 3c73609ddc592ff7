// Package network keeps the iptables rules flanneld owns: masquerading of pod
// traffic that leaves the cluster network (FLANNEL-POSTRTG in nat) and
// acceptance of pod traffic in FORWARD (FLANNEL-FWD in filter), so pods work
// on hosts whose FORWARD policy is DROP. It also checks the sysctls that pod
// traffic depends on.
package network

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Chain and comment names are flannel's, so existing tooling recognises them.
const (
	MasqChain      = "FLANNEL-POSTRTG"
	ForwardChain   = "FLANNEL-FWD"
	MasqComment    = "flanneld masq"
	ForwardComment = "flanneld forward"
)

// IPTables is the part of go-iptables the rules use; *iptables.IPTables
// implements it, and tests use a fake.
type IPTables interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	RenameChain(table, oldChain, newChain string) error
	HasRandomFully() bool
}

// Chain is one chain Twill owns, the jump into it, and its rules in order.
type Chain struct {
	Table string
	Name  string
	// Hook is the built-in chain that jumps here (POSTROUTING, FORWARD).
	Hook string
	// Jump is the rule in Hook that jumps to Name.
	Jump []string
	// Rules are the rule specs of the chain, in order.
	Rules [][]string
}

// Config selects the rules.
type Config struct {
	// Network is the cluster pod network, Subnet this node's pod subnet.
	Network, Subnet *net.IPNet
	// NoMasquerade are destinations pods reach with their own address.
	NoMasquerade []*net.IPNet
	// Masquerade enables FLANNEL-POSTRTG (--ip-masq).
	Masquerade bool
}

// kubeProxyMasqMark is the mark kube-proxy puts on packets it masquerades
// itself; masquerading them twice would be harmless but wasteful.
const kubeProxyMasqMark = "0x4000/0x4000"

// Chains computes the chains and rules for cfg.
func Chains(cfg Config, randomFully bool) []Chain {
	nw, sub := cfg.Network.String(), cfg.Subnet.String()
	var chains []Chain
	if cfg.Masquerade {
		c := func(spec ...string) []string {
			return append(spec, "-m", "comment", "--comment", MasqComment)
		}
		masq := []string{"-j", "MASQUERADE"}
		if randomFully {
			masq = append(masq, "--random-fully")
		}
		rules := [][]string{
			c("-m", "mark", "--mark", kubeProxyMasqMark, "-j", "RETURN"),
			// Pod to pod keeps its address, on this node and across nodes.
			c("-s", nw, "-d", nw, "-j", "RETURN"),
		}
		for _, n := range cfg.NoMasquerade {
			rules = append(rules, c("-s", nw, "-d", n.String(), "-j", "RETURN"))
		}
		rules = append(rules,
			// Pods to anywhere else leave with the node's address; multicast
			// is left alone.
			append(c("-s", nw, "!", "-d", "224.0.0.0/4"), masq...),
			// From outside to this node's pods: keep the client address.
			c("!", "-s", nw, "-d", sub, "-j", "RETURN"),
			// From outside to other nodes' pods: masquerade, so the reply
			// comes back through this node.
			append(c("!", "-s", nw, "-d", nw), masq...),
		)
		chains = append(chains, Chain{
			Table: "nat", Name: MasqChain, Hook: "POSTROUTING",
			Jump:  []string{"-m", "comment", "--comment", MasqComment, "-j", MasqChain},
			Rules: rules,
		})
	}
	fc := func(spec ...string) []string {
		return append(spec, "-m", "comment", "--comment", ForwardComment, "-j", "ACCEPT")
	}
	chains = append(chains, Chain{
		Table: "filter", Name: ForwardChain, Hook: "FORWARD",
		Jump:  []string{"-m", "comment", "--comment", ForwardComment, "-j", ForwardChain},
		Rules: [][]string{fc("-s", nw), fc("-d", nw)},
	})
	return chains
}

// Rules keeps chains in iptables.
type Rules struct {
	ipt IPTables
}

// NewRules returns a keeper over ipt (use iptables.New(iptables.Timeout(s))
// so every call takes the xtables lock).
func NewRules(ipt IPTables) *Rules { return &Rules{ipt: ipt} }

// RandomFully reports whether MASQUERADE --random-fully is available.
func (r *Rules) RandomFully() bool { return r.ipt.HasRandomFully() }

// Ensure makes every chain exist with exactly its rules and the jump into it.
// A chain whose rules are right is not touched. A chain with wrong rules is
// rebuilt under a temporary name and swapped in, so there is no moment
// without masquerading or forwarding. It returns whether anything changed.
func (r *Rules) Ensure(chains []Chain) (bool, error) {
	changed := false
	for _, c := range chains {
		ch, err := r.ensureChain(c)
		if err != nil {
			return changed, fmt.Errorf("%s chain %s: %w", c.Table, c.Name, err)
		}
		changed = changed || ch
	}
	return changed, nil
}

func (r *Rules) ensureChain(c Chain) (bool, error) {
	exists, err := r.ipt.ChainExists(c.Table, c.Name)
	if err != nil {
		return false, err
	}
	changed := false
	if !exists {
		if err := r.fill(c.Table, c.Name, c.Rules); err != nil {
			return false, err
		}
		changed = true
	} else {
		ok, err := r.rulesMatch(c)
		if err != nil {
			return false, err
		}
		if !ok {
			if err := r.swap(c); err != nil {
				return false, err
			}
			changed = true
		}
	}
	jumpOK, err := r.ipt.Exists(c.Table, c.Hook, c.Jump...)
	if err != nil {
		return changed, err
	}
	if !jumpOK {
		if err := r.ipt.Insert(c.Table, c.Hook, 1, c.Jump...); err != nil {
			return changed, fmt.Errorf("inserting jump from %s: %w", c.Hook, err)
		}
		changed = true
	}
	return changed, nil
}

func (r *Rules) fill(table, chain string, rules [][]string) error {
	if err := r.ipt.NewChain(table, chain); err != nil {
		return fmt.Errorf("creating chain %s: %w", chain, err)
	}
	for _, rule := range rules {
		if err := r.ipt.Append(table, chain, rule...); err != nil {
			return fmt.Errorf("appending %q: %w", strings.Join(rule, " "), err)
		}
	}
	return nil
}

// rulesMatch compares the chain's rules with the wanted ones, rule by rule,
// using iptables' own rendering (-S) of each.
func (r *Rules) rulesMatch(c Chain) (bool, error) {
	have, err := r.ipt.List(c.Table, c.Name)
	if err != nil {
		return false, err
	}
	// List's first line is "-N CHAIN".
	if len(have) > 0 && strings.HasPrefix(have[0], "-N ") {
		have = have[1:]
	}
	if len(have) != len(c.Rules) {
		return false, nil
	}
	for i, rule := range c.Rules {
		if !sameRule(have[i], rule) {
			return false, nil
		}
	}
	return true, nil
}

// sameRule compares an "-A CHAIN …" line from iptables -S with a rule spec,
// as sets of tokens after normalising quoting: iptables reorders matches
// (comments move, "-s" is printed before "-m") but keeps each token.
func sameRule(line string, spec []string) bool {
	fields := splitRule(line)
	if len(fields) >= 2 && fields[0] == "-A" {
		fields = fields[2:]
	}
	want := slices.Clone(spec)
	slices.Sort(fields)
	slices.Sort(want)
	return slices.Equal(fields, want)
}

// splitRule splits an iptables -S line into tokens, honouring double quotes.
func splitRule(line string) []string {
	var out []string
	var cur strings.Builder
	inQuote := false
	for _, r := range line {
		switch {
		case r == '"':
			inQuote = !inQuote
		case r == ' ' && !inQuote:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func (r *Rules) swap(c Chain) error {
	tmp := c.Name + "-NEW"
	if ok, _ := r.ipt.ChainExists(c.Table, tmp); ok {
		if err := r.ipt.ClearAndDeleteChain(c.Table, tmp); err != nil {
			return err
		}
	}
	if err := r.fill(c.Table, tmp, c.Rules); err != nil {
		return err
	}
	tmpJump := jumpTo(c.Jump, tmp)
	if err := r.ipt.Insert(c.Table, c.Hook, 1, tmpJump...); err != nil {
		return fmt.Errorf("inserting jump to %s: %w", tmp, err)
	}
	if err := r.ipt.DeleteIfExists(c.Table, c.Hook, c.Jump...); err != nil {
		return err
	}
	if err := r.ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
		return err
	}
	// Renaming keeps the jump pointing at the chain, now under its name.
	if err := r.ipt.RenameChain(c.Table, tmp, c.Name); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, c.Name, err)
	}
	return nil
}

func jumpTo(jump []string, chain string) []string {
	out := slices.Clone(jump)
	out[len(out)-1] = chain
	return out
}

// Remove deletes the jumps and the chains; missing ones are not an error.
func (r *Rules) Remove(chains []Chain) error {
	var errs []error
	for _, c := range chains {
		if err := r.ipt.DeleteIfExists(c.Table, c.Hook, c.Jump...); err != nil {
			errs = append(errs, err)
		}
		for _, name := range []string{c.Name, c.Name + "-NEW"} {
			ok, err := r.ipt.ChainExists(c.Table, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				if err := r.ipt.ClearAndDeleteChain(c.Table, name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}
