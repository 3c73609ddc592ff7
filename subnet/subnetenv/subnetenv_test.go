package subnetenv

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
)

func TestMarshalIsFlannels(t *testing.T) {
	v4 := &Env{Nets: []Net{{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: Gateway(netip.MustParsePrefix("10.244.1.0/24"))}}, MTU: 1450, IPMasq: true}
	if got, want := string(v4.Marshal()), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"; got != want {
		t.Errorf("IPv4:\n%s\nwant:\n%s", got, want)
	}
	dual := &Env{Nets: []Net{
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: Gateway(netip.MustParsePrefix("10.244.1.0/24"))},
		{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: Gateway(netip.MustParsePrefix("fd00:10:244:1::/64"))},
	}, MTU: 1430}
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	if got := string(dual.Marshal()); got != want {
		t.Errorf("dual-stack:\n%s\nwant:\n%s", got, want)
	}
	back, err := Parse(strings.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := back.Net(family.IPv6); !ok || n.Subnet.String() != "fd00:10:244:1::1/64" || len(back.Nets) != 2 {
		t.Errorf("parsed back %+v", back)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "FLANNEL_NETWORK is missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "FLANNEL_SUBNET is missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=true\n", "FLANNEL_MTU is missing"},
		{"FLANNEL_NETWORK=fd00::/8\nFLANNEL_SUBNET=fd00::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "not an IPv4 CIDR"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "outside"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "like 10.244.1.1/24"},
		{"FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "FLANNEL_IPV6_SUBNET is missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=9\nFLANNEL_IPMASQ=true\n", "not an MTU"},
		{"garbage\n", "not KEY=VALUE"},
	} {
		if _, err := Parse(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	// IPv6 only, as flannel writes it: no IPv4 keys.
	v6, err := Parse(strings.NewReader("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"))
	if err != nil || len(v6.Nets) != 1 || v6.Nets[0].Family() != family.IPv6 {
		t.Errorf("IPv6 only: %+v %v", v6, err)
	}
}

func TestWriteLeavesARightFileAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	env := &Env{Nets: []Net{{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24")}}, MTU: 1450}
	if changed, err := Write(path, env); err != nil || !changed {
		t.Fatalf("first Write: %v %v", changed, err)
	}
	before, _ := os.Stat(path)
	if changed, err := Write(path, env); err != nil || changed {
		t.Fatalf("second Write: %v %v", changed, err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Error("an identical file was replaced")
	}
	if got, err := Read(path); err != nil || got.MTU != 1450 {
		t.Errorf("Read: %+v %v", got, err)
	}
}
