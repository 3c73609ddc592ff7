package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// DoctorCmd returns `flanneld doctor` run on node: the checkout's
// bin/flanneld in the node's namespaces, with the lab's admin kubeconfig
// (the node has no in-cluster credentials) and args added. It takes the
// rest of its configuration from the flanneld running there, whose files
// it reads through /proc, so it works while that flanneld is stopped too.
func (c *Cluster) DoctorCmd(ctx context.Context, node string, args ...string) (*exec.Cmd, error) {
	bin := filepath.Join(c.RepoRoot, "bin", "flanneld")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s: %w (run make build)", bin, err)
	}
	argv := append([]string{bin, "doctor", "--kubeconfig-file=" + c.Kubeconfig, "--node=" + node}, args...)
	return c.ExecCmd(ctx, node, argv...)
}

// Doctor runs `flanneld doctor` on node (see DoctorCmd) and returns its
// standard output and exit status; err is set only when it could not run.
func (c *Cluster) Doctor(ctx context.Context, node string, args ...string) (out string, code int, err error) {
	cmd, err := c.DoctorCmd(ctx, node, args...)
	if err != nil {
		return "", 0, err
	}
	var stderr []byte
	b, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = ee.Stderr
		if ee.ExitCode() >= 0 && ee.ExitCode() != 2 {
			return string(b), ee.ExitCode(), nil
		}
	}
	if err != nil {
		return string(b), 0, fmt.Errorf("flanneld doctor on %s: %w: %s", node, err, stderr)
	}
	return string(b), 0, nil
}
