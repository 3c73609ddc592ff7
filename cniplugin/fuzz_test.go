package cniplugin

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twill-net/twill/subnet/subnetenv"
)

// FuzzDelegateConfig feeds arbitrary plugin configurations and subnet.env
// contents through the parsers and the delegate builder. Whatever the input,
// nothing panics, and every accepted pair yields a delegate configuration
// that encodes and carries the node's subnet and the runtime's network name.
func FuzzDelegateConfig(f *testing.F) {
	f.Add(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`, defaultEnv)
	f.Add(`{"cniVersion":"0.3.1","name":"cbr0","ipam":{"dataDir":"/x","routes":[{"dst":"1.2.3.0/24"}]},"delegate":{"ipam":{"routes":[]}}}`, "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.2.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n")
	f.Add(`{"name":"cbr0","delegate":{"mtu":1e3,"ipam":{"routes":[1,null,{"dst":5}]}},"runtimeConfig":{"a":[{}]}}`, "# c\n\nFLANNEL_NETWORK=\"10.0.0.0/8\"\nFLANNEL_SUBNET=10.0.0.1/32\nFLANNEL_MTU=68\nFLANNEL_IPMASQ=1\n")
	f.Add(`{"name":"x","delegate":null,"ipam":null,"args":null}`, "FLANNEL_NETWORK=10.0.0.0/8\r\nFLANNEL_SUBNET=10.255.255.1/24\r\nFLANNEL_MTU=65535\r\nFLANNEL_IPMASQ=TRUE\r\n")
	f.Fuzz(func(t *testing.T, conf, envText string) {
		n, confErr := ParseNetConf([]byte(conf))
		env, envErr := subnetenv.Parse(strings.NewReader(envText))
		if confErr != nil || envErr != nil {
			return
		}
		d := BuildDelegate(n, env)
		data, err := marshalDelegate(d)
		if err != nil {
			t.Fatalf("accepted input gives an unencodable delegate: %v", err)
		}
		var back map[string]any
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("delegate JSON does not decode: %v", err)
		}
		sns, err := DelegateSubnets(back)
		if err != nil {
			t.Fatalf("delegate has no subnet: %v", err)
		}
		if len(sns) != len(env.Nets) {
			t.Fatalf("delegate has %d ranges for %d families", len(sns), len(env.Nets))
		}
		for i, sn := range sns {
			if !sn.Contains(env.Nets[i].Subnet.Addr()) {
				t.Fatalf("delegate subnet %s does not hold the gateway %s", sn, env.Nets[i].Subnet.Addr())
			}
		}
		if back["name"] != n.Name {
			t.Fatalf("delegate name %v, want %q", back["name"], n.Name)
		}
	})
}
