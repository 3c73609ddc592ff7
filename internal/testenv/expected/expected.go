// Package expected says what a vxlan node's kernel must hold, computed from
// the Node objects alone (never from flanneld, whose output it judges), and
// compares it with what the node's kernel does hold: routes, neighbours and
// FDB entries on flannel.1, and the iptables rules and the tunnel guard's
// set. The chaos suite runs it after every fault.
package expected

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/twill-net/twill/internal/testenv"
)

// Device is the VXLAN device whose entries are checked.
const Device = "flannel.1"

// Rules is what the firewall must hold on every node.
type Rules struct {
	// Network is the cluster's pod network (net-conf.json's Network).
	Network string
	// IPMasq says whether flanneld runs with --ip-masq.
	IPMasq bool
	// Refused are Nodes that conflict with others (a podCIDR or VTEP MAC
	// another Node has): flanneld gives them no entries, and no place in
	// the tunnel guard's set.
	Refused []string
}

// Diff is what a node's kernel holds that it should not (Stale) and lacks
// (Missing), each entry in words.
type Diff struct {
	Node           string
	Missing, Stale []string
}

// Empty reports whether the kernel matched.
func (d Diff) Empty() bool { return len(d.Missing) == 0 && len(d.Stale) == 0 }

func (d Diff) String() string {
	if d.Empty() {
		return d.Node + ": as expected"
	}
	return fmt.Sprintf("%s: missing %q, stale %q", d.Node, d.Missing, d.Stale)
}

// peer is what one other Node asks of this node's kernel.
type peer struct {
	cidr     *net.IPNet
	publicIP net.IP
	mac      net.HardwareAddr
}

// peers returns the Nodes of list, other than self, that are vxlan peers
// (a podCIDR, a public IP, and backend data with a VTEP MAC), and self's.
// Nodes named in refused are left out.
func peers(list []v1.Node, self string, refused []string) ([]peer, *peer) {
	var res []peer
	var me *peer
	for i := range list {
		p, ok := parse(&list[i])
		if !ok || slices.Contains(refused, list[i].Name) {
			continue
		}
		if list[i].Name == self {
			me = &p
			continue
		}
		res = append(res, p)
	}
	return res, me
}

func parse(n *v1.Node) (peer, bool) {
	a := n.Annotations
	if a["flannel.alpha.coreos.com/backend-type"] != "vxlan" {
		return peer{}, false
	}
	var data struct{ VtepMAC string }
	if err := json.Unmarshal([]byte(a["flannel.alpha.coreos.com/backend-data"]), &data); err != nil {
		return peer{}, false
	}
	mac, err := net.ParseMAC(data.VtepMAC)
	if err != nil {
		return peer{}, false
	}
	ip := net.ParseIP(a["flannel.alpha.coreos.com/public-ip"])
	_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
	if ip == nil || err != nil {
		return peer{}, false
	}
	return peer{cidr: cidr, publicIP: ip, mac: mac}, true
}

// Check compares node's kernel with what the Nodes ask of it.
func Check(ctx context.Context, c kubernetes.Interface, node *testenv.Node, rules Rules) (Diff, error) {
	ds, err := CheckAll(ctx, c, []*testenv.Node{node}, rules)
	if len(ds) == 0 {
		return Diff{Node: node.Name}, err
	}
	return ds[0], err
}

// CheckAll compares each node's kernel with what the Nodes ask of it,
// reading the Nodes once for all of them.
func CheckAll(ctx context.Context, c kubernetes.Interface, nodes []*testenv.Node, rules Rules) ([]Diff, error) {
	list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Nodes: %w", err)
	}
	var ds []Diff
	for _, n := range nodes {
		d, err := check(list.Items, n, rules)
		ds = append(ds, d)
		if err != nil {
			return ds, err
		}
	}
	return ds, nil
}

// Watcher keeps the Nodes in a cache that a watch keeps current, so that a
// check polled every 100 ms against thousands of Nodes does not list them
// every time (a list of 5,000 Nodes with kubelet-like status takes the API
// server and the client 0.6 s on two cores; Check re-lists every time).
type Watcher struct {
	lister listersv1.NodeLister
	synced cache.InformerSynced
}

