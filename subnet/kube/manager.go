package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
	"github.com/twill-net/twill/metrics"
)

// Manager finds this node's lease and watches every node's.
type Manager struct {
	api      API
	ann      Annotations
	nodeName string
	log      logrus.FieldLogger
	rec      metrics.Recorder

	// store is the informer's cache of PeerNodes, set by Watch.
	storeMu sync.Mutex
	store   cache.Store
	stop    context.CancelFunc
	// initial gets the pages of the first list (see Watch); it is only
	// touched by the list, which the informer runs one at a time, and is
	// nil once that list is done.
	initial Handler
	lists   atomic.Int64 // completed lists of all nodes
	// fetched counts the nodes read one by one for their podCIDRs.
	fetched atomic.Int64
	// known is every node the reflector was told of (name → UID), by the
	// last list and the watch events since (see metadataEvents).
	knownMu sync.Mutex
	known   map[string]types.UID

	mu sync.Mutex
	// warned is the last warning sent as an event, by node and reason: a
	// node with two problems at once (this node's subnet.env unwritable
	// and its podCIDR changed) sends each once, not one after the other
	// at every reconcile.
	warned map[eventKey]string
	// limits bound the Warning Events per node and reason (see Warn).
	limits map[eventKey]*rate.Limiter
	now    func() time.Time
}

// NewManager returns a manager for node nodeName, reporting to rec (nil:
// nowhere).
func NewManager(api API, nodeName string, ann Annotations, log logrus.FieldLogger, rec metrics.Recorder) *Manager {
	return &Manager{api: api, ann: ann, nodeName: nodeName, log: log, rec: metrics.OrNop(rec),
		warned: map[eventKey]string{}, limits: map[eventKey]*rate.Limiter{}, now: time.Now}
}

// NodeName finds the node this daemon runs on: NODE_NAME, else the node of
// the pod named by POD_NAME in POD_NAMESPACE.
func NodeName(ctx context.Context, api API, getenv func(string) string) (string, error) {
	if n := getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	pod, ns := getenv("POD_NAME"), getenv("POD_NAMESPACE")
	if pod == "" || ns == "" {
		return "", errors.New("cannot tell which node this is: set NODE_NAME (the DaemonSet's env from spec.nodeName), or POD_NAME and POD_NAMESPACE")
	}
	p, err := api.GetPod(ctx, ns, pod)
	if err != nil {
		return "", fmt.Errorf("looking up pod %s/%s to find its node: %w", ns, pod, err)
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled to a node yet", ns, pod)
	}
	return p.Spec.NodeName, nil
}

// StoredPublicIPs returns the node's node-public-ip and node-public-ipv6
// annotations, which stand for --public-ip and --public-ipv6 when set (as
// in flannel). It is read once at start and is best effort: a node that
// cannot be read, or an annotation that is not an address, is logged and
// skipped.
func StoredPublicIPs(ctx context.Context, api API, nodeName string, ann Annotations, log logrus.FieldLogger) []netip.Addr {
	node, err := api.GetNode(ctx, nodeName)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			log.WithError(err).Warnf("reading node %s for its node-public-ip annotations", nodeName)
		}
		return nil
	}
	var out []netip.Addr
	for _, f := range family.All {
		key := ann.For(f).NodePublicIP
		v := node.Annotations[key]
		if v == "" {
			continue
		}
		ip, err := family.ParseAddr(f, v)
		if err != nil {
			log.Warnf("annotation %s=%q on node %s is not an %s address; ignored", key, v, nodeName, f)
			continue
		}
		log.Infof("publishing %s from the %s annotation", ip, key)
		out = append(out, ip)
	}
	return out
}

