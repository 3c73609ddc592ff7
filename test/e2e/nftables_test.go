//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

const (
	// underlayGateway is the lab's underlay gateway (br0 in the underlay
	// namespace), the no-masquerade destination the nftables test uses.
	underlayGateway = "172.18.0.1"
	// strangerIP is the underlay address of a host that is not a node.
	strangerIP = "172.18.0.250"
)

// onUnderlay runs commands in the lab's underlay namespace.
func onUnderlay() runner { return inNetNS("the underlay namespace", suite.cluster.UnderlayNetNS()) }

// inPod runs commands in a test pod.
func inPod(p pod) runner {
	return runner{where: "pod " + p.Name, run: func(cmd ...string) (string, error) { return podExecErr(p, cmd...) }}
}

// guardDrops reads the nftables tunnel guard's drop counter on node.
func guardDrops(t *testing.T, node string) int {
	t.Helper()
	out := nodeExec(t, node, "nft", "list", "counter", "ip", "flannel-ipv4", "vxlan-guard-drops")
	m := regexp.MustCompile(`packets (\d+) bytes`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("guard counter on %s: %q", node, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// testNFTablesMode moves the running cluster to nftables (EnableNFTables
// and a no-masquerade CIDR in the ConfigMap, a DaemonSet restart): pods
// reach each other across nodes, masquerade to the internet with the
// node's address, keep their own towards the no-masquerade CIDR, and reach
// a Service through kube-proxy's iptables rules beside Twill's nftables
// table; the VXLAN guard refuses a host that is not a node. Then it moves
// back and checks nothing of nftables is left.
func testNFTablesMode(t *testing.T) {
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	restore := switchNetConf(t, func(conf map[string]any) {
		conf["EnableNFTables"] = true
		conf["NoMasqueradeCIDRs"] = []string{underlayGateway + "/32"}
	})

	all := nodes(t)
	for _, n := range all {
		eventually(t, 60*time.Second, time.Second, n.Name+" on nftables", func() error {
			rules, _ := nodeExecErr(n.Name, "nft", "list", "table", "ip", "flannel-ipv4")
			for _, want := range []string{"chain postrtg", "chain forward", "chain vxlan-guard", "ip daddr " + underlayGateway + " return"} {
				if !strings.Contains(rules, want) {
					return fmt.Errorf("no %q in the flannel-ipv4 table:\n%s", want, rules)
				}
			}
			for _, peer := range all {
				if peer.Name != n.Name && !strings.Contains(rules, peer.InternalIP.String()) {
					return fmt.Errorf("the guard's set lacks %s (%s):\n%s", peer.Name, peer.InternalIP, rules)
				}
			}
			ipt, _ := nodeExecErr(n.Name, "iptables-save")
			if strings.Contains(ipt, "FLANNEL") {
				return fmt.Errorf("flanneld's iptables rules are still there:\n%s", ipt)
			}
			if !strings.Contains(ipt, "KUBE-SERVICES") {
				return fmt.Errorf("kube-proxy's iptables rules are missing:\n%s", ipt)
			}
			return nil
		})
	}
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)

	nodeIP := ""
	for _, n := range all {
		if n.Name == w1 {
			nodeIP = n.InternalIP.String()
		}
	}
	out, err := internetCapture(t, a, family.IPv4)
	if err != nil {
		t.Fatalf("pod-to-internet traffic gets no answer in nftables mode: %v\n%s", err, out)
	}
	if want := "IP " + nodeIP + " > " + internetAddr(family.IPv4) + ": ICMP echo request"; !strings.Contains(out, want) {
		t.Errorf("at %s want %q (masqueraded by nftables), saw:\n%s", internetAddr(family.IPv4), want, out)
	}
	_, _ = nodeExecErr(w1, "conntrack", "-D", "-d", underlayGateway)
	out = capture(t, onUnderlay(), "br0", "icmp and dst host "+underlayGateway, 2, 10*time.Second, nil, func() {
		// No route back to pods there: unanswered, what matters is the
		// source on the wire.
		_, _ = podExecErr(a, "ping", "-n", "-c", "10", "-i", "0.2", "-w", "5", underlayGateway)
	})
	if want := "IP " + a.IP.String() + " > " + underlayGateway + ": ICMP echo request"; !strings.Contains(out, want) {
		t.Errorf("towards the no-masquerade CIDR want %q, saw:\n%s", want, out)
	}

	// kube-proxy (iptables) beside Twill (nftables): a Service across nodes.
	const svc = "nft-svc"
	t.Cleanup(func() { _, _ = kubectlErr("delete", "service", "-n", testNamespace, svc, "--ignore-not-found") })
	podExec(t, b, "sh", "-c", "nohup nc -lk 8080 >/dev/null 2>&1 </dev/null & true")
	kubectl(t, "expose", "pod", b.Name, "-n", testNamespace, "--name", svc, "--port", "8080")
	vip := strings.TrimSpace(kubectl(t, "get", "service", "-n", testNamespace, svc, "-o", "jsonpath={.spec.clusterIP}"))
	eventually(t, 30*time.Second, time.Second, "Service "+vip+" reached from "+a.Name, func() error {
		out, err := podExecErr(a, "nc", "-z", "-w", "2", vip, "8080")
		if err != nil {
			return fmt.Errorf("nc -z %s 8080: %v %s", vip, err, out)
		}
		return nil
	})

	testGuard(t, a, b)

	restore()
	eventually(t, 60*time.Second, time.Second, "back on iptables, nothing of nftables left", func() error {
		for _, n := range all {
			if out, _ := nodeExecErr(n.Name, "nft", "list", "tables"); strings.Contains(out, "flannel") {
				return fmt.Errorf("%s keeps an nftables table:\n%s", n.Name, out)
			}
		}
		if problems := hostStateProblems(t); len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "\n"))
		}
		return nil
	})
	ping(t, a, b.IP, 3)
}

