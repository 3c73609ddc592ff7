package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/controlplane"
	"github.com/twill-net/twill/internal/testenv/k8sbin"
	"github.com/twill-net/twill/internal/testenv/pki"
	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/node"
	"github.com/twill-net/twill/lab/registry"
)

// TwillImageArchive is where hack/image.sh writes Twill's image, relative to
// the repository root.
const TwillImageArchive = "_output/images/twill.tar"

// Up builds what is missing (Kubernetes binaries, images), then creates
// and starts the lab, and waits until every node has registered (and, with
// CNI "twill", until every node is Ready). On failure it removes whatever
// it made.
func Up(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.CNI == "" {
		o.CNI = "twill"
	}
	if o.Backend == "" {
		o.Backend = "vxlan"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.IPFamily == "" {
		o.IPFamily = IPv4
	}
	switch {
	case ipFamilies[o.IPFamily] == nil:
		return nil, fmt.Errorf("--ip-family %q: want ipv4, ipv6 or dual", o.IPFamily)
	case !validName.MatchString(o.Name):
		return nil, fmt.Errorf("lab name %q: use 1-20 lowercase letters, digits and dashes", o.Name)
	case o.Nodes < 1 || o.Nodes > 50:
		return nil, fmt.Errorf("--nodes %d: want 1 to 50", o.Nodes)
	case o.CNI != "twill" && o.CNI != "none":
		return nil, fmt.Errorf("--cni %q: want twill or none", o.CNI)
	case o.Backend != "vxlan" && o.Backend != "host-gw":
		return nil, fmt.Errorf("--backend %q: want vxlan or host-gw", o.Backend)
	case o.DirectRouting && (o.CNI != "twill" || o.Backend != "vxlan"):
		return nil, fmt.Errorf("--direct-routing is a setting of the vxlan backend: use it with --cni twill --backend vxlan")
	case o.RoutedNodes < 0 || o.RoutedNodes >= o.Nodes:
		return nil, fmt.Errorf("--routed-nodes %d: want 0 to %d (the control plane stays on %s)", o.RoutedNodes, o.Nodes-1, flatSegment.subnet(family.IPv4))
	case o.UnderlayRoutes && o.IPFamily != IPv4:
		return nil, fmt.Errorf("--underlay-routes with --ip-family %s: the lab's VPC routes are IPv4 only; use --ip-family ipv4", o.IPFamily)
	case o.RoutedNodes > 0 && o.CNI == "twill" && o.Backend == "host-gw" && !o.UnderlayRoutes:
		return nil, errHostGWRouted
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("twill lab needs root (it creates namespaces, mounts and cgroups): run it with sudo")
	}
	root, err := findRepoRoot(o.RepoRoot)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(o.Log, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}

	if err := ensureHostTools(ctx, root, o.Log); err != nil {
		return nil, err
	}
	binDir, err := k8sbin.Dir()
	if err != nil {
		step("building the Kubernetes binaries (once; 15-20 minutes on 2 cores)")
		if err := runScript(ctx, root, o.Log, "hack/k8s-build.sh"); err != nil {
			return nil, fmt.Errorf("building Kubernetes: %w", err)
		}
		if binDir, err = k8sbin.Dir(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir(o.Name), "cluster.json")); err == nil {
		return nil, fmt.Errorf("lab %q exists already: use it, or remove it with `twill lab down --name %s`", o.Name, o.Name)
	}
	// Leftovers of a crashed Up (no state file yet) go first.
	if err := Down(ctx, o.Name); err != nil {
		return nil, fmt.Errorf("removing leftovers of an earlier lab %q: %w", o.Name, err)
	}

	step("building images (pause, netshoot, CoreDNS) if they changed")
	if err := images.Build(ctx, root, o.Log); err != nil {
		return nil, fmt.Errorf("building the lab images: %w", err)
	}
	corednsBin, err := images.CoreDNSBinary(ctx, root, o.Log)
	if err != nil {
		return nil, err
	}
	archives := make([]string, 0, 3)
	for _, im := range images.All() {
		archives = append(archives, filepath.Join(root, im.Archive))
	}
	twill := filepath.Join(root, TwillImageArchive)
	if o.CNI == "twill" && twillImageStale(root) {
		step("building Twill's image (make image, with buildah)")
		// The lab is Docker-free: a docker CLI without a daemon must not
		// be picked.
		if err := runCmd(ctx, o.Log, []string{"IMAGE_TOOL=buildah"}, "make", "-C", root, "image"); err != nil {
			if _, serr := os.Stat(twill); serr != nil {
				return nil, fmt.Errorf("building Twill's image: %w", err)
			}
			step("WARNING: building Twill's image failed (%v); using the older %s", err, TwillImageArchive)
		}
	}
	if _, err := os.Stat(twill); err == nil {
		archives = append(archives, twill)
	} else if o.CNI == "twill" {
		return nil, fmt.Errorf("the Twill image %s is missing after `make image`", twill)
	}

	c := &Cluster{Name: o.Name, Dir: stateDir(o.Name), RepoRoot: root, CNI: o.CNI, Backend: o.Backend,
		DirectRouting: o.DirectRouting, RoutedNodes: o.RoutedNodes, UnderlayRoutes: o.UnderlayRoutes}
	if o.IPFamily != IPv4 {
		c.IPFamily = o.IPFamily
	}
	fams := c.Families()
	c.Kubeconfig = filepath.Join(c.controlPlaneDir(), "admin.kubeconfig")
	defer func() {
		if err != nil {
			fmt.Fprintf(o.Log, "up failed; removing what it made (logs were in %s)\n", c.Dir)
			if os.Getenv("TWILL_LAB_KEEP") != "" {
				fmt.Fprintln(o.Log, "TWILL_LAB_KEEP is set: leaving the lab for inspection; `twill lab down` removes it")
				_ = c.save()
				return
			}
			if derr := Down(context.WithoutCancel(ctx), o.Name); derr != nil {
				fmt.Fprintf(o.Log, "cleanup: %v\n", derr)
			}
		}
	}()
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", c.Dir, err)
	}
	made, err := node.CreateMountpoints()
	if rerr := recordMountpoints(made); err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	if err := saveHostSysctls(); err != nil {
		return nil, err
	}
	if err := node.PrivateMount(c.nsDir()); err != nil {
		return nil, err
	}

	for _, f := range fams {
		step("creating the underlay (%s, gateway %s, internet %s)", flatSegment.subnet(f), flatSegment.gateway(f).Addr(), InternetAddr(f))
		if o.RoutedNodes > 0 {
			step("the last %d nodes on %s, routed through gateway %s", o.RoutedNodes, routedSegment.subnet(f), routedSegment.gateway(f).Addr())
		}
	}
	if err := createUnderlay(o.Name, fams, o.RoutedNodes > 0); err != nil {
		return nil, err
	}
	if c.Family() != IPv6 {
		if err := createVM(o.Name); err != nil {
			return nil, err
		}
		step("the VM %s (%s) on the underlay: a host that is not a node", vmNS(o.Name), vmAddr)
	}
	inetCgroups, err := node.MakeCgroup(daemonsCgroup(c.Name, "internet"))
	if err != nil {
		return nil, err
	}
	if err := c.startInternetDNS(corednsBin, inetCgroups); err != nil {
		return nil, err
	}
	step("DNS server on the internet host (%s), the nodes' resolver: %s resolve to it, other names are NXDOMAIN; log %s", JoinIPs(c.nameservers()), strings.Join(InternetDomains, ", "), c.InternetDNSLog())
	if err := c.startRegistry(inetCgroups); err != nil {
		return nil, err
	}
	step("image registry on the internet host (%s), the nodes' mirror of %s; log %s", c.RegistryAddr(), strings.Join(registry.Mirrored, ", "), c.RegistryLog())
	for i := 0; i < o.Nodes; i++ {
		n, err := c.createNode(ctx, i, isRouted(i, o.Nodes, o.RoutedNodes))
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		if err := c.save(); err != nil {
			return nil, err
		}
	}
	step("created %d nodes", o.Nodes)

	cpNode := c.node(c.Nodes[0])
	cpCgroups, err := node.MakeCgroup(daemonsCgroup(c.Name, "control-plane"))
	if err != nil {
		return nil, err
	}
	step("starting the control plane on %s", c.Nodes[0].Name)
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Dir:   c.controlPlaneDir(),
		NetNS: cpNode.NetNS, MountNS: cpNode.MountNS, UTSNS: cpNode.UTSNS,
		Cgroups:           cpCgroups,
		AdvertiseIP:       c.Nodes[0].IP,
		ExtraSANs:         []string{c.Nodes[0].Name},
		Networks:          c.networks(),
		ControllerManager: true,
		Scheduler:         true,
		BinDir:            binDir,
		Log:               o.Log,
	})
	if err != nil {
		return nil, err
	}
	step("control plane ready at %s", cp.Server)
	if o.UnderlayRoutes {
		if err := c.startUnderlayRoutes(); err != nil {
			return nil, err
		}
		step("the underlay keeps a route to every node's podCIDR via the node, like a VPC route table; log %s", c.UnderlayRoutesLog())
	}

	step("starting containerd, kubelet and kube-proxy on every node")
	if err := forEach(c.Nodes, func(n Node) error { return c.startNode(ctx, cp, binDir, n, archives) }); err != nil {
		return nil, err
	}
	if err := c.waitRegistered(ctx, c.Nodes); err != nil {
		return nil, err
	}
	if _, err := c.Kubectl(ctx, "label", "--overwrite", "node", c.Nodes[0].Name, "node-role.kubernetes.io/control-plane="); err != nil {
		return nil, err
	}
	step("all %d nodes registered", len(c.Nodes))
	for _, im := range images.All() {
		if len(im.Aliases) > 0 {
			step("image %s also tagged %s in every node", im.Ref, strings.Join(im.Aliases, ", "))
		}
	}

	step("applying the cluster DNS: CoreDNS %s, Service kube-system/kube-dns at %s (Pending until a CNI runs)", images.CoreDNSVersion, JoinIPs(c.DNSServiceIPs()))
	if err := c.applyDNS(ctx); err != nil {
		return nil, err
	}

	if o.CNI == "twill" {
		dr := ""
		if o.DirectRouting {
			dr = ", DirectRouting"
		}
		step("applying Documentation/kube-flannel.yml (backend %s%s)", o.Backend, dr)
		if err := c.ApplyManifest(ctx, o.Backend); err != nil {
			return nil, err
		}
		step("all nodes Ready")
	}
	if err := c.waitRegistry(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	return c, nil
}

