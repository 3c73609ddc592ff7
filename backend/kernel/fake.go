package kernel

import (
	"fmt"
	"net"
	"sort"
	"sync"
)

// Fake is an in-memory Kernel for unit tests. It holds state, so a test can
// say "after reconcile the routes are X", and counts calls, so a test can say
// how much work an event cost.
type Fake struct {
	mu     sync.Mutex
	next   int
	links  map[int]*Link
	addrs  map[int][]*net.IPNet
	routes map[RouteKey]Route
	neighs map[NeighKey]Neigh
	fdbs   map[FDBKey]FDB
	// Calls counts every method call by name.
	Calls map[string]int
}

var _ Kernel = (*Fake)(nil)

// NewFake returns an empty kernel with one underlay link, eth0 (index 2,
// MTU 1500), as a node would have.
func NewFake() *Fake {
	f := &Fake{
		next: 3, links: map[int]*Link{}, addrs: map[int][]*net.IPNet{},
		routes: map[RouteKey]Route{}, neighs: map[NeighKey]Neigh{}, fdbs: map[FDBKey]FDB{},
		Calls: map[string]int{},
	}
	f.links[2] = &Link{Index: 2, Name: "eth0", MTU: 1500, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Up: true}
	return f
}

func (f *Fake) call(name string) { f.Calls[name]++ }

// ResetCalls zeroes the call counters.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = map[string]int{}
}

// Mutations counts calls that changed or could change state.
func (f *Fake) Mutations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for name, c := range f.Calls {
		switch name {
		case "AddVXLAN", "DeleteLink", "SetLinkMTU", "SetLinkMAC", "SetLinkUp", "AddAddr", "DeleteAddr",
			"ReplaceRoute", "DeleteRoute", "SetNeigh", "DeleteNeigh", "SetFDB", "DeleteFDB":
			n += c
		}
	}
	return n
}

func copyLink(l *Link) *Link {
	c := *l
	if l.VXLAN != nil {
		v := *l.VXLAN
		c.VXLAN = &v
	}
	return &c
}

// LinkByName implements Kernel.
func (f *Fake) LinkByName(name string) (*Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("LinkByName")
	for _, l := range f.links {
		if l.Name == name {
			return copyLink(l), nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, ErrLinkNotFound)
}

// LinkByIndex implements Kernel.
func (f *Fake) LinkByIndex(index int) (*Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("LinkByIndex")
	l, ok := f.links[index]
	if !ok {
		return nil, fmt.Errorf("link #%d: %w", index, ErrLinkNotFound)
	}
	return copyLink(l), nil
}

// AddVXLAN implements Kernel.
func (f *Fake) AddVXLAN(s VXLAN) (*Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AddVXLAN")
	for _, l := range f.links {
		if l.Name == s.Name {
			return nil, fmt.Errorf("creating %s: file exists", s.Name)
		}
	}
	if s.MAC == nil {
		s.MAC = net.HardwareAddr{0x0a, 0, 0, 0, 0, byte(f.next)}
	}
	v := s
	l := &Link{Index: f.next, Name: s.Name, MTU: s.MTU, MAC: s.MAC, VXLAN: &v}
	f.links[f.next] = l
	f.next++
	return copyLink(l), nil
}

// DeleteLink implements Kernel; like the kernel, it drops everything on it.
func (f *Fake) DeleteLink(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteLink")
	f.deleteLinkLocked(index)
	return nil
}

// RemoveLink deletes a link behind the daemon's back, as a person with `ip
// link del` would.
func (f *Fake) RemoveLink(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range f.links {
		if l.Name == name {
			f.deleteLinkLocked(i)
		}
	}
}

func (f *Fake) deleteLinkLocked(index int) {
	delete(f.links, index)
	delete(f.addrs, index)
	for k, r := range f.routes {
		if r.LinkIndex == index {
			delete(f.routes, k)
		}
	}
	for k, n := range f.neighs {
		if n.LinkIndex == index {
			delete(f.neighs, k)
		}
	}
	for k, e := range f.fdbs {
		if e.LinkIndex == index {
			delete(f.fdbs, k)
		}
	}
}

func (f *Fake) mutateLink(name string, index int, fn func(*Link)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call(name)
	l, ok := f.links[index]
	if !ok {
		return fmt.Errorf("link #%d: %w", index, ErrLinkNotFound)
	}
	fn(l)
	return nil
}

// SetLinkMTU implements Kernel.
func (f *Fake) SetLinkMTU(index, mtu int) error {
	return f.mutateLink("SetLinkMTU", index, func(l *Link) {
		l.MTU = mtu
		if l.VXLAN != nil {
			l.VXLAN.MTU = mtu
		}
	})
}

// SetLinkMAC implements Kernel.
func (f *Fake) SetLinkMAC(index int, mac net.HardwareAddr) error {
	return f.mutateLink("SetLinkMAC", index, func(l *Link) {
		l.MAC = mac
		if l.VXLAN != nil {
			l.VXLAN.MAC = mac
		}
	})
}

// SetLinkUp implements Kernel.
func (f *Fake) SetLinkUp(index int) error {
	return f.mutateLink("SetLinkUp", index, func(l *Link) { l.Up = true })
}

// Addrs implements Kernel.
func (f *Fake) Addrs(index int) ([]*net.IPNet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("Addrs")
	return append([]*net.IPNet(nil), f.addrs[index]...), nil
}

// AddAddr implements Kernel.
func (f *Fake) AddAddr(index int, addr *net.IPNet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AddAddr")
	for _, a := range f.addrs[index] {
		if a.String() == addr.String() {
			return nil
		}
	}
	f.addrs[index] = append(f.addrs[index], addr)
	return nil
}

// DeleteAddr implements Kernel.
func (f *Fake) DeleteAddr(index int, addr *net.IPNet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteAddr")
	kept := f.addrs[index][:0]
	for _, a := range f.addrs[index] {
		if a.String() != addr.String() {
			kept = append(kept, a)
		}
	}
	f.addrs[index] = kept
	return nil
}

// Routes implements Kernel.
func (f *Fake) Routes(linkIndex int) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("Routes")
	var out []Route
	for _, r := range f.routes {
		if r.LinkIndex == linkIndex {
			out = append(out, r)
		}
	}
	return out, nil
}

