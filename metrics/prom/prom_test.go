package prom

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/fakekernel"
	"github.com/twill-net/twill/metrics"
)

func kinds() []string {
	out := make([]string, len(kernel.Kinds))
	for i, k := range kernel.Kinds {
		out[i] = k.String()
	}
	return out
}

func newRecorder() *Recorder {
	return New(Options{Version: "v9.9.9", EntryKinds: kinds(), Families: []family.Family{family.IPv4}})
}

// scrape fetches /metrics from r's handler and parses it.
func scrape(t testing.TB, r *Recorder) (map[string]*dto.MetricFamily, int) {
	t.Helper()
	mux := http.NewServeMux()
	r.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams, len(body)
}

// value returns the value of family name's series with labels (name=value
// pairs), failing when there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no series %s", name)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		for _, l := range m.Label {
			if want[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestSeries(t *testing.T) {
	r := newRecorder()
	now := time.Unix(1700000000, 0)
	r.now = func() time.Time { return now }
	fail := errors.New("boom")

	r.Reconciled(metrics.ReconcileNode, time.Millisecond, nil)
	r.Reconciled(metrics.ReconcileNode, 2*time.Millisecond, fail)
	r.Reconciled(metrics.ReconcileFull, 30*time.Millisecond, nil)
	r.EntriesChanged("route", metrics.Added, 3)
	r.EntriesChanged("route", metrics.Repaired, 1)
	r.EntriesHeld("route", 3)
	r.Peers("vxlan", family.IPv4, 4, 3)
	r.WatchEvent("added")
	r.WatchEvent("deleted")
	r.Listed(false)
	r.Listed(true)
	r.WatchStarted()
	r.APIContact()
	r.APIWrite("annotations", nil)
	r.APIWrite("event", fail)
	r.RulesChecked(family.IPv4, 20*time.Millisecond, false, nil)
	r.RulesChecked(family.IPv4, 30*time.Millisecond, true, nil)
	r.RulesChecked(family.IPv4, time.Second, false, fail)
	r.GuardDropped(family.IPv4, 5)
	r.GuardDropped(family.IPv4, 7)

	fams, _ := scrape(t, r)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"twill_reconciles_total", []string{"kind", "node"}, 2},
		{"twill_reconciles_total", []string{"kind", "full"}, 1},
		{"twill_reconcile_errors_total", []string{"kind", "node"}, 1},
		{"twill_reconcile_errors_total", []string{"kind", "full"}, 0},
		{"twill_reconcile_duration_seconds", []string{"kind", "node"}, 2},
		{"twill_kernel_entry_changes_total", []string{"kind", "route", "change", "added"}, 3},
		{"twill_kernel_entry_changes_total", []string{"kind", "route", "change", "repaired"}, 1},
		{"twill_kernel_entry_changes_total", []string{"kind", "fdb", "change", "repaired"}, 0},
		{"twill_kernel_entries", []string{"kind", "route"}, 3},
		{"twill_peers_known", []string{"backend", "vxlan", "family", "ipv4"}, 4},
		{"twill_peers_programmed", []string{"backend", "vxlan", "family", "ipv4"}, 3},
		{"twill_node_watch_events_total", []string{"type", "added"}, 1},
		{"twill_node_watch_events_total", []string{"type", "updated"}, 0},
		{"twill_node_lists_total", []string{"kind", "initial"}, 1},
		{"twill_node_lists_total", []string{"kind", "relist"}, 1},
		{"twill_node_watches_total", nil, 1},
		{"twill_api_last_contact_timestamp_seconds", nil, 1700000000},
		{"twill_api_writes_total", []string{"kind", "annotations", "result", "ok"}, 1},
		{"twill_api_writes_total", []string{"kind", "event", "result", "error"}, 1},
		{"twill_rules_checks_total", []string{"family", "ipv4"}, 3},
		{"twill_rules_check_duration_seconds", []string{"family", "ipv4"}, 3},
		{"twill_rules_repairs_total", []string{"family", "ipv4"}, 1},
		{"twill_rules_check_errors_total", []string{"family", "ipv4"}, 1},
		{"twill_rules_last_check_timestamp_seconds", []string{"family", "ipv4"}, 1700000000},
		{"twill_tunnel_guard_dropped_packets_total", []string{"family", "ipv4"}, 7},
		{"twill_build_info", []string{"version", "v9.9.9", "goversion", runtime.Version()}, 1},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
}

