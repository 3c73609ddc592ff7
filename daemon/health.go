package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ServeHealth serves /healthz (the loop runs) and /readyz (the first full
// reconcile is done) on addr until ctx ends.
func ServeHealth(ctx context.Context, addr string, d *Daemon) error {
	mux := http.NewServeMux()
	probe := func(ok func() bool, what string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if !ok() {
				http.Error(w, "not "+what, http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux.HandleFunc("/healthz", probe(d.Alive, "alive"))
	mux.HandleFunc("/readyz", probe(d.Ready, "ready: the first full reconcile has not finished"))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for health checks on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
