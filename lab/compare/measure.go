package compare

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/images"
)

// namespace holds the pods compare makes.
const namespace = "compare"

// userHZ is the unit of /proc/stat: the kernel reports USER_HZ ticks, 100
// on every Linux architecture Twill runs on.
const userHZ = 100

// Result is what one mode measured.
type Result struct {
	// Mode is "underlay", "vxlan" or "host-gw".
	Mode string
	// MTU is eth0's MTU where the traffic starts (the pod, or the node for
	// the underlay); Overhead is the underlay's MTU minus it: the bytes of
	// encapsulation each packet carries.
	MTU, Overhead int
	// Throughput1 and Throughput4 are iperf3's received bits/s, one value
	// per round, with 1 and 4 parallel streams.
	Throughput1, Throughput4 []float64
	// RTTs are the answered pings' round-trip times; Sent the pings sent.
	RTTs []time.Duration
	Sent int
	// BusySeconds is the whole machine's busy CPU time during the iperf3
	// runs, and Bytes what they moved.
	BusySeconds float64
	Bytes       int64
}

// Median1 and Median4 are the median throughputs in bits/s.
func (r Result) Median1() float64 { return report.Median(r.Throughput1) }

// Median4 is the median 4-stream throughput in bits/s.
func (r Result) Median4() float64 { return report.Median(r.Throughput4) }

// P50 and P99 are round-trip time percentiles.
func (r Result) P50() time.Duration { return percentile(r.RTTs, 50) }

// P99 is the 99th percentile round-trip time.
func (r Result) P99() time.Duration { return percentile(r.RTTs, 99) }

// CPUSecondsPerGB is the machine's busy CPU time per 10⁹ bytes moved.
func (r Result) CPUSecondsPerGB() float64 {
	if r.Bytes == 0 {
		return 0
	}
	return r.BusySeconds / (float64(r.Bytes) / 1e9)
}

// Capture is a tcpdump on the sending node's eth0.
type Capture struct {
	// Command is the tcpdump command line, Output what it printed.
	Command, Output string
}

// LabRun is everything measured in one backend's lab.
type LabRun struct {
	// Backend is the lab's backend; Underlay and Overlay what node-to-node
	// and pod-to-pod traffic measured in it.
	Backend           string
	Underlay, Overlay Result
	// Mode names the lab's mode (Mode.Name); empty in reports made
	// before modes, which were named by their backend.
	Mode string `json:",omitempty"`
	// Reach is the reachability section's checks (IPv4 labs).
	Reach *Reachability `json:",omitempty"`
	// SrcNode, DstNode, SrcPod and DstPod are the addresses traffic went
	// between.
	SrcNode, DstNode, SrcPod, DstPod net.IP
	// PodCapture is a pod-to-pod ping seen on the sending node's eth0 and
	// Encap what it shows.
	PodCapture Capture
	Encap      Encapsulation
	// InternetCapture is a pod-to-internet ping seen there, and
	// MasqSource the source address it left with.
	InternetCapture Capture
	MasqSource      net.IP
	// More holds the same throughput and latency measurements over the
	// lab's other IP families (a dual-stack lab: IPv6 pod → pod against
	// the IPv6 underlay), between the same pods.
	More []FamilyRun `json:",omitempty"`
	// Tuning holds the data-path experiments (vxlan lab, full runs only).
	Tuning []TuneResult
	// Load is the machine's load average when the measurements ended.
	Load string
}

// FamilyRun is what node-to-node and pod-to-pod traffic of one IP family
// measured in a lab.
type FamilyRun struct {
	Family            family.Family
	Underlay, Overlay Result
}

type podInfo struct {
	name, node string
	// ip is the pod's first address; ips all, one per family of the lab.
	ip  net.IP
	ips []net.IP
}

