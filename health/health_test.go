package health

import (
	"net/http"
	"net/http/httptest"
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
