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

// ServeImages has the lab's registry serve, besides the lab's own images,
// extra (for `twill lab conformance`, Kubernetes' test images), restarting
// it unless it already serves exactly these archives, none rebuilt since it
// loaded them, and waits until it has loaded them all.
func (c *Cluster) ServeImages(ctx context.Context, extra []images.Image) error {
	args := c.registryArgs(extra)
	if c.registryServes(args) {
		return nil
	}
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

// registryServes reports whether the running registry was started with args
// and has loaded every archive, each older than its ready file.
func (c *Cluster) registryServes(args []string) bool {
	p, err := proc.Load(filepath.Join(c.controlPlaneDir(), "run", "registry.pid"))
	if err != nil || !p.Alive() {
		return false
	}
	ready, err := os.Stat(filepath.Join(c.registryDir(), "ready"))
	if err != nil {
		return false
	}
	started, err := os.ReadFile(filepath.Join(c.registryDir(), "args"))
	if err != nil || string(started) != strings.Join(args, "\n") {
		return false
	}
	for i, a := range args {
		if a != "--image" || i+1 == len(args) {
			continue
		}
		archive, _, _ := strings.Cut(args[i+1], "=")
		if st, err := os.Stat(archive); err != nil || st.ModTime().After(ready.ModTime()) {
			return false
		}
	}
	return true
}

// registryArgs are the `twill lab registry` arguments that serve every lab
// image, and extra: one --image per archive, with the names of the mirrored
// registries only (the nodes import the lab's own names).
func (c *Cluster) registryArgs(extra []images.Image) []string {
	args := []string{"lab", "registry", "--listen", fmt.Sprintf(":%d", registry.Port),
		"--dir", filepath.Join(c.registryDir(), "blobs"), "--ready", filepath.Join(c.registryDir(), "ready")}
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
	return args
}

// startRegistry runs `twill lab registry` (bin/twill of the checkout) in the
// internet namespace, serving every lab image, and extra, under their names,
// and records its arguments for registryServes. Down stops it with the
// control plane's daemons.
func (c *Cluster) startRegistry(cgroups []string, extra ...images.Image) error {
	bin := filepath.Join(c.RepoRoot, "bin", "twill")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the lab's registry runs %s: %w; run `make build`", bin, err)
	}
	args := c.registryArgs(extra)
	if err := os.MkdirAll(c.registryDir(), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", c.registryDir(), err)
	}
	if err := os.WriteFile(filepath.Join(c.registryDir(), "args"), []byte(strings.Join(args, "\n")), 0o644); err != nil {
		return fmt.Errorf("recording the registry's arguments: %w", err)
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
