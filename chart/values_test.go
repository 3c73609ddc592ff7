package chart

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/twill-net/twill/backend/hostgw"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/family"
)

// defaultArgs are flanneld's arguments in the manifest.
var defaultArgs = []string{
	"--ip-masq", "--kube-subnet-mgr",
	"--cni-conf-src=/etc/kube-flannel/cni-conf.json",
	"--cni-conf-dest=/etc/cni/net.d/10-flannel.conflist",
	"--healthz-port=10268",
}

// networks are the enabled families' pod networks of a net-conf.json.
func networks(t *testing.T, o *objects) map[family.Family]string {
	t.Helper()
	nc, _ := o.netConf(t)
	out := map[family.Family]string{}
	for _, n := range nc.Networks {
		out[n.Family()] = n.Prefix.String()
	}
	return out
}

// TestValues renders the chart with each values file of testdata and
// checks what the values promise, reading net-conf.json with flanneld's own
// parsers.
func TestValues(t *testing.T) {
	for _, c := range []struct {
		file  string
		check func(t *testing.T, o *objects)
	}{
		{"", func(t *testing.T, o *objects) {
			if want := []string{"Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}; !slices.Equal(o.kinds, want) {
				t.Errorf("kinds %v, want %v", o.kinds, want)
			}
			if got := networks(t, o); !maps.Equal(got, map[family.Family]string{family.IPv4: "10.244.0.0/16"}) {
				t.Errorf("networks %v, want IPv4 10.244.0.0/16 only", got)
			}
			if _, cfg := o.netConf(t); cfg != (vxlan.Config{VNI: vxlan.DefaultVNI, Port: vxlan.DefaultPort}) {
				t.Errorf("backend %+v, want vxlan with its defaults", cfg)
			}
			if args := o.container(t).Args; !slices.Equal(args, defaultArgs) {
				t.Errorf("args %v, want %v", args, defaultArgs)
			}
		}},
		{"dual-stack.yaml", func(t *testing.T, o *objects) {
			want := map[family.Family]string{family.IPv4: "10.244.0.0/16", family.IPv6: "fd00:10:244::/56"}
			if got := networks(t, o); !maps.Equal(got, want) {
				t.Errorf("networks %v, want %v", got, want)
			}
		}},
		{"ipv6-only.yaml", func(t *testing.T, o *objects) {
			if got := networks(t, o); !maps.Equal(got, map[family.Family]string{family.IPv6: "fd00:10:244::/56"}) {
				t.Errorf("networks %v, want IPv6 fd00:10:244::/56 only", got)
			}
		}},
		{"host-gw.yaml", func(t *testing.T, o *objects) {
			if _, cfg := o.netConf(t); cfg != (hostgw.Config{MTU: 1400, UnderlayRoutes: true}) {
				t.Errorf("backend %+v, want host-gw with MTU 1400 and UnderlayRoutes", cfg)
			}
			if !slices.Contains(o.container(t).Args, "--ip-masq") {
				t.Errorf("args %v lack --ip-masq", o.container(t).Args)
			}
		}},
		{"nftables.yaml", func(t *testing.T, o *objects) {
			nc, _ := o.netConf(t)
			want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:100::/64")}
			if !nc.EnableNFTables || !slices.Equal(nc.NoMasqueradeCIDRs, want) {
				t.Errorf("EnableNFTables %v, NoMasqueradeCIDRs %v; want true, %v", nc.EnableNFTables, nc.NoMasqueradeCIDRs, want)
			}
		}},
		{"guard-off.yaml", func(t *testing.T, o *objects) {
			want := []string{"--kube-subnet-mgr",
				"--cni-conf-src=/etc/kube-flannel/cni-conf.json", "--cni-conf-dest=/etc/cni/net.d/10-flannel.conflist",
				"--healthz-port=10268", "--vxlan-guard=false", "--iface-regex=^eth[0-9]+$", "--log-level=debug"}
			if args := o.container(t).Args; !slices.Equal(args, want) {
				t.Errorf("args %v, want %v", args, want)
			}
		}},
		{"metrics.yaml", func(t *testing.T, o *objects) {
			c := o.container(t)
			if !slices.Contains(c.Args, "--healthz-port=10269") || len(c.Ports) != 1 || c.Ports[0].ContainerPort != 10269 ||
				c.LivenessProbe.HTTPGet.Port.IntValue() != 10269 || c.ReadinessProbe.HTTPGet.Port.IntValue() != 10269 {
				t.Errorf("args %v, ports %+v, probes on %v/%v: want all on 10269", c.Args, c.Ports,
					c.LivenessProbe.HTTPGet.Port, c.ReadinessProbe.HTTPGet.Port)
			}
			if a := o.ds.Spec.Template.Annotations; len(a) != 0 {
				t.Errorf("pod annotations %v, want none (metrics.podAnnotations false)", a)
			}
			svc, sm := o.byKind["Service"], o.byKind["ServiceMonitor"]
			if len(svc) != 1 || len(sm) != 1 {
				t.Fatalf("%d Services and %d ServiceMonitors, want one each", len(svc), len(sm))
			}
			if p := fmt.Sprint(svc[0].Object["spec"].(map[string]any)["ports"]); !strings.Contains(p, "port:10269") || !strings.Contains(p, "targetPort:metrics") {
				t.Errorf("Service ports %s, want 10269 to the metrics port", p)
			}
			if l := sm[0].GetLabels(); l["release"] != "prometheus" || sm[0].GetNamespace() != namespace {
				t.Errorf("ServiceMonitor %s labels %v, want in %s with release=prometheus", sm[0].GetNamespace(), l, namespace)
			}
			if e := fmt.Sprint(sm[0].Object["spec"].(map[string]any)["endpoints"]); !strings.Contains(e, "interval:15s") || !strings.Contains(e, "port:metrics") {
				t.Errorf("ServiceMonitor endpoints %s, want port metrics every 15s", e)
			}
		}},
		{"vxlan-options.yaml", func(t *testing.T, o *objects) {
			nc, cfg := o.netConf(t)
			if cfg != (vxlan.Config{VNI: 4096, Port: 4789, MTU: 1400, DirectRouting: true}) {
				t.Errorf("backend %+v, want vxlan VNI 4096, port 4789, MTU 1400, DirectRouting", cfg)
			}
			if n, _ := nc.Network(family.IPv4); n.SubnetLen != 25 {
				t.Errorf("SubnetLen %d, want 25", n.SubnetLen)
			}
			spec := o.ds.Spec.Template.Spec
			for _, ctr := range append(spec.InitContainers, spec.Containers...) {
				if ctr.Image != "registry.example/mirror/twill:v0.1.0-rc1" || ctr.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("container %s: image %s pull %s, want the mirror's, Always", ctr.Name, ctr.Image, ctr.ImagePullPolicy)
				}
			}
			if spec.InitContainers[0].Resources.Requests != nil || spec.InitContainers[0].Resources.Limits != nil {
				t.Errorf("init container resources %+v, want none", spec.InitContainers[0].Resources)
			}
			if r := o.container(t).Resources; r.Limits.Memory().String() != "300Mi" || r.Requests.Cpu().String() != "50m" {
				t.Errorf("resources %+v, want the values'", r)
			}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "dedicated" || spec.NodeSelector["node-role.example/overlay"] != "true" ||
				spec.Affinity != nil || spec.PriorityClassName != "" {
				t.Errorf("tolerations %+v, nodeSelector %v, affinity %+v, priority class %q: want the values'", spec.Tolerations, spec.NodeSelector, spec.Affinity, spec.PriorityClassName)
			}
			if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "mirror-pull" {
				t.Errorf("imagePullSecrets %+v, want mirror-pull", spec.ImagePullSecrets)
			}
			if a := o.ds.Spec.Template.Annotations; a["example.com/owner"] != "network-team" || a["prometheus.io/scrape"] != "true" {
				t.Errorf("pod annotations %v, want the values' and Prometheus'", a)
			}
			if cni := o.configMap.Data["cni-conf.json"]; !strings.Contains(cni, `"hairpinMode": false`) {
				t.Errorf("cni-conf.json %s, want the values' conflist", cni)
			}
		}},
		{"upstream-values.yaml", func(t *testing.T, o *objects) {
			_, cfg := o.netConf(t)
			if cfg != (vxlan.Config{VNI: 1, Port: 8472, MTU: 1450}) {
				t.Errorf("backend %+v, want vxlan VNI 1, port 8472, MTU 1450", cfg)
			}
			c := o.container(t)
			want := []string{"--ip-masq", "--kube-subnet-mgr", "--iface=eth0",
				"--cni-conf-src=/etc/kube-flannel/cni-conf.json", "--cni-conf-dest=/etc/cni/net.d/10-flannel.conflist", "--healthz-port=8081"}
			if !slices.Equal(c.Args, want) {
				t.Errorf("args %v, want %v", c.Args, want)
			}
			if c.Image != "ghcr.io/twill-net/twill:v0.1.0" {
				t.Errorf("image %s, want Twill's", c.Image)
			}
			if c.LivenessProbe.PeriodSeconds != 30 || c.ReadinessProbe.InitialDelaySeconds != 5 || c.ReadinessProbe.HTTPGet.Port.IntValue() != 8081 {
				t.Errorf("probes %+v / %+v, want the values' timing on 8081", c.LivenessProbe, c.ReadinessProbe)
			}
			if tol := o.ds.Spec.Template.Spec.Tolerations; len(tol) != 2 || tol[0].Effect != corev1.TaintEffectNoExecute {
				t.Errorf("tolerations %+v, want upstream's two", tol)
			}
			if cni := o.configMap.Data["cni-conf.json"]; !strings.Contains(cni, `"cniVersion": "0.3.1"`) {
				t.Errorf("cni-conf.json %s, want the values' conflist", cni)
			}
		}},
	} {
		name := cmp.Or(c.file, "defaults")
		t.Run(name, func(t *testing.T) {
			var files []string
			if c.file != "" {
				files = []string{filepath.Join("chart", "testdata", c.file)}
			}
			out, err := render(t, files)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, decode(t, out))
		})
	}
}

