// Package node turns a network namespace into a Kubernetes node: a mount
// namespace with a fresh sysfs, the cgroup hierarchies, a private /run and
// private node directories (so a DaemonSet's hostPath writes land on this
// node only), a UTS namespace with the node's hostname, and containerd,
// kubelet and kube-proxy running inside all three.
package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/internal/testenv/proc"
)

// PrivateDirs are the host paths each node gets its own copy of (bind
// mounts from the node's directory), besides a tmpfs on /run.
var PrivateDirs = []string{
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/var/lib/cni",
	"/var/log/pods",
	"/var/log/containers",
	"/etc/kubernetes",
}

// Daemons are the node's processes, in start order; their PID files are
// <Dir>/run/<name>.pid.
var Daemons = []string{"containerd", "kubelet", "kube-proxy"}

// Node is one node's namespaces and directory.
type Node struct {
	// Name is the node's hostname and Kubernetes name.
	Name string
	// IPs are the node's underlay addresses, the primary one (kubelet's
	// address) first.
	IPs []net.IP
	// Dir holds the node's private directories, configs, logs, PID files.
	Dir string
	// NetNS, MountNS and UTSNS are the namespace files.
	NetNS, MountNS, UTSNS string
	// Nameservers go into the node's own /etc/resolv.conf (Setup), the
	// resolver of the node, its hostNetwork pods and CoreDNS's upstream;
	// none means a resolver that answers nothing (127.0.0.1).
	Nameservers []net.IP
	// RegistryMirror is the host:port of the lab's registry, the mirror of
	// registry.Mirrored for the node's containerd; empty means none.
	RegistryMirror string
}

// New describes the node called name whose files live in dir and whose
// mount and UTS namespace files live in nsDir (a private mount, see
// PrivateMount); the network namespace at netNS must exist.
func New(name string, ips []net.IP, dir, nsDir, netNS string) *Node {
	return &Node{
		Name: name, IPs: ips, Dir: dir, NetNS: netNS,
		MountNS: filepath.Join(nsDir, name+".mnt"),
		UTSNS:   filepath.Join(nsDir, name+".uts"),
	}
}

// PrivateMount bind-mounts dir onto itself with private propagation, as the
// kernel requires of the place where mount namespace files are bind-mounted.
func PrivateMount(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if !isMountPoint(dir) {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting %s: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making %s private: %w", dir, err)
	}
	return nil
}

// CreateMountpoints makes the PrivateDirs that do not exist on the host yet
// (a bind mount needs its target) and returns those it made, for removal
// when the last lab is gone.
func CreateMountpoints() ([]string, error) {
	var made []string
	for _, d := range PrivateDirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		// Record every missing ancestor too, deepest last.
		var chain []string
		for p := d; p != "/"; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			chain = append([]string{p}, chain...)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return made, fmt.Errorf("creating mountpoint %s: %w", d, err)
		}
		made = append(made, chain...)
	}
	return made, nil
}

