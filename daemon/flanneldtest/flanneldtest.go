// Package flanneldtest runs real flanneld processes against a real API
// server, all inside network namespaces it creates: an underlay namespace
// with a bridge (172.18.0.1/16) that also hosts etcd and kube-apiserver, and
// one namespace per node with eth0 on that bridge. The flanneld end-to-end
// test and the scale benchmark use it; the full kubelet lab is elsewhere.
package flanneldtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/netns"
)

// GatewayIP is the underlay bridge's address, where the API server listens.
const GatewayIP = "172.18.0.1"

// OtherGatewayIP is the bridge's address on a second subnet, 172.20.0.0/16,
// routed to the first: nodes there are one router hop away.
const OtherGatewayIP = "172.20.0.1"

// Env is a running control plane with an underlay.
type Env struct {
	// Dir holds the control plane's files, node files and logs.
	Dir    string
	Prefix string
	// UnderNS is the underlay namespace's path.
	UnderNS string
	CP      *controlplane.ControlPlane
	Client  kubernetes.Interface
	// Flanneld is the flanneld binary.
	Flanneld string

	nodes []*Node
}

// Node is one node namespace.
type Node struct {
	env  *Env
	Name string
	IP   net.IP
	// NS is the namespace's path; NSName its name in /run/netns.
	NS, NSName string
	Dir        string
	procs      []*exec.Cmd
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
	if e.UnderNS, err = netns.Create(prefix + "-under"); err != nil {
		return nil, err
	}
	err = netns.Do(e.UnderNS, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("creating br0: %w", err)
		}
		for _, a := range []string{GatewayIP + "/16", OtherGatewayIP + "/16"} {
			addr, _ := netlink.ParseAddr(a)
			if err := netlink.AddrAdd(br, addr); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("setting up the underlay: %w", err)
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

// AddNode creates a node namespace called name with eth0 = ip/16 on the
// underlay and a default route via the bridge: 172.18.0.1 for addresses in
// 172.18.0.0/16, else 172.20.0.1.
func (e *Env) AddNode(name, ip string) (*Node, error) {
	gw := GatewayIP
	if !strings.HasPrefix(ip, "172.18.") {
		gw = OtherGatewayIP
	}
	n := &Node{env: e, Name: name, IP: net.ParseIP(ip).To4(), NSName: e.Prefix + "-" + name, Dir: filepath.Join(e.Dir, name)}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if n.NS, err = netns.Create(n.NSName); err != nil {
		return nil, err
	}
	e.nodes = append(e.nodes, n)
	host := "v" + strconv.Itoa(len(e.nodes)) + "-" + e.Prefix
	if len(host) > 15 {
		host = host[:15]
	}
	err = netns.Do(e.UnderNS, func() error {
		nsFile, err := os.Open(n.NS)
		if err != nil {
			return err
		}
		defer nsFile.Close()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(nsFile.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth: %w", err)
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName(host)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		return nil, err
	}
	err = netns.Do(n.NS, func() error {
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if name == "eth0" {
				addr, _ := netlink.ParseAddr(ip + "/16")
				if err := netlink.AddrAdd(l, addr); err != nil {
					return err
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)})
	})
	if err != nil {
		return nil, fmt.Errorf("setting up node %s: %w", name, err)
	}
	return n, nil
}

// SubnetFile is where the node's flanneld writes subnet.env.
func (n *Node) SubnetFile() string { return filepath.Join(n.Dir, "subnet.env") }

// NetConfFile is the node's net-conf.json.
func (n *Node) NetConfFile() string { return filepath.Join(n.Dir, "net-conf.json") }

// LogFile receives the node's flanneld output.
func (n *Node) LogFile() string { return filepath.Join(n.Dir, "flanneld.log") }

// ContainerCaps are the capabilities flanneld has in the DaemonSet: the
// container runtime's default set plus the manifest's NET_ADMIN and NET_RAW.
// Notably absent: SYS_ADMIN (no setns, no mounts) and SYS_MODULE.
const ContainerCaps = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap,+net_admin"

// StartFlanneld writes netConf and starts flanneld in the node's namespace
// with the admin kubeconfig and only the capabilities it has in the
// DaemonSet (ContainerCaps); extra flags are appended.
func (n *Node) StartFlanneld(netConf string, extra ...string) (*exec.Cmd, error) {
	if err := os.WriteFile(n.NetConfFile(), []byte(netConf), 0o644); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(n.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	args := append([]string{"--net=" + n.NS, "--",
		"setpriv", "--inh-caps=-all", "--bounding-set=" + ContainerCaps, "--", n.env.Flanneld,
		"--kube-subnet-mgr", "--kubeconfig-file=" + n.env.CP.Kubeconfig,
		"--net-config-path=" + n.NetConfFile(), "--subnet-file=" + n.SubnetFile()}, extra...)
	// nsenter and setpriv exec in place: cmd's PID is flanneld's.
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(os.Environ(), "NODE_NAME="+n.Name)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting flanneld on %s: %w", n.Name, err)
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
func (n *Node) Exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.NSName}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// Close stops every flanneld, the control plane, and removes the namespaces.
func (e *Env) Close() error {
	var errs []error
	for _, n := range e.nodes {
		for _, p := range n.procs {
			_ = Stop(p)
		}
		if err := netns.Delete(n.NSName); err != nil {
			errs = append(errs, err)
		}
	}
	if e.CP != nil {
		if err := e.CP.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.UnderNS != "" {
		if err := netns.Delete(e.Prefix + "-under"); err != nil {
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
