package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/twill-net/twill/atomicfile"
)

// kubeletSysctls are the host-wide (not per-namespace) kernel settings every
// kubelet changes when it starts (overcommit, panic on oops, keyring
// limits). Up records them before the first lab and Down restores them
// when the last lab is gone, so the lab leaves the host as it found it.
var kubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

func sysctlFile() string { return filepath.Join(StateRoot, "host-sysctls.json") }

// saveHostSysctls records the settings unless an earlier lab already did
// (then the kubelets may have changed them already).
func saveHostSysctls() error {
	if _, err := os.Stat(sysctlFile()); err == nil {
		return nil
	}
	vals := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue
		}
		vals[k] = strings.TrimSpace(string(b))
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(sysctlFile(), b, 0o644); err != nil {
		return fmt.Errorf("recording host sysctls: %w", err)
	}
	return nil
}

// restoreHostSysctls puts back what saveHostSysctls recorded.
func restoreHostSysctls() error {
	b, err := os.ReadFile(sysctlFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var vals map[string]string
	if err := json.Unmarshal(b, &vals); err != nil {
		return fmt.Errorf("parsing %s: %w", sysctlFile(), err)
	}
	var errs []error
	for k, v := range vals {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s=%s: %w", k, v, err))
		}
	}
	if len(errs) == 0 {
		_ = os.Remove(sysctlFile())
	}
	return errors.Join(errs...)
}

// otherLabs reports whether a lab directory other than name's exists.
func otherLabs(name string) bool {
	ents, _ := os.ReadDir(StateRoot)
	for _, e := range ents {
		if e.IsDir() && e.Name() != name {
			return true
		}
	}
	return false
}

func mountpointsFile() string { return filepath.Join(StateRoot, "host-mountpoints.json") }

// recordMountpoints adds host directories made as bind-mount targets to
// the list removed with the last lab.
func recordMountpoints(made []string) error {
	if len(made) == 0 {
		return nil
	}
	all := append(readMountpoints(), made...)
	b, err := json.Marshal(all)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(mountpointsFile(), b, 0o644)
}

func readMountpoints() []string {
	var out []string
	if b, err := os.ReadFile(mountpointsFile()); err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

// removeMountpoints removes the recorded host directories that are still
// empty, deepest first.
func removeMountpoints() {
	mps := readMountpoints()
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, d := range mps {
		_ = os.Remove(d) // only succeeds on an empty directory
	}
	_ = os.Remove(mountpointsFile())
}
