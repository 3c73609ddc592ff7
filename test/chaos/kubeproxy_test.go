//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/twill-net/twill/internal/testenv"
	"github.com/twill-net/twill/internal/testenv/expected"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/kubeproxy"
	"github.com/twill-net/twill/internal/testenv/netns"
)

// resync is flanneld's --iptables-resync in the harness (flannelArgs).
const resync = time.Second

// maxCheck bounds one rule check of flanneld's. A rule deleted just after
// a check is put back by the next one, a resync later, which itself takes
// a dozen iptables calls, each reading tables that kube-proxy keeps some
// thousand rules in and rewrites all along (250–500 ms at worst here, on
// a loaded 2-core machine). The allowance for an absence is the longest
// check measured in the run (flanneld's twill_rules_check_duration_seconds,
// to its bucket's bound), and that may not pass maxCheck.
const maxCheck = time.Second

// kubeProxyServices is how many Services stand throughout, so that every
// kube-proxy sync is an iptables-restore of some thousand rules.
const kubeProxyServices = 200

// TestKubeProxyContention is scenario 7: a real kube-proxy (iptables mode,
// a full sync every second) runs on both nodes next to flanneld, with 200
// Services and their EndpointSlices. For 60 s (10 s in the short form),
// under traffic, kube-proxy is restarted again and again (SIGTERM or
// kill -9, then started again) and Services are created and deleted in a
// loop, so that it rewrites its rules all along, while flanneld checks its
// own every second. Once, mid-run, just after a rule check of flanneld's,
// the test itself deletes FORWARD's jump to FLANNEL-FWD on n1, as a tool
// that rewrote FORWARD would.
//
// Meanwhile every node's rules are read with the parser the convergence
// check uses, 20 ms after each read (a read, iptables-save of tables
// kube-proxy is rewriting, takes some 50 ms here): none of ours may be
// missing but after the test's deletion, and that for no longer than one
// resync plus the longest rule check of flanneld's (within the reads' own
// resolution). And `nft monitor` in each node reports every change to any
// rule (iptables here is iptables-nft): none of ours may be deleted,
// however briefly, but by the test. At the end: no lock error in any log,
// flanneld's rules as they were, kube-proxy's KUBE-* rules left alone by
// flanneld, and the kernel as the Nodes ask.
func TestKubeProxyContention(t *testing.T) {
	bin, err := k8sbin.Path("kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "7 kube-proxy contention")
	run := 60 * time.Second
	restarts := 10
	if short {
		run, restarts = 10*time.Second, 3
	}
	ctx := h.ctx
	cs := h.env.Client

	// A kubelet gives its Node an InternalIP; kube-proxy waits up to 30 s
	// for one when it starts.
	for _, n := range h.nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.IP.String()}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kc := filepath.Join(h.env.Dir, "kube-proxy.kubeconfig")
	if err := h.env.CP.WriteKubeconfig(kc, "system:kube-proxy", ""); err != nil {
		t.Fatal(err)
	}
	kps := make([]*kubeProxy, len(h.nodes))
	for i, n := range h.nodes {
		kps[i] = &kubeProxy{t: t, node: n, bin: bin, conf: filepath.Join(n.Dir, "kube-proxy.yaml")}
		if err := kubeproxy.Write(kps[i].conf, kubeproxy.Config{
			Kubeconfig: kc, ClusterCIDRs: []string{network}, NodeName: n.Name,
			SyncPeriod: time.Second, MinSyncPeriod: 100 * time.Millisecond,
		}); err != nil {
			t.Fatal(err)
		}
		kps[i].start()
	}
	t.Cleanup(func() {
		for _, kp := range kps {
			kp.stop(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, kp := range kps {
				t.Logf("kube-proxy log of %s (end):\n%s", kp.node.Name, tail(kp.node.ProcessLog("kube-proxy"), 40))
			}
		}
	})
	for i := range kubeProxyServices {
		if err := createService(ctx, h, fmt.Sprintf("svc-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, kp := range kps {
		h.until(2*time.Minute, "kube-proxy on "+kp.node.Name+" programs every Service", func() error {
			return kp.hasServices(kubeProxyServices)
		})
	}
	if _, err := h.converge(time.Minute); err != nil {
		t.Fatal(err)
	}
	backend, _ := h.nodes[0].Exec("iptables", "-V")
	flannelBefore := make([][]string, len(h.nodes))
	for i, n := range h.nodes {
		flannelBefore[i] = ruleLines(t, n, "FLANNEL-")
	}
	checksBefore := make([]flannelMetrics, len(h.nodes))
	for i, n := range h.nodes {
		checksBefore[i] = readFlannelMetrics(t, n)
	}

	// Every change to any node's rules, as nf_tables reports it: a
	// deletion of one of ours, however short, is seen here.
	mons := make([]*ruleMonitor, len(h.nodes))
	for i, n := range h.nodes {
		if mons[i], err = startRuleMonitor(n); err != nil {
			t.Fatal(err)
		}
	}

	// The poller: every node's rules, read every ~20 ms.
	polls := make([]*rulePoll, len(h.nodes))
	pollCtx, stopPolls := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, n := range h.nodes {
		polls[i] = &rulePoll{node: n, own: fmt.Sprintf("10.244.%d.0/24", i+1)}
		wg.Add(1)
		go func() { defer wg.Done(); polls[i].run(pollCtx) }()
	}
	defer func() { stopPolls(); wg.Wait() }()

	pollStart := time.Now()
	var delStart time.Time
	creates, kills, terms := 0, 0, 0
	r := h.fault("kube-proxy contention", "", time.Minute, func() error {
		start := time.Now()
		churnCtx, stopChurn := context.WithCancel(ctx)
		churned := make(chan int)
		go func() { churned <- churnServices(churnCtx, h) }()
		every := run / time.Duration(restarts+1)
		for k := range restarts {
			time.Sleep(time.Until(start.Add(time.Duration(k+1) * every)))
			kp := kps[k%len(kps)]
			sig := syscall.SIGTERM
			if k%2 == 1 {
				sig = syscall.SIGKILL
				kills++
			} else {
				terms++
			}
			kp.stop(sig)
			kp.start()
			if k == restarts/2 {
				// The test's own deletion, just after a rule check of
				// flanneld's (the worst moment: the next is a resync
				// away): proof the poller sees an absence, and a repair
				// under the same contention.
				checks := readFlannelMetrics(t, h.nodes[0]).checks
				for end := time.Now().Add(5 * time.Second); readFlannelMetrics(t, h.nodes[0]).checks == checks && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
				delStart = time.Now()
				if err := deleteJump(h.nodes[0], "FORWARD", "FLANNEL-FWD"); err != nil {
					stopChurn()
					<-churned
					return err
				}
			}
		}
		time.Sleep(time.Until(start.Add(run)))
		stopChurn()
		creates = <-churned
		for _, kp := range kps {
			if err := kp.waitHealthy(time.Minute); err != nil {
				return err
			}
		}
		return nil
	})
	stopPolls()
	wg.Wait()
	pollTime := time.Since(pollStart)
	for _, m := range mons {
		m.stop()
	}

	// kube-proxy runs no more; flanneld keeps checking its rules: KUBE-*
	// must stay exactly as kube-proxy left them.
	for _, kp := range kps {
		kp.stop(syscall.SIGTERM)
	}
	kubeAfterStop := make([][]string, len(h.nodes))
	for i, n := range h.nodes {
		kubeAfterStop[i] = ruleLines(t, n, "KUBE-")
	}
	for i, n := range h.nodes {
		checks := readFlannelMetrics(t, n).checks
		h.until(30*time.Second, "three rule checks of flanneld on "+n.Name, func() error {
			if m := readFlannelMetrics(t, n); m.checks < checks+3 {
				return fmt.Errorf("%v checks, want %v", m.checks, checks+3)
			}
			return nil
		})
		if got := ruleLines(t, n, "KUBE-"); !slices.Equal(got, kubeAfterStop[i]) {
			t.Errorf("%s: flanneld changed kube-proxy's rules: %d KUBE-* rules before, %d after", n.Name, len(kubeAfterStop[i]), len(got))
		}
		if got := ruleLines(t, n, "FLANNEL-"); !slices.Equal(got, flannelBefore[i]) {
			t.Errorf("%s: flanneld's rules differ from before the run:\nbefore %q\nafter  %q", n.Name, flannelBefore[i], got)
		}
	}

	// Figures.
	var repairs, ruleErrs []float64
	worstCheck := time.Duration(0)
	for i, n := range h.nodes {
		m := readFlannelMetrics(t, n)
		repairs = append(repairs, m.repairs-checksBefore[i].repairs)
		ruleErrs = append(ruleErrs, m.errors-checksBefore[i].errors)
		w, ok := worstBucket(checksBefore[i], m)
		if !ok || w > maxCheck {
			t.Errorf("%s: a rule check of flanneld's took longer than %s (the smallest bucket holding them all: %v)", n.Name, maxCheck, w)
		}
		worstCheck = max(worstCheck, w)
	}
	var longest, longestSeen, worstPoll time.Duration
	var absences []string
	sawControl := false
	nPolls := 0
	for i, p := range polls {
		nPolls += p.polls
		worstPoll = max(worstPoll, p.maxInterval)
		for _, a := range p.absences {
			longest = max(longest, a.length)
			longestSeen = max(longestSeen, a.last.Sub(a.first), 0)
			absences = append(absences, fmt.Sprintf("%s %s–%s from %s into the run: %s", h.nodes[i].Name,
				max(a.last.Sub(a.first), 0).Round(time.Millisecond), a.length.Round(time.Millisecond), a.from.Sub(pollStart).Round(time.Millisecond), strings.Join(a.missing, ", ")))
			// Allowed: one resync, the longest check, and the reads
			// either side.
			if limit := resync + worstCheck + a.first.Sub(a.from) + a.to.Sub(a.last); a.length > limit {
				t.Errorf("%s: a rule of ours was missing for up to %s (seen missing for %s), want at most one resync (%s) + the longest check (%s) + the %s between the reads either side = %s",
					h.nodes[i].Name, a.length.Round(time.Millisecond), a.last.Sub(a.first).Round(time.Millisecond), resync, worstCheck, (a.first.Sub(a.from) + a.to.Sub(a.last)).Round(time.Millisecond), limit.Round(time.Millisecond))
			}
			if i == 0 && a.first.After(delStart) {
				sawControl = true
			}
		}
		if p.err != nil {
			t.Errorf("polling %s's rules: %v", h.nodes[i].Name, p.err)
		}
	}
	lockErrs := 0
	logs := []string{}
	for _, n := range h.nodes {
		logs = append(logs, n.LogFile(), n.ProcessLog("kube-proxy"))
	}
	for _, l := range logs {
		lockErrs += countLines(t, l, lockError)
	}
	// kube-proxy retries a failed sync at once; count them, to see
	// whether flanneld's writes get in its way.
	restoreFails := 0
	for _, n := range h.nodes {
		restoreFails += countLines(t, n.ProcessLog("kube-proxy"), restoreFailure)
	}
	syncs, worstSync := 0, time.Duration(0)
	for _, kp := range kps {
		syncs += kp.syncs
		worstSync = max(worstSync, kp.worstSync)
	}
	t.Logf("rule polls: %d (every %s on average, %s at worst); absences: %q", nPolls, (time.Duration(len(polls)) * pollTime / time.Duration(max(nPolls, 1))).Round(time.Millisecond), worstPoll.Round(time.Millisecond), absences)
	t.Logf("longest absence of a rule of ours %s–%s; flanneld's rule checks took at most %s; kube-proxy: %d SIGTERM and %d kill -9 restarts, %d syncs (each ≤ %s); %d Services created and deleted; lock errors in the logs %d; failed kube-proxy syncs %d; flanneld rule repairs %v, rule-check errors %v; %s",
		longestSeen.Round(time.Millisecond), longest.Round(time.Millisecond), worstCheck, terms, kills, syncs, worstSync, creates, lockErrs, restoreFails, repairs, ruleErrs, strings.TrimSpace(backend))
	if !sawControl {
		t.Errorf("the poller did not see the test's own deletion of FORWARD → FLANNEL-FWD on n1 (absences %q)", absences)
	}
	var deletions [][]string
	for i, m := range mons {
		if m.err != nil {
			t.Errorf("monitoring %s's rules: %v", h.nodes[i].Name, m.err)
		}
		deletions = append(deletions, m.deleted)
	}
	t.Logf("deletions of rules of ours that nf_tables reported: n1 %q, n2 %q; events read: %d, %d", deletions[0], deletions[1], mons[0].events, mons[1].events)
	if len(deletions[0]) != 1 || len(deletions[1]) != 0 {
		t.Errorf("rules of ours deleted: n1 %q, n2 %q; want only the test's own deletion on n1", deletions[0], deletions[1])
	}
	if len(absences) > 1 {
		t.Errorf("rules of ours went missing besides the test's own deletion: %q", absences)
	}
	if lockErrs > 0 {
		t.Errorf("%d xtables lock errors in flanneld's and kube-proxy's logs", lockErrs)
	}
	if repairs[0] != 1 || repairs[1] != 0 {
		t.Errorf("flanneld repaired its rules %v times (n1, n2), want 1 (the test's own deletion) and 0", repairs)
	}
	if ruleErrs[0]+ruleErrs[1] > 0 {
		t.Errorf("flanneld's rule checks failed %v times (n1, n2)", ruleErrs)
	}
	if syncs < restarts {
		t.Errorf("kube-proxy synced only %d times", syncs)
	}
	lockNote := "xtables lock: not used (iptables-nft takes no lock)"
	if !strings.Contains(backend, "nf_tables") {
		lockNote = "xtables lock: used (" + strings.TrimSpace(backend) + ")"
	}
	r.fault = fmt.Sprintf("kube-proxy restarted %d times (%d SIGTERM, %d kill -9), %d Services created and deleted over %s (%d standing)", restarts, terms, kills, creates, run, kubeProxyServices)
	r.note = fmt.Sprintf("nft monitor: no rule of ours deleted but by the test (%d events); rules of ours missing only after the test's own deletion of FORWARD → FLANNEL-FWD on n1, for %s–%s (limit: one resync, 1 s, + the longest rule check, ≤ %s, + the reads either side; %d reads, ≤ %s apart); kube-proxy syncs %d (%d failed, each ≤ %s); lock errors %d (%s); flanneld repairs %v",
		mons[0].events+mons[1].events, longestSeen.Round(time.Millisecond), longest.Round(time.Millisecond), worstCheck, nPolls, worstPoll.Round(time.Millisecond), syncs, restoreFails, worstSync, lockErrs, lockNote, repairs)
	h.pending[len(h.pending)-1].r = r
	h.finish()
}

// ruleMonitor follows `nft monitor` in a node's namespace and keeps the
// deletions of our rules: a rule in a FLANNEL-* chain, a jump to one (known
// from the ruleset when it started, or added since), or a FLANNEL-* chain.
type ruleMonitor struct {
	node    *testenv.Node
	cmd     *exec.Cmd
	ours    map[string]bool // "family table handle" of a jump of ours
	events  int
	deleted []string
	err     error
}

// monitorLine is one event of `nft -a monitor` that adds, inserts or
// deletes a rule or a chain: verb, object, family, table, chain, the rest
// (a rule's body) and the handle, if printed.
var monitorLine = regexp.MustCompile(`^(add|insert|delete) (rule|chain) (\S+) (\S+) (\S+)(.*?)(?:(?:# )?handle (\d+))?\s*$`)

func startRuleMonitor(n *testenv.Node) (*ruleMonitor, error) {
	m := &ruleMonitor{node: n, ours: map[string]bool{}}
	var err error
	if m.cmd, err = n.StartProcess("nft-monitor", "/usr/sbin/nft", "-a", "monitor"); err != nil {
		return nil, err
	}
	// nft listens once it reports a table made for the purpose; then the
	// ruleset is listed: every jump of ours is in the list or comes as an
	// event after it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, err := n.Exec("nft", "add", "table", "inet", "chaosd-probe"); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		if log, _ := os.ReadFile(n.ProcessLog("nft-monitor")); strings.Contains(string(log), "add table inet chaosd-probe") {
			break
		}
		if _, err := n.Exec("nft", "delete", "table", "inet", "chaosd-probe"); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nft monitor on %s reports nothing", n.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := n.Exec("nft", "delete", "table", "inet", "chaosd-probe"); err != nil {
		return nil, err
	}
	list, err := n.Exec("nft", "-a", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	table := ""
	for _, l := range strings.Split(list, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "table" {
			table = f[1] + " " + f[2]
		}
		if i := strings.Index(l, "# handle "); i >= 0 && strings.Contains(l, "jump FLANNEL-") {
			m.ours[table+" "+strings.TrimSpace(l[i+len("# handle "):])] = true
		}
	}
	return m, nil
}

// stop ends the monitor and reads what it printed.
func (m *ruleMonitor) stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	f, err := os.Open(m.node.ProcessLog("nft-monitor"))
	if err != nil {
		m.err = err
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		m.events++
		if strings.Contains(l, "rror") {
			m.err = fmt.Errorf("nft monitor: %s", l)
			continue
		}
		g := monitorLine.FindStringSubmatch(l)
		if g == nil {
			continue
		}
		key := g[3] + " " + g[4] + " " + g[7]
		switch {
		case g[1] != "delete":
			if g[2] == "rule" && strings.Contains(g[6], "jump FLANNEL-") {
				m.ours[key] = true
			}
		case strings.HasPrefix(g[5], "FLANNEL-"), g[2] == "rule" && m.ours[key]:
			m.deleted = append(m.deleted, l)
		}
	}
	if err := sc.Err(); err != nil {
		m.err = err
	}
}

// deleteJump deletes the rule of chain that jumps to target, by its number.
func deleteJump(n *testenv.Node, chain, target string) error {
	out, err := n.Exec("iptables", "-n", "--line-numbers", "-L", chain)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == target {
			if out, err := n.Exec("iptables", "-D", chain, f[0]); err != nil {
				return fmt.Errorf("deleting %s → %s: %v\n%s", chain, target, err, out)
			}
			return nil
		}
	}
	return fmt.Errorf("no jump from %s to %s:\n%s", chain, target, out)
}

