// Package backend defines what a backend (vxlan, host-gw) is to the daemon,
// and the Table that keeps the kernel's per-peer entries equal to what the
// backend wants, both for one peer at a time (on a Node event) and for all
// peers at once (at start and on resync).
package backend

import (
	"net"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/lease"
)

// Backend computes, for its way of reaching peers, the node-local devices and
// the kernel entries for each peer. It never talks to Kubernetes.
type Backend interface {
	// Type is the value of the backend-type annotation: "vxlan" or "host-gw".
	Type() string
	// Setup makes the node-local devices exist with the right attributes and
	// removes what other backends left behind. recreated is true when a
	// device was created or recreated, so every peer entry is gone and must
	// be programmed again.
	Setup() (recreated bool, err error)
	// Publish fills the backend fields of the node's own lease.
	Publish(own *lease.Lease)
	// MTU is the MTU pods get.
	MTU() int
	// Entries computes what the kernel must hold to reach peer p. An error
	// means the peer cannot be reached by this backend and gets no entries.
	Entries(p *lease.Lease) (Entries, error)
	// Scope says which links' entries Twill owns, for full resyncs.
	Scope() Scope
}

// Scope lists the links whose entries the table may add and remove. Routes
// are only ever touched when their destination lies in the cluster network.
type Scope struct {
	RouteLinks []int
	// NeighLinks carry Twill's permanent neighbour and FDB entries (the
	// VXLAN device); none for host-gw.
	NeighLinks []int
}

// Entries is what the kernel holds for one peer.
type Entries struct {
	Routes []kernel.Route
	Neighs []kernel.Neigh
	FDBs   []kernel.FDB
}

// Len is the number of kernel entries.
func (e Entries) Len() int { return len(e.Routes) + len(e.Neighs) + len(e.FDBs) }

// InSubnetOf reports whether ip is on the same L2 subnet as one of addrs,
// that is, reachable without a router.
func InSubnetOf(ip net.IP, addrs []*net.IPNet) bool {
	for _, a := range addrs {
		n := &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
