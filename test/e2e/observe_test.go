//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/doctor"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/status"
)

// runDoctor runs `flanneld doctor --json` on node the lab's way (the
// checkout's binary in the node's namespaces) and returns the report and
// the exit status.
func runDoctor(t *testing.T, node string) (*doctor.Report, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, code, err := suite.cluster.Doctor(ctx, node, "--json")
	if err != nil {
		t.Fatalf("doctor on %s: %v", node, err)
	}
	var r doctor.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor on %s printed no JSON report: %v\n%s", node, err, out)
	}
	return &r, code
}

// failures renders a report's failed and warned findings, for messages.
func failures(r *doctor.Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		if f.Status == doctor.Fail || f.Status == doctor.Warn {
			fmt.Fprintf(&b, "\n  %s %s: %s %q (fix: %s)", f.Status, f.Check, f.Summary, f.Details, f.Fix)
		}
	}
	return b.String()
}

// names reports whether r fails check with a summary or detail containing
// every one of says.
func names(r *doctor.Report, check string, says ...string) bool {
	for _, f := range r.Find(check) {
		if f.Status != doctor.Fail {
			continue
		}
		all := f.Summary + "\n" + strings.Join(f.Details, "\n")
		ok := true
		for _, s := range says {
			ok = ok && strings.Contains(all, s)
		}
		if ok {
			return true
		}
	}
	return false
}

// passes waits until doctor passes on node.
func passes(t *testing.T, node, after string) {
	t.Helper()
	eventually(t, 30*time.Second, 500*time.Millisecond, "doctor passes on "+node+" "+after, func() error {
		r, code := runDoctor(t, node)
		if code != 0 {
			return fmt.Errorf("exit %d:%s", code, failures(r))
		}
		return nil
	})
}

