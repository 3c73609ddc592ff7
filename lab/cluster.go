package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/node"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// ManifestPath is the manifest `twill lab up` applies, relative to the
// repository root.
const ManifestPath = "Documentation/kube-flannel.yml"

// KubectlCmd returns a kubectl command with the admin kubeconfig, run in
// the underlay's network namespace (the host has no route to the lab).
func (c *Cluster) KubectlCmd(ctx context.Context, args ...string) (*exec.Cmd, error) {
	kubectl, err := k8sbin.Path("kubectl")
	if err != nil {
		return nil, err
	}
	argv := append([]string{"nsenter", "--net=" + c.UnderlayNetNS(), "--", kubectl, "--kubeconfig=" + c.Kubeconfig}, args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...), nil
}

// Kubectl runs kubectl with the admin kubeconfig inside the lab's network
// and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd, err := c.KubectlCmd(ctx, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// ExecCmd returns a command running cmd in node's network, mount and UTS
// namespaces, for callers that attach stdin/stdout themselves.
func (c *Cluster) ExecCmd(ctx context.Context, nodeName string, cmd ...string) (*exec.Cmd, error) {
	n, err := c.NodeByName(nodeName)
	if err != nil {
		return nil, err
	}
	return c.node(n).Command(ctx, cmd...), nil
}

// Exec runs cmd in node's network, mount and UTS namespaces and returns its
// combined output.
func (c *Cluster) Exec(ctx context.Context, nodeName string, cmd ...string) (string, error) {
	n, err := c.NodeByName(nodeName)
	if err != nil {
		return "", err
	}
	return c.node(n).Run(ctx, cmd...)
}

// RESTConfig returns an admin client-go configuration that reaches the API
// server from the host (connections start inside the underlay namespace).
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	return controlplane.RESTConfig(c.Kubeconfig, c.UnderlayNetNS())
}

// AddNode creates and starts one more worker, on the flat subnet, and waits
// until it has registered (and, with CNI "twill", until it is Ready).
func (c *Cluster) AddNode(ctx context.Context) (Node, error) {
	next := 0
	for _, n := range c.Nodes {
		if n.Index >= next {
			next = n.Index + 1
		}
	}
	binDir, err := k8sbin.Dir()
	if err != nil {
		return Node{}, err
	}
	cp, err := c.controlPlane()
	if err != nil {
		return Node{}, err
	}
	n, err := c.createNode(ctx, next, false)
	if err != nil {
		_ = c.removeNodeResources(n.Name, next)
		return Node{}, err
	}
	c.Nodes = append(c.Nodes, n)
	if err := c.save(); err != nil {
		return Node{}, err
	}
	var archives []string
	for _, im := range images.All() {
		archives = append(archives, filepath.Join(c.RepoRoot, im.Archive))
	}
	if tw := filepath.Join(c.RepoRoot, TwillImageArchive); fileExists(tw) {
		archives = append(archives, tw)
	}
	if err := c.startNode(ctx, cp, binDir, n, archives); err != nil {
		return n, err
	}
	if err := c.waitRegistered(ctx, []Node{n}); err != nil {
		return n, err
	}
	if c.CNI == "twill" {
		if err := c.WaitReady(ctx, 3*time.Minute); err != nil {
			return n, err
		}
	}
	return n, nil
}

// RemoveNode deletes the node from the cluster, stops everything running
// on it and removes its namespaces, cgroups and files.
func (c *Cluster) RemoveNode(ctx context.Context, name string) error {
	n, err := c.NodeByName(name)
	if err != nil {
		return err
	}
	if n.Index == 0 {
		return fmt.Errorf("%s runs the control plane and cannot be removed; use `twill lab down`", name)
	}
	if _, err := c.Kubectl(ctx, "delete", "node", name, "--ignore-not-found", "--wait=false"); err != nil {
		return err
	}
	if err := c.removeNodeResources(name, n.Index); err != nil {
		return err
	}
	kept := c.Nodes[:0]
	for _, m := range c.Nodes {
		if m.Name != name {
			kept = append(kept, m)
		}
	}
	c.Nodes = kept
	return c.save()
}

func (c *Cluster) removeNodeResources(name string, index int) error {
	nd := node.New(name, nil, c.nodeDir(name), c.nsDir(), netns.Path(name))
	_ = nd.Stop(5 * time.Second)
	var cgDirs []string
	hs, _ := node.AllHierarchies()
	for _, h := range hs {
		cgDirs = append(cgDirs, filepath.Join(h, podsCgroup(c.Name, name)), filepath.Join(h, daemonsCgroup(c.Name, name)))
	}
	if err := procKillAll([]string{nd.NetNS, nd.MountNS}, cgDirs); err != nil {
		return err
	}
	if err := nd.ReleaseNamespaces(); err != nil {
		return err
	}
	if err := detachNode(c.Name, index); err != nil {
		return err
	}
	if err := netns.Delete(name); err != nil {
		return err
	}
	for _, cg := range []string{podsCgroup(c.Name, name), daemonsCgroup(c.Name, name)} {
		if err := node.RemoveCgroup(cg); err != nil {
			return err
		}
	}
	if err := unmountUnder(nd.Dir); err != nil {
		return err
	}
	return os.RemoveAll(nd.Dir)
}

