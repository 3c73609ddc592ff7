package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/proc"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/with\040space`: "/with space", `/tab\011x`: "/tab\tx", `/trailing\`: `/trailing\`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostCgroupMounts(t *testing.T) {
	ms, err := hostCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !strings.HasPrefix(m.dir, "/sys/fs/cgroup/") {
			t.Errorf("mount %v outside /sys/fs/cgroup", m)
		}
		if m.fstype == "cgroup" && (m.opts == "" || strings.Contains(","+m.opts+",", ",rw,")) {
			t.Errorf("v1 mount %s: options %q should name the controllers only", m.dir, m.opts)
		}
	}
}

// TestNodeNamespaces makes a node's namespaces and checks what a process
// inside sees: its hostname, a private /run and node directories, the
// cgroup hierarchies, and only its own network devices.
func TestNodeNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces and mounts")
	}
	made, err := CreateMountpoints()
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			_ = os.Remove(made[i]) // only if empty: a lab may have started meanwhile
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := V1Hierarchies()
	if err != nil || len(hs) == 0 {
		t.Skipf("no cgroup v1 hierarchies: %v", err)
	}
	name := fmt.Sprintf("twill-nodetest-%d", os.Getpid())
	dir := t.TempDir()
	nsDir := filepath.Join(dir, "ns")
	if err := PrivateMount(nsDir); err != nil {
		t.Fatal(err)
	}
	path, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	n := New(name, nil, filepath.Join(dir, "node"), nsDir, path)
	t.Cleanup(func() {
		_ = proc.KillAll(func() ([]int, error) { return proc.InNamespaces(n.NetNS, n.MountNS) }, 10*time.Second)
		_ = n.ReleaseNamespaces()
		_ = netns.Delete(name)
		_ = unmountAll(nsDir)
	})
	ctx := context.Background()
	if err := n.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := n.Run(ctx, "sh", "-c", "hostname; ls /sys/class/net; echo node > /opt/cni/bin/marker; ls /run")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(out)
	if len(lines) < 2 || lines[0] != name || lines[1] != "lo" {
		t.Errorf("inside the node: %q, want hostname %s then only lo", out, name)
	}
	if _, err := os.Stat(filepath.Join(n.Dir, "root", "opt/cni/bin/marker")); err != nil {
		t.Errorf("a write to /opt/cni/bin inside the node did not land in the node's directory: %v", err)
	}
	if _, err := os.Stat("/opt/cni/bin/marker"); err == nil {
		t.Error("a write to /opt/cni/bin inside the node shows on the host")
	}
	if out, err := n.Run(ctx, "ls", filepath.Join(hs[0], "cgroup.procs")); err != nil {
		t.Errorf("cgroup hierarchy %s not mounted in the node: %v %s", hs[0], err, out)
	}
}

func TestMakeRemoveCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	hs, err := V1Hierarchies()
	if err != nil || len(hs) == 0 {
		t.Skipf("no cgroup v1 hierarchies: %v", err)
	}
	rel := fmt.Sprintf("/twill-cgtest-%d/a/b", os.Getpid())
	dirs, err := MakeCgroup(rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = RemoveCgroup(strings.SplitN(rel, "/", 3)[1]) })
	if len(dirs) != len(hs) {
		t.Errorf("MakeCgroup returned %d dirs for %d hierarchies", len(dirs), len(hs))
	}
	// A process must be able to join every one (cpuset needs cpus/mems).
	dir := t.TempDir()
	p, err := proc.Start(proc.Spec{Path: "/bin/sleep", Args: []string{"600"}, Cgroups: dirs, Log: filepath.Join(dir, "log"), PIDFile: filepath.Join(dir, "pid")})
	if err != nil {
		t.Fatal(err)
	}
	// The daemon's shell joins the cgroups before it execs sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := proc.InCgroups(dirs...)
		if err == nil && len(pids) == 1 && pids[0] == p.PID {
			break
		}
		if time.Now().After(deadline) {
			_ = p.Kill()
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("InCgroups = %v, %v; want [%d] (log: %s)", pids, err, p.PID, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	top := "/" + strings.SplitN(rel, "/", 3)[1]
	if err := RemoveCgroup(top); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, top)); err == nil {
			t.Errorf("%s left after RemoveCgroup", filepath.Join(h, top))
		}
	}
}

func unmountAll(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			_ = unmount(f[4])
		}
	}
	return nil
}

func TestResolvConf(t *testing.T) {
	got := string(resolvConf([]net.IP{net.ParseIP("203.0.113.10"), net.ParseIP("2001:db8::10")}))
	if !strings.Contains(got, "\nnameserver 203.0.113.10\nnameserver 2001:db8::10\n") {
		t.Errorf("resolv.conf with two servers:\n%s", got)
	}
	if got := string(resolvConf(nil)); !strings.Contains(got, "\nnameserver 127.0.0.1\n") {
		t.Errorf("resolv.conf without servers:\n%s", got)
	}
}
