//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOverlay checks the overlay end to end on one lab. The subtests run in
// this order on purpose: the first ones only read, the later ones change the
// cluster (DaemonSet restarts, a ConfigMap edit, a node removed and one
// added) and put it back as they found it, in node count and configuration.
func TestOverlay(t *testing.T) {
	cluster(t)
	readyNodes(t, 3, 3*time.Minute)

	t.Run("PodToPod", testPodToPod)
	t.Run("HostState", testHostState)
	t.Run("VXLANOnTheWire", testVXLANOnTheWire)
	t.Run("PodToInternetMasqueraded", testPodToInternetMasqueraded)
	// From here on the tests change the cluster.
	t.Run("RollingRestartLosesNoPackets", testRollingRestart)
	t.Run("NoMasqueradeCIDRs", testNoMasqueradeCIDRs)
	t.Run("NFTablesModeAndGuard", testNFTablesMode)
	t.Run("SwitchToHostGWAndBack", testBackendSwitch)
	t.Run("NodeDeletedCleansPeers", testNodeDeleted)
	t.Run("NodeAddedReachable", testNodeAdded)
}

// workers returns two distinct nodes that are not the control plane (the
// lab's first node), for pods that must sit on different machines.
func workers(t *testing.T) (string, string) {
	t.Helper()
	var names []string
	cp := ""
	if len(suite.cluster.Nodes) > 0 {
		cp = suite.cluster.Nodes[0].Name
	}
	for _, n := range nodes(t) {
		if n.Name != cp {
			names = append(names, n.Name)
		}
	}
	if len(names) < 2 {
		t.Fatalf("need two worker nodes, have %v (control plane %s)", names, cp)
	}
	return names[0], names[1]
}

func testPodToPod(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	byName := map[string]nodeInfo{}
	for _, n := range nodes(t) {
		byName[n.Name] = n
	}
	for _, p := range []pod{a, b} {
		if cidr := byName[p.Node].PodCIDR; cidr == nil || !cidr.Contains(p.IP) {
			t.Errorf("pod %s has IP %s, outside its node %s's podCIDR %v", p.Name, p.IP, p.Node, cidr)
		}
	}
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)
}

// overlayNodes reads every node's facts: address and podCIDR from the API,
// VTEP MAC from its flannel.1 device.
func overlayNodes(t *testing.T) []overlayNode {
	t.Helper()
	var res []overlayNode
	for _, n := range nodes(t) {
		if n.PodCIDR == nil || n.InternalIP == nil {
			t.Fatalf("node %s has podCIDR %v, InternalIP %v; want both", n.Name, n.PodCIDR, n.InternalIP)
		}
		out := nodeExec(t, n.Name, "ip", "-j", "link", "show", "flannel.1")
		var links []ipLink
		if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
			t.Fatalf("on node %s: ip -j link show flannel.1: %v\n%s", n.Name, err, out)
		}
		res = append(res, overlayNode{Name: n.Name, IP: n.InternalIP, PodCIDR: n.PodCIDR, VtepMAC: links[0].Address})
	}
	return res
}

// hostStateProblems checks every node's kernel state against all others,
// and returns the problems found, each prefixed with its node.
func hostStateProblems(t *testing.T) []string {
	t.Helper()
	all := overlayNodes(t)
	var problems []string
	for _, self := range all {
		var peers []overlayNode
		for _, o := range all {
			if o.Name != self.Name {
				peers = append(peers, o)
			}
		}
		out, err := nodeExecErr(self.Name, "sh", "-c", hostStateScript)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: reading state: %v: %s", self.Name, err, out))
			continue
		}
		st, errs := parseHostState(out)
		for _, e := range errs {
			problems = append(problems, fmt.Sprintf("%s: %v", self.Name, e))
		}
		var podIPs []string
		for _, p := range podsOnNode(t, self.Name) {
			podIPs = append(podIPs, p[strings.LastIndexByte(p, ' ')+1:])
		}
		for _, p := range append(checkHostState(self, peers, clusterNetwork, st), checkBridge(self, podIPs, st)...) {
			problems = append(problems, self.Name+": "+p)
		}
	}
	return problems
}

