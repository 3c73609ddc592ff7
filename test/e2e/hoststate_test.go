package e2e

// Reading and judging one node's overlay state, kept free of the lab so that
// it builds without the e2e tag and its unit tests run in plain `go test`.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// planeSpec is what one IP family's overlay looks like on every node: its
// VXLAN device, what encapsulation costs over the family's underlay, the
// tools that show it, and the pod network of the manifest.
type planeSpec struct {
	Fam      family.Family
	Dev      string // flannel.1 or flannel-v6.1
	Overhead int    // 50 or 70 bytes
	IPFlag   string // -4 or -6
	Save     string // iptables-save or ip6tables-save
	Network  string // 10.244.0.0/16 or fd00:10:244::/56
	Env      string // subnet.env's key prefix: FLANNEL_ or FLANNEL_IPV6_
	// PodsPrefix starts every pod route of the family: 10.244. or
	// fd00:10:244:.
	PodsPrefix string
}

// planeSpecs are the lab's families' planes.
var planeSpecs = map[family.Family]planeSpec{
	family.IPv4: {Fam: family.IPv4, Dev: "flannel.1", Overhead: 50, IPFlag: "-4", Save: "iptables-save", Network: "10.244.0.0/16", Env: "FLANNEL_", PodsPrefix: "10.244."},
	family.IPv6: {Fam: family.IPv6, Dev: "flannel-v6.1", Overhead: 70, IPFlag: "-6", Save: "ip6tables-save", Network: "fd00:10:244::/56", Env: "FLANNEL_IPV6_", PodsPrefix: "fd00:10:244:"},
}

// specsOf returns the planes of fams, in order.
func specsOf(fams []family.Family) []planeSpec {
	out := make([]planeSpec, len(fams))
	for i, f := range fams {
		out[i] = planeSpecs[f]
	}
	return out
}

// tag is the suffix of a family's sections in hostStateScript's output.
func (s planeSpec) tag() string { return fmt.Sprintf("@%d", s.Fam) }

// hostStateScript prints, in marked sections, everything checkHostState
// looks at for the planes specs; one round trip per node.
func hostStateScript(specs []planeSpec) string {
	var b strings.Builder
	b.WriteString(`section() { echo "### $1"; }
section eth0;      ip -j link show eth0 2>&1
section subnetenv; cat /run/flannel/subnet.env 2>&1
section cni0;      ip -j addr show cni0 2>&1
section ports;     ip -j link show master cni0 2>&1
`)
	for _, s := range specs {
		fmt.Fprintf(&b, `section link%[1]s;   ip -d -j link show %[2]s 2>&1
section addr%[1]s;   ip -j %[3]s addr show %[2]s 2>&1
section route%[1]s;  ip -j %[3]s route show dev %[2]s 2>&1
section neigh%[1]s;  ip -j %[3]s neigh show dev %[2]s 2>&1
section fdb%[1]s;    bridge -j fdb show dev %[2]s 2>&1
section nat%[1]s;    %[4]s -t nat 2>&1
section filter%[1]s; %[4]s -t filter 2>&1
`, s.tag(), s.Dev, s.IPFlag, s.Save)
	}
	b.WriteString("true\n")
	return b.String()
}

// hostState is one node's overlay state as its kernel reports it.
type hostState struct {
	// Raw holds each section's text, for error messages.
	Raw map[string]string

	Eth0MTU   int
	Cni0Addrs []string // global CIDRs on cni0, every family
	Cni0Ports []ipLink // links enslaved to cni0
	SubnetEnv string   // /run/flannel/subnet.env
	// Planes is each family's part.
	Planes map[family.Family]*planeState
}

// planeState is one family's overlay state on a node.
type planeState struct {
	Link   ipLink
	Addrs  []string // global CIDRs of the family on the device
	Routes []ipRoute
	Neighs []ipNeigh
	FDB    []fdbEntry
	NAT    string // iptables-save -t nat (ip6tables-save for IPv6)
	Filter string // iptables-save -t filter
}

// ipLink is one entry of `ip -d -j link show`.
type ipLink struct {
	Index    int    `json:"ifindex"`
	Name     string `json:"ifname"`
	MTU      int    `json:"mtu"`
	Address  string `json:"address"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID       int    `json:"id"`
			Local    string `json:"local"`
			Local6   string `json:"local6"` // an IPv6 local address
			Port     int    `json:"port"`
			Learning *bool  `json:"learning"`
			Dev      string `json:"dev"`
		} `json:"info_data"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
	} `json:"addr_info"`
}

// ipRoute is one entry of `ip -j route show dev X`.
type ipRoute struct {
	Dst      string   `json:"dst"`
	Gateway  string   `json:"gateway"`
	Flags    []string `json:"flags"`
	Protocol string   `json:"protocol"`
}

