package kernel

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
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

// request builds the message `ip route replace` (or `del`) would send. The
// route gets protocol "boot", the same as `ip route add` and flannel, so
// `ip route` prints it just as flannel's.
func (r Route) request(del bool) *nl.NetlinkRequest {
	var req *nl.NetlinkRequest
	var msg *nl.RtMsg
	if del {
		req = nl.NewNetlinkRequest(unix.RTM_DELROUTE, unix.NLM_F_ACK)
		msg = nl.NewRtDelMsg()
	} else {
		req = nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
		msg = nl.NewRtMsg()
	}
	msg.Family = af(family.OfPrefix(r.Dst))
	msg.Dst_len = uint8(r.Dst.Bits())
	if r.Onlink {
		msg.Flags |= unix.RTNH_F_ONLINK
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Dst.Addr().AsSlice()))
	if r.Gw.IsValid() {
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.Gw.AsSlice()))
	}
	req.AddData(nl.NewRtAttr(unix.RTA_OIF, u32(r.LinkIndex)))
	return req
}

// af is the kernel's address family number of f.
func af(f family.Family) uint8 {
	if f == family.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}
