package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twill-net/twill/backend/builtin"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/doctor"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall/iptables"
	"github.com/twill-net/twill/firewall/nftables"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/version"
)

const doctorUsage = `Usage: flanneld doctor [flags]

Checks this node's Twill networking and names every fault it finds, with
what to do. It changes nothing. Run it on the node, or in flanneld's pod:

  kubectl -n kube-flannel exec ds/kube-flannel-ds -- flanneld doctor

It takes the flags of the flanneld running on this node (found in /proc),
so it judges by the daemon's configuration; flanneld's flags given here
override them. Exit status: 0 when no check failed, 1 when one did, 2 for
bad usage.

Doctor's own flags:
`

// doctorFlags are doctor's own flags; flanneld's are taken as well.
type doctorFlags struct {
	json         bool
	colour       string
	node         string
	cniConfDir   string
	cniBinDir    string
	procSys      string
	probe        bool
	probePort    int
	probeTimeout time.Duration
}

func (d *doctorFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&d.json, "json", false, "print the report as JSON")
	fs.StringVar(&d.colour, "color", "auto", "colour the report: auto (on a terminal), always, never")
	fs.StringVar(&d.node, "node", "", "the Kubernetes node this is (default: NODE_NAME, the running flanneld's NODE_NAME, the hostname)")
	fs.StringVar(&d.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "the container runtime's CNI configuration directory")
	fs.StringVar(&d.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "the container runtime's CNI plugin directory")
	fs.StringVar(&d.procSys, "proc-sys", "/proc/sys", "where the kernel settings are read")
	fs.BoolVar(&d.probe, "probe", true, "ping every peer over the overlay and open TCP connections to a few")
	fs.IntVar(&d.probePort, "probe-port", 0, "TCP port probed on peers (default: the running flanneld's --healthz-port, else 10268); closed ports answer too")
	fs.DurationVar(&d.probeTimeout, "probe-timeout", 5*time.Second, "how long all probes may take together")
}

// doctorArgs merges the running daemon's flags with the ones given: the
// given ones win. set names the flanneld flags given.
func doctorArgs(daemonArgs, args []string, stderr io.Writer) (f *flags, d *doctorFlags, set map[string]bool, err error) {
	given := &flags{}
	d = &doctorFlags{}
	fs := flag.NewFlagSet("flanneld doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	given.register(fs)
	d.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, doctorUsage)
		ds := flag.NewFlagSet("", flag.ContinueOnError)
		ds.SetOutput(stderr)
		(&doctorFlags{}).register(ds)
		ds.PrintDefaults()
		fmt.Fprintln(stderr, "\nand flanneld's flags (flanneld --help).")
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	f = &flags{}
	base := flag.NewFlagSet("flanneld", flag.ContinueOnError)
	base.SetOutput(io.Discard)
	f.register(base)
	if err := base.Parse(daemonArgs); err != nil {
		fmt.Fprintf(stderr, "flanneld doctor: the running flanneld's flags do not parse (%v); using the defaults\n", err)
		f = &flags{}
		base = flag.NewFlagSet("flanneld", flag.ContinueOnError)
		base.SetOutput(io.Discard)
		f.register(base)
	}
	set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) {
		if base.Lookup(fl.Name) == nil {
			return
		}
		set[fl.Name] = true
		switch fl.Name {
		case "iface":
			f.ifaces = given.ifaces
		case "iface-regex":
			f.ifaceRegexes = given.ifaceRegexes
		default:
			_ = base.Set(fl.Name, fl.Value.String())
		}
	})
	return f, d, set, nil
}

