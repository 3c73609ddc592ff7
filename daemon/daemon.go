// Package daemon is flanneld's control loop. Events from the node informer
// only name a node that may have changed; one worker reads that node's lease
// from the cache and brings the kernel to it. A full reconcile (at start, on
// a timer, and when the kernel lost state such as a deleted device) reads the
// kernel once and fixes every difference. Both are idempotent: a restart
// changes nothing that is already right.
//
// The daemon names no backend, no firewall and no IP family: it runs one
// plane per family net-conf.json enables, each with the backend the
// registry resolves and the firewall the options make.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/util/workqueue"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/metrics"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/subnetenv"
	"github.com/twill-net/twill/sysctl"
)

// Options configure the daemon.
type Options struct {
	Config *netconf.Config
	// Backends is the registry of backends; Backend the one net-conf.json
	// selects (Backends.Parse).
	Backends *backend.Registry
	Backend  backend.Chosen
	// API reaches the Kubernetes API server.
	API      kube.API
	NodeName string
	// Annotations are the annotation keys (from --kube-annotation-prefix).
	Annotations kube.Annotations
	Kernel      kernel.Kernel
	// Iface is the chosen underlay interface, with an address of every
	// enabled family.
	Iface *iface.Choice
	// PublicIPs, when set, are published instead of the interface's
	// addresses (at most one per family).
	PublicIPs []netip.Addr
	// ChooseIface, when set, chooses the underlay interface again as at
	// start (the same flags): each full reconcile, and when the kernel
	// watch sees the underlay's addresses change, the daemon follows a
	// new address of it (see readdress).
	ChooseIface func() (*iface.Choice, error)
	// Reconnect, when set, closes every connection to the API server, so
	// that the next request dials from the node's new address.
	Reconnect func()
	// Firewall, when set, makes each family's firewall, which keeps the
	// forward rules, and the masquerade rules when IPMasq is true.
	Firewall firewall.Maker
	IPMasq   bool
	// TunnelGuard has the firewall accept a backend's tunnel (VXLAN's
	// port) only from the public addresses of peers (--vxlan-guard).
	TunnelGuard bool
	// SubnetFile is where subnet.env is written.
	SubnetFile string
	// CNIConfSrc is copied to CNIConfDest after the first full reconcile.
	CNIConfSrc, CNIConfDest string
	// ProcSys is the sysctl root ("/proc/sys"); empty skips the checks.
	ProcSys string
	// Resync is the period of full reconciles; RulesResync of rule checks.
	Resync, RulesResync time.Duration
	// WatchKernel, when set, starts watching the kernel for what the watch
	// names and calls lost for each loss (kernel.WatchLosses).
	WatchKernel func(done <-chan struct{}, w kernel.Watch, lost func(kernel.Loss)) error
	// Metrics receives counts; nil records nothing.
	Metrics metrics.Recorder
	Log     logrus.FieldLogger
}

// fullKey is the queue key of a full reconcile; node names cannot hold NUL.
const fullKey = "\x00full"

// underlayKey is the queue key of a check of the underlay (readdress): a
// change of its addresses runs a full reconcile only when the node's
// address moved, not at every IPv6 address lifetime renewal.
const underlayKey = "\x00underlay"

// readyRetry is how soon a full reconcile is tried again when it left the
// node not ready, doubling up to readyRetryMax.
const (
	readyRetry    = 2 * time.Second
	readyRetryMax = 30 * time.Second
)

