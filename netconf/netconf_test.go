package netconf

import (
	"net"
	"strings"
	"testing"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.String() != "10.244.0.0/16" || cfg.SubnetLen != 24 || !cfg.EnableIPv4 {
		t.Errorf("network %s subnetLen %d ipv4 %v", cfg.Network, cfg.SubnetLen, cfg.EnableIPv4)
	}
	if cfg.Backend.Type != BackendVXLAN || cfg.Backend.VNI != 1 || cfg.Backend.Port != 8472 || cfg.Backend.MTU != 0 || cfg.Backend.DirectRouting {
		t.Errorf("backend defaults: %+v", cfg.Backend)
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Parse([]byte(`{
	  "Network": "10.10.0.0/16", "SubnetLen": 26, "SubnetMin": "10.10.1.0", "SubnetMax": "10.10.200.0",
	  "EnableIPv4": true, "NoMasqueradeCIDRs": ["192.168.0.0/16", "203.0.113.0/24"],
	  "Backend": {"Type": "VXLAN", "VNI": 4096, "Port": 4789, "MTU": 1400, "DirectRouting": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SubnetLen != 26 || cfg.SubnetMin.String() != "10.10.1.0" || cfg.SubnetMax.String() != "10.10.200.0" {
		t.Errorf("subnet bounds: %+v", cfg)
	}
	if len(cfg.NoMasqueradeCIDRs) != 2 || cfg.NoMasqueradeCIDRs[1].String() != "203.0.113.0/24" {
		t.Errorf("NoMasqueradeCIDRs: %v", cfg.NoMasqueradeCIDRs)
	}
	if b := cfg.Backend; b.Type != "vxlan" || b.VNI != 4096 || b.Port != 4789 || b.MTU != 1400 || !b.DirectRouting {
		t.Errorf("backend: %+v", b)
	}
	hg, err := Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`))
	if err != nil || hg.Backend.Type != BackendHostGW {
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
		{"unknown backend key", `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "GBP": true}}`, `unknown key "GBP"`},
		{"missing network", `{"Backend": {"Type": "vxlan"}}`, `"Network" is missing`},
		{"bad network", `{"Network": "10.244.0.0/33"}`, `"Network": "10.244.0.0/33" is not an IPv4 CIDR`},
		{"ipv6 network", `{"Network": "fd00::/64"}`, `not an IPv4 CIDR`},
		{"host bits", `{"Network": "10.244.1.0/16"}`, "did you mean 10.244.0.0/16"},
		{"wrong type", `{"Network": 10}`, `"Network": expected string`},
		{"subnetlen too short", `{"Network": "10.244.0.0/16", "SubnetLen": 16}`, `"SubnetLen": 16 must be longer`},
		{"subnetlen too long", `{"Network": "10.244.0.0/16", "SubnetLen": 31}`, `at most 30`},
		{"subnetmin outside", `{"Network": "10.244.0.0/16", "SubnetMin": "10.1.0.0"}`, `"SubnetMin": 10.1.0.0 is outside`},
		{"subnetmax bad", `{"Network": "10.244.0.0/16", "SubnetMax": "x"}`, `"SubnetMax": "x" is not an IPv4 address`},
		{"ipv4 off", `{"Network": "10.244.0.0/16", "EnableIPv4": false}`, "only IPv4"},
		{"ipv6 on", `{"Network": "10.244.0.0/16", "EnableIPv6": true}`, "IPv6 is not supported"},
		{"unsupported backend", `{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}`, `"Backend.Type": "wireguard" is not supported`},
		{"bad vni", `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}`, `"Backend.VNI"`},
		{"bad port", `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 0}}`, `"Backend.Port"`},
		{"bad mtu", `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 100}}`, `"Backend.MTU"`},
		{"host-gw with vni", `{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw", "VNI": 2}}`, "vxlan only"},
		{"bad nomasq", `{"Network": "10.244.0.0/16", "NoMasqueradeCIDRs": ["10.0.0.0/8", "nope"]}`, `"NoMasqueradeCIDRs"[1]: "nope"`},
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
	} {
		_, n, _ := net.ParseCIDR(tc.cidr)
		if err := cfg.ContainsSubnet(n); (err == nil) != tc.ok {
			t.Errorf("ContainsSubnet(%s) = %v, want ok=%v", tc.cidr, err, tc.ok)
		}
	}
}