// lockError matches iptables' complaint about the xtables lock, and
// kube-proxy's and go-iptables' wrapping of it.
var lockError = regexp.MustCompile(`(?i)xtables lock|holding the xtables|resource temporarily unavailable`)

// restoreFailure matches kube-proxy's log line for a sync whose
// iptables-restore failed.
var restoreFailure = regexp.MustCompile(`Failed to execute iptables-restore`)

// kubeProxy is one node's kube-proxy process, restarted at will.
type kubeProxy struct {
	t         *testing.T
	node      *testenv.Node
	bin, conf string
	cmd       *exec.Cmd
	syncs     int
	// worstSync is the longest sync of any run of it (to its bucket's
	// bound).
	worstSync time.Duration
}

func (k *kubeProxy) start() {
	k.t.Helper()
	cmd, err := k.node.StartProcess("kube-proxy", k.bin, "--config="+k.conf)
	if err != nil {
		k.t.Fatal(err)
	}
	k.cmd = cmd
}

// stop reads the syncs kube-proxy counted, sends it sig and waits for it.
func (k *kubeProxy) stop(sig syscall.Signal) {
	if k.cmd == nil || k.cmd.ProcessState != nil {
		return
	}
	if m, err := scrape(k.node, "http://127.0.0.1:10249/metrics"); err == nil {
		k.syncs += int(sum(m, "kubeproxy_sync_proxy_rules_duration_seconds_count"))
		k.worstSync = max(k.worstSync, histMax(m, "kubeproxy_sync_proxy_rules_duration_seconds"))
	}
	if sig == syscall.SIGKILL {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
		return
	}
	_ = testenv.Stop(k.cmd)
}

