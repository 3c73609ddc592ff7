// Package pathsvg draws a traced path (lab/trace/path) as an SVG picture:
// every namespace the packet crosses as a box, left to right in the order
// the request meets them, its interfaces inside, the request as solid
// arrows and the reply as dashed ones, the VXLAN tunnel in its own colour,
// and a cross where the path breaks.
package pathsvg

import (
	"fmt"
	"html"
	"strings"

	"github.com/twill-net/twill/lab/trace/path"
)

const (
	colW, colGap = 200, 40
	top, rowH    = 70, 44
	ifW, ifH     = 150, 26
	margin       = 20
)

var fills = map[path.Kind]string{
	path.Pod: "#dbeafe", path.Node: "#e5e7eb", path.Underlay: "#fef3c7", path.Internet: "#dcfce7", path.VM: "#fae8ff",
}

// column is one namespace's box and the interfaces in it.
type column struct {
	place path.Place
	ifs   []string
}

// Write returns the SVG picture of p.
func Write(p *path.Path) string {
	var cols []*column
	colOf := map[path.Place]int{}
	pos := func(h path.Hop) (x, y int) {
		ci, ok := colOf[h.Place]
		if !ok {
			ci = len(cols)
			colOf[h.Place] = ci
			cols = append(cols, &column{place: h.Place})
		}
		c := cols[ci]
		ri := -1
		for i, n := range c.ifs {
			if n == h.Interface {
				ri = i
			}
		}
		if ri < 0 {
			ri = len(c.ifs)
			c.ifs = append(c.ifs, h.Interface)
		}
		return margin + ci*(colW+colGap) + (colW-ifW)/2, top + ri*rowH
	}
	type pt struct{ x, y int }
	pts := make([]pt, len(p.Hops))
	for i, h := range p.Hops {
		x, y := pos(h)
		pts[i] = pt{x, y}
	}
	rows := 1
	for _, c := range cols {
		rows = max(rows, len(c.ifs))
	}
	width := 2*margin + max(1, len(cols))*(colW+colGap) - colGap
	height := top + rows*rowH + 90

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	b.WriteString(`<defs><marker id="req" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#1d4ed8"/></marker>` +
		`<marker id="rep" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#15803d"/></marker></defs>` + "\n")
	what := p.Proto
	if p.Port != 0 {
		what = fmt.Sprintf("%s/%d", p.Proto, p.Port)
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", margin,
		esc(fmt.Sprintf("trace %s (%s) → %s (%s), %s", p.Src, p.SrcIP, p.Dst, p.DstIP, what)))
	for ci, c := range cols {
		x := margin + ci*(colW+colGap)
		fmt.Fprintf(&b, `<rect x="%d" y="34" width="%d" height="%d" rx="8" fill="%s" stroke="#6b7280"/>`+"\n", x, colW, rows*rowH+28, fills[c.place.Kind])
		fmt.Fprintf(&b, `<text x="%d" y="52" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x+colW/2, esc(c.place.String()))
		for ri, n := range c.ifs {
			fmt.Fprintf(&b, `<rect class="if" x="%d" y="%d" width="%d" height="%d" rx="4" fill="#fff" stroke="#374151"/>`+"\n", x+(colW-ifW)/2, top+ri*rowH, ifW, ifH)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+colW/2, top+ri*rowH+17, esc(n))
		}
	}
	last := len(p.Hops)
	if p.Break != nil {
		last = p.Break.Hop + 1
	}
	for i := 1; i < last; i++ {
		a, z, h := pts[i-1], pts[i], p.Hops[i]
		if p.Hops[i-1].Dir != h.Dir {
			continue
		}
		cls, colour, dash, off := "req", "#1d4ed8", "", -4
		if h.Dir == path.Reply {
			cls, colour, dash, off = "rep", "#15803d", ` stroke-dasharray="6 4"`, 4
		}
		width := 2
		if h.Tunnel && p.Hops[i-1].Tunnel {
			colour, width = "#c2410c", 4
		}
		// Between boxes from side to side, within a box from edge to edge.
		x1, y1, x2, y2 := a.x+ifW, a.y+ifH/2+off, z.x, z.y+ifH/2+off
		switch {
		case a.x > z.x:
			x1, x2 = a.x, z.x+ifW
		case a.x == z.x:
			x1, x2 = a.x+ifW/2+off*3, z.x+ifW/2+off*3
			if a.y < z.y {
				y1, y2 = a.y+ifH, z.y
			} else {
				y1, y2 = a.y, z.y+ifH
			}
		}
		fmt.Fprintf(&b, `<line class="%s" x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%d"%s marker-end="url(#%s)"/>`+"\n", cls, x1, y1, x2, y2, colour, width, dash, cls)
		if o := p.Hops[i-1].Adds; o != nil {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#c2410c">%s</text>`+"\n", (x1+x2)/2-60, (y1+y2)/2-8, esc(fmt.Sprintf("VXLAN vni %d → %s", o.VNI, o.Dst)))
		}
	}
	y := top + rows*rowH + 48
	if p.Break != nil {
		bp := pts[p.Break.Hop]
		fmt.Fprintf(&b, `<g class="break" stroke="#dc2626" stroke-width="4"><line x1="%d" y1="%d" x2="%d" y2="%d"/><line x1="%d" y1="%d" x2="%d" y2="%d"/></g>`+"\n",
			bp.x+ifW-6, bp.y-6, bp.x+ifW+14, bp.y+14, bp.x+ifW+14, bp.y-6, bp.x+ifW-6, bp.y+14)
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#dc2626" font-weight="bold">%s</text>`+"\n", margin, y, esc("path breaks: "+p.Break.Reason))
	} else {
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", margin, y, esc("solid: request · dashed: reply · orange: inside the VXLAN tunnel · every hop seen by a capture"))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }
