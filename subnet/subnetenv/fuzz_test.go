package subnetenv

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParse checks that no content makes Parse panic, and that whatever it
// accepts survives Marshal and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	f.Add("# written by flanneld\n\nFLANNEL_NETWORK=\"10.0.0.0/8\"\nFLANNEL_SUBNET=10.0.0.1/32\nFLANNEL_MTU=68\nFLANNEL_IPMASQ=0\nFLANNEL_IPV6_NETWORK=fc00::/48\n")
	f.Add("FLANNEL_NETWORK=10.244.0.0/16\r\nFLANNEL_SUBNET=10.244.0.0/24\r\nFLANNEL_MTU=-1\r\nFLANNEL_IPMASQ=maybe\r\n")
	f.Add("FLANNEL_NETWORK=::/0\nFLANNEL_SUBNET=::1/64\n=\n==\n")
	f.Fuzz(func(t *testing.T, text string) {
		env, err := Parse(strings.NewReader(text))
		if err != nil {
			return
		}
		if len(env.Nets) == 0 {
			t.Fatalf("accepted %q without a network or subnet", text)
		}
		for _, n := range env.Nets {
			if !n.Network.Contains(n.Subnet.Addr()) || n.Network.Masked() != n.Network {
				t.Fatalf("accepted %q with subnet %s outside network %s", text, n.Subnet, n.Network)
			}
		}
		out := env.Marshal()
		again, err := Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("Parse rejects what Marshal wrote for %q: %v\n%s", text, err, out)
		}
		if !bytes.Equal(again.Marshal(), out) {
			t.Fatalf("round trip changed %q:\n%s\n%s", text, out, again.Marshal())
		}
	})
}
