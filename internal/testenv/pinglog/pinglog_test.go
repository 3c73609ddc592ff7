package pinglog

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
			l := Parse(tc.log)
			if l.Done != tc.done {
				t.Errorf("done = %v, want %v", l.Done, tc.done)
			}
			if got := l.Lost(); !reflect.DeepEqual(got, tc.wantLost) {
				t.Errorf("lost = %v, want %v", got, tc.wantLost)
			}
		})
	}
}

func TestPingLogSteady(t *testing.T) {
	log := func(seqs ...int) Log {
		l := Log{Replies: map[int]bool{}}
		for _, s := range seqs {
			l.Replies[s] = true
		}
		return l
	}
	for _, tc := range []struct {
		name string
		l    Log
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
			if got, ok := tc.l.Steady(5); got != tc.want || ok != tc.ok {
				t.Errorf("steady(5) = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	l := Log{Replies: map[int]bool{1: true, 9: true, 10: true, 12: true}, Transmitted: 13}
	if got := l.LostAfter(9); !reflect.DeepEqual(got, []int{11}) {
		t.Errorf("lostAfter(9) = %v, want [11]", got)
	}
}

func TestLongestGap(t *testing.T) {
	l := Log{Replies: map[int]bool{1: true, 2: true, 5: true, 6: true, 9: true}, Transmitted: 11}
	if got := l.LongestGap(0); got != 2 {
		t.Errorf("LongestGap(0) = %d, want 2 (3-4, 7-8; 10 lost, 11 in flight)", got)
	}
	if got := l.LongestGap(8); got != 1 {
		t.Errorf("LongestGap(8) = %d, want 1", got)
	}
}
