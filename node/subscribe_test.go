package node

import (
	"testing"

	"github.com/discoverd/discoverd/api"
)

func TestSubscriptionQueueGrowsOnlyWhileEventsWait(t *testing.T) {
	h := newHub()
	sub := h.add("web", api.AllKinds, func(func(uint64) ([]api.Event, bool)) []api.Event {
		return []api.Event{{Service: "web", Kind: api.EventCurrent, Index: 1}}
	})
	defer sub.Close()
	<-sub.Ready()
	evs, open := sub.Take(nil)
	if !open || len(evs) != 1 || evs[0].Kind != api.EventCurrent {
		t.Fatalf("prelude %+v open %v", evs, open)
	}
	if cap(sub.queue) > keptQueue {
		t.Fatalf("an idle subscription holds a queue of %d events", cap(sub.queue))
	}
	// A burst, taken in log order; then the queue goes.
	var burst []api.Event
	for i := uint64(2); i < 200; i++ {
		burst = append(burst, api.Event{Service: "web", Kind: api.EventUp, Index: i})
	}
	h.publish(burst, false)
	<-sub.Ready()
	evs, open = sub.Take(evs[:0])
	if !open || len(evs) != len(burst) {
		t.Fatalf("took %d events (open %v), want %d", len(evs), open, len(burst))
	}
	for i := range evs {
		if evs[i].Index != burst[i].Index {
			t.Fatalf("event %d has index %d, want %d: out of log order", i, evs[i].Index, burst[i].Index)
		}
	}
	if sub.queue != nil {
		t.Fatalf("after the burst was taken the queue keeps %d events of room", cap(sub.queue))
	}
}

func TestSubscriptionFallingBehindIsClosedWithAnError(t *testing.T) {
	h := newHub()
	sub := h.add("web", api.AllKinds, func(func(uint64) ([]api.Event, bool)) []api.Event { return nil })
	for i := uint64(1); i <= subscriberBuffer+1; i++ {
		h.publish([]api.Event{{Service: "web", Kind: api.EventUp, Index: i}}, false)
	}
	evs, open := sub.Take(nil)
	if open || len(evs) != subscriberBuffer || sub.Err() != ErrSlowSubscriber {
		t.Fatalf("took %d events, open %v, err %v: want %d, closed with ErrSlowSubscriber", len(evs), open, sub.Err(), subscriberBuffer)
	}
	if got := h.closedSlow.Load(); got != 1 {
		t.Fatalf("closedSlow %d, want 1", got)
	}
}
