package compare

import (
	"context"
	"fmt"
	"strings"

	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/images"
	"github.com/twill-net/twill/lab/trace"
	"github.com/twill-net/twill/lab/trace/path"
)

// Mode is one way of running the pod network, in a lab of its own.
type Mode struct {
	// Name labels the mode in the report.
	Name string
	// Backend is the lab's backend, vxlan or host-gw.
	Backend string
	// UnderlayRoutes brings the lab up with --underlay-routes: the
	// underlay routes every podCIDR to its node, the lab's stand-in for a
	// VPC-native network.
	UnderlayRoutes bool
	// RoutedNodes puts that many extra nodes (after worker2) on the
	// lab's second, routed subnet, for the "other subnet" check.
	RoutedNodes int
}

// IPv4Modes are the modes an IPv4 comparison runs: the overlay, host-gw on
// one segment, and host-gw with underlay routes as VPC-native.
var IPv4Modes = []Mode{
	{Name: "vxlan", Backend: "vxlan", RoutedNodes: 1},
	{Name: "host-gw", Backend: "host-gw"},
	{Name: "host-gw + underlay routes", Backend: "host-gw", UnderlayRoutes: true, RoutedNodes: 1},
}

// DualModes are the modes a dual-stack comparison runs: underlay routes and
// trace are IPv4 only, so there is no reachability section.
var DualModes = []Mode{
	{Name: "vxlan", Backend: "vxlan"},
	{Name: "host-gw", Backend: "host-gw"},
}

// Reachability is who reaches whom in one mode's lab, and with which
// source address, each check proven by `twill lab trace`.
type Reachability struct {
	Checks []ReachCheck
}

// ReachCheck is one traced path.
type ReachCheck struct {
	// What names the check, one of ReachChecks.
	What string
	// From and To are what was traced (trace's SRC and DST).
	From, To string
	// OK says the probes reached To and the replies came back.
	OK bool
	// Source is the source address To saw.
	Source string
	// Evidence is the capture line at To, or where and why the path
	// broke.
	Evidence string
	// Skipped says why the check does not apply to the mode's lab.
	Skipped string `json:",omitempty"`
}

// ReachChecks are the checks of the reachability section, in its order.
var ReachChecks = []string{
	"pod → pod, same node",
	"pod → pod, other node",
	"pod → pod, other subnet",
	"pod → node",
	"node → pod",
	"VM → pod",
	"pod → VM",
	"pod → internet",
}

// reachPods are the extra pods the checks need beside cli (on worker) and
// srv (on worker2): one more on worker, and one on the routed node.
const (
	samePod = "same"
	farPod  = "far"
)

// reachability traces every check of ReachChecks in m's lab.
func (m *measurer) reachability(ctx context.Context, mode Mode) (*Reachability, error) {
	routed := ""
	for _, n := range m.c.Nodes {
		if n.Routed {
			routed = n.Name
		}
	}
	pods := map[string]string{samePod: m.worker}
	if routed != "" {
		pods[farPod] = routed
	}
	if err := m.startPods(ctx, pods); err != nil {
		return nil, err
	}
	ns := func(p string) string { return namespace + "/" + p }
	var r Reachability
	for _, what := range ReachChecks {
		c := ReachCheck{What: what}
		switch what {
		case "pod → pod, same node":
			c.From, c.To = ns(m.cli.name), ns(samePod)
		case "pod → pod, other node":
			c.From, c.To = ns(m.cli.name), ns(m.srv.name)
		case "pod → pod, other subnet":
			c.From, c.To = ns(m.cli.name), ns(farPod)
			if routed == "" {
				c.Skipped = "no node on another subnet: host-gw routes a peer via its node's address, so `twill lab up` refuses --routed-nodes with host-gw unless --underlay-routes is set"
			}
		case "pod → node":
			c.From, c.To = ns(m.cli.name), m.worker2
		case "node → pod":
			c.From, c.To = m.worker2, ns(m.cli.name)
		case "VM → pod":
			c.From, c.To = "vm", ns(m.cli.name)
		case "pod → VM":
			c.From, c.To = ns(m.cli.name), "vm"
		case "pod → internet":
			c.From, c.To = ns(m.cli.name), "internet"
		}
		if c.Skipped == "" {
			m.logf("%s: trace %s %s", mode.Name, c.From, c.To)
			p, err := trace.Run(ctx, m.c, trace.Options{Src: c.From, Dst: c.To})
			if err != nil && p == nil {
				return &r, fmt.Errorf("tracing %s → %s: %w", c.From, c.To, err)
			}
			judge(&c, p)
		}
		r.Checks = append(r.Checks, c)
	}
	return &r, nil
}

