// Package fakekernel is an in-memory kernel.Kernel for unit tests. It holds
// state, so a test can say "after reconcile the routes are X", and counts
// calls, so a test can say how much work an event cost.
package fakekernel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/twill-net/twill/backend/kernel"
	"github.com/twill-net/twill/family"
)

// Fake implements kernel.Kernel in memory.
type Fake struct {
	mu      sync.Mutex
	next    int
	links   map[int]*kernel.Link
	addrs   map[int][]netip.Prefix
	entries map[kernel.Key]kernel.Entry
	// defaultLink is the default route's link.
	defaultLink int
	// Calls counts every method call by name; Apply counts each op as
	// "Set<kind>" or "Delete<kind>" (SetRoute, DeleteFDB, …).
	Calls map[string]int
}

var _ kernel.Kernel = (*Fake)(nil)

// New returns an empty kernel with one underlay link, eth0 (index 2, MTU
// 1500), as a node would have.
func New() *Fake {
	f := &Fake{
		next: 3, links: map[int]*kernel.Link{}, addrs: map[int][]netip.Prefix{},
		entries: map[kernel.Key]kernel.Entry{}, Calls: map[string]int{}, defaultLink: 2,
	}
	f.links[2] = &kernel.Link{Index: 2, Name: "eth0", MTU: 1500, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Up: true}
	return f
}

func (f *Fake) call(name string) { f.Calls[name]++ }

// ResetCalls zeroes the call counters.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = map[string]int{}
}

// mutators are the calls that change or could change state.
var mutators = []string{"AddVXLAN", "DeleteLink", "SetLinkMTU", "SetLinkMAC", "SetLinkUp", "AddAddr", "DeleteAddr"}

// Mutations counts calls and ops that changed or could change state.
func (f *Fake) Mutations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for name, c := range f.Calls {
		if slices.Contains(mutators, name) {
			n += c
		}
	}
	for _, k := range kernel.Kinds {
		n += f.Calls[opName(false, k)] + f.Calls[opName(true, k)]
	}
	return n
}

func opName(del bool, k kernel.Kind) string {
	names := map[kernel.Kind]string{kernel.KindRoute: "Route", kernel.KindNeigh: "Neigh", kernel.KindFDB: "FDB"}
	if del {
		return "Delete" + names[k]
	}
	return "Set" + names[k]
}

func copyLink(l *kernel.Link) *kernel.Link {
	c := *l
	if l.VXLAN != nil {
		v := *l.VXLAN
		c.VXLAN = &v
	}
	return &c
}

// LinkByName implements kernel.Kernel.
func (f *Fake) LinkByName(name string) (*kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("LinkByName")
	for _, l := range f.links {
		if l.Name == name {
			return copyLink(l), nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, kernel.ErrLinkNotFound)
}

// Links implements kernel.Kernel.
func (f *Fake) Links() ([]*kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("Links")
	out := make([]*kernel.Link, 0, len(f.links))
	for _, l := range f.links {
		out = append(out, copyLink(l))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

// AddVXLAN implements kernel.Kernel.
func (f *Fake) AddVXLAN(s kernel.VXLAN) (*kernel.Link, error) {
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
	l := &kernel.Link{Index: f.next, Name: s.Name, MTU: s.MTU, MAC: s.MAC, VXLAN: &v}
	f.links[f.next] = l
	f.next++
	return copyLink(l), nil
}

// AddLink adds a plain device (a bridge, a dummy) as a test's setup.
func (f *Fake) AddLink(name string, mtu int) *kernel.Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := &kernel.Link{Index: f.next, Name: name, MTU: mtu, MAC: net.HardwareAddr{0x0a, 0, 0, 0, 1, byte(f.next)}, Up: true}
	f.links[f.next] = l
	f.next++
	return copyLink(l)
}

// Enslave makes link port a port of bridge, as a test's setup.
func (f *Fake) Enslave(port, bridge int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[port]; ok {
		l.Master = bridge
	}
}

// SetDown sets a link down behind the daemon's back.
func (f *Fake) SetDown(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			l.Up = false
		}
	}
}

// SetDefaultLink makes index the link of the default route (eth0, 2, at
// first), which RouteTo answers for destinations no route covers.
func (f *Fake) SetDefaultLink(index int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.defaultLink = index
}

// RouteTo answers like kernel.Netlink.RouteTo: the link of the longest
// route that covers dst, else the default route's. The source address is
// the link's first address of dst's family.
func (f *Fake) RouteTo(dst netip.Addr) (int, netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RouteTo")
	link, bits := f.defaultLink, -1
	for k, e := range f.entries {
		if r, ok := e.(kernel.Route); ok && k.Dst.Contains(dst) && k.Dst.Bits() > bits {
			link, bits = r.LinkIndex, k.Dst.Bits()
		}
	}
	if _, ok := f.links[link]; !ok {
		return 0, netip.Addr{}, fmt.Errorf("no route to %s", dst)
	}
	for _, a := range f.addrs[link] {
		if family.OfPrefix(a) == family.Of(dst) {
			return link, a.Addr(), nil
		}
	}
	return link, netip.Addr{}, nil
}

