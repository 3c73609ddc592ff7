// Package report keeps bench/RESULTS.md: each benchmark owns one "## "
// section and replaces only that, so results of different benchmarks, run
// at different times, live side by side.
package report

import (
	"os"
	"sort"
	"strings"

	"github.com/twill-net/twill/atomicfile"
)

// ReplaceSection swaps the section headed heading (a "## …" line) in the
// markdown file at path for md, appending it when there is none yet.
func ReplaceSection(path, heading, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmark results\n"
	}
	start := strings.Index(text, heading+"\n")
	if start < 0 {
		text = strings.TrimRight(text, "\n") + "\n\n" + md
	} else {
		end := len(text)
		if i := strings.Index(text[start+len(heading):], "\n## "); i >= 0 {
			end = start + len(heading) + i + 1
		}
		sep := ""
		if end < len(text) {
			sep = "\n"
		}
		text = text[:start] + md + sep + text[end:]
	}
	return atomicfile.Write(path, []byte(text), 0o644)
}

// Median returns the median of xs, or 0 for none: the figure the benchmarks
// and `twill lab compare` report of repeated runs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
