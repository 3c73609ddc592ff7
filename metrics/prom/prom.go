// Package prom exports what flanneld's parts report to a metrics.Recorder
// as Prometheus series, for the /metrics endpoint on the health port.
//
// Names follow Prometheus' conventions: the twill_ prefix, base units
// (seconds), _total for counters, and labels with a few bounded values
// (kinds of reconcile and entry, IP families, event types, outcomes), never
// a node or peer name, so a scrape costs the same at 5 peers and at 5,000.
// The registry is the recorder's own, not the process-wide default one.
package prom

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/metrics"
)

// Namespace prefixes every series of ours.
const Namespace = "twill"

// reconcileBuckets span a node reconcile (tens of microseconds) to a full
// reconcile of 5,000 peers on a busy machine (about a second).
var reconcileBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Recorder is a metrics.Recorder that keeps Prometheus series.
type Recorder struct {
	reg *prometheus.Registry
	now func() time.Time

	reconciles       *prometheus.CounterVec
	reconcileErrors  *prometheus.CounterVec
	reconcileSeconds *prometheus.HistogramVec
	entryChanges     *prometheus.CounterVec
	entries          *prometheus.GaugeVec
	peersKnown       *prometheus.GaugeVec
	peersProgrammed  *prometheus.GaugeVec
	watchEvents      *prometheus.CounterVec
	lists            *prometheus.CounterVec
	watches          prometheus.Counter
	lastContact      prometheus.Gauge
	apiWrites        *prometheus.CounterVec
	rulesChecks      *prometheus.CounterVec
	rulesSeconds     *prometheus.HistogramVec
	rulesRepairs     *prometheus.CounterVec
	rulesErrors      *prometheus.CounterVec
	rulesLastCheck   *prometheus.GaugeVec
	guardDropped     *kernelCounters
}

var _ metrics.Recorder = (*Recorder)(nil)

// Options say what New needs to know beforehand.
type Options struct {
	// Version is flanneld's, for twill_build_info.
	Version string
	// EntryKinds are the names of the kinds of kernel entry ("neigh",
	// "fdb", "route") and Families the IP families this node runs: their
	// counters are exported as 0 from the start, so rate() and increase()
	// see the first change.
	EntryKinds []string
	Families   []family.Family
}

// New returns a recorder whose registry also holds build information, the
// Go runtime's and the process's series.
func New(o Options) *Recorder {
	r := &Recorder{reg: prometheus.NewRegistry(), now: time.Now}
	f := factory{r.reg}
	r.reconciles = f.counters("reconciles_total", "Reconciles run, by kind: node (one peer or this node's annotations) or full (every peer, reading the kernel).", "kind")
	r.reconcileErrors = f.counters("reconcile_errors_total", "Reconciles that failed (and are retried), by kind.", "kind")
	r.reconcileSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "reconcile_duration_seconds", Help: "How long reconciles take, by kind.", Buckets: reconcileBuckets,
	}, []string{"kind"})
	r.reg.MustRegister(r.reconcileSeconds)
	r.entryChanges = f.counters("kernel_entry_changes_total", "Changes made to the kernel's per-peer entries, by kind (route, neigh, fdb) and change: added, updated, removed, or repaired (drift the kernel had, such as a deleted route, put back).", "kind", "change")
	r.entries = f.gauges("kernel_entries", "Per-peer kernel entries programmed, by kind.", "kind")
	r.peersKnown = f.gauges("peers_known", "Peers with a lease (podCIDR and annotations) of the family, by this node's backend and family.", "backend", "family")
	r.peersProgrammed = f.gauges("peers_programmed", "Peers whose kernel entries are programmed, by backend and family; fewer than twill_peers_known means peers this node cannot reach (see flanneld's Warning events).", "backend", "family")
	r.watchEvents = f.counters("node_watch_events_total", "Node events that may change a peer, by type: added, updated (a lease changed) or deleted.", "type")
	r.lists = f.counters("node_lists_total", "Complete lists of all nodes, by kind: initial, or relist (the watch broke and the cache was rebuilt).", "kind")
	r.watches = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "node_watches_total", Help: "Watches of the nodes opened: after each list, and again whenever the API server ends one."})
	r.lastContact = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "api_last_contact_timestamp_seconds", Help: "Unix time the API server last answered (a node list, a watch event or bookmark, a successful write); time() minus it is how stale flanneld's view of the cluster may be."})
	r.reg.MustRegister(r.watches, r.lastContact)
	r.apiWrites = f.counters("api_writes_total", "Writes to the API server, by kind (annotations: this node's lease; condition: NetworkUnavailable; event: a Warning on a node) and result (ok, error).", "kind", "result")
	r.rulesChecks = f.counters("rules_checks_total", "Checks of the packet-filter rules, by family.", "family")
	r.rulesSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "rules_check_duration_seconds", Help: "How long checks of the packet-filter rules take (with their repair, if any), by family.", Buckets: reconcileBuckets,
	}, []string{"family"})
	r.reg.MustRegister(r.rulesSeconds)
	r.rulesRepairs = f.counters("rules_repairs_total", "Checks that found the packet-filter rules missing or wrong and rewrote them, by family.", "family")
	r.rulesErrors = f.counters("rules_check_errors_total", "Checks of the packet-filter rules that failed, by family.", "family")
	r.rulesLastCheck = f.gauges("rules_last_check_timestamp_seconds", "Unix time of the last successful check of the packet-filter rules, by family.", "family")
	r.guardDropped = newKernelCounters(prometheus.NewDesc(Namespace+"_tunnel_guard_dropped_packets_total",
		"Tunnel packets from addresses that are not peers dropped by the tunnel guard, by family, as the kernel counts them (from 0 again when the guard's rules are rebuilt).",
		[]string{"family"}, nil))
	r.reg.MustRegister(r.guardDropped)

	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info", Help: "Always 1; the labels say which flanneld this is."}, []string{"version", "goversion"})
	build.WithLabelValues(o.Version, runtime.Version()).Set(1)
	r.reg.MustRegister(build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	r.zero(o)
	return r
}

