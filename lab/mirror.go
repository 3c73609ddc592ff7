package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/node"
	"github.com/twill-net/twill/lab/registry"
)

// RegistryAddr is the lab registry's host:port on the internet host, in the
// lab's primary family: what every node's containerd pulls the mirrored
// registries' images from.
func (c *Cluster) RegistryAddr() string {
	return net.JoinHostPort(InternetAddr(c.Families()[0]).String(), strconv.Itoa(registry.Port))
}

// RegistryLog is the lab registry's log, one line per request.
func (c *Cluster) RegistryLog() string {
	return filepath.Join(c.controlPlaneDir(), "logs", "registry.log")
}

func (c *Cluster) registryDir() string { return filepath.Join(c.controlPlaneDir(), "registry") }

// ServeImages restarts the lab's registry serving, besides the lab's own
// images, extra (for `twill lab conformance`, Kubernetes' test images), and
// waits until it has loaded them all.
func (c *Cluster) ServeImages(ctx context.Context, extra []images.Image) error {
	pidFile := filepath.Join(c.controlPlaneDir(), "run", "registry.pid")
	if err := proc.StopFile(pidFile, 5*time.Second); err != nil {
		return fmt.Errorf("stopping the lab's registry: %w", err)
	}
	if err := os.Remove(filepath.Join(c.registryDir(), "ready")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restarting the lab's registry: %w", err)
	}
	cgroups, err := node.MakeCgroup(daemonsCgroup(c.Name, "internet"))
	if err != nil {
		return err
	}
	if err := c.startRegistry(cgroups, extra...); err != nil {
		return err
	}
	return c.waitRegistry(ctx, 5*time.Minute)
}

// startRegistry runs `twill lab registry` (bin/twill of the checkout) in the
// internet namespace, serving every lab image, and extra, under their names.
// Down stops it with the control plane's daemons.
func (c *Cluster) startRegistry(cgroups []string, extra ...images.Image) error {
	bin := filepath.Join(c.RepoRoot, "bin", "twill")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the lab's registry runs %s: %w; run `make build`", bin, err)
	}
	args := []string{"lab", "registry", "--listen", fmt.Sprintf(":%d", registry.Port),
		"--dir", filepath.Join(c.registryDir(), "blobs"), "--ready", filepath.Join(c.registryDir(), "ready")}
	// One --image per archive, with the names of the mirrored registries
	// only: the nodes import the lab's own names.
	refs := map[string][]string{}
	var archives []string
	for _, im := range append(images.All(), extra...) {
		for _, r := range append([]string{im.Ref}, im.Aliases...) {
			if !registry.Mirrors(r) || slices.Contains(refs[im.Archive], r) {
				continue
			}
			if refs[im.Archive] == nil {
				archives = append(archives, im.Archive)
			}
			refs[im.Archive] = append(refs[im.Archive], r)
		}
	}
	for _, a := range archives {
		args = append(args, "--image", filepath.Join(c.RepoRoot, a)+"="+strings.Join(refs[a], ","))
	}
	if err := os.MkdirAll(c.registryDir(), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", c.registryDir(), err)
	}
	_, err := proc.Start(proc.Spec{
		Path: bin, Args: args,
		NetNS:   c.InternetNetNS(),
		Cgroups: cgroups,
		Dir:     c.registryDir(),
		Log:     c.RegistryLog(),
		PIDFile: filepath.Join(c.controlPlaneDir(), "run", "registry.pid"),
	})
	if err != nil {
		return fmt.Errorf("starting the lab's registry: %w", err)
	}
	return nil
}

// waitRegistry waits until the registry has loaded every image.
func (c *Cluster) waitRegistry(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(filepath.Join(c.registryDir(), "ready")); err == nil {
			return nil
		}
		if p, err := proc.Load(filepath.Join(c.controlPlaneDir(), "run", "registry.pid")); err != nil || !p.Alive() {
			return fmt.Errorf("the lab's registry exited; see %s", c.RegistryLog())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the lab's registry did not load its images within %v; see %s", timeout, c.RegistryLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
