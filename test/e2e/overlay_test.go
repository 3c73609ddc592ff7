//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab"
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
	t.Run("ServiceEveryFamily", testServiceEveryFamily)
	// From here on the tests change the cluster.
	t.Run("VXLANDeviceRecreated", testVXLANDeviceRecreated)
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

// testPodToPod: every pod has an address of each of the lab's families,
// inside its node's podCIDR of that family, and pods on two nodes reach
// each other over every family.
func testPodToPod(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	byName := map[string]nodeInfo{}
	for _, n := range nodes(t) {
		byName[n.Name] = n
	}
	for _, f := range families() {
		for _, p := range []pod{a, b} {
			if ip, cidr := ipOf(p.IPs, f), cidrOf(byName[p.Node].PodCIDRs, f); cidr == nil || ip == nil || !cidr.Contains(ip) {
				t.Errorf("pod %s has the %s address %v, outside its node %s's podCIDR %v", p.Name, f, ip, p.Node, cidr)
			}
		}
	}
	for _, f := range families() {
		ping(t, a, ipOf(b.IPs, f), 3)
		ping(t, b, ipOf(a.IPs, f), 3)
	}
}

// overlayNodes reads every node's facts in family f: address and podCIDR
// from the API, VTEP MAC from the family's VXLAN device.
func overlayNodes(t *testing.T, f family.Family) []overlayNode {
	t.Helper()
	dev := planeSpecs[f].Dev
	var res []overlayNode
	for _, n := range nodes(t) {
		ip, cidr := ipOf(n.InternalIPs, f), cidrOf(n.PodCIDRs, f)
		if cidr == nil || ip == nil {
			t.Fatalf("node %s has the %s podCIDR %v, InternalIP %v; want both", n.Name, f, cidr, ip)
		}
		out := nodeExec(t, n.Name, "ip", "-j", "link", "show", dev)
		var links []ipLink
		if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
			t.Fatalf("on node %s: ip -j link show %s: %v\n%s", n.Name, dev, err, out)
		}
		res = append(res, overlayNode{Name: n.Name, IP: ip, PodCIDR: cidr, VtepMAC: links[0].Address})
	}
	return res
}

