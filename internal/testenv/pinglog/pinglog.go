// Package pinglog reads the output of a long-running ping (iputils' format,
// one line per reply and a summary when it is interrupted): which sequence
// numbers were answered, which were lost, and the longest run without an
// answer. The lab's e2e suite and the chaos suite measure traffic with it.
package pinglog

import (
	"regexp"
	"strconv"
)

// Log is what a background ping wrote.
type Log struct {
	// Replies holds the sequence numbers answered.
	Replies map[int]bool
	// Transmitted is the count of requests sent, from the summary.
	Transmitted int
	// Done says whether the summary was printed (ping has stopped).
	Done bool
}

var (
	replyRe   = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
	summaryRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

// Parse reads a ping's output so far.
func Parse(s string) Log {
	l := Log{Replies: map[int]bool{}}
	for _, m := range replyRe.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		l.Replies[n] = true
	}
	if m := summaryRe.FindStringSubmatch(s); m != nil {
		l.Transmitted, _ = strconv.Atoi(m[1])
		l.Done = true
	}
	return l
}

// Lost lists the sequence numbers that got no reply, except the last one
// sent, which may still have been in flight when ping was stopped.
func (l Log) Lost() []int { return l.LostAfter(0) }

// LostAfter is Lost for the sequence numbers above after only.
func (l Log) LostAfter(after int) []int {
	var res []int
	for seq := after + 1; seq < l.Transmitted; seq++ {
		if !l.Replies[seq] {
			res = append(res, seq)
		}
	}
	return res
}

// LongestGap is the longest run of consecutive sequence numbers above
// after that got no reply, counted as LostAfter counts.
func (l Log) LongestGap(after int) int {
	longest, run := 0, 0
	for seq := after + 1; seq < l.Transmitted; seq++ {
		if l.Replies[seq] {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	return longest
}

// Steady returns the highest sequence number answered when it and the n-1
// before it were all answered: from there on the path is known to work.
func (l Log) Steady(n int) (int, bool) {
	last := 0
	for seq := range l.Replies {
		last = max(last, seq)
	}
	if last < n {
		return 0, false
	}
	for seq := last - n + 1; seq <= last; seq++ {
		if !l.Replies[seq] {
			return 0, false
		}
	}
	return last, true
}
