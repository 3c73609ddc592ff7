package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/kube/clientsetapi"
	"github.com/twill-net/twill/subnet/subnetenv"
)

const pfx = "flannel.alpha.coreos.com/"

// conflist is the manifest's cni-conf.json.
const conflistJSON = `{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// peer is a node of the fixture's cluster.
type peer struct {
	name, cidr, ip string
}

var peers = []peer{
	{"node-2", "10.244.2.0/24", "172.18.0.3"},
	{"node-3", "10.244.3.0/24", "172.18.0.4"},
	{"node-4", "10.244.4.0/24", "172.18.0.5"},
}

// fixture is a healthy node-1 of a 4-node vxlan cluster: a fake kernel
// programmed by the real backend and table, the files flanneld and the
// plugins leave, an API server with the nodes, and probes every peer
// answers. Tests break one thing and run doctor.
type fixture struct {
	t      *testing.T
	dir    string
	k      *fakekernel.Fake
	client *fake.Clientset
	fw     *fakeRules
	probe  *fakeProber
	o      Options
	dev    *kernel.Link
	table  *backend.Table
	want   map[string]backend.Entries
}

// backendData is what a node of backend typ publishes.
func backendData(typ, name string) string {
	if typ == "host-gw" {
		return "null"
	}
	return fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, vxlan.StableMAC(name, 1, family.IPv4))
}

func nodeOf(typ, name, cidr, ip string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			pfx + "backend-type":        typ,
			pfx + "backend-data":        backendData(typ, name),
			pfx + "public-ip":           ip,
			pfx + "kube-subnet-manager": "true",
		}},
		Spec: v1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func newFixture(t *testing.T) *fixture { t.Helper(); return newFixtureFor(t, "vxlan") }

// newFixtureFor is the fixture of a cluster on backend typ.
func newFixtureFor(t *testing.T, typ string) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg, err := netconf.Parse([]byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "` + typ + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	k := fakekernel.New()
	if err := k.AddAddr(2, netip.MustParsePrefix("172.18.0.2/16")); err != nil {
		t.Fatal(err)
	}
	choice := &iface.Choice{Name: "eth0", Index: 2, MTU: 1500, Reason: "it has the IPv4 default route", Addrs: []iface.Addr{{
		Addr: netip.MustParseAddr("172.18.0.2"), Nets: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/16")},
	}}}
	own := nodeOf(typ, "node-1", "10.244.1.0/24", "172.18.0.2")
	client := fake.NewClientset(own)
	for _, p := range peers {
		if _, err := client.CoreV1().Nodes().Create(context.Background(), nodeOf(typ, p.name, p.cidr, p.ip), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The data plane as flanneld leaves it.
	chosen, err := builtin.Registry().Parse(cfg.Backend.Type, cfg.Backend.Raw)
	if err != nil {
		t.Fatal(err)
	}
	be, err := chosen.Config.New(k, backend.Node{
		Name: "node-1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Network: netip.MustParsePrefix("10.244.0.0/16"),
		Iface: backend.Link{Index: 2, Name: "eth0", MTU: 1500}, Addr: netip.MustParseAddr("172.18.0.2"),
		Nets: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/16")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Setup(); err != nil {
		t.Fatal(err)
	}
	table := backend.NewTable(k, nil)
	want := map[string]backend.Entries{}
	probe := &fakeProber{answers: map[netip.Addr]bool{}, tcp: map[netip.AddrPort]bool{}}
	for _, p := range peers {
		n := lease.Net{Subnet: netip.MustParsePrefix(p.cidr), PublicIP: netip.MustParseAddr(p.ip),
			BackendData: json.RawMessage(backendData(typ, p.name))}
		es, err := be.Entries(&lease.Lease{Node: p.name, BackendType: typ, Nets: []lease.Net{n}}, n)
		if err != nil {
			t.Fatal(err)
		}
		want[p.name] = es
		vtep := n.Subnet.Addr()
		probe.answers[vtep] = true
		probe.answers[n.PublicIP] = true
		probe.tcp[netip.AddrPortFrom(vtep, 10268)] = true
		probe.tcp[netip.AddrPortFrom(n.PublicIP, 10268)] = true
	}
	if _, err := table.SyncAll(want, be.Scope()); err != nil {
		t.Fatal(err)
	}
	// cni0 with two pods.
	cni0 := k.AddLink("cni0", be.MTU())
	for _, name := range []string{"veth1", "veth2"} {
		k.Enslave(k.AddLink(name, be.MTU()).Index, cni0.Index)
	}

	masq := true
	env := &subnetenv.Env{MTU: be.MTU(), IPMasq: masq, Nets: []subnetenv.Net{{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24")}}}
	if _, err := subnetenv.Write(filepath.Join(dir, "run/flannel/subnet.env"), env); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "etc/cni/net.d/10-flannel.conflist"), conflistJSON, 0o644)
	write(t, filepath.Join(dir, "etc/kube-flannel/cni-conf.json"), conflistJSON, 0o644)
	for _, p := range []string{"flannel", "bridge", "host-local", "portmap", "loopback"} {
		write(t, filepath.Join(dir, "opt/cni/bin", p), "#!/bin/true\n", 0o755)
	}
	write(t, filepath.Join(dir, "proc/sys/net/ipv4/ip_forward"), "1\n", 0o644)
	write(t, filepath.Join(dir, "proc/sys/net/bridge/bridge-nf-call-iptables"), "1\n", 0o644)

	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	fw := &fakeRules{policy: "DROP"}
	f := &fixture{t: t, dir: dir, k: k, client: client, fw: fw, probe: probe, table: table, want: want}
	if v, ok := be.(*vxlan.Backend); ok {
		f.dev = v.Device()
	}
	f.o = Options{
		NodeName: "node-1", Version: "v0.0.0-test",
		Config: cfg, ConfigPath: "/etc/kube-flannel/net-conf.json", Backends: builtin.Registry(), Annotations: ann,
		API:    clientsetapi.API{C: client},
		Kernel: k, Router: k,
		ChooseIface: func([]family.Family) (*iface.Choice, error) { return choice, nil },
		IPMasq:      &masq,
		SubnetFile:  filepath.Join(dir, "run/flannel/subnet.env"),
		CNIConfDir:  filepath.Join(dir, "etc/cni/net.d"),
		CNIConf:     filepath.Join(dir, "etc/cni/net.d/10-flannel.conflist"),
		CNIConfSrc:  filepath.Join(dir, "etc/kube-flannel/cni-conf.json"),
		CNIBinDir:   filepath.Join(dir, "opt/cni/bin"),
		ProcSys:     filepath.Join(dir, "proc/sys"),
		Firewall:    func(family.Family) (RuleChecker, error) { return fw, nil },
		Prober:      probe, ProbePort: 10268,
		Daemon:      &Daemon{PID: 42},
		DaemonReady: func(context.Context) error { return nil },
	}
	return f
}

func (f *fixture) run() *Report {
	f.t.Helper()
	before := f.k.Mutations()
	r := Run(context.Background(), f.o)
	if f.k.Mutations() != before {
		f.t.Errorf("doctor changed the kernel (%d mutations)", f.k.Mutations()-before)
	}
	return r
}

// fakeRules is a RuleChecker whose drift and FORWARD policy a test sets.
type fakeRules struct {
	diffs  []string
	err    error
	policy string
	got    firewall.Policy
}

func (r *fakeRules) Check(p firewall.Policy) ([]string, error) { r.got = p; return r.diffs, r.err }
func (r *fakeRules) ForwardPolicy() (string, error)            { return r.policy, nil }

// fakeProber answers pings from the addresses in answers and TCP on the
// address-ports in tcp.
type fakeProber struct {
	answers map[netip.Addr]bool
	tcp     map[netip.AddrPort]bool
	err     error
	pinged  int
}

func (p *fakeProber) Ping(_ context.Context, targets []netip.Addr) (map[netip.Addr]bool, error) {
	p.pinged += len(targets)
	out := map[netip.Addr]bool{}
	for _, t := range targets {
		if p.answers[t] {
			out[t] = true
		}
	}
	return out, p.err
}

func (p *fakeProber) Connect(_ context.Context, a netip.AddrPort) bool { return p.tcp[a] }

func TestHealthyNodePasses(t *testing.T) {
	f := newFixture(t)
	r := f.run()
	var text bytes.Buffer
	if err := r.WriteText(&text, false); err != nil {
		t.Fatal(err)
	}
	for _, fd := range r.Findings {
		if fd.Status != OK {
			t.Errorf("healthy node: %s is %s: %s %v", fd.Check, fd.Status, fd.Summary, fd.Details)
		}
	}
	want := []string{"flanneld", "net-conf", "node", "interface", "device", "subnet.env", "cni-config", "cni-plugins", "mtu", "peer-entries", "reachability", "checksum-offload", "sysctl", "firewall"}
	var got []string
	for _, fd := range r.Findings {
		got = append(got, fd.Check)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("checks %v, want %v", got, want)
	}
	if r.Failed() {
		t.Errorf("healthy node failed:\n%s", text.String())
	}
	if s := text.String(); strings.Contains(s, "\x1b[") || !strings.Contains(s, "3 peers, 9 entries, all as flanneld programs them") {
		t.Errorf("report:\n%s", s)
	}
	if f.fw.got.Network.String() != "10.244.0.0/16" || f.fw.got.Subnet.String() != "10.244.1.0/24" || !f.fw.got.Masquerade {
		t.Errorf("firewall checked against %+v", f.fw.got)
	}
	t.Logf("\n%s", text.String())
}

// TestEveryFaultIsNamed breaks one thing at a time and checks that doctor
// names it, in the right check, with the right verdict.
func TestEveryFaultIsNamed(t *testing.T) {
	for _, c := range []struct {
		name   string
		breaks func(f *fixture)
		check  string
		status Status
		says   string
	}{
		{"flanneld not ready", func(f *fixture) {
			f.o.DaemonReady = func(context.Context) error { return errors.New("GET /readyz: 503") }
		}, "flanneld", Fail, "pid 42 runs but is not ready: GET /readyz: 503"},
		{"flanneld not running", func(f *fixture) { f.o.Daemon, f.o.DaemonReady = nil, nil }, "flanneld", Warn, "no flanneld runs on this node"},
		{"net-conf.json broken", func(f *fixture) {
			f.o.Config, f.o.ConfigErr = nil, errors.New(`"Network" is missing`)
		}, "net-conf", Fail, `"Network" is missing`},
		{"no API server", func(f *fixture) {
			f.o.API, f.o.APIErr = nil, errors.New("no in-cluster config")
		}, "node", Skip, "no in-cluster config"},
		{"podCIDR outside the network", func(f *fixture) {
			f.setNode(t, func(n *v1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.99.1.0/24", []string{"10.99.1.0/24"} })
		}, "node", Fail, "podCIDR 10.99.1.0/24"},
		{"no podCIDR", func(f *fixture) {
			f.setNode(t, func(n *v1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil })
		}, "node", Fail, "no IPv4 podCIDR"},
		{"no annotations", func(f *fixture) {
			f.setNode(t, func(n *v1.Node) { n.Annotations = nil })
		}, "node", Fail, "no flannel annotations"},
		{"device MAC is not the published VTEP MAC", func(f *fixture) {
			// Peers hold the published MAC: flanneld keeps it and puts
			// the device right, so the device is at fault.
			f.setNode(t, func(n *v1.Node) { n.Annotations[pfx+"backend-data"] = `{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}` })
		}, "device", Fail, "want 0a:00:00:00:00:99 (the one this node publishes)"},
		{"a peer's annotations broken", func(f *fixture) {
			f.setNodeNamed(t, "node-4", func(n *v1.Node) { n.Annotations[pfx+"public-ip"] = "not-an-ip" })
		}, "node", Warn, "1 peers have broken annotations"},
		{"interface choice fails", func(f *fixture) {
			f.o.ChooseIface = func([]family.Family) (*iface.Choice, error) { return nil, errors.New("no IPv4 default route") }
		}, "interface", Fail, "flanneld cannot choose an interface: no IPv4 default route"},
		{"public IP not on the interface", func(f *fixture) {
			f.setNode(t, func(n *v1.Node) { n.Annotations[pfx+"public-ip"] = "203.0.113.7" })
		}, "interface", Warn, "this node publishes 203.0.113.7"},
		{"peers routed through another interface", func(f *fixture) {
			eth1 := f.k.AddLink("eth1", 1500)
			f.k.SetDefaultLink(eth1.Index)
		}, "interface", Warn, "goes through eth1, not eth0"},
		{"flannel.1 missing", func(f *fixture) { f.k.RemoveLink("flannel.1") }, "device", Fail, "flannel.1 does not exist"},
		{"flannel.1 down", func(f *fixture) { f.k.SetDown("flannel.1") }, "device", Fail, "flannel.1 is down"},
		{"flannel.1 wrong MTU", func(f *fixture) {
			if err := f.k.SetLinkMTU(f.dev.Index, 1500); err != nil {
				t.Fatal(err)
			}
		}, "device", Fail, "flannel.1 has MTU 1500, want 1450"},
		{"subnet.env missing", func(f *fixture) { os.Remove(f.o.SubnetFile) }, "subnet.env", Fail, "does not exist"},
		{"subnet.env unparsable", func(f *fixture) { write(t, f.o.SubnetFile, "FLANNEL_NETWORK=banana\n", 0o644) }, "subnet.env", Fail, "FLANNEL_NETWORK"},
		{"subnet.env of another subnet", func(f *fixture) {
			f.writeEnv(t, func(e *subnetenv.Env) { e.Nets[0].Subnet = netip.MustParsePrefix("10.244.9.1/24") })
		}, "subnet.env", Fail, "FLANNEL_SUBNET=10.244.9.1/24, but the node's podCIDR is 10.244.1.0/24"},
		{"subnet.env of another network", func(f *fixture) {
			f.writeEnv(t, func(e *subnetenv.Env) { e.Nets[0].Network = netip.MustParsePrefix("10.0.0.0/8") })
		}, "subnet.env", Fail, "FLANNEL_NETWORK=10.0.0.0/8, but net-conf.json's network is 10.244.0.0/16"},
		{"subnet.env wrong MTU", func(f *fixture) { f.writeEnv(t, func(e *subnetenv.Env) { e.MTU = 1500 }) }, "subnet.env", Fail, "FLANNEL_MTU=1500, but this node's path carries 1450"},
		{"subnet.env masquerade differs", func(f *fixture) { f.writeEnv(t, func(e *subnetenv.Env) { e.IPMasq = false }) }, "subnet.env", Fail, "FLANNEL_IPMASQ=false, but flanneld runs with --ip-masq=true"},
		{"conflist missing", func(f *fixture) { os.Remove(f.o.CNIConf) }, "cni-config", Fail, "10-flannel.conflist is not there"},
		{"another conflist first", func(f *fixture) {
			write(t, filepath.Join(f.o.CNIConfDir, "05-cilium.conflist"), `{"name":"cilium","plugins":[{"type":"cilium-cni"}]}`, 0o644)
		}, "cni-config", Fail, "05-cilium.conflist sorts before 10-flannel.conflist"},
		{"our conflist broken", func(f *fixture) { write(t, f.o.CNIConf, "{", 0o644) }, "cni-config", Fail, "is not JSON"},
		{"our conflist stale", func(f *fixture) {
			write(t, f.o.CNIConfSrc, strings.Replace(conflistJSON, "hairpinMode\": true", "hairpinMode\": false", 1), 0o644)
		}, "cni-config", Warn, "differs from"},
		{"bridge plugin missing", func(f *fixture) { os.Remove(filepath.Join(f.o.CNIBinDir, "bridge")) }, "cni-plugins", Fail, `bridge missing from`},
		{"host-local not executable", func(f *fixture) {
			if err := os.Chmod(filepath.Join(f.o.CNIBinDir, "host-local"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "cni-plugins", Fail, "host-local missing"},
		{"loopback missing", func(f *fixture) { os.Remove(filepath.Join(f.o.CNIBinDir, "loopback")) }, "cni-plugins", Fail, "loopback missing"},
		{"cni0 wrong MTU", func(f *fixture) {
			br, _ := f.k.LinkByName("cni0")
			if err := f.k.SetLinkMTU(br.Index, 1400); err != nil {
				t.Fatal(err)
			}
		}, "mtu", Fail, "cni0 has MTU 1400, pods get 1450"},
		{"a pod with another MTU", func(f *fixture) {
			l, _ := f.k.LinkByName("veth2")
			if err := f.k.SetLinkMTU(l.Index, 1500); err != nil {
				t.Fatal(err)
			}
		}, "mtu", Fail, "1 of 2 pod interfaces on cni0 have another MTU than 1450: veth2 (MTU 1500)"},
		{"pods get more MTU than the overlay carries", func(f *fixture) {
			// subnet.env, cni0 and the pods agree on 1500: only the
			// overlay (1450) is short of it.
			f.writeEnv(t, func(e *subnetenv.Env) { e.MTU = 1500 })
			for _, name := range []string{"cni0", "veth1", "veth2"} {
				l, err := f.k.LinkByName(name)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.k.SetLinkMTU(l.Index, 1500); err != nil {
					t.Fatal(err)
				}
			}
		}, "mtu", Fail, "pods get MTU 1500, more than the overlay carries (1450)"},
		{"FDB entry deleted", func(f *fixture) { f.k.Remove(f.entry(t, "node-3", kernel.KindFDB)) }, "peer-entries", Fail, "1 of 9 peer entries missing or wrong"},
		{"route deleted", func(f *fixture) { f.k.Remove(f.entry(t, "node-2", kernel.KindRoute)) }, "peer-entries", Fail, "1 of 9"},
		{"neighbour with a wrong MAC", func(f *fixture) {
			n := f.entry(t, "node-2", kernel.KindNeigh).(kernel.Neigh)
			n.MAC = vxlan.StableMAC("someone-else", 1, family.IPv4)
			f.k.Put(n)
		}, "peer-entries", Fail, "wrong neighbour"},
		{"entries of a deleted node left", func(f *fixture) {
			if err := f.client.CoreV1().Nodes().Delete(context.Background(), "node-4", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}, "peer-entries", Warn, "3 entries of no peer remain"},
		{"peer does not answer, underlay does", func(f *fixture) {
			delete(f.probe.answers, netip.MustParseAddr("10.244.3.0"))
		}, "reachability", Fail, "1 of 3 peers do not answer"},
		{"peer down", func(f *fixture) {
			delete(f.probe.answers, netip.MustParseAddr("10.244.3.0"))
			delete(f.probe.answers, netip.MustParseAddr("172.18.0.4"))
		}, "reachability", Fail, "1 of 3 peers do not answer"},
		{"checksum offload", func(f *fixture) {
			for a := range f.probe.tcp {
				if strings.HasPrefix(a.Addr().String(), "10.244.") {
					delete(f.probe.tcp, a)
				}
			}
		}, "checksum-offload", Fail, "the VXLAN checksum-offload fault"},
		{"ip_forward off", func(f *fixture) { write(t, filepath.Join(f.o.ProcSys, "net/ipv4/ip_forward"), "0\n", 0o644) }, "sysctl", Fail, "net.ipv4.ip_forward is 0, want 1"},
		{"br_netfilter not loaded", func(f *fixture) { os.RemoveAll(filepath.Join(f.o.ProcSys, "net/bridge")) }, "sysctl", Fail, "modprobe br_netfilter"},
		{"bridge-nf-call-iptables off", func(f *fixture) {
			write(t, filepath.Join(f.o.ProcSys, "net/bridge/bridge-nf-call-iptables"), "0\n", 0o644)
		}, "sysctl", Fail, "net.bridge.bridge-nf-call-iptables is 0"},
		{"forward rules missing", func(f *fixture) {
			f.fw.diffs = []string{"filter chain FLANNEL-FWD is missing", "the jump from filter FORWARD to FLANNEL-FWD is missing"}
		}, "firewall", Fail, "filter chain FLANNEL-FWD is missing"},
		{"masquerade rules missing", func(f *fixture) {
			f.fw.diffs = []string{"nat chain FLANNEL-POSTRTG is missing"}
		}, "firewall", Fail, "nat chain FLANNEL-POSTRTG is missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.breaks(f)
			r := f.run()
			fs := r.Find(c.check)
			found := false
			for _, fd := range fs {
				all := fd.Summary + "\n" + strings.Join(fd.Details, "\n")
				if fd.Status == c.status && strings.Contains(all, c.says) {
					found = true
				}
			}
			var text bytes.Buffer
			_ = r.WriteText(&text, false)
			if !found {
				t.Errorf("want %s %s saying %q; got %+v\n%s", c.check, c.status, c.says, fs, text.String())
			}
			if r.Failed() != (c.status == Fail) {
				t.Errorf("Failed() = %v with a %s finding\n%s", r.Failed(), c.status, text.String())
			}
			for _, fd := range fs {
				if fd.Status == Fail && fd.Fix == "" {
					t.Errorf("%s fails without saying what to do", fd.Check)
				}
			}
		})
	}
}

func (f *fixture) setNodeNamed(t *testing.T, name string, change func(*v1.Node)) {
	t.Helper()
	ctx := context.Background()
	n, err := f.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(n)
	if _, err := f.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) setNode(t *testing.T, change func(*v1.Node)) { f.setNodeNamed(t, "node-1", change) }

func (f *fixture) writeEnv(t *testing.T, change func(*subnetenv.Env)) {
	t.Helper()
	env, err := subnetenv.Read(f.o.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	change(env)
	if _, err := subnetenv.Write(f.o.SubnetFile, env); err != nil {
		t.Fatal(err)
	}
}

// entry returns peer's programmed entry of kind k.
func (f *fixture) entry(t *testing.T, peer string, k kernel.Kind) kernel.Entry {
	t.Helper()
	for _, e := range f.want[peer] {
		if e.Key().Kind == k {
			return e
		}
	}
	t.Fatalf("peer %s has no %s entry", peer, k)
	return nil
}

func TestUnreachablePeerDetails(t *testing.T) {
	f := newFixture(t)
	delete(f.probe.answers, netip.MustParseAddr("10.244.3.0"))
	delete(f.probe.answers, netip.MustParseAddr("10.244.4.0"))
	delete(f.probe.answers, netip.MustParseAddr("172.18.0.5"))
	r := f.run()
	fd := r.Find("reachability")[0]
	all := strings.Join(fd.Details, "\n")
	for _, want := range []string{
		"node-3 (10.244.3.0, public IP 172.18.0.4): no answer over the overlay; the underlay reaches 172.18.0.4, so VXLAN (UDP 8472) between the nodes is blocked",
		"node-4 (10.244.4.0, public IP 172.18.0.5): no answer over the overlay; the underlay does not reach 172.18.0.5 either",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("details lack %q:\n%s", want, all)
		}
	}
	if !strings.Contains(fd.Fix, "allow VXLAN (UDP 8472)") {
		t.Errorf("fix %q", fd.Fix)
	}
}

func TestMissingEntriesListed(t *testing.T) {
	f := newFixture(t)
	f.k.Remove(f.entry(t, "node-3", kernel.KindFDB))
	r := f.run()
	fd := r.Find("peer-entries")[0]
	if len(fd.Details) != 1 || !strings.Contains(fd.Details[0], "missing FDB entry") || !strings.Contains(fd.Details[0], "172.18.0.4") || !strings.Contains(fd.Details[0], "(peer node-3)") {
		t.Errorf("details %q", fd.Details)
	}
}

func TestChecksumRemedyAndCost(t *testing.T) {
	f := newFixture(t)
	for a := range f.probe.tcp {
		if strings.HasPrefix(a.Addr().String(), "10.244.") {
			delete(f.probe.tcp, a)
		}
	}
	fd := f.run().Find("checksum-offload")[0]
	if !strings.Contains(fd.Fix, "ethtool -K flannel.1 tx-checksum-ip-generic off") || !strings.Contains(fd.Fix, "1.53 instead of 8.16 Gbit/s") {
		t.Errorf("fix %q", fd.Fix)
	}
	// When TCP fails on the underlay too, the overlay is not to blame.
	for a := range f.probe.tcp {
		delete(f.probe.tcp, a)
	}
	if fd := f.run().Find("checksum-offload")[0]; fd.Status != Skip {
		t.Errorf("TCP blocked everywhere: %+v", fd)
	}
}

func TestForwardDropNamedWithMissingRules(t *testing.T) {
	f := newFixture(t)
	f.fw.diffs = []string{"filter chain FLANNEL-FWD is missing"}
	fd := f.run().Find("firewall")[0]
	if !strings.Contains(strings.Join(fd.Details, "\n"), "FORWARD's policy is DROP") {
		t.Errorf("details %q", fd.Details)
	}
}

func TestIPMasqFromSubnetEnv(t *testing.T) {
	f := newFixture(t)
	f.o.IPMasq = nil // no running flanneld to ask
	f.writeEnv(t, func(e *subnetenv.Env) { e.IPMasq = false })
	r := f.run()
	if r.Find("subnet.env")[0].Status != OK {
		t.Errorf("subnet.env: %+v", r.Find("subnet.env"))
	}
	if f.fw.got.Masquerade {
		t.Error("firewall checked with masquerading on; subnet.env says off")
	}
}

func TestProbesBounded(t *testing.T) {
	f := newFixture(t)
	r := f.run()
	// Every peer once over the overlay; none on the underlay when all
	// answer.
	if f.probe.pinged != len(peers) {
		t.Errorf("pinged %d targets for %d peers", f.probe.pinged, len(peers))
	}
	f.o.Prober = nil
	if fd := f.run().Find("reachability")[0]; fd.Status != Skip {
		t.Errorf("no prober: %+v", fd)
	}
	_ = r
}

// TestHealthyHostGWNodePasses: without a tunnel, peers are pinged on
// their node addresses and there is no device or checksum fault to have.
func TestHealthyHostGWNodePasses(t *testing.T) {
	f := newFixtureFor(t, "host-gw")
	r := f.run()
	for _, fd := range r.Findings {
		if fd.Status != OK {
			t.Errorf("healthy host-gw node: %s is %s: %s %v", fd.Check, fd.Status, fd.Summary, fd.Details)
		}
	}
	if fd := r.Find("peer-entries")[0]; !strings.Contains(fd.Summary, "3 peers, 3 entries") {
		t.Errorf("peer-entries: %s", fd.Summary)
	}
	if fd := r.Find("reachability")[0]; !strings.Contains(fd.Summary, "all 3 peers answer (0 over the overlay)") {
		t.Errorf("reachability: %s", fd.Summary)
	}
	delete(f.probe.answers, netip.MustParseAddr("172.18.0.4"))
	if fd := f.run().Find("reachability")[0]; fd.Status != Fail || !strings.Contains(strings.Join(fd.Details, ""), "node-3 (172.18.0.4, public IP 172.18.0.4): no answer on its node address") {
		t.Errorf("host-gw peer down: %+v", fd)
	}
}

// TestBareOptions: doctor with nothing to examine reports what it could
// not check rather than crash.
func TestBareOptions(t *testing.T) {
	r := Run(context.Background(), Options{NodeName: "n"})
	if !r.Failed() || len(r.Findings) < 10 {
		t.Errorf("bare options: %+v", r.Findings)
	}
	cfg, _ := netconf.Parse([]byte(`{"Network": "10.244.0.0/16"}`))
	r = Run(context.Background(), Options{NodeName: "n", Config: cfg, ChooseIface: func([]family.Family) (*iface.Choice, error) { return nil, errors.New("none") }})
	if fs := r.Find("net-conf"); len(fs) != 1 || fs[0].Status != Fail {
		t.Errorf("no backends: %+v", fs)
	}
}

func TestJSONAndColour(t *testing.T) {
	f := newFixture(t)
	os.Remove(filepath.Join(f.o.CNIBinDir, "bridge"))
	r := f.run()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Node     string
		Findings []Finding
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Node != "node-1" || len(back.Findings) != len(r.Findings) {
		t.Errorf("JSON round trip: %+v", back)
	}
	if !strings.Contains(b.String(), `"status": "fail"`) {
		t.Errorf("JSON:\n%s", b.String())
	}
	b.Reset()
	_ = r.WriteText(&b, true)
	if !strings.Contains(b.String(), "\x1b[1;31mFAIL\x1b[0m") {
		t.Errorf("no colour on a terminal:\n%q", b.String())
	}
}
