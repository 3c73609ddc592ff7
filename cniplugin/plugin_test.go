package cniplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// node is a plugin with a fake bridge, a subnet.env and a data dir in a
// temporary directory.
type node struct {
	t          *testing.T
	dir        string
	subnetFile string
	dataDir    string
	ipamDir    string
	exec       *fakeExec
	plugin     *Plugin
	stdout     *bytes.Buffer
	stderr     *bytes.Buffer
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{
		t:          t,
		dir:        dir,
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "flannel"),
		ipamDir:    filepath.Join(dir, "networks"),
		exec:       &fakeExec{fail: map[string]*types.Error{}, missing: map[string]bool{}},
		stdout:     &bytes.Buffer{},
		stderr:     &bytes.Buffer{},
	}
	n.plugin = &Plugin{
		Exec:   n.exec,
		Stdout: n.stdout,
		Stderr: n.stderr,
		Getenv: func(k string) string {
			if k == "CNI_PATH" {
				return "/opt/cni/bin"
			}
			return ""
		},
	}
	return n
}

func (n *node) writeEnv(content string) {
	n.t.Helper()
	if err := os.MkdirAll(filepath.Dir(n.subnetFile), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(n.subnetFile, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) conf(version string, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","type":"flannel","subnetFile":%q,"dataDir":%q,
		"delegate":{"hairpinMode":true,"isDefaultGateway":true,"ipam":{"dataDir":%q}}%s}`,
		version, n.subnetFile, n.dataDir, n.ipamDir, extra))
}

func (n *node) args(id, version, extra string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0", StdinData: n.conf(version, extra)}
}

func (n *node) saved(id string) (map[string]any, bool) {
	n.t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dataDir, id))
	if os.IsNotExist(err) {
		return nil, false
	}
	if err != nil {
		n.t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		n.t.Fatalf("saved config of %s: %v", id, err)
	}
	return d, true
}

func (n *node) callsOf(cmd string) []call {
	var out []call
	for _, c := range n.exec.Calls() {
		if c.Command == cmd {
			out = append(out, c)
		}
	}
	return out
}

func wantCode(t *testing.T, err error, code uint, msg string) {
	t.Helper()
	e, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("got %T %v, want a *types.Error with code %d", err, err, code)
	}
	if e.Code != code || !strings.Contains(e.Msg, msg) {
		t.Fatalf("got code %d %q, want code %d containing %q", e.Code, e.Msg, code, msg)
	}
}

func subnetOf(t *testing.T, d map[string]any) string {
	t.Helper()
	sn, err := DelegateSubnets(d)
	if err != nil {
		t.Fatal(err)
	}
	return prefixList(sn)
}

func TestAddSavesAndDelegates(t *testing.T) {
	for _, version := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			n := newNode(t)
			n.writeEnv(defaultEnv)
			if err := n.plugin.Add(n.args("c1", version, "")); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			adds := n.callsOf("ADD")
			if len(adds) != 1 || adds[0].Plugin != "bridge" {
				t.Fatalf("delegate calls: %+v", n.exec.Calls())
			}
			saved, ok := n.saved("c1")
			if !ok {
				t.Fatal("no saved configuration after ADD")
			}
			if !jsonEqual(saved, adds[0].Conf) {
				t.Errorf("saved configuration differs from what the bridge got:\n%v\n%v", saved, adds[0].Conf)
			}
			st, err := os.Stat(filepath.Join(n.dataDir, "c1"))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("saved file mode: %v %v", st.Mode(), err)
			}
			var res map[string]any
			if err := json.Unmarshal(n.stdout.Bytes(), &res); err != nil {
				t.Fatalf("result %q: %v", n.stdout.String(), err)
			}
			if res["cniVersion"] != version {
				t.Errorf("result version %v, want %s", res["cniVersion"], version)
			}
			if !strings.Contains(n.stdout.String(), "10.244.3.2/24") {
				t.Errorf("result lacks the delegate's address: %s", n.stdout.String())
			}
			if entries := dataDirEntries(t, n.dataDir); len(entries) != 1 {
				t.Errorf("data dir holds %q, want one file (no temporaries left)", entries)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestAddSubnetEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  *string
		msg  string
	}{
		{"missing file", nil, "flanneld has not run on this node yet"},
		{"empty file", ptr(""), "FLANNEL_NETWORK is missing"},
		{"MTU missing", ptr("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=true\n"), "FLANNEL_MTU is missing"},
		{"IPMASQ missing", ptr("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n"), "FLANNEL_IPMASQ is missing"},
		{"subnet outside network", ptr("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), "outside"},
		{"garbage line", ptr("hello\n"), "not KEY=VALUE"},
		{"bad MTU", ptr("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=true\n"), "FLANNEL_MTU"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			if tc.env != nil {
				n.writeEnv(*tc.env)
			}
			err := n.plugin.Add(n.args("c1", "1.0.0", ""))
			wantCode(t, err, types.ErrTryAgainLater, tc.msg)
			if !strings.Contains(err.Error(), n.subnetFile) {
				t.Errorf("error %q does not name the file", err)
			}
			if len(n.exec.Calls()) != 0 {
				t.Errorf("delegate called despite the bad subnet.env")
			}
			if _, ok := n.saved("c1"); ok {
				t.Errorf("configuration saved despite the bad subnet.env")
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestAddFailureRemovesSavedConfig(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	n.exec.fail["ADD"] = types.NewError(types.ErrInternal, "failed to set bridge addr", "")
	err := n.plugin.Add(n.args("c1", "1.0.0", ""))
	wantCode(t, err, types.ErrInternal, "bridge ADD: failed to set bridge addr")
	if _, ok := n.saved("c1"); ok {
		t.Error("saved configuration left behind after a failed ADD")
	}
}

func TestAddMissingBridgePlugin(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	n.exec.missing["bridge"] = true
	err := n.plugin.Add(n.args("c1", "1.0.0", ""))
	wantCode(t, err, types.ErrInvalidNetworkConfig, "bridge plugin is not installed")
	if _, ok := n.saved("c1"); ok {
		t.Error("saved configuration left behind after a failed ADD")
	}
}

func TestDelUsesSavedConfig(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatal(err)
	}
	// flanneld moved to another subnet meanwhile.
	n.writeEnv("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	dels := n.callsOf("DEL")
	if len(dels) != 1 || subnetOf(t, dels[0].Conf) != "10.244.3.0/24" {
		t.Fatalf("DEL did not use the saved configuration: %+v", dels)
	}
	if _, ok := n.saved("c1"); ok {
		t.Error("saved configuration still there after DEL")
	}
	// A second DEL rebuilds from subnet.env and still succeeds.
	if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if dels := n.callsOf("DEL"); len(dels) != 2 || subnetOf(t, dels[1].Conf) != "10.244.9.0/24" {
		t.Fatalf("second DEL: %+v", dels)
	}
}

func TestDelWithoutSavedConfig(t *testing.T) {
	t.Run("rebuilds from subnet.env so the address is released", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		if dels := n.callsOf("DEL"); len(dels) != 1 || subnetOf(t, dels[0].Conf) != "10.244.3.0/24" {
			t.Fatalf("DEL calls: %+v", dels)
		}
	})
	t.Run("unreadable saved file is replaced by subnet.env and removed", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dataDir, "c1"), []byte("{trunc"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		if dels := n.callsOf("DEL"); len(dels) != 1 {
			t.Fatalf("DEL calls: %+v", dels)
		}
		if _, err := os.Stat(filepath.Join(n.dataDir, "c1")); !os.IsNotExist(err) {
			t.Errorf("corrupt saved file not removed: %v", err)
		}
		if !strings.Contains(n.stderr.String(), "not a JSON object") {
			t.Errorf("no warning about the corrupt file: %q", n.stderr.String())
		}
	})
	t.Run("empty saved file (unsynced, then a crash) is replaced by subnet.env", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dataDir, "c1"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		if dels := n.callsOf("DEL"); len(dels) != 1 || subnetOf(t, dels[0].Conf) != "10.244.3.0/24" {
			t.Fatalf("DEL calls: %+v", dels)
		}
		if _, err := os.Stat(filepath.Join(n.dataDir, "c1")); !os.IsNotExist(err) {
			t.Errorf("empty saved file not removed: %v", err)
		}
	})
	t.Run("no subnet.env either: success, nothing to do", func(t *testing.T) {
		n := newNode(t)
		if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatalf("DEL must succeed: %v", err)
		}
		if calls := n.exec.Calls(); len(calls) != 0 {
			t.Errorf("delegate called: %+v", calls)
		}
	})
}

func TestDelDelegateFailureKeepsSavedConfig(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatal(err)
	}
	n.exec.fail["DEL"] = types.NewError(types.ErrIOFailure, "cannot lock", "")
	wantCode(t, n.plugin.Del(n.args("c1", "1.0.0", "")), types.ErrIOFailure, "bridge DEL: cannot lock")
	if _, ok := n.saved("c1"); !ok {
		t.Fatal("saved configuration removed although DEL failed; a retry would use the wrong one")
	}
	delete(n.exec.fail, "DEL")
	if err := n.plugin.Del(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatalf("retried DEL: %v", err)
	}
}

func TestCheck(t *testing.T) {
	prev := func(addr string) string {
		return fmt.Sprintf(`,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":%q}]}`, addr)
	}
	t.Run("passes and hands prevResult to the delegate", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Add(n.args("c1", "0.4.0", "")); err != nil {
			t.Fatal(err)
		}
		if err := n.plugin.Check(n.args("c1", "1.0.0", prev("10.244.3.2/24"))); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		checks := n.callsOf("CHECK")
		if len(checks) != 1 {
			t.Fatalf("CHECK calls: %+v", n.exec.Calls())
		}
		if checks[0].Conf["cniVersion"] != "1.0.0" || checks[0].Conf["prevResult"] == nil {
			t.Errorf("delegate CHECK config: %v", checks[0].Conf)
		}
	})
	t.Run("fails when subnet.env moved away from the pod's subnet", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		n.writeEnv("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
		wantCode(t, n.plugin.Check(n.args("c1", "1.0.0", prev("10.244.3.2/24"))), types.ErrInvalidNetworkConfig, "10.244.9.0/24")
		if len(n.callsOf("CHECK")) != 0 {
			t.Error("delegate CHECK called although the subnet moved")
		}
	})
	t.Run("fails when the pod's address is outside the node's subnet", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		wantCode(t, n.plugin.Check(n.args("c1", "1.0.0", prev("10.244.4.2/24"))), types.ErrInvalidNetworkConfig, "10.244.4.2")
	})
	t.Run("unknown container", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		wantCode(t, n.plugin.Check(n.args("c1", "1.0.0", "")), types.ErrUnknownContainer, "no saved configuration")
	})
	t.Run("subnet.env gone", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(n.subnetFile); err != nil {
			t.Fatal(err)
		}
		wantCode(t, n.plugin.Check(n.args("c1", "1.0.0", "")), types.ErrTryAgainLater, "flanneld has not run")
	})
	t.Run("delegate failure is reported", func(t *testing.T) {
		n := newNode(t)
		n.writeEnv(defaultEnv)
		if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
			t.Fatal(err)
		}
		n.exec.fail["CHECK"] = types.NewError(types.ErrInternal, "eth0 has no address", "")
		wantCode(t, n.plugin.Check(n.args("c1", "1.0.0", "")), types.ErrInternal, "bridge CHECK: eth0 has no address")
	})
}

