//go:build e2e

package compare

import (
	"bytes"
	"cmp"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/lab"
)

// TestCompareReachability runs compare's IPv4 reachability checks in the
// VPC-native stand-in (host-gw with underlay routes, a node on a second
// subnet): every check gets through, the VM sees the pod's own address
// (its range is in NoMasqueradeCIDRs), the internet the node's
// (masqueraded), and the report renders the section.
func TestCompareReachability(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("compare brings labs up and needs root; run as root (make test does)")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("%v", err)
	}
	name := cmpName("reach")
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), name); err != nil {
			t.Errorf("Down in cleanup: %v", err)
		}
	})
	out := t.TempDir()
	var log bytes.Buffer
	mode := IPv4Modes[2]
	r, err := Run(ctx, Options{Name: name, Quick: true, OutDir: out, RepoRoot: root, Log: &log, Modes: []Mode{mode}})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(r.Labs) != 1 || r.Labs[0].Reach == nil {
		t.Fatalf("labs measured: %+v, want one with reachability", r.Labs)
	}
	l := r.Labs[0]
	md := r.Markdown()
	t.Logf("\n%s", md)
	if len(l.Reach.Checks) != len(ReachChecks) {
		t.Fatalf("%d checks, want %d", len(l.Reach.Checks), len(ReachChecks))
	}
	for _, c := range l.Reach.Checks {
		if !c.OK || c.Skipped != "" {
			t.Errorf("%s (%s → %s): not through: %s %s", c.What, c.From, c.To, c.Evidence, c.Skipped)
		}
		switch c.What {
		case "pod → VM":
			if c.Source != l.SrcPod.String() {
				t.Errorf("pod → VM: the VM saw %s, want the pod's own %s", c.Source, l.SrcPod)
			}
		case "pod → internet":
			if c.Source != l.SrcNode.String() {
				t.Errorf("pod → internet: the internet saw %s, want the node's %s (masqueraded)", c.Source, l.SrcNode)
			}
		case "VM → pod":
			if c.Source != lab.VMIP.String() {
				t.Errorf("VM → pod: the pod saw %s, want the VM's %s", c.Source, lab.VMIP)
			}
		}
	}
	for _, want := range []string{"## Reachability and addressing", "| pod → VM | ✓ from " + l.SrcPod.String() + " |", "| pod → internet | ✓ from " + l.SrcNode.String() + " |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// cmpName is a lab name of this package's tests, under TWILL_E2E_NAME so
// concurrent runs do not share it.
func cmpName(suffix string) string {
	return cmp.Or(os.Getenv("TWILL_E2E_NAME"), "e2e") + "cmp" + suffix
}
