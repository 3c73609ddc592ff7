//go:build e2e

package lab

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/lab/node"
)

// e2eName names a lab of these tests: $TWILL_E2E_NAME (default "e2e")
// and suffix, so two runs on one machine do not remove each other's labs.
func e2eName(suffix string) string { return cmp.Or(os.Getenv("TWILL_E2E_NAME"), "e2e") + suffix }

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// upLab brings up the lab o describes for a test, skipping it without root
// or the Kubernetes binaries, and removes the lab when the test ends; the
// context returned ends after timeout.
func upLab(t *testing.T, o Options, timeout time.Duration) (context.Context, *Cluster) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root; run as root (make test does)")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		start := time.Now()
		if err := Down(context.Background(), o.Name); err != nil {
			t.Errorf("Down in cleanup: %v", err)
		}
		t.Logf("Down took %s", time.Since(start).Round(100*time.Millisecond))
	})
	var log bytes.Buffer
	o.RepoRoot, o.Log = repoRoot(t), &log
	start := time.Now()
	c, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("Up: %v\n%s", err, log.String())
	}
	t.Logf("Up took %s", time.Since(start).Round(100*time.Millisecond))
	return ctx, c
}

// TestLabNoCNI brings up a 2-node lab without a CNI, checks the nodes
// register and are isolated from each other and from the host, adds and
// removes a node, and checks Down leaves nothing behind.
func TestLabNoCNI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root; run as root (make test does)")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("%v", err)
	}
	name := e2eName("nocni")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	hostLinks := linkNames(t)
	t.Cleanup(func() {
		if err := Down(context.Background(), name); err != nil {
			t.Errorf("Down in cleanup: %v", err)
		}
	})

	var log bytes.Buffer
	start := time.Now()
	c, err := Up(ctx, Options{Name: name, Nodes: 2, CNI: "none", RepoRoot: repoRoot(t), Log: &log})
	if err != nil {
		t.Fatalf("Up: %v\n%s", err, log.String())
	}
	t.Logf("Up took %s", time.Since(start).Round(100*time.Millisecond))

	if got := []string{c.Nodes[0].Name, c.Nodes[1].Name}; got[0] != name+"-control-plane" || got[1] != name+"-worker" {
		t.Errorf("node names = %v", got)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cidrs := map[string]bool{}
	for _, s := range st {
		if s.Ready {
			t.Errorf("%s is Ready without a CNI", s.Name)
		}
		if !strings.HasPrefix(s.PodCIDR, "10.244.") || cidrs[s.PodCIDR] {
			t.Errorf("%s podCIDR = %q, want a unique 10.244.x.0/24", s.Name, s.PodCIDR)
		}
		cidrs[s.PodCIDR] = true
		for d, up := range s.Running {
			if !up {
				t.Errorf("%s: %s not running", s.Name, d)
			}
		}
	}
	taints, err := c.Kubectl(ctx, "get", "node", name+"-control-plane", "-o", "jsonpath={.spec.taints[*].key} {.metadata.labels}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(taints, "node-role.kubernetes.io/control-plane") < 2 {
		t.Errorf("control plane taint/label missing: %s", taints)
	}
	ver, err := c.Kubectl(ctx, "version")
	if err != nil || !strings.Contains(ver, "Server Version: "+k8sbin.Version) {
		t.Errorf("kubectl version: %v\n%s", err, ver)
	}

	worker := name + "-worker"
	t.Run("cluster DNS Pending without a CNI", func(t *testing.T) {
		// As on kind: CoreDNS is there from the start and waits for a CNI.
		if phases := waitDNSPods(ctx, t, c, "Pending"); phases != "" {
			t.Errorf("CoreDNS pods without a CNI: %s, want 2 Pending", phases)
		}
	})
	t.Run("node namespaces", func(t *testing.T) {
		out, err := c.Exec(ctx, worker, "sh", "-c", "hostname; ip -4 -o addr show eth0; ip route show default")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{worker, "172.18.0.3/16", "default via 172.18.0.1"} {
			if !strings.Contains(out, want) {
				t.Errorf("node view lacks %q:\n%s", want, out)
			}
		}
		// hostPath writes land on one node only.
		if _, err := c.Exec(ctx, worker, "sh", "-c", "echo x > /opt/cni/bin/e2e-marker"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, name+"-control-plane", "test", "-e", "/opt/cni/bin/e2e-marker"); err == nil {
			t.Error("a file written to /opt/cni/bin on the worker shows on the control plane")
		}
		if _, err := os.Stat("/opt/cni/bin/e2e-marker"); err == nil {
			t.Error("a file written to /opt/cni/bin on the worker shows on the host")
		}
		if out, err := c.Exec(ctx, worker, "ls", "/opt/cni/bin"); err != nil || strings.TrimSpace(out) != "e2e-marker" {
			t.Errorf("/opt/cni/bin on the worker = %q (%v), want only our marker: it must start empty", out, err)
		}
	})
	t.Run("underlay", func(t *testing.T) {
		if _, err := c.Exec(ctx, worker, "ping", "-c", "1", "-W", "5", "172.18.0.2"); err != nil {
			t.Errorf("worker cannot reach the control plane: %v", err)
		}
		if _, err := c.Exec(ctx, worker, "ping", "-c", "1", "-W", "5", InternetIP.String()); err != nil {
			t.Errorf("worker cannot reach the internet stand-in: %v", err)
		}
		if names := linkNames(t); strings.Join(names, ",") != strings.Join(hostLinks, ",") {
			t.Errorf("host links changed: before %v, now %v", hostLinks, names)
		}
	})
	t.Run("add and remove a node", func(t *testing.T) {
		n, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Name != name+"-worker2" || n.IP.String() != "172.18.0.4" {
			t.Errorf("added node %s %s, want %s-worker2 172.18.0.4", n.Name, n.IP, name)
		}
		out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
		if err != nil || !strings.Contains(out, n.Name) {
			t.Fatalf("added node not registered: %v\n%s", err, out)
		}
		if err := c.RemoveNode(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
		if netns.Exists(n.Name) {
			t.Error("removed node's network namespace still exists")
		}
		if out, _ := c.Kubectl(ctx, "get", "nodes", "-o", "name"); strings.Contains(out, n.Name) {
			t.Errorf("removed node still in the API:\n%s", out)
		}
		loaded, err := Load(name)
		if err != nil || len(loaded.Nodes) != 2 {
			t.Errorf("state after RemoveNode: %v nodes, err %v", loaded, err)
		}
	})

	t.Run("hostNetwork pod without a CNI", func(t *testing.T) {
		// Runs through containerd and runc; its shim and container are
		// what Down must find without PID files.
		if _, err := c.Kubectl(ctx, "run", "hostpod", "--image=localhost/twill-lab/netshoot:1", "--image-pull-policy=Never",
			// A NotReady node is tainted not-ready: tolerate it, and pin
			// the pod to the worker.
			`--overrides={"spec":{"hostNetwork":true,"tolerations":[{"operator":"Exists"}],"nodeSelector":{"kubernetes.io/hostname":"`+worker+`"}}}`,
			"--", "sleep", "infinity"); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/hostpod", "--timeout=180s"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err := c.Kubectl(ctx, "exec", "hostpod", "--", "ip", "-4", "-o", "addr", "show", "eth0")
		if err != nil || !strings.Contains(out, "172.18.0.3/16") {
			t.Errorf("hostNetwork pod does not see the worker's eth0: %v %s", err, out)
		}
		// The node's resolver is the internet host's DNS server.
		out, err = c.Kubectl(ctx, "exec", "hostpod", "--", "dig", "+short", "+tries=2", "+time=3", "example.com")
		if err != nil || strings.TrimSpace(out) != InternetIP.String() {
			t.Errorf("dig example.com on the node = %q (%v), want the internet host %s", strings.TrimSpace(out), err, InternetIP)
		}
	})
	t.Run("tutorial image name offline", func(t *testing.T) {
		// Tutorials run nicolaka/netshoot, which (":latest") kubelet always
		// pulls; the lab has no route out, so the pull goes to the lab's
		// registry, the nodes' mirror of docker.io.
		if _, err := c.Kubectl(ctx, "run", "tutorial", "--image=nicolaka/netshoot",
			`--overrides={"spec":{"hostNetwork":true,"tolerations":[{"operator":"Exists"}],"nodeSelector":{"kubernetes.io/hostname":"`+worker+`"}}}`,
			"--", "sleep", "infinity"); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/tutorial", "--timeout=120s"); err != nil {
			desc, _ := c.Kubectl(ctx, "describe", "pod", "tutorial")
			t.Fatalf("%v\n%s\n%s", err, out, desc)
		}
		if policy, _ := c.Kubectl(ctx, "get", "pod", "tutorial", "-o", "jsonpath={.spec.containers[0].imagePullPolicy}"); policy != "Always" {
			t.Errorf("imagePullPolicy = %q, want Always (the default for :latest): the test must pull", policy)
		}
		if b, err := os.ReadFile(c.RegistryLog()); err != nil || !strings.Contains(string(b), "/v2/nicolaka/netshoot/manifests/latest") {
			t.Errorf("the lab registry's log shows no pull of nicolaka/netshoot (%v):\n%s", err, b)
		}
		// A name the lab does not have fails as it would offline.
		if _, err := c.Kubectl(ctx, "run", "unknown-image", "--image=nicolaka/netshoot:v0.0.0-none",
			`--overrides={"spec":{"hostNetwork":true,"tolerations":[{"operator":"Exists"}],"nodeSelector":{"kubernetes.io/hostname":"`+worker+`"}}}`,
			"--", "sleep", "infinity"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			reason, _ := c.Kubectl(ctx, "get", "pod", "unknown-image", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
			if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a pod with an image the lab lacks is waiting for %q, want ErrImagePull or ImagePullBackOff", reason)
			}
			time.Sleep(time.Second)
		}
	})
	t.Run("cluster DNS runs once Twill is applied", func(t *testing.T) {
		if err := c.ApplyManifest(ctx, "vxlan"); err != nil {
			t.Fatal(err)
		}
		if phases := waitDNSPods(ctx, t, c, "Running"); phases != "" {
			t.Errorf("CoreDNS pods with Twill: %s, want 2 Running", phases)
		}
	})

	// Collect what Down must remove, then check it did.
	pids := labPIDs(t, c)
	var cgDirs []string
	hs0, _ := node.AllHierarchies()
	for _, h := range hs0 {
		cgDirs = append(cgDirs, filepath.Join(h, labCgroup(name)))
	}
	inCgroups, err := proc.InCgroups(cgDirs...)
	if err != nil {
		t.Fatal(err)
	}
	if !hasCommand(inCgroups, "sleep") || !hasCommand(inCgroups, "containerd-shim") {
		t.Errorf("the lab's cgroups hold no container (sleep) or shim: %v", inCgroups)
	}
	pids = append(pids, inCgroups...)
	if len(pids) < 8 {
		t.Errorf("only %d lab processes found before Down, want at least 8 (etcd, apiserver, … ,kubelets)", len(pids))
	}
	start = time.Now()
	if err := Down(ctx, name); err != nil {
		t.Fatalf("Down: %v", err)
	}
	t.Logf("Down took %s", time.Since(start).Round(100*time.Millisecond))
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Errorf("PID %d survived Down: %s", pid, b)
		}
	}
	for _, n := range c.Nodes {
		if netns.Exists(n.Name) {
			t.Errorf("namespace %s survived Down", n.Name)
		}
	}
	if netns.Exists(name+"-underlay") || netns.Exists(name+"-internet") {
		t.Error("underlay or internet namespace survived Down")
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s survived Down: %v", c.Dir, err)
	}
	if m := mountsUnder(t, c.Dir); len(m) > 0 {
		t.Errorf("mounts survived Down: %v", m)
	}
	hs, _ := node.AllHierarchies()
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, labCgroup(name))); err == nil {
			t.Errorf("cgroup %s survived Down", filepath.Join(h, labCgroup(name)))
		}
	}
	if err := Down(ctx, name); err != nil {
		t.Errorf("second Down: %v", err)
	}
}