// Daemon runs the loop.
type Daemon struct {
	o       Options
	log     logrus.FieldLogger
	rec     metrics.Recorder
	mgr     *kube.Manager
	planes  planes
	table   *backend.Table
	queue   workqueue.TypedRateLimitingInterface[string]
	own     *lease.Lease
	env     *subnetenv.Env
	guards  *guards
	ready   atomic.Bool
	started atomic.Bool

	// initial is the table's full sync opened before the initial node
	// list, fed page by page while the list arrives; the first full
	// reconcile finishes it, with no second read of the kernel.
	initial *backend.FullSync
	pages   *pager

	// counts are the peers known and programmed, for the metrics.
	counts *peerCounts

	mu       sync.Mutex
	fullRuns int
	// envErr is the last failure to write subnet.env, nil once written.
	envErr error
	// readyTries counts full reconciles that left the node not ready.
	readyTries int
	// noted holds peers whose missing families were logged.
	noted map[string]string
	// ifaceProblem is the last problem choosing the interface again.
	ifaceProblem string
	// publicIPs finds peers that publish one public address.
	publicIPs *publicIPs
}

// New validates options and returns a daemon.
func New(o Options) (*Daemon, error) {
	if o.Config == nil || o.API == nil || o.Kernel == nil || o.Iface == nil || o.NodeName == "" || o.Backends == nil || o.Backend.Plugin == nil {
		return nil, errors.New("daemon: Config, Backends, Backend, API, Kernel, Iface and NodeName are required")
	}
	if len(o.Config.Networks) == 0 {
		return nil, errors.New("daemon: the configuration enables no IP family")
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Resync == 0 {
		o.Resync = time.Minute
	}
	if o.RulesResync == 0 {
		o.RulesResync = 5 * time.Second
	}
	if o.SubnetFile == "" {
		o.SubnetFile = subnetenv.DefaultPath
	}
	d := &Daemon{o: o, log: o.Log.WithField("node", o.NodeName), rec: metrics.OrNop(o.Metrics), noted: map[string]string{}, counts: newPeerCounts(), publicIPs: newPublicIPs()}
	d.mgr = kube.NewManager(o.API, o.NodeName, o.Annotations, d.log, d.rec)
	return d, nil
}

// Alive reports whether the loop has started (for /healthz).
func (d *Daemon) Alive() bool { return d.started.Load() }

// Ready reports whether the node is networked (for /readyz): the first
// full reconcile, peers included, is done and subnet.env is written. A
// later failure to rewrite subnet.env (a read-only or full /run) makes it
// not ready again until a retry succeeds; the data plane is kept all along.
func (d *Daemon) Ready() bool { return d.NotReady() == "" }

// NotReady says why the node is not ready (for /readyz), or "" when it is.
func (d *Daemon) NotReady() string {
	d.mu.Lock()
	envErr := d.envErr
	d.mu.Unlock()
	if envErr != nil {
		return fmt.Sprintf("%s is not written, so the CNI plugin cannot add pods (%v); existing pods keep working; flanneld retries by itself once it can be written", d.o.SubnetFile, envErr)
	}
	if !d.ready.Load() {
		return "the first full reconcile has not finished"
	}
	return ""
}

// Run sets the node up and keeps it reconciled until ctx ends. On return the
// data plane is left as it is, so pods keep working while flanneld restarts.
func (d *Daemon) Run(ctx context.Context) error {
	d.started.Store(true)
	d.checkSysctls()
	d.withdrawStaleCNIConf()

	fams := d.o.Config.Families()
	node, subnets, err := d.mgr.WaitForNode(ctx, fams, d.o.Config.CheckSubnet)
	if err != nil {
		if ctx.Err() != nil {
			d.log.Info("stopped before the node had a podCIDR")
			return nil // SIGTERM while waiting is a clean stop
		}
		return err
	}
	d.own = &lease.Lease{Node: d.o.NodeName, BackendType: d.o.Backend.Plugin.Type()}
	for i, f := range fams {
		p, err := d.newPlane(f, subnets[i], node.Annotations)
		if err != nil {
			return err
		}
		if over, err := d.mgr.OverwriteIP(node, f); err != nil {
			return err
		} else if over.IsValid() {
			d.log.Infof("publishing %s from the %s annotation", over, d.o.Annotations.For(f).PublicIPOverwrite)
			p.own.PublicIP = over
			p.explicit = "the " + d.o.Annotations.For(f).PublicIPOverwrite + " annotation"
		}
		d.planes = append(d.planes, p)
		d.own.Nets = append(d.own.Nets, p.own)
		d.log.WithFields(logrus.Fields{"family": f, "subnet": p.own.Subnet, "publicIP": p.own.PublicIP, "backend": d.own.BackendType, "mtu": p.be.MTU()}).Info("lease acquired")
	}

	d.table = backend.NewTable(d.o.Kernel, d.rec)
	if _, err := d.setup(); err != nil {
		return fmt.Errorf("setting up the %s backend: %w%s", d.own.BackendType, err, capabilityHint(err))
	}
	if _, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
		return err
	}
	d.env = &subnetenv.Env{MTU: d.planes.mtu(), IPMasq: d.o.IPMasq}
	for _, p := range d.planes {
		d.env.Nets = append(d.env.Nets, subnetenv.Net{Network: p.policy.Network, Subnet: subnetenv.Gateway(p.own.Subnet)})
	}
	d.writeSubnetEnv(ctx)
	if d.o.Firewall != nil {
		for _, p := range d.planes {
			if p.fw, err = d.o.Firewall(p.fam); err != nil {
				return err
			}
		}
		d.guards = newGuards(d.planes)
		if err := d.ensureRules(); err != nil {
			return fmt.Errorf("%w%s", err, capabilityHint(err))
		}
	}

	d.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodes"})
	defer d.queue.ShutDown()
	defer d.mgr.Shutdown()

	start := time.Now()
	if d.initial, err = d.table.Begin(d.planes.scope()); err != nil {
		d.log.WithError(err).Warn("programming peers after the whole node list instead")
	} else {
		d.pages = d.startPager()
	}
	err = d.mgr.Watch(ctx, watchHandler{d})
	if d.pages != nil {
		if werr := d.pages.wait(); werr != nil {
			d.log.WithError(werr).Warn("programming peers during the node list; the full reconcile retries")
			d.initial.Abort()
			d.initial = nil
		} else {
			d.log.WithField("peers", d.pages.peers).Debug("peers programmed during the node list")
		}
		d.pages = nil
	}
	if err != nil {
		return err
	}
	d.log.WithField("nodes", len(d.mgr.Names())).Infof("node cache synced in %s", time.Since(start).Round(time.Millisecond))
	if err := d.timedFull(ctx); err != nil {
		d.log.WithError(err).Error("first full reconcile")
		d.queue.AddRateLimited(fullKey)
	} else {
		d.becomeReady(ctx)
		if !d.Ready() {
			// Not networked (subnet.env or the node's condition could not
			// be written): try again on the same backoff as later full
			// reconciles do, not only at the next periodic resync.
			d.queue.AddAfter(fullKey, d.notReadyFor())
		}
	}

	if d.o.WatchKernel != nil {
		w := kernel.Watch{Devices: d.planes.devices()}
		if d.o.ChooseIface != nil {
			w.Underlay = d.o.Iface.Index
		}
		for _, n := range d.o.Config.Networks {
			w.Networks = append(w.Networks, n.Prefix)
		}
		if err := d.o.WatchKernel(ctx.Done(), w, d.kernelLost); err != nil {
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
	rulesResync := time.NewTicker(d.o.RulesResync)
	defer rulesResync.Stop()
	for {
		select {
		case <-ctx.Done():
			d.queue.ShutDown()
			wg.Wait()
			d.log.Info("stopping; the data plane stays in place")
			return nil
		case <-resync.C:
			d.queue.Add(fullKey)
		case <-rulesResync.C:
			if err := d.ensureRules(); err != nil {
				d.log.WithError(err).Error("packet-filter rules")
			}
		}
	}
}

// capabilityHint says which capability an operation refused for want of
// privileges needs, for the error flanneld exits with.
func capabilityHint(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM):
		return " (flanneld needs the NET_ADMIN capability: the DaemonSet adds it; a securityContext that drops it breaks networking)"
	case strings.Contains(err.Error(), "Permission denied (you must be root)"):
		return " (iptables' legacy back-end needs the NET_RAW capability: the DaemonSet adds it)"
	}
	return ""
}

