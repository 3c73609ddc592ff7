package conformance

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// report is the shape of ginkgo's JUnit report as the e2e suite writes it:
// suite nodes, specs that ran, one left out by focus, one that skipped
// itself, one that failed.
const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="6" disabled="2" errors="0" failures="1" time="42.5">
  <testsuite name="Kubernetes e2e suite" package="/x" tests="6" disabled="2" skipped="0" errors="0" failures="1" time="42.5">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1.5"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for the cluster [Conformance]" classname="Kubernetes e2e suite" status="passed" time="12.25"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="failed" time="20">
      <failure message="[FAILED] Timed out after 20s.&#xA;service not reachable" type="failed">[FAILED] Timed out after 20s.
service not reachable
In [It] at: service.go:123</failure>
    </testcase>
    <testcase name="[It] [sig-storage] Volumes should work" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] Services should work with a LoadBalancer [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0.1">
      <skipped message="skipped - Only supported for providers [gce gke aws] (not skeleton)"></skipped>
    </testcase>
    <testcase name="[SynchronizedAfterSuite]" classname="Kubernetes e2e suite" status="passed" time="0.5"></testcase>
  </testsuite>
</testsuites>`

func TestParseJUnit(t *testing.T) {
	s, err := ParseJUnit(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Passed) != 1 || s.Passed[0].Name != "[sig-network] DNS should provide DNS for the cluster [Conformance]" || s.Passed[0].Took != 12250*time.Millisecond {
		t.Errorf("passed = %+v, want the DNS test alone (suite nodes do not count), 12.25 s", s.Passed)
	}
	if len(s.Failed) != 1 || s.Failed[0].Message != "Timed out after 20s." {
		t.Errorf("failed = %+v, want the Services test with its first line", s.Failed)
	}
	if len(s.Skipped) != 1 || !strings.HasPrefix(s.Skipped[0].Message, "Only supported for providers") {
		t.Errorf("skipped = %+v, want the LoadBalancer test with its reason (a test left out by focus is not counted)", s.Skipped)
	}
	if _, err := ParseJUnit(strings.NewReader("<testsuites><testsuite>")); err == nil {
		t.Error("a truncated report was accepted")
	}
	// A failed suite node (BeforeSuite: the cluster was not healthy) is a
	// failure even though no test ran.
	broken := strings.Replace(report, `<testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1.5"></testcase>`,
		`<testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="failed" time="1.5"><failure message="nodes not ready">x</failure></testcase>`, 1)
	s, err = ParseJUnit(strings.NewReader(broken))
	if err != nil || len(s.Failed) != 2 {
		t.Errorf("a failed BeforeSuite: %d failures (%v), want 2", len(s.Failed), err)
	}
}

func TestMarkdown(t *testing.T) {
	s, err := ParseJUnit(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	s.Focus, s.Took = Network, 90*time.Second
	var b strings.Builder
	if err := s.Markdown(&b, "on lab x"); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"1 passed, 1 failed, 1 skipped by the suite, in 1m30s.",
		"## Failed (1)\n\n- [sig-network] Services should serve a basic endpoint from pods [Conformance]: Timed out after 20s.",
		"## Skipped by the suite (1)",
		"## Passed (1)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

func TestFocus(t *testing.T) {
	quick := regexp.MustCompile(Quick)
	network := regexp.MustCompile(Network)
	for name, inQuick := range map[string]bool{
		"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]":           true,
		"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: udp [LinuxOnly] [NodeConformance] [Conformance]": true,
		"[sig-network] DNS should provide DNS for the cluster  [Conformance]":                                                                        true,
		"[sig-network] DNS should provide DNS for services  [Conformance]":                                                                           true,
		"[sig-network] DNS should provide DNS for pods for Hostname [Conformance]":                                                                   false,
		"[sig-network] Services should serve a basic endpoint from pods  [Conformance]":                                                              false,
	} {
		if quick.MatchString(name) != inQuick {
			t.Errorf("Quick matches %q: %v, want %v", name, !inQuick, inQuick)
		}
		if !network.MatchString(name) {
			t.Errorf("Network does not match %q", name)
		}
	}
	if network.MatchString("[sig-storage] Volumes should work [Conformance]") || network.MatchString("[sig-network] Services should be rejected when no endpoints exist") {
		t.Error("Network matches a test of another SIG or one that is not a conformance test")
	}
}

func TestArgs(t *testing.T) {
	saved := Skips
	defer func() { Skips = saved }()
	Skips = []Skip{{Pattern: "LoadBalancer", Reason: "no cloud"}, {Pattern: `\[Slow\]`, Reason: "slow"}}
	args := strings.Join(Args(Options{Kubeconfig: "/k", Kubectl: "/kubectl", ReportDir: "/r", Focus: Quick, Timeout: time.Hour}), " ")
	for _, want := range []string{"--kubeconfig=/k", "--kubectl-path=/kubectl", "--report-dir=/r", "--ginkgo.focus=" + Quick, `--ginkgo.skip=LoadBalancer|\[Slow\]`, "--ginkgo.timeout=1h0m0s"} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q: %s", want, args)
		}
	}
}
