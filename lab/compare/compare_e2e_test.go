//go:build e2e

package compare

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/lab"
)

// TestCompareQuick runs `twill lab compare --quick --ip-family dual` end to
// end: a vxlan and a host-gw lab, each measured over IPv4 and IPv6 and
// removed. (Dual-stack pods get the narrower plane's MTU, IPv6 VXLAN's.)
func TestCompareQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("compare brings labs up and needs root; run as root (make test does)")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("%v", err)
	}
	const name = "e2ecmp"
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), name); err != nil {
			t.Errorf("Down in cleanup: %v", err)
		}
	})
	out := t.TempDir()
	var log bytes.Buffer
	r, err := Run(ctx, Options{Name: name, Quick: true, IPFamily: lab.Dual, OutDir: out, RepoRoot: root, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	var table bytes.Buffer
	if err := r.PrintTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())

	if len(r.Labs) != 2 || r.Labs[0].Backend != "vxlan" || r.Labs[1].Backend != "host-gw" {
		t.Fatalf("labs measured: %+v, want vxlan then host-gw", r.Labs)
	}
	wantMTU := map[string]int{"underlay": 1500, "vxlan": 1430, "host-gw": 1500}
	wantOverhead := map[string]int{"underlay": 0, "vxlan": 70, "host-gw": 0}
	for _, l := range r.Labs {
		if len(l.More) != 1 || l.More[0].Family != family.IPv6 {
			t.Fatalf("%s lab: other families measured %+v, want IPv6", l.Backend, l.More)
		}
		for _, res := range []Result{l.Underlay, l.Overlay, l.More[0].Underlay, l.More[0].Overlay} {
			if res.Median1() <= 0 || res.Median4() <= 0 || res.Bytes <= 0 {
				t.Errorf("%s (%s lab) moved no data: 1 stream %v, 4 streams %v bit/s, %d bytes", res.Mode, l.Backend, res.Throughput1, res.Throughput4, res.Bytes)
			}
			if res.MTU != wantMTU[res.Mode] || res.Overhead != wantOverhead[res.Mode] {
				t.Errorf("%s (%s lab): MTU %d, overhead %d; want %d, %d", res.Mode, l.Backend, res.MTU, res.Overhead, wantMTU[res.Mode], wantOverhead[res.Mode])
			}
			if len(res.RTTs) == 0 || res.P50() <= 0 {
				t.Errorf("%s (%s lab): no ping answered", res.Mode, l.Backend)
			}
		}
		if !l.MasqSource.Equal(l.SrcNode) {
			t.Errorf("%s: pod → internet left with source %v, want the node's %s (masquerade)\n%s", l.Backend, l.MasqSource, l.SrcNode, l.InternetCapture.Output)
		}
	}
	if e := r.Labs[0].Encap; !e.VXLAN || e.Plain {
		t.Errorf("vxlan: the capture does not prove VXLAN (%+v):\n%s", e, r.Labs[0].PodCapture.Output)
	}
	if e := r.Labs[1].Encap; e.VXLAN || !e.Plain {
		t.Errorf("host-gw: the capture does not prove plain pod IPs (%+v):\n%s", e, r.Labs[1].PodCapture.Output)
	}
	for _, f := range []string{"report.md", "throughput.svg"} {
		st, err := os.Stat(filepath.Join(out, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	if !strings.Contains(string(md), "**Headline:** vxlan/underlay = ") || !strings.Contains(string(md), "| vxlan IPv6 (pod → pod) | 1430 | 70 |") || !strings.Contains(string(md), "| host-gw IPv6 (pod → pod) | 1500 | 0 |") {
		t.Errorf("report.md has no headline or no IPv6 rows:\n%s", md)
	}
	// Run removes its labs itself.
	if _, err := os.Stat(filepath.Join(lab.StateRoot, name)); err == nil {
		t.Errorf("lab %s still exists after Run", name)
	}
	for _, suffix := range []string{"underlay", "internet", "control-plane", "worker", "worker2"} {
		if netns.Exists(name + "-" + suffix) {
			t.Errorf("network namespace %s-%s left behind", name, suffix)
		}
	}
}
