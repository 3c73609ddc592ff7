package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
)

// TestEnv starts the harness with nodes on both underlay subnets: the API
// server answers, the nodes reach it and each other (the routed one through
// the gateway), and Close leaves no namespace behind.
func TestEnv(t *testing.T) {
	netns.RequireRoot(t)
	if _, err := k8sbin.Dir(); err != nil {
		t.Skipf("no Kubernetes binaries: %v", err)
	}
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping not installed (make deps installs iputils-ping)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("tt%d", os.Getpid()%100000)
	env, err := Start(ctx, t.TempDir(), prefix, "/bin/false")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = env.Close()
		}
	})
	if _, err := env.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing nodes: %v", err)
	}
	flat, err := env.AddNode("n1", "172.18.0.10")
	if err != nil {
		t.Fatal(err)
	}
	routed, err := env.AddNode("n2", "172.20.0.11")
	if err != nil {
		t.Fatal(err)
	}
	if flat.NSName != prefix+"-n1" || flat.NS != netns.Path(prefix+"-n1") {
		t.Errorf("node namespace %s at %s, want %s-n1", flat.NSName, flat.NS, prefix)
	}
	under, err := netns.Exec(prefix+"-under", "ip", "-o", "link", "show", "master", "br0")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"v1-" + prefix, "v2-" + prefix} {
		if !strings.Contains(under, " "+port+"@") {
			t.Errorf("br0's ports lack %s:\n%s", port, under)
		}
	}
	for n, gw := range map[*Node]string{flat: GatewayIP, routed: OtherGatewayIP} {
		if out, err := n.Exec("ip", "route", "show", "default"); err != nil || strings.TrimSpace(out) != "default via "+gw+" dev eth0" {
			t.Errorf("%s default route: %q %v, want via %s", n.Name, out, err, gw)
		}
	}
	for _, c := range [][2]*Node{{flat, routed}, {routed, flat}} {
		if out, err := c[0].Exec("ping", "-c", "1", "-W", "5", c[1].IP.String()); err != nil {
			t.Errorf("%s → %s: %v\n%s", c[0].Name, c[1].Name, err, out)
		}
	}
	if links, err := routed.Net().Netlink.LinkList(); err != nil || len(links) != 2 {
		t.Errorf("node's netlink handle sees %d links (%v), want lo and eth0", len(links), err)
	}

	closed = true
	if err := env.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, name := range []string{prefix + "-under", prefix + "-n1", prefix + "-n2"} {
		if netns.Exists(name) {
			t.Errorf("namespace %s left after Close", name)
		}
	}
}
