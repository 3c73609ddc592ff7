// Package conformance runs Kubernetes' own network conformance tests against
// a lab (`twill lab conformance`, `make conformance`): e2e-network.test, built
// from k8s.io/kubernetes at the lab's version by hack/conformance-build.sh,
// with the test images the lab builds and its registry serves under the
// names the tests ask for. It reads the suite's JUnit report into a Summary
// and writes it as Markdown.
package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Network selects every SIG Network conformance test.
const Network = `\[sig-network\].*\[Conformance\]`

// Quick is the fixed subset `make test` runs: the pod-to-pod granular checks
// over HTTP and UDP (inside a node and across nodes) and cluster DNS.
const Quick = `\[sig-network\] (Networking Granular Checks: Pods should function for (intra|node)-pod communication: (http|udp)|DNS should provide DNS for (the cluster|services) ).*\[Conformance\]`

// Skip is a test the lab cannot run, and why.
type Skip struct {
	// Pattern is a regular expression on the test's full name.
	Pattern string
	// Reason says what the test needs that the lab lacks.
	Reason string
}

// Skips are the conformance tests left out on every run.
var Skips = []Skip{}

// Options configure Run.
type Options struct {
	// Binary is e2e-network.test; Kubectl the kubectl the tests run.
	Binary, Kubectl string
	// Kubeconfig reaches the cluster's API server.
	Kubeconfig string
	// Focus selects tests (Network when empty); Skips are added to it.
	Focus string
	// ReportDir receives the suite's JUnit report and logs.
	ReportDir string
	// Command wraps the test binary's argv into the command that runs it
	// where the API server and the nodes are reachable (a lab node).
	Command func(ctx context.Context, argv ...string) (*exec.Cmd, error)
	// Log receives the suite's output.
	Log io.Writer
	// Timeout bounds the whole suite.
	Timeout time.Duration
}

// Result is one test's outcome.
type Result struct {
	Name    string
	State   string // passed, failed, skipped
	Message string
	Took    time.Duration
}

// Summary is a run's outcome: the tests that ran, and those skipped by
// the suite itself (a test that called Skip, with its reason).
type Summary struct {
	Focus   string
	Passed  []Result
	Failed  []Result
	Skipped []Result
	Took    time.Duration
}

// Run runs the suite and returns its summary. An error means the suite
// could not run or left no report; failed tests are in the summary.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.Focus == "" {
		o.Focus = Network
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Hour
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", o.ReportDir, err)
	}
	argv := append([]string{o.Binary}, Args(o)...)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout+5*time.Minute)
	defer cancel()
	cmd, err := o.Command(ctx, argv...)
	if err != nil {
		return nil, fmt.Errorf("running the e2e suite: %w", err)
	}
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	start := time.Now()
	runErr := cmd.Run()
	report := filepath.Join(o.ReportDir, "junit_01.xml")
	f, err := os.Open(report)
	if err != nil {
		return nil, fmt.Errorf("the e2e suite left no report %s (it ended with %v): see its output", report, runErr)
	}
	defer f.Close()
	s, err := ParseJUnit(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", report, err)
	}
	s.Focus, s.Took = o.Focus, time.Since(start)
	return s, nil
}

// Args are the e2e suite's flags for o.
func Args(o Options) []string {
	var skips []string
	for _, s := range Skips {
		skips = append(skips, s.Pattern)
	}
	args := []string{
		"--kubeconfig=" + o.Kubeconfig,
		"--kubectl-path=" + o.Kubectl,
		"--provider=skeleton",
		"--report-dir=" + o.ReportDir,
		"--ginkgo.focus=" + o.Focus,
		"--ginkgo.no-color",
		"--ginkgo.timeout=" + o.Timeout.String(),
		"--ginkgo.v",
		// The control plane's taint leaves it out of the nodes tests use,
		// not out of the cluster's health checks.
		"--non-blocking-taints=node-role.kubernetes.io/control-plane",
	}
	if len(skips) > 0 {
		args = append(args, "--ginkgo.skip="+strings.Join(skips, "|"))
	}
	return args
}