// ApplyManifest applies Documentation/kube-flannel.yml, with net-conf.json's
// Backend.Type set to backend ("vxlan" or "host-gw") and, for a lab made
// with Options.DirectRouting, DirectRouting on (a vxlan setting, idle on
// host-gw), then waits until every node is Ready. A lab moving to another
// backend restarts the DaemonSet, so every flanneld reads the new
// net-conf.json.
func (c *Cluster) ApplyManifest(ctx context.Context, backend string) error {
	if backend != "vxlan" && backend != "host-gw" {
		return fmt.Errorf("backend %q: want vxlan or host-gw", backend)
	}
	if backend == "host-gw" && c.RoutedNodes > 0 && !c.UnderlayRoutes {
		return errHostGWRouted
	}
	b, err := os.ReadFile(filepath.Join(c.RepoRoot, ManifestPath))
	if err != nil {
		return fmt.Errorf("reading the manifest: %w", err)
	}
	manifest := SetBackend(b, backend)
	if c.DirectRouting {
		manifest = SetDirectRouting(manifest)
	}
	manifest = SetIPFamily(manifest, c.Family())
	if c.UnderlayRoutes {
		manifest = SetNoMasquerade(manifest, VMRange.String())
		manifest = SetHostGWUnderlayRoutes(manifest)
	}
	cmd, err := c.KubectlCmd(ctx, "apply", "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w: %s", ManifestPath, err, bytes.TrimSpace(out))
	}
	switched := c.Backend != backend
	c.Backend = backend
	if err := c.save(); err != nil {
		return err
	}
	if switched {
		for _, args := range [][]string{
			{"rollout", "restart", "-n", "kube-flannel", "daemonset/kube-flannel-ds"},
			{"rollout", "status", "-n", "kube-flannel", "daemonset/kube-flannel-ds", "--timeout=3m"},
		} {
			if _, err := c.Kubectl(ctx, args...); err != nil {
				return fmt.Errorf("moving lab %s to %s: %w", c.Name, backend, err)
			}
		}
	}
	return c.WaitReady(ctx, 5*time.Minute)
}

var backendType = regexp.MustCompile(`("Type"\s*:\s*)"(vxlan|host-gw)"`)

// SetBackend returns the manifest with every net-conf.json Backend "Type"
// set to backend.
func SetBackend(manifest []byte, backend string) []byte {
	return backendType.ReplaceAll(manifest, []byte(`${1}"`+backend+`"`))
}

// errHostGWRouted refuses host-gw on a lab with routed nodes whose
// underlay does not route the podCIDRs: their pods' traffic would go to a
// router that does not know where they are.
var errHostGWRouted = errors.New("--routed-nodes with --backend host-gw: host-gw routes a peer via its node's address, which a node on the other subnet cannot reach directly; add --underlay-routes (the underlay then routes every node's podCIDR, as a VPC route table does), or use vxlan (with --direct-routing to route the nodes of one subnet plainly)")

// SetHostGWUnderlayRoutes returns the manifest with "UnderlayRoutes": true
// in every net-conf.json host-gw Backend (right after its "Type"): peers
// on the other subnet are then reached through the underlay's router.
func SetHostGWUnderlayRoutes(manifest []byte) []byte {
	return hostGWType.ReplaceAll(manifest, []byte(`${1}"host-gw", "UnderlayRoutes": true`))
}

var hostGWType = regexp.MustCompile(`("Type"\s*:\s*)"host-gw"(\s*,\s*"UnderlayRoutes"\s*:\s*(true|false))?`)

// SetDirectRouting returns the manifest with "DirectRouting": true in every
// net-conf.json vxlan Backend (right after its "Type", replacing a
// DirectRouting already there).
func SetDirectRouting(manifest []byte) []byte {
	return vxlanType.ReplaceAll(manifest, []byte(`${1}"vxlan", "DirectRouting": true`))
}

