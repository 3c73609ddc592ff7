package compare

import (
	"context"
	"fmt"
	"strings"
)

// TuneResult is the measured effect of one data-path setting in the vxlan
// lab: pod-to-pod iperf3 with one stream while the setting is applied on
// both nodes.
type TuneResult struct {
	// Setting says what was changed from the defaults ("defaults" for the
	// baseline).
	Setting string
	// Result holds the throughput per round and the CPU time.
	Result Result
	// Error is why the setting could not be applied, if it could not.
	Error string
}

// offload is one ethtool feature flipped from its default on a device
// ("flannel.1", or "veths" for the host ends of the pods' veths).
type offload struct {
	dev, short, long string
}

var offloads = []offload{
	{"flannel.1", "tx", "tx-checksumming"},
	{"flannel.1", "gro", "generic-receive-offload"},
	{"flannel.1", "gso", "generic-segmentation-offload"},
	{"flannel.1", "tso", "tcp-segmentation-offload"},
	{"veths", "gro", "generic-receive-offload"},
	{"veths", "tso", "tcp-segmentation-offload"},
	{"veths", "tx", "tx-checksumming"},
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// devices names the node's devices an offload applies to.
func (m *measurer) devices(ctx context.Context, node, dev string) ([]string, error) {
	if dev != "veths" {
		return []string{dev}, nil
	}
	out, err := m.c.Exec(ctx, node, "ip", "-o", "link", "show", "master", "cni0")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no veth on cni0 on %s", node)
	}
	return names, nil
}

// setOffload sets one feature on every device of both nodes.
func (m *measurer) setOffload(ctx context.Context, o offload, on bool) error {
	for _, node := range []string{m.worker, m.worker2} {
		devs, err := m.devices(ctx, node, o.dev)
		if err != nil {
			return err
		}
		for _, d := range devs {
			if _, err := m.c.Exec(ctx, node, "ethtool", "-K", d, o.short, onOff(on)); err != nil {
				return err
			}
			// ethtool -K succeeds even when the kernel refuses a
			// feature; read it back.
			out, err := m.c.Exec(ctx, node, "ethtool", "-k", d)
			if err != nil {
				return err
			}
			if got, ok := parseEthtoolFeatures(out)[o.long]; !ok || got != on {
				return fmt.Errorf("%s on %s stays %s (fixed by the driver)", o.long, d, onOff(got))
			}
		}
	}
	return nil
}

// tune measures each offload flipped from its default against the
// defaults, the variants taking turns each round, and restores every
// default.
func (m *measurer) tune(ctx context.Context) ([]TuneResult, error) {
	res := []TuneResult{{Setting: "defaults", Result: Result{Mode: "vxlan"}}}
	defaults := make([]bool, len(offloads))
	for i, o := range offloads {
		devs, err := m.devices(ctx, m.worker, o.dev)
		if err != nil {
			return nil, err
		}
		out, err := m.c.Exec(ctx, m.worker, "ethtool", "-k", devs[0])
		if err != nil {
			return nil, err
		}
		def, ok := parseEthtoolFeatures(out)[o.long]
		if !ok {
			return nil, fmt.Errorf("ethtool -k %s shows no %s", devs[0], o.long)
		}
		defaults[i] = def
		res = append(res, TuneResult{
			Setting: fmt.Sprintf("%s on %s: %s → %s", o.long, o.dev, onOff(def), onOff(!def)),
			Result:  Result{Mode: "vxlan"},
		})
	}
	for round := 0; round < m.p.TuneRounds; round++ {
		bps, err := m.iperf(ctx, m.cli, m.srv.ip, 1, m.p.TuneSecs, &res[0].Result)
		if err != nil {
			return res, err
		}
		res[0].Result.Throughput1 = append(res[0].Result.Throughput1, bps)
		m.logf("tuning: defaults: %.2f Gbit/s", bps/1e9)
		for i, o := range offloads {
			tr := &res[i+1]
			if tr.Error != "" {
				continue
			}
			if err := m.setOffload(ctx, o, !defaults[i]); err != nil {
				tr.Error = err.Error()
				m.logf("tuning: %s: %v", tr.Setting, err)
			} else {
				bps, err := m.iperf(ctx, m.cli, m.srv.ip, 1, m.p.TuneSecs, &tr.Result)
				if err != nil {
					return res, err
				}
				tr.Result.Throughput1 = append(tr.Result.Throughput1, bps)
				m.logf("tuning: %s: %.2f Gbit/s", tr.Setting, bps/1e9)
			}
			if err := m.setOffload(ctx, o, defaults[i]); err != nil {
				return res, fmt.Errorf("restoring %s: %w", tr.Setting, err)
			}
		}
	}
	return res, nil
}
