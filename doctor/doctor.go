// Package doctor checks one node's Twill networking and names every fault
// it finds, each with what to do about it: the files the CNI runtime reads
// (subnet.env, the conflists in /etc/cni/net.d, the plugins in
// /opt/cni/bin), the devices, MTUs and per-peer kernel entries flanneld
// keeps, whether every peer answers over the overlay, the kernel settings
// and packet-filter rules pod traffic needs, and the interface choice.
//
// It changes nothing. The expected state comes from the same code flanneld
// runs (the backend's Check and Entries, the daemon's firewall policy, the
// CNI plugin's delegate configuration), so doctor and daemon never disagree
// about what is right. `flanneld doctor` wires it to the real kernel, files
// and API server; tests give it a fake kernel, files in a temporary
// directory and a fake prober.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/firewall"
	"github.com/twill-net/twill/iface"
	"github.com/twill-net/twill/netconf"
	"github.com/twill-net/twill/subnet/kube"
)

// Status is a finding's verdict.
type Status string

// The verdicts. Only Fail makes the report fail.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	// Skip means the check could not run (what it needs is missing,
	// which another finding names).
	Skip Status = "skip"
)

// Finding is what one check found.
type Finding struct {
	// Check names the check, e.g. "subnet.env" or "peer-entries".
	Check string `json:"check"`
	// Family is set for checks done per IP family of a dual-stack node.
	Family string `json:"family,omitempty"`
	Status Status `json:"status"`
	// Summary says in one line what is (ok) or what is wrong.
	Summary string `json:"summary"`
	// Details are more lines: the first few missing entries, the peers
	// that do not answer.
	Details []string `json:"details,omitempty"`
	// Fix says what to do.
	Fix string `json:"fix,omitempty"`
}

// Report is every finding about one node.
type Report struct {
	Node     string    `json:"node"`
	Version  string    `json:"version,omitempty"`
	Findings []Finding `json:"findings"`
}

// Count returns how many findings have status st.
func (r *Report) Count(st Status) int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == st {
			n++
		}
	}
	return n
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.Count(Fail) > 0 }

// Find returns the findings of check.
func (r *Report) Find(check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ANSI colours of the verdicts.
var colours = map[Status]string{OK: "\x1b[32m", Warn: "\x1b[33m", Fail: "\x1b[1;31m", Skip: "\x1b[2m"}

// WriteText writes the report for a person: one line per finding with its
// verdict, its details and fix indented below; colour only when colour is
// true (a terminal).
func (r *Report) WriteText(w io.Writer, colour bool) error {
	var b strings.Builder
	title := "flanneld doctor on " + r.Node
	if r.Version != "" {
		title += " (Twill " + r.Version + ")"
	}
	b.WriteString(title + "\n\n")
	for _, f := range r.Findings {
		verdict := fmt.Sprintf("%-4s", strings.ToUpper(string(f.Status)))
		if f.Status == OK {
			verdict = "ok  "
		}
		if colour {
			verdict = colours[f.Status] + verdict + "\x1b[0m"
		}
		name := f.Check
		if f.Family != "" {
			name += " (" + f.Family + ")"
		}
		fmt.Fprintf(&b, "  %s  %-24s %s\n", verdict, name, f.Summary)
		for _, d := range f.Details {
			fmt.Fprintf(&b, "%32s%s\n", "", d)
		}
		if f.Fix != "" {
			fmt.Fprintf(&b, "%32sfix: %s\n", "", f.Fix)
		}
	}
	fmt.Fprintf(&b, "\n%d failed, %d warnings, %d ok, %d skipped\n", r.Count(Fail), r.Count(Warn), r.Count(OK), r.Count(Skip))
	_, err := io.WriteString(w, b.String())
	return err
}

// RuleChecker compares a family's packet-filter rules with a policy
// (firewall.Firewall's Check). One that also has ForwardPolicy() (string,
// error) lets doctor say whether FORWARD drops what the rules do not
// accept.
type RuleChecker interface {
	Check(p firewall.Policy) ([]string, error)
}

// Router answers which link the kernel sends a packet to dst through
// (kernel.Netlink.RouteTo).
type Router interface {
	RouteTo(dst netip.Addr) (link int, src netip.Addr, err error)
}

// Options is what doctor examines and how.
type Options struct {
	// NodeName is the Kubernetes node doctor runs on.
	NodeName string
	// Version is Twill's, for the report.
	Version string

	// Config is net-conf.json as read from ConfigPath, or nil with
	// ConfigErr saying why.
	Config     *netconf.Config
	ConfigPath string
	ConfigErr  error
	Backends   *backend.Registry
	// Annotations are the annotation keys flanneld uses.
	Annotations kube.Annotations
	// API reaches the API server; nil with APIErr saying why skips what
	// needs it.
	API    kube.API
	APIErr error

	Kernel kernel.Kernel
	Router Router
	// ChooseIface makes flanneld's interface choice (iface.Choose with
	// its flags); PublicIPs are its --public-ip.
	ChooseIface func(fams []family.Family) (*iface.Choice, error)
	PublicIPs   []netip.Addr
	// IPMasq is flanneld's --ip-masq; nil: as subnet.env says.
	IPMasq *bool

	// SubnetFile is subnet.env; CNIConfDir the runtime's configuration
	// directory and CNIConf the conflist flanneld installs there (named
	// as --cni-conf-dest's file), CNIConfSrc what it installs (may be
	// empty);
	// CNIBinDir the runtime's plugin directory; ProcSys /proc/sys.
	SubnetFile, CNIConfDir, CNIConf, CNIConfSrc, CNIBinDir, ProcSys string

	// Firewall makes the rule checker of a family; TunnelGuard is
	// flanneld's --vxlan-guard (the rules then hold the tunnel guard).
	Firewall    func(f family.Family) (RuleChecker, error)
	TunnelGuard bool

	// Prober sends the reachability probes; nil skips them. ProbePort is
	// the TCP port probed on peers (flanneld's health port: any port
	// answers, open or closed, when TCP gets through); ProbeTimeout bounds
	// all probes together.
	Prober       Prober
	ProbePort    int
	ProbeTimeout time.Duration

	// Daemon is the flanneld found running on this node, nil when none
	// is; DaemonReady asks it whether it is ready (nil: no health port).
	Daemon      *Daemon
	DaemonReady func(ctx context.Context) error
}

// Run runs every check and returns the report.
func Run(ctx context.Context, o Options) *Report {
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 5 * time.Second
	}
	s := &state{o: o, r: &Report{Node: o.NodeName, Version: o.Version}}
	s.gather(ctx)
	for _, check := range []func(context.Context){
		s.checkDaemon,
		s.checkConfig,
		s.checkNode,
		s.checkInterface,
		s.checkDevices,
		s.checkSubnetEnv,
		s.checkCNIConfig,
		s.checkCNIPlugins,
		s.checkMTU,
		s.checkPeerEntries,
		s.checkReachability,
		s.checkSysctls,
		s.checkFirewall,
	} {
		check(ctx)
	}
	return s.r
}

// add records a finding.
func (s *state) add(f Finding) { s.r.Findings = append(s.r.Findings, f) }

// famLabel names family f in findings of a dual-stack node; "" on a
// single-stack one, where it says nothing.
func (s *state) famLabel(f family.Family) string {
	if len(s.fams) > 1 {
		return f.String()
	}
	return ""
}

// first returns at most n of lines, with a last line counting the rest.
func first(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append(lines[:n:n], fmt.Sprintf("… and %d more", len(lines)-n))
}
