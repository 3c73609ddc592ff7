package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
)

// logGuard logs the guard calls it gets.
type logGuard struct{ log []string }

func (g *logGuard) note(verb string, addrs []netip.Addr) {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	slices.Sort(s)
	g.log = append(g.log, verb+" "+strings.Join(s, ","))
}

func (g *logGuard) Allow(addrs ...netip.Addr) error    { g.note("allow", addrs); return nil }
func (g *logGuard) Disallow(addrs ...netip.Addr) error { g.note("disallow", addrs); return nil }
func (g *logGuard) SyncAllowed(addrs []netip.Addr) (bool, error) {
	g.note("sync", addrs)
	return false, nil
}
func (g *logGuard) Dropped() (uint64, error) { return 0, nil }

var _ firewall.Guard = (*logGuard)(nil)

func TestGuardsShareAddresses(t *testing.T) {
	lg := &logGuard{}
	g := &guards{by: map[family.Family]firewall.Guard{family.IPv4: lg}, peers: map[string][]netip.Addr{}, refs: map[netip.Addr]int{}}
	a, b := netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("172.18.0.4")
	v6 := netip.MustParseAddr("fd00::3")
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Two peers behind one address (NAT), then one of them leaves: the
	// address stays until the second leaves too. An address of a family
	// without a guard is ignored.
	step(g.admit(map[string][]netip.Addr{"p1": {a, v6}}))
	step(g.settle("p1", []netip.Addr{a, v6}))
	step(g.admit(map[string][]netip.Addr{"p2": {a}}))
	step(g.settle("p2", []netip.Addr{a}))
	step(g.settle("p1", nil))
	step(g.admit(map[string][]netip.Addr{"p2": {b}}))
	step(g.settle("p2", []netip.Addr{b}))
	if _, err := g.reset(map[string][]netip.Addr{"p2": {b}, "p3": {a}}); err != nil {
		t.Fatal(err)
	}
	want := []string{"allow 172.18.0.3", "allow 172.18.0.4", "disallow 172.18.0.3", "sync 172.18.0.3,172.18.0.4"}
	if !slices.Equal(lg.log, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(lg.log, "\n"), strings.Join(want, "\n"))
	}
	if got := g.held("p3"); !slices.Equal(got, []netip.Addr{a}) || g.refs[a] != 1 || g.refs[b] != 1 {
		t.Errorf("after reset: p3 holds %v, refs %v", got, g.refs)
	}
	var off *guards
	if off.on() || off.admit(map[string][]netip.Addr{"p": {a}}) != nil || off.settle("p", nil) != nil {
		t.Error("no guard still does something")
	}
}

// TestGuardsResync: the rule check puts the sets right only once a full
// reconcile made them exact (before that no guard is installed), and then
// with exactly the addresses the peers bring now.
func TestGuardsResync(t *testing.T) {
	lg := &logGuard{}
	g := &guards{by: map[family.Family]firewall.Guard{family.IPv4: lg}, peers: map[string][]netip.Addr{}, refs: map[netip.Addr]int{}}
	a, b := netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("172.18.0.4")
	if err := g.admit(map[string][]netip.Addr{"p1": {a}}); err != nil {
		t.Fatal(err)
	}
	if err := g.settle("p1", []netip.Addr{a}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.resync(); err != nil || len(lg.log) != 1 {
		t.Fatalf("resync before the first full reconcile: %q, %v; want nothing synced", lg.log, err)
	}
	if _, err := g.reset(map[string][]netip.Addr{"p1": {a}, "p2": {b}}); err != nil {
		t.Fatal(err)
	}
	if err := g.settle("p1", nil); err != nil {
		t.Fatal(err)
	}
	lg.log = nil
	if _, err := g.resync(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync 172.18.0.4"}; !slices.Equal(lg.log, want) {
		t.Errorf("resync: %q, want %q", lg.log, want)
	}
	// A peer admitted whose entries are being programmed keeps its place.
	c := netip.MustParseAddr("172.18.0.5")
	if err := g.admit(map[string][]netip.Addr{"p3": {c}}); err != nil {
		t.Fatal(err)
	}
	lg.log = nil
	if _, err := g.resync(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync 172.18.0.4,172.18.0.5"}; !slices.Equal(lg.log, want) {
		t.Errorf("resync between admit and settle: %q, want %q", lg.log, want)
	}
	var none *guards
	if changed, err := none.resync(); changed || err != nil {
		t.Errorf("resync without guards: %v %v", changed, err)
	}
}