// SetIPFamily returns the manifest with net-conf.json set for the lab's IP
// family ipFamily (Options.IPFamily): "ipv4" leaves it as it is, "dual"
// adds "EnableIPv6" and the IPv6 pod network, "ipv6" turns IPv4 off and
// IPv6 on. The manifest's "Network" stays: flanneld ignores a disabled
// family's keys.
func SetIPFamily(manifest []byte, ipFamily string) []byte {
	v6 := fmt.Sprintf(`"EnableIPv6": true,${2}"IPv6Network": %q`, controlplane.IPv6.ClusterCIDR)
	switch ipFamily {
	case Dual:
		return enableIPv4.ReplaceAll(manifest, []byte(`${1}true,${2}`+v6))
	case IPv6:
		return enableIPv4.ReplaceAll(manifest, []byte(`${1}false,${2}`+v6))
	}
	return manifest
}

// SetNoMasquerade returns the manifest with "NoMasqueradeCIDRs": cidrs in
// every net-conf.json, right after its "Network".
func SetNoMasquerade(manifest []byte, cidrs ...string) []byte {
	q := make([]string, len(cidrs))
	for i, c := range cidrs {
		q[i] = fmt.Sprintf("%q", c)
	}
	return networkKey.ReplaceAll(manifest, []byte(`${1}${2}"NoMasqueradeCIDRs": [`+strings.Join(q, ", ")+`],${2}`))
}

// networkKey matches net-conf.json's "Network" and the line break and
// indentation after it.
var networkKey = regexp.MustCompile(`("Network"\s*:\s*"[^"]*",)(\s*)`)

// enableIPv4 matches net-conf.json's "EnableIPv4": true and the line break
// and indentation after it.
var enableIPv4 = regexp.MustCompile(`("EnableIPv4"\s*:\s*)true(\s*)`)

var vxlanType = regexp.MustCompile(`("Type"\s*:\s*)"vxlan"(\s*,\s*"DirectRouting"\s*:\s*(true|false))?`)

// WaitReady waits until every node of the lab is Ready.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		var notReady []string
		if err == nil {
			ready := map[string]bool{}
			for _, n := range list.Items {
				for _, cond := range n.Status.Conditions {
					if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
						ready[n.Name] = true
					}
				}
			}
			for _, n := range c.Nodes {
				if !ready[n.Name] {
					notReady = append(notReady, n.Name)
				}
			}
			if len(notReady) == 0 {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			pods, _ := c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
			logs, _ := c.Kubectl(ctx, "logs", "-n", "kube-flannel", "-l", "k8s-app=flannel", "--prefix", "--tail=3", "--max-log-requests=50")
			return fmt.Errorf("nodes %v not Ready after %s (err: %v); pods:\n%s\nlast CNI DaemonSet log lines:\n%s", notReady, timeout, err, pods, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// NodeStatus is what Status reports for one node.
type NodeStatus struct {
	Node
	// Ready is the node's Ready condition; PodCIDR its allocation, and
	// PodCIDRs its allocations, one per family (PodCIDR first).
	Ready    bool
	PodCIDR  string
	PodCIDRs []string
	// SubnetEnv is the node's /run/flannel/subnet.env, nil before the CNI
	// has written it.
	SubnetEnv *subnetenv.Env
	// SubnetEnvText is the file as written.
	SubnetEnvText string
	// Running lists which of the node's daemons run.
	Running map[string]bool
}

// Status reports every node's readiness, pod CIDR, subnet.env and
// daemons. When the API server cannot be asked, it still returns what the
// nodes show, together with the error.
func (c *Cluster) Status(ctx context.Context) ([]NodeStatus, error) {
	var list corev1.NodeList
	out, apiErr := c.Kubectl(ctx, "get", "nodes", "-o", "json", "--request-timeout=10s")
	if apiErr == nil {
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			apiErr = fmt.Errorf("parsing nodes: %w", err)
		}
	}
	byName := map[string]corev1.Node{}
	for _, n := range list.Items {
		byName[n.Name] = n
	}
	var st []NodeStatus
	for _, n := range c.Nodes {
		s := NodeStatus{Node: n, Running: map[string]bool{}}
		if k, ok := byName[n.Name]; ok {
			s.PodCIDR, s.PodCIDRs = k.Spec.PodCIDR, k.Spec.PodCIDRs
			for _, cond := range k.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					s.Ready = cond.Status == corev1.ConditionTrue
				}
			}
		}
		if env, err := c.Exec(ctx, n.Name, "cat", "/run/flannel/subnet.env"); err == nil {
			s.SubnetEnvText = env
			if e, err := subnetenv.Parse(strings.NewReader(env)); err == nil {
				s.SubnetEnv = e
			}
		}
		nd := c.node(n)
		for _, d := range node.Daemons {
			s.Running[d] = nd.Running(d)
		}
		st = append(st, s)
	}
	return st, apiErr
}

func (c *Cluster) controlPlane() (*controlplane.ControlPlane, error) {
	return controlplane.Load(c.controlPlaneDir(), c.Nodes[0].NetNS)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