// judge fills c's outcome from the traced path p: whole or broken, the
// source address the destination saw, and the evidence.
func judge(c *ReachCheck, p *path.Path) {
	var last *path.Hop
	for _, i := range p.Of(path.Request) {
		last = &p.Hops[i]
	}
	if p.Break != nil {
		h := p.Hops[p.Break.Hop]
		c.Evidence = fmt.Sprintf("stops at %s in %s: %s", h.Interface, h.Place, p.Break.Reason)
		return
	}
	if last == nil {
		c.Evidence = "no hop planned"
		return
	}
	c.OK = true
	c.Source = last.Src
	c.Evidence = last.Action
	if last.Proven() {
		c.Evidence = fmt.Sprintf("%s in %s saw: %s", last.Interface, last.Place, last.Seen[0])
	}
}

// startPods starts a netshoot pod of each name on its node, in compare's
// namespace, and waits until they are Ready.
func (m *measurer) startPods(ctx context.Context, pods map[string]string) error {
	var items []any
	for name, node := range pods {
		items = append(items, map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "namespace": namespace},
			"spec": map[string]any{
				"nodeSelector":                  map[string]string{"kubernetes.io/hostname": node},
				"tolerations":                   []map[string]string{{"operator": "Exists"}},
				"terminationGracePeriodSeconds": 0,
				"containers": []any{map[string]any{
					"name": "main", "image": images.NetshootRef, "imagePullPolicy": "Never",
					"command": []string{"sleep", "infinity"},
				}},
			},
		})
	}
	return m.applyAndWait(ctx, items, "reachability")
}

// cell is a check's entry in the section's table.
func (c ReachCheck) cell() string {
	switch {
	case c.Skipped != "":
		return "–"
	case !c.OK:
		return "✗"
	case c.Source != "" && (strings.Contains(c.What, "VM") || strings.Contains(c.What, "internet")):
		return "✓ from " + c.Source
	}
	return "✓"
}

// reachMarkdown renders the reachability section: a table of checks by
// mode, then each mode's evidence.
func (r *Report) reachMarkdown() string {
	var labs []LabRun
	for _, l := range r.Labs {
		if l.Reach != nil {
			labs = append(labs, l)
		}
	}
	if len(labs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Reachability and addressing\n\n")
	fmt.Fprintf(&b, "Each check is a `twill lab trace` in the mode's lab (pods in namespace %s: `cli` and `same` on worker, `srv` on worker2, `far` on the routed node; the VM is the lab's %s, a host on the underlay that is not a node). ", namespace, lab.VMIP)
	b.WriteString("✓ means the probes reached the destination and the replies came back, every hop seen by its capture; \"from\" is the source address the destination saw (the pod's own, or its node's when masqueraded). ")
	b.WriteString("host-gw + underlay routes is the lab's stand-in for VPC-native networking: the underlay routes every podCIDR to its node, as a VPC route table does, and the VM's range is in NoMasqueradeCIDRs.\n\n")
	b.WriteString("| check |")
	for _, l := range labs {
		fmt.Fprintf(&b, " %s |", l.label())
	}
	b.WriteString("\n|---|")
	for range labs {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for i, what := range ReachChecks {
		fmt.Fprintf(&b, "| %s |", what)
		for _, l := range labs {
			cell := "?"
			if i < len(l.Reach.Checks) && l.Reach.Checks[i].What == what {
				cell = l.Reach.Checks[i].cell()
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	for _, l := range labs {
		fmt.Fprintf(&b, "\n### %s: evidence\n\n", l.label())
		for _, c := range l.Reach.Checks {
			switch {
			case c.Skipped != "":
				fmt.Fprintf(&b, "- %s: not run: %s\n", c.What, c.Skipped)
			default:
				fmt.Fprintf(&b, "- %s %s (`twill lab trace %s %s`): %s\n", c.What, c.cell(), c.From, c.To, strings.ReplaceAll(c.Evidence, "\n", " "))
			}
		}
	}
	b.WriteString("\n")
	return b.String()
}
