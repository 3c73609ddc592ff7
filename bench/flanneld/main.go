// Command flanneld measures what a cluster pays for flanneld at scale: one
// real flanneld in a network namespace against a real API server holding
// N simulated peer Nodes (podCIDR, flannel annotations and a kubelet-like
// status of about 6 KB each; no hosts behind them). It reports the time from
// start to all peers programmed in the kernel, the time for a new peer to
// appear and for a deleted one to go, peak RSS and CPU seconds. With
// -families ipv4,dual it measures IPv4-only and dual-stack clusters in
// turn (interleaved, -rounds times) and reports dual-stack's cost as ratios
// to IPv4's.
//
//	go run ./bench/flanneld -flanneld bin/flanneld -peers 1000,5000 -results bench/RESULTS.md
//	go run ./bench/flanneld -flanneld bin/flanneld -peers 5000 -families ipv4,dual -rounds 3 -results bench/RESULTS.md
//
// With -firewalls it compares the firewall modes instead, the VXLAN guard's
// set at start and per join and leave among them:
//
//	go run ./bench/flanneld -flanneld bin/flanneld -peers 5000 -firewalls iptables-noguard,iptables,nftables-noguard,nftables -rounds 3 -results bench/RESULTS.md
//
// With -steady it measures the steady state instead: once converged, peers
// rewrite their status as kubelets do while a few change their
// annotations; it reports CPU and bytes read per update, RSS, and the lag
// from an annotation change to the kernel, for one or more builds side by
// side (a short form: -peers 500 -updates 500 -duration 10s):
//
//	go run ./bench/flanneld -steady -flanneld before=/tmp/flanneld-main,after=bin/flanneld -peers 5000 -updates 5000 -duration 60s -annotation-changes 50 -results bench/RESULTS.md
//
// It needs root and the Kubernetes binaries (make k8s).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/internal/testenv/simnodes"
)

const section = "## flanneld at scale"

// dualSection holds the dual-stack comparison.
const dualSection = "## flanneld at scale: dual-stack against IPv4"

var cpuProfile string

// cluster is one kind of cluster the benchmark measures.
type cluster struct {
	name    string // ipv4 or dual, as -families names it
	netConf string
	// devices are the VXLAN devices whose routes count.
	devices []string
	dual    bool
}

var clusters = map[string]cluster{
	"ipv4": {name: "ipv4", netConf: `{"Network": "10.128.0.0/9", "Backend": {"Type": "vxlan"}}`, devices: []string{"flannel.1"}},
	"dual": {name: "dual", netConf: `{"Network": "10.128.0.0/9", "EnableIPv6": true, "IPv6Network": "fd00:10::/48", "Backend": {"Type": "vxlan"}}`,
		devices: []string{"flannel.1", "flannel-v6.1"}, dual: true},
}

func main() {
	bin := flag.String("flanneld", "bin/flanneld", "flanneld binary (make build)")
	peers := flag.String("peers", "1000,5000", "comma-separated peer counts, one run each")
	profile := flag.String("cpu-profile", "", "have flanneld write a CPU profile of the last run here")
	results := flag.String("results", "", "markdown file whose \""+section+"\" section (or with dual, \""+dualSection+"\") is replaced (or appended); empty prints to stdout")
	fams := flag.String("families", "ipv4", "comma-separated clusters to measure in turn: ipv4, dual (both: dual-stack reported as ratios to IPv4)")
	firewalls := flag.String("firewalls", "", "instead: compare these firewall modes (iptables, nftables; with "+noGuard+" the VXLAN guard off) at -peers, taking turns, in the \""+fwSection+"\" section")
	rounds := flag.Int("rounds", 0, "how many times each cluster (or firewall mode) is measured, taking turns (default 1, with -firewalls 3)")
	steady := flag.Bool("steady", false, "instead: the steady state after convergence (kubelet status updates, annotation changes) at one -peers count; -flanneld may name several builds, name=path,…, run side by side, in the \""+steadySection+"\" section")
	updates := flag.Int("updates", 5000, "with -steady: status updates of peers")
	duration := flag.Duration("duration", time.Minute, "with -steady: over how long the updates are spread")
	annChanges := flag.Int("annotation-changes", 50, "with -steady: peers that change their public-ip annotation, one at a time, during the updates")
	flag.Parse()
	cpuProfile = *profile
	if *steady {
		if *rounds == 0 {
			*rounds = 1
		}
		n, err := strconv.Atoi(*peers)
		if err != nil {
			err = fmt.Errorf("-peers %q: with -steady, one count", *peers)
		} else {
			err = runSteady(*bin, steadyLoad{peers: n, updates: *updates, annChanges: *annChanges, duration: *duration}, *rounds, *results)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/flanneld:", err)
			os.Exit(1)
		}
		return
	}
	if *firewalls != "" {
		if *rounds == 0 {
			*rounds = 3
		}
		n, err := strconv.Atoi(*peers)
		modes := strings.Split(*firewalls, ",")
		for _, m := range modes {
			if base := strings.TrimSuffix(m, noGuard); base != "iptables" && base != "nftables" {
				err = fmt.Errorf("-firewalls: %q is not iptables or nftables (with %s: the guard off)", m, noGuard)
			}
		}
		if err == nil && *rounds < 1 {
			err = fmt.Errorf("-rounds %d: at least 1", *rounds)
		}
		if err == nil {
			err = measureFirewalls(*bin, n, *rounds, modes, *results)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/flanneld:", err)
			os.Exit(1)
		}
		return
	}
	if *rounds == 0 {
		*rounds = 1
	}
	if err := run(*bin, *peers, *fams, *rounds, *results); err != nil {
		fmt.Fprintln(os.Stderr, "bench/flanneld:", err)
		os.Exit(1)
	}
}

