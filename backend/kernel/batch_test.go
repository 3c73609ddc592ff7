package kernel_test

import (
	"net"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// TestApplyBatches checks batched changes against the real kernel: more ops
// than one batch holds all land, deleting what is missing succeeds, and a
// failing op reports its own error without stopping the others.
func TestApplyBatches(t *testing.T) {
	a, b := netns.New(t), netns.New(t)
	underlay.Veth(t, a, "eth0", "172.18.0.2/16", b, "eth0", "172.18.0.3/16")
	k, err := kernel.NewNetlinkAt(a.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	dev, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, Local: net.ParseIP("172.18.0.2").To4(), ParentIndex: mustLink(t, k, "eth0"), MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetLinkUp(dev.Index); err != nil {
		t.Fatal(err)
	}
	const peers = 600 // more than two batches of ops
	var ops []kernel.Op
	for i := 0; i < peers; i++ {
		vtep := net.IPv4(10, byte(100+i/256), byte(i%256), 0).To4()
		mac := net.HardwareAddr{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}
		ops = append(ops,
			kernel.Op{Kind: kernel.OpSetNeigh, Neigh: kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac}},
			kernel.Op{Kind: kernel.OpSetFDB, FDB: kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: net.IPv4(172, 19, byte(i/256), byte(i%256)).To4()}},
			kernel.Op{Kind: kernel.OpReplaceRoute, Route: kernel.Route{Dst: &net.IPNet{IP: vtep, Mask: net.CIDRMask(24, 32)}, Gw: vtep, LinkIndex: dev.Index, Onlink: true}},
		)
	}
	// A route through a link that does not exist fails alone.
	ops = append(ops, kernel.Op{Kind: kernel.OpReplaceRoute, Route: kernel.Route{Dst: &net.IPNet{IP: net.IPv4(10, 99, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}, Gw: net.IPv4(10, 99, 0, 0).To4(), LinkIndex: 9999, Onlink: true}})
	// Deleting what is not there succeeds.
	ops = append(ops, kernel.Op{Kind: kernel.OpDeleteRoute, Route: kernel.Route{Dst: &net.IPNet{IP: net.IPv4(10, 98, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}, LinkIndex: dev.Index}})
	errs := k.Apply(ops)
	for i, err := range errs[:len(errs)-2] {
		if err != nil {
			t.Fatalf("op %d (%s): %v", i, ops[i], err)
		}
	}
	if errs[len(errs)-2] == nil || !strings.Contains(errs[len(errs)-2].Error(), "replacing route 10.99.0.0/24") {
		t.Errorf("bad route: %v", errs[len(errs)-2])
	}
	if errs[len(errs)-1] != nil {
		t.Errorf("deleting a missing route: %v", errs[len(errs)-1])
	}
	routes, _ := k.Routes(dev.Index)
	neighs, _ := k.Neighs(dev.Index)
	fdbs, _ := k.FDBs(dev.Index)
	if len(routes) != peers || len(neighs) != peers || len(fdbs) != peers {
		t.Errorf("kernel has %d routes, %d neighbours, %d FDB entries; want %d each", len(routes), len(neighs), len(fdbs), peers)
	}
	if out := a.Run(t, "ip", "route", "show", "10.100.5.0/24"); strings.TrimSpace(out) != "10.100.5.0/24 via 10.100.5.0 dev flannel.1 onlink" {
		t.Errorf("batched route reads %q", out)
	}
	// And the same ops deleted.
	var dels []kernel.Op
	for _, o := range ops[:3*peers] {
		switch o.Kind {
		case kernel.OpSetNeigh:
			o.Kind = kernel.OpDeleteNeigh
		case kernel.OpSetFDB:
			o.Kind = kernel.OpDeleteFDB
		case kernel.OpReplaceRoute:
			o.Kind = kernel.OpDeleteRoute
		}
		dels = append([]kernel.Op{o}, dels...)
	}
	for i, err := range k.Apply(dels) {
		if err != nil {
			t.Fatalf("delete op %d: %v", i, err)
		}
	}
	routes, _ = k.Routes(dev.Index)
	neighs, _ = k.Neighs(dev.Index)
	fdbs, _ = k.FDBs(dev.Index)
	if len(routes)+len(neighs)+len(fdbs) != 0 {
		t.Errorf("left after deletion: %d routes, %d neighbours, %d FDB entries", len(routes), len(neighs), len(fdbs))
	}
}

func mustLink(t *testing.T, k kernel.Kernel, name string) int {
	t.Helper()
	l, err := k.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Index
}