// ipOf is the pod's address of family f.
func (p podInfo) ipOf(f family.Family) net.IP {
	for _, ip := range p.ips {
		if a, ok := netip.AddrFromSlice(ip); ok && family.Of(a) == f {
			return ip
		}
	}
	return nil
}

// measurer runs the measurements in one lab.
type measurer struct {
	c    *lab.Cluster
	p    Plan
	logf func(string, ...any)

	worker, worker2 string
	// srv and cli use the pod network; hsrv and hcli the node's (the
	// underlay ceiling). Servers run on worker2, clients on worker.
	srv, cli, hsrv, hcli podInfo
}

const opTimeout = 3 * time.Minute

// setup starts the iperf3 servers and the clients and waits until they are
// Ready (a server is Ready when it accepts connections).
func (m *measurer) setup(ctx context.Context) error {
	m.worker, m.worker2 = m.c.Name+"-worker", m.c.Name+"-worker2"
	m.srv = podInfo{name: "srv", node: m.worker2}
	m.cli = podInfo{name: "cli", node: m.worker}
	m.hsrv = podInfo{name: "host-srv", node: m.worker2}
	m.hcli = podInfo{name: "host-cli", node: m.worker}
	items := []any{map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": namespace},
	}}
	for _, p := range []struct {
		pod    podInfo
		server bool
		host   bool
	}{{m.srv, true, false}, {m.cli, false, false}, {m.hsrv, true, true}, {m.hcli, false, true}} {
		ctr := map[string]any{
			"name": "main", "image": images.NetshootRef, "imagePullPolicy": "Never",
			"command": []string{"sleep", "infinity"},
		}
		if p.server {
			ctr["command"] = []string{"iperf3", "-s"}
			ctr["readinessProbe"] = map[string]any{
				"tcpSocket":     map[string]any{"port": 5201},
				"periodSeconds": 1,
			}
		}
		items = append(items, map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": p.pod.name, "namespace": namespace},
			"spec": map[string]any{
				"nodeSelector":                  map[string]string{"kubernetes.io/hostname": p.pod.node},
				"tolerations":                   []map[string]string{{"operator": "Exists"}},
				"terminationGracePeriodSeconds": 0,
				"hostNetwork":                   p.host,
				"containers":                    []any{ctr},
			},
		})
	}
	if err := m.applyAndWait(ctx, items, "measurement"); err != nil {
		return err
	}
	out, err := m.kubectl(ctx, "get", "pods", "-n", namespace, "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.podIPs[*].ip}{"\n"}{end}`)
	if err != nil {
		return err
	}
	ips := map[string][]net.IP{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		for _, s := range f[min(1, len(f)):] {
			if ip := net.ParseIP(s); ip != nil {
				ips[f[0]] = append(ips[f[0]], ip)
			}
		}
	}
	for _, p := range []*podInfo{&m.srv, &m.cli, &m.hsrv, &m.hcli} {
		if p.ips = ips[p.name]; len(p.ips) != len(m.c.Families()) {
			return fmt.Errorf("pod %s has the addresses %v, want one of each of %v:\n%s", p.name, p.ips, m.c.Families(), out)
		}
		p.ip = p.ips[0]
	}
	m.logf("pods ready: client %s on %s, server %s on %s", m.cli.ip, m.worker, m.srv.ip, m.worker2)
	return nil
}

// applyAndWait applies items (objects of the compare namespace) as one
// List and waits until every pod in the namespace is Ready; what names
// the pods in errors.
func (m *measurer) applyAndWait(ctx context.Context, items []any, what string) error {
	manifest, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd, err := m.c.KubectlCmd(actx, "apply", "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating the %s pods: %w: %s", what, err, bytes.TrimSpace(out))
	}
	if _, err := m.kubectl(ctx, "wait", "-n", namespace, "--for=condition=Ready", "pod", "--all", "--timeout=170s"); err != nil {
		desc, _ := m.kubectl(ctx, "get", "pods", "-n", namespace, "-o", "wide")
		return fmt.Errorf("%s pods not Ready: %w\n%s", what, err, desc)
	}
	return nil
}

