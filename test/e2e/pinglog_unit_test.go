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

func TestPingLogSteady(t *testing.T) {
	log := func(seqs ...int) pingLog {
		l := pingLog{replies: map[int]bool{}}
		for _, s := range seqs {
			l.replies[s] = true
		}
		return l
	}
	for _, tc := range []struct {
		name string
		l    pingLog
		want int
		ok   bool
	}{
		{"none", log(), 0, false},
		{"too few", log(1, 2, 3), 0, false},
		{"five in a row", log(1, 2, 3, 4, 5), 5, true},
		{"a gap among the last five", log(1, 9, 10, 11, 12), 0, false},
		{"steady after a gap", log(1, 9, 10, 11, 12, 13), 13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := tc.l.steady(5); got != tc.want || ok != tc.ok {
				t.Errorf("steady(5) = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	l := pingLog{replies: map[int]bool{1: true, 9: true, 10: true, 12: true}, transmitted: 13}
	if got := l.lostAfter(9); !reflect.DeepEqual(got, []int{11}) {
		t.Errorf("lostAfter(9) = %v, want [11]", got)
	}
}
