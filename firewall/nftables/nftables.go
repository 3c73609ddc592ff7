// Package nftables keeps the firewall.Policy of one IP family in an
// nftables table of its own, flannel's "flannel-ipv4" or "flannel-ipv6", with
// the same semantics as firewall/iptables: masquerading of pod traffic that
// leaves the cluster network (chain postrtg), acceptance of pod traffic in
// forward (chain forward) and the tunnel guard (chain vxlan-guard, set
// vxlan-peers, counter vxlan-guard-drops). Chain names are flannel's.
//
// It talks to the kernel through sigs.k8s.io/knftables, which runs the nft
// command: every change is one nft transaction (`nft -f`), applied whole or
// not at all, and every read an `nft --json list`. Each rule carries a
// comment holding a digest of its chain and of the rules up to it, so a
// rule that was deleted, added, moved or replaced is seen in the comments
// alone; its chain is then flushed and refilled in the same transaction,
// with no moment without rules.
package nftables

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
)

// Table, chain, set and counter names. The tables and the masquerade and
// forward chains are flannel's.
const (
	TableIPv4    = "flannel-ipv4"
	TableIPv6    = "flannel-ipv6"
	MasqChain    = "postrtg"
	ForwardChain = "forward"
	GuardChain   = "vxlan-guard"
	PeersSet     = "vxlan-peers"
	DropCounter  = "vxlan-guard-drops"
)

// Comments before each rule's digest.
const (
	masqComment    = "flanneld masq"
	forwardComment = "flanneld forward"
	guardComment   = "flanneld vxlan guard"
)

// kubeProxyMasqMark is the mark kube-proxy puts on packets it masquerades
// itself.
const kubeProxyMasqMark = "0x4000"

// timeout bounds one nft command.
const timeout = time.Minute

// TableName is the table of family f.
func TableName(f family.Family) string {
	if f == family.IPv6 {
		return TableIPv6
	}
	return TableIPv4
}

