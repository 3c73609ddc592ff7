package conformance

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/images"
)

// LabOptions configure RunLab.
type LabOptions struct {
	// Focus selects the tests (Network when empty).
	Focus string
	// Log receives progress and the suite's output.
	Log io.Writer
	// Timeout bounds the suite.
	Timeout time.Duration
}

// RunLab runs the suite against lab c: it builds e2e-network.test and the
// test images when they are missing or stale, has the lab's registry serve
// the images under the names the tests ask for, and runs the suite on the
// control-plane node (the API server and every node are reachable there),
// with its report under the lab's state directory.
func RunLab(ctx context.Context, c *lab.Cluster, o LabOptions) (*Summary, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Focus != "" {
		if _, err := regexp.Compile(o.Focus); err != nil {
			return nil, fmt.Errorf("focus %q is not a regular expression: %w", o.Focus, err)
		}
	}
	if len(c.Nodes) == 0 {
		return nil, fmt.Errorf("lab %s has no nodes", c.Name)
	}
	binDir, err := images.BuildScript(ctx, c.RepoRoot, "hack/conformance-build.sh", o.Log)
	if err != nil {
		return nil, fmt.Errorf("building the e2e suite: %w", err)
	}
	bin := filepath.Join(binDir, "e2e-network.test")
	listed, err := exec.CommandContext(ctx, bin, "--list-images").Output()
	if err != nil {
		return nil, fmt.Errorf("listing the e2e suite's images (%s --list-images): %w", bin, err)
	}
	if err := images.BuildConformance(ctx, c.RepoRoot, binDir, o.Log); err != nil {
		return nil, fmt.Errorf("building the test images: %w", err)
	}
	imgs, missing := images.ConformanceImages(strings.Fields(string(listed)))
	fmt.Fprintf(o.Log, "conformance: the lab's registry serves %d test images; %d the network tests do not use are not built\n", countRefs(imgs), len(missing))
	if err := c.ServeImages(ctx, imgs); err != nil {
		return nil, err
	}
	kubectl, err := k8sbin.Path("kubectl")
	if err != nil {
		return nil, err
	}
	cp := c.Nodes[0].Name
	return Run(ctx, Options{
		Binary: bin, Kubectl: kubectl, Kubeconfig: c.Kubeconfig,
		Focus:     o.Focus,
		ReportDir: filepath.Join(c.Dir, "conformance", time.Now().UTC().Format("20060102-150405")),
		Command: func(ctx context.Context, argv ...string) (*exec.Cmd, error) {
			return c.ExecCmd(ctx, cp, argv...)
		},
		Log:     o.Log,
		Timeout: o.Timeout,
	})
}

func countRefs(imgs []images.Image) int {
	n := 0
	for _, im := range imgs {
		n += len(im.Aliases)
	}
	return n
}
