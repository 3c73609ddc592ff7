// Package testenv is Twill's test environment. This package runs real
// flanneld processes against a real API server, all inside network
// namespaces it creates: an underlay namespace with a bridge
// (172.18.0.1/16) that also hosts etcd and kube-apiserver, and one
// namespace per node with eth0 on that bridge. The flanneld end-to-end test
// and the scale benchmark use it.
//
// Its subpackages are the parts, shared with the other tests and the lab
// (`twill lab`, a full kubelet cluster): netns (namespaces), underlay
// (bridges and veths), controlplane with pki, proc and k8sbin (etcd and the
// Kubernetes control plane), kubeproxy (kube-proxy's configuration),
// cnihost (the CNI plugin run as a runtime runs it), and simnodes
// (simulated peer Nodes).
package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/underlay"
)

// GatewayIP is the underlay bridge's address, where the API server listens.
const GatewayIP = "172.18.0.1"

// OtherGatewayIP is the bridge's address on a second subnet, 172.20.0.0/16,
// routed to the first: nodes there are one router hop away.
const OtherGatewayIP = "172.20.0.1"

// GatewayIPv6 is the bridge's IPv6 address, on fc00:f853:ccd:e793::/64
// (kind's), for dual-stack nodes.
const GatewayIPv6 = "fc00:f853:ccd:e793::1"

// subnets are the underlay's subnets, each with its gateway on the bridge.
var subnets = []struct{ cidr, gw string }{
	{"172.18.0.0/16", GatewayIP},
	{"172.20.0.0/16", OtherGatewayIP},
	{"fc00:f853:ccd:e793::/64", GatewayIPv6},
}

// Env is a running control plane with an underlay.
type Env struct {
	// Dir holds the control plane's files, node files and logs.
	Dir string
	// Prefix begins the name of every namespace the Env makes.
	Prefix string
	// UnderNS is the underlay namespace's path.
	UnderNS string
	// CP is the control plane, running in the underlay namespace.
	CP *controlplane.ControlPlane
	// Client is an admin client of CP's API server.
	Client kubernetes.Interface
	// Flanneld is the flanneld binary.
	Flanneld string

	under *netns.NS
	nodes []*Node
}

// Node is one node namespace.
type Node struct {
	env  *Env
	Name string
	IP   net.IP
	// NS is the namespace's path; NSName its name in /run/netns.
	NS, NSName string
	// Dir holds the node's files and flanneld's log.
	Dir string
	// MountNS, when set, is a mount namespace file (e.g.
	// /proc/PID/ns/mnt) that flanneld processes started from then on run
	// in: a test's private mounts (a read-only or full tmpfs) that the
	// host does not see.
	MountNS string
	net     *netns.NS
	procs   []*exec.Cmd
}

// Start creates the underlay and the control plane. prefix names the
// namespaces (prefix-under, prefix-<node>) and must be unique on the host.
func Start(ctx context.Context, dir, prefix, flanneld string) (env *Env, err error) {
	e := &Env{Dir: dir, Prefix: prefix, Flanneld: flanneld}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.under, err = netns.Make(prefix + "-under"); err != nil {
		return nil, err
	}
	e.UnderNS = e.under.Path()
	if err := underlay.Bridge(e.UnderNS, "br0", GatewayIP+"/16", OtherGatewayIP+"/16", GatewayIPv6+"/64"); err != nil {
		return nil, fmt.Errorf("setting up the underlay: %w", err)
	}
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := netns.SetSysctl(e.UnderNS, key, "1"); err != nil {
			return nil, fmt.Errorf("setting up the underlay: %w", err)
		}
	}
	e.CP, err = controlplane.Start(ctx, controlplane.Options{
		Dir: filepath.Join(dir, "cp"), NetNS: e.UnderNS, AdvertiseIP: net.ParseIP(GatewayIP),
	})
	if err != nil {
		return nil, err
	}
	cfg, err := e.CP.RESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return e, nil
}

