//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/images"
)

const (
	// testNamespace holds every pod the suite makes.
	testNamespace = "twill-e2e"
	// flannelNamespace, flannelDaemonSet and flannelConfigMap are the
	// manifest's names (Documentation/kube-flannel.yml).
	flannelNamespace = "kube-flannel"
	flannelDaemonSet = "kube-flannel-ds"
	flannelConfigMap = "kube-flannel-cfg"
	// opTimeout bounds a single kubectl or node command.
	opTimeout = 2 * time.Minute
)

// families are the IP families of the lab under test, IPv4 first.
func families() []family.Family { return suite.cluster.Families() }

// internetAddr is the lab's internet host of family f.
func internetAddr(f family.Family) string { return lab.InternetAddr(f).String() }

// ipOf returns the address of family f in ips, nil if there is none.
func ipOf(ips []net.IP, f family.Family) net.IP {
	for _, ip := range ips {
		if (ip.To4() != nil) == (f == family.IPv4) {
			return ip
		}
	}
	return nil
}

// cidrOf returns the CIDR of family f in cidrs, nil if there is none.
func cidrOf(cidrs []*net.IPNet, f family.Family) *net.IPNet {
	for _, c := range cidrs {
		if (c.IP.To4() != nil) == (f == family.IPv4) {
			return c
		}
	}
	return nil
}

// cluster returns the lab under test, or skips the test when there is none.
func cluster(t *testing.T) *lab.Cluster {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
	if suite.cluster == nil {
		t.Fatal("no lab loaded; run the suite through TestMain")
	}
	return suite.cluster
}

// eventually calls cond every interval until it returns nil, and fails the
// test with cond's last error when timeout passes first. It returns how long
// it took.
func eventually(t *testing.T, timeout, interval time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}

// kubectl runs kubectl in the lab and fails the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// kubectlErr runs kubectl in the lab and returns its output and error.
func kubectlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return suite.cluster.Kubectl(ctx, args...)
}

// nodeExec runs a command on a node (its network, mount and UTS namespaces)
// and fails the test on error, quoting node, command and output.
func nodeExec(t *testing.T, node string, cmd ...string) string {
	t.Helper()
	out, err := nodeExecErr(node, cmd...)
	if err != nil {
		t.Fatalf("on node %s: %s: %v\n%s", node, strings.Join(cmd, " "), err, out)
	}
	return out
}

// nodeExecErr runs a command on a node and returns its output and error.
func nodeExecErr(node string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return suite.cluster.Exec(ctx, node, cmd...)
}

// nodeInfo is what the API server says about a node.
type nodeInfo struct {
	Name       string
	InternalIP net.IP
	PodCIDR    *net.IPNet
	// InternalIPs and PodCIDRs are the node's addresses and podCIDRs, one
	// per family, InternalIP and PodCIDR first.
	InternalIPs []net.IP
	PodCIDRs    []*net.IPNet
	Ready       bool
	// Annotations are the node's annotations, flanneld's among them.
	Annotations map[string]string
}

