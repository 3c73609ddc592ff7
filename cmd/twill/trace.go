package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/twill-net/twill/lab"
	"github.com/twill-net/twill/lab/trace"
	"github.com/twill-net/twill/lab/trace/pathsvg"
)

// labTrace traces probes from SRC to DST through a lab and prints the path;
// a path that breaks is an error (exit status 1) after the path is shown.
func labTrace(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("twill lab trace", flag.ContinueOnError)
	name := fs.String("name", lab.DefaultName, "lab name")
	var o trace.Options
	fs.StringVar(&o.Proto, "proto", "icmp", "probe protocol: icmp, tcp or udp")
	fs.IntVar(&o.Port, "port", 0, "destination port of tcp and udp probes")
	fs.IntVar(&o.Probes, "probes", 3, "how many probes to send")
	asJSON := fs.Bool("json", false, "print the path as JSON instead of a table")
	svg := fs.String("svg", "", "also write a picture of the path to this SVG file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: twill lab trace [--name NAME] SRC DST [--proto icmp|tcp|udp] [--port N] [--json] [--svg FILE]\n\nSRC and DST: a pod (ns/name or name), a node, an IPv4 address, or internet (the lab's 203.0.113.10).")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return fmt.Errorf("want SRC and DST, got %d arguments %v", len(pos), pos)
	}
	o.Src, o.Dst = pos[0], pos[1]
	if os.Geteuid() != 0 {
		return errors.New("twill lab trace enters the lab's namespaces: run it with sudo")
	}
	c, err := lab.Load(*name)
	if err != nil {
		return err
	}
	p, err := trace.Run(ctx, c, o)
	if err != nil {
		return err
	}
	if *asJSON {
		err = p.WriteJSON(os.Stdout)
	} else {
		err = p.WriteTable(os.Stdout)
	}
	if err != nil {
		return err
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(pathsvg.Write(p)), 0o644); err != nil {
			return fmt.Errorf("writing the picture: %w", err)
		}
		if !*asJSON {
			fmt.Printf("picture: %s\n", *svg)
		}
	}
	if p.Break != nil {
		return fmt.Errorf("the path breaks at hop %d: %s", p.Break.Hop+1, p.Break.Reason)
	}
	return nil
}

// parseInterspersed parses fs's flags wherever they are among args and
// returns the other arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
