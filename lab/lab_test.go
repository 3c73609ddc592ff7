package lab

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/twill-net/twill/family"
)

func TestNodeNamesAndAddresses(t *testing.T) {
	cases := []struct {
		i        int
		name, ip string
	}{
		{0, "myk8s-control-plane", "172.18.0.2"},
		{1, "myk8s-worker", "172.18.0.3"},
		{2, "myk8s-worker2", "172.18.0.4"},
		{9, "myk8s-worker9", "172.18.0.11"},
		{254, "myk8s-worker254", "172.18.1.0"},
	}
	for _, tc := range cases {
		if got := nodeName("myk8s", tc.i); got != tc.name {
			t.Errorf("nodeName(%d) = %s, want %s", tc.i, got, tc.name)
		}
		if got := nodeIP(tc.i).String(); got != tc.ip {
			t.Errorf("nodeIP(%d) = %s, want %s", tc.i, got, tc.ip)
		}
	}
}

func TestRoutedSegment(t *testing.T) {
	cases := []struct {
		i, nodes, routed int
		want, want6      string
	}{
		{0, 3, 0, "172.18.0.2", "fc00:f853:ccd:e793::2"},
		{2, 3, 0, "172.18.0.4", "fc00:f853:ccd:e793::4"},
		{1, 3, 1, "172.18.0.3", "fc00:f853:ccd:e793::3"},
		{2, 3, 1, "172.19.0.4", "fc00:f853:ccd:e794::4"},
		{1, 3, 2, "172.19.0.3", "fc00:f853:ccd:e794::3"},
		{254, 300, 100, "172.19.1.0", "fc00:f853:ccd:e794::100"},
	}
	for _, tc := range cases {
		seg := flatSegment
		if isRouted(tc.i, tc.nodes, tc.routed) {
			seg = routedSegment
		}
		for f, want := range map[family.Family]string{family.IPv4: tc.want, family.IPv6: tc.want6} {
			if got := seg.nodeIP(f, tc.i).String(); got != want {
				t.Errorf("node %d of %d, %d routed, %s: %s, want %s", tc.i, tc.nodes, tc.routed, f, got, want)
			}
			a := seg.nodeAddr(f, tc.i)
			if sub := seg.subnet(f); !sub.Contains(seg.gateway(f).Addr()) || !sub.Contains(a.Addr()) || a.Bits() != sub.Bits() {
				t.Errorf("segment %s: gateway %s or node %s outside", sub, seg.gateway(f), a)
			}
		}
	}
	// The routed subnets overlap none of the lab's other networks.
	for _, other := range []string{"172.18.0.0/16", "172.20.0.0/16", "10.244.0.0/16", "10.96.0.0/12", "203.0.113.0/24",
		"fc00:f853:ccd:e793::/64", "fd00:10:244::/56", "fd00:10:96::/112", "2001:db8::/64"} {
		n := netip.MustParsePrefix(other)
		if r := routedSegment.subnet(family.OfPrefix(n)); n.Overlaps(r) {
			t.Errorf("routed subnet %s overlaps %s", r, other)
		}
	}
}

func TestUpRejectsBadLayouts(t *testing.T) {
	for name, o := range map[string]Options{
		"every node routed":          {Nodes: 3, RoutedNodes: 3},
		"negative":                   {Nodes: 3, RoutedNodes: -1},
		"routed with host-gw":        {Nodes: 3, RoutedNodes: 1, Backend: "host-gw"},
		"DirectRouting with host-gw": {Nodes: 3, Backend: "host-gw", DirectRouting: true},
		"DirectRouting without CNI":  {Nodes: 3, CNI: "none", DirectRouting: true},
		"unknown IP family":          {Nodes: 3, IPFamily: "ipv5"},
	} {
		o.Name = "unit"
		// Options are checked before anything is made (or root is asked for).
		if _, err := Up(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%s: Up err = %v, want one naming the flag", name, err)
		}
	}
}