// createNode makes node i's network, mount and UTS namespaces, with eth0
// on the flat segment, or with routed on the routed one.
func (c *Cluster) createNode(ctx context.Context, i int, routed bool) (Node, error) {
	seg := flatSegment
	if routed {
		seg = routedSegment
	}
	n := Node{Name: nodeName(c.Name, i), Index: i, Routed: routed}
	for _, f := range c.Families() {
		n.IPs = append(n.IPs, seg.nodeIP(f, i))
	}
	n.IP = n.IPs[0]
	if c.IPFamily == "" {
		n.IPs = nil // the state of an IPv4 lab stays as it was
	}
	path, err := attachNode(c.Name, n.Name, i, seg, c.Families())
	if err != nil {
		return Node{}, err
	}
	n.NetNS = path
	if err := c.node(n).Setup(ctx); err != nil {
		return Node{}, err
	}
	return n, nil
}

// startNode issues the node's certificates and starts its daemons.
func (c *Cluster) startNode(ctx context.Context, cp *controlplane.ControlPlane, binDir string, n Node, archives []string) error {
	nd := c.node(n)
	daemons, err := node.MakeCgroup(daemonsCgroup(c.Name, n.Name))
	if err != nil {
		return err
	}
	if _, err := node.MakeCgroup(podsCgroup(c.Name, n.Name)); err != nil {
		return err
	}
	pkiDir := filepath.Join(nd.Dir, "pki")
	if err := cp.CA.IssueFiles(pkiDir, "kubelet", pki.Spec{CommonName: n.Name, DNSNames: []string{n.Name}, IPs: n.Addrs(), Server: true}); err != nil {
		return err
	}
	kubeletKC := filepath.Join(nd.Dir, "kubelet.kubeconfig")
	if err := cp.WriteKubeconfig(kubeletKC, "system:node:"+n.Name, "system:nodes"); err != nil {
		return err
	}
	proxyKC := filepath.Join(nd.Dir, "kube-proxy.kubeconfig")
	if err := cp.WriteKubeconfig(proxyKC, "system:kube-proxy", ""); err != nil {
		return err
	}
	if err := nd.StartContainerd(ctx, daemons, images.PauseRef); err != nil {
		return err
	}
	if err := nd.ImportImages(ctx, archives...); err != nil {
		return err
	}
	for _, im := range images.All() {
		if err := nd.TagImages(ctx, im.Ref, im.Aliases...); err != nil {
			return err
		}
	}
	if err := nd.StartKubelet(node.KubeletOptions{
		Bin:          filepath.Join(binDir, "kubelet"),
		Kubeconfig:   kubeletKC,
		ClientCAFile: filepath.Join(cp.PKIDir, "ca.crt"),
		CertFile:     filepath.Join(pkiDir, "kubelet.crt"),
		KeyFile:      filepath.Join(pkiDir, "kubelet.key"),
		CgroupRoot:   podsCgroup(c.Name, n.Name),
		Cgroups:      daemons,
		ControlPlane: n.Index == 0,
		// One server, the primary family's, as kind configures it.
		ClusterDNS:    c.DNSServiceIPs()[:1],
		ClusterDomain: ClusterDomain,
	}); err != nil {
		return err
	}
	return nd.StartKubeProxy(filepath.Join(binDir, "kube-proxy"), proxyKC, controlplane.ClusterCIDRs(c.networks()), daemons)
}

