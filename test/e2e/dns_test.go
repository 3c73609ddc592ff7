//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab"
)

// TestClusterDNS checks the lab's cluster DNS the way tutorials and users
// meet it: CoreDNS runs behind kube-dns, pods are configured for it, names
// of Services resolve in and across namespaces and outside the cluster, and
// DNS over the overlay and through kube-proxy's Service NAT neither fails
// nor stalls.
func TestClusterDNS(t *testing.T) {
	cluster(t)
	readyNodes(t, 3, 3*time.Minute)
	coredns := corednsPods(t)
	// The client sits on a node without CoreDNS when there is one (both
	// replicas may share a node, as on kind: the second node to be Ready
	// takes both), so its lookups cross the overlay.
	hosts := map[string]bool{}
	for _, p := range coredns {
		hosts[p.Node] = true
	}
	w1, _ := workers(t)
	for _, n := range nodes(t) {
		if !hosts[n.Name] {
			w1 = n.Name
			break
		}
	}
	client := podOn(t, w1)

	t.Run("PodResolvConf", func(t *testing.T) {
		conf := podExec(t, client, "cat", "/etc/resolv.conf")
		want := []string{
			"nameserver " + suite.cluster.DNSServiceIPs()[0].String(),
			"search " + testNamespace + ".svc." + lab.ClusterDomain + " svc." + lab.ClusterDomain + " " + lab.ClusterDomain,
		}
		for _, w := range want {
			if !strings.Contains(conf, w) {
				t.Errorf("pod %s's resolv.conf lacks %q:\n%s", client.Name, w, conf)
			}
		}
	})
	t.Run("KubernetesService", func(t *testing.T) {
		ips := strings.Fields(kubectl(t, "get", "service", "-n", "default", "kubernetes", "-o", "jsonpath={.spec.clusterIPs[*]}"))
		for _, f := range families() {
			want := ipOf(parseIPs(ips), f)
			if want == nil {
				continue
			}
			got := dig(t, client, f, "kubernetes.default.svc."+lab.ClusterDomain)
			if len(got) != 1 || !got[0].Equal(want) {
				t.Errorf("%s of kubernetes.default.svc.%s = %v, want the Service's %s", rrType(f), lab.ClusterDomain, got, want)
			}
		}
	})
	t.Run("ServiceInAnotherNamespace", func(t *testing.T) {
		const ns, name = "twill-e2e-dns", "elsewhere"
		if out, err := kubectlErr("create", "namespace", ns); err != nil && !strings.Contains(out, "AlreadyExists") {
			t.Fatalf("creating namespace %s: %v\n%s", ns, err, out)
		}
		t.Cleanup(func() { _, _ = kubectlErr("delete", "namespace", ns, "--wait=false") })
		kubectl(t, "create", "service", "clusterip", name, "-n", ns, "--tcp=80:80")
		want := net.ParseIP(strings.TrimSpace(kubectl(t, "get", "service", "-n", ns, name, "-o", "jsonpath={.spec.clusterIP}")))
		// The short name goes through the pod's search path.
		f := family.IPv4
		if want.To4() == nil {
			f = family.IPv6
		}
		eventually(t, 30*time.Second, time.Second, "the new Service's name resolves", func() error {
			out, err := podExecErr(client, "dig", "+search", "+short", rrType(f), name+"."+ns)
			if err != nil || strings.TrimSpace(out) != want.String() {
				return fmt.Errorf("dig +search %s %s.%s in %s = %q (%v), want %s", rrType(f), name, ns, testNamespace, strings.TrimSpace(out), err, want)
			}
			return nil
		})
		// A name nobody has is not found, here and outside the cluster.
		out, _ := podExecErr(client, "dig", "+search", "nobody-has-this."+ns)
		if !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("dig +search nobody-has-this.%s: want NXDOMAIN:\n%s", ns, out)
		}
	})
	t.Run("NamesOutsideTheCluster", func(t *testing.T) {
		// CoreDNS forwards to the node's resolver, the lab's internet host,
		// which answers the example domains with its own address.
		for _, f := range families() {
			got := dig(t, client, f, "www.example.com")
			if len(got) != 1 || got[0].String() != internetAddr(f) {
				t.Errorf("%s of www.example.com = %v, want the lab internet's %s", rrType(f), got, internetAddr(f))
			}
		}
		if out, _ := podExecErr(client, "dig", "kubernetes.io"); !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("dig kubernetes.io: want NXDOMAIN (the lab has no internet):\n%s", out)
		}
	})
	t.Run("OverTheOverlay200Times", func(t *testing.T) {
		var remote *corednsPod
		for i := range coredns {
			if coredns[i].Node != client.Node {
				remote = &coredns[i]
				break
			}
		}
		if remote == nil {
			t.Fatalf("both CoreDNS pods run on %s; the anti-affinity should spread them: %+v", client.Node, coredns)
		}
		name := "kubernetes.default.svc." + lab.ClusterDomain
		// The kubernetes Service has the primary family's address only: ask
		// for its A record over each family's overlay.
		for _, f := range families() {
			server := ipOf(remote.IPs, f)
			times := lookups(t, client, 200, fmt.Sprintf("dig +tries=1 +time=5 +short A @%s %s", server, name))
			t.Logf("%d lookups from %s on %s to CoreDNS %s on %s (over %s): %s", len(times), client.Name, client.Node, server, remote.Node, f, summary(times))
		}
		// Through the Service: kube-proxy's NAT of UDP, A and AAAA at once
		// from one socket (glibc), the classic 5-second conntrack stall.
		times := lookups(t, client, 200, "getent ahosts "+name)
		t.Logf("%d lookups through kube-dns (getent ahosts, A and AAAA in parallel): %s", len(times), summary(times))
	})
}

