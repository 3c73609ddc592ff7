package compare

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/bench/report"
	"github.com/twill-net/twill/lab"
)

// Machine describes where the comparison ran.
type Machine struct {
	CPUs                  int
	CPUModel, Kernel      string
	MemTotal              string
	LoadBefore, LoadAfter string
	// LoadAfterLab holds "backend: load average" as each lab's
	// measurements ended.
	LoadAfterLab []string
	// OtherLabs lists labs other than compare's that existed at the start:
	// their kubelets and pods share the CPUs.
	OtherLabs []string
}

// Report is a whole comparison.
type Report struct {
	Started, Finished time.Time
	Quick             bool
	Plan              Plan
	Machine           Machine
	// Labs holds one run per mode, in IPv4Modes or DualModes order.
	Labs []LabRun
}

func readMachine(ours string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadBefore: loadAverage()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				var kb int64
				fmt.Sscanf(strings.TrimPrefix(l, "MemTotal:"), "%d", &kb)
				m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	m.addOtherLabs(ours)
	return m
}

// Shared says whether other work competed for the CPUs: other labs, or a
// load average above the CPU count.
func (m Machine) Shared() bool {
	if len(m.OtherLabs) > 0 {
		return true
	}
	for _, l := range append([]string{m.LoadBefore, m.LoadAfter}, m.LoadAfterLab...) {
		var one float64
		if _, err := fmt.Sscanf(l, "%f", &one); err == nil && one > float64(m.CPUs) {
			return true
		}
	}
	return false
}

// addOtherLabs adds the labs other than ours that exist now.
func (m *Machine) addOtherLabs(ours string) {
	ents, err := os.ReadDir(lab.StateRoot)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != ours && !slices.Contains(m.OtherLabs, e.Name()) {
			m.OtherLabs = append(m.OtherLabs, e.Name())
		}
	}
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " / ")
}

// label names l's mode in the report.
func (l *LabRun) label() string {
	if l.Mode != "" {
		return l.Mode
	}
	return l.Backend
}

// row is one line of the results table.
type row struct {
	label string
	res   Result
	// base is the underlay measured in the same lab, for ratios.
	base *Result
}

func (r *Report) rows() []row {
	var rows []row
	for i := range r.Labs {
		l := &r.Labs[i]
		rows = append(rows,
			row{label: "underlay (node → node, " + l.label() + " lab)", res: l.Underlay},
			row{label: l.label() + " (pod → pod)", res: l.Overlay, base: &l.Underlay})
		for j := range l.More {
			fr := &l.More[j]
			rows = append(rows,
				row{label: fmt.Sprintf("underlay %s (node → node, %s lab)", fr.Family, l.label()), res: fr.Underlay},
				row{label: fmt.Sprintf("%s %s (pod → pod)", l.label(), fr.Family), res: fr.Overlay, base: &fr.Underlay})
		}
	}
	return rows
}