// Setup creates the node's mount and UTS namespaces and mounts its private
// filesystems. The network namespace must already be wired.
func (n *Node) Setup(ctx context.Context) error {
	for _, d := range append(append([]string{}, PrivateDirs...), "run", "logs") {
		if err := os.MkdirAll(filepath.Join(n.Dir, "root", d), 0o755); err != nil {
			return fmt.Errorf("creating node directory: %w", err)
		}
	}
	for _, f := range []string{n.MountNS, n.UTSNS} {
		if err := os.WriteFile(f, nil, 0o444); err != nil {
			return fmt.Errorf("creating namespace file %s: %w", f, err)
		}
	}
	cgroups, err := hostCgroupMounts()
	if err != nil {
		return err
	}
	var s strings.Builder
	s.WriteString("set -e\n")
	fmt.Fprintf(&s, "hostname %s\n", q(n.Name))
	// A fresh sysfs shows this network namespace's devices; it hides the
	// host's cgroup mounts, so mount the same hierarchies again.
	s.WriteString("mount -t sysfs sysfs /sys\n")
	s.WriteString("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n")
	for _, cg := range cgroups {
		fmt.Fprintf(&s, "mkdir -p %s\nmount -t %s -o %s %s %s\n", q(cg.dir), cg.fstype, q(cg.opts), cg.fstype, q(cg.dir))
	}
	s.WriteString("mount -t tmpfs -o mode=755 tmpfs /run\nmkdir -p /run/netns /run/lock\n")
	for _, d := range PrivateDirs {
		fmt.Fprintf(&s, "mount --bind %s %s\n", q(filepath.Join(n.Dir, "root", d)), q(d))
	}
	if fi, err := os.Lstat("/etc/resolv.conf"); err == nil && fi.Mode().IsRegular() {
		if err := os.WriteFile(filepath.Join(n.Dir, "resolv.conf"), resolvConf(n.Nameservers), 0o644); err != nil {
			return fmt.Errorf("writing resolv.conf: %w", err)
		}
		fmt.Fprintf(&s, "mount --bind %s /etc/resolv.conf\n", q(filepath.Join(n.Dir, "resolv.conf")))
	}
	// Like a systemd host: kubelet relies on shared propagation for volumes.
	s.WriteString("mount --make-rshared /\n")

	argv := proc.Wrap(n.NetNS, "", "", []string{"unshare", "--mount=" + n.MountNS, "--uts=" + n.UTSNS, "--propagation=private", "--", "/bin/sh", "-c", s.String()})
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("setting up the namespaces of node %s: %w: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// resolvConf is a node's /etc/resolv.conf with servers.
func resolvConf(servers []net.IP) []byte {
	if len(servers) == 0 {
		return []byte("# twill lab node: no DNS server in the lab\nnameserver 127.0.0.1\n")
	}
	var b strings.Builder
	b.WriteString("# twill lab node: the DNS server of the lab's internet host\n")
	for _, ip := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", ip)
	}
	return []byte(b.String())
}

// Command returns a command running argv in the node's namespaces.
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	full := proc.Wrap(n.NetNS, n.MountNS, n.UTSNS, argv)
	return exec.CommandContext(ctx, full[0], full[1:]...)
}

