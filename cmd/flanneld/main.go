// Command flanneld is Twill's node daemon: it leases the node's pod subnet
// from the Kubernetes API, connects it to every other node's over VXLAN (or
// host-gw), writes /run/flannel/subnet.env for the CNI plugin and keeps the
// iptables (or nftables) rules pod traffic needs. Flags and files are
// flannel's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/connrotation"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/daemon"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/firewall/iptables"
	"github.com/twill-net/twill/firewall/nftables"
	"github.com/twill-net/twill/health"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/metrics/prom"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/subnetenv"
	"github.com/twill-net/twill/version"
)

// The daemon says why it is not ready, in /readyz's answer.
var _ health.Explainer = (*daemon.Daemon)(nil)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT is
// set: 24 MiB for one IP family, 8 MiB more for each further one, whose
// plane keeps as many entries again (a limit near the live heap would have
// the GC run back to back).
func memoryLimit(families int) int64 { return 24<<20 + int64(max(families, 1)-1)*(8<<20) }

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type flags struct {
	kubeSubnetMgr  bool
	kubeconfig     string
	apiServer      string
	netConfPath    string
	subnetFile     string
	ifaces         listFlag
	ifaceRegexes   listFlag
	ifaceCanReach  string
	publicIP       string
	publicIPv6     string
	prefix         string
	ipMasq         bool
	healthzIP      string
	healthzPort    int
	logJSON        bool
	logLevel       string
	showVersion    bool
	cniConfSrc     string
	cniConfDest    string
	iptablesResync time.Duration
	resync         time.Duration
	removeIPTables bool
	vxlanGuard     bool
	cpuProfile     string
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("flanneld", flag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, f.validate()
}

// register defines flanneld's flags on fs, to be parsed into f.
func (f *flags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.kubeSubnetMgr, "kube-subnet-mgr", false, "lease subnets from the Kubernetes API (node.spec.podCIDR); the only mode Twill has")
	fs.StringVar(&f.kubeconfig, "kubeconfig-file", "", "kubeconfig to reach the API server (default: in-cluster config)")
	fs.StringVar(&f.apiServer, "kube-api-url", "", "API server URL, overriding the kubeconfig's")
	fs.StringVar(&f.netConfPath, "net-config-path", netconf.DefaultPath, "path of net-conf.json")
	fs.StringVar(&f.subnetFile, "subnet-file", subnetenv.DefaultPath, "where to write subnet.env for the CNI plugin")
	fs.Var(&f.ifaces, "iface", "interface name or IP to use for inter-node traffic (repeatable; first that exists wins)")
	fs.Var(&f.ifaceRegexes, "iface-regex", "regular expression matching the interface name or IP (repeatable)")
	fs.StringVar(&f.ifaceCanReach, "iface-can-reach", "", "use the interface of the route to this IP")
	fs.StringVar(&f.publicIP, "public-ip", "", "IPv4 address to publish to other nodes (default: the interface's)")
	fs.StringVar(&f.publicIPv6, "public-ipv6", "", "IPv6 address to publish to other nodes (default: the interface's)")
	fs.StringVar(&f.prefix, "kube-annotation-prefix", kube.DefaultAnnotationPrefix, "prefix of the node annotations")
	fs.BoolVar(&f.ipMasq, "ip-masq", false, "masquerade pod traffic leaving the cluster network")
	fs.StringVar(&f.healthzIP, "healthz-ip", "0.0.0.0", "address of the /healthz, /readyz and /metrics server")
	fs.IntVar(&f.healthzPort, "healthz-port", 0, "port of the /healthz, /readyz and /metrics server (0: off)")
	fs.BoolVar(&f.logJSON, "log-json", false, "log as JSON")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&f.cniConfSrc, "cni-conf-src", "", "CNI conflist to install once the node is networked (e.g. /etc/kube-flannel/cni-conf.json)")
	fs.StringVar(&f.cniConfDest, "cni-conf-dest", "", "where to install it (e.g. /etc/cni/net.d/10-flannel.conflist)")
	fs.DurationVar(&f.iptablesResync, "iptables-resync", 5*time.Second, "how often the packet-filter rules (iptables or nftables) and the VXLAN guard's set of peers are checked and restored")
	fs.DurationVar(&f.resync, "resync-period", time.Minute, "how often the whole data plane is compared with the desired state")
	fs.BoolVar(&f.removeIPTables, "remove-iptables", false, "remove flanneld's rules, chains and sets (iptables and nftables), then exit")
	fs.BoolVar(&f.vxlanGuard, "vxlan-guard", true, "accept VXLAN packets only from the public IPs of the cluster's nodes (turn off for VTEPs outside Kubernetes)")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a CPU profile to this file until exit (for benchmarks)")
}