// JoinIPs lists ips, comma-separated, for people to read.
func JoinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// networks are the control plane's ranges for the lab's families.
func (c *Cluster) networks() []controlplane.Network {
	var nets []controlplane.Network
	for _, f := range c.Families() {
		nets = append(nets, clusterNetworks[f])
	}
	return nets
}

// clusterNetworks are kind's ranges per family.
var clusterNetworks = map[family.Family]controlplane.Network{family.IPv4: controlplane.IPv4, family.IPv6: controlplane.IPv6}

// waitRegistered waits until every node in nodes exists in the API and has
// a pod CIDR of each of the lab's families.
func (c *Cluster) waitRegistered(ctx context.Context, nodes []Node) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		var missing []string
		if err == nil {
			have := map[string]bool{}
			for _, n := range list.Items {
				have[n.Name] = n.Spec.PodCIDR != "" && len(n.Spec.PodCIDRs) >= len(c.Families())
			}
			for _, n := range nodes {
				if !have[n.Name] {
					missing = append(missing, n.Name)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		for _, n := range nodes {
			if exited := c.node(n).Exited(); exited != nil {
				return exited
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("listing nodes: %w", err)
			}
			return fmt.Errorf("nodes %v did not register (with a pod CIDR) within 3 minutes; see their kubelet logs under %s/nodes", missing, c.Dir)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (c *Cluster) clientset() (*kubernetes.Clientset, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// forEach runs fn for every node concurrently and joins the errors.
func forEach(nodes []Node, fn func(Node) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// findRepoRoot returns dir, or the first directory from the working
// directory upwards holding Twill's go.mod.
func findRepoRoot(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/twill-net/twill\n") {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("not inside a Twill checkout (no go.mod of github.com/twill-net/twill above %s): run twill lab from the repository, or pass --repo", wd)
		}
	}
}

// ensureHostTools runs hack/deps.sh, which checks the host tools listed in
// hack/deps.txt and installs missing ones (apt-get, as root on
// Debian/Ubuntu) or says what to install.
func ensureHostTools(ctx context.Context, root string, log io.Writer) error {
	if err := runScript(ctx, root, log, "hack/deps.sh"); err != nil {
		return fmt.Errorf("host tools: %w", err)
	}
	return nil
}

// twillImageStale reports whether Twill's image archive is missing or
// older than the flanneld binary it should contain.
func twillImageStale(root string) bool {
	img, err := os.Stat(filepath.Join(root, TwillImageArchive))
	if err != nil {
		return true
	}
	bin, err := os.Stat(filepath.Join(root, "bin", "flanneld"))
	return err != nil || bin.ModTime().After(img.ModTime())
}

// runScript runs a script of the repository with bash, its output going to
// log. A failure's error carries the last line the script wrote to stderr,
// which is where our scripts say what went wrong and what to do.
func runScript(ctx context.Context, root string, log io.Writer, script string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, script))
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = log, io.MultiWriter(log, &stderr)
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return fmt.Errorf("%s: %w", script, err)
		}
		return fmt.Errorf("%s: %w: %s", script, err, strings.TrimSpace(msg[strings.LastIndexByte(msg, '\n')+1:]))
	}
	return nil
}

func runCmd(ctx context.Context, log io.Writer, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}
