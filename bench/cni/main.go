// Command cni measures what a pod pays for the flannel CNI plugin: ADD and
// DEL latency per pod through libcni, as a runtime calls it, with the real
// bridge, host-local and portmap plugins in a throwaway host network
// namespace. As a baseline it runs the same pods with the bridge plugin
// configured directly, so the difference is the plugin's own cost.
//
//	go run ./bench/cni -bin bin/cni -pods 100 -results bench/RESULTS.md
//
// With -before it runs another build's flannel plugin as one more mode,
// taking turns with the others, for a before/after comparison in one run:
//
//	go run ./bench/cni -bin bin/cni -before /tmp/before/cni -pods 120 -rounds 3 -parallel 0
//
// It also times the pieces of the plugin's own work: a process start
// (CNI_COMMAND=VERSION), reading subnet.env, and the saved configuration's
// write with and without fsync, on the file system of the run.
//
// It needs root. Without -results it prints the markdown section.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/internal/testenv/cnihost"
	"github.com/twill-net/twill/internal/testenv/netns"
)

const section = "## CNI plugin"

func main() {
	bin := flag.String("bin", "bin/cni", "directory with the flannel, bridge, host-local and portmap plugins (make plugins); empty builds them into a temporary directory")
	pods := flag.Int("pods", 100, "pods per run")
	parallel := flag.Int("parallel", 10, "concurrent pods in the parallel run")
	results := flag.String("results", "", "markdown file whose \""+section+"\" section is replaced (or appended); empty prints to stdout")
	rounds := flag.Int("rounds", 5, "rounds the modes take turns in; -pods are split among them")
	before := flag.String("before", "", "directory with another build's flannel plugin (and the same standard plugins), measured as one more mode")
	flag.Parse()
	if *rounds < 1 || *pods < *rounds || *parallel < 0 {
		fmt.Fprintf(os.Stderr, "bench/cni: want -rounds ≥ 1, -pods ≥ -rounds and -parallel ≥ 0 (0: no parallel run), got %d, %d, %d\n", *rounds, *pods, *parallel)
		os.Exit(2)
	}
	if err := run(*bin, *before, *pods, *parallel, *rounds, *results); err != nil {
		fmt.Fprintln(os.Stderr, "bench/cni:", err)
		os.Exit(1)
	}
}

// sample is one run's latencies.
type sample struct {
	name     string
	add, del []time.Duration
	wall     time.Duration
}

func run(bin, before string, pods, parallel, rounds int, results string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it creates network namespaces, bridges and veths")
	}
	work, err := os.MkdirTemp("", "twill-bench-cni-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "bin")
		if err := cnihost.BuildPlugins(bin); err != nil {
			return err
		}
	}
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	for name := range cnihost.Plugins {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil && name != "loopback" {
			return fmt.Errorf("%s: run `make plugins` first, or pass -bin \"\" to build them: %w", name, err)
		}
	}

	type mode struct {
		name   string
		bin    string
		direct bool
		conc   int
	}
	modes := []mode{
		{"flannel → bridge + host-local, one pod at a time", bin, false, 1},
		{"bridge + host-local directly (baseline), one pod at a time", bin, true, 1},
	}
	if before != "" {
		if before, err = filepath.Abs(before); err != nil {
			return err
		}
		modes = append(modes, mode{"flannel of -before → bridge + host-local, one pod at a time", before, false, 1})
	}
	if parallel > 0 {
		modes = append(modes, mode{fmt.Sprintf("flannel → bridge + host-local, %d pods at a time", parallel), bin, false, parallel})
	}
	// The modes take turns in rounds, so a change in the machine's load
	// during the run hits them alike.
	samples := make([]sample, len(modes))
	for r := range rounds {
		n := pods / rounds
		if r < pods%rounds {
			n++
		}
		for i, mode := range modes {
			s, err := measure(mode.bin, filepath.Join(work, fmt.Sprint(r, i)), n, mode.direct, mode.conc)
			if err != nil {
				return fmt.Errorf("%s: %w", mode.name, err)
			}
			samples[i].name = mode.name
			samples[i].add = append(samples[i].add, s.add...)
			samples[i].del = append(samples[i].del, s.del...)
			samples[i].wall += s.wall
		}
	}
	ps, err := measurePieces(bin, work, pods)
	if err != nil {
		return fmt.Errorf("timing the plugin's pieces: %w", err)
	}
	md := render(samples, pods, rounds) + ps
	if results == "" {
		fmt.Print(md)
		return nil
	}
	return report.ReplaceSection(results, section, md)
}