// newPlane makes family f's plane for this node's subnet of f; ann are
// the node's annotations, whose backend data the backend may keep.
func (d *Daemon) newPlane(f family.Family, subnet netip.Prefix, ann map[string]string) (*plane, error) {
	n, err := BackendNode(d.o.NodeName, d.o.Config, f, subnet, d.o.Iface)
	if err != nil {
		return nil, err
	}
	n.Published = d.o.Annotations.Published(ann, d.o.Backend.Plugin.Type(), f)
	be, err := d.o.Backend.Config.New(d.o.Kernel, n)
	if err != nil {
		return nil, err
	}
	pub, explicit := n.Addr, ""
	for _, ip := range d.o.PublicIPs {
		if family.Of(ip) == f {
			pub, explicit = ip, "--public-ip (or the node-public-ip annotation)"
		}
	}
	var guard uint16
	if d.o.TunnelGuard {
		guard = be.TunnelPort()
	}
	policy := Policy(d.o.Config, f, subnet, d.o.IPMasq)
	policy.GuardPort = guard
	return &plane{
		fam: f, be: be,
		policy: policy,
		own:    lease.Net{Subnet: subnet, PublicIP: pub, BackendData: be.Data()},
		node:   n, explicit: explicit,
	}, nil
}

// setup removes what other backends left and sets up every family's
// devices.
func (d *Daemon) setup() (bool, error) {
	if err := d.o.Backends.Teardown(d.o.Kernel, d.o.Backend.Plugin); err != nil {
		return false, err
	}
	return d.planes.setup()
}