// validate checks the flags that go together or have bounds.
func (f *flags) validate() error {
	if (f.cniConfSrc == "") != (f.cniConfDest == "") {
		return errors.New("--cni-conf-src and --cni-conf-dest go together")
	}
	if f.healthzPort < 0 || f.healthzPort > 65535 {
		return fmt.Errorf("--healthz-port %d is not a port", f.healthzPort)
	}
	if f.iptablesResync <= 0 || f.resync <= 0 {
		return errors.New("--iptables-resync and --resync-period must be positive")
	}
	return nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		os.Exit(runDoctor(os.Args[2:], os.Stdout, os.Stderr))
	}
	f, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flanneld:", err)
		os.Exit(2)
	}
	if f.showVersion {
		fmt.Println(version.Version)
		return
	}
	log := logrus.New()
	if f.logJSON {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	if lvl, err := logrus.ParseLevel(f.logLevel); err == nil {
		log.SetLevel(lvl)
	} else {
		fmt.Fprintf(os.Stderr, "flanneld: --log-level %q: %v\n", f.logLevel, err)
		os.Exit(2)
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			log.Fatalf("--cpu-profile: %v", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatalf("--cpu-profile: %v", err)
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	if err := run(f, log); err != nil {
		log.Error(err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(f *flags, log *logrus.Logger) error {
	log.Infof("Twill flanneld %s", version.Version)
	cfg, err := netconf.ReadFile(f.netConfPath)
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		// Decoding the initial node list makes short-lived garbage many
		// times the size of what flanneld keeps; a soft limit has the GC
		// collect it before the heap grows, at a few milliseconds of CPU.
		debug.SetMemoryLimit(memoryLimit(len(cfg.Networks)))
	}
	backends := builtin.Registry()
	chosen, err := backends.Parse(cfg.Backend.Type, cfg.Backend.Raw)
	if err != nil {
		return fmt.Errorf("%s: %w", f.netConfPath, err)
	}
	if f.removeIPTables {
		return removeRules(cfg, log)
	}
	if !f.kubeSubnetMgr {
		return errors.New("--kube-subnet-mgr is required: Twill leases subnets from the Kubernetes API only (there is no etcd mode)")
	}
	ann, err := kube.NewAnnotations(f.prefix)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		log.Warnf("%s: %s", f.netConfPath, w)
	}
	flagIPs, err := publicIPFlags(f)
	if err != nil {
		return err
	}
	mode := "iptables"
	if cfg.EnableNFTables {
		mode = "nftables"
	}
	log.WithFields(logrus.Fields{"firewall": mode, "vxlanGuard": f.vxlanGuard}).Info("packet filter")

	restCfg, err := restConfig(f)
	if err != nil {
		return err
	}
	restCfg.ContentType = "application/vnd.kubernetes.protobuf"
	restCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// Nodes travel between neighbours on a LAN: gzip would cost both ends
	// more CPU than it saves.
	restCfg.DisableCompression = true
	// The paged initial list makes one request per 100 nodes; client-go's
	// default of 5 requests a second would spread 5,000 nodes over 10 s.
	restCfg.QPS, restCfg.Burst = 50, 200
	restCfg.UserAgent = "twill-flanneld/" + version.Version
	// A move of the underlay address leaves the connections to the API
	// server bound to an address the node no longer has, dead until TCP
	// gives up: the daemon closes them all when it follows a move.
	apiConns := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	restCfg.Dial = apiConns.DialContext
	api, err := kube.NewRESTAPI(restCfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	nodeName, err := kube.NodeName(ctx, api, os.Getenv)
	if err != nil {
		return err
	}
	// The node's node-public-ip(v6) annotations, when set, stand for
	// --public-ip(v6), as in flannel.
	pubs := overrideByFamily(flagIPs, kube.StoredPublicIPs(ctx, api, nodeName, ann, log))
	ifaceOpts := iface.Options{Ifaces: f.ifaces, Regexes: f.ifaceRegexes, CanReach: f.ifaceCanReach, PublicIPs: pubs}
	choice, err := iface.Choose(ifaceOpts, cfg.Families())
	if err != nil {
		return err
	}
	// One line for the interface: its IPv6 address on a dual-stack node
	// comes from the interface chosen, not from a reason of its own.
	addrs := make([]string, len(choice.Addrs))
	for i, a := range choice.Addrs {
		addrs[i] = a.Addr.String()
	}
	log.WithFields(logrus.Fields{"iface": choice.Name, "addr": strings.Join(addrs, ","), "mtu": choice.MTU}).Infof("using interface %s because %s", choice.Name, choice.Reason)
	k, err := kernel.NewNetlink()
	if err != nil {
		return err
	}
	defer k.Close()
	kinds := make([]string, len(kernel.Kinds))
	for i, kind := range kernel.Kinds {
		kinds[i] = kind.String()
	}
	rec := prom.New(prom.Options{Version: version.Version, EntryKinds: kinds, Families: cfg.Families()})
	d, err := daemon.New(daemon.Options{
		Config: cfg, Backends: backends, Backend: chosen, API: api, NodeName: nodeName, Annotations: ann, Kernel: k,
		Iface: choice, PublicIPs: pubs, ChooseIface: func() (*iface.Choice, error) { return iface.Choose(ifaceOpts, cfg.Families()) },
		Reconnect: apiConns.CloseAll, Firewall: firewallMaker(cfg), IPMasq: f.ipMasq, TunnelGuard: f.vxlanGuard, SubnetFile: f.subnetFile,
		CNIConfSrc: f.cniConfSrc, CNIConfDest: f.cniConfDest, ProcSys: "/proc/sys",
		Resync: f.resync, RulesResync: f.iptablesResync,
		WatchKernel: kernel.WatchLosses,
		Metrics:     rec,
		Log:         log,
	})
	if err != nil {
		return err
	}
	if f.healthzPort != 0 {
		addr := net.JoinHostPort(f.healthzIP, fmt.Sprint(f.healthzPort))
		mux := http.NewServeMux()
		health.Register(mux, d)
		rec.Register(mux)
		go func() {
			if err := health.Serve(ctx, addr, mux); err != nil {
				log.WithError(err).Error("health server")
			}
		}()
	}
	return d.Run(ctx)
}

// publicIPFlags returns the addresses of --public-ip and --public-ipv6.
func publicIPFlags(f *flags) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fl := range []struct {
		name, value string
		fam         family.Family
	}{{"--public-ip", f.publicIP, family.IPv4}, {"--public-ipv6", f.publicIPv6, family.IPv6}} {
		if fl.value == "" {
			continue
		}
		a, err := family.ParseAddr(fl.fam, fl.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fl.name, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// overrideByFamily returns base with each address of over in place of
// base's address of its family.
func overrideByFamily(base, over []netip.Addr) []netip.Addr {
	out := slices.Clone(base)
	for _, o := range over {
		out = slices.DeleteFunc(out, func(a netip.Addr) bool { return family.Of(a) == family.Of(o) })
		out = append(out, o)
	}
	return out
}

func restConfig(f *flags) (*rest.Config, error) {
	if f.kubeconfig == "" && f.apiServer == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside a pod, pass --kubeconfig-file)", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags(f.apiServer, f.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", f.kubeconfig, err)
	}
	return c, nil
}

// firewallMaker is the firewall net-conf.json selects: nftables with
// EnableNFTables, else iptables. Either removes what the other left, so a
// node moved between them keeps no rule of the old one.
func firewallMaker(cfg *netconf.Config) firewall.Maker {
	if cfg.EnableNFTables {
		return firewall.Replacing(nftables.New, iptables.New)
	}
	return firewall.Replacing(iptables.New, nftables.New)
}

// removeRules removes every family's rules of ours, of both firewalls.
func removeRules(cfg *netconf.Config, log *logrus.Logger) error {
	for _, fam := range cfg.Families() {
		fw, err := firewallMaker(cfg)(fam)
		if err != nil {
			return err
		}
		if err := fw.Remove(); err != nil {
			return fmt.Errorf("removing %s rules: %w", fam, err)
		}
	}
	log.Info("removed flanneld's iptables and nftables rules")
	return nil
}
