package trace

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/twill-net/twill/lab/trace/path"
)

// probeBytes is the IP length of a probe: ping's default 56 data bytes, or
// a bare TCP SYN or a short UDP datagram, all below it. No interface of the
// lab has an MTU that small, so a probe is never dropped for its size.
const probeBytes = 84

// dropRule is one packet-filter rule (or chain policy) that drops or
// rejects, with its packet counter.
type dropRule struct {
	// Where is "table … chain …", Rule the rule as the tool prints it
	// without its counter.
	Where, Rule string
	Packets     int
}

// nftCounter is the counter expression of an nft rule.
var nftCounter = regexp.MustCompile(`\s*counter packets (\d+) bytes \d+`)

// parseNftDrops returns the rules of `nft list ruleset` that drop or
// reject, with their counters; a rule without a counter counts 0 and is
// kept, as are chains whose policy is drop (policies have no counter).
func parseNftDrops(out string) []dropRule {
	var rules []dropRule
	var table, chain string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table, chain = f[1]+" "+f[2], ""
		case len(f) >= 2 && f[0] == "chain":
			chain = f[1]
		case chain == "":
		case strings.Contains(l, "policy drop"):
			rules = append(rules, dropRule{Where: "table " + table + " chain " + chain, Rule: "policy drop"})
		case len(f) > 0 && (f[len(f)-1] == "drop" || f[0] == "reject" || strings.Contains(l, " reject")):
			r := dropRule{Where: "table " + table + " chain " + chain, Rule: strings.TrimSpace(nftCounter.ReplaceAllString(l, ""))}
			if m := nftCounter.FindStringSubmatch(l); m != nil {
				r.Packets, _ = strconv.Atoi(m[1])
			}
			rules = append(rules, r)
		}
	}
	return rules
}

// counted returns the rules of after whose counters rose since before,
// with the rise as Packets, most first.
func counted(before, after []dropRule) []dropRule {
	was := map[string]int{}
	for _, r := range before {
		was[r.Where+"\x00"+r.Rule] += r.Packets
	}
	var rose []dropRule
	for _, r := range after {
		if d := r.Packets - was[r.Where+"\x00"+r.Rule]; d > 0 {
			rose = append(rose, dropRule{Where: r.Where, Rule: r.Rule, Packets: d})
		}
	}
	sort.SliceStable(rose, func(i, j int) bool { return rose[i].Packets > rose[j].Packets })
	return rose
}

// explainDrop replaces the reason of a break where the probe vanished
// between two captures ("dropped in between") by what the kernel says: a
// drop or reject rule in the namespaces on either side whose counter rose
// while the probes were sent again, or, when none did, that neither a
// rule that counts nor the MTU dropped it.
func (t *tracer) explainDrop(ctx context.Context, p *path.Path) {
	if p.Break == nil || p.Break.Hop == 0 {
		return
	}
	h := &p.Hops[p.Break.Hop]
	if h.Missing != "" || !h.Captured || h.Proven() {
		return
	}
	last := -1
	for i := p.Break.Hop - 1; i >= 0; i-- {
		if p.Hops[i].Dir == h.Dir && p.Hops[i].Proven() {
			last = i
			break
		}
	}
	if last < 0 {
		return
	}
	lh := p.Hops[last]
	var places []*place
	for _, pl := range []path.Place{lh.Place, h.Place} {
		if q := t.book.placeOf(pl); q != nil && (len(places) == 0 || places[0] != q) {
			places = append(places, q)
		}
	}
	read := func() [][]dropRule {
		out := make([][]dropRule, len(places))
		for i, q := range places {
			s, err := q.run(ctx, "nft", "list", "ruleset")
			if err == nil {
				out[i] = parseNftDrops(s)
			}
		}
		return out
	}
	before := read()
	_ = t.probe(ctx, t.o.Probes)
	after := read()
	between := fmt.Sprintf("seen on %s in %s, not on %s in %s", lh.Interface, lh.Place, h.Interface, h.Place)
	var found []string
	for i, q := range places {
		for _, r := range counted(before[i], after[i]) {
			found = append(found, fmt.Sprintf("%s in %s %s: `%s` (its counter rose by %d while %d probes were sent again)", "rule", q, r.Where, r.Rule, r.Packets, t.o.Probes))
			h.Evidence = append(h.Evidence, path.Evidence{Command: "nft list ruleset (in " + q.String() + ", before and after the probes)", Output: fmt.Sprintf("%s: %s: +%d packets", r.Where, r.Rule, r.Packets)})
		}
	}
	if len(found) > 0 {
		p.Break.Reason = between + ": dropped by a packet-filter " + strings.Join(found, "; ") + "; not the MTU: the probes are " + strconv.Itoa(probeBytes) + " bytes"
		return
	}
	var policies []string
	for i, q := range places {
		for _, r := range after[i] {
			if r.Rule == "policy drop" {
				policies = append(policies, fmt.Sprintf("%s %s", q, r.Where))
			}
		}
	}
	reason := between + ": dropped in between, by no drop or reject rule that counts (nft list ruleset in " + placeNames(places) + "), and not for its size: the probes are " + strconv.Itoa(probeBytes) + " bytes"
	if len(policies) > 0 {
		reason += "; chains whose policy is drop (they keep no count): " + strings.Join(policies, ", ")
	} else {
		reason += "; look at rp_filter (sysctl net.ipv4.conf.*.rp_filter) and at the routes back to the source"
	}
	p.Break.Reason = reason
}

func placeNames(ps []*place) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, " and ")
}