// zero exports the counters of every known label value as 0.
func (r *Recorder) zero(o Options) {
	for _, k := range []metrics.Reconcile{metrics.ReconcileNode, metrics.ReconcileFull} {
		r.reconciles.WithLabelValues(string(k))
		r.reconcileErrors.WithLabelValues(string(k))
		r.reconcileSeconds.WithLabelValues(string(k))
	}
	for _, k := range o.EntryKinds {
		for _, ch := range []metrics.Change{metrics.Added, metrics.Updated, metrics.Removed, metrics.Repaired} {
			r.entryChanges.WithLabelValues(k, string(ch))
		}
		r.entries.WithLabelValues(k)
	}
	for _, t := range []string{"added", "updated", "deleted"} {
		r.watchEvents.WithLabelValues(t)
	}
	for _, k := range []string{"initial", "relist"} {
		r.lists.WithLabelValues(k)
	}
	for _, k := range []string{"annotations", "condition", "event"} {
		r.apiWrites.WithLabelValues(k, "ok")
		r.apiWrites.WithLabelValues(k, "error")
	}
	for _, f := range o.Families {
		l := familyLabel(f)
		r.rulesChecks.WithLabelValues(l)
		r.rulesRepairs.WithLabelValues(l)
		r.rulesErrors.WithLabelValues(l)
	}
}

// factory registers vectors of counters and gauges of ours.
type factory struct{ reg *prometheus.Registry }

func (f factory) counters(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) gauges(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

// Registry is where the series live, for tests and other exporters.
func (r *Recorder) Registry() *prometheus.Registry { return r.reg }

// Handler serves the series in Prometheus' text (or protobuf) format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Register adds /metrics to mux.
func (r *Recorder) Register(mux *http.ServeMux) { mux.Handle("/metrics", r.Handler()) }

func familyLabel(f family.Family) string { return strings.ToLower(f.String()) }

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Reconciled implements metrics.Recorder.
func (r *Recorder) Reconciled(kind metrics.Reconcile, d time.Duration, err error) {
	k := string(kind)
	r.reconciles.WithLabelValues(k).Inc()
	r.reconcileSeconds.WithLabelValues(k).Observe(d.Seconds())
	if err != nil {
		r.reconcileErrors.WithLabelValues(k).Inc()
	}
}

// EntriesChanged implements metrics.Recorder.
func (r *Recorder) EntriesChanged(kind string, ch metrics.Change, n int) {
	r.entryChanges.WithLabelValues(kind, string(ch)).Add(float64(n))
}

// EntriesHeld implements metrics.Recorder.
func (r *Recorder) EntriesHeld(kind string, n int) { r.entries.WithLabelValues(kind).Set(float64(n)) }

// Peers implements metrics.Recorder.
func (r *Recorder) Peers(backend string, fam family.Family, known, programmed int) {
	f := familyLabel(fam)
	r.peersKnown.WithLabelValues(backend, f).Set(float64(known))
	r.peersProgrammed.WithLabelValues(backend, f).Set(float64(programmed))
}

// WatchEvent implements metrics.Recorder.
func (r *Recorder) WatchEvent(typ string) { r.watchEvents.WithLabelValues(typ).Inc() }

// Listed implements metrics.Recorder.
func (r *Recorder) Listed(restart bool) {
	kind := "initial"
	if restart {
		kind = "relist"
	}
	r.lists.WithLabelValues(kind).Inc()
}

// WatchStarted implements metrics.Recorder.
func (r *Recorder) WatchStarted() { r.watches.Inc() }

// APIContact implements metrics.Recorder.
func (r *Recorder) APIContact() { r.lastContact.Set(unix(r.now())) }

// APIWrite implements metrics.Recorder.
func (r *Recorder) APIWrite(kind string, err error) {
	r.apiWrites.WithLabelValues(kind, result(err)).Inc()
}

// RulesChecked implements metrics.Recorder.
func (r *Recorder) RulesChecked(fam family.Family, d time.Duration, repaired bool, err error) {
	f := familyLabel(fam)
	r.rulesChecks.WithLabelValues(f).Inc()
	r.rulesSeconds.WithLabelValues(f).Observe(d.Seconds())
	switch {
	case err != nil:
		r.rulesErrors.WithLabelValues(f).Inc()
	case repaired:
		r.rulesRepairs.WithLabelValues(f).Inc()
		fallthrough
	default:
		r.rulesLastCheck.WithLabelValues(f).Set(unix(r.now()))
	}
}

// GuardDropped records the tunnel guard's drop count of fam, a running
// total the kernel keeps. (The firewall's tunnel guard reports it; this
// method is here for the Recorder method that carries it.)
func (r *Recorder) GuardDropped(fam family.Family, packets uint64) {
	r.guardDropped.set(familyLabel(fam), packets)
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// kernelCounters exports counters whose totals the kernel keeps, one per
// label value: the last total reported is the value.
type kernelCounters struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	vals map[string]uint64
}

func newKernelCounters(d *prometheus.Desc) *kernelCounters {
	return &kernelCounters{desc: d, vals: map[string]uint64{}}
}

func (c *kernelCounters) set(label string, v uint64) {
	c.mu.Lock()
	c.vals[label] = v
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *kernelCounters) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *kernelCounters) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for label, v := range c.vals {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), label)
	}
}
