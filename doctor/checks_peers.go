package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
)

// Prober sends the active probes. Both methods must return by ctx's
// deadline.
type Prober interface {
	// Ping sends ICMP echo requests to every target at once and returns
	// those that answered.
	Ping(ctx context.Context, targets []netip.Addr) (map[netip.Addr]bool, error)
	// Connect opens a TCP connection to addr and reports whether the far
	// end answered at all: accepted or refused, either means TCP gets
	// through.
	Connect(ctx context.Context, addr netip.AddrPort) bool
}

// wanted is one peer's expected entries in one family.
type wanted struct {
	peer    *lease.Lease
	net     lease.Net
	entries backend.Entries
}

// expected computes every peer's entries in plane p with the backend's own
// Entries; unreachable names the peers the backend cannot program, bad
// those whose published data is broken.
func (s *state) expected(p *plane) (want []wanted, unreachable, bad []string) {
	for _, l := range s.peers {
		n, ok := l.Net(p.fam)
		if !ok {
			continue
		}
		es, err := p.be.Entries(l, n)
		var de *backend.DataError
		switch {
		case errors.As(err, &de):
			bad = append(bad, fmt.Sprintf("%s: %v", l.Node, err))
		case err != nil:
			unreachable = append(unreachable, fmt.Sprintf("%s: %v", l.Node, err))
		default:
			want = append(want, wanted{peer: l, net: n, entries: es})
		}
	}
	return want, unreachable, bad
}

// checkPeerEntries: the kernel holds every peer's route, neighbour and
// FDB entries as the backend computes them, and no stale ones.
func (s *state) checkPeerEntries(context.Context) {
	if s.peersErr != nil || len(s.planes) == 0 {
		why := "needs the peers from the API server and this node's backend"
		if s.peersErr != nil {
			why = "needs the peers: " + s.peersErr.Error()
		}
		s.add(Finding{Check: "peer-entries", Status: Skip, Summary: why})
		return
	}
	for _, p := range s.planes {
		f := Finding{Check: "peer-entries", Family: s.famLabel(p.fam), Status: OK}
		if p.be == nil || p.checkErr != nil || len(p.diffs) > 0 {
			f.Status, f.Summary = Skip, "needs the backend's devices (see device)"
			s.add(f)
			continue
		}
		want, unreachable, bad := s.expected(p)
		held, err := s.held(p.be.Scope())
		if err != nil {
			f.Status, f.Summary = Fail, "reading the kernel's entries: "+err.Error()
			s.add(f)
			continue
		}
		total := 0
		wantKeys := map[kernel.Key]bool{}
		var wrong []string
		for _, w := range want {
			for _, e := range w.entries {
				total++
				wantKeys[e.Key()] = true
				h, ok := held[e.Key()]
				switch {
				case !ok:
					wrong = append(wrong, fmt.Sprintf("missing %s (peer %s)", e, w.peer.Node))
				case !h.Equal(e):
					wrong = append(wrong, fmt.Sprintf("wrong %s, want %s (peer %s)", h, e, w.peer.Node))
				}
			}
		}
		var stale []string
		for key, e := range held {
			if !wantKeys[key] {
				stale = append(stale, e.String())
			}
		}
		sort.Strings(stale)
		switch {
		case len(wrong) > 0:
			f.Status = Fail
			f.Summary = fmt.Sprintf("%d of %d peer entries missing or wrong: pods here cannot reach those peers' pods", len(wrong), total)
			f.Details = first(wrong, 5)
			f.Fix = "flanneld puts them back at its next full reconcile (--resync-period, default 1m; a deleted route at once); if they stay wrong while it runs, its log says why"
		case len(stale) > 0:
			f.Status = Warn
			f.Summary = fmt.Sprintf("%d peers' %d entries right, but %d entries of no peer remain", len(want), total, len(stale))
			f.Details = first(stale, 5)
			f.Fix = "flanneld removes them at its next full reconcile; entries of a node deleted while flanneld was down are among them"
		default:
			f.Summary = fmt.Sprintf("%d peers, %d entries, all as flanneld programs them", len(want), total)
		}
		if len(unreachable)+len(bad) > 0 {
			if f.Status == OK {
				f.Status = Warn
			}
			f.Details = append(f.Details, first(append(bad, unreachable...), 5)...)
			if f.Fix == "" {
				f.Fix = "those peers get no entries; see the Warning events on their Nodes"
			}
		}
		s.add(f)
	}
}

