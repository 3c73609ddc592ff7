package doctor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/twill-net/twill/family"
)

// NetProber sends real probes from this network namespace: ICMP echo over
// a raw socket (CAP_NET_RAW), one socket per family for all targets, and
// plain TCP connections.
type NetProber struct {
	// Interval is how long an unanswered target waits before its echo
	// request is sent again; default 400ms.
	Interval time.Duration
}

var _ Prober = NetProber{}

// icmpFamily is what differs between ICMPv4 and ICMPv6.
type icmpFamily struct {
	network, listen string
	proto           int
	request, reply  icmp.Type
}

var icmpFamilies = map[family.Family]icmpFamily{
	family.IPv4: {network: "ip4:icmp", listen: "0.0.0.0", proto: 1, request: ipv4.ICMPTypeEcho, reply: ipv4.ICMPTypeEchoReply},
	family.IPv6: {network: "ip6:ipv6-icmp", listen: "::", proto: 58, request: ipv6.ICMPTypeEchoRequest, reply: ipv6.ICMPTypeEchoReply},
}

// Ping implements Prober. Every target gets an echo request at once, and
// again every Interval until it answers or ctx ends.
func (p NetProber) Ping(ctx context.Context, targets []netip.Addr) (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	var mu sync.Mutex
	byFam := map[family.Family][]netip.Addr{}
	for _, t := range targets {
		byFam[family.Of(t)] = append(byFam[family.Of(t)], t)
	}
	// The sockets are opened here, by the caller's thread: its network
	// namespace is the one probed from.
	conns := map[family.Family]*icmp.PacketConn{}
	for f := range byFam {
		c, err := icmp.ListenPacket(icmpFamilies[f].network, icmpFamilies[f].listen)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("opening an %s ICMP socket: %w", f, err)
		}
		conns[f] = c
	}
	var wg sync.WaitGroup
	errs := make([]error, 0, len(byFam))
	var errMu sync.Mutex
	for f, ts := range byFam {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.ping(ctx, conns[f], icmpFamilies[f], ts, func(a netip.Addr) {
				mu.Lock()
				out[a] = true
				mu.Unlock()
			}); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// ping probes targets of one family over c, calling answered for each
// reply, and closes c.
func (p NetProber) ping(ctx context.Context, c *icmp.PacketConn, fam icmpFamily, targets []netip.Addr, answered func(netip.Addr)) error {
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = c.SetReadDeadline(deadline)
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))

	var mu sync.Mutex
	pending := make(map[netip.Addr]bool, len(targets))
	for _, t := range targets {
		pending[t] = true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return // the deadline, or Close
			}
			m, err := icmp.ParseMessage(fam.proto, buf[:n])
			if err != nil || m.Type != fam.reply {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			ipa, ok2 := from.(*net.IPAddr)
			if !ok || !ok2 || echo.ID != id {
				continue
			}
			a, _ := netip.AddrFromSlice(ipa.IP)
			a = a.Unmap()
			mu.Lock()
			if pending[a] {
				delete(pending, a)
				answered(a)
			}
			left := len(pending)
			mu.Unlock()
			if left == 0 {
				return
			}
		}
	}()
	interval := p.Interval
	if interval <= 0 {
		interval = 400 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		mu.Lock()
		var send []netip.Addr
		for a := range pending {
			send = append(send, a)
		}
		mu.Unlock()
		for i, a := range send {
			msg := icmp.Message{Type: fam.request, Body: &icmp.Echo{ID: id, Seq: (seq*len(targets) + i) & 0xffff, Data: []byte("twill doctor")}}
			b, err := msg.Marshal(nil)
			if err != nil {
				return err
			}
			// A target the kernel has no route to fails here; it stays
			// unanswered, which is the finding.
			_, _ = c.WriteTo(b, &net.IPAddr{IP: a.AsSlice()})
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			_ = c.Close()
			<-done
			return nil
		case <-tick.C:
		}
	}
}

// Connect implements Prober.
func (NetProber) Connect(ctx context.Context, addr netip.AddrPort) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err == nil {
		conn.Close()
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
