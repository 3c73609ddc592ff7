package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "sleep.pid")
	p, err := Start(Spec{Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 600"}, Log: filepath.Join(dir, "log"), PIDFile: pidFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if !p.Alive() {
		t.Fatal("process not alive right after Start")
	}
	// The daemon's output reaches its log. Wait for it before stopping the
	// process: a SIGTERM can land before the shell has written anything.
	logPath := filepath.Join(dir, "log")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "started") {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("log = %q after 10 s, want the daemon's output", b)
		}
	}
	loaded, err := Load(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.PID != p.PID || loaded.start == 0 {
		t.Fatalf("PID file holds %d/%d, want %d with a start time", loaded.PID, loaded.start, p.PID)
	}
	// A PID file whose start time does not match is a recycled PID: never
	// signal it.
	stale := &Process{PID: p.PID, start: loaded.start + 1}
	if stale.Alive() {
		t.Error("a process with another start time counts as alive")
	}
	if err := stale.Kill(); err != nil || !p.Alive() {
		t.Fatalf("killing a stale record hit the live process: err=%v alive=%v", err, p.Alive())
	}
	if err := StopFile(pidFile, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("still alive after StopFile")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("PID file left behind: %v", err)
	}
	if err := StopFile(pidFile, time.Second); err != nil {
		t.Errorf("StopFile on a missing PID file: %v", err)
	}
}

func TestStopEscalates(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(Spec{Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; while :; do sleep 1; done"}, Log: filepath.Join(dir, "log"), PIDFile: filepath.Join(dir, "pid")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	// Wait for the trap to be installed: the shell has forked its sleep.
	deadline := time.Now().Add(5 * time.Second)
	for !hasChild(p.PID) {
		if time.Now().After(deadline) {
			t.Fatal("shell never started its loop")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatal("alive after Stop")
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Error("Stop returned before the grace period although SIGTERM was ignored")
	}
}

func hasChild(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	return err == nil && len(strings.TrimSpace(string(b))) > 0
}

func TestWrap(t *testing.T) {
	cases := []struct {
		name          string
		net, mnt, uts string
		want          string
	}{
		{name: "none", want: "ip a"},
		{name: "net only", net: "/run/netns/a", want: "nsenter --net=/run/netns/a -- ip a"},
		{name: "all", net: "/n", mnt: "/m", uts: "/u", want: "nsenter --net=/n --mount=/m --uts=/u -- ip a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(Wrap(tc.net, tc.mnt, tc.uts, []string{"ip", "a"}), " "); got != tc.want {
				t.Errorf("Wrap = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKillAllAndInNamespaces(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(Spec{Path: "/bin/sleep", Args: []string{"600"}, Log: filepath.Join(dir, "log"), PIDFile: filepath.Join(dir, "pid")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	err = KillAll(func() ([]int, error) { return []int{p.PID}, nil }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("alive after KillAll")
	}
	// Our own namespaces hold this test process, which must never be listed.
	pids, err := InNamespaces("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if pid == os.Getpid() {
			t.Error("InNamespaces lists the calling process")
		}
	}
	if pids, _ := InNamespaces("/nonexistent"); len(pids) != 0 {
		t.Errorf("InNamespaces(missing file) = %v, want none", pids)
	}
}

// TestUsage reads this process's CPU time and peak RSS: both are there
// and not zero once some work was done.
func TestUsage(t *testing.T) {
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	cpu, err := CPUSeconds(os.Getpid(), true)
	if err != nil || cpu <= 0 {
		t.Errorf("CPUSeconds: %v, %v", cpu, err)
	}
	rss, err := PeakRSSMiB(os.Getpid())
	if err != nil || rss <= 0 {
		t.Errorf("PeakRSSMiB: %v, %v", rss, err)
	}
	if _, err := CPUSeconds(-1, false); err == nil {
		t.Error("CPUSeconds of pid -1: no error")
	}
}
