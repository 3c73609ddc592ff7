//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/internal/testenv/simnodes"
)

// routeLog records when each route appeared in and went from a node's
// kernel, as the kernel reports it (a route subscription in the node's
// namespace): event-driven, not polled.
type routeLog struct {
	mu    sync.Mutex
	added map[string]time.Time // first RTM_NEWROUTE per destination
	gone  map[string]time.Time // first RTM_DELROUTE per destination
}

// watchRoutes starts a routeLog of n's kernel, which runs until the test
// ends.
func watchRoutes(t *testing.T, n *testenv.Node) *routeLog {
	t.Helper()
	l := &routeLog{added: map[string]time.Time{}, gone: map[string]time.Time{}}
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	var stopped atomic.Bool
	t.Cleanup(func() {
		stopped.Store(true)
		close(done)
	})
	ns := n.Net().Handle
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			if !stopped.Load() { // closing done ends the receive with an error
				t.Errorf("route watch on %s: %v", n.Name, err)
			}
		},
	}); err != nil {
		t.Fatalf("watching routes on %s: %v", n.Name, err)
	}
	go func() {
		for u := range ch {
			at := time.Now()
			if u.Dst == nil || u.Gw == nil {
				continue
			}
			dst := u.Dst.String()
			l.mu.Lock()
			switch u.Type {
			case unix.RTM_NEWROUTE:
				if _, ok := l.added[dst]; !ok {
					l.added[dst] = at
				}
			case unix.RTM_DELROUTE:
				if _, ok := l.gone[dst]; !ok {
					l.gone[dst] = at
				}
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// when returns when dst was added (or, with del, went), if it did.
func (l *routeLog) when(dst string, del bool) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.added
	if del {
		m = l.gone
	}
	at, ok := m[dst]
	return at, ok
}

// TestChurn is scenario 4: 100 simulated Nodes join and leave over 60 s
// (10 s in the short form) at random times (seeded; each lives at least
// 1 s, so that each event has its own effect on the kernel), under
// traffic. Every join must reach both real nodes' kernels (its route
// appears) and every leave too (its route goes), each within 5 s of the
// API call's return, the pods lose no ping, and afterwards no entry is
// stale. The record gives the lag, median and worst, and each flanneld's
// CPU over the churn and peak RSS. A join is in the kernel when its route
// is (programmed after its neighbour and FDB entries), a leave when its
// route has gone (removed first); the check after the churn covers the
// rest.
func TestChurn(t *testing.T) {
	const peers, bound = 100, 5 * time.Second
	span := 60 * time.Second
	if short {
		span = 10 * time.Second
	}
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 0))
	h := newHarnessIn(t, "4 churn", simnodes.Network)
	logs := map[string]*routeLog{}
	for _, n := range h.nodes {
		logs[n.Name] = watchRoutes(t, n)
	}

	// The schedule: Node i joins at a random time and leaves at a random
	// time at least 1 s later, both within the span.
	type event struct {
		at   time.Duration
		peer int
		del  bool
		done time.Time // when the API call returned
	}
	var evs []*event
	for i := 0; i < peers; i++ {
		join := time.Duration(rng.Int64N(int64(span - time.Second)))
		leave := join + time.Second + time.Duration(rng.Int64N(int64(span-join-time.Second)+1))
		evs = append(evs, &event{at: join, peer: i}, &event{at: leave, peer: i, del: true})
	}
	sort.Slice(evs, func(a, b int) bool { return evs[a].at < evs[b].at })

	cpu0 := map[string]float64{}
	for name, p := range h.procs {
		c, err := proc.CPUSeconds(p.Process.Pid, false)
		if err != nil {
			t.Fatal(err)
		}
		cpu0[name] = c
	}
	before := h.marks()
	start := time.Now()
	for _, e := range evs {
		time.Sleep(time.Until(start.Add(e.at))) // the schedule's time, not a wait for something
		var err error
		if e.del {
			err = h.env.Client.CoreV1().Nodes().Delete(h.ctx, simnodes.Name(e.peer), metav1.DeleteOptions{})
		} else {
			err = simnodes.Create(h.ctx, h.env.Client, e.peer, e.peer+1, simnodes.Options{})
		}
		if err != nil {
			t.Fatal(err)
		}
		e.done = time.Now()
	}
	churn := time.Since(start)

	// Every event's effect on both kernels, within the bound.
	var lags []time.Duration
	early := 0 // events in a kernel before the API call returned to the test
	h.until(bound+5*time.Second, "every join and leave in both kernels", func() error {
		lags, early = lags[:0], 0
		var late []string
		for _, e := range evs {
			for _, n := range h.nodes {
				at, ok := logs[n.Name].when(simnodes.PodCIDR(e.peer), e.del)
				if !ok {
					late = append(late, fmt.Sprintf("%s on %s (del %v)", simnodes.Name(e.peer), n.Name, e.del))
					continue
				}
				if at.Before(e.done) {
					early++
				}
				lags = append(lags, max(0, at.Sub(e.done)))
			}
		}
		if len(late) > 0 {
			return fmt.Errorf("%d not yet: %s", len(late), strings.Join(late[:min(5, len(late))], ", "))
		}
		return nil
	})
	r := record{scenario: h.name, fault: fmt.Sprintf("%d simulated Nodes joined and left over %s", peers, churn.Round(time.Second))}
	if _, err := h.converge(30 * time.Second); err != nil {
		t.Error(err)
	}
	r.converge = time.Since(evs[len(evs)-1].done)
	slices.Sort(lags)
	worst, median := lags[len(lags)-1], lags[len(lags)/2]
	var usage []string
	for _, n := range h.nodes {
		pid := h.procs[n.Name].Process.Pid
		c, err := proc.CPUSeconds(pid, false)
		if err != nil {
			t.Fatal(err)
		}
		rss, err := proc.PeakRSSMiB(pid)
		if err != nil {
			t.Fatal(err)
		}
		usage = append(usage, fmt.Sprintf("%s's flanneld %.2f CPU-s over the churn, peak RSS %.1f MiB", n.Name, c-cpu0[n.Name], rss))
	}
	r.note = fmt.Sprintf("seed %d; lag from the API call's return to the route in (or out of) each node's kernel (route watch), %d events × 2 nodes (%d in the kernel before the call returned, counted 0): median %s, worst %s (limit %s); %s; converge from the last event",
		s, len(evs), early, median.Round(time.Millisecond), worst.Round(time.Millisecond), bound, strings.Join(usage, ", "))
	t.Log(r.note)
	if worst > bound {
		t.Errorf("worst lag from a Node event to the kernel %s, want within %s", worst, bound)
	}
	h.file(r, before)
	h.finish()
	if p := results.list[len(results.list)-1]; p.lost > 0 {
		t.Errorf("%d pings lost between n1 and n2 during the churn", p.lost)
	}
}
