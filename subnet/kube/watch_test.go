package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
)

// changes records what the watch tells its handler.
type changes struct {
	mu    sync.Mutex
	count map[string]int
}

func (c *changes) InitialPage([]PeerNode) {}

func (c *changes) Changed(name string) {
	c.mu.Lock()
	c.count[name]++
	c.mu.Unlock()
}

func (c *changes) of(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[name]
}

// gatedAPI is the real API whose node watches a test can cut: hold keeps
// new watches waiting and ends the running ones (a watch gap), gone makes
// the next watch fail with 410 Gone (the informer must list again).
type gatedAPI struct {
	API
	mu      sync.Mutex
	open    chan struct{} // closed while watches may start
	gone    int
	running []*cuttable
}

func (g *gatedAPI) ListPeerNodes(ctx context.Context, opts metav1.ListOptions, ann Annotations) (*PeerNodeList, error) {
	return g.API.(peerLister).ListPeerNodes(ctx, opts, ann)
}

func (g *gatedAPI) WatchPeerMetadata(ctx context.Context, opts metav1.ListOptions, ann Annotations) (watch.Decoder, bool, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone > 0 {
		g.gone--
		return nil, false, apierrors.NewResourceExpired("test: too old resource version")
	}
	d, initial, err := g.API.(peerWatcher).WatchPeerMetadata(ctx, opts, ann)
	if err != nil {
		return nil, false, err
	}
	c := &cuttable{in: d, cut: make(chan struct{})}
	g.running = append(g.running, c)
	return c, initial, nil
}

// cuttable is a watch stream that hold ends cleanly, as an API server ends
// a watch whose time is up: the stream closes, no error.
type cuttable struct {
	in      watch.Decoder
	cut     chan struct{}
	cutOnce sync.Once
}

func (c *cuttable) Decode() (watch.EventType, runtime.Object, error) {
	typ, obj, err := c.in.Decode()
	select {
	case <-c.cut:
		return "", nil, io.EOF
	default:
	}
	return typ, obj, err
}

func (c *cuttable) Close() { c.in.Close() }

// end ends the stream: Decode, blocked reading, returns once the body is
// closed.
func (c *cuttable) end() {
	c.cutOnce.Do(func() { close(c.cut) })
	c.in.Close()
}

// hold ends the running watches and keeps new ones waiting until release.
func (g *gatedAPI) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
	for _, c := range g.running {
		c.end()
	}
	g.running = nil
}

func (g *gatedAPI) release(gone int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone = gone
	close(g.open)
}

// watchEnv is a real API server with a manager watching its nodes.
type watchEnv struct {
	cs  kubernetes.Interface
	api *gatedAPI
	m   *Manager
	ch  *changes
	ann Annotations
}

