// Package cniplugin is the flannel CNI plugin: it turns the node's subnet.env
// into a configuration for the standard bridge plugin with host-local IPAM,
// delegates to it, and keeps the configuration each pod was made with so the
// pod is torn down, checked and garbage-collected with that same
// configuration.
package cniplugin

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/twill-net/twill/subnet/subnetenv"
)

// DefaultDataDir is where the plugin keeps the delegate configuration of
// every pod it added, one file per container ID. It is flannel's directory,
// so a node switched from flannel tears its old pods down correctly.
const DefaultDataDir = "/var/lib/cni/flannel"

// DefaultIPAMDataDir is host-local's own default store; the plugin reads it
// during GC to find addresses held by pods that no longer exist.
const DefaultIPAMDataDir = "/var/lib/cni/networks"

// NetConf is the plugin's configuration as flannel users write it, e.g.
// {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}}.
type NetConf struct {
	// CNIVersion is the version the runtime speaks; the delegate gets it
	// too, so its result needs no conversion.
	CNIVersion string
	// Name is the network name (the conflist's, e.g. cbr0). The delegate
	// gets the same name, so host-local keeps its addresses under it.
	Name string
	// Type is "flannel".
	Type string
	// SubnetFile is the subnet.env flanneld writes.
	SubnetFile string
	// DataDir is where saved delegate configurations live.
	DataDir string
	// Delegate holds keys for the bridge plugin; they override the defaults
	// the plugin computes.
	Delegate map[string]any
	// IPAM holds keys for host-local (flannel's top-level "ipam" section),
	// merged under the defaults; delegate.ipam is merged on top of it.
	IPAM map[string]any
	// RuntimeConfig and Args are passed on to the delegate unchanged.
	RuntimeConfig map[string]any
	Args          map[string]any
	// RawPrevResult is the runtime's prevResult for CHECK.
	RawPrevResult map[string]any
	// ValidAttachments is the runtime's list of live attachments for GC.
	ValidAttachments []types.GCAttachment
}

// rawNetConf is the JSON form of NetConf.
type rawNetConf struct {
	CNIVersion       string               `json:"cniVersion"`
	Name             string               `json:"name"`
	Type             string               `json:"type"`
	SubnetFile       string               `json:"subnetFile"`
	DataDir          string               `json:"dataDir"`
	Delegate         map[string]any       `json:"delegate"`
	IPAM             map[string]any       `json:"ipam"`
	RuntimeConfig    map[string]any       `json:"runtimeConfig"`
	Args             map[string]any       `json:"args"`
	PrevResult       map[string]any       `json:"prevResult"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
	// Attachments is the key libcni also sends for GC, because an early
	// version of the spec named it so.
	Attachments []types.GCAttachment `json:"cni.dev/attachments"`
}

// ParseNetConf decodes the plugin's stdin configuration and fills in the
// defaults. A configuration it cannot use is reported as a *types.Error.
func ParseNetConf(data []byte) (*NetConf, error) {
	var raw rawNetConf
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("the flannel network configuration is not valid JSON: %v", err),
			"fix the CNI configuration file in /etc/cni/net.d")
	}
	if raw.Name == "" {
		return nil, invalidConfig("the network configuration has no \"name\"; flannel's conflist is named cbr0")
	}
	n := &NetConf{
		CNIVersion:       raw.CNIVersion,
		Name:             raw.Name,
		Type:             raw.Type,
		SubnetFile:       raw.SubnetFile,
		DataDir:          raw.DataDir,
		Delegate:         raw.Delegate,
		IPAM:             raw.IPAM,
		RuntimeConfig:    raw.RuntimeConfig,
		Args:             raw.Args,
		RawPrevResult:    raw.PrevResult,
		ValidAttachments: raw.ValidAttachments,
	}
	if n.ValidAttachments == nil {
		n.ValidAttachments = raw.Attachments
	}
	if n.SubnetFile == "" {
		n.SubnetFile = subnetenv.DefaultPath
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	if n.Delegate == nil {
		n.Delegate = map[string]any{}
	}
	if v, ok := n.Delegate["ipam"]; ok && v != nil {
		if _, ok := v.(map[string]any); !ok {
			return nil, invalidConfig(fmt.Sprintf("delegate.ipam must be an object, not %s", jsonKind(v)))
		}
	}
	for _, key := range []string{"isDefaultGateway", "isGateway", "ipMasq", "hairpinMode"} {
		if v, ok := n.Delegate[key]; ok {
			if _, ok := v.(bool); !ok {
				return nil, invalidConfig(fmt.Sprintf("delegate.%s must be true or false, not %s", key, jsonKind(v)))
			}
		}
	}
	if v, ok := n.Delegate["mtu"]; ok {
		f, ok := v.(float64)
		if !ok || f != float64(int(f)) || f < 68 || f > 65535 {
			return nil, invalidConfig(fmt.Sprintf("delegate.mtu must be a whole number between 68 and 65535, not %v", v))
		}
	}
	if v, ok := n.Delegate["type"]; ok {
		if s, ok := v.(string); !ok || s == "" {
			return nil, invalidConfig(fmt.Sprintf("delegate.type must be the name of a plugin, not %v", v))
		}
	}
	if err := checkIPAMKeys(n.IPAM, "ipam"); err != nil {
		return nil, err
	}
	if m, ok := n.Delegate["ipam"].(map[string]any); ok {
		if err := checkIPAMKeys(m, "delegate.ipam"); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// checkIPAMKeys rejects IPAM keys that would fight subnet.env: the node's
// range comes from flanneld and nowhere else.
func checkIPAMKeys(ipam map[string]any, where string) error {
	for _, key := range []string{"subnet", "ranges", "rangeStart", "rangeEnd"} {
		if _, ok := ipam[key]; ok {
			return invalidConfig(fmt.Sprintf("%s.%s is set, but the node's pod range comes from flanneld's subnet.env; remove %s.%s from the CNI configuration", where, key, where, key))
		}
	}
	if v, ok := ipam["routes"]; ok && v != nil {
		if _, ok := v.([]any); !ok {
			return invalidConfig(fmt.Sprintf("%s.routes must be a list, not %s", where, jsonKind(v)))
		}
	}
	if v, ok := ipam["dataDir"]; ok {
		if s, ok := v.(string); !ok || s == "" {
			return invalidConfig(fmt.Sprintf("%s.dataDir must be a directory path, not %v", where, v))
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func invalidConfig(msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "fix the flannel entry of the CNI configuration in /etc/cni/net.d")
}