// held reads the kernel's entries in scope, by key.
func (s *state) held(scope backend.Scope) (map[kernel.Key]kernel.Entry, error) {
	out := map[kernel.Key]kernel.Entry{}
	for _, o := range scope {
		es, err := s.o.Kernel.List(o.Kind, o.Family, o.Link)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if o.Owns(e) {
				out[e.Key()] = e
			}
		}
	}
	return out, nil
}

// overlayAddr is the address a peer answers on inside the overlay: the one
// its neighbour entry names (vxlan: its VTEP). Peers reached without a
// tunnel (host-gw, DirectRouting) have none.
func overlayAddr(es backend.Entries) (netip.Addr, bool) {
	for _, e := range es {
		if n, ok := e.(kernel.Neigh); ok {
			return n.IP, true
		}
	}
	return netip.Addr{}, false
}

// checksumSample is how many peers reachable over the overlay the
// checksum-offload check opens TCP connections to.
const checksumSample = 3

// checkReachability pings every peer's overlay address at once; a peer
// that does not answer is pinged on the underlay to tell a blocked tunnel
// from a node that is down. Then TCP over the overlay to a few peers that
// answered detects the checksum-offload fault.
func (s *state) checkReachability(ctx context.Context) {
	if s.o.Prober == nil {
		s.add(Finding{Check: "reachability", Status: Skip, Summary: "probes are off (--probe=false)"})
		return
	}
	if s.peersErr != nil || len(s.planes) == 0 {
		s.add(Finding{Check: "reachability", Status: Skip, Summary: "needs the peers and this node's backend"})
		return
	}
	for _, p := range s.planes {
		if p.be == nil || p.checkErr != nil || len(p.diffs) > 0 {
			s.add(Finding{Check: "reachability", Family: s.famLabel(p.fam), Status: Skip, Summary: "needs the backend's devices (see device)"})
			continue
		}
		want, _, _ := s.expected(p)
		s.reach(ctx, p, want)
	}
}

// reach probes one family's peers.
func (s *state) reach(ctx context.Context, p *plane, want []wanted) {
	f := Finding{Check: "reachability", Family: s.famLabel(p.fam), Status: OK}
	byAddr := map[netip.Addr]wanted{}
	var overlay []netip.Addr
	var direct []netip.Addr
	for _, w := range want {
		if a, ok := overlayAddr(w.entries); ok {
			byAddr[a] = w
			overlay = append(overlay, a)
		} else {
			byAddr[w.net.PublicIP] = w
			direct = append(direct, w.net.PublicIP)
		}
	}
	if len(overlay)+len(direct) == 0 {
		f.Summary = "no peers to probe"
		s.add(f)
		return
	}
	// The probe time is shared out: 40% for every peer over the overlay,
	// 30% for the underlay of those that did not answer, 30% for TCP.
	phase := func(share int) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, s.o.ProbeTimeout*time.Duration(share)/10)
	}
	pctx, cancel := phase(4)
	answered, err := s.o.Prober.Ping(pctx, append(append([]netip.Addr{}, overlay...), direct...))
	cancel()
	if err != nil {
		f.Status, f.Summary = Skip, "cannot send pings: "+err.Error()
		f.Fix = "doctor needs CAP_NET_RAW (the DaemonSet's container has it)"
		s.add(f)
		return
	}
	var silent []netip.Addr
	var under []netip.Addr
	for _, a := range append(append([]netip.Addr{}, overlay...), direct...) {
		if !answered[a] {
			silent = append(silent, a)
			under = append(under, byAddr[a].net.PublicIP)
		}
	}
	underAnswered := map[netip.Addr]bool{}
	if len(under) > 0 {
		uctx, cancel := phase(3)
		underAnswered, _ = s.o.Prober.Ping(uctx, under)
		cancel()
	}
	var lines []string
	blocked := 0
	for _, a := range silent {
		w := byAddr[a]
		pub := w.net.PublicIP
		how := "over the overlay"
		if !slices.Contains(overlay, a) {
			how = "on its node address"
		}
		line := fmt.Sprintf("%s (%s, public IP %s): no answer %s", w.peer.Node, a, pub, how)
		switch {
		case a == pub:
			line += "; the node is down, or the network between the nodes drops it"
		case underAnswered[pub]:
			blocked++
			line += fmt.Sprintf("; the underlay reaches %s, so %s between the nodes is blocked or the peer's device is broken", pub, s.tunnel(p))
		default:
			line += fmt.Sprintf("; the underlay does not reach %s either: the node is down or unreachable", pub)
		}
		lines = append(lines, line)
	}
	reached := len(overlay) + len(direct) - len(silent)
	if len(silent) > 0 {
		f.Status = Fail
		f.Summary = fmt.Sprintf("%d of %d peers do not answer", len(silent), len(overlay)+len(direct))
		f.Details = first(lines, 5)
		if blocked > 0 {
			f.Fix = fmt.Sprintf("allow %s between the nodes' addresses (cloud security groups, host firewalls); run doctor on the peer too", s.tunnel(p))
		} else {
			f.Fix = "check those nodes (kubectl get nodes) and the route to them from here"
		}
	} else {
		f.Summary = fmt.Sprintf("all %d peers answer (%d over the overlay)", reached, len(overlay))
	}
	s.add(f)
	tctx, cancel := phase(3)
	defer cancel()
	s.checkChecksum(tctx, p, overlay, answered, byAddr)
}

