package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/twill-net/twill/cniplugin"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// checkSubnetEnv: subnet.env exists, parses, and says what flanneld would
// write: the network, this node's subnet, the pods' MTU, masquerading.
func (s *state) checkSubnetEnv(context.Context) {
	f := Finding{Check: "subnet.env", Status: OK}
	defer func() { s.add(f) }()
	if s.env == nil {
		f.Status = Fail
		f.Summary = s.envErr.Error()
		if errors.Is(s.envErr, subnetenv.ErrNotExist) {
			f.Fix = "flanneld writes it once it has this node's lease; until then pods fail with \"subnet.env: no such file\". See the flanneld check above and its log"
		} else {
			f.Fix = "flanneld rewrites it at its next full reconcile (--resync-period); if it stays broken, something else writes " + s.o.SubnetFile
		}
		return
	}
	var bad []string
	if s.o.Config != nil {
		for _, fam := range s.fams {
			nk, sk := subnetenv.Keys(fam)
			n, ok := s.env.Net(fam)
			if !ok {
				bad = append(bad, fmt.Sprintf("has no %s, though net-conf.json enables %s", nk, fam))
				continue
			}
			if nw, _ := s.o.Config.Network(fam); n.Network != nw.Prefix {
				bad = append(bad, fmt.Sprintf("%s=%s, but net-conf.json's network is %s", nk, n.Network, nw.Prefix))
			}
			if sub, ok := s.subnets[fam]; ok && s.node != nil && n.Subnet != subnetenv.Gateway(sub) {
				bad = append(bad, fmt.Sprintf("%s=%s, but the node's podCIDR is %s (want %s): new pods get addresses no peer routes here", sk, n.Subnet, sub, subnetenv.Gateway(sub)))
			}
		}
	}
	if m := s.mtu(); m != 0 && s.env.MTU != m {
		bad = append(bad, fmt.Sprintf("%s=%d, but this node's path carries %d (%s): pods get the wrong MTU", subnetenv.KeyMTU, s.env.MTU, m, s.mtuSource()))
	}
	if s.o.IPMasq != nil && s.env.IPMasq != *s.o.IPMasq {
		bad = append(bad, fmt.Sprintf("%s=%t, but flanneld runs with --ip-masq=%t: pods' traffic is masqueraded twice or not at all", subnetenv.KeyIPMasq, s.env.IPMasq, *s.o.IPMasq))
	}
	if len(bad) > 0 {
		f.Status = Fail
		f.Summary = s.o.SubnetFile + ": " + bad[0]
		f.Details = bad[1:]
		f.Fix = "flanneld rewrites it at start and at every full reconcile (--resync-period); pods created while it was wrong keep their settings: recreate them"
		return
	}
	var nets []string
	for _, n := range s.env.Nets {
		nets = append(nets, n.Subnet.String())
	}
	f.Summary = fmt.Sprintf("%s: subnet %s, MTU %d, masquerade %t", s.o.SubnetFile, strings.Join(nets, " and "), s.env.MTU, s.env.IPMasq)
}

// mtuSource says where the planes' MTU comes from.
func (s *state) mtuSource() string {
	for _, p := range s.planes {
		if p.be != nil && p.be.MTU() == s.mtu() {
			devs := p.be.Devices()
			if len(devs) > 0 {
				return devs[0] + "'s MTU"
			}
			return s.choice.Name + "'s MTU"
		}
	}
	return "the backend"
}

// cniExtensions are the files CNI runtimes read (libcni's ConfFiles, as
// containerd and CRI-O call it), in lexical order; the first wins.
var cniExtensions = []string{".conf", ".conflist", ".json"}

// conflist is the part of a CNI configuration doctor reads.
type conflist struct {
	Name       string            `json:"name"`
	CNIVersion string            `json:"cniVersion"`
	Type       string            `json:"type"`
	Plugins    []json.RawMessage `json:"plugins"`
}

// ours reads the conflist flanneld installs: its plugins' raw configs.
func (s *state) ours() (*conflist, []json.RawMessage, error) {
	data, err := os.ReadFile(s.o.CNIConf)
	if err != nil {
		return nil, nil, err
	}
	var c conflist
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, nil, fmt.Errorf("%s is not JSON: %w", s.o.CNIConf, err)
	}
	plugins := c.Plugins
	if len(plugins) == 0 && c.Type != "" {
		plugins = []json.RawMessage{data} // a single-plugin .conf
	}
	if len(plugins) == 0 {
		return nil, nil, fmt.Errorf("%s names no plugin", s.o.CNIConf)
	}
	return &c, plugins, nil
}

