package cniplugin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/twill-net/twill/cniplugin"
	"github.com/twill-net/twill/cniplugin/savedconf"
	"github.com/twill-net/twill/internal/testenv/cnihost"
	"github.com/twill-net/twill/internal/testenv/netns"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// plugins builds the flannel and standard plugins once per test binary.
func plugins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "twill-cni-bin-")
		if buildErr == nil {
			buildErr = cnihost.BuildPlugins(binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func newHost(t *testing.T, opt cnihost.Options) *cnihost.Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and veths")
	}
	bin := plugins(t)
	h, err := cnihost.NewHost(bin, t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("cleaning up namespaces: %v", err)
		}
	})
	return h
}

func podIP(t *testing.T, r types.Result) net.IP {
	t.Helper()
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs: %v", len(res.IPs), res)
	}
	return res.IPs[0].Address.IP
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// podNet is what a pod sees of its eth0.
type podNet struct {
	addrs  []string
	mtu    int
	routes map[string]string // destination → gateway
}

func inspect(t *testing.T, pod *netns.NS, ifname string) podNet {
	t.Helper()
	var p podNet
	err := pod.Do(func() error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		p.mtu = link.Attrs().MTU
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			p.addrs = append(p.addrs, a.IPNet.String())
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		p.routes = map[string]string{}
		for _, r := range routes {
			dst := "0.0.0.0/0"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			gw := ""
			if r.Gw != nil {
				gw = r.Gw.String()
			}
			p.routes[dst] = gw
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inspecting %s: %v", ifname, err)
	}
	return p
}

func ipamRecord(h *cnihost.Host, ip net.IP) string {
	return filepath.Join(h.IPAMDir, cnihost.NetworkName, ip.String())
}

func TestLifecycleThroughLibcni(t *testing.T) {
	h := newHost(t, cnihost.Options{})
	ctx := context.Background()
	_, rootCNI0Before := netlink.LinkByName("cni0")

	// No subnet.env yet: STATUS says "not available", ADD says "try later".
	var e *types.Error
	if err := h.Status(ctx); !errors.As(err, &e) || e.Code != cniplugin.ErrPluginNotAvailable {
		t.Fatalf("STATUS before subnet.env: %v, want code %d", err, cniplugin.ErrPluginNotAvailable)
	}
	early, err := h.NewPod()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Add(ctx, cnihost.Runtime("early", early)); !errors.As(err, &e) || e.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD before subnet.env: %v, want code %d", err, types.ErrTryAgainLater)
	}
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.3.1/24", 1400, true); err != nil {
		t.Fatal(err)
	}
	if err := h.Status(ctx); err != nil {
		t.Fatalf("STATUS with subnet.env: %v", err)
	}

	_, subnet, _ := net.ParseCIDR("10.244.3.0/24")
	type pod struct {
		id string
		ns *netns.NS
		ip net.IP
	}
	var pods []*pod
	seen := map[string]bool{}
	for i := range 3 {
		p := &pod{id: fmt.Sprintf("pod%d", i)}
		if p.ns, err = h.NewPod(); err != nil {
			t.Fatal(err)
		}
		res, err := h.Add(ctx, cnihost.Runtime(p.id, p.ns))
		if err != nil {
			t.Fatalf("ADD %s: %v", p.id, err)
		}
		p.ip = podIP(t, res)
		if !subnet.Contains(p.ip) || p.ip.Equal(net.ParseIP("10.244.3.1")) || seen[p.ip.String()] {
			t.Fatalf("%s got %s: not a free address of %s", p.id, p.ip, subnet)
		}
		seen[p.ip.String()] = true
		got := inspect(t, p.ns, "eth0")
		if len(got.addrs) != 1 || got.addrs[0] != p.ip.String()+"/24" {
			t.Errorf("%s eth0 addresses %v, want %s/24", p.id, got.addrs, p.ip)
		}
		if got.mtu != 1400 {
			t.Errorf("%s eth0 MTU %d, want FLANNEL_MTU 1400", p.id, got.mtu)
		}
		if got.routes["0.0.0.0/0"] != "10.244.3.1" {
			t.Errorf("%s routes %v, want a default route via 10.244.3.1 (isDefaultGateway)", p.id, got.routes)
		}
		st, err := os.Stat(filepath.Join(h.DataDir, p.id))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s saved configuration: %v %v", p.id, st, err)
		}
		if !exists(ipamRecord(h, p.ip)) {
			t.Errorf("host-local has no record of %s", p.ip)
		}
		if err := h.Check(ctx, cnihost.Runtime(p.id, p.ns)); err != nil {
			t.Errorf("CHECK %s: %v", p.id, err)
		}
		pods = append(pods, p)
	}

	bridge := inspect(t, h.NS, "cni0")
	if len(bridge.addrs) != 1 || bridge.addrs[0] != "10.244.3.1/24" {
		t.Errorf("cni0 addresses %v, want the gateway 10.244.3.1/24", bridge.addrs)
	}
	if _, err := netlink.LinkByName("cni0"); rootCNI0Before != nil && err == nil {
		t.Errorf("cni0 appeared in the root network namespace")
	}

	// DEL frees the address and the saved file; a second DEL succeeds.
	p := pods[0]
	if err := h.Del(ctx, cnihost.Runtime(p.id, p.ns)); err != nil {
		t.Fatalf("DEL %s: %v", p.id, err)
	}
	if exists(ipamRecord(h, p.ip)) || exists(filepath.Join(h.DataDir, p.id)) {
		t.Errorf("DEL %s left the address record or the saved configuration", p.id)
	}
	if err := p.ns.Do(func() error {
		_, err := netlink.LinkByName("eth0")
		return err
	}); err == nil {
		t.Errorf("DEL %s left eth0 in the pod", p.id)
	}
	if err := h.Del(ctx, cnihost.Runtime(p.id, p.ns)); err != nil {
		t.Errorf("second DEL %s: %v", p.id, err)
	}

	// DEL after the sandbox's namespace is gone still frees the address.
	p = pods[1]
	path := p.ns.Path()
	if err := h.RemovePod(p.ns); err != nil {
		t.Fatal(err)
	}
	rt := cnihost.Runtime(p.id, nil)
	rt.NetNS = path
	if err := h.Del(ctx, rt); err != nil {
		t.Fatalf("DEL %s without its netns: %v", p.id, err)
	}
	if exists(ipamRecord(h, p.ip)) || exists(filepath.Join(h.DataDir, p.id)) {
		t.Errorf("DEL %s without netns left the address record or the saved configuration", p.id)
	}

	// flanneld moves to another subnet: CHECK notices, DEL still uses the
	// configuration the pod was made with and frees its address.
	p = pods[2]
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.7.1/24", 1400, true); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(ctx, cnihost.Runtime(p.id, p.ns)); !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("CHECK after the subnet moved: %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
	if err := h.Del(ctx, cnihost.Runtime(p.id, p.ns)); err != nil {
		t.Fatalf("DEL %s after the subnet moved: %v", p.id, err)
	}
	if exists(ipamRecord(h, p.ip)) {
		t.Errorf("DEL %s after the subnet moved left %s allocated", p.id, p.ip)
	}
	// The failed early ADD left nothing behind.
	if exists(filepath.Join(h.DataDir, "early")) {
		t.Errorf("the failed ADD left a saved configuration")
	}
}