// AddNode creates a node namespace called name with eth0 on the underlay
// holding ip and the addresses more (of any family), each with the length
// of its underlay subnet and a default route via that subnet's gateway:
// 172.18.0.1 for 172.18.0.0/16, 172.20.0.1 for 172.20.0.0/16, GatewayIPv6
// for fc00:f853:ccd:e793::/64.
func (e *Env) AddNode(name, ip string, more ...string) (*Node, error) {
	var addrs, gws []string
	for _, a := range append([]string{ip}, more...) {
		found := false
		for _, s := range subnets {
			if _, sub, _ := net.ParseCIDR(s.cidr); sub.Contains(net.ParseIP(a)) {
				ones, _ := sub.Mask.Size()
				addrs, gws = append(addrs, fmt.Sprintf("%s/%d", a, ones)), append(gws, s.gw)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("node %s: %s is on none of the underlay's subnets", name, a)
		}
	}
	n := &Node{env: e, Name: name, IP: net.ParseIP(ip), NSName: e.Prefix + "-" + name, Dir: filepath.Join(e.Dir, name)}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if n.net, err = netns.Make(n.NSName); err != nil {
		return nil, err
	}
	n.NS = n.net.Path()
	e.nodes = append(e.nodes, n)
	host := "v" + strconv.Itoa(len(e.nodes)) + "-" + e.Prefix
	if len(host) > 15 {
		host = host[:15]
	}
	if err := underlay.Attach(e.UnderNS, "br0", host, n.NS, addrs, gws); err != nil {
		return nil, fmt.Errorf("setting up node %s: %w", name, err)
	}
	return n, nil
}

// Net is the node's network namespace, with a netlink handle bound to it.
func (n *Node) Net() *netns.NS { return n.net }

// SubnetFile is where the node's flanneld writes subnet.env.
func (n *Node) SubnetFile() string { return filepath.Join(n.Dir, "subnet.env") }

// NetConfFile is the node's net-conf.json.
func (n *Node) NetConfFile() string { return filepath.Join(n.Dir, "net-conf.json") }

// LogFile receives the node's flanneld output.
func (n *Node) LogFile() string { return filepath.Join(n.Dir, "flanneld.log") }

// ContainerCaps are the capabilities flanneld has in the DaemonSet, whose
// container drops every capability and adds back NET_ADMIN (netlink,
// iptables over nf_tables, /proc/sys/net) and NET_RAW (iptables' legacy
// back-end). Notably absent: the runtime's default set (no DAC override,
// no chown), SYS_ADMIN (no setns, no mounts) and SYS_MODULE.
const ContainerCaps = "-all,+net_admin,+net_raw"

// StartFlanneld writes netConf and starts flanneld in the node's namespace
// with the admin kubeconfig, only the capabilities it has in the DaemonSet
// (ContainerCaps) and no way to gain more (no_new_privs, as
// allowPrivilegeEscalation: false); extra flags are appended, and a flag
// given again there wins (e.g. --subnet-file).
func (n *Node) StartFlanneld(netConf string, extra ...string) (*exec.Cmd, error) {
	return n.StartFlanneldWith(ContainerCaps, nil, netConf, extra...)
}

// StartFlanneldWith is StartFlanneld with the capability bounding set caps
// (setpriv's syntax) and env added to flanneld's environment.
func (n *Node) StartFlanneldWith(caps string, env []string, netConf string, extra ...string) (*exec.Cmd, error) {
	if err := os.WriteFile(n.NetConfFile(), []byte(netConf), 0o644); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(n.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	ns := []string{"--net=" + n.NS}
	if n.MountNS != "" {
		ns = append(ns, "--mount="+n.MountNS)
	}
	args := append(append(ns, "--",
		"setpriv", "--inh-caps=-all", "--bounding-set="+caps, "--no-new-privs", "--", n.env.Flanneld,
		"--kube-subnet-mgr", "--kubeconfig-file="+n.env.CP.Kubeconfig,
		"--net-config-path="+n.NetConfFile(), "--subnet-file="+n.SubnetFile()), extra...)
	// nsenter and setpriv exec in place: cmd's PID is flanneld's.
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(append(os.Environ(), "NODE_NAME="+n.Name), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startSteady(cmd); err != nil {
		return nil, fmt.Errorf("starting flanneld on %s: %w", n.Name, err)
	}
	n.procs = append(n.procs, cmd)
	return cmd, nil
}

// ProcessLog is where the process that StartProcess started as name logs.
func (n *Node) ProcessLog(name string) string { return filepath.Join(n.Dir, name+".log") }

// StartProcess starts path with args in the node's network namespace, as
// root with every capability (kube-proxy, say), its output appended to
// ProcessLog(name). It dies with the test binary, and Close stops it if it
// still runs.
func (n *Node) StartProcess(name, path string, args ...string) (*exec.Cmd, error) {
	log, err := os.OpenFile(n.ProcessLog(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	// nsenter execs in place: cmd's PID is the process's.
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NS, "--", path}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startSteady(cmd); err != nil {
		return nil, fmt.Errorf("starting %s on %s: %w", name, n.Name, err)
	}
	n.procs = append(n.procs, cmd)
	return cmd, nil
}

// Stop sends SIGTERM to cmd and waits up to 10 s, then kills it.
func Stop(cmd *exec.Cmd) error {
	if cmd.ProcessState != nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return <-done
	}
}

// Exec runs a command in the node's namespace and returns its output.
func (n *Node) Exec(args ...string) (string, error) { return n.net.Exec(args...) }

// Close stops every flanneld, the control plane, and removes the namespaces.
func (e *Env) Close() error {
	var errs []error
	for _, n := range e.nodes {
		for _, p := range n.procs {
			_ = Stop(p)
		}
		if err := n.net.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.CP != nil {
		if err := e.CP.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.under != nil {
		if err := e.under.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Running reports whether cmd's process still runs (not exited, not a zombie).
func Running(cmd *exec.Cmd) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// HealthPort is the health port the tests start flanneld with
// (--healthz-port).
const HealthPort = 10268

// Ready asks the node's flanneld, on HealthPort, whether it is ready: nil
// when /readyz answers 200, else an error with the answer's status and
// body (which says why not).
func (n *Node) Ready() error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netns.DialContext(n.NS)}}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/readyz", n.IP, HealthPort))
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s's readyz: %s: %s", n.Name, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
