// Package cnihost runs the flannel CNI plugin the way a container runtime
// does, through libcni with the real bridge, host-local and portmap plugins,
// on a throwaway "host" network namespace with throwaway pod namespaces
// (netns.NS). The integration tests and the CNI benchmark share it.
// Everything it makes lives in namespaces and directories it removes in
// Close; it needs root.
package cnihost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// NetworkName is the conflist's name, as in flannel's manifest.
const NetworkName = "cbr0"

// Plugins are the packages BuildPlugins builds, by binary name.
var Plugins = map[string]string{
	"flannel":    "github.com/twill-net/twill/cmd/flannel",
	"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
	"loopback":   "github.com/containernetworking/plugins/plugins/main/loopback",
}

// BuildPlugins builds the flannel plugin and the standard plugins into dir
// with the go tool, from the module the caller runs in.
func BuildPlugins(dir string) error {
	pkgs := make([]string, 0, len(Plugins))
	for _, p := range Plugins {
		pkgs = append(pkgs, p)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the CNI plugins into %s: %w\n%s", dir, err, out)
	}
	return nil
}

// Host is a node's network namespace with the plugin configured as flannel's
// manifest configures it.
type Host struct {
	// NS is the host network namespace; cni0 is made in it.
	NS *netns.NS
	// Dir holds subnet.env, the plugin's data dir and host-local's store.
	Dir        string
	SubnetFile string
	DataDir    string
	IPAMDir    string
	CacheDir   string
	List       *libcni.NetworkConfigList
	CNI        *libcni.CNIConfig

	mu   sync.Mutex
	pods []*netns.NS
}

// Options change the delegate part of the conflist.
type Options struct {
	// Delegate is the flannel entry's "delegate" object; nil means
	// flannel's usual {"hairpinMode": true, "isDefaultGateway": true}.
	Delegate map[string]any
	// CNIVersion of the conflist; empty means 1.1.0.
	CNIVersion string
}

// NewHost makes the host namespace and a work directory under dir, with the
// plugins from binDir. subnet.env is not written: call WriteSubnetEnv.
func NewHost(binDir, dir string, opt Options) (*Host, error) {
	hostNS, err := netns.Make("")
	if err != nil {
		return nil, fmt.Errorf("creating the host network namespace: %w", err)
	}
	h := &Host{
		NS:         hostNS,
		Dir:        dir,
		SubnetFile: filepath.Join(dir, "run", "flannel", "subnet.env"),
		DataDir:    filepath.Join(dir, "cni", "flannel"),
		IPAMDir:    filepath.Join(dir, "cni", "networks"),
		CacheDir:   filepath.Join(dir, "cni", "cache"),
	}
	delegate := opt.Delegate
	if delegate == nil {
		delegate = map[string]any{"hairpinMode": true, "isDefaultGateway": true}
	}
	delegate["ipam"] = map[string]any{"dataDir": h.IPAMDir}
	version := opt.CNIVersion
	if version == "" {
		version = "1.1.0"
	}
	conflist := map[string]any{
		"name":       NetworkName,
		"cniVersion": version,
		"plugins": []any{
			map[string]any{"type": "flannel", "subnetFile": h.SubnetFile, "dataDir": h.DataDir, "delegate": delegate},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	data, err := json.Marshal(conflist)
	if err != nil {
		h.Close()
		return nil, err
	}
	h.List, err = libcni.NetworkConfFromBytes(data)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("loading the conflist: %w", err)
	}
	h.CNI = NewCNI([]string{binDir}, h.CacheDir)
	return h, nil
}

// NewCNI is a libcni client for plugins in binDirs with cacheDir as its
// cache. Its exec is set up front: libcni otherwise creates it lazily, which
// races when one client runs several pods at once.
func NewCNI(binDirs []string, cacheDir string) *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, exec)
}

// WriteSubnetEnv writes subnet.env as flanneld would.
func (h *Host) WriteSubnetEnv(network, subnet string, mtu int, ipMasq bool) error {
	content := fmt.Sprintf("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=%d\nFLANNEL_IPMASQ=%t\n", network, subnet, mtu, ipMasq)
	env, err := subnetenv.Parse(strings.NewReader(content))
	if err != nil {
		return err
	}
	_, err = subnetenv.Write(h.SubnetFile, env)
	return err
}

// NewPod makes a pod network namespace, removed by Close.
func (h *Host) NewPod() (*netns.NS, error) {
	pod, err := netns.Make("")
	if err != nil {
		return nil, fmt.Errorf("creating a pod network namespace: %w", err)
	}
	h.mu.Lock()
	h.pods = append(h.pods, pod)
	h.mu.Unlock()
	return pod, nil
}

// RemovePod deletes a pod namespace early, as a runtime does before DEL
// when a sandbox died.
func (h *Host) RemovePod(pod *netns.NS) error {
	h.mu.Lock()
	for i, p := range h.pods {
		if p == pod {
			h.pods = append(h.pods[:i], h.pods[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	return pod.Close()
}

// Runtime is the runtime configuration for a pod's eth0.
func Runtime(id string, pod *netns.NS) *libcni.RuntimeConf {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return &libcni.RuntimeConf{ContainerID: id, NetNS: path, IfName: "eth0"}
}

// in runs f with the calling thread in the host namespace, so the plugins
// libcni starts run there too.
func (h *Host) in(f func() error) error {
	return h.NS.Do(f)
}

// Add runs ADD for the conflist.
func (h *Host) Add(ctx context.Context, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := h.in(func() error {
		var err error
		res, err = h.CNI.AddNetworkList(ctx, h.List, rt)
		return err
	})
	return res, err
}

// Del runs DEL for the conflist.
func (h *Host) Del(ctx context.Context, rt *libcni.RuntimeConf) error {
	return h.in(func() error { return h.CNI.DelNetworkList(ctx, h.List, rt) })
}

// Check runs CHECK for the conflist.
func (h *Host) Check(ctx context.Context, rt *libcni.RuntimeConf) error {
	return h.in(func() error { return h.CNI.CheckNetworkList(ctx, h.List, rt) })
}

// Status runs STATUS for the conflist.
func (h *Host) Status(ctx context.Context) error {
	return h.in(func() error { return h.CNI.GetStatusNetworkList(ctx, h.List) })
}

// GC runs GC for the conflist with cni, so a test can use a libcni with an
// empty cache (a runtime that lost track of attachments).
func (h *Host) GC(ctx context.Context, cni *libcni.CNIConfig, valid []types.GCAttachment) error {
	return h.in(func() error {
		return cni.GCNetworkList(ctx, h.List, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// Close removes every namespace the host made and its work directory's
// CNI state.
func (h *Host) Close() error {
	var errs []error
	h.mu.Lock()
	pods := h.pods
	h.pods = nil
	h.mu.Unlock()
	for _, p := range pods {
		errs = append(errs, p.Close())
	}
	if h.NS != nil {
		errs = append(errs, h.NS.Close())
		h.NS = nil
	}
	return errors.Join(errs...)
}