// watchHandler takes the node watch's news to the daemon.
type watchHandler struct{ d *Daemon }

// InitialPage implements kube.Handler.
func (h watchHandler) InitialPage(nodes []kube.PeerNode) {
	if h.d.pages != nil {
		h.d.pages.in <- nodes
	}
}

// Changed implements kube.Handler.
func (h watchHandler) Changed(name string) { h.d.queue.Add(name) }

// kernelLost queues the repair of state the kernel lost: a whole device,
// or one peer's route, neighbour or FDB entry. Entries Twill itself
// removed, and entries that were never its own (a neighbour the kernel
// aged out on cni0), have no owner and are ignored, so a node leaving
// costs no full reconcile.
func (d *Daemon) kernelLost(l kernel.Loss) {
	if l.Underlay {
		d.queue.Add(underlayKey)
		return
	}
	if l.Device != "" {
		d.queue.Add(fullKey)
		return
	}
	if l.Entry == nil {
		return
	}
	if name, ok := d.table.Lost(l.Entry); ok {
		d.queue.Add(name)
	}
}

func (d *Daemon) becomeReady(ctx context.Context) {
	if d.ready.Load() {
		return
	}
	d.mu.Lock()
	envErr := d.envErr
	d.mu.Unlock()
	if envErr != nil {
		d.log.WithError(envErr).Warn("not ready: subnet.env is not written; retrying on the next full reconcile")
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
	if key == underlayKey {
		var moved bool
		// Moved: the full reconcile sets the new device up, reprograms
		// the peers and publishes, before any peer's sync needs it.
		if moved, err = d.readdress(); moved && err == nil {
			err = d.timedFull(ctx)
		}
	} else if key == fullKey {
		err = d.timedFull(ctx)
		if err == nil {
			d.becomeReady(ctx)
			if !d.Ready() {
				// Not networked yet (subnet.env or the node's condition
				// could not be written): try again soon, not after an
				// ever longer backoff.
				d.queue.Forget(key)
				d.queue.AddAfter(key, d.notReadyFor())
				return true
			}
			d.mu.Lock()
			d.readyTries = 0 // a later failure starts the backoff afresh
			d.mu.Unlock()
		}
	} else {
		start := time.Now()
		err = d.syncNode(ctx, key)
		d.rec.Reconciled(metrics.ReconcileNode, time.Since(start), err)
	}
	if err != nil {
		d.log.WithError(err).WithField("key", printable(key)).Warn("reconcile failed; retrying")
		d.queue.AddRateLimited(key)
		return true
	}
	d.queue.Forget(key)
	return true
}

// notReadyFor returns how long to wait before the next try at becoming
// ready.
func (d *Daemon) notReadyFor() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	wait := readyRetry << min(d.readyTries, 4)
	d.readyTries++
	return min(wait, readyRetryMax)
}

