package lab

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/internal/testenv/underlay"
	"github.com/twill-net/twill/lab/node"
)

// The lab's VM is a host on the underlay that is not a node, like an EC2
// instance in the cluster's VPC: NAME-vm, on the flat segment with an
// address outside the nodes' range. Without Options.UnderlayRoutes it
// reaches nodes only; with them it reaches pods by their addresses too.
var (
	vmAddr = netip.MustParsePrefix("172.18.1.10/16")
	// VMRange is the range the VM's address is in: what a cluster lists
	// in NoMasqueradeCIDRs for pods to reach it with their own addresses.
	VMRange = netip.MustParsePrefix("172.18.1.0/24")
	// VMIP is the VM's address.
	VMIP = net.IP(vmAddr.Addr().AsSlice())
)

func vmNS(lab string) string { return lab + "-vm" }

// VMNetNS is the path of the VM's network namespace.
func (c *Cluster) VMNetNS() string { return netns.Path(vmNS(c.Name)) }

// createVM makes the VM's namespace, its eth0 on the flat segment's
// bridge, its default route via the segment's gateway.
func createVM(lab string) error {
	path, err := netns.Create(vmNS(lab))
	if err != nil {
		return err
	}
	gw := flatSegment.gateway(family.IPv4).Addr().String()
	err = underlay.Connect(underlay.End{NS: netns.Path(underlayNS(lab)), Name: "vm0", Bridge: flatSegment.bridge},
		underlay.End{NS: path, Name: "eth0", Addrs: []string{vmAddr.String()}, Gateways: []string{gw}, MAC: "02:42:ac:12:01:0a"})
	if err != nil {
		return fmt.Errorf("attaching the VM %s to the underlay: %w", vmNS(lab), err)
	}
	return nil
}

// underlayRoutesPID is the PID file of the process keeping the underlay's
// routes to the podCIDRs.
func (c *Cluster) underlayRoutesPID() string {
	return filepath.Join(c.controlPlaneDir(), "run", "underlay-routes.pid")
}

// UnderlayRoutesLog is the log of the process keeping the underlay's
// routes to the podCIDRs (Options.UnderlayRoutes).
func (c *Cluster) UnderlayRoutesLog() string { return filepath.Join(c.Dir, "underlay-routes.log") }

// startUnderlayRoutes runs `twill lab underlay-routes` in the underlay
// namespace: it plays the VPC's route table, following the Nodes.
func (c *Cluster) startUnderlayRoutes() error {
	cg, err := node.MakeCgroup(daemonsCgroup(c.Name, "underlay"))
	if err != nil {
		return err
	}
	_, err = proc.Start(proc.Spec{
		Path: filepath.Join(c.RepoRoot, "bin", "twill"), Args: []string{"lab", "underlay-routes", "--kubeconfig", c.Kubeconfig},
		NetNS:   c.UnderlayNetNS(),
		Cgroups: cg,
		Log:     c.UnderlayRoutesLog(),
		PIDFile: c.underlayRoutesPID(),
	})
	if err != nil {
		return fmt.Errorf("starting the underlay's route controller: %w", err)
	}
	return nil
}
