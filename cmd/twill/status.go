package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/twill-net/twill/status"
)

// runStatus is `twill status`: the cluster view through a kubeconfig. It
// returns 1 when the view shows problems.
func runStatus(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("twill status", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default: $KUBECONFIG, else ~/.kube/config)")
	kctx := fs.String("context", "", "kubeconfig context (default: its current one)")
	o := status.Options{}
	fs.StringVar(&o.Namespace, "namespace", status.Namespace, "namespace of Twill's DaemonSet and ConfigMap")
	fs.StringVar(&o.Prefix, "kube-annotation-prefix", "", "flanneld's --kube-annotation-prefix (default flannel's)")
	asJSON := fs.Bool("json", false, "print the view as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "twill status: unexpected arguments %v\n", fs.Args())
		return 2
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if *kubeconfig != "" {
		rules.ExplicitPath = *kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kctx}).ClientConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill status: loading the kubeconfig: %v\n", err)
		return 1
	}
	c, err := clusterStatus(ctx, rc, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "twill status: %v\n", err)
		return 1
	}
	if err := writeStatus(os.Stdout, c, *asJSON); err != nil {
		fmt.Fprintf(os.Stderr, "twill status: %v\n", err)
		return 1
	}
	if !c.OK() {
		return 1
	}
	return 0
}

// clusterStatus builds the cluster view through rc.
func clusterStatus(ctx context.Context, rc *rest.Config, o status.Options) (*status.Cluster, error) {
	rc = rest.CopyConfig(rc)
	rc.Timeout = 15 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	return status.Build(ctx, status.Clientset{Interface: cs}, o)
}

func writeStatus(w io.Writer, c *status.Cluster, asJSON bool) error {
	if asJSON {
		return c.WriteJSON(w)
	}
	return c.WriteText(w)
}