func printable(key string) string {
	switch key {
	case fullKey:
		return "(all nodes)"
	case underlayKey:
		return "(the underlay interface)"
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
		d.checkOwnPodCIDRs(ctx, node.PodCIDRs)
		if changed, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
			return err
		} else if changed {
			d.log.Info("re-published this node's annotations")
		}
		return nil
	}
	want, keep := d.peerEntries(ctx, name)
	if keep {
		return nil
	}
	// The guard accepts a peer before its tunnel entries exist, and
	// refuses it only after they are gone.
	if err := d.guards.admit(map[string][]netip.Addr{name: want.public}); err != nil {
		return fmt.Errorf("accepting peer %s: %w", name, err)
	}
	st, err := d.table.Sync(name, want.entries)
	var conflict *backend.ConflictError
	if errors.As(err, &conflict) {
		err = nil
	}
	if err != nil {
		return err
	}
	d.settled(ctx, want, name, conflict)
	public, programmed := want.public, want.families
	if conflict != nil {
		// Refused: no tunnel entries, so no place in the guard.
		public, programmed = nil, nil
	}
	if err := d.guards.settle(name, public); err != nil {
		return fmt.Errorf("peer %s: %w", name, err)
	}
	if d.counts.set(name, want.leased, programmed) {
		d.reportPeers()
	}
	if st.Changed() {
		t := st.Total()
		d.log.WithFields(logrus.Fields{"peer": name, "added": t.Added, "updated": t.Updated, "deleted": t.Removed, "repaired": t.Repaired}).Info("peer reconciled")
	}
	return nil
}

// peerEntries returns what the kernel must hold for peer name. keep is
// true when the peer's annotations are broken: its existing entries are
// left as they are rather than torn down, and a warning is raised. A peer
// without a problem has want.clean set: its warning is cleared once the
// table takes its entries (see settled).
func (d *Daemon) peerEntries(ctx context.Context, name string) (want peerEntries, keep bool) {
	l, err := d.mgr.Lease(name)
	if err != nil {
		d.mgr.Warn(ctx, name, "InvalidFlannelAnnotations", fmt.Errorf("node %s skipped: %w", name, err))
		return peerEntries{}, true
	}
	if l == nil {
		d.forget(name)
		return peerEntries{}, false
	}
	want, reason, problem := d.entriesFor(l)
	switch {
	case reason == "InvalidFlannelAnnotations":
		d.mgr.Warn(ctx, name, reason, problem)
		return peerEntries{}, true
	case problem != nil:
		d.mgr.Warn(ctx, name, reason, problem)
	default:
		if err := d.publicIPConflict(l); err != nil {
			// Programmed all the same: the peers take no slot from
			// each other, and one of them may be right.
			d.mgr.Warn(ctx, name, "PublicIPConflict", err)
		} else {
			want.clean = true
		}
	}
	d.noteMissing(name, want.missing)
	return want, false
}

// settled reports what the table did with a clean peer's entries: a
// conflict with another peer's slot raises a warning naming both, anything
// else clears the peer's warning.
func (d *Daemon) settled(ctx context.Context, want peerEntries, name string, conflict *backend.ConflictError) {
	if conflict != nil {
		d.mgr.Warn(ctx, name, "PeerConflict", fmt.Errorf("node %s skipped: it wants what node %s has (%s): two Nodes with one podCIDR or one VTEP MAC; %s keeps it", name, conflict.Holder, conflict.Entry, conflict.Holder))
		return
	}
	if want.clean {
		d.mgr.ClearWarning(name)
	}
}

