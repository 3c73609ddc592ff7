package kernel

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// encoder appends netlink messages to one buffer, the way a batch is sent:
// no message, attribute or header is allocated on its own, which at
// thousands of entries a sync is most of the garbage a batch made.
type encoder struct{ b []byte }

// begin starts a request message of type typ (NLM_F_REQUEST is added to
// flags) and returns where it starts, for end.
func (e *encoder) begin(typ, flags uint16, seq uint32) int {
	start := len(e.b)
	e.b = binary.NativeEndian.AppendUint32(e.b, 0) // length, set by end
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
	e.b = binary.NativeEndian.AppendUint16(e.b, unix.NLM_F_REQUEST|flags)
	e.b = binary.NativeEndian.AppendUint32(e.b, seq)
	e.b = binary.NativeEndian.AppendUint32(e.b, 0) // port: the kernel's
	return start
}

// end sets the length of the message that began at start.
func (e *encoder) end(start int) {
	binary.NativeEndian.PutUint32(e.b[start:], uint32(len(e.b)-start))
}

// attr appends a route attribute, padded to 4 bytes.
func (e *encoder) attr(typ uint16, data ...byte) {
	e.b = binary.NativeEndian.AppendUint16(e.b, uint16(unix.SizeofRtAttr+len(data)))
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
	e.b = append(e.b, data...)
	e.pad()
}

// addr appends an address attribute: 4 or 16 bytes.
func (e *encoder) addr(typ uint16, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		e.attr(typ, b[:]...)
		return
	}
	b := a.As16()
	e.attr(typ, b[:]...)
}

// u32 appends a 32-bit attribute.
func (e *encoder) u32(typ uint16, v uint32) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	e.attr(typ, b[:]...)
}

func (e *encoder) pad() {
	for len(e.b)%unix.NLMSG_ALIGNTO != 0 {
		e.b = append(e.b, 0)
	}
}
