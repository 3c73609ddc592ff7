// Package health serves flanneld's HTTP endpoints: /healthz (the loop runs)
// and /readyz (the node is networked) from any prober, on a mux the caller
// owns, so other handlers (metrics) can share the port.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Prober answers the probes; the daemon is one.
type Prober interface {
	// Alive reports whether the control loop has started.
	Alive() bool
	// Ready reports whether the first full reconcile is done.
	Ready() bool
}

// Explainer is a Prober that can say why it is not ready: /readyz then
// answers 503 with that reason, so a user reading the probe's failure (in
// the pod's Events, or by hand) learns what to fix.
type Explainer interface {
	// NotReady says why the node is not ready, or "" when it is.
	NotReady() string
}

// notReady is /readyz's reason when the Prober gives none.
const notReady = "the first full reconcile has not finished"

// Register adds /healthz and /readyz for p to mux.
func Register(mux *http.ServeMux, p Prober) {
	probe := func(ok func() bool, why func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if !ok() {
				http.Error(w, why(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux.HandleFunc("/healthz", probe(p.Alive, func() string { return "not alive" }))
	mux.HandleFunc("/readyz", probe(p.Ready, func() string {
		if e, ok := p.(Explainer); ok {
			if r := e.NotReady(); r != "" {
				return "not ready: " + r
			}
		}
		return "not ready: " + notReady
	}))
}

// Serve serves h on addr until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for health checks on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