// Watch starts a Watcher, which runs until ctx is done, and waits until it
// holds every Node.
func Watch(ctx context.Context, c kubernetes.Interface) (*Watcher, error) {
	f := informers.NewSharedInformerFactory(c, 0)
	inf := f.Core().V1().Nodes()
	// Only what a peer asks for is kept: not the status.
	if err := inf.Informer().SetTransform(func(o any) (any, error) {
		if n, ok := o.(*v1.Node); ok {
			n = n.DeepCopy()
			n.Status, n.ManagedFields = v1.NodeStatus{}, nil
			return n, nil
		}
		return o, nil
	}); err != nil {
		return nil, fmt.Errorf("watching Nodes: %w", err)
	}
	w := &Watcher{lister: inf.Lister(), synced: inf.Informer().HasSynced}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.synced) {
		return nil, fmt.Errorf("watching Nodes: %w", ctx.Err())
	}
	return w, nil
}

// CheckAll compares each node's kernel with what the Nodes in w's cache
// ask of it.
func (w *Watcher) CheckAll(nodes []*testenv.Node, rules Rules) ([]Diff, error) {
	ptrs, err := w.lister.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing cached Nodes: %w", err)
	}
	list := make([]v1.Node, len(ptrs))
	for i, n := range ptrs {
		list[i] = *n
	}
	var ds []Diff
	for _, n := range nodes {
		d, err := check(list, n, rules)
		ds = append(ds, d)
		if err != nil {
			return ds, err
		}
	}
	return ds, nil
}

// check compares node's kernel with what the Nodes of list ask of it.
func check(list []v1.Node, node *testenv.Node, rules Rules) (Diff, error) {
	d := Diff{Node: node.Name}
	ps, me := peers(list, node.Name, rules.Refused)
	// A peer whose podCIDR is outside the network gets nothing (flanneld
	// skips it with a Warning Event).
	if _, nw, err := net.ParseCIDR(rules.Network); err == nil {
		ps = slices.DeleteFunc(ps, func(p peer) bool {
			ones, _ := p.cidr.Mask.Size()
			nwOnes, _ := nw.Mask.Size()
			return !nw.Contains(p.cidr.IP) || ones < nwOnes
		})
	}
	var wantRoutes, wantNeigh, wantFDB []string
	for _, p := range ps {
		gw := p.cidr.IP.String()
		wantRoutes = append(wantRoutes, fmt.Sprintf("%s via %s onlink", p.cidr, gw))
		wantNeigh = append(wantNeigh, fmt.Sprintf("neigh %s lladdr %s permanent", gw, p.mac))
		wantFDB = append(wantFDB, fmt.Sprintf("fdb %s dst %s", p.mac, p.publicIP))
	}
	h := node.Net().Netlink
	link, err := h.LinkByName(Device)
	if err != nil {
		d.Missing = append(d.Missing, "device "+Device)
	} else {
		if link.Attrs().OperState != netlink.OperUp && link.Attrs().Flags&net.FlagUp == 0 {
			d.Missing = append(d.Missing, "device "+Device+" up")
		}
		if me != nil {
			addrs, err := h.AddrList(link, netlink.FAMILY_V4)
			if err != nil {
				return d, fmt.Errorf("listing addresses of %s on %s: %w", Device, node.Name, err)
			}
			want := me.cidr.IP.String() + "/32"
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want }) {
				d.Missing = append(d.Missing, "address "+want)
			}
			if !strings.EqualFold(link.Attrs().HardwareAddr.String(), me.mac.String()) {
				d.Missing = append(d.Missing, "device MAC "+me.mac.String()+" (has "+link.Attrs().HardwareAddr.String()+")")
			}
		}
		got, err := kernelEntries(h, link)
		if err != nil {
			return d, fmt.Errorf("reading %s on %s: %w", Device, node.Name, err)
		}
		compare(&d, append(append(wantRoutes, wantNeigh...), wantFDB...), got)
	}
	if err := checkRules(&d, node, rules, ps, me); err != nil {
		return d, err
	}
	sort.Strings(d.Missing)
	sort.Strings(d.Stale)
	return d, nil
}

// kernelEntries lists flannel.1's routes, permanent neighbours and FDB
// entries in the words Check uses.
func kernelEntries(h *netlink.Handle, link netlink.Link) ([]string, error) {
	var got []string
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Scope == netlink.SCOPE_LINK && r.Gw == nil {
			continue // a connected route of the device's own address
		}
		s := fmt.Sprintf("%s via %s", r.Dst, r.Gw)
		if r.Flags&unix.RTNH_F_ONLINK != 0 {
			s += " onlink"
		}
		got = append(got, s)
	}
	neigh, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, n := range neigh {
		state := "dynamic"
		if n.State&netlink.NUD_PERMANENT != 0 {
			state = "permanent"
		}
		got = append(got, fmt.Sprintf("neigh %s lladdr %s %s", n.IP, n.HardwareAddr, state))
	}
	fdb, err := h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	for _, n := range fdb {
		if n.IP == nil {
			continue // the device's own address, no remote
		}
		got = append(got, fmt.Sprintf("fdb %s dst %s", n.HardwareAddr, n.IP))
	}
	return got, nil
}

