package lab

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lab/images"
)

func TestDNSServiceIP(t *testing.T) {
	if got := DNSServiceIP(family.IPv4).String(); got != "10.96.0.10" {
		t.Errorf("IPv4 kube-dns address = %s, want kubeadm's 10.96.0.10", got)
	}
	if got := DNSServiceIP(family.IPv6).String(); got != "fd00:10:96::a" {
		t.Errorf("IPv6 kube-dns address = %s, want kind's fd00:10:96::a", got)
	}
}

// decodeManifest splits a multi-document manifest into its objects, each
// decoded into a value of the type its kind names.
func decodeManifest(t *testing.T, b []byte) map[string]any {
	t.Helper()
	objs := map[string]any{}
	d := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var raw map[string]any
		err := d.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decoding the manifest: %v\n%s", err, b)
		}
		kind, _ := raw["kind"].(string)
		objs[kind] = raw
	}
}

func TestCoreDNSManifest(t *testing.T) {
	for _, tc := range []struct {
		ipFamily string
		ips      []string
		policy   corev1.IPFamilyPolicy
	}{
		{"", []string{"10.96.0.10"}, corev1.IPFamilyPolicySingleStack},
		{IPv6, []string{"fd00:10:96::a"}, corev1.IPFamilyPolicySingleStack},
		{Dual, []string{"10.96.0.10", "fd00:10:96::a"}, corev1.IPFamilyPolicyPreferDualStack},
	} {
		c := &Cluster{Name: "t", IPFamily: tc.ipFamily}
		b, err := c.CoreDNSManifest()
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeManifest(t, b)
		for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"} {
			if objs[kind] == nil {
				t.Errorf("%q: no %s in the manifest", tc.ipFamily, kind)
			}
		}
		var svc corev1.Service
		var dep appsv1.Deployment
		var cm corev1.ConfigMap
		for kind, into := range map[string]any{"Service": &svc, "Deployment": &dep, "ConfigMap": &cm} {
			if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifestDoc(t, b, kind)), 4096).Decode(into); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
		}
		if svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != tc.ips[0] ||
			strings.Join(svc.Spec.ClusterIPs, ",") != strings.Join(tc.ips, ",") || *svc.Spec.IPFamilyPolicy != tc.policy {
			t.Errorf("%q: Service %s/%s at %s %v (%v), want kube-system/kube-dns at %v (%s)", tc.ipFamily,
				svc.Namespace, svc.Name, svc.Spec.ClusterIP, svc.Spec.ClusterIPs, *svc.Spec.IPFamilyPolicy, tc.ips, tc.policy)
		}
		ports := map[string]int32{}
		for _, p := range svc.Spec.Ports {
			ports[string(p.Protocol)+"/"+p.Name] = p.Port
		}
		if ports["UDP/dns"] != 53 || ports["TCP/dns-tcp"] != 53 || ports["TCP/metrics"] != 9153 {
			t.Errorf("kube-dns ports = %v, want 53/UDP, 53/TCP, 9153/TCP", ports)
		}
		pod := dep.Spec.Template
		if *dep.Spec.Replicas != 2 || pod.Labels["k8s-app"] != "kube-dns" || svc.Spec.Selector["k8s-app"] != "kube-dns" {
			t.Errorf("Deployment: %d replicas, labels %v, Service selector %v; want 2 replicas labelled k8s-app=kube-dns",
				*dep.Spec.Replicas, pod.Labels, svc.Spec.Selector)
		}
		if got := pod.Spec.Containers[0].Image; got != images.CoreDNSRef {
			t.Errorf("CoreDNS image = %s, want the lab's %s", got, images.CoreDNSRef)
		}
		if pod.Spec.DNSPolicy != corev1.DNSDefault {
			t.Errorf("CoreDNS dnsPolicy = %s: it must use the node's resolver, never itself", pod.Spec.DNSPolicy)
		}
		corefile := cm.Data["Corefile"]
		for _, want := range []string{"kubernetes cluster.local in-addr.arpa ip6.arpa", "forward . /etc/resolv.conf", "cache 30", "health", "ready", "loop", "prometheus :9153"} {
			if !strings.Contains(corefile, want) {
				t.Errorf("Corefile lacks %q:\n%s", want, corefile)
			}
		}
	}
}

// manifestDoc returns the document of kind in a multi-document manifest.
func manifestDoc(t *testing.T, manifest []byte, kind string) []byte {
	t.Helper()
	for _, doc := range bytes.Split(manifest, []byte("\n---\n")) {
		if bytes.Contains(doc, []byte("\nkind: "+kind+"\n")) {
			return doc
		}
	}
	t.Fatalf("no %s in the manifest", kind)
	return nil
}

func TestInternetCorefile(t *testing.T) {
	got := internetCorefile([]family.Family{family.IPv4, family.IPv6})
	for _, want := range []string{
		`template IN A {`, `answer "{{ .Name }} 60 IN A 203.0.113.10"`,
		`template IN AAAA {`, `answer "{{ .Name }} 60 IN AAAA 2001:db8::10"`,
		"template ANY ANY {\n        rcode NOERROR",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("internet Corefile lacks %q:\n%s", want, got)
		}
	}
	if v4 := internetCorefile([]family.Family{family.IPv4}); strings.Contains(v4, "AAAA 2001") {
		t.Errorf("an IPv4 lab's internet DNS answers AAAA with an address it does not have:\n%s", v4)
	}
	// The catch-all comes last: CoreDNS's template blocks answer in order.
	if strings.Index(got, "ANY ANY") < strings.Index(got, "IN AAAA") {
		t.Errorf("the catch-all template comes before the address templates:\n%s", got)
	}
	if !strings.HasPrefix(got, "example.com example.net example.org {") || !strings.Contains(got, ". {\n    log\n    template ANY ANY {\n        rcode NXDOMAIN") {
		t.Errorf("the internet DNS answers the example domains and NXDOMAIN for the rest:\n%s", got)
	}
}
