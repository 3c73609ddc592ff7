// Package daemon is flanneld's control loop. Events from the node informer
// only name a node that may have changed; one worker reads that node's lease
// from the cache and brings the kernel to it. A full reconcile (at start, on
// a timer, and when the kernel lost state such as a deleted device) reads the
// kernel once and fixes every difference. Both are idempotent: a restart
// changes nothing that is already right.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/util/workqueue"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/hostgw"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/backend/vxlan"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/network"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// Options configure the daemon.
type Options struct {
	Config *netconf.Config
	// API reaches the Kubernetes API server.
	API      kube.API
	NodeName string
	// Annotations are the annotation keys (from --kube-annotation-prefix).
	Annotations kube.Annotations
	Kernel      kernel.Kernel
	// Iface is the chosen underlay interface.
	Iface *iface.Choice
	// PublicIP, when set, is published instead of the interface address.
	PublicIP net.IP
	// IPTables, when set, keeps the forward rules, and the masquerade rules
	// when IPMasq is true.
	IPTables network.IPTables
	IPMasq   bool
	// SubnetFile is where subnet.env is written.
	SubnetFile string
	// CNIConfSrc is copied to CNIConfDest after the first full reconcile.
	CNIConfSrc, CNIConfDest string
	// ProcSys is the sysctl root ("/proc/sys"); empty skips the checks.
	ProcSys string
	// Resync is the period of full reconciles; IPTablesResync of rule checks.
	Resync, IPTablesResync time.Duration
	// WatchKernel, when set, starts watching the kernel for lost state and
	// calls lost(nil) for a lost device, lost(dst) for a lost route.
	WatchKernel func(done <-chan struct{}, lost func(dst *net.IPNet)) error
	Log         logrus.FieldLogger
}

// fullKey is the queue key of a full reconcile; node names cannot hold NUL.
const fullKey = "\x00full"

// Daemon runs the loop.
type Daemon struct {
	o       Options
	log     logrus.FieldLogger
	mgr     *kube.Manager
	be      backend.Backend
	table   *backend.Table
	rules   *network.Rules
	chains  []network.Chain
	queue   workqueue.TypedRateLimitingInterface[string]
	own     *lease.Lease
	env     *subnetenv.Env
	ready   atomic.Bool
	started atomic.Bool

	// finishInitial: the first full reconcile finishes the table's full
	// sync that startInitialSync opened, with no second read of the kernel.
	finishInitial bool

	mu          sync.Mutex
	fullRuns    int
	lastFullErr error
}

