package kernel_test

import (
	"net/netip"
	"testing"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// TestRouteToAndMaster: RouteTo answers as `ip route get` does, and a
// bridge's ports name it as their master.
func TestRouteToAndMaster(t *testing.T) {
	a, k, dev := vxlanHost(t, "flannel.1", "172.18.0.2/16", "172.18.0.3/16")
	if errs := k.Apply([]kernel.Op{{Entry: kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), LinkIndex: dev.Index, Onlink: true}}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	eth0, err := k.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]int{"10.244.2.5": dev.Index, "172.18.0.3": eth0.Index} {
		link, src, err := k.RouteTo(netip.MustParseAddr(dst))
		if err != nil || link != want {
			t.Errorf("RouteTo(%s) = link %d (src %s), %v; want link %d", dst, link, src, err, want)
		}
	}
	if link, src, _ := k.RouteTo(netip.MustParseAddr("172.18.0.3")); link != eth0.Index || src != netip.MustParseAddr("172.18.0.2") {
		t.Errorf("RouteTo(172.18.0.3) source %s", src)
	}
	if _, _, err := k.RouteTo(netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("RouteTo without a default route: no error")
	}
	if err := underlay.Bridge(a.Path(), "cni0", "10.244.1.1/24"); err != nil {
		t.Fatal(err)
	}
	a.Run(t, "ip", "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth-pod")
	a.Run(t, "ip", "link", "set", "veth-pod", "master", "cni0")
	br, err := k.LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	port, err := k.LinkByName("veth-pod")
	if err != nil || port.Master != br.Index {
		t.Errorf("veth-pod: %+v %v, want master %d", port, err, br.Index)
	}
	if other, _ := k.LinkByName("eth-pod"); other.Master != 0 {
		t.Errorf("eth-pod has master %d", other.Master)
	}
}