// checkChecksum detects the VXLAN checksum-offload fault (flannel #1279,
// #2152): pings cross the overlay (ICMP checksums are computed in
// software) while TCP does not (its checksum is left to an offload that
// some NICs and hypervisors get wrong), though TCP on the underlay works.
func (s *state) checkChecksum(ctx context.Context, p *plane, overlay []netip.Addr, answered map[netip.Addr]bool, byAddr map[netip.Addr]wanted) {
	f := Finding{Check: "checksum-offload", Family: s.famLabel(p.fam), Status: OK}
	defer func() { s.add(f) }()
	var sample []netip.Addr
	for _, a := range overlay {
		if answered[a] && len(sample) < checksumSample {
			sample = append(sample, a)
		}
	}
	switch {
	case len(overlay) == 0:
		f.Summary = "no peer is reached through a tunnel"
		return
	case len(sample) == 0 || s.o.ProbePort == 0:
		f.Status, f.Summary = Skip, "needs a peer that answers over the overlay"
		return
	}
	port := uint16(s.o.ProbePort)
	type result struct{ overlay, underlay bool }
	results := make([]result, len(sample))
	var wg sync.WaitGroup
	// Both connections of every sampled peer at once: one that is
	// dropped takes the whole deadline.
	for i, a := range sample {
		wg.Add(2)
		go func() {
			defer wg.Done()
			results[i].overlay = s.o.Prober.Connect(ctx, netip.AddrPortFrom(a, port))
		}()
		go func() {
			defer wg.Done()
			results[i].underlay = s.o.Prober.Connect(ctx, netip.AddrPortFrom(byAddr[a].net.PublicIP, port))
		}()
	}
	wg.Wait()
	var broken []string
	underlayOK := false
	for i, r := range results {
		if r.overlay {
			f.Summary = fmt.Sprintf("TCP crosses the overlay (to %s port %d)", byAddr[sample[i]].peer.Node, port)
			return
		}
		if r.underlay {
			underlayOK = true
			broken = append(broken, fmt.Sprintf("%s: ping over the overlay works, TCP to %s:%d does not, TCP to %s:%d does", byAddr[sample[i]].peer.Node, sample[i], port, byAddr[sample[i]].net.PublicIP, port))
		}
	}
	if !underlayOK {
		f.Status, f.Summary = Skip, fmt.Sprintf("cannot tell: TCP port %d of the peers answers neither over the overlay nor on the underlay (a firewall?); --probe-port picks another", port)
		return
	}
	dev := "flannel.1"
	if devs := p.be.Devices(); len(devs) > 0 {
		dev = devs[0]
	}
	f.Status = Fail
	f.Summary = "pings cross the overlay but TCP does not: the VXLAN checksum-offload fault (flannel #1279)"
	f.Details = first(broken, 3)
	f.Fix = fmt.Sprintf("ethtool -K %s tx-checksum-ip-generic off on every node (persist it, e.g. in a udev rule or systemd unit). It costs throughput where offload works: bench/RESULTS.md measured pod-to-pod TCP at 1.53 instead of 8.16 Gbit/s (-81%%) with it off, so turn it off only where this fault shows", dev)
}