// New validates options and returns a daemon.
func New(o Options) (*Daemon, error) {
	if o.Config == nil || o.API == nil || o.Kernel == nil || o.Iface == nil || o.NodeName == "" {
		return nil, errors.New("daemon: Config, API, Kernel, Iface and NodeName are required")
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Resync == 0 {
		o.Resync = time.Minute
	}
	if o.IPTablesResync == 0 {
		o.IPTablesResync = 5 * time.Second
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	d := &Daemon{o: o, log: o.Log.WithField("node", o.NodeName)}
	d.mgr = kube.NewManager(o.API, o.NodeName, o.Annotations, d.log)
	return d, nil
}

// Alive reports whether the loop has started (for /healthz).
func (d *Daemon) Alive() bool { return d.started.Load() }

// Ready reports whether the first full reconcile, peers included, is done
// (for /readyz).
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Run sets the node up and keeps it reconciled until ctx ends. On return the
// data plane is left as it is, so pods keep working while flanneld restarts.
func (d *Daemon) Run(ctx context.Context) error {
	d.started.Store(true)
	d.checkSysctls()
	d.withdrawStaleCNIConf()

	node, subnet, err := d.mgr.WaitForNode(ctx, d.o.Config.ContainsSubnet)
	if err != nil {
		if ctx.Err() != nil {
			d.log.Info("stopped before the node had a podCIDR")
			return nil // SIGTERM while waiting is a clean stop
		}
		return err
	}
	pub := d.o.Iface.Addr
	if d.o.PublicIP != nil {
		pub = d.o.PublicIP
	}
	if over, err := d.mgr.OverwriteIP(node); err != nil {
		return err
	} else if over != nil {
		d.log.Infof("publishing %s from the public-ip-overwrite annotation", over)
		pub = over
	}
	d.own = &lease.Lease{Node: d.o.NodeName, Subnet: subnet, PublicIP: pub}
	d.be = d.newBackend(subnet)
	d.be.Publish(d.own)
	d.log.WithFields(logrus.Fields{"subnet": subnet, "publicIP": pub, "backend": d.be.Type(), "mtu": d.be.MTU()}).Info("lease acquired")

	d.table = backend.NewTable(d.o.Kernel, d.o.Config.Network, subnet)
	if _, err := d.be.Setup(); err != nil {
		return fmt.Errorf("setting up the %s backend: %w", d.be.Type(), err)
	}
	if _, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
		return err
	}
	d.env = &subnetenv.Env{
		Network: d.o.Config.Network,
		Subnet:  &net.IPNet{IP: lease.GatewayIP(subnet), Mask: subnet.Mask},
		MTU:     d.be.MTU(),
		IPMasq:  d.o.IPMasq,
	}
	if err := d.writeSubnetEnv(); err != nil {
		return err
	}
	if d.o.IPTables != nil {
		d.rules = network.NewRules(d.o.IPTables)
		d.chains = network.Chains(network.Config{
			Network: d.o.Config.Network, Subnet: subnet, NoMasquerade: d.o.Config.NoMasqueradeCIDRs, Masquerade: d.o.IPMasq,
		}, d.rules.RandomFully())
		if !d.o.IPMasq {
			// --ip-masq off: a masquerade chain of an earlier run must go.
			_ = d.rules.Remove(network.Chains(network.Config{Network: d.o.Config.Network, Subnet: subnet, Masquerade: true}, false)[:1])
		}
		if err := d.ensureRules(); err != nil {
			return err
		}
	}

	d.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodes"})
	defer d.queue.ShutDown()
	defer d.mgr.Shutdown()

	start := time.Now()
	initial, err := d.startInitialSync()
	if err != nil {
		d.log.WithError(err).Warn("programming peers after the whole node list instead")
	}
	var firstPages func([]kube.PeerNode)
	if initial != nil {
		firstPages = func(p []kube.PeerNode) { initial.pages <- p }
	}
	err = d.mgr.Watch(ctx, func(name string) { d.queue.Add(name) }, firstPages)
	if initial != nil {
		if werr := initial.wait(); werr != nil {
			d.log.WithError(werr).Warn("programming peers during the node list; the full reconcile retries")
		} else if err == nil {
			d.finishInitial = true
			d.log.WithField("peers", initial.peers).Debug("peers programmed during the node list")
		}
	}
	if err != nil {
		return err
	}
	d.log.WithField("nodes", len(d.mgr.Names())).Infof("node cache synced in %s", time.Since(start).Round(time.Millisecond))
	if err := d.fullReconcile(ctx); err != nil {
		d.log.WithError(err).Error("first full reconcile")
		d.queue.AddRateLimited(fullKey)
	} else {
		d.becomeReady(ctx)
	}

	if d.o.WatchKernel != nil {
		if err := d.o.WatchKernel(ctx.Done(), d.kernelLost); err != nil {
			d.log.WithError(err).Warn("cannot watch the kernel for deleted routes and devices; relying on the periodic resync")
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d.processNext(ctx) {
		}
	}()
	resync := time.NewTicker(d.o.Resync)
	defer resync.Stop()
	iptResync := time.NewTicker(d.o.IPTablesResync)
	defer iptResync.Stop()
	for {
		select {
		case <-ctx.Done():
			d.queue.ShutDown()
			wg.Wait()
			d.log.Info("stopping; the data plane stays in place")
			return nil
		case <-resync.C:
			d.queue.Add(fullKey)
		case <-iptResync.C:
			if d.rules != nil {
				if err := d.ensureRules(); err != nil {
					d.log.WithError(err).Error("iptables")
				}
			}
		}
	}
}

// kernelLost queues the repair of state the kernel lost: the whole device,
// or one peer's route. Routes Twill itself removed have no owner any more
// and are ignored, so a node leaving costs no full reconcile.
func (d *Daemon) kernelLost(dst *net.IPNet) {
	if dst == nil {
		d.queue.Add(fullKey)
		return
	}
	if name, ok := d.table.RouteOwner(dst); ok {
		d.table.Invalidate(name)
		d.queue.Add(name)
	}
}

func (d *Daemon) newBackend(subnet *net.IPNet) backend.Backend {
	link := &kernel.Link{Index: d.o.Iface.Index, Name: d.o.Iface.Name, MTU: d.o.Iface.MTU}
	b := d.o.Config.Backend
	if b.Type == netconf.BackendHostGW {
		return hostgw.New(d.o.Kernel, hostgw.Config{Iface: link, IfaceNets: d.o.Iface.Nets, MTU: b.MTU})
	}
	return vxlan.New(d.o.Kernel, vxlan.Config{
		NodeName: d.o.NodeName, VNI: b.VNI, Port: b.Port, MTU: b.MTU, DirectRouting: b.DirectRouting,
		Iface: link, IfaceAddr: d.o.Iface.Addr, IfaceNets: d.o.Iface.Nets, Subnet: subnet,
	})
}

func (d *Daemon) becomeReady(ctx context.Context) {
	if d.ready.Load() {
		return
	}
	if err := d.installCNIConf(); err != nil {
		d.log.WithError(err).Error("installing the CNI configuration")
		return
	}
	if err := d.mgr.SetNetworkAvailable(ctx); err != nil {
		d.log.WithError(err).Warn("could not set NetworkUnavailable=False; will retry on the next full reconcile")
		return
	}
	d.ready.Store(true)
	d.log.Info("node networked: ready")
}

func (d *Daemon) processNext(ctx context.Context) bool {
	key, quit := d.queue.Get()
	if quit {
		return false
	}
	defer d.queue.Done(key)
	var err error
	if key == fullKey {
		err = d.fullReconcile(ctx)
		if err == nil {
			d.becomeReady(ctx)
		}
	} else {
		err = d.syncNode(ctx, key)
	}
	if err != nil {
		d.log.WithError(err).WithField("key", printable(key)).Warn("reconcile failed; retrying")
		d.queue.AddRateLimited(key)
		return true
	}
	d.queue.Forget(key)
	return true
}

func printable(key string) string {
	if key == fullKey {
		return "(all nodes)"
	}
	return key
}

// syncNode reconciles one node: the own node (annotations) or a peer.
func (d *Daemon) syncNode(ctx context.Context, name string) error {
	if name == d.o.NodeName {
		node, ok := d.mgr.Node(name)
		if !ok {
			return nil
		}
		if changed, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
			return err
		} else if changed {
			d.log.Info("re-published this node's annotations")
		}
		return nil
	}
	want, keep, err := d.peerEntries(ctx, name)
	if err != nil || keep {
		return err
	}
	st, err := d.table.Sync(name, want)
	if err != nil {
		return err
	}
	if st.Changed() {
		d.log.WithFields(logrus.Fields{"peer": name, "added": st.Added, "updated": st.Updated, "deleted": st.Deleted}).Info("peer reconciled")
	}
	return nil
}

// peerEntries returns what the kernel must hold for peer name. keep is true
// when the peer's annotations are broken: its existing entries are left as
// they are rather than torn down, and a warning is raised.
func (d *Daemon) peerEntries(ctx context.Context, name string) (want backend.Entries, keep bool, err error) {
	l, err := d.mgr.Lease(name)
	if err != nil {
		d.mgr.Warn(ctx, name, "InvalidFlannelAnnotations", fmt.Errorf("node %s skipped: %w", name, err))
		return backend.Entries{}, true, nil
	}
	if l == nil {
		return backend.Entries{}, false, nil
	}
	e, reason, problem := d.entriesFor(l)
	if problem != nil {
		d.mgr.Warn(ctx, name, reason, problem)
		return backend.Entries{}, false, nil
	}
	d.mgr.ClearWarning(name)
	return e, false, nil
}

// entriesFor computes the kernel entries that reach peer l, or, when it
// gets none, the reason (an Event reason) and the problem to report.
func (d *Daemon) entriesFor(l *lease.Lease) (e backend.Entries, reason string, problem error) {
	if err := d.o.Config.ContainsSubnet(l.Subnet); err != nil {
		return e, "PodCIDROutsideNetwork", fmt.Errorf("node %s skipped: podCIDR %w", l.Node, err)
	}
	if l.Subnet.Contains(d.own.Subnet.IP) || d.own.Subnet.Contains(l.Subnet.IP) {
		return e, "PodCIDRConflict", fmt.Errorf("node %s skipped: its podCIDR %s overlaps this node's %s", l.Node, l.Subnet, d.own.Subnet)
	}
	e, err := d.be.Entries(l)
	if err != nil {
		return e, "PeerUnreachable", fmt.Errorf("no route to node %s: %w", l.Node, err)
	}
	return e, "", nil
}

// initialSync programs peers while the initial node list is still being
// read, a page at a time, inside a full sync of the table that the first
// full reconcile finishes: at 5,000 nodes the kernel work then overlaps
// the API server's paging instead of following it. Peers with problems
// are left to the full reconcile, which reports them.
type initialSync struct {
	pages chan []kube.PeerNode
	done  chan struct{}
	peers int
	err   error
}

// startInitialSync opens the table's full sync and starts programming the
// pages sent to the returned sync's pages channel.
func (d *Daemon) startInitialSync() (*initialSync, error) {
	if err := d.table.BeginFull(d.be.Scope()); err != nil {
		return nil, fmt.Errorf("reading the kernel's peer entries: %w", err)
	}
	s := &initialSync{pages: make(chan []kube.PeerNode, 32), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for page := range s.pages {
			want := make(map[string]backend.Entries, len(page))
			for i := range page {
				if page[i].Name == d.o.NodeName {
					continue
				}
				l, err := d.o.Annotations.Decode(&page[i])
				if err != nil {
					continue
				}
				if e, _, problem := d.entriesFor(l); problem == nil {
					want[l.Node] = e
				}
			}
			if s.err != nil {
				continue // drain: the full reconcile starts over
			}
			if _, err := d.table.AddPeers(want); err != nil {
				s.err = err
			}
			s.peers += len(want)
		}
	}()
	return s, nil
}

// wait closes the page channel and waits for the last page to be programmed.
func (s *initialSync) wait() error {
	close(s.pages)
	<-s.done
	return s.err
}

// fullReconcile brings everything to the desired state: the device, the
// annotations, subnet.env and every peer's entries, reading the kernel once.
func (d *Daemon) fullReconcile(ctx context.Context) error {
	start := time.Now()
	recreated, err := d.be.Setup()
	if err != nil {
		return fmt.Errorf("backend setup: %w", err)
	}
	if recreated {
		d.log.Warn("the backend device was missing or wrong and has been recreated; reprogramming every peer")
		d.table.Forget()
	}
	if err := d.writeSubnetEnv(); err != nil {
		return err
	}
	if node, ok := d.mgr.Node(d.o.NodeName); ok {
		if _, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
			return err
		}
	}
	names := d.mgr.Names()
	want := make(map[string]backend.Entries, len(names))
	for _, name := range names {
		if name == d.o.NodeName {
			continue
		}
		e, keep, err := d.peerEntries(ctx, name)
		if err != nil {
			return err
		}
		if keep {
			if old, ok := d.table.Applied(name); ok {
				want[name] = old
			}
			continue
		}
		want[name] = e
	}
	var st backend.Stats
	if d.finishInitial && !recreated {
		st, err = d.table.FinishFull(want)
	} else {
		st, err = d.table.SyncAll(want, d.be.Scope())
	}
	d.finishInitial = false
	d.mu.Lock()
	d.fullRuns++
	d.lastFullErr = err
	d.mu.Unlock()
	if err != nil {
		return err
	}
	fields := logrus.Fields{"peers": len(want), "added": st.Added, "updated": st.Updated, "deleted": st.Deleted, "took": time.Since(start).Round(time.Millisecond)}
	if st.Changed() || !d.ready.Load() {
		d.log.WithFields(fields).Info("full reconcile")
	} else {
		d.log.WithFields(fields).Debug("full reconcile: nothing to change")
	}
	return nil
}