// nftFamily is nftables' family of f.
func nftFamily(f family.Family) knftables.Family {
	if f == family.IPv6 {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// addrType is the type of f's addresses in a set.
func addrType(f family.Family) string {
	if f == family.IPv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// Chain is one base chain of ours and its rules in order.
type Chain struct {
	Name     string
	Type     knftables.BaseChainType
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Rules    []string
	// Comments are the rules' comments: a word for people and a digest of
	// the chain and of every rule up to this one.
	Comments []string
}

func newChain(f family.Family, name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority, comment string, rules ...string) Chain {
	c := Chain{Name: name, Type: typ, Hook: hook, Priority: prio, Rules: rules}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s", nftFamily(f), TableName(f), name, typ, hook, prio)
	for _, r := range rules {
		fmt.Fprintf(h, "\x00%s", r)
		c.Comments = append(c.Comments, comment+" "+hex.EncodeToString(h.Sum(nil))[:16])
	}
	return c
}

// Chains computes the chains p wants, the masquerade chain (when on)
// first; the guard chain only when guard is true.
func Chains(p firewall.Policy, guard bool) []Chain {
	f := p.Family()
	ip := string(nftFamily(f))
	nw, sub := p.Network.String(), p.Subnet.String()
	var chains []Chain
	if p.Masquerade {
		// Upstream flannel's rules, in its order and as it writes them,
		// so a node moved from it (or back) reads the same; its fourth
		// rule differs from its iptables twin (it returns everything from
		// outside this node's subnet to the pod network, which leaves the
		// last rule nothing to match) and is kept as upstream has it.
		rules := []string{
			"meta mark " + kubeProxyMasqMark + " return",
			ip + " saddr " + sub + " " + ip + " daddr " + nw + " return",
			ip + " saddr " + nw + " " + ip + " daddr " + sub + " return",
			ip + " saddr != " + sub + " " + ip + " daddr " + nw + " return",
		}
		// NoMasqueradeCIDRs (Twill's; none by default).
		for _, n := range p.NoMasquerade {
			rules = append(rules, ip+" saddr "+nw+" "+ip+" daddr "+n.String()+" return")
		}
		rules = append(rules,
			// Pods to anywhere else leave with the node's address;
			// multicast is left alone.
			ip+" saddr "+nw+" "+ip+" daddr != "+f.Multicast().String()+" masquerade fully-random",
			ip+" saddr != "+nw+" "+ip+" daddr "+nw+" masquerade fully-random",
		)
		chains = append(chains, newChain(f, MasqChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, masqComment, rules...))
	}
	chains = append(chains, newChain(f, ForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority, forwardComment,
		ip+" saddr "+nw+" accept",
		ip+" daddr "+nw+" accept"))
	if guard && p.GuardPort != 0 {
		chains = append(chains, newChain(f, GuardChain, knftables.FilterType, knftables.InputHook, knftables.FilterPriority, guardComment,
			"udp dport "+strconv.Itoa(int(p.GuardPort))+" "+ip+" saddr != @"+PeersSet+" counter name "+strconv.Quote(DropCounter)+" drop"))
	}
	return chains
}

// ours are every chain this package may have made.
var ours = []string{MasqChain, ForwardChain, GuardChain}

// Firewall keeps one family's policy in its nftables table.
type Firewall struct {
	nft knftables.Interface
	fam family.Family

	mu sync.Mutex
	g  firewall.GuardState
}

var _ firewall.Firewall = (*Firewall)(nil)

// New returns the firewall of family f over the host's nftables.
func New(f family.Family) (firewall.Firewall, error) {
	nft, err := knftables.New(nftFamily(f), TableName(f))
	if err != nil {
		return nil, fmt.Errorf("%s nftables: %w (is the nft command installed, and the kernel's nf_tables?)", f, err)
	}
	return NewWith(nft, f), nil
}

// NewWith returns the firewall of family f over nft, which must be made
// for f's family and TableName(f).
func NewWith(nft knftables.Interface, f family.Family) *Firewall {
	return &Firewall{nft: nft, fam: f}
}

// state is what the kernel holds of our table.
type state struct {
	table    bool
	chains   map[string]bool
	sets     map[string]bool
	counters map[string]bool
	// comments are each chain's rules' comments, in order ("" for a rule
	// without one).
	comments map[string][]string
}

// readRules reads every rule's comment, by chain; nil when the table is
// missing.
func (fw *Firewall) readRules(ctx context.Context) (map[string][]string, error) {
	rules, err := fw.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the rules of table %s: %w", TableName(fw.fam), err)
	}
	comments := map[string][]string{}
	for _, r := range rules {
		c := ""
		if r.Comment != nil {
			c = *r.Comment
		}
		comments[r.Chain] = append(comments[r.Chain], c)
	}
	return comments, nil
}

// read reads the table's objects and rules.
func (fw *Firewall) read(ctx context.Context) (state, error) {
	st := state{chains: map[string]bool{}, sets: map[string]bool{}, counters: map[string]bool{}, comments: map[string][]string{}}
	all, err := fw.nft.ListAll(ctx)
	if knftables.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading table %s: %w", TableName(fw.fam), err)
	}
	st.table = true
	for kind, m := range map[string]map[string]bool{"chain": st.chains, "set": st.sets, "counter": st.counters} {
		for _, name := range all[kind] {
			m[name] = true
		}
	}
	comments, err := fw.readRules(ctx)
	if err != nil {
		return st, err
	}
	if comments != nil {
		st.comments = comments
	}
	return st, nil
}

// rulesRight is the check of every --iptables-resync, one nft command:
// it reports whether the rules alone show the table right. Once the
// guard's set is known (or there is no guard), rules with the right
// digests imply their chains, and the guard's set and counter, which
// they name; an unwanted chain of ours shows by its rules. Anything else
// takes the full read.
func (fw *Firewall) rulesRight(ctx context.Context) (bool, error) {
	p := fw.g.Policy
	if p.GuardPort != 0 && !fw.g.Allowed.Synced() {
		return false, nil
	}
	comments, err := fw.readRules(ctx)
	if err != nil || comments == nil {
		return false, err
	}
	want := map[string]bool{}
	for _, c := range Chains(p, true) {
		want[c.Name] = true
		if !slices.Equal(comments[c.Name], c.Comments) {
			return false, nil
		}
	}
	for _, name := range ours {
		if !want[name] && len(comments[name]) > 0 {
			return false, nil
		}
	}
	return true, nil
}

// diff is what differs between the kernel and the chains.
type diff struct {
	text []string
	// write are the chains to (re)fill, drop those to delete.
	write []Chain
	drop  []string
	// guard objects: add makes the set and counter exist (fill: with the
	// allowed addresses); del removes those that exist.
	addGuard, fillSet, delSet, delCounter bool
}

func (fw *Firewall) compare(st state, chains []Chain, guard bool) diff {
	var d diff
	table := TableName(fw.fam)
	if !st.table {
		d.text = append(d.text, fmt.Sprintf("table %s %s is missing", nftFamily(fw.fam), table))
	}
	wanted := map[string]bool{}
	for _, c := range chains {
		wanted[c.Name] = true
		switch {
		case !st.chains[c.Name]:
			if st.table {
				d.text = append(d.text, fmt.Sprintf("chain %s is missing", c.Name))
			}
			d.write = append(d.write, c)
		case !slices.Equal(st.comments[c.Name], c.Comments):
			d.text = append(d.text, fmt.Sprintf("chain %s does not hold exactly its %d rules", c.Name, len(c.Rules)))
			d.write = append(d.write, c)
		}
	}
	for _, name := range ours {
		if st.chains[name] && !wanted[name] {
			d.text = append(d.text, fmt.Sprintf("chain %s exists though the policy does not want it", name))
			d.drop = append(d.drop, name)
		}
	}
	if guard {
		if !st.sets[PeersSet] || !st.counters[DropCounter] {
			if st.table {
				d.text = append(d.text, fmt.Sprintf("set %s or counter %s is missing", PeersSet, DropCounter))
			}
			d.addGuard = true
			d.fillSet = !st.sets[PeersSet]
		}
	} else {
		d.delSet, d.delCounter = st.sets[PeersSet], st.counters[DropCounter]
		if d.delSet || d.delCounter {
			d.text = append(d.text, fmt.Sprintf("set %s or counter %s exists without a guard", PeersSet, DropCounter))
		}
	}
	return d
}

func (d diff) empty() bool {
	return len(d.text) == 0 && len(d.write) == 0 && len(d.drop) == 0 && !d.addGuard && !d.delSet && !d.delCounter
}

// transaction builds the one transaction that puts d right.
func (fw *Firewall) transaction(d diff) *knftables.Transaction {
	tx := fw.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules of flanneld (Twill)")})
	if d.addGuard {
		tx.Add(&knftables.Set{Name: PeersSet, Type: addrType(fw.fam), Comment: knftables.PtrTo("nodes whose VXLAN packets are accepted")})
		tx.Add(&knftables.Counter{Name: DropCounter, Comment: knftables.PtrTo("VXLAN packets dropped: not from a node")})
		if d.fillSet {
			for _, a := range fw.g.Allowed.Sorted() {
				tx.Add(element(a))
			}
		}
	}
	for _, c := range d.write {
		tx.Add(&knftables.Chain{Name: c.Name, Type: knftables.PtrTo(c.Type), Hook: knftables.PtrTo(c.Hook), Priority: knftables.PtrTo(c.Priority)})
		tx.Flush(&knftables.Chain{Name: c.Name})
		for i, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r, Comment: knftables.PtrTo(c.Comments[i])})
		}
	}
	for _, name := range d.drop {
		tx.Flush(&knftables.Chain{Name: name})
		tx.Delete(&knftables.Chain{Name: name})
	}
	if d.delSet {
		tx.Delete(&knftables.Set{Name: PeersSet})
	}
	if d.delCounter {
		tx.Delete(&knftables.Counter{Name: DropCounter})
	}
	return tx
}

