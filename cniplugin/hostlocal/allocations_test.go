package hostlocal

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

func TestList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cbr0")
	if got, err := List(dir); err != nil || len(got) != 0 {
		t.Fatalf("List of a missing directory: %v %v", got, err)
	}
	files := map[string]string{
		"10.244.1.2":         "abc\r\neth0",
		"10.244.1.3":         "old-style\n", // host-local before it stored the interface
		"10.244.1.4":         "",            // being written
		"last_reserved_ip.0": "10.244.1.3",
		"lock":               "",
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].IP.String() < got[j].IP.String() })
	if len(got) != 2 ||
		got[0].IP.String() != "10.244.1.2" || got[0].ContainerID != "abc" || got[0].IfName != "eth0" ||
		got[1].IP.String() != "10.244.1.3" || got[1].ContainerID != "old-style" || got[1].IfName != "" {
		t.Fatalf("List = %+v", got)
	}
}
