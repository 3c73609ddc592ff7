package builtin

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/hostgw"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/netconf"
)

func TestParse(t *testing.T) {
	r := Registry()
	if got := r.Types(); !slices.Equal(got, []string{"vxlan", "host-gw"}) {
		t.Errorf("types %v", got)
	}
	for in, want := range map[string]string{
		`{"Network": "10.244.0.0/16"}`:                                              "vxlan",
		`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`:                "vxlan",
		`{"Network": "10.244.0.0/16", "Backend": {"Type": "Host-GW", "MTU": 9000}}`: "host-gw",
	} {
		cfg, err := netconf.Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		c, err := r.Parse(cfg.Backend.Type, cfg.Backend.Raw)
		if err != nil || c.Plugin.Type() != want {
			t.Errorf("%s: %v %v, want %s", in, c.Plugin, err, want)
		}
	}
	_, err := r.Parse("wireguard", json.RawMessage(`{"Type": "wireguard"}`))
	if err == nil || !strings.Contains(err.Error(), `"Backend.Type": "wireguard" is not supported; use "vxlan" or "host-gw"`) {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := r.Parse("vxlan", json.RawMessage(`{"Type": "vxlan", "VNI": -1}`)); err == nil || !strings.Contains(err.Error(), `"Backend.VNI"`) {
		t.Errorf("the section is not parsed by its backend: %v", err)
	}
}

// TestSwitchToHostGW: a node moving from vxlan to host-gw keeps no VXLAN
// device; the other way round, nothing of vxlan's is touched.
func TestSwitchToHostGW(t *testing.T) {
	k := fakekernel.New()
	n := backend.Node{
		Name: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Network: netip.MustParsePrefix("10.244.0.0/16"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500}, Addr: netip.MustParseAddr("172.18.0.2"),
	}
	old, err := vxlan.Config{VNI: 1, Port: 8472}.New(k, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Setup(); err != nil {
		t.Fatal(err)
	}
	r := Registry()
	if err := r.Teardown(k, vxlan.Plugin); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LinkByName("flannel.1"); err != nil {
		t.Errorf("tearing down the others removed vxlan's own device: %v", err)
	}
	if err := r.Teardown(k, hostgw.Plugin); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LinkByName("flannel.1"); err == nil {
		t.Error("flannel.1 survived the switch to host-gw")
	}
}
