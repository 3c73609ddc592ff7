package compare

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// iperfResult is what one iperf3 client run moved.
type iperfResult struct {
	// BitsPerSecond and Bytes are the receiver's totals over all streams.
	BitsPerSecond float64
	Bytes         int64
}

// parseIperf reads the receiver's totals from iperf3 -J output.
func parseIperf(out []byte) (iperfResult, error) {
	// kubectl exec may put a warning before the JSON document.
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	var doc struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return iperfResult{}, fmt.Errorf("parsing iperf3 -J output: %w", err)
	}
	if doc.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", doc.Error)
	}
	r := iperfResult{BitsPerSecond: doc.End.SumReceived.BitsPerSecond, Bytes: doc.End.SumReceived.Bytes}
	if r.Bytes <= 0 {
		return r, fmt.Errorf("iperf3 moved no data")
	}
	return r, nil
}

var pingTime = regexp.MustCompile(`time[=<]([0-9.]+) ms`)

// parsePingTimes returns the round-trip time of every answered ping in ping's
// per-packet output.
func parsePingTimes(out string) []time.Duration {
	var ts []time.Duration
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		ms, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		ts = append(ts, time.Duration(ms*float64(time.Millisecond)))
	}
	return ts
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of ds,
// or 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(s) {
		rank = len(s)
	}
	return s[rank-1]
}

// cpuTimes is the machine-wide line of /proc/stat, in USER_HZ ticks.
type cpuTimes struct {
	Busy, Total uint64
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat. Busy is
// everything but idle and iowait.
func parseProcStat(text string) (cpuTimes, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var t cpuTimes
		// user nice system idle iowait irq softirq steal (guest time is
		// already counted in user).
		for i, s := range f[1:] {
			if i >= 8 {
				break
			}
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("parsing /proc/stat field %q: %w", s, err)
			}
			t.Total += v
			if i != 3 && i != 4 {
				t.Busy += v
			}
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("/proc/stat has no aggregate cpu line")
}

// parseMTU reads an interface MTU as printed by cat /sys/class/net/X/mtu.
func parseMTU(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("empty MTU output")
	}
	mtu, err := strconv.Atoi(f[len(f)-1])
	if err != nil || mtu < 68 {
		return 0, fmt.Errorf("MTU %q is not a number of bytes", out)
	}
	return mtu, nil
}

// Encapsulation is what a capture on the sending node's eth0 shows about
// pod-to-pod packets.
type Encapsulation struct {
	// VXLAN: a packet from the sending node's IP to the receiving node's
	// IP, UDP port 8472, carrying the pods' packet.
	VXLAN bool
	// Plain: the pods' packet on the wire as is, pod IPs outermost.
	Plain bool
	// Evidence is the capture line that shows it.
	Evidence string
}

// classifyPodCapture decides from tcpdump -nn output whether the ICMP echo
// requests from srcPod to dstPod left srcNode as VXLAN to dstNode or plain.
func classifyPodCapture(out string, srcNode, dstNode, srcPod, dstPod net.IP) Encapsulation {
	var e Encapsulation
	outer := fmt.Sprintf("%s.", srcNode)
	vxlanDst := fmt.Sprintf("> %s.8472:", dstNode)
	inner := fmt.Sprintf("%s > %s: ICMP echo request", srcPod, dstPod)
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		// tcpdump prints the decoded inner packet on the line after the
		// outer UDP header for VXLAN (port 8472 decodes as OTV).
		if strings.Contains(l, "IP "+outer) && strings.Contains(l, vxlanDst) {
			next := ""
			if i+1 < len(lines) {
				next = lines[i+1]
			}
			if strings.Contains(l, inner) || strings.Contains(next, inner) {
				e.VXLAN = true
				if e.Evidence == "" {
					e.Evidence = strings.TrimSpace(l + "\n" + next)
				}
			}
			continue
		}
		if strings.Contains(l, "IP "+inner) && !strings.Contains(l, "8472") {
			prev := ""
			if i > 0 {
				prev = lines[i-1]
			}
			if strings.Contains(prev, "8472") {
				continue
			}
			e.Plain = true
			if e.Evidence == "" {
				e.Evidence = strings.TrimSpace(l)
			}
		}
	}
	return e
}

// masqueradedSource returns the source address of the first ICMP echo
// request to dst in tcpdump -nn output, or nil.
func masqueradedSource(out string, dst net.IP) net.IP {
	re := regexp.MustCompile(`IP ([0-9.]+) > ` + regexp.QuoteMeta(dst.String()) + `: ICMP echo request`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		return nil
	}
	return net.ParseIP(m[1])
}

// parseEthtoolFeatures reads `ethtool -k DEV` output into feature → on.
func parseEthtoolFeatures(out string) map[string]bool {
	fs := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch {
		case strings.HasPrefix(val, "on"):
			fs[name] = true
		case strings.HasPrefix(val, "off"):
			fs[name] = false
		}
	}
	return fs
}
