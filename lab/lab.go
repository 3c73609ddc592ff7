// Package lab runs a real Kubernetes cluster on one Linux machine without
// Docker: every node is a set of network, mount and UTS namespaces running
// containerd, kubelet and kube-proxy, wired to a bridge that stands for
// kind's Docker network. `twill lab` and the end-to-end suite drive it.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/lab/node"
)

// DefaultName is the lab's name when Options.Name is empty.
const DefaultName = "twill"

// StateRoot holds one directory per lab with everything it made: PID files,
// certificates, namespace files, node directories, logs.
const StateRoot = "/var/lib/twill-lab"

// Options configure Up.
type Options struct {
	// Name names the lab and prefixes its nodes; default DefaultName.
	Name string
	// Nodes is the number of nodes, the control plane included; default 3.
	Nodes int
	// CNI is "twill" (apply Documentation/kube-flannel.yml, the default) or
	// "none" (leave the nodes NotReady, like kind's disableDefaultCNI).
	CNI string
	// Backend is the manifest's backend with CNI "twill": "vxlan" (default)
	// or "host-gw".
	Backend string
	// DirectRouting sets "DirectRouting": true in the manifest's vxlan
	// backend: peers on a node's own subnet are routed without VXLAN.
	DirectRouting bool
	// RoutedNodes puts the last RoutedNodes nodes on a second underlay
	// subnet, 172.19.0.0/16 (gateway 172.19.0.1), which the underlay
	// namespace routes to the first: they share no layer-2 segment with the
	// other nodes. Default 0: every node on 172.18.0.0/16. The control
	// plane always stays on the first subnet.
	RoutedNodes int
	// UnderlayRoutes makes the underlay play a VPC's route table: it keeps
	// a route to every Node's podCIDR via that Node, so the lab's VM (and
	// anything else on the underlay) reaches pods by their addresses; the
	// manifest lists the VM's range in NoMasqueradeCIDRs. IPv4 labs only.
	UnderlayRoutes bool
	// IPFamily is the cluster's IP families, as kind's networking.ipFamily:
	// "ipv4" (the default), "ipv6", or "dual" (IPv4 first, then IPv6). The
	// underlay, the control plane's ranges, the nodes' addresses and
	// net-conf.json follow it.
	IPFamily string
	// RepoRoot is the Twill checkout holding Documentation/, hack/ and bin/;
	// default: found from the working directory upwards.
	RepoRoot string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Cluster is a running lab.
type Cluster struct {
	// Name is the lab's name.
	Name string
	// Nodes lists the nodes, the control plane first.
	Nodes []Node
	// Kubeconfig is the admin kubeconfig. It works only from inside the
	// lab's namespaces: use Kubectl or RESTConfig from the host.
	Kubeconfig string
	// Dir is the lab's state directory.
	Dir string
	// RepoRoot is the Twill checkout the lab was made from.
	RepoRoot string
	// CNI and Backend are what Up was given.
	CNI, Backend string
	// DirectRouting and RoutedNodes are what Up was given.
	DirectRouting bool `json:",omitempty"`
	RoutedNodes   int  `json:",omitempty"`
	// UnderlayRoutes is what Up was given.
	UnderlayRoutes bool `json:",omitempty"`
	// IPFamily is what Up was given; empty in the state of a lab made
	// before there was a choice, which is "ipv4".
	IPFamily string `json:",omitempty"`
}

// The values of Options.IPFamily.
const (
	IPv4 = "ipv4"
	IPv6 = "ipv6"
	Dual = "dual"
)

// ipFamilies maps Options.IPFamily to the families, the primary first.
var ipFamilies = map[string][]family.Family{
	IPv4: {family.IPv4},
	IPv6: {family.IPv6},
	Dual: {family.IPv4, family.IPv6},
}

// Families returns the lab's IP families, the primary one first.
func (c *Cluster) Families() []family.Family {
	if fams, ok := ipFamilies[c.IPFamily]; ok {
		return fams
	}
	return ipFamilies[IPv4]
}

// Family is the lab's IP family as Options.IPFamily names it.
func (c *Cluster) Family() string {
	if c.IPFamily == "" {
		return IPv4
	}
	return c.IPFamily
}

// Node is one lab node.
type Node struct {
	// Name is the Kubernetes node name, e.g. twill-worker.
	Name string
	// IP is the node's primary address on the underlay (eth0): of the
	// lab's first family, the one kubelet reports first.
	IP net.IP
	// IPs are all the node's underlay addresses, one per family of the
	// lab, IP first; empty in the state of an older lab, where IP is all.
	IPs []net.IP `json:",omitempty"`
	// Routed is set for a node on the routed subnet (Options.RoutedNodes).
	Routed bool `json:",omitempty"`
	// Index numbers nodes in creation order, 0 being the control plane.
	Index int
	// NetNS is the node's network namespace, e.g. /run/netns/twill-worker.
	NetNS string
}

// validName keeps lab names usable in namespace, cgroup and interface
// names.
var validName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)