// hostStateProblems checks every node's kernel state, in every family of
// the lab, against all others, and returns the problems found, each
// prefixed with its node.
func hostStateProblems(t *testing.T) []string {
	t.Helper()
	specs := specsOf(families())
	byFam := map[family.Family][]overlayNode{}
	for _, s := range specs {
		byFam[s.Fam] = overlayNodes(t, s.Fam)
	}
	var problems []string
	for i, n := range byFam[specs[0].Fam] {
		out, err := nodeExecErr(n.Name, "sh", "-c", hostStateScript(specs))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: reading state: %v: %s", n.Name, err, out))
			continue
		}
		st, errs := parseHostState(out, specs)
		for _, e := range errs {
			problems = append(problems, fmt.Sprintf("%s: %v", n.Name, e))
		}
		var podIPs []string
		pods := podsOnNode(t, n.Name)
		for _, p := range pods {
			podIPs = append(podIPs, strings.Fields(p)[1:]...)
		}
		var selves []overlayNode
		found := checkSubnetEnv(specs, st)
		for _, s := range specs {
			all := byFam[s.Fam]
			self := all[i]
			var peers []overlayNode
			for _, o := range all {
				if o.Name != self.Name {
					peers = append(peers, o)
				}
			}
			selves = append(selves, self)
			found = append(found, checkHostState(self, peers, s, st)...)
		}
		for _, p := range append(found, checkBridge(selves, len(pods), podIPs, st)...) {
			problems = append(problems, n.Name+": "+p)
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
	labIPs := map[string][]net.IP{}
	for _, n := range suite.cluster.Nodes {
		labIPs[n.Name] = n.Addrs()
	}
	for _, n := range ns {
		if ips, ok := labIPs[n.Name]; ok && fmt.Sprint(ips) != fmt.Sprint(n.InternalIPs) {
			t.Errorf("node %s: InternalIPs %v differ from the lab's eth0 addresses %v", n.Name, n.InternalIPs, ips)
		}
	}
	took := eventually(t, 30*time.Second, time.Second, "every node's overlay state", func() error {
		if p := hostStateProblems(t); len(p) > 0 {
			return fmt.Errorf("\n  %s", strings.Join(p, "\n  "))
		}
		return nil
	})
	t.Logf("host state correct on %d nodes (converged after %v)", len(ns), took.Round(time.Millisecond))

	// flanneld's node annotations agree with the kernel, under flannel's
	// keys for each family.
	keys := map[family.Family]struct{ data, publicIP string }{
		family.IPv4: {"flannel.alpha.coreos.com/backend-data", "flannel.alpha.coreos.com/public-ip"},
		family.IPv6: {"flannel.alpha.coreos.com/backend-v6-data", "flannel.alpha.coreos.com/public-ipv6"},
	}
	for _, f := range families() {
		macs := map[string]string{}
		for _, o := range overlayNodes(t, f) {
			macs[o.Name] = o.VtepMAC
		}
		k := keys[f]
		for _, n := range nodes(t) {
			a := n.Annotations
			var bd struct {
				VNI     int
				VtepMAC string
			}
			if err := json.Unmarshal([]byte(a[k.data]), &bd); err != nil {
				t.Errorf("node %s: annotation %s %q: %v", n.Name, k.data, a[k.data], err)
			} else if bd.VNI != 1 || !strings.EqualFold(bd.VtepMAC, macs[n.Name]) {
				t.Errorf("node %s: %s = %+v, want VNI 1 and VtepMAC %s (%s's)", n.Name, k.data, bd, macs[n.Name], planeSpecs[f].Dev)
			}
			if got, want := a[k.publicIP], ipOf(n.InternalIPs, f).String(); got != want {
				t.Errorf("node %s: annotation %s = %q, want %s", n.Name, k.publicIP, got, want)
			}
		}
	}
	for _, n := range nodes(t) {
		if got := n.Annotations["flannel.alpha.coreos.com/backend-type"]; got != "vxlan" {
			t.Errorf("node %s: annotation backend-type = %q, want vxlan", n.Name, got)
		}
		for _, f := range family.All {
			if v, ok := n.Annotations[keys[f].data]; ok && !slices.Contains(families(), f) {
				t.Errorf("node %s: annotation %s = %q on a lab without %s", n.Name, keys[f].data, v, f)
			}
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

// testVXLANOnTheWire: pod traffic of each family leaves the node as VXLAN
// over the underlay of the same family, with the pod addresses inside.
func testVXLANOnTheWire(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	byName := map[string]nodeInfo{}
	for _, n := range nodes(t) {
		byName[n.Name] = n
	}
	for _, f := range families() {
		ip1, ip2 := ipOf(byName[w1].InternalIPs, f), ipOf(byName[w2].InternalIPs, f)
		src, dst := ipOf(a.IPs, f), ipOf(b.IPs, f)
		filter := fmt.Sprintf("udp dst port 8472 and src host %s and dst host %s", ip1, ip2)
		out := capture(t, onNode(w1), "eth0", filter, 4, 15*time.Second, []string{"-T", "vxlan"}, func() {
			// Ignore the result: the capture below is the assertion, and
			// PodToPod already checks that pings are answered.
			_, _ = podExecErr(a, "ping", "-n", "-c", "30", "-i", "0.2", "-w", "8", dst.String())
		})
		// tcpdump -T vxlan prints the outer packet, then the inner one:
		//   IP 172.18.0.3.41234 > 172.18.0.4.8472: VXLAN, flags [I] (0x08), vni 1
		//   IP 10.244.1.2 > 10.244.2.2: ICMP echo request, id 7, seq 1, length 64
		// and for IPv6 "IP6 …" and "ICMP6, echo request".
		outer := regexp.MustCompile(regexp.QuoteMeta(ip1.String()) + `\.\d+ > ` + regexp.QuoteMeta(ip2.String()) + `\.8472: VXLAN.*vni 1\b`)
		inner := regexp.MustCompile(`IP6? ` + regexp.QuoteMeta(src.String()) + ` > ` + regexp.QuoteMeta(dst.String()) + `: ICMP6?,? echo request`)
		if n := len(outer.FindAllString(out, -1)); n < 4 {
			t.Errorf("%s: want 4 VXLAN (VNI 1) packets %s:* → %s:8472 on %s's eth0, saw %d:\n%s", f, ip1, ip2, w1, n, out)
		}
		if n := len(inner.FindAllString(out, -1)); n < 4 {
			t.Errorf("%s: want the encapsulated packets to be ICMP %s → %s (pod IPs kept), saw %d:\n%s", f, src, dst, n, out)
		}
	}
}

// echoRequest is how tcpdump prints an echo request of family f from src
// to dst.
func echoRequest(f family.Family, src, dst string) string {
	if f == family.IPv6 {
		return "IP6 " + src + " > " + dst + ": ICMP6, echo request"
	}
	return "IP " + src + " > " + dst + ": ICMP echo request"
}

// internetCapture pings the lab's internet host of family f from p and
// returns what arrived there: echoRequest lines.
func internetCapture(t *testing.T, p pod, f family.Family) (string, error) {
	t.Helper()
	dst := internetAddr(f)
	proto, conntrackFam := "icmp", "ipv4"
	if f == family.IPv6 {
		proto, conntrackFam = "icmp6", "ipv6"
	}
	// Forget earlier flows, so the NAT decision is taken afresh for this
	// ping (conntrack keeps a flow's translation for its lifetime).
	_, _ = nodeExecErr(p.Node, "conntrack", "-D", "-f", conntrackFam, "-d", dst)
	var pingOut string
	var pingErr error
	out := capture(t, onInternet(), "any", proto+" and host "+dst, 2, 10*time.Second, nil, func() {
		pingOut, pingErr = podExecErr(p, "ping", "-n", "-c", "10", "-i", "0.2", "-w", "5", dst)
	})
	if pingErr != nil {
		return out, fmt.Errorf("ping %s from pod %s: %v\n%s", dst, p.Name, pingErr, pingOut)
	}
	return out, nil
}

// testPodToInternetMasqueraded: a pod's traffic to the internet leaves
// with its node's address of the family, for every family.
func testPodToInternetMasqueraded(t *testing.T) {
	w1, _ := workers(t)
	a := podOn(t, w1)
	var node nodeInfo
	for _, n := range nodes(t) {
		if n.Name == w1 {
			node = n
		}
	}
	for _, f := range families() {
		dst, nodeIP, podIP := internetAddr(f), ipOf(node.InternalIPs, f).String(), ipOf(a.IPs, f).String()
		out, err := internetCapture(t, a, f)
		if err != nil {
			t.Fatalf("pod-to-internet traffic gets no answer: %v\ncapture at %s:\n%s", err, dst, out)
		}
		if want := echoRequest(f, nodeIP, dst); !strings.Contains(out, want) {
			t.Errorf("at %s want %q (masqueraded to %s's IP), saw:\n%s", dst, want, w1, out)
		}
		if strings.Contains(out, podIP+" >") {
			t.Errorf("the pod IP %s reaches %s unmasqueraded:\n%s", podIP, dst, out)
		}
	}
}

// testServiceEveryFamily: a ClusterIP Service that requires every family
// of the lab gets a ClusterIP of each, and a pod on another node reaches
// its backend through each (kube-proxy's iptables and ip6tables rules,
// then the overlay).
func testServiceEveryFamily(t *testing.T) {
	w1, w2 := workers(t)
	client, backend := podOn(t, w1), podOn(t, w2)
	const name = "every-family"
	policy := "SingleStack"
	if len(families()) > 1 {
		policy = "RequireDualStack"
	}
	svc, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": name, "namespace": testNamespace},
		"spec": map[string]any{
			"ipFamilyPolicy": policy,
			"selector":       map[string]string{"run": backend.Name},
			"ports":          []map[string]any{{"port": 80, "targetPort": 5201}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := suite.cluster.KubectlCmd(context.Background(), "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(string(svc))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("creating Service %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _, _ = kubectlErr("delete", "service", "-n", testNamespace, name, "--ignore-not-found") })
	// iperf3's server listens on both families and accepts a bare connect.
	podExec(t, backend, "sh", "-c", "pgrep -x iperf3 >/dev/null || iperf3 -s -D")
	ips := strings.Fields(kubectl(t, "get", "service", "-n", testNamespace, name, "-o", "jsonpath={.spec.clusterIPs[*]}"))
	var got []net.IP
	for _, s := range ips {
		got = append(got, net.ParseIP(s))
	}
	for _, f := range families() {
		ip := ipOf(got, f)
		if ip == nil {
			t.Errorf("Service %s has the ClusterIPs %v, none of %s", name, ips, f)
			continue
		}
		took := eventually(t, 30*time.Second, 500*time.Millisecond, fmt.Sprintf("Service %s answers on %s", name, ip), func() error {
			out, err := podExecErr(client, "nc", "-z", "-w", "2", ip.String(), "80")
			if err != nil {
				return fmt.Errorf("nc -z %s 80 from %s: %v: %s", ip, client.Name, err, out)
			}
			return nil
		})
		t.Logf("%s ClusterIP %s answers from %s (after %v)", f, ip, client.Node, took.Round(time.Millisecond))
	}
}

// testVXLANDeviceRecreated deletes each family's VXLAN device on a worker:
// flanneld makes it again with every peer's entries, and pods talk again.
func testVXLANDeviceRecreated(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	for _, f := range families() {
		dev := planeSpecs[f].Dev
		nodeExec(t, w1, "ip", "link", "del", dev)
		took := eventually(t, 30*time.Second, 200*time.Millisecond, dev+" recreated on "+w1+" with all peers", func() error {
			if p := hostStateProblems(t); len(p) > 0 {
				return fmt.Errorf("\n  %s", strings.Join(p, "\n  "))
			}
			return nil
		})
		t.Logf("%s deleted on %s: back with every peer's entries after %v", dev, w1, took.Round(time.Millisecond))
		ping(t, a, ipOf(b.IPs, f), 3)
		ping(t, b, ipOf(a.IPs, f), 3)
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

// testRollingRestart pings from a pod to another node's pod over every
// family at once, every 100ms, while the DaemonSet restarts: no ping of any
// family may be lost.
func testRollingRestart(t *testing.T) {
	w1, w2 := workers(t)
	pings := startPingers(t, "restart", podOn(t, w1), podOn(t, w2))
	before := flannelPods(t)
	took := restartFlannel(t)
	after := flannelPods(t)
	for _, p := range after {
		if contains(before, p) {
			t.Errorf("flanneld pod %s survived the rolling restart (before %v, after %v)", p, before, after)
		}
	}
	t.Logf("rolling restart of %d flanneld pods took %v", len(after), took.Round(time.Millisecond))
	pings.stopAndCheck(t, "the rolling restart")
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

// testNoMasqueradeCIDRs lists the internet's network of every family in
// NoMasqueradeCIDRs: pods then reach it with their own addresses.
func testNoMasqueradeCIDRs(t *testing.T) {
	w1, _ := workers(t)
	a := podOn(t, w1)
	orig := netConf(t)
	var conf map[string]any
	if err := json.Unmarshal([]byte(orig), &conf); err != nil {
		t.Fatalf("net-conf.json in %s is not JSON: %v\n%s", flannelConfigMap, err, orig)
	}
	var cidrs []string
	for _, f := range families() {
		cidrs = append(cidrs, lab.InternetPrefix(f).String())
	}
	conf["NoMasqueradeCIDRs"] = cidrs
	changed, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	setNetConf(t, string(changed))
	t.Cleanup(func() {
		setNetConf(t, orig)
		restartFlannel(t)
		// Masquerading is back once the pod IP stops leaving the node.
		for _, f := range families() {
			podIP := ipOf(a.IPs, f).String()
			eventually(t, 30*time.Second, time.Second, f.String()+" masquerade restored", func() error {
				out, _ := internetCapture(t, a, f)
				if strings.Contains(out, podIP+" > "+internetAddr(f)) {
					return fmt.Errorf("pod IP still leaves the node unmasqueraded:\n%s", out)
				}
				return nil
			})
		}
	})
	restartFlannel(t)

	// The internet side has no route back to pods, so the pings go
	// unanswered; what matters is the source address on the wire.
	for _, f := range families() {
		dst := internetAddr(f)
		want := echoRequest(f, ipOf(a.IPs, f).String(), dst)
		took := eventually(t, 30*time.Second, time.Second, "pod IP kept towards "+lab.InternetPrefix(f).String(), func() error {
			out, _ := internetCapture(t, a, f)
			if !strings.Contains(out, want) {
				return fmt.Errorf("at %s want %q, saw:\n%s", dst, want, out)
			}
			return nil
		})
		t.Logf("pod %s reaches %s with its own address (%v after the restart)", a.Name, dst, took.Round(time.Millisecond))
	}
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
			for _, s := range specsOf(families()) {
				if out, err := nodeExecErr(self.Name, "ip", "link", "show", s.Dev); err == nil {
					return fmt.Errorf("%s still exists: %s", s.Dev, out)
				}
				for _, peer := range all {
					if peer.Name == self.Name {
						continue
					}
					cidr := cidrOf(peer.PodCIDRs, s.Fam)
					// ip -6 route adds "metric 1024 pref medium".
					want := fmt.Sprintf("%s via %s dev eth0", cidr, ipOf(peer.InternalIPs, s.Fam))
					out, _ := nodeExecErr(self.Name, "ip", s.IPFlag, "route", "show", cidr.String())
					if got := strings.TrimSpace(out); got != want && !strings.HasPrefix(got, want+" metric ") {
						return fmt.Errorf("route to %s: %q, want %q", cidr, got, want)
					}
				}
			}
			env, _ := nodeExecErr(self.Name, "cat", "/run/flannel/subnet.env")
			if !strings.Contains(env, "FLANNEL_MTU=1500") {
				return fmt.Errorf("subnet.env does not give the underlay MTU:\n%s", env)
			}
			return nil
		})
	}
	for _, f := range families() {
		ping(t, a, ipOf(b.IPs, f), 3)
		ping(t, b, ipOf(a.IPs, f), 3)
	}

	restore()
	eventually(t, 60*time.Second, time.Second, "back on vxlan, nothing of host-gw left", func() error {
		for _, n := range all {
			for _, s := range specsOf(families()) {
				if out, _ := nodeExecErr(n.Name, "ip", s.IPFlag, "route", "show", "dev", "eth0"); strings.Contains(out, s.PodsPrefix) {
					return fmt.Errorf("%s keeps host-gw routes on eth0:\n%s", n.Name, out)
				}
			}
		}
		if problems := hostStateProblems(t); len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "\n"))
		}
		return nil
	})
	for _, f := range families() {
		ping(t, a, ipOf(b.IPs, f), 3)
		ping(t, b, ipOf(a.IPs, f), 3)
	}
}

// peerEntries reports which of victim's route, neighbour and FDB entries
// (victims: one per family) are still on node.
func peerEntries(t *testing.T, node string, victims []overlayNode) []string {
	t.Helper()
	specs := specsOf(families())
	out, err := nodeExecErr(node, "sh", "-c", hostStateScript(specs))
	if err != nil {
		return []string{fmt.Sprintf("reading state: %v", err)}
	}
	st, _ := parseHostState(out, specs)
	var left []string
	for i, s := range specs {
		victim, pl := victims[i], st.Planes[s.Fam]
		for _, r := range pl.Routes {
			if r.Dst == victim.PodCIDR.String() {
				left = append(left, "route "+r.Dst)
			}
		}
		for _, n := range pl.Neighs {
			if n.Dst == victim.vtepIP() {
				left = append(left, "neighbour "+n.Dst)
			}
		}
		for _, f := range pl.FDB {
			if strings.EqualFold(f.MAC, victim.VtepMAC) {
				left = append(left, "fdb "+f.MAC+" dst "+f.Dst)
			}
		}
	}
	return left
}

func testNodeDeleted(t *testing.T) {
	_, victimName := workers(t)
	var victims []overlayNode
	var others []string
	for _, f := range families() {
		for _, n := range overlayNodes(t, f) {
			if n.Name == victimName {
				victims = append(victims, n)
			} else if f == families()[0] {
				others = append(others, n.Name)
			}
		}
	}
	eventually(t, 30*time.Second, time.Second, "peers know "+victimName, func() error {
		for _, o := range others {
			if left := peerEntries(t, o, victims); len(left) != 3*len(victims) {
				return fmt.Errorf("%s has %v for %s, want route, neighbour and fdb of each family", o, left, victimName)
			}
		}
		return nil
	})

	start := time.Now()
	kubectl(t, "delete", "node", victimName, "--wait=true")
	eventually(t, 15*time.Second, 100*time.Millisecond, "peers forget "+victimName, func() error {
		var msgs []string
		for _, o := range others {
			if left := peerEntries(t, o, victims); len(left) > 0 {
				msgs = append(msgs, fmt.Sprintf("%s still has %v", o, left))
			}
		}
		if len(msgs) > 0 {
			return fmt.Errorf("%s", strings.Join(msgs, "; "))
		}
		return nil
	})
	t.Logf("Node %s deleted: its route, neighbour and FDB entries (%d families) left %d peers within %v of the delete call",
		victimName, len(victims), len(others), time.Since(start).Round(time.Millisecond))

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
		a, b := podOn(t, others[0]), podOn(t, others[1])
		for _, f := range families() {
			ping(t, a, ipOf(b.IPs, f), 3)
		}
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
		for _, f := range families() {
			ping(t, p, ipOf(fresh.IPs, f), 3)
			ping(t, fresh, ipOf(p.IPs, f), 3)
		}
	}
	t.Logf("node %s (%s) Ready %v after AddNode, reachable from %d nodes after %v", n.Name, n.IP, ready.Round(time.Millisecond), len(before), time.Since(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, time.Second, "every node's overlay state with the new node", func() error {
		if p := hostStateProblems(t); len(p) > 0 {
			return fmt.Errorf("\n  %s", strings.Join(p, "\n  "))
		}
		return nil
	})
}
