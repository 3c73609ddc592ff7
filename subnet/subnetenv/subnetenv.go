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
	"net"
	"os"

	"github.com/twill-net/twill/atomicfile"
	"strconv"
	"strings"
)

// DefaultPath is where flanneld writes the file and the CNI plugin reads it.
const DefaultPath = "/run/flannel/subnet.env"

// Keys of the file, in the order flanneld writes them.
const (
	KeyNetwork = "FLANNEL_NETWORK"
	KeySubnet  = "FLANNEL_SUBNET"
	KeyMTU     = "FLANNEL_MTU"
	KeyIPMasq  = "FLANNEL_IPMASQ"
)

// Env is the content of subnet.env.
type Env struct {
	// Network is the whole cluster pod network, e.g. 10.244.0.0/16.
	Network *net.IPNet
	// Subnet is this node's pod subnet with the gateway address as IP,
	// e.g. 10.244.1.1/24.
	Subnet *net.IPNet
	// MTU is the MTU pods must use.
	MTU int
	// IPMasq is true when flanneld masquerades pod traffic leaving the
	// cluster network, so the bridge plugin must not.
	IPMasq bool
}

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

// Parse reads subnet.env content. All four keys are required; unknown keys
// are ignored (flannel's IPv6 keys, for instance), blank lines and comments
// are allowed.
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
	for _, k := range []string{KeyNetwork, KeySubnet, KeyMTU, KeyIPMasq} {
		if _, ok := vals[k]; !ok {
			return nil, fmt.Errorf("%s is missing", k)
		}
	}
	env := &Env{}
	_, network, err := net.ParseCIDR(vals[KeyNetwork])
	if err != nil || network.IP.To4() == nil {
		return nil, fmt.Errorf("%s=%q is not an IPv4 CIDR", KeyNetwork, vals[KeyNetwork])
	}
	env.Network = network
	ip, subnet, err := net.ParseCIDR(vals[KeySubnet])
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("%s=%q is not an IPv4 address with prefix length, like 10.244.1.1/24", KeySubnet, vals[KeySubnet])
	}
	if !network.Contains(ip) {
		return nil, fmt.Errorf("%s=%s is outside %s=%s", KeySubnet, vals[KeySubnet], KeyNetwork, vals[KeyNetwork])
	}
	if ip.Equal(subnet.IP) {
		return nil, fmt.Errorf("%s=%s names the network address; it must be the gateway address, like %s", KeySubnet, vals[KeySubnet], gatewayExample(subnet))
	}
	env.Subnet = &net.IPNet{IP: ip.To4(), Mask: subnet.Mask}
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

func gatewayExample(subnet *net.IPNet) string {
	ip := append(net.IP(nil), subnet.IP.To4()...)
	ip[3]++
	ones, _ := subnet.Mask.Size()
	return fmt.Sprintf("%s/%d", ip, ones)
}

// Marshal renders env in flannel's format.
func (e *Env) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s=%s\n", KeyNetwork, e.Network)
	fmt.Fprintf(&b, "%s=%s\n", KeySubnet, e.Subnet)
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
