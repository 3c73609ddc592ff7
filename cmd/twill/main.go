// Command twill is Twill's command-line tool. `twill status` shows a
// cluster's nodes as Twill sees them; `twill lab` runs a real Kubernetes
// cluster in network namespaces on this machine, the way kind does in
// Docker containers.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twill-net/twill/version"
)

const usage = `twill: Twill's command-line tool

Usage:
  twill status [--kubeconfig PATH] [--context NAME] [--json]   (Twill's view of a cluster)
  twill lab up [--name NAME] [--nodes N] [--cni twill|none] [--backend vxlan|host-gw]
               [--direct-routing] [--routed-nodes N] [--underlay-routes]
  twill lab down [--name NAME]
  twill lab status [--name NAME] [--json]
  twill lab doctor [--name NAME] [NODE] [-- DOCTOR FLAGS...]   (flanneld doctor on every node, or one)
  twill lab kubectl [--name NAME] ARGS...
  twill lab exec [--name NAME] NODE -- CMD...
  twill lab trace [--name NAME] SRC DST [--proto icmp|tcp|udp] [--port N] [--json] [--svg FILE]
                                             (follow probes hop by hop, each hop proven by a capture)
  twill lab compare [--quick] [--out DIR]   (overlay vs native, measured in labs of its own)
  twill lab conformance [--name NAME] [--quick] [--focus REGEXP] [--results FILE]
                                             (Kubernetes' network conformance tests on the lab)
  twill version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "lab":
		return runLab(ctx, args[1:])
	case "status":
		return runStatus(ctx, args[1:])
	case "version", "--version", "-version":
		fmt.Println(version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "twill: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
