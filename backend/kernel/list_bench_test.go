package kernel_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
)

// BenchmarkList5000 reads what a full sync reads at 5,000 peers: the routes,
// neighbours and FDB entries of flannel.1.
func BenchmarkList5000(b *testing.B) {
	_, k, dev := vxlanHost(b, "flannel.1", "172.18.0.2/16", "172.18.0.3/16")
	var ops []kernel.Op
	for i := 0; i < 5000; i++ {
		vtep := netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i % 256), 0})
		mac := net.HardwareAddr{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}
		ops = append(ops,
			kernel.Op{Entry: kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac}},
			kernel.Op{Entry: kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: netip.AddrFrom4([4]byte{172, 19, byte(i / 256), byte(i % 256)})}},
			kernel.Op{Entry: kernel.Route{Dst: netip.PrefixFrom(vtep, 24), Gw: vtep, LinkIndex: dev.Index, Onlink: true}},
		)
	}
	k.Apply(ops)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		for _, kind := range kernel.Kinds {
			es, err := k.List(kind, family.IPv4, dev.Index)
			if err != nil {
				b.Fatal(err)
			}
			n += len(es)
		}
		if n != 15000 {
			b.Fatal(n)
		}
	}
}

// BenchmarkApply5000 programs and removes what 5,000 peers need in one
// family (15,000 entries), as the first full sync and a teardown do: the
// cost of building the batches and reading their acknowledgements, and the
// kernel's own per family.
func BenchmarkApply5000(b *testing.B) {
	for _, tc := range []struct {
		name, local, peer string
		vtep, under       func(i int) netip.Addr
	}{
		{"IPv4", "172.18.0.2/16", "172.18.0.3/16",
			func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i % 256), 0}) },
			func(i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 19, byte(i / 256), byte(i % 256)}) }},
		{"IPv6", "fc00::2/64", "fc00::3/64",
			func(i int) netip.Addr {
				return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0, 0, byte(i >> 8), byte(i)})
			},
			func(i int) netip.Addr { return netip.AddrFrom16([16]byte{0: 0xfc, 14: byte(i >> 8), 15: byte(i) + 4}) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, k, dev := vxlanHost(b, "flannel-x.1", tc.local, tc.peer)
			var add, del []kernel.Op
			for i := 0; i < 5000; i++ {
				vtep := tc.vtep(i)
				mac := net.HardwareAddr{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}
				bits := 24
				if vtep.Is6() {
					bits = 64
				}
				for _, e := range []kernel.Entry{
					kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac},
					kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: tc.under(i)},
					kernel.Route{Dst: netip.PrefixFrom(vtep, bits), Gw: vtep, LinkIndex: dev.Index, Onlink: true},
				} {
					add = append(add, kernel.Op{Entry: e})
					del = append([]kernel.Op{{Delete: true, Entry: e}}, del...)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, ops := range [][]kernel.Op{add, del} {
					for j, err := range k.Apply(ops) {
						if err != nil {
							b.Fatalf("%s: %v", ops[j], err)
						}
					}
				}
			}
		})
	}
}
