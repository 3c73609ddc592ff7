// Package netconf parses net-conf.json, the cluster-wide network
// configuration that flanneld reads from the kube-flannel-cfg ConfigMap. Keys
// and defaults are flannel's, so an existing ConfigMap works unchanged.
package netconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// DefaultPath is where the DaemonSet mounts net-conf.json.
const DefaultPath = "/etc/kube-flannel/net-conf.json"

// Backend types.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
)

// Defaults of the vxlan backend, as in flannel.
const (
	DefaultVNI  = 1
	DefaultPort = 8472
)

// Config is the parsed and validated net-conf.json.
type Config struct {
	// Network is the cluster's pod network, e.g. 10.244.0.0/16.
	Network *net.IPNet
	// SubnetLen is the prefix length of each node's subnet (default 24).
	SubnetLen int
	// SubnetMin and SubnetMax bound the node subnets flanneld accepts, when set.
	SubnetMin, SubnetMax net.IP
	// EnableIPv4 is always true: IPv6 is not supported yet.
	EnableIPv4 bool
	// NoMasqueradeCIDRs are destinations that pod traffic reaches with its pod
	// source address kept, like the exclude-SNAT setting of the AWS VPC CNI.
	NoMasqueradeCIDRs []*net.IPNet
	// Backend says how packets reach other nodes.
	Backend Backend
}

// Backend is the "Backend" object of net-conf.json.
type Backend struct {
	// Type is vxlan or host-gw.
	Type string
	// VNI is the VXLAN network identifier (vxlan only).
	VNI int
	// Port is the VXLAN UDP port (vxlan only).
	Port int
	// MTU, when not zero, overrides the MTU derived from the interface.
	MTU int
	// DirectRouting makes vxlan route to peers on the same L2 subnet directly,
	// as host-gw does.
	DirectRouting bool
}

// rawConfig mirrors the JSON. Field names match flannel's keys; Go's decoder
// matches them case-insensitively, as flannel's does.
type rawConfig struct {
	Network           *string
	SubnetLen         *int
	SubnetMin         *string
	SubnetMax         *string
	EnableIPv4        *bool
	EnableIPv6        *bool
	NoMasqueradeCIDRs []string
	Backend           *rawBackend
}