// directList is the bridge configuration the flannel plugin would build for
// the benchmark's subnet.env, given to libcni without the flannel step.
func directList(h *cnihost.Host) (*libcni.NetworkConfigList, error) {
	list := map[string]any{
		"name": cnihost.NetworkName, "cniVersion": "1.1.0",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "mtu": 1450, "ipMasq": false, "isGateway": true,
				"hairpinMode": true, "isDefaultGateway": true,
				"ipam": map[string]any{
					"type": "host-local", "dataDir": h.IPAMDir,
					"ranges": []any{[]any{map[string]any{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}}},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	data, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(data)
}

func measure(bin, dir string, pods int, direct bool, conc int) (sample, error) {
	var s sample
	h, err := cnihost.NewHost(bin, dir, cnihost.Options{})
	if err != nil {
		return s, err
	}
	defer h.Close()
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.1.1/24", 1450, true); err != nil {
		return s, err
	}
	if direct {
		if h.List, err = directList(h); err != nil {
			return s, err
		}
	}
	ctx := context.Background()
	nss := make([]*netns.NS, pods+1)
	for i := range nss {
		if nss[i], err = h.NewPod(); err != nil {
			return s, err
		}
	}
	// Warm-up pod: creates cni0, so every measured ADD is a pod's, not the
	// node's first.
	if _, err := h.Add(ctx, cnihost.Runtime("warmup", nss[pods])); err != nil {
		return s, fmt.Errorf("warm-up ADD: %w", err)
	}
	s.add = make([]time.Duration, pods)
	s.del = make([]time.Duration, pods)
	each := func(f func(i int) error) error {
		var wg sync.WaitGroup
		errs := make([]error, pods)
		next := make(chan int)
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					errs[i] = f(i)
				}
			}()
		}
		for i := range pods {
			next <- i
		}
		close(next)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	start := time.Now()
	err = each(func(i int) error {
		t0 := time.Now()
		_, err := h.Add(ctx, cnihost.Runtime(fmt.Sprintf("pod%d", i), nss[i]))
		s.add[i] = time.Since(t0)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("ADD: %w", err)
	}
	err = each(func(i int) error {
		t0 := time.Now()
		err := h.Del(ctx, cnihost.Runtime(fmt.Sprintf("pod%d", i), nss[i]))
		s.del[i] = time.Since(t0)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("DEL: %w", err)
	}
	s.wall = time.Since(start)
	return s, h.Del(ctx, cnihost.Runtime("warmup", nss[pods]))
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func render(samples []sample, pods, rounds int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", section)
	fmt.Fprintf(&b, "`go run ./bench/cni -pods %d -rounds %d` (as root): %d pods per mode, the modes taking turns in %d rounds; ADD then DEL of each pod through libcni with the conflist `cbr0` (flannel with `hairpinMode` and `isDefaultGateway`, then portmap), real bridge/host-local/portmap v1.9.1, in a throwaway host network namespace. Latency in ms per pod as the runtime sees it. Measured %s on %d CPUs (%s/%s), load average %s during the run (other work on the machine shows in the tails).\n\n",
		pods, rounds, pods, rounds, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, loadavg())
	b.WriteString("| run | ADD p50 | ADD p99 | ADD max | DEL p50 | DEL p99 | DEL max | pods/s (ADD+DEL) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %.0f |\n", s.name,
			ms(pct(s.add, .5)), ms(pct(s.add, .99)), ms(slices.Max(s.add)),
			ms(pct(s.del, .5)), ms(pct(s.del, .99)), ms(slices.Max(s.del)),
			float64(pods)/s.wall.Seconds())
	}
	b.WriteString("\nThe difference between the first two rows is the flannel plugin's own cost: one more process, reading subnet.env, writing the saved configuration on ADD and removing it on DEL.\n")
	return b.String()
}
