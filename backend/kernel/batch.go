package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// batchSize is how many messages go into one sendmsg: their
// acknowledgements (36 bytes each with NETLINK_CAP_ACK) fit easily in the
// socket's receive buffer.
const batchSize = 256

// newBatchSocket opens a netlink socket for batched writes in the namespace
// of the Netlink handle. In the caller's own namespace it does not switch
// namespaces at all: that needs CAP_SYS_ADMIN, which flanneld does not have.
func newBatchSocket(ns netns.NsHandle) (*nl.NetlinkSocket, error) {
	var (
		s   *nl.NetlinkSocket
		err error
	)
	if ns.IsOpen() {
		var cur netns.NsHandle
		if cur, err = netns.Get(); err != nil {
			return nil, err
		}
		defer cur.Close()
		s, err = nl.GetNetlinkSocketAt(ns, cur, unix.NETLINK_ROUTE)
	} else {
		s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket for batches: %w", err)
	}
	// Acknowledgements without the echoed request keep replies small.
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return s, nil
}

// Apply implements Kernel: it sends up to batchSize messages per system
// call and reads their acknowledgements, instead of one round trip each.
func (k *Netlink) Apply(ops []Op) []error {
	errs := make([]error, len(ops))
	k.batchMu.Lock()
	defer k.batchMu.Unlock()
	if k.batch == nil {
		s, err := newBatchSocket(k.ns)
		if err != nil {
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
		k.batch = s
	}
	for start := 0; start < len(ops); start += batchSize {
		end := min(start+batchSize, len(ops))
		k.applyChunk(ops[start:end], errs[start:end])
	}
	return errs
}

// applyChunk sends ops in one batch, then replaces in two steps the routes
// the kernel would not replace in one.
func (k *Netlink) applyChunk(ops []Op, errs []error) {
	k.send(ops, errs)
	k.replaceRoutes(ops, errs)
}

// replaceRoutes retries the route replacements the kernel refused with
// EINVAL. IPv6 refuses an onlink gateway that the destination's current
// route, through another device, covers ("Nexthop has invalid gateway or
// device mismatch": a peer moving from host-gw or DirectRouting to the
// VXLAN device), where IPv4 replaces that route in place. The retry
// removes the destination's current route and adds the new one, back to
// back in one batch.
func (k *Netlink) replaceRoutes(ops []Op, errs []error) {
	var retry []Op
	var at []int
	for i, o := range ops {
		r, ok := o.Entry.(Route)
		if !ok || o.Delete || !errors.Is(errs[i], unix.EINVAL) {
			continue
		}
		// No device and no gateway: the kernel deletes the
		// destination's route whatever its next hop.
		retry = append(retry, Op{Delete: true, Entry: Route{Dst: r.Dst}}, o)
		at = append(at, i)
	}
	if len(retry) == 0 {
		return
	}
	rerrs := make([]error, len(retry))
	k.send(retry, rerrs)
	for j, i := range at {
		errs[i] = errors.Join(rerrs[2*j], rerrs[2*j+1])
	}
}

// send sends ops in one system call and reads their acknowledgements into
// errs.
func (k *Netlink) send(ops []Op, errs []error) {
	e := encoder{b: k.reqs[:0]}
	seqs := make(map[uint32]int, len(ops))
	for i, o := range ops {
		k.seq++
		o.Entry.encode(&e, k.seq, o.Delete)
		seqs[k.seq] = i
	}
	k.reqs = e.b
	buf := e.b
	fail := func(err error) {
		for _, i := range seqs {
			errs[i] = fmt.Errorf("%s: %w", ops[i], err)
		}
	}
	if err := unix.Sendto(k.batch.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(err)
		return
	}
	for len(seqs) > 0 {
		n, from, err := unix.Recvfrom(k.batch.GetFd(), k.acks[:], 0)
		if err != nil {
			fail(err)
			return
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // not from the kernel
		}
		// The acknowledgements are parsed in place: a batch of thousands
		// of entries would otherwise allocate a message for each.
		for b := k.acks[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			typ, seq, data := binary.NativeEndian.Uint16(b[4:6]), binary.NativeEndian.Uint32(b[8:12]), b[unix.NLMSG_HDRLEN:l]
			b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
			i, ok := seqs[seq]
			if !ok || typ != unix.NLMSG_ERROR || len(data) < 4 {
				continue
			}
			delete(seqs, seq)
			if code := int32(binary.NativeEndian.Uint32(data[:4])); code != 0 {
				errno := syscall.Errno(-code)
				if ops[i].Delete && (errno == unix.ENOENT || errno == unix.ESRCH) {
					continue
				}
				errs[i] = fmt.Errorf("%s: %w", ops[i], errno)
			}
		}
	}
}