type rawBackend struct {
	Type          string
	VNI           *int
	Port          *int
	MTU           *int
	DirectRouting bool
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

// Parse decodes and validates net-conf.json. Errors name the key at fault.
func Parse(data []byte) (*Config, error) {
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, describeJSONError(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	cfg := &Config{EnableIPv4: true, SubnetLen: 24}
	if raw.EnableIPv4 != nil && !*raw.EnableIPv4 {
		return nil, errors.New(`"EnableIPv4": only IPv4 networks are supported; set it to true or remove it`)
	}
	if raw.EnableIPv6 != nil && *raw.EnableIPv6 {
		return nil, errors.New(`"EnableIPv6": IPv6 is not supported yet; set it to false or remove it`)
	}
	if raw.Network == nil || *raw.Network == "" {
		return nil, errors.New(`"Network" is missing: set the cluster pod network, e.g. "10.244.0.0/16"`)
	}
	network, err := parseIPv4CIDR(*raw.Network)
	if err != nil {
		return nil, fmt.Errorf(`"Network": %w`, err)
	}
	cfg.Network = network
	netOnes, _ := network.Mask.Size()
	if raw.SubnetLen != nil {
		cfg.SubnetLen = *raw.SubnetLen
	} else if netOnes >= 24 {
		// flannel's rule: a small network gets subnets 4 bits longer.
		cfg.SubnetLen = netOnes + 4
	}
	if cfg.SubnetLen <= netOnes || cfg.SubnetLen > 30 {
		return nil, fmt.Errorf(`"SubnetLen": %d must be longer than the Network prefix /%d and at most 30`, cfg.SubnetLen, netOnes)
	}
	if cfg.SubnetMin, err = parseBound("SubnetMin", raw.SubnetMin, network); err != nil {
		return nil, err
	}
	if cfg.SubnetMax, err = parseBound("SubnetMax", raw.SubnetMax, network); err != nil {
		return nil, err
	}
	for i, s := range raw.NoMasqueradeCIDRs {
		c, err := parseIPv4CIDR(s)
		if err != nil {
			return nil, fmt.Errorf(`"NoMasqueradeCIDRs"[%d]: %w`, i, err)
		}
		cfg.NoMasqueradeCIDRs = append(cfg.NoMasqueradeCIDRs, c)
	}
	b := raw.Backend
	if b == nil {
		b = &rawBackend{}
	}
	cfg.Backend.Type = strings.ToLower(b.Type)
	if cfg.Backend.Type == "" {
		cfg.Backend.Type = BackendVXLAN
	}
	switch cfg.Backend.Type {
	case BackendVXLAN, BackendHostGW:
	default:
		return nil, fmt.Errorf(`"Backend.Type": %q is not supported; use "vxlan" or "host-gw"`, b.Type)
	}
	cfg.Backend.VNI, cfg.Backend.Port, cfg.Backend.DirectRouting = DefaultVNI, DefaultPort, b.DirectRouting
	if b.VNI != nil {
		if *b.VNI < 0 || *b.VNI > 1<<24-1 {
			return nil, fmt.Errorf(`"Backend.VNI": %d is outside 0..16777215`, *b.VNI)
		}
		cfg.Backend.VNI = *b.VNI
	}
	if b.Port != nil {
		if *b.Port <= 0 || *b.Port > 65535 {
			return nil, fmt.Errorf(`"Backend.Port": %d is not a UDP port (1..65535)`, *b.Port)
		}
		cfg.Backend.Port = *b.Port
	}
	if b.MTU != nil {
		if *b.MTU < 576 || *b.MTU > 65535 {
			return nil, fmt.Errorf(`"Backend.MTU": %d must be between 576 and 65535, or left out to follow the interface`, *b.MTU)
		}
		cfg.Backend.MTU = *b.MTU
	}
	if cfg.Backend.Type == BackendHostGW && (b.VNI != nil || b.Port != nil || b.DirectRouting) {
		return nil, errors.New(`"Backend": VNI, Port and DirectRouting apply to vxlan only; remove them for host-gw`)
	}
	return cfg, nil
}

// ContainsSubnet reports whether the node subnet s lies inside Network and
// within SubnetMin..SubnetMax when they are set.
func (c *Config) ContainsSubnet(s *net.IPNet) error {
	ones, _ := s.Mask.Size()
	netOnes, _ := c.Network.Mask.Size()
	if s.IP.To4() == nil || ones < netOnes || !c.Network.Contains(s.IP) {
		return fmt.Errorf("%s is outside the cluster Network %s in net-conf.json", s, c.Network)
	}
	if c.SubnetMin != nil && bytes.Compare(s.IP.To4(), c.SubnetMin) < 0 {
		return fmt.Errorf("%s is below SubnetMin %s", s, c.SubnetMin)
	}
	if c.SubnetMax != nil && bytes.Compare(s.IP.To4(), c.SubnetMax) > 0 {
		return fmt.Errorf("%s is above SubnetMax %s", s, c.SubnetMax)
	}
	return nil
}

func parseIPv4CIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("%q is not an IPv4 CIDR like 10.244.0.0/16", s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("%q has host bits set; did you mean %s?", s, n)
	}
	n.IP = n.IP.To4()
	return n, nil
}

func parseBound(key string, s *string, network *net.IPNet) (net.IP, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	ip := net.ParseIP(*s).To4()
	if ip == nil {
		return nil, fmt.Errorf("%q: %q is not an IPv4 address", key, *s)
	}
	if !network.Contains(ip) {
		return nil, fmt.Errorf("%q: %s is outside Network %s", key, ip, network)
	}
	return ip, nil
}

func describeJSONError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("%q: expected %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("not valid JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return fmt.Errorf("unknown key %s: check its spelling against the configuration reference", field)
	case err == io.EOF:
		return errors.New("empty file: expected a JSON object with at least \"Network\"")
	}
	return fmt.Errorf("not valid JSON: %w", err)
}
