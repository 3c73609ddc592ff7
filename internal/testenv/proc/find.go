package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// InNamespaces returns the PIDs of processes whose network or mount
// namespace is one of the namespace files given (bind mounts such as
// /run/netns/x). Files that do not exist are ignored.
func InNamespaces(nsFiles ...string) ([]int, error) {
	want := map[[2]uint64]bool{}
	for _, f := range nsFiles {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			continue
		}
		want[[2]uint64{st.Dev, st.Ino}] = true
	}
	if len(want) == 0 {
		return nil, nil
	}
	pids, err := allPIDs()
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []int
	for _, pid := range pids {
		if pid == self {
			continue
		}
		for _, ns := range []string{"net", "mnt"} {
			var st syscall.Stat_t
			if syscall.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), &st) != nil {
				continue
			}
			if want[[2]uint64{st.Dev, st.Ino}] {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

// InCgroups returns the PIDs of processes in the cgroup directories given or
// any cgroup below them. Directories that do not exist are ignored.
func InCgroups(dirs ...string) ([]int, error) {
	seen := map[int]bool{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			if !e.IsDir() {
				return nil
			}
			f, err := os.Open(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading cgroup %s: %w", d, err)
		}
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	return out, nil
}

// KillAll sends SIGKILL to every PID that find returns, again and again,
// until find returns none or timeout passes; it is for processes left
// behind, whose graceful stop has already been tried.
func KillAll(find func() ([]int, error), timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	self := os.Getpid()
	for {
		pids, err := find()
		if err != nil {
			return err
		}
		var live []int
		for _, pid := range pids {
			if pid != self && alive(pid, 0) {
				live = append(live, pid)
			}
		}
		if len(live) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still running after SIGKILL", live)
		}
		for _, pid := range live {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func allPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}
