package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/twill-net/twill/family"
)

// Route is a unicast route in the main table. Its family is its
// destination's.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr // invalid for a route without a gateway
	LinkIndex int
	Onlink    bool
}

var _ Entry = Route{}

// Key implements Entry: destination and device.
func (r Route) Key() Key { return Key{Kind: KindRoute, Link: int32(r.LinkIndex), Dst: r.Dst} }

// Equal implements Entry.
func (r Route) Equal(o Entry) bool {
	or, ok := o.(Route)
	return ok && r == or
}

func (r Route) String() string {
	s := fmt.Sprintf("route %s via %s dev#%d", r.Dst, r.Gw, r.LinkIndex)
	if r.Onlink {
		s += " onlink"
	}
	return s
}

// encode appends the message `ip route replace` (or `del`) would send. The
// route gets protocol "boot", the same as `ip route add` and flannel, so
// `ip route` prints it just as flannel's.
func (r Route) encode(e *encoder, seq uint32, del bool) {
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
	// type, flags (u32).
	msg := [12]byte{0: af(family.OfPrefix(r.Dst)), 1: uint8(r.Dst.Bits()), 4: unix.RT_TABLE_MAIN,
		5: unix.RTPROT_BOOT, 6: unix.RT_SCOPE_UNIVERSE, 7: unix.RTN_UNICAST}
	if del {
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_ACK
		msg[5], msg[6], msg[7] = 0, unix.RT_SCOPE_NOWHERE, 0
	}
	if r.Onlink {
		binary.NativeEndian.PutUint32(msg[8:], unix.RTNH_F_ONLINK)
	}
	start := e.begin(typ, flags, seq)
	e.b = append(e.b, msg[:]...)
	e.addr(unix.RTA_DST, r.Dst.Addr())
	if r.Gw.IsValid() {
		e.addr(unix.RTA_GATEWAY, r.Gw)
	}
	e.u32(unix.RTA_OIF, uint32(r.LinkIndex))
	e.end(start)
}

// af is the kernel's address family number of f.
func af(f family.Family) uint8 {
	if f == family.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}
