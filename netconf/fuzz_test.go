package netconf

import (
	"net/netip"
	"testing"
)

// FuzzParse: no input may panic, and an accepted config is self-consistent.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`,
		`{"Network": "10.244.0.0/16", "SubnetLen": 26, "SubnetMin": "10.244.1.0", "NoMasqueradeCIDRs": ["203.0.113.0/24"], "Backend": {"Type": "host-gw"}}`,
		`{"Network": "10.0.0.0/30"}`, `{}`, `[]`, `null`, `{"Backend": null}`,
		`{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 80, "NoMasqueradeCIDRs": ["2001:db8::/32"]}`,
		`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/124", "IPv6SubnetMin": "fd00::10"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		if len(cfg.Networks) == 0 {
			t.Fatalf("accepted a config without networks from %q", data)
		}
		for _, n := range cfg.Networks {
			if n.SubnetLen <= n.Prefix.Bits() || n.Prefix.Masked() != n.Prefix || n.Check(netip.PrefixFrom(n.Prefix.Addr(), n.SubnetLen)) != nil && !n.SubnetMin.IsValid() {
				t.Fatalf("accepted an inconsistent network %+v from %q", n, data)
			}
		}
		if (cfg.Backend.Type != "") && cfg.Backend.Raw == nil {
			t.Fatalf("a backend type without its section from %q", data)
		}
	})
}
