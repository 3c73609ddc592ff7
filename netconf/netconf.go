// Package netconf parses net-conf.json, the cluster-wide network
// configuration that flanneld reads from the kube-flannel-cfg ConfigMap. Keys
// and defaults are flannel's, so an existing ConfigMap works unchanged. The
// "Backend" section is kept raw: the backend named by its Type parses it
// (see backend.Registry).
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/strictjson"
)

// DefaultPath is where the DaemonSet mounts net-conf.json.
const DefaultPath = "/etc/kube-flannel/net-conf.json"

// Config is the parsed and validated net-conf.json.
type Config struct {
	// Networks holds the cluster pod network of each enabled IP family, in
	// the order of family.All.
	Networks []Network
	// NoMasqueradeCIDRs are destinations that pod traffic reaches with its pod
	// source address kept, like the exclude-SNAT setting of the AWS VPC CNI.
	NoMasqueradeCIDRs []netip.Prefix
	// Backend says how packets reach other nodes.
	Backend Backend
	// EnableNFTables keeps the node's rules in nftables (tables
	// flannel-ipv4 and flannel-ipv6) instead of iptables, flannel's key of
	// the same name.
	EnableNFTables bool
	// Warnings name keys that were given but have no effect, for the log.
	Warnings []string
}

// Network is the pod network of one IP family and how it is cut into node
// subnets.
type Network struct {
	// Prefix is the cluster's pod network, e.g. 10.244.0.0/16.
	Prefix netip.Prefix
	// SubnetLen is the prefix length of each node's subnet (IPv4 default 24).
	SubnetLen int
	// SubnetMin and SubnetMax bound the node subnets flanneld accepts; the
	// zero Addr when not set.
	SubnetMin, SubnetMax netip.Addr
}

// Backend is the "Backend" object of net-conf.json.
type Backend struct {
	// Type is the backend's name, lower case; empty when not given (the
	// registry's default applies).
	Type string
	// Raw is the whole object as written, for the backend to parse; nil
	// when the file has none.
	Raw json.RawMessage
}

// Family is the network's IP family.
func (n Network) Family() family.Family { return family.OfPrefix(n.Prefix) }

// Network returns the pod network of family f, if that family is enabled.
func (c *Config) Network(f family.Family) (Network, bool) { return family.Pick(c.Networks, f) }

// Families lists the enabled families, in order.
func (c *Config) Families() []family.Family { return family.List(c.Networks) }

// NoMasquerade returns the no-masquerade destinations of family f.
func (c *Config) NoMasquerade(f family.Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.NoMasqueradeCIDRs {
		if family.OfPrefix(p) == f {
			out = append(out, p)
		}
	}
	return out
}

// rawConfig mirrors the JSON. Field names match flannel's keys; the decoder
// matches them case-insensitively, as flannel's does.
type rawConfig struct {
	Network           *string
	SubnetLen         *int
	SubnetMin         *string
	SubnetMax         *string
	EnableIPv4        *bool
	EnableIPv6        *bool
	IPv6Network       *string
	IPv6SubnetLen     *int
	IPv6SubnetMin     *string
	IPv6SubnetMax     *string
	NoMasqueradeCIDRs []string
	EnableNFTables    *bool
	Backend           json.RawMessage
}

// family returns the raw values of one family's keys.
func (r *rawConfig) family(f family.Family) (enable *bool, network *string, subnetLen *int, min, max *string) {
	if f == family.IPv6 {
		return r.EnableIPv6, r.IPv6Network, r.IPv6SubnetLen, r.IPv6SubnetMin, r.IPv6SubnetMax
	}
	return r.EnableIPv4, r.Network, r.SubnetLen, r.SubnetMin, r.SubnetMax
}

// familyKeys are the keys and limits of one family's network.
type familyKeys struct {
	family                                           family.Family
	enable, network, subnetLen, subnetMin, subnetMax string
	// on is whether the family is enabled when its enable key is absent.
	on bool
	// defaultLen is the SubnetLen default; maxLen the longest allowed.
	defaultLen, maxLen int
}

// keys are flannel's keys of each family, in the order of family.All.
var keys = []familyKeys{
	{family: family.IPv4, enable: "EnableIPv4", network: "Network", subnetLen: "SubnetLen", subnetMin: "SubnetMin", subnetMax: "SubnetMax",
		on: true, defaultLen: 24, maxLen: 30},
	{family: family.IPv6, enable: "EnableIPv6", network: "IPv6Network", subnetLen: "IPv6SubnetLen", subnetMin: "IPv6SubnetMin", subnetMax: "IPv6SubnetMax",
		on: false, defaultLen: 64, maxLen: 126},
}

