package e2e

// Reading and judging one node's overlay state, kept free of the lab so that
// it builds without the e2e tag and its unit tests run in plain `go test`.

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// hostStateScript prints, in marked sections, everything checkHostState
// looks at; one round trip per node.
const hostStateScript = `
section() { echo "### $1"; }
section link;      ip -d -j link show flannel.1 2>&1
section eth0;      ip -j link show eth0 2>&1
section addr;      ip -j addr show flannel.1 2>&1
section route;     ip -j route show dev flannel.1 2>&1
section neigh;     ip -j neigh show dev flannel.1 2>&1
section fdb;       bridge -j fdb show dev flannel.1 2>&1
section subnetenv; cat /run/flannel/subnet.env 2>&1
section cni0;      ip -j addr show cni0 2>&1
section ports;     ip -j link show master cni0 2>&1
section nat;       iptables-save -t nat 2>&1
section filter;    iptables-save -t filter 2>&1
true
`

// hostState is one node's overlay state as its kernel reports it.
type hostState struct {
	// Raw holds each section's text, for error messages.
	Raw map[string]string

	Link      ipLink
	Eth0MTU   int
	Addrs     []string // CIDRs on flannel.1, IPv4 only
	Routes    []ipRoute
	Neighs    []ipNeigh
	FDB       []fdbEntry
	Cni0Addrs []string // CIDRs on cni0, IPv4 only
	Cni0Ports []ipLink // links enslaved to cni0
	NAT       string   // iptables-save -t nat
	Filter    string   // iptables-save -t filter
	SubnetEnv string   // /run/flannel/subnet.env
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
			Port     int    `json:"port"`
			Learning *bool  `json:"learning"`
			Dev      string `json:"dev"`
		} `json:"info_data"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

// ipRoute is one entry of `ip -j route show dev X`.
type ipRoute struct {
	Dst     string   `json:"dst"`
	Gateway string   `json:"gateway"`
	Flags   []string `json:"flags"`
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
// them; a section that does not decode is an error naming it and its text.
func parseHostState(out string) (hostState, []error) {
	st := hostState{Raw: map[string]string{}}
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
	var links []ipLink
	if decode("link", &links) && len(links) == 1 {
		st.Link = links[0]
	}
	var eth0 []ipLink
	if decode("eth0", &eth0) && len(eth0) == 1 {
		st.Eth0MTU = eth0[0].MTU
	}
	var addr []ipLink
	if decode("addr", &addr) && len(addr) == 1 {
		st.Addrs = inet4(addr[0])
	}
	decode("route", &st.Routes)
	decode("neigh", &st.Neighs)
	decode("fdb", &st.FDB)
	var cni0 []ipLink
	if strings.Contains(st.Raw["cni0"], "does not exist") {
		cni0 = nil // no pod on this node yet
	} else if decode("cni0", &cni0) && len(cni0) == 1 {
		st.Cni0Addrs = inet4(cni0[0])
	}
	if !strings.Contains(st.Raw["ports"], "does not exist") {
		decode("ports", &st.Cni0Ports)
	}
	st.NAT = st.Raw["nat"]
	st.Filter = st.Raw["filter"]
	st.SubnetEnv = st.Raw["subnetenv"]
	return st, errs
}

// inet4 returns a link's IPv4 addresses as CIDRs.
func inet4(l ipLink) []string {
	var res []string
	for _, a := range l.AddrInfo {
		if a.Family == "inet" {
			res = append(res, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	return res
}

// overlayNode is what a node's peers must know about it.
type overlayNode struct {
	Name    string
	IP      net.IP     // underlay (eth0) address, the VTEP's local address
	PodCIDR *net.IPNet // e.g. 10.244.1.0/24
	VtepMAC string     // flannel.1's MAC
}

// vtepIP is the address flannel.1 carries on a node: its podCIDR's network
// address, as a /32.
func (n overlayNode) vtepIP() string { return n.PodCIDR.IP.String() }

// gateway is the podCIDR's .1, cni0's address and subnet.env's subnet IP.
func (n overlayNode) gateway() net.IP {
	ip := make(net.IP, 4)
	copy(ip, n.PodCIDR.IP.To4())
	ip[3]++
	return ip
}

// checkHostState compares a node's kernel state with what flanneld must have
// made for self and its peers, and returns every difference found.
func checkHostState(self overlayNode, peers []overlayNode, network string, st hostState) []string {
	var p []string
	bad := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }

	// flannel.1 itself.
	l := st.Link
	switch {
	case l.Name != "flannel.1":
		bad("no flannel.1 device: %s", strings.TrimSpace(st.Raw["link"]))
	case l.LinkInfo.Kind != "vxlan":
		bad("flannel.1 is a %q device, want vxlan", l.LinkInfo.Kind)
	default:
		d := l.LinkInfo.Data
		if d.ID != 1 {
			bad("flannel.1 VNI = %d, want 1", d.ID)
		}
		if d.Port != 8472 {
			bad("flannel.1 dstport = %d, want 8472", d.Port)
		}
		if d.Learning == nil || *d.Learning {
			bad("flannel.1 learning is on (or unreported), want nolearning")
		}
		if d.Local != self.IP.String() {
			bad("flannel.1 local = %q, want the node IP %s", d.Local, self.IP)
		}
		if st.Eth0MTU == 0 {
			bad("cannot read eth0's MTU: %s", strings.TrimSpace(st.Raw["eth0"]))
		} else if l.MTU != st.Eth0MTU-50 {
			bad("flannel.1 MTU = %d, want eth0 MTU %d - 50 = %d", l.MTU, st.Eth0MTU, st.Eth0MTU-50)
		}
	}
	if want := self.vtepIP() + "/32"; len(st.Addrs) != 1 || st.Addrs[0] != want {
		bad("flannel.1 addresses = %v, want [%s]", st.Addrs, want)
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
	for _, r := range st.Routes {
		peer, ok := wantRoutes[r.Dst]
		if !ok {
			bad("stale route on flannel.1: %s via %s %v", r.Dst, r.Gateway, r.Flags)
			continue
		}
		gotRoutes[r.Dst] = true
		if r.Gateway != peer.vtepIP() || !contains(r.Flags, "onlink") {
			bad("route to %s (%s) is `via %s %v`, want `via %s onlink`", r.Dst, peer.Name, r.Gateway, r.Flags, peer.vtepIP())
		}
	}
	gotNeigh := map[string]bool{}
	for _, n := range st.Neighs {
		peer, ok := wantNeigh[n.Dst]
		if !ok {
			bad("stale neighbour on flannel.1: %s lladdr %s %v", n.Dst, n.LLAddr, n.State)
			continue
		}
		gotNeigh[n.Dst] = true
		if !strings.EqualFold(n.LLAddr, peer.VtepMAC) || !contains(n.State, "PERMANENT") {
			bad("neighbour %s (%s) is lladdr %s %v, want lladdr %s PERMANENT", n.Dst, peer.Name, n.LLAddr, n.State, peer.VtepMAC)
		}
	}
	gotFDB := map[string]bool{}
	for _, f := range st.FDB {
		if f.Dst == "" {
			continue // the kernel's own entries carry no remote
		}
		peer, ok := wantFDB[strings.ToLower(f.MAC)]
		if !ok {
			bad("stale FDB entry on flannel.1: %s dst %s", f.MAC, f.Dst)
			continue
		}
		gotFDB[strings.ToLower(f.MAC)] = true
		if f.Dst != peer.IP.String() {
			bad("FDB entry %s (%s) has dst %s, want %s", f.MAC, peer.Name, f.Dst, peer.IP)
		}
	}
	for _, peer := range peers {
		if !gotRoutes[peer.PodCIDR.String()] {
			bad("no route to %s's subnet: want `%s via %s dev flannel.1 onlink`", peer.Name, peer.PodCIDR, peer.vtepIP())
		}
		if !gotNeigh[peer.vtepIP()] {
			bad("no neighbour entry for %s: want `%s lladdr %s PERMANENT`", peer.Name, peer.vtepIP(), peer.VtepMAC)
		}
		if !gotFDB[strings.ToLower(peer.VtepMAC)] {
			bad("no FDB entry for %s: want `%s dst %s`", peer.Name, peer.VtepMAC, peer.IP)
		}
	}

	// subnet.env.
	env, err := subnetenv.Parse(strings.NewReader(st.SubnetEnv))
	if err != nil {
		bad("/run/flannel/subnet.env: %v: %s", err, strings.TrimSpace(st.SubnetEnv))
	} else {
		wantSubnet := fmt.Sprintf("%s/%d", self.gateway(), ones(self.PodCIDR))
		if n, ok := env.Net(family.IPv4); !ok || len(env.Nets) != 1 || n.Network.String() != network {
			bad("subnet.env FLANNEL_NETWORK = %v, want %s (and no other family)", env.Nets, network)
		} else if n.Subnet.String() != wantSubnet {
			bad("subnet.env FLANNEL_SUBNET = %v, want %s", n.Subnet, wantSubnet)
		}
		if st.Eth0MTU != 0 && env.MTU != st.Eth0MTU-50 {
			bad("subnet.env FLANNEL_MTU = %d, want %d", env.MTU, st.Eth0MTU-50)
		}
		if !env.IPMasq {
			bad("subnet.env FLANNEL_IPMASQ = false, want true (the manifest passes --ip-masq)")
		}
	}

	// iptables: flanneld's chains, hooked from the built-in ones.
	checkChain := func(table, dump, hook, chain, comment string, rules ...*regexp.Regexp) {
		if !strings.Contains(dump, ":"+chain+" ") {
			bad("iptables %s: no chain %s", table, chain)
			return
		}
		hookRe := regexp.MustCompile(`(?m)^-A ` + hook + ` .*--comment "?` + regexp.QuoteMeta(comment) + `"? .*-j ` + chain + `\b`)
		if !hookRe.MatchString(dump) {
			bad("iptables %s: %s does not jump to %s with comment %q", table, hook, chain, comment)
		}
		for _, re := range rules {
			if !re.MatchString(dump) {
				bad("iptables %s: no rule matching %s", table, re)
			}
		}
	}
	netRe := regexp.QuoteMeta(network)
	checkChain("nat", st.NAT, "POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq",
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s `+netRe+` .*-j MASQUERADE`),
		// Pod-to-pod traffic keeps its source; flannel matches either the
		// whole network or (before v0.22) the node's own subnet as source.
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s (`+netRe+`|`+regexp.QuoteMeta(self.PodCIDR.String())+`) -d `+netRe+` .*-j RETURN`),
		// Traffic from outside the network to this node's pods keeps its
		// source too.
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG ! -s `+netRe+` -d `+regexp.QuoteMeta(self.PodCIDR.String())+` .*-j RETURN`))
	checkChain("filter", st.Filter, "FORWARD", "FLANNEL-FWD", "flanneld forward",
		regexp.MustCompile(`(?m)^-A FLANNEL-FWD -s `+netRe+` .*-j ACCEPT`),
		regexp.MustCompile(`(?m)^-A FLANNEL-FWD -d `+netRe+` .*-j ACCEPT`))
	return p
}

// checkBridge checks cni0 on a node that runs podIPs: it carries the
// podCIDR's .1 and one port (veth) per pod.
func checkBridge(self overlayNode, podIPs []string, st hostState) []string {
	var p []string
	if len(podIPs) == 0 {
		return nil
	}
	want := fmt.Sprintf("%s/%d", self.gateway(), ones(self.PodCIDR))
	if len(st.Cni0Addrs) != 1 || st.Cni0Addrs[0] != want {
		p = append(p, fmt.Sprintf("cni0 addresses = %v, want [%s]: %s", st.Cni0Addrs, want, strings.TrimSpace(st.Raw["cni0"])))
	}
	var veths []string
	for _, l := range st.Cni0Ports {
		veths = append(veths, l.Name)
	}
	if len(veths) != len(podIPs) {
		p = append(p, fmt.Sprintf("cni0 has %d ports %v for %d pods %v", len(veths), veths, len(podIPs), podIPs))
	}
	for _, ip := range podIPs {
		if pip := net.ParseIP(strings.TrimSpace(ip)); pip == nil || !self.PodCIDR.Contains(pip) {
			p = append(p, fmt.Sprintf("pod IP %q is outside the node's podCIDR %s", ip, self.PodCIDR))
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
