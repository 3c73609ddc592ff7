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