func testHostState(t *testing.T) {
	// A pod on every node, so every node has cni0 and a veth to check.
	ns := nodes(t)
	for _, n := range ns {
		podOn(t, n.Name)
	}
	labIPs := map[string]string{}
	for _, n := range suite.cluster.Nodes {
		labIPs[n.Name] = n.IP.String()
	}
	for _, n := range ns {
		if ip, ok := labIPs[n.Name]; ok && ip != n.InternalIP.String() {
			t.Errorf("node %s: InternalIP %s differs from the lab's eth0 address %s", n.Name, n.InternalIP, ip)
		}
	}
	took := eventually(t, 30*time.Second, time.Second, "every node's overlay state", func() error {
		if p := hostStateProblems(t); len(p) > 0 {
			return fmt.Errorf("\n  %s", strings.Join(p, "\n  "))
		}
		return nil
	})
	t.Logf("host state correct on %d nodes (converged after %v)", len(ns), took.Round(time.Millisecond))

	// flanneld's node annotations agree with the kernel.
	macs := map[string]string{}
	for _, o := range overlayNodes(t) {
		macs[o.Name] = o.VtepMAC
	}
	for _, n := range nodes(t) {
		a := n.Annotations
		var bd struct {
			VNI     int
			VtepMAC string
		}
		if err := json.Unmarshal([]byte(a["flannel.alpha.coreos.com/backend-data"]), &bd); err != nil {
			t.Errorf("node %s: annotation backend-data %q: %v", n.Name, a["flannel.alpha.coreos.com/backend-data"], err)
		} else if bd.VNI != 1 || !strings.EqualFold(bd.VtepMAC, macs[n.Name]) {
			t.Errorf("node %s: backend-data = %+v, want VNI 1 and VtepMAC %s (flannel.1's)", n.Name, bd, macs[n.Name])
		}
		if got := a["flannel.alpha.coreos.com/backend-type"]; got != "vxlan" {
			t.Errorf("node %s: annotation backend-type = %q, want vxlan", n.Name, got)
		}
		if got := a["flannel.alpha.coreos.com/public-ip"]; got != n.InternalIP.String() {
			t.Errorf("node %s: annotation public-ip = %q, want %s", n.Name, got, n.InternalIP)
		}
	}
}

// runner runs a command somewhere in the lab and returns its combined
// output; where names the place in messages.
type runner struct {
	where string
	run   func(cmd ...string) (string, error)
}

// onNode runs commands on a node.
func onNode(node string) runner {
	return runner{where: "node " + node, run: func(cmd ...string) (string, error) { return nodeExecErr(node, cmd...) }}
}

// onInternet runs commands in the lab's "internet" namespace, the far end
// of pod-to-internet traffic.
func onInternet() runner { return inNetNS("the internet namespace", suite.cluster.InternetNetNS()) }

// inNetNS runs commands in the network namespace at path, called where.
func inNetNS(where, path string) runner {
	return runner{where: where, run: func(cmd ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		argv := append([]string{"--net=" + path, "--"}, cmd...)
		out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
		return string(out), err
	}}
}

// capture runs tcpdump on iface in r until it has seen count packets
// matching filter or timeout passes, while traffic() runs; it returns
// tcpdump's output. extra are more tcpdump flags.
func capture(t *testing.T, r runner, iface, filter string, count int, timeout time.Duration, extra []string, traffic func()) string {
	t.Helper()
	args := []string{"timeout", strconv.Itoa(int(timeout.Seconds())), "tcpdump", "-i", iface, "-nn", "-l", "-c", strconv.Itoa(count)}
	args = append(args, extra...)
	args = append(args, filter)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := r.run(args...)
		done <- result{out, err}
	}()
	// tcpdump needs a moment to open its socket; the traffic runs long
	// enough (several seconds) that it sees count packets regardless.
	traffic()
	res := <-done
	if res.err != nil && !strings.Contains(res.out, "packets captured") {
		t.Fatalf("in %s: %s: %v\n%s", r.where, strings.Join(args, " "), res.err, res.out)
	}
	return res.out
}