func element(a netip.Addr) *knftables.Element {
	return &knftables.Element{Set: PeersSet, Key: []string{a.String()}}
}

// Check implements firewall.Firewall.
func (fw *Firewall) Check(p firewall.Policy) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fw.mu.Lock()
	defer fw.mu.Unlock()
	st, err := fw.read(ctx)
	if err != nil {
		return nil, err
	}
	guard := fw.g.Guarded(p, st.sets[PeersSet])
	return fw.compare(st, Chains(p, guard), guard).text, nil
}

// Ensure implements firewall.Firewall: when anything differs, one
// transaction makes the table what p says; otherwise nothing is sent.
func (fw *Firewall) Ensure(p firewall.Policy) (bool, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.g.Policy, fw.g.Ensured = p, true
	return fw.ensure()
}

// ensure brings the table to fw.g.Policy. fw.mu is held.
func (fw *Firewall) ensure() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if ok, err := fw.rulesRight(ctx); err != nil {
		return false, err
	} else if ok {
		fw.g.Installed = fw.g.Policy.GuardPort != 0
		return false, nil
	}
	st, err := fw.read(ctx)
	if err != nil {
		return false, err
	}
	guard := fw.g.Guarded(fw.g.Policy, st.sets[PeersSet])
	d := fw.compare(st, Chains(fw.g.Policy, guard), guard)
	if d.empty() {
		fw.g.Installed = guard
		return false, nil
	}
	if err := fw.nft.Run(ctx, fw.transaction(d)); err != nil {
		return false, fmt.Errorf("writing table %s: %w", TableName(fw.fam), err)
	}
	fw.g.Installed = guard
	return true, nil
}

