package family

import (
	"net/netip"
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want Family
	}{
		{"10.0.0.1", IPv4}, {"::ffff:10.0.0.1", IPv4}, {"fd00::1", IPv6}, {"::", IPv6},
	} {
		if got := Of(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Of(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func TestValues(t *testing.T) {
	if IPv4.Bits() != 32 || IPv6.Bits() != 128 {
		t.Error("Bits")
	}
	if IPv4.Multicast().String() != "224.0.0.0/4" || IPv6.Multicast().String() != "ff00::/8" {
		t.Error("Multicast")
	}
	if IPv4.Any().String() != "0.0.0.0/0" || IPv6.Any().String() != "::/0" {
		t.Error("Any")
	}
	if Host(netip.MustParseAddr("10.244.1.0")).String() != "10.244.1.0/32" || Host(netip.MustParseAddr("fd00::")).String() != "fd00::/128" {
		t.Error("Host")
	}
}

func TestParsePrefix(t *testing.T) {
	if p, err := ParsePrefix(IPv4, "10.244.0.0/16"); err != nil || p.String() != "10.244.0.0/16" {
		t.Errorf("good v4: %v %v", p, err)
	}
	if p, err := ParsePrefix(IPv6, "fd00:10:244::/56"); err != nil || p.Bits() != 56 {
		t.Errorf("good v6: %v %v", p, err)
	}
	for _, tc := range []struct {
		f        Family
		in, want string
	}{
		{IPv4, "10.244.0.0/33", "not an IPv4 CIDR"},
		{IPv4, "fd00::/64", "not an IPv4 CIDR"},
		{IPv6, "10.0.0.0/8", "not an IPv6 CIDR"},
		{IPv4, "10.244.1.0/16", "did you mean 10.244.0.0/16"},
		{IPv4, "::ffff:10.0.0.0/104", "not an IPv4 CIDR"},
	} {
		if _, err := ParsePrefix(tc.f, tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePrefix(%s, %q) = %v, want %q", tc.f, tc.in, err, tc.want)
		}
	}
	if _, err := ParseAddr(IPv4, "fd00::1"); err == nil {
		t.Error("ParseAddr accepted a v6 address as IPv4")
	}
}

type valued struct {
	f    Family
	name string
}

func (v valued) Family() Family { return v.f }

func TestPickAndList(t *testing.T) {
	xs := []valued{{IPv4, "a"}, {IPv6, "b"}}
	if v, ok := Pick(xs, IPv6); !ok || v.name != "b" {
		t.Errorf("Pick(IPv6) = %v %v", v, ok)
	}
	if _, ok := Pick(xs[:1], IPv6); ok {
		t.Error("Pick found a family that is not there")
	}
	if fs := List(xs); len(fs) != 2 || fs[0] != IPv4 || fs[1] != IPv6 {
		t.Errorf("List = %v", fs)
	}
}