func (m *measurer) kubectl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return m.c.Kubectl(ctx, args...)
}

func (m *measurer) podExec(ctx context.Context, p podInfo, cmd ...string) (string, error) {
	return m.kubectl(ctx, append([]string{"exec", "-n", namespace, p.name, "--"}, cmd...)...)
}

// measure runs every measurement of one lab: the underlay and the
// overlay take turns, so drifting load on the machine hits both alike.
func (m *measurer) measure(ctx context.Context, backend string) (*LabRun, error) {
	run := &LabRun{
		Backend:  backend,
		Underlay: Result{Mode: "underlay"},
		Overlay:  Result{Mode: backend},
		SrcNode:  m.hcli.ip, DstNode: m.hsrv.ip, SrcPod: m.cli.ip, DstPod: m.srv.ip,
	}
	fams := m.c.Families()
	if err := m.measurePair(ctx, fams[0], &run.Underlay, &run.Overlay); err != nil {
		return run, err
	}
	for _, f := range fams[1:] {
		fr := FamilyRun{Family: f, Underlay: Result{Mode: "underlay"}, Overlay: Result{Mode: backend}}
		if err := m.measurePair(ctx, f, &fr.Underlay, &fr.Overlay); err != nil {
			return run, err
		}
		run.More = append(run.More, fr)
	}

	var err error
	filter := fmt.Sprintf("icmp or (udp port 8472 and host %s)", m.hsrv.ip)
	run.PodCapture, err = m.capture(ctx, filter, 6, func() error {
		_, err := m.podExec(ctx, m.cli, "ping", "-n", "-c", "8", "-i", "0.2", "-W", "2", m.srv.ip.String())
		return err
	})
	if err != nil {
		return run, fmt.Errorf("capturing pod-to-pod traffic: %w", err)
	}
	run.Encap = classifyPodCapture(run.PodCapture.Output, m.hcli.ip, m.hsrv.ip, m.cli.ip, m.srv.ip)
	m.logf("on the wire: vxlan=%v plain=%v", run.Encap.VXLAN, run.Encap.Plain)

	// The internet of the lab's first family: the capture's "icmp" is
	// IPv4's (compare runs ipv4 and dual labs).
	filter = fmt.Sprintf("icmp and host %s", lab.InternetIP)
	run.InternetCapture, err = m.capture(ctx, filter, 2, func() error {
		_, err := m.podExec(ctx, m.cli, "ping", "-n", "-c", "4", "-i", "0.2", "-W", "2", lab.InternetIP.String())
		return err
	})
	if err != nil {
		return run, fmt.Errorf("capturing pod-to-internet traffic: %w", err)
	}
	run.MasqSource = masqueradedSource(run.InternetCapture.Output, lab.InternetIP)
	m.logf("pod → %s leaves with source %v", lab.InternetIP, run.MasqSource)
	return run, nil
}

