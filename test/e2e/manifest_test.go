//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// The tests in this file check Documentation/kube-flannel.yml itself:
// TestManifestShape reads it (no cluster needed), TestManifestAPIServer
// applies it to a real API server of its own, proves the flannel
// ServiceAccount's RBAC by running flanneld with a token minted for it, and
// runs `kubectl apply --dry-run=server` the way `make test` promises.

const (
	// mfPath is the manifest, relative to the repository root.
	mfPath = "Documentation/kube-flannel.yml"
	// mfImageRepo is the image every container must run, tagged v<VERSION>.
	mfImageRepo = "ghcr.io/twill-net/twill"
	// mfHealthzPort is the port the manifest gives flanneld's health server.
	mfHealthzPort = 10268
)

// mfObjects is the manifest, decoded.
type mfObjects struct {
	Namespace   *corev1.Namespace
	SA          *corev1.ServiceAccount
	Role        *rbacv1.ClusterRole
	Binding     *rbacv1.ClusterRoleBinding
	ConfigMap   *corev1.ConfigMap
	DaemonSet   *appsv1.DaemonSet
	kindsInFile []string
}

// mfLoad decodes the manifest into typed objects and fails on any document
// of another kind or any duplicate.
func mfLoad(t *testing.T) *mfObjects {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(suite.repoRoot, mfPath))
	if err != nil {
		t.Fatalf("reading the manifest: %v", err)
	}
	m := &mfObjects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("splitting %s into documents: %v", mfPath, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta metav1.TypeMeta
		if err := utilyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("decoding a document of %s: %v", mfPath, err)
		}
		if meta.Kind == "" {
			// A document of comments only.
			continue
		}
		m.kindsInFile = append(m.kindsInFile, meta.Kind)
		var obj any
		switch meta.Kind {
		case "Namespace":
			m.Namespace = &corev1.Namespace{}
			obj = m.Namespace
		case "ServiceAccount":
			m.SA = &corev1.ServiceAccount{}
			obj = m.SA
		case "ClusterRole":
			m.Role = &rbacv1.ClusterRole{}
			obj = m.Role
		case "ClusterRoleBinding":
			m.Binding = &rbacv1.ClusterRoleBinding{}
			obj = m.Binding
		case "ConfigMap":
			m.ConfigMap = &corev1.ConfigMap{}
			obj = m.ConfigMap
		case "DaemonSet":
			m.DaemonSet = &appsv1.DaemonSet{}
			obj = m.DaemonSet
		default:
			t.Fatalf("%s has an unexpected %s", mfPath, meta.Kind)
		}
		// Strict: a misspelt field fails here, not silently in a cluster.
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("decoding the %s in %s: %v", meta.Kind, mfPath, err)
		}
	}
	// Helm's install order: the manifest is the chart rendered by helm
	// template (hack/manifest.sh).
	want := []string{"Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
	if !slices.Equal(m.kindsInFile, want) {
		t.Fatalf("%s holds %v, want exactly %v in that order", mfPath, m.kindsInFile, want)
	}
	return m
}

// mfVersionedImage is the image reference the VERSION file implies.
func mfVersionedImage(t *testing.T) string {
	t.Helper()
	v, err := os.ReadFile(filepath.Join(suite.repoRoot, "VERSION"))
	if err != nil {
		t.Fatalf("reading VERSION: %v", err)
	}
	return mfImageRepo + ":v" + strings.TrimSpace(string(v))
}