func TestStatus(t *testing.T) {
	n := newNode(t)
	args := &skel.CmdArgs{StdinData: n.conf("1.1.0", "")}
	wantCode(t, n.plugin.Status(args), ErrPluginNotAvailable, "flanneld has not run")
	n.writeEnv("FLANNEL_NETWORK=10.244.0.0/16\n")
	wantCode(t, n.plugin.Status(args), ErrPluginNotAvailable, "FLANNEL_SUBNET is missing")
	if len(n.exec.Calls()) != 0 {
		t.Error("delegate STATUS called before subnet.env is valid")
	}
	n.writeEnv(defaultEnv)
	if err := n.plugin.Status(args); err != nil {
		t.Fatalf("STATUS with a valid subnet.env: %v", err)
	}
	if len(n.callsOf("STATUS")) != 1 {
		t.Fatalf("delegate STATUS not called: %+v", n.exec.Calls())
	}
	n.exec.fail["STATUS"] = types.NewError(ErrPluginNotAvailable, "ipam store unwritable", "")
	wantCode(t, n.plugin.Status(args), ErrPluginNotAvailable, "bridge STATUS: ipam store unwritable")
}

// allocate writes a host-local record the way host-local does.
func (n *node) allocate(ip, id, ifname string) {
	n.t.Helper()
	dir := filepath.Join(n.ipamDir, "cbr0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	content := id
	if ifname != "" {
		content += "\r\n" + ifname
	}
	if err := os.WriteFile(filepath.Join(dir, ip), []byte(content), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	for _, id := range []string{"live", "stale", "stale-no-ip"} {
		if err := n.plugin.Add(n.args(id, "1.1.0", "")); err != nil {
			t.Fatal(err)
		}
	}
	// The stale pod was made before flanneld's subnet changed: its DEL
	// must use its own saved configuration.
	n.writeEnv("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	n.allocate("10.244.3.2", "live", "eth0")
	n.allocate("10.244.3.3", "stale", "eth0")
	n.allocate("10.244.9.7", "leaked", "eth0")     // no saved configuration at all
	n.allocate("10.244.9.8", "old-format", "")     // host-local's old record format
	n.allocate("10.244.3.4", "live", "net1")       // same container, other attachment: stale
	n.allocate("last_reserved_ip.0", "junk", "xx") // not an address record
	before := len(n.exec.Calls())

	args := &skel.CmdArgs{StdinData: n.conf("1.1.0", `,"cni.dev/valid-attachments":[{"containerID":"live","ifname":"eth0"}]`)}
	if err := n.plugin.GC(args); err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := map[string]string{}
	for _, c := range n.exec.Calls()[before:] {
		if c.Command == "DEL" {
			got[c.ContainerID+"/"+c.IfName] = subnetOf(t, c.Conf)
		}
	}
	want := map[string]string{
		"stale/eth0":      "10.244.3.0/24", // its saved configuration
		"leaked/eth0":     "10.244.9.0/24", // rebuilt from subnet.env
		"old-format/eth0": "10.244.9.0/24",
		"live/net1":       "10.244.3.0/24",
	}
	if !jsonEqual(got, want) {
		t.Errorf("GC's DELs: got %v, want %v", got, want)
	}
	if _, ok := n.saved("live"); !ok {
		t.Error("GC removed the live container's configuration")
	}
	for _, id := range []string{"stale", "stale-no-ip"} {
		if _, ok := n.saved(id); ok {
			t.Errorf("GC left %s's configuration", id)
		}
	}
	gcs := n.callsOf("GC")
	if len(gcs) != 1 {
		t.Fatalf("delegate GC calls: %+v", gcs)
	}
	if va, _ := json.Marshal(gcs[0].Conf["cni.dev/valid-attachments"]); string(va) != `[{"containerID":"live","ifname":"eth0"}]` {
		t.Errorf("delegate GC got valid attachments %s", va)
	}
}

func TestGCWithoutSubnetEnv(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	if err := n.plugin.Add(n.args("stale", "1.1.0", "")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(n.subnetFile); err != nil {
		t.Fatal(err)
	}
	n.allocate("10.244.3.2", "stale", "eth0")
	n.allocate("10.244.3.3", "leaked", "eth0")
	err := n.plugin.GC(&skel.CmdArgs{StdinData: n.conf("1.1.0", `,"cni.dev/valid-attachments":[]`)})
	// The stale pod is released with its saved configuration; the leaked
	// address has none and waits for subnet.env, which the error says.
	wantCode(t, err, types.ErrTryAgainLater, "cannot release 10.244.3.3")
	if dels := n.callsOf("DEL"); len(dels) != 1 || dels[0].ContainerID != "stale" {
		t.Errorf("DEL calls: %+v", dels)
	}
	if _, ok := n.saved("stale"); ok {
		t.Error("stale configuration not removed")
	}
}

// TestConcurrentAddDel runs many pods' ADD and DEL at once; with -race it
// also checks the plugin shares no state between commands.
func TestConcurrentAddDel(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	n.plugin.Stdout = io.Discard
	n.plugin.Stderr = io.Discard
	const pods = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*pods)
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("pod%d", i)
			if err := n.plugin.Add(n.args(id, "1.0.0", "")); err != nil {
				errs <- fmt.Errorf("ADD %s: %w", id, err)
				return
			}
			if i%2 == 0 {
				if err := n.plugin.Del(n.args(id, "1.0.0", "")); err != nil {
					errs <- fmt.Errorf("DEL %s: %w", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries := dataDirEntries(t, n.dataDir)
	if len(entries) != pods/2 {
		t.Errorf("%d saved configurations, want %d", len(entries), pods/2)
	}
	for _, e := range entries {
		var i int
		if _, err := fmt.Sscanf(e, "pod%d", &i); err != nil || i%2 == 0 {
			t.Errorf("unexpected saved configuration %s", e)
		}
	}
}

func TestDelWithBrokenConfig(t *testing.T) {
	n := newNode(t)
	n.writeEnv(defaultEnv)
	if err := n.plugin.Add(n.args("c1", "1.0.0", "")); err != nil {
		t.Fatal(err)
	}
	// The user breaks the CNI configuration after the pod was made.
	broken := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","dataDir":%q,"delegate":{"mtu":"big"}}`, n.dataDir))
	if err := n.plugin.Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: broken}); err != nil {
		t.Fatalf("DEL with a broken configuration but a saved one: %v", err)
	}
	if dels := n.callsOf("DEL"); len(dels) != 1 || subnetOf(t, dels[0].Conf) != "10.244.3.0/24" {
		t.Fatalf("DEL calls: %+v", dels)
	}
	if _, ok := n.saved("c1"); ok {
		t.Error("saved configuration left after DEL")
	}
	if err := n.plugin.Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: broken}); err != nil {
		t.Fatalf("second DEL with a broken configuration: %v", err)
	}
	if !strings.Contains(n.stderr.String(), "CNI configuration is invalid") {
		t.Errorf("no warning: %q", n.stderr.String())
	}
}

// dataDirEntries lists the plugin's data directory but for the saved
// configurations' format marker: the containers' files and any temporary.
func dataDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Name() != ".format" {
			out = append(out, e.Name())
		}
	}
	return out
}
