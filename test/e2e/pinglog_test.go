package e2e

// Reading the output of a long-running ping, kept free of the lab so that
// its unit test runs in plain `go test`.

import (
	"regexp"
	"strconv"
)

// pingLog is what a background ping wrote.
type pingLog struct {
	replies     map[int]bool
	transmitted int
	done        bool
}

var (
	replyRe   = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
	summaryRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

func parsePingLog(s string) pingLog {
	l := pingLog{replies: map[int]bool{}}
	for _, m := range replyRe.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		l.replies[n] = true
	}
	if m := summaryRe.FindStringSubmatch(s); m != nil {
		l.transmitted, _ = strconv.Atoi(m[1])
		l.done = true
	}
	return l
}

// lost lists the sequence numbers that got no reply, except the last one
// sent, which may still have been in flight when ping was stopped.
func (l pingLog) lost() []int { return l.lostAfter(0) }

// lostAfter is lost for the sequence numbers above after only.
func (l pingLog) lostAfter(after int) []int {
	var res []int
	for seq := after + 1; seq < l.transmitted; seq++ {
		if !l.replies[seq] {
			res = append(res, seq)
		}
	}
	return res
}

// steady returns the highest sequence number answered when it and the n-1
// before it were all answered: from there on the path is known to work.
func (l pingLog) steady(n int) (int, bool) {
	last := 0
	for seq := range l.replies {
		last = max(last, seq)
	}
	if last < n {
		return 0, false
	}
	for seq := last - n + 1; seq <= last; seq++ {
		if !l.replies[seq] {
			return 0, false
		}
	}
	return last, true
}
