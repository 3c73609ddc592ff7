package kube

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"

	"github.com/twill-net/twill/family"
)

// encodeProto encodes obj as the API server does for
// application/vnd.kubernetes.protobuf.
func encodeProto(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	if l, ok := obj.(*v1.NodeList); ok {
		l.TypeMeta = metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"} // as the API server sends it
	}
	s := runtime.NewScheme()
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	metav1.AddToGroupVersion(s, v1.SchemeGroupVersion)
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(obj, &buf); err != nil {
		t.Fatalf("encoding: %v", err)
	}
	return buf.Bytes()
}

// kubeletNode is a node as a kubelet and flanneld leave it: labels,
// a kubelet's status and annotations of several owners.
func kubeletNode(i int, ann map[string]string, spec v1.NodeSpec) v1.Node {
	n := v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("node-%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i)), ResourceVersion: fmt.Sprint(100 + i),
			Labels:      map[string]string{"kubernetes.io/hostname": fmt.Sprintf("node-%d", i)},
			Annotations: ann, Generation: 3, Finalizers: []string{"x/y"},
			CreationTimestamp: metav1.Now(),
		},
		Spec: spec,
		Status: v1.NodeStatus{
			Capacity:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("2")},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Message: "kubelet is posting ready status"}},
			Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "172.18.0.2"}},
			NodeInfo:   v1.NodeSystemInfo{KernelVersion: "6.1", KubeletVersion: "v1.37.2"},
		},
	}
	for j := 0; j < 30; j++ {
		n.Status.Images = append(n.Status.Images, v1.ContainerImage{Names: []string{fmt.Sprintf("registry.example/image-%d@sha256:%064d", j, j)}, SizeBytes: int64(j) << 20})
	}
	return n
}

