package vxlan

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
)

// FuzzPeerData: a peer's backend-data annotation is outside input. The
// backend never panics on it; broken data is a *backend.DataError (so the
// daemon keeps what works), and accepted data gives flannel's three
// entries with a unicast MAC.
func FuzzPeerData(f *testing.F) {
	for _, seed := range []string{`{"VNI":1,"VtepMAC":"0a:00:00:00:00:10"}`, `{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`, `null`, `{}`, `{"VNI":1e30}`, `[1]`, `{"VtepMAC":"0a:00:00:00:00:00:00:10"}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		fx := newFixture(t, false)
		p := &lease.Lease{Node: "peer", BackendType: Type, Nets: []lease.Net{{
			Subnet: netip.MustParsePrefix("10.244.0.0/24"), PublicIP: netip.MustParseAddr("172.18.0.3"), BackendData: json.RawMessage(data),
		}}}
		e, err := fx.b.Entries(p, p.Nets[0])
		if err != nil {
			var bad *backend.DataError
			if !errors.As(err, &bad) && !strings.HasPrefix(err.Error(), "node uses VNI ") {
				t.Fatalf("data %q: %v is neither a DataError nor a VNI mismatch", data, err)
			}
			return
		}
		if len(e) != 3 {
			t.Fatalf("data %q: %d entries", data, len(e))
		}
		fdb, ok := e[1].(kernel.FDB)
		if !ok || len(fdb.MAC) != 6 || fdb.MAC[0]&1 != 0 {
			t.Fatalf("data %q: FDB entry %v", data, e[1])
		}
	})
}
