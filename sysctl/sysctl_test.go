package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
)

// ipForward writes net.ipv4.ip_forward under a new root and returns the
// root and the file.
func ipForward(t *testing.T, value string) (root, path string) {
	t.Helper()
	root = t.TempDir()
	path = filepath.Join(root, "net/ipv4/ip_forward")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, path
}

func TestEnsure(t *testing.T) {
	root, path := ipForward(t, "0")
	fwd := Prerequisites(family.IPv4)[0]
	if changed, err := Ensure(root, fwd); err != nil || !changed {
		t.Fatalf("Ensure: %v %v", changed, err)
	}
	if data, _ := os.ReadFile(path); strings.TrimSpace(string(data)) != "1" {
		t.Errorf("ip_forward = %q", data)
	}
	if changed, err := Ensure(root, fwd); err != nil || changed {
		t.Errorf("second Ensure: %v %v", changed, err)
	}
	// A setting whose module is not loaded says how to fix it.
	_, err := Ensure(root, Prerequisites(family.IPv4)[1])
	if err == nil || !strings.Contains(err.Error(), "modprobe br_netfilter") {
		t.Errorf("missing bridge setting: %v", err)
	}
	if v6 := Prerequisites(family.IPv6); v6[0].Name != "net.ipv6.conf.all.forwarding" || !strings.Contains(v6[1].Name, "ip6tables") {
		t.Errorf("IPv6 prerequisites %+v", v6)
	}
}

func TestCheckChangesNothing(t *testing.T) {
	root, path := ipForward(t, "0")
	fwd := Prerequisites(family.IPv4)[0]
	if err := Check(root, fwd); err == nil || !strings.Contains(err.Error(), "net.ipv4.ip_forward is 0, want 1") {
		t.Errorf("Check of ip_forward=0: %v", err)
	}
	if data, _ := os.ReadFile(path); strings.TrimSpace(string(data)) != "0" {
		t.Errorf("Check changed ip_forward to %q", data)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Check(root, fwd); err != nil {
		t.Errorf("Check of ip_forward=1: %v", err)
	}
	if err := Check(root, Prerequisites(family.IPv4)[1]); err == nil || !strings.Contains(err.Error(), "modprobe br_netfilter") {
		t.Errorf("Check without br_netfilter: %v", err)
	}
}