func testVXLANOnTheWire(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	byName := map[string]nodeInfo{}
	for _, n := range nodes(t) {
		byName[n.Name] = n
	}
	ip1, ip2 := byName[w1].InternalIP, byName[w2].InternalIP
	filter := fmt.Sprintf("udp dst port 8472 and src host %s and dst host %s", ip1, ip2)
	out := capture(t, onNode(w1), "eth0", filter, 4, 15*time.Second, []string{"-T", "vxlan"}, func() {
		// Ignore the result: the capture below is the assertion, and
		// PodToPod already checks that pings are answered.
		_, _ = podExecErr(a, "ping", "-n", "-c", "30", "-i", "0.2", "-w", "8", b.IP.String())
	})
	// tcpdump -T vxlan prints the outer packet, then the inner one:
	//   IP 172.18.0.3.41234 > 172.18.0.4.8472: VXLAN, flags [I] (0x08), vni 1
	//   IP 10.244.1.2 > 10.244.2.2: ICMP echo request, id 7, seq 1, length 64
	outer := regexp.MustCompile(regexp.QuoteMeta(ip1.String()) + `\.\d+ > ` + regexp.QuoteMeta(ip2.String()) + `\.8472: VXLAN.*vni 1\b`)
	inner := regexp.MustCompile(`IP ` + regexp.QuoteMeta(a.IP.String()) + ` > ` + regexp.QuoteMeta(b.IP.String()) + `: ICMP echo request`)
	if n := len(outer.FindAllString(out, -1)); n < 4 {
		t.Errorf("want 4 VXLAN (VNI 1) packets %s:* → %s:8472 on %s's eth0, saw %d:\n%s", ip1, ip2, w1, n, out)
	}
	if n := len(inner.FindAllString(out, -1)); n < 4 {
		t.Errorf("want the encapsulated packets to be ICMP %s → %s (pod IPs kept), saw %d:\n%s", a.IP, b.IP, n, out)
	}
}

// internetCapture pings internetIP from p and returns what arrived there:
// lines "IP <src> > 203.0.113.10: ICMP echo request".
func internetCapture(t *testing.T, p pod) (string, error) {
	t.Helper()
	// Forget earlier flows, so the NAT decision is taken afresh for this
	// ping (conntrack keeps a flow's translation for its lifetime).
	_, _ = nodeExecErr(p.Node, "conntrack", "-D", "-d", internetIP)
	var pingOut string
	var pingErr error
	out := capture(t, onInternet(), "any", "icmp and host "+internetIP, 2, 10*time.Second, nil, func() {
		pingOut, pingErr = podExecErr(p, "ping", "-n", "-c", "10", "-i", "0.2", "-w", "5", internetIP)
	})
	if pingErr != nil {
		return out, fmt.Errorf("ping %s from pod %s: %v\n%s", internetIP, p.Name, pingErr, pingOut)
	}
	return out, nil
}

func testPodToInternetMasqueraded(t *testing.T) {
	w1, _ := workers(t)
	a := podOn(t, w1)
	nodeIP := ""
	for _, n := range nodes(t) {
		if n.Name == w1 {
			nodeIP = n.InternalIP.String()
		}
	}
	out, err := internetCapture(t, a)
	if err != nil {
		t.Fatalf("pod-to-internet traffic gets no answer: %v\ncapture at %s:\n%s", err, internetIP, out)
	}
	want := "IP " + nodeIP + " > " + internetIP + ": ICMP echo request"
	if !strings.Contains(out, want) {
		t.Errorf("at %s want %q (masqueraded to %s's IP), saw:\n%s", internetIP, want, w1, out)
	}
	if strings.Contains(out, "IP "+a.IP.String()+" >") {
		t.Errorf("the pod IP %s reaches %s unmasqueraded:\n%s", a.IP, internetIP, out)
	}
}

