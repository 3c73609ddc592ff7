package daemon

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/metrics"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/kube/clientsetapi"
)

const pfx = "flannel.alpha.coreos.com/"

func peerNode(name, cidr, ip, mac string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			pfx + "backend-type": "vxlan",
			pfx + "backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`,
			pfx + "public-ip":    ip,
		}},
		Spec: v1.NodeSpec{PodCIDR: cidr},
	}
}

type harness struct {
	t      *testing.T
	client *fake.Clientset
	k      *fakekernel.Fake
	fw     *fakeFirewall
	rec    *recorder
	d      *Daemon
	dir    string
	logs   *logtest.Hook
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, objs ...*v1.Node) *harness {
	t.Helper()
	return startIn(t, t.TempDir(), "10.244.1.0/24", objs...)
}

// startIn runs the daemon with its files in dir; with ownCIDR empty the own
// node has no podCIDR yet and the daemon is not waited for.
func startIn(t *testing.T, dir, ownCIDR string, objs ...*v1.Node) *harness {
	t.Helper()
	var cidrs []string
	if ownCIDR != "" {
		cidrs = []string{ownCIDR}
	}
	return startWith(t, dir, `{"Network": "10.244.0.0/16", "NoMasqueradeCIDRs": ["203.0.113.0/24"], "Backend": {"Type": "vxlan"}}`, cidrs, objs...)
}

// v6Addr is the node's IPv6 underlay address when net-conf.json enables
// IPv6.
var v6Addr = iface.Addr{Addr: netip.MustParseAddr("fc00:f853:ccd:e793::2"), Nets: []netip.Prefix{netip.MustParsePrefix("fc00:f853:ccd:e793::2/64")}}

// startWith runs the daemon with net-conf.json conf and the own node's
// podCIDRs ownCIDRs (none: not waited for).
func startWith(t *testing.T, dir, conf string, ownCIDRs []string, objs ...*v1.Node) *harness {
	t.Helper()
	return startTweaked(t, dir, conf, ownCIDRs, nil, objs...)
}

// startTweaked is startWith with tweak, when not nil, changing the
// options before the daemon is made.
func startTweaked(t *testing.T, dir, conf string, ownCIDRs []string, tweak func(*Options), objs ...*v1.Node) *harness {
	t.Helper()
	h := launchTweaked(t, dir, conf, ownCIDRs, tweak, objs...)
	if len(ownCIDRs) > 0 {
		h.eventually("ready", h.d.Ready)
	}
	return h
}

// launch is startWith without the wait for ready.
func launch(t *testing.T, dir, conf string, ownCIDRs []string, objs ...*v1.Node) *harness {
	t.Helper()
	return launchTweaked(t, dir, conf, ownCIDRs, nil, objs...)
}

