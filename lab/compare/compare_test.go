package compare

import (
	"encoding/json"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab/trace/path"
)

func TestParseIperf(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		bps     float64
		bytes   int64
		wantErr string
	}{
		{"ok", `{"start":{},"end":{"sum_sent":{"bytes":9,"bits_per_second":1},"sum_received":{"bytes":2500000000,"bits_per_second":9.5e9}}}`, 9.5e9, 2500000000, ""},
		{"warning before the document", "Defaulted container \"main\"\n" + `{"end":{"sum_received":{"bytes":10,"bits_per_second":80}}}`, 80, 10, ""},
		{"server busy", `{"start":{},"end":{},"error":"the server is busy running a test. try again later"}`, 0, 0, "server is busy"},
		{"no data", `{"end":{"sum_received":{"bytes":0,"bits_per_second":0}}}`, 0, 0, "no data"},
		{"not json", "error: unable to upgrade connection", 0, 0, "parsing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseIperf([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.BitsPerSecond != tt.bps || r.Bytes != tt.bytes {
				t.Errorf("got %+v, want %v bit/s, %d bytes", r, tt.bps, tt.bytes)
			}
		})
	}
}

func TestPingPercentiles(t *testing.T) {
	out := `PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.
64 bytes from 10.244.2.2: icmp_seq=1 ttl=62 time=0.412 ms
64 bytes from 10.244.2.2: icmp_seq=2 ttl=62 time=0.100 ms
64 bytes from 10.244.2.2: icmp_seq=3 ttl=62 time=1.50 ms
64 bytes from 10.244.2.2: icmp_seq=4 ttl=62 time=0.200 ms

--- 10.244.2.2 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 40ms
rtt min/avg/max/mdev = 0.100/0.553/1.500/0.555 ms
`
	ts := parsePingTimes(out)
	if len(ts) != 4 {
		t.Fatalf("parsed %d times, want 4 (the summary line is no ping): %v", len(ts), ts)
	}
	if got, want := percentile(ts, 50), 200*time.Microsecond; got != want {
		t.Errorf("p50 = %v, want %v", got, want)
	}
	if got, want := percentile(ts, 99), 1500*time.Microsecond; got != want {
		t.Errorf("p99 = %v, want %v", got, want)
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing must be 0")
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := report.Median(tt.xs); got != tt.want {
			t.Errorf("report.Median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat("cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n")
	if err != nil {
		t.Fatal(err)
	}
	if st.Busy != 161 || st.Total != 1181 {
		t.Errorf("got %+v, want busy 161 (all but idle and iowait), total 1181", st)
	}
	if _, err := parseProcStat("intr 1\n"); err == nil {
		t.Error("no cpu line: want an error")
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Skip(err)
	}
	if st, err := parseProcStat(string(b)); err != nil || st.Total == 0 {
		t.Errorf("this machine's /proc/stat: %+v, %v", st, err)
	}
}

func TestParseMTU(t *testing.T) {
	if m, err := parseMTU("1450\n"); err != nil || m != 1450 {
		t.Errorf("parseMTU(1450) = %d, %v", m, err)
	}
	for _, bad := range []string{"", "eth0", "12"} {
		if _, err := parseMTU(bad); err == nil {
			t.Errorf("parseMTU(%q): want an error", bad)
		}
	}
}

func TestParseEthtoolFeatures(t *testing.T) {
	out := `Features for flannel.1:
rx-checksumming: on
tx-checksumming: on
	tx-checksum-ip-generic: on
generic-receive-offload: off
tcp-segmentation-offload: on
	tx-tcp-segmentation: on
rx-vlan-filter: off [fixed]
`
	fs := parseEthtoolFeatures(out)
	for name, want := range map[string]bool{"tx-checksumming": true, "generic-receive-offload": false, "tx-tcp-segmentation": true, "rx-vlan-filter": false} {
		if got, ok := fs[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}

func TestMasqueradedSource(t *testing.T) {
	out := "18:40:01.1 IP 172.18.0.3 > 203.0.113.10: ICMP echo request, id 7, seq 1, length 64\n" +
		"18:40:01.1 IP 203.0.113.10 > 172.18.0.3: ICMP echo reply, id 7, seq 1, length 64\n"
	if got := masqueradedSource(out, net.ParseIP("203.0.113.10")); !got.Equal(net.ParseIP("172.18.0.3")) {
		t.Errorf("source = %v, want 172.18.0.3", got)
	}
	if got := masqueradedSource("", net.ParseIP("203.0.113.10")); got != nil {
		t.Errorf("no capture: source = %v, want nil", got)
	}
}

func sampleReport() *Report {
	res := func(mode string, mtu, over int, g1, g4 float64) Result {
		return Result{Mode: mode, MTU: mtu, Overhead: over, Throughput1: []float64{g1 * 1e9}, Throughput4: []float64{g4 * 1e9},
			RTTs: []time.Duration{100 * time.Microsecond, 300 * time.Microsecond}, Sent: 2, BusySeconds: 2, Bytes: 4e9}
	}
	ip := net.ParseIP
	return &Report{
		Started: time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC), Finished: time.Date(2026, 11, 23, 18, 5, 0, 0, time.UTC),
		Plan:    Plan{Seconds: 10, Rounds: 1, Pings: 2, Interval: "0.01", TuneSecs: 5, TuneRounds: 1},
		Machine: Machine{CPUs: 2, Kernel: "6.1", LoadBefore: "1 / 1 / 1", LoadAfter: "2 / 2 / 2", OtherLabs: []string{"e2e"}},
		Labs: []LabRun{
			{Backend: "vxlan", Underlay: res("underlay", 1500, 0, 8, 8), Overlay: res("vxlan", 1450, 50, 6, 4),
				SrcNode: ip("172.18.0.3"), DstNode: ip("172.18.0.4"), SrcPod: ip("10.244.1.2"), DstPod: ip("10.244.2.2"),
				Encap: Encapsulation{VXLAN: true}, MasqSource: ip("172.18.0.3"),
				Tuning: []TuneResult{{Setting: "defaults", Result: res("vxlan", 0, 0, 6, 0)}, {Setting: "gro off", Error: "fixed"},
					{Setting: "tx off", Result: res("vxlan", 0, 0, 1, 0)}}},
			{Backend: "host-gw", Underlay: res("underlay", 1500, 0, 9, 9), Overlay: res("host-gw", 1500, 0, 9, 9),
				Encap: Encapsulation{Plain: true}},
		},
	}
}

func TestReportRendering(t *testing.T) {
	r := sampleReport()
	if got, want := r.Headline(), "vxlan/underlay = 0.75 (1 stream), 0.50 (4 streams); host-gw/underlay = 1.00 (1 stream), 1.00 (4 streams)"; got != want {
		t.Errorf("headline:\n%s\nwant\n%s", got, want)
	}
	md := r.Markdown()
	for _, want := range []string{"| vxlan (pod → pod) | 1450 | 50 | 6.00 | 4.00 | **0.75 / 0.50** |", "**VXLAN**", "**plain**", "= the node's IP (masqueraded)", "shared: other work ran on the machine during the run (other labs: e2e)", "could not apply: fixed", "| 0.50 |", "| tx off | 1.00 | -83% | 0.50 | 1.00 | hurts |", "Kept: the defaults"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	svg := r.SVG()
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Errorf("chart is not well-formed XML: %v\n%s", err, svg)
	}
	if n := strings.Count(svg, "<rect x="); n != 8 {
		t.Errorf("chart has %d bars, want 8 (4 rows × 2 stream counts)", n)
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	var back Report
	if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err != nil || json.Unmarshal(b, &back) != nil || back.Headline() != r.Headline() {
		t.Errorf("report.json does not round-trip: %v", err)
	}
	results := filepath.Join(dir, "RESULTS.md")
	if err := os.WriteFile(results, []byte("# Benchmark results\n\n## CNI plugin\n\nx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteResultsSection(results); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(results)
	if !strings.Contains(string(b), "## CNI plugin\n\nx\n") || !strings.Contains(string(b), "## Data path\n") || !strings.Contains(string(b), "### Settings tried") {
		t.Errorf("RESULTS.md:\n%s", b)
	}
}

// TestReportDualStackRows: a dual-stack lab's IPv6 measurements get rows
// of their own, with ratios to the IPv6 underlay, and a headline part.
func TestReportDualStackRows(t *testing.T) {
	r := sampleReport()
	l := &r.Labs[0]
	v6 := func(mode string, mtu, over int, g float64) Result {
		return Result{Mode: mode, MTU: mtu, Overhead: over, Throughput1: []float64{g * 1e9}, Throughput4: []float64{g * 1e9},
			RTTs: []time.Duration{200 * time.Microsecond}, Sent: 1, BusySeconds: 1, Bytes: 1e9}
	}
	l.More = []FamilyRun{{Family: family.IPv6, Underlay: v6("underlay", 1500, 0, 8), Overlay: v6("vxlan", 1430, 70, 4)}}
	if h := r.Headline(); !strings.Contains(h, "vxlan IPv6/underlay IPv6 = 0.50 (1 stream), 0.50 (4 streams)") {
		t.Errorf("headline lacks the IPv6 ratio: %s", h)
	}
	md := r.Markdown()
	for _, want := range []string{"| underlay IPv6 (node → node, vxlan lab) | 1500 | 0 | 8.00 |", "| vxlan IPv6 (pod → pod) | 1430 | 70 | 4.00 | 4.00 | **0.50 / 0.50** |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestVerdict(t *testing.T) {
	d := []float64{6, 7}
	for _, tt := range []struct {
		v    []float64
		want string
	}{{[]float64{8, 7.5}, "helps"}, {[]float64{8, 7.2}, "within noise"}, {[]float64{1, 5.9}, "hurts"}, {[]float64{5, 6.5}, "within noise"}, {nil, "-"}} {
		if got := verdict(tt.v, d); got != tt.want {
			t.Errorf("verdict(%v, %v) = %q, want %q", tt.v, d, got, tt.want)
		}
	}
}

func TestClassifyPodCapture(t *testing.T) {
	ip := net.ParseIP
	vxlan := `18:37:23.714822 IP 172.18.0.3.58455 > 172.18.0.4.8472: OTV, flags [I] (0x08), overlay 0, instance 1
IP 10.244.0.2 > 10.244.2.2: ICMP echo request, id 32, seq 1, length 64
18:37:23.714883 IP 172.18.0.4.58455 > 172.18.0.3.8472: OTV, flags [I] (0x08), overlay 0, instance 1
IP 10.244.2.2 > 10.244.0.2: ICMP echo reply, id 32, seq 1, length 64
`
	plain := `18:38:41.125279 IP 10.244.0.2 > 10.244.2.2: ICMP echo request, id 34, seq 1, length 64
18:38:41.125359 IP 10.244.2.2 > 10.244.0.2: ICMP echo reply, id 34, seq 1, length 64
`
	tests := []struct {
		name         string
		out          string
		vxlan, plain bool
	}{
		{"vxlan", vxlan, true, false},
		{"host-gw", plain, false, true},
		{"nothing", "", false, false},
		{"vxlan to another node", strings.ReplaceAll(vxlan, "172.18.0.4.8472", "172.18.0.9.8472"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := classifyPodCapture(tt.out, ip("172.18.0.3"), ip("172.18.0.4"), ip("10.244.0.2"), ip("10.244.2.2"))
			if e.VXLAN != tt.vxlan || e.Plain != tt.plain {
				t.Errorf("got %+v, want vxlan %v plain %v", e, tt.vxlan, tt.plain)
			}
			if (tt.vxlan || tt.plain) && e.Evidence == "" {
				t.Error("no evidence quoted")
			}
		})
	}
}

// TestReachabilityRendering: the reachability section has a row per check
// and a column per mode that traced, ✓ with the source address seen where
// it matters, ✗ with the break as evidence, – for a check that does not
// apply, and it round-trips through report.json.
func TestReachabilityRendering(t *testing.T) {
	r := sampleReport()
	checks := func(vm, other bool, vmSrc, inetSrc string) *Reachability {
		var rc Reachability
		for _, what := range ReachChecks {
			c := ReachCheck{What: what, From: "compare/cli", To: "x", OK: true, Evidence: "eth0 in pod compare/x saw: IP 10.244.1.2 > 10.244.2.2: ICMP echo request"}
			switch what {
			case "VM → pod":
				c.OK = vm
				if !vm {
					c.Evidence = "stops at br0 in underlay u: no route to 10.244.1.2 in underlay u"
				}
			case "pod → VM":
				c.Source = vmSrc
			case "pod → internet":
				c.Source = inetSrc
			case "pod → pod, other subnet":
				if !other {
					c.Skipped = "no node on another subnet"
				}
			}
			rc.Checks = append(rc.Checks, c)
		}
		return &rc
	}
	r.Labs[0].Reach = checks(false, true, "172.18.0.3", "172.18.0.3")
	r.Labs[1].Reach = checks(false, false, "172.18.0.3", "172.18.0.3")
	r.Labs = append(r.Labs, LabRun{Backend: "host-gw", Mode: "host-gw + underlay routes", Underlay: r.Labs[1].Underlay, Overlay: r.Labs[1].Overlay,
		Reach: checks(true, true, "10.244.1.2", "172.18.0.3")})
	md := r.Markdown()
	for _, want := range []string{
		"## Reachability and addressing",
		"| check | vxlan | host-gw | host-gw + underlay routes |",
		"| pod → pod, other subnet | ✓ | – | ✓ |",
		"| VM → pod | ✗ | ✗ | ✓ |",
		"| pod → VM | ✓ from 172.18.0.3 | ✓ from 172.18.0.3 | ✓ from 10.244.1.2 |",
		"| pod → internet | ✓ from 172.18.0.3 | ✓ from 172.18.0.3 | ✓ from 172.18.0.3 |",
		"### host-gw: evidence",
		"- VM → pod ✗ (`twill lab trace compare/cli x`): stops at br0 in underlay u: no route",
		"- pod → pod, other subnet: not run: no node on another subnet",
		"| host-gw + underlay routes (pod → pod) | 1500 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "## Reachability"), strings.Index(md, "## Proof on the wire"); i < 0 || j < i {
		t.Errorf("the reachability section should come before the proof on the wire")
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	var back Report
	if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err != nil || json.Unmarshal(b, &back) != nil || back.Markdown() != md {
		t.Errorf("report.json does not round-trip the reachability section: %v", err)
	}
	// A report without reachability (a dual-stack run) has no section.
	if md := sampleReport().Markdown(); strings.Contains(md, "Reachability") {
		t.Errorf("a report without checks has a reachability section:\n%s", md)
	}
}

func TestJudge(t *testing.T) {
	whole := &path.Path{Hops: []path.Hop{
		{Dir: path.Request, Interface: "eth0", Src: "10.244.1.2", Seen: []string{"a"}},
		{Dir: path.Request, Interface: "eth0", In: true, Place: path.Place{Kind: path.Pod, Name: "compare/vm"}, Src: "10.244.1.2", Action: "delivered", Seen: []string{"IP 10.244.1.2 > 172.18.1.10: ICMP echo request"}},
		{Dir: path.Reply, Interface: "eth0", Src: "172.18.1.10", Seen: []string{"b"}},
	}}
	var c ReachCheck
	judge(&c, whole)
	if !c.OK || c.Source != "10.244.1.2" || !strings.Contains(c.Evidence, "saw: IP 10.244.1.2 > 172.18.1.10") {
		t.Errorf("whole path: %+v", c)
	}
	broken := &path.Path{Hops: whole.Hops[:1], Break: &path.Break{Hop: 0, Reason: "no route"}}
	c = ReachCheck{}
	judge(&c, broken)
	if c.OK || !strings.Contains(c.Evidence, "stops at eth0") || !strings.Contains(c.Evidence, "no route") {
		t.Errorf("broken path: %+v", c)
	}
}