// TestMasquerade checks flannel.masquerade's three states against args
// with and without --ip-masq.
func TestMasquerade(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want bool
	}{
		{nil, true},
		{[]string{`flannel.args=["--kube-subnet-mgr"]`}, false},
		{[]string{`flannel.args=["--kube-subnet-mgr"]`, `flannel.masquerade=true`}, true},
		{[]string{`flannel.masquerade=false`}, false},
		{[]string{`flannel.masquerade=null`}, true},
		// --kube-subnet-mgr is added when missing.
		{[]string{`flannel.args=[]`}, false},
	} {
		t.Run(strings.Join(c.set, ","), func(t *testing.T) {
			out, err := render(t, nil, c.set...)
			if err != nil {
				t.Fatal(err)
			}
			args := decode(t, out).container(t).Args
			if slices.Contains(args, "--ip-masq") != c.want || !slices.Contains(args, "--kube-subnet-mgr") {
				t.Errorf("args %v: want --ip-masq %v and --kube-subnet-mgr", args, c.want)
			}
		})
	}
}

// TestBadValues checks that wrong values fail the render with an error that
// names them.
func TestBadValues(t *testing.T) {
	for _, c := range []struct {
		set  string
		want []string
	}{
		{`flannel.backend="wireguard"`, []string{"backend", "vxlan", "host-gw"}},
		{`flannel.backnd="vxlan"`, []string{"backnd"}},
		{`podCidr="10.244.0.0"`, []string{"podCidr"}},
		{`podCidrv6="10.244.0.0/16"`, []string{"podCidrv6"}},
		{`podCidr=""`, []string{"podCidr and podCidrv6 are both empty"}},
		{`flannel.vni=16777216`, []string{"vni"}},
		{`flannel.mtu=500`, []string{"mtu"}},
		{`flannel.backendPort=70000`, []string{"backendPort"}},
		{`flannel.noMasqueradeCIDRs=["example.com"]`, []string{"noMasqueradeCIDRs"}},
		{`flannel.extraArgs=["iface=eth0"]`, []string{"extraArgs"}},
		{`flannel.netConf={"Network":"10.0.0.0/8"}`, []string{"Network"}},
		{`flannel.image={"repository":"ghcr.io/flannel-io/flannel","tag":"v0.28.9"}`, []string{"upstream flannel's image", "flannel.image"}},
		{`flannel.GBP=true`, []string{"flannel.GBP"}},
		{`flannel.macPrefix="0E-2A"`, []string{"flannel.macPrefix"}},
		{`netpol={"enabled":true}`, []string{"netpol.enabled"}},
		{`flannel.backend="host-gw"`, nil}, // the control: this one is fine
		{`flannel={"backend":"host-gw","vni":7}`, []string{"vxlan settings"}},
		{`flannel.underlayRoutes=true`, []string{"host-gw setting"}},
		{`flannel.underlayRoutes="yes"`, []string{"underlayRoutes"}},
		{`flannel.cniConf="{not json"`, []string{"flannel.cniConf is not JSON"}},
		{`flannel.healthz={"port":0}`, nil},
		{`metrics.serviceMonitor={"enabled":true}`, nil},
		{`flannel.healthz.port=0`, nil},
		{`metrics.serviceMonitor.interval="often"`, []string{"interval"}},
		{`flannel.masquerade="yes"`, []string{"masquerade"}},
		{`flannel.image.pullPolicy="Sometimes"`, []string{"pullPolicy"}},
	} {
		t.Run(c.set, func(t *testing.T) {
			_, err := render(t, nil, c.set)
			if c.want == nil {
				if err != nil {
					t.Errorf("want it accepted: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("rendered; want an error naming %v", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	// A ServiceMonitor with the health port off has nothing to scrape.
	if _, err := render(t, nil, `metrics.serviceMonitor.enabled=true`, `flannel.healthz.port=0`); err == nil || !strings.Contains(err.Error(), "flannel.healthz.port") {
		t.Errorf("ServiceMonitor without a port: err %v, want one naming flannel.healthz.port", err)
	}
}