// waitHealthy polls kube-proxy's /healthz until it says its rules are
// synced.
func (k *kubeProxy) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netns.DialContext(k.node.NS)}}
	for {
		resp, err := c.Get("http://127.0.0.1:10256/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy on %s not healthy after %s: %v", k.node.Name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hasServices says whether kube-proxy has a KUBE-SERVICES rule for at
// least n Services.
func (k *kubeProxy) hasServices(n int) error {
	out, err := k.node.Exec("iptables-save", "-t", "nat")
	if err != nil {
		return err
	}
	if c := strings.Count(out, "-A KUBE-SERVICES -d 10.96."); c < n {
		return fmt.Errorf("%d of %d Services", c, n)
	}
	return nil
}

// createService creates a ClusterIP Service with an EndpointSlice naming
// the two nodes' pod gateway addresses.
func createService(ctx context.Context, h *harness, name string) error {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1.ServiceSpec{Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: v1.ProtocolTCP}}},
	}
	if _, err := h.env.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", name, err)
	}
	ready, port, proto, pname := true, int32(8080), v1.ProtocolTCP, "http"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.244.2.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
		},
		Ports: []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	if _, err := h.env.Client.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating EndpointSlice %s: %w", name, err)
	}
	return nil
}

// churnServices creates a Service every 100 ms and deletes the one made
// five before, until ctx ends; at the end every churned Service is gone.
// It returns how many it created.
func churnServices(ctx context.Context, h *harness) int {
	var names []string
	n := 0
	for ctx.Err() == nil {
		name := fmt.Sprintf("churn-%d", n)
		if err := createService(h.ctx, h, name); err == nil {
			names = append(names, name)
			n++
		}
		if len(names) > 5 {
			_ = h.env.Client.CoreV1().Services("default").Delete(h.ctx, names[0], metav1.DeleteOptions{})
			names = names[1:]
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, name := range names {
		_ = h.env.Client.CoreV1().Services("default").Delete(h.ctx, name, metav1.DeleteOptions{})
	}
	return n
}

// rulePoll reads a node's rules over and over and records every time any
// of ours was missing.
type rulePoll struct {
	node        *testenv.Node
	own         string
	polls       int
	maxInterval time.Duration
	absences    []absence
	err         error
}

// absence is a time some of our rules were missing: seen missing from
// first to last, and present at the reads just before and after, from and
// to. How long the rules were really missing lies between last-first
// (negative when one read saw it) and length, to-from.
type absence struct {
	from, first, last, to time.Time
	length                time.Duration
	missing               []string
}

func (p *rulePoll) run(ctx context.Context) {
	_, own, _ := net.ParseCIDR(p.own)
	lastOK := time.Now()
	var cur *absence
	prev := time.Now()
	for ctx.Err() == nil {
		began := time.Now()
		out, err := exec.Command("nsenter", "--net="+p.node.NS, "--", "iptables-save").CombinedOutput()
		now := time.Now()
		if err != nil {
			p.err = fmt.Errorf("iptables-save: %v: %s", err, out)
			return
		}
		p.polls++
		if p.polls > 1 {
			p.maxInterval = max(p.maxInterval, now.Sub(prev))
		}
		prev = now
		missing := expected.RulesMissing(string(out), rules, own)
		switch {
		case len(missing) > 0 && cur == nil:
			cur = &absence{from: lastOK, first: now, last: began, missing: missing}
		case len(missing) == 0 && cur != nil:
			cur.to = now
			cur.length = now.Sub(cur.from)
			p.absences = append(p.absences, *cur)
			cur = nil
		}
		// A read saw the rules as they were at some moment between its
		// start and its end: the absence is bounded by the start of the
		// last read that had them and the end of the first that had them
		// again, and holds at least from the end of the first read that
		// missed them to the start of the last.
		if len(missing) == 0 {
			lastOK = began
		} else {
			cur.last = began
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if cur != nil {
		cur.to = time.Now()
		cur.length = cur.to.Sub(cur.from)
		p.absences = append(p.absences, *cur)
	}
}

// ruleLines is the node's iptables rules (-A lines, every table) that
// mention prefix, sorted.
func ruleLines(t *testing.T, n *testenv.Node, prefix string) []string {
	t.Helper()
	out, err := n.Exec("iptables-save")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") && strings.Contains(l, prefix) {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

// flannelMetrics are flanneld's counts of its rule checks, and how many
// took at most each bucket's bound (seconds, as Prometheus writes it).
type flannelMetrics struct {
	checks, repairs, errors float64
	within                  map[string]float64
}

func readFlannelMetrics(t *testing.T, n *testenv.Node) flannelMetrics {
	t.Helper()
	m, err := scrape(n, fmt.Sprintf("http://%s:%d/metrics", n.IP, testenv.HealthPort))
	if err != nil {
		t.Fatal(err)
	}
	fm := flannelMetrics{checks: sum(m, "twill_rules_checks_total"), repairs: sum(m, "twill_rules_repairs_total"), errors: sum(m, "twill_rules_check_errors_total"), within: map[string]float64{}}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, "twill_rules_check_duration_seconds_bucket{"); ok {
			if _, le, ok := strings.Cut(rest, `le="`); ok {
				fm.within[strings.TrimSuffix(le, `"}`)] += v
			}
		}
	}
	return fm
}

// scrape reads a Prometheus text page inside the node's namespace and
// returns every series' value by its name and labels.
func scrape(n *testenv.Node, url string) (map[string]float64, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netns.DialContext(n.NS)}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			m[strings.Join(f[:len(f)-1], " ")] = v
		}
	}
	return m, sc.Err()
}