// ipNeigh is one entry of `ip -j neigh show dev X`.
type ipNeigh struct {
	Dst    string   `json:"dst"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// fdbEntry is one entry of `bridge -j fdb show dev X`.
type fdbEntry struct {
	MAC   string `json:"mac"`
	Dst   string `json:"dst"`
	State string `json:"state"`
}

// parseHostState splits hostStateScript's output into sections and decodes
// them for the planes specs; a section that does not decode is an error
// naming it and its text.
func parseHostState(out string, specs []planeSpec) (hostState, []error) {
	st := hostState{Raw: map[string]string{}, Planes: map[family.Family]*planeState{}}
	var cur string
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(line, "### "); ok {
			cur = strings.TrimSpace(name)
			st.Raw[cur] = ""
			continue
		}
		if cur != "" {
			st.Raw[cur] += line + "\n"
		}
	}
	var errs []error
	decode := func(section string, v any) bool {
		raw := strings.TrimSpace(st.Raw[section])
		if raw == "" {
			raw = "[]"
		}
		if err := json.Unmarshal([]byte(raw), v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v: %s", section, err, raw))
			return false
		}
		return true
	}
	var eth0 []ipLink
	if decode("eth0", &eth0) && len(eth0) == 1 {
		st.Eth0MTU = eth0[0].MTU
	}
	var cni0 []ipLink
	if strings.Contains(st.Raw["cni0"], "does not exist") {
		cni0 = nil // no pod on this node yet
	} else if decode("cni0", &cni0) && len(cni0) == 1 {
		st.Cni0Addrs = globalAddrs(cni0[0])
	}
	if !strings.Contains(st.Raw["ports"], "does not exist") {
		decode("ports", &st.Cni0Ports)
	}
	st.SubnetEnv = st.Raw["subnetenv"]
	for _, s := range specs {
		pl := &planeState{}
		st.Planes[s.Fam] = pl
		var links []ipLink
		if decode("link"+s.tag(), &links) && len(links) == 1 {
			pl.Link = links[0]
		}
		var addr []ipLink
		if decode("addr"+s.tag(), &addr) && len(addr) == 1 {
			pl.Addrs = globalAddrs(addr[0])
		}
		decode("route"+s.tag(), &pl.Routes)
		decode("neigh"+s.tag(), &pl.Neighs)
		decode("fdb"+s.tag(), &pl.FDB)
		pl.NAT = st.Raw["nat"+s.tag()]
		pl.Filter = st.Raw["filter"+s.tag()]
	}
	return st, errs
}

// globalAddrs returns a link's addresses as CIDRs, but for the link-local
// ones the kernel gives every IPv6 device.
func globalAddrs(l ipLink) []string {
	var res []string
	for _, a := range l.AddrInfo {
		if a.Scope != "link" {
			res = append(res, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	return res
}

// overlayNode is what a node's peers must know about it, in one family.
type overlayNode struct {
	Name    string
	IP      net.IP     // underlay (eth0) address, the VTEP's local address
	PodCIDR *net.IPNet // e.g. 10.244.1.0/24
	VtepMAC string     // the family's VXLAN device's MAC
}

// vtepIP is the address the VXLAN device carries on a node: its podCIDR's
// network address, as a /32 or /128.
func (n overlayNode) vtepIP() string { return n.PodCIDR.IP.String() }

// vtepCIDR is vtepIP with its full length.
func (n overlayNode) vtepCIDR() string {
	_, bits := n.PodCIDR.Mask.Size()
	return fmt.Sprintf("%s/%d", n.vtepIP(), bits)
}

// gateway is the podCIDR's first address (.1, ::1), cni0's address and
// subnet.env's subnet IP.
func (n overlayNode) gateway() net.IP {
	a, _ := netip.AddrFromSlice(n.PodCIDR.IP)
	return net.IP(a.Unmap().Next().AsSlice())
}

// checkHostState compares a node's kernel state of one family (spec) with
// what flanneld must have made for self and its peers, and returns every
// difference found.
func checkHostState(self overlayNode, peers []overlayNode, spec planeSpec, st hostState) []string {
	var p []string
	bad := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }
	pl := st.Planes[spec.Fam]
	if pl == nil {
		return []string{fmt.Sprintf("no %s state read", spec.Fam)}
	}
	dev := spec.Dev

	// The device itself.
	l := pl.Link
	switch {
	case l.Name != dev:
		bad("no %s device: %s", dev, strings.TrimSpace(st.Raw["link"+spec.tag()]))
	case l.LinkInfo.Kind != "vxlan":
		bad("%s is a %q device, want vxlan", dev, l.LinkInfo.Kind)
	default:
		d := l.LinkInfo.Data
		if d.ID != 1 {
			bad("%s VNI = %d, want 1", dev, d.ID)
		}
		if d.Port != 8472 {
			bad("%s dstport = %d, want 8472", dev, d.Port)
		}
		if d.Learning == nil || *d.Learning {
			bad("%s learning is on (or unreported), want nolearning", dev)
		}
		if local := d.Local + d.Local6; local != self.IP.String() {
			bad("%s local = %q, want the node IP %s", dev, local, self.IP)
		}
		if st.Eth0MTU == 0 {
			bad("cannot read eth0's MTU: %s", strings.TrimSpace(st.Raw["eth0"]))
		} else if l.MTU != st.Eth0MTU-spec.Overhead {
			bad("%s MTU = %d, want eth0 MTU %d - %d = %d", dev, l.MTU, st.Eth0MTU, spec.Overhead, st.Eth0MTU-spec.Overhead)
		}
	}
	if want := self.vtepCIDR(); len(pl.Addrs) != 1 || pl.Addrs[0] != want {
		bad("%s addresses = %v, want [%s]", dev, pl.Addrs, want)
	}

	// One route, neighbour and FDB entry per peer, and nothing else.
	wantRoutes := map[string]overlayNode{}
	wantNeigh := map[string]overlayNode{}
	wantFDB := map[string]overlayNode{}
	for _, peer := range peers {
		wantRoutes[peer.PodCIDR.String()] = peer
		wantNeigh[peer.vtepIP()] = peer
		wantFDB[strings.ToLower(peer.VtepMAC)] = peer
	}
	gotRoutes := map[string]bool{}
	for _, r := range pl.Routes {
		if r.Protocol == "kernel" {
			continue // the kernel's own, for the device's addresses
		}
		peer, ok := wantRoutes[r.Dst]
		if !ok {
			bad("stale route on %s: %s via %s %v", dev, r.Dst, r.Gateway, r.Flags)
			continue
		}
		gotRoutes[r.Dst] = true
		if r.Gateway != peer.vtepIP() || !contains(r.Flags, "onlink") {
			bad("route to %s (%s) is `via %s %v`, want `via %s onlink`", r.Dst, peer.Name, r.Gateway, r.Flags, peer.vtepIP())
		}
	}
	gotNeigh := map[string]bool{}
	for _, n := range pl.Neighs {
		peer, ok := wantNeigh[n.Dst]
		if !ok {
			bad("stale neighbour on %s: %s lladdr %s %v", dev, n.Dst, n.LLAddr, n.State)
			continue
		}
		gotNeigh[n.Dst] = true
		if !strings.EqualFold(n.LLAddr, peer.VtepMAC) || !contains(n.State, "PERMANENT") {
			bad("neighbour %s (%s) is lladdr %s %v, want lladdr %s PERMANENT", n.Dst, peer.Name, n.LLAddr, n.State, peer.VtepMAC)
		}
	}
	gotFDB := map[string]bool{}
	for _, f := range pl.FDB {
		if f.Dst == "" {
			continue // the kernel's own entries carry no remote
		}
		peer, ok := wantFDB[strings.ToLower(f.MAC)]
		if !ok {
			bad("stale FDB entry on %s: %s dst %s", dev, f.MAC, f.Dst)
			continue
		}
		gotFDB[strings.ToLower(f.MAC)] = true
		if f.Dst != peer.IP.String() {
			bad("FDB entry %s (%s) has dst %s, want %s", f.MAC, peer.Name, f.Dst, peer.IP)
		}
	}
	for _, peer := range peers {
		if !gotRoutes[peer.PodCIDR.String()] {
			bad("no route to %s's subnet: want `%s via %s dev %s onlink`", peer.Name, peer.PodCIDR, peer.vtepIP(), dev)
		}
		if !gotNeigh[peer.vtepIP()] {
			bad("no neighbour entry for %s: want `%s lladdr %s PERMANENT`", peer.Name, peer.vtepIP(), peer.VtepMAC)
		}
		if !gotFDB[strings.ToLower(peer.VtepMAC)] {
			bad("no FDB entry for %s: want `%s dst %s`", peer.Name, peer.VtepMAC, peer.IP)
		}
	}

	// subnet.env: the family's pair of keys.
	if env, err := subnetenv.Parse(strings.NewReader(st.SubnetEnv)); err == nil {
		wantSubnet := fmt.Sprintf("%s/%d", self.gateway(), ones(self.PodCIDR))
		if n, ok := env.Net(spec.Fam); !ok || n.Network.String() != spec.Network {
			bad("subnet.env %sNETWORK = %v, want %s", spec.Env, n.Network, spec.Network)
		} else if n.Subnet.String() != wantSubnet {
			bad("subnet.env %sSUBNET = %v, want %s", spec.Env, n.Subnet, wantSubnet)
		}
	}

	// The packet filter: flanneld's chains, hooked from the built-in ones.
	checkChain := func(table, dump, hook, chain, comment string, rules ...*regexp.Regexp) {
		if !strings.Contains(dump, ":"+chain+" ") {
			bad("%s %s: no chain %s", spec.Save, table, chain)
			return
		}
		hookRe := regexp.MustCompile(`(?m)^-A ` + hook + ` .*--comment "?` + regexp.QuoteMeta(comment) + `"? .*-j ` + chain + `\b`)
		if !hookRe.MatchString(dump) {
			bad("%s %s: %s does not jump to %s with comment %q", spec.Save, table, hook, chain, comment)
		}
		for _, re := range rules {
			if !re.MatchString(dump) {
				bad("%s %s: no rule matching %s", spec.Save, table, re)
			}
		}
	}
	netRe := regexp.QuoteMeta(spec.Network)
	checkChain("nat", pl.NAT, "POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq",
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s `+netRe+` .*-j MASQUERADE`),
		// Pod-to-pod traffic keeps its source; flannel matches either the
		// whole network or (before v0.22) the node's own subnet as source.
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s (`+netRe+`|`+regexp.QuoteMeta(self.PodCIDR.String())+`) -d `+netRe+` .*-j RETURN`),
		// Traffic from outside the network to this node's pods keeps its
		// source too.
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG ! -s `+netRe+` -d `+regexp.QuoteMeta(self.PodCIDR.String())+` .*-j RETURN`))
	checkChain("filter", pl.Filter, "FORWARD", "FLANNEL-FWD", "flanneld forward",
		regexp.MustCompile(`(?m)^-A FLANNEL-FWD -s `+netRe+` .*-j ACCEPT`),
		regexp.MustCompile(`(?m)^-A FLANNEL-FWD -d `+netRe+` .*-j ACCEPT`))
	return p
}