// entriesFor computes the kernel entries that reach peer l, and, when
// some or all of its families get none, the reason (an Event reason) and
// the problem to report.
func (d *Daemon) entriesFor(l *lease.Lease) (want peerEntries, reason string, problem error) {
	if _, err := d.o.Backends.Lookup(l.BackendType); err != nil {
		return want, "InvalidFlannelAnnotations", fmt.Errorf("node %s skipped: annotation %s=%q is not a known backend (%s)", l.Node, d.o.Annotations.BackendType, l.BackendType, strings.Join(d.o.Backends.Types(), ", "))
	}
	for _, n := range l.Nets {
		own, ok := d.own.Net(n.Family())
		if !ok {
			continue // a family this cluster does not run
		}
		if err := d.o.Config.CheckSubnet(n.Subnet); err != nil {
			return want, "PodCIDROutsideNetwork", fmt.Errorf("node %s skipped: podCIDR %w", l.Node, err)
		}
		if n.Subnet.Overlaps(own.Subnet) {
			return want, "PodCIDRConflict", fmt.Errorf("node %s skipped: its podCIDR %s overlaps this node's %s", l.Node, n.Subnet, own.Subnet)
		}
	}
	want = d.planes.entries(l)
	if want.bad != nil {
		key := d.o.Annotations.For(want.bad.Family).BackendData
		return peerEntries{}, "InvalidFlannelAnnotations", fmt.Errorf("node %s skipped: annotation %s: %w", l.Node, key, want.bad)
	}
	if len(want.failed) > 0 {
		return want, "PeerUnreachable", fmt.Errorf("no route to node %s: %w", l.Node, errors.Join(want.failed...))
	}
	return want, "", nil
}

// noteMissing logs, once per change, the families a peer has no lease of.
func (d *Daemon) noteMissing(name string, missing []family.Family) {
	note := fmt.Sprint(missing)
	d.mu.Lock()
	old, seen := d.noted[name]
	if len(missing) == 0 {
		delete(d.noted, name)
	} else {
		d.noted[name] = note
	}
	d.mu.Unlock()
	if len(missing) > 0 && (!seen || old != note) {
		d.log.WithField("peer", name).Infof("node has no %v lease: programmed for its other families only", missing)
	}
}

func (d *Daemon) forget(name string) {
	d.mu.Lock()
	delete(d.noted, name)
	d.mu.Unlock()
	d.publicIPs.set(name, nil)
}

// checkOwnPodCIDRs warns when this node's Node has podCIDRs other than
// the subnets served. The old lease stays: its pods keep working, and
// taking a new podCIDR under running pods would cut them all off.
func (d *Daemon) checkOwnPodCIDRs(ctx context.Context, cidrs []string) {
	if err := d.ownPodCIDRChanged(cidrs); err != nil {
		d.mgr.Warn(ctx, d.o.NodeName, "PodCIDRChanged", err)
	}
}

// pager programs peers while the initial node list is still being read,
// a page at a time, inside the table's initial full sync: at 5,000 nodes
// the kernel work then overlaps the API server's paging instead of
// following it. Peers with problems are left to the full reconcile, which
// reports them.
type pager struct {
	in    chan []kube.PeerNode
	done  chan struct{}
	peers int
	err   error
}

