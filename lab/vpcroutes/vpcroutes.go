// Package vpcroutes plays a cloud's route table for the lab, as a cloud
// route controller does for GKE routes-based clusters or
// kube-controller-manager's --configure-cloud-routes: the underlay keeps a
// route to every Node's podCIDR via that Node's address, so hosts on the
// underlay that are not nodes reach pods by their own addresses, as in a
// VPC-native cluster. It follows Nodes as they come and go, level-triggered:
// every change, and a periodic resync, reconciles the whole table.
package vpcroutes

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Protocol marks the routes this package owns in the route table (rtnetlink
// protocol numbers above 4 are free for routing daemons; 0x74 is 't').
const Protocol = netlink.RouteProtocol(0x74)

// Route is one entry of the table: Dst via Via.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Desired returns the routes the nodes call for: each podCIDR via the
// node's InternalIP of the same family. Nodes without either are left out.
func Desired(nodes []*corev1.Node) []Route {
	var out []Route
	for _, n := range nodes {
		var ips []netip.Addr
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ips = append(ips, ip)
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			for _, ip := range ips {
				if ip.Is4() == p.Addr().Is4() {
					out = append(out, Route{Dst: p.Masked(), Via: ip})
					break
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	return out
}

// Diff returns what to put in (new or changed routes) and what to take out
// of a table holding have to make it hold want.
func Diff(have, want []Route) (put, remove []Route) {
	byDst := map[netip.Prefix]Route{}
	for _, r := range want {
		byDst[r.Dst] = r
	}
	for _, h := range have {
		if w, ok := byDst[h.Dst]; !ok {
			remove = append(remove, h)
		} else if w == h {
			delete(byDst, h.Dst)
		}
	}
	for _, w := range want {
		if _, ok := byDst[w.Dst]; ok {
			put = append(put, w)
		}
	}
	return put, remove
}

// Table is a route table holding the routes of this package.
type Table interface {
	List() ([]Route, error)
	Replace(Route) error
	Delete(Route) error
}

// Reconcile makes t hold exactly want.
func Reconcile(t Table, want []Route) (put, remove []Route, err error) {
	have, err := t.List()
	if err != nil {
		return nil, nil, err
	}
	put, remove = Diff(have, want)
	for _, r := range put {
		if err := t.Replace(r); err != nil {
			return put, remove, fmt.Errorf("adding route %s: %w", r, err)
		}
	}
	for _, r := range remove {
		if err := t.Delete(r); err != nil {
			return put, remove, fmt.Errorf("removing route %s: %w", r, err)
		}
	}
	return put, remove, nil
}

// Kernel is the main route table of a network namespace, holding the
// routes marked with Protocol.
type Kernel struct {
	// H is a netlink handle in that namespace.
	H *netlink.Handle
}

// List returns the routes marked with Protocol.
func (k Kernel) List() ([]Route, error) {
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.H.RouteListFiltered(fam, &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range rs {
			if r.Dst == nil || r.Gw == nil {
				continue
			}
			dst, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			via, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, Route{Dst: netip.PrefixFrom(dst.Unmap(), ones), Via: via.Unmap()})
		}
	}
	return out, nil
}

func toNetlink(r Route) *netlink.Route {
	dst := &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}
	return &netlink.Route{
		Dst:      dst,
		Gw:       r.Via.AsSlice(),
		Protocol: Protocol,
		Table:    unix.RT_TABLE_MAIN,
	}
}

// Replace adds r, or changes the route to r.Dst to r.
func (k Kernel) Replace(r Route) error { return k.H.RouteReplace(toNetlink(r)) }

// Delete removes r.
func (k Kernel) Delete(r Route) error { return k.H.RouteDel(toNetlink(r)) }

// Run reconciles t with the cluster's Nodes until ctx ends: on every Node
// change and every resync period. It logs each change to log.
func Run(ctx context.Context, cs kubernetes.Interface, t Table, resync time.Duration, log io.Writer) error {
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, DeleteFunc: poke, UpdateFunc: func(_, n any) { poke(n) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return fmt.Errorf("the Node informer did not sync: %w", ctx.Err())
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		nodes, err := inf.Lister().List(labels.Everything())
		if err == nil {
			var put, remove []Route
			put, remove, err = Reconcile(t, Desired(nodes))
			for _, r := range put {
				fmt.Fprintf(log, "route %s\n", r)
			}
			for _, r := range remove {
				fmt.Fprintf(log, "removed route %s\n", r)
			}
		}
		if err != nil {
			fmt.Fprintf(log, "reconcile: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-tick.C:
		}
	}
}
