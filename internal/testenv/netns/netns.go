// Package netns creates, enters and removes named network namespaces: the
// ones the lab is made of, and throwaway ones for tests and benchmarks (NS).
// They live in /run/netns like those of `ip netns add`, so `ip netns exec
// NAME …` works on them, for tests and for debugging.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir holds the bind mounts that keep named network namespaces alive.
const Dir = "/run/netns"

// Path returns the file of the network namespace called name.
func Path(name string) string { return filepath.Join(Dir, name) }

// Create makes a new network namespace called name (with only a down
// loopback device) and returns its path. It fails if one exists already.
func Create(name string) (string, error) {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", Dir, err)
	}
	path := Path(name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// This thread moves to the new namespace and is never moved back:
		// leaving the goroutine while locked makes the runtime discard it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mounting %s: %w", src, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", fmt.Errorf("creating network namespace %s: %w", name, err)
	}
	return path, nil
}

// Delete removes the network namespace called name; the namespace itself
// lives on while processes still use it. A missing one is not an error.
func Delete(name string) error {
	return DeletePath(Path(name))
}

// DeletePath is Delete for a namespace file given by path.
func DeletePath(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// Exists reports whether a network namespace called name exists.
func Exists(name string) bool {
	var st, parent unix.Statfs_t
	if unix.Statfs(Path(name), &st) != nil || unix.Statfs(Dir, &parent) != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// Do runs fn with the calling goroutine's OS thread in the network
// namespace at path, then moves the thread back, also when fn ends the
// goroutine (t.Fatal in a test). Sockets fn opens stay in that namespace
// after Do returns.
func Do(path string, fn func() error) (err error) {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening current network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", path, err)
	}
	defer func() {
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Keep the thread locked: the runtime discards it with the
			// goroutine rather than reuse a thread in the wrong namespace.
			err = fmt.Errorf("returning from network namespace %s: %w", path, rerr)
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// DialContext returns a dial function whose connections start from inside
// the network namespace at path, for an http.Transport or a client-go
// rest.Config reaching the lab from the host.
func DialContext(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := Do(path, func() error {
			var err error
			// The socket is created on this (locked) thread, hence inside
			// the namespace; connect completes on the poller wherever.
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// Exec runs a command inside the network namespace called name (ip netns
// exec, which also gives it the namespace's /sys) and returns its combined
// output; the error carries the output too.
func Exec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), name, err, out)
	}
	return string(out), nil
}

// SetSysctl writes value to /proc/sys/<key> (key with slashes, e.g.
// net/ipv4/ip_forward) inside the network namespace at path: /proc/sys/net
// shows the namespace of whoever opens it.
func SetSysctl(path, key, value string) error {
	return Do(path, func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s=%s: %w", key, value, err)
		}
		return nil
	})
}