// TestNamingConventions checks every series of ours: the prefix, _total on
// counters and only there, help text, and no label that could take a
// node's name.
func TestNamingConventions(t *testing.T) {
	r := newRecorder()
	r.Peers("vxlan", family.IPv4, 1, 1)
	r.GuardDropped(family.IPv4, 1)
	fams, _ := scrape(t, r)
	bounded := map[string]bool{"kind": true, "change": true, "backend": true, "family": true, "type": true, "result": true, "version": true, "goversion": true}
	ours := 0
	for name, f := range fams {
		if !strings.HasPrefix(name, Namespace+"_") {
			continue
		}
		ours++
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		isCounter := f.GetType() == dto.MetricType_COUNTER
		if isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s: counters, and only counters, end in _total", name, f.GetType())
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if !bounded[l.GetName()] {
					t.Errorf("%s has label %q, not one of the bounded ones", name, l.GetName())
				}
			}
		}
	}
	if ours < 15 {
		t.Errorf("only %d twill_ series families", ours)
	}
}

// programPeers programs n peers' entries (a route, a neighbour and an FDB entry
// each, as vxlan does) through a table reporting to r.
func programPeers(t testing.TB, r *Recorder, n int) {
	t.Helper()
	k := fakekernel.New()
	dev, err := k.AddVXLAN(kernel.VXLAN{Name: "flannel.1", VNI: 1, Port: 8472, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	table := backend.NewTable(k, r)
	want := make(map[string]backend.Entries, n)
	for i := range n {
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		vtep := sub.Addr()
		mac := net.HardwareAddr{0x0a, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		pub := netip.AddrFrom4([4]byte{172, 18, byte(i >> 8), byte(i)})
		want[fmt.Sprintf("node-%d", i)] = backend.Entries{
			kernel.Neigh{LinkIndex: dev.Index, IP: vtep, MAC: mac},
			kernel.FDB{LinkIndex: dev.Index, MAC: mac, Dst: pub},
			kernel.Route{Dst: sub, Gw: vtep, LinkIndex: dev.Index, Onlink: true},
		}
	}
	scope := backend.Scope{backend.Routes(dev.Index, netip.MustParsePrefix("10.0.0.0/8"), netip.Prefix{})}
	if _, err := table.SyncAll(want, scope); err != nil {
		t.Fatal(err)
	}
	r.Peers("vxlan", family.IPv4, n, n)
}

// TestScrapeCostIndependentOfPeers: a table of 5,000 peers exports exactly
// the series a table of 5 does, and the scrape stays small and quick.
func TestScrapeCostIndependentOfPeers(t *testing.T) {
	count := func(n int) (series int, size int, took time.Duration, fams map[string]*dto.MetricFamily) {
		r := newRecorder()
		programPeers(t, r, n)
		start := time.Now()
		fams, size = scrape(t, r)
		took = time.Since(start)
		for name, f := range fams {
			if strings.HasPrefix(name, Namespace+"_") {
				series += len(f.Metric)
			}
		}
		return series, size, took, fams
	}
	few, _, _, _ := count(5)
	many, size, took, fams := count(5000)
	if few != many {
		t.Errorf("5 peers export %d twill_ series, 5,000 peers %d: some series grow with the cluster", few, many)
	}
	if got := value(t, fams, "twill_kernel_entries", "kind", "route"); got != 5000 {
		t.Errorf("twill_kernel_entries{kind=route} = %v, want 5000", got)
	}
	if got := value(t, fams, "twill_peers_programmed", "backend", "vxlan", "family", "ipv4"); got != 5000 {
		t.Errorf("twill_peers_programmed = %v, want 5000", got)
	}
	// Generous bounds for a shared 2-core machine under -race; the
	// benchmark gives the real figure.
	if size > 64<<10 || took > 2*time.Second {
		t.Errorf("a scrape at 5,000 peers is %d bytes and took %v", size, took)
	}
	t.Logf("5,000 peers: %d twill_ series, scrape %d bytes in %v", many, size, took)
}

// BenchmarkScrape measures one scrape of /metrics after a 5,000-peer table.
func BenchmarkScrape(b *testing.B) {
	r := newRecorder()
	programPeers(b, r, 5000)
	mux := http.NewServeMux()
	r.Register(mux)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/scrape")
}
