// Package kube is the subnet manager backed by the Kubernetes API: a node's
// pod subnet is its spec.podCIDR, and each node publishes its public IP and
// backend data in flannel's annotations, where every other node reads them.
package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/twill-net/twill/lease"
)

// DefaultAnnotationPrefix is flannel's, so mixed clusters interoperate.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// Annotations names the annotation keys under one prefix.
type Annotations struct {
	BackendType       string
	BackendData       string
	KubeSubnetManager string
	PublicIP          string
	PublicIPOverwrite string
}

// NewAnnotations returns the keys under prefix.
func NewAnnotations(prefix string) (Annotations, error) {
	if prefix == "" || strings.ContainsAny(prefix, "/ ") {
		return Annotations{}, fmt.Errorf("--kube-annotation-prefix %q must be a DNS name like %s, without '/'", prefix, DefaultAnnotationPrefix)
	}
	return Annotations{
		BackendType:       prefix + "/backend-type",
		BackendData:       prefix + "/backend-data",
		KubeSubnetManager: prefix + "/kube-subnet-manager",
		PublicIP:          prefix + "/public-ip",
		PublicIPOverwrite: prefix + "/public-ip-overwrite",
	}, nil
}

// prefix returns "<prefix>/".
func (a Annotations) prefix() string {
	return a.BackendType[:strings.LastIndex(a.BackendType, "/")+1]
}

// vxlanData is the JSON of backend-data for vxlan, in flannel's exact shape
// ({"VNI":1,"VtepMAC":"…"}) so upstream flannel nodes can read ours.
type vxlanData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// Encode renders the annotations that publish own.
func (a Annotations) Encode(own *lease.Lease) (map[string]string, error) {
	data := "null"
	if own.BackendType == "vxlan" {
		b, err := json.Marshal(vxlanData{VNI: own.VNI, VtepMAC: own.VtepMAC.String()})
		if err != nil {
			return nil, err
		}
		data = string(b)
	}
	return map[string]string{
		a.BackendType:       own.BackendType,
		a.BackendData:       data,
		a.KubeSubnetManager: "true",
		a.PublicIP:          own.PublicIP.String(),
	}, nil
}

// ErrNotReady means the node has not published a lease yet (no podCIDR, or
// no annotations): not an error, just not a peer yet.
var ErrNotReady = errors.New("node has no podCIDR or no flannel annotations yet")

// Decode reads a node's lease from its podCIDR and annotations. Broken
// annotations give an error that names the annotation and the problem.
func (a Annotations) Decode(node *PeerNode) (*lease.Lease, error) {
	cidr := node.PodCIDR
	ann := node.Annotations // nil-safe: reading a nil map is fine
	btype, hasType := ann[a.BackendType]
	if cidr == "" || !hasType {
		return nil, ErrNotReady
	}
	ip, subnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("spec.podCIDR %q is not an IPv4 CIDR", cidr)
	}
	subnet.IP = subnet.IP.To4()
	l := &lease.Lease{Node: node.Name, Subnet: subnet, BackendType: btype}
	pub, ok := ann[a.PublicIP]
	if !ok {
		return nil, fmt.Errorf("annotation %s is missing", a.PublicIP)
	}
	if over, ok := ann[a.PublicIPOverwrite]; ok && over != "" {
		pub = over
	}
	l.PublicIP = net.ParseIP(pub).To4()
	if l.PublicIP == nil {
		return nil, fmt.Errorf("annotation %s=%q is not an IPv4 address", a.PublicIP, pub)
	}
	switch btype {
	case "vxlan":
		raw := ann[a.BackendData]
		var d vxlanData
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			return nil, fmt.Errorf("annotation %s=%q is not vxlan backend data like {\"VNI\":1,\"VtepMAC\":\"…\"}: %v", a.BackendData, raw, err)
		}
		mac, err := net.ParseMAC(d.VtepMAC)
		if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
			return nil, fmt.Errorf("annotation %s has VtepMAC %q, not a unicast Ethernet MAC", a.BackendData, d.VtepMAC)
		}
		if d.VNI < 0 || d.VNI > 1<<24-1 {
			return nil, fmt.Errorf("annotation %s has VNI %d, outside 0..16777215", a.BackendData, d.VNI)
		}
		l.VNI, l.VtepMAC = d.VNI, mac
	case "host-gw":
	default:
		return nil, fmt.Errorf("annotation %s=%q is not a known backend (vxlan, host-gw)", a.BackendType, btype)
	}
	return l, nil
}

// PeerNode is what the informer keeps of a Node: its identity, pod CIDR
// and the annotations under our prefix. The informer holds one per node in
// the cluster, so it drops the rest (images, conditions, node info: ~6 KB
// for a kubelet's node) as soon as a Node arrives.
type PeerNode struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	// PodCIDR is spec.podCIDR, or the first IPv4 CIDR of spec.podCIDRs.
	PodCIDR string
}

// DeepCopyObject implements runtime.Object.
func (p *PeerNode) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
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
	out := &PeerNode{PodCIDR: node.Spec.PodCIDR}
	out.Name = node.Name
	out.UID = node.UID
	out.ResourceVersion = node.ResourceVersion
	if out.PodCIDR == "" {
		for _, c := range node.Spec.PodCIDRs {
			if ip, _, err := net.ParseCIDR(c); err == nil && ip.To4() != nil {
				out.PodCIDR = c
				break
			}
		}
	}
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
