package netconf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := cfg.Network(family.IPv4)
	if len(cfg.Networks) != 1 || !ok || n.Prefix.String() != "10.244.0.0/16" || n.SubnetLen != 24 {
		t.Errorf("networks %+v", cfg.Networks)
	}
	if _, ok := cfg.Network(family.IPv6); ok {
		t.Error("IPv6 enabled by default")
	}
	if cfg.Backend.Type != "vxlan" || string(cfg.Backend.Raw) != `{"Type": "vxlan"}` {
		t.Errorf("backend section: %+v", cfg.Backend)
	}
	if cfg.EnableNFTables {
		t.Error("nftables on by default")
	}
	bare, err := Parse([]byte(`{"Network": "10.244.0.0/16"}`))
	if err != nil || bare.Backend.Type != "" || bare.Backend.Raw != nil {
		t.Errorf("no Backend section: %+v %v", bare, err)
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Parse([]byte(`{
	  "Network": "10.10.0.0/16", "SubnetLen": 26, "SubnetMin": "10.10.1.0", "SubnetMax": "10.10.200.0",
	  "EnableIPv4": true, "NoMasqueradeCIDRs": ["192.168.0.0/16", "203.0.113.0/24"], "EnableNFTables": true,
	  "Backend": {"Type": "VXLAN", "VNI": 4096, "Port": 4789, "MTU": 1400, "DirectRouting": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.EnableNFTables {
		t.Error(`"EnableNFTables": true not read`)
	}
	if n := cfg.Networks[0]; n.SubnetLen != 26 || n.SubnetMin.String() != "10.10.1.0" || n.SubnetMax.String() != "10.10.200.0" {
		t.Errorf("subnet bounds: %+v", n)
	}
	if len(cfg.NoMasqueradeCIDRs) != 2 || cfg.NoMasqueradeCIDRs[1].String() != "203.0.113.0/24" {
		t.Errorf("NoMasqueradeCIDRs: %v", cfg.NoMasqueradeCIDRs)
	}
	if got := cfg.NoMasquerade(family.IPv4); len(got) != 2 {
		t.Errorf("NoMasquerade(IPv4) = %v", got)
	}
	// The type is read case-insensitively; the rest is the backend's.
	if b := cfg.Backend; b.Type != "vxlan" || !strings.Contains(string(b.Raw), `"VNI": 4096`) {
		t.Errorf("backend: %+v", b)
	}
	hg, err := Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"type": "host-gw"}}`))
	if err != nil || hg.Backend.Type != "host-gw" {
		t.Fatalf("host-gw: %v %+v", err, hg)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", ``, "empty file"},
		{"not json", `{"Network": `, "not valid JSON"},
		{"trailing", `{"Network": "10.244.0.0/16"} {}`, "unexpected data"},
		{"unknown key", `{"Network": "10.244.0.0/16", "Netwrok": "x"}`, `unknown key "Netwrok"`},
		{"missing network", `{"Backend": {"Type": "vxlan"}}`, `"Network" is missing`},
		{"bad network", `{"Network": "10.244.0.0/33"}`, `"Network": "10.244.0.0/33" is not an IPv4 CIDR`},
		{"ipv6 network", `{"Network": "fd00::/64"}`, `not an IPv4 CIDR`},
		{"host bits", `{"Network": "10.244.1.0/16"}`, "did you mean 10.244.0.0/16"},
		{"wrong type", `{"Network": 10}`, `"Network": expected string`},
		{"subnetlen too short", `{"Network": "10.244.0.0/16", "SubnetLen": 16}`, `"SubnetLen": 16 must be longer`},
		{"subnetlen too long", `{"Network": "10.244.0.0/16", "SubnetLen": 31}`, `at most 30`},
		{"subnetmin outside", `{"Network": "10.244.0.0/16", "SubnetMin": "10.1.0.0"}`, `"SubnetMin": 10.1.0.0 is outside`},
		{"subnetmax bad", `{"Network": "10.244.0.0/16", "SubnetMax": "x"}`, `"SubnetMax": "x" is not an IPv4 address`},
		{"both families off", `{"Network": "10.244.0.0/16", "EnableIPv4": false}`, `"EnableIPv4" and "EnableIPv6" are both false`},
		{"ipv6 on without a network", `{"Network": "10.244.0.0/16", "EnableIPv6": true}`, `"IPv6Network" is missing: "EnableIPv6" is true`},
		{"v4 cidr in the v6 key", `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "10.245.0.0/16"}`, `"IPv6Network": "10.245.0.0/16" is not an IPv6 CIDR`},
		{"v6 cidr in the v4 key", `{"EnableIPv6": true, "IPv6Network": "fd00::/56", "Network": "fd01::/56"}`, `"Network": "fd01::/56" is not an IPv4 CIDR`},
		{"ipv6 subnetlen too short", `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 48}`, `"IPv6SubnetLen": 48 must be longer than the IPv6Network prefix /56`},
		{"ipv6 subnetlen too long", `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 127}`, `at most 126`},
		{"ipv6 subnetmin outside", `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetMin": "fd00:99::"}`, `"IPv6SubnetMin": fd00:99:: is outside`},
		{"ipv6 subnetmax of the other family", `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetMax": "10.244.0.0"}`, `"IPv6SubnetMax": "10.244.0.0" is not an IPv6 address`},
		{"ipv6-only without IPv6Network", `{"EnableIPv4": false, "EnableIPv6": true}`, `"IPv6Network" is missing`},
		{"bad nomasq", `{"Network": "10.244.0.0/16", "NoMasqueradeCIDRs": ["10.0.0.0/8", "nope"]}`, `"NoMasqueradeCIDRs"[1]: "nope"`},
		{"nomasq of a family not enabled", `{"Network": "10.244.0.0/16", "NoMasqueradeCIDRs": ["fd00::/8"]}`, `"NoMasqueradeCIDRs"[0]: fd00::/8 is an IPv6 CIDR, but IPv6 is not enabled`},
		{"nftables not a bool", `{"Network": "10.244.0.0/16", "EnableNFTables": "yes"}`, `"EnableNFTables": expected bool`},
		{"backend not an object", `{"Network": "10.244.0.0/16", "Backend": 5}`, `"Backend": expected an object`},
		{"backend type not a string", `{"Network": "10.244.0.0/16", "Backend": {"Type": 5}}`, `"Backend.Type": expected a string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse(%s) succeeded, want error with %q", tc.in, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

// TestFamilies: dual-stack and IPv6-only are flannel's keys; a disabled
// family's keys are ignored with a warning, as flannel ignores them.
func TestFamilies(t *testing.T) {
	dual, err := Parse([]byte(`{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56",
		"NoMasqueradeCIDRs": ["203.0.113.0/24", "2001:db8::/32"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if fs := dual.Families(); len(fs) != 2 || fs[0] != family.IPv4 || fs[1] != family.IPv6 {
		t.Fatalf("families %v", fs)
	}
	if n, _ := dual.Network(family.IPv6); n.Prefix.String() != "fd00:10:244::/56" || n.SubnetLen != 64 {
		t.Errorf("IPv6 network %+v, want fd00:10:244::/56 cut into /64s", n)
	}
	if v6 := dual.NoMasquerade(family.IPv6); len(v6) != 1 || v6[0].String() != "2001:db8::/32" {
		t.Errorf("IPv6 no-masquerade %v", v6)
	}
	if err := dual.CheckSubnet(netip.MustParsePrefix("fd00:10:244:3::/64")); err != nil {
		t.Errorf("a v6 node subnet: %v", err)
	}
	only, err := Parse([]byte(`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/120", "Network": "10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	if fs := only.Families(); len(fs) != 1 || fs[0] != family.IPv6 {
		t.Errorf("IPv6-only families %v", fs)
	}
	if n, _ := only.Network(family.IPv6); n.SubnetLen != 124 {
		t.Errorf("a small IPv6 network: subnets /%d, want /124", n.SubnetLen)
	}
	if len(only.Warnings) != 1 || !strings.Contains(only.Warnings[0], `"Network" is ignored`) {
		t.Errorf("warnings %q", only.Warnings)
	}
	if err := only.CheckSubnet(netip.MustParsePrefix("10.244.1.0/24")); err == nil {
		t.Error("an IPv4 subnet passed an IPv6-only config")
	}
	if _, err := Parse([]byte(`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "NoMasqueradeCIDRs": ["10.0.0.0/8"]}`)); err == nil || !strings.Contains(err.Error(), "IPv4 is not enabled") {
		t.Errorf("a v4 no-masquerade CIDR in an IPv6-only config: %v", err)
	}
}

func TestContainsSubnet(t *testing.T) {
	cfg, err := Parse([]byte(`{"Network": "10.244.0.0/16", "SubnetMin": "10.244.2.0", "SubnetMax": "10.244.9.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cidr string
		ok   bool
	}{
		{"10.244.3.0/24", true},
		{"10.245.0.0/24", false},
		{"10.0.0.0/8", false},
		{"10.244.1.0/24", false},
		{"10.244.10.0/24", false},
		{"fd00::/64", false},
	} {
		if err := cfg.CheckSubnet(netip.MustParsePrefix(tc.cidr)); (err == nil) != tc.ok {
			t.Errorf("CheckSubnet(%s) = %v, want ok=%v", tc.cidr, err, tc.ok)
		}
	}
}
