//go:build chaos

package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRepairUnderTraffic is scenario 6: on n1, under traffic, flannel.1 is
// deleted, then a route, a neighbour, then the FDB is flushed, then our
// iptables chains:
// each is repaired, and the record says how long that took and what the
// traffic lost meanwhile.
func TestRepairUnderTraffic(t *testing.T) {
	h := newHarness(t, "6 repair")
	n1 := h.nodes[0]
	run := func(args ...string) func() error {
		return func() error {
			if out, err := n1.Exec(args...); err != nil {
				return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	h.fault("flannel.1 deleted", "seen by the link watch", 30*time.Second, run("ip", "link", "del", "flannel.1"))
	h.fault("route to n2 deleted", "seen by the route watch", 30*time.Second, run("ip", "route", "del", "10.244.2.0/24"))
	h.fault("neighbour of n2 deleted", "seen by the neighbour watch", 30*time.Second, run("ip", "neigh", "del", "10.244.2.0", "dev", "flannel.1"))
	h.fault("FDB flushed", "seen by the neighbour watch (FDB entries are bridge-family neighbours)", 30*time.Second, run("bridge", "fdb", "flush", "dev", "flannel.1"))
	h.fault("FLANNEL-FWD, FLANNEL-POSTRTG flushed", "the rule check (--iptables-resync=1s)", 30*time.Second, func() error {
		if err := run("iptables", "-F", "FLANNEL-FWD")(); err != nil {
			return err
		}
		return run("iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")()
	})
	h.finish()
}
