package netns

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// threadNetNS names the network namespace of the calling OS thread.
func threadNetNS(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	link, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// TestNew checks a test's throwaway namespace: unique, loopback up, its
// handles and Do and Run all inside it, and gone once the test ends, also
// when it ends early.
func TestNew(t *testing.T) {
	RequireRoot(t)
	host := threadNetNS(t)
	var a, b *NS
	t.Run("ends early", func(t *testing.T) {
		a, b = New(t), New(t)
		if a.Name == b.Name || !Exists(a.Name) || !Exists(b.Name) {
			t.Fatalf("namespaces %q and %q: want two distinct existing ones", a.Name, b.Name)
		}
		links, err := a.Netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		if len(links) != 1 || links[0].Attrs().Name != "lo" || links[0].Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("links in a new namespace: %v, want only lo, up", links)
		}
		if !a.Handle.IsOpen() {
			t.Fatal("Handle is not open")
		}
		var inside string
		if err := a.Do(func() error {
			var err error
			inside, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(a.Path())
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("net:[%d]", st.Sys().(*syscall.Stat_t).Ino); inside != want || inside == host {
			t.Errorf("Do ran in %s, want %s (the host is %s)", inside, want, host)
		}
		if out := a.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
			t.Errorf("ip link show lo inside: %q, want UP", out)
		}
		if _, err := b.Exec("false"); err == nil || !strings.Contains(err.Error(), b.Name) {
			t.Errorf("a failing command: %v, want an error naming %s", err, b.Name)
		}
		// A test that ends inside Do leaves the thread back on the host:
		// its cleanups, run on the same goroutine, see the host.
		t.Cleanup(func() {
			if got := threadNetNS(t); got != host {
				t.Errorf("cleanup runs in %s, want the host's %s", got, host)
			}
		})
		_ = b.Do(func() error { t.SkipNow(); return nil })
	})
	if Exists(a.Name) || Exists(b.Name) {
		t.Errorf("namespaces %s, %s left after the test", a.Name, b.Name)
	}
}
