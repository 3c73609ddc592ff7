package registry

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestRepository(t *testing.T) {
	for ref, want := range map[string]string{
		"docker.io/nicolaka/netshoot:latest":      "nicolaka/netshoot:latest",
		"nicolaka/netshoot":                       "nicolaka/netshoot:latest",
		"debian:12":                               "library/debian:12",
		"registry.k8s.io/coredns/coredns:v1.15.0": "coredns/coredns:v1.15.0",
	} {
		if got, err := Repository(ref); err != nil || got != want {
			t.Errorf("Repository(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	if _, err := Repository("UPPER/case"); err == nil {
		t.Error("Repository accepted an invalid reference")
	}
}

func TestMirrors(t *testing.T) {
	for ref, want := range map[string]bool{
		"nicolaka/netshoot":                       true,
		"docker.io/library/debian:12":             true,
		"registry.k8s.io/pause:3.10.2":            true,
		"localhost/twill-lab/netshoot:1":          false,
		"gcr.io/k8s-authenticated-test/agnhost:2": false,
		"Not A Ref": false,
	} {
		if got := Mirrors(ref); got != want {
			t.Errorf("Mirrors(%q) = %v, want %v", ref, got, want)
		}
	}
}

func TestParseImage(t *testing.T) {
	im, err := ParseImage("/a/n.tar=docker.io/nicolaka/netshoot:latest,localhost/twill-lab/netshoot:1")
	if err != nil || im.Archive != "/a/n.tar" || len(im.Refs) != 2 {
		t.Fatalf("ParseImage = %+v, %v", im, err)
	}
	for _, bad := range []string{"", "/a/n.tar", "=x:1", "/a/n.tar=", "/a/n.tar=Bad Ref"} {
		if _, err := ParseImage(bad); err == nil {
			t.Errorf("ParseImage(%q) accepted it", bad)
		}
	}
}

func TestHostsTOML(t *testing.T) {
	got := HostsTOML("docker.io", "203.0.113.10:5000")
	for _, want := range []string{`server = "https://registry-1.docker.io"`, `[host."http://203.0.113.10:5000"]`, `capabilities = ["pull", "resolve"]`} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts.toml lacks %q:\n%s", want, got)
		}
	}
	if got := HostsTOML("registry.k8s.io", "[2001:db8::10]:5000"); !strings.Contains(got, `server = "https://registry.k8s.io"`) || !strings.Contains(got, `"http://[2001:db8::10]:5000"`) {
		t.Errorf("registry.k8s.io over IPv6:\n%s", got)
	}
}

// TestServe loads an archive and pulls it back under each name with the
// same digest; a name it was not given is not found; a broken archive is
// skipped and the rest served.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "img.tar")
	tag, _ := name.NewTag("localhost/twill-lab/test:1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	var readyCalled bool
	images := []Image{
		{Archive: archive, Refs: []string{"docker.io/nicolaka/netshoot:latest", "registry.k8s.io/e2e-test-images/agnhost:2.53"}},
	}
	go func() {
		done <- Serve(ctx, ln, filepath.Join(dir, "blobs"), images, io.Discard, func() { readyCalled = true; close(ready) })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve ended before it was ready: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the registry was not ready within a minute")
	}
	// Each name is the archive's image (the same layers) with its own
	// configuration: no two names, and no name and the archive, share an
	// image ID.
	wantLayers, _ := img.Layers()
	archiveID, _ := img.ConfigName()
	host := ln.Addr().String()
	ids := map[string]string{archiveID.String(): "the archive"}
	for _, ref := range images[0].Refs {
		repo, _ := Repository(ref)
		tag, _ := name.NewTag(host+"/"+repo, name.Insecure)
		got, err := remote.Image(tag)
		if err != nil {
			t.Errorf("pulling %s: %v", repo, err)
			continue
		}
		layers, _ := got.Layers()
		if len(layers) != len(wantLayers) {
			t.Fatalf("%s has %d layers, the archive %d", repo, len(layers), len(wantLayers))
		}
		for i := range layers {
			a, _ := layers[i].DiffID()
			b, _ := wantLayers[i].DiffID()
			if a != b {
				t.Errorf("%s layer %d is %s, the archive's %s", repo, i, a, b)
			}
		}
		cfg, _ := got.ConfigFile()
		if cfg.Config.Labels[NameLabel] != ref {
			t.Errorf("%s labelled %q, want %q", repo, cfg.Config.Labels[NameLabel], ref)
		}
		id, _ := got.ConfigName()
		if other, ok := ids[id.String()]; ok {
			t.Errorf("%s has the image ID of %s", repo, other)
		}
		ids[id.String()] = repo
	}
	missing, _ := name.NewTag(host+"/nicolaka/netshoot:v0.1", name.Insecure)
	if _, err := remote.Image(missing); err == nil {
		t.Error("a tag the registry was never given was found")
	}
	if !readyCalled {
		t.Error("ready was not called")
	}
}

func TestServeSkipsBrokenArchive(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readyCalled := false
	go func() {
		// No ready call when an image failed: Serve goes on serving.
		_ = Serve(ctx, ln, filepath.Join(dir, "blobs"), []Image{{Archive: filepath.Join(dir, "missing.tar"), Refs: []string{"a/b:1"}}}, io.Discard, func() { readyCalled = true })
	}()
	// The registry answers /v2/ although the image could not be loaded.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ref, _ := name.NewTag(ln.Addr().String()+"/a/b:1", name.Insecure)
		_, err := remote.Image(ref)
		if err != nil && (strings.Contains(err.Error(), "NAME_UNKNOWN") || strings.Contains(err.Error(), "MANIFEST_UNKNOWN")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry with a broken archive: %v, want it serving with the image unknown", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if readyCalled {
		t.Error("ready was called although an image failed to load")
	}
}
