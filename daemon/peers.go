package daemon

import (
	"slices"
	"sync"

	"github.com/twill-net/twill/family"
)

// peerCounts keeps, per family, how many peers have a lease (known) and
// how many of them are programmed, up to date with every reconcile, so the
// metrics follow a node joining or leaving without waiting for the next
// full reconcile. Counts change by the difference one peer makes.
type peerCounts struct {
	mu         sync.Mutex
	peers      map[string]peerFamilies
	known      map[family.Family]int
	programmed map[family.Family]int
}

// peerFamilies is one peer's part of the counts.
type peerFamilies struct {
	leased, programmed []family.Family
}

func newPeerCounts() *peerCounts {
	return &peerCounts{peers: map[string]peerFamilies{}, known: map[family.Family]int{}, programmed: map[family.Family]int{}}
}

// set records peer name's families; empty ones forget it. It reports
// whether the counts changed.
func (c *peerCounts) set(name string, leased, programmed []family.Family) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.peers[name]
	if slices.Equal(old.leased, leased) && slices.Equal(old.programmed, programmed) {
		return false
	}
	for _, f := range old.leased {
		c.known[f]--
	}
	for _, f := range old.programmed {
		c.programmed[f]--
	}
	for _, f := range leased {
		c.known[f]++
	}
	for _, f := range programmed {
		c.programmed[f]++
	}
	if len(leased) == 0 && len(programmed) == 0 {
		delete(c.peers, name)
	} else {
		c.peers[name] = peerFamilies{leased: slices.Clone(leased), programmed: slices.Clone(programmed)}
	}
	return true
}

// reset replaces every peer's record (a full reconcile's view).
func (c *peerCounts) reset(all map[string]peerFamilies) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peers = all
	c.known = map[family.Family]int{}
	c.programmed = map[family.Family]int{}
	for _, p := range all {
		for _, f := range p.leased {
			c.known[f]++
		}
		for _, f := range p.programmed {
			c.programmed[f]++
		}
	}
}

// of returns the counts of family f.
func (c *peerCounts) of(f family.Family) (known, programmed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known[f], c.programmed[f]
}