// DeleteLink implements kernel.Kernel; like the kernel, it drops everything
// on it.
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
	for k := range f.entries {
		if int(k.Link) == index {
			delete(f.entries, k)
		}
	}
}

func (f *Fake) mutateLink(name string, index int, fn func(*kernel.Link)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call(name)
	l, ok := f.links[index]
	if !ok {
		return fmt.Errorf("link #%d: %w", index, kernel.ErrLinkNotFound)
	}
	fn(l)
	return nil
}

// SetLinkMTU implements kernel.Kernel.
func (f *Fake) SetLinkMTU(index, mtu int) error {
	return f.mutateLink("SetLinkMTU", index, func(l *kernel.Link) {
		l.MTU = mtu
		if l.VXLAN != nil {
			l.VXLAN.MTU = mtu
		}
	})
}

// SetLinkMAC implements kernel.Kernel.
func (f *Fake) SetLinkMAC(index int, mac net.HardwareAddr) error {
	return f.mutateLink("SetLinkMAC", index, func(l *kernel.Link) {
		l.MAC = mac
		if l.VXLAN != nil {
			l.VXLAN.MAC = mac
		}
	})
}

// SetLinkUp implements kernel.Kernel.
func (f *Fake) SetLinkUp(index int) error {
	return f.mutateLink("SetLinkUp", index, func(l *kernel.Link) { l.Up = true })
}

// Addrs implements kernel.Kernel.
func (f *Fake) Addrs(index int, fam family.Family) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("Addrs")
	var out []netip.Prefix
	for _, a := range f.addrs[index] {
		if family.OfPrefix(a) == fam {
			out = append(out, a)
		}
	}
	return out, nil
}

// AddAddr implements kernel.Kernel.
func (f *Fake) AddAddr(index int, addr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AddAddr")
	if !slices.Contains(f.addrs[index], addr) {
		f.addrs[index] = append(f.addrs[index], addr)
	}
	return nil
}

// DeleteAddr implements kernel.Kernel.
func (f *Fake) DeleteAddr(index int, addr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteAddr")
	f.addrs[index] = slices.DeleteFunc(f.addrs[index], func(a netip.Prefix) bool { return a == addr })
	return nil
}

// List implements kernel.Kernel.
func (f *Fake) List(kind kernel.Kind, fam family.Family, link int) ([]kernel.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("List" + kind.String())
	var out []kernel.Entry
	for k, e := range f.entries {
		if k.Kind == kind && int(k.Link) == link && familyOf(e) == fam {
			out = append(out, e)
		}
	}
	return out, nil
}

func familyOf(e kernel.Entry) family.Family {
	switch e := e.(type) {
	case kernel.Route:
		return family.OfPrefix(e.Dst)
	case kernel.Neigh:
		return family.Of(e.IP)
	case kernel.FDB:
		return family.Of(e.Dst)
	}
	panic(fmt.Sprintf("fakekernel: unknown entry %T", e))
}

// Apply implements kernel.Kernel.
func (f *Fake) Apply(ops []kernel.Op) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(ops))
	for i, o := range ops {
		k := o.Entry.Key()
		f.call(opName(o.Delete, k.Kind))
		if o.Delete {
			delete(f.entries, k)
			continue
		}
		if _, ok := f.links[int(k.Link)]; !ok {
			errs[i] = fmt.Errorf("%s: %w", o, kernel.ErrLinkNotFound)
			continue
		}
		if k.Kind == kernel.KindRoute {
			// The kernel's main table holds one route per destination
			// (and metric), whatever its device.
			for old := range f.entries {
				if old.Kind == kernel.KindRoute && old.Dst == k.Dst {
					delete(f.entries, old)
				}
			}
		}
		f.entries[k] = o.Entry
	}
	return errs
}

// Put sets entries as a test's setup (state left by someone else).
func (f *Fake) Put(es ...kernel.Entry) {
	ops := make([]kernel.Op, len(es))
	for i, e := range es {
		ops[i] = kernel.Op{Entry: e}
	}
	for _, err := range f.Apply(ops) {
		if err != nil {
			panic(err)
		}
	}
}

// Remove deletes entries behind the daemon's back.
func (f *Fake) Remove(es ...kernel.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range es {
		delete(f.entries, e.Key())
	}
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
	for _, e := range f.entries {
		switch e := e.(type) {
		case kernel.Route:
			gw := "<nil>"
			if e.Gw.IsValid() {
				gw = e.Gw.String()
			}
			s := fmt.Sprintf("route %s via %s dev %s", e.Dst, gw, name(e.LinkIndex))
			if e.Onlink {
				s += " onlink"
			}
			out = append(out, s)
		case kernel.Neigh:
			out = append(out, fmt.Sprintf("neigh %s lladdr %s dev %s", e.IP, e.MAC, name(e.LinkIndex)))
		case kernel.FDB:
			out = append(out, fmt.Sprintf("fdb %s dst %s dev %s", e.MAC, e.Dst, name(e.LinkIndex)))
		}
	}
	sort.Strings(out)
	return out
}