// TestDoctor: doctor passes on every node of the healthy lab, both inside
// flanneld's pod and on the node; then each fault, made one at a time,
// is named with exit status 1, and after the repair doctor passes again.
func TestDoctor(t *testing.T) {
	cluster(t)
	ns := readyNodes(t, 3, 3*time.Minute)
	w1, w2 := workers(t)
	// A pod on each worker, so each has cni0 and a pod interface.
	podOn(t, w1)
	podOn(t, w2)

	t.Run("HealthyInThePod", func(t *testing.T) {
		for _, n := range ns {
			pod := flannelPod(t, n.Name)
			out, err := kubectlErr("-n", flannelNamespace, "exec", pod, "-c", "kube-flannel", "--", "flanneld", "doctor", "--json")
			var r doctor.Report
			if jerr := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); jerr != nil {
				t.Fatalf("doctor in %s printed no report: %v %v\n%s", pod, err, jerr, out)
			}
			if err != nil || r.Failed() {
				t.Errorf("doctor in pod %s on %s: %v%s", pod, n.Name, err, failures(&r))
			}
			if f := r.Find("cni-plugins"); len(f) != 1 || f[0].Status != doctor.OK {
				t.Errorf("in the pod, doctor does not see the node's plugins: %+v", f)
			}
		}
	})
	t.Run("HealthyOnTheNodes", func(t *testing.T) {
		for _, n := range ns {
			if r, code := runDoctor(t, n.Name); code != 0 {
				t.Errorf("doctor on %s: exit %d%s", n.Name, code, failures(r))
			}
		}
	})

	peerIP := map[string]string{}
	var peerMAC string
	for _, o := range overlayNodes(t, family.IPv4) {
		peerIP[o.Name] = o.IP.String()
		if o.Name == w2 {
			peerMAC = o.VtepMAC
		}
	}

	t.Run("FDBEntryDeletedWhileFlanneldStopped", func(t *testing.T) {
		pid := flanneldPID(t, w1)
		p := proc.Process{PID: pid}
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				if err := p.Signal(syscall.SIGCONT); err != nil {
					t.Errorf("resuming flanneld (pid %d) on %s: %v", pid, w1, err)
				}
			}
		}
		t.Cleanup(resume)
		fdb := []string{peerMAC, "dev", "flannel.1", "dst", peerIP[w2]}
		nodeExec(t, w1, append([]string{"bridge", "fdb", "del"}, fdb...)...)
		t.Cleanup(func() {
			_, _ = nodeExecErr(w1, append(append([]string{"bridge", "fdb", "replace"}, fdb...), "self", "permanent")...)
		})
		r, code := runDoctor(t, w1)
		if code != 1 || !names(r, "peer-entries", "missing FDB entry", peerMAC, "peer "+w2) {
			t.Errorf("exit %d, want 1 naming the missing FDB entry of %s:%s", code, w2, failures(r))
		}
		if !names(r, "flanneld", "not ready") {
			t.Errorf("the stopped flanneld is not named:%s", failures(r))
		}
		nodeExec(t, w1, append(append([]string{"bridge", "fdb", "replace"}, fdb...), "self", "permanent")...)
		resume()
		passes(t, w1, "after the FDB entry is back")
	})

	t.Run("ConflistInFrontOfOurs", func(t *testing.T) {
		extra := "/etc/cni/net.d/00-extra.conflist"
		nodeExec(t, w1, "sh", "-c", `echo '{"cniVersion":"1.0.0","name":"extra","plugins":[{"type":"bridge","bridge":"extra0"}]}' > `+extra)
		t.Cleanup(func() { _, _ = nodeExecErr(w1, "rm", "-f", extra) })
		r, code := runDoctor(t, w1)
		if code != 1 || !names(r, "cni-config", "00-extra.conflist sorts before 10-flannel.conflist") {
			t.Errorf("exit %d, want 1 naming 00-extra.conflist:%s", code, failures(r))
		}
		nodeExec(t, w1, "rm", extra)
		passes(t, w1, "after the extra conflist is gone")
	})

	t.Run("BridgePluginRemoved", func(t *testing.T) {
		nodeExec(t, w1, "mv", "/opt/cni/bin/bridge", "/opt/cni/bin/bridge.aside")
		t.Cleanup(func() {
			_, _ = nodeExecErr(w1, "sh", "-c", "[ -e /opt/cni/bin/bridge ] || mv /opt/cni/bin/bridge.aside /opt/cni/bin/bridge")
		})
		r, code := runDoctor(t, w1)
		if code != 1 || !names(r, "cni-plugins", "bridge missing from /opt/cni/bin") {
			t.Errorf("exit %d, want 1 naming the bridge plugin:%s", code, failures(r))
		}
		nodeExec(t, w1, "mv", "/opt/cni/bin/bridge.aside", "/opt/cni/bin/bridge")
		passes(t, w1, "after the bridge plugin is back")
	})

	t.Run("WrongMTUOnCNI0", func(t *testing.T) {
		mtu := strings.TrimSpace(nodeExec(t, w1, "cat", "/sys/class/net/cni0/mtu"))
		nodeExec(t, w1, "ip", "link", "set", "cni0", "mtu", "1400")
		t.Cleanup(func() { _, _ = nodeExecErr(w1, "ip", "link", "set", "cni0", "mtu", mtu) })
		r, code := runDoctor(t, w1)
		if code != 1 || !names(r, "mtu", "cni0 has MTU 1400, pods get "+mtu) {
			t.Errorf("exit %d, want 1 naming cni0's MTU:%s", code, failures(r))
		}
		nodeExec(t, w1, "ip", "link", "set", "cni0", "mtu", mtu)
		passes(t, w1, "after cni0's MTU is back")
	})

	t.Run("VXLANBlockedToOnePeerInTheUnderlay", func(t *testing.T) {
		// The underlay bridges the nodes; with bridge-nf-call-iptables
		// (on in every new namespace) its FORWARD chain sees their frames.
		rule := []string{"FORWARD", "-d", peerIP[w2], "-p", "udp", "--dport", "8472", "-j", "DROP"}
		underlayIPTables(t, append([]string{"-I"}, rule...)...)
		t.Cleanup(func() { _ = underlayIPTablesErr(append([]string{"-D"}, rule...)...) })
		r, code := runDoctor(t, w1)
		if code != 1 || !names(r, "reachability", w2+" (", "public IP "+peerIP[w2], "the underlay reaches "+peerIP[w2]) {
			t.Errorf("exit %d, want 1 naming %s as unreachable over the overlay only:%s", code, w2, failures(r))
		}
		underlayIPTables(t, append([]string{"-D"}, rule...)...)
		passes(t, w1, "after VXLAN passes again")
	})
}

// flannelPod is the name of node's flanneld pod.
func flannelPod(t *testing.T, node string) string {
	t.Helper()
	name := strings.TrimSpace(kubectl(t, "-n", flannelNamespace, "get", "pods", "-l", "app=flannel", "--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}"))
	if name == "" {
		t.Fatalf("no flanneld pod on %s", node)
	}
	return name
}

// flanneldPID finds the flanneld daemon of node: the process called
// flanneld in the node's network namespace that is not a doctor.
func flanneldPID(t *testing.T, node string) int {
	t.Helper()
	n, err := suite.cluster.NodeByName(node)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := proc.InNamespaces(n.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if strings.TrimSpace(string(comm)) == "flanneld" && !strings.Contains(string(cmdline), "doctor") {
			return pid
		}
	}
	t.Fatalf("no flanneld runs on %s", node)
	return 0
}

