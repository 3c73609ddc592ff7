// Package trace follows probe packets through a running lab, hop by hop:
// it plans the path from the kernel's own state in each namespace the
// packet crosses (route lookups, neighbours, FDB entries, VXLAN devices,
// conntrack's NAT), captures the probes on every interface of that plan at
// once with tcpdump, and returns the path (lab/trace/path) with what each
// hop's capture saw. A hop the plan cannot get past (no route, no FDB
// entry) or whose capture saw nothing is where the path breaks.
//
// It runs ip, bridge, conntrack and tcpdump in the lab's namespaces rather
// than asking netlink itself: their commands and output are the evidence a
// learner can run again by hand.
package trace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/trace/path"
)

// Options say what to trace.
type Options struct {
	// Src and Dst are pod names (ns/name, or name in "default" or any
	// namespace when unique), node names, IPv4 addresses, or "internet".
	Src, Dst string
	// Proto is icmp (default), tcp or udp; Port the destination port of
	// tcp and udp probes.
	Proto string
	Port  int
	// Probes is how many probes to send; default 3.
	Probes int
}

// maxHops bounds a walk: a lab path has about a dozen.
const maxHops = 24

// Run traces o's probes through the lab c.
func Run(ctx context.Context, c *lab.Cluster, o Options) (*path.Path, error) {
	if o.Proto == "" {
		o.Proto = "icmp"
	}
	if o.Probes == 0 {
		o.Probes = 3
	}
	switch {
	case o.Proto != "icmp" && o.Proto != "tcp" && o.Proto != "udp":
		return nil, fmt.Errorf("--proto %q: want icmp, tcp or udp", o.Proto)
	case o.Proto != "icmp" && (o.Port < 1 || o.Port > 65535):
		return nil, fmt.Errorf("--proto %s needs --port 1-65535", o.Proto)
	case o.Proto == "icmp" && o.Port != 0:
		return nil, errors.New("--port is for --proto tcp or udp")
	case o.Probes < 1 || o.Probes > 20:
		return nil, fmt.Errorf("--probes %d: want 1 to 20", o.Probes)
	}
	if c.Family() != lab.IPv4 {
		return nil, fmt.Errorf("lab %s is %s: trace follows IPv4 only so far", c.Name, c.Family())
	}
	t, err := newTracer(ctx, c, o)
	if err != nil {
		return nil, err
	}
	return t.run(ctx)
}

// tracer holds one trace's lab, address book and plan.
type tracer struct {
	c    *lab.Cluster
	o    Options
	book *book
	src  *place
	dst  *place
	// srcIP, dstIP are the probe's addresses as sent.
	srcIP, dstIP net.IP
}

