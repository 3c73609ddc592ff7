package pathsvg

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/twill-net/twill/lab/trace/path"
)

func samplePath() *path.Path {
	pod := path.Place{Kind: path.Pod, Name: "default/a<b>", Node: "n1"}
	n1 := path.Place{Kind: path.Node, Name: "n1"}
	n2 := path.Place{Kind: path.Node, Name: "n2"}
	out := &path.Outer{Src: "172.18.0.2", Dst: "172.18.0.3", Port: 8472, VNI: 1}
	return &path.Path{Src: pod, Dst: n2, SrcIP: "10.244.1.2", DstIP: "172.18.0.3", Proto: "icmp", Hops: []path.Hop{
		{Dir: path.Request, Place: pod, Interface: "eth0"},
		{Dir: path.Request, Place: n1, Interface: "cni0", In: true},
		{Dir: path.Request, Place: n1, Interface: "flannel.1", Adds: out},
		{Dir: path.Request, Place: n1, Interface: "eth0", Tunnel: true, Outer: out},
		{Dir: path.Request, Place: n2, Interface: "eth0", In: true, Tunnel: true, Outer: out},
		{Dir: path.Reply, Place: n2, Interface: "eth0"},
		{Dir: path.Reply, Place: n1, Interface: "eth0", In: true},
	}}
}

// parse checks the picture is well-formed XML and counts its elements by
// name and class.
func parse(t *testing.T, s string) map[string]int {
	t.Helper()
	n := map[string]int{}
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, s)
		}
		if se, ok := tok.(xml.StartElement); ok {
			n[se.Name.Local]++
			for _, a := range se.Attr {
				if a.Name.Local == "class" {
					n[se.Name.Local+"."+a.Value]++
				}
			}
		}
	}
}

func TestWrite(t *testing.T) {
	p := samplePath()
	s := Write(p)
	n := parse(t, s)
	// Three places (pod, n1, n2), interfaces eth0 | cni0 flannel.1 eth0 | eth0.
	if n["rect.if"] != 5 {
		t.Errorf("%d interface boxes, want 5:\n%s", n["rect.if"], s)
	}
	// Four request arrows between five request hops, one reply arrow.
	if n["line.req"] != 4 || n["line.rep"] != 1 {
		t.Errorf("arrows: %d request, %d reply; want 4, 1:\n%s", n["line.req"], n["line.rep"], s)
	}
	if n["g.break"] != 0 || !strings.Contains(s, "VXLAN vni 1 → 172.18.0.3") || !strings.Contains(s, "default/a&lt;b&gt;") {
		t.Errorf("want no break, the tunnel labelled and names escaped:\n%s", s)
	}
}

func TestWriteBroken(t *testing.T) {
	p := samplePath()
	p.Hops = p.Hops[:3]
	p.Break = &path.Break{Hop: 2, Reason: "no FDB entry for 6a:11 on flannel.1"}
	s := Write(p)
	n := parse(t, s)
	if n["g.break"] != 1 || n["line.req"] != 2 || !strings.Contains(s, "path breaks: no FDB entry for 6a:11 on flannel.1") {
		t.Errorf("broken path: want a cross, 2 arrows and the reason:\n%s", s)
	}
}
