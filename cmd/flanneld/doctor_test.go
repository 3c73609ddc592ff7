package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
)

func TestDoctorTakesTheDaemonsFlags(t *testing.T) {
	daemon := []string{"--ip-masq", "--kube-subnet-mgr", "--iface=eth1", "--iface=eth2", "--healthz-port=10268", "--net-config-path=/etc/kube-flannel/net-conf.json"}
	f, d, set, err := doctorArgs(daemon, []string{"--json", "--iface=eth0", "--subnet-file=/tmp/subnet.env"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !f.ipMasq || f.healthzPort != 10268 || f.netConfPath != "/etc/kube-flannel/net-conf.json" {
		t.Errorf("the daemon's flags were not taken: %+v", f)
	}
	if !slices.Equal(f.ifaces, []string{"eth0"}) || f.subnetFile != "/tmp/subnet.env" {
		t.Errorf("the given flags do not win: ifaces %v subnet file %s", f.ifaces, f.subnetFile)
	}
	if !d.json || !d.probe || d.cniBinDir != "/opt/cni/bin" {
		t.Errorf("doctor flags %+v", d)
	}
	if !set["iface"] || !set["subnet-file"] || set["ip-masq"] || set["json"] {
		t.Errorf("given flanneld flags %v", set)
	}

	// No daemon: flanneld's defaults.
	f, _, _, err = doctorArgs(nil, nil, io.Discard)
	if err != nil || f.ipMasq || f.netConfPath == "" || f.subnetFile == "" {
		t.Errorf("defaults: %+v %v", f, err)
	}
	// A daemon whose flags this build does not know is judged by the
	// defaults, not refused.
	if _, _, _, err := doctorArgs([]string{"--no-such-flag"}, nil, io.Discard); err != nil {
		t.Errorf("unknown daemon flag: %v", err)
	}
	if _, _, _, err := doctorArgs(nil, []string{"--no-such-flag"}, io.Discard); err == nil {
		t.Error("an unknown flag given to doctor is accepted")
	}
	if _, _, _, err := doctorArgs(nil, []string{"extra"}, io.Discard); err == nil {
		t.Error("a stray argument is accepted")
	}
	if _, _, _, err := doctorArgs(nil, []string{"--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

func TestDoctorBadColour(t *testing.T) {
	if code := runDoctor([]string{"--color=sometimes"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}