func startWatchEnv(t *testing.T) *watchEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace for the API server")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("no Kubernetes binaries: %v", err)
	}
	sb, err := controlplane.NewSandbox(fmt.Sprintf("twill-watch-%d", os.Getpid()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	defer scancel()
	cp, err := controlplane.Start(sctx, controlplane.Options{Dir: t.TempDir(), NetNS: sb.NetNS, AdvertiseIP: sb.IP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	cfg, err := cp.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	e := &watchEnv{cs: kubernetes.NewForConfigOrDie(cfg), ch: &changes{count: map[string]int{}}}
	cfg.ContentType = "application/vnd.kubernetes.protobuf" // as flanneld asks
	real, err := NewRESTAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.api = &gatedAPI{API: real, open: make(chan struct{})}
	close(e.api.open)
	if e.ann, err = NewAnnotations(DefaultAnnotationPrefix); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	e.m = NewManager(e.api, "me", e.ann, log, nil)
	e.create(t, "before-watch", "10.244.1.0/24", "172.18.0.11")
	if err := e.m.Watch(ctx, e.ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.m.Shutdown)
	return e
}

// create makes a node with flannel's annotations for publicIP (none if
// empty) and podCIDR (none if empty).
func (e *watchEnv) create(t *testing.T, name, podCIDR, publicIP string) {
	t.Helper()
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDR: podCIDR}}
	if podCIDR != "" {
		n.Spec.PodCIDRs = []string{podCIDR}
	}
	if publicIP != "" {
		n.Annotations = e.annotations(publicIP)
	}
	if _, err := e.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
}

func (e *watchEnv) annotations(publicIP string) map[string]string {
	f := e.ann.For(family.IPv4)
	return map[string]string{
		e.ann.BackendType: "vxlan", e.ann.KubeSubnetManager: "true",
		f.BackendData: `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`, f.PublicIP: publicIP,
	}
}

// patch applies a merge patch to the node (to its status with status).
func (e *watchEnv) patch(t *testing.T, name string, patch any, status bool) {
	t.Helper()
	data, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	var sub []string
	if status {
		sub = []string{"status"}
	}
	if _, err := e.cs.CoreV1().Nodes().Patch(context.Background(), name, types.MergePatchType, data, metav1.PatchOptions{}, sub...); err != nil {
		t.Fatalf("patching node %s: %v", name, err)
	}
}

// heartbeat rewrites the node's status as a kubelet does.
func (e *watchEnv) heartbeat(t *testing.T, name string, i int) {
	t.Helper()
	now := metav1.NewTime(time.Now().Add(time.Duration(i) * time.Second))
	e.patch(t, name, map[string]any{"status": map[string]any{
		"conditions": []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
		"images":     []v1.ContainerImage{{Names: []string{fmt.Sprintf("registry.example/app:v%d", i)}, SizeBytes: 1 << 20}},
	}}, true)
}

// waitFor polls until ok holds, or fails the test with what after the
// deadline.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publicIP is the node's IPv4 public address from the cache ("" without a
// lease).
func (e *watchEnv) publicIP(t *testing.T, name string) string {
	t.Helper()
	l, err := e.m.Lease(name)
	if err != nil {
		t.Fatalf("lease of %s: %v", name, err)
	}
	if l == nil {
		return ""
	}
	n, ok := l.Net(family.IPv4)
	if !ok {
		return ""
	}
	return n.PublicIP.String()
}

// barrier changes a node's annotations and waits for its event: the watch
// delivers events in order, so everything written before has arrived.
func (e *watchEnv) barrier(t *testing.T, i int) {
	t.Helper()
	name := fmt.Sprintf("barrier-%d", i)
	e.create(t, name, "10.244.200.0/24", "")
	waitFor(t, "the barrier node's event", func() bool { return e.ch.of(name) > 0 })
}

// TestNodeWatch runs the metadata watch against a real API server.
func TestNodeWatch(t *testing.T) {
	e := startWatchEnv(t)
	t.Cleanup(func() {
		// Debian 12's etcd gets a plain watch; a newer one (TWILL_ETCD) a
		// watch-list.
		t.Logf("the API server served watch-lists: %v", !e.api.API.(*restAPI).noWatchList.Load())
	})

	t.Run("annotation change arrives", func(t *testing.T) {
		if got := e.publicIP(t, "before-watch"); got != "172.18.0.11" {
			t.Fatalf("public IP from the initial list = %q, want 172.18.0.11", got)
		}
		before := e.ch.of("before-watch")
		e.patch(t, "before-watch", map[string]any{"metadata": map[string]any{"annotations": map[string]string{e.ann.For(family.IPv4).PublicIP: "172.18.0.99"}}}, false)
		waitFor(t, "the new public IP in the cache", func() bool { return e.publicIP(t, "before-watch") == "172.18.0.99" })
		if e.ch.of("before-watch") != before+1 {
			t.Errorf("handler told %d times, want once", e.ch.of("before-watch")-before)
		}
		if n := e.m.listCount(); n != 1 {
			t.Errorf("%d lists of all nodes by now, want 1: starting the watch must not cost another", n)
		}
	})

	t.Run("status-only update does not enqueue", func(t *testing.T) {
		before, fetched := e.ch.of("before-watch"), e.m.fetched.Load()
		for i := 0; i < 20; i++ {
			e.heartbeat(t, "before-watch", i)
		}
		// Another owner's annotation changes nothing of ours either.
		e.patch(t, "before-watch", map[string]any{"metadata": map[string]any{"annotations": map[string]string{"node.alpha.kubernetes.io/ttl": "30"}}}, false)
		e.barrier(t, 1)
		if got := e.ch.of("before-watch") - before; got != 0 {
			t.Errorf("21 updates that change nothing we use told the handler %d times, want 0", got)
		}
		if got := e.m.fetched.Load() - fetched - 1; got != 0 { // the barrier's own GET
			t.Errorf("%d GETs of a node whose podCIDR is cached, want 0", got)
		}
	})

	t.Run("podCIDR set after annotations arrives", func(t *testing.T) {
		e.create(t, "late-cidr", "", "172.18.0.12")
		waitFor(t, "the new node's event", func() bool { return e.ch.of("late-cidr") > 0 })
		if got := e.publicIP(t, "late-cidr"); got != "" {
			t.Fatalf("a node without podCIDR has a lease with public IP %s", got)
		}
		e.heartbeat(t, "late-cidr", 1) // still nothing: it is read again, unchanged
		e.patch(t, "late-cidr", map[string]any{"spec": map[string]any{"podCIDR": "10.244.7.0/24", "podCIDRs": []string{"10.244.7.0/24"}}}, false)
		waitFor(t, "the lease once the podCIDR is set", func() bool { return e.publicIP(t, "late-cidr") == "172.18.0.12" })
		l, err := e.m.Lease("late-cidr")
		if err != nil || l == nil {
			t.Fatalf("lease: %v, %v", l, err)
		}
		if n, _ := l.Net(family.IPv4); n.Subnet.String() != "10.244.7.0/24" {
			t.Errorf("subnet %s, want 10.244.7.0/24", n.Subnet)
		}
	})

	t.Run("node created while the watch is down is seen", func(t *testing.T) {
		lists := e.m.listCount()
		e.api.hold()
		e.create(t, "in-gap", "10.244.8.0/24", "172.18.0.13")
		e.api.release(0)
		waitFor(t, "the node made in the gap", func() bool { return e.publicIP(t, "in-gap") == "172.18.0.13" })
		if n := e.m.listCount() - lists; n != 0 {
			t.Errorf("%d relists; the watch should have started again without", n)
		}
	})

	t.Run("node deleted while the watch is down is gone", func(t *testing.T) {
		e.create(t, "deleted-in-gap", "10.244.10.0/24", "172.18.0.15")
		waitFor(t, "the node before the gap", func() bool { return e.publicIP(t, "deleted-in-gap") == "172.18.0.15" })
		before := e.ch.of("deleted-in-gap")
		e.api.hold()
		if err := e.cs.CoreV1().Nodes().Delete(context.Background(), "deleted-in-gap", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		lists := e.m.listCount()
		e.api.release(0)
		waitFor(t, "the node deleted in the gap gone", func() bool {
			_, ok := e.m.Node("deleted-in-gap")
			return !ok && e.ch.of("deleted-in-gap") > before
		})
		if n := e.m.listCount() - lists; n != 0 {
			t.Errorf("%d relists; the watch should have started again without", n)
		}
	})

	t.Run("node created before a 410 Gone is seen by the relist", func(t *testing.T) {
		lists := e.m.listCount()
		e.api.hold()
		e.create(t, "before-gone", "10.244.9.0/24", "172.18.0.14")
		e.api.release(1)
		waitFor(t, "the node made before the relist", func() bool { return e.publicIP(t, "before-gone") == "172.18.0.14" })
		waitFor(t, "a relist", func() bool { return e.m.listCount() > lists })
	})

	t.Run("deletion arrives", func(t *testing.T) {
		before := e.ch.of("in-gap")
		if err := e.cs.CoreV1().Nodes().Delete(context.Background(), "in-gap", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the deletion", func() bool { _, ok := e.m.Node("in-gap"); return !ok && e.ch.of("in-gap") > before })
	})
}