// TestManifestShape checks what the manifest promises users, without a
// cluster: names, RBAC rules, the DaemonSet's scheduling, security and
// probes, and the ConfigMap's two files.
func TestManifestShape(t *testing.T) {
	m := mfLoad(t)
	const ns = "kube-flannel"

	if m.Namespace.Name != ns || m.Namespace.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("Namespace %q labels %v: want %s with pod-security.kubernetes.io/enforce=privileged", m.Namespace.Name, m.Namespace.Labels, ns)
	}
	if m.SA.Name != "flannel" || m.SA.Namespace != ns {
		t.Errorf("ServiceAccount %s/%s, want %s/flannel", m.SA.Namespace, m.SA.Name, ns)
	}
	if m.Role.Name != "flannel" || m.Binding.Name != "flannel" || m.Binding.RoleRef.Name != "flannel" || m.Binding.RoleRef.Kind != "ClusterRole" {
		t.Errorf("ClusterRole %q, ClusterRoleBinding %q → %s %q: want flannel everywhere", m.Role.Name, m.Binding.Name, m.Binding.RoleRef.Kind, m.Binding.RoleRef.Name)
	}
	if len(m.Binding.Subjects) != 1 || m.Binding.Subjects[0].Kind != "ServiceAccount" || m.Binding.Subjects[0].Name != "flannel" || m.Binding.Subjects[0].Namespace != ns {
		t.Errorf("ClusterRoleBinding subjects %+v, want only ServiceAccount %s/flannel", m.Binding.Subjects, ns)
	}
	// The RBAC rules, exactly: anything more must be argued for here.
	type grant struct{ group, resource, verb string }
	var got []grant
	for _, r := range m.Role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames and nonResourceURLs are not expected", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, grant{g, res, v})
				}
			}
		}
	}
	wantGrants := []grant{
		{"", "nodes", "get"}, {"", "nodes", "list"}, {"", "nodes", "watch"},
		{"", "nodes/status", "patch"},
		{"", "events", "create"},
	}
	sortGrants := func(gs []grant) {
		slices.SortFunc(gs, func(a, b grant) int {
			return strings.Compare(a.group+"/"+a.resource+"/"+a.verb, b.group+"/"+b.resource+"/"+b.verb)
		})
	}
	sortGrants(got)
	sortGrants(wantGrants)
	if !slices.Equal(got, wantGrants) {
		t.Errorf("ClusterRole grants %v, want %v", got, wantGrants)
	}

	// The ConfigMap: the conflist and net-conf.json flanneld will use.
	if m.ConfigMap.Name != "kube-flannel-cfg" || m.ConfigMap.Namespace != ns {
		t.Errorf("ConfigMap %s/%s, want %s/kube-flannel-cfg", m.ConfigMap.Namespace, m.ConfigMap.Name, ns)
	}
	var conflist struct {
		Name       string           `json:"name"`
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(m.ConfigMap.Data["cni-conf.json"]), &conflist); err != nil {
		t.Fatalf("cni-conf.json is not JSON: %v", err)
	}
	if conflist.Name != "cbr0" || len(conflist.Plugins) != 2 || conflist.Plugins[0]["type"] != "flannel" || conflist.Plugins[1]["type"] != "portmap" {
		t.Errorf("cni-conf.json = %+v, want conflist cbr0 with flannel then portmap", conflist)
	} else {
		d, _ := conflist.Plugins[0]["delegate"].(map[string]any)
		if d["hairpinMode"] != true || d["isDefaultGateway"] != true {
			t.Errorf("flannel's delegate %v, want hairpinMode and isDefaultGateway true", d)
		}
		caps, _ := conflist.Plugins[1]["capabilities"].(map[string]any)
		if caps["portMappings"] != true {
			t.Errorf("portmap's capabilities %v, want portMappings true", caps)
		}
	}
	nc, err := netconf.Parse([]byte(m.ConfigMap.Data["net-conf.json"]))
	if err != nil {
		t.Fatalf("net-conf.json: %v", err)
	}
	chosen, err := builtin.Registry().Parse(nc.Backend.Type, nc.Backend.Raw)
	if err != nil {
		t.Fatalf("net-conf.json's Backend: %v", err)
	}
	if n, ok := nc.Network(family.IPv4); !ok || len(nc.Networks) != 1 || n.Prefix.String() != "10.244.0.0/16" || chosen.Plugin.Type() != "vxlan" {
		t.Errorf("net-conf.json: networks %v backend %s, want 10.244.0.0/16 vxlan", nc.Networks, chosen.Plugin.Type())
	}

	// The DaemonSet.
	ds := m.DaemonSet
	if ds.Name != "kube-flannel-ds" || ds.Namespace != ns {
		t.Errorf("DaemonSet %s/%s, want %s/kube-flannel-ds", ds.Namespace, ds.Name, ns)
	}
	// flannel's selector, which is immutable: kubectl apply over an
	// upstream flannel installation must be a rolling update.
	if !reflect.DeepEqual(ds.Spec.Selector.MatchLabels, map[string]string{"app": "flannel"}) {
		t.Errorf("selector %v, want flannel's app=flannel", ds.Spec.Selector.MatchLabels)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != "flannel" {
		t.Errorf("hostNetwork %v, priorityClassName %q, serviceAccountName %q: want true, system-node-critical, flannel",
			spec.HostNetwork, spec.PriorityClassName, spec.ServiceAccountName)
	}
	tolerateAll := false
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		t.Errorf("tolerations %+v: want one that tolerates every taint (operator Exists, no key, no effect)", spec.Tolerations)
	}
	if spec.NodeSelector != nil {
		t.Errorf("nodeSelector %v: control planes must not be excluded", spec.NodeSelector)
	}
	linuxOnly := false
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, e := range term.MatchExpressions {
				if e.Key == "kubernetes.io/os" && e.Operator == corev1.NodeSelectorOpIn && slices.Equal(e.Values, []string{"linux"}) {
					linuxOnly = true
				}
			}
		}
	}
	if !linuxOnly {
		t.Errorf("affinity %+v: want a required kubernetes.io/os In [linux]", spec.Affinity)
	}

	image := mfVersionedImage(t)
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	hostPathOf := func(c corev1.Container) map[string]string {
		out := map[string]string{}
		for _, vm := range c.VolumeMounts {
			if v, ok := volumes[vm.Name]; ok && v.HostPath != nil {
				out[v.HostPath.Path] = vm.MountPath
			}
		}
		return out
	}
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1 (install-cni-plugins)", len(spec.InitContainers))
	}
	initC := spec.InitContainers[0]
	if initC.Image != image {
		t.Errorf("init container image %s, want %s (from VERSION)", initC.Image, image)
	}
	initMounts := hostPathOf(initC)
	if _, ok := initMounts["/opt/cni/bin"]; !ok || len(initMounts) != 1 {
		t.Errorf("init container mounts host paths %v, want /opt/cni/bin only: the conflist must come from flanneld, not from an init container", initMounts)
	}
	if len(initC.Command) != 2 || initC.Command[0] != "/usr/local/bin/install-cni-plugins" || initC.Command[1] != initMounts["/opt/cni/bin"] {
		t.Errorf("init container command %v, want install-cni-plugins into the mounted /opt/cni/bin", initC.Command)
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != image {
		t.Errorf("flanneld image %s, want %s (from VERSION)", c.Image, image)
	}
	if !slices.Equal(c.Command, []string{"/usr/local/bin/flanneld"}) {
		t.Errorf("command %v, want [/usr/local/bin/flanneld]", c.Command)
	}
	for _, a := range []string{"--ip-masq", "--kube-subnet-mgr", "--cni-conf-src=/etc/kube-flannel/cni-conf.json",
		"--cni-conf-dest=/etc/cni/net.d/10-flannel.conflist", fmt.Sprintf("--healthz-port=%d", mfHealthzPort)} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if !reflect.DeepEqual(env, map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}) {
		t.Errorf("downward-API env %v, want NODE_NAME, POD_NAME, POD_NAMESPACE", env)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Errorf("securityContext %+v: want privileged: false with capabilities", sc)
	} else {
		added := slices.Clone(sc.Capabilities.Add)
		slices.Sort(added)
		if !slices.Equal(added, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
			t.Errorf("capabilities add %v, want exactly NET_ADMIN and NET_RAW", sc.Capabilities.Add)
		}
	}
	// Both containers hardened: nothing but the capabilities added, no
	// escalation, a read-only root, the runtime's seccomp profile.
	for _, ctr := range append([]corev1.Container{c}, m.DaemonSet.Spec.Template.Spec.InitContainers...) {
		sc := ctr.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container %s: securityContext %+v, want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop ALL, seccomp RuntimeDefault", ctr.Name, sc)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.IntValue() != mfHealthzPort {
			t.Errorf("%s probe %+v, want GET %s on port %d", p.name, p.probe, p.path, mfHealthzPort)
		}
	}
	// Prometheus finds /metrics on the health port by the usual
	// annotations and the named port.
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != fmt.Sprint(mfHealthzPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod template annotations %v, want prometheus.io/scrape true, port %d, path /metrics", ann, mfHealthzPort)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != mfHealthzPort {
		t.Errorf("ports %+v, want one named metrics on %d", c.Ports, mfHealthzPort)
	}
	mounts := hostPathOf(c)
	for host, want := range map[string]string{
		"/run/flannel": "/run/flannel", "/etc/cni/net.d": "/etc/cni/net.d",
		"/run/xtables.lock": "/run/xtables.lock", "/lib/modules": "/lib/modules",
		// flanneld doctor checks the node's plugins where it sees them.
		"/opt/cni/bin": "/opt/cni/bin",
	} {
		if mounts[host] != want {
			t.Errorf("host path %s mounted at %q in flanneld's container, want %s", host, mounts[host], want)
		}
	}
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		if v.HostPath != nil && (v.HostPath.Path == "/lib/modules" || v.HostPath.Path == "/opt/cni/bin") && !vm.ReadOnly {
			t.Errorf("%s must be mounted read-only in flanneld's container", v.HostPath.Path)
		}
		if v.ConfigMap != nil && (v.ConfigMap.Name != "kube-flannel-cfg" || vm.MountPath != "/etc/kube-flannel/") {
			t.Errorf("ConfigMap volume %s at %s, want kube-flannel-cfg at /etc/kube-flannel/", v.ConfigMap.Name, vm.MountPath)
		}
	}
}

