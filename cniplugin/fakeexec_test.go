package cniplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// call is one delegate invocation seen by fakeExec.
type call struct {
	Plugin      string
	Command     string
	ContainerID string
	IfName      string
	Conf        map[string]any
}

// fakeExec stands in for the bridge plugin: it records every call and
// answers ADD with an address from the configured range.
type fakeExec struct {
	mu    sync.Mutex
	calls []call
	// fail makes the given command return this error.
	fail map[string]*types.Error
	// missing plugins are not found in CNI_PATH.
	missing map[string]bool
}

func (f *fakeExec) ExecPlugin(_ context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var conf map[string]any
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, fmt.Errorf("fake: bad stdin: %w", err)
	}
	c := call{
		Plugin:      strings.TrimPrefix(pluginPath, "/fake/"),
		Command:     env["CNI_COMMAND"],
		ContainerID: env["CNI_CONTAINERID"],
		IfName:      env["CNI_IFNAME"],
		Conf:        conf,
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	e := f.fail[c.Command]
	f.mu.Unlock()
	if e != nil {
		return nil, e
	}
	if c.Command != "ADD" {
		return nil, nil
	}
	sns, err := DelegateSubnets(conf)
	if err != nil {
		return nil, fmt.Errorf("fake: %w", err)
	}
	ip := append(net.IP(nil), sns[0].Addr().AsSlice()...)
	ip[3] = 2
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		IPs:        []*current.IPConfig{{Address: net.IPNet{IP: ip, Mask: net.CIDRMask(sns[0].Bits(), 32)}}},
	}
	v, _ := conf["cniVersion"].(string)
	conv, err := r.GetAsVersion(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(conv)
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	if f.missing[plugin] {
		return "", fmt.Errorf("failed to find plugin %q", plugin)
	}
	return "/fake/" + plugin, nil
}

func (f *fakeExec) Decode(data []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(data)
}

func (f *fakeExec) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}
