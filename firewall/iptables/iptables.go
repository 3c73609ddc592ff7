// Package iptables keeps the firewall.Policy of one IP family in iptables
// (or ip6tables): masquerading of pod traffic that leaves the cluster
// network (FLANNEL-POSTRTG in nat), acceptance of pod traffic in FORWARD
// (FLANNEL-FWD in filter), so pods work on hosts whose FORWARD policy is
// DROP, and the tunnel guard (FLANNEL-VXLAN-GUARD in filter, from INPUT),
// which drops packets to the tunnel's port from addresses not in the ipset
// FLANNEL-VXLAN-PEERS. Chain names and comments are flannel's where
// flannel has them, so existing tooling recognises them.
//
// The rules go through go-iptables, which runs the iptables commands; the
// ipset is kept over netlink, one element a message.
package iptables

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
)

// Chain and comment names are flannel's.
const (
	MasqChain      = "FLANNEL-POSTRTG"
	ForwardChain   = "FLANNEL-FWD"
	MasqComment    = "flanneld masq"
	ForwardComment = "flanneld forward"
	GuardChain     = "FLANNEL-VXLAN-GUARD"
	GuardComment   = "flanneld vxlan guard"
	// PeersSet and PeersSetIPv6 are the guard's ipsets (hash:ip), one per
	// family: ipset names are shared by the families.
	PeersSet     = "FLANNEL-VXLAN-PEERS"
	PeersSetIPv6 = "FLANNEL-VXLAN-PEERS-V6"
)

// SetName is the guard's ipset of family f.
func SetName(f family.Family) string {
	if f == family.IPv6 {
		return PeersSetIPv6
	}
	return PeersSet
}

// IPTables is the part of go-iptables the rules use; *goipt.IPTables
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
	ListWithCounters(table, chain string) ([]string, error)
	HasRandomFully() bool
}