type result struct {
	cluster                string
	peers                  int
	allProgrammed, newPeer time.Duration
	deletedPeer            time.Duration
	cpuConverge, cpuTotal  float64
	peakRSSMiB             float64
	createNodes            time.Duration
	// cacheSync and reconcile are flanneld's own account (its log): the
	// paged node list, then the first full reconcile.
	cacheSync, reconcile string
}

func run(bin, peerList, famList string, rounds int, results string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it creates network namespaces")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: run `make build` first: %w", bin, err)
	}
	var cs []cluster
	for _, s := range strings.Split(famList, ",") {
		c, ok := clusters[strings.TrimSpace(s)]
		if !ok {
			return fmt.Errorf("-families: %q is not ipv4 or dual", s)
		}
		cs = append(cs, c)
	}
	if rounds < 1 {
		return fmt.Errorf("-rounds %d: want 1 or more", rounds)
	}
	var rs []result
	for _, s := range strings.Split(peerList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 30000 {
			return fmt.Errorf("-peers: %q is not a count between 1 and 30000", s)
		}
		for round := 0; round < rounds; round++ {
			for _, c := range cs {
				r, err := measure(bin, c, n)
				if err != nil {
					return fmt.Errorf("%s, %d peers: %w", c.name, n, err)
				}
				fmt.Fprintf(os.Stderr, "%s, %d peers: all programmed %s, new peer %s, deleted peer %s, peak RSS %.1f MiB, CPU %.2f s to converge\n",
					c.name, n, r.allProgrammed.Round(time.Millisecond), r.newPeer.Round(time.Millisecond), r.deletedPeer.Round(time.Millisecond), r.peakRSSMiB, r.cpuConverge)
				rs = append(rs, r)
			}
		}
	}
	sec, md := section, render(rs)
	if len(cs) > 1 || cs[0].dual {
		sec, md = dualSection, renderDual(rs, rounds)
	}
	if results == "" {
		fmt.Print(md)
		return nil
	}
	return report.ReplaceSection(results, sec, md)
}

