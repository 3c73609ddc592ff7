package kube

import (
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
)

func TestTapCountsEveryEventAndStops(t *testing.T) {
	src := watch.NewFakeWithChanSize(3, false)
	var seen atomic.Int32
	w := tap(src, func() { seen.Add(1) })
	src.Add(nil)
	src.Action(watch.Bookmark, nil)
	for _, want := range []watch.EventType{watch.Added, watch.Bookmark} {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != want {
				t.Fatalf("got %s, want %s", ev.Type, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
	if seen.Load() != 2 {
		t.Errorf("seen %d events, want 2 (bookmarks count)", seen.Load())
	}
	// An event nobody reads must not keep the forwarding goroutine alive
	// after Stop.
	src.Modify(nil)
	w.Stop()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-w.ResultChan():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("result channel not closed after Stop")
		}
	}
}
