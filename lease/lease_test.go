package lease

import (
	"net/netip"
	"testing"

	"github.com/twill-net/twill/family"
)

func TestGatewayIP(t *testing.T) {
	for in, want := range map[string]string{"10.244.1.0/24": "10.244.1.1", "fd00:1::/64": "fd00:1::1", "10.0.0.0/30": "10.0.0.1"} {
		if got := GatewayIP(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("GatewayIP(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestNet(t *testing.T) {
	l := &Lease{Nets: []Net{{Subnet: netip.MustParsePrefix("10.244.1.0/24")}, {Subnet: netip.MustParsePrefix("fd00:1::/64")}}}
	if n, ok := l.Net(family.IPv6); !ok || n.Subnet.String() != "fd00:1::/64" {
		t.Errorf("Net(IPv6) = %v %v", n, ok)
	}
	single := &Lease{Nets: []Net{{Subnet: netip.MustParsePrefix("10.244.1.0/24")}}}
	if _, ok := single.Net(family.IPv6); ok {
		t.Error("a v4-only lease has an IPv6 net")
	}
	if fs := l.Families(); len(fs) != 2 || fs[0] != family.IPv4 || fs[1] != family.IPv6 {
		t.Errorf("Families = %v", fs)
	}
}
