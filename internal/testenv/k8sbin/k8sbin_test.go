package k8sbin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("TWILL_CACHE", cache)
	bin := filepath.Join(cache, "k8s", Version, "bin")

	if _, err := Dir(); err == nil || !strings.Contains(err.Error(), "make k8s") {
		t.Fatalf("Dir() with no binaries: err = %v, want one telling to run make k8s", err)
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, c := range Commands {
		if err := os.WriteFile(filepath.Join(bin, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Dir()
		if last := i == len(Commands)-1; (err == nil) != last {
			t.Fatalf("after writing %d of %d binaries: Dir() err = %v", i+1, len(Commands), err)
		}
	}
	got, err := Path("kubelet")
	if err != nil || got != filepath.Join(bin, "kubelet") {
		t.Fatalf("Path(kubelet) = %q, %v; want %q", got, err, filepath.Join(bin, "kubelet"))
	}
}

// TestVersionsAgree: the Kubernetes the lab runs, the one its conformance
// tests are built from and the client flanneld links agree, so a bump of
// one is not silently left half done.
func TestVersionsAgree(t *testing.T) {
	minor := "v0." + strings.TrimPrefix(Version, "v1.")
	for file, want := range map[string]string{
		"../../../hack/tools/go.mod":             "k8s.io/kubernetes " + Version,
		"../../../hack/tools/conformance/go.mod": "k8s.io/kubernetes " + Version,
		"../../../go.mod":                        "k8s.io/client-go " + minor,
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "\t"+want+"\n") && !strings.Contains(string(data), "require "+want+"\n") {
			t.Errorf("%s does not require %s (k8sbin.Version is %s): bump them together", file, want, Version)
		}
	}
}