// Remove implements firewall.Firewall: the table goes, with everything in
// it.
func (fw *Firewall) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fw.mu.Lock()
	defer fw.mu.Unlock()
	// nft 1.0.6 has no "destroy": adding the table first makes the delete
	// succeed whether it existed or not, in one transaction.
	tx := fw.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := fw.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("removing table %s: %w", TableName(fw.fam), err)
	}
	fw.g.Installed = false
	return nil
}

// Allow implements firewall.Guard: one transaction adds the elements.
func (fw *Firewall) Allow(addrs ...netip.Addr) error {
	return fw.elements(addrs, "adding %v to set %s: %w", fw.g.Allowed.Add, func(tx *knftables.Transaction, a netip.Addr) {
		tx.Add(element(a))
	})
}

// Disallow implements firewall.Guard: one transaction removes the
// elements.
func (fw *Firewall) Disallow(addrs ...netip.Addr) error {
	return fw.elements(addrs, "removing %v from set %s: %w", fw.g.Allowed.Delete, func(tx *knftables.Transaction, a netip.Addr) {
		// Adding first makes the delete succeed whether the element was
		// there or not.
		tx.Add(element(a))
		tx.Delete(element(a))
	})
}

// elements records addrs with record and, when the kernel holds the
// guard, sends one transaction that op fills for each address.
func (fw *Firewall) elements(addrs []netip.Addr, errFormat string, record func(...netip.Addr), op func(*knftables.Transaction, netip.Addr)) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	record(addrs...)
	if !fw.g.Installed || len(addrs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tx := fw.nft.NewTransaction()
	for _, a := range addrs {
		op(tx, a)
	}
	if err := fw.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf(errFormat, addrs, PeersSet, err)
	}
	return nil
}

// SyncAllowed implements firewall.Guard. A guard not installed yet is
// installed now, its set filled, in one transaction.
func (fw *Firewall) SyncAllowed(addrs []netip.Addr) (bool, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	switch fw.g.Sync(addrs) {
	case firewall.SyncNothing:
		return false, nil
	case firewall.SyncInstall:
		return fw.ensure()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	elems, err := fw.nft.ListElements(ctx, "set", PeersSet)
	if knftables.IsNotFound(err) {
		return fw.ensure()
	}
	if err != nil {
		return false, fmt.Errorf("reading set %s: %w", PeersSet, err)
	}
	have := make([]netip.Addr, 0, len(elems))
	var junk []*knftables.Element
	for _, e := range elems {
		if len(e.Key) == 1 {
			if a, err := netip.ParseAddr(e.Key[0]); err == nil {
				have = append(have, a)
				continue
			}
		}
		junk = append(junk, e)
	}
	add, del := fw.g.Allowed.Diff(have)
	if len(add)+len(del)+len(junk) == 0 {
		return false, nil
	}
	tx := fw.nft.NewTransaction()
	for _, a := range add {
		tx.Add(element(a))
	}
	for _, a := range del {
		tx.Delete(element(a))
	}
	for _, e := range junk {
		tx.Delete(&knftables.Element{Set: PeersSet, Key: e.Key})
	}
	if err := fw.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("repairing set %s (%d to add, %d to remove): %w", PeersSet, len(add), len(del)+len(junk), err)
	}
	return true, nil
}

// Dropped implements firewall.Guard: the drop counter's packets.
func (fw *Firewall) Dropped() (uint64, error) {
	fw.mu.Lock()
	installed := fw.g.Installed
	fw.mu.Unlock()
	if !installed {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	counters, err := fw.nft.ListCounters(ctx)
	if knftables.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading counter %s: %w", DropCounter, err)
	}
	for _, c := range counters {
		if c.Name == DropCounter && c.Packets != nil {
			return *c.Packets, nil
		}
	}
	return 0, nil
}