// testGuard sends forged VXLAN to a's node from a namespace on the lab's
// underlay that is not a node: a VXLAN device with the cluster's VNI and
// port, aimed at the node's VTEP, whose inner packets claim a source in
// b's pod subnet. Nothing reaches the pod (tcpdump in it) and the guard's
// counter rises, while b's real packets arrive; once the host is a Node it
// is accepted without a restart, and once deleted refused again.
func testGuard(t *testing.T, a, b pod) {
	var self, peer nodeInfo
	for _, n := range nodes(t) {
		switch n.Name {
		case a.Node:
			self = n
		case b.Node:
			peer = n
		}
	}
	var vtep struct{ VtepMAC string }
	if err := json.Unmarshal([]byte(self.Annotations["flannel.alpha.coreos.com/backend-data"]), &vtep); err != nil {
		t.Fatalf("%s backend-data: %v", self.Name, err)
	}
	forged := make(net.IP, 4)
	copy(forged, peer.PodCIDR.IP.To4())
	forged[3] = 250

	stranger, err := netns.Make("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Close() })
	port := fmt.Sprintf("vstr%d", os.Getpid()%100000)
	if err := underlay.Attach(suite.cluster.UnderlayNetNS(), "br0", port, stranger.Path(), []string{strangerIP + "/16"}, []string{underlayGateway}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = underlay.Detach(suite.cluster.UnderlayNetNS(), port) })
	for _, cmd := range [][]string{
		{"ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "8472", "local", strangerIP, "dev", "eth0", "nolearning"},
		{"ip", "addr", "add", forged.String() + "/32", "dev", "vx0"},
		{"ip", "link", "set", "vx0", "up"},
		{"ip", "neigh", "add", a.IP.String(), "lladdr", vtep.VtepMAC, "dev", "vx0", "nud", "permanent"},
		{"bridge", "fdb", "add", vtep.VtepMAC, "dev", "vx0", "dst", self.InternalIP.String()},
		{"ip", "route", "add", a.IP.String() + "/32", "dev", "vx0"},
	} {
		if out, err := stranger.Exec(cmd...); err != nil {
			t.Fatalf("in the stranger namespace: %s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	// arrived counts the echo requests from src that reach pod a while
	// send runs.
	arrived := func(src string, send func()) int {
		out := capture(t, inPod(a), "eth0", "icmp[icmptype] == icmp-echo and src host "+src, 3, 4*time.Second, nil, send)
		return strings.Count(out, "ICMP echo request")
	}
	forge := func() {
		_, _ = stranger.Exec("ping", "-c", "15", "-i", "0.2", "-W", "1", "-I", forged.String(), a.IP.String())
	}

	before := guardDrops(t, self.Name)
	if n := arrived(forged.String(), forge); n > 0 {
		t.Fatalf("%d forged packets from %s (not a node) reached pod %s", n, strangerIP, a.Name)
	}
	if after := guardDrops(t, self.Name); after <= before {
		t.Errorf("the guard's drop counter on %s stayed at %d", self.Name, after)
	}
	if n := arrived(b.IP.String(), func() { _, _ = podExecErr(b, "ping", "-n", "-c", "15", "-i", "0.2", "-W", "1", a.IP.String()) }); n == 0 {
		t.Fatalf("packets from %s on node %s did not reach pod %s", b.IP, b.Node, a.Name)
	}

	// The host joins as a Node: accepted without a restart.
	const name = "twill-e2e-stranger"
	node := fmt.Sprintf(`{"apiVersion": "v1", "kind": "Node", "metadata": {"name": %q, "annotations": {
	  "flannel.alpha.coreos.com/backend-type": "vxlan",
	  "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"0a:00:00:00:02:50\"}",
	  "flannel.alpha.coreos.com/public-ip": %q}}, "spec": {"podCIDR": "10.244.250.0/24"}}`, name, strangerIP)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_, _ = kubectlErr("delete", "node", name, "--ignore-not-found")
		}
	})
	f, err := os.CreateTemp("", "twill-e2e-node-*.json")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(node); err != nil {
		t.Fatal(err)
	}
	f.Close()
	kubectl(t, "create", "-f", f.Name())
	eventually(t, 60*time.Second, time.Second, strangerIP+" accepted once it is a Node", func() error {
		if n := arrived(forged.String(), forge); n == 0 {
			return fmt.Errorf("nothing from %s reached pod %s", strangerIP, a.Name)
		}
		return nil
	})

	kubectl(t, "delete", "node", name, "--wait=true")
	deleted = true
	eventually(t, 60*time.Second, time.Second, strangerIP+" refused once its Node is gone", func() error {
		before := guardDrops(t, self.Name)
		if n := arrived(forged.String(), forge); n > 0 {
			return fmt.Errorf("%d packets from %s still reach pod %s", n, strangerIP, a.Name)
		}
		if guardDrops(t, self.Name) == before {
			return fmt.Errorf("the guard on %s does not count %s's packets", self.Name, strangerIP)
		}
		return nil
	})
}
