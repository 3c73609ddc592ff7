package trace

import (
	"testing"

	"github.com/twill-net/twill/lab/trace/path"
)

// The samples are what ip, bridge, conntrack and tcpdump printed on this
// machine (iproute2 6.x, tcpdump 4.99) for a VXLAN pair like flannel's.

func TestParseRouteGet(t *testing.T) {
	r, err := parseRouteGet(`[{"dst":"10.244.1.5","gateway":"10.244.1.0","dev":"flannel.1","prefsrc":"10.244.0.0","flags":["onlink"],"uid":0,"cache":[]}]`)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.describe(); got != "10.244.1.5 via 10.244.1.0 dev flannel.1 src 10.244.0.0 onlink" {
		t.Errorf("describe() = %q", got)
	}
	r, err = parseRouteGet(`[{"type":"local","dst":"10.244.1.0","from":"10.244.0.0","dev":"lo","flags":[],"cache":["local"],"iif":"vb"}]`)
	if err != nil || r.Type != "local" || r.describe() != "local 10.244.1.0 dev lo" {
		t.Errorf("local route: %+v, %v, %q", r, err, r.describe())
	}
	for _, bad := range []string{"", "RTNETLINK answers: Network is unreachable", "[]", `[{"dst":"1.2.3.4"}]`} {
		if _, err := parseRouteGet(bad); err == nil {
			t.Errorf("parseRouteGet(%q) did not fail", bad)
		}
	}
}

func TestParseNeighFDBLink(t *testing.T) {
	ns, err := parseNeigh(`[{"dst":"10.244.1.0","lladdr":"9e:26:17:33:94:5a","state":["PERMANENT"]}]`)
	if err != nil || len(ns) != 1 || ns[0].LLAddr != "9e:26:17:33:94:5a" {
		t.Errorf("parseNeigh = %+v, %v", ns, err)
	}
	if ns, err := parseNeigh("\n"); err != nil || len(ns) != 0 {
		t.Errorf("empty neighbour output = %+v, %v; want none", ns, err)
	}
	fs, err := parseFDB(`[{"mac":"9e:26:17:33:94:5a","dst":"192.168.77.2","flags":["self"],"state":"permanent"},{"mac":"00:00:00:00:00:00","flags":["self"],"state":"permanent"}]`)
	if err != nil {
		t.Fatal(err)
	}
	if d := fdbDst(fs, "9E:26:17:33:94:5A"); d != "192.168.77.2" {
		t.Errorf("fdbDst = %q, want 192.168.77.2", d)
	}
	if d := fdbDst(fs, "aa:bb:cc:dd:ee:ff"); d != "" {
		t.Errorf("fdbDst of an unknown MAC = %q, want none", d)
	}
	l, err := parseLink(`[{"ifindex":3,"ifname":"flannel.1","mtu":1450,"linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"192.168.77.1","port_range":{"low":0,"high":0},"port":8472,"learning":false}}}]`)
	if err != nil || l != (link{Name: "flannel.1", Kind: "vxlan", VNI: 1, Local: "192.168.77.1", Port: 8472, MTU: 1450}) {
		t.Errorf("parseLink = %+v, %v", l, err)
	}
	ls, err := parseLinks(`[{"ifname":"a","linkinfo":{"info_kind":"vxlan","info_data":{"port":4789}}},{"ifname":"flannel.1","linkinfo":{"info_kind":"vxlan","info_data":{"port":8472}}}]`)
	if err != nil || len(ls) != 2 || ls[1].Name != "flannel.1" || ls[1].Port != 8472 {
		t.Errorf("parseLinks = %+v, %v", ls, err)
	}
}

func TestParseAddrs(t *testing.T) {
	as, err := parseAddrs(`[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},{"ifname":"eth0","addr_info":[{"family":"inet","local":"172.18.0.3","prefixlen":16}]},{"ifname":"cni0","addr_info":[]}]`)
	if err != nil || len(as) != 2 || as[1].Dev != "eth0" || as[1].Net.String() != "172.18.0.0/16" {
		t.Errorf("parseAddrs = %+v, %v", as, err)
	}
}

func TestConntrackReplyDst(t *testing.T) {
	out := "icmp     1 29 src=10.244.1.9 dst=203.0.113.10 type=8 code=0 id=7 src=203.0.113.10 dst=10.244.1.9 type=0 code=0 id=7 mark=0 use=1\n" +
		"icmp     1 29 src=10.244.1.2 dst=203.0.113.10 type=8 code=0 id=12 src=203.0.113.10 dst=172.18.0.3 type=0 code=0 id=12 mark=0 use=1\n" +
		"conntrack v1.4.7 (conntrack-tables): 2 flow entries have been shown.\n"
	line, to := conntrackReplyDst(out, "10.244.1.2", "203.0.113.10")
	if to != "172.18.0.3" || line == "" {
		t.Errorf("masqueraded entry: reply dst %q (line %q), want 172.18.0.3", to, line)
	}
	if _, to := conntrackReplyDst(out, "10.244.1.9", "203.0.113.10"); to != "10.244.1.9" {
		t.Errorf("untranslated entry: reply dst %q, want the source itself", to)
	}
	if _, to := conntrackReplyDst(out, "10.244.1.3", "203.0.113.10"); to != "" {
		t.Errorf("no entry: reply dst %q, want none", to)
	}
}