// IPSet is the part of the netlink handle the guard's set uses;
// *netlink.Handle implements it.
type IPSet interface {
	IpsetCreate(name, typ string, o netlink.IpsetCreateOptions) error
	IpsetDestroy(name string) error
	IpsetSwap(name, other string) error
	IpsetList(name string) (*netlink.IPSetResult, error)
	IpsetAdd(name string, e *netlink.IPSetEntry) error
	IpsetDel(name string, e *netlink.IPSetEntry) error
	IpsetTest(name string, e *netlink.IPSetEntry) (bool, error)
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

// kubeProxyMasqMark is the mark kube-proxy puts on packets it masquerades
// itself; masquerading them twice would be harmless but wasteful.
const kubeProxyMasqMark = "0x4000/0x4000"

var (
	masqJump    = []string{"-m", "comment", "--comment", MasqComment, "-j", MasqChain}
	forwardJump = []string{"-m", "comment", "--comment", ForwardComment, "-j", ForwardChain}
	guardJump   = []string{"-m", "comment", "--comment", GuardComment, "-j", GuardChain}
)

// masqChain computes the masquerade chain of p: upstream flannel's rules,
// in its order and with its tokens in its order, so a node moved from it
// (or back) keeps the chain as it is, and `iptables -t nat -S` reads as
// tutorials show it.
func masqChain(p firewall.Policy, randomFully bool) Chain {
	nw, sub := p.Network.String(), p.Subnet.String()
	// rule is a match, the chain's comment, then the target.
	rule := func(match []string, target ...string) []string {
		return append(append(match, "-m", "comment", "--comment", MasqComment), target...)
	}
	ret := []string{"-j", "RETURN"}
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	rules := [][]string{
		rule([]string{"-m", "mark", "--mark", kubeProxyMasqMark}, ret...),
		// This node's pods to the pod network, and the pod network to
		// this node's pods, keep their addresses.
		rule([]string{"-s", sub, "-d", nw}, ret...),
		rule([]string{"-s", nw, "-d", sub}, ret...),
		// From outside to this node's pods: keep the client address.
		rule([]string{"!", "-s", nw, "-d", sub}, ret...),
	}
	// NoMasqueradeCIDRs (Twill's; none by default, and then the chain is
	// upstream's exactly).
	for _, n := range p.NoMasquerade {
		rules = append(rules, rule([]string{"-s", nw, "-d", n.String()}, ret...))
	}
	rules = append(rules,
		// Pods to anywhere else leave with the node's address; multicast
		// is left alone.
		rule([]string{"-s", nw, "!", "-d", p.Family().Multicast().String()}, masq...),
		// From outside to other nodes' pods: masquerade, so the reply
		// comes back through this node.
		rule([]string{"!", "-s", nw, "-d", nw}, masq...),
	)
	return Chain{Table: "nat", Name: MasqChain, Hook: "POSTROUTING", Jump: masqJump, Rules: rules}
}

// forwardChain computes the forward chain of p.
func forwardChain(p firewall.Policy) Chain {
	nw := p.Network.String()
	fc := func(spec ...string) []string {
		return append(spec, "-m", "comment", "--comment", ForwardComment, "-j", "ACCEPT")
	}
	return Chain{Table: "filter", Name: ForwardChain, Hook: "FORWARD", Jump: forwardJump, Rules: [][]string{fc("-s", nw), fc("-d", nw)}}
}

// guardChain computes the guard chain of p: packets to the guarded port
// from an address outside the set are dropped (and counted by the rule).
func guardChain(p firewall.Policy) Chain {
	rule := []string{"-p", "udp", "-m", "udp", "--dport", strconv.Itoa(int(p.GuardPort)),
		"-m", "set", "!", "--match-set", SetName(p.Family()), "src",
		"-m", "comment", "--comment", GuardComment, "-j", "DROP"}
	return Chain{Table: "filter", Name: GuardChain, Hook: "INPUT", Jump: guardJump, Rules: [][]string{rule}}
}

// Chains computes the chains p wants, the masquerade chain (when on)
// first; the guard chain only when guard is true.
func Chains(p firewall.Policy, randomFully, guard bool) []Chain {
	var chains []Chain
	if p.Masquerade {
		chains = append(chains, masqChain(p, randomFully))
	}
	chains = append(chains, forwardChain(p))
	if guard && p.GuardPort != 0 {
		chains = append(chains, guardChain(p))
	}
	return chains
}

// all are every chain of ours, by name and jump: what Remove removes,
// whatever rules they hold.
var all = []Chain{
	{Table: "nat", Name: MasqChain, Hook: "POSTROUTING", Jump: masqJump},
	{Table: "filter", Name: ForwardChain, Hook: "FORWARD", Jump: forwardJump},
	{Table: "filter", Name: GuardChain, Hook: "INPUT", Jump: guardJump},
}

// Firewall keeps one family's policy in iptables.
type Firewall struct {
	ipt  IPTables
	sets IPSet
	fam  family.Family

	mu sync.Mutex
	g  firewall.GuardState
}

var _ firewall.Firewall = (*Firewall)(nil)

// New returns the firewall of family f over the host's iptables (ip6tables
// for IPv6); every call takes the xtables lock, waiting up to 10 s.
func New(f family.Family) (firewall.Firewall, error) {
	proto := goipt.ProtocolIPv4
	if f == family.IPv6 {
		proto = goipt.ProtocolIPv6
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("%s iptables: %w (is the iptables package installed?)", f, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket for ipsets: %w", err)
	}
	return NewWith(ipt, h, f), nil
}

// NewWith returns the firewall of family f over ipt and sets.
func NewWith(ipt IPTables, sets IPSet, f family.Family) *Firewall {
	return &Firewall{ipt: ipt, sets: sets, fam: f}
}

// chainState is what the kernel holds of one chain.
type chainState struct {
	exists, rulesOK, jumpOK bool
}

func (fw *Firewall) inspect(c Chain) (chainState, error) {
	var st chainState
	var err error
	if st.exists, err = fw.ipt.ChainExists(c.Table, c.Name); err != nil {
		return st, err
	}
	if !st.exists {
		// No jump can point at a chain that does not exist (and ip6tables
		// fails the check rather than answer no).
		return st, nil
	}
	if st.rulesOK, err = fw.rulesMatch(c); err != nil {
		return st, err
	}
	st.jumpOK, err = fw.ipt.Exists(c.Table, c.Hook, c.Jump...)
	return st, err
}

// Check implements firewall.Firewall.
func (fw *Firewall) Check(p firewall.Policy) ([]string, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var diffs []string
	set, err := fw.setExists(SetName(fw.fam))
	if err != nil {
		return nil, err
	}
	guard := fw.g.Guarded(p, set)
	for _, c := range Chains(p, fw.ipt.HasRandomFully(), guard) {
		st, err := fw.inspect(c)
		if err != nil {
			return nil, fmt.Errorf("%s chain %s: %w", c.Table, c.Name, err)
		}
		switch {
		case !st.exists:
			diffs = append(diffs, fmt.Sprintf("%s chain %s is missing", c.Table, c.Name))
		case !st.rulesOK:
			diffs = append(diffs, fmt.Sprintf("%s chain %s does not hold exactly its %d rules", c.Table, c.Name, len(c.Rules)))
		}
		if !st.jumpOK {
			diffs = append(diffs, fmt.Sprintf("the jump from %s %s to %s is missing", c.Table, c.Hook, c.Name))
		}
	}
	if !p.Masquerade {
		if ok, err := fw.ipt.ChainExists("nat", MasqChain); err != nil {
			return nil, err
		} else if ok {
			diffs = append(diffs, fmt.Sprintf("nat chain %s exists though masquerading is off", MasqChain))
		}
	}
	if guard && !set {
		diffs = append(diffs, fmt.Sprintf("ipset %s is missing", SetName(fw.fam)))
	}
	if p.GuardPort == 0 {
		if ok, err := fw.ipt.ChainExists("filter", GuardChain); err != nil {
			return nil, err
		} else if ok {
			diffs = append(diffs, fmt.Sprintf("filter chain %s exists though there is no guard", GuardChain))
		}
		if set {
			diffs = append(diffs, fmt.Sprintf("ipset %s exists though there is no guard", SetName(fw.fam)))
		}
	}
	return diffs, nil
}

// ForwardPolicy returns the policy of the built-in FORWARD chain (ACCEPT or
// DROP): with DROP, pods on different nodes reach each other only through
// the accept rules of ours.
func (fw *Firewall) ForwardPolicy() (string, error) {
	lines, err := fw.ipt.List("filter", "FORWARD")
	if err != nil {
		return "", fmt.Errorf("listing FORWARD: %w", err)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "-P" && f[1] == "FORWARD" {
			return f[2], nil
		}
	}
	return "", errors.New("iptables -S FORWARD shows no policy")
}

// Ensure implements firewall.Firewall. A chain whose rules are right is not
// touched. A chain with wrong rules is rebuilt under a temporary name and
// swapped in, so there is no moment without masquerading or forwarding.
func (fw *Firewall) Ensure(p firewall.Policy) (bool, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.g.Policy, fw.g.Ensured = p, true
	return fw.ensure()
}

// installGuard puts in the guard of fw.g.Policy that was waiting for its
// set, the set filled before the rule that names it; the other chains are
// Ensure's. fw.mu is held.
func (fw *Firewall) installGuard() (bool, error) {
	name := SetName(fw.fam)
	set, err := fw.setExists(name)
	if err != nil {
		return false, err
	}
	if !set {
		if err := fw.fillSet(name); err != nil {
			return false, err
		}
	}
	fw.g.Installed = true
	c := guardChain(fw.g.Policy)
	if _, err := fw.ensureChain(c); err != nil {
		return true, fmt.Errorf("%s chain %s: %w", c.Table, c.Name, err)
	}
	return true, nil
}

// ensure brings the rules to fw.g.Policy. fw.mu is held.
func (fw *Firewall) ensure() (bool, error) {
	p := fw.g.Policy
	changed := false
	name := SetName(fw.fam)
	set, err := fw.setExists(name)
	if err != nil {
		return false, err
	}
	guard := fw.g.Guarded(p, set)
	if guard && !set {
		// The set goes in, filled, before the rule that names it.
		if err := fw.fillSet(name); err != nil {
			return false, err
		}
		changed = true
	}
	fw.g.Installed = guard
	for _, c := range Chains(p, fw.ipt.HasRandomFully(), guard) {
		ch, err := fw.ensureChain(c)
		if err != nil {
			return changed, fmt.Errorf("%s chain %s: %w", c.Table, c.Name, err)
		}
		changed = changed || ch
	}
	if !p.Masquerade {
		// --ip-masq off: a masquerade chain of an earlier run must go.
		ok, err := fw.ipt.ChainExists("nat", MasqChain)
		if err != nil {
			return changed, err
		}
		if ok {
			if err := fw.remove(all[:1]); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	if p.GuardPort == 0 {
		// No guard: one of an earlier run must go, rule before set.
		ok, err := fw.ipt.ChainExists("filter", GuardChain)
		if err != nil {
			return changed, err
		}
		if ok {
			if err := fw.remove(all[2:]); err != nil {
				return changed, err
			}
			changed = true
		}
		if set {
			if err := fw.destroySets(); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	return changed, nil
}

func (fw *Firewall) ensureChain(c Chain) (bool, error) {
	st, err := fw.inspect(c)
	if err != nil {
		return false, err
	}
	changed := false
	switch {
	case !st.exists:
		if err := fw.fill(c.Table, c.Name, c.Rules); err != nil {
			return false, err
		}
		changed = true
	case !st.rulesOK:
		if err := fw.swap(c); err != nil {
			return false, err
		}
		changed = true
		// The swap moved the jump along with the chain.
		if st.jumpOK, err = fw.ipt.Exists(c.Table, c.Hook, c.Jump...); err != nil {
			return changed, err
		}
	}
	if !st.jumpOK {
		if err := fw.ipt.Insert(c.Table, c.Hook, 1, c.Jump...); err != nil {
			return changed, fmt.Errorf("inserting jump from %s: %w", c.Hook, err)
		}
		changed = true
	}
	return changed, nil
}

func (fw *Firewall) fill(table, chain string, rules [][]string) error {
	if err := fw.ipt.NewChain(table, chain); err != nil {
		return fmt.Errorf("creating chain %s: %w", chain, err)
	}
	for _, rule := range rules {
		if err := fw.ipt.Append(table, chain, rule...); err != nil {
			return fmt.Errorf("appending %q: %w", strings.Join(rule, " "), err)
		}
	}
	return nil
}

// rulesMatch compares the chain's rules with the wanted ones, rule by rule,
// using iptables' own rendering (-S) of each.
func (fw *Firewall) rulesMatch(c Chain) (bool, error) {
	have, err := fw.ipt.List(c.Table, c.Name)
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

func (fw *Firewall) swap(c Chain) error {
	tmp := c.Name + "-NEW"
	if ok, _ := fw.ipt.ChainExists(c.Table, tmp); ok {
		if err := fw.ipt.ClearAndDeleteChain(c.Table, tmp); err != nil {
			return err
		}
	}
	if err := fw.fill(c.Table, tmp, c.Rules); err != nil {
		return err
	}
	tmpJump := jumpTo(c.Jump, tmp)
	if err := fw.ipt.Insert(c.Table, c.Hook, 1, tmpJump...); err != nil {
		return fmt.Errorf("inserting jump to %s: %w", tmp, err)
	}
	if err := fw.ipt.DeleteIfExists(c.Table, c.Hook, c.Jump...); err != nil {
		return err
	}
	if err := fw.ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
		return err
	}
	// Renaming keeps the jump pointing at the chain, now under its name.
	if err := fw.ipt.RenameChain(c.Table, tmp, c.Name); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, c.Name, err)
	}
	return nil
}

func jumpTo(jump []string, chain string) []string {
	out := slices.Clone(jump)
	out[len(out)-1] = chain
	return out
}

// Remove implements firewall.Firewall: the jumps, the chains and the
// guard's sets go.
func (fw *Firewall) Remove() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.g.Installed = false
	return errors.Join(fw.remove(all), fw.destroySets())
}

func (fw *Firewall) remove(chains []Chain) error {
	var errs []error
	for _, c := range chains {
		for _, name := range []string{c.Name, c.Name + "-NEW"} {
			ok, err := fw.ipt.ChainExists(c.Table, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !ok {
				// No jump can point at it (and iptables fails the
				// check for one rather than answer no).
				continue
			}
			if err := fw.ipt.DeleteIfExists(c.Table, c.Hook, jumpTo(c.Jump, name)...); err != nil {
				errs = append(errs, err)
			}
			if err := fw.ipt.ClearAndDeleteChain(c.Table, name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