// WaitForNode polls this node until it has a podCIDR of each family in
// fams that check accepts, logging every few seconds what it waits for.
// It returns them in the order of fams. API errors are retried with
// backoff; a podCIDR that check refuses is returned as an error.
func (m *Manager) WaitForNode(ctx context.Context, fams []family.Family, check func(netip.Prefix) error) (*v1.Node, []netip.Prefix, error) {
	backoff := 200 * time.Millisecond
	lastLog := time.Time{}
	for {
		node, err := m.api.GetNode(ctx, m.nodeName)
		var why string
		switch {
		case apierrors.IsNotFound(err):
			why = fmt.Sprintf("node %s does not exist (yet): is NODE_NAME right?", m.nodeName)
		case err != nil:
			why = fmt.Sprintf("reading node %s: %v", m.nodeName, err)
		default:
			subnets, missing, perr := podCIDRs(node, fams)
			if perr != nil {
				return nil, nil, perr
			}
			if len(missing) == 0 {
				for _, s := range subnets {
					if err := check(s); err != nil {
						return nil, nil, fmt.Errorf("node %s has podCIDR %s: %w; make kube-controller-manager's --cluster-cidr match net-conf.json's network", m.nodeName, s, err)
					}
				}
				return node, subnets, nil
			}
			why = waitReason(m.nodeName, node, missing)
		}
		if time.Since(lastLog) >= 5*time.Second {
			m.log.Info("waiting: " + why)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("waiting for node %s: %w (last: %s)", m.nodeName, ctx.Err(), why)
		case <-time.After(backoff):
		}
		if err != nil && backoff < 5*time.Second {
			backoff *= 2
		} else if err == nil {
			backoff = time.Second
		}
	}
}

// waitReason says what a node without the podCIDRs of missing lacks, and
// what sets them.
func waitReason(name string, node *v1.Node, missing []family.Family) string {
	if node.Spec.PodCIDR == "" && len(node.Spec.PodCIDRs) == 0 {
		return fmt.Sprintf("node %s has no spec.podCIDR yet: kube-controller-manager must run with --allocate-node-cidrs and --cluster-cidr (kubeadm: --pod-network-cidr)", name)
	}
	names := make([]string, len(missing))
	for i, f := range missing {
		names[i] = f.String()
	}
	hint := "kube-controller-manager's --cluster-cidr must hold a network of each family net-conf.json enables"
	if slices.Contains(missing, family.IPv6) {
		hint += " (dual-stack: --cluster-cidr=<v4>,<v6> and --node-cidr-mask-size-ipv6, e.g. 64; kubeadm: --pod-network-cidr=<v4>,<v6>)"
	}
	return fmt.Sprintf("node %s has no %s podCIDR yet (it has %v): %s", name, strings.Join(names, " or "), node.Spec.PodCIDRs, hint)
}

// podCIDRs returns the node's podCIDR of each family in fams, in that
// order, and the families it has none of.
func podCIDRs(node *v1.Node, fams []family.Family) ([]netip.Prefix, []family.Family, error) {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	have := map[family.Family]netip.Prefix{}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Addr().Zone() != "" {
			return nil, nil, fmt.Errorf("node %s has spec.podCIDR %q, which is not a CIDR", node.Name, c)
		}
		if _, dup := have[family.OfPrefix(p)]; !dup {
			have[family.OfPrefix(p)] = p.Masked()
		}
	}
	var out []netip.Prefix
	var missing []family.Family
	for _, f := range fams {
		if p, ok := have[f]; ok {
			out = append(out, p)
		} else {
			missing = append(missing, f)
		}
	}
	return out, missing, nil
}

// OverwriteIP returns the node's public-ip-overwrite annotation of family
// f (public-ipv6-overwrite for IPv6), if set.
func (m *Manager) OverwriteIP(node *v1.Node, f family.Family) (netip.Addr, error) {
	key := m.ann.For(f).PublicIPOverwrite
	v, ok := node.Annotations[key]
	if !ok || v == "" {
		return netip.Addr{}, nil
	}
	ip, err := family.ParseAddr(f, v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("annotation %s=%q on node %s is not an %s address", key, v, node.Name, f)
	}
	return ip, nil
}

