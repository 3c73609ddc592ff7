//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/simnodes"
)

// seed is the chaos suite's random seed: CHAOS_SEED, or the time. Tests
// log it, so that a failing run can be repeated.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (CHAOS_SEED=%d repeats this run)", s, s)
	return s
}

// TestKill9 is scenario 3: flanneld is killed with SIGKILL 10 times (3 in
// the short form) with 5,000 simulated peers (500 in the short form). The
// first kill hits a fresh node, n3, in the middle of its initial list: at a
// random count of routes in the first half. The others hit, at a random
// moment (seeded) 0–2.5 s (0–0.6 s) into a flanneld's life, the node restarted last
// (one time in two) or a random one, so that some land in a restarted
// flanneld's own initial list; n1 and n2, which carry the traffic, are hit
// at least once each. While a flanneld is dead one peer is
// deleted and one added, which its restart must catch up with. After each
// restart every node must converge to exactly the right entries (0 stale,
// 0 missing), and the pods of n1 and n2 lose no ping: the kernel keeps its
// entries while flanneld is dead.
func TestKill9(t *testing.T) {
	// window is how far into a flanneld's life a kill may land: about
	// twice as long as a restart with that many peers takes to converge.
	peers, kills, window := 5000, 10, 2500*time.Millisecond
	if short {
		peers, kills, window = 500, 3, 600*time.Millisecond
	}
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 0))
	h := newHarnessIn(t, "3 kill -9", simnodes.Network)
	h.watchNodes()
	t0 := time.Now()
	if err := simnodes.Create(h.ctx, h.env.Client, 0, peers, simnodes.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d simulated peers created in %s", peers, time.Since(t0).Round(time.Millisecond))
	if _, err := h.converge(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := h.diff(); err != nil {
		t.Fatal(err)
	}
	t.Logf("one check of every node against %d peers takes %s", peers, time.Since(t0).Round(time.Millisecond))

	// live are the simulated peers that exist; next is the next to add.
	live, next := make([]int, peers), peers
	for i := range live {
		live[i] = i
	}
	// whileDead deletes a random peer and adds one: the dead flanneld's
	// watch misses both.
	whileDead := func() {
		t.Helper()
		j := rng.IntN(len(live))
		if err := h.env.Client.CoreV1().Nodes().Delete(h.ctx, simnodes.Name(live[j]), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		live = slices.Delete(live, j, j+1)
		if err := simnodes.Create(h.ctx, h.env.Client, next, next+1, simnodes.Options{}); err != nil {
			t.Fatal(err)
		}
		live = append(live, next)
		next++
	}
	// converged polls until n's flanneld, started at since, is ready and
	// every node matches the Nodes, or until the time by: it says whether
	// that came, and how long after the start.
	converged := func(n *testenv.Node, since, by time.Time) (time.Duration, bool) {
		t.Helper()
		for {
			if n.Ready() == nil {
				ds, err := h.diff()
				ok := err == nil
				for _, d := range ds {
					ok = ok && d.Empty()
				}
				if ok {
					return time.Since(since), true
				}
			}
			if time.Now().After(by) {
				return 0, false
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// mustConverge is converged within 2 minutes, or the test fails.
	mustConverge := func(n *testenv.Node, since time.Time) time.Duration {
		t.Helper()
		took, ok := converged(n, since, time.Now().Add(2*time.Minute))
		if !ok {
			ds, err := h.diff()
			t.Fatalf("%s's flanneld restarted %s ago: not converged: %v %v", n.Name, time.Since(since), ds, err)
		}
		return took
	}
	// The kill mid initial list, on a fresh node: n3 has no flannel.1 yet.
	// The count to kill at is drawn in the first half, where the routes
	// still arrive page by page; if the count is over by the time the
	// kill lands, n3's device goes (n3 carries no traffic) and it is tried
	// again.
	before := h.marks()
	n3 := h.addNode("n3", "172.18.0.13", "10.244.3.0/24")
	total := peers + 2
	var at int
	for try := 1; ; try++ {
		want := 1 + rng.IntN(total/2)
		for routes(n3) < want {
			if !testenv.Running(h.procs["n3"]) {
				t.Fatal("n3's flanneld exited before the kill")
			}
			time.Sleep(2 * time.Millisecond)
		}
		h.kill9(n3)
		at = routes(n3)
		t.Logf("try %d: killed n3's flanneld at %d of %d routes (aimed at %d)", try, at, total, want)
		if at < total {
			break
		}
		if try == 5 {
			t.Fatalf("after %d tries, every kill landed after n3 had all %d routes", try, total)
		}
		if out, err := n3.Exec("ip", "link", "del", "flannel.1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		h.restart(n3)
	}
	whileDead()
	start := time.Now()
	h.restart(n3)
	took := mustConverge(n3, start)
	t.Logf("kill 1 (n3, mid initial list at %d of %d routes): converged %s after the restart", at, total, took.Round(time.Millisecond))
	h.file(record{scenario: h.name, fault: fmt.Sprintf("kill -9 mid initial list (fresh node, %d peers)", peers), converge: took,
		note: fmt.Sprintf("killed at %d of %d routes in the kernel; a peer deleted and one added while it was dead; converge from the restart to ready and every node matching", at, total)}, before)

	// The kills at random moments. A kill that lands before the restarted
	// flanneld converged interrupts its start; the others measure it.
	before = h.marks()
	var times []time.Duration
	// last is the node restarted last, at lastStart; open says its
	// convergence is still to be measured.
	last, lastStart, open, early := n3, start, false, 0
	starts := map[string]time.Time{"n3": start} // n1 and n2: long ago
	// unhit are the nodes with traffic not killed yet: the last kills go
	// to them if the draws did not.
	unhit := []*testenv.Node{h.nodes[0], h.nodes[1]}
	for k := 2; k <= kills; k++ {
		n := last
		if rng.IntN(2) == 0 {
			n = h.nodes[rng.IntN(len(h.nodes))]
		}
		if kills-k+1 <= len(unhit) && !slices.Contains(unhit, n) {
			n = unhit[0]
		}
		unhit = slices.DeleteFunc(unhit, func(u *testenv.Node) bool { return u == n })
		moment := starts[n.Name].Add(time.Duration(rng.Int64N(int64(window))))
		switch {
		case !open:
		case n != last:
			took := mustConverge(last, lastStart)
			times = append(times, took)
			t.Logf("kill %d: converged %s after the restart", k-1, took.Round(time.Millisecond))
		default:
			if took, ok := converged(last, lastStart, moment); ok {
				times = append(times, took)
				t.Logf("kill %d: converged %s after the restart", k-1, took.Round(time.Millisecond))
			}
		}
		time.Sleep(time.Until(moment)) // the moment drawn, not a wait for something
		ready := n.Ready() == nil
		h.kill9(n)
		age := "started with the harness"
		if st, ok := starts[n.Name]; ok {
			age = time.Since(st).Round(time.Millisecond).String() + " old"
		}
		if !ready {
			early++
		}
		t.Logf("kill %d (%s, its flanneld %s, ready: %v): %d routes in the kernel", k, n.Name, age, ready, routes(n))
		whileDead()
		last, lastStart, open = n, time.Now(), true
		starts[n.Name] = lastStart
		h.restart(n)
	}
	took = mustConverge(last, lastStart)
	times = append(times, took)
	t.Logf("kill %d: converged %s after the restart", kills, took.Round(time.Millisecond))
	slices.Sort(times)
	r := record{scenario: h.name, fault: fmt.Sprintf("kill -9 ×%d at random moments (%d peers)", kills-1, peers), converge: times[len(times)-1],
		note: fmt.Sprintf("seed %d; %d of the kills hit a flanneld not yet ready; a peer deleted and one added while dead; converge from the restart (%d measured, the rest interrupted by the next kill): min %s, median %s, max %s",
			s, early, len(times), times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))}
	h.file(r, before)
	h.finish()
	for _, p := range results.list[len(results.list)-2:] {
		if p.lost > 0 {
			t.Errorf("%s: %d pings lost between n1 and n2", p.fault, p.lost)
		}
	}
}
