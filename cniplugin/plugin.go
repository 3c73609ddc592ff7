package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/twill-net/twill/cniplugin/hostlocal"
	"github.com/twill-net/twill/cniplugin/savedconf"
	"github.com/twill-net/twill/subnet/subnetenv"
)

// SupportedVersions are the CNI spec versions the plugin speaks. 0.3.1 is
// the oldest any supported runtime sends; STATUS and GC need 1.1.0.
var SupportedVersions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// ErrPluginNotAvailable is the CNI 1.1 STATUS code for "cannot service ADD
// requests"; the spec defines it but the cni library has no constant.
const ErrPluginNotAvailable uint = 50

// Plugin runs the CNI commands. The zero value is not ready: use New.
type Plugin struct {
	// Exec runs delegate plugins; tests replace it with a fake.
	Exec invoke.Exec
	// Stdout receives the ADD result.
	Stdout io.Writer
	// Stderr receives warnings about things DEL and GC chose to skip.
	Stderr io.Writer
	// Getenv reads the CNI_* environment (CNI_PATH for GC's deletes).
	Getenv func(string) string
}

// New returns a Plugin that runs real delegate plugins and writes to the
// process's stdout and stderr.
func New() *Plugin {
	return &Plugin{
		Exec:   &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}},
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
	}
}

// Funcs returns the commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// Add builds the delegate configuration from subnet.env, saves it for the
// container, and delegates ADD.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := readSubnetEnv(n.SubnetFile, types.ErrTryAgainLater)
	if err != nil {
		return err
	}
	d := BuildDelegate(n, env)
	data, err := marshalDelegate(d)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	store := savedconf.Store{Dir: n.DataDir}
	if err := store.Save(args.ContainerID, data); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), fmt.Sprintf("the plugin keeps each pod's configuration in %s (dataDir); check that it is writable and the disk is not full", n.DataDir))
	}
	result, err := p.delegateAdd(DelegateType(d), data)
	if err != nil {
		if rmErr := store.Remove(args.ContainerID); rmErr != nil {
			p.warnf("ADD of container %s failed, and %v", args.ContainerID, rmErr)
		}
		return err
	}
	result, err = result.GetAsVersion(n.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("converting the %s result to CNI version %s: %v", DelegateType(d), n.CNIVersion, err), "")
	}
	if err := result.PrintTo(p.Stdout); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("writing the result: %v", err), "")
	}
	return nil
}

// Del delegates DEL with the configuration the container was added with,
// then forgets it. Without a saved configuration it rebuilds one from
// subnet.env, so host-local still releases the address. Anything already
// gone (saved file, network namespace, subnet.env) is success, so a pod is
// never stuck terminating.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	n, confErr := ParseNetConf(args.StdinData)
	if confErr != nil {
		// A configuration broken after the pod was made must not keep
		// the pod from going away: the saved configuration suffices.
		n = lenientNetConf(args.StdinData)
	}
	store := savedconf.Store{Dir: n.DataDir}
	d, loadErr := loadSaved(store, args.ContainerID)
	if loadErr != nil && confErr != nil {
		p.warnf("DEL of container %s: no usable saved configuration (%v) and the CNI configuration is invalid (%s); nothing to release", args.ContainerID, loadErr, msgOf(confErr))
		return removeSaved(store, args.ContainerID)
	}
	if loadErr != nil {
		if !errors.Is(loadErr, savedconf.ErrNotFound) {
			p.warnf("DEL of container %s: %v; using the configuration from subnet.env instead", args.ContainerID, loadErr)
		}
		env, envErr := readSubnetEnv(n.SubnetFile, types.ErrTryAgainLater)
		if envErr != nil {
			p.warnf("DEL of container %s: no saved configuration and %s; nothing to release", args.ContainerID, msgOf(envErr))
			return removeSaved(store, args.ContainerID)
		}
		d = BuildDelegate(n, env)
	}
	data, err := marshalDelegate(d)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	if err := p.delegate("DEL", DelegateType(d), data, nil); err != nil {
		return err
	}
	return removeSaved(store, args.ContainerID)
}

// lenientNetConf takes what DEL needs from a configuration ParseNetConf
// rejects: where the saved configurations are.
func lenientNetConf(data []byte) *NetConf {
	var raw struct {
		DataDir string `json:"dataDir"`
	}
	_ = json.Unmarshal(data, &raw) // skel has already checked it is JSON
	n := &NetConf{DataDir: raw.DataDir}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	return n
}

