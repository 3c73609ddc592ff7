package cniplugin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/twill-net/twill/subnet/subnetenv"
)

const defaultEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

func mustEnv(t *testing.T, s string) *subnetenv.Env {
	t.Helper()
	env, err := subnetenv.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("parsing subnet.env: %v", err)
	}
	return env
}

// asJSON normalises a value through JSON so expectations can be written as
// JSON literals.
func asJSON(t *testing.T, v any) map[string]any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildDelegate(t *testing.T) {
	tests := []struct {
		name string
		conf string
		env  string
		want string
	}{{
		name: "defaults, flanneld masquerades",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}`,
		env:  defaultEnv,
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1450,"ipMasq":false,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "flanneld does not masquerade, so the bridge does",
		conf: `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}`,
		env:  "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n",
		want: `{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1400,"ipMasq":true,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.17.0/24","gateway":"10.1.17.1"}]],"routes":[{"dst":"10.1.0.0/16"}]}}`,
	}, {
		name: "the usual flannel config: hairpin and default gateway",
		conf: `{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		env:  defaultEnv,
		want: `{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1450,"ipMasq":false,"isGateway":true,
			"hairpinMode":true,"isDefaultGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.3.1"}]}}`,
	}, {
		name: "dual-stack: one range per family, a default route for each",
		conf: `{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		env:  "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
		want: `{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1430,"ipMasq":false,"isGateway":true,
			"hairpinMode":true,"isDefaultGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}],[{"subnet":"fd00:10:244:3::/64","gateway":"fd00:10:244:3::1"}]],
				"routes":[{"dst":"0.0.0.0/0","gw":"10.244.3.1"},{"dst":"::/0","gw":"fd00:10:244:3::1"}]}}`,
	}, {
		name: "delegate keys override the defaults but not name or version",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"bridge":"br-pods","mtu":1300,"ipMasq":true,"isGateway":false,"name":"other","cniVersion":"0.2.0","promiscMode":true}}`,
		env:  defaultEnv,
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"br-pods","mtu":1300,"ipMasq":true,"isGateway":false,"promiscMode":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "ipam keys merge: top-level first, delegate.ipam on top, user routes kept",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
			"ipam":{"dataDir":"/a","routes":[{"dst":"192.168.0.0/16"}]},
			"delegate":{"ipam":{"dataDir":"/b"}}}`,
		env: defaultEnv,
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1450,"ipMasq":false,"isGateway":true,
			"ipam":{"type":"host-local","dataDir":"/b","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],
				"routes":[{"dst":"192.168.0.0/16"},{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "a user route to the cluster network is not duplicated",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"10.244.0.0/16"}]}}`,
		env:  defaultEnv,
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1450,"ipMasq":false,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "runtimeConfig and args are passed on",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]},"args":{"cni":{"ips":["10.244.3.9"]}}}`,
		env:  defaultEnv,
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":1450,"ipMasq":false,"isGateway":true,
			"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]},"args":{"cni":{"ips":["10.244.3.9"]}},
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "a /25 node subnet",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}`,
		env:  "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.129/25\nFLANNEL_MTU=8950\nFLANNEL_IPMASQ=true\n",
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","bridge":"cni0","mtu":8950,"ipMasq":false,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.128/25","gateway":"10.244.3.129"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNetConf([]byte(tc.conf))
			if err != nil {
				t.Fatalf("ParseNetConf: %v", err)
			}
			before := asJSON(t, n)
			got := asJSON(t, BuildDelegate(n, mustEnv(t, tc.env)))
			var want map[string]any
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatalf("bad expectation: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("delegate\n got %s\nwant %s", g, w)
			}
			if after := asJSON(t, n); !reflect.DeepEqual(before, after) {
				t.Errorf("BuildDelegate modified the user's configuration")
			}
			sn, err := DelegateSubnets(got)
			ranges := want["ipam"].(map[string]any)["ranges"].([]any)
			if err != nil || len(sn) != len(ranges) {
				t.Fatalf("DelegateSubnets = %v, %v; want %d", sn, err, len(ranges))
			}
			for i, r := range ranges {
				if sn[i].String() != r.([]any)[0].(map[string]any)["subnet"] {
					t.Errorf("DelegateSubnets[%d] = %s, want %v", i, sn[i], r)
				}
			}
		})
	}
}

func TestParseNetConfDefaults(t *testing.T) {
	n, err := ParseNetConf([]byte(`{"cniVersion":"1.1.0","name":"cbr0","type":"flannel"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/run/flannel/subnet.env" || n.DataDir != "/var/lib/cni/flannel" {
		t.Errorf("defaults: subnetFile %q dataDir %q", n.SubnetFile, n.DataDir)
	}
	n, err = ParseNetConf([]byte(`{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","subnetFile":"/x/s.env","dataDir":"/y",
		"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/x/s.env" || n.DataDir != "/y" {
		t.Errorf("overrides: subnetFile %q dataDir %q", n.SubnetFile, n.DataDir)
	}
	if len(n.ValidAttachments) != 1 || n.ValidAttachments[0].ContainerID != "a" {
		t.Errorf("the legacy cni.dev/attachments key was not read: %+v", n.ValidAttachments)
	}
}

func TestParseNetConfRejects(t *testing.T) {
	tests := []struct {
		name string
		conf string
		code uint
		msg  string
	}{
		{"not JSON", `{"name":`, types.ErrDecodingFailure, "not valid JSON"},
		{"not an object", `[1,2]`, types.ErrDecodingFailure, "not valid JSON"},
		{"no name", `{"type":"flannel"}`, types.ErrInvalidNetworkConfig, `no "name"`},
		{"delegate not an object", `{"name":"cbr0","delegate":"bridge"}`, types.ErrDecodingFailure, "not valid JSON"},
		{"delegate.ipam not an object", `{"name":"cbr0","delegate":{"ipam":[]}}`, types.ErrInvalidNetworkConfig, "delegate.ipam must be an object"},
		{"isDefaultGateway as a string", `{"name":"cbr0","delegate":{"isDefaultGateway":"true"}}`, types.ErrInvalidNetworkConfig, "delegate.isDefaultGateway must be true or false"},
		{"hairpinMode as a number", `{"name":"cbr0","delegate":{"hairpinMode":1}}`, types.ErrInvalidNetworkConfig, "delegate.hairpinMode"},
		{"mtu too small", `{"name":"cbr0","delegate":{"mtu":40}}`, types.ErrInvalidNetworkConfig, "delegate.mtu"},
		{"mtu fractional", `{"name":"cbr0","delegate":{"mtu":1450.5}}`, types.ErrInvalidNetworkConfig, "delegate.mtu"},
		{"mtu as a string", `{"name":"cbr0","delegate":{"mtu":"1450"}}`, types.ErrInvalidNetworkConfig, "delegate.mtu"},
		{"empty delegate type", `{"name":"cbr0","delegate":{"type":""}}`, types.ErrInvalidNetworkConfig, "delegate.type"},
		{"ipam ranges fight subnet.env", `{"name":"cbr0","ipam":{"ranges":[]}}`, types.ErrInvalidNetworkConfig, "ipam.ranges is set"},
		{"ipam subnet fights subnet.env", `{"name":"cbr0","ipam":{"subnet":"10.0.0.0/24"}}`, types.ErrInvalidNetworkConfig, "ipam.subnet is set"},
		{"delegate.ipam rangeStart", `{"name":"cbr0","delegate":{"ipam":{"rangeStart":"10.0.0.5"}}}`, types.ErrInvalidNetworkConfig, "delegate.ipam.rangeStart is set"},
		{"routes not a list", `{"name":"cbr0","ipam":{"routes":{"dst":"0.0.0.0/0"}}}`, types.ErrInvalidNetworkConfig, "ipam.routes must be a list"},
		{"empty ipam dataDir", `{"name":"cbr0","ipam":{"dataDir":""}}`, types.ErrInvalidNetworkConfig, "ipam.dataDir"},
		{"ipam not an object", `{"name":"cbr0","ipam":"host-local"}`, types.ErrDecodingFailure, "not valid JSON"},
		{"subnetFile not a string", `{"name":"cbr0","subnetFile":1}`, types.ErrDecodingFailure, "not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetConf([]byte(tc.conf))
			e, ok := err.(*types.Error)
			if !ok {
				t.Fatalf("got %T %v, want a *types.Error", err, err)
			}
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got code %d %q, want code %d containing %q", e.Code, e.Msg, tc.code, tc.msg)
			}
			if e.Details == "" {
				t.Errorf("error %q does not say what to do", e.Msg)
			}
		})
	}
}