// flannelPods returns the names of the DaemonSet's pods.
func flannelPods(t *testing.T) []string {
	t.Helper()
	out := kubectl(t, "get", "pods", "-n", flannelNamespace, "-l", "app=flannel", "-o", "jsonpath={.items[*].metadata.name}")
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

// restartFlannel restarts the DaemonSet and waits for the rollout.
func restartFlannel(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	kubectl(t, "rollout", "restart", "daemonset/"+flannelDaemonSet, "-n", flannelNamespace)
	kubectl(t, "rollout", "status", "daemonset/"+flannelDaemonSet, "-n", flannelNamespace, "--timeout=180s")
	return time.Since(start)
}

func testRollingRestart(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	const logFile = "/tmp/restart-ping.log"
	pid := strings.TrimSpace(podExec(t, a, "sh", "-c",
		fmt.Sprintf("ping -n -i 0.1 %s >%s 2>&1 & echo $!", b.IP, logFile)))
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_, _ = podExecErr(a, "kill", "-INT", pid)
		}
	}
	t.Cleanup(stop)
	readLog := func() pingLog {
		out, err := podExecErr(a, "cat", logFile)
		if err != nil {
			t.Fatalf("reading the ping log in %s: %v\n%s", a.Name, err, out)
		}
		return parsePingLog(out)
	}
	eventually(t, 10*time.Second, 200*time.Millisecond, "ping answered before the restart", func() error {
		if n := len(readLog().replies); n < 5 {
			return fmt.Errorf("%d replies so far", n)
		}
		return nil
	})

	before := flannelPods(t)
	took := restartFlannel(t)
	after := flannelPods(t)
	for _, p := range after {
		if contains(before, p) {
			t.Errorf("flanneld pod %s survived the rolling restart (before %v, after %v)", p, before, after)
		}
	}
	// Keep pinging a little after the last pod is Ready: a restart that
	// broke something on its way out shows up here.
	atRollout := len(readLog().replies)
	eventually(t, 10*time.Second, 200*time.Millisecond, "pings answered after the restart", func() error {
		if n := len(readLog().replies); n < atRollout+10 {
			return fmt.Errorf("%d replies, want %d", n, atRollout+10)
		}
		return nil
	})
	stop()
	var l pingLog
	eventually(t, 10*time.Second, 200*time.Millisecond, "ping summary", func() error {
		if l = readLog(); !l.done {
			return fmt.Errorf("ping %s in %s has not printed its summary", pid, a.Name)
		}
		return nil
	})
	lost := l.lost()
	t.Logf("rolling restart of %d flanneld pods took %v; %d pings every 100ms, %d lost", len(after), took.Round(time.Millisecond), l.transmitted, len(lost))
	if len(lost) > 0 {
		t.Errorf("pings %s → %s lost during the rolling restart: icmp_seq %v", a.IP, b.IP, lost)
	}
}

// netConf returns the manifest ConfigMap's net-conf.json.
func netConf(t *testing.T) string {
	t.Helper()
	return kubectl(t, "get", "configmap", flannelConfigMap, "-n", flannelNamespace, "-o", "jsonpath={.data.net-conf\\.json}")
}

// setNetConf replaces net-conf.json in the manifest's ConfigMap.
func setNetConf(t *testing.T, conf string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"data": map[string]string{"net-conf.json": conf}})
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "patch", "configmap", flannelConfigMap, "-n", flannelNamespace, "--type", "merge", "-p", string(patch))
}