// checkCNIConfig: our conflist is in the runtime's directory and sorts
// first, so the runtime uses it.
func (s *state) checkCNIConfig(context.Context) {
	f := Finding{Check: "cni-config", Status: OK}
	defer func() { s.add(f) }()
	entries, err := os.ReadDir(s.o.CNIConfDir)
	if err != nil {
		f.Status, f.Summary = Fail, fmt.Sprintf("reading %s: %v", s.o.CNIConfDir, err)
		f.Fix = "the runtime reads its CNI configuration there: create it, or point doctor at the runtime's directory with --cni-conf-dir"
		return
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(cniExtensions, filepath.Ext(e.Name())) {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	mine := filepath.Base(s.o.CNIConf)
	at := slices.Index(files, mine)
	switch {
	case at < 0:
		f.Status = Fail
		f.Summary = fmt.Sprintf("%s is not there", s.o.CNIConf)
		f.Fix = "flanneld installs it after its first full reconcile (--cni-conf-dest), so the node is NotReady until then; if flanneld is ready and the file is still missing, --cni-conf-dest points elsewhere than the runtime's directory"
		if len(files) > 0 {
			f.Details = []string{"the runtime uses " + files[0] + " instead"}
		}
		return
	case at > 0:
		f.Status = Fail
		f.Summary = fmt.Sprintf("%s sorts before %s: the runtime uses it instead (and if it is broken, loads none)", strings.Join(files[:at], ", "), mine)
		f.Details = []string{fmt.Sprintf("runtimes take the first of %s in %s in lexical order", strings.Join(cniExtensions, ", "), s.o.CNIConfDir)}
		f.Fix = fmt.Sprintf("remove %s (and the DaemonSet of the CNI that wrote it) on this node, then recreate the pods made meanwhile", filepath.Join(s.o.CNIConfDir, files[0]))
		return
	}
	c, _, err := s.ours()
	if err != nil {
		f.Status, f.Summary = Fail, err.Error()
		f.Fix = "flanneld copies it from --cni-conf-src (the ConfigMap's cni-conf.json): fix that and restart the DaemonSet"
		return
	}
	f.Summary = fmt.Sprintf("%s (network %q) is first in %s", mine, c.Name, s.o.CNIConfDir)
	if len(files) > 1 {
		f.Details = []string{"after it, unused: " + strings.Join(files[1:], ", ")}
	}
	if s.o.CNIConfSrc != "" {
		src, errSrc := os.ReadFile(s.o.CNIConfSrc)
		have, errHave := os.ReadFile(s.o.CNIConf)
		if errSrc == nil && errHave == nil && !bytes.Equal(src, have) {
			f.Status = Warn
			f.Summary = fmt.Sprintf("%s differs from %s, which flanneld installs", mine, s.o.CNIConfSrc)
			f.Fix = "flanneld installs it when it becomes ready: restart this node's flanneld pod to install the current one"
		}
	}
}

// delegate returns the configuration the flannel plugin of plugins
// delegates to on this node, nil when no plugin is flannel's.
func (s *state) delegate(c *conflist, plugins []json.RawMessage) (map[string]any, error) {
	for _, raw := range plugins {
		var p struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &p) != nil || p.Type != "flannel" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		m["name"], m["cniVersion"] = c.Name, c.CNIVersion
		if m["name"] == "" {
			m["name"] = "cbr0"
		}
		data, _ := json.Marshal(m)
		n, err := cniplugin.ParseNetConf(data)
		if err != nil {
			return nil, err
		}
		env := s.env
		if env == nil {
			env = &subnetenv.Env{}
		}
		return cniplugin.BuildDelegate(n, env), nil
	}
	return nil, nil
}

// checkCNIPlugins: every plugin the conflist and its delegate run is in
// the runtime's plugin directory.
func (s *state) checkCNIPlugins(context.Context) {
	f := Finding{Check: "cni-plugins", Status: OK}
	defer func() { s.add(f) }()
	c, plugins, err := s.ours()
	if err != nil {
		f.Status, f.Summary = Skip, "needs the conflist (see cni-config)"
		return
	}
	var need []string
	for _, raw := range plugins {
		var p struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &p) == nil && p.Type != "" {
			need = append(need, p.Type)
		}
	}
	d, err := s.delegate(c, plugins)
	if err != nil {
		f.Status, f.Summary = Fail, "the flannel plugin's configuration: "+err.Error()
		f.Fix = "fix cni-conf.json in the kube-flannel-cfg ConfigMap and restart the DaemonSet"
		return
	}
	if d != nil {
		need = append(need, cniplugin.DelegateType(d))
		if ipam, ok := d["ipam"].(map[string]any); ok {
			if t, ok := ipam["type"].(string); ok {
				need = append(need, t)
			}
		}
	}
	// Every runtime also runs loopback for the pod's lo.
	need = append(need, "loopback")
	var missing, found []string
	for _, name := range need {
		if slices.Contains(found, name) || slices.Contains(missing, name) {
			continue
		}
		if fi, err := os.Stat(filepath.Join(s.o.CNIBinDir, name)); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
		} else {
			found = append(found, name)
		}
	}
	if len(missing) > 0 {
		f.Status = Fail
		f.Summary = fmt.Sprintf("%s missing from %s: pods fail with \"failed to find plugin %q in path\"", strings.Join(missing, ", "), s.o.CNIBinDir, missing[0])
		f.Fix = fmt.Sprintf("the DaemonSet's install-cni-plugins init container copies them: delete this node's kube-flannel pod (kubectl -n kube-flannel delete pod --field-selector spec.nodeName=%s) and the new one installs them; if the runtime reads plugins from another directory, change the cni-plugin volume", s.o.NodeName)
		return
	}
	f.Summary = fmt.Sprintf("%s in %s", strings.Join(found, ", "), s.o.CNIBinDir)
}