func measure(bin string, c cluster, peers int) (result, error) {
	r := result{cluster: c.name, peers: peers}
	dir, err := os.MkdirTemp("", "twill-bench-flanneld-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env, err := testenv.Start(ctx, dir, fmt.Sprintf("twb%d", os.Getpid()%100000), bin)
	if err != nil {
		return r, err
	}
	defer env.Close()

	start := time.Now()
	if err := simnodes.Create(ctx, env.Client, 0, peers, c.sim()); err != nil {
		return r, err
	}
	r.createNodes = time.Since(start)
	own := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}, Spec: v1.NodeSpec{PodCIDR: "10.255.255.0/24", PodCIDRs: []string{"10.255.255.0/24"}}}
	var addrs []string
	if c.dual {
		own.Spec.PodCIDRs = append(own.Spec.PodCIDRs, "fd00:10:0:ffff::/64")
		addrs = append(addrs, "fc00:f853:ccd:e793::10")
	}
	if _, err := env.Client.CoreV1().Nodes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
		return r, err
	}
	node, err := env.AddNode("bench-node", "172.18.0.10", addrs...)
	if err != nil {
		return r, err
	}
	h := node.Net().Netlink

	runtime.GC()
	t0 := time.Now()
	args := []string{"--ip-masq"}
	if cpuProfile != "" {
		args = append(args, "--cpu-profile="+cpuProfile)
	}
	cmd, err := node.StartFlanneld(c.netConf, args...)
	if err != nil {
		return r, err
	}
	pid := cmd.Process.Pid // nsenter execs flanneld in place: same PID
	defer func() { _ = testenv.Stop(cmd) }()
	if err := waitRoutes(ctx, h, c.devices, func(n int) bool { return n >= peers }); err != nil {
		return r, fmt.Errorf("waiting for %d routes: %w (see %s)", peers, err, node.LogFile())
	}
	r.allProgrammed = time.Since(t0)
	if r.cpuConverge, err = cpuSeconds(pid); err != nil {
		return r, err
	}

	// One node joins.
	t1 := time.Now()
	if err := simnodes.Create(ctx, env.Client, peers, peers+1, c.sim()); err != nil {
		return r, err
	}
	if err := waitRoutes(ctx, h, c.devices, func(n int) bool { return n >= peers+1 }); err != nil {
		return r, err
	}
	r.newPeer = time.Since(t1)
	// One node leaves.
	t2 := time.Now()
	if err := env.Client.CoreV1().Nodes().Delete(ctx, simnodes.Name(peers), metav1.DeleteOptions{}); err != nil {
		return r, err
	}
	if err := waitRoutes(ctx, h, c.devices, func(n int) bool { return n <= peers }); err != nil {
		return r, err
	}
	r.deletedPeer = time.Since(t2)
	if r.cpuTotal, err = cpuSeconds(pid); err != nil {
		return r, err
	}
	if r.peakRSSMiB, err = peakRSS(pid); err != nil {
		return r, err
	}
	if log, err := os.ReadFile(node.LogFile()); err == nil {
		for _, line := range strings.Split(string(log), "\n") {
			if i := strings.Index(line, "node cache synced in "); i >= 0 && r.cacheSync == "" {
				r.cacheSync = strings.Fields(line[i+len("node cache synced in "):])[0]
				r.cacheSync = strings.TrimSuffix(r.cacheSync, `"`)
			}
			if i := strings.Index(line, "took="); i >= 0 && strings.Contains(line, "full reconcile") && r.reconcile == "" {
				r.reconcile = strings.Fields(line[i+len("took="):])[0]
			}
			if strings.Contains(line, "synced") || strings.Contains(line, "full reconcile") || strings.Contains(line, "level=warn") || strings.Contains(line, "level=error") || (len(line) > 5 && (line[0] == 'E' || line[0] == 'W' || line[0] == 'I') && line[1] >= '0' && line[1] <= '9') {
				fmt.Fprintln(os.Stderr, "  flanneld:", line)
			}
		}
	}
	return r, nil
}

// sim is what kind of simulated peers the cluster has.
func (c cluster) sim() simnodes.Options { return simnodes.Options{Dual: c.dual} }

