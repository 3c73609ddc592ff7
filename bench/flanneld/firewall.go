package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/firewall/iptables"
	"github.com/twill-net/twill/firewall/nftables"
	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/internal/testenv/simnodes"
)

const fwSection = "## Firewall modes and the VXLAN guard"

// churn is how many peers join, then leave, in each run.
const churn = 10

// noGuard, after a mode's name, runs it with --vxlan-guard=false: the
// baseline the guard's cost shows against.
const noGuard = "-noguard"

// fwRun is one start of flanneld in one firewall mode.
type fwRun struct {
	mode string
	// start → all routes, the full guard set and the first full reconcile
	// done (ready); when the set was full.
	converged, guardFull time.Duration
	// CPU seconds (flanneld and the iptables/nft commands it ran) to
	// converge, during 10 s of idling (two rule checks), and per join and
	// per leave (the mean of churn).
	cpuConverge, cpuIdle, cpuJoin, cpuLeave float64
	// join: Node created → its address in the set and its route in;
	// leave: deleted → both gone (medians of churn).
	join, leave time.Duration
	// ruleWrites counts rule rewrites logged after convergence: a join or
	// a leave must change set elements only.
	ruleWrites int
}

// guardProbe reads a node's guard set in one mode.
type guardProbe interface {
	count() int
	has(ip string) bool
}

type ipsetProbe struct{ h *netlink.Handle }

func (p ipsetProbe) count() int {
	res, err := p.h.IpsetList(iptables.PeersSet)
	if err != nil {
		return 0
	}
	return len(res.Entries)
}

func (p ipsetProbe) has(ip string) bool {
	ok, err := p.h.IpsetTest(iptables.PeersSet, &netlink.IPSetEntry{IP: net.ParseIP(ip).To4()})
	return err == nil && ok
}

type nftProbe struct{ node *testenv.Node }

func (p nftProbe) count() int {
	out, err := p.node.Exec("nft", "list", "set", "ip", nftables.TableIPv4, nftables.PeersSet)
	if err != nil {
		return 0
	}
	return strings.Count(out, "172.19.")
}

func (p nftProbe) has(ip string) bool {
	_, err := p.node.Exec("nft", "get", "element", "ip", nftables.TableIPv4, nftables.PeersSet, "{ "+ip+" }")
	return err == nil
}

// cpuWithChildren is cpuSeconds with the children: flanneld and the
// commands it ran.
func cpuWithChildren(pid int) (float64, error) { return proc.CPUSeconds(pid, true) }

// poll calls ok every 20 ms until it holds.
func poll(ctx context.Context, what string, ok func() bool) error {
	for !ok() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// measureFirewalls starts flanneld at peers peers in each of modes, rounds
// times, the modes taking turns, on one control plane and one node whose
// rules, sets and device are removed between runs.
func measureFirewalls(bin string, peers, rounds int, modes []string, results string) error {
	dir, err := os.MkdirTemp("", "twill-bench-firewall-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	env, err := testenv.Start(ctx, dir, fmt.Sprintf("twf%d", os.Getpid()%100000), bin)
	if err != nil {
		return err
	}
	defer env.Close()
	if err := simnodes.Create(ctx, env.Client, 0, peers, clusters["ipv4"].sim()); err != nil {
		return err
	}
	own := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}, Spec: v1.NodeSpec{PodCIDR: "10.255.255.0/24"}}
	if _, err := env.Client.CoreV1().Nodes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
		return err
	}
	node, err := env.AddNode("bench-node", "172.18.0.10")
	if err != nil {
		return err
	}
	sets, err := netlink.NewHandleAt(node.Net().Handle, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer sets.Close()
	var runs []fwRun
	for round := 0; round < rounds; round++ {
		for _, mode := range modes {
			var probe guardProbe = ipsetProbe{sets}
			if strings.HasPrefix(mode, "nftables") {
				probe = nftProbe{node}
			}
			if strings.HasSuffix(mode, noGuard) {
				probe = nil
			}
			r, err := measureFirewall(ctx, env, node, bin, mode, peers, probe)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w (see %s)", mode, round+1, err, node.LogFile())
			}
			fmt.Fprintf(os.Stderr, "%s round %d: converged %s (guard full at %s), CPU %.2f s; idle 10 s %.3f CPU s; join %s (%.3f CPU s), leave %s (%.3f CPU s), rule writes after converging %d\n",
				mode, round+1, r.converged.Round(time.Millisecond), r.guardFull.Round(time.Millisecond), r.cpuConverge, r.cpuIdle,
				r.join.Round(time.Millisecond), r.cpuJoin, r.leave.Round(time.Millisecond), r.cpuLeave, r.ruleWrites)
			runs = append(runs, r)
		}
	}
	md := renderFirewalls(runs, peers, rounds, modes)
	if results == "" {
		fmt.Print(md)
		return nil
	}
	return report.ReplaceSection(results, fwSection, md)
}

