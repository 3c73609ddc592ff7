package lab

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestNodeNamesAndAddresses(t *testing.T) {
	cases := []struct {
		i        int
		name, ip string
	}{
		{0, "myk8s-control-plane", "172.18.0.2"},
		{1, "myk8s-worker", "172.18.0.3"},
		{2, "myk8s-worker2", "172.18.0.4"},
		{9, "myk8s-worker9", "172.18.0.11"},
		{254, "myk8s-worker254", "172.18.1.0"},
	}
	for _, tc := range cases {
		if got := nodeName("myk8s", tc.i); got != tc.name {
			t.Errorf("nodeName(%d) = %s, want %s", tc.i, got, tc.name)
		}
		if got := nodeIP(tc.i).String(); got != tc.ip {
			t.Errorf("nodeIP(%d) = %s, want %s", tc.i, got, tc.ip)
		}
	}
}

func TestSetBackend(t *testing.T) {
	in := `  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableIPv4": true,
      "Backend": {
        "Type": "vxlan"
      }
    }
`
	out := string(SetBackend([]byte(in), "host-gw"))
	if !strings.Contains(out, `"Type": "host-gw"`) || strings.Contains(out, "vxlan") {
		t.Errorf("SetBackend(host-gw) =\n%s", out)
	}
	if back := string(SetBackend([]byte(out), "vxlan")); back != in {
		t.Errorf("SetBackend(vxlan) did not restore the input:\n%s", back)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{"twill": true, "myk8s": true, "a": true, "lab-2": true, "": false, "-x": false, "x-": false, "Upper": false, "a/b": false, "much-too-long-lab-name": false} {
		if got := validName.MatchString(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestDownWithNothingToRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Down needs root")
	}
	if err := Down(context.Background(), "unit-nolab"); err != nil {
		t.Fatalf("Down of a lab that never existed: %v", err)
	}
	if _, err := Load("unit-nolab"); err == nil || !strings.Contains(err.Error(), "twill lab up") {
		t.Errorf("Load of a missing lab: err = %v, want a hint to run twill lab up", err)
	}
}

func TestUpNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("checks the error seen without root")
	}
	_, err := Up(context.Background(), Options{Name: "unit"})
	if err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("Up as non-root: err = %v, want one saying root is needed", err)
	}
}