func TestHostGWAcrossRoutedNodes(t *testing.T) {
	// Without underlay routes the refusal says what to add.
	_, err := Up(context.Background(), Options{Name: "unit", Nodes: 3, RoutedNodes: 1, Backend: "host-gw"})
	if err == nil || !strings.Contains(err.Error(), "add --underlay-routes") {
		t.Errorf("host-gw with routed nodes: %v, want a refusal naming --underlay-routes", err)
	}
	// With them, the options pass (Up then stops at the next check: root,
	// or the repository when run as root).
	_, err = Up(context.Background(), Options{Name: "unit", Nodes: 3, RoutedNodes: 1, Backend: "host-gw", UnderlayRoutes: true, RepoRoot: t.TempDir()})
	if err == nil || strings.Contains(err.Error(), "--routed-nodes") {
		t.Errorf("host-gw with routed nodes and --underlay-routes: %v, want it past the options", err)
	}
	c := &Cluster{Name: "unit", RoutedNodes: 1, Backend: "vxlan", RepoRoot: ".."}
	if err := c.ApplyManifest(context.Background(), "host-gw"); err == nil || !strings.Contains(err.Error(), "add --underlay-routes") {
		t.Errorf("moving a routed lab without underlay routes to host-gw: %v, want a refusal naming --underlay-routes", err)
	}
}

func TestSetHostGWUnderlayRoutes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	if out := SetHostGWUnderlayRoutes(b); string(out) != string(b) {
		t.Errorf("a vxlan manifest changed:\n%s", out)
	}
	out := SetHostGWUnderlayRoutes(SetBackend(b, "host-gw"))
	if !strings.Contains(string(out), `"Type": "host-gw", "UnderlayRoutes": true`) {
		t.Errorf("no UnderlayRoutes in the host-gw Backend:\n%s", out)
	}
	if again := SetHostGWUnderlayRoutes(out); string(again) != string(out) {
		t.Errorf("twice differs from once:\n%s", again)
	}
}

