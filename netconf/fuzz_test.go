package netconf

import "testing"

// FuzzParse: no input may panic, and an accepted config is self-consistent.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`,
		`{"Network": "10.244.0.0/16", "SubnetLen": 26, "SubnetMin": "10.244.1.0", "NoMasqueradeCIDRs": ["203.0.113.0/24"], "Backend": {"Type": "host-gw"}}`,
		`{"Network": "10.0.0.0/30"}`, `{}`, `[]`, `null`, `{"Backend": null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		ones, _ := cfg.Network.Mask.Size()
		if cfg.SubnetLen <= ones || cfg.Backend.Type == "" || cfg.Backend.Port == 0 {
			t.Fatalf("accepted an inconsistent config %+v from %q", cfg, data)
		}
	})
}
