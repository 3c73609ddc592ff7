// Package path is the model of one traced packet path through the lab: the
// hops a probe takes from its source to its destination and back, each with
// the kernel's evidence and what the captures saw, and where the path
// breaks. It renders the path as a table for people and as JSON; it runs
// nothing itself.
package path

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Direction tells a request hop from a reply hop.
type Direction string

// The directions of a hop.
const (
	Request Direction = "request"
	Reply   Direction = "reply"
)

// Kind is what a namespace of the lab stands for.
type Kind string

// The kinds of namespace a path crosses.
const (
	Pod      Kind = "pod"
	Node     Kind = "node"
	Underlay Kind = "underlay"
	Internet Kind = "internet"
	VM       Kind = "vm"
)

// Place is one network namespace of the lab.
type Place struct {
	Kind Kind `json:"kind"`
	// Name names it: ns/name for a pod, the node name, or the namespace's
	// name for the others.
	Name string `json:"name"`
	// Node is the node a pod runs on; empty for the others.
	Node string `json:"node,omitempty"`
}

func (p Place) String() string {
	if p.Kind == Pod {
		return "pod " + p.Name
	}
	return string(p.Kind) + " " + p.Name
}

// Evidence is one piece of kernel evidence: the command run and what it
// printed that matters.
type Evidence struct {
	Command string `json:"command"`
	Output  string `json:"output"`
}

// Outer is the outer header of an encapsulated packet.
type Outer struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Port int    `json:"port"`
	VNI  int    `json:"vni"`
}

func (o Outer) String() string {
	return fmt.Sprintf("%s → %s udp/%d vni %d", o.Src, o.Dst, o.Port, o.VNI)
}

// Hop is one interface the packet is expected to cross, with what the
// kernel did there and what a capture on it saw.
type Hop struct {
	Dir   Direction `json:"direction"`
	Place Place     `json:"place"`
	// Interface is where the packet is captured; In is set when it
	// arrives there, unset when it leaves.
	Interface string `json:"interface"`
	In        bool   `json:"in"`
	// Action says what happened, e.g. "route lookup: via 10.244.1.0 dev
	// flannel.1".
	Action string `json:"action"`
	// Src and Dst are the packet's addresses here (after any NAT before
	// this hop); Outer is set where it travels encapsulated.
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Outer *Outer `json:"outer,omitempty"`
	// Adds is the outer header a tunnel device adds to the packet it
	// sends: set on the hop that encapsulates, which still sees the
	// packet bare.
	Adds *Outer `json:"adds_outer,omitempty"`
	// Tunnel is set on the hops between encapsulation and decapsulation.
	Tunnel bool `json:"tunnel,omitempty"`
	// NAT names a translation done here, e.g. "masquerade: source
	// 10.244.1.2 → 172.18.0.3".
	NAT      string     `json:"nat,omitempty"`
	Evidence []Evidence `json:"evidence,omitempty"`
	// Seen are the capture lines of the probe on this interface in this
	// direction; Captured says whether a capture ran here at all.
	Seen     []string `json:"seen,omitempty"`
	Captured bool     `json:"captured"`
	// Missing says why the packet goes no further than this hop, e.g. "no
	// FDB entry for 6a:…", empty when it does.
	Missing string `json:"missing,omitempty"`
}

// Proven reports whether a capture saw the probe on this hop.
func (h Hop) Proven() bool { return len(h.Seen) > 0 }

// Path is a traced path: the request hops from Src to Dst, then the reply
// hops back.
type Path struct {
	Src   Place  `json:"src"`
	Dst   Place  `json:"dst"`
	SrcIP string `json:"src_ip"`
	DstIP string `json:"dst_ip"`
	// Proto is icmp, tcp or udp; Port its destination port (tcp, udp).
	Proto  string `json:"proto"`
	Port   int    `json:"port,omitempty"`
	Probes int    `json:"probes"`
	Hops   []Hop  `json:"hops"`
	// Break is set when the path breaks: where and why.
	Break *Break `json:"break,omitempty"`
	// Notes are remarks on the whole path, e.g. how the reply differs.
	Notes []string `json:"notes,omitempty"`
}

// Break is where a path stops: the hop (an index into Hops) after which
// the packet is not seen, and what is missing there.
type Break struct {
	Hop    int    `json:"hop"`
	Reason string `json:"reason"`
}

