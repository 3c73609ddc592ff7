package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

type prober struct{ alive, ready atomic.Bool }

func (p *prober) Alive() bool { return p.alive.Load() }
func (p *prober) Ready() bool { return p.ready.Load() }

func TestProbes(t *testing.T) {
	p := &prober{}
	mux := http.NewServeMux()
	Register(mux, p)
	status := func(path string) int {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if status("/healthz") != http.StatusServiceUnavailable || status("/readyz") != http.StatusServiceUnavailable {
		t.Error("probes pass before the daemon started")
	}
	p.alive.Store(true)
	if status("/healthz") != http.StatusOK || status("/readyz") != http.StatusServiceUnavailable {
		t.Error("alive but not ready: wrong answers")
	}
	p.ready.Store(true)
	if status("/readyz") != http.StatusOK {
		t.Error("ready daemon not ready")
	}
}

// explainer is a prober that says why it is not ready.
type explainer struct {
	prober
	why string
}

func (e *explainer) NotReady() string { return e.why }

// TestReadyzSaysWhy: a Prober that is an Explainer has its reason in
// /readyz's 503; one that is not, or gives no reason, the generic one.
func TestReadyzSaysWhy(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Prober
		want string
	}{
		{"plain prober", &prober{}, "not ready: the first full reconcile has not finished"},
		{"no reason given", &explainer{}, "not ready: the first full reconcile has not finished"},
		{"a reason", &explainer{why: "/run/flannel/subnet.env is not written"}, "not ready: /run/flannel/subnet.env is not written"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mux := http.NewServeMux()
			Register(mux, c.p)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if got := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusServiceUnavailable || got != c.want {
				t.Errorf("/readyz: %d %q, want 503 %q", rec.Code, got, c.want)
			}
		})
	}
}