func TestSkimNodeListMatchesStrip(t *testing.T) {
	a, err := NewAnnotations(DefaultAnnotationPrefix)
	if err != nil {
		t.Fatal(err)
	}
	flannel := map[string]string{
		a.BackendType: "vxlan", a.For(family.IPv4).BackendData: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`,
		a.KubeSubnetManager: "true", a.For(family.IPv4).PublicIP: "172.18.0.3", a.For(family.IPv4).PublicIPOverwrite: "",
		a.For(family.IPv6).PublicIP:    "fc00::3",
		"node.alpha.kubernetes.io/ttl": "0", "flannel.alpha.coreos.com.evil/x": "no",
		DefaultAnnotationPrefix + "/future-key": "kept",
	}
	list := &v1.NodeList{
		ListMeta: metav1.ListMeta{ResourceVersion: "4242", Continue: "token-1"},
		Items: []v1.Node{
			kubeletNode(0, flannel, v1.NodeSpec{PodCIDR: "10.244.0.0/24", PodCIDRs: []string{"10.244.0.0/24"}}),
			kubeletNode(1, nil, v1.NodeSpec{}), // no annotations, no podCIDR
			kubeletNode(2, map[string]string{"other": "x"}, v1.NodeSpec{PodCIDRs: []string{"fd00::/64", "garbage", "10.244.2.0/24", "10.244.3.0/24"}}),
			kubeletNode(3, map[string]string{a.BackendType: "host-gw", a.For(family.IPv4).PublicIP: "not an ip"}, v1.NodeSpec{PodCIDR: "10.244.9.0/24", Unschedulable: true, Taints: []v1.Taint{{Key: "k", Effect: v1.TaintEffectNoSchedule}}}),
		},
	}
	list.Items[1].Spec.PodCIDRs = []string{"fd00:1::/64"} // IPv6 only, podCIDRs alone
	data := encodeProto(t, list)

	got := &PeerNodeList{}
	if err := a.skimNodeList(data, got); err != nil {
		t.Fatalf("skimNodeList: %v", err)
	}
	if got.ResourceVersion != "4242" || got.Continue != "token-1" {
		t.Errorf("list meta = %q, %q; want 4242, token-1", got.ResourceVersion, got.Continue)
	}
	if len(got.Items) != len(list.Items) {
		t.Fatalf("got %d nodes, want %d", len(got.Items), len(list.Items))
	}
	for i := range list.Items {
		want := a.Strip(&list.Items[i])
		if !reflect.DeepEqual(&got.Items[i], want) {
			t.Errorf("node %d:\n got  %+v\n want %+v", i, got.Items[i], *want)
		}
	}
	if want := []string{"fd00::/64", "garbage", "10.244.2.0/24", "10.244.3.0/24"}; !reflect.DeepEqual(got.Items[2].PodCIDRs, want) {
		t.Errorf("podCIDRs = %q, want all of spec.podCIDRs %q", got.Items[2].PodCIDRs, want)
	}
	if want := []string{"10.244.9.0/24"}; !reflect.DeepEqual(got.Items[3].PodCIDRs, want) {
		t.Errorf("podCIDRs of a node with spec.podCIDR only = %q, want %q", got.Items[3].PodCIDRs, want)
	}
}

func TestSkimNodeListRefusesOtherObjects(t *testing.T) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	status := encodeProto(t, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 410})
	for name, data := range map[string][]byte{
		"status":    status,
		"json":      []byte(`{"kind":"NodeList"}`),
		"truncated": encodeProto(t, &v1.NodeList{Items: []v1.Node{kubeletNode(0, nil, v1.NodeSpec{})}})[:200],
	} {
		if err := a.skimNodeList(data, &PeerNodeList{}); err == nil {
			t.Errorf("%s: skimNodeList accepted it", name)
		}
	}
}

// FuzzSkimNodeList: the skimmer parses API-server bytes by hand, so it is
// held to the real decoder: whatever the real protobuf decoder reads as a
// NodeList in the encoding the API server writes (the bytes are what the
// real encoder makes of the decoded list), the skimmer reads too, with the
// same answer (what Strip keeps of each node); and it never panics or
// keeps an annotation outside our prefix on anything at all. (The real
// decoder also takes malformed encodings no server writes, such as groups
// whose end markers do not match; the skimmer refuses those.)
func FuzzSkimNodeList(f *testing.F) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	f.Add(encodeProto(f, &v1.NodeList{Items: []v1.Node{kubeletNode(0, map[string]string{a.For(family.IPv4).PublicIP: "1.2.3.4"}, v1.NodeSpec{PodCIDR: "10.244.0.0/24"})}}))
	f.Add(encodeProto(f, &v1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "7", Continue: "c"}, Items: []v1.Node{
		kubeletNode(1, map[string]string{a.BackendType: "vxlan", a.For(family.IPv6).PublicIP: "fc00::1", "other/x": "y"}, v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "fd00::/64"}}),
		kubeletNode(2, nil, v1.NodeSpec{}),
	}}))
	f.Add([]byte("k8s\x00"))
	s := runtime.NewScheme()
	if err := v1.AddToScheme(s); err != nil {
		f.Fatal(err)
	}
	metav1.AddToGroupVersion(s, v1.SchemeGroupVersion)
	real := protobuf.NewSerializer(s, s)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := &PeerNodeList{}
		skimErr := a.skimNodeList(data, out)
		if skimErr == nil {
			for _, n := range out.Items {
				for k := range n.Annotations {
					if len(k) < len(a.prefix()) || k[:len(a.prefix())] != a.prefix() {
						t.Fatalf("kept annotation %q outside the prefix", k)
					}
				}
			}
		}
		obj, _, err := real.Decode(data, nil, nil)
		list, ok := obj.(*v1.NodeList)
		if err != nil || !ok {
			return
		}
		list.TypeMeta = metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}
		var canonical bytes.Buffer
		if err := real.Encode(list, &canonical); err != nil || !bytes.Equal(canonical.Bytes(), data) {
			return // not what an API server would send
		}
		if skimErr != nil {
			t.Fatalf("the real decoder reads a NodeList of %d nodes, the skimmer fails: %v", len(list.Items), skimErr)
		}
		if out.ResourceVersion != list.ResourceVersion || out.Continue != list.Continue || len(out.Items) != len(list.Items) {
			t.Fatalf("list meta or length differ: skim %q %q %d, real %q %q %d", out.ResourceVersion, out.Continue, len(out.Items), list.ResourceVersion, list.Continue, len(list.Items))
		}
		for i := range list.Items {
			if want := a.Strip(&list.Items[i]); !reflect.DeepEqual(&out.Items[i], want) {
				t.Fatalf("node %d: skim %+v, real decoder then Strip %+v", i, out.Items[i], *want)
			}
		}
	})
}

// BenchmarkSkimNodeList against BenchmarkDecodeAndStrip: one page of 500
// kubelet-sized nodes, the initial list's unit of work.
func BenchmarkSkimNodeList(b *testing.B) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	data := encodeProto(b, benchPage(a))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		out := &PeerNodeList{}
		if err := a.skimNodeList(data, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAndStrip(b *testing.B) {
	a, _ := NewAnnotations(DefaultAnnotationPrefix)
	data := encodeProto(b, benchPage(a))
	s := runtime.NewScheme()
	_ = v1.AddToScheme(s)
	ser := protobuf.NewSerializer(s, s)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		l := &v1.NodeList{}
		if _, _, err := ser.Decode(data, nil, l); err != nil {
			b.Fatal(err)
		}
		out := make([]PeerNode, len(l.Items))
		for i := range l.Items {
			out[i] = *a.Strip(&l.Items[i])
		}
	}
}

func benchPage(a Annotations) *v1.NodeList {
	l := &v1.NodeList{}
	for i := 0; i < listPageSize; i++ {
		l.Items = append(l.Items, kubeletNode(i, map[string]string{
			a.BackendType: "vxlan", a.For(family.IPv4).BackendData: fmt.Sprintf(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:%02x:%02x"}`, i/256, i%256),
			a.KubeSubnetManager: "true", a.For(family.IPv4).PublicIP: fmt.Sprintf("172.18.%d.%d", i/256, i%256),
		}, v1.NodeSpec{PodCIDR: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)}))
	}
	return l
}
