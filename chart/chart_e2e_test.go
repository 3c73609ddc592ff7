//go:build e2e

package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
)

// TestRenderingsPassTheAPIServer renders the chart with its defaults and
// with every values file of testdata, and has a real API server (etcd and
// kube-apiserver in a network namespace of the test's own) accept each
// rendering by a server-side dry run with strict field validation, the
// ServiceMonitor against a CRD holding its fields.
func TestRenderingsPassTheAPIServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs an API server in a network namespace of its own")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cp, stop, err := controlplane.StartInSandbox(ctx, fmt.Sprintf("twill-charttest-%d", os.Getpid()), controlplane.Options{Dir: filepath.Join(dir, "cp")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the API server: %v", err)
		}
	})

	// kubectl runs kubectl in the sandbox with stdin as its input.
	kubectl := func(stdin string, args ...string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		cmd, err := cp.KubectlCmd(cctx, "", args...)
		if err != nil {
			return "", err
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return stdout.String(), nil
	}

	// The namespace and the ServiceMonitor CRD exist for real, so every
	// dry run judges the objects, not a missing namespace or kind.
	crd, err := os.ReadFile(filepath.Join(repoRoot(t), "chart", "testdata", "crds", "servicemonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(string(crd), "apply", "-f", "-"); err != nil {
		t.Fatalf("creating the ServiceMonitor CRD: %v\n%s", err, out)
	}
	if out, err := kubectl("", "create", "namespace", namespace); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := kubectl("", "wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	files, err := filepath.Glob(filepath.Join(repoRoot(t), "chart", "testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in chart/testdata (%v)", err)
	}
	dryRun := func(rendered string) (string, error) {
		return kubectl(rendered, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
	}
	for _, f := range append([]string{""}, files...) {
		name := "defaults"
		if f != "" {
			name = filepath.Base(f)
		}
		t.Run(name, func(t *testing.T) {
			var vf []string
			if f != "" {
				vf = []string{f}
			}
			rendered, err := render(t, vf)
			if err != nil {
				t.Fatal(err)
			}
			out, err := dryRun(rendered)
			if err != nil {
				t.Fatalf("the API server refused the rendering: %v\n%s", err, out)
			}
			if !strings.Contains(out, "daemonset.apps/kube-flannel-ds") || !strings.Contains(out, "(server dry run)") {
				t.Errorf("dry run output lacks the DaemonSet:\n%s", out)
			}
		})
	}

	// The dry run has teeth: a field the values schema lets through but
	// the DaemonSet's API does not know, and a misspelt field in the
	// ServiceMonitor, are refused.
	rendered, err := render(t, nil, `flannel.tolerations=[{"operatr":"Exists"}]`)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := dryRun(rendered); err == nil || !strings.Contains(err.Error(), "operatr") {
		t.Errorf("dry run with a misspelt toleration: err %v, output %q; want a refusal naming operatr", err, out)
	}
	rendered, err = render(t, []string{filepath.Join("chart", "testdata", "metrics.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(rendered, "targetLabel:", "targetLabl:", 1)
	if out, err := dryRun(broken); broken == rendered || err == nil || !strings.Contains(err.Error(), "targetLabl") {
		t.Errorf("dry run with a misspelt ServiceMonitor field: err %v, output %q; want a refusal naming targetLabl", err, out)
	}
}
