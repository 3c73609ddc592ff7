package main

import (
	"context"
	"strings"
	"testing"
)

func TestNameArg(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantName string
		wantRest string
	}{
		{"default", []string{"get", "nodes"}, "twill", "get nodes"},
		{"separate", []string{"--name", "myk8s", "get", "nodes"}, "myk8s", "get nodes"},
		{"joined", []string{"--name=myk8s", "myk8s-worker", "--", "ip", "route"}, "myk8s", "myk8s-worker -- ip route"},
		{"later --name belongs to the command", []string{"get", "--name", "x"}, "twill", "get --name x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, rest := nameArg(tc.args)
			if n != tc.wantName || strings.Join(rest, " ") != tc.wantRest {
				t.Errorf("nameArg(%q) = %q, %q; want %q, %q", tc.args, n, rest, tc.wantName, tc.wantRest)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"lab"}, 2},
		{[]string{"lab", "frobnicate"}, 2},
		{[]string{"lab", "up", "--nodes", "x"}, 1},
		{[]string{"lab", "status", "--name", "no-such-lab-here"}, 1},
		{[]string{"version"}, 0},
		{[]string{"status", "extra"}, 2},
		{[]string{"status", "--kubeconfig", "/nonexistent/kubeconfig"}, 1},
		{[]string{"lab", "doctor", "--name", "no-such-lab-here"}, 1},
		{[]string{"lab", "doctor", "node-a", "node-b"}, 2},
	} {
		if got := run(ctx, tc.args); got != tc.want {
			t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.want)
		}
	}
}