func labPIDs(t *testing.T, c *Cluster) []int {
	t.Helper()
	var cg []string
	hs, _ := node.AllHierarchies()
	for _, h := range hs {
		cg = append(cg, filepath.Join(h, labCgroup(c.Name)))
	}
	var pids []int
	seen := map[int]bool{}
	for _, n := range c.Nodes {
		for _, f := range []string{"run/containerd.pid", "run/kubelet.pid", "run/kube-proxy.pid"} {
			if b, err := os.ReadFile(filepath.Join(c.nodeDir(n.Name), f)); err == nil {
				var pid int
				fmt.Sscan(string(b), &pid)
				if pid > 0 && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
		}
	}
	// Containers and their shims live in the lab's cgroups.
	if inCg, err := proc.InCgroups(cg...); err == nil {
		for _, pid := range inCg {
			if !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	for _, f := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if b, err := os.ReadFile(filepath.Join(c.controlPlaneDir(), "run", f+".pid")); err == nil {
			var pid int
			fmt.Sscan(string(b), &pid)
			if pid > 0 && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func linkNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	return names
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// hasCommand reports whether one of pids runs a command whose name starts
// with prefix.
func hasCommand(pids []int, prefix string) bool {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			return true
		}
	}
	return false
}

// waitDNSPods waits up to 3 minutes for both CoreDNS pods to be in phase
// (Running ones also Ready, Pending ones unschedulable, as on a node that
// is not Ready), and returns "" or what they were at the end.
func waitDNSPods(ctx context.Context, t *testing.T, c *Cluster, phase string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := c.Kubectl(ctx, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o",
			`jsonpath={range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="PodScheduled")].reason} {end}`)
		got := strings.Fields(out)
		ok := err == nil && len(got) == 2
		for _, p := range got {
			switch phase {
			case "Running":
				ok = ok && strings.HasPrefix(p, "Running/True/")
			case "Pending":
				ok = ok && p == "Pending//Unschedulable"
			}
		}
		if ok {
			return ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Sprintf("%q (%v)", strings.TrimSpace(out), err)
		}
		time.Sleep(time.Second)
	}
}
