package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/lab/images"
)

// TestRegistryServes: a running registry is kept only when it was started
// with the same images and none was rebuilt since it loaded them.
func TestRegistryServes(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{Name: "t", Dir: filepath.Join(dir, "state"), RepoRoot: dir}
	for _, im := range images.All() {
		p := filepath.Join(dir, im.Archive)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := c.registryArgs(nil)
	if err := os.MkdirAll(c.registryDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.registryDir(), "args"), []byte(strings.Join(args, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if c.registryServes(args) {
		t.Error("kept a registry that is not running")
	}
	p, err := proc.Start(proc.Spec{Path: "/bin/sleep", Args: []string{"600"}, Log: filepath.Join(dir, "log"),
		PIDFile: filepath.Join(c.controlPlaneDir(), "run", "registry.pid")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill() }()
	if c.registryServes(args) {
		t.Error("kept a registry that has not loaded its images (no ready file)")
	}
	ready := filepath.Join(c.registryDir(), "ready")
	if err := os.WriteFile(ready, []byte("ready\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(ready, later, later); err != nil {
		t.Fatal(err)
	}
	if !c.registryServes(args) {
		t.Error("restarts a registry that serves exactly these images")
	}
	extra := []images.Image{{Ref: "localhost/x:1", Archive: "_output/images/pause.tar", Aliases: []string{"registry.k8s.io/pause:9"}}}
	if c.registryServes(c.registryArgs(extra)) {
		t.Error("kept a registry started without the extra images")
	}
	newer := later.Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, images.NetshootArchive), newer, newer); err != nil {
		t.Fatal(err)
	}
	if c.registryServes(args) {
		t.Error("kept a registry whose netshoot archive was rebuilt after it loaded it")
	}
}