// launchTweaked is startTweaked without the wait for ready.
func launchTweaked(t *testing.T, dir, conf string, ownCIDRs []string, tweak func(*Options), objs ...*v1.Node) *harness {
	t.Helper()
	cfg, err := netconf.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	ownCIDR := ""
	if len(ownCIDRs) > 0 {
		ownCIDR = ownCIDRs[0]
	}
	addrs := []iface.Addr{{Addr: netip.MustParseAddr("172.18.0.2"), Nets: []netip.Prefix{netip.MustParsePrefix("172.18.0.2/16")}}}
	if slices.Contains(cfg.Families(), family.IPv6) {
		addrs = append(addrs, v6Addr)
	}
	backends := builtin.Registry()
	chosen, err := backends.Parse(cfg.Backend.Type, cfg.Backend.Raw)
	if err != nil {
		t.Fatal(err)
	}
	own := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: v1.NodeSpec{PodCIDR: ownCIDR, PodCIDRs: ownCIDRs}}
	client := fake.NewClientset(own)
	for _, o := range objs {
		if _, err := client.CoreV1().Nodes().Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cni-conf.json"), []byte(`{"name":"cbr0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	k := fakekernel.New()
	fw := &fakeFirewall{k: k, allowed: map[netip.Addr]bool{}}
	rec := &recorder{}
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	log := logrus.New()
	log.SetOutput(io.Discard)
	logs := logtest.NewLocal(log)
	o := Options{
		Config: cfg, Backends: backends, Backend: chosen, API: clientsetapi.API{C: client}, NodeName: "node-1", Annotations: ann, Kernel: k,
		Iface:    &iface.Choice{Name: "eth0", Index: 2, MTU: 1500, Addrs: addrs},
		Firewall: func(f family.Family) (firewall.Firewall, error) { fw.families = append(fw.families, f); return fw, nil },
		IPMasq:   true, TunnelGuard: true, SubnetFile: filepath.Join(dir, "run/flannel/subnet.env"),
		CNIConfSrc: filepath.Join(dir, "cni-conf.json"), CNIConfDest: filepath.Join(dir, "net.d/10-flannel.conflist"),
		Resync: time.Hour, RulesResync: time.Hour, Metrics: rec, Log: log,
	}
	if tweak != nil {
		tweak(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, client: client, k: k, fw: fw, rec: rec, d: d, dir: dir, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	h.within(10*time.Second, what, cond)
}

// within polls cond until it holds or timeout passes.
func (h *harness) within(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// node0Programmed reports whether the kernel holds exactly node-0's
// entries (peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")).
func (h *harness) node0Programmed() func() bool {
	return h.stateIs(
		"route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
		"neigh 10.244.0.0 lladdr 0a:00:00:00:00:10 dev flannel.1",
		"fdb 0a:00:00:00:00:10 dst 172.18.0.3 dev flannel.1",
	)
}

func (h *harness) stateIs(want ...string) func() bool {
	slices.Sort(want)
	return func() bool { return slices.Equal(h.k.Dump(), want) }
}

func TestStartPublishesAndProgramsPeers(t *testing.T) {
	h := start(t,
		peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"),
		// A node with no annotations at all (upstream flannel panics here).
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: v1.NodeSpec{PodCIDR: "10.244.5.0/24"}},
	)
	h.eventually("peer programmed", h.node0Programmed())
	ctx := context.Background()
	n, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantMAC := vxlan.StableMAC("node-1", 1, family.IPv4).String()
	for k, v := range map[string]string{
		pfx + "backend-type":        "vxlan",
		pfx + "backend-data":        `{"VNI":1,"VtepMAC":"` + wantMAC + `"}`,
		pfx + "public-ip":           "172.18.0.2",
		pfx + "kube-subnet-manager": "true",
	} {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n.Annotations[k], v)
		}
	}
	var netCond *v1.NodeCondition
	for i, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			netCond = &n.Status.Conditions[i]
		}
	}
	if netCond == nil || netCond.Status != v1.ConditionFalse {
		t.Errorf("NetworkUnavailable condition: %+v", netCond)
	}
	env, err := os.ReadFile(filepath.Join(h.dir, "run/flannel/subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"; string(env) != want {
		t.Errorf("subnet.env:\n%s\nwant:\n%s", env, want)
	}
	if conf, err := os.ReadFile(filepath.Join(h.dir, "net.d/10-flannel.conflist")); err != nil || string(conf) != `{"name":"cbr0"}` {
		t.Errorf("CNI conflist not installed: %q %v", conf, err)
	}
}

func TestPeersComeAndGo(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	ctx := context.Background()
	nodes := h.client.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, peerNode("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(ctx, "node-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-2 in, node-0 out", h.stateIs(
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:20 dev flannel.1",
		"fdb 0a:00:00:00:00:20 dst 172.18.0.4 dev flannel.1",
	))
	// The peer counts follow node events, not only full reconciles
	// (which run hourly here).
	if _, err := nodes.Create(ctx, peerNode("node-3", "10.244.3.0/24", "172.18.0.5", "0a:00:00:00:00:30"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("two peers counted", func() bool {
		return h.rec.count("peers/IPv4") == 2 && h.rec.count("known/IPv4") == 2
	})
	if err := nodes.Delete(ctx, "node-3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("one peer counted", func() bool {
		return h.rec.count("peers/IPv4") == 1 && h.rec.count("known/IPv4") == 1
	})
	// node-2 restarts with a new VTEP MAC: the old FDB entry goes.
	n2 := peerNode("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:21")
	if _, err := nodes.Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("new MAC", h.stateIs(
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:21 dev flannel.1",
		"fdb 0a:00:00:00:00:21 dst 172.18.0.4 dev flannel.1",
	))
}

func TestBrokenAnnotationsKeepEntriesAndRaiseEvent(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	programmed := h.node0Programmed()
	h.eventually("peer programmed", programmed)
	ctx := context.Background()
	broken := peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	broken.Annotations[pfx+"backend-data"] = "garbage"
	if _, err := h.client.CoreV1().Nodes().Update(ctx, broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var events *v1.EventList
	h.eventually("warning event", func() bool {
		var err error
		events, err = h.client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		return err == nil && len(events.Items) > 0
	})
	ev := events.Items[0]
	if ev.Type != v1.EventTypeWarning || ev.InvolvedObject.Name != "node-0" || !strings.Contains(ev.Message, "backend-data") {
		t.Errorf("event %+v", ev)
	}
	// A full reconcile must keep what already works.
	h.d.queue.Add(fullKey)
	h.eventually("full reconcile ran", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return h.d.fullRuns >= 2
	})
	if !programmed() {
		t.Errorf("broken annotations tore down a working peer: %q", h.k.Dump())
	}
	if !h.d.Ready() {
		t.Error("daemon not ready")
	}
}

func TestOwnAnnotationsRestored(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	n, _ := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	n.Annotations = nil
	if _, err := h.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("annotations re-published", func() bool {
		n, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		return err == nil && n.Annotations[pfx+"public-ip"] == "172.18.0.2"
	})
}

func TestDeletedDeviceComesBack(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	all := h.node0Programmed()
	h.eventually("programmed", all)
	h.k.RemoveLink("flannel.1")
	h.d.kernelLost(kernel.Loss{Device: "flannel.1"})
	h.eventually("device and peers back", all)
}

// After a reboot /run is empty but the conflist is still installed: it must
// be withdrawn until the node is networked, then come back.
func TestStaleCNIConfWithdrawnUntilReady(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "net.d/10-flannel.conflist")
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dest, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startIn(t, dir, "")
	h.eventually("stale conflist removed", func() bool {
		_, err := os.Stat(dest)
		return os.IsNotExist(err)
	})
	ctx := context.Background()
	n, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR = "10.244.1.0/24"
	if _, err := h.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("ready", h.d.Ready)
	if conf, err := os.ReadFile(dest); err != nil || string(conf) != `{"name":"cbr0"}` {
		t.Fatalf("conflist once networked: %q %v", conf, err)
	}
}

