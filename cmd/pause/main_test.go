package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPause compiles this program the way the image does (static).
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startPause starts bin and returns once it has installed its signal
// handlers (it says so on stderr), with a channel that yields Wait's result.
func startPause(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stderr).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != readyLine {
			_ = cmd.Process.Kill()
			t.Fatalf("pause's first line is %q, want %q", line, readyLine)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("pause did not say it was ready within 5s")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done
}

func TestExitsZeroOnSignal(t *testing.T) {
	bin := buildPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin)
			done := startPause(t, cmd)
			select {
			case err := <-done:
				t.Fatalf("pause exited on its own: %v", err)
			default:
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause after %v: %v, want exit status 0", sig, err)
				}
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("pause still running 5s after %v", sig)
			}
		})
	}
}

func TestRejectsArguments(t *testing.T) {
	bin := buildPause(t)
	out, err := exec.Command(bin, "forever").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("pause forever: %v, want exit status 2", err)
	}
	if !strings.Contains(string(out), "no arguments") {
		t.Errorf("message %q does not say pause takes no arguments", out)
	}
}

// TestReapsOrphans runs pause as PID 1 of a new PID namespace, orphans a
// process inside it and checks that pause collects it when it exits instead
// of leaving a zombie.
func TestReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a PID namespace")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter (util-linux) not installed")
	}
	bin := buildPause(t)
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	done := startPause(t, cmd)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	pid := cmd.Process.Pid

	// The shell backgrounds a sleep and exits; the sleep is re-parented to
	// the namespace's init, which is pause. The sleep must not hold the
	// shell's output pipe, or Run would wait for it to exit.
	var out bytes.Buffer
	sh := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--", "sh", "-c", "sleep 2 </dev/null >/dev/null 2>&1 & echo $!")
	sh.Stdout, sh.Stderr = &out, &out
	if err := sh.Run(); err != nil {
		t.Fatalf("starting the orphan: %v\n%s", err, out.String())
	}
	waitFor(t, 5*time.Second, func() error {
		if len(children(t, pid)) == 0 {
			return errors.New("no process re-parented to pause yet")
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		if c := children(t, pid); len(c) > 0 {
			return fmt.Errorf("pause still has children (pid:state) %v", c)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("pause as PID 1 after SIGTERM: %v, want exit status 0", err)
	}
}

// children lists "pid:state" of every process whose parent is ppid.
func children(t *testing.T, ppid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state, ppid, ...
		s := string(b)
		rest := s[strings.LastIndexByte(s, ')')+2:]
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, e.Name()+":"+f[0])
		}
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