// startPager starts programming the pages sent to the returned pager.
func (d *Daemon) startPager() *pager {
	s := &pager{in: make(chan []kube.PeerNode, 32), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for page := range s.in {
			want := make(map[string]backend.Entries, len(page))
			public := make(map[string][]netip.Addr, len(page))
			for i := range page {
				if page[i].Name == d.o.NodeName {
					continue
				}
				l, err := d.o.Annotations.Decode(&page[i])
				if err != nil {
					continue
				}
				if e, _, problem := d.entriesFor(l); problem == nil {
					want[l.Node] = e.entries
					public[l.Node] = e.public
				}
			}
			if s.err != nil {
				continue // drain: the full reconcile starts over
			}
			if err := d.guards.admit(public); err != nil {
				s.err = err
				continue
			}
			if _, err := d.initial.Add(want); err != nil {
				s.err = err
				continue
			}
			for name, addrs := range public {
				if err := d.guards.settle(name, addrs); err != nil {
					s.err = err
				}
			}
			s.peers += len(want)
		}
	}()
	return s
}

// wait closes the page channel and waits for the last page to be programmed.
func (s *pager) wait() error {
	close(s.in)
	<-s.done
	return s.err
}

// timedFull runs a full reconcile and reports it.
func (d *Daemon) timedFull(ctx context.Context) error {
	start := time.Now()
	err := d.fullReconcile(ctx)
	d.rec.Reconciled(metrics.ReconcileFull, time.Since(start), err)
	return err
}

// fullReconcile brings everything to the desired state: the devices, the
// annotations, subnet.env and every peer's entries, reading the kernel once.
func (d *Daemon) fullReconcile(ctx context.Context) error {
	start := time.Now()
	defer func() {
		// A full reconcile that failed before finishing the initial sync
		// ends it: the next one reads the kernel afresh.
		if d.initial != nil {
			d.initial.Abort()
			d.initial = nil
		}
	}()
	if _, err := d.readdress(); err != nil {
		return err
	}
	recreated, err := d.setup()
	if err != nil {
		return fmt.Errorf("backend setup: %w", err)
	}
	if recreated {
		d.log.Warn("the backend device was missing or wrong and has been recreated; reprogramming every peer")
		if d.initial != nil {
			d.initial.Abort()
			d.initial = nil
		}
		d.table.Forget()
	}
	d.writeSubnetEnv(ctx)
	if node, ok := d.mgr.Node(d.o.NodeName); ok {
		d.checkOwnPodCIDRs(ctx, node.PodCIDRs)
		if _, err := d.mgr.Publish(ctx, node.Annotations, d.own); err != nil {
			return err
		}
	}
	names := d.mgr.Names()
	want := make(map[string]backend.Entries, len(names))
	clean := make(map[string]bool, len(names))
	public := make(map[string][]netip.Addr, len(names))
	counts := make(map[string]peerFamilies, len(names))
	for _, name := range names {
		if name == d.o.NodeName {
			continue
		}
		e, keep := d.peerEntries(ctx, name)
		if keep {
			if old, ok := d.table.Applied(name); ok {
				want[name] = old
				public[name] = d.guards.held(name)
			}
			continue
		}
		if len(e.leased) > 0 {
			counts[name] = peerFamilies{leased: e.leased, programmed: e.families}
		}
		want[name] = e.entries
		clean[name] = e.clean
		public[name] = e.public
	}
	// A guard that fails keeps the node unguarded, not unnetworked: its
	// errors are logged, and the next full reconcile tries again.
	if err := d.guards.admit(public); err != nil {
		d.log.WithError(err).Error("tunnel guard: accepting peers")
	}
	var st backend.Stats
	if d.initial != nil {
		st, err = d.initial.Finish(want)
		d.initial = nil
	} else {
		st, err = d.table.SyncAll(want, d.planes.scope())
	}
	d.mu.Lock()
	d.fullRuns++
	d.mu.Unlock()
	if err != nil {
		return err
	}
	for _, c := range st.Conflicts {
		d.settled(ctx, peerEntries{}, c.Peer, c)
		delete(clean, c.Peer)
		delete(public, c.Peer)
		if pf, ok := counts[c.Peer]; ok {
			pf.programmed = nil
			counts[c.Peer] = pf
		}
	}
	for name, ok := range clean {
		d.settled(ctx, peerEntries{clean: ok}, name, nil)
	}
	if changed, err := d.guards.reset(public); err != nil {
		d.log.WithError(err).Error("tunnel guard: making the set of peers exact")
	} else if changed {
		d.log.WithField("peers", len(public)).Info("tunnel guard: set of peers installed or repaired")
	}
	d.reportDrops()
	d.counts.reset(counts)
	d.reportPeers()
	t := st.Total()
	fields := logrus.Fields{"peers": len(want), "added": t.Added, "updated": t.Updated, "deleted": t.Removed, "repaired": t.Repaired, "took": time.Since(start).Round(time.Millisecond)}
	if st.Changed() || !d.ready.Load() {
		d.log.WithFields(fields).Info("full reconcile")
	} else {
		d.log.WithFields(fields).Debug("full reconcile: nothing to change")
	}
	return nil
}

