// Command fuzz runs every fuzz target of hack/fuzz-targets.txt for a long
// budget and records, per target, the executions, the new corpus entries
// and the crashes in bench/RESULTS.md. A crash leaves its input under the
// package's testdata/fuzz, where Go replays it in every later `go test`.
//
//	go run ./bench/fuzz -fuzztime 1000000x -results bench/RESULTS.md
//
// make fuzz-long runs it.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/twill-net/twill/bench/report"
)

const section = "## Fuzzing, long"

func main() {
	fuzztime := flag.String("fuzztime", "1000000x", "budget per target, as go test -fuzztime takes it (a count like 1000000x, or a duration)")
	results := flag.String("results", "", "markdown file whose \""+section+"\" section is replaced; empty prints to stdout")
	targets := flag.String("targets", "hack/fuzz-targets.txt", "the list of targets")
	flag.Parse()
	if err := run(*targets, *fuzztime, *results); err != nil {
		fmt.Fprintln(os.Stderr, "bench/fuzz:", err)
		os.Exit(1)
	}
}

type target struct{ pkg, name string }

type result struct {
	target
	execs, interesting string
	took               time.Duration
	crash              string
}

// progress is the fuzzer's last status line: "fuzz: elapsed: 47s, execs:
// 300000 (77823/sec), new interesting: 36 (total: 116)".
var progress = regexp.MustCompile(`execs: (\d+) .*new interesting: (\d+)`)

func run(list, fuzztime, results string) error {
	ts, err := readTargets(list)
	if err != nil {
		return err
	}
	var rs []result
	failed := 0
	for _, t := range ts {
		r := result{target: t}
		start := time.Now()
		cmd := exec.Command("go", "test", "-run=^$", "-fuzz=^"+t.name+"$", "-fuzztime="+fuzztime, t.pkg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		r.took = time.Since(start)
		for _, m := range progress.FindAllStringSubmatch(out.String(), -1) {
			r.execs, r.interesting = m[1], m[2]
		}
		if err != nil {
			failed++
			r.crash = firstFailure(out.String())
			fmt.Fprintf(os.Stderr, "%s %s FAILED:\n%s\n", t.pkg, t.name, out.String())
		}
		fmt.Fprintf(os.Stderr, "%s %s: %s execs, %s new, %s\n", t.pkg, t.name, r.execs, r.interesting, r.took.Round(time.Second))
		rs = append(rs, r)
	}
	md := render(fuzztime, rs)
	if results == "" {
		fmt.Print(md)
	} else if err := report.ReplaceSection(results, section, md); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d targets failed: their inputs are under the packages' testdata/fuzz", failed, len(rs))
	}
	return nil
}

func readTargets(path string) ([]target, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ts []target
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s: %q is not a \"package target\" pair", path, line)
		}
		ts = append(ts, target{pkg: fields[0], name: fields[1]})
	}
	return ts, sc.Err()
}

// firstFailure is the first line of a failure report.
func firstFailure(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "Failing input written to") || strings.HasPrefix(strings.TrimSpace(l), "---") {
			return strings.TrimSpace(l)
		}
	}
	return "failed"
}

func render(fuzztime string, rs []result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "%s\n\n`make fuzz-long` (`go run ./bench/fuzz -fuzztime %s -results bench/RESULTS.md`): every target of hack/fuzz-targets.txt, the parsers of outside input, for %s each. Measured %s on %s, %d CPUs.\n\n",
		section, fuzztime, fuzztime, time.Now().Format("2006-01-02"), host, runtime.NumCPU())
	b.WriteString("| package | target | executions | new corpus entries | time | crashes |\n|---|---|---:|---:|---:|---|\n")
	for _, r := range rs {
		crash := "0"
		if r.crash != "" {
			crash = r.crash
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(r.pkg, "./"), r.name, r.execs, r.interesting, r.took.Round(time.Second), crash)
	}
	b.WriteString("\nA crash writes its input under the package's testdata/fuzz, which every `go test` then replays; it is fixed and committed with its input.\n")
	return b.String()
}
