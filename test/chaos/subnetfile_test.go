//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
)

// privateMounts is a mount namespace of the test's own (a copy of the
// host's with private propagation, held by a sleeping process), so that a
// tmpfs mounted in it is seen by the flanneld started there and never by
// the host.
type privateMounts struct {
	t     *testing.T
	hold  *exec.Cmd
	mount []string
}

func newPrivateMounts(t *testing.T) *privateMounts {
	t.Helper()
	hold := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sleep", "900")
	if err := hold.Start(); err != nil {
		t.Fatalf("making a mount namespace: %v", err)
	}
	m := &privateMounts{t: t, hold: hold}
	t.Cleanup(func() {
		for i := len(m.mount) - 1; i >= 0; i-- {
			_, _ = m.exec("umount", "-l", m.mount[i])
		}
		_ = hold.Process.Kill()
		_ = hold.Wait()
	})
	// unshare has made the namespace once its mount table differs from
	// ours.
	own, _ := os.Readlink("/proc/self/ns/mnt")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ns, err := os.Readlink(m.File()); err == nil && ns != own {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", hold.Process.Pid)); strings.TrimSpace(string(comm)) == "sleep" {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare made no mount namespace within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// File is the namespace's file, for nsenter --mount (Node.MountNS).
func (m *privateMounts) File() string { return fmt.Sprintf("/proc/%d/ns/mnt", m.hold.Process.Pid) }

// Path is path as the namespace sees it, from outside it.
func (m *privateMounts) Path(path string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", m.hold.Process.Pid), path)
}

// exec runs a command inside the namespace.
func (m *privateMounts) exec(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--mount=" + m.File(), "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// tmpfs mounts a tmpfs of size on dir, unmounted (lazily) when the test ends.
func (m *privateMounts) tmpfs(dir, size string) {
	m.t.Helper()
	if _, err := m.exec("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "twill-chaos", dir); err != nil {
		m.t.Fatal(err)
	}
	m.mount = append(m.mount, dir)
}

// TestSubnetFileUnwritable is scenario 8: n1's subnet.env lives on a small
// tmpfs in a mount namespace of the test's own, holding an old file (an MTU
// from before), so that the restarted flanneld must rewrite it; the tmpfs
// is (a) read-only, then (b) full. Each time n1's flanneld is restarted
// under traffic and must: name the file, the error and what it means in a
// log line; raise a Warning Event SubnetEnvNotWritten on n1; leave the old
// file byte for byte; keep running and keep the data plane (0 pings lost,
// 0 stale or missing entries, a peer added meanwhile programmed); and
// answer /readyz with 503 saying subnet.env is not written, since the CNI
// plugin cannot add pods with a wrong file. Once the file can be written
// the daemon's own retries write it and the node is ready again, within
// the retry backoff's cap (30 s). (c) At run time, subnet.env deleted
// while the tmpfs is full: the next full reconcile turns the node not
// ready, saying why, with the data plane kept, until there is room again.
func TestSubnetFileUnwritable(t *testing.T) {
	h := newHarness(t, "8 subnet.env unwritable")
	n1 := h.nodes[0]
	mnt := newPrivateMounts(t)
	dir := filepath.Join(t.TempDir(), "flannel")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt.tmpfs(dir, "16k")
	file := filepath.Join(dir, "subnet.env")
	current, err := os.ReadFile(n1.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(current, []byte("FLANNEL_MTU=1450\n")) {
		t.Fatalf("n1's subnet.env has no FLANNEL_MTU=1450:\n%s", current)
	}
	old := bytes.Replace(current, []byte("FLANNEL_MTU=1450\n"), []byte("FLANNEL_MTU=1400\n"), 1)
	n1.MountNS = mnt.File()
	nodes := h.env.Client.CoreV1().Nodes()

	faults := []struct {
		name, errText  string
		block, unblock func() error
	}{
		{"read-only", "read-only file system",
			func() error { _, err := mnt.exec("mount", "-o", "remount,ro", dir); return err },
			func() error { _, err := mnt.exec("mount", "-o", "remount,rw", dir); return err }},
		{"full", "no space left on device",
			func() error {
				// dd stops with ENOSPC once the tmpfs is full: that is the point.
				_, _ = mnt.exec("dd", "if=/dev/zero", "of="+filepath.Join(dir, "filler"), "bs=4k")
				if _, err := mnt.exec("sh", "-c", "echo x > "+filepath.Join(dir, "probe")); err == nil {
					return fmt.Errorf("the tmpfs on %s is not full", dir)
				}
				return nil
			},
			func() error { return os.Remove(mnt.Path(filepath.Join(dir, "filler"))) }},
	}
	for i, f := range faults {
		if err := os.WriteFile(mnt.Path(file), old, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.block(); err != nil {
			t.Fatal(err)
		}
		logStart, since := fileSize(t, n1.LogFile()), time.Now()
		peer := fmt.Sprintf("sim8%d", i)
		h.fault("subnet.env's directory "+f.name+", n1's flanneld restarted", "", 60*time.Second, func() error {
			if err := testenv.Stop(h.procs["n1"]); err != nil {
				return fmt.Errorf("stopping n1's flanneld: %w", err)
			}
			// A full reconcile every 2 s, for (c) below.
			p, err := n1.StartFlanneld(netConf, append(flannelArgs, "--subnet-file="+file, "--resync-period=2s")...)
			if err != nil {
				return err
			}
			h.procs["n1"] = p
			// A peer that joins meanwhile: the restarted flanneld must
			// program it although it cannot write subnet.env.
			_, err = nodes.Create(h.ctx, simPeer(peer, fmt.Sprintf("10.244.%d.0/24", 80+i), fmt.Sprintf("172.18.0.%d", 180+i), fmt.Sprintf("0a:00:00:00:08:%02x", i)), metav1.CreateOptions{})
			return err
		})
		// converge can pass before the new flanneld has even started (the
		// kernel was right all along), so wait for it to have acted: the
		// log line and the Event.
		var logLine string
		h.until(30*time.Second, "a log line naming "+file, func() error {
			logLine = findLine(t, n1.LogFile(), logStart, file, f.errText)
			if logLine == "" {
				return fmt.Errorf("no line in %s naming %s and %q", n1.LogFile(), file, f.errText)
			}
			return nil
		})
		if !strings.Contains(logLine, "read-only or full") || !strings.Contains(logLine, "CNI plugin") {
			t.Errorf("log line does not say what it means or what to do: %s", logLine)
		}
		h.until(30*time.Second, "a Warning Event on n1", func() error { return warned(h.ctx, h, "n1", file, f.errText, since) })
		if err := n1.Ready(); err == nil || !strings.Contains(err.Error(), "subnet.env") {
			t.Errorf("n1's readyz with subnet.env unwritable: %v; want a 503 that names subnet.env", err)
		}
		if got, err := os.ReadFile(mnt.Path(file)); err != nil || !bytes.Equal(got, old) {
			t.Errorf("old subnet.env not intact: %q, %v; want %q", got, err, old)
		}
		if _, err := h.converge(10 * time.Second); err != nil {
			t.Errorf("with subnet.env unwritable: %v", err)
		}
		if h.crashed() {
			t.Fatalf("n1's flanneld exited with subnet.env unwritable; its log:\n%s", tailFrom(t, n1.LogFile(), logStart))
		}
		// Writable again: flanneld's retries (every 2 s doubling, up to
		// 30 s) write the file and make the node ready, with no restart.
		if err := f.unblock(); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		h.until(40*time.Second, "n1 ready once subnet.env can be written", n1.Ready)
		readyIn := time.Since(back)
		if got, _ := os.ReadFile(mnt.Path(file)); !bytes.Equal(got, current) {
			t.Errorf("subnet.env once writable: %q, want %q", got, current)
		}
		// The record's traffic covers the whole time the file could not
		// be written, up to ready again.
		pf := &h.pending[len(h.pending)-1]
		pf.after = h.marks()
		r := &pf.r
		r.note = fmt.Sprintf("flanneld keeps running and the data plane (a peer added meanwhile programmed); Warning Event SubnetEnvNotWritten; old file intact; /readyz 503 naming the file; writable again: rewritten and ready in %s (retry backoff, cap 30 s)", readyIn.Round(100*time.Millisecond))
	}

	// (c) At run time: subnet.env deleted while its directory is full. The
	// next full reconcile cannot write it again: the node turns not ready,
	// saying why, and keeps its data plane; once there is room it is
	// written and ready again.
	filler := filepath.Join(dir, "filler")
	logStart, since := fileSize(t, n1.LogFile()), time.Now()
	h.fault("subnet.env deleted with its directory full, n1's flanneld running", "", 30*time.Second, func() error {
		if err := os.Remove(mnt.Path(file)); err != nil {
			return err
		}
		_, _ = mnt.exec("dd", "if=/dev/zero", "of="+filler, "bs=4k") // to ENOSPC
		return nil
	})
	h.until(20*time.Second, "n1 not ready, naming subnet.env", func() error {
		if err := n1.Ready(); err == nil || !strings.Contains(err.Error(), "subnet.env") {
			return fmt.Errorf("readyz: %v", err)
		}
		return nil
	})
	h.until(30*time.Second, "a Warning Event on n1", func() error { return warned(h.ctx, h, "n1", file, "no space left on device", since) })
	if line := findLine(t, n1.LogFile(), logStart, file, "no space left on device"); line == "" {
		t.Errorf("no log line naming %s and the error", file)
	}
	if _, err := h.converge(10 * time.Second); err != nil {
		t.Errorf("with subnet.env missing and unwritable: %v", err)
	}
	if h.crashed() {
		t.Fatalf("n1's flanneld exited with subnet.env missing and unwritable; its log:\n%s", tailFrom(t, n1.LogFile(), logStart))
	}
	if err := os.Remove(mnt.Path(filler)); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	h.until(40*time.Second, "n1 ready once subnet.env can be written again", n1.Ready)
	readyIn := time.Since(back)
	if got, _ := os.ReadFile(mnt.Path(file)); !bytes.Equal(got, current) {
		t.Errorf("subnet.env once writable: %q, want %q", got, current)
	}
	pf := &h.pending[len(h.pending)-1]
	pf.after = h.marks()
	pf.r.note = fmt.Sprintf("found by the next full reconcile (--resync-period=2s); /readyz 503 naming the file, Warning Event, data plane kept; room again: rewritten and ready in %s", readyIn.Round(100*time.Millisecond))

	h.finish()
	results.Lock()
	defer results.Unlock()
	for _, r := range results.list[len(results.list)-len(faults)-1:] {
		if r.lost > 0 {
			t.Errorf("%s: %d pings lost; an unwritable subnet.env must not touch the data plane", r.fault, r.lost)
		}
	}
}

// warned checks for a Warning Event SubnetEnvNotWritten on node, raised
// since then (to the second, as Events keep time), whose message names
// file and errText.
func warned(ctx context.Context, h *harness, node, file, errText string, since time.Time) error {
	evs, err := h.env.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var seen []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Name != node {
			continue
		}
		if ev.Type == "Warning" && ev.Reason == "SubnetEnvNotWritten" && strings.Contains(ev.Message, file) && strings.Contains(ev.Message, errText) &&
			!ev.LastTimestamp.Time.Before(since.Truncate(time.Second)) {
			return nil
		}
		seen = append(seen, ev.Reason+": "+ev.Message)
	}
	return fmt.Errorf("no Warning Event SubnetEnvNotWritten naming %s and %q on %s; its Events: %q", file, errText, node, seen)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// tailFrom returns the file from offset on.
func tailFrom(t *testing.T, path string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[min(offset, int64(len(b))):])
}

// findLine returns the first line from offset on holding every one of
// words, or "".
func findLine(t *testing.T, path string, offset int64, words ...string) string {
	t.Helper()
	for _, line := range strings.Split(tailFrom(t, path, offset), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return line
		}
	}
	return ""
}
