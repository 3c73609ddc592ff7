package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
