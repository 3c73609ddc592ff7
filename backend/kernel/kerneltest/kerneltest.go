// Package kerneltest makes throwaway network namespaces for root tests of
// code that programs the kernel. Each namespace is removed when the test
// ends, pass or fail.
package kerneltest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var seq atomic.Int64

// NS is a named network namespace made for one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	// Netlink is a netlink handle bound to the namespace.
	Netlink *netlink.Handle
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root)")
	}
}

// New makes a named namespace with loopback up, without moving the calling
// goroutine into it.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("twill-t%d-%d", os.Getpid(), seq.Add(1))
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", serr))
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		_ = netns.DeleteNamed(name)
	})
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	lo, err := nl.LinkByName("lo")
	if err == nil {
		_ = nl.LinkSetUp(lo)
	}
	return &NS{Name: name, Handle: h, Netlink: nl}
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output; a failure fails the test.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), n.Name, err, out)
	}
	return string(out)
}

// Do runs fn with the calling OS thread inside the namespace.
func (n *NS) Do(t testing.TB, fn func() error) error {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.Handle); err != nil {
		return err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
		}
	}()
	return fn()
}

// Veth connects namespaces a and b with a veth pair named ifA (in a) and ifB
// (in b), both up, with the given addresses (CIDR notation).
func Veth(t testing.TB, a *NS, ifA, addrA string, b *NS, ifB, addrB string) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifA, MTU: 1500, Namespace: netlink.NsFd(a.Handle)}, PeerName: ifB, PeerNamespace: netlink.NsFd(b.Handle)}
	if err := a.Netlink.LinkAdd(veth); err != nil {
		t.Fatalf("creating veth %s/%s: %v", ifA, ifB, err)
	}
	for _, side := range []struct {
		ns         *NS
		name, addr string
	}{{a, ifA, addrA}, {b, ifB, addrB}} {
		l, err := side.ns.Netlink.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		if side.addr != "" {
			ad, err := netlink.ParseAddr(side.addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := side.ns.Netlink.AddrAdd(l, ad); err != nil {
				t.Fatal(err)
			}
		}
		if err := side.ns.Netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}