// checkMTU: the pods' bridge and the pods' interfaces have the MTU the
// overlay carries.
func (s *state) checkMTU(context.Context) {
	f := Finding{Check: "mtu", Status: OK}
	defer func() { s.add(f) }()
	want := 0
	bridge := cniplugin.DefaultBridge
	if c, plugins, err := s.ours(); err == nil {
		if d, err := s.delegate(c, plugins); err == nil && d != nil {
			if b, ok := d["bridge"].(string); ok && b != "" {
				bridge = b
			}
			switch v := d["mtu"].(type) {
			case int:
				want = v
			case float64:
				want = int(v)
			}
		}
	}
	if want == 0 && s.env != nil {
		want = s.env.MTU
	}
	if want == 0 {
		want = s.mtu()
	}
	if want == 0 || s.o.Kernel == nil {
		f.Status, f.Summary = Skip, "needs subnet.env or the backend's MTU"
		return
	}
	br, err := s.o.Kernel.LinkByName(bridge)
	if err != nil {
		f.Summary = fmt.Sprintf("no %s yet (no pod has started on this node); pods will get MTU %d", bridge, want)
		return
	}
	var bad []string
	if br.MTU != want {
		bad = append(bad, fmt.Sprintf("%s has MTU %d, pods get %d: frames between them are dropped or fragmented", bridge, br.MTU, want))
	}
	var ports, wrong []string
	if links, err := s.o.Kernel.Links(); err == nil {
		for _, l := range links {
			if l.Master != br.Index {
				continue
			}
			ports = append(ports, l.Name)
			if l.MTU != want {
				wrong = append(wrong, fmt.Sprintf("%s (MTU %d)", l.Name, l.MTU))
			}
		}
	}
	if len(wrong) > 0 {
		bad = append(bad, fmt.Sprintf("%d of %d pod interfaces on %s have another MTU than %d: %s", len(wrong), len(ports), bridge, want, strings.Join(first(wrong, 5), ", ")))
	}
	if m := s.mtu(); m != 0 && want > m {
		bad = append(bad, fmt.Sprintf("pods get MTU %d, more than the overlay carries (%d): large packets between nodes are lost", want, m))
	}
	if len(bad) > 0 {
		f.Status = Fail
		f.Summary = bad[0]
		f.Details = bad[1:]
		f.Fix = fmt.Sprintf("ip link set %s mtu %d; pods keep the MTU they started with: recreate those with another", bridge, want)
		return
	}
	f.Summary = fmt.Sprintf("%s and its %d pod interfaces have MTU %d", bridge, len(ports), want)
}
