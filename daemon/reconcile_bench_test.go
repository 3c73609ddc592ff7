package daemon

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
)

// BenchmarkPeerEntries5000 is the daemon's own share of a full reconcile at
// 5,000 peers: reading each peer's lease from its annotations and computing
// its entries (the table's share is backend.BenchmarkResync5000).
func BenchmarkPeerEntries5000(b *testing.B) {
	cfg, _ := netconf.Parse([]byte(`{"Network": "10.128.0.0/9"}`))
	backends := builtin.Registry()
	chosen, _ := backends.Parse("", nil)
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	log := logrus.New()
	d := &Daemon{o: Options{Config: cfg, Backends: backends, Backend: chosen, Annotations: ann, NodeName: "me", Kernel: fakekernel.New(),
		Iface: &iface.Choice{Name: "eth0", Index: 2, MTU: 1500, Addrs: []iface.Addr{{Addr: netip.MustParseAddr("172.18.0.2"), Nets: []netip.Prefix{netip.MustParsePrefix("172.18.0.0/16")}}}}},
		log: log, noted: map[string]string{}}
	p, err := d.newPlane(family.IPv4, netip.MustParsePrefix("10.255.255.0/24"), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.be.Setup(); err != nil {
		b.Fatal(err)
	}
	d.planes = planes{p}
	d.own = &lease.Lease{Node: "me", BackendType: "vxlan", Nets: []lease.Net{p.own}}
	nodes := make([]kube.PeerNode, 5000)
	for i := range nodes {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sim-%05d", i), Annotations: map[string]string{
			kube.DefaultAnnotationPrefix + "/backend-type":        "vxlan",
			kube.DefaultAnnotationPrefix + "/backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:%02x:%02x"}`, i>>8, i&255),
			kube.DefaultAnnotationPrefix + "/public-ip":           fmt.Sprintf("172.19.%d.%d", i>>8, i&255),
			kube.DefaultAnnotationPrefix + "/kube-subnet-manager": "true",
		}}, Spec: v1.NodeSpec{PodCIDR: fmt.Sprintf("10.%d.%d.0/24", 128+i>>8, i&255)}}
		nodes[i] = *ann.Strip(n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range nodes {
			l, err := ann.Decode(&nodes[j])
			if err != nil {
				b.Fatal(err)
			}
			if e, _, problem := d.entriesFor(l); problem != nil || len(e.entries) != 3 {
				b.Fatal(problem)
			}
		}
	}
}
