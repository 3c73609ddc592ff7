package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/simnodes"
)

// steadySection holds the steady-state run.
const steadySection = "## flanneld at scale: the steady state"

// steadyLoad is what the peers do once flanneld has converged.
type steadyLoad struct {
	peers, updates, annChanges int
	duration                   time.Duration
}

// binary is one flanneld build the steady state measures.
type binary struct{ name, path string }

// parseBinaries reads -flanneld in steady mode: name=path pairs, or one
// path.
func parseBinaries(s string) ([]binary, error) {
	var out []binary
	for _, f := range strings.Split(s, ",") {
		name, path, ok := strings.Cut(f, "=")
		if !ok {
			name, path = "flanneld", f
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("-flanneld %s: %w (run `make build`)", f, err)
		}
		if slices.ContainsFunc(out, func(b binary) bool { return b.name == name }) {
			return nil, fmt.Errorf("-flanneld: %q named twice", name)
		}
		out = append(out, binary{name, abs})
	}
	return out, nil
}

// steadyResult is one flanneld's account of the steady phase.
type steadyResult struct {
	name                   string
	cpu                    float64 // CPU seconds in the steady phase
	rchar                  int64   // bytes read in the steady phase
	conn                   int64   // bytes received on its API connections
	connPerUpdate          float64
	rssStart, rssMax       float64 // MiB
	rssEnd                 float64
	lags                   []time.Duration // annotation change → kernel
	updates, annChanges    int
	duration               time.Duration
	peers                  int
	missedAnn              int
	steadyCPUPer1000       float64
	bytesPerUpdate         float64
	lagP50, lagP99, lagMax time.Duration
}

