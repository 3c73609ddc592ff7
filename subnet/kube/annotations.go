// Package kube is the subnet manager backed by the Kubernetes API: a node's
// pod subnets are its spec.podCIDRs (one per IP family), and each node
// publishes its public IPs and backend data in flannel's annotations, where
// every other node reads them.
package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
)

// DefaultAnnotationPrefix is flannel's, so mixed clusters interoperate.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// Annotations names the annotation keys under one prefix.
type Annotations struct {
	BackendType       string
	KubeSubnetManager string
	// families holds each family's keys, in the order of family.All.
	families []FamilyKeys
}

// FamilyKeys are the keys of one IP family's part of a lease, flannel's:
// backend-data, public-ip, public-ip-overwrite and node-public-ip for IPv4;
// backend-v6-data, public-ipv6, public-ipv6-overwrite and node-public-ipv6
// for IPv6.
type FamilyKeys struct {
	Family      family.Family
	BackendData string
	// PublicIP is what the node publishes; PublicIPOverwrite, set by a
	// person, replaces it (peers read it too).
	PublicIP          string
	PublicIPOverwrite string
	// NodePublicIP, set by a person on the node, is read by flanneld at
	// start in place of --public-ip(v6), as flannel does.
	NodePublicIP string
}

// NewAnnotations returns the keys under prefix.
func NewAnnotations(prefix string) (Annotations, error) {
	if prefix == "" || strings.ContainsAny(prefix, "/ ") {
		return Annotations{}, fmt.Errorf("--kube-annotation-prefix %q must be a DNS name like %s, without '/'", prefix, DefaultAnnotationPrefix)
	}
	p := prefix + "/"
	return Annotations{
		BackendType:       p + "backend-type",
		KubeSubnetManager: p + "kube-subnet-manager",
		families: []FamilyKeys{
			{Family: family.IPv4, BackendData: p + "backend-data", PublicIP: p + "public-ip", PublicIPOverwrite: p + "public-ip-overwrite", NodePublicIP: p + "node-public-ip"},
			{Family: family.IPv6, BackendData: p + "backend-v6-data", PublicIP: p + "public-ipv6", PublicIPOverwrite: p + "public-ipv6-overwrite", NodePublicIP: p + "node-public-ipv6"},
		},
	}, nil
}

// For returns the keys of family f.
func (a Annotations) For(f family.Family) FamilyKeys {
	for _, k := range a.families {
		if k.Family == f {
			return k
		}
	}
	return FamilyKeys{}
}

// Published returns the backend data a node's annotations already publish
// for family f when they name backend typ, or nil: what a node restarted,
// upgraded or taken over from upstream flannel told its peers before.
func (a Annotations) Published(ann map[string]string, typ string, f family.Family) json.RawMessage {
	data, ok := ann[a.For(f).BackendData]
	if !ok || ann[a.BackendType] != typ || data == "" || data == "null" {
		return nil
	}
	return json.RawMessage(data)
}

// prefix returns "<prefix>/".
func (a Annotations) prefix() string {
	return a.BackendType[:strings.LastIndex(a.BackendType, "/")+1]
}

// Encode renders the annotations that publish own: the backend type, and
// for each of its families the public address and the backend data
// ("null" when the backend has none), as flannel writes them.
func (a Annotations) Encode(own *lease.Lease) (map[string]string, error) {
	out := map[string]string{
		a.BackendType:       own.BackendType,
		a.KubeSubnetManager: "true",
	}
	for _, n := range own.Nets {
		k := a.For(n.Family())
		if k.Family == 0 {
			return nil, fmt.Errorf("no annotation keys for %s", n.Family())
		}
		data := "null"
		if n.BackendData != nil {
			data = string(n.BackendData)
		}
		out[k.BackendData] = data
		out[k.PublicIP] = n.PublicIP.String()
	}
	return out, nil
}

// ErrNotReady means the node has not published a lease yet (no podCIDR, or
// no annotations): not an error, just not a peer yet.
var ErrNotReady = errors.New("node has no podCIDR or no flannel annotations yet")

// Decode reads a node's lease from its podCIDRs and annotations: one Net
// for each podCIDR whose family has a public address annotation. Broken
// annotations give an error that names the annotation and the problem.
// The backend data is kept raw, for the backend to read.
func (a Annotations) Decode(node *PeerNode) (*lease.Lease, error) {
	ann := node.Annotations // nil-safe: reading a nil map is fine
	btype, hasType := ann[a.BackendType]
	if len(node.PodCIDRs) == 0 || !hasType {
		return nil, ErrNotReady
	}
	l := &lease.Lease{Node: node.Name, BackendType: btype, Nets: make([]lease.Net, 0, len(node.PodCIDRs))}
	var missing []string
	for _, c := range node.PodCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("spec.podCIDR %q is not a CIDR", c)
		}
		p = p.Masked()
		f := family.OfPrefix(p)
		if _, dup := l.Net(f); dup {
			continue // Kubernetes allows one per family; a second is not ours to use
		}
		k := a.For(f)
		pub, ok := ann[k.PublicIP]
		if !ok {
			missing = append(missing, k.PublicIP)
			continue
		}
		if over, ok := ann[k.PublicIPOverwrite]; ok && over != "" {
			pub = over
		}
		ip, err := family.ParseAddr(f, pub)
		if err != nil {
			return nil, fmt.Errorf("annotation %s=%q is not an %s address", k.PublicIP, pub, f)
		}
		n := lease.Net{Subnet: p, PublicIP: ip}
		if d, ok := ann[k.BackendData]; ok {
			n.BackendData = json.RawMessage(d)
		}
		l.Nets = append(l.Nets, n)
	}
	if len(l.Nets) == 0 {
		return nil, fmt.Errorf("annotation %s is missing", strings.Join(missing, " and "))
	}
	slices.SortFunc(l.Nets, func(x, y lease.Net) int { return int(x.Family()) - int(y.Family()) })
	return l, nil
}

// PeerNode is what the informer keeps of a Node: its identity, pod CIDR
// and the annotations under our prefix. The informer holds one per node in
// the cluster, so it drops the rest (images, conditions, node info: ~6 KB
// for a kubelet's node) as soon as a Node arrives.
type PeerNode struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	// PodCIDRs is spec.podCIDRs (one CIDR per family), or spec.podCIDR
	// alone when podCIDRs is empty.
	PodCIDRs []string
}

// DeepCopyObject implements runtime.Object.
func (p *PeerNode) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.PodCIDRs = slices.Clone(p.PodCIDRs)
	return &c
}

// PeerNodeList is a list of PeerNodes, as the informer's list returns it.
type PeerNodeList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []PeerNode
}

// DeepCopyObject implements runtime.Object.
func (l *PeerNodeList) DeepCopyObject() runtime.Object {
	c := &PeerNodeList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: make([]PeerNode, len(l.Items))}
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*PeerNode)
	}
	return c
}

// Strip returns what Decode reads of node.
func (a Annotations) Strip(node *v1.Node) *PeerNode {
	out := &PeerNode{PodCIDRs: node.Spec.PodCIDRs}
	if len(out.PodCIDRs) == 0 && node.Spec.PodCIDR != "" {
		out.PodCIDRs = []string{node.Spec.PodCIDR}
	}
	out.Name = node.Name
	out.UID = node.UID
	out.ResourceVersion = node.ResourceVersion
	p := a.prefix()
	for k, v := range node.Annotations {
		if strings.HasPrefix(k, p) {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, 5)
			}
			out.Annotations[k] = v
		}
	}
	return out
}
