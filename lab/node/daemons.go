package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twill-net/twill/internal/testenv/kubeproxy"
	"github.com/twill-net/twill/lab/registry"
)

// containerdConfig is containerd 1.6's configuration for a lab node; every
// path is inside the node's mount namespace, hence private to the node.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # These machines lack CAP_SYS_RESOURCE: without this runc fails to raise
  # a container's oom_score_adj and every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`

// ContainerdSocket is containerd's socket inside a node.
const ContainerdSocket = "/run/containerd/containerd.sock"

// StartContainerd starts containerd with sandboxImage as the pod sandbox
// image and waits until it answers.
func (n *Node) StartContainerd(ctx context.Context, cgroups []string, sandboxImage string) error {
	certs := filepath.Join(n.Dir, "certs.d")
	if n.RegistryMirror != "" {
		for _, r := range registry.Mirrored {
			if err := os.MkdirAll(filepath.Join(certs, r), 0o755); err != nil {
				return fmt.Errorf("creating containerd's registry hosts: %w", err)
			}
			if err := os.WriteFile(filepath.Join(certs, r, "hosts.toml"), []byte(registry.HostsTOML(r, n.RegistryMirror)), 0o644); err != nil {
				return fmt.Errorf("writing containerd's hosts.toml for %s: %w", r, err)
			}
		}
	}
	conf := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, containerdConfig, sandboxImage, certs), 0o644); err != nil {
		return fmt.Errorf("writing containerd config: %w", err)
	}
	if err := n.Start("containerd", "/usr/bin/containerd", cgroups, "--config", conf); err != nil {
		return err
	}
	return n.WaitFor(ctx, "containerd on "+n.Name, time.Minute, func() error {
		_, err := n.Run(ctx, "ctr", "--address", ContainerdSocket, "version")
		return err
	})
}

// ImportImages loads docker or OCI archives into containerd's k8s.io
// namespace, where the kubelet finds them.
func (n *Node) ImportImages(ctx context.Context, archives ...string) error {
	for _, a := range archives {
		if _, err := n.Run(ctx, "ctr", "--address", ContainerdSocket, "-n", "k8s.io", "images", "import", a); err != nil {
			return fmt.Errorf("importing %s: %w", a, err)
		}
	}
	return nil
}

// TagImages gives the image ref further references in containerd's k8s.io
// namespace, replacing what they named before.
func (n *Node) TagImages(ctx context.Context, ref string, aliases ...string) error {
	for _, a := range aliases {
		if _, err := n.Run(ctx, "ctr", "--address", ContainerdSocket, "-n", "k8s.io", "images", "tag", "--force", ref, a); err != nil {
			return fmt.Errorf("tagging %s as %s: %w", ref, a, err)
		}
	}
	return nil
}

// KubeletOptions configure StartKubelet.
type KubeletOptions struct {
	// Bin is the kubelet binary.
	Bin string
	// Kubeconfig is the kubelet's client kubeconfig (user system:node:NAME).
	Kubeconfig string
	// ClientCAFile verifies clients of the kubelet's API (the API server).
	ClientCAFile string
	// CertFile and KeyFile are the kubelet's serving certificate.
	CertFile, KeyFile string
	// CgroupRoot is the node's own cgroup (e.g. /twill-lab/x/pods/node),
	// so that two kubelets never manage the same cgroups.
	CgroupRoot string
	// Cgroups are the v1 cgroup directories the kubelet process joins.
	Cgroups []string
	// ControlPlane taints the node like kind's control-plane node.
	ControlPlane bool
	// ClusterDNS are the cluster DNS Service's addresses and ClusterDomain
	// its domain, written into every pod's resolv.conf; none leaves pods
	// with the node's resolver.
	ClusterDNS    []net.IP
	ClusterDomain string
}

// StartKubelet writes the kubelet's configuration and starts it.
func (n *Node) StartKubelet(o KubeletOptions) error {
	taints := "[]"
	if o.ControlPlane {
		taints = "\n- key: node-role.kubernetes.io/control-plane\n  effect: NoSchedule"
	}
	resolv := "/etc/resolv.conf"
	if _, err := os.Stat(filepath.Join(n.Dir, "resolv.conf")); err == nil {
		resolv = filepath.Join(n.Dir, "resolv.conf")
	}
	dns := ""
	if len(o.ClusterDNS) > 0 {
		dns = "clusterDomain: " + o.ClusterDomain + "\nclusterDNS:\n"
		for _, ip := range o.ClusterDNS {
			dns += "- " + ip.String() + "\n"
		}
	}
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The lab's hosts mount cgroup v1, which kubelet 1.37 refuses by default.
failCgroupV1: false
# containerd 1.6 cannot tell the kubelet its cgroup driver.
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
tlsCertFile: %s
tlsPrivateKeyFile: %s
registerWithTaints: %s
resolvConf: %s
failSwapOn: false
rotateCertificates: false
serverTLSBootstrap: false
# The lab shares the host's disk: never evict or garbage-collect the images
# imported without a registry.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 4s
%s`, o.CgroupRoot, ContainerdSocket, n.IPs[0], o.ClientCAFile, o.CertFile, o.KeyFile, taints, resolv, dns)
	path := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("writing kubelet config: %w", err)
	}
	return n.Start("kubelet", o.Bin, o.Cgroups,
		"--config="+path,
		"--kubeconfig="+o.Kubeconfig,
		"--hostname-override="+n.Name,
		"--node-ip="+joinIPs(n.IPs),
	)
}

// joinIPs is kubelet's --node-ip for a node with addresses ips: one, or a
// dual-stack pair, comma-separated.
func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// StartKubeProxy writes kube-proxy's configuration (iptables mode, one
// proxier per family of clusterCIDRs) and starts it.
func (n *Node) StartKubeProxy(bin, kubeconfig string, clusterCIDRs []string, cgroups []string) error {
	path := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := kubeproxy.Write(path, kubeproxy.Config{
		Kubeconfig: kubeconfig, ClusterCIDRs: clusterCIDRs, NodeName: n.Name, IPv6: n.IPs[0].To4() == nil,
	}); err != nil {
		return err
	}
	return n.Start("kube-proxy", bin, cgroups, "--config="+path)
}
