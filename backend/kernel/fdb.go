package kernel

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// FDB is a forwarding-database entry of a VXLAN device: frames for MAC are
// sent to the tunnel endpoint Dst. Its family is Dst's (the underlay's).
type FDB struct {
	LinkIndex int
	MAC       net.HardwareAddr
	Dst       netip.Addr
}

var _ Entry = FDB{}

// Key implements Entry: MAC address and device.
func (f FDB) Key() Key {
	k := Key{Kind: KindFDB, Link: int32(f.LinkIndex)}
	k.MAC, k.MACLen = macKey(f.MAC)
	return k
}

// Equal implements Entry.
func (f FDB) Equal(o Entry) bool {
	of, ok := o.(FDB)
	return ok && f.LinkIndex == of.LinkIndex && f.Dst == of.Dst && bytes.Equal(f.MAC, of.MAC)
}

func (f FDB) String() string {
	return fmt.Sprintf("FDB entry %s → %s dev#%d", f.MAC, f.Dst, f.LinkIndex)
}

// request: replace semantics, so an entry for the same MAC pointing
// elsewhere is changed in place, as `bridge fdb replace` does.
func (f FDB) encode(e *encoder, seq uint32, del bool) {
	encodeNeigh(e, seq, del, unix.AF_BRIDGE, f.LinkIndex, unix.NTF_SELF, 0, f.Dst, f.MAC)
}
