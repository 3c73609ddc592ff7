package e2e

import (
	"reflect"
	"testing"
)

func TestPingLogLost(t *testing.T) {
	const head = "PING 10.244.2.5 (10.244.2.5) 56(84) bytes of data.\n"
	reply := func(seq string) string {
		return "64 bytes from 10.244.2.5: icmp_seq=" + seq + " ttl=62 time=0.311 ms\n"
	}
	cases := []struct {
		name     string
		log      string
		done     bool
		wantLost []int
	}{
		{name: "all answered", log: head + reply("1") + reply("2") + reply("3") + "\n--- 10.244.2.5 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 200ms\n", done: true},
		{name: "last in flight", log: head + reply("1") + reply("2") + "\n--- 10.244.2.5 ping statistics ---\n3 packets transmitted, 2 received, 33% packet loss, time 200ms\n", done: true},
		{name: "gap", log: head + reply("1") + reply("4") + reply("5") + "\n--- 10.244.2.5 ping statistics ---\n5 packets transmitted, 3 received, 40% packet loss, time 400ms\n", done: true, wantLost: []int{2, 3}},
		{name: "still running", log: head + reply("1"), done: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := parsePingLog(tc.log)
			if l.done != tc.done {
				t.Errorf("done = %v, want %v", l.done, tc.done)
			}
			if got := l.lost(); !reflect.DeepEqual(got, tc.wantLost) {
				t.Errorf("lost = %v, want %v", got, tc.wantLost)
			}
		})
	}
}
