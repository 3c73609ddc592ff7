//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/pinglog"
)

// pingers ping from pod a to pod b over every family of the lab at once,
// every 100ms, in the background, for tests that change the cluster and
// must lose no packet while they do.
type pingers struct {
	a       pod
	list    []*pinger
	stopped bool
}

// pinger is one family's background ping in a.
type pinger struct {
	f       family.Family
	dst     net.IP
	logFile string
	pid     string
	// steadyAt is the reply from which on every ping counts: the last of
	// the first five answered in a row. A pod just made may miss a few
	// IPv6 pings before that, before anything under test has changed.
	steadyAt int
}

// startPingers starts a ping from a to b for every family (log files named
// after tag) and waits until each has been answered; they stop at cleanup
// if the test does not stop them first.
func startPingers(t *testing.T, tag string, a, b pod) *pingers {
	t.Helper()
	ps := &pingers{a: a}
	for _, f := range families() {
		p := &pinger{f: f, dst: ipOf(b.IPs, f), logFile: fmt.Sprintf("/tmp/%s-ping-%d.log", tag, f)}
		p.pid = strings.TrimSpace(podExec(t, a, "sh", "-c",
			fmt.Sprintf("ping -n -i 0.1 %s >%s 2>&1 & echo $!", p.dst, p.logFile)))
		ps.list = append(ps.list, p)
	}
	t.Cleanup(ps.stop)
	eventually(t, 15*time.Second, 200*time.Millisecond, "five pings in a row answered at the start", func() error {
		for _, p := range ps.list {
			if p.steadyAt > 0 {
				continue
			}
			l := ps.read(t, p)
			at, ok := l.Steady(5)
			if !ok {
				return fmt.Errorf("%s: replies %d so far, not five in a row", p.f, len(l.Replies))
			}
			p.steadyAt = at
			var lost []int
			for seq := 1; seq < at; seq++ {
				if !l.Replies[seq] {
					lost = append(lost, seq)
				}
			}
			if len(lost) > 0 {
				t.Logf("%s: before the pings were steady, icmp_seq %v went unanswered (not counted)", p.f, lost)
			}
		}
		return nil
	})
	return ps
}

// stop interrupts the pings, which then print their summaries.
func (ps *pingers) stop() {
	if ps.stopped {
		return
	}
	ps.stopped = true
	for _, p := range ps.list {
		_, _ = podExecErr(ps.a, "kill", "-INT", p.pid)
	}
}

// read returns what p has written so far.
func (ps *pingers) read(t *testing.T, p *pinger) pinglog.Log {
	t.Helper()
	out, err := podExecErr(ps.a, "cat", p.logFile)
	if err != nil {
		t.Fatalf("reading the ping log in %s: %v\n%s", ps.a.Name, err, out)
	}
	return pinglog.Parse(out)
}

// waitReplies waits until every ping has had more replies than now.
func (ps *pingers) waitReplies(t *testing.T, what string, more int) {
	t.Helper()
	want := map[*pinger]int{}
	for _, p := range ps.list {
		want[p] = len(ps.read(t, p).Replies) + more
	}
	eventually(t, 10*time.Second, 200*time.Millisecond, what, func() error {
		for _, p := range ps.list {
			if n := len(ps.read(t, p).Replies); n < want[p] {
				return fmt.Errorf("%s: %d replies so far, want %d", p.f, n, want[p])
			}
		}
		return nil
	})
}

// stopAndCheck lets the pings run a little longer (a change that broke
// something on its way out shows up then), stops them and fails the test
// for every ping lost since they were steady, naming during what.
func (ps *pingers) stopAndCheck(t *testing.T, during string) {
	t.Helper()
	ps.waitReplies(t, "pings answered after "+during, 10)
	ps.stop()
	for _, p := range ps.list {
		var l pinglog.Log
		eventually(t, 10*time.Second, 200*time.Millisecond, "ping summary", func() error {
			if l = ps.read(t, p); !l.Done {
				return fmt.Errorf("ping %s in %s has not printed its summary", p.pid, ps.a.Name)
			}
			return nil
		})
		lost := l.LostAfter(p.steadyAt)
		t.Logf("%s: %s: %d pings every 100ms, %d lost", during, p.f, l.Transmitted, len(lost))
		if len(lost) > 0 {
			t.Errorf("%s pings %s → %s lost during %s: icmp_seq %v", p.f, ipOf(ps.a.IPs, p.f), p.dst, during, lost)
		}
	}
}