func gbps(bps float64) string { return fmt.Sprintf("%.2f", bps/1e9) }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// pairedRatio is the median, over rounds, of over/under: each round's
// overlay run is paired with the underlay run just before it, so load that
// drifts during the comparison cancels out.
func pairedRatio(over, under []float64) string {
	var rs []float64
	for i := range min(len(over), len(under)) {
		if under[i] > 0 {
			rs = append(rs, over[i]/under[i])
		}
	}
	if len(rs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", report.Median(rs))
}

// Headline returns the overlay/underlay throughput ratios, the figures
// that carry from one machine to another.
func (r *Report) Headline() string {
	var parts []string
	for _, l := range r.Labs {
		parts = append(parts, fmt.Sprintf("%s/underlay = %s (1 stream), %s (4 streams)", l.label(),
			pairedRatio(l.Overlay.Throughput1, l.Underlay.Throughput1), pairedRatio(l.Overlay.Throughput4, l.Underlay.Throughput4)))
		for _, fr := range l.More {
			parts = append(parts, fmt.Sprintf("%s %s/underlay %s = %s (1 stream), %s (4 streams)", l.label(), fr.Family, fr.Family,
				pairedRatio(fr.Overlay.Throughput1, fr.Underlay.Throughput1), pairedRatio(fr.Overlay.Throughput4, fr.Underlay.Throughput4)))
		}
	}
	return strings.Join(parts, "; ")
}

// PrintTable writes the results as an aligned text table.
func (r *Report) PrintTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tMTU\tOVERHEAD B/PKT\t1 STREAM Gbit/s\t4 STREAMS Gbit/s\tRATIO 1/4 VS UNDERLAY\tRTT p50/p99 ms\tCPU s/GB")
	for _, rw := range r.rows() {
		rat := "1 / 1 (ceiling)"
		if rw.base != nil {
			rat = pairedRatio(rw.res.Throughput1, rw.base.Throughput1) + " / " + pairedRatio(rw.res.Throughput4, rw.base.Throughput4)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s / %s\t%.2f\n", rw.label, rw.res.MTU, rw.res.Overhead,
			gbps(rw.res.Median1()), gbps(rw.res.Median4()), rat, ms(rw.res.P50()), ms(rw.res.P99()), rw.res.CPUSecondsPerGB())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nHeadline: %s\n", r.Headline())
	return err
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := r.Plan
	fmt.Fprintf(&b, "# Overlay vs native: `twill lab compare`\n\n")
	fmt.Fprintf(&b, "Run %s UTC (%s)%s.\n\n", r.Started.UTC().Format("2006-01-02 15:04"), r.Finished.Sub(r.Started).Round(time.Second), map[bool]string{true: ", **--quick** (short runs: figures are indicative only)", false: ""}[r.Quick])
	fmt.Fprintf(&b, "**Headline:** %s.\n\n", r.Headline())
	fmt.Fprintf(&b, "Absolute figures depend on the machine; the ratios are what carries over. ")
	fmt.Fprintf(&b, "Each ratio is the median over rounds of overlay ÷ underlay, each overlay run paired with the underlay run just before it in the same lab, so load that drifts during the comparison cancels out.\n\n")

	b.WriteString(r.machineMarkdown())
	b.WriteString("\n## Method\n\n")
	fmt.Fprintf(&b, "One lab per mode (control plane + `worker` + `worker2`, brought up and removed by compare; the vxlan and the underlay-routes labs of an IPv4 run add `worker3` on a second, routed subnet for the reachability checks). ")
	fmt.Fprintf(&b, "Pod → pod: an `iperf3 -s` pod on worker2, the client pod on worker. Underlay ceiling: the same, with hostNetwork pods (node eth0 → node eth0 over the lab's bridge). ")
	fmt.Fprintf(&b, "Throughput: `iperf3 -c -t %d`, 1 and 4 streams (`-P`), median of %d round(s), receiver side. ", p.Seconds, p.Rounds)
	fmt.Fprintf(&b, "Latency: %d pings at %s s interval, per-packet times, nearest-rank p50/p99. ", p.Pings, p.Interval)
	fmt.Fprintf(&b, "CPU s/GB: the whole machine's busy time from /proc/stat (every lab process runs on this host: both nodes' kernels, iperf3 and kubectl exec) during the iperf3 runs, per 10⁹ bytes received. ")
	fmt.Fprintf(&b, "MTU: eth0 where the traffic starts; overhead = underlay MTU − that MTU. ")
	fmt.Fprintf(&b, "Everything here runs on the same CPUs, so throughput is CPU-bound: when the CPUs are saturated, CPU s/GB is about CPUs ÷ GB/s, and the overlay's extra work per byte shows as lower throughput.\n\n")

	b.WriteString("## Results\n\n")
	b.WriteString("![throughput](throughput.svg)\n\n")
	b.WriteString("| mode | MTU | overhead B/packet | 1 stream Gbit/s | 4 streams Gbit/s | ratio vs underlay (1 / 4 streams) | RTT p50 ms | RTT p99 ms | pings answered | CPU s/GB |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rw := range r.rows() {
		rat := "1 / 1 (ceiling)"
		if rw.base != nil {
			rat = "**" + pairedRatio(rw.res.Throughput1, rw.base.Throughput1) + " / " + pairedRatio(rw.res.Throughput4, rw.base.Throughput4) + "**"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s | %d/%d | %.2f |\n", rw.label, rw.res.MTU, rw.res.Overhead,
			gbps(rw.res.Median1()), gbps(rw.res.Median4()), rat, ms(rw.res.P50()), ms(rw.res.P99()), len(rw.res.RTTs), rw.res.Sent, rw.res.CPUSecondsPerGB())
	}
	b.WriteString("\nEvery round (Gbit/s, 1 stream | 4 streams):\n\n")
	for _, rw := range r.rows() {
		fmt.Fprintf(&b, "- %s: %s | %s\n", rw.label, list(rw.res.Throughput1), list(rw.res.Throughput4))
	}

	b.WriteString("\n")
	b.WriteString(r.reachMarkdown())
	b.WriteString("## Proof on the wire\n\n")
	for _, l := range r.Labs {
		fmt.Fprintf(&b, "### %s\n\n", l.label())
		what := "no VXLAN"
		switch {
		case l.Encap.VXLAN && !l.Encap.Plain:
			what = fmt.Sprintf("**VXLAN**: outer %s → %s UDP 8472, inner %s → %s", l.SrcNode, l.DstNode, l.SrcPod, l.DstPod)
		case l.Encap.Plain && !l.Encap.VXLAN:
			what = fmt.Sprintf("**plain**: pod IPs %s → %s on the wire, no UDP 8472", l.SrcPod, l.DstPod)
		case l.Encap.Plain && l.Encap.VXLAN:
			what = "both VXLAN and plain packets (unexpected)"
		}
		fmt.Fprintf(&b, "Pod %s (worker) pings pod %s (worker2); on worker's eth0: %s.\n\n", l.SrcPod, l.DstPod, what)
		fmt.Fprintf(&b, "```\n# %s\n%s```\n\n", l.PodCapture.Command, l.PodCapture.Output)
		if l.Encap.VXLAN {
			b.WriteString("(tcpdump names UDP 8472 \"OTV\": IANA gave that port to OTV; Linux and flannel use it for VXLAN. The header it decodes is VXLAN's: flags I, VNI (\"instance\") 1, then the pods' packet.)\n\n")
		}
		masq := "no echo request seen"
		if l.MasqSource != nil {
			masq = fmt.Sprintf("source %s", l.MasqSource)
			if l.MasqSource.Equal(l.SrcNode) {
				masq += " = the node's IP (masqueraded)"
			} else if l.MasqSource.Equal(l.SrcPod) {
				masq += " = the pod's IP (NOT masqueraded)"
			}
		}
		fmt.Fprintf(&b, "Pod %s pings %s (the lab's \"internet\"): %s.\n\n", l.SrcPod, lab.InternetIP, masq)
		fmt.Fprintf(&b, "```\n# %s\n%s```\n\n", l.InternetCapture.Command, l.InternetCapture.Output)
	}
	if t := r.tuningMarkdown(); t != "" {
		b.WriteString("## Data-path settings (vxlan)\n\n")
		b.WriteString(t)
	}
	return b.String()
}

func (r *Report) machineMarkdown() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- %d CPUs (%s), %s RAM, kernel %s, %s/%s\n", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- load average (1/5/15 min): %s at the start, %s at the end", m.LoadBefore, m.LoadAfter)
	if len(m.LoadAfterLab) > 0 {
		fmt.Fprintf(&b, "; after each lab's measurements: %s", strings.Join(m.LoadAfterLab, "; "))
	}
	b.WriteString("\n")
	if m.Shared() {
		others := ""
		if len(m.OtherLabs) > 0 {
			others = " (other labs: " + strings.Join(m.OtherLabs, ", ") + ")"
		}
		fmt.Fprintf(&b, "- shared: other work ran on the machine during the run%s; expect noise, trust the ratios more than the absolute figures\n", others)
	}
	return b.String()
}

