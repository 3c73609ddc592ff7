//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/lab/conformance"
)

// TestConformanceQuick runs the fixed subset of Kubernetes' own network
// conformance tests on the suite's lab: pod-to-pod over HTTP and UDP within
// a node and across nodes, and cluster DNS. `make conformance` runs them
// all.
func TestConformanceQuick(t *testing.T) {
	c := cluster(t)
	readyNodes(t, 3, 3*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	var log bytes.Buffer
	s, err := conformance.RunLab(ctx, c, conformance.LabOptions{Focus: conformance.Quick, Log: &log, Timeout: 20 * time.Minute})
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(log.String(), 60))
	}
	for _, r := range s.Passed {
		t.Logf("passed: %s (%v)", r.Name, r.Took.Round(100*time.Millisecond))
	}
	for _, r := range s.Skipped {
		t.Errorf("skipped by the suite: %s: %s", r.Name, r.Message)
	}
	for _, r := range s.Failed {
		t.Errorf("failed: %s: %s", r.Name, r.Message)
	}
	// Four granular checks (intra-pod and node-pod, HTTP and UDP) and two
	// DNS tests: fewer means the focus no longer finds them.
	if len(s.Passed) != 6 {
		t.Errorf("%d tests passed, want 6 (4 granular pod checks, 2 DNS)", len(s.Passed))
	}
	if t.Failed() {
		t.Logf("suite output (end):\n%s", tail(log.String(), 80))
	}
	t.Logf("conformance subset: %d passed in %v", len(s.Passed), s.Took.Round(time.Second))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
