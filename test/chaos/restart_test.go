//go:build chaos

package chaos

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/netns"
)

// TestControlPlaneRestart is scenario 2: under traffic, etcd and then
// kube-apiserver are restarted in place (same flags, same data), each
// cleanly (SIGTERM) and as a crash (SIGKILL). The data plane does not
// depend on the API, so the pods lose nothing; and flanneld's watch must
// survive each restart: right after the API is ready again a simulated
// peer Node is created (or deleted), and it must reach both kernels within
// 5 s. A clean stop of the API server ends its watches (flanneld's among
// them) and exits in about a second, thanks to the control plane's
// --shutdown-watch-termination-grace-period; without it, it waited 60 s
// for them and Restart killed it after its 15 s grace. The short form
// restarts each component once (etcd killed, the API server stopped); the
// full one also kills each and keeps it down for 15 s.
func TestControlPlaneRestart(t *testing.T) {
	h := newHarness(t, "2 control plane restart")
	type restart struct {
		component string
		sig       syscall.Signal
		// down is how long it stays stopped: the outage is a length of
		// time by definition, not a wait for something.
		down time.Duration
	}
	// An API server restart costs each flanneld one relist (its watch's
	// resource version is older than the new API server's watch cache:
	// 410 Gone), and client-go's reflector waits before each relist on a
	// backoff that doubles (0.8–1.6 s, then 1.6–3.2 s, 3.2–6.4 s, …) until
	// two minutes pass without one. So a third API server restart within
	// two minutes may miss the 5 s bound by the reflector's backoff alone:
	// the scenario restarts the API server twice, etcd (no relist) three
	// times.
	restarts := []restart{
		{controlplane.Etcd, syscall.SIGTERM, 0},
		{controlplane.Etcd, syscall.SIGKILL, 0},
		{controlplane.Etcd, syscall.SIGKILL, 15 * time.Second},
		{controlplane.APIServer, syscall.SIGTERM, 0},
		{controlplane.APIServer, syscall.SIGKILL, 15 * time.Second},
	}
	if short {
		restarts = []restart{{controlplane.Etcd, syscall.SIGKILL, 0}, {controlplane.APIServer, syscall.SIGTERM, 0}}
	}
	const bound = 5 * time.Second
	nodes := h.env.Client.CoreV1().Nodes()
	for i, r := range restarts {
		// The first of each pair creates a peer, the second deletes it: both a
		// watch ADDED and a DELETED event must come through.
		peer := fmt.Sprintf("sim%d", i/2)
		change := "a peer Node created"
		if i%2 == 1 {
			change = "the peer Node deleted"
		}
		how := map[syscall.Signal]string{syscall.SIGTERM: "restarted (SIGTERM)", syscall.SIGKILL: "killed (SIGKILL) and restarted"}[r.sig]
		if r.down > 0 {
			how = fmt.Sprintf("killed (SIGKILL), down %s, started again", r.down)
		}
		lists, watches := h.counter("twill_node_lists_total{kind=\"relist\"}"), h.counter("twill_node_watches_total")
		var down time.Duration
		h.fault(r.component+" "+how, "", 30*time.Second, func() error {
			start := time.Now()
			if err := h.env.CP.StopComponent(r.component, r.sig); err != nil {
				return err
			}
			time.Sleep(r.down)
			if err := h.env.CP.StartComponent(h.ctx, r.component); err != nil {
				return err
			}
			down = time.Since(start)
			if i%2 == 0 {
				_, err := nodes.Create(h.ctx, simPeer(peer, fmt.Sprintf("10.244.%d.0/24", 20+i), fmt.Sprintf("172.18.0.%d", 120+i), fmt.Sprintf("0a:00:00:00:01:%02x", i)), metav1.CreateOptions{})
				return err
			}
			return nodes.Delete(h.ctx, peer, metav1.DeleteOptions{})
		})
		// No relist storm: the informers come back with at most one relist
		// and a few watches each.
		relists, rewatches := sub(h.counter("twill_node_lists_total{kind=\"relist\"}"), lists), sub(h.counter("twill_node_watches_total"), watches)
		for n := range relists {
			if relists[n] > 1 || rewatches[n] > 10 {
				t.Errorf("%s %s: %s's flanneld relisted the nodes %d times and opened %d watches; want at most 1 and 10", r.component, how, h.nodes[n].Name, relists[n], rewatches[n])
			}
		}
		p := &h.pending[len(h.pending)-1].r
		p.note = fmt.Sprintf("%s back and ready %s after the stop; %s right after reached both kernels in %s (limit %s); node relists %v and watches opened %v (n1, n2)", r.component, down.Round(100*time.Millisecond), change, p.converge.Round(time.Millisecond), bound, relists, rewatches)
		if p.converge > bound {
			t.Errorf("%s %s: %s reached the kernels %s after the API was ready again, want within %s", r.component, how, change, p.converge, bound)
		}
	}
	h.finish()
	results.Lock()
	defer results.Unlock()
	for _, r := range results.list[len(results.list)-len(restarts):] {
		if r.lost > 0 {
			t.Errorf("%s: %d pings lost; the data plane must not depend on the API", r.fault, r.lost)
		}
	}
}

// counter reads a metric of every node's flanneld (its /metrics on the
// health port), e.g. `twill_node_watches_total`.
func (h *harness) counter(series string) []int {
	h.t.Helper()
	var out []int
	for _, n := range h.nodes {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netns.DialContext(n.NS)}}
		resp, err := c.Get(fmt.Sprintf("http://%s:%d/metrics", n.IP, testenv.HealthPort))
		if err != nil {
			h.t.Fatalf("%s's metrics: %v", n.Name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			h.t.Fatalf("%s's metrics: %v", n.Name, err)
		}
		v := -1
		for _, line := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					h.t.Fatalf("%s's metrics: %q: %v", n.Name, line, err)
				}
				v = int(f)
			}
		}
		if v < 0 {
			h.t.Fatalf("%s's metrics have no %s", n.Name, series)
		}
		out = append(out, v)
	}
	return out
}

func sub(a, b []int) []int {
	d := make([]int, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}
