// Package status is the cluster view of Twill through the Kubernetes API:
// every node with its podCIDRs, backend, public addresses and VTEP MACs,
// whether its flannel annotations are valid and its flanneld pod is ready,
// and the problems only a view of all nodes shows: podCIDRs outside the
// network, duplicate public IPs or VTEP MACs, nodes without a lease.
// `twill status` and `twill lab status` print it.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
)

// The manifest's names (Documentation/kube-flannel.yml).
const (
	Namespace   = "kube-flannel"
	ConfigMap   = "kube-flannel-cfg"
	PodSelector = "app=flannel"
)

// API is what the view reads.
type API interface {
	Nodes(ctx context.Context) ([]v1.Node, error)
	// Pods lists the pods of namespace matching the label selector.
	Pods(ctx context.Context, namespace, selector string) ([]v1.Pod, error)
	ConfigMap(ctx context.Context, namespace, name string) (*v1.ConfigMap, error)
}

// Clientset is the API over client-go.
type Clientset struct{ kubernetes.Interface }

// Nodes implements API.
func (c Clientset) Nodes(ctx context.Context) ([]v1.Node, error) {
	l, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// Pods implements API.
func (c Clientset) Pods(ctx context.Context, namespace, selector string) ([]v1.Pod, error) {
	l, err := c.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// ConfigMap implements API.
func (c Clientset) ConfigMap(ctx context.Context, namespace, name string) (*v1.ConfigMap, error) {
	return c.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

// Node is one node's line.
type Node struct {
	Name     string   `json:"name"`
	Ready    bool     `json:"ready"`
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	Backend  string   `json:"backend,omitempty"`
	// PublicIPs and VTEPMACs are per family, in the order of PodCIDRs.
	PublicIPs []string `json:"publicIPs,omitempty"`
	VTEPMACs  []string `json:"vtepMACs,omitempty"`
	// Lease is "valid", "none" (no podCIDR or annotations yet) or what is
	// wrong with the annotations.
	Lease string `json:"lease"`
	// Flanneld is its pod's state: "ready", "not ready", "none".
	Flanneld string `json:"flanneld"`
	Pod      string `json:"pod,omitempty"`
}

// Cluster is the whole view.
type Cluster struct {
	// Network is net-conf.json's networks; empty when the ConfigMap was
	// not readable (ConfigErr says why).
	Network   []string `json:"network,omitempty"`
	Backend   string   `json:"backend,omitempty"`
	ConfigErr string   `json:"configError,omitempty"`
	Nodes     []Node   `json:"nodes"`
	// Problems are the faults found, each naming its nodes.
	Problems []string `json:"problems"`
}

// Options say where the manifest's objects are.
type Options struct {
	// Namespace, ConfigMap and PodSelector default to the manifest's.
	Namespace, ConfigMap, PodSelector string
	// Prefix is the annotation prefix; default flannel's.
	Prefix string
}

// Build reads the cluster and returns its view; an error means the nodes
// could not be listed at all.
func Build(ctx context.Context, api API, o Options) (*Cluster, error) {
	if o.Namespace == "" {
		o.Namespace = Namespace
	}
	if o.ConfigMap == "" {
		o.ConfigMap = ConfigMap
	}
	if o.PodSelector == "" {
		o.PodSelector = PodSelector
	}
	if o.Prefix == "" {
		o.Prefix = kube.DefaultAnnotationPrefix
	}
	ann, err := kube.NewAnnotations(o.Prefix)
	if err != nil {
		return nil, err
	}
	nodes, err := api.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	c := &Cluster{Problems: []string{}}
	cfg := c.readConfig(ctx, api, o)
	pods, podErr := api.Pods(ctx, o.Namespace, o.PodSelector)
	if podErr != nil {
		c.Problems = append(c.Problems, fmt.Sprintf("cannot list the flanneld pods (%s in %s): %v", o.PodSelector, o.Namespace, podErr))
	}
	podOf := map[string]*v1.Pod{}
	for i := range pods {
		if n := pods[i].Spec.NodeName; n != "" {
			podOf[n] = &pods[i]
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	byIP := map[string][]string{}
	byMAC := map[string][]string{}
	var cidrs []owned
	for i := range nodes {
		n := c.node(&nodes[i], ann, cfg)
		switch p := podOf[n.Name]; {
		case podErr != nil:
			n.Flanneld = "unknown"
		case p == nil:
			n.Flanneld = "none"
			c.Problems = append(c.Problems, fmt.Sprintf("%s: no flanneld pod (the DaemonSet tolerates every taint: is its image pullable? kubectl -n %s get ds)", n.Name, o.Namespace))
		case podReady(p):
			n.Flanneld, n.Pod = "ready", p.Name
		default:
			n.Flanneld, n.Pod = "not ready", p.Name
			c.Problems = append(c.Problems, fmt.Sprintf("%s: flanneld pod %s is not ready (%s): kubectl -n %s logs %s -c kube-flannel", n.Name, p.Name, podPhase(p), o.Namespace, p.Name))
		}
		for _, ip := range n.PublicIPs {
			byIP[ip] = append(byIP[ip], n.Name)
		}
		for _, mac := range n.VTEPMACs {
			if mac != "" {
				byMAC[mac] = append(byMAC[mac], n.Name)
			}
		}
		for _, s := range n.PodCIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				cidrs = append(cidrs, owned{p.Masked(), n.Name})
			}
		}
		c.Nodes = append(c.Nodes, n)
	}
	c.Problems = append(c.Problems, duplicates("public IP", byIP, "each node must publish its own address: check --public-ip, the public-ip-overwrite annotations and NAT")...)
	c.Problems = append(c.Problems, duplicates("VTEP MAC", byMAC, "peers send one node's tunnel traffic to the other: a cloned machine? delete the nodes' flannel.1 and restart their flanneld pods")...)
	c.Problems = append(c.Problems, overlaps(cidrs)...)
	return c, nil
}

// readConfig reads net-conf.json from the ConfigMap.
func (c *Cluster) readConfig(ctx context.Context, api API, o Options) *netconf.Config {
	cm, err := api.ConfigMap(ctx, o.Namespace, o.ConfigMap)
	if err != nil {
		c.ConfigErr = fmt.Sprintf("reading ConfigMap %s/%s: %v", o.Namespace, o.ConfigMap, err)
		return nil
	}
	data, ok := cm.Data["net-conf.json"]
	if !ok {
		c.ConfigErr = fmt.Sprintf("ConfigMap %s/%s has no net-conf.json", o.Namespace, o.ConfigMap)
		c.Problems = append(c.Problems, c.ConfigErr)
		return nil
	}
	cfg, err := netconf.Parse([]byte(data))
	if err != nil {
		c.ConfigErr = fmt.Sprintf("net-conf.json in ConfigMap %s/%s: %v", o.Namespace, o.ConfigMap, err)
		c.Problems = append(c.Problems, c.ConfigErr+": no flanneld starts with it")
		return nil
	}
	for _, n := range cfg.Networks {
		c.Network = append(c.Network, n.Prefix.String())
	}
	c.Backend = cfg.Backend.Type
	if c.Backend == "" {
		c.Backend = vxlan.Type
	}
	return cfg
}

// node describes one node and records its own problems.
func (c *Cluster) node(v *v1.Node, ann kube.Annotations, cfg *netconf.Config) Node {
	n := Node{Name: v.Name, Lease: "valid"}
	for _, cond := range v.Status.Conditions {
		if cond.Type == v1.NodeReady {
			n.Ready = cond.Status == v1.ConditionTrue
		}
	}
	pn := ann.Strip(v)
	n.PodCIDRs = pn.PodCIDRs
	n.Backend = pn.Annotations[ann.BackendType]
	for _, s := range n.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			continue // Decode says so
		}
		if cfg != nil {
			if err := cfg.CheckSubnet(p.Masked()); err != nil {
				c.Problems = append(c.Problems, fmt.Sprintf("%s: podCIDR %v; kube-controller-manager's --cluster-cidr and net-conf.json's Network must agree", n.Name, err))
			}
		}
	}
	l, err := ann.Decode(pn)
	switch {
	case errors.Is(err, kube.ErrNotReady):
		n.Lease = "none"
		if len(n.PodCIDRs) == 0 {
			c.Problems = append(c.Problems, n.Name+": no podCIDR: kube-controller-manager must run with --allocate-node-cidrs and --cluster-cidr")
		} else {
			c.Problems = append(c.Problems, n.Name+": no lease yet (no flannel annotations): its flanneld has not started, or cannot write to the API server")
		}
		return n
	case err != nil:
		n.Lease = err.Error()
		c.Problems = append(c.Problems, fmt.Sprintf("%s: invalid annotations: %v (peers skip it)", n.Name, err))
		return n
	}
	for _, ln := range l.Nets {
		n.PublicIPs = append(n.PublicIPs, ln.PublicIP.String())
		mac := ""
		if l.BackendType == vxlan.Type {
			if _, m, err := vxlan.ParseData(ln); err != nil {
				n.Lease = err.Error()
				c.Problems = append(c.Problems, fmt.Sprintf("%s: invalid annotation %s: %v (peers skip it)", n.Name, ann.For(ln.Family()).BackendData, err))
			} else {
				mac = m.String()
			}
		}
		n.VTEPMACs = append(n.VTEPMACs, mac)
	}
	if c.Backend != "" && l.BackendType != c.Backend {
		c.Problems = append(c.Problems, fmt.Sprintf("%s: publishes backend %s, net-conf.json says %s: its flanneld runs an old configuration; restart it", n.Name, l.BackendType, c.Backend))
	}
	return n
}

type owned struct {
	p    netip.Prefix
	node string
}

// overlaps names nodes whose podCIDRs overlap.
func overlaps(cidrs []owned) []string {
	var out []string
	for i := range cidrs {
		for j := i + 1; j < len(cidrs); j++ {
			if cidrs[i].node != cidrs[j].node && cidrs[i].p.Overlaps(cidrs[j].p) {
				out = append(out, fmt.Sprintf("%s and %s have overlapping podCIDRs %s and %s: peers skip both", cidrs[i].node, cidrs[j].node, cidrs[i].p, cidrs[j].p))
			}
		}
	}
	return out
}

// duplicates names values held by more than one node.
func duplicates(what string, by map[string][]string, fix string) []string {
	var keys []string
	for k, ns := range by {
		if len(ns) > 1 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %s is published by %s: %s", what, k, strings.Join(by[k], ", "), fix))
	}
	return out
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func podPhase(p *v1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
		if cs.RestartCount > 0 {
			return fmt.Sprintf("%s, %d restarts", p.Status.Phase, cs.RestartCount)
		}
	}
	return string(p.Status.Phase)
}

// OK reports whether the view shows no problem.
func (c *Cluster) OK() bool { return len(c.Problems) == 0 }

// WriteJSON writes the view as one JSON object.
func (c *Cluster) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// WriteText writes the view as a table and a list of problems.
func (c *Cluster) WriteText(w io.Writer) error {
	var b strings.Builder
	switch {
	case c.ConfigErr != "":
		fmt.Fprintf(&b, "network: unknown (%s)\n\n", c.ConfigErr)
	default:
		fmt.Fprintf(&b, "network %s, backend %s\n\n", strings.Join(c.Network, " and "), c.Backend)
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREADY\tPOD CIDR\tBACKEND\tPUBLIC IP\tVTEP MAC\tLEASE\tFLANNELD")
	dash := func(xs []string) string {
		var out []string
		for _, x := range xs {
			if x != "" {
				out = append(out, x)
			}
		}
		if len(out) == 0 {
			return "-"
		}
		return strings.Join(out, ",")
	}
	for _, n := range c.Nodes {
		ready := "NotReady"
		if n.Ready {
			ready = "Ready"
		}
		lease := n.Lease
		if lease != "valid" && lease != "none" {
			lease = "invalid"
		}
		backend := n.Backend
		if backend == "" {
			backend = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, ready, dash(n.PodCIDRs), backend, dash(n.PublicIPs), dash(n.VTEPMACs), lease, n.Flanneld)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(c.Problems) == 0 {
		b.WriteString("\nno problems\n")
	} else {
		fmt.Fprintf(&b, "\n%d problems:\n", len(c.Problems))
		for _, p := range c.Problems {
			fmt.Fprintf(&b, "  - %s\n", p)
		}
		b.WriteString("\nOn a node with a problem, run doctor: kubectl -n " + Namespace + " exec <its flanneld pod> -- flanneld doctor\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
