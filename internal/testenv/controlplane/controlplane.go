// Package controlplane runs a Kubernetes control plane (etcd,
// kube-apiserver, and optionally kube-controller-manager and
// kube-scheduler) inside a network namespace, with its own CA, serving and
// client certificates and service-account keys. The lab's control-plane
// node uses it, and so do benchmarks and tests that need a real API server.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/pki"
	"github.com/twill-net/twill/internal/testenv/proc"
)

// Defaults for Options.
const (
	DefaultAdvertiseIP = "172.18.0.2"
	// Port is the API server's secure port.
	Port = 6443
)

// Network is one IP family's ranges of the cluster.
type Network struct {
	// ClusterCIDR is the pod network the controller manager hands node
	// podCIDRs from, NodeMaskSize long each.
	ClusterCIDR  string
	NodeMaskSize int
	// ServiceCIDR is the range of Service ClusterIPs.
	ServiceCIDR string
}

// The ranges of kind's clusters, one per family: IPv4 is the default.
var (
	IPv4 = Network{ClusterCIDR: "10.244.0.0/16", NodeMaskSize: 24, ServiceCIDR: "10.96.0.0/16"}
	IPv6 = Network{ClusterCIDR: "fd00:10:244::/56", NodeMaskSize: 64, ServiceCIDR: "fd00:10:96::/112"}
)

// APIServerServiceIP is the first address of the network's Service range,
// the ClusterIP of the `kubernetes` Service in that family.
func (n Network) APIServerServiceIP() net.IP {
	p, err := netip.ParsePrefix(n.ServiceCIDR)
	if err != nil {
		return nil
	}
	return net.IP(p.Masked().Addr().Next().AsSlice())
}

// joined is the networks' field f, comma-separated, as the Kubernetes
// components take dual-stack ranges.
func joined(nets []Network, f func(Network) string) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = f(n)
	}
	return strings.Join(s, ",")
}

// ClusterCIDRs are the pod networks of nets, e.g. for kube-proxy.
func ClusterCIDRs(nets []Network) []string {
	return strings.Split(joined(nets, func(n Network) string { return n.ClusterCIDR }), ",")
}

// Options configure Start.
type Options struct {
	// Dir holds certificates, etcd's data, logs and PID files; required.
	Dir string
	// NetNS is the network namespace to run in: a path, or a name in
	// /run/netns; required.
	NetNS string
	// MountNS and UTSNS are optional mount and UTS namespace files to run
	// in as well (the lab's control-plane node).
	MountNS, UTSNS string
	// Cgroups are v1 cgroup directories every process joins (optional).
	Cgroups []string
	// AdvertiseIP is the API server's address; it must be reachable in
	// NetNS and must not be a loopback address. Default DefaultAdvertiseIP.
	AdvertiseIP net.IP
	// ExtraSANs are more DNS names for the API server certificate.
	ExtraSANs []string
	// ControllerManager starts kube-controller-manager, allocating node
	// pod CIDRs from the Networks' ClusterCIDRs.
	ControllerManager bool
	// Scheduler starts kube-scheduler.
	Scheduler bool
	// Networks are the cluster's ranges, one per IP family, the primary
	// first (its family is AdvertiseIP's); default [IPv4]. Two make a
	// dual-stack cluster.
	Networks []Network
	// BinDir holds the Kubernetes binaries; default k8sbin.Dir().
	BinDir string
	// Ready bounds the wait for /readyz; default 2 minutes.
	Ready time.Duration
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Dir is Options.Dir.
	Dir string
	// NetNS is the network namespace path it runs in.
	NetNS string
	// Server is the API server URL, e.g. https://172.18.0.2:6443.
	Server string
	// Kubeconfig is the path of an admin kubeconfig (a client certificate
	// in group system:masters); it works from processes in NetNS or in any
	// namespace that routes to AdvertiseIP.
	Kubeconfig string
	// PKIDir holds ca.crt/ca.key and the component certificates.
	PKIDir string
	// CA signs the cluster's certificates; use it for kubelet certificates.
	CA *pki.CA

	// ready bounds each wait for a component's health endpoint.
	ready time.Duration
}

// Component names, also the names of their PID files and logs.
var components = []string{Scheduler, ControllerManager, APIServer, Etcd}