func TestStopWhileWaitingForPodCIDRIsClean(t *testing.T) {
	// startIn's cleanup fails the test if Run returns an error on cancel.
	h := startIn(t, t.TempDir(), "")
	h.eventually("waiting", func() bool { return h.d.Alive() })
}

// TestRulesKeptPerFamily: the daemon asks the firewall maker for each
// enabled family's firewall and keeps that family's policy in it.
func TestRulesKeptPerFamily(t *testing.T) {
	h := start(t)
	h.fw.mu.Lock()
	defer h.fw.mu.Unlock()
	if len(h.fw.families) != 1 || h.fw.families[0] != family.IPv4 {
		t.Errorf("firewalls made for %v, want [IPv4]", h.fw.families)
	}
	p := h.fw.last
	if p.Network.String() != "10.244.0.0/16" || p.Subnet.String() != "10.244.1.0/24" || !p.Masquerade ||
		len(p.NoMasquerade) != 1 || p.NoMasquerade[0].String() != "203.0.113.0/24" {
		t.Errorf("policy %+v", p)
	}
}

// TestLostRouteRepaired: a route deleted behind the daemon's back is traced
// to its peer and put back alone, and the metrics sink hears of the repair
// and of the reconciles.
func TestLostRouteRepaired(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	all := h.node0Programmed()
	h.eventually("programmed", all)
	dev, err := h.k.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	route := kernel.Route{Dst: netip.MustParsePrefix("10.244.0.0/24"), Gw: netip.MustParseAddr("10.244.0.0"), LinkIndex: dev.Index, Onlink: true}
	h.k.Remove(route)
	h.k.ResetCalls()
	h.d.kernelLost(kernel.Loss{Entry: route})
	h.eventually("route back", all)
	h.eventually("one repair recorded", func() bool { return h.rec.count("route/repaired") == 1 })
	if n := h.k.Mutations(); n != 1 {
		t.Errorf("repairing one route cost %d kernel changes, want 1", n)
	}
	if h.rec.count("reconcile/full") < 1 || h.rec.count("reconcile/node") < 1 || h.rec.count("peers/IPv4") != 1 {
		t.Errorf("recorded %v", h.rec.snapshot())
	}
}