func TestSetDirectRouting(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	netConf := func(manifest []byte) map[string]any {
		t.Helper()
		m := regexp.MustCompile(`(?s)net-conf\.json: \|\n(.*?\n    \})\n`).FindSubmatch(manifest)
		if m == nil {
			t.Fatalf("no net-conf.json in:\n%s", manifest)
		}
		var conf map[string]any
		if err := json.Unmarshal(m[1], &conf); err != nil {
			t.Fatalf("net-conf.json is not JSON: %v\n%s", err, m[1])
		}
		return conf
	}
	out := SetDirectRouting(b)
	want := map[string]any{"Type": "vxlan", "DirectRouting": true}
	if got := netConf(out)["Backend"]; !equalJSON(got, want) {
		t.Errorf("Backend = %v, want %v", got, want)
	}
	if again := SetDirectRouting(out); string(again) != string(out) {
		t.Errorf("SetDirectRouting twice differs from once:\n%s", again)
	}
	if got := netConf(SetDirectRouting(SetBackend(b, "host-gw")))["Backend"]; !equalJSON(got, map[string]any{"Type": "host-gw"}) {
		t.Errorf("host-gw Backend = %v, want it untouched", got)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestSetBackend(t *testing.T) {
	in := `  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableIPv4": true,
      "Backend": {
        "Type": "vxlan"
      }
    }
`
	out := string(SetBackend([]byte(in), "host-gw"))
	if !strings.Contains(out, `"Type": "host-gw"`) || strings.Contains(out, "vxlan") {
		t.Errorf("SetBackend(host-gw) =\n%s", out)
	}
	if back := string(SetBackend([]byte(out), "vxlan")); back != in {
		t.Errorf("SetBackend(vxlan) did not restore the input:\n%s", back)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{"twill": true, "myk8s": true, "a": true, "lab-2": true, "": false, "-x": false, "x-": false, "Upper": false, "a/b": false, "much-too-long-lab-name": false} {
		if got := validName.MatchString(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestDownWithNothingToRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Down needs root")
	}
	if err := Down(context.Background(), "unit-nolab"); err != nil {
		t.Fatalf("Down of a lab that never existed: %v", err)
	}
	if _, err := Load("unit-nolab"); err == nil || !strings.Contains(err.Error(), "twill lab up") {
		t.Errorf("Load of a missing lab: err = %v, want a hint to run twill lab up", err)
	}
}

func TestUpNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("checks the error seen without root")
	}
	_, err := Up(context.Background(), Options{Name: "unit"})
	if err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("Up as non-root: err = %v, want one saying root is needed", err)
	}
}

// hostToolsRoot makes a repository root holding a copy of hack/deps.sh and
// the given hack/deps.txt.
func hostToolsRoot(t *testing.T, list string) string {
	t.Helper()
	root := t.TempDir()
	script, err := os.ReadFile(filepath.Join("..", "hack", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "hack"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"deps.sh": script, "deps.txt": []byte(list)} {
		if err := os.WriteFile(filepath.Join(root, "hack", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestEnsureHostTools(t *testing.T) {
	var log strings.Builder
	root := hostToolsRoot(t, "# comment\n\nsh dash\n  bash bash  \n")
	if err := ensureHostTools(context.Background(), root, &log); err != nil {
		t.Fatalf("tools all present: %v (log %q)", err, log.String())
	}
	for _, bad := range []string{"etcd\n", "etcd etcd-server extra\n"} {
		root := hostToolsRoot(t, bad)
		err := ensureHostTools(context.Background(), root, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "hack/deps.txt: bad line") {
			t.Errorf("list %q: err = %v, want an error naming hack/deps.txt's bad line", bad, err)
		}
	}
}

// TestHostToolsFile checks the repository's list, which hack/deps.sh reads
// for `make deps` and `twill lab up`, covers what the lab runs.
func TestHostToolsFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "hack", "deps.txt"))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			have[f[0]] = true
		}
	}
	for _, cmd := range []string{"etcd", "containerd", "ctr", "runc", "buildah", "debootstrap", "iptables", "nft", "ip", "tcpdump", "iperf3", "nsenter", "unshare", "ping"} {
		if !have[cmd] {
			t.Errorf("hack/deps.txt does not list %s, which the lab runs", cmd)
		}
	}
}

func TestSetIPFamily(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		family string
		want   map[string]any
	}{
		{IPv4, map[string]any{"Network": "10.244.0.0/16", "EnableIPv4": true}},
		{Dual, map[string]any{"Network": "10.244.0.0/16", "EnableIPv4": true, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}},
		{IPv6, map[string]any{"Network": "10.244.0.0/16", "EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}},
	} {
		out := SetIPFamily(b, tc.family)
		m := regexp.MustCompile(`(?s)net-conf.json: \|\n(.*?\n    })`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no net-conf.json in the manifest", tc.family)
		}
		var conf map[string]any
		if err := json.Unmarshal(m[1], &conf); err != nil {
			t.Fatalf("%s: net-conf.json does not parse: %v\n%s", tc.family, err, m[1])
		}
		delete(conf, "Backend")
		if !equalJSON(conf, tc.want) {
			t.Errorf("%s: net-conf.json = %v, want %v", tc.family, conf, tc.want)
		}
	}
}

func TestSetNoMasquerade(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)net-conf\.json: \|\n(.*?\n    \})\n`).FindSubmatch(SetNoMasquerade(b, VMRange.String()))
	if m == nil {
		t.Fatal("no net-conf.json left")
	}
	var conf struct {
		Network           string
		NoMasqueradeCIDRs []string
	}
	if err := json.Unmarshal(m[1], &conf); err != nil {
		t.Fatalf("net-conf.json is not JSON: %v\n%s", err, m[1])
	}
	if conf.Network != "10.244.0.0/16" || len(conf.NoMasqueradeCIDRs) != 1 || conf.NoMasqueradeCIDRs[0] != "172.18.1.0/24" {
		t.Errorf("net-conf.json = %+v:\n%s", conf, m[1])
	}
}