func measureFirewall(ctx context.Context, env *testenv.Env, node *testenv.Node, bin, mode string, peers int, probe guardProbe) (fwRun, error) {
	r := fwRun{mode: mode}
	conf := `{"Network": "10.128.0.0/9", "Backend": {"Type": "vxlan"}}`
	if strings.HasPrefix(mode, "nftables") {
		conf = `{"Network": "10.128.0.0/9", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}`
	}
	args := []string{"--ip-masq"}
	if probe == nil {
		args = append(args, "--vxlan-guard=false")
	}
	// From scratch: no device, no rules or sets of either mode.
	_, _ = node.Exec("ip", "link", "del", "flannel.1")
	if err := os.WriteFile(node.NetConfFile(), []byte(conf), 0o644); err != nil {
		return r, err
	}
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+node.NS, "--", bin, "--remove-iptables", "--net-config-path="+node.NetConfFile()).CombinedOutput(); err != nil {
		return r, fmt.Errorf("removing the rules of the last run: %w\n%s", err, out)
	}
	// The log is appended to run after run.
	old, _ := os.ReadFile(node.LogFile())
	readyBefore := strings.Count(string(old), "node networked: ready")
	runtime.GC()
	t0 := time.Now()
	cmd, err := node.StartFlanneld(conf, args...)
	if err != nil {
		return r, err
	}
	pid := cmd.Process.Pid
	defer func() { _ = testenv.Stop(cmd) }()
	h := node.Net().Netlink
	routes, ready := false, false
	if err := poll(ctx, "every route, the full guard set and readiness", func() bool {
		if !routes {
			_ = waitRoutes(ctx, h, clusters["ipv4"].devices, func(n int) bool { routes = n >= peers; return true })
		}
		if r.guardFull == 0 && (probe == nil || probe.count() >= peers) {
			r.guardFull = time.Since(t0)
		}
		if !ready {
			log, _ := os.ReadFile(node.LogFile())
			ready = strings.Count(string(log), "node networked: ready") > readyBefore
		}
		return routes && r.guardFull != 0 && ready
	}); err != nil {
		return r, err
	}
	r.converged = time.Since(t0)
	if r.cpuConverge, err = cpuWithChildren(pid); err != nil {
		return r, err
	}
	logAt, err := os.Stat(node.LogFile())
	if err != nil {
		return r, err
	}

	// Idle: the rule checks every --iptables-resync (5 s).
	time.Sleep(10 * time.Second)
	cpu, err := cpuWithChildren(pid)
	if err != nil {
		return r, err
	}
	r.cpuIdle = cpu - r.cpuConverge

	// joins nodes join one after the other, then leave one after the
	// other; times are medians, CPU the mean per event.
	var joins, leaves []time.Duration
	cpu0 := cpu
	for i := 0; i < churn; i++ {
		joiner := simnodes.Node(peers+i, clusters["ipv4"].sim())
		ip := joiner.Annotations["flannel.alpha.coreos.com/public-ip"]
		t1 := time.Now()
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, joiner, metav1.CreateOptions{}); err != nil {
			return r, err
		}
		if probe != nil {
			if err := poll(ctx, "the new peer in the guard set", func() bool { return probe.has(ip) }); err != nil {
				return r, err
			}
		}
		// The join's work is done when its route is in too.
		if err := waitRoutes(ctx, h, clusters["ipv4"].devices, func(n int) bool { return n >= peers+i+1 }); err != nil {
			return r, err
		}
		joins = append(joins, time.Since(t1))
	}
	cpu1, err := cpuWithChildren(pid)
	if err != nil {
		return r, err
	}
	for i := 0; i < churn; i++ {
		leaver := simnodes.Node(peers+i, clusters["ipv4"].sim())
		ip := leaver.Annotations["flannel.alpha.coreos.com/public-ip"]
		t2 := time.Now()
		if err := env.Client.CoreV1().Nodes().Delete(ctx, leaver.Name, metav1.DeleteOptions{}); err != nil {
			return r, err
		}
		if err := waitRoutes(ctx, h, clusters["ipv4"].devices, func(n int) bool { return n <= peers+churn-i-1 }); err != nil {
			return r, err
		}
		if probe != nil {
			if err := poll(ctx, "the peer gone from the guard set", func() bool { return !probe.has(ip) }); err != nil {
				return r, err
			}
		}
		leaves = append(leaves, time.Since(t2))
	}
	cpu2, err := cpuWithChildren(pid)
	if err != nil {
		return r, err
	}
	r.join, r.leave = median(joins), median(leaves)
	r.cpuJoin, r.cpuLeave = (cpu1-cpu0)/churn, (cpu2-cpu1)/churn

	log, err := os.ReadFile(node.LogFile())
	if err != nil {
		return r, err
	}
	r.ruleWrites = strings.Count(string(log[logAt.Size():]), "packet-filter rules installed or repaired")
	return r, nil
}

