package kube_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/twill-net/twill/metrics"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/kube/clientsetapi"
)

// apiRecorder counts the API-side reports.
type apiRecorder struct {
	metrics.Nop
	mu                            sync.Mutex
	lists, relists, watches, seen int
	events                        map[string]int
}

func (r *apiRecorder) Listed(restart bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if restart {
		r.relists++
	} else {
		r.lists++
	}
}

func (r *apiRecorder) WatchStarted() { r.mu.Lock(); r.watches++; r.mu.Unlock() }
func (r *apiRecorder) APIContact()   { r.mu.Lock(); r.seen++; r.mu.Unlock() }
func (r *apiRecorder) WatchEvent(typ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = map[string]int{}
	}
	r.events[typ]++
}

func (r *apiRecorder) get(f func(*apiRecorder) int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

type changes struct{}

func (changes) InitialPage([]kube.PeerNode) {}
func (changes) Changed(string)              {}

func TestManagerReportsListsWatchesAndContact(t *testing.T) {
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: v1.NodeSpec{PodCIDR: "10.244.1.0/24"}})
	rec := &apiRecorder{}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	m := kube.NewManager(clientsetapi.API{C: client}, "n1", ann, log, rec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Watch(ctx, changes{}); err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	eventually(t, "one list and one watch", func() bool {
		return rec.get(func(r *apiRecorder) int { return r.lists }) == 1 && rec.get(func(r *apiRecorder) int { return r.watches }) == 1
	})
	before := rec.get(func(r *apiRecorder) int { return r.seen })
	if before == 0 {
		t.Error("a successful list is no contact with the API server")
	}
	peer := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{
		"flannel.alpha.coreos.com/backend-type": "vxlan", "flannel.alpha.coreos.com/public-ip": "172.18.0.3",
	}}, Spec: v1.NodeSpec{PodCIDR: "10.244.2.0/24"}}
	if _, err := client.CoreV1().Nodes().Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watch event counted and seen", func() bool {
		return rec.get(func(r *apiRecorder) int { return r.events["added"] }) == 1 && rec.get(func(r *apiRecorder) int { return r.seen }) > before
	})
	if n := rec.get(func(r *apiRecorder) int { return r.relists }); n != 0 {
		t.Errorf("%d relists with a healthy watch", n)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
