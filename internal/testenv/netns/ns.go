package netns

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/twill-net/twill/backend/kernel"
)

// NS is a named network namespace that its maker owns and removes with
// Close: a test's or a benchmark's host, pod or node. Its loopback is up,
// as on a real host.
type NS struct {
	// Name is the namespace's name in Dir (for `ip netns exec`).
	Name string
	// Handle is an open handle on the namespace, for code that takes a
	// vishvananda/netns handle (kernel.NewNetlinkAt).
	Handle vnetns.NsHandle
	// Netlink is a netlink handle bound to the namespace.
	Netlink *netlink.Handle
}

// T is the part of testing.TB the test helpers here use. It is declared
// here, not taken from package testing, so the lab, which shares this
// package, does not link the testing package into the twill binary.
type T interface {
	Helper()
	Cleanup(func())
	Skip(args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
}

// seq makes the names of throwaway namespaces unique within the process.
var seq atomic.Int64

// Make creates the network namespace called name, brings its loopback up
// and opens it. An empty name picks a unique one (twill-t<pid>-<n>).
func Make(name string) (*NS, error) {
	if name == "" {
		name = fmt.Sprintf("twill-t%d-%d", os.Getpid(), seq.Add(1))
	}
	path, err := Create(name)
	if err != nil {
		return nil, err
	}
	n := &NS{Name: name, Handle: vnetns.None()}
	if n.Handle, err = vnetns.GetFromPath(path); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("opening network namespace %s: %w", name, err)
	}
	if n.Netlink, err = netlink.NewHandleAt(n.Handle); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("opening netlink in network namespace %s: %w", name, err)
	}
	lo, err := n.Netlink.LinkByName("lo")
	if err == nil {
		err = n.Netlink.LinkSetUp(lo)
	}
	if err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("bringing lo up in network namespace %s: %w", name, err)
	}
	return n, nil
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root)")
	}
}

// New makes a throwaway namespace for the test (Make with a unique name)
// and removes it when the test ends, pass or fail. It skips the test when
// not run as root.
func New(t T) *NS {
	t.Helper()
	RequireRoot(t)
	n, err := Make("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("removing network namespace %s: %v", n.Name, err)
		}
	})
	return n
}

// Kernel opens the real kernel.Kernel in the namespace for the test, whose
// end closes it, and returns it with the namespace's device called link
// (its eth0, as a rule).
func (n *NS) Kernel(t T, link string) (*kernel.Netlink, *kernel.Link) {
	t.Helper()
	k, err := kernel.NewNetlinkAt(n.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	l, err := k.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	return k, l
}

// Path is the namespace's file, for Do, nsenter --net and CNI's NetNS.
func (n *NS) Path() string { return Path(n.Name) }

// Do runs fn with the calling OS thread inside the namespace; see the
// package's Do.
func (n *NS) Do(fn func() error) error { return Do(n.Path(), fn) }

// Exec runs a command inside the namespace (ip netns exec) and returns its
// combined output.
func (n *NS) Exec(args ...string) (string, error) { return Exec(n.Name, args...) }

// Run is Exec for a test: a failure fails the test.
func (n *NS) Run(t T, args ...string) string {
	t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Close closes the handles and removes the namespace; it lives on while
// processes still use it. Closing twice is not an error.
func (n *NS) Close() error {
	var errs []error
	if n.Netlink != nil {
		n.Netlink.Close()
		n.Netlink = nil
	}
	if n.Handle.IsOpen() {
		errs = append(errs, n.Handle.Close())
	}
	errs = append(errs, Delete(n.Name))
	return errors.Join(errs...)
}
