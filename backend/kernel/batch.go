package kernel

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// OpKind says what an Op does.
type OpKind int

// Kinds of Op.
const (
	OpSetNeigh OpKind = iota
	OpDeleteNeigh
	OpSetFDB
	OpDeleteFDB
	OpReplaceRoute
	OpDeleteRoute
)

// Op is one change for Apply; exactly the field matching Kind is used.
type Op struct {
	Kind  OpKind
	Route Route
	Neigh Neigh
	FDB   FDB
}

func (o Op) String() string {
	switch o.Kind {
	case OpSetNeigh:
		return fmt.Sprintf("setting neighbour %s → %s", o.Neigh.IP, o.Neigh.MAC)
	case OpDeleteNeigh:
		return fmt.Sprintf("deleting neighbour %s", o.Neigh.IP)
	case OpSetFDB:
		return fmt.Sprintf("setting FDB entry %s → %s", o.FDB.MAC, o.FDB.Dst)
	case OpDeleteFDB:
		return fmt.Sprintf("deleting FDB entry %s → %s", o.FDB.MAC, o.FDB.Dst)
	case OpReplaceRoute:
		return "replacing route " + o.Route.String()
	default:
		return "deleting route " + o.Route.String()
	}
}

// Applier is implemented by kernels that can make many changes at once.
type Applier interface {
	// Apply performs ops in order and returns one result per op. Deleting
	// what does not exist succeeds.
	Apply(ops []Op) []error
}

// ApplyEach performs ops one call at a time, for kernels without Applier.
func ApplyEach(k Kernel, ops []Op) []error {
	errs := make([]error, len(ops))
	for i, o := range ops {
		switch o.Kind {
		case OpSetNeigh:
			errs[i] = k.SetNeigh(o.Neigh)
		case OpDeleteNeigh:
			errs[i] = k.DeleteNeigh(o.Neigh)
		case OpSetFDB:
			errs[i] = k.SetFDB(o.FDB)
		case OpDeleteFDB:
			errs[i] = k.DeleteFDB(o.FDB)
		case OpReplaceRoute:
			errs[i] = k.ReplaceRoute(o.Route)
		case OpDeleteRoute:
			errs[i] = k.DeleteRoute(o.Route)
		}
	}
	return errs
}

// Apply applies ops through k, batched when k supports it.
func Apply(k Kernel, ops []Op) []error {
	if a, ok := k.(Applier); ok {
		return a.Apply(ops)
	}
	return ApplyEach(k, ops)
}

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

// Apply implements Applier: it sends up to batchSize messages per system
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

func (k *Netlink) applyChunk(ops []Op, errs []error) {
	var buf []byte
	seqs := make(map[uint32]int, len(ops))
	for i, o := range ops {
		req := buildRequest(o)
		buf = append(buf, req.Serialize()...)
		seqs[req.Seq] = i
	}
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
		msgs, _, err := k.batch.Receive()
		if err != nil {
			fail(err)
			return
		}
		for _, m := range msgs {
			i, ok := seqs[m.Header.Seq]
			if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			delete(seqs, m.Header.Seq)
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errno := syscall.Errno(-code)
				if isDelete(ops[i].Kind) && (errno == unix.ENOENT || errno == unix.ESRCH) {
					continue
				}
				errs[i] = fmt.Errorf("%s: %w", ops[i], errno)
			}
		}
	}
}

func isDelete(k OpKind) bool {
	return k == OpDeleteNeigh || k == OpDeleteFDB || k == OpDeleteRoute
}

func u32(v int) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(v))
	return b
}

// buildRequest makes the same message netlink.Handle would send for the op.
func buildRequest(o Op) *nl.NetlinkRequest {
	const ack = unix.NLM_F_ACK
	switch o.Kind {
	case OpReplaceRoute, OpDeleteRoute:
		var req *nl.NetlinkRequest
		msg := nl.NewRtMsg()
		if o.Kind == OpReplaceRoute {
			req = nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|ack)
		} else {
			req = nl.NewNetlinkRequest(unix.RTM_DELROUTE, ack)
			msg = nl.NewRtDelMsg()
		}
		r := o.Route
		ones, _ := r.Dst.Mask.Size()
		msg.Family = unix.AF_INET
		msg.Dst_len = uint8(ones)
		if r.Onlink {
			msg.Flags |= unix.RTNH_F_ONLINK
		}
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Dst.IP.To4()))
		if r.Gw != nil {
			req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.Gw.To4()))
		}
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, u32(r.LinkIndex)))
		return req
	case OpSetNeigh, OpDeleteNeigh:
		return neighRequest(o.Kind == OpSetNeigh, &netlink.Ndmsg{
			Family: unix.AF_INET, Index: uint32(o.Neigh.LinkIndex), State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		}, o.Neigh.IP.To4(), o.Neigh.MAC)
	default:
		return neighRequest(o.Kind == OpSetFDB, &netlink.Ndmsg{
			Family: unix.AF_BRIDGE, Index: uint32(o.FDB.LinkIndex), State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		}, o.FDB.Dst.To4(), o.FDB.MAC)
	}
}

func neighRequest(set bool, msg *netlink.Ndmsg, ip net.IP, mac net.HardwareAddr) *nl.NetlinkRequest {
	var req *nl.NetlinkRequest
	if set {
		req = nl.NewNetlinkRequest(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	} else {
		req = nl.NewNetlinkRequest(unix.RTM_DELNEIGH, unix.NLM_F_ACK)
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.NDA_DST, ip))
	if mac != nil {
		req.AddData(nl.NewRtAttr(unix.NDA_LLADDR, mac))
	}
	return req
}