// switchNetConf edits the ConfigMap's net-conf.json with edit and restarts
// the DaemonSet. The returned restore puts the original back (and
// restarts); it also runs at cleanup unless called before.
func switchNetConf(t *testing.T, edit func(conf map[string]any)) (restore func()) {
	t.Helper()
	orig := netConf(t)
	var conf map[string]any
	if err := json.Unmarshal([]byte(orig), &conf); err != nil {
		t.Fatalf("net-conf.json in %s is not JSON: %v\n%s", flannelConfigMap, err, orig)
	}
	edit(conf)
	changed, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if !restored {
			restored = true
			setNetConf(t, orig)
			restartFlannel(t)
		}
	}
	t.Cleanup(restore)
	setNetConf(t, string(changed))
	took := restartFlannel(t)
	t.Logf("net-conf.json edited, DaemonSet restarted in %v", took.Round(time.Millisecond))
	return restore
}

func testNoMasqueradeCIDRs(t *testing.T) {
	w1, _ := workers(t)
	a := podOn(t, w1)
	orig := netConf(t)
	var conf map[string]any
	if err := json.Unmarshal([]byte(orig), &conf); err != nil {
		t.Fatalf("net-conf.json in %s is not JSON: %v\n%s", flannelConfigMap, err, orig)
	}
	conf["NoMasqueradeCIDRs"] = []string{internetCIDR}
	changed, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	setNetConf(t, string(changed))
	t.Cleanup(func() {
		setNetConf(t, orig)
		restartFlannel(t)
		// Masquerading is back once the pod IP stops leaving the node.
		eventually(t, 30*time.Second, time.Second, "masquerade restored", func() error {
			out, _ := internetCapture(t, a)
			if strings.Contains(out, "IP "+a.IP.String()+" > "+internetIP) {
				return fmt.Errorf("pod IP still leaves the node unmasqueraded:\n%s", out)
			}
			return nil
		})
	})
	restartFlannel(t)

	// The internet side has no route back to pods, so the pings go
	// unanswered; what matters is the source address on the wire.
	want := "IP " + a.IP.String() + " > " + internetIP + ": ICMP echo request"
	took := eventually(t, 30*time.Second, time.Second, "pod IP kept towards "+internetCIDR, func() error {
		out, _ := internetCapture(t, a)
		if !strings.Contains(out, want) {
			return fmt.Errorf("at %s want %q, saw:\n%s", internetIP, want, out)
		}
		return nil
	})
	t.Logf("pod %s reaches %s with its own address (%v after the restart)", a.Name, internetIP, took.Round(time.Millisecond))
}

// testBackendSwitch moves the running cluster to host-gw through the
// ConfigMap and a DaemonSet restart, checks that every node routes its
// peers' pods via their node addresses with no tunnel device left and that
// pods still reach each other, then moves back to vxlan and checks that no
// host-gw route is left behind.
func testBackendSwitch(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	restore := switchNetConf(t, func(conf map[string]any) { conf["Backend"] = map[string]any{"Type": "host-gw"} })

	all := nodes(t)
	for _, self := range all {
		eventually(t, 60*time.Second, time.Second, self.Name+" on host-gw", func() error {
			if out, err := nodeExecErr(self.Name, "ip", "link", "show", "flannel.1"); err == nil {
				return fmt.Errorf("flannel.1 still exists: %s", out)
			}
			for _, peer := range all {
				if peer.Name == self.Name {
					continue
				}
				want := fmt.Sprintf("%s via %s dev eth0", peer.PodCIDR, peer.InternalIP)
				out, _ := nodeExecErr(self.Name, "ip", "route", "show", peer.PodCIDR.String())
				if strings.TrimSpace(out) != want {
					return fmt.Errorf("route to %s: %q, want %q", peer.PodCIDR, strings.TrimSpace(out), want)
				}
			}
			env, _ := nodeExecErr(self.Name, "cat", "/run/flannel/subnet.env")
			if !strings.Contains(env, "FLANNEL_MTU=1500") {
				return fmt.Errorf("subnet.env does not give the underlay MTU:\n%s", env)
			}
			return nil
		})
	}
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)

	restore()
	eventually(t, 60*time.Second, time.Second, "back on vxlan, nothing of host-gw left", func() error {
		for _, n := range all {
			if out, _ := nodeExecErr(n.Name, "ip", "route", "show", "dev", "eth0"); strings.Contains(out, "10.244.") {
				return fmt.Errorf("%s keeps host-gw routes on eth0:\n%s", n.Name, out)
			}
		}
		if problems := hostStateProblems(t); len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "\n"))
		}
		return nil
	})
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)
}