// fakeFirewall records what the daemon asks of it. Its guard notes, for
// each address it is told to allow or refuse, whether the kernel held an
// FDB entry towards that address at that moment.
type fakeFirewall struct {
	mu       sync.Mutex
	k        *fakekernel.Fake
	families []family.Family
	last     firewall.Policy
	ensured  int
	allowed  map[netip.Addr]bool
	synced   int
	events   []string
}

func (f *fakeFirewall) note(verb string, addrs []netip.Addr) {
	dump := strings.Join(f.k.Dump(), "\n")
	for _, a := range addrs {
		f.events = append(f.events, fmt.Sprintf("%s %s fdb=%v", verb, a, strings.Contains(dump, " dst "+a.String()+" ")))
	}
}

func (f *fakeFirewall) Allow(addrs ...netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.note("allow", addrs)
	for _, a := range addrs {
		f.allowed[a] = true
	}
	return nil
}

func (f *fakeFirewall) Disallow(addrs ...netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.note("disallow", addrs)
	for _, a := range addrs {
		delete(f.allowed, a)
	}
	return nil
}

func (f *fakeFirewall) SyncAllowed(addrs []netip.Addr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.synced++
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	changed := !maps.Equal(want, f.allowed)
	f.allowed = want
	return changed, nil
}

func (f *fakeFirewall) Dropped() (uint64, error) { return 7, nil }

// guardState returns the allowed addresses, sorted, and the events so far.
func (f *fakeFirewall) guardState() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var as []string
	for a := range f.allowed {
		as = append(as, a.String())
	}
	slices.Sort(as)
	return strings.Join(as, " "), slices.Clone(f.events)
}

func (f *fakeFirewall) Ensure(p firewall.Policy) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = p
	f.ensured++
	return f.ensured == 1, nil
}

func (f *fakeFirewall) Check(firewall.Policy) ([]string, error) { return nil, nil }

func (f *fakeFirewall) Remove() error { return nil }

// recorder counts what the daemon reports.
type recorder struct {
	metrics.Nop
	mu sync.Mutex
	n  map[string]int
}

func (r *recorder) add(key string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[key] += n
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[key]
}