// Check delegates CHECK with the saved configuration, and fails when the
// node's subnet no longer contains the pod's address.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	store := savedconf.Store{Dir: n.DataDir}
	d, err := loadSaved(store, args.ContainerID)
	if errors.Is(err, savedconf.ErrNotFound) {
		return types.NewError(types.ErrUnknownContainer, err.Error()+": the container was not added by this plugin, or its state was lost", "recreate the pod")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "recreate the pod")
	}
	env, err := readSubnetEnv(n.SubnetFile, types.ErrTryAgainLater)
	if err != nil {
		return err
	}
	current := make([]netip.Prefix, len(env.Nets))
	for i, fn := range env.Nets {
		current[i] = fn.Subnet.Masked()
	}
	given, err := DelegateSubnets(d)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration of container %s: %v", args.ContainerID, err), "recreate the pod")
	}
	if !slices.Equal(given, current) {
		return subnetMoved(args.ContainerID, prefixList(given), current)
	}
	for _, ip := range prevResultIPs(n.RawPrevResult) {
		if !slices.ContainsFunc(current, func(c netip.Prefix) bool { return c.Contains(ip) }) {
			return subnetMoved(args.ContainerID, ip.String(), current)
		}
	}
	d["cniVersion"] = n.CNIVersion
	if n.RawPrevResult != nil {
		d["prevResult"] = n.RawPrevResult
	}
	data, err := marshalDelegate(d)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return p.delegate("CHECK", DelegateType(d), data, nil)
}

func subnetMoved(id, given string, current []netip.Prefix) error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("container %s was given %s, but this node's pod subnet is now %s (subnet.env changed): the pod is unreachable", id, given, prefixList(current)),
		"recreate the pod so it gets an address in the node's current subnet")
}

// Status reports whether the plugin can add pods: only once flanneld has
// written a valid subnet.env, then whatever the delegate says.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := readSubnetEnv(n.SubnetFile, ErrPluginNotAvailable)
	if err != nil {
		return err
	}
	d := BuildDelegate(n, env)
	data, err := marshalDelegate(d)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return p.delegate("STATUS", DelegateType(d), data, nil)
}

// GC releases what is held for attachments the runtime no longer knows:
// host-local addresses (through a delegate DEL without a network namespace,
// which only releases the address) and saved configurations. It then
// delegates GC. It goes on after an error and reports them all at the end.
// The spec has the runtime run GC only while no ADD or DEL is in progress,
// so an address without a valid attachment really is stale.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	n, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[types.GCAttachment]bool{}
	validIDs := map[string]bool{}
	for _, a := range n.ValidAttachments {
		valid[a] = true
		validIDs[a.ContainerID] = true
	}
	store := savedconf.Store{Dir: n.DataDir}
	var current map[string]any
	env, envErr := readSubnetEnv(n.SubnetFile, types.ErrTryAgainLater)
	if envErr == nil {
		current = BuildDelegate(n, env)
	}
	var errs []string

	allocs, err := hostlocal.List(ipamStoreDir(n))
	if err != nil {
		errs = append(errs, err.Error())
	}
	released := map[types.GCAttachment]bool{}
	for _, a := range allocs {
		key := types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}
		if valid[key] || (a.IfName == "" && validIDs[a.ContainerID]) || released[key] {
			continue
		}
		released[key] = true
		d, err := loadSaved(store, a.ContainerID)
		if err != nil {
			d = current
		}
		if d == nil {
			errs = append(errs, fmt.Sprintf("cannot release %s held by stale container %s: no saved configuration and %s", a.IP, a.ContainerID, msgOf(envErr)))
			continue
		}
		if err := p.releaseStale(d, a); err != nil {
			errs = append(errs, err.Error())
		}
	}

	ids, err := store.List()
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, id := range ids {
		if validIDs[id] {
			continue
		}
		if err := store.Remove(id); err != nil {
			errs = append(errs, err.Error())
		}
	}

	if current != nil {
		current["cni.dev/valid-attachments"] = n.ValidAttachments
		data, err := marshalDelegate(current)
		if err == nil {
			err = p.delegate("GC", DelegateType(current), data, nil)
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	} else {
		errs = append(errs, fmt.Sprintf("skipped the delegate's GC: %s", msgOf(envErr)))
	}
	if len(errs) > 0 {
		code := types.ErrInternal
		if envErr != nil {
			code = types.ErrTryAgainLater
		}
		return types.NewError(code, "GC: "+strings.Join(errs, "; "), "GC is retried by the runtime; the errors above say what is left")
	}
	return nil
}

// releaseStale runs the delegate's DEL for an attachment the runtime has
// forgotten. Without a network namespace the bridge plugin only asks IPAM to
// release the address.
func (p *Plugin) releaseStale(d map[string]any, a hostlocal.Allocation) error {
	ifname := a.IfName
	if ifname == "" {
		ifname = "eth0" // host-local then matches the container ID alone
	}
	data, err := marshalDelegate(d)
	if err != nil {
		return err
	}
	rt := &invoke.Args{
		Command:     "DEL",
		ContainerID: a.ContainerID,
		IfName:      ifname,
		Path:        p.getenv("CNI_PATH"),
	}
	if err := p.delegate("DEL", DelegateType(d), data, rt); err != nil {
		return fmt.Errorf("releasing %s held by stale container %s: %w", a.IP, a.ContainerID, err)
	}
	return nil
}