func TestClusterRouteWithoutDefaultGateway(t *testing.T) {
	h := newHost(t, cnihost.Options{Delegate: map[string]any{"hairpinMode": true}, CNIVersion: "0.4.0"})
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.5.1/24", 1450, false); err != nil {
		t.Fatal(err)
	}
	pod, err := h.NewPod()
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Add(context.Background(), cnihost.Runtime("p", pod))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "0.4.0" {
		t.Errorf("result version %s, want the conflist's 0.4.0", res.Version())
	}
	got := inspect(t, pod, "eth0")
	if got.routes["10.244.0.0/16"] != "10.244.5.1" {
		t.Errorf("routes %v, want 10.244.0.0/16 via 10.244.5.1", got.routes)
	}
	if _, ok := got.routes["0.0.0.0/0"]; ok {
		t.Errorf("routes %v: unexpected default route", got.routes)
	}
	if got.mtu != 1450 {
		t.Errorf("MTU %d, want 1450", got.mtu)
	}
	if err := h.Check(context.Background(), cnihost.Runtime("p", pod)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

func TestParallelAdds(t *testing.T) {
	h := newHost(t, cnihost.Options{})
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.9.1/24", 1450, true); err != nil {
		t.Fatal(err)
	}
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pods := make([]*netns.NS, n)
	for i := range pods {
		var err error
		if pods[i], err = h.NewPod(); err != nil {
			t.Fatal(err)
		}
	}
	ips := make([]net.IP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.Add(ctx, cnihost.Runtime(fmt.Sprintf("par%d", i), pods[i]))
			if err != nil {
				errs[i] = err
				return
			}
			r, err := current.NewResultFromResult(res)
			if err != nil || len(r.IPs) != 1 {
				errs[i] = fmt.Errorf("result %v: %v", res, err)
				return
			}
			ips[i] = r.IPs[0].Address.IP
		}()
	}
	wg.Wait()
	distinct := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD par%d: %v", i, errs[i])
		}
		distinct[ips[i].String()] = true
	}
	if len(distinct) != n {
		t.Fatalf("%d parallel ADDs got %d distinct addresses: %v", n, len(distinct), ips)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.Del(ctx, cnihost.Runtime(fmt.Sprintf("par%d", i), pods[i]))
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("DEL par%d: %v", i, errs[i])
		}
		if exists(ipamRecord(h, ips[i])) {
			t.Errorf("%s still allocated after DEL", ips[i])
		}
	}
	if entries, err := (savedconf.Store{Dir: h.DataDir}).List(); err != nil || len(entries) != 0 {
		t.Errorf("saved configurations left after DEL: %q", entries)
	}
}

func TestGCRemovesLeftovers(t *testing.T) {
	h := newHost(t, cnihost.Options{})
	ctx := context.Background()
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.4.1/24", 1450, true); err != nil {
		t.Fatal(err)
	}
	ips := map[string]net.IP{}
	for _, id := range []string{"live", "gone"} {
		pod, err := h.NewPod()
		if err != nil {
			t.Fatal(err)
		}
		res, err := h.Add(ctx, cnihost.Runtime(id, pod))
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		ips[id] = podIP(t, res)
	}
	// A runtime that lost its cache (a new libcni cache dir): libcni itself
	// issues no DEL, so only the plugin's GC can free "gone".
	forgetful := cnihost.NewCNI(h.CNI.Path, t.TempDir())
	if err := h.GC(ctx, forgetful, []types.GCAttachment{{ContainerID: "live", IfName: "eth0"}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if exists(ipamRecord(h, ips["gone"])) || exists(filepath.Join(h.DataDir, "gone")) {
		t.Errorf("GC left the stale pod's address %s or saved configuration", ips["gone"])
	}
	if !exists(ipamRecord(h, ips["live"])) || !exists(filepath.Join(h.DataDir, "live")) {
		t.Errorf("GC removed the live pod's address %s or saved configuration", ips["live"])
	}
}