// Run runs argv in the node's namespaces and returns its combined output.
func (n *Node) Run(ctx context.Context, argv ...string) (string, error) {
	out, err := n.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("running %q on %s: %w: %s", strings.Join(argv, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Start starts one of the node's daemons in its namespaces and cgroups.
func (n *Node) Start(name, path string, cgroups []string, args ...string) error {
	_, err := proc.Start(proc.Spec{
		Path: path, Args: args,
		NetNS: n.NetNS, MountNS: n.MountNS, UTSNS: n.UTSNS,
		Cgroups: cgroups,
		Log:     n.LogPath(name),
		PIDFile: filepath.Join(n.Dir, "run", name+".pid"),
	})
	if err != nil {
		return fmt.Errorf("starting %s on %s: %w", name, n.Name, err)
	}
	return nil
}

// LogPath is where the daemon called name logs.
func (n *Node) LogPath(name string) string { return filepath.Join(n.Dir, "logs", name+".log") }

// Exited returns an error naming the first daemon of the node that was
// started and is no longer running, with the end of its log.
func (n *Node) Exited() error {
	for _, d := range Daemons {
		p, err := proc.Load(filepath.Join(n.Dir, "run", d+".pid"))
		if err != nil || p.Alive() {
			continue
		}
		return fmt.Errorf("%s on %s exited; %s ends:\n%s", d, n.Name, n.LogPath(d), Tail(n.LogPath(d), 15))
	}
	return nil
}

// Stop sends every daemon of the node SIGTERM, waits up to grace for them
// to exit and kills those that did not.
func (n *Node) Stop(grace time.Duration) error {
	errs := make([]error, len(Daemons))
	var wg sync.WaitGroup
	for i, d := range Daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := proc.StopFile(filepath.Join(n.Dir, "run", d+".pid"), grace); err != nil {
				errs[i] = fmt.Errorf("stopping %s on %s: %w", d, n.Name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ReleaseNamespaces unmounts the mount and UTS namespace files; the
// namespaces vanish with their last process.
func (n *Node) ReleaseNamespaces() error {
	var errs []error
	for _, f := range []string{n.MountNS, n.UTSNS} {
		if err := unix.Unmount(f, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", f, err))
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WaitFor polls check every interval until it returns nil, the timeout
// passes or a daemon of the node exits.
func (n *Node) WaitFor(ctx context.Context, what string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if exited := n.Exited(); exited != nil {
			return fmt.Errorf("waiting for %s: %w", what, exited)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

type cgroupMount struct{ dir, fstype, opts string }

// hostCgroupMounts lists the cgroup hierarchies mounted under
// /sys/fs/cgroup with the options that select their controllers.
func hostCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || !strings.HasPrefix(a[4], "/sys/fs/cgroup/") {
			continue
		}
		switch b[0] {
		case "cgroup":
			var opts []string
			for _, o := range strings.Split(b[2], ",") {
				if o != "rw" && o != "ro" {
					opts = append(opts, o)
				}
			}
			out = append(out, cgroupMount{dir: a[4], fstype: "cgroup", opts: strings.Join(opts, ",")})
		case "cgroup2":
			out = append(out, cgroupMount{dir: a[4], fstype: "cgroup2", opts: "rw"})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return out, nil
}

// V1Hierarchies returns the host's cgroup v1 hierarchy directories
// (e.g. /sys/fs/cgroup/cpu).
func V1Hierarchies() ([]string, error) {
	ms, err := hostCgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" {
			out = append(out, m.dir)
		}
	}
	return out, nil
}

// AllHierarchies returns every cgroup hierarchy directory, v2 included.
func AllHierarchies() ([]string, error) {
	ms, err := hostCgroupMounts()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.dir)
	}
	return out, nil
}

// MakeCgroup creates the cgroup rel (e.g. /twill-lab/x/node) in every v1
// hierarchy, copying cpuset.cpus and cpuset.mems down each new level (a
// cpuset cgroup without them accepts no process). It returns the cgroup's
// directory in each hierarchy.
func MakeCgroup(rel string) ([]string, error) {
	hs, err := V1Hierarchies()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, h := range hs {
		parent := h
		for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
			dir := filepath.Join(parent, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				cur, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil || len(bytes.TrimSpace(cur)) > 0 {
					continue
				}
				v, err := os.ReadFile(filepath.Join(parent, f))
				if err != nil {
					return nil, fmt.Errorf("reading %s: %w", filepath.Join(parent, f), err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return nil, fmt.Errorf("setting %s: %w", filepath.Join(dir, f), err)
				}
			}
			parent = dir
		}
		dirs = append(dirs, parent)
	}
	return dirs, nil
}

// RemoveCgroup removes the cgroup rel and everything below it from every
// hierarchy; the processes in it must be gone.
func RemoveCgroup(rel string) error {
	hs, err := AllHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, rel)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			// A cgroup whose last process just died may be busy briefly.
			for try := 0; try < 50; try++ {
				if err = unix.Rmdir(dirs[i]); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// Tail returns the last n lines of a file, for error messages.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		_, _ = f.Seek(-64<<10, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isMountPoint(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && unescape(fs[4]) == dir {
			return true
		}
	}
	return false
}

// unescape undoes the octal escapes of /proc/self/mountinfo (\040 for a
// space and so on).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Running reports whether the node's daemon called name runs.
func (n *Node) Running(name string) bool {
	p, err := proc.Load(filepath.Join(n.Dir, "run", name+".pid"))
	return err == nil && p.Alive()
}

func unmount(path string) error { return unix.Unmount(path, unix.MNT_DETACH) }
