package compare

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// SVG draws the median throughputs as grouped bars: one group per stream
// count, one bar per mode, each labelled with Gbit/s and, for the overlays,
// the ratio to the underlay of the same lab.
func (r *Report) SVG() string {
	type bar struct {
		label, note string
		bps         float64
		color       string
	}
	colors := map[string]string{"underlay": "#7f8c8d", "vxlan": "#2e86de", "host-gw": "#27ae60"}
	var groups [2][]bar
	maxBps := 0.0
	for gi, streams := range []int{1, 4} {
		for _, rw := range r.rows() {
			bps, runs := rw.res.Median1(), rw.res.Throughput1
			if streams == 4 {
				bps, runs = rw.res.Median4(), rw.res.Throughput4
			}
			note := ""
			if rw.base != nil {
				base := rw.base.Throughput1
				if streams == 4 {
					base = rw.base.Throughput4
				}
				note = "×" + pairedRatio(runs, base)
			}
			label := strings.TrimSuffix(rw.label, " (pod → pod)")
			if rw.base == nil {
				label = "underlay (" + strings.Split(strings.TrimSuffix(rw.label, " lab)"), ", ")[1] + " lab)"
			}
			groups[gi] = append(groups[gi], bar{label: label, note: note, bps: bps, color: colors[rw.res.Mode]})
			maxBps = math.Max(maxBps, bps)
		}
	}
	const (
		width, height          = 760, 360
		left, right, top, foot = 60, 20, 40, 70
		barW, gap, groupGap    = 60, 10, 60
	)
	top2 := math.Ceil(maxBps/1e9) * 1e9
	if top2 == 0 {
		top2 = 1e9
	}
	plotH := float64(height - top - foot)
	y := func(bps float64) float64 { return float64(top) + plotH*(1-bps/top2) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">TCP throughput between two nodes, iperf3 (Gbit/s, median)</text>`+"\n", left)
	steps := int(top2 / 1e9)
	stride := 1
	for steps/stride > 8 {
		stride *= 2
	}
	for g := 0; g <= steps; g += stride {
		yy := y(float64(g) * 1e9)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, yy, width-right, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d</text>`+"\n", left-6, yy+4, g)
	}
	x := left + 20
	for gi, name := range []string{"1 stream", "4 streams"} {
		start := x
		for _, br := range groups[gi] {
			yy := y(br.bps)
			fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %s Gbit/s</title></rect>`+"\n",
				x, yy, barW, float64(top)+plotH-yy, br.color, html.EscapeString(br.label), gbps(br.bps))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+barW/2, yy-4, gbps(br.bps))
			if br.note != "" {
				fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="middle" fill="white" font-weight="bold">%s</text>`+"\n", x+barW/2, yy+16, br.note)
			}
			l1, l2, _ := strings.Cut(br.label, " (")
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="10">%s</text>`+"\n", x+barW/2, height-foot+12, html.EscapeString(l1))
			if l2 != "" {
				fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="9">(%s</text>`+"\n", x+barW/2, height-foot+23, html.EscapeString(l2))
			}
			x += barW + gap
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", (start+x-gap)/2, height-foot+42, name)
		x += groupGap
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">×N: ratio to the underlay measured in the same lab (median of paired rounds)</text>`+"\n", left, height-10)
	b.WriteString("</svg>\n")
	return b.String()
}