func newTracer(ctx context.Context, c *lab.Cluster, o Options) (*tracer, error) {
	b, err := newBook(ctx, c)
	if err != nil {
		return nil, err
	}
	t := &tracer{c: c, o: o, book: b}
	if t.src, t.srcIP, err = b.resolve(ctx, o.Src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if t.src == nil {
		return nil, fmt.Errorf("source %s: no namespace of lab %s has that address; a source must be a pod, a node, internet or the lab's VM", o.Src, c.Name)
	}
	if t.src.Kind == path.Node && net.ParseIP(o.Src) == nil {
		// A node named as the source sends from the address its kernel
		// picks for the route (through VXLAN: flannel.1's, not eth0's),
		// as the probe's ping does; run asks the kernel.
		t.srcIP = nil
	}
	if t.dst, t.dstIP, err = b.resolve(ctx, o.Dst); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	return t, nil
}

// nat is a source translation seen on the way out.
type nat struct {
	at       *place
	from, to string
}

func (t *tracer) run(ctx context.Context) (*path.Path, error) {
	if t.srcIP == nil {
		r, _, err := t.src.routeGet(ctx, t.dstIP.String(), "", "")
		if err != nil {
			return nil, fmt.Errorf("%s has no route to %s: %w", t.src, t.dstIP, err)
		}
		t.srcIP = net.ParseIP(r.PrefSrc)
		if t.srcIP == nil {
			return nil, fmt.Errorf("%s picks no source address for %s (route %s)", t.src, t.dstIP, r.describe())
		}
	}
	p := &path.Path{Src: t.src.Place, SrcIP: t.srcIP.String(), DstIP: t.dstIP.String(),
		Proto: t.o.Proto, Port: t.o.Port, Probes: t.o.Probes}
	if t.dst != nil {
		p.Dst = t.dst.Place
	} else {
		p.Dst = path.Place{Kind: "address", Name: t.dstIP.String()}
	}
	// One probe first: ARP resolves and conntrack makes the entry whose
	// NAT the plan reads; the captured probes come after.
	_ = t.probe(ctx, 1)

	req, n := t.walk(ctx, path.Request, t.src, t.srcIP.String(), t.dstIP.String(), nil)
	p.Hops = append(p.Hops, req...)
	whole := len(req) > 0 && req[len(req)-1].Missing == "" && t.dst != nil && req[len(req)-1].Place == t.dst.Place
	if whole {
		back := t.srcIP.String()
		if n != nil {
			back = n.to
		}
		rep, _ := t.walk(ctx, path.Reply, t.dst, t.dstIP.String(), back, n)
		p.Hops = append(p.Hops, rep...)
		p.Notes = append(p.Notes, compareReply(req, rep)...)
	}
	if err := t.capture(ctx, p); err != nil {
		return p, err
	}
	if !p.Judge() {
		t.explainDrop(ctx, p)
	}
	return p, nil
}

// walk plans the hops of a packet from src to dst starting in place from,
// following each namespace's route lookup to the next one, until the
// packet is delivered or the plan cannot go on (the last hop then says
// what is missing). un, on the reply walk, is the request's translation to
// undo where it was made; walk returns the translation it met.
func (t *tracer) walk(ctx context.Context, dir path.Direction, from *place, src, dst string, un *nat) ([]path.Hop, *nat) {
	var hops []path.Hop
	var met *nat
	cur, iif := from, ""
	add := func(h path.Hop) *path.Hop {
		h.Dir, h.Place = dir, cur.Place
		if h.Src == "" {
			h.Src, h.Dst = src, dst
		}
		hops = append(hops, h)
		return &hops[len(hops)-1]
	}
	for len(hops) < maxHops {
		var in *path.Hop
		if iif != "" {
			in = add(path.Hop{Interface: iif, In: true, Action: "arrives", Captured: true})
			if un != nil && un.at == cur && dst == un.to {
				in.NAT = fmt.Sprintf("conntrack reverses the masquerade: destination %s → %s", un.to, un.from)
				dst = un.from
			}
		}
		if cur.owns(dst) {
			if in == nil {
				in = add(path.Hop{Interface: "lo", In: true, Action: "local"})
			}
			in.Action = "delivered: " + dst + " is this namespace's address"
			return hops, met
		}
		r, ev, err := cur.routeGet(ctx, dst, src, iif)
		if in != nil {
			in.Evidence = append(in.Evidence, ev)
		}
		if err != nil {
			h := in
			if h == nil {
				h = add(path.Hop{Interface: "-", Action: "route lookup", Evidence: []path.Evidence{ev}})
			}
			h.Missing = fmt.Sprintf("no route to %s in %s: %v", dst, cur, err)
			return hops, met
		}
		if in != nil {
			in.Action = "arrives; route lookup: " + r.describe()
		}
		if r.Type == "local" {
			in.Action = "delivered: " + dst + " is local"
			return hops, met
		}
		out := path.Hop{Interface: r.Dev, Action: "sent: " + r.describe(), Captured: true}
		if in == nil {
			out.Evidence = append(out.Evidence, ev)
		}
		nh := r.Gateway
		if nh == "" {
			nh = dst
		}
		lk, lev, err := cur.link(ctx, r.Dev)
		if err != nil {
			out.Missing = fmt.Sprintf("cannot read device %s in %s: %v", r.Dev, cur, err)
			add(out)
			return hops, met
		}
		if lk.Kind == "vxlan" {
			next, vx, ok := t.vxlan(ctx, cur, r, nh, lk, lev, &out)
			add(out)
			if !ok {
				return hops, met
			}
			outer := out.Adds
			ro, rev, err := cur.routeGet(ctx, outer.Dst, outer.Src, "")
			o := path.Hop{Interface: ro.Dev, Outer: outer, Tunnel: true, Captured: true,
				Action: fmt.Sprintf("outer packet sent: %s", ro.describe()), Evidence: []path.Evidence{rev}}
			if err != nil {
				o.Interface, o.Captured = "-", false
				o.Missing = fmt.Sprintf("no route to the peer's VTEP %s in %s: %v", outer.Dst, cur, err)
				add(o)
				return hops, met
			}
			add(o)
			if ro.Gateway != "" {
				// The peer is on another subnet: the underlay routes the
				// outer packet.
				hops = append(hops, t.underlayRoutes(ctx, dir, ro.Gateway, outer, src, dst)...)
			} else if sw := t.book.switched(cur, ro.Dev, outer.Dst); sw != nil {
				hops = append(hops, path.Hop{Dir: dir, Place: sw.place.Place, Interface: sw.dev, In: true, Src: src, Dst: dst,
					Outer: outer, Tunnel: true, Captured: true, Action: "switched by the underlay bridge (layer 2: the node's frame to the peer's MAC)"})
			}
			cur, iif = next, "eth0"
			add(path.Hop{Interface: "eth0", In: true, Outer: outer, Tunnel: true, Captured: true,
				Action: fmt.Sprintf("outer packet arrives: udp/%d is %s's port, decapsulated (VNI %d)", outer.Port, vx, outer.VNI)})
			iif = vx
			continue
		}
		t.neighEvidence(ctx, cur, nh, r.Dev, &out)
		if cur.Kind == path.Node && dir == path.Request {
			if line, to := cur.conntrackSNAT(ctx, t.o.Proto, src, dst); to != "" && to != src {
				out.NAT = fmt.Sprintf("masquerade: source %s → %s", src, to)
				out.Evidence = append(out.Evidence, path.Evidence{Command: fmt.Sprintf("conntrack -L -p %s -s %s -d %s", t.o.Proto, src, dst), Output: line})
				met = &nat{at: cur, from: src, to: to}
				src = to
			}
		}
		out.Src, out.Dst = src, dst
		add(out)
		next := t.book.owner(ctx, nh)
		if next == nil {
			hops[len(hops)-1].Missing = fmt.Sprintf("the next hop %s is no namespace of the lab: nothing there forwards or answers", nh)
			return hops, met
		}
		if sw := t.book.switched(cur, r.Dev, nh); sw != nil && sw.place != next.place {
			add2 := path.Hop{Dir: dir, Place: sw.place.Place, Interface: sw.dev, In: true, Src: src, Dst: dst, Captured: true,
				Action: "switched by the underlay bridge (layer 2: to the next hop's MAC)"}
			hops = append(hops, add2)
		}
		cur, iif = next.place, next.dev
	}
	hops[len(hops)-1].Missing = fmt.Sprintf("more than %d hops: a routing loop?", maxHops)
	return hops, met
}

// underlayRoutes are the hops of an outer packet the underlay routes
// between its subnets: in on the bridge holding the gateway gw, out on the
// one its route lookup picks.
func (t *tracer) underlayRoutes(ctx context.Context, dir path.Direction, gw string, outer *path.Outer, src, dst string) []path.Hop {
	u := t.book.under
	o := t.book.owner(ctx, gw)
	if o == nil || o.place != u {
		return nil
	}
	in := path.Hop{Dir: dir, Place: u.Place, Interface: o.dev, In: true, Src: src, Dst: dst, Outer: outer, Tunnel: true, Captured: true}
	r, ev, err := u.routeGet(ctx, outer.Dst, outer.Src, o.dev)
	in.Evidence = []path.Evidence{ev}
	if err != nil {
		in.Missing = fmt.Sprintf("the underlay has no route to %s: %v", outer.Dst, err)
		return []path.Hop{in}
	}
	in.Action = "outer packet arrives at the underlay's gateway; route lookup: " + r.describe()
	out := path.Hop{Dir: dir, Place: u.Place, Interface: r.Dev, Src: src, Dst: dst, Outer: outer, Tunnel: true, Captured: true,
		Action: "outer packet routed to the peer's subnet: " + r.describe()}
	return []path.Hop{in, out}
}

// vxlan fills the hop that leaves through VXLAN device lk: the neighbour
// entry of the next hop nh gives the peer VTEP's MAC, the FDB entry of
// that MAC the peer's address. It returns the peer's namespace and its
// VXLAN device, or ok false when an entry is missing (h says which).
func (t *tracer) vxlan(ctx context.Context, cur *place, r route, nh string, lk link, lev path.Evidence, h *path.Hop) (next *place, vx string, ok bool) {
	h.Action = "sent to the VXLAN device: " + r.describe()
	ns, nev, err := cur.neigh(ctx, nh, r.Dev)
	h.Evidence = append(h.Evidence, nev)
	if err != nil || len(ns) == 0 || ns[0].LLAddr == "" {
		h.Missing = fmt.Sprintf("no neighbour entry for %s on %s in %s: the kernel does not know the peer VTEP's MAC (flanneld adds one per peer; %s is NOARP)", nh, r.Dev, cur, r.Dev)
		return nil, "", false
	}
	mac := ns[0].LLAddr
	fs, fev, err := cur.fdb(ctx, r.Dev, mac)
	h.Evidence = append(h.Evidence, fev)
	dst := fdbDst(fs, mac)
	if err != nil || dst == "" {
		h.Missing = fmt.Sprintf("no FDB entry for %s on %s in %s: the kernel does not know which node has that VTEP, so it drops the packet (flanneld adds one per peer)", mac, r.Dev, cur)
		return nil, "", false
	}
	h.Evidence = append(h.Evidence, lev)
	h.Adds = &path.Outer{Src: lk.Local, Dst: dst, Port: lk.Port, VNI: lk.VNI}
	h.Action = fmt.Sprintf("encapsulated by %s: neighbour %s is %s, FDB sends %s to %s", r.Dev, nh, mac, mac, dst)
	o := t.book.owner(ctx, dst)
	if o == nil {
		h.Missing = fmt.Sprintf("the FDB entry sends %s to %s, which is no node of the lab", mac, dst)
		return nil, "", false
	}
	vx, err = o.place.vxlanDev(ctx, lk.Port)
	if err != nil {
		h.Missing = fmt.Sprintf("%s: %v", o.place, err)
		return nil, "", false
	}
	return o.place, vx, true
}

// neighEvidence adds the neighbour entry of nh on dev to h, when there is
// one (on a broadcast link ARP makes one when it is missing).
func (t *tracer) neighEvidence(ctx context.Context, cur *place, nh, dev string, h *path.Hop) {
	if dev == "lo" {
		return
	}
	ns, ev, err := cur.neigh(ctx, nh, dev)
	if err == nil && len(ns) > 0 {
		h.Evidence = append(h.Evidence, ev)
		h.Action += fmt.Sprintf("; neighbour %s is %s", nh, ns[0].LLAddr)
	}
}

// compareReply notes where the reply does not retrace the request.
func compareReply(req, rep []path.Hop) []string {
	key := func(h path.Hop) string { return h.Place.String() + " " + h.Interface }
	var fwd []string
	for _, h := range req {
		fwd = append(fwd, key(h))
	}
	var back []string
	for i := len(rep) - 1; i >= 0; i-- {
		back = append(back, key(rep[i]))
	}
	if strings.Join(fwd, ",") == strings.Join(back, ",") {
		return []string{"the reply retraces the request's hops in reverse"}
	}
	return []string{fmt.Sprintf("the reply takes other hops than the request: request %s; reply (reversed) %s", strings.Join(fwd, " → "), strings.Join(back, " → "))}
}

// probe sends n probes from the source to the destination.
func (t *tracer) probe(ctx context.Context, n int) error {
	d := t.dstIP.String()
	var argv []string
	switch t.o.Proto {
	case "icmp":
		argv = []string{"ping", "-n", "-c", fmt.Sprint(n), "-i", "0.2", "-W", "1", d}
	case "tcp":
		argv = []string{"bash", "-c", fmt.Sprintf(`for i in $(seq %d); do timeout 1 bash -c ': </dev/tcp/%s/%d' 2>/dev/null; sleep 0.2; done; true`, n, d, t.o.Port)}
	case "udp":
		argv = []string{"bash", "-c", fmt.Sprintf(`for i in $(seq %d); do echo twill-trace >/dev/udp/%s/%d; sleep 0.2; done; true`, n, d, t.o.Port)}
	}
	pctx, cancel := context.WithTimeout(ctx, time.Duration(n)*time.Second+5*time.Second)
	defer cancel()
	_, err := t.src.run(pctx, argv...)
	return err
}

// capture runs one tcpdump on every interface the plan crosses, all at
// once, sends the probes once every one listens, and gives each hop the
// packets of its direction.
func (t *tracer) capture(ctx context.Context, p *path.Path) error {
	type key struct {
		pl  *place
		dev string
	}
	var keys []key
	hopsOf := map[key][]int{}
	for i, h := range p.Hops {
		if !h.Captured {
			continue
		}
		pl := t.book.placeOf(h.Place)
		if pl == nil {
			continue
		}
		k := key{pl, h.Interface}
		if _, ok := hopsOf[k]; !ok {
			keys = append(keys, k)
		}
		hopsOf[k] = append(hopsOf[k], i)
	}
	secs := t.o.Probes + 4
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs+10)*time.Second)
	defer cancel()
	outs := make([]string, len(keys))
	errs := make([]error, len(keys))
	var listening, done sync.WaitGroup
	for i, k := range keys {
		var filters []string
		for _, hi := range hopsOf[k] {
			filters = append(filters, t.filter(p.Hops[hi]))
		}
		argv := []string{"timeout", "-s", "INT", fmt.Sprint(secs), "tcpdump", "-nn", "-l", "-i", k.dev,
			"-c", fmt.Sprint(2 * t.o.Probes * len(hopsOf[k])), strings.Join(filters, " or ")}
		cmd := k.pl.command(cctx, argv...)
		listening.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			outs[i], errs[i] = runCapture(cmd, listening.Done)
		}()
	}
	listening.Wait()
	perr := t.probe(ctx, t.o.Probes)
	done.Wait()
	for i, k := range keys {
		if errs[i] != nil {
			return fmt.Errorf("capturing on %s in %s: %w", k.dev, k.pl, errs[i])
		}
		pkts := parseCapture(outs[i])
		for _, hi := range hopsOf[k] {
			h := &p.Hops[hi]
			for _, pk := range pkts {
				if matches(*h, pk) {
					h.Seen = append(h.Seen, pk.Text)
				}
			}
		}
	}
	if perr != nil && p.Break == nil {
		p.Notes = append(p.Notes, fmt.Sprintf("the probes failed at the source: %v", perr))
	}
	return nil
}