func median[T int | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func renderFirewalls(runs []fwRun, peers, rounds int, modes []string) string {
	type col struct {
		name string
		val  func(fwRun) float64
		unit string
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	cols := []col{
		{"start → all routes (and the full guard set), ready", func(r fwRun) float64 { return ms(r.converged) }, "ms"},
		{"CPU s to converge", func(r fwRun) float64 { return r.cpuConverge }, "s"},
		{"CPU s idle, 10 s (2 rule checks)", func(r fwRun) float64 { return r.cpuIdle }, "s"},
		{"join: route (and address in the set)", func(r fwRun) float64 { return ms(r.join) }, "ms"},
		{"CPU s per join (set element, FDB, neighbour, route)", func(r fwRun) float64 { return r.cpuJoin }, "s"},
		{"leave: route (and address) gone", func(r fwRun) float64 { return ms(r.leave) }, "ms"},
		{"CPU s per leave", func(r fwRun) float64 { return r.cpuLeave }, "s"},
	}
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "%s\n\n", fwSection)
	fmt.Fprintf(&b, "`go run ./bench/flanneld -flanneld bin/flanneld -peers %d -firewalls %s -rounds %d -results bench/RESULTS.md` (as root, after `make build k8s`): the harness above (one real flanneld, vxlan, `--ip-masq`, against a real API server holding %d simulated peers), the VXLAN guard on except in the `%s` modes (`--vxlan-guard=false`, the baseline the guard's cost shows against), started from scratch (no device, no rules or sets) once per mode and round, the modes taking turns. CPU counts flanneld and the `iptables`/`nft` commands it ran. A join is a new Node until its route is in the kernel and, with the guard, its address in the guard's set (polled: an ipset test over netlink, `nft get element`); a leave is its deletion until both are gone; each run has %d joins then %d leaves, one at a time (median time, mean CPU per event; CPU is counted in 10 ms ticks). Medians of %d rounds. Measured %s on %s, %d CPUs, load average %s (other work on the machine).\n\n",
		peers, strings.Join(modes, ","), rounds, peers, noGuard, churn, churn, rounds, time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " / "))
	pairs := ratios(modes)
	b.WriteString("| |")
	for _, m := range modes {
		b.WriteString(" " + m + " |")
	}
	for _, p := range pairs {
		fmt.Fprintf(&b, " %s / %s |", p[0], p[1])
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(modes)+len(pairs)) + "\n")
	writes := map[string]int{}
	for _, r := range runs {
		writes[r.mode] += r.ruleWrites
	}
	for _, c := range cols {
		fmt.Fprintf(&b, "| %s |", c.name)
		med := map[string]float64{}
		for _, m := range modes {
			var xs []float64
			for _, r := range runs {
				if r.mode == m {
					xs = append(xs, c.val(r))
				}
			}
			med[m] = median(xs)
			if c.unit == "ms" {
				fmt.Fprintf(&b, " %.0f ms |", med[m])
			} else {
				fmt.Fprintf(&b, " %.3f |", med[m])
			}
		}
		for _, p := range pairs {
			if med[p[1]] > 0 {
				fmt.Fprintf(&b, " %.2f |", med[p[0]]/med[p[1]])
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nRule rewrites logged after converging (joins, leaves, idle checks), all rounds: ")
	var ws []string
	for _, m := range modes {
		ws = append(ws, fmt.Sprintf("%s %d", m, writes[m]))
	}
	b.WriteString(strings.Join(ws, ", ") + ": a join or a leave changes one set element and no rule.\n")
	b.WriteString("\nWhere the guard's cost lies: from scratch, its set and rule go in at the end of the first full reconcile, once every peer is known (iptables: one netlink message per address, then the chain's iptables commands; nftables: one transaction with every element), so readiness waits for them; on a loaded machine most of that wall time is those commands waiting for a CPU, the CPU row is what they cost. A restart in the same mode finds the guard in place and only compares the set. A join or a leave costs one netlink message more with the iptables guard, one `nft` command more with the nftables one.\n")
	return b.String()
}

// ratios are the pairs of modes whose ratio the table shows: nftables
// against iptables, and each mode with the guard against without.
func ratios(modes []string) [][2]string {
	var out [][2]string
	has := func(m string) bool { return slices.Contains(modes, m) }
	if has("nftables") && has("iptables") {
		out = append(out, [2]string{"nftables", "iptables"})
	}
	for _, m := range []string{"iptables", "nftables"} {
		if has(m) && has(m+noGuard) {
			out = append(out, [2]string{m, m + noGuard})
		}
	}
	return out
}
