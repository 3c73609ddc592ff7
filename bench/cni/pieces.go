package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/internal/testenv/cnihost"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// piece is one part of the plugin's own work, timed n times.
type piece struct {
	name string
	took []time.Duration
}

// measurePieces times, n times each and taking turns, what the flannel
// plugin does besides running its delegate: starting as a process (as
// CNI_COMMAND=VERSION, which does nothing else; the bridge plugin's start
// beside it), reading subnet.env, and writing a delegate configuration the
// size of the real one with fsync and without, in work's file system.
func measurePieces(bin, work string, n int) (string, error) {
	h, err := cnihost.NewHost(bin, filepath.Join(work, "pieces"), cnihost.Options{})
	if err != nil {
		return "", err
	}
	defer h.Close()
	if err := h.WriteSubnetEnv("10.244.0.0/16", "10.244.1.1/24", 1450, true); err != nil {
		return "", err
	}
	conf := make([]byte, 600)
	start := func(plugin string) func() error {
		return func() error {
			cmd := exec.Command(filepath.Join(bin, plugin))
			cmd.Env = []string{"CNI_COMMAND=VERSION"}
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
			return cmd.Run()
		}
	}
	ps := []struct {
		piece
		f func() error
	}{
		{piece{name: "process start and exit: flannel (CNI_COMMAND=VERSION)"}, start("flannel")},
		{piece{name: "process start and exit: bridge (CNI_COMMAND=VERSION)"}, start("bridge")},
		{piece{name: "read and parse subnet.env"}, func() error { _, err := subnetenv.Read(h.SubnetFile); return err }},
		{piece{name: "save the delegate configuration, with fsync (before)"}, func() error {
			return atomicfile.Write(filepath.Join(h.DataDir, "c"), conf, 0o600)
		}},
		{piece{name: "save the delegate configuration, no fsync (now)"}, func() error {
			return atomicfile.Replace(filepath.Join(h.DataDir, "c"), conf, 0o600)
		}},
	}
	for range n {
		for i := range ps {
			t0 := time.Now()
			if err := ps[i].f(); err != nil {
				return "", fmt.Errorf("%s: %w", ps[i].name, err)
			}
			ps[i].took = append(ps[i].took, time.Since(t0))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nThe pieces of the plugin's own work, %d times each, taking turns, in the same run (ms; the delegate's exec is the baseline row above):\n\n| piece | p50 | p99 | max |\n|---|---:|---:|---:|\n", n)
	for _, p := range ps {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", p.name, ms(pct(p.took, .5)), ms(pct(p.took, .99)), ms(slices.Max(p.took)))
	}
	return b.String(), os.RemoveAll(filepath.Join(h.DataDir, "c"))
}
