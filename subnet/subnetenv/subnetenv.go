// Package subnetenv reads and writes /run/flannel/subnet.env, the file through
// which flanneld tells the CNI plugin which subnet, MTU and network this node
// has. The format is flannel's, so tools written for flannel keep working.
package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/twill-net/twill/atomicfile"
	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/lease"
)

// DefaultPath is where flanneld writes the file and the CNI plugin reads it.
const DefaultPath = "/run/flannel/subnet.env"

// Keys of the file.
const (
	KeyMTU    = "FLANNEL_MTU"
	KeyIPMasq = "FLANNEL_IPMASQ"
)

// familyKeys are the keys of one family's network and subnet: FLANNEL_NETWORK
// and FLANNEL_SUBNET for IPv4, FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET
// for IPv6, as flannel writes them.
type familyKeys struct {
	family          family.Family
	network, subnet string
}

var keys = []familyKeys{
	{family.IPv4, "FLANNEL_NETWORK", "FLANNEL_SUBNET"},
	{family.IPv6, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"},
}

// Keys returns the network and subnet keys of family f.
func Keys(f family.Family) (network, subnet string) {
	for _, k := range keys {
		if k.family == f {
			return k.network, k.subnet
		}
	}
	return "", ""
}

// Env is the content of subnet.env.
type Env struct {
	// Nets holds one Net per family the node has, in the order of
	// family.All.
	Nets []Net
	// MTU is the MTU pods must use.
	MTU int
	// IPMasq is true when flanneld masquerades pod traffic leaving the
	// cluster network, so the bridge plugin must not.
	IPMasq bool
}

// Net is one family's part of the file.
type Net struct {
	// Network is the whole cluster pod network, e.g. 10.244.0.0/16.
	Network netip.Prefix
	// Subnet is this node's pod subnet with the gateway address as its
	// address, e.g. 10.244.1.1/24.
	Subnet netip.Prefix
}

// Family is the net's family.
func (n Net) Family() family.Family { return family.OfPrefix(n.Network) }

// Net returns the file's part for family f.
func (e *Env) Net(f family.Family) (Net, bool) { return family.Pick(e.Nets, f) }

// ErrNotExist is returned (wrapped) by Read when the file does not exist yet,
// which usually means flanneld has not finished its first reconcile on this
// node.
var ErrNotExist = errors.New("subnet.env does not exist yet: flanneld has not run on this node, or has not finished setting it up")

// Read parses the file at path.
func Read(path string) (*Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", path, ErrNotExist)
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	env, err := Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return env, nil
}

// Parse reads subnet.env content. FLANNEL_MTU and FLANNEL_IPMASQ are
// required, and at least one family's network and subnet, each pair
// complete; unknown keys are ignored, blank lines and comments are allowed.
func Parse(r io.Reader) (*Env, error) {
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		k, v, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not KEY=VALUE", line, text)
		}
		vals[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	env := &Env{}
	for _, k := range keys {
		n, ok, err := parseNet(k, vals)
		if err != nil {
			return nil, err
		}
		if ok {
			env.Nets = append(env.Nets, n)
		}
	}
	if len(env.Nets) == 0 {
		return nil, fmt.Errorf("%s is missing (and no other family's network is there)", keys[0].network)
	}
	for _, k := range []string{KeyMTU, KeyIPMasq} {
		if _, ok := vals[k]; !ok {
			return nil, fmt.Errorf("%s is missing", k)
		}
	}
	mtu, err := strconv.Atoi(vals[KeyMTU])
	if err != nil || mtu < 68 || mtu > 65535 {
		return nil, fmt.Errorf("%s=%q is not an MTU between 68 and 65535", KeyMTU, vals[KeyMTU])
	}
	env.MTU = mtu
	masq, err := strconv.ParseBool(vals[KeyIPMasq])
	if err != nil {
		return nil, fmt.Errorf("%s=%q is not true or false", KeyIPMasq, vals[KeyIPMasq])
	}
	env.IPMasq = masq
	return env, nil
}

// parseNet reads one family's pair of keys; ok is false when neither is
// there.
func parseNet(k familyKeys, vals map[string]string) (Net, bool, error) {
	nw, hasNet := vals[k.network]
	sub, hasSub := vals[k.subnet]
	switch {
	case !hasNet && !hasSub:
		return Net{}, false, nil
	case !hasNet:
		return Net{}, false, fmt.Errorf("%s is missing (%s is there)", k.network, k.subnet)
	case !hasSub:
		return Net{}, false, fmt.Errorf("%s is missing (%s is there)", k.subnet, k.network)
	}
	network, err := netip.ParsePrefix(nw)
	if err != nil || family.OfPrefix(network) != k.family || network.Addr().Is4In6() {
		return Net{}, false, fmt.Errorf("%s=%q is not an %s CIDR", k.network, nw, k.family)
	}
	network = network.Masked()
	subnet, err := netip.ParsePrefix(sub)
	if err != nil || family.OfPrefix(subnet) != k.family || subnet.Addr().Is4In6() {
		return Net{}, false, fmt.Errorf("%s=%q is not an %s address with prefix length, like %s", k.subnet, sub, k.family, example(k.family))
	}
	if !network.Contains(subnet.Addr()) {
		return Net{}, false, fmt.Errorf("%s=%s is outside %s=%s", k.subnet, sub, k.network, nw)
	}
	if subnet.Addr() == subnet.Masked().Addr() {
		return Net{}, false, fmt.Errorf("%s=%s names the network address; it must be the gateway address, like %s", k.subnet, sub, Gateway(subnet.Masked()))
	}
	return Net{Network: network, Subnet: subnet}, true, nil
}

func example(f family.Family) string {
	if f == family.IPv6 {
		return "fd00:10:244:1::1/64"
	}
	return "10.244.1.1/24"
}

// Gateway returns the subnet with its gateway address (lease.GatewayIP) as
// the address, as FLANNEL_SUBNET holds it: 10.244.1.1/24 for 10.244.1.0/24.
func Gateway(subnet netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(lease.GatewayIP(subnet), subnet.Bits())
}

// Marshal renders env in flannel's format and key order.
func (e *Env) Marshal() []byte {
	var b bytes.Buffer
	for _, n := range e.Nets {
		nk, sk := Keys(n.Family())
		fmt.Fprintf(&b, "%s=%s\n", nk, n.Network)
		fmt.Fprintf(&b, "%s=%s\n", sk, n.Subnet)
	}
	fmt.Fprintf(&b, "%s=%d\n", KeyMTU, e.MTU)
	fmt.Fprintf(&b, "%s=%t\n", KeyIPMasq, e.IPMasq)
	return b.Bytes()
}

// Write stores env at path atomically (write to a temporary file in the same
// directory, then rename), creating the directory if needed. It returns
// changed=false and leaves the file alone when it already has this content,
// so a restart does not touch a correct file.
func Write(path string, env *Env) (changed bool, err error) {
	data := env.Marshal()
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return false, err
	}
	return true, nil
}