// Publish writes own's annotations on this node with a merge patch of the
// nodes/status subresource (as flannel does), only when a value differs from
// the node's current annotations. It returns whether it patched.
func (m *Manager) Publish(ctx context.Context, current map[string]string, own *lease.Lease) (bool, error) {
	want, err := m.ann.Encode(own)
	if err != nil {
		return false, err
	}
	diff := map[string]string{}
	for k, v := range want {
		if current[k] != v {
			diff[k] = v
		}
	}
	if len(diff) == 0 {
		return false, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": diff}})
	if err != nil {
		return false, err
	}
	err = m.api.PatchNodeStatus(ctx, m.nodeName, types.MergePatchType, patch)
	m.wrote("annotations", err)
	if err != nil {
		return false, fmt.Errorf("publishing annotations %v on node %s: %w", slices.Sorted(maps.Keys(diff)), m.nodeName, err)
	}
	return true, nil
}

// SetNetworkAvailable sets the node's NetworkUnavailable condition to False,
// unless it already is.
func (m *Manager) SetNetworkAvailable(ctx context.Context) error {
	node, err := m.api.GetNode(ctx, m.nodeName)
	if err != nil {
		return fmt.Errorf("reading node %s: %w", m.nodeName, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionFalse {
			return nil
		}
	}
	now := metav1.Now()
	cond := v1.NodeCondition{
		Type: v1.NodeNetworkUnavailable, Status: v1.ConditionFalse,
		Reason: "FlannelIsUp", Message: "Twill flanneld is running on this node",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []v1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	err = m.api.PatchNodeStatus(ctx, m.nodeName, types.StrategicMergePatchType, patch)
	m.wrote("condition", err)
	if err != nil {
		return fmt.Errorf("setting NetworkUnavailable=False on node %s: %w", m.nodeName, err)
	}
	return nil
}

// Handler gets what the node watch learns.
type Handler interface {
	// InitialPage gets each page of the initial list as it arrives, before
	// the cache holds any of it, so work can start early. Relists after a
	// broken watch do not call it.
	InitialPage(nodes []PeerNode)
	// Changed names a node whose lease may have changed since the initial
	// list (added, changed or deleted).
	Changed(name string)
}

// Watch starts one informer over all nodes that keeps only what a
// peer needs, and tells h about them. It returns once the cache is synced;
// the caller then reconciles all nodes of the initial list at once.
func (m *Manager) Watch(ctx context.Context, h Handler) error {
	m.initial = h
	lw := &strippedListWatch{ListWatch: &cache.ListWatch{
		ListWithContextFunc: m.listUntilReachable,
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := m.watchUntilReachable(ctx, opts)
			if err != nil {
				return nil, err
			}
			m.rec.WatchStarted()
			return w, nil
		},
		DisableChunking: true, // listStripped pages by itself
	}}
	// Both the list and the watch yield PeerNodes: nothing else is cached.
	// One handler, called on the informer's own goroutine: a shared
	// informer's fan-out would hand each of a kubelet's status updates
	// through two more goroutines only to drop it.
	handler := cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, isInInitialList bool) {
			// Nodes of the initial list are the caller's first full
			// reconcile's business, which runs once the cache is synced.
			if n, ok := obj.(*PeerNode); ok && !isInInitialList {
				m.rec.WatchEvent("added")
				h.Changed(n.Name)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*PeerNode)
			n, ok2 := newObj.(*PeerNode)
			if ok1 && ok2 && sameLeaseFields(o, n) {
				return // a kubelet status update: nothing for us
			}
			if ok2 {
				m.rec.WatchEvent("updated")
				h.Changed(n.Name)
			}
		},
		DeleteFunc: func(obj any) {
			m.rec.WatchEvent("deleted")
			switch n := obj.(type) {
			case *PeerNode:
				h.Changed(n.Name)
			case cache.DeletedFinalStateUnknown:
				h.Changed(n.Key)
			}
		},
	}
	store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: &PeerNode{}, Handler: handler})
	m.storeMu.Lock()
	m.store = store
	m.storeMu.Unlock()
	ictx, cancel := context.WithCancel(ctx)
	m.stop = cancel
	go ctrl.RunWithContext(ictx)
	if !cache.WaitForCacheSync(ctx.Done(), ctrl.HasSynced) {
		return fmt.Errorf("waiting for the node cache to sync: %w", ctx.Err())
	}
	return nil
}