// waitRoutes polls the node's peer routes (those with a gateway) on each
// of devices until ok holds for every device's count.
func waitRoutes(ctx context.Context, h *netlink.Handle, devices []string, ok func(int) bool) error {
	for {
		done := true
		n := 0
		for _, dev := range devices {
			n = 0
			if l, err := h.LinkByName(dev); err == nil {
				rs, err := h.RouteList(l, netlink.FAMILY_ALL)
				if err == nil {
					for _, r := range rs {
						if r.Dst != nil && r.Gw != nil {
							n++
						}
					}
				}
			}
			if !ok(n) {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (at %d routes)", ctx.Err(), n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cpuSeconds is user+system time of pid so far.
func cpuSeconds(pid int) (float64, error) { return proc.CPUSeconds(pid, false) }

// peakRSS is VmHWM of pid in MiB.
func peakRSS(pid int) (float64, error) { return proc.PeakRSSMiB(pid) }

func render(rs []result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "%s\n\n", section)
	fmt.Fprintf(&b, "`go run ./bench/flanneld -flanneld bin/flanneld -peers %s -results bench/RESULTS.md` (as root, after `make build k8s`): one real flanneld (vxlan, --ip-masq) in a network namespace against a real kube-apiserver v1.37.2 + etcd holding N simulated peer Nodes (podCIDR, flannel annotations, a kubelet-like status of about 6 KB: 30 images, node info, conditions). Time is from process start to N routes on flannel.1 in the kernel (each with its neighbour and FDB entry, programmed before the route). Measured %s on %s, %d CPUs, load average %s.\n\n",
		joinPeers(rs), time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " / "))
	b.WriteString("| peers | start → all peers programmed | node list (peers programmed page by page during it) | then: first full reconcile | new peer in kernel | deleted peer gone | CPU s to converge | CPU s total | peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %.2f | %.2f | %.1f MiB |\n", r.peers,
			r.allProgrammed.Round(time.Millisecond), r.cacheSync, r.reconcile, r.newPeer.Round(time.Millisecond), r.deletedPeer.Round(time.Millisecond),
			r.cpuConverge, r.cpuTotal, r.peakRSSMiB)
	}
	b.WriteString("\nTargets at 5,000 peers on 2 cores: all programmed within 1 s of start, peak RSS ≤ 40 MB, ≤ 0.7 CPU-seconds to converge. For scale, upstream flannel on such a harness: 4.1 s, 193 MB, 2.3 CPU-seconds (figure from the issue, not re-measured here).\n")
	return b.String()
}

func joinPeers(rs []result) string {
	var s []string
	seen := map[int]bool{}
	for _, r := range rs {
		if !seen[r.peers] {
			seen[r.peers] = true
			s = append(s, strconv.Itoa(r.peers))
		}
	}
	return strings.Join(s, ",")
}

// renderDual reports every run, the clusters' medians per peer count, and
// dual-stack's medians as ratios to IPv4's.
func renderDual(rs []result, rounds int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "%s\n\n", dualSection)
	fmt.Fprintf(&b, "`go run ./bench/flanneld -flanneld bin/flanneld -peers %s -families ipv4,dual -rounds %d -results bench/RESULTS.md` (as root, after `make build k8s`): the harness of \"flanneld at scale\", once with IPv4-only peers and once dual-stack (every peer with an IPv6 podCIDR, flannel's `backend-v6-data` and `public-ipv6` annotations; the node programs flannel.1 and flannel-v6.1), the two taking turns %d times. Time is from process start to N peer routes on every VXLAN device. Measured %s on %s, %d CPUs, load average at the end %s; the machine is shared, so compare the ratios, which come from runs minutes apart.\n\n",
		joinPeers(rs), rounds, rounds, time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " / "))
	b.WriteString("| cluster | peers | start → all peers programmed | node list | first full reconcile | new peer | deleted peer | CPU s to converge | CPU s total | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %.2f | %.2f | %.1f MiB |\n", r.cluster, r.peers,
			r.allProgrammed.Round(time.Millisecond), r.cacheSync, r.reconcile, r.newPeer.Round(time.Millisecond), r.deletedPeer.Round(time.Millisecond),
			r.cpuConverge, r.cpuTotal, r.peakRSSMiB)
	}
	b.WriteString("\nMedians, and dual-stack as a ratio of IPv4-only:\n\n| peers | programmed ipv4 / dual | ratio | CPU s to converge ipv4 / dual | ratio | peak RSS ipv4 / dual | ratio |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	seen := map[int]bool{}
	for _, r := range rs {
		if seen[r.peers] {
			continue
		}
		seen[r.peers] = true
		med := func(cl string, f func(result) float64) float64 {
			var xs []float64
			for _, o := range rs {
				if o.peers == r.peers && o.cluster == cl {
					xs = append(xs, f(o))
				}
			}
			return report.Median(xs)
		}
		prog := func(o result) float64 { return o.allProgrammed.Seconds() }
		cpu := func(o result) float64 { return o.cpuConverge }
		rss := func(o result) float64 { return o.peakRSSMiB }
		p4, p6 := med("ipv4", prog), med("dual", prog)
		c4, c6 := med("ipv4", cpu), med("dual", cpu)
		m4, m6 := med("ipv4", rss), med("dual", rss)
		fmt.Fprintf(&b, "| %d | %.0f ms / %.0f ms | %.2f | %.2f / %.2f | %.2f | %.1f / %.1f MiB | %.2f |\n", r.peers, p4*1000, p6*1000, p6/p4, c4, c6, c6/c4, m4, m6, m6/m4)
	}
	b.WriteString("\nTargets for dual-stack at 5,000 peers: all programmed within 1.5× the IPv4 figure, CPU ≤ 1.5× IPv4's, peak RSS ≤ 45 MiB.\n")
	return b.String()
}
