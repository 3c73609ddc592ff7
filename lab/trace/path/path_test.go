package path

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var (
	podA  = Place{Kind: Pod, Name: "default/a", Node: "n1"}
	node1 = Place{Kind: Node, Name: "n1"}
	node2 = Place{Kind: Node, Name: "n2"}
)

func hops() []Hop {
	return []Hop{
		{Dir: Request, Place: podA, Interface: "eth0", Captured: true, Seen: []string{"a > b"}},
		{Dir: Request, Place: node1, Interface: "cni0", In: true, Captured: true, Seen: []string{"a > b"}},
		{Dir: Request, Place: node1, Interface: "flannel.1", Captured: true, Seen: []string{"a > b"}},
		{Dir: Request, Place: node1, Interface: "eth0", Captured: true, Seen: []string{"outer"}, Outer: &Outer{Src: "172.18.0.2", Dst: "172.18.0.3", Port: 8472, VNI: 1}},
		{Dir: Request, Place: node2, Interface: "eth0", In: true, Captured: true, Seen: []string{"outer"}},
		{Dir: Reply, Place: node2, Interface: "eth0", Captured: true, Seen: []string{"b > a"}},
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name      string
		change    func([]Hop)
		wantWhole bool
		wantHop   int
		wantIn    string
	}{
		{"whole", func([]Hop) {}, true, 0, ""},
		{"missing entry", func(h []Hop) { h[2].Missing = "no FDB entry for 6a:11"; h[3].Seen = nil }, false, 2, "no FDB entry for 6a:11"},
		{"vanished on the wire", func(h []Hop) { h[4].Seen = nil }, false, 4, "seen on eth0 in node n1, not on eth0 in node n2"},
		{"first hop unseen", func(h []Hop) { h[0].Seen = nil }, false, 0, "not seen on eth0 in pod default/a"},
		{"uncaptured hops do not break", func(h []Hop) { h[1].Captured, h[1].Seen = false, nil }, true, 0, ""},
		{"reply lost", func(h []Hop) { h[5].Seen = nil }, false, 5, "not seen on eth0 in node n2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Path{Hops: hops()}
			tc.change(p.Hops)
			if got := p.Judge(); got != tc.wantWhole {
				t.Fatalf("Judge() = %v, want %v (break %+v)", got, tc.wantWhole, p.Break)
			}
			if tc.wantWhole {
				if p.Break != nil {
					t.Errorf("whole path has a break: %+v", p.Break)
				}
				return
			}
			if p.Break.Hop != tc.wantHop || !strings.Contains(p.Break.Reason, tc.wantIn) {
				t.Errorf("break = %+v, want hop %d with %q", p.Break, tc.wantHop, tc.wantIn)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	p := &Path{Src: podA, Dst: Place{Kind: Pod, Name: "default/b"}, SrcIP: "10.244.1.2", DstIP: "10.244.2.2", Proto: "icmp", Probes: 3, Hops: hops()}
	p.Hops[2].Evidence = []Evidence{{Command: "bridge fdb show dev flannel.1", Output: "6a:11 dst 172.18.0.3\nsecond line"}}
	var b bytes.Buffer
	if err := p.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"HOP", "REQUEST", "REPLY", "pod default/a", "flannel.1 (out)", "cni0 (in)", "$ bridge fdb show dev flannel.1  →  6a:11 dst 172.18.0.3", "    second line",
		"outer 172.18.0.2 → 172.18.0.3 udp/8472 vni 1", "path whole"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	p.Hops[2].Missing = "no FDB entry"
	p.Judge()
	b.Reset()
	if err := p.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	if !strings.Contains(out, "PATH BREAKS HERE: no FDB entry") || strings.Contains(out, "REPLY") || strings.Contains(out, "path whole") {
		t.Errorf("broken path's table should stop at the break:\n%s", out)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	p := &Path{Src: podA, Dst: node2, Proto: "tcp", Port: 80, Probes: 2, Hops: hops(), Break: &Break{Hop: 3, Reason: "r"}}
	var b bytes.Buffer
	if err := p.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Path
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Hops) != len(p.Hops) || back.Hops[3].Outer.VNI != 1 || back.Break.Hop != 3 || back.Src != podA || !back.Hops[1].In {
		t.Errorf("round trip lost data: %s", b.String())
	}
	if !strings.Contains(b.String(), `"direction": "request"`) {
		t.Errorf("JSON lacks the direction:\n%s", b.String())
	}
}
