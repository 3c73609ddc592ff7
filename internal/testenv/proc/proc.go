// Package proc starts a test environment's long-running daemons (the lab's,
// a control plane's) detached from the caller (so `twill lab up` can exit
// and leave the cluster running), records each one's PID together with its
// start time in a file, and stops exactly those processes later, from the
// same process or another one. It also finds the processes left in a lab's
// namespaces or cgroups after a crash.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twill-net/twill/atomicfile"
)

// Spec describes a daemon to start.
type Spec struct {
	// Path and Args are the program and its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to a minimal environment (PATH, HOME).
	Env []string
	// NetNS, MountNS and UTSNS are namespace files (e.g. /run/netns/x or a
	// bind-mounted /proc/PID/ns/mnt) the daemon runs in; empty means the
	// caller's. Path is resolved inside MountNS.
	NetNS, MountNS, UTSNS string
	// Cgroups are v1 cgroup directories (e.g. /sys/fs/cgroup/cpu/a/b) the
	// daemon joins before it runs, so its children can be found later.
	Cgroups []string
	// Dir is the working directory; empty means /.
	Dir string
	// Log receives stdout and stderr (appended); required.
	Log string
	// PIDFile records the PID and start time; required.
	PIDFile string
}

// Process is a running (or finished) process identified by PID and start
// time, so that a recycled PID is never signalled.
type Process struct {
	// PID is the process ID.
	PID   int
	start uint64
	// done is closed when the process was started by this process and has
	// been reaped.
	done chan struct{}
}

// Start runs s detached (its own session, no controlling terminal), writes
// its PID file, and returns without waiting for it.
func Start(s Spec) (*Process, error) {
	if s.Log == "" || s.PIDFile == "" {
		return nil, errors.New("proc: Spec.Log and Spec.PIDFile are required")
	}
	if err := os.MkdirAll(filepath.Dir(s.Log), 0o755); err != nil {
		return nil, fmt.Errorf("creating log dir: %w", err)
	}
	logf, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", s.Log, err)
	}
	defer logf.Close()

	argv := Wrap(s.NetNS, s.MountNS, s.UTSNS, append([]string{s.Path}, s.Args...))
	if len(s.Cgroups) > 0 {
		// Join the cgroups from a shell that then execs the daemon: the PID
		// stays the same and nothing the daemon forks escapes the cgroups.
		var script strings.Builder
		for _, cg := range s.Cgroups {
			fmt.Fprintf(&script, "echo $$ > %s/cgroup.procs || exit 1; ", shellQuote(cg))
		}
		script.WriteString(`exec "$@"`)
		argv = append([]string{"/bin/sh", "-c", script.String(), "sh"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, s.Env...)
	cmd.Dir = s.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.Path, err)
	}
	p := &Process{PID: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	p.start, _ = startTime(p.PID)
	if err := atomicfile.Write(s.PIDFile, fmt.Appendf(nil, "%d %d\n", p.PID, p.start), 0o644); err != nil {
		_ = p.Kill()
		return nil, fmt.Errorf("writing PID file: %w", err)
	}
	return p, nil
}

// Wrap prefixes argv with nsenter so it runs in the given namespaces (empty
// strings are skipped); with none given argv is returned as is.
func Wrap(netNS, mountNS, utsNS string, argv []string) []string {
	var ns []string
	if netNS != "" {
		ns = append(ns, "--net="+netNS)
	}
	if mountNS != "" {
		ns = append(ns, "--mount="+mountNS)
	}
	if utsNS != "" {
		ns = append(ns, "--uts="+utsNS)
	}
	if len(ns) == 0 {
		return argv
	}
	out := append([]string{"nsenter"}, ns...)
	out = append(out, "--")
	return append(out, argv...)
}

// Load reads a PID file written by Start. A missing file gives
// os.ErrNotExist.
func Load(pidFile string) (*Process, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, err
	}
	var p Process
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.PID, &p.start); err != nil {
		return nil, fmt.Errorf("parsing PID file %s: %w", pidFile, err)
	}
	return &p, nil
}

// Alive reports whether the process still runs (a zombie counts as gone).
func (p *Process) Alive() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
		}
	}
	return alive(p.PID, p.start)
}

// Signal sends sig if the process is still the one recorded.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling PID %d: %w", p.PID, err)
	}
	return nil
}

// Kill sends SIGKILL.
func (p *Process) Kill() error { return p.Signal(syscall.SIGKILL) }

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// sends SIGKILL and waits for it to be gone.
func (p *Process) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if waitGone(p, grace) {
		return nil
	}
	if err := p.Kill(); err != nil {
		return err
	}
	if !waitGone(p, 10*time.Second) {
		return fmt.Errorf("PID %d did not exit after SIGKILL", p.PID)
	}
	return nil
}

// StopFile is Load followed by Stop, then removes the PID file; a missing
// PID file is not an error.
func StopFile(pidFile string, grace time.Duration) error {
	p, err := Load(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.Stop(grace); err != nil {
		return err
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing PID file: %w", err)
	}
	return nil
}

func waitGone(p *Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !p.Alive() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether PID runs, is not a zombie, and (if start is
// non-zero) started at start.
func alive(pid int, start uint64) bool {
	state, st, err := stat(pid)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	return start == 0 || st == start
}

func startTime(pid int) (uint64, error) {
	_, st, err := stat(pid)
	return st, err
}

// stat returns the state and start time (field 22, clock ticks since boot)
// from /proc/PID/stat.
func stat(pid int) (byte, uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parsing start time of PID %d: %w", pid, err)
	}
	return f[0][0], st, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
