package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndReplace(t *testing.T) {
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"Write": Write, "Replace": Replace} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "made")
			path := filepath.Join(dir, "f")
			for _, content := range []string{"old", "new content"} {
				if err := write(path, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(path)
				if err != nil || string(got) != content {
					t.Fatalf("read %q, %v; want %q", got, err, content)
				}
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("%d files in the directory, want 1 (no temporaries left)", len(entries))
			}
		})
	}
}

func BenchmarkWrite(b *testing.B) {
	data := make([]byte, 600) // a delegate configuration
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"fsync": Write, "nosync": Replace} {
		b.Run(name, func(b *testing.B) {
			// On the disk a node keeps /var/lib/cni on, not a tmpfs.
			dir, err := os.MkdirTemp(os.Getenv("ATOMICFILE_BENCH_DIR"), "atomicfile-bench-")
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(dir)
			for i := 0; b.Loop(); i++ {
				if err := write(filepath.Join(dir, "f"), data, 0o600); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
