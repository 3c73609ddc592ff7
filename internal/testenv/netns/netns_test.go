package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestCreateDoDelete(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating network namespaces needs root")
	}
	name := fmt.Sprintf("twill-nstest-%d", os.Getpid())
	path, err := Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(name) })
	if !Exists(name) {
		t.Fatal("Exists = false right after Create")
	}
	if _, err := Create(name); err == nil {
		t.Error("second Create of the same name succeeded")
	}

	// Bring lo up and listen inside; the host must not see the listener
	// and a dial through DialContext must reach it.
	var ln net.Listener
	err = Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 1 {
			return fmt.Errorf("new namespace has %d links, want only lo", len(links))
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("inside\n"))
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("host namespace reached a listener inside the lab namespace")
	}
	conn, err := DialContext(path)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial into namespace: %v", err)
	}
	buf := make([]byte, 16)
	n, _ := conn.Read(buf)
	conn.Close()
	if strings.TrimSpace(string(buf[:n])) != "inside" {
		t.Errorf("read %q, want inside", buf[:n])
	}

	if err := SetSysctl(path, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	var fwd []byte
	_ = Do(path, func() error { fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return err })
	if strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward inside = %q, want 1", fwd)
	}

	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Error("Exists after Delete")
	}
	if err := Delete(name); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}