// ReadFile reads and parses the file at path.
func ReadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading net-conf: %w (mount the kube-flannel-cfg ConfigMap there, or pass --net-config-path)", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates net-conf.json, but for the Backend section's
// keys other than Type (the backend's own business). Errors name the key at
// fault.
func Parse(data []byte) (*Config, error) {
	var raw rawConfig
	if err := strictjson.Decode(data, &raw, ""); err != nil {
		if errors.Is(err, strictjson.ErrEmpty) {
			return nil, errors.New(`empty file: expected a JSON object with at least "Network"`)
		}
		return nil, err
	}
	cfg := &Config{}
	for _, k := range keys {
		enable, network, subnetLen, min, max := raw.family(k.family)
		on := k.on
		if enable != nil {
			on = *enable
		}
		if !on {
			// flannel ignores a disabled family's keys; so do we, but say
			// so, as they may be a mistake.
			for key, set := range map[string]bool{k.network: network != nil, k.subnetLen: subnetLen != nil, k.subnetMin: min != nil, k.subnetMax: max != nil} {
				if set {
					cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%q is ignored: %s is not enabled (%q is false)", key, k.family, k.enable))
				}
			}
			continue
		}
		n, err := parseNetwork(k, network, subnetLen, min, max)
		if err != nil {
			return nil, err
		}
		cfg.Networks = append(cfg.Networks, n)
	}
	slices.Sort(cfg.Warnings)
	if len(cfg.Networks) == 0 {
		return nil, errors.New(`"EnableIPv4" and "EnableIPv6" are both false: enable at least one IP family`)
	}
	for i, s := range raw.NoMasqueradeCIDRs {
		p, err := parseAnyPrefix(s)
		if err != nil {
			return nil, fmt.Errorf(`"NoMasqueradeCIDRs"[%d]: %w`, i, err)
		}
		if _, ok := cfg.Network(family.OfPrefix(p)); !ok {
			return nil, fmt.Errorf(`"NoMasqueradeCIDRs"[%d]: %s is an %s CIDR, but %s is not enabled`, i, p, family.OfPrefix(p), family.OfPrefix(p))
		}
		cfg.NoMasqueradeCIDRs = append(cfg.NoMasqueradeCIDRs, p)
	}
	b, err := parseBackend(raw.Backend)
	if err != nil {
		return nil, err
	}
	cfg.Backend = b
	cfg.EnableNFTables = raw.EnableNFTables != nil && *raw.EnableNFTables
	return cfg, nil
}

func parseNetwork(k familyKeys, network *string, subnetLen *int, min, max *string) (Network, error) {
	if network == nil || *network == "" {
		if k.family != family.IPv4 {
			return Network{}, fmt.Errorf(`%q is missing: %q is true, so set the cluster's %s pod network, e.g. "%s"`, k.network, k.enable, k.family, exampleNetwork(k.family))
		}
		return Network{}, fmt.Errorf(`%q is missing: set the cluster pod network, e.g. "%s"`, k.network, exampleNetwork(k.family))
	}
	p, err := family.ParsePrefix(k.family, *network)
	if err != nil {
		return Network{}, fmt.Errorf("%q: %w", k.network, err)
	}
	n := Network{Prefix: p, SubnetLen: k.defaultLen}
	if subnetLen != nil {
		n.SubnetLen = *subnetLen
	} else if p.Bits() >= k.defaultLen {
		// flannel's rule: a small network gets subnets 4 bits longer.
		n.SubnetLen = p.Bits() + 4
	}
	if n.SubnetLen <= p.Bits() || n.SubnetLen > k.maxLen {
		return Network{}, fmt.Errorf(`%q: %d must be longer than the %s prefix /%d and at most %d`, k.subnetLen, n.SubnetLen, k.network, p.Bits(), k.maxLen)
	}
	if n.SubnetMin, err = parseBound(k.family, k.subnetMin, min, p); err != nil {
		return Network{}, err
	}
	if n.SubnetMax, err = parseBound(k.family, k.subnetMax, max, p); err != nil {
		return Network{}, err
	}
	return n, nil
}

func exampleNetwork(f family.Family) string {
	if f == family.IPv6 {
		return "fd00:10:244::/56"
	}
	return "10.244.0.0/16"
}

// parseBackend keeps the section raw and reads only its Type.
func parseBackend(raw json.RawMessage) (Backend, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return Backend{}, nil
	}
	var head map[string]json.RawMessage
	if err := json.Unmarshal(raw, &head); err != nil {
		return Backend{}, errors.New(`"Backend": expected an object like {"Type": "vxlan"}`)
	}
	b := Backend{Raw: raw}
	for k, v := range head {
		if !strings.EqualFold(k, "Type") {
			continue
		}
		var t string
		if err := json.Unmarshal(v, &t); err != nil {
			return Backend{}, fmt.Errorf(`"Backend.Type": expected a string like "vxlan", got %s`, v)
		}
		b.Type = strings.ToLower(t)
	}
	return b, nil
}

// Check reports whether the node subnet s lies inside the network and
// within SubnetMin..SubnetMax when they are set.
func (n Network) Check(s netip.Prefix) error {
	if family.OfPrefix(s) != n.Family() || s.Bits() < n.Prefix.Bits() || !n.Prefix.Contains(s.Addr()) {
		return fmt.Errorf("%s is outside the cluster network %s in net-conf.json", s, n.Prefix)
	}
	if n.SubnetMin.IsValid() && s.Addr().Less(n.SubnetMin) {
		return fmt.Errorf("%s is below SubnetMin %s", s, n.SubnetMin)
	}
	if n.SubnetMax.IsValid() && n.SubnetMax.Less(s.Addr()) {
		return fmt.Errorf("%s is above SubnetMax %s", s, n.SubnetMax)
	}
	return nil
}

// CheckSubnet checks s against the network of its family.
func (c *Config) CheckSubnet(s netip.Prefix) error {
	n, ok := c.Network(family.OfPrefix(s))
	if !ok {
		return fmt.Errorf("%s is an %s subnet, but net-conf.json enables no %s network", s, family.OfPrefix(s), family.OfPrefix(s))
	}
	return n.Check(s)
}

func parseAnyPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR like 10.0.0.0/8", s)
	}
	return family.ParsePrefix(family.OfPrefix(p), s)
}

func parseBound(f family.Family, key string, s *string, network netip.Prefix) (netip.Addr, error) {
	if s == nil || *s == "" {
		return netip.Addr{}, nil
	}
	a, err := family.ParseAddr(f, *s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q: %w", key, err)
	}
	if !network.Contains(a) {
		return netip.Addr{}, fmt.Errorf("%q: %s is outside %s", key, a, network)
	}
	return a, nil
}
