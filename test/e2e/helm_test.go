//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/lab"
)

// helmCLI runs the real helm (hack/helm-build.sh) against the lab's API
// server, with Helm's own directories in a temporary one.
type helmCLI struct {
	bin, home string
}

func newHelm(t *testing.T) *helmCLI {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(suite.repoRoot, "hack", "helm-build.sh")).Output()
	if err != nil {
		t.Fatalf("building helm (hack/helm-build.sh): %v", err)
	}
	return &helmCLI{bin: strings.TrimSpace(string(out)), home: t.TempDir()}
}

// run runs helm with args in the lab's network and fails the test on
// error.
func (h *helmCLI) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := suite.cluster
	argv := append([]string{"--net=" + c.UnderlayNetNS(), "--", h.bin, "--kubeconfig=" + c.Kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Dir = suite.repoRoot
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+h.home, "HELM_CONFIG_HOME="+h.home, "HELM_DATA_HOME="+h.home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// labValues are the chart values that render the manifest the way the lab
// applied it (lab.Cluster.ApplyManifest): its families and backend.
func labValues(t *testing.T) []string {
	t.Helper()
	c := suite.cluster
	vals := map[string]any{"flannel": map[string]any{"backend": c.Backend, "directRouting": c.DirectRouting}}
	switch c.Family() {
	case lab.Dual:
		vals["podCidrv6"] = controlplane.IPv6.ClusterCIDR
	case lab.IPv6:
		vals["podCidr"] = ""
		vals["podCidrv6"] = controlplane.IPv6.ClusterCIDR
	}
	b, err := json.Marshal(vals)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "lab-values.json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"-f", f}
}

var subnetEnvMTU = regexp.MustCompile(`(?m)^FLANNEL_MTU=(\d+)$`)

// nodeMTUs returns each node's FLANNEL_MTU from its subnet.env.
func nodeMTUs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes(t) {
		env, _ := nodeExecErr(n.Name, "cat", "/run/flannel/subnet.env")
		if m := subnetEnvMTU.FindStringSubmatch(env); m != nil {
			out[n.Name] = m[1]
		}
	}
	return out
}

// waitMTU waits until every node's subnet.env gives mtu.
func waitMTU(t *testing.T, mtu string) {
	t.Helper()
	eventually(t, 2*time.Minute, time.Second, "every node at MTU "+mtu, func() error {
		got := nodeMTUs(t)
		for _, n := range nodes(t) {
			if got[n.Name] != mtu {
				return fmt.Errorf("subnet.env MTUs %v, want %s everywhere", got, mtu)
			}
		}
		return nil
	})
}

// TestHelmInstallAndUpgrade has Helm take over the objects the lab applied
// from the manifest (helm install --take-ownership of chart/twill, with the
// values that render the lab's manifest), which must restart no pod, then
// upgrades the release to another MTU, which rolls the DaemonSet onto it,
// and back, while pods on two nodes ping each other over every family:
// not one ping may be lost. The release stays (uninstalling it would remove
// the overlay); its objects are the manifest's again at the end.
func TestHelmInstallAndUpgrade(t *testing.T) {
	cluster(t)
	readyNodes(t, 3, 3*time.Minute)
	h := newHelm(t)
	const release = "twill"
	w1, w2 := workers(t)
	a, b := podOn(t, w1), podOn(t, w2)
	mtuBefore := nodeMTUs(t)[w1]
	if mtuBefore == "" || mtuBefore == "1400" {
		t.Fatalf("node %s's subnet.env gives MTU %q; the test needs one other than 1400", w1, mtuBefore)
	}

	// 1. The takeover: the same objects, so no pod restarts.
	pings := startPingers(t, "helm-install", a, b)
	before := flannelPods(t)
	h.run(t, append([]string{"upgrade", "--install", release, "chart/twill", "--namespace", flannelNamespace,
		"--take-ownership", "--force-conflicts", "--wait", "--timeout", "5m"}, labValues(t)...)...)
	if owner := kubectl(t, "get", "daemonset", flannelDaemonSet, "-n", flannelNamespace,
		"-o", `jsonpath={.metadata.annotations.meta\.helm\.sh/release-name}`); owner != release {
		t.Errorf("DaemonSet's meta.helm.sh/release-name is %q after helm install, want %s", owner, release)
	}
	if after := flannelPods(t); !slices.Equal(after, before) {
		t.Errorf("helm install over the manifest's objects restarted flanneld: pods %v before, %v after", before, after)
	}
	pings.stopAndCheck(t, "helm install over the manifest")

	// 2. helm upgrade to MTU 1400: the ConfigMap's checksum rolls the pods.
	pings = startPingers(t, "helm-upgrade", a, b)
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		h.run(t, "upgrade", release, "chart/twill", "--namespace", flannelNamespace, "--reuse-values",
			"--set", "flannel.mtu=0", "--set", "flannel.restartOnConfigChange=false", "--wait", "--timeout", "5m")
		kubectl(t, "rollout", "status", "daemonset/"+flannelDaemonSet, "-n", flannelNamespace, "--timeout=180s")
		waitMTU(t, mtuBefore)
	}
	t.Cleanup(restore)
	start := time.Now()
	h.run(t, "upgrade", release, "chart/twill", "--namespace", flannelNamespace, "--reuse-values",
		"--set", "flannel.mtu=1400", "--set", "flannel.restartOnConfigChange=true", "--wait", "--timeout", "5m")
	kubectl(t, "rollout", "status", "daemonset/"+flannelDaemonSet, "-n", flannelNamespace, "--timeout=180s")
	rolled := flannelPods(t)
	for _, p := range rolled {
		if contains(before, p) {
			t.Errorf("flanneld pod %s survived the upgrade (before %v, after %v)", p, before, rolled)
		}
	}
	waitMTU(t, "1400")
	t.Logf("helm upgrade to MTU 1400 rolled %d pods in %v", len(rolled), time.Since(start).Round(time.Millisecond))
	pings.stopAndCheck(t, "helm upgrade to MTU 1400")

	// 3. And back, the same way.
	pings = startPingers(t, "helm-restore", a, b)
	restore()
	pings.stopAndCheck(t, "helm upgrade back to MTU "+mtuBefore)
}