func stateDir(name string) string { return filepath.Join(StateRoot, name) }

func (c *Cluster) controlPlaneDir() string { return filepath.Join(c.Dir, "controlplane") }
func (c *Cluster) nsDir() string           { return filepath.Join(c.Dir, "ns") }
func (c *Cluster) nodeDir(name string) string {
	return filepath.Join(c.Dir, "nodes", name)
}

// cgroup names: kubelet's cgroupRoot and the node daemons' cgroup.
func labCgroup(lab string) string        { return "/twill-lab/" + lab }
func podsCgroup(lab, n string) string    { return labCgroup(lab) + "/pods/" + n }
func daemonsCgroup(lab, n string) string { return labCgroup(lab) + "/daemons/" + n }
func (c *Cluster) node(n Node) *node.Node {
	nd := node.New(n.Name, n.Addrs(), c.nodeDir(n.Name), c.nsDir(), n.NetNS)
	nd.Nameservers = c.nameservers()
	nd.RegistryMirror = c.RegistryAddr()
	return nd
}

// Addrs returns the node's underlay addresses, the primary first.
func (n Node) Addrs() []net.IP {
	if len(n.IPs) == 0 && n.IP != nil {
		return []net.IP{n.IP}
	}
	return n.IPs
}

// Addr returns the node's underlay address of family f, nil if the lab
// does not run f.
func (n Node) Addr(f family.Family) net.IP {
	for _, ip := range n.Addrs() {
		if a, ok := netip.AddrFromSlice(ip); ok && family.Of(a) == f {
			return ip
		}
	}
	return nil
}

// Load returns the lab called name (DefaultName if empty) from its state
// directory; it fails if no such lab was brought up.
func Load(name string) (*Cluster, error) {
	if name == "" {
		name = DefaultName
	}
	b, err := os.ReadFile(filepath.Join(stateDir(name), "cluster.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab called %q: start one with `twill lab up --name %s`", name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parsing lab state %s: %w", filepath.Join(stateDir(name), "cluster.json"), err)
	}
	return &c, nil
}

func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(c.Dir, "cluster.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("saving lab state: %w", err)
	}
	return nil
}

// NodeByName returns the node called name.
func (c *Cluster) NodeByName(name string) (Node, error) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	names := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		names = append(names, n.Name)
	}
	return Node{}, fmt.Errorf("lab %s has no node %q (nodes: %v)", c.Name, name, names)
}

// UnderlayNetNS is the path of the underlay's network namespace, from
// which every node and the API server are reachable.
func (c *Cluster) UnderlayNetNS() string { return netns.Path(underlayNS(c.Name)) }

// InternetNetNS is the path of the namespace holding InternetIP.
func (c *Cluster) InternetNetNS() string { return netns.Path(internetNS(c.Name)) }
