package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/compare"
	"github.com/twill-net/twill/lab/conformance"
	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/registry"
	"github.com/twill-net/twill/lab/vpcroutes"
	"github.com/twill-net/twill/status"
)

func runLab(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "up":
		err = labUp(ctx, args[1:])
	case "down":
		err = labDown(ctx, args[1:])
	case "status":
		err = labStatus(ctx, args[1:])
	case "kubectl":
		return labKubectl(ctx, args[1:])
	case "exec":
		return labExec(ctx, args[1:])
	case "doctor":
		return labDoctor(ctx, args[1:])
	case "compare":
		err = labCompare(ctx, args[1:])
	case "trace":
		err = labTrace(ctx, args[1:])
	case "conformance":
		err = labConformance(ctx, args[1:])
	case "registry":
		// Not in the usage: twill lab up runs it on the lab's internet host.
		err = labRegistry(ctx, args[1:])
	case "underlay-routes":
		// Not in the usage: twill lab up --underlay-routes runs it in the
		// lab's underlay namespace.
		err = labUnderlayRoutes(ctx, args[1:])
	default:
		fmt.Fprintf(os.Stderr, "twill lab: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func labUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab up", flag.ContinueOnError)
	var o lab.Options
	fs.StringVar(&o.Name, "name", lab.DefaultName, "lab name; nodes are NAME-control-plane, NAME-worker, NAME-worker2, …")
	fs.IntVar(&o.Nodes, "nodes", 3, "number of nodes, the control plane included")
	fs.StringVar(&o.CNI, "cni", "twill", "twill: apply Documentation/kube-flannel.yml; none: no CNI (nodes stay NotReady)")
	fs.StringVar(&o.Backend, "backend", "vxlan", "backend in the manifest's net-conf.json: vxlan or host-gw")
	fs.BoolVar(&o.DirectRouting, "direct-routing", false, `set "DirectRouting": true in the vxlan backend (peers on a node's own subnet are routed without VXLAN)`)
	fs.IntVar(&o.RoutedNodes, "routed-nodes", 0, "put the last N nodes on a second subnet, 172.19.0.0/16, routed to the others through the underlay")
	fs.BoolVar(&o.UnderlayRoutes, "underlay-routes", false, "the underlay keeps a route to every node's podCIDR via the node, like a VPC route table: the lab's VM ("+"NAME-vm, "+lab.VMIP.String()+") reaches pods directly, and pods reach it unmasqueraded")
	fs.StringVar(&o.IPFamily, "ip-family", lab.IPv4, "the cluster's IP families, as kind's ipFamily: ipv4, ipv6 or dual (underlay, Services, podCIDRs and net-conf.json follow)")
	fs.StringVar(&o.RepoRoot, "repo", "", "Twill checkout (default: found from the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	o.Log = os.Stdout
	start := time.Now()
	c, err := lab.Up(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("\nlab %q is up (%d nodes, IP family %s, CNI %s) in %s\n\n", c.Name, len(c.Nodes), c.Family(), c.CNI, time.Since(start).Round(100*time.Millisecond))
	if err := printStatus(ctx, os.Stdout, c); err != nil {
		return err
	}
	nf := ""
	if c.Name != lab.DefaultName {
		nf = " --name " + c.Name
	}
	kubectl := "twill lab kubectl" + nf
	worker := c.Nodes[len(c.Nodes)-1].Name
	fmt.Printf("\nTry:\n")
	if c.CNI == "none" {
		fmt.Printf("  %s apply -f Documentation/kube-flannel.yml   # nodes stay NotReady and CoreDNS Pending until a CNI runs\n", kubectl)
	}
	fmt.Printf("  %s get nodes -o wide\n", kubectl)
	fmt.Printf("  %s get pod -A -o wide\n", kubectl)
	fmt.Printf("  %s get pod -n kube-system -l k8s-app=kube-dns\n", kubectl)
	fmt.Printf("  %s run tmp --rm -it --image nicolaka/netshoot -- nslookup kubernetes.default   # pulled from the lab's registry\n", kubectl)
	fmt.Printf("  twill lab exec%s %s -- ip -c route\n", nf, worker)
	fmt.Printf("  %s create deployment pods --image=localhost/twill-lab/netshoot:1 --replicas=2 -- sleep infinity\n", kubectl)
	fmt.Printf("  %s get pod -o wide\n", kubectl)
	fmt.Printf("  %s exec deploy/pods -- ping -c 3 <the other pod's IP>\n", kubectl)
	fmt.Printf("  twill lab down%s\n", nf)
	return nil
}

func labCompare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab compare", flag.ContinueOnError)
	o := compare.Options{Log: os.Stdout}
	fs.BoolVar(&o.Quick, "quick", false, "short runs (iperf3 -t 2, 20 pings, no tuning experiments), for tests")
	fs.StringVar(&o.OutDir, "out", "", "directory for report.md and throughput.svg (default ./compare-<timestamp>)")
	fs.StringVar(&o.Name, "name", compare.DefaultName, "name of the labs compare brings up and removes")
	fs.StringVar(&o.IPFamily, "ip-family", lab.IPv4, "the labs' IP families: ipv4, ipv6 or dual (dual adds IPv6 pod → pod rows against the IPv6 underlay)")
	fs.StringVar(&o.RepoRoot, "repo", "", "Twill checkout (default: found from the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.Name == lab.DefaultName {
		return fmt.Errorf("--name %s is the default lab's name; compare removes its lab, so give it another", o.Name)
	}
	// A full run also tries the data-path settings and records the
	// figures in bench/RESULTS.md.
	o.Tune, o.WriteResults = !o.Quick, !o.Quick
	if o.OutDir == "" {
		o.OutDir = "compare-" + time.Now().UTC().Format("20060102-150405")
	}
	r, err := compare.Run(ctx, o)
	if r != nil && len(r.Labs) > 0 {
		fmt.Println()
		if perr := r.PrintTable(os.Stdout); perr != nil {
			return perr
		}
	}
	if err != nil {
		return err
	}
	fmt.Printf("\nreport: %s\nchart:  %s\n", filepath.Join(o.OutDir, "report.md"), filepath.Join(o.OutDir, "throughput.svg"))
	return nil
}

func labDown(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab down", flag.ContinueOnError)
	name := fs.String("name", lab.DefaultName, "lab name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("twill lab needs root: run it with sudo")
	}
	start := time.Now()
	if err := lab.Down(ctx, *name); err != nil {
		return err
	}
	fmt.Printf("lab %q removed (%s)\n", *name, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func labStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab status", flag.ContinueOnError)
	name := fs.String("name", lab.DefaultName, "lab name")
	asJSON := fs.Bool("json", false, "print Twill's view of the lab's cluster as JSON (what twill status prints), without the lab's processes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := lab.Load(*name)
	if err != nil {
		return err
	}
	if *asJSON {
		cs, err := labClusterStatus(ctx, c)
		if err != nil {
			return err
		}
		return cs.WriteJSON(os.Stdout)
	}
	backend := c.Backend
	if c.DirectRouting {
		backend += " (DirectRouting)"
	}
	fmt.Printf("lab %q: %d nodes, IP family %s, CNI %s, backend %s, state in %s\n", c.Name, len(c.Nodes), c.Family(), c.CNI, backend, c.Dir)
	switch {
	case c.RoutedNodes == 1:
		fmt.Println("the last node is on a second subnet, routed to the others through the underlay")
	case c.RoutedNodes > 1:
		fmt.Printf("the last %d nodes are on a second subnet, routed to the others through the underlay\n", c.RoutedNodes)
	}
	if c.UnderlayRoutes {
		fmt.Printf("the underlay routes every node's podCIDR via the node (a VPC route table): the VM %s-vm (%s) reaches pods directly\n", c.Name, lab.VMIP)
	}
	fmt.Printf("cluster DNS: Service kube-system/kube-dns at %s (CoreDNS %s); outside %s, %s resolve to the lab's internet host\n",
		lab.JoinIPs(c.DNSServiceIPs()), images.CoreDNSVersion, lab.ClusterDomain, strings.Join(lab.InternetDomains, ", "))
	if refs, err := c.Images(ctx); err != nil {
		fmt.Printf("images: %v\n", err)
	} else {
		fmt.Printf("images in every node, and in the lab's registry at %s (the nodes' mirror of %s; any other image fails to pull):\n",
			c.RegistryAddr(), strings.Join(registry.Mirrored, ", "))
		for _, r := range refs {
			fmt.Println("  " + r)
		}
	}
	fmt.Println()
	if err := printStatus(ctx, os.Stdout, c); err != nil {
		return err
	}
	if c.CNI != "twill" {
		return nil
	}
	fmt.Println("\nTwill's view of the cluster (twill status):")
	cs, err := labClusterStatus(ctx, c)
	if err != nil {
		return err
	}
	return cs.WriteText(os.Stdout)
}

// labClusterStatus builds Twill's view of the lab's cluster.
func labClusterStatus(ctx context.Context, c *lab.Cluster) (*status.Cluster, error) {
	rc, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return clusterStatus(ctx, rc, status.Options{})
}

// labDoctor runs flanneld doctor on the lab's nodes (all, or the one named)
// and returns 1 when it failed on any.
func labDoctor(ctx context.Context, args []string) int {
	name, args := nameArg(args)
	var doctorArgs []string
	for i, a := range args {
		if a == "--" {
			args, doctorArgs = args[:i], args[i+1:]
			break
		}
	}
	if len(args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: twill lab doctor [--name NAME] [NODE] [-- DOCTOR FLAGS...]")
		return 2
	}
	c, err := lab.Load(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab doctor: %v\n", err)
		return 1
	}
	var nodes []string
	if len(args) == 1 {
		nodes = args
	} else {
		for _, n := range c.Nodes {
			nodes = append(nodes, n.Name)
		}
	}
	worst := 0
	for i, n := range nodes {
		if i > 0 {
			fmt.Println()
		}
		cmd, err := c.DoctorCmd(ctx, n, doctorArgs...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "twill lab doctor: %v\n", err)
			return 1
		}
		if code := runAttached(cmd); code > worst {
			worst = code
		}
	}
	return worst
}

func printStatus(ctx context.Context, w io.Writer, c *lab.Cluster) error {
	st, apiErr := c.Status(ctx)
	if len(st) == 0 {
		return apiErr
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIP\tSTATUS\tPOD CIDR\tDAEMONS")
	for _, s := range st {
		ready := "NotReady"
		if s.Ready {
			ready = "Ready"
		}
		var daemons []string
		for _, d := range []string{"containerd", "kubelet", "kube-proxy"} {
			if !s.Running[d] {
				d += "(stopped)"
			}
			daemons = append(daemons, d)
		}
		cidr := strings.Join(s.PodCIDRs, ",")
		if cidr == "" {
			cidr = "-"
		}
		var ips []string
		for _, ip := range s.Addrs() {
			ips = append(ips, ip.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(ips, ","), ready, cidr, strings.Join(daemons, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, s := range st {
		if s.SubnetEnvText == "" {
			fmt.Fprintf(w, "%s: no /run/flannel/subnet.env yet\n", s.Name)
			continue
		}
		fmt.Fprintf(w, "%s:/run/flannel/subnet.env\n", s.Name)
		for _, line := range strings.Split(strings.TrimSpace(s.SubnetEnvText), "\n") {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
	if apiErr != nil {
		return fmt.Errorf("asking the API server: %w", apiErr)
	}
	return nil
}

// nameArg takes a leading --name NAME / --name=NAME off args.
func nameArg(args []string) (string, []string) {
	if len(args) >= 2 && args[0] == "--name" {
		return args[1], args[2:]
	}
	if len(args) >= 1 && strings.HasPrefix(args[0], "--name=") {
		return strings.TrimPrefix(args[0], "--name="), args[1:]
	}
	return lab.DefaultName, args
}

func labKubectl(ctx context.Context, args []string) int {
	name, args := nameArg(args)
	c, err := lab.Load(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab kubectl: %v\n", err)
		return 1
	}
	cmd, err := c.KubectlCmd(ctx, args...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab kubectl: %v\n", err)
		return 1
	}
	return runAttached(cmd)
}

func labExec(ctx context.Context, args []string) int {
	name, args := nameArg(args)
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: twill lab exec NODE -- CMD...")
		return 2
	}
	nodeName, rest := args[0], args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		rest = []string{"/bin/bash"}
	}
	c, err := lab.Load(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab exec: %v\n", err)
		return 1
	}
	cmd, err := c.ExecCmd(ctx, nodeName, rest...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab exec: %v\n", err)
		return 1
	}
	return runAttached(cmd)
}

// runAttached runs cmd on our stdio and returns its exit code.
func runAttached(cmd *exec.Cmd) int {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill lab: %v\n", err)
		return 1
	}
	return 0
}

// labUnderlayRoutes keeps the routes of the namespace it runs in (the lab's
// underlay) to every Node's podCIDR via the Node until it is stopped.
func labUnderlayRoutes(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab underlay-routes", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "the lab's admin kubeconfig (required)")
	resync := fs.Duration("resync", 30*time.Second, "period of full reconciles")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" {
		return errors.New("--kubeconfig is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", *kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer h.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	return vpcroutes.Run(ctx, cs, vpcroutes.Kernel{H: h}, *resync, os.Stderr)
}

// labRegistry serves the lab's images (lab/registry) until it is stopped;
// twill lab up runs it in the lab's internet namespace.
func labRegistry(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab registry", flag.ContinueOnError)
	listen := fs.String("listen", fmt.Sprintf(":%d", registry.Port), "address to listen on")
	dir := fs.String("dir", "", "directory for the image blobs (required)")
	ready := fs.String("ready", "", "file written once every image is loaded")
	var imgs []registry.Image
	fs.Func("image", "ARCHIVE=REF[,REF...]: a docker-archive and the names it is served under (repeatable)", func(s string) error {
		im, err := registry.ParseImage(s)
		imgs = append(imgs, im)
		return err
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || len(imgs) == 0 {
		return errors.New("--dir and at least one --image are required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	var readyErr error
	err = registry.Serve(ctx, ln, *dir, imgs, os.Stderr, func() {
		if *ready != "" {
			readyErr = os.WriteFile(*ready, []byte("ready\n"), 0o644)
		}
	})
	return errors.Join(err, readyErr)
}

// labConformance runs Kubernetes' network conformance tests on a lab and
// prints (and with --results writes) the summary; failed tests are an error.
func labConformance(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab conformance", flag.ContinueOnError)
	name := fs.String("name", lab.DefaultName, "lab name")
	quick := fs.Bool("quick", false, "only the pod-to-pod granular checks and DNS (what make test runs)")
	focus := fs.String("focus", "", "a regular expression on test names instead (default: every [sig-network] [Conformance] test)")
	results := fs.String("results", "", "write the summary as Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := lab.Load(*name)
	if err != nil {
		return err
	}
	o := conformance.LabOptions{Focus: *focus, Log: os.Stdout}
	if *quick {
		o.Focus = conformance.Quick
	}
	s, err := conformance.RunLab(ctx, c, o)
	if err != nil {
		return err
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil && len(strings.Fields(string(b))) >= 3 {
		load = strings.Join(strings.Fields(string(b))[:3], " / ")
	}
	what := fmt.Sprintf("`twill lab conformance` (what `make conformance` runs, on a fresh lab) on lab %q: %d nodes, IP family %s, backend %s, Kubernetes %s; %s, %d CPUs, load average at the end %s. No test is left out by Twill; a test the suite skips itself is listed with its reason.",
		c.Name, len(c.Nodes), c.Family(), c.Backend, k8sbin.Version, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), load)
	fmt.Println()
	if err := s.Markdown(os.Stdout, what); err != nil {
		return err
	}
	if *results != "" {
		var b strings.Builder
		if err := s.Markdown(&b, what); err != nil {
			return err
		}
		if err := os.WriteFile(*results, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", *results, err)
		}
	}
	if len(s.Failed) > 0 {
		return fmt.Errorf("%d of %d tests failed", len(s.Failed), len(s.Failed)+len(s.Passed))
	}
	return nil
}