// checkSubnetEnv checks what subnet.env says for every family at once: a
// pair of keys for each of specs and no other, the MTU of the narrowest
// plane (a pod has one MTU for all its families), masquerading on.
func checkSubnetEnv(specs []planeSpec, st hostState) []string {
	env, err := subnetenv.Parse(strings.NewReader(st.SubnetEnv))
	if err != nil {
		return []string{fmt.Sprintf("/run/flannel/subnet.env: %v: %s", err, strings.TrimSpace(st.SubnetEnv))}
	}
	var p []string
	if got := family.List(env.Nets); len(got) != len(specs) {
		p = append(p, fmt.Sprintf("subnet.env has the families %v, want %d: %s", got, len(specs), strings.TrimSpace(st.SubnetEnv)))
	}
	want := 0
	for _, s := range specs {
		if m := st.Eth0MTU - s.Overhead; want == 0 || m < want {
			want = m
		}
	}
	if st.Eth0MTU != 0 && env.MTU != want {
		p = append(p, fmt.Sprintf("subnet.env FLANNEL_MTU = %d, want %d", env.MTU, want))
	}
	if !env.IPMasq {
		p = append(p, "subnet.env FLANNEL_IPMASQ = false, want true (the manifest passes --ip-masq)")
	}
	return p
}

