package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/kube/clientsetapi"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// realNode is a namespace with eth0 on a shared veth, flannel.1 made by
// the real vxlan backend and the peers programmed by the real table.
type realNode struct {
	ns    *netns.NS
	k     *kernel.Netlink
	be    *vxlan.Backend
	lease *lease.Lease
}

func newRealNode(t *testing.T, ns *netns.NS, name, ip, subnet string) *realNode {
	t.Helper()
	k, eth0 := ns.Kernel(t, "eth0")
	addr := netip.MustParseAddr(ip)
	be, err := vxlan.NewBackend(k, vxlan.Config{VNI: 1, Port: 8472}, backend.Node{
		Name: name, Subnet: netip.MustParsePrefix(subnet), Network: netip.MustParsePrefix("10.244.0.0/16"),
		Iface: backend.Link{Index: eth0.Index, Name: "eth0", MTU: eth0.MTU}, Addr: addr, Nets: []netip.Prefix{netip.PrefixFrom(addr, 16)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Setup(); err != nil {
		t.Fatal(err)
	}
	l := &lease.Lease{Node: name, BackendType: "vxlan", Nets: []lease.Net{{Subnet: netip.MustParsePrefix(subnet), PublicIP: addr, BackendData: be.Data()}}}
	return &realNode{ns: ns, k: k, be: be, lease: l}
}

func (n *realNode) program(t *testing.T, peers ...*realNode) {
	t.Helper()
	want := map[string]backend.Entries{}
	for _, p := range peers {
		es, err := n.be.Entries(p.lease, p.lease.Nets[0])
		if err != nil {
			t.Fatal(err)
		}
		want[p.lease.Node] = es
	}
	if _, err := backend.NewTable(n.k, nil).SyncAll(want, n.be.Scope()); err != nil {
		t.Fatal(err)
	}
}

func (n *realNode) node() *v1.Node {
	ln := n.lease.Nets[0]
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.lease.Node, Annotations: map[string]string{
			pfx + "backend-type": "vxlan", pfx + "backend-data": string(ln.BackendData), pfx + "public-ip": ln.PublicIP.String(),
		}},
		Spec: v1.NodeSpec{PodCIDR: ln.Subnet.String()},
	}
}

// nsProber runs every probe from inside ns: the checks start goroutines,
// whose threads are in the test's namespace, not ns.
type nsProber struct{ ns *netns.NS }

func (p nsProber) Ping(ctx context.Context, targets []netip.Addr) (map[netip.Addr]bool, error) {
	var out map[netip.Addr]bool
	err := p.ns.Do(func() error {
		var err error
		out, err = NetProber{Interval: 100 * time.Millisecond}.Ping(ctx, targets)
		return err
	})
	return out, err
}

func (p nsProber) Connect(ctx context.Context, a netip.AddrPort) bool {
	ok := false
	_ = p.ns.Do(func() error { ok = NetProber{}.Connect(ctx, a); return nil })
	return ok
}

// TestProbesAndDoctorOnARealOverlay: the real prober pings over a real
// VXLAN overlay and its underlay, TCP gets through where nothing listens
// (a refusal is an answer), and doctor, run against the real kernel, finds
// the entries right and names the checksum-offload pattern when TCP alone
// is dropped inside the tunnel.
func TestProbesAndDoctorOnARealOverlay(t *testing.T) {
	netns.RequireRoot(t)
	ns1, ns2 := netns.New(t), netns.New(t)
	underlay.Veth(t, ns1, "eth0", "172.18.0.2/16", ns2, "eth0", "172.18.0.3/16")
	n1 := newRealNode(t, ns1, "node-1", "172.18.0.2", "10.244.1.0/24")
	n2 := newRealNode(t, ns2, "node-2", "172.18.0.3", "10.244.2.0/24")
	n1.program(t, n2)
	n2.program(t, n1)

	probe := nsProber{ns1}
	// The deadline is all the address nobody has waits.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	vtep2, pub2, nobody := netip.MustParseAddr("10.244.2.0"), netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("10.244.7.0")
	got, err := probe.Ping(ctx, []netip.Addr{vtep2, pub2, nobody})
	if err != nil {
		t.Fatal(err)
	}
	if !got[vtep2] || !got[pub2] || got[nobody] {
		t.Errorf("pings answered %v, want %s and %s, not %s", got, vtep2, pub2, nobody)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if !probe.Connect(ctx, netip.AddrPortFrom(vtep2, 10268)) {
		t.Error("TCP to a closed port over the overlay: no answer; a refusal is one")
	}

	// TCP dropped inside the tunnel only, as a broken checksum offload
	// does to it.
	ns2.Run(t, "iptables", "-I", "INPUT", "-i", "flannel.1", "-p", "tcp", "-j", "DROP")
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if probe.Connect(short, netip.AddrPortFrom(vtep2, 10268)) {
		t.Error("TCP answered though the peer drops it")
	}

	dir := t.TempDir()
	cfg, _ := netconf.Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`))
	client := fake.NewClientset(n1.node(), n2.node())
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	var choice *iface.Choice
	if err := ns1.Do(func() error {
		var err error
		choice, err = iface.Choose(iface.Options{Ifaces: []string{"eth0"}}, []family.Family{family.IPv4})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	env := &subnetenv.Env{MTU: 1450, IPMasq: true, Nets: []subnetenv.Net{{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24")}}}
	if _, err := subnetenv.Write(filepath.Join(dir, "subnet.env"), env); err != nil {
		t.Fatal(err)
	}
	masq := true
	r := Run(context.Background(), Options{
		NodeName: "node-1", Config: cfg, ConfigPath: "net-conf.json", Backends: builtin.Registry(), Annotations: ann,
		API: clientsetapi.API{C: client}, Kernel: n1.k, Router: n1.k,
		ChooseIface: func([]family.Family) (*iface.Choice, error) { return choice, nil },
		IPMasq:      &masq, SubnetFile: filepath.Join(dir, "subnet.env"),
		CNIConfDir: dir, CNIConf: filepath.Join(dir, "10-flannel.conflist"), CNIBinDir: dir, ProcSys: "/proc/sys",
		Prober: probe, ProbePort: 10268, ProbeTimeout: 2 * time.Second,
	})
	for check, want := range map[string]Status{"device": OK, "peer-entries": OK, "reachability": OK, "checksum-offload": Fail, "interface": OK} {
		fs := r.Find(check)
		if len(fs) != 1 || fs[0].Status != want {
			t.Errorf("%s: %+v, want %s", check, fs, want)
		}
	}

	// A deleted FDB entry, found through netlink.
	ns1.Run(t, "bridge", "fdb", "del", vxlan.StableMAC("node-2", 1, family.IPv4).String(), "dev", "flannel.1", "dst", "172.18.0.3")
	r = Run(context.Background(), Options{
		NodeName: "node-1", Config: cfg, Backends: builtin.Registry(), Annotations: ann,
		API: clientsetapi.API{C: client}, Kernel: n1.k, Router: n1.k,
		ChooseIface: func([]family.Family) (*iface.Choice, error) { return choice, nil },
		SubnetFile:  filepath.Join(dir, "subnet.env"), CNIConfDir: dir, CNIConf: filepath.Join(dir, "x"), CNIBinDir: dir, ProcSys: "/proc/sys",
	})
	fd := r.Find("peer-entries")
	if len(fd) != 1 || fd[0].Status != Fail || !strings.Contains(strings.Join(fd[0].Details, " "), "missing FDB entry") {
		t.Errorf("after deleting the FDB entry: %+v", fd)
	}
}

// TestFindDaemon finds a process named flanneld in this network namespace
// and reads its arguments and environment.
func TestFindDaemon(t *testing.T) {
	root := t.TempDir()
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skip("no /proc/self/ns/net")
	}
	mk := func(pid int, comm, netNS string, args ...string) {
		dir := filepath.Join(root, fmt.Sprint(pid))
		write(t, filepath.Join(dir, "comm"), comm+"\n", 0o644)
		write(t, filepath.Join(dir, "cmdline"), strings.Join(args, "\x00")+"\x00", 0o644)
		write(t, filepath.Join(dir, "environ"), "NODE_NAME=node-7\x00PATH=/bin\x00", 0o644)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(netNS, filepath.Join(dir, "ns/net")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "self/ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(root, "self/ns/net")); err != nil {
		t.Fatal(err)
	}
	mk(10, "kubelet", self, "kubelet")
	mk(11, "flanneld", "net:[1]", "/usr/local/bin/flanneld", "--ip-masq")            // another node's
	mk(12, "flanneld", self, "/usr/local/bin/flanneld", "doctor")                    // another doctor
	mk(13, "flanneld", self, "/usr/local/bin/flanneld", "--ip-masq", "--iface=eth1") // ours
	d, err := FindDaemon(root)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.PID != 13 || strings.Join(d.Args, " ") != "--ip-masq --iface=eth1" || d.Env["NODE_NAME"] != "node-7" {
		t.Errorf("FindDaemon = %+v", d)
	}
	if d.Root != "" && d.Path("/run/x") != filepath.Join(d.Root, "/run/x") {
		t.Errorf("Path: %s", d.Path("/run/x"))
	}
}