func (r *Report) tuningMarkdown() string {
	var b strings.Builder
	for _, l := range r.Labs {
		if len(l.Tuning) == 0 {
			continue
		}
		base := l.Tuning[0].Result.Median1()
		fmt.Fprintf(&b, "Pod → pod iperf3, 1 stream, `-t %d`, %d round(s), each setting flipped from its default on both nodes (flannel.1, or the host ends of the pods' veths), the variants taking turns with the defaults; median Gbit/s.\n\n", r.Plan.TuneSecs, r.Plan.TuneRounds)
		b.WriteString("| setting | Gbit/s (median) | vs defaults | CPU s/GB | rounds | verdict |\n|---|---:|---:|---:|---|---|\n")
		var helps []string
		for i, t := range l.Tuning {
			if t.Error != "" {
				fmt.Fprintf(&b, "| %s | - | - | - | could not apply: %s | |\n", t.Setting, t.Error)
				continue
			}
			v := ""
			if i > 0 {
				v = verdict(t.Result.Throughput1, l.Tuning[0].Result.Throughput1)
				if v == "helps" {
					helps = append(helps, fmt.Sprintf("%s (%s)", t.Setting, pct(t.Result.Median1(), base)))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s | %s |\n", t.Setting, gbps(t.Result.Median1()), pct(t.Result.Median1(), base), t.Result.CPUSecondsPerGB(), list(t.Result.Throughput1), v)
		}
		if len(helps) == 0 {
			b.WriteString("\nKept: the defaults. No setting beat them in every round; a verdict is \"helps\" only if every round beats every defaults round by 5% or more, \"hurts\" if every round is below every defaults round.\n")
		} else {
			fmt.Fprintf(&b, "\nBeat the defaults in every round: %s. A candidate for the daemon, to be confirmed on a quiet machine.\n", strings.Join(helps, "; "))
		}
		b.WriteString("\n" + mtuNote + "\n\n")
	}
	return b.String()
}

// mtuNote says why the tuning experiments leave the MTU alone.
const mtuNote = "The MTU is not varied: flannel.1 and the pods get the underlay's MTU minus VXLAN's 50 bytes, the largest that never fragments; a smaller one only adds packets per byte. " +
	"The lever the daemon has that moves VXLAN to host-gw's path is DirectRouting (peers on the node's own subnet are routed plainly, as host-gw), which this run does not measure."

// verdict compares a setting's rounds with the defaults' rounds: "helps"
// when every round beats every defaults round by 5%, "hurts" when every
// round is below every defaults round, else "within noise".
func verdict(v, defaults []float64) string {
	if len(v) == 0 || len(defaults) == 0 {
		return "-"
	}
	switch {
	case slices.Min(v) > slices.Max(defaults)*1.05:
		return "helps"
	case slices.Max(v) < slices.Min(defaults):
		return "hurts"
	}
	return "within noise"
}

func pct(a, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%+.0f%%", (a/base-1)*100)
}

func list(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = gbps(x)
	}
	return strings.Join(s, ", ")
}

// Write puts report.md, throughput.svg and the raw figures (report.json)
// into dir.
func (r *Report) Write(dir string) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "report.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the figures: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "throughput.svg"), []byte(r.SVG()), 0o644); err != nil {
		return fmt.Errorf("writing the chart: %w", err)
	}
	return nil
}

