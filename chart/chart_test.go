package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/netconf"
)

const (
	// chartDir and manifestPath are relative to the repository root.
	chartDir     = "chart/twill"
	manifestPath = "Documentation/kube-flannel.yml"
	// namespace is the manifest's, the release namespace of every render.
	namespace = "kube-flannel"
)

// repoRoot is the Twill checkout this file belongs to.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot tell where the test's source is")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), ".."))
}

var helmOnce struct {
	sync.Once
	path string
	err  error
}

// helmPath builds Helm once per test binary (a no-op when the cache has
// it) and returns its path.
func helmPath(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(repoRoot(t), "hack", "helm-build.sh"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			helmOnce.err = fmt.Errorf("hack/helm-build.sh: %w\n%s", err, stderr.String())
			return
		}
		helmOnce.path = strings.TrimSpace(string(out))
	})
	if helmOnce.err != nil {
		t.Fatal(helmOnce.err)
	}
	return helmOnce.path
}

// helm runs the real helm with args in the repository root and returns its
// standard output; an error carries its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helmPath(t), args...)
	cmd.Dir = repoRoot(t)
	// Helm's own directories, so nothing of the user's is read or written.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Render returns `helm template` of the chart with the values files (paths
// relative to the repository root) and --set-json flags given.
func render(t *testing.T, valuesFiles []string, setJSON ...string) (string, error) {
	t.Helper()
	args := []string{"template", "twill", chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "-f", f)
	}
	for _, s := range setJSON {
		args = append(args, "--set-json", s)
	}
	return helm(t, args...)
}

// objects is one rendering, decoded.
type objects struct {
	kinds     []string
	byKind    map[string][]*unstructured.Unstructured
	ds        *appsv1.DaemonSet
	configMap *corev1.ConfigMap
}

// decode splits a rendering into objects, decoding the DaemonSet and the
// ConfigMap strictly into their API types, so a misspelt field fails here.
func decode(t *testing.T, rendered string) *objects {
	t.Helper()
	o := &objects{byKind: map[string][]*unstructured.Unstructured{}}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(rendered)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("splitting the rendering: %v", err)
		}
		var m map[string]any
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("decoding a document: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		o.kinds = append(o.kinds, u.GetKind())
		o.byKind[u.GetKind()] = append(o.byKind[u.GetKind()], u)
		switch u.GetKind() {
		case "DaemonSet":
			o.ds = &appsv1.DaemonSet{}
			if err := sigsyaml.UnmarshalStrict(doc, o.ds); err != nil {
				t.Fatalf("decoding the DaemonSet: %v", err)
			}
		case "ConfigMap":
			o.configMap = &corev1.ConfigMap{}
			if err := sigsyaml.UnmarshalStrict(doc, o.configMap); err != nil {
				t.Fatalf("decoding the ConfigMap: %v", err)
			}
		}
	}
	if o.ds == nil || o.configMap == nil {
		t.Fatalf("the rendering has kinds %v: no DaemonSet or ConfigMap", o.kinds)
	}
	return o
}

// netConf parses the rendered net-conf.json with flanneld's own parser and
// its backend with the backend's.
func (o *objects) netConf(t *testing.T) (*netconf.Config, any) {
	t.Helper()
	raw := o.configMap.Data["net-conf.json"]
	nc, err := netconf.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("flanneld would refuse net-conf.json: %v\n%s", err, raw)
	}
	chosen, err := builtin.Registry().Parse(nc.Backend.Type, nc.Backend.Raw)
	if err != nil {
		t.Fatalf("flanneld would refuse net-conf.json's Backend: %v\n%s", err, raw)
	}
	if len(nc.Warnings) > 0 {
		t.Errorf("net-conf.json has keys without effect: %v\n%s", nc.Warnings, raw)
	}
	return nc, chosen.Config
}

// container is the flanneld container.
func (o *objects) container(t *testing.T) corev1.Container {
	t.Helper()
	for _, c := range o.ds.Spec.Template.Spec.Containers {
		if c.Name == "kube-flannel" {
			return c
		}
	}
	t.Fatalf("the DaemonSet has no kube-flannel container")
	return corev1.Container{}
}

// TestManifestIsGenerated fails when Documentation/kube-flannel.yml is not
// the chart's rendering with its defaults: the chart is the one source.
func TestManifestIsGenerated(t *testing.T) {
	root := repoRoot(t)
	helmPath(t)
	var stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "hack", "manifest.sh"))
	cmd.Stderr = &stderr
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/manifest.sh: %v\n%s", err, stderr.String())
	}
	got, err := os.ReadFile(filepath.Join(root, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		line := 0
		for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
			line++
		}
		at := func(l []string) string {
			if line < len(l) {
				return l[line]
			}
			return "(end of file)"
		}
		t.Fatalf("%s differs from the chart's rendering (hack/manifest.sh), first at line %d:\n  file:  %q\n  chart: %q\n"+
			"The manifest is generated from chart/twill: run `make manifest` and commit the result (edit the chart, not the manifest).",
			manifestPath, line+1, at(gl), at(wl))
	}
}

// TestChartVersion checks that the chart's version and appVersion, and so
// the image tag its defaults use, follow the VERSION file.
func TestChartVersion(t *testing.T) {
	root := repoRoot(t)
	v, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(v))
	data, err := os.ReadFile(filepath.Join(root, chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		APIVersion string `json:"apiVersion"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := sigsyaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if c.APIVersion != "v2" || c.Version != version || c.AppVersion != "v"+version {
		t.Errorf("Chart.yaml has apiVersion %s, version %s, appVersion %s; want v2, %s, v%s (the VERSION file): update Chart.yaml, then `make manifest`",
			c.APIVersion, c.Version, c.AppVersion, version, version)
	}
}

// TestLint runs `helm lint --strict` on the chart with its defaults and with
// every values file of testdata.
func TestLint(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "chart", "testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in chart/testdata (%v)", err)
	}
	args := []string{"lint", "--strict", chartDir, "--namespace", namespace}
	if out, err := helm(t, args...); err != nil {
		t.Errorf("%v\n%s", err, out)
	}
	for _, f := range files {
		if out, err := helm(t, append(args, "-f", f)...); err != nil {
			t.Errorf("with %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
}

// TestEveryValueDocumented checks that the chart's README has a row for
// every value of values.yaml (a map's row covers what is under it) and that
// values.yaml comments each top-level key's section.
func TestEveryValueDocumented(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := sigsyaml.Unmarshal(data, &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	documented := func(path string) bool {
		return bytes.Contains(readme, []byte("| `"+path+"` |")) || bytes.Contains(readme, []byte("| `"+path+".*` |"))
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			path := prefix + k
			if documented(path) {
				continue
			}
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(path+".", sub)
				continue
			}
			t.Errorf("value %s has no row in chart/twill/README.md's table", path)
		}
	}
	walk("", values)
}
