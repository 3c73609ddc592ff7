//go:build e2e

package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twill-net/twill/lab"
)

// The suite runs in two processes. The first (the supervisor) builds the
// images, brings the lab up, runs the test binary again as a child with
// childEnv naming the lab, and removes the lab whatever the child did:
// passed, failed, panicked or hit -timeout. A panic in a test goroutine
// ends the process without running TestMain's defers, so only a separate
// process can promise the teardown.
const (
	// childEnv carries the lab's name from the supervisor to the child.
	childEnv = "TWILL_E2E_CHILD_LAB"
	// reuseEnv names an existing lab to test instead of making one.
	reuseEnv = "TWILL_E2E_LAB"
	// setupTimeout bounds image builds and lab creation.
	setupTimeout = 15 * time.Minute
	// teardownTimeout bounds lab removal.
	teardownTimeout = 5 * time.Minute
)

// labName is the name of the lab the suite makes: $TWILL_E2E_NAME, so two
// runs on one machine do not remove each other's lab, else "e2e".
var labName = cmp.Or(os.Getenv("TWILL_E2E_NAME"), "e2e")

// suite is the state the tests share; it is set before m.Run and only read
// afterwards, except through its own synchronised methods.
var suite struct {
	// skip, when set, is why every test skips.
	skip string
	// cluster is the lab under test.
	cluster *lab.Cluster
	// repoRoot is the Twill checkout.
	repoRoot string
}

func TestMain(m *testing.M) {
	os.Exit(supervise(m))
}

func supervise(m *testing.M) int {
	suite.repoRoot = repoRoot()
	if os.Geteuid() != 0 {
		suite.skip = "the end-to-end suite needs root (it creates network namespaces and runs kubelets); run `make e2e` as root"
		return m.Run()
	}
	if name := os.Getenv(childEnv); name != "" {
		return runTests(m, name)
	}
	if name := os.Getenv(reuseEnv); name != "" {
		fmt.Fprintf(os.Stderr, "e2e: testing the running lab %q (%s set); it is left running\n", name, reuseEnv)
		return runTests(m, name)
	}

	// The supervisor outlives the child: Ctrl-C reaches both (same process
	// group), the child stops, and the lab is still removed here.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	log := prefixWriter{w: os.Stderr, prefix: "e2e setup: "}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	go func() {
		if _, ok := <-sigs; ok {
			cancel()
		}
	}()

	defer teardown(log)
	start := time.Now()
	if err := setUp(ctx, log); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: setting up the lab: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: lab %q up in %v\n", labName, time.Since(start).Round(time.Second))

	child := exec.Command(os.Args[0], os.Args[1:]...)
	child.Env = append(os.Environ(), childEnv+"="+labName)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := child.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.ExitCode() < 0 {
			fmt.Fprintf(os.Stderr, "e2e: the test process was killed: %v\n", err)
			return 1
		}
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "e2e: running the tests: %v\n", err)
		return 1
	}
}

// setUp brings up a fresh 3-node dual-stack lab (lab.Up builds the images
// it lacks), removing whatever an earlier, interrupted run left behind.
// Dual-stack, so that every check runs for IPv4 and IPv6 on one lab.
func setUp(ctx context.Context, log io.Writer) error {
	if err := lab.Down(ctx, labName); err != nil {
		return fmt.Errorf("removing a previous lab %q: %w", labName, err)
	}
	_, err := lab.Up(ctx, lab.Options{
		Name:     labName,
		Nodes:    3,
		CNI:      "twill",
		Backend:  "vxlan",
		IPFamily: lab.Dual,
		RepoRoot: suite.repoRoot,
		Log:      log,
	})
	return err
}

// teardown removes the lab, with its own deadline so a cancelled setup
// still cleans up.
func teardown(log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	start := time.Now()
	if err := lab.Down(ctx, labName); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: removing the lab %q failed: %v\nremove it by hand: bin/twill lab down --name %s\n", labName, err, labName)
		return
	}
	fmt.Fprintf(log, "lab %q removed in %v\n", labName, time.Since(start).Round(time.Second))
}

// runTests loads the running lab called name and runs the tests against it.
func runTests(m *testing.M, name string) int {
	c, err := lab.Load(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: loading lab %q: %v\n", name, err)
		return 1
	}
	suite.cluster = c
	code := m.Run()
	if code != 0 {
		dumpDiagnostics(c)
	}
	return code
}

// dumpDiagnostics prints what a failure's owner needs before the lab goes
// away: nodes, pods and the last lines of every flanneld's log.
func dumpDiagnostics(c *lab.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fmt.Fprintf(os.Stderr, "\ne2e: diagnostics of lab %q after the failure\n", c.Name)
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"logs", "-n", "kube-flannel", "-l", "app=flannel", "-c", "kube-flannel", "--prefix", "--tail=40"},
	} {
		out, err := c.Kubectl(ctx, args...)
		fmt.Fprintf(os.Stderr, "--- kubectl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "(%v)\n", err)
		}
	}
}

// repoRoot is the Twill checkout this file belongs to.
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		wd, _ := os.Getwd()
		return filepath.Join(wd, "..", "..")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// prefixWriter prefixes every line written to w.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	var sb strings.Builder
	for _, l := range lines {
		if l == "" {
			continue
		}
		sb.WriteString(p.prefix)
		sb.WriteString(l)
	}
	if _, err := io.WriteString(p.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}
