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
