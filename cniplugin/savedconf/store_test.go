package savedconf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestStore(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "flannel")}
	if ids, err := s.List(); err != nil || len(ids) != 0 {
		t.Fatalf("List of a missing directory: %v %v", ids, err)
	}
	if _, err := s.Load("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of a missing config: %v, want ErrNotFound", err)
	}
	if err := s.Save("a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("b", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("a", []byte(`{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	if data, err := s.Load("a"); err != nil || string(data) != `{"x":2}` {
		t.Fatalf("Load a = %q, %v", data, err)
	}
	st, err := os.Stat(filepath.Join(s.Dir, "a"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode of a saved file: %v %v", st.Mode(), err)
	}
	// A temporary left by a crashed writer is not a container.
	if err := os.WriteFile(filepath.Join(s.Dir, ".a.tmp-123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.List(); err != nil || !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("List = %v, %v; want [a b]", ids, err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := s.Load("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Remove: %v", err)
	}
}

func TestStoreRejectsPathsOutside(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	for _, id := range []string{"", "../x", "a/b", ".hidden", "a\x00b"} {
		if err := s.Save(id, []byte(`{}`)); err == nil {
			t.Errorf("Save(%q) succeeded", id)
		}
		if _, err := s.Load(id); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q) = %v, want a refusal", id, err)
		}
	}
}

// FuzzContainerID: container IDs come from the runtime. An ID either names
// a file directly inside the store's directory or is refused.
func FuzzContainerID(f *testing.F) {
	for _, seed := range []string{"abc123", "../etc/passwd", ".tmp-x", "a/b", "a\x00b", "", "..", "ctr\\x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		s := Store{Dir: "/var/lib/cni/flannel"}
		p, err := s.path(id)
		if err != nil {
			return
		}
		if filepath.Dir(p) != s.Dir || filepath.Base(p) != id {
			t.Fatalf("ID %q names %s, outside %s", id, p, s.Dir)
		}
	})
}

// TestFormat: a directory flannel filled (no marker) is read as format 1
// and marked on the next save; a newer or garbled format is refused by
// Load and Save with an error naming the file and what to do, and nothing
// is written.
func TestFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flannel")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// What flannel leaves: the delegate's JSON under the container ID.
	if err := os.WriteFile(filepath.Join(dir, "upstream"), []byte(`{"type":"bridge"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := Store{Dir: dir}
	if data, err := s.Load("upstream"); err != nil || string(data) != `{"type":"bridge"}` {
		t.Fatalf("Load of flannel's file = %q, %v", data, err)
	}
	if err := s.Save("a", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := os.ReadFile(filepath.Join(dir, ".format")); err != nil || string(m) != "twill-savedconf 1\n" {
		t.Fatalf("marker after Save = %q, %v", m, err)
	}
	if ids, err := s.List(); err != nil || !slices.Equal(ids, []string{"a", "upstream"}) {
		t.Fatalf("List = %v, %v; the marker is not a container", ids, err)
	}
	for _, c := range []struct{ marker, want string }{
		{"twill-savedconf 2\n", "newer than this plugin's 1"},
		{"twill-savedconf 0\n", "which no Twill wrote"},
		{"banana", `holds "banana"`},
	} {
		if err := os.WriteFile(filepath.Join(dir, ".format"), []byte(c.marker), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load("a"); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Load with marker %q: %v; want ErrFormat saying %q", c.marker, err, c.want)
		}
		if err := s.Save("b", []byte(`{}`)); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Save with marker %q: %v; want ErrFormat", c.marker, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "b")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Save with marker %q wrote the file", c.marker)
		}
	}
}
