package backend_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
)

// listKernel is a kernel that lists a fixed set of entries and applies
// nothing.
type listKernel struct {
	kernel.Kernel
	es map[kernel.Kind][]kernel.Entry
}

func (k *listKernel) List(kind kernel.Kind, _ family.Family, _ int) ([]kernel.Entry, error) {
	return append([]kernel.Entry(nil), k.es[kind]...), nil
}
func (k *listKernel) Apply(ops []kernel.Op) []error { return make([]error, len(ops)) }

// BenchmarkResync5000 is a periodic full sync at 5,000 peers when the
// kernel already holds every entry: the table's steady-state cost of a
// resync (reading the kernel is not counted: listKernel hands out copies of
// slices it holds).
func BenchmarkResync5000(b *testing.B) {
	k := &listKernel{es: map[kernel.Kind][]kernel.Entry{}}
	want := map[string]backend.Entries{}
	for i := 0; i < 5000; i++ {
		gw := netip.AddrFrom4([4]byte{10, byte(128 + i/256), byte(i % 256), 0})
		mac := net.HardwareAddr{0xaa, 0, 0, 0, byte(i >> 8), byte(i)}
		e := backend.Entries{
			kernel.Neigh{LinkIndex: 5, IP: gw, MAC: mac},
			kernel.FDB{LinkIndex: 5, MAC: mac, Dst: netip.AddrFrom4([4]byte{172, 18, byte(i / 256), byte(i % 256)})},
			kernel.Route{LinkIndex: 5, Dst: netip.PrefixFrom(gw, 24), Gw: gw, Onlink: true},
		}
		want[fmt.Sprintf("n%d", i)] = e
		for _, x := range e {
			k.es[x.Key().Kind] = append(k.es[x.Key().Kind], x)
		}
	}
	scope := backend.Scope{
		backend.Routes(5, netip.MustParsePrefix("10.128.0.0/9"), netip.MustParsePrefix("10.255.255.0/24")),
		{Kind: kernel.KindNeigh, Family: 4, Link: 5},
		{Kind: kernel.KindFDB, Family: 4, Link: 5},
	}
	table := backend.NewTable(k, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st, err := table.SyncAll(want, scope); err != nil || st.Changed() {
			b.Fatal(st, err)
		}
	}
}
