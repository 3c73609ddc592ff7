package kernel

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
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

func (n Neigh) request(del bool) *nl.NetlinkRequest {
	return neighRequest(del, &netlink.Ndmsg{
		Family: af(family.Of(n.IP)), Index: uint32(n.LinkIndex), State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
	}, n.IP.AsSlice(), n.MAC)
}

// neighRequest is the RTM_NEWNEIGH (replace) or RTM_DELNEIGH message for
// neighbour and FDB entries alike.
func neighRequest(del bool, msg *netlink.Ndmsg, ip []byte, mac net.HardwareAddr) *nl.NetlinkRequest {
	var req *nl.NetlinkRequest
	if del {
		req = nl.NewNetlinkRequest(unix.RTM_DELNEIGH, unix.NLM_F_ACK)
	} else {
		req = nl.NewNetlinkRequest(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.NDA_DST, ip))
	if mac != nil {
		req.AddData(nl.NewRtAttr(unix.NDA_LLADDR, mac))
	}
	return req
}