// WriteResultsSection replaces the "## Data path" section of the
// benchmark results file at path with this run's figures.
func (r *Report) WriteResultsSection(path string) error {
	var b strings.Builder
	b.WriteString("## Data path\n\n")
	fmt.Fprintf(&b, "`make compare` (`twill lab compare`), %s UTC; full report in Documentation/compare/report.md. ", r.Started.UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(&b, "%d CPUs, kernel %s, load average %s → %s", r.Machine.CPUs, r.Machine.Kernel, r.Machine.LoadBefore, r.Machine.LoadAfter)
	if r.Machine.Shared() {
		b.WriteString(", machine shared with other work")
	}
	b.WriteString(".\n\n")
	fmt.Fprintf(&b, "Headline: %s.\n\n", r.Headline())
	b.WriteString("| mode | pod MTU | overhead B/packet | 1 stream Gbit/s | 4 streams Gbit/s | RTT p50 / p99 ms | CPU s/GB |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, rw := range r.rows() {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s / %s | %.2f |\n", rw.label, rw.res.MTU, rw.res.Overhead, gbps(rw.res.Median1()), gbps(rw.res.Median4()), ms(rw.res.P50()), ms(rw.res.P99()), rw.res.CPUSecondsPerGB())
	}
	b.WriteString("\n")
	if t := r.tuningMarkdown(); t != "" {
		b.WriteString("### Settings tried on the vxlan data path\n\n")
		b.WriteString(t)
	}
	if err := report.ReplaceSection(path, "## Data path", b.String()); err != nil {
		return fmt.Errorf("updating %s: %w", path, err)
	}
	return nil
}