// watchRetry is how often a node watch the API server cannot take is
// tried again, plus up to as much again at random, so that the nodes of
// a large cluster do not all come back in the same second.
var watchRetry = time.Second

// watchUntilReachable starts the node watch, trying again every
// watchRetry while the API server cannot be reached (refused, reset,
// unavailable, timed out). The informer's own retry backs off up to 30 s
// over a long outage, so a Node added or deleted meanwhile would reach
// the kernel up to half a minute after the API server is back; this way
// it is about a second. Other errors (a resource version too old, a
// refusal) go to the informer, which relists.
func (m *Manager) watchUntilReachable(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return untilReachable(ctx, m.log, "node watch", func() (watch.Interface, error) { return m.watchPeers(ctx, opts) })
}

// listUntilReachable is the informer's list: listStripped, tried again
// every watchRetry (jittered) while the API server cannot be reached, as
// the watch is. A watch that breaks mid-stream (an API server killed or
// restarted) sends the informer back to a list; left to the informer, the
// failed lists of an outage back off to 30 s and a Node changed meanwhile
// would reach the kernel that long after the API server is back.
func (m *Manager) listUntilReachable(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return untilReachable(ctx, m.log, "node list", func() (runtime.Object, error) { return m.listStripped(ctx, opts) })
}

// untilReachable calls try until it succeeds, fails for another reason
// than an API server that cannot be reached, or ctx ends, waiting
// watchRetry to twice that (jittered) between tries; the first failure is
// logged, naming what is tried.
func untilReachable[T any](ctx context.Context, log logrus.FieldLogger, what string, try func() (T, error)) (T, error) {
	warned := false
	for {
		v, err := try()
		if err == nil || !unreachable(err) {
			return v, err
		}
		if !warned {
			log.WithError(err).Warnf("the API server cannot be reached: trying the %s again every %s to %s", what, watchRetry, 2*watchRetry)
			warned = true
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(watchRetry + mrand.N(watchRetry)):
		}
	}
}

// unreachable says err means the API server could not be reached or could
// not serve for now, as opposed to an answer. A refusal to serve for load
// (429) is left to the informer's backoff, which is what the API server
// asks for.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)
}

// Shutdown stops the informer.
func (m *Manager) Shutdown() {
	if m.stop != nil {
		m.stop()
	}
}

// listPageSize bounds how many nodes one page of the initial list holds:
// about 7 KB each with a kubelet's status, skimmed without being decoded
// into Node objects (see skim.go), so a page costs one reused buffer.
const listPageSize = 250

// peerLister is an API that lists nodes straight into PeerNodes (restAPI
// does, skimming protobuf pages); other APIs are listed and stripped.
type peerLister interface {
	ListPeerNodes(ctx context.Context, opts metav1.ListOptions, ann Annotations) (*PeerNodeList, error)
}