// measureSteady runs every binary side by side, each on a node of its own,
// against one API server: they converge one after the other, then see the
// same stream of status updates and annotation changes.
func measureSteady(bins []binary, load steadyLoad, round int) ([]steadyResult, error) {
	dir, err := os.MkdirTemp("", "twill-bench-steady-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	env, err := testenv.Start(ctx, dir, fmt.Sprintf("tws%d", os.Getpid()%100000), bins[0].path)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	c := clusters["ipv4"]
	if err := simnodes.Create(ctx, env.Client, 0, load.peers, c.sim()); err != nil {
		return nil, err
	}
	// Take turns in who converges first, round by round.
	order := slices.Clone(bins)
	if round%2 == 1 {
		slices.Reverse(order)
	}
	type running struct {
		b    binary
		pid  int
		h    *netlink.Handle
		log  string
		node *testenv.Node
	}
	var rs []running
	release := make(chan struct{})
	defer close(release) // after every flanneld is stopped (defers run last first)
	for i, b := range order {
		name := "bench-" + b.name
		own := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDR: fmt.Sprintf("10.255.%d.0/24", 255-i)}}
		own.Spec.PodCIDRs = []string{own.Spec.PodCIDR}
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		node, err := env.AddNode(name, fmt.Sprintf("172.18.0.%d", 10+i))
		if err != nil {
			return nil, err
		}
		env.Flanneld = b.path
		runtime.GC()
		t0 := time.Now()
		args := []string{"--ip-masq"}
		if cpuProfile != "" && b == bins[len(bins)-1] {
			args = append(args, "--cpu-profile="+cpuProfile)
		}
		cmd, err := pinned(func() (*exec.Cmd, error) { return node.StartFlanneld(c.netConf, args...) }, release)
		if err != nil {
			return nil, err
		}
		defer func() { _ = testenv.Stop(cmd) }()
		h := node.Net().Netlink
		// Peers: the simulated ones and the other binaries' nodes.
		if err := waitRoutes(ctx, h, c.devices, func(n int) bool { return n >= load.peers+i }); err != nil {
			return nil, fmt.Errorf("%s: waiting for %d routes: %w (see %s)", b.name, load.peers, err, node.LogFile())
		}
		r := running{b: b, pid: cmd.Process.Pid, h: h, log: node.LogFile(), node: node}
		fmt.Fprintf(os.Stderr, "%s: converged in %s\n", b.name, time.Since(t0).Round(time.Millisecond))
		rs = append(rs, r)
	}
	// Each flanneld has every other's node as a peer by now.
	for _, r := range rs {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		err := waitRoutes(wctx, r.h, c.devices, func(n int) bool { return n >= load.peers+len(rs)-1 })
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("%s: waiting for the other builds' nodes: %w (see %s)", r.b.name, err, r.log)
		}
	}

	out := make([]steadyResult, len(rs))
	for i, r := range rs {
		out[i] = steadyResult{name: r.b.name, peers: load.peers, updates: load.updates, annChanges: load.annChanges}
		if out[i].cpu, err = cpuSeconds(r.pid); err != nil {
			return nil, err
		}
		if out[i].rchar, err = rchar(r.pid); err != nil {
			return nil, err
		}
		if out[i].conn, err = apiBytes(r.node); err != nil {
			return nil, err
		}
		out[i].rssStart, _ = rssMiB(r.pid)
		out[i].rssMax = out[i].rssStart
	}
	stopRSS := make(chan struct{})
	var rssWG sync.WaitGroup
	rssWG.Add(1)
	go func() {
		defer rssWG.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopRSS:
				return
			case <-t.C:
			}
			for i, r := range rs {
				if v, err := rssMiB(r.pid); err == nil && v > out[i].rssMax {
					out[i].rssMax = v
				}
			}
		}
	}()

	start := time.Now()
	var patched atomic.Int64
	uerr := make(chan error, 1)
	go func() { uerr <- updateStatuses(ctx, env.Client, load, &patched) }()
	// Annotation changes, spread over the run, one at a time: a peer's
	// public address moves; its FDB entry follows on every node.
	interval := load.duration / time.Duration(load.annChanges+1)
	updates := uerr // nil once the updates are done
	wait := func(t time.Time) error {
		for {
			select {
			case <-time.After(time.Until(t)):
				return nil
			case err := <-updates:
				if err != nil {
					return fmt.Errorf("status updates: %w", err)
				}
				updates = nil
			}
		}
	}
	for k := 0; k < load.annChanges; k++ {
		if err := wait(start.Add(time.Duration(k+1) * interval)); err != nil {
			return nil, err
		}
		peer := (k*977 + 13) % load.peers
		ip := net.IPv4(172, 21, byte(peer/250), byte(peer%250+1))
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"%s"}}}`, ip)
		t0 := time.Now()
		if _, err := env.Client.CoreV1().Nodes().Patch(ctx, simnodes.Name(peer), types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
			return nil, fmt.Errorf("changing %s's annotations: %w", simnodes.Name(peer), err)
		}
		// Every build's kernel is polled at once, so no build's lag
		// includes the wait for another's.
		mac := simnodes.MAC(peer)
		var wg sync.WaitGroup
		for i, r := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lag, err := waitFDB(ctx, r.h, "flannel.1", mac, ip, t0, 30*time.Second)
				if err != nil {
					out[i].missedAnn++
					fmt.Fprintf(os.Stderr, "%s: %s: %v\n", r.b.name, simnodes.Name(peer), err)
					return
				}
				out[i].lags = append(out[i].lags, lag)
			}()
		}
		wg.Wait()
	}
	// The whole of -duration, even when the updates were done early.
	if err := wait(start.Add(load.duration)); err != nil {
		return nil, err
	}
	if updates != nil {
		if err := <-updates; err != nil {
			return nil, fmt.Errorf("status updates: %w", err)
		}
	}
	elapsed := time.Since(start)
	close(stopRSS)
	rssWG.Wait()
	for i, r := range rs {
		cpu, err := cpuSeconds(r.pid)
		if err != nil {
			return nil, err
		}
		rc, err := rchar(r.pid)
		if err != nil {
			return nil, err
		}
		o := &out[i]
		conn, err := apiBytes(r.node)
		if err != nil {
			return nil, err
		}
		o.cpu, o.rchar, o.conn = cpu-o.cpu, rc-o.rchar, conn-o.conn
		o.rssEnd, _ = rssMiB(r.pid)
		o.duration = elapsed
		n := float64(patched.Load() + int64(load.annChanges))
		o.steadyCPUPer1000 = o.cpu / n * 1000
		o.bytesPerUpdate = float64(o.rchar) / n
		o.connPerUpdate = float64(o.conn) / n
		slices.Sort(o.lags)
		if len(o.lags) > 0 {
			o.lagP50 = o.lags[len(o.lags)/2]
			o.lagP99 = o.lags[(len(o.lags)*99)/100]
			o.lagMax = o.lags[len(o.lags)-1]
		}
		fmt.Fprintf(os.Stderr, "%s: %.0f updates in %s: CPU %.3f s (%.0f ms per 1,000), read %.0f B per update (%.0f B on its API connection), RSS %.1f → max %.1f MiB, annotation → kernel p50 %s p99 %s (%d missed)\n",
			o.name, n, elapsed.Round(time.Millisecond), o.cpu, o.steadyCPUPer1000*1000, o.bytesPerUpdate, o.connPerUpdate, o.rssStart, o.rssMax,
			o.lagP50.Round(time.Millisecond), o.lagP99.Round(time.Millisecond), o.missedAnn)
		if log, err := os.ReadFile(r.log); err == nil {
			for _, line := range strings.Split(string(log), "\n") {
				if strings.Contains(line, "level=warn") || strings.Contains(line, "level=error") {
					fmt.Fprintln(os.Stderr, "  flanneld:", line)
				}
			}
		}
	}
	return out, nil
}

// pinned runs start on an OS thread kept until release is closed.
// testenv starts flanneld with a parent-death signal, which the kernel ties
// to the thread that forked it, and Go ends a thread whose goroutine exits
// locked to it (network namespace work does): a flanneld forked there would
// be killed mid-run, as one was when two ran side by side.
func pinned(start func() (*exec.Cmd, error), release <-chan struct{}) (*exec.Cmd, error) {
	type started struct {
		cmd *exec.Cmd
		err error
	}
	ch := make(chan started)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd, err := start()
		ch <- started{cmd, err}
		<-release
	}()
	r := <-ch
	return r.cmd, r.err
}

// updateStatuses rewrites load.updates peers' statuses, spread evenly over
// load.duration, as kubelets do: the heartbeat times of the conditions, and
// in one update in ten a changed image list. It counts them in done.
func updateStatuses(ctx context.Context, c kubernetes.Interface, load steadyLoad, done *atomic.Int64) error {
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				peer := rand.IntN(load.peers)
				data, err := statusPatch(peer, k)
				if err == nil {
					_, err = c.CoreV1().Nodes().Patch(ctx, simnodes.Name(peer), types.StrategicMergePatchType, data, metav1.PatchOptions{FieldManager: "kubelet"}, "status")
				}
				if err != nil {
					errs <- fmt.Errorf("patching %s's status: %w", simnodes.Name(peer), err)
					return
				}
				done.Add(1)
			}
		}()
	}
	var err error
feed:
	for k := 0; k < load.updates; k++ {
		at := start.Add(time.Duration(k) * load.duration / time.Duration(load.updates))
		select {
		case <-time.After(time.Until(at)):
		case err = <-errs:
			break feed
		}
		select {
		case jobs <- k:
		case err = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// statusPatch is a kubelet's status update number k of peer: new
// heartbeat times on every condition; every tenth update also changes an
// image.
func statusPatch(peer, k int) ([]byte, error) {
	now := metav1.Now()
	var conds []v1.NodeCondition
	for _, t := range []v1.NodeConditionType{v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure, v1.NodeReady} {
		status := v1.ConditionFalse
		if t == v1.NodeReady {
			status = v1.ConditionTrue
		}
		conds = append(conds, v1.NodeCondition{Type: t, Status: status, Reason: "Kubelet" + string(t), LastHeartbeatTime: now})
	}
	st := map[string]any{"conditions": conds}
	if k%10 == 0 {
		var images []v1.ContainerImage
		for j := 0; j < 30; j++ {
			tag := j
			if j == k/10%30 {
				tag = 1000 + k
			}
			images = append(images, v1.ContainerImage{
				Names: []string{
					fmt.Sprintf("registry.example.com/team-%02d/service-%02d@sha256:%064x", j%7, j, tag*7919+peer),
					fmt.Sprintf("registry.example.com/team-%02d/service-%02d:v1.%d.%d", j%7, j, tag, peer%10),
				},
				SizeBytes: int64(20_000_000 + j*1_000_000),
			})
		}
		st["images"] = images
	}
	return json.Marshal(map[string]any{"status": st})
}

// waitFDB polls dev's FDB until mac points at ip, and returns how long
// after since that was.
func waitFDB(ctx context.Context, h *netlink.Handle, dev string, mac net.HardwareAddr, ip net.IP, since time.Time, limit time.Duration) (time.Duration, error) {
	l, err := h.LinkByName(dev)
	if err != nil {
		return 0, err
	}
	deadline := since.Add(limit)
	for {
		ns, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		if err == nil {
			for _, n := range ns {
				if n.HardwareAddr.String() == mac.String() && n.IP.Equal(ip) {
					return time.Since(since), nil
				}
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("FDB entry %s → %s not there after %s", mac, ip, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// rchar is the bytes pid has read (sockets included) so far.
func rchar(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no rchar for pid %d", pid)
}

// apiBytes sums bytes_received of the node's TCP connections to the API
// server (ss, in the node's network namespace: flanneld is the only
// process there that talks to it).
func apiBytes(n *testenv.Node) (int64, error) {
	out, err := n.Exec("ss", "-tinH", "state", "established", "( dport = :6443 )")
	if err != nil {
		return 0, fmt.Errorf("ss in %s: %w", n.Name, err)
	}
	var sum int64
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "bytes_received:"); ok {
			b, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("ss in %s: %q: %w", n.Name, f, err)
			}
			sum += b
		}
	}
	return sum, nil
}

// rssMiB is VmRSS of pid in MiB.
func rssMiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, err := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// runSteady measures the steady state rounds times and reports it.
func runSteady(binList string, load steadyLoad, rounds int, results string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it creates network namespaces")
	}
	bins, err := parseBinaries(binList)
	if err != nil {
		return err
	}
	switch {
	case load.peers < 1 || load.peers > 30000:
		return fmt.Errorf("-peers %d: want one count between 1 and 30000", load.peers)
	case load.updates < 1:
		return fmt.Errorf("-updates %d: want 1 or more", load.updates)
	case load.annChanges < 0 || load.annChanges > load.peers:
		return fmt.Errorf("-annotation-changes %d: want 0 to -peers", load.annChanges)
	case load.duration <= 0:
		return fmt.Errorf("-duration %s: want more than 0", load.duration)
	case rounds < 1:
		return fmt.Errorf("-rounds %d: want 1 or more", rounds)
	}
	var all []steadyResult
	for round := 0; round < rounds; round++ {
		rs, err := measureSteady(bins, load, round)
		if err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
		all = append(all, rs...)
	}
	md := renderSteady(all, bins, load, rounds)
	if results == "" {
		fmt.Print(md)
		return nil
	}
	return report.ReplaceSection(results, steadySection, md)
}

func renderSteady(rs []steadyResult, bins []binary, load steadyLoad, rounds int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	loadavg, _ := os.ReadFile("/proc/loadavg")
	var flag []string
	for _, bin := range bins {
		flag = append(flag, bin.name+"=…")
	}
	fmt.Fprintf(&b, "%s\n\n", steadySection)
	fmt.Fprintf(&b, "`go run ./bench/flanneld -steady -flanneld %s -peers %d -updates %d -duration %s -annotation-changes %d -rounds %d -results bench/RESULTS.md` (as root, after `make build k8s`): the harness of \"flanneld at scale\" (real kube-apiserver + etcd, %d kubelet-sized peer Nodes), every flanneld build on a node of its own, side by side against the same API server (they converge one after the other, the order alternating by round), then: %d status updates of random peers spread over %s (strategic merge patches of nodes/status as a kubelet sends them: the heartbeat times of 4 conditions, every tenth also one image of 30 changed) while %d peers, one at a time, change their public-ip annotation. CPU, bytes read (`/proc/<pid>/io` rchar: the API server's stream, plus what flanneld reads of the iptables commands it runs) and bytes received on its connection to the API server (`ss -ti` bytes_received in the node's namespace: TLS included) are flanneld's over that phase, per update (status updates and annotation changes together); the lag is from the annotation patch to the peer's FDB entry pointing at the new address on flannel.1. Measured %s on %s, %d CPUs, shared with a CI run, load average at the end %s.\n\n",
		strings.Join(flag, ","), load.peers, load.updates, load.duration, load.annChanges, rounds, load.peers, load.updates, load.duration, load.annChanges,
		time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(loadavg))[:3], " / "))
	b.WriteString("| flanneld | round | updates in | CPU s | CPU ms per 1,000 updates | bytes read per update | bytes received from the API server per update | RSS start → max → end | annotation → kernel p50 / p99 / max | missed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %s | %.2f | %.0f | %.0f | %.0f | %.1f → %.1f → %.1f MiB | %s / %s / %s | %d |\n", r.name, i/len(bins)+1, r.duration.Round(100*time.Millisecond),
			r.cpu, r.steadyCPUPer1000*1000, r.bytesPerUpdate, r.connPerUpdate, r.rssStart, r.rssMax, r.rssEnd,
			r.lagP50.Round(time.Millisecond), r.lagP99.Round(time.Millisecond), r.lagMax.Round(time.Millisecond), r.missedAnn)
	}
	if len(bins) > 1 {
		base := bins[0].name
		fmt.Fprintf(&b, "\nMedians over the rounds, and each build as a ratio of %s's:\n\n| flanneld | CPU ms per 1,000 updates | ratio | bytes read per update | ratio | bytes received per update | ratio | max RSS | annotation → kernel p50 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n", base)
		med := func(name string, f func(steadyResult) float64) float64 {
			var xs []float64
			for _, r := range rs {
				if r.name == name {
					xs = append(xs, f(r))
				}
			}
			return report.Median(xs)
		}
		cpu := func(r steadyResult) float64 { return r.steadyCPUPer1000 * 1000 }
		bytes := func(r steadyResult) float64 { return r.bytesPerUpdate }
		conn := func(r steadyResult) float64 { return r.connPerUpdate }
		for _, bin := range bins {
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f | %.1f MiB | %.0f ms |\n", bin.name, med(bin.name, cpu), med(bin.name, cpu)/med(base, cpu),
				med(bin.name, bytes), med(bin.name, bytes)/med(base, bytes), med(bin.name, conn), med(bin.name, conn)/med(base, conn), med(bin.name, func(r steadyResult) float64 { return r.rssMax }),
				med(bin.name, func(r steadyResult) float64 { return float64(r.lagP50.Milliseconds()) }))
		}
	}
	return b.String()
}