func underlayIPTablesErr(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	argv := append([]string{"--net=" + suite.cluster.UnderlayNetNS(), "--", "iptables"}, args...)
	if out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in the underlay: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func underlayIPTables(t *testing.T, args ...string) {
	t.Helper()
	if err := underlayIPTablesErr(args...); err != nil {
		t.Fatal(err)
	}
}

// scrape reads node's flanneld /metrics through the API server's pod
// proxy, as a Prometheus in the cluster would reach it, and returns the
// twill_ samples by their name with labels.
func scrape(t *testing.T, node string) map[string]float64 {
	t.Helper()
	pod := flannelPod(t, node)
	out := kubectl(t, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", flannelNamespace, pod, mfHealthzPort))
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "twill_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// TestMetrics scrapes a worker's /metrics: the peer and entry counts match
// the cluster, and a route deleted behind flanneld's back comes back as
// exactly one repair.
func TestMetrics(t *testing.T) {
	cluster(t)
	ns := readyNodes(t, 3, 3*time.Minute)
	w1, w2 := workers(t)
	peers := float64(len(ns) - 1)
	m := scrape(t, w1)
	want := map[string]float64{}
	for _, f := range families() {
		fl := strings.ToLower(f.String())
		want[`twill_peers_known{backend="vxlan",family="`+fl+`"}`] = peers
		want[`twill_peers_programmed{backend="vxlan",family="`+fl+`"}`] = peers
	}
	// Kernel entries are counted over every family's plane: one route,
	// neighbour and FDB entry per peer and family.
	for _, kind := range []string{"route", "neigh", "fdb"} {
		want[`twill_kernel_entries{kind="`+kind+`"}`] = peers * float64(len(families()))
	}
	for key, w := range want {
		if m[key] != w {
			t.Errorf("%s = %v, want %v", key, m[key], w)
		}
	}
	build := false
	for k, v := range m {
		build = build || (strings.HasPrefix(k, "twill_build_info{") && strings.Contains(k, `version="v`+version(t)+`"`) && v == 1)
	}
	if !build {
		t.Errorf("no twill_build_info for v%s: %v", version(t), m)
	}
	if m[`twill_reconciles_total{kind="full"}`] < 1 || m["twill_api_last_contact_timestamp_seconds"] == 0 {
		t.Errorf("no full reconcile or API contact recorded: %v", m)
	}

	const repaired = `twill_kernel_entry_changes_total{change="repaired",kind="route"}`
	before := m[repaired]
	var cidr string
	for _, n := range ns {
		if n.Name == w2 {
			cidr = n.PodCIDR.String()
		}
	}
	nodeExec(t, w1, "ip", "route", "del", cidr, "dev", "flannel.1")
	eventually(t, 30*time.Second, 500*time.Millisecond, "the deleted route back and counted as a repair", func() error {
		if out, _ := nodeExecErr(w1, "ip", "route", "show", cidr); !strings.Contains(out, "dev flannel.1") {
			return fmt.Errorf("route to %s still missing", cidr)
		}
		if got := scrape(t, w1)[repaired]; got != before+1 {
			return fmt.Errorf("%s = %v, want %v", repaired, got, before+1)
		}
		return nil
	})
	if got := scrape(t, w1)[repaired]; got != before+1 {
		t.Errorf("one deleted route counted as %v repairs", got-before)
	}
}

// version is the VERSION file's.
func version(t *testing.T) string {
	t.Helper()
	v, err := os.ReadFile(filepath.Join(suite.repoRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// TestStatus: Twill's view of the lab's cluster (twill lab status) shows
// every node with a valid lease and a ready flanneld, and no problem.
func TestStatus(t *testing.T) {
	c := cluster(t)
	ns := readyNodes(t, 3, 3*time.Minute)
	rc, err := c.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	view, err := status.Build(ctx, status.Clientset{Interface: cs}, status.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range specsOf(families()) {
		want = append(want, p.Network)
	}
	if !view.OK() || len(view.Nodes) != len(ns) || strings.Join(view.Network, ",") != strings.Join(want, ",") {
		t.Errorf("view: network %v, problems %q, %d nodes", view.Network, view.Problems, len(view.Nodes))
	}
	for _, n := range view.Nodes {
		if n.Lease != "valid" || n.Flanneld != "ready" || len(n.VTEPMACs) != len(want) || slices.Contains(n.VTEPMACs, "") || n.Backend != "vxlan" {
			t.Errorf("node %+v", n)
		}
	}
}
