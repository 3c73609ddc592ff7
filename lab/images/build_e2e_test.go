//go:build e2e

package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository holding this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building images with buildah needs root; run as root (make test does)")
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("buildah is not installed; run `make deps`")
	}
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var log bytes.Buffer
	if err := Build(ctx, root, &log); err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}

	t.Run("pause", func(t *testing.T) {
		a := readArchive(t, filepath.Join(root, PauseArchive))
		a.wantRef(t, PauseRef)
		if got := strings.Join(a.config.Config.Entrypoint, " "); got != "/pause" {
			t.Errorf("entrypoint = %q, want /pause", got)
		}
		bin, ok := a.files["pause"]
		if !ok {
			t.Fatalf("no /pause in the image; files: %v", a.names())
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("/pause is not an ELF binary: %v", err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("/pause has a dynamic loader; it must be static (CGO_ENABLED=0) to run in an empty image")
			}
		}
	})

	t.Run("netshoot", func(t *testing.T) {
		a := readArchive(t, filepath.Join(root, NetshootArchive))
		a.wantRef(t, NetshootRef)
		for _, tool := range []string{"usr/bin/ping", "usr/sbin/tcpdump", "usr/bin/iperf3", "usr/bin/curl", "usr/bin/ip", "usr/bin/nc", "usr/bin/ps", "usr/sbin/iptables",
			"usr/bin/dig", "usr/bin/nslookup", "usr/bin/ss"} {
			if !a.has(tool) {
				t.Errorf("netshoot lacks /%s", tool)
			}
		}
	})

	t.Run("coredns", func(t *testing.T) {
		a := readArchive(t, filepath.Join(root, CoreDNSArchive))
		a.wantRef(t, CoreDNSRef)
		if got := strings.Join(a.config.Config.Entrypoint, " "); got != "/coredns" {
			t.Errorf("entrypoint = %q, want /coredns", got)
		}
		if !a.has("coredns") || len(a.files) != 1 {
			t.Errorf("the CoreDNS image holds %v, want /coredns alone", a.names())
		}
	})

	t.Run("cached", func(t *testing.T) {
		before := mtimes(t, root)
		start := time.Now()
		var log bytes.Buffer
		if err := Build(ctx, root, &log); err != nil {
			t.Fatalf("second Build: %v\n%s", err, log.String())
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("cached Build took %v; it should only compare file times", d)
		}
		after := mtimes(t, root)
		for i := range before {
			if !before[i].Equal(after[i]) {
				t.Errorf("%s was rewritten although nothing changed:\n%s", All()[i].Archive, log.String())
			}
		}
	})

	t.Run("importable", func(t *testing.T) {
		// ctr import resolves the reference from the archive's RepoTags; the
		// docker-archive must name exactly one tag per image for that.
		for _, img := range All() {
			a := readArchive(t, filepath.Join(root, img.Archive))
			if len(a.manifest) != 1 || len(a.manifest[0].RepoTags) != 1 {
				t.Errorf("%s: manifest.json = %+v, want one image with one tag", img.Archive, a.manifest)
			}
		}
	})
}

func mtimes(t *testing.T, root string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, img := range All() {
		st, err := os.Stat(filepath.Join(root, img.Archive))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.ModTime())
	}
	return out
}

// archive is a docker-archive read into memory: its manifest, the image
// config and the merged file list of its layers (contents only for small
// regular files).
type archive struct {
	manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	config struct {
		Config struct {
			Entrypoint []string
			Cmd        []string
		} `json:"config"`
	}
	files map[string][]byte
}

func readArchive(t *testing.T, path string) *archive {
	t.Helper()
	blobs := map[string][]byte{}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s in %s: %v", h.Name, path, err)
		}
		blobs[h.Name] = b
	}
	a := &archive{files: map[string][]byte{}}
	if err := json.Unmarshal(blobs["manifest.json"], &a.manifest); err != nil || len(a.manifest) == 0 {
		t.Fatalf("%s has no usable manifest.json (%v); is it a docker-archive?", path, err)
	}
	if err := json.Unmarshal(blobs[a.manifest[0].Config], &a.config); err != nil {
		t.Fatalf("%s: image config %s: %v", path, a.manifest[0].Config, err)
	}
	for _, l := range a.manifest[0].Layers {
		lr := tar.NewReader(bytes.NewReader(blobs[l]))
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: layer %s: %v", path, l, err)
			}
			name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
			var content []byte
			if h.Typeflag == tar.TypeReg && h.Size < 16<<20 {
				content, _ = io.ReadAll(lr)
			}
			a.files[name] = content
		}
	}
	return a
}

func (a *archive) wantRef(t *testing.T, ref string) {
	t.Helper()
	if tags := a.manifest[0].RepoTags; len(tags) == 0 || tags[0] != ref {
		t.Errorf("archive tags = %v, want [%s]", tags, ref)
	}
}

// has reports whether the image holds path, directly or through the
// Debian usrmerge symlinks (/bin → usr/bin, /sbin → usr/sbin).
func (a *archive) has(path string) bool {
	if _, ok := a.files[path]; ok {
		return true
	}
	for _, alt := range []string{strings.Replace(path, "usr/sbin/", "usr/bin/", 1), strings.Replace(path, "usr/bin/", "usr/sbin/", 1)} {
		if _, ok := a.files[alt]; ok {
			return true
		}
	}
	return false
}

func (a *archive) names() []string {
	var out []string
	for n := range a.files {
		out = append(out, n)
	}
	return out
}
