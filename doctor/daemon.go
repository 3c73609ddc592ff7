package doctor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Daemon is a flanneld running on this node, as /proc shows it.
type Daemon struct {
	PID int
	// Args are its command-line arguments, without the program name.
	Args []string
	// Env is its environment (NODE_NAME is the one doctor reads).
	Env map[string]string
	// Root, when set, is where its files are seen from here
	// (/proc/PID/root): it runs in another mount namespace (a container,
	// when doctor runs on the host).
	Root string
}

// Path returns where path, as the daemon names it, is seen from here.
func (d *Daemon) Path(path string) string {
	if d == nil || d.Root == "" || path == "" {
		return path
	}
	return filepath.Join(d.Root, path)
}

// FindDaemon returns the flanneld of this network namespace (the node's),
// reading procRoot ("/proc"); nil when none runs. Doctor itself, whose
// program may be flanneld too, is skipped, as are flanneld processes of
// other network namespaces (other nodes of a lab on the same machine).
func FindDaemon(procRoot string) (*Daemon, error) {
	self := os.Getpid()
	myNet, err := os.Readlink(filepath.Join(procRoot, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("reading this process's network namespace: %w", err)
	}
	myMnt, _ := os.Readlink(filepath.Join(procRoot, "self/ns/mnt"))
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "flanneld" {
			continue
		}
		if net, err := os.Readlink(filepath.Join(dir, "ns/net")); err != nil || net != myNet {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		args := splitNUL(cmdline)
		if len(args) == 0 || (len(args) > 1 && args[1] == "doctor") {
			continue // another doctor
		}
		d := &Daemon{PID: pid, Args: args[1:], Env: map[string]string{}}
		if environ, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			for _, kv := range splitNUL(environ) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					d.Env[k] = v
				}
			}
		}
		if mnt, err := os.Readlink(filepath.Join(dir, "ns/mnt")); err == nil && mnt != myMnt {
			d.Root = filepath.Join(dir, "root")
		}
		return d, nil
	}
	return nil, nil
}

func splitNUL(b []byte) []string {
	var out []string
	for _, f := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		if len(f) > 0 {
			out = append(out, string(f))
		}
	}
	return out
}