// junit is the part of ginkgo's JUnit report Summary needs.
type junit struct {
	Suites []struct {
		Cases []struct {
			Name    string  `xml:"name,attr"`
			Status  string  `xml:"status,attr"`
			Time    float64 `xml:"time,attr"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Failure *failureNode `xml:"failure"`
			Error   *failureNode `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// failureNode is a JUnit failure or error.
type failureNode struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// ParseJUnit reads ginkgo's JUnit report. Tests left out by focus or skip
// (reported as "skipped" with no reason) are not counted; suite nodes
// (BeforeSuite, AfterSuite and the like) count only when they failed.
func ParseJUnit(r io.Reader) (*Summary, error) {
	var j junit
	if err := xml.NewDecoder(r).Decode(&j); err != nil {
		return nil, fmt.Errorf("decoding the JUnit report: %w", err)
	}
	s := &Summary{}
	for _, suite := range j.Suites {
		for _, c := range suite.Cases {
			res := Result{Name: strings.TrimPrefix(c.Name, "[It] "), State: c.Status, Took: time.Duration(c.Time * float64(time.Second))}
			spec := strings.HasPrefix(c.Name, "[It] ")
			switch {
			case c.Failure != nil || c.Error != nil || c.Status == "failed" || c.Status == "panicked" || c.Status == "timedout" || c.Status == "interrupted" || c.Status == "aborted":
				res.State = "failed"
				res.Message = failureMessage(c.Failure, c.Error)
				s.Failed = append(s.Failed, res)
			case !spec:
			case c.Status == "skipped" || c.Skipped != nil:
				msg := ""
				if c.Skipped != nil {
					msg = c.Skipped.Message
				}
				if reason, ok := strings.CutPrefix(msg, "skipped - "); ok {
					res.State, res.Message = "skipped", reason
					s.Skipped = append(s.Skipped, res)
				}
			case c.Status == "passed":
				s.Passed = append(s.Passed, res)
			}
		}
	}
	for _, l := range [][]Result{s.Passed, s.Failed, s.Skipped} {
		sort.Slice(l, func(a, b int) bool { return l[a].Name < l[b].Name })
	}
	return s, nil
}

// failureMessage is the first line of a failure's or an error's message
// (or text), without ginkgo's "[FAILED]" mark, cut to 300 bytes.
func failureMessage(nodes ...*failureNode) string {
	for _, n := range nodes {
		if n == nil {
			continue
		}
		for _, text := range []string{n.Message, n.Text} {
			sc := bufio.NewScanner(strings.NewReader(text))
			for sc.Scan() {
				line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "[FAILED]"))
				if line == "" {
					continue
				}
				if len(line) > 300 {
					line = line[:300] + "…"
				}
				return line
			}
		}
	}
	return ""
}

// Markdown writes the summary for bench/conformance.md; what says how and
// where it was run.
func (s *Summary) Markdown(w io.Writer, what string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Kubernetes network conformance on the lab\n\n%s\n\n", what)
	fmt.Fprintf(&b, "Focus `%s`; %d passed, %d failed, %d skipped by the suite, in %s.\n\n", s.Focus, len(s.Passed), len(s.Failed), len(s.Skipped), s.Took.Round(time.Second))
	if len(Skips) > 0 {
		b.WriteString("## Left out (the lab cannot have what they need)\n\n| tests | why |\n|---|---|\n")
		for _, sk := range Skips {
			fmt.Fprintf(&b, "| `%s` | %s |\n", sk.Pattern, sk.Reason)
		}
		b.WriteString("\n")
	}
	section := func(title string, rs []Result, withMessage bool) {
		if len(rs) == 0 {
			return
		}
		fmt.Fprintf(&b, "## %s (%d)\n\n", title, len(rs))
		for _, r := range rs {
			if withMessage {
				fmt.Fprintf(&b, "- %s: %s\n", escape(r.Name), escape(r.Message))
			} else {
				fmt.Fprintf(&b, "- %s (%s)\n", escape(r.Name), r.Took.Round(100*time.Millisecond))
			}
		}
		b.WriteString("\n")
	}
	section("Failed", s.Failed, true)
	section("Skipped by the suite", s.Skipped, true)
	section("Passed", s.Passed, false)
	_, err := w.Write(b.Bytes())
	return err
}

var mdSpecial = regexp.MustCompile("([\\\\`*_|<>])")

// escape keeps a test name's brackets and pipes from being read as Markdown.
func escape(s string) string { return mdSpecial.ReplaceAllString(s, `\$1`) }