// ReplaceRoute implements Kernel.
func (f *Fake) ReplaceRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ReplaceRoute")
	if _, ok := f.links[r.LinkIndex]; !ok {
		return fmt.Errorf("route %s: %w", r, ErrLinkNotFound)
	}
	// The kernel's main table holds one route per destination (and metric).
	for k, old := range f.routes {
		if old.Dst.String() == r.Dst.String() {
			delete(f.routes, k)
		}
	}
	f.routes[r.Key()] = r
	return nil
}

// DeleteRoute implements Kernel.
func (f *Fake) DeleteRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteRoute")
	delete(f.routes, r.Key())
	return nil
}

// Neighs implements Kernel.
func (f *Fake) Neighs(linkIndex int) ([]Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("Neighs")
	var out []Neigh
	for _, n := range f.neighs {
		if n.LinkIndex == linkIndex {
			out = append(out, n)
		}
	}
	return out, nil
}

// SetNeigh implements Kernel.
func (f *Fake) SetNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("SetNeigh")
	if _, ok := f.links[n.LinkIndex]; !ok {
		return fmt.Errorf("neighbour %s: %w", n.IP, ErrLinkNotFound)
	}
	f.neighs[n.Key()] = n
	return nil
}

// DeleteNeigh implements Kernel.
func (f *Fake) DeleteNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteNeigh")
	delete(f.neighs, n.Key())
	return nil
}

// FDBs implements Kernel.
func (f *Fake) FDBs(linkIndex int) ([]FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("FDBs")
	var out []FDB
	for _, e := range f.fdbs {
		if e.LinkIndex == linkIndex {
			out = append(out, e)
		}
	}
	return out, nil
}

// SetFDB implements Kernel.
func (f *Fake) SetFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("SetFDB")
	if _, ok := f.links[e.LinkIndex]; !ok {
		return fmt.Errorf("fdb %s: %w", e.MAC, ErrLinkNotFound)
	}
	f.fdbs[e.Key()] = e
	return nil
}

// DeleteFDB implements Kernel.
func (f *Fake) DeleteFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteFDB")
	delete(f.fdbs, e.Key())
	return nil
}

// Dump renders the state as sorted lines ("route …", "neigh …", "fdb …"),
// for assertions.
func (f *Fake) Dump() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	name := func(i int) string {
		if l, ok := f.links[i]; ok {
			return l.Name
		}
		return fmt.Sprintf("#%d", i)
	}
	for _, r := range f.routes {
		s := fmt.Sprintf("route %s via %s dev %s", r.Dst, r.Gw, name(r.LinkIndex))
		if r.Onlink {
			s += " onlink"
		}
		out = append(out, s)
	}
	for _, n := range f.neighs {
		out = append(out, fmt.Sprintf("neigh %s lladdr %s dev %s", n.IP, n.MAC, name(n.LinkIndex)))
	}
	for _, e := range f.fdbs {
		out = append(out, fmt.Sprintf("fdb %s dst %s dev %s", e.MAC, e.Dst, name(e.LinkIndex)))
	}
	sort.Strings(out)
	return out
}
