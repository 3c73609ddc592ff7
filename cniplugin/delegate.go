package cniplugin

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/twill-net/twill/subnet/subnetenv"
)

// DefaultDelegateType is the plugin the configuration is handed to.
const DefaultDelegateType = "bridge"

// DefaultBridge is the bridge every pod on the node is attached to.
const DefaultBridge = "cni0"

// BuildDelegate computes the bridge plugin's configuration for this node:
// bridge cni0 with the node's MTU, the node's subnet as host-local's range
// and a route to the cluster network (or a default route when the user asks
// for isDefaultGateway). Keys in n.Delegate override the defaults. n is not
// modified.
func BuildDelegate(n *NetConf, env *subnetenv.Env) map[string]any {
	d := map[string]any{
		"type":      DefaultDelegateType,
		"bridge":    DefaultBridge,
		"mtu":       env.MTU,
		"ipMasq":    !env.IPMasq,
		"isGateway": true,
	}
	for k, v := range n.Delegate {
		if k == "ipam" {
			continue
		}
		d[k] = deepCopy(v)
	}
	// The network name and version are the runtime's, never the user's
	// delegate keys: host-local keeps addresses per network name, and the
	// result must come back in the version the runtime asked for.
	d["name"] = n.Name
	d["cniVersion"] = n.CNIVersion
	if n.RuntimeConfig != nil {
		d["runtimeConfig"] = deepCopy(n.RuntimeConfig)
	}
	if n.Args != nil {
		d["args"] = deepCopy(n.Args)
	}
	d["ipam"] = buildIPAM(n, env, d["isDefaultGateway"] == true)
	return d
}

func buildIPAM(n *NetConf, env *subnetenv.Env, defaultGateway bool) map[string]any {
	ipam := map[string]any{"type": "host-local"}
	for k, v := range n.IPAM {
		ipam[k] = deepCopy(v)
	}
	if m, ok := n.Delegate["ipam"].(map[string]any); ok {
		for k, v := range m {
			ipam[k] = deepCopy(v)
		}
	}
	// One range set per family: host-local then gives every pod one
	// address of each.
	ranges := make([]any, 0, len(env.Nets))
	routes, _ := ipam["routes"].([]any)
	for _, fn := range env.Nets {
		gw := fn.Subnet.Addr().String()
		ranges = append(ranges, []any{map[string]any{
			"subnet":  fn.Subnet.Masked().String(),
			"gateway": gw,
		}})
		var route map[string]any
		if defaultGateway {
			// The gateway is explicit so the bridge plugin recognises this
			// as its default route and does not add a second one.
			route = map[string]any{"dst": fn.Family().Any().String(), "gw": gw}
		} else {
			route = map[string]any{"dst": fn.Network.String()}
		}
		if !hasRoute(routes, route["dst"].(string)) {
			routes = append(routes, route)
		}
	}
	ipam["ranges"] = ranges
	ipam["routes"] = routes
	return ipam
}

func hasRoute(routes []any, dst string) bool {
	for _, r := range routes {
		if m, ok := r.(map[string]any); ok && m["dst"] == dst {
			return true
		}
	}
	return false
}

// DelegateType is the plugin a delegate configuration is handed to.
func DelegateType(d map[string]any) string {
	if t, ok := d["type"].(string); ok && t != "" {
		return t
	}
	return DefaultDelegateType
}

// DelegateSubnets are the pod ranges recorded in a delegate configuration,
// one per range set, from host-local's ranges or the older single "subnet"
// key flannel once wrote.
func DelegateSubnets(d map[string]any) ([]netip.Prefix, error) {
	ipam, _ := d["ipam"].(map[string]any)
	var subnets []string
	if ranges, ok := ipam["ranges"].([]any); ok {
		for _, r := range ranges {
			if set, ok := r.([]any); ok && len(set) > 0 {
				if r, ok := set[0].(map[string]any); ok {
					if s, _ := r["subnet"].(string); s != "" {
						subnets = append(subnets, s)
					}
				}
			}
		}
	}
	if len(subnets) == 0 {
		if s, _ := ipam["subnet"].(string); s != "" {
			subnets = append(subnets, s)
		}
	}
	if len(subnets) == 0 {
		return nil, fmt.Errorf("the configuration has no ipam range")
	}
	out := make([]netip.Prefix, len(subnets))
	for i, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("ipam range %q: %w", s, err)
		}
		out[i] = p.Masked()
	}
	return out, nil
}

// deepCopy copies a decoded JSON value so the delegate never aliases the
// user's configuration.
func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	default:
		return v
	}
}

func marshalDelegate(d map[string]any) ([]byte, error) {
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encoding the delegate configuration: %w", err)
	}
	return data, nil
}