// TestManifestAPIServer applies the manifest to a real API server (etcd and
// kube-apiserver in a network namespace of the test's own), then runs
// flanneld with a token minted for the manifest's ServiceAccount and checks
// that the RBAC rules are enough for flanneld and no more than it needs.
func TestManifestAPIServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs an API server and flanneld in a network namespace of its own")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Fatalf("%v", err)
	}
	flanneld := filepath.Join(suite.repoRoot, "bin", "flanneld")
	if _, err := os.Stat(flanneld); err != nil {
		t.Fatalf("%s is missing: run `make build`", flanneld)
	}
	m := mfLoad(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	start := time.Now()
	cp, stop, err := controlplane.StartInSandbox(ctx, fmt.Sprintf("twill-mftest-%d", os.Getpid()), controlplane.Options{Dir: filepath.Join(dir, "cp")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the API server: %v", err)
		}
	})
	t.Logf("API server ready in %v", time.Since(start).Round(time.Millisecond))

	// kc runs kubectl in the sandbox and returns its standard output; an
	// error carries its standard error (warnings there are not output).
	kc := func(kubeconfig string, args ...string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		cmd, err := cp.KubectlCmd(cctx, kubeconfig, args...)
		if err != nil {
			return "", err
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return strings.TrimSpace(stdout.String()), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(stdout.String()), nil
	}
	manifest := filepath.Join(suite.repoRoot, mfPath)

	// 1. The manifest applies, and then passes the same server-side dry run
	// `make test` runs against the lab.
	if out, err := kc(cp.Kubeconfig, "apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply -f %s: %v\n%s", mfPath, err, out)
	}
	if out, err := kc(cp.Kubeconfig, "apply", "--dry-run=server", "-f", manifest); err != nil {
		t.Errorf("kubectl apply --dry-run=server -f %s: %v\n%s", mfPath, err, out)
	}
	// The dry run has teeth: a misspelt field is refused.
	src, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.yml")
	if err := os.WriteFile(broken, bytes.Replace(src, []byte("hostNetwork: true"), []byte("hostNetwrok: true"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := kc(cp.Kubeconfig, "apply", "--dry-run=server", "-f", broken); err == nil || !strings.Contains(err.Error(), "hostNetwrok") {
		t.Errorf("dry run of a manifest with a misspelt field: err %v, output %q; want a refusal naming the field", err, out)
	}

	admin, err := cp.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	const nodeName = "mftest-node"
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node %s: %v", nodeName, err)
	}

	// 2. A token for the ServiceAccount, as kubelet would mount it.
	token, err := kc(cp.Kubeconfig, "-n", m.SA.Namespace, "create", "token", m.SA.Name, "--duration=1h")
	if err != nil {
		t.Fatalf("minting a token for %s/%s: %v\n%s", m.SA.Namespace, m.SA.Name, err, token)
	}
	saConfig := filepath.Join(dir, "flannel.kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: cp.Server, CertificateAuthority: filepath.Join(cp.PKIDir, "ca.crt")}
	cfg.AuthInfos["flannel"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["flannel"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "flannel", Namespace: m.SA.Namespace}
	cfg.CurrentContext = "flannel"
	if err := clientcmd.WriteToFile(*cfg, saConfig); err != nil {
		t.Fatalf("writing the ServiceAccount's kubeconfig: %v", err)
	}

	// 3. What the token may and may not do.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "nodes"}, "yes"},
		{[]string{"list", "nodes"}, "yes"},
		{[]string{"watch", "nodes"}, "yes"},
		{[]string{"patch", "nodes", "--subresource=status"}, "yes"},
		{[]string{"create", "events", "-n", "default"}, "yes"},
		{[]string{"patch", "events", "-n", "default"}, "no"},
		{[]string{"list", "events", "--all-namespaces"}, "no"},
		{[]string{"get", "secrets", "-n", m.SA.Namespace}, "no"},
		{[]string{"list", "secrets", "--all-namespaces"}, "no"},
		{[]string{"get", "configmaps", "-n", m.SA.Namespace}, "no"},
		{[]string{"delete", "nodes"}, "no"},
		{[]string{"patch", "nodes"}, "no"},
		{[]string{"update", "nodes"}, "no"},
		{[]string{"create", "nodes"}, "no"},
		{[]string{"get", "pods", "-n", m.SA.Namespace}, "no"},
		{[]string{"create", "pods", "-n", m.SA.Namespace}, "no"},
		{[]string{"patch", "pods", "-n", m.SA.Namespace}, "no"},
		{[]string{"update", "pods", "--all-namespaces"}, "no"},
		{[]string{"delete", "pods", "--all-namespaces"}, "no"},
		{[]string{"create", "serviceaccounts", "--subresource=token", "-n", m.SA.Namespace}, "no"},
		{[]string{"patch", "daemonsets.apps", "-n", m.SA.Namespace}, "no"},
	} {
		out, _ := kc(saConfig, append([]string{"auth", "can-i"}, c.args...)...)
		if out != c.want {
			t.Errorf("flannel ServiceAccount: can-i %s = %q, want %q", strings.Join(c.args, " "), out, c.want)
		}
	}
	if out, err := kc(saConfig, "get", "secrets", "-n", "kube-system"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("reading secrets with the flannel token: err %v, output %q; want Forbidden", err, out)
	}

	// 4. flanneld runs with that token and nothing else.
	fl := mfStartFlanneld(t, ctx, m, cp.NetNS, dir, flanneld, saConfig, nodeName)
	ready := mfWaitFlanneld(t, ctx, fl, cp.NetNS)
	t.Logf("flanneld ready %v after start", ready.Round(time.Millisecond))

	n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "flannel.alpha.coreos.com/"
	if n.Annotations[prefix+"backend-type"] != "vxlan" || n.Annotations[prefix+"public-ip"] != fl.ip.String() || n.Annotations[prefix+"kube-subnet-manager"] != "true" {
		t.Errorf("node annotations %v: want backend-type vxlan, public-ip %s, kube-subnet-manager true", n.Annotations, fl.ip)
	}
	var bd struct {
		VNI     int
		VtepMAC string
	}
	if err := json.Unmarshal([]byte(n.Annotations[prefix+"backend-data"]), &bd); err != nil || bd.VNI != 1 || bd.VtepMAC == "" {
		t.Errorf("backend-data %q: want {\"VNI\":1,\"VtepMAC\":…}", n.Annotations[prefix+"backend-data"])
	}
	env, err := subnetenv.Read(fl.subnetFile)
	if err != nil {
		t.Fatalf("reading subnet.env: %v", err)
	}
	if v4, ok := env.Net(family.IPv4); !ok || len(env.Nets) != 1 || v4.Network.String() != "10.244.0.0/16" || v4.Subnet.String() != "10.244.1.1/24" || !env.IPMasq || env.MTU != 1500-50 {
		t.Errorf("subnet.env = %+v, want network 10.244.0.0/16, subnet 10.244.1.1/24, ipmasq, MTU 1450", env)
	}
	var gotConf, wantConf any
	installed, err := os.ReadFile(fl.conflist)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(installed, &gotConf); err != nil {
		t.Errorf("installed conflist is not JSON: %v\n%s", err, installed)
	}
	_ = json.Unmarshal([]byte(m.ConfigMap.Data["cni-conf.json"]), &wantConf)
	if !reflect.DeepEqual(gotConf, wantConf) {
		t.Errorf("installed conflist %s differs from the ConfigMap's cni-conf.json", installed)
	}
	if log := fl.stop(t); strings.Contains(strings.ToLower(log), "forbidden") {
		t.Errorf("flanneld was refused something by the API server with the manifest's RBAC:\n%s", log)
	}
}

// mfFlanneld is a flanneld the test started.
type mfFlanneld struct {
	cmd        *exec.Cmd
	log        string
	subnetFile string
	conflist   string
	ip         net.IP
	done       chan error
}

// stop ends flanneld (SIGTERM, then SIGKILL) and returns its log.
func (f *mfFlanneld) stop(t *testing.T) string {
	t.Helper()
	// done holds Wait's result once flanneld has exited; it is put back
	// after every read, so stop can run more than once.
	select {
	case err := <-f.done:
		f.done <- err
	default:
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-f.done:
		case <-time.After(10 * time.Second):
			_ = f.cmd.Process.Kill()
			err = <-f.done
		}
		f.done <- err
	}
	data, _ := os.ReadFile(f.log)
	return string(data)
}

// mfStartFlanneld starts flanneld in the network namespace at nsPath the way
// the DaemonSet does: the manifest's args and net-conf.json, with the
// container's paths moved under dir, and a veth pair standing in for the
// node's interface.
func mfStartFlanneld(t *testing.T, ctx context.Context, m *mfObjects, nsPath, dir, bin, kubeconfig, nodeName string) *mfFlanneld {
	t.Helper()
	ip := net.ParseIP("172.18.0.10").To4()
	err := underlay.Connect(underlay.End{NS: nsPath, Name: "twl0", Addrs: []string{ip.String() + "/16"}}, underlay.End{NS: nsPath, Name: "twl1"})
	if err != nil {
		t.Fatalf("making the node's interface: %v", err)
	}

	cfgDir := filepath.Join(dir, "etc-kube-flannel")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range m.ConfigMap.Data {
		if err := os.WriteFile(filepath.Join(cfgDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := &mfFlanneld{
		log:        filepath.Join(dir, "flanneld.log"),
		subnetFile: filepath.Join(dir, "run-flannel", "subnet.env"),
		conflist:   filepath.Join(dir, "etc-cni-net.d", "10-flannel.conflist"),
		ip:         ip,
		done:       make(chan error, 1),
	}
	if err := os.MkdirAll(filepath.Dir(f.conflist), 0o755); err != nil {
		t.Fatal(err)
	}
	// The manifest's args, with the container's paths mapped into dir.
	paths := strings.NewReplacer("/etc/kube-flannel/", cfgDir+"/", "/etc/cni/net.d/", filepath.Dir(f.conflist)+"/")
	// With exactly the container's capabilities and no escalation, as the
	// DaemonSet runs it (setpriv execs in place too).
	args := []string{"--net=" + nsPath, "setpriv", "--inh-caps=-all", "--bounding-set=" + manifestCaps(t, m), "--no-new-privs", "--", bin}
	for _, a := range m.DaemonSet.Spec.Template.Spec.Containers[0].Args {
		args = append(args, paths.Replace(a))
	}
	args = append(args,
		"--kubeconfig-file="+kubeconfig,
		"--net-config-path="+filepath.Join(cfgDir, "net-conf.json"),
		"--subnet-file="+f.subnetFile,
		"--iface=twl0",
	)
	logFile, err := os.Create(f.log)
	if err != nil {
		t.Fatal(err)
	}
	// nsenter without --fork execs flanneld in place: the PID is flanneld's.
	f.cmd = exec.Command("nsenter", args...)
	f.cmd.Env = append(os.Environ(), "NODE_NAME="+nodeName, "POD_NAME=kube-flannel-ds-mftest", "POD_NAMESPACE="+m.SA.Namespace)
	f.cmd.Stdout, f.cmd.Stderr = logFile, logFile
	if err := f.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting flanneld: %v", err)
	}
	go func() { f.done <- f.cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		if log := f.stop(t); t.Failed() {
			t.Logf("flanneld's log:\n%s", log)
		}
	})
	return f
}

// manifestCaps renders the flanneld container's capabilities (drop ALL,
// add some) as setpriv's bounding set.
func manifestCaps(t *testing.T, m *mfObjects) string {
	t.Helper()
	sc := m.DaemonSet.Spec.Template.Spec.Containers[0].SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("the flanneld container does not drop ALL capabilities: %+v", sc)
	}
	caps := "-all"
	for _, c := range sc.Capabilities.Add {
		caps += ",+" + strings.ToLower(string(c))
	}
	return caps
}

// mfWaitFlanneld waits until flanneld's /readyz answers 200 and the
// conflist is installed, checking all along that the conflist never appears
// before subnet.env. It returns how long that took.
func mfWaitFlanneld(t *testing.T, ctx context.Context, f *mfFlanneld, nsPath string) time.Duration {
	t.Helper()
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DialContext: netns.DialContext(nsPath)},
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", mfHealthzPort)
	return eventually(t, 90*time.Second, 100*time.Millisecond, "flanneld ready with the ServiceAccount's token", func() error {
		select {
		case err := <-f.done:
			f.done <- err
			t.Fatalf("flanneld exited before it was ready: %v", err)
		default:
		}
		// Conflist first, then subnet.env: flanneld writes them in the
		// other order, so seeing the conflist without subnet.env is a bug.
		_, confErr := os.Stat(f.conflist)
		_, envErr := os.Stat(f.subnetFile)
		if confErr == nil && envErr != nil {
			t.Fatalf("%s exists before %s: kubelet would start pods before the overlay works", f.conflist, f.subnetFile)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET /readyz: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		if confErr != nil {
			return fmt.Errorf("ready, but no conflist yet: %w", confErr)
		}
		return nil
	})
}

// TestManifestDryRunInLab runs `kubectl apply --dry-run=server` of the
// manifest against the lab's API server, where the suite applied it: what
// users would apply to a running cluster is accepted as it stands.
func TestManifestDryRunInLab(t *testing.T) {
	cluster(t)
	path := filepath.Join(suite.repoRoot, mfPath)
	out, err := kubectlErr("apply", "--dry-run=server", "-f", path)
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server -f %s: %v\n%s", mfPath, err, out)
	}
	for _, want := range []string{"namespace/kube-flannel", "clusterrole.rbac.authorization.k8s.io/flannel", "daemonset.apps/kube-flannel-ds"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, out)
		}
	}
}