// runDoctor is `flanneld doctor`: it returns the exit status.
func runDoctor(args []string, stdout, stderr io.Writer) int {
	daemon, err := doctor.FindDaemon("/proc")
	if err != nil {
		fmt.Fprintf(stderr, "flanneld doctor: looking for the running flanneld: %v\n", err)
	}
	var daemonArgs []string
	if daemon != nil {
		daemonArgs = daemon.Args
	}
	f, d, set, err := doctorArgs(daemonArgs, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "flanneld doctor:", err)
		return 2
	}
	if d.colour != "auto" && d.colour != "always" && d.colour != "never" {
		fmt.Fprintf(stderr, "flanneld doctor: --color %q: want auto, always or never\n", d.colour)
		return 2
	}
	// Paths the daemon named are in its mount namespace.
	path := func(name, p string) string {
		if set[name] {
			return p
		}
		return daemon.Path(p)
	}
	o := doctor.Options{
		Version: version.Version, Backends: builtin.Registry(),
		ConfigPath: path("net-config-path", f.netConfPath), SubnetFile: path("subnet-file", f.subnetFile),
		CNIConfDir: d.cniConfDir, CNIBinDir: d.cniBinDir, ProcSys: d.procSys,
		ProbeTimeout: d.probeTimeout, Daemon: daemon,
	}
	if f.cniConfSrc != "" {
		o.CNIConfSrc = path("cni-conf-src", f.cniConfSrc)
	}
	dest := "10-flannel.conflist"
	if f.cniConfDest != "" {
		dest = filepath.Base(f.cniConfDest)
	}
	o.CNIConf = filepath.Join(d.cniConfDir, dest)
	o.NodeName = d.node
	if o.NodeName == "" {
		o.NodeName = os.Getenv("NODE_NAME")
	}
	if o.NodeName == "" && daemon != nil {
		o.NodeName = daemon.Env["NODE_NAME"]
	}
	if o.NodeName == "" {
		o.NodeName, _ = os.Hostname()
	}
	o.Config, o.ConfigErr = netconf.ReadFile(o.ConfigPath)
	if o.Annotations, err = kube.NewAnnotations(f.prefix); err != nil {
		fmt.Fprintln(stderr, "flanneld doctor:", err)
		return 2
	}
	if daemon != nil || set["ip-masq"] {
		o.IPMasq = &f.ipMasq
	}
	if ips, err := publicIPFlags(f); err == nil {
		o.PublicIPs = ips
	}
	if f.kubeconfig != "" && !set["kubeconfig-file"] {
		f.kubeconfig = daemon.Path(f.kubeconfig)
	}
	if rc, err := restConfig(f); err != nil {
		o.APIErr = err
	} else {
		rc.Timeout = 15 * time.Second
		rc.UserAgent = "twill-doctor/" + version.Version
		if o.API, err = kube.NewRESTAPI(rc); err != nil {
			o.APIErr = err
		}
	}
	k, err := kernel.NewNetlink()
	if err != nil {
		fmt.Fprintln(stderr, "flanneld doctor:", err)
		return 1
	}
	defer k.Close()
	o.Kernel, o.Router = k, k
	opts := iface.Options{Ifaces: f.ifaces, Regexes: f.ifaceRegexes, CanReach: f.ifaceCanReach}
	o.ChooseIface = func(fams []family.Family) (*iface.Choice, error) { return iface.Choose(opts, fams) }
	o.Firewall = func(fam family.Family) (doctor.RuleChecker, error) {
		if o.Config != nil && o.Config.EnableNFTables {
			return nftables.New(fam)
		}
		return iptables.New(fam)
	}
	o.TunnelGuard = f.vxlanGuard
	if d.probe {
		o.Prober = doctor.NetProber{}
		o.ProbePort = d.probePort
		if o.ProbePort == 0 {
			o.ProbePort = 10268
			if daemon != nil && f.healthzPort != 0 {
				o.ProbePort = f.healthzPort
			}
		}
	}
	if daemon != nil && f.healthzPort != 0 {
		o.DaemonReady = readyProbe(f)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r := doctor.Run(ctx, o)
	if d.json {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout, d.colour == "always" || (d.colour == "auto" && colourful(stdout)))
	}
	if err != nil {
		fmt.Fprintln(stderr, "flanneld doctor:", err)
		return 1
	}
	if r.Failed() {
		return 1
	}
	return 0
}

// readyProbe asks the running flanneld's /readyz.
func readyProbe(f *flags) func(ctx context.Context) error {
	host := f.healthzIP
	if ip, err := netip.ParseAddr(host); err != nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, fmt.Sprint(f.healthzPort)) + "/readyz"
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w (is it stopped or stuck?)", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			// The body says why not (subnet.env not written, …): keep it whole.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// colourful reports whether w is a terminal that takes colour.
func colourful(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	file, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