// compare files what is in want and not got as missing, the reverse as
// stale.
func compare(d *Diff, want, got []string) {
	in := func(xs []string) map[string]bool {
		m := make(map[string]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	wantSet, gotSet := in(want), in(got)
	for _, w := range want {
		if !gotSet[w] {
			d.Missing = append(d.Missing, w)
		}
	}
	for _, g := range got {
		if !wantSet[g] {
			d.Stale = append(d.Stale, g)
		}
	}
}

// checkRules compares the node's iptables rules and guard set with what
// the network and the peers ask for.
func checkRules(d *Diff, node *testenv.Node, r Rules, ps []peer, me *peer) error {
	save, err := node.Exec("iptables-save")
	if err != nil {
		return fmt.Errorf("iptables-save on %s: %w\n%s", node.Name, err, save)
	}
	var own *net.IPNet
	if me != nil {
		own = me.cidr
	}
	d.Missing = append(d.Missing, RulesMissing(save, r, own)...)
	// The guard's set holds exactly the peers' public IPs.
	out, err := node.Exec("ipset", "list", "FLANNEL-VXLAN-PEERS")
	if err != nil {
		d.Missing = append(d.Missing, "ipset FLANNEL-VXLAN-PEERS")
		return nil
	}
	var members []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		if in && strings.TrimSpace(l) != "" {
			members = append(members, "guard "+strings.TrimSpace(l))
		}
		in = in || strings.HasPrefix(l, "Members:")
	}
	var want []string
	seen := map[string]bool{}
	for _, p := range ps {
		if w := "guard " + p.publicIP.String(); !seen[w] {
			seen[w] = true
			want = append(want, w)
		}
	}
	compare(d, want, members)
	return nil
}

// RulesMissing says, in words, which of the iptables rules that r asks for
// are missing from save, the output of iptables-save (all tables, or the
// filter and nat tables) on a node whose own podCIDR is own (nil while the
// node has none: its masquerade rules are then not asked for). Rules of
// other owners (kube-proxy's KUBE-* chains, jumps inserted before ours) do
// not matter. The guard's set of peers is not in save and not checked.
func RulesMissing(save string, r Rules, own *net.IPNet) []string {
	var lines, missing []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A ") {
			lines = append(lines, l)
		}
	}
	has := func(what string, ok func(string) bool, n int) {
		count := 0
		for _, l := range lines {
			if ok(l) {
				count++
			}
		}
		if count < n {
			missing = append(missing, fmt.Sprintf("%s (%d of %d)", what, count, n))
		}
	}
	chain := func(name string) func(string) bool {
		return func(l string) bool { return strings.HasPrefix(l, "-A "+name+" ") }
	}
	jump := func(from, to string) func(string) bool {
		return func(l string) bool { return strings.HasPrefix(l, "-A "+from+" ") && strings.HasSuffix(l, "-j "+to) }
	}
	nw := r.Network
	has("FORWARD → FLANNEL-FWD", jump("FORWARD", "FLANNEL-FWD"), 1)
	has("FLANNEL-FWD accepts "+nw+" both ways", func(l string) bool {
		return chain("FLANNEL-FWD")(l) && (strings.Contains(l, "-s "+nw+" ") || strings.Contains(l, "-d "+nw+" ")) && strings.HasSuffix(l, "-j ACCEPT")
	}, 2)
	if r.IPMasq && own != nil {
		has("POSTROUTING → FLANNEL-POSTRTG", jump("POSTROUTING", "FLANNEL-POSTRTG"), 1)
		has("FLANNEL-POSTRTG keeps "+own.String()+"'s addresses", func(l string) bool {
			return chain("FLANNEL-POSTRTG")(l) && strings.Contains(l, own.String()) && strings.HasSuffix(l, "-j RETURN")
		}, 3)
		has("FLANNEL-POSTRTG masquerades", func(l string) bool {
			return chain("FLANNEL-POSTRTG")(l) && strings.Contains(l, "MASQUERADE")
		}, 2)
	}
	has("INPUT → FLANNEL-VXLAN-GUARD", jump("INPUT", "FLANNEL-VXLAN-GUARD"), 1)
	has("FLANNEL-VXLAN-GUARD drops", func(l string) bool { return chain("FLANNEL-VXLAN-GUARD")(l) && strings.HasSuffix(l, "-j DROP") }, 1)
	return missing
}
