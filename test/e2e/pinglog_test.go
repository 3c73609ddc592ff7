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
func (l pingLog) lost() []int {
	var res []int
	for seq := 1; seq < l.transmitted; seq++ {
		if !l.replies[seq] {
			res = append(res, seq)
		}
	}
	return res
}
