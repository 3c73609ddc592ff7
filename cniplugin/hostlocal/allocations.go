// Package hostlocal reads the address store of the standard host-local IPAM
// plugin, so that GC can find addresses still held for containers that no
// longer exist. It only reads: addresses are released by calling DEL, which
// takes host-local's own lock.
package hostlocal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Allocation is one address host-local has handed out.
type Allocation struct {
	IP          net.IP
	ContainerID string
	// IfName is empty for records written by host-local before it stored
	// interface names.
	IfName string
}

// List returns the allocations recorded in dir, host-local's directory for
// one network (<dataDir>/<network name>). A missing directory has none.
func List(dir string) ([]Allocation, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing host-local's addresses in %s: %w", dir, err)
	}
	var out []Allocation
	for _, e := range entries {
		// Besides one file per address, the directory holds
		// last_reserved_ip.<range> and the lock file.
		ip := net.ParseIP(e.Name())
		if ip == nil || !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // released while we looked
		}
		if err != nil {
			return nil, fmt.Errorf("reading host-local's record of %s: %w", ip, err)
		}
		// host-local writes "<container ID>\r\n<interface name>".
		id, ifname, _ := strings.Cut(strings.TrimSpace(string(data)), "\r\n")
		if id == "" {
			continue
		}
		out = append(out, Allocation{IP: ip, ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifname)})
	}
	return out, nil
}