const vxlanCapture = `18:34:19.365167 IP 192.168.77.1.60607 > 192.168.77.2.8472: OTV, flags [I] (0x08), overlay 0, instance 1
IP 10.244.0.0 > 10.244.1.0: ICMP echo request, id 11370, seq 1, length 64
18:34:19.365556 IP 192.168.77.2.60607 > 192.168.77.1.8472: OTV, flags [I] (0x08), overlay 0, instance 1
IP 10.244.1.0 > 10.244.0.0: ICMP echo reply, id 11370, seq 1, length 64
18:34:30.870675 IP 10.244.0.0 > 10.244.1.0: ICMP echo request, id 11881, seq 1, length 64
18:34:31.000001 IP 10.244.0.5.41000 > 10.244.1.7.80: Flags [S], seq 1, win 64240, length 0
`

func TestParseCapture(t *testing.T) {
	ps := parseCapture(vxlanCapture)
	if len(ps) != 4 {
		t.Fatalf("%d packets, want 4: %+v", len(ps), ps)
	}
	want := []packet{
		{OuterSrc: "192.168.77.1", OuterDst: "192.168.77.2", InnerSrc: "10.244.0.0", InnerDst: "10.244.1.0", Encapsulated: true, VNI: 1, OuterPort: 8472},
		{OuterSrc: "192.168.77.2", OuterDst: "192.168.77.1", InnerSrc: "10.244.1.0", InnerDst: "10.244.0.0", Encapsulated: true, VNI: 1, OuterPort: 8472},
		{OuterSrc: "10.244.0.0", OuterDst: "10.244.1.0", InnerSrc: "10.244.0.0", InnerDst: "10.244.1.0"},
		{OuterSrc: "10.244.0.5", OuterDst: "10.244.1.7", InnerSrc: "10.244.0.5", InnerDst: "10.244.1.7"},
	}
	for i, w := range want {
		got := ps[i]
		got.Text = ""
		if got != w {
			t.Errorf("packet %d = %+v, want %+v", i, got, w)
		}
	}
}

func TestMatchesAndFilter(t *testing.T) {
	ps := parseCapture(vxlanCapture)
	outer := &path.Outer{Src: "192.168.77.1", Dst: "192.168.77.2", Port: 8472, VNI: 1}
	wire := path.Hop{Src: "10.244.0.0", Dst: "10.244.1.0", Outer: outer}
	plain := path.Hop{Src: "10.244.0.0", Dst: "10.244.1.0"}
	reply := path.Hop{Src: "10.244.1.0", Dst: "10.244.0.0", Outer: &path.Outer{Src: "192.168.77.2", Dst: "192.168.77.1", Port: 8472}}
	for _, tc := range []struct {
		name string
		h    path.Hop
		want []bool
	}{
		{"outer request", wire, []bool{true, false, false, false}},
		{"plain request", plain, []bool{false, false, true, false}},
		{"outer reply", reply, []bool{false, true, false, false}},
	} {
		for i, p := range ps {
			if got := matches(tc.h, p); got != tc.want[i] {
				t.Errorf("%s: matches(packet %d) = %v, want %v", tc.name, i, got, tc.want[i])
			}
		}
	}
	tr := &tracer{o: Options{Proto: "tcp", Port: 80}}
	if f := tr.filter(wire); f != "(udp port 8472 and src host 192.168.77.1 and dst host 192.168.77.2 and udp[42:4] = 0x0af40000 and udp[46:4] = 0x0af40100)" {
		t.Errorf("outer filter = %q", f)
	}
	if f := tr.filter(plain); f != "(src host 10.244.0.0 and dst host 10.244.1.0 and tcp port 80)" {
		t.Errorf("plain filter = %q", f)
	}
}

func TestCompareReply(t *testing.T) {
	a := path.Place{Kind: path.Pod, Name: "a"}
	n := path.Place{Kind: path.Node, Name: "n"}
	req := []path.Hop{{Place: a, Interface: "eth0"}, {Place: n, Interface: "cni0"}, {Place: n, Interface: "eth0"}}
	rep := []path.Hop{{Place: n, Interface: "eth0"}, {Place: n, Interface: "cni0"}, {Place: a, Interface: "eth0"}}
	if got := compareReply(req, rep); len(got) != 1 || got[0] != "the reply retraces the request's hops in reverse" {
		t.Errorf("symmetric: %q", got)
	}
	rep[1].Interface = "flannel.1"
	if got := compareReply(req, rep); len(got) != 1 || got[0] == "the reply retraces the request's hops in reverse" {
		t.Errorf("asymmetric: %q", got)
	}
}