// corednsPod is a CoreDNS pod of the cluster DNS.
type corednsPod struct {
	Name, Node string
	IPs        []net.IP
}

// corednsPods waits until both CoreDNS pods are Running and Ready, spread
// over two nodes, and returns them.
func corednsPods(t *testing.T) []corednsPod {
	t.Helper()
	var pods []corednsPod
	eventually(t, 3*time.Minute, time.Second, "2 CoreDNS pods Running and Ready", func() error {
		out, err := kubectlErr("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.status.podIPs[*].ip}{"\n"}{end}`)
		if err != nil {
			return fmt.Errorf("listing CoreDNS pods: %v: %s", err, out)
		}
		pods = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || f[2] != "Running" || f[3] != "True" {
				return fmt.Errorf("CoreDNS pod not Running and Ready: %q", line)
			}
			pods = append(pods, corednsPod{Name: f[0], Node: f[1], IPs: parseIPs(f[4:])})
		}
		if len(pods) != 2 {
			return fmt.Errorf("%d CoreDNS pods, want 2:\n%s", len(pods), out)
		}
		return nil
	})
	return pods
}

// lookups runs cmd n times in p, one after another, and returns how long
// each took; it fails the test on any failure, empty answer or a lookup of
// 4 s or more (a resolver's retry after a lost packet waits 5 s).
func lookups(t *testing.T, p pod, n int, cmd string) []time.Duration {
	t.Helper()
	script := fmt.Sprintf(`for i in $(seq %d); do s=$(date +%%s%%N); out=$(%s) || { echo "FAIL $i"; continue; }; e=$(date +%%s%%N); [ -n "$out" ] || echo "EMPTY $i"; echo "T $(( (e - s) / 1000 ))"; done`, n, cmd)
	out := podExec(t, p, "sh", "-c", script)
	var times []time.Duration
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[0] != "T" {
			t.Errorf("%s: %q", cmd, line)
			continue
		}
		us, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("%s: timing %q: %v", cmd, line, err)
		}
		times = append(times, time.Duration(us)*time.Microsecond)
	}
	if len(times) != n {
		t.Errorf("%s: %d of %d lookups answered", cmd, len(times), n)
	}
	for i, d := range times {
		if d >= 4*time.Second {
			t.Errorf("%s: lookup %d took %v: a stall", cmd, i+1, d)
		}
	}
	return times
}

// summary is the median and the maximum of times.
func summary(times []time.Duration) string {
	if len(times) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), times...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("median %v, max %v", s[len(s)/2].Round(time.Microsecond*100), s[len(s)-1].Round(time.Microsecond*100))
}

// dig asks the pod's resolver (the cluster DNS) for name's addresses of
// family f.
func dig(t *testing.T, p pod, f family.Family, name string) []net.IP {
	t.Helper()
	return parseIPs(strings.Fields(podExec(t, p, "dig", "+short", "+tries=2", "+time=3", rrType(f), name)))
}

// rrType is the DNS record type of family f's addresses.
func rrType(f family.Family) string {
	if f == family.IPv6 {
		return "AAAA"
	}
	return "A"
}

// parseIPs parses the addresses among ss, skipping anything else.
func parseIPs(ss []string) []net.IP {
	var ips []net.IP
	for _, s := range ss {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	return ips
}