// Start starts the control plane and waits until the API server's /readyz
// answers ok (and, with ControllerManager/Scheduler, their /healthz).
func Start(ctx context.Context, o Options) (*ControlPlane, error) {
	if o.Dir == "" || o.NetNS == "" {
		return nil, errors.New("controlplane: Options.Dir and Options.NetNS are required")
	}
	if !strings.Contains(o.NetNS, "/") {
		o.NetNS = netns.Path(o.NetNS)
	}
	if o.AdvertiseIP == nil {
		o.AdvertiseIP = net.ParseIP(DefaultAdvertiseIP)
	}
	if len(o.Networks) == 0 {
		o.Networks = []Network{IPv4}
	}
	if o.Ready == 0 {
		o.Ready = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.BinDir == "" {
		dir, err := k8sbin.Dir()
		if err != nil {
			return nil, err
		}
		o.BinDir = dir
	}
	etcdBin, err := lookEtcd()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		Dir:        dir,
		NetNS:      o.NetNS,
		Server:     fmt.Sprintf("https://%s", net.JoinHostPort(o.AdvertiseIP.String(), fmt.Sprint(Port))),
		Kubeconfig: filepath.Join(dir, "admin.kubeconfig"),
		PKIDir:     filepath.Join(dir, "pki"),
		ready:      o.Ready,
	}
	if err := cp.writePKI(o); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = cp.Stop()
		}
	}()

	start := func(name, path string, args ...string) error {
		return cp.startSpec(name, proc.Spec{
			Path: path, Args: args,
			NetNS: o.NetNS, MountNS: o.MountNS, UTSNS: o.UTSNS, Cgroups: o.Cgroups,
		})
	}
	p := func(name string) string { return filepath.Join(cp.PKIDir, name) }
	bin := func(name string) string { return filepath.Join(o.BinDir, name) }

	fmt.Fprintf(o.Log, "starting etcd and kube-apiserver (%s)\n", cp.Server)
	if err := start("etcd", etcdBin,
		"--name=lab",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=lab=http://127.0.0.1:2380",
		"--listen-metrics-urls=http://127.0.0.1:2381",
		"--quota-backend-bytes=4294967296",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	bind := "0.0.0.0"
	if o.AdvertiseIP.To4() == nil {
		bind = "::"
	}
	services := joined(o.Networks, func(n Network) string { return n.ServiceCIDR })
	if err := start("kube-apiserver", bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address="+o.AdvertiseIP.String(),
		"--bind-address="+bind,
		fmt.Sprintf("--secure-port=%d", Port),
		"--tls-cert-file="+p("apiserver.crt"),
		"--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		// Node names are not in any DNS: reach kubelets by their address.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range="+services,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		// Without it a stopping API server waits for open watches (every
		// informer's) until its 60 s shutdown timeout; with it, it ends
		// them and exits within seconds, as a clean restart should.
		"--shutdown-watch-termination-grace-period=5s",
	); err != nil {
		return nil, err
	}
	if err := cp.waitHTTP(ctx, "kube-apiserver", cp.Server+"/readyz"); err != nil {
		return nil, err
	}
	if o.ControllerManager {
		clusterCIDRs := joined(o.Networks, func(n Network) string { return n.ClusterCIDR })
		fmt.Fprintf(o.Log, "starting kube-controller-manager (node CIDRs from %s, /%s each)\n", clusterCIDRs,
			joined(o.Networks, func(n Network) string { return fmt.Sprint(n.NodeMaskSize) }))
		kc := filepath.Join(dir, "controller-manager.kubeconfig")
		if err := start("kube-controller-manager", bin("kube-controller-manager"), append([]string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1",
			"--leader-elect=false",
			"--allocate-node-cidrs=true",
			"--cluster-cidr=" + clusterCIDRs,
			"--service-cluster-ip-range=" + services,
			"--service-account-private-key-file=" + p("sa.key"),
			"--root-ca-file=" + p("ca.crt"),
			"--use-service-account-credentials=true",
			"--profiling=false",
		}, nodeMaskFlags(o.Networks)...)...); err != nil {
			return nil, err
		}
	}
	if o.Scheduler {
		fmt.Fprintln(o.Log, "starting kube-scheduler")
		kc := filepath.Join(dir, "scheduler.kubeconfig")
		if err := start("kube-scheduler", bin("kube-scheduler"),
			"--kubeconfig="+kc,
			"--authentication-kubeconfig="+kc,
			"--authorization-kubeconfig="+kc,
			"--bind-address=127.0.0.1",
			"--leader-elect=false",
			"--profiling=false",
		); err != nil {
			return nil, err
		}
	}
	if o.ControllerManager {
		if err := cp.waitHTTP(ctx, "kube-controller-manager", "https://127.0.0.1:10257/healthz"); err != nil {
			return nil, err
		}
	}
	if o.Scheduler {
		if err := cp.waitHTTP(ctx, "kube-scheduler", "https://127.0.0.1:10259/healthz"); err != nil {
			return nil, err
		}
	}
	ok = true
	return cp, nil
}

