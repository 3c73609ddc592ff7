package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/proc"
)

func TestStartAllocatesNodeCIDRs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("no Kubernetes binaries: %v", err)
	}
	sb, err := NewSandbox(fmt.Sprintf("twill-cptest-%d", os.Getpid()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{Dir: dir, NetNS: sb.NetNS, AdvertiseIP: sb.IP, ControllerManager: true, Scheduler: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })

	cfg, err := cp.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a node as admin: %v", err)
	}
	var cidr string
	deadline := time.Now().Add(time.Minute)
	for cidr == "" {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidr = n.Spec.PodCIDR
		if cidr == "" && time.Now().After(deadline) {
			t.Fatal("controller manager assigned no podCIDR within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cidr != "10.244.0.0/24" {
		t.Errorf("podCIDR = %s, want 10.244.0.0/24", cidr)
	}

	// RBAC is on: a user without bindings is refused.
	kc := filepath.Join(dir, "nobody.kubeconfig")
	if err := cp.WriteKubeconfig(kc, "nobody", ""); err != nil {
		t.Fatal(err)
	}
	ncfg, err := RESTConfig(kc, sb.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kubernetes.NewForConfigOrDie(ncfg).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("listing nodes as an unbound user: err = %v, want Forbidden", err)
	}

	var procs []*proc.Process
	for _, c := range components {
		p, err := proc.Load(filepath.Join(dir, "run", c+".pid"))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		procs = append(procs, p)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if p.Alive() {
			t.Errorf("%s still running after Stop", components[i])
		}
	}
}

// TestRestart: etcd killed and the API server stopped, each restarted in
// place: a new process each time, healthy again, and the cluster's data
// (etcd's data directory) still there; then the API server stopped for a
// while and started again.
func TestRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("no Kubernetes binaries: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, stop, err := StartInSandbox(ctx, fmt.Sprintf("twill-cprestart-%d", os.Getpid()), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	cfg, err := cp.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		component string
		sig       syscall.Signal
	}{{Etcd, syscall.SIGKILL}, {APIServer, syscall.SIGTERM}, {Etcd, syscall.SIGTERM}} {
		before, err := proc.Load(filepath.Join(dir, "run", c.component+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Restart(ctx, c.component, c.sig); err != nil {
			t.Fatalf("restarting %s with %v: %v", c.component, c.sig, err)
		}
		after, err := proc.Load(filepath.Join(dir, "run", c.component+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		if before.Alive() || !after.Alive() || after.PID == before.PID {
			t.Errorf("%s: old PID %d alive=%v, new PID %d alive=%v; want a new process", c.component, before.PID, before.Alive(), after.PID, after.Alive())
		}
		// Ready means ready: the first request after Restart is answered.
		if _, err := cs.CoreV1().Nodes().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
			t.Errorf("after restarting %s with %v: %v", c.component, c.sig, err)
		}
	}
	if err := cp.Restart(ctx, "kubelet", syscall.SIGTERM); err == nil {
		t.Error("restarting an unknown component: no error")
	}
	// Stopped, the API server answers nothing; started, it is ready again.
	if err := cp.StartComponent(ctx, APIServer); err == nil {
		t.Error("starting a running API server: no error")
	}
	if err := cp.StopComponent(APIServer, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = cs.CoreV1().Nodes().Get(short, "kept", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Error("the API server answers after StopComponent")
	}
	if err := cp.StartComponent(ctx, APIServer); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("after StartComponent: %v", err)
	}
}
