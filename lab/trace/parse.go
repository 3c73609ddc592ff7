package trace

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// route is what `ip -j route get` says of one lookup.
type route struct {
	Type    string   `json:"type"`
	Dst     string   `json:"dst"`
	Gateway string   `json:"gateway"`
	Dev     string   `json:"dev"`
	PrefSrc string   `json:"prefsrc"`
	Flags   []string `json:"flags"`
}

// describe puts the lookup's answer as ip prints it, briefly.
func (r route) describe() string {
	s := r.Dst
	if r.Type != "" && r.Type != "unicast" {
		s = r.Type + " " + s
	}
	if r.Gateway != "" {
		s += " via " + r.Gateway
	}
	s += " dev " + r.Dev
	if r.PrefSrc != "" {
		s += " src " + r.PrefSrc
	}
	if len(r.Flags) > 0 {
		s += " " + strings.Join(r.Flags, " ")
	}
	return s
}

// parseRouteGet parses `ip -j route get` output.
func parseRouteGet(out string) (route, error) {
	var rs []route
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return route{}, fmt.Errorf("parsing ip -j route get: %w: %q", err, out)
	}
	if len(rs) == 0 || rs[0].Dev == "" {
		return route{}, fmt.Errorf("ip -j route get printed no route: %q", out)
	}
	return rs[0], nil
}

// neigh is one entry of `ip -j neigh show`.
type neigh struct {
	Dst    string   `json:"dst"`
	Dev    string   `json:"dev"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// parseNeigh parses `ip -j neigh show` output; an empty output is no entry.
func parseNeigh(out string) ([]neigh, error) {
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	var ns []neigh
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		return nil, fmt.Errorf("parsing ip -j neigh: %w: %q", err, out)
	}
	return ns, nil
}

// fdb is one entry of `bridge -j fdb show`.
type fdb struct {
	MAC   string   `json:"mac"`
	Dst   string   `json:"dst"`
	Flags []string `json:"flags"`
	State string   `json:"state"`
}

// parseFDB parses `bridge -j fdb show` output.
func parseFDB(out string) ([]fdb, error) {
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	var fs []fdb
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		return nil, fmt.Errorf("parsing bridge -j fdb: %w: %q", err, out)
	}
	return fs, nil
}

// fdbDst returns the remote address the FDB sends mac to, "" if none.
func fdbDst(entries []fdb, mac string) string {
	for _, e := range entries {
		if strings.EqualFold(e.MAC, mac) && e.Dst != "" {
			return e.Dst
		}
	}
	return ""
}

// link is what `ip -d -j link show dev X` says of a device that matters
// here: its kind and, for VXLAN, its VNI, local address and port.
type link struct {
	Name  string
	Kind  string
	VNI   int
	Local string
	Port  int
	MTU   int
}

// parseLink parses `ip -d -j link show dev X` output.
func parseLink(out string) (link, error) {
	var ls []struct {
		IfName   string `json:"ifname"`
		MTU      int    `json:"mtu"`
		LinkInfo struct {
			InfoKind string `json:"info_kind"`
			InfoData struct {
				ID    int    `json:"id"`
				Local string `json:"local"`
				Port  int    `json:"port"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) == 0 {
		return link{}, fmt.Errorf("parsing ip -d -j link: %v: %q", err, out)
	}
	l := ls[0]
	return link{Name: l.IfName, Kind: l.LinkInfo.InfoKind, VNI: l.LinkInfo.InfoData.ID,
		Local: l.LinkInfo.InfoData.Local, Port: l.LinkInfo.InfoData.Port, MTU: l.MTU}, nil
}

// addr is one address of a namespace: the device holding it and its
// network.
type addr struct {
	IP  net.IP
	Net *net.IPNet
	Dev string
}

// parseAddrs parses `ip -j -4 addr show` output.
func parseAddrs(out string) ([]addr, error) {
	var ifs []struct {
		IfName   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &ifs); err != nil {
		return nil, fmt.Errorf("parsing ip -j addr: %w", err)
	}
	var as []addr
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			ip := net.ParseIP(a.Local)
			if ip == nil {
				continue
			}
			_, n, err := net.ParseCIDR(fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			if err != nil {
				continue
			}
			as = append(as, addr{IP: ip, Net: n, Dev: i.IfName})
		}
	}
	return as, nil
}

// conntrackReplyDst returns, from `conntrack -L` output, the destination of
// the reply tuple of the first entry whose original tuple is src → dst:
// when it is not src, the source was translated to it.
func conntrackReplyDst(out, src, dst string) (line, replyDst string) {
	for _, l := range strings.Split(out, "\n") {
		srcs := conntrackField.FindAllStringSubmatch(l, -1)
		var ss, ds []string
		for _, m := range srcs {
			if m[1] == "src" {
				ss = append(ss, m[2])
			} else {
				ds = append(ds, m[2])
			}
		}
		if len(ss) >= 2 && len(ds) >= 2 && ss[0] == src && ds[0] == dst {
			return strings.TrimSpace(l), ds[1]
		}
	}
	return "", ""
}

var conntrackField = regexp.MustCompile(`\b(src|dst)=([0-9a-fA-F.:]+)`)

// packet is one packet tcpdump printed: its lines, and the addresses of
// its outer and innermost IP headers.
type packet struct {
	Text               string
	OuterSrc, OuterDst string
	InnerSrc, InnerDst string
	Encapsulated       bool
	VNI                int
	OuterPort          int
}

var (
	tsLine = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d+ `)
	// ipHdr matches an IPv4 header as tcpdump -nn prints it: "IP a[.port] >
	// b[.port]:".
	ipHdr = regexp.MustCompile(`IP (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?:`)
	// vni matches the VXLAN header tcpdump prints for port 4789 (VXLAN)
	// or 8472 (which it decodes as OTV, the same layout).
	vniField = regexp.MustCompile(`(?:vni|instance) (\d+)`)
)

// parseCapture splits `tcpdump -nn -l` output into packets: a line with a
// timestamp starts one, lines without one (the inner packet of a tunnel)
// continue it.
func parseCapture(out string) []packet {
	var texts []string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case tsLine.MatchString(l):
			texts = append(texts, l)
		case len(texts) > 0 && strings.TrimSpace(l) != "" && !strings.Contains(l, "packets ") && !strings.HasPrefix(l, "tcpdump:") && !strings.HasPrefix(l, "listening on"):
			texts[len(texts)-1] += " " + strings.TrimSpace(l)
		}
	}
	var ps []packet
	for _, t := range texts {
		hs := ipHdr.FindAllStringSubmatch(t, -1)
		if len(hs) == 0 {
			continue
		}
		p := packet{Text: t, OuterSrc: hs[0][1], OuterDst: hs[0][3]}
		last := hs[len(hs)-1]
		p.InnerSrc, p.InnerDst = last[1], last[3]
		if len(hs) > 1 {
			p.Encapsulated = true
			p.OuterPort, _ = strconv.Atoi(hs[0][4])
			if m := vniField.FindStringSubmatch(t); m != nil {
				p.VNI, _ = strconv.Atoi(m[1])
			}
		}
		ps = append(ps, p)
	}
	return ps
}

// parseLinks parses `ip -d -j link show` output of several devices.
func parseLinks(out string) ([]link, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("parsing ip -d -j link: %w", err)
	}
	var ls []link
	for _, r := range raw {
		l, err := parseLink("[" + string(r) + "]")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}