func (p *Plugin) delegateAdd(plugin string, conf []byte) (types.Result, error) {
	path, err := p.find(plugin)
	if err != nil {
		return nil, err
	}
	r, err := invoke.ExecPluginWithResult(context.Background(), path, conf, &invoke.DelegateArgs{Command: "ADD"}, p.Exec)
	if err != nil {
		return nil, delegateError(plugin, "ADD", err)
	}
	return r, nil
}

// delegate runs a command without a result. rt is nil to pass the runtime's
// own CNI_* environment on.
func (p *Plugin) delegate(verb, plugin string, conf []byte, rt *invoke.Args) error {
	path, err := p.find(plugin)
	if err != nil {
		return err
	}
	var args invoke.CNIArgs = &invoke.DelegateArgs{Command: verb}
	if rt != nil {
		args = rt
	}
	if err := invoke.ExecPluginWithoutResult(context.Background(), path, conf, args, p.Exec); err != nil {
		return delegateError(plugin, verb, err)
	}
	return nil
}

func (p *Plugin) find(plugin string) (string, error) {
	dirs := filepath.SplitList(p.getenv("CNI_PATH"))
	path, err := p.Exec.FindInPath(plugin, dirs)
	if err != nil {
		return "", types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("the %s plugin is not installed in %s (CNI_PATH)", plugin, strings.Join(dirs, ":")),
			"install the standard CNI plugins (the Twill DaemonSet copies them to /opt/cni/bin)")
	}
	return path, nil
}

func (p *Plugin) getenv(k string) string {
	if p.Getenv == nil {
		return os.Getenv(k)
	}
	return p.Getenv(k)
}

func (p *Plugin) warnf(format string, a ...any) {
	if p.Stderr != nil {
		fmt.Fprintf(p.Stderr, "flannel: "+format+"\n", a...)
	}
}

// delegateError keeps the delegate's error code and says which plugin and
// command failed.
func delegateError(plugin, verb string, err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return types.NewError(e.Code, fmt.Sprintf("%s %s: %s", plugin, verb, e.Msg), e.Details)
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s %s: %v", plugin, verb, err), "")
}

// readSubnetEnv reads subnet.env, reporting a missing or broken file with
// code, a message naming the key at fault, and what to do.
func readSubnetEnv(path string, code uint) (*subnetenv.Env, error) {
	env, err := subnetenv.Read(path)
	if errors.Is(err, subnetenv.ErrNotExist) {
		return nil, types.NewError(code,
			fmt.Sprintf("%s does not exist: flanneld has not run on this node yet, or has not finished setting up the overlay", path),
			"check that the flanneld pod of the twill DaemonSet runs on this node and read its log; pods are retried once it is up")
	}
	if err != nil {
		return nil, types.NewError(code,
			fmt.Sprintf("flanneld's %v", err),
			"flanneld rewrites this file when it starts: restart the flanneld pod on this node; if it persists, check --subnet-file and the file's content")
	}
	return env, nil
}

// loadSaved returns the saved delegate configuration of id.
func loadSaved(store savedconf.Store, id string) (map[string]any, error) {
	data, err := store.Load(id)
	if err != nil {
		return nil, err
	}
	d, err := parseSaved(data)
	if err != nil {
		return nil, fmt.Errorf("the saved configuration of container %s in %s %w", id, store.Dir, err)
	}
	return d, nil
}

// parseSaved reads a saved delegate configuration.
func parseSaved(data []byte) (map[string]any, error) {
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil || d == nil {
		return nil, errors.New("is not a JSON object")
	}
	return d, nil
}

func removeSaved(store savedconf.Store, id string) error {
	if err := store.Remove(id); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "check the permissions of the plugin's dataDir")
	}
	return nil
}

// ipamStoreDir is host-local's directory for this network, which does not
// depend on subnet.env.
func ipamStoreDir(n *NetConf) string {
	dir := DefaultIPAMDataDir
	if s, ok := n.IPAM["dataDir"].(string); ok && s != "" {
		dir = s
	}
	if m, ok := n.Delegate["ipam"].(map[string]any); ok {
		if s, ok := m["dataDir"].(string); ok && s != "" {
			dir = s
		}
	}
	return filepath.Join(dir, n.Name)
}

// prevResultIPs returns the addresses in a CNI result of any version from
// 0.3.0 on (they all list "ips" with "address").
func prevResultIPs(prev map[string]any) []netip.Addr {
	list, _ := prev["ips"].([]any)
	var out []netip.Addr
	for _, x := range list {
		m, _ := x.(map[string]any)
		s, _ := m["address"].(string)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// prefixList renders prefixes as "a" or "a and b".
func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " and ")
}

// msgOf is an error's message without a CNI error's advice.
func msgOf(err error) string {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return err.Error()
}