// checkBridge checks cni0 on a node that runs podIPs (every address of
// every pod): it carries each family's podCIDR gateway (selves, one per
// family) and one port (veth) per pod, and every pod address is inside the
// node's podCIDR of its family.
func checkBridge(selves []overlayNode, pods int, podIPs []string, st hostState) []string {
	var p []string
	if pods == 0 {
		return nil
	}
	var want []string
	for _, self := range selves {
		want = append(want, fmt.Sprintf("%s/%d", self.gateway(), ones(self.PodCIDR)))
	}
	if strings.Join(st.Cni0Addrs, " ") != strings.Join(want, " ") {
		p = append(p, fmt.Sprintf("cni0 addresses = %v, want %v: %s", st.Cni0Addrs, want, strings.TrimSpace(st.Raw["cni0"])))
	}
	var veths []string
	for _, l := range st.Cni0Ports {
		veths = append(veths, l.Name)
	}
	if len(veths) != pods {
		p = append(p, fmt.Sprintf("cni0 has %d ports %v for %d pods %v", len(veths), veths, pods, podIPs))
	}
	if len(podIPs) != pods*len(selves) {
		p = append(p, fmt.Sprintf("%d pods have the addresses %v, want %d each", pods, podIPs, len(selves)))
	}
	for _, ip := range podIPs {
		pip := net.ParseIP(strings.TrimSpace(ip))
		inside := false
		for _, self := range selves {
			inside = inside || (pip != nil && self.PodCIDR.Contains(pip))
		}
		if !inside {
			p = append(p, fmt.Sprintf("pod IP %q is outside the node's podCIDRs", ip))
		}
	}
	return p
}

func ones(n *net.IPNet) int {
	o, _ := n.Mask.Size()
	return o
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