// nodes lists the cluster's Node objects, sorted by name.
func nodes(t *testing.T) []nodeInfo {
	t.Helper()
	out := kubectl(t, "get", "nodes", "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				PodCIDR  string   `json:"podCIDR"`
				PodCIDRs []string `json:"podCIDRs"`
			} `json:"spec"`
			Status struct {
				Addresses []struct {
					Type    string `json:"type"`
					Address string `json:"address"`
				} `json:"addresses"`
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("parsing `kubectl get nodes -o json`: %v\n%s", err, out)
	}
	var res []nodeInfo
	for _, it := range list.Items {
		n := nodeInfo{Name: it.Metadata.Name, Annotations: it.Metadata.Annotations}
		if it.Spec.PodCIDR != "" {
			_, cidr, err := net.ParseCIDR(it.Spec.PodCIDR)
			if err != nil {
				t.Fatalf("node %s has podCIDR %q: %v", n.Name, it.Spec.PodCIDR, err)
			}
			n.PodCIDR = cidr
		}
		for _, c := range it.Spec.PodCIDRs {
			_, cidr, err := net.ParseCIDR(c)
			if err != nil {
				t.Fatalf("node %s has podCIDRs %q: %v", n.Name, it.Spec.PodCIDRs, err)
			}
			n.PodCIDRs = append(n.PodCIDRs, cidr)
		}
		for _, a := range it.Status.Addresses {
			if a.Type == "InternalIP" {
				ip := net.ParseIP(a.Address)
				if n.InternalIP == nil {
					n.InternalIP = ip
				}
				n.InternalIPs = append(n.InternalIPs, ip)
			}
		}
		for _, c := range it.Status.Conditions {
			if c.Type == "Ready" {
				n.Ready = c.Status == "True"
			}
		}
		res = append(res, n)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res
}

// readyNodes waits until want nodes are registered and Ready, each with a
// podCIDR, and returns them.
func readyNodes(t *testing.T, want int, timeout time.Duration) []nodeInfo {
	t.Helper()
	var ns []nodeInfo
	eventually(t, timeout, time.Second, fmt.Sprintf("%d nodes Ready", want), func() error {
		ns = nodes(t)
		var ready []string
		for _, n := range ns {
			if n.Ready && n.PodCIDR != nil && len(n.PodCIDRs) == len(families()) {
				ready = append(ready, n.Name)
			}
		}
		if len(ns) != want || len(ready) != want {
			return fmt.Errorf("%d nodes registered, Ready with a podCIDR: %v", len(ns), ready)
		}
		return nil
	})
	return ns
}

// pod is a test pod pinned to one node.
type pod struct {
	Name string
	Node string
	IP   net.IP
	// IPs are its addresses, one per family of the lab, IP first.
	IPs []net.IP
}

// pods keeps one long-lived netshoot pod per node, made on first use and
// shared by the tests that only read.
var pods struct {
	sync.Mutex
	byNode map[string]pod
}

// podOn returns the suite's netshoot pod on node, creating it (and the test
// namespace) when it does not exist yet.
func podOn(t *testing.T, node string) pod {
	t.Helper()
	pods.Lock()
	defer pods.Unlock()
	if p, ok := pods.byNode[node]; ok {
		return p
	}
	if pods.byNode == nil {
		pods.byNode = map[string]pod{}
		if out, err := kubectlErr("create", "namespace", testNamespace); err != nil && !strings.Contains(out, "AlreadyExists") {
			t.Fatalf("creating namespace %s: %v\n%s", testNamespace, err, out)
		}
	}
	p := runPod(t, "net-"+node, node)
	pods.byNode[node] = p
	return p
}

// forgetPodOn drops the shared pod of a node that is gone.
func forgetPodOn(node string) {
	pods.Lock()
	defer pods.Unlock()
	delete(pods.byNode, node)
}

// runPod starts a netshoot pod pinned to node with nodeSelector
// kubernetes.io/hostname and waits until it is Ready.
func runPod(t *testing.T, name, node string) pod {
	t.Helper()
	ensureImages(t, node)
	spec := map[string]any{
		"spec": map[string]any{
			"nodeSelector":                  map[string]string{"kubernetes.io/hostname": node},
			"tolerations":                   []map[string]string{{"operator": "Exists"}},
			"terminationGracePeriodSeconds": 0,
			"restartPolicy":                 "Never",
			"containers": []map[string]any{{
				"name":            name,
				"image":           images.NetshootRef,
				"imagePullPolicy": "Never",
				"command":         []string{"sleep", "infinity"},
			}},
		},
	}
	overrides, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectlErr("run", name, "-n", testNamespace, "--image", images.NetshootRef,
		"--restart=Never", "--overrides", string(overrides)); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatalf("creating pod %s on %s: %v\n%s", name, node, err, out)
	}
	if out, err := kubectlErr("wait", "-n", testNamespace, "--for=condition=Ready", "pod/"+name, "--timeout=90s"); err != nil {
		desc, _ := kubectlErr("describe", "pod", "-n", testNamespace, name)
		t.Fatalf("pod %s on %s not Ready: %v\n%s\n%s", name, node, err, out, desc)
	}
	ipOut := strings.TrimSpace(kubectl(t, "get", "pod", "-n", testNamespace, name, "-o", "jsonpath={.status.podIPs[*].ip}"))
	p := pod{Name: name, Node: node}
	for _, s := range strings.Fields(ipOut) {
		if ip := net.ParseIP(s); ip != nil {
			p.IPs = append(p.IPs, ip)
		}
	}
	if len(p.IPs) != len(families()) {
		t.Fatalf("pod %s on %s has the addresses %q, want one of each family %v", name, node, ipOut, families())
	}
	p.IP = p.IPs[0]
	return p
}

// podExec runs a command in a test pod.
func podExec(t *testing.T, p pod, cmd ...string) string {
	t.Helper()
	out, err := podExecErr(p, cmd...)
	if err != nil {
		t.Fatalf("in pod %s on %s: %s: %v\n%s", p.Name, p.Node, strings.Join(cmd, " "), err, out)
	}
	return out
}

// podExecErr runs a command in a test pod and returns output and error.
func podExecErr(p pod, cmd ...string) (string, error) {
	args := append([]string{"exec", "-n", testNamespace, p.Name, "--"}, cmd...)
	return kubectlErr(args...)
}

// ensureImages imports the lab's netshoot image into node's containerd when
// it is not there yet (the lab imports it at Up; a node added later may
// predate that).
func ensureImages(t *testing.T, node string) {
	t.Helper()
	out, err := nodeExecErr(node, "ctr", "-n", "k8s.io", "images", "ls", "-q", "name=="+images.NetshootRef)
	if err == nil && strings.Contains(out, images.NetshootRef) {
		return
	}
	archive := filepath.Join(suite.repoRoot, images.NetshootArchive)
	nodeExec(t, node, "ctr", "-n", "k8s.io", "images", "import", archive)
}

// ping sends count pings from p to ip and fails unless all are answered.
func ping(t *testing.T, p pod, ip net.IP, count int) {
	t.Helper()
	out, err := podExecErr(p, "ping", "-n", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", ip.String())
	if err != nil {
		t.Fatalf("ping from pod %s (%s, node %s) to %s failed: %v\n%s", p.Name, p.IP, p.Node, ip, err, out)
	}
	if want := fmt.Sprintf("%d received", count); !strings.Contains(out, want) {
		t.Fatalf("ping from pod %s (%s, node %s) to %s: want %q\n%s", p.Name, p.IP, p.Node, ip, want, out)
	}
}

// podsOnNode lists "namespace/name ip…" (every address of the pod) of the
// running pods on node that use the pod network (not hostNetwork).
func podsOnNode(t *testing.T, node string) []string {
	t.Helper()
	out := kubectl(t, "get", "pods", "-A", "-o", "json", "--field-selector", "spec.nodeName="+node+",status.phase=Running")
	var list struct {
		Items []struct {
			Metadata struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				HostNetwork bool `json:"hostNetwork"`
			} `json:"spec"`
			Status struct {
				PodIPs []struct {
					IP string `json:"ip"`
				} `json:"podIPs"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("parsing pods on %s: %v", node, err)
	}
	var res []string
	for _, it := range list.Items {
		if !it.Spec.HostNetwork {
			l := it.Metadata.Namespace + "/" + it.Metadata.Name
			for _, ip := range it.Status.PodIPs {
				l += " " + ip.IP
			}
			res = append(res, l)
		}
	}
	return res
}