// filter is the capture filter of one hop's probe packets.
func (t *tracer) filter(h path.Hop) string {
	proto := "icmp"
	switch t.o.Proto {
	case "tcp":
		proto = fmt.Sprintf("tcp port %d", t.o.Port)
	case "udp":
		proto = fmt.Sprintf("(udp port %d or icmp)", t.o.Port)
	}
	if h.Outer != nil {
		return fmt.Sprintf("(udp port %d and src host %s and dst host %s and udp[42:4] = 0x%s and udp[46:4] = 0x%s)",
			h.Outer.Port, h.Outer.Src, h.Outer.Dst, hexIP(h.Src), hexIP(h.Dst))
	}
	return fmt.Sprintf("(src host %s and dst host %s and %s)", h.Src, h.Dst, proto)
}

func hexIP(s string) string {
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return "00000000"
	}
	return fmt.Sprintf("%02x%02x%02x%02x", ip[0], ip[1], ip[2], ip[3])
}

// matches reports whether captured packet pk is h's probe.
func matches(h path.Hop, pk packet) bool {
	if pk.InnerSrc != h.Src || pk.InnerDst != h.Dst {
		return false
	}
	if h.Outer != nil {
		return pk.Encapsulated && pk.OuterSrc == h.Outer.Src && pk.OuterDst == h.Outer.Dst
	}
	return !pk.Encapsulated
}

// runCapture starts tcpdump, calls listening once it listens (or fails to
// start), and returns what it printed.
func runCapture(cmd *exec.Cmd, listening func()) (string, error) {
	var once sync.Once
	defer once.Do(listening)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var errText strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		errText.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "listening on") {
			once.Do(listening)
		}
	}
	_, _ = io.Copy(io.Discard, stderr)
	err = cmd.Wait()
	// timeout -s INT ends tcpdump with status 124 when fewer packets came
	// than -c asked for: that is an answer, not a failure.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 124) {
		return stdout.String(), fmt.Errorf("tcpdump: %w: %s", err, strings.TrimSpace(errText.String()))
	}
	return stdout.String(), nil
}

// podList is the part of `kubectl get pods -o json` the book needs.
type podList struct {
	Items []struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			NodeName    string `json:"nodeName"`
			HostNetwork bool   `json:"hostNetwork"`
		} `json:"spec"`
		Status struct {
			PodIP string `json:"podIP"`
		} `json:"status"`
	} `json:"items"`
}

func parsePods(out string) (podList, error) {
	var l podList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return l, fmt.Errorf("parsing kubectl get pods: %w", err)
	}
	return l, nil
}
