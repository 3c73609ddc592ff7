package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/lab/node"
)

// Down removes everything the lab called name (DefaultName if empty) made:
// its processes (daemons, container shims, containers), namespaces, mounts,
// cgroups and files. It works from the state directory, and without it
// after a crash (by namespace names and cgroups); with nothing to remove it
// succeeds.
func Down(ctx context.Context, name string) error {
	if name == "" {
		name = DefaultName
	}
	if !validName.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1-20 lowercase letters, digits and dashes", name)
	}
	dir := stateDir(name)
	c, err := Load(name)
	if err != nil {
		c = &Cluster{Name: name, Dir: dir}
	}

	// Graceful first: every daemon gets SIGTERM at once and a few seconds
	// to exit (etcd to close its database, kubelets their connections).
	pidFiles := globFiles(filepath.Join(c.controlPlaneDir(), "run"), "*.pid")
	for _, nd := range nodeDirs(dir) {
		pidFiles = append(pidFiles, globFiles(filepath.Join(nd, "run"), "*.pid")...)
	}
	var wg sync.WaitGroup
	for _, pf := range pidFiles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = proc.StopFile(pf, 5*time.Second)
		}()
	}
	wg.Wait()

	// Then everything left in the lab's namespaces and cgroups: container
	// shims, containers, hostNetwork pods, anything a crash left.
	nsFiles := labNetNS(name)
	nsFiles = append(nsFiles, globFiles(filepath.Join(dir, "ns"), "*.mnt")...)
	var cgDirs []string
	if hs, err := node.AllHierarchies(); err == nil {
		for _, h := range hs {
			cgDirs = append(cgDirs, filepath.Join(h, labCgroup(name)))
		}
	}
	var errs []error
	if err := procKillAll(nsFiles, cgDirs); err != nil {
		errs = append(errs, err)
	}

	for _, f := range globFiles(filepath.Join(dir, "ns"), "*") {
		if err := netns.DeletePath(f); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range labNetNS(name) {
		if err := netns.DeletePath(f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := node.RemoveCgroup(labCgroup(name)); err != nil {
		errs = append(errs, err)
	}
	removeEmptyCgroup("/twill-lab")
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
	}
	// The host directories Up made as bind-mount targets and the kernel
	// settings the kubelets changed are put back with the last lab.
	if !otherLabs(name) {
		if err := restoreHostSysctls(); err != nil {
			errs = append(errs, err)
		}
		removeMountpoints()
		_ = unix.Rmdir(StateRoot)
	}
	return errors.Join(errs...)
}

// nodeDirs lists the node directories in a lab's state directory.
func nodeDirs(dir string) []string {
	ents, _ := os.ReadDir(filepath.Join(dir, "nodes"))
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, "nodes", e.Name()))
		}
	}
	return out
}

// labNetNS lists the existing network namespaces of the lab called name:
// its underlay and internet, and its nodes, recognised by kind's naming.
func labNetNS(name string) []string {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-(underlay|internet|vm|control-plane|worker[0-9]*)$`)
	ents, _ := os.ReadDir(netns.Dir)
	var out []string
	for _, e := range ents {
		if re.MatchString(e.Name()) {
			out = append(out, filepath.Join(netns.Dir, e.Name()))
		}
	}
	return out
}

func globFiles(dir, pattern string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	return m
}

func removeEmptyCgroup(rel string) {
	hs, _ := node.AllHierarchies()
	for _, h := range hs {
		_ = unix.Rmdir(filepath.Join(h, rel))
	}
}

// unmountUnder detaches every mount at or below dir in our mount namespace,
// deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			mounts = append(mounts, fs[4])
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// procKillAll kills, until none is left, every process in the namespaces
// (network or mount namespace files) or cgroup trees given.
func procKillAll(nsFiles, cgDirs []string) error {
	err := proc.KillAll(func() ([]int, error) {
		a, err := proc.InNamespaces(nsFiles...)
		if err != nil {
			return nil, err
		}
		b, err := proc.InCgroups(cgDirs...)
		return append(a, b...), err
	}, time.Minute)
	if err != nil {
		return fmt.Errorf("stopping the lab's processes: %w", err)
	}
	return nil
}
