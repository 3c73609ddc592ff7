// Package sysctl checks, and sets where it can, the kernel settings pod
// traffic depends on.
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/twill-net/twill/family"
)

// Sysctl is a kernel setting pod traffic needs, with what to tell a person
// when flanneld cannot set it itself.
type Sysctl struct {
	Name string
	Want string
	// Hint says how to fix it by hand.
	Hint string
}

// Prerequisites returns the settings a node needs for family f:
// forwarding between cni0 and the overlay, and bridged pod traffic passing
// through the packet filter (without it, Services between pods on one node
// break).
func Prerequisites(f family.Family) []Sysctl {
	if f == family.IPv6 {
		return []Sysctl{
			{Name: "net.ipv6.conf.all.forwarding", Want: "1", Hint: "run `sysctl -w net.ipv6.conf.all.forwarding=1` on the node"},
			{Name: "net.bridge.bridge-nf-call-ip6tables", Want: "1",
				Hint: "run `modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-ip6tables=1` on the node, and make it persistent in /etc/modules-load.d and /etc/sysctl.d"},
		}
	}
	return []Sysctl{
		{Name: "net.ipv4.ip_forward", Want: "1", Hint: "run `sysctl -w net.ipv4.ip_forward=1` on the node"},
		{Name: "net.bridge.bridge-nf-call-iptables", Want: "1",
			Hint: "run `modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1` on the node, and make it persistent in /etc/modules-load.d and /etc/sysctl.d"},
	}
}

// Check reads the setting under procRoot and returns an error that says
// what it is and includes the hint when it is not s.Want; it changes
// nothing.
func Check(procRoot string, s Sysctl) error {
	data, err := os.ReadFile(path(procRoot, s))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist (module not loaded?): %s", s.Name, s.Hint)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w; %s", s.Name, err, s.Hint)
	}
	if v := strings.TrimSpace(string(data)); v != s.Want {
		return fmt.Errorf("%s is %s, want %s: %s", s.Name, v, s.Want, s.Hint)
	}
	return nil
}

func path(procRoot string, s Sysctl) string {
	return filepath.Join(procRoot, strings.ReplaceAll(s.Name, ".", "/"))
}

// Ensure reads the setting under procRoot (normally /proc/sys) and sets
// it when it differs. It returns whether it changed the value, or an error
// that includes the hint.
func Ensure(procRoot string, s Sysctl) (bool, error) {
	p := path(procRoot, s)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("%s does not exist (module not loaded?): %s", s.Name, s.Hint)
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w; %s", s.Name, err, s.Hint)
	}
	if strings.TrimSpace(string(data)) == s.Want {
		return false, nil
	}
	if err := os.WriteFile(p, []byte(s.Want), 0o644); err != nil {
		return false, fmt.Errorf("%s is %s and cannot be set to %s here (%v): %s", s.Name, strings.TrimSpace(string(data)), s.Want, err, s.Hint)
	}
	return true, nil
}
