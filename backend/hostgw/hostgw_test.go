package hostgw

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/lease"
)

func TestHostGW(t *testing.T) {
	k := fakekernel.New()
	node := backend.Node{
		Name: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Network: netip.MustParsePrefix("10.244.0.0/16"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500},
		Addr:  netip.MustParseAddr("172.18.0.2"), Nets: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/16")},
	}
	b, err := Config{}.New(k, node)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	if b.MTU() != 1500 {
		t.Errorf("MTU %d, want the interface's 1500", b.MTU())
	}
	if b.Data() != nil || b.Devices() != nil {
		t.Errorf("host-gw publishes %s and has devices %v", b.Data(), b.Devices())
	}
	near := &lease.Lease{Node: "n0", BackendType: "host-gw", Nets: []lease.Net{{Subnet: netip.MustParsePrefix("10.244.0.0/24"), PublicIP: netip.MustParseAddr("172.18.0.3")}}}
	far := &lease.Lease{Node: "n2", BackendType: "host-gw", Nets: []lease.Net{{Subnet: netip.MustParsePrefix("10.244.2.0/24"), PublicIP: netip.MustParseAddr("10.1.0.4")}}}
	e, err := b.Entries(near, near.Nets[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Entries(far, far.Nets[0]); err == nil {
		t.Error("a peer off the L2 segment got a route (it would blackhole)")
	}
	if _, err := b.Entries(far, far.Nets[0]); err == nil || !strings.Contains(err.Error(), `"UnderlayRoutes": true`) {
		t.Errorf("the error for a peer off the segment should name UnderlayRoutes: %v", err)
	}
	routed, err := Config{UnderlayRoutes: true}.New(k, node)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := routed.Entries(far, far.Nets[0]); err != nil || len(e) != 0 {
		t.Errorf("with UnderlayRoutes a peer off the segment should get no entry and no error (the default route reaches it): %v %v", e, err)
	}
	if e, err := routed.Entries(near, near.Nets[0]); err != nil || len(e) != 1 {
		t.Errorf("with UnderlayRoutes a peer on the segment keeps its route: %v %v", e, err)
	}
	table := backend.NewTable(k, nil)
	if _, err := table.SyncAll(map[string]backend.Entries{"n0": e}, b.Scope()); err != nil {
		t.Fatal(err)
	}
	want := []string{"route 10.244.0.0/24 via 172.18.0.3 dev eth0"}
	if got := k.Dump(); !slices.Equal(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
}

func TestParseConfig(t *testing.T) {
	if c, err := Plugin.ParseConfig(json.RawMessage(`{"Type": "host-gw", "MTU": 9000}`)); err != nil || c != (Config{MTU: 9000}) {
		t.Errorf("MTU: %+v %v", c, err)
	}
	if c, err := Plugin.ParseConfig(json.RawMessage(`{"Type": "host-gw", "UnderlayRoutes": true}`)); err != nil || c != (Config{UnderlayRoutes: true}) {
		t.Errorf("UnderlayRoutes: %+v %v", c, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"Type": "host-gw", "VNI": 2}`, "vxlan only"},
		{`{"Type": "host-gw", "DirectRouting": false}`, "vxlan only"},
		{`{"Type": "host-gw", "MTU": 10}`, `"Backend.MTU"`},
		{`{"Type": "host-gw", "Foo": 1}`, `unknown key "Foo"`},
		{`{"Type": "host-gw", "UnderlayRoutes": "yes"}`, `UnderlayRoutes`},
	} {
		if _, err := Plugin.ParseConfig(json.RawMessage(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}
