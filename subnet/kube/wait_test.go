package kube

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/twill-net/twill/family"
)

// TestWaitReason: the line a waiting flanneld logs names what the node
// lacks and the flags that give it, the dual-stack ones when IPv6 is
// missing.
func TestWaitReason(t *testing.T) {
	node := func(cidrs ...string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker"}, Spec: v1.NodeSpec{PodCIDRs: cidrs}}
	}
	for _, c := range []struct {
		node    *v1.Node
		missing []family.Family
		want    []string
		not     string
	}{
		{node(), []family.Family{family.IPv4}, []string{"node worker has no spec.podCIDR yet", "--allocate-node-cidrs", "--pod-network-cidr"}, ""},
		{node("10.244.1.0/24"), []family.Family{family.IPv6}, []string{
			"node worker has no IPv6 podCIDR yet (it has [10.244.1.0/24])",
			"--cluster-cidr=<v4>,<v6>", "--node-cidr-mask-size-ipv6", "--pod-network-cidr=<v4>,<v6>",
		}, ""},
		{node("fd00:10:244:1::/64"), []family.Family{family.IPv4}, []string{"node worker has no IPv4 podCIDR yet", "--cluster-cidr must hold a network of each family"}, "node-cidr-mask-size-ipv6"},
	} {
		got := waitReason("worker", c.node, c.missing)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("waitReason(%v, missing %v) = %q, want it to say %q", c.node.Spec.PodCIDRs, c.missing, got, w)
			}
		}
		if c.not != "" && strings.Contains(got, c.not) {
			t.Errorf("waitReason(%v, missing %v) = %q, should not say %q", c.node.Spec.PodCIDRs, c.missing, got, c.not)
		}
	}
}

// TestUnreachable: the node watch retries by itself only while the API
// server cannot be reached or serve; answers go to the informer.
func TestUnreachable(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "https://10.0.0.1:6443", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{apierrors.NewServiceUnavailable("starting"), true},
		{apierrors.NewTimeoutError("slow", 1), true},
		{apierrors.NewResourceExpired("too old resource version"), false},
		{apierrors.NewTooManyRequests("slow down", 1), false},
		{apierrors.NewForbidden(v1.Resource("nodes"), "", errors.New("RBAC")), false},
	} {
		if got := unreachable(c.err); got != c.want {
			t.Errorf("unreachable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