// sum adds the values of every series called name, whatever its labels.
func sum(m map[string]float64, name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// worstBucket is the smallest bucket bound that holds every observation
// made between before and after (the histogram's own resolution).
func worstBucket(before, after flannelMetrics) (time.Duration, bool) {
	total := after.checks - before.checks
	best := time.Duration(-1)
	for le, n := range after.within {
		if le == "+Inf" || n-before.within[le] < total {
			continue
		}
		s, err := strconv.ParseFloat(le, 64)
		if d := time.Duration(s * float64(time.Second)); err == nil && (best < 0 || d < best) {
			best = d
		}
	}
	return best, best >= 0
}

// histMax is the largest, over the series of histogram name (kube-proxy
// has one per IP family), of the smallest bucket bound that holds all of
// the series' observations (0 for none).
func histMax(m map[string]float64, name string) time.Duration {
	smallest := map[string]time.Duration{}
	for k, n := range m {
		rest, ok := strings.CutPrefix(k, name+"_bucket{")
		if !ok {
			continue
		}
		var labels []string
		le := ""
		for _, l := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
			if v, ok := strings.CutPrefix(l, `le="`); ok {
				le = strings.TrimSuffix(v, `"`)
			} else {
				labels = append(labels, l)
			}
		}
		series := name + "_count"
		if len(labels) > 0 {
			series += "{" + strings.Join(labels, ",") + "}"
		}
		s, err := strconv.ParseFloat(le, 64)
		if total := m[series]; err != nil || le == "+Inf" || total == 0 || n < total {
			continue
		}
		if d := time.Duration(s * float64(time.Second)); smallest[series] == 0 || d < smallest[series] {
			smallest[series] = d
		}
	}
	worst := time.Duration(0)
	for _, d := range smallest {
		worst = max(worst, d)
	}
	return worst
}

// countLines counts the lines of the file at path that re matches.
func countLines(t *testing.T, path string, re *regexp.Regexp) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
