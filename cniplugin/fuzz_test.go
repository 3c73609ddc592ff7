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

// FuzzSavedConfig: the saved delegate configuration is read back from disk
// by DEL, CHECK and GC, after upgrades and by hand edits. Whatever the file
// holds, nothing panics: it is refused as not a JSON object, or gives a
// delegate type and either pod ranges or a clear error.
func FuzzSavedConfig(f *testing.F) {
	for _, seed := range []string{
		`{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}],[{"subnet":"fd00:10:244:3::/64"}]]}}`,
		`{"ipam":{"subnet":"10.244.0.0/24"}}`, `{"type":5,"ipam":[]}`, `{"ipam":{"ranges":[[],[{"subnet":7}],null]}}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseSaved(data)
		if err != nil {
			return
		}
		if DelegateType(d) == "" {
			t.Fatalf("no delegate type for %q", data)
		}
		sns, err := DelegateSubnets(d)
		if err == nil && len(sns) == 0 {
			t.Fatalf("no ranges and no error for %q", data)
		}
		for _, sn := range sns {
			if !sn.IsValid() || sn.Masked() != sn {
				t.Fatalf("range %v from %q", sn, data)
			}
		}
		if _, err := marshalDelegate(d); err != nil {
			t.Fatalf("a loaded configuration does not encode again: %v", err)
		}
	})
}