// reportPeers hands every family's peer counts to the recorder.
func (d *Daemon) reportPeers() {
	for _, p := range d.planes {
		known, programmed := d.counts.of(p.fam)
		d.rec.Peers(d.own.BackendType, p.fam, known, programmed)
	}
}

// writeSubnetEnv writes subnet.env when it differs. A failure (a read-only
// or full /run) stops nothing: the data plane is programmed all the same,
// the old file stays as it was (the write goes to a temporary file that is
// renamed), the problem is logged and raised as a Warning Event on this
// Node, and the node is not made ready (no conflist) until a later try
// succeeds, so no pod starts without a right subnet.env.
func (d *Daemon) writeSubnetEnv(ctx context.Context) {
	changed, err := subnetenv.Write(d.o.SubnetFile, d.env)
	d.mu.Lock()
	failed := d.envErr != nil
	d.envErr = err
	d.mu.Unlock()
	if err == nil && failed {
		d.mgr.ClearWarning(d.o.NodeName, "SubnetEnvNotWritten")
	}
	if err != nil {
		d.mgr.Warn(ctx, d.o.NodeName, "SubnetEnvNotWritten", fmt.Errorf("cannot write %s, which the CNI plugin reads to add pods (is /run read-only or full?): %w; existing pods keep working, new ones wait", d.o.SubnetFile, err))
		return
	}
	if changed {
		d.log.WithField("file", d.o.SubnetFile).Info("wrote subnet.env")
	}
}

// ensureRules brings every family's rules to its policy.
func (d *Daemon) ensureRules() error {
	var errs []error
	for _, p := range d.planes {
		if p.fw == nil {
			continue
		}
		start := time.Now()
		changed, err := p.fw.Ensure(p.policy)
		d.rec.RulesChecked(p.fam, time.Since(start), changed, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("keeping %s rules: %w", p.fam, err))
			continue
		}
		if changed {
			d.log.WithField("family", p.fam).Info("packet-filter rules installed or repaired")
		}
	}
	if changed, err := d.guards.resync(); err != nil {
		errs = append(errs, fmt.Errorf("keeping the tunnel guard's set of peers: %w", err))
	} else if changed {
		d.log.Info("tunnel guard: set of peers repaired")
	}
	return errors.Join(errs...)
}

// reportDrops reads the tunnel guards' drop counters, once a full
// reconcile: reading one costs an nft command that loads the guard's set.
func (d *Daemon) reportDrops() {
	for _, p := range d.planes {
		if p.fw == nil || p.policy.GuardPort == 0 {
			continue
		}
		n, err := p.fw.Dropped()
		if err != nil {
			d.log.WithError(err).WithField("family", p.fam).Warn("reading the tunnel guard's drop counter")
			continue
		}
		d.rec.GuardDropped(p.fam, n)
	}
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
	for _, f := range d.o.Config.Families() {
		for _, s := range sysctl.Prerequisites(f) {
			changed, err := sysctl.Ensure(d.o.ProcSys, s)
			switch {
			case err != nil:
				d.log.Warn(err.Error())
			case changed:
				d.log.Infof("set %s=%s", s.Name, s.Want)
			}
		}
	}
}