func (r *recorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

func (r *recorder) Reconciled(kind metrics.Reconcile, _ time.Duration, _ error) {
	r.add("reconcile/"+string(kind), 1)
}

func (r *recorder) GuardDropped(fam family.Family, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n["guard-dropped/"+fam.String()] = int(n)
}

func (r *recorder) EntriesChanged(kind string, ch metrics.Change, n int) {
	r.add(kind+"/"+string(ch), n)
}

func (r *recorder) Peers(_ string, fam family.Family, known, programmed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n["peers/"+fam.String()] = programmed
	r.n["known/"+fam.String()] = known
}

// TestSubnetEnvNotWritable: when subnet.env cannot be written (a read-only
// or full /run), the data plane is programmed all the same, a Warning Event
// says why, and the node is not made ready (no conflist) until the file can
// be written, which a later full reconcile does by itself.
func TestSubnetEnvNotWritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "run")
	if err := os.WriteFile(blocker, []byte("a file where the directory should be"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startIn(t, dir, "", peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	ctx := context.Background()
	n, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR = "10.244.1.0/24"
	if _, err := h.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("peer programmed without subnet.env", h.node0Programmed())
	h.eventually("a Warning Event", func() bool {
		events, err := h.client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, ev := range events.Items {
			if ev.Reason == "SubnetEnvNotWritten" && ev.InvolvedObject.Name == "node-1" && strings.Contains(ev.Message, "subnet.env") {
				return true
			}
		}
		return false
	})
	if h.d.Ready() {
		t.Error("ready without subnet.env")
	}
	if _, err := os.Stat(filepath.Join(dir, "net.d/10-flannel.conflist")); !os.IsNotExist(err) {
		t.Errorf("conflist installed without subnet.env: %v", err)
	}
	// /run writable again: the retries get there without help, the next
	// one at most readyRetryMax after the last.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	h.within(readyRetryMax+10*time.Second, "ready once subnet.env is written", h.d.Ready)
	if _, err := os.Stat(filepath.Join(dir, "run/flannel/subnet.env")); err != nil {
		t.Errorf("subnet.env: %v", err)
	}
}

// TestSubnetEnvNotWritableAtStart: a flanneld that starts with its node's
// podCIDR already there (a restart) and subnet.env unwritable programs its
// peers, says why it is not ready (/readyz), and tries again on its own
// backoff, not only at the next periodic resync (an hour here): once the
// file can be written the node is ready within readyRetryMax.
func TestSubnetEnvNotWritableAtStart(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "run")
	if err := os.WriteFile(blocker, []byte("a file where the directory should be"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := launch(t, dir, `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`, []string{"10.244.1.0/24"}, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("peer programmed without subnet.env", h.node0Programmed())
	h.eventually("the first full reconcile, not ready", func() bool {
		for _, e := range h.logs.AllEntries() {
			if strings.HasPrefix(e.Message, "not ready: subnet.env") {
				return true
			}
		}
		return false
	})
	if r := h.d.NotReady(); !strings.Contains(r, "subnet.env is not written") {
		t.Errorf("NotReady = %q, want it to say subnet.env is not written", r)
	}
	if h.d.Ready() {
		t.Error("ready without subnet.env")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	h.within(readyRetryMax+10*time.Second, "ready once subnet.env is written", h.d.Ready)
	if r := h.d.NotReady(); r != "" {
		t.Errorf("ready, and NotReady says %q", r)
	}
}

// TestSubnetEnvUnwritableLater: a ready node whose subnet.env goes
// missing and cannot be written again (its directory replaced, as by a
// full or read-only /run) keeps its peers and its conflist, but is not
// ready, saying why, until a retry on the not-ready backoff writes it.
func TestSubnetEnvUnwritableLater(t *testing.T) {
	dir := t.TempDir()
	h := startIn(t, dir, "10.244.1.0/24", peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("node-0 programmed", h.node0Programmed())
	flannelDir := filepath.Join(dir, "run/flannel")
	if err := os.RemoveAll(flannelDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flannelDir, []byte("a file where the directory should be"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.d.queue.Add(fullKey)
	h.eventually("not ready, saying why", func() bool { return strings.Contains(h.d.NotReady(), "subnet.env is not written") })
	if h.d.Ready() {
		t.Error("ready with subnet.env missing and unwritable")
	}
	if !h.node0Programmed()() {
		t.Error("node-0's entries changed while subnet.env could not be written")
	}
	if _, err := os.Stat(filepath.Join(dir, "net.d/10-flannel.conflist")); err != nil {
		t.Errorf("conflist withdrawn while the node is networked: %v", err)
	}
	if err := os.Remove(flannelDir); err != nil {
		t.Fatal(err)
	}
	h.within(readyRetryMax+10*time.Second, "ready once subnet.env is written again", h.d.Ready)
	if _, err := os.Stat(filepath.Join(flannelDir, "subnet.env")); err != nil {
		t.Errorf("subnet.env: %v", err)
	}
}

// TestDuplicatePodCIDR: a second Node with a podCIDR another Node has gets
// a Warning Event naming both and no entries; the first keeps its entries;
// full reconciles after that change nothing and say nothing more.
func TestDuplicatePodCIDR(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("node-0 programmed", h.node0Programmed())
	ctx := context.Background()
	if _, err := h.client.CoreV1().Nodes().Create(ctx, peerNode("node-9", "10.244.0.0/24", "172.18.0.9", "0a:00:00:00:00:90"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	conflicts := func() int {
		events, err := h.client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return -1
		}
		n := 0
		for _, ev := range events.Items {
			if ev.Reason == "PeerConflict" && ev.InvolvedObject.Name == "node-9" && strings.Contains(ev.Message, "node-0") {
				n++
			}
		}
		return n
	}
	h.eventually("a PeerConflict event", func() bool { return conflicts() == 1 })
	for i := 0; i < 3; i++ {
		h.d.mu.Lock()
		runs := h.d.fullRuns
		h.d.mu.Unlock()
		h.d.queue.Add(fullKey)
		h.eventually("a full reconcile", func() bool {
			h.d.mu.Lock()
			defer h.d.mu.Unlock()
			return h.d.fullRuns > runs
		})
		if !h.node0Programmed()() {
			t.Fatalf("full reconcile %d changed node-0's entries: %q", i, h.k.Dump())
		}
	}
	if n := conflicts(); n != 1 {
		t.Errorf("%d PeerConflict events after three full reconciles, want still 1", n)
	}
}

// TestGuardFollowsPeers: the tunnel guard accepts a peer's public address
// before its FDB entry exists and refuses it only after the entry is gone,
// one address at a time, and the full reconcile makes the set exact.
func TestGuardFollowsPeers(t *testing.T) {
	h := start(t, peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10"))
	h.eventually("peer programmed", h.node0Programmed())
	if p := h.fw.last; p.GuardPort != vxlan.DefaultPort {
		t.Fatalf("policy guard port %d, want vxlan's %d", p.GuardPort, vxlan.DefaultPort)
	}
	allowed, events := h.fw.guardState()
	if allowed != "172.18.0.3" || !slices.Equal(events, []string{"allow 172.18.0.3 fdb=false"}) || h.fw.synced < 1 {
		t.Fatalf("after start: allowed %q, events %q, synced %d", allowed, events, h.fw.synced)
	}
	ctx := context.Background()
	nodes := h.client.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, peerNode("node-2", "10.244.2.0/24", "172.18.0.4", "0a:00:00:00:00:20"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-2 allowed", func() bool { a, _ := h.fw.guardState(); return a == "172.18.0.3 172.18.0.4" })
	// node-0 moves to another address: the new one first, the old one
	// after its FDB entry went.
	moved := peerNode("node-0", "10.244.0.0/24", "172.18.0.9", "0a:00:00:00:00:10")
	if _, err := nodes.Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-0 moved", func() bool { a, _ := h.fw.guardState(); return a == "172.18.0.4 172.18.0.9" })
	if err := nodes.Delete(ctx, "node-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-2 refused", func() bool { a, _ := h.fw.guardState(); return a == "172.18.0.9" })
	_, events = h.fw.guardState()
	want := []string{
		"allow 172.18.0.3 fdb=false",
		"allow 172.18.0.4 fdb=false",
		"allow 172.18.0.9 fdb=false",
		"disallow 172.18.0.3 fdb=false",
		"disallow 172.18.0.4 fdb=false",
	}
	if !slices.Equal(events, want) {
		t.Errorf("guard events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	// Drift in the set is the full reconcile's to repair.
	_ = h.fw.Allow(netip.MustParseAddr("192.0.2.66"))
	synced := h.fw.synced
	h.d.queue.Add(fullKey)
	h.eventually("set repaired", func() bool { a, _ := h.fw.guardState(); return a == "172.18.0.9" && h.fw.synced > synced })
	if n := h.rec.count("guard-dropped/IPv4"); n != 7 {
		t.Errorf("drops reported: %d, want the firewall's 7", n)
	}
}

// TestPeerWithOneFamily: on a dual-stack node, a peer that publishes only
// IPv4 (an IPv4-only flannel on a dual-stack cluster) is programmed for
// IPv4 alone, and the daemon says so once, not on every reconcile.
func TestPeerWithOneFamily(t *testing.T) {
	v4only := peerNode("node-0", "10.244.0.0/24", "172.18.0.3", "0a:00:00:00:00:10")
	v4only.Spec.PodCIDRs = []string{"10.244.0.0/24", "fd00:10:244::/64"}
	h := startWith(t, t.TempDir(), `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}`,
		[]string{"10.244.1.0/24", "fd00:10:244:1::/64"}, v4only)
	defer func() {
		if t.Failed() {
			t.Logf("kernel: %q", h.k.Dump())
			for _, e := range h.logs.AllEntries() {
				t.Logf("log: %s %v", e.Message, e.Data)
			}
		}
	}()
	// Exactly node-0's IPv4 entries, nothing on flannel-v6.1.
	h.eventually("node-0 programmed for IPv4 only", h.node0Programmed())
	notes := func() int {
		n := 0
		for _, e := range h.logs.AllEntries() {
			if strings.Contains(e.Message, "node has no [IPv6] lease: programmed for its other families only") && e.Data["peer"] == "node-0" {
				n++
			}
		}
		return n
	}
	h.eventually("the one-family note", func() bool { return notes() == 1 })
	// Two more full reconciles: still one note.
	for i := 0; i < 2; i++ {
		before := h.rec.count("reconcile/" + string(metrics.ReconcileFull))
		h.d.queue.Add(fullKey)
		h.eventually("a full reconcile", func() bool { return h.rec.count("reconcile/"+string(metrics.ReconcileFull)) > before })
	}
	if n := notes(); n != 1 {
		t.Errorf("the one-family note was logged %d times, want once", n)
	}
}
