package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

const pfx = "flannel.alpha.coreos.com/"

func node(name, cidr, ip, mac string) *v1.Node {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			pfx + "backend-type": "vxlan",
			pfx + "backend-data": fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac),
			pfx + "public-ip":    ip,
		}},
		Spec:   v1.NodeSpec{PodCIDR: cidr},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}},
	}
	if cidr == "" {
		n.Annotations = nil
	}
	return n
}

func pod(nodeName string, ready bool) *v1.Pod {
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-" + nodeName, Namespace: Namespace, Labels: map[string]string{"app": "flannel"}},
		Spec:       v1.PodSpec{NodeName: nodeName},
		Status:     v1.PodStatus{Phase: v1.PodRunning, Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: st}}},
	}
}

func configMap(netconf string) *v1.ConfigMap {
	return &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMap, Namespace: Namespace}, Data: map[string]string{"net-conf.json": netconf}}
}

const netconfJSON = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`

func build(t *testing.T, objs ...runtime.Object) *Cluster {
	t.Helper()
	c, err := Build(context.Background(), Clientset{fake.NewClientset(objs...)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHealthyCluster(t *testing.T) {
	c := build(t, configMap(netconfJSON),
		node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true),
		node("b", "10.244.1.0/24", "172.18.0.3", "0a:00:00:00:00:02"), pod("b", true))
	if !c.OK() {
		t.Errorf("problems %q", c.Problems)
	}
	if len(c.Nodes) != 2 || c.Nodes[0].Name != "a" || c.Nodes[0].VTEPMACs[0] != "0a:00:00:00:00:01" || c.Nodes[1].PublicIPs[0] != "172.18.0.3" || c.Nodes[0].Flanneld != "ready" || c.Nodes[0].Lease != "valid" {
		t.Errorf("nodes %+v", c.Nodes)
	}
	var b bytes.Buffer
	if err := c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"network 10.244.0.0/16, backend vxlan", "a     Ready  10.244.0.0/24  vxlan    172.18.0.2  0a:00:00:00:00:01  valid  ready", "no problems"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := c.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Cluster
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back.Nodes) != 2 {
		t.Errorf("JSON %v: %s", err, b.String())
	}
}

func TestClusterProblems(t *testing.T) {
	for _, c := range []struct {
		name string
		objs []runtime.Object
		want string
	}{
		{"podCIDR outside the network", []runtime.Object{configMap(netconfJSON), node("a", "10.99.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true)}, "a: podCIDR 10.99.0.0/24 is outside"},
		{"no podCIDR", []runtime.Object{configMap(netconfJSON), node("a", "", "", ""), pod("a", true)}, "a: no podCIDR"},
		{"no lease", []runtime.Object{configMap(netconfJSON), func() *v1.Node {
			n := node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01")
			n.Annotations = nil
			return n
		}(), pod("a", true)}, "a: no lease yet"},
		{"duplicate public IP", []runtime.Object{configMap(netconfJSON),
			node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true),
			node("b", "10.244.1.0/24", "172.18.0.2", "0a:00:00:00:00:02"), pod("b", true)}, "public IP 172.18.0.2 is published by a, b"},
		{"duplicate VTEP MAC", []runtime.Object{configMap(netconfJSON),
			node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true),
			node("b", "10.244.1.0/24", "172.18.0.3", "0a:00:00:00:00:01"), pod("b", true)}, "VTEP MAC 0a:00:00:00:00:01 is published by a, b"},
		{"overlapping podCIDRs", []runtime.Object{configMap(netconfJSON),
			node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true),
			node("b", "10.244.0.0/23", "172.18.0.3", "0a:00:00:00:00:02"), pod("b", true)}, "a and b have overlapping podCIDRs"},
		{"broken backend data", []runtime.Object{configMap(netconfJSON), node("a", "10.244.0.0/24", "172.18.0.2", "not-a-mac"), pod("a", true)}, "a: invalid annotation flannel.alpha.coreos.com/backend-data"},
		{"broken public IP", []runtime.Object{configMap(netconfJSON), node("a", "10.244.0.0/24", "bad", "0a:00:00:00:00:01"), pod("a", true)}, "a: invalid annotations"},
		{"flanneld not ready", []runtime.Object{configMap(netconfJSON), node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", false)}, "a: flanneld pod kube-flannel-ds-a is not ready"},
		{"no flanneld pod", []runtime.Object{configMap(netconfJSON), node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01")}, "a: no flanneld pod"},
		{"other backend", []runtime.Object{configMap(`{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`), node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true)}, "a: publishes backend vxlan, net-conf.json says host-gw"},
		{"broken net-conf.json", []runtime.Object{configMap(`{"Network": 7}`), node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true)}, "net-conf.json in ConfigMap kube-flannel/kube-flannel-cfg"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := build(t, c.objs...)
			if !strings.Contains(strings.Join(cl.Problems, "\n"), c.want) {
				t.Errorf("problems %q, want one with %q", cl.Problems, c.want)
			}
			if cl.OK() {
				t.Error("OK with a problem")
			}
		})
	}
}

func TestNoConfigMap(t *testing.T) {
	c := build(t, node("a", "10.244.0.0/24", "172.18.0.2", "0a:00:00:00:00:01"), pod("a", true))
	var b bytes.Buffer
	_ = c.WriteText(&b)
	if !strings.Contains(b.String(), "network: unknown (reading ConfigMap kube-flannel/kube-flannel-cfg") || !c.OK() {
		t.Errorf("without the ConfigMap:\n%s\nproblems %q", b.String(), c.Problems)
	}
}
