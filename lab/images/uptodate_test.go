package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUpToDate(t *testing.T) {
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		archive   *time.Time // nil: no archive
		inputs    map[string]time.Time
		notBefore time.Time
		want      bool
	}{
		{name: "no archive", archive: nil, inputs: map[string]time.Time{"in/a.go": base}, want: false},
		{name: "archive newer than inputs", archive: ptr(base.Add(time.Hour)), inputs: map[string]time.Time{"in/a.go": base, "in/sub/b": base}, want: true},
		{name: "one input newer", archive: ptr(base.Add(time.Hour)), inputs: map[string]time.Time{"in/a.go": base, "in/sub/b": base.Add(2 * time.Hour)}, want: false},
		{name: "same time counts as stale", archive: ptr(base), inputs: map[string]time.Time{"in/a.go": base}, want: false},
		{name: "newer test file ignored", archive: ptr(base.Add(time.Hour)), inputs: map[string]time.Time{"in/a.go": base, "in/a_test.go": base.Add(2 * time.Hour)}, want: true},
		{name: "base image newer", archive: ptr(base.Add(time.Hour)), inputs: map[string]time.Time{"in/a.go": base}, notBefore: base.Add(2 * time.Hour), want: false},
		{name: "base image older", archive: ptr(base.Add(time.Hour)), inputs: map[string]time.Time{"in/a.go": base}, notBefore: base, want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for rel, mt := range tc.inputs {
				p := filepath.Join(dir, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, mt, mt); err != nil {
					t.Fatal(err)
				}
			}
			archive := filepath.Join(dir, "out.tar")
			if tc.archive != nil {
				if err := os.WriteFile(archive, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(archive, *tc.archive, *tc.archive); err != nil {
					t.Fatal(err)
				}
			}
			got, err := upToDate(archive, []string{filepath.Join(dir, "in")}, tc.notBefore)
			if err != nil {
				t.Fatalf("upToDate: %v", err)
			}
			if got != tc.want {
				t.Errorf("upToDate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUpToDateMissingInput(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "out.tar")
	if err := os.WriteFile(archive, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := upToDate(archive, []string{filepath.Join(dir, "nope")}, time.Time{}); err == nil {
		t.Fatal("upToDate with a missing input directory succeeded; want an error naming it")
	}
}

func ptr(t time.Time) *time.Time { return &t }

// TestCoreDNSVersionPinned: the image's tag is the release the tools module
// builds, so the lab never names one CoreDNS and runs another.
func TestCoreDNSVersionPinned(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "hack", "tools", "coredns", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	want := "require github.com/coredns/coredns " + CoreDNSVersion + "\n"
	if !strings.Contains(string(b), want) {
		t.Errorf("hack/tools/coredns/go.mod does not pin CoreDNS %s (CoreDNSVersion): want a line %q", CoreDNSVersion, strings.TrimSpace(want))
	}
	if !strings.HasSuffix(CoreDNSRef, ":"+CoreDNSVersion) {
		t.Errorf("CoreDNSRef %s is not tagged %s", CoreDNSRef, CoreDNSVersion)
	}
}

func TestConformanceImages(t *testing.T) {
	listed := []string{
		"registry.k8s.io/e2e-test-images/agnhost:2.66.1",
		"registry.k8s.io/e2e-test-images/agnhost:2.55",
		"gcr.io/k8s-authenticated-test/agnhost:2.6",
		"registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
		"registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
		"registry.k8s.io/pause:3.10.2",
		"registry.k8s.io/e2e-test-images/volume/nfs:1.6.0",
		"",
	}
	imgs, missing := ConformanceImages(listed)
	got := map[string]string{}
	for _, im := range imgs {
		got[im.Archive] = strings.Join(im.Aliases, ",")
	}
	want := map[string]string{
		AgnhostArchive:  "registry.k8s.io/e2e-test-images/agnhost:2.66.1,registry.k8s.io/e2e-test-images/agnhost:2.55",
		BusyboxArchive:  "registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
		NetshootArchive: "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
		PauseArchive:    "registry.k8s.io/pause:3.10.2",
	}
	if len(got) != len(want) {
		t.Errorf("images = %v, want %v", got, want)
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("%s served as %q, want %q", a, got[a], w)
		}
	}
	if strings.Join(missing, ",") != "gcr.io/k8s-authenticated-test/agnhost:2.6,registry.k8s.io/e2e-test-images/volume/nfs:1.6.0" {
		t.Errorf("missing = %v, want the private agnhost and the NFS server", missing)
	}
}