// Of returns the hops of direction d, with their indexes into p.Hops.
func (p *Path) Of(d Direction) (idx []int) {
	for i, h := range p.Hops {
		if h.Dir == d {
			idx = append(idx, i)
		}
	}
	return idx
}

// Judge sets Break from the hops: the first hop that names something
// Missing, or else the first captured hop that did not see the probe (the
// packet vanished between it and the hop before). It leaves a Break already
// set alone and reports whether the path is whole.
func (p *Path) Judge() bool {
	if p.Break != nil {
		return false
	}
	for _, d := range []Direction{Request, Reply} {
		last := -1
		for _, i := range p.Of(d) {
			h := p.Hops[i]
			if h.Captured && !h.Proven() {
				reason := fmt.Sprintf("the probe was not seen on %s in %s", h.Interface, h.Place)
				if last >= 0 {
					lh := p.Hops[last]
					reason = fmt.Sprintf("seen on %s in %s, not on %s in %s: dropped in between (a firewall rule, rp_filter, MTU?)", lh.Interface, lh.Place, h.Interface, h.Place)
				}
				p.Break = &Break{Hop: i, Reason: reason}
				return false
			}
			if h.Missing != "" {
				p.Break = &Break{Hop: i, Reason: h.Missing}
				return false
			}
			if h.Proven() {
				last = i
			}
		}
	}
	return true
}

// WriteJSON writes the path as indented JSON.
func (p *Path) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteTable writes the path as a table: hop, namespace, interface, what
// happened and the evidence, one row per piece of evidence.
func (p *Path) WriteTable(w io.Writer) error {
	what := p.Proto
	if p.Port != 0 {
		what = fmt.Sprintf("%s/%d", p.Proto, p.Port)
	}
	fmt.Fprintf(w, "trace %s (%s) → %s (%s), %s, %d probes\n\n", p.Src, p.SrcIP, p.Dst, p.DstIP, what, p.Probes)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOP\tNAMESPACE\tINTERFACE\tWHAT HAPPENED\tEVIDENCE")
	n := 0
	for i, h := range p.Hops {
		if i == 0 || p.Hops[i-1].Dir != h.Dir {
			fmt.Fprintf(tw, "%s\t\t\t\t\n", strings.ToUpper(string(h.Dir)))
		}
		n++
		iface := h.Interface
		if h.In {
			iface += " (in)"
		} else {
			iface += " (out)"
		}
		action := fmt.Sprintf("%s [%s → %s]", h.Action, h.Src, h.Dst)
		if h.Outer != nil {
			action += " outer " + h.Outer.String()
		}
		if h.Adds != nil {
			action += " adds outer " + h.Adds.String()
		}
		rows := evidenceRows(h)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", n, h.Place, iface, action, rows[0])
		for _, r := range rows[1:] {
			fmt.Fprintf(tw, "\t\t\t\t%s\n", r)
		}
		if p.Break != nil && p.Break.Hop == i {
			fmt.Fprintf(tw, "\t\t\tPATH BREAKS HERE: %s\t\n", p.Break.Reason)
			break
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, note := range p.Notes {
		fmt.Fprintf(w, "\nnote: %s", note)
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w)
	}
	if p.Break == nil {
		fmt.Fprintf(w, "\npath whole: every hop's capture saw the probe\n")
	}
	return nil
}

// evidenceRows flattens a hop's evidence into table rows, at least one.
func evidenceRows(h Hop) []string {
	var rows []string
	if h.NAT != "" {
		rows = append(rows, h.NAT)
	}
	for _, e := range h.Evidence {
		out := strings.Split(strings.TrimSpace(e.Output), "\n")
		rows = append(rows, "$ "+e.Command+"  →  "+out[0])
		for _, l := range out[1:] {
			rows = append(rows, "    "+l)
		}
	}
	switch {
	case h.Proven():
		rows = append(rows, fmt.Sprintf("captured (%d): %s", len(h.Seen), h.Seen[0]))
	case h.Captured:
		rows = append(rows, "captured: nothing")
	}
	if h.Missing != "" {
		rows = append(rows, "MISSING: "+h.Missing)
	}
	if len(rows) == 0 {
		rows = append(rows, "-")
	}
	return rows
}
