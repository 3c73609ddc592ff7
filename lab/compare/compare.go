// Package compare measures what the overlay costs: it brings a lab up once
// per mode (vxlan, host-gw, and in IPv4 runs host-gw with underlay routes,
// the VPC-native stand-in) and measures, between pods on two different
// nodes, TCP throughput, round-trip latency and CPU time per GB moved,
// against the bare underlay (node to node) as the ceiling; it records the
// MTU each mode gives pods and captures on the sending node's eth0 how the
// packets leave. In IPv4 runs it also traces who reaches whom (pods, nodes,
// the lab's VM, the internet) and with which source address. `twill lab
// compare` runs it and writes a Markdown report and an SVG chart.
package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/twill-net/twill/lab"
)

// DefaultName is the name of the labs compare brings up, distinct from a
// user's lab so it never touches one.
const DefaultName = "cmp"

// Options configure Run.
type Options struct {
	// Name names the labs compare brings up (one at a time); default
	// DefaultName. Any lab of that name is removed first.
	Name string
	// Quick uses short runs (iperf3 -t 2, 20 pings, one round, no tuning
	// experiments), for tests.
	Quick bool
	// OutDir receives report.md and throughput.svg; default
	// ./compare-<timestamp>.
	OutDir string
	// RepoRoot is the Twill checkout; default found from the working
	// directory.
	RepoRoot string
	// IPFamily is the labs' IP families (lab.Options.IPFamily); with
	// "dual" every lab also measures IPv6 pod → pod against the IPv6
	// underlay. Default "ipv4".
	IPFamily string
	// Tune also measures data-path settings (offloads on flannel.1 and the
	// pods' veths) in the vxlan lab.
	Tune bool
	// WriteResults puts the report's "## Data path" section into the
	// checkout's bench/RESULTS.md.
	WriteResults bool
	// Modes are the modes compared; default IPv4Modes, or DualModes with
	// IPFamily "dual".
	Modes []Mode
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Plan is how long and how often each measurement runs.
type Plan struct {
	// Seconds is iperf3's -t; Rounds the runs per mode and stream count.
	Seconds, Rounds int
	// Pings are sent at Interval (ping -i) seconds.
	Pings    int
	Interval string
	// TuneRounds and TuneSecs are the tuning experiments' rounds and -t.
	TuneRounds, TuneSecs int
}

func (o Options) plan() Plan {
	if o.Quick {
		return Plan{Seconds: 2, Rounds: 1, Pings: 20, Interval: "0.01", TuneRounds: 1, TuneSecs: 2}
	}
	return Plan{Seconds: 10, Rounds: 3, Pings: 200, Interval: "0.01", TuneRounds: 2, TuneSecs: 5}
}

// Run brings up a lab per backend, measures, removes the lab (even on
// failure), and writes the report into o.OutDir. It returns the report,
// and the measurements taken so far with an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.OutDir == "" {
		o.OutDir = "compare-" + time.Now().UTC().Format("20060102-150405")
	}
	if o.IPFamily != "" && o.IPFamily != lab.IPv4 && o.IPFamily != lab.Dual {
		return nil, fmt.Errorf("--ip-family %q: compare runs ipv4 or dual labs (dual adds the IPv6 rows)", o.IPFamily)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("twill lab compare brings labs up and needs root: run it with sudo")
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output directory: %w", err)
	}
	r := &Report{Started: time.Now(), Quick: o.Quick, Machine: readMachine(o.Name)}
	p := o.plan()
	r.Plan = p
	modes := o.Modes
	switch {
	case len(modes) > 0:
	case o.IPFamily == lab.Dual:
		modes = DualModes
	default:
		modes = IPv4Modes
	}
	for _, mode := range modes {
		run, root, err := runLab(ctx, o, p, mode)
		r.Machine.addOtherLabs(o.Name)
		if run != nil && run.Load != "" {
			r.Machine.LoadAfterLab = append(r.Machine.LoadAfterLab, mode.Name+": "+run.Load)
		}
		if run != nil {
			r.Labs = append(r.Labs, *run)
		}
		if root != "" {
			o.RepoRoot = root
		}
		if err != nil {
			return r, fmt.Errorf("measuring %s: %w", mode.Name, err)
		}
	}
	r.Finished = time.Now()
	r.Machine.LoadAfter = loadAverage()
	if err := r.Write(o.OutDir); err != nil {
		return r, err
	}
	if o.WriteResults {
		if err := r.WriteResultsSection(ResultsFile(o.RepoRoot)); err != nil {
			return r, err
		}
	}
	return r, nil
}

// runLab brings up the lab for one mode, measures, and removes it. It
// returns the checkout the lab was made from.
func runLab(ctx context.Context, o Options, p Plan, mode Mode) (_ *LabRun, root string, err error) {
	backend := mode.Backend
	logf := func(format string, a ...any) {
		fmt.Fprintf(o.Log, "compare: "+format+"\n", a...)
	}
	// The name is ours: leftovers of an interrupted compare go first.
	if err := lab.Down(ctx, o.Name); err != nil {
		return nil, "", fmt.Errorf("removing an earlier lab %q: %w", o.Name, err)
	}
	logf("bringing up lab %q for %s", o.Name, mode.Name)
	start := time.Now()
	c, err := lab.Up(ctx, lab.Options{Name: o.Name, Nodes: 3 + mode.RoutedNodes, RoutedNodes: mode.RoutedNodes, UnderlayRoutes: mode.UnderlayRoutes,
		CNI: "twill", Backend: backend, IPFamily: o.IPFamily, RepoRoot: o.RepoRoot, Log: o.Log})
	defer func() {
		logf("removing lab %q", o.Name)
		if derr := lab.Down(context.WithoutCancel(ctx), o.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing lab %q: %w", o.Name, derr))
		}
	}()
	if err != nil {
		return nil, "", fmt.Errorf("bringing up the %s lab: %w", backend, err)
	}
	logf("lab up in %s", time.Since(start).Round(100*time.Millisecond))
	m := &measurer{c: c, p: p, logf: logf}
	if err := m.setup(ctx); err != nil {
		return nil, c.RepoRoot, err
	}
	run, err := m.measure(ctx, backend)
	if run != nil {
		run.Mode = mode.Name
		run.Load = loadAverage()
	}
	if err != nil {
		return run, c.RepoRoot, err
	}
	if c.Family() == lab.IPv4 {
		run.Reach, err = m.reachability(ctx, mode)
		if err != nil {
			return run, c.RepoRoot, fmt.Errorf("reachability: %w", err)
		}
	}
	if o.Tune && backend == "vxlan" {
		run.Tuning, err = m.tune(ctx)
		run.Load = loadAverage()
		if err != nil {
			return run, c.RepoRoot, fmt.Errorf("tuning experiments: %w", err)
		}
	}
	return run, c.RepoRoot, nil
}

// ResultsFile is bench/RESULTS.md in the checkout at root.
func ResultsFile(root string) string { return filepath.Join(root, "bench", "RESULTS.md") }
