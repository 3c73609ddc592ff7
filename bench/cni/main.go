// Command cni measures what a pod pays for the flannel CNI plugin: ADD and
// DEL latency per pod through libcni, as a runtime calls it, with the real
// bridge, host-local and portmap plugins in a throwaway host network
// namespace. As a baseline it runs the same pods with the bridge plugin
// configured directly, so the difference is the plugin's own cost.
//
//	go run ./bench/cni -bin bin/cni -pods 100 -results bench/RESULTS.md
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
	flag.Parse()
	if err := run(*bin, *pods, *parallel, *results); err != nil {
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

func run(bin string, pods, parallel int, results string) error {
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

	modes := []struct {
		name   string
		direct bool
		conc   int
	}{
		{"flannel → bridge + host-local, one pod at a time", false, 1},
		{"bridge + host-local directly (baseline), one pod at a time", true, 1},
		{fmt.Sprintf("flannel → bridge + host-local, %d pods at a time", parallel), false, parallel},
	}
	// The modes take turns in rounds, so a change in the machine's load
	// during the run hits them alike.
	const rounds = 5
	samples := make([]sample, len(modes))
	for r := range rounds {
		n := pods / rounds
		if r < pods%rounds {
			n++
		}
		for i, mode := range modes {
			s, err := measure(bin, filepath.Join(work, fmt.Sprint(r, i)), n, mode.direct, mode.conc)
			if err != nil {
				return fmt.Errorf("%s: %w", mode.name, err)
			}
			samples[i].name = mode.name
			samples[i].add = append(samples[i].add, s.add...)
			samples[i].del = append(samples[i].del, s.del...)
			samples[i].wall += s.wall
		}
	}
	md := render(samples, pods)
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

func render(samples []sample, pods int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", section)
	fmt.Fprintf(&b, "`go run ./bench/cni` (as root): %d pods per run, the modes taking turns in 5 rounds; ADD then DEL of each pod through libcni with the conflist `cbr0` (flannel with `hairpinMode` and `isDefaultGateway`, then portmap), real bridge/host-local/portmap v1.9.1, in a throwaway host network namespace. Latency in ms per pod as the runtime sees it. Measured %s on %d CPUs (%s/%s), load average %s during the run (other work on the machine shows in the tails).\n\n",
		pods, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, loadavg())
	b.WriteString("| run | ADD p50 | ADD p99 | ADD max | DEL p50 | DEL p99 | DEL max | pods/s (ADD+DEL) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %.0f |\n", s.name,
			ms(pct(s.add, .5)), ms(pct(s.add, .99)), ms(slices.Max(s.add)),
			ms(pct(s.del, .5)), ms(pct(s.del, .99)), ms(slices.Max(s.del)),
			float64(pods)/s.wall.Seconds())
	}
	b.WriteString("\nThe difference between the first two rows is the flannel plugin's own cost: one more process, reading subnet.env, writing the saved configuration (fsync) on ADD and removing it on DEL.\n")
	return b.String()
}
