// Package metrics is the sink flanneld's parts report what they count to:
// the daemon (reconciles, peers, rules), the peer table (kernel entries) and
// the subnet manager (the node watch, writes to the API server). They hold a
// Recorder; Nop discards everything, and an implementation that exports
// Prometheus series plugs in without touching them.
//
// Labels take a few bounded values (kinds, families, event types), never a
// node or peer name, so the series stay few at any cluster size.
package metrics

import (
	"time"

	"github.com/twill-net/twill/family"
)

// Reconcile names a kind of reconcile.
type Reconcile string

// The kinds of reconcile.
const (
	// ReconcileNode is one node's: a peer's entries, or this node's
	// annotations.
	ReconcileNode Reconcile = "node"
	// ReconcileFull is every peer's at once, with a read of the kernel.
	ReconcileFull Reconcile = "full"
)

// Change names what a sync did to a kernel entry.
type Change string

// The changes.
const (
	Added   Change = "added"
	Updated Change = "updated"
	Removed Change = "removed"
	// Repaired is drift put back: an entry the table had programmed that
	// the kernel lost or changed.
	Repaired Change = "repaired"
)

// Recorder receives counts. Every method must be cheap and safe for
// concurrent use.
type Recorder interface {
	// Reconciled says one reconcile of kind took d and ended with err.
	Reconciled(kind Reconcile, d time.Duration, err error)
	// EntriesChanged says a sync made n changes of ch to entries of kind
	// ("route", "neigh", "fdb").
	EntriesChanged(kind string, ch Change, n int)
	// EntriesHeld says the table now holds n programmed entries of kind.
	EntriesHeld(kind string, n int)
	// Peers says how many peers have a lease of family fam (known) and
	// how many of them are programmed, under backend.
	Peers(backend string, fam family.Family, known, programmed int)
	// WatchEvent counts an event of the node watch: "added", "updated"
	// (one that changed a lease) or "deleted".
	WatchEvent(typ string)
	// Listed says a list of all nodes succeeded: the first one, or a
	// relist after the watch broke (restart true).
	Listed(restart bool)
	// WatchStarted says a watch of the nodes was (re)opened after a list
	// or after the API server ended the previous one.
	WatchStarted()
	// APIContact says the API server just answered: a list, a watch event
	// or bookmark, or a write that succeeded. The time since the last one
	// is how stale the daemon's view of the cluster may be.
	APIContact()
	// APIWrite counts a write to the API server of kind ("annotations",
	// "condition", "event") and its outcome.
	APIWrite(kind string, err error)
	// RulesChecked says the packet-filter rules of fam were checked, which
	// took d (with the repair, if any: kube-proxy rewriting its rules
	// beside ours makes every iptables call slower); repaired is true when
	// they were wrong and have been rewritten.
	RulesChecked(fam family.Family, d time.Duration, repaired bool, err error)
	// GuardDropped says how many tunnelled packets from addresses that
	// are not peers the tunnel guard of fam has dropped in all, as the
	// kernel counts them (since the guard's rules were made); read at
	// every full reconcile.
	GuardDropped(fam family.Family, packets uint64)
}

// Nop is a Recorder that records nothing.
type Nop struct{}

var _ Recorder = Nop{}

// Reconciled implements Recorder.
func (Nop) Reconciled(Reconcile, time.Duration, error) {}

// EntriesChanged implements Recorder.
func (Nop) EntriesChanged(string, Change, int) {}

// EntriesHeld implements Recorder.
func (Nop) EntriesHeld(string, int) {}

// Peers implements Recorder.
func (Nop) Peers(string, family.Family, int, int) {}

// WatchEvent implements Recorder.
func (Nop) WatchEvent(string) {}

// Listed implements Recorder.
func (Nop) Listed(bool) {}

// WatchStarted implements Recorder.
func (Nop) WatchStarted() {}

// APIContact implements Recorder.
func (Nop) APIContact() {}

// APIWrite implements Recorder.
func (Nop) APIWrite(string, error) {}

// RulesChecked implements Recorder.
func (Nop) RulesChecked(family.Family, time.Duration, bool, error) {}

// GuardDropped implements Recorder.
func (Nop) GuardDropped(family.Family, uint64) {}

// OrNop returns r, or Nop when r is nil.
func OrNop(r Recorder) Recorder {
	if r == nil {
		return Nop{}
	}
	return r
}