// peerEntries reports which of victim's route, neighbour and FDB entries
// are still on node.
func peerEntries(t *testing.T, node string, victim overlayNode) []string {
	t.Helper()
	out, err := nodeExecErr(node, "sh", "-c", hostStateScript)
	if err != nil {
		return []string{fmt.Sprintf("reading state: %v", err)}
	}
	st, _ := parseHostState(out)
	var left []string
	for _, r := range st.Routes {
		if r.Dst == victim.PodCIDR.String() {
			left = append(left, "route "+r.Dst)
		}
	}
	for _, n := range st.Neighs {
		if n.Dst == victim.vtepIP() {
			left = append(left, "neighbour "+n.Dst)
		}
	}
	for _, f := range st.FDB {
		if strings.EqualFold(f.MAC, victim.VtepMAC) {
			left = append(left, "fdb "+f.MAC+" dst "+f.Dst)
		}
	}
	return left
}

func testNodeDeleted(t *testing.T) {
	_, victimName := workers(t)
	all := overlayNodes(t)
	var victim overlayNode
	var others []string
	for _, n := range all {
		if n.Name == victimName {
			victim = n
		} else {
			others = append(others, n.Name)
		}
	}
	eventually(t, 30*time.Second, time.Second, "peers know "+victimName, func() error {
		for _, o := range others {
			if left := peerEntries(t, o, victim); len(left) != 3 {
				return fmt.Errorf("%s has %v for %s, want route, neighbour and fdb", o, left, victimName)
			}
		}
		return nil
	})

	start := time.Now()
	kubectl(t, "delete", "node", victimName, "--wait=true")
	eventually(t, 15*time.Second, 100*time.Millisecond, "peers forget "+victimName, func() error {
		var msgs []string
		for _, o := range others {
			if left := peerEntries(t, o, victim); len(left) > 0 {
				msgs = append(msgs, fmt.Sprintf("%s still has %v", o, left))
			}
		}
		if len(msgs) > 0 {
			return fmt.Errorf("%s", strings.Join(msgs, "; "))
		}
		return nil
	})
	t.Logf("Node %s deleted: its route, neighbour and FDB entries left %d peers within %v of the delete call",
		victimName, len(others), time.Since(start).Round(time.Millisecond))

	// Remove the node's machine too; its pod went with its Node object.
	forgetPodOn(victimName)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := suite.cluster.RemoveNode(ctx, victimName); err != nil {
		t.Errorf("removing node %s from the lab: %v", victimName, err)
	}
	_, _ = kubectlErr("delete", "pod", "-n", testNamespace, "net-"+victimName, "--grace-period=0", "--force", "--ignore-not-found")
	// The survivors still reach each other.
	if len(others) >= 2 {
		ping(t, podOn(t, others[0]), podOn(t, others[1]).IP, 3)
	}
}

func testNodeAdded(t *testing.T) {
	c := cluster(t)
	before := nodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	n, err := c.AddNode(ctx)
	if err != nil {
		t.Fatalf("adding a node to the lab: %v", err)
	}
	readyNodes(t, len(before)+1, 2*time.Minute)
	ready := time.Since(start)
	fresh := podOn(t, n.Name)
	for _, o := range before {
		p := podOn(t, o.Name)
		ping(t, p, fresh.IP, 3)
		ping(t, fresh, p.IP, 3)
	}
	t.Logf("node %s (%s) Ready %v after AddNode, reachable from %d nodes after %v", n.Name, n.IP, ready.Round(time.Millisecond), len(before), time.Since(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, time.Second, "every node's overlay state with the new node", func() error {
		if p := hostStateProblems(t); len(p) > 0 {
			return fmt.Errorf("\n  %s", strings.Join(p, "\n  "))
		}
		return nil
	})
}