func (d *Daemon) writeSubnetEnv() error {
	changed, err := subnetenv.Write(d.o.SubnetFile, d.env)
	if err != nil {
		return fmt.Errorf("writing %s: %w", d.o.SubnetFile, err)
	}
	if changed {
		d.log.WithField("file", d.o.SubnetFile).Info("wrote subnet.env")
	}
	return nil
}

func (d *Daemon) ensureRules() error {
	changed, err := d.rules.Ensure(d.chains)
	if err != nil {
		return fmt.Errorf("keeping iptables rules: %w", err)
	}
	if changed {
		d.log.Info("iptables rules installed or repaired")
	}
	return nil
}

// installCNIConf copies the CNI conflist into place once the overlay works,
// so the kubelet reports the node Ready only then. An identical file is left
// alone.
func (d *Daemon) installCNIConf() error {
	if d.o.CNIConfSrc == "" || d.o.CNIConfDest == "" {
		return nil
	}
	data, err := os.ReadFile(d.o.CNIConfSrc)
	if err != nil {
		return fmt.Errorf("reading %s: %w", d.o.CNIConfSrc, err)
	}
	if old, err := os.ReadFile(d.o.CNIConfDest); err == nil && string(old) == string(data) {
		return nil
	}
	if err := atomicfile.Write(d.o.CNIConfDest, data, 0o644); err != nil {
		return err
	}
	d.log.WithField("file", d.o.CNIConfDest).Info("installed the CNI configuration")
	return nil
}

// withdrawStaleCNIConf removes the installed CNI conflist when subnet.env is
// missing: after a reboot /run is empty but /etc/cni/net.d is not, and the
// kubelet would report the node Ready, and start pods, before the overlay
// works. A plain restart keeps both files, so the node never flaps.
func (d *Daemon) withdrawStaleCNIConf() {
	if d.o.CNIConfDest == "" {
		return
	}
	if _, err := os.Stat(d.o.SubnetFile); !os.IsNotExist(err) {
		return
	}
	if err := os.Remove(d.o.CNIConfDest); err == nil {
		d.log.WithField("file", d.o.CNIConfDest).Info("removed the CNI configuration until this node is networked again (no subnet.env: first start or a reboot)")
	} else if !os.IsNotExist(err) {
		d.log.WithError(err).Warn("removing the stale CNI configuration")
	}
}

func (d *Daemon) checkSysctls() {
	if d.o.ProcSys == "" {
		return
	}
	for _, s := range network.Prerequisites {
		changed, err := network.EnsureSysctl(d.o.ProcSys, s)
		switch {
		case err != nil:
			d.log.Warn(err.Error())
		case changed:
			d.log.Infof("set %s=%s", s.Name, s.Want)
		}
	}
}