// measurePair measures, over family f, the underlay (node → node) and the
// overlay (pod → pod), the two taking turns so drifting load hits both
// alike: MTU, throughput with 1 and 4 streams, ping round trips.
func (m *measurer) measurePair(ctx context.Context, f family.Family, under, over *Result) error {
	modes := []struct {
		res      *Result
		cli, srv podInfo
	}{{under, m.hcli, m.hsrv}, {over, m.cli, m.srv}}
	for _, md := range modes {
		out, err := m.podExec(ctx, md.cli, "cat", "/sys/class/net/eth0/mtu")
		if err != nil {
			return fmt.Errorf("reading the MTU: %w", err)
		}
		if md.res.MTU, err = parseMTU(out); err != nil {
			return err
		}
	}
	over.Overhead = under.MTU - over.MTU
	for round := 0; round < m.p.Rounds; round++ {
		for _, streams := range []int{1, 4} {
			for _, md := range modes {
				bps, err := m.iperf(ctx, md.cli, md.srv.ipOf(f), streams, m.p.Seconds, md.res)
				if err != nil {
					return err
				}
				if streams == 1 {
					md.res.Throughput1 = append(md.res.Throughput1, bps)
				} else {
					md.res.Throughput4 = append(md.res.Throughput4, bps)
				}
				m.logf("%s %s %d stream(s), round %d: %.2f Gbit/s", md.res.Mode, f, streams, round+1, bps/1e9)
			}
		}
	}
	for _, md := range modes {
		dst := md.srv.ipOf(f)
		out, err := m.podExec(ctx, md.cli, "ping", "-n", "-c", fmt.Sprint(m.p.Pings), "-i", m.p.Interval, "-W", "2", dst.String())
		md.res.RTTs = parsePingTimes(out)
		md.res.Sent = m.p.Pings
		if len(md.res.RTTs) == 0 {
			return fmt.Errorf("ping %s from %s: no answer: %v", dst, md.cli.name, err)
		}
		m.logf("%s %s ping: p50 %s p99 %s (%d/%d answered)", md.res.Mode, f, md.res.P50(), md.res.P99(), len(md.res.RTTs), md.res.Sent)
	}
	return nil
}

// iperf runs one iperf3 client in cli against dst and adds the machine's
// busy CPU time and the bytes moved to res. It returns bits/s.
func (m *measurer) iperf(ctx context.Context, cli podInfo, dst net.IP, streams, seconds int, res *Result) (float64, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		before, err := readProcStat()
		if err != nil {
			return 0, err
		}
		out, err := m.podExec(ctx, cli, "iperf3", "-c", dst.String(), "-t", fmt.Sprint(seconds), "-P", fmt.Sprint(streams), "-J")
		after, serr := readProcStat()
		if serr != nil {
			return 0, serr
		}
		var r iperfResult
		if err == nil {
			r, err = parseIperf([]byte(out))
		}
		if err == nil {
			if res != nil {
				res.BusySeconds += float64(after.Busy-before.Busy) / userHZ
				res.Bytes += r.Bytes
			}
			return r.BitsPerSecond, nil
		}
		// The server takes one test at a time and may still be closing
		// the previous one.
		if ctx.Err() != nil || time.Now().After(deadline) {
			return 0, fmt.Errorf("iperf3 from %s to %s (%d streams): %w", cli.name, dst, streams, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func readProcStat() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("reading the machine's CPU times: %w", err)
	}
	return parseProcStat(string(b))
}

// capture runs tcpdump on the sending node's eth0 until it has seen count
// packets matching filter, with traffic made by send once tcpdump listens.
func (m *measurer) capture(ctx context.Context, filter string, count int, send func() error) (Capture, error) {
	argv := []string{"tcpdump", "-c", fmt.Sprint(count), "-nn", "-l", "-i", "eth0", filter}
	c := Capture{Command: strings.Join(argv[:len(argv)-1], " ") + " '" + filter + "'"}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd, err := m.c.ExecCmd(cctx, m.worker, argv...)
	if err != nil {
		return c, err
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return c, err
	}
	if err := cmd.Start(); err != nil {
		return c, fmt.Errorf("starting tcpdump on %s: %w", m.worker, err)
	}
	// tcpdump says "listening on eth0" once the capture is active.
	listening := make(chan struct{})
	readDone := make(chan struct{})
	var errText strings.Builder
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			errText.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "listening on") {
				once = true
				close(listening)
			}
		}
		if !once {
			close(listening)
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-listening:
	case <-cctx.Done():
	}
	sendErr := send()
	<-readDone
	werr := cmd.Wait()
	c.Output = stdout.String()
	if werr != nil {
		return c, fmt.Errorf("tcpdump on %s: %w (sending: %v): %s%s", m.worker, werr, sendErr, errText.String(), c.Output)
	}
	return c, nil
}
