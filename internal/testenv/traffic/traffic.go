// Package traffic keeps traffic flowing between two pod addresses in two
// network namespaces while a test breaks things: a ping every 50 ms and a
// TCP stream, each in one direction (start two for both). It measures what
// a fault cost the traffic: pings lost, the longest run of them, and the
// longest time the stream went without data.
package traffic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/twill-net/twill/internal/testenv/netns"
	"github.com/twill-net/twill/internal/testenv/pinglog"
)

// Interval is the time between two pings.
const Interval = 50 * time.Millisecond

// streamPeriod is the time between two writes of the TCP stream; a read
// gap well above it means the stream stalled.
const streamPeriod = 10 * time.Millisecond

// End is one side of a flow: a namespace and a pod address in it.
type End struct {
	// NSName is the namespace's name in /run/netns, NS its path.
	NSName, NS string
	// IP is the pod address.
	IP string
}

// Flow is a ping and a TCP stream from one End to another.
type Flow struct {
	// Name says which way the flow goes, e.g. "n1→n2".
	Name    string
	logFile string
	ping    *exec.Cmd
	ln      net.Listener
	conn    net.Conn
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	last     time.Time // last data the stream's reader got
	stalls   []stall
	received int64
	errs     []error
	final    *pinglog.Log
}

// stall is a stretch of time in which the stream got no data.
type stall struct{ from, to time.Time }

// Mark is a point in a flow's life: the highest ping answered so far and
// the time, so that Stats can say what happened between two marks.
type Mark struct {
	Seq int
	At  time.Time
}

// Stats is what the traffic of one flow went through between two marks.
type Stats struct {
	// Sent and Lost count pings; LongestGap is the longest run of lost
	// pings, as time.
	Sent, Lost int
	LongestGap time.Duration
	// Stall is the longest time the TCP stream got no data.
	Stall time.Duration
}

// Start starts a flow from a to b, on TCP port port of b, writing the
// ping's output under dir. Stop it with Stop.
func Start(dir, name string, a, b End, port int) (*Flow, error) {
	f := &Flow{Name: name, logFile: filepath.Join(dir, "ping-"+sanitize(name)+".log")}
	out, err := os.Create(f.logFile)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	f.ping = exec.Command("ip", "netns", "exec", a.NSName, "ping", "-n", "-i", fmt.Sprint(Interval.Seconds()), "-W", "1", "-I", a.IP, b.IP)
	f.ping.Stdout, f.ping.Stderr = out, out
	if err := f.ping.Start(); err != nil {
		return nil, fmt.Errorf("starting ping %s: %w", name, err)
	}
	addr := net.JoinHostPort(b.IP, fmt.Sprint(port))
	// A socket belongs to the namespace it was made in, whichever thread
	// uses it later: listen inside b, dial inside a.
	if err := netns.Do(b.NS, func() (err error) { f.ln, err = net.Listen("tcp", addr); return err }); err != nil {
		f.Stop()
		return nil, fmt.Errorf("listening on %s in %s: %w", addr, b.NSName, err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(a.IP)}, Timeout: 10 * time.Second}
	if err := netns.Do(a.NS, func() (err error) { f.conn, err = d.Dial("tcp", addr); return err }); err != nil {
		f.Stop()
		return nil, fmt.Errorf("connecting %s → %s in %s: %w", a.IP, addr, a.NSName, err)
	}
	server, err := f.ln.Accept()
	if err != nil {
		f.Stop()
		return nil, fmt.Errorf("accepting the stream %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.last = time.Now()
	f.wg.Add(2)
	go f.write(ctx)
	go f.read(ctx, server)
	return f, nil
}

func sanitize(s string) string {
	b := []rune{}
	for _, r := range s {
		if r == '/' || r == ' ' || r > 127 {
			r = '-'
		}
		b = append(b, r)
	}
	return string(b)
}

func (f *Flow) write(ctx context.Context) {
	defer f.wg.Done()
	buf := make([]byte, 1024)
	t := time.NewTicker(streamPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A write only blocks once the socket's buffer is full, which a
		// long stall does; the deadline keeps Stop prompt then.
		_ = f.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := f.conn.Write(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() == nil {
				f.fail(fmt.Errorf("stream %s: writing: %w", f.Name, err))
			}
			return
		}
	}
}

func (f *Flow) read(ctx context.Context, c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		now := time.Now()
		if n > 0 {
			f.mu.Lock()
			if gap := now.Sub(f.last); gap > 5*streamPeriod {
				f.stalls = append(f.stalls, stall{f.last, now})
			}
			f.last = now
			f.received += int64(n)
			f.mu.Unlock()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				continue
			}
			if ctx.Err() == nil {
				f.fail(fmt.Errorf("stream %s: reading: %w", f.Name, err))
			}
			return
		}
	}
}

func (f *Flow) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

// Mark returns the flow's mark now.
func (f *Flow) Mark() (Mark, error) {
	data, err := os.ReadFile(f.logFile)
	if err != nil {
		return Mark{}, err
	}
	l := pinglog.Parse(string(data))
	m := Mark{At: time.Now()}
	for seq := range l.Replies {
		m.Seq = max(m.Seq, seq)
	}
	return m, nil
}

// Replies is how many pings have been answered so far.
func (f *Flow) Replies() (int, error) {
	data, err := os.ReadFile(f.logFile)
	if err != nil {
		return 0, err
	}
	return len(pinglog.Parse(string(data)).Replies), nil
}

// Stop stops the ping and the stream. It returns the stream's errors: a
// stream that broke (reset, closed) is an error, a stall is not.
func (f *Flow) Stop() error {
	if f.cancel != nil {
		f.cancel()
	}
	if f.conn != nil {
		f.conn.Close()
	}
	if f.ln != nil {
		f.ln.Close()
	}
	f.wg.Wait()
	if f.ping != nil && f.ping.Process != nil && f.ping.ProcessState == nil {
		_ = f.ping.Process.Signal(syscall.SIGINT)
		_ = f.ping.Wait()
		if data, err := os.ReadFile(f.logFile); err == nil {
			l := pinglog.Parse(string(data))
			f.final = &l
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// Between is what the flow went through from mark a to mark b; the pings
// are counted once the flow has stopped, before only the stream's stall.
func (f *Flow) Between(a, b Mark) Stats {
	var s Stats
	f.mu.Lock()
	for _, st := range f.stalls {
		from, to := maxTime(st.from, a.At), minTime(st.to, b.At)
		s.Stall = max(s.Stall, to.Sub(from))
	}
	if !f.last.IsZero() && f.last.Before(b.At) {
		s.Stall = max(s.Stall, b.At.Sub(maxTime(f.last, a.At)))
	}
	f.mu.Unlock()
	if f.final != nil {
		l := *f.final
		hi := min(b.Seq, l.Transmitted-1)
		run := 0
		for seq := a.Seq + 1; seq <= hi; seq++ {
			s.Sent++
			if l.Replies[seq] {
				run = 0
				continue
			}
			s.Lost++
			run++
			s.LongestGap = max(s.LongestGap, time.Duration(run)*Interval)
		}
	}
	return s
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
