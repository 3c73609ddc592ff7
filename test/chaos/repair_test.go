//go:build chaos

package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRepairUnderTraffic is scenario 6: on n1, under traffic, flannel.1 is
// deleted, then a route, then the FDB is flushed, then our iptables chains:
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
	// flanneld watches the kernel for deleted routes and devices, not FDB
	// entries: a flushed FDB waits for the full resync (--resync, 1 min).
	// The short form (make test) leaves this one out: it takes a minute.
	if !short {
		h.fault("FDB flushed", "not watched: repaired by the full resync (--resync, 1 min); traffic to n2 stops until then", 90*time.Second, run("bridge", "fdb", "flush", "dev", "flannel.1"))
	}
	h.fault("FLANNEL-FWD, FLANNEL-POSTRTG flushed", "the rule check (--iptables-resync=1s)", 30*time.Second, func() error {
		if err := run("iptables", "-F", "FLANNEL-FWD")(); err != nil {
			return err
		}
		return run("iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")()
	})
	h.finish()
}
