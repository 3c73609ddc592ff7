package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
)

// Neigh is a permanent neighbour entry (ARP for IPv4, NDP for IPv6).
type Neigh struct {
	LinkIndex int
	IP        netip.Addr
	MAC       net.HardwareAddr
}

var _ Entry = Neigh{}

// Key implements Entry: address and device.
func (n Neigh) Key() Key {
	return Key{Kind: KindNeigh, Link: int32(n.LinkIndex), Dst: family.Host(n.IP)}
}

// Equal implements Entry.
func (n Neigh) Equal(o Entry) bool {
	on, ok := o.(Neigh)
	return ok && n.LinkIndex == on.LinkIndex && n.IP == on.IP && bytes.Equal(n.MAC, on.MAC)
}

func (n Neigh) String() string {
	return fmt.Sprintf("neighbour %s → %s dev#%d", n.IP, n.MAC, n.LinkIndex)
}

func (n Neigh) encode(e *encoder, seq uint32, del bool) {
	encodeNeigh(e, seq, del, af(family.Of(n.IP)), n.LinkIndex, 0, unix.RTN_UNICAST, n.IP, n.MAC)
}

// encodeNeigh appends the RTM_NEWNEIGH (replace) or RTM_DELNEIGH message
// for neighbour and FDB entries alike: a permanent entry of ip → mac.
func encodeNeigh(e *encoder, seq uint32, del bool, fam uint8, index int, flags, typ uint8, ip netip.Addr, mac net.HardwareAddr) {
	t, f := uint16(unix.RTM_NEWNEIGH), uint16(unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	if del {
		t, f = unix.RTM_DELNEIGH, unix.NLM_F_ACK
	}
	start := e.begin(t, f, seq)
	// struct ndmsg: family, two pad bytes, ifindex, state, flags, type.
	var msg [12]byte
	msg[0] = fam
	binary.NativeEndian.PutUint32(msg[4:], uint32(index))
	binary.NativeEndian.PutUint16(msg[8:], unix.NUD_PERMANENT)
	msg[10], msg[11] = flags, typ
	e.b = append(e.b, msg[:]...)
	e.addr(unix.NDA_DST, ip)
	if mac != nil {
		e.attr(unix.NDA_LLADDR, mac...)
	}
	e.end(start)
}