// nodeMaskFlags are the controller manager's podCIDR lengths: one flag for
// a single family, one per family for dual-stack (where the controller
// manager refuses the plain one).
func nodeMaskFlags(nets []Network) []string {
	if len(nets) == 1 {
		return []string{fmt.Sprintf("--node-cidr-mask-size=%d", nets[0].NodeMaskSize)}
	}
	var out []string
	for _, n := range nets {
		f := "ipv4"
		if ip := n.APIServerServiceIP(); ip != nil && ip.To4() == nil {
			f = "ipv6"
		}
		out = append(out, fmt.Sprintf("--node-cidr-mask-size-%s=%d", f, n.NodeMaskSize))
	}
	return out
}

// Stop stops the control plane's processes (scheduler, controller manager,
// API server, etcd, in that order). Its files stay in Dir.
func (cp *ControlPlane) Stop() error { return StopDir(cp.Dir) }

// StopDir stops a control plane from its Dir, e.g. one started by another
// process. Components not running are skipped.
func StopDir(dir string) error {
	var errs []error
	for _, c := range components {
		if err := proc.StopFile(filepath.Join(dir, "run", c+".pid"), 15*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

// RESTConfig returns an admin client configuration whose connections are
// made from inside the control plane's network namespace, so it works from
// the host.
func (cp *ControlPlane) RESTConfig() (*rest.Config, error) {
	return RESTConfig(cp.Kubeconfig, cp.NetNS)
}

// KubectlCmd returns kubectl with args, run in the control plane's network
// namespace (through nsenter) with kubeconfig, or with the admin's when
// kubeconfig is empty.
func (cp *ControlPlane) KubectlCmd(ctx context.Context, kubeconfig string, args ...string) (*exec.Cmd, error) {
	kubectl, err := k8sbin.Path("kubectl")
	if err != nil {
		return nil, err
	}
	if kubeconfig == "" {
		kubeconfig = cp.Kubeconfig
	}
	argv := append([]string{"--net=" + cp.NetNS, kubectl, "--kubeconfig=" + kubeconfig, "--request-timeout=30s"}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...), nil
}

// RESTConfig loads kubeconfig and makes its connections from inside the
// network namespace at netnsPath.
func RESTConfig(kubeconfig, netnsPath string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Dial = netns.DialContext(netnsPath)
	return cfg, nil
}

// writePKI makes the CA (or reuses one in PKIDir), the certificates, the
// service-account keys and the kubeconfigs.
func (cp *ControlPlane) writePKI(o Options) error {
	dir := cp.PKIDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	ca, err := pki.LoadCA(dir, "ca")
	if err != nil {
		if ca, err = pki.NewCA("twill-lab-ca"); err != nil {
			return err
		}
		if err := ca.WriteCA(dir, "ca"); err != nil {
			return err
		}
	}
	cp.CA = ca
	sans := append([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}, o.ExtraSANs...)
	ips := []net.IP{o.AdvertiseIP, net.ParseIP("127.0.0.1")}
	for _, n := range o.Networks {
		ips = append(ips, n.APIServerServiceIP())
	}
	if err := ca.IssueFiles(dir, "apiserver", pki.Spec{CommonName: "kube-apiserver", DNSNames: sans, IPs: ips, Server: true}); err != nil {
		return err
	}
	if err := ca.IssueFiles(dir, "apiserver-kubelet-client", pki.Spec{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}); err != nil {
		return err
	}
	priv, pub, err := pki.ServiceAccountKeys()
	if err != nil {
		return err
	}
	if err := pki.WritePair(dir, "sa", nil, priv); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "sa.crt"))
	if err := atomicfile.Write(filepath.Join(dir, "sa.pub"), pub, 0o644); err != nil {
		return fmt.Errorf("writing service-account public key: %w", err)
	}
	for _, k := range []struct{ file, cn, org string }{
		{"admin.kubeconfig", "kubernetes-admin", "system:masters"},
		{"controller-manager.kubeconfig", "system:kube-controller-manager", ""},
		{"scheduler.kubeconfig", "system:kube-scheduler", ""},
	} {
		if err := cp.WriteKubeconfig(filepath.Join(cp.Dir, k.file), k.cn, k.org); err != nil {
			return err
		}
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for user (a new client certificate,
// with group org unless empty) talking to this control plane.
func (cp *ControlPlane) WriteKubeconfig(path, user, org string) error {
	s := pki.Spec{CommonName: user, Client: true}
	if org != "" {
		s.Organization = []string{org}
	}
	cert, key, err := cp.CA.Issue(s)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, pki.Kubeconfig(cp.Server, cp.CA.CertPEM, cert, key), 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// waitHTTP polls url from inside the namespace until it answers 200 "ok",
// failing early if the component's process has exited.
func (cp *ControlPlane) waitHTTP(ctx context.Context, name, url string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(cp.PKIDir, "apiserver-kubelet-client.crt"), filepath.Join(cp.PKIDir, "apiserver-kubelet-client.key"))
	if err != nil {
		return fmt.Errorf("loading admin client certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.CA.Cert)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots}
	if name != "kube-apiserver" {
		// Controller manager and scheduler serve self-signed certificates.
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: netns.DialContext(cp.NetNS), TLSClientConfig: tlsConf, DisableKeepAlives: true},
	}
	deadline := time.Now().Add(cp.ready)
	var last string
	for {
		for _, c := range components {
			p, err := proc.Load(filepath.Join(cp.Dir, "run", c+".pid"))
			if err == nil && !p.Alive() {
				return fmt.Errorf("%s exited while waiting for %s; its log %s ends:\n%s", c, name, filepath.Join(cp.Dir, "logs", c+".log"), tail(filepath.Join(cp.Dir, "logs", c+".log"), 15))
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", name, ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (last answer: %s); see %s", name, cp.ready, last, filepath.Join(cp.Dir, "logs", name+".log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lookEtcd finds the etcd named by TWILL_ETCD, else Debian's (package
// etcd-server). Debian 12's etcd 3.4.23 lacks the progress notifications
// kube-apiserver needs to serve watch-lists; TWILL_ETCD can name a newer
// build to measure them.
func lookEtcd() (string, error) {
	if p := os.Getenv("TWILL_ETCD"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			return "", fmt.Errorf("TWILL_ETCD=%s is not an etcd binary: %v", p, err)
		}
		return p, nil
	}
	for _, p := range []string{"/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("etcd not found: install it (as root on Debian/Ubuntu: apt-get install etcd-server, or `make deps`)")
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Load returns the control plane started earlier with Options.Dir dir in
// the network namespace at netnsPath, e.g. by another process.
func Load(dir, netnsPath string) (*ControlPlane, error) {
	pkiDir := filepath.Join(dir, "pki")
	ca, err := pki.LoadCA(pkiDir, "ca")
	if err != nil {
		return nil, fmt.Errorf("loading the control plane in %s: %w", dir, err)
	}
	cfg, err := clientcmd.LoadFromFile(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		return nil, fmt.Errorf("loading the control plane's kubeconfig: %w", err)
	}
	var server string
	for _, cl := range cfg.Clusters {
		server = cl.Server
	}
	return &ControlPlane{Dir: dir, NetNS: netnsPath, Server: server, Kubeconfig: filepath.Join(dir, "admin.kubeconfig"), PKIDir: pkiDir, CA: ca, ready: 2 * time.Minute}, nil
}

// Component names for Restart.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
)

// health is each component's health endpoint, from inside the namespace.
func (cp *ControlPlane) health(component string) (string, error) {
	switch component {
	case Etcd:
		return "http://127.0.0.1:2379/health", nil
	case APIServer:
		return cp.Server + "/readyz", nil
	case ControllerManager:
		return "https://127.0.0.1:10257/healthz", nil
	case Scheduler:
		return "https://127.0.0.1:10259/healthz", nil
	}
	return "", fmt.Errorf("controlplane: no component %q (one of %s)", component, strings.Join(components, ", "))
}

// startSpec starts component from s, with its log and PID file in Dir, and
// records s in Dir/run/<component>.spec.json for Restart.
func (cp *ControlPlane) startSpec(component string, s proc.Spec) error {
	s.Log = filepath.Join(cp.Dir, "logs", component+".log")
	s.PIDFile = filepath.Join(cp.Dir, "run", component+".pid")
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("recording how %s is started: %w", component, err)
	}
	if err := atomicfile.Replace(cp.specFile(component), data, 0o644); err != nil {
		return fmt.Errorf("recording how %s is started: %w", component, err)
	}
	if _, err := proc.Start(s); err != nil {
		return fmt.Errorf("starting %s: %w", component, err)
	}
	return nil
}

func (cp *ControlPlane) specFile(component string) string {
	return filepath.Join(cp.Dir, "run", component+".spec.json")
}

// Restart stops one component and starts it again in place, with the same
// flags, data directory (etcd's) and certificates, then waits until it is
// healthy: StopComponent, then StartComponent. It is how fault tests
// restart etcd or the API server under a running cluster.
func (cp *ControlPlane) Restart(ctx context.Context, component string, sig syscall.Signal) error {
	if err := cp.StopComponent(component, sig); err != nil {
		return fmt.Errorf("restarting %s: %w", component, err)
	}
	if err := cp.StartComponent(ctx, component); err != nil {
		return fmt.Errorf("restarting %s: %w", component, err)
	}
	return nil
}

// StopComponent stops one component and waits until it is gone. sig says
// how: syscall.SIGTERM for a clean stop (SIGKILL after 15 s),
// syscall.SIGKILL for a crash. StartComponent starts it again.
func (cp *ControlPlane) StopComponent(component string, sig syscall.Signal) error {
	s, err := cp.spec(component)
	if err != nil {
		return err
	}
	p, err := proc.Load(s.PIDFile)
	if err != nil {
		return fmt.Errorf("stopping %s: %w", component, err)
	}
	switch sig {
	case syscall.SIGTERM:
		err = p.Stop(15 * time.Second)
	case syscall.SIGKILL:
		if err = p.Kill(); err == nil {
			err = p.Stop(10 * time.Second) // waits until it is gone
		}
	default:
		err = fmt.Errorf("signal %v: want SIGTERM or SIGKILL", sig)
	}
	if err != nil {
		return fmt.Errorf("stopping %s: %w", component, err)
	}
	return nil
}

// StartComponent starts a component that StopComponent stopped, as Start
// first started it, and waits until it is healthy: etcd's /health and
// then the API server's /readyz (which checks etcd) for etcd, the
// component's own endpoint otherwise.
func (cp *ControlPlane) StartComponent(ctx context.Context, component string) error {
	s, err := cp.spec(component)
	if err != nil {
		return err
	}
	if p, err := proc.Load(s.PIDFile); err == nil && p.Alive() {
		return fmt.Errorf("starting %s: it runs already (PID %d)", component, p.PID)
	}
	url, _ := cp.health(component)
	if err := cp.startSpec(component, s); err != nil {
		return err
	}
	if err := cp.waitHTTP(ctx, component, url); err != nil {
		return err
	}
	if component == Etcd {
		if err := cp.waitHTTP(ctx, APIServer, cp.Server+"/readyz"); err != nil {
			return err
		}
	}
	return nil
}

// spec reads how component was started.
func (cp *ControlPlane) spec(component string) (proc.Spec, error) {
	var s proc.Spec
	if _, err := cp.health(component); err != nil {
		return s, err
	}
	data, err := os.ReadFile(cp.specFile(component))
	if err != nil {
		return s, fmt.Errorf("%s: no record of how it was started (was it started by this control plane?): %w", component, err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: reading %s: %w", component, cp.specFile(component), err)
	}
	return s, nil
}