// listPage lists one page of nodes as PeerNodes.
func (m *Manager) listPage(ctx context.Context, opts metav1.ListOptions) (*PeerNodeList, error) {
	if pl, ok := m.api.(peerLister); ok {
		return pl.ListPeerNodes(ctx, opts, m.ann)
	}
	page, err := m.api.ListNodes(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := &PeerNodeList{ListMeta: page.ListMeta, Items: make([]PeerNode, len(page.Items))}
	for i := range page.Items {
		out.Items[i] = *m.ann.Strip(&page.Items[i])
	}
	return out, nil
}

// listStripped lists all nodes page by page, keeping only what a peer
// needs, so memory never holds the whole cluster's Node objects. A list at
// resourceVersion 0 would be served whole from the API server's cache, so
// it reads at the current version instead.
func (m *Manager) listStripped(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	opts.ResourceVersion, opts.ResourceVersionMatch, opts.Continue = "", "", ""
	opts.Limit = listPageSize
	out := &PeerNodeList{}
	for {
		page, err := m.listPage(ctx, opts)
		if apierrors.IsResourceExpired(err) && opts.Continue != "" {
			// The snapshot expired between pages: start again.
			opts.Continue, out.Items = "", out.Items[:0]
			continue
		}
		if err != nil {
			return nil, err
		}
		m.rec.APIContact()
		if out.ResourceVersion == "" {
			out.ResourceVersion = page.ResourceVersion
		}
		out.Items = append(out.Items, page.Items...)
		if m.initial != nil {
			m.initial.InitialPage(page.Items)
		}
		if page.Continue == "" {
			m.trackList(out.Items)
			m.initial = nil // relists after a watch expired are not early work
			m.rec.Listed(m.lists.Add(1) > 1)
			return out, nil
		}
		opts.Continue = page.Continue
	}
}

// List lists every node once, page by page, keeping what a peer needs
// (what Decode reads), as the watch's list does; for one-shot readers such
// as flanneld doctor.
func (m *Manager) List(ctx context.Context) ([]PeerNode, error) {
	obj, err := m.listStripped(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return obj.(*PeerNodeList).Items, nil
}

// strippedListWatch makes the reflector use listStripped rather than a
// watch-list stream, whose support varies between API servers.
type strippedListWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported tells client-go's reflector to list.
func (strippedListWatch) IsWatchListSemanticsUnSupported() bool { return true }

func sameLeaseFields(a, b *PeerNode) bool {
	return slices.Equal(a.PodCIDRs, b.PodCIDRs) && maps.Equal(a.Annotations, b.Annotations)
}

// cache returns the informer's store, nil before Watch.
func (m *Manager) cache() cache.Store {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	return m.store
}

// listCount is how many times all nodes were listed.
func (m *Manager) listCount() int64 { return m.lists.Load() }

// Node returns the cached node; none before Watch started the cache.
func (m *Manager) Node(name string) (*PeerNode, bool) {
	store := m.cache()
	if store == nil {
		return nil, false
	}
	obj, ok, err := store.GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	n, ok := obj.(*PeerNode)
	return n, ok
}

// Lease returns the lease of node name from the cache: (nil, nil) when the
// node is gone or not ready (no podCIDR or annotations yet), an error when
// its annotations are broken.
func (m *Manager) Lease(name string) (*lease.Lease, error) {
	n, ok := m.Node(name)
	if !ok {
		return nil, nil
	}
	l, err := m.ann.Decode(n)
	if errors.Is(err, ErrNotReady) {
		return nil, nil
	}
	return l, err
}

// Names lists every cached node; none before Watch started the cache.
func (m *Manager) Names() []string {
	store := m.cache()
	if store == nil {
		return nil
	}
	return store.ListKeys()
}

// eventKey names the Warning Events of one node and reason.
type eventKey struct{ node, reason string }

// Events are rate-limited per node and reason: a burst of eventBurst, then
// one per eventInterval. A Node whose annotations flap cannot flood the API
// server (nor etcd, which keeps every Event for an hour); the log still
// says every change.
const (
	eventBurst    = 3
	eventInterval = 2 * time.Minute
	// maxLimits bounds the limiters kept; full ones are dropped past it.
	maxLimits = 1024
)

// Warn logs a problem with node name and records it as a Warning event on
// that Node, once per distinct message of each reason and within the rate
// limit, so `kubectl describe node` shows it.
func (m *Manager) Warn(ctx context.Context, name, reason string, problem error) {
	msg := problem.Error()
	k := eventKey{name, reason}
	m.mu.Lock()
	if m.warned[k] == msg {
		m.mu.Unlock()
		return
	}
	m.warned[k] = msg
	allowed := m.allowEvent(k)
	m.mu.Unlock()
	if !allowed {
		m.log.WithFields(logrus.Fields{"peer": name, "reason": reason}).Warnf("%s (no Event: more than %d for this node and reason within %s)", msg, eventBurst, eventInterval*eventBurst)
		return
	}
	m.log.WithFields(logrus.Fields{"peer": name, "reason": reason}).Warn(msg)
	var uid types.UID
	if n, ok := m.Node(name); ok {
		uid = n.UID
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	now := metav1.Now()
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%s", name, hex.EncodeToString(suffix)), Namespace: metav1.NamespaceDefault},
		InvolvedObject: v1.ObjectReference{Kind: "Node", Name: name, UID: uid, APIVersion: "v1"},
		Reason:         reason,
		Message:        fmt.Sprintf("flanneld on %s: %s", m.nodeName, msg),
		Type:           v1.EventTypeWarning,
		Source:         v1.EventSource{Component: "flanneld", Host: m.nodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	err := m.api.CreateEvent(ctx, ev)
	m.wrote("event", err)
	if err != nil {
		m.log.WithField("peer", name).Debugf("recording event: %v", err)
	}
}

// allowEvent takes a token of k's limiter. m.mu is held.
func (m *Manager) allowEvent(k eventKey) bool {
	now := m.now()
	l, ok := m.limits[k]
	if !ok {
		if len(m.limits) >= maxLimits {
			for key, old := range m.limits {
				if old.TokensAt(now) >= eventBurst {
					delete(m.limits, key)
				}
			}
		}
		l = rate.NewLimiter(rate.Every(eventInterval), eventBurst)
		m.limits[k] = l
	}
	return l.AllowN(now, 1)
}

// ClearWarning forgets the last warnings for name, once fixed: those of
// the reasons given, or, with none, all of them.
func (m *Manager) ClearWarning(name string, reasons ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.warned {
		if k.node == name && (len(reasons) == 0 || slices.Contains(reasons, k.reason)) {
			delete(m.warned, k)
		}
	}
}

// wrote reports a write of kind to the API server.
func (m *Manager) wrote(kind string, err error) {
	m.rec.APIWrite(kind, err)
	if err == nil {
		m.rec.APIContact()
	}
}

// peerWatcher is an API that watches the nodes' metadata alone, as
// PeerNodes without podCIDRs (restAPI does); other APIs' watches of whole
// Nodes are stripped as they arrive. It reports whether the watch starts
// with the current state of every node (a watch-list: ADDED events, then
// a bookmark with the initial-events-end annotation).
type peerWatcher interface {
	WatchPeerMetadata(ctx context.Context, opts metav1.ListOptions, ann Annotations) (d watch.Decoder, initialEvents bool, err error)
}

var _ peerWatcher = (*restAPI)(nil)

// watchTimeout is how long one node watch runs, at least: every start
// of a watch-list resends every node's metadata, so they are rare (the
// API server's own default for watches is 30 to 60 minutes).
const watchTimeout = 30 * time.Minute

// watchPeers starts a watch whose events carry *PeerNode (or, for ERROR
// events, what the API server sent).
func (m *Manager) watchPeers(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	if pw, ok := m.api.(peerWatcher); ok {
		timeout := int64((watchTimeout + time.Duration(mrand.Int64N(int64(watchTimeout)))) / time.Second)
		opts.TimeoutSeconds = &timeout
		d, initial, err := pw.WatchPeerMetadata(ctx, opts, m.ann)
		if err != nil {
			return nil, err
		}
		// Completed as they are decoded: no goroutine more per event.
		fd := &fixingDecoder{in: d, seen: m.rec.APIContact, fix: m.metadataEvents(ctx, initial), sent: m.trackEvent, log: m.log}
		return watch.NewStreamWatcher(fd, apierrors.NewClientErrorReporter(http.StatusInternalServerError, "GET", "ClientWatchDecoding")), nil
	}
	w, err := m.api.WatchNodes(ctx, opts)
	if err != nil {
		return nil, err
	}
	return m.relay(w, func(ev watch.Event) ([]watch.Event, error) {
		if n, ok := ev.Object.(*v1.Node); ok {
			ev.Object = m.ann.Strip(n)
		}
		return []watch.Event{ev}, nil
	}), nil
}

// metadataEvents completes the metadata watch's nodes (see complete).
// With initial events, it notes the nodes they name and, at the bookmark
// that ends them, deletes every node the reflector was told of that they
// did not name: it was deleted while no watch ran, and a watch-list sends
// no DELETED event for it.
func (m *Manager) metadataEvents(ctx context.Context, initial bool) func(watch.Event) ([]watch.Event, error) {
	var named map[string]bool
	if initial {
		named = map[string]bool{}
	}
	return func(ev watch.Event) ([]watch.Event, error) {
		switch ev.Type {
		case watch.Added, watch.Modified:
			if err := m.complete(ctx, &ev); err != nil {
				return nil, err
			}
			if p, ok := ev.Object.(*PeerNode); ok && named != nil {
				named[p.Name] = true
			}
		case watch.Bookmark:
			if p, ok := ev.Object.(*PeerNode); ok && named != nil && p.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
				out := m.goneFrom(named)
				named = nil
				return append(out, ev), nil
			}
		}
		return []watch.Event{ev}, nil
	}
}

// goneFrom returns DELETED events for the nodes the reflector knows that
// named lacks.
func (m *Manager) goneFrom(named map[string]bool) []watch.Event {
	m.knownMu.Lock()
	defer m.knownMu.Unlock()
	var out []watch.Event
	for name, uid := range m.known {
		if !named[name] {
			out = append(out, watch.Event{Type: watch.Deleted, Object: &PeerNode{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid}}})
		}
	}
	return out
}

// trackList notes the nodes of a whole list: the reflector replaces its
// store with them.
func (m *Manager) trackList(items []PeerNode) {
	m.knownMu.Lock()
	defer m.knownMu.Unlock()
	m.known = make(map[string]types.UID, len(items))
	for i := range items {
		m.known[items[i].Name] = items[i].UID
	}
}

// trackEvent notes one event the reflector is given. The decoder notes it
// as it hands it over: an event a stopped watch then drops stays noted,
// which costs at most one DELETED event for a node the reflector never
// held (its handler then finds nothing to do).
func (m *Manager) trackEvent(ev *watch.Event) {
	p, ok := ev.Object.(*PeerNode)
	if !ok {
		return
	}
	m.knownMu.Lock()
	defer m.knownMu.Unlock()
	switch ev.Type {
	case watch.Added, watch.Modified:
		if m.known == nil {
			m.known = map[string]types.UID{}
		}
		m.known[p.Name] = p.UID
	case watch.Deleted:
		delete(m.known, p.Name)
	}
}

// complete gives a node of the metadata watch its podCIDRs. The API server
// never lets a podCIDR change once set, so the cache's are kept when it
// holds this node (the same UID) with podCIDRs; otherwise one GET reads
// them. A node without podCIDRs yet is read again at each of its events,
// so a podCIDR set after the annotations arrives with the event of its own
// write. An error ends the watch before the event reaches the cache: the
// informer watches again from the event before and gets this one again.
func (m *Manager) complete(ctx context.Context, ev *watch.Event) error {
	p, ok := ev.Object.(*PeerNode)
	if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
		return nil
	}
	if c, ok := m.Node(p.Name); ok && c.UID == p.UID && len(c.PodCIDRs) > 0 {
		p.PodCIDRs = c.PodCIDRs
		return nil
	}
	n, err := m.api.GetNode(ctx, p.Name)
	switch {
	case apierrors.IsNotFound(err):
		return nil // deleted since: its DELETED event follows
	case err != nil:
		return fmt.Errorf("reading node %s for its podCIDRs: %w", p.Name, err)
	}
	m.rec.APIContact()
	m.fetched.Add(1)
	if n.UID == p.UID { // else deleted and made again since: its events follow
		p.PodCIDRs = m.ann.Strip(n).PodCIDRs
	}
	return nil
}

// fixingDecoder is a watch decoder whose every event (bookmarks included,
// which the informer's handlers never see) calls seen, then fix, which says
// which events to return instead; sent sees each one returned. When fix
// fails, the stream ends as if closed (logged to log), so the reflector
// watches again from the last event it got.
type fixingDecoder struct {
	in    watch.Decoder
	seen  func()
	fix   func(watch.Event) ([]watch.Event, error)
	sent  func(*watch.Event)
	log   logrus.FieldLogger
	queue []watch.Event
}

// Decode implements watch.Decoder.
func (d *fixingDecoder) Decode() (watch.EventType, runtime.Object, error) {
	for len(d.queue) == 0 {
		typ, obj, err := d.in.Decode()
		if err != nil {
			return "", nil, err
		}
		d.seen()
		if d.queue, err = d.fix(watch.Event{Type: typ, Object: obj}); err != nil {
			d.log.WithError(err).Warn("ending the node watch to start it again")
			return "", nil, io.EOF
		}
	}
	ev := d.queue[0]
	d.queue = d.queue[1:]
	d.sent(&ev)
	return ev.Type, ev.Object, nil
}

// Close implements watch.Decoder.
func (d *fixingDecoder) Close() { d.in.Close() }

// relayedWatch is a watch whose every event (bookmarks included, which the
// informer's handlers never see) calls seen, then fix, on its way to the
// reflector.
type relayedWatch struct {
	in   watch.Interface
	out  chan watch.Event
	done chan struct{}
	once sync.Once
}

// tap returns w with seen called for each of its events.
func tap(w watch.Interface, seen func()) watch.Interface {
	return relay(w, seen, func(ev watch.Event) ([]watch.Event, error) { return []watch.Event{ev}, nil }, nil, nil)
}

// relay passes w's events through m's bookkeeping and fix.
func (m *Manager) relay(w watch.Interface, fix func(watch.Event) ([]watch.Event, error)) watch.Interface {
	return relay(w, m.rec.APIContact, fix, m.trackEvent, m.log)
}

// relay returns w with seen, then fix, called for each of its events; fix
// says which events to pass on instead, and sent sees each one passed on
// (if not nil). When fix fails, the event is dropped and the watch ends
// (logged to log), so the reflector watches again from the last event it
// got.
func relay(w watch.Interface, seen func(), fix func(watch.Event) ([]watch.Event, error), sent func(*watch.Event), log logrus.FieldLogger) watch.Interface {
	t := &relayedWatch{in: w, out: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(t.out)
		for ev := range w.ResultChan() {
			seen()
			evs, err := fix(ev)
			if err != nil {
				log.WithError(err).Warn("ending the node watch to start it again")
				w.Stop()
				return
			}
			for i := range evs {
				select {
				case t.out <- evs[i]:
				case <-t.done:
					return
				}
				if sent != nil {
					sent(&evs[i])
				}
			}
		}
	}()
	return t
}

// ResultChan implements watch.Interface.
func (t *relayedWatch) ResultChan() <-chan watch.Event { return t.out }

// Stop implements watch.Interface. The forwarding goroutine ends even when
// nobody reads the last event.
func (t *relayedWatch) Stop() {
	t.once.Do(func() { close(t.done) })
	t.in.Stop()
}
