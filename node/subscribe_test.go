package node

import (
	"context"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

// TestResyncPreludeHasNoEmptyLeader resumes a stream from an event the node
// no longer holds: the resync's prelude describes a service with no leader
// and no meta without any leader or service_meta event, and a service that
// does not exist as current alone.
func TestResyncPreludeHasNoEmptyLeader(t *testing.T) {
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	ctx := context.Background()
	if _, err := n.AddService(ctx, "web", api.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	inst, err := n.Heartbeat(ctx, "web", instance("10.0.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Deregister(ctx, "web", inst.ID); err != nil {
		t.Fatal(err)
	}
	// Pretend the history before now was lost (as after a restore).
	n.hub.mu.Lock()
	n.hub.floor = n.AppliedIndex()
	n.hub.mu.Unlock()

	for _, service := range []string{"web", "never-created"} {
		sub, err := n.Subscribe(service, api.AllKinds, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []api.EventKind
		for done := false; !done; {
			select {
			case <-sub.Ready():
				evs, _ := sub.Take(nil)
				for _, ev := range evs {
					kinds = append(kinds, ev.Kind)
					done = done || ev.Kind == api.EventCurrent
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no current after %v", service, kinds)
			}
		}
		sub.Close()
		if len(kinds) != 2 || kinds[0] != api.EventResync || kinds[1] != api.EventCurrent {
			t.Fatalf("%s: resumed prelude %v, want resync, current", service, kinds)
		}
	}
}

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

// TestSubscriptionNotify checks the callback that replaces Ready for a
// transport writing many streams from a few goroutines: it is called at
// once for a prelude already waiting, when events start to wait, when the
// subscriber falls behind and is closed, and when closeAll ends every
// stream; Ready is not signalled meanwhile.
func TestSubscriptionNotify(t *testing.T) {
	h := newHub()
	sub := h.add("web", api.AllKinds, func(func(uint64) ([]api.Event, bool)) []api.Event {
		return []api.Event{{Service: "web", Kind: api.EventCurrent, Index: 1}}
	})
	<-sub.Ready() // the prelude's signal, before Notify
	calls := 0
	sub.Notify(func() { calls++ })
	if calls != 1 {
		t.Fatalf("Notify with the prelude waiting called back %d times, want 1", calls)
	}
	evs, open := sub.Take(nil)
	if !open || len(evs) != 1 {
		t.Fatalf("took %+v open %v", evs, open)
	}
	for i := uint64(2); i <= 4; i++ {
		h.publish([]api.Event{{Service: "web", Kind: api.EventUp, Index: i}}, false)
	}
	// Called when events start to wait, not for each: the reader takes
	// them all when it runs.
	if calls != 2 {
		t.Fatalf("3 events published: %d callbacks in all, want 2 (the prelude, then the first event)", calls)
	}
	select {
	case <-sub.Ready():
		t.Fatal("Ready signalled for a subscription that notifies")
	default:
	}
	evs, open = sub.Take(evs[:0])
	if !open || len(evs) != 3 || evs[0].Index != 2 || evs[2].Index != 4 {
		t.Fatalf("took %+v open %v, want indexes 2..4", evs, open)
	}

	// Falling behind closes it, and says so through the callback.
	// (The limit counts the prelude: 1 + subscriberBuffer events may wait.)
	last := uint64(5 + subscriberBuffer + 1)
	for i := uint64(5); i < last; i++ {
		h.publish([]api.Event{{Service: "web", Kind: api.EventUp, Index: i}}, false)
	}
	before := calls
	h.publish([]api.Event{{Service: "web", Kind: api.EventUp, Index: last}}, false)
	if calls != before+1 {
		t.Fatalf("closing the subscriber that fell behind: %d callbacks, want 1", calls-before)
	}
	h.publish([]api.Event{{Service: "web", Kind: api.EventUp, Index: last + 1}}, false)
	if calls != before+1 {
		t.Fatalf("a closed subscription was notified of a later event")
	}
	if _, open := sub.Take(nil); open || sub.Err() != ErrSlowSubscriber {
		t.Fatalf("open %v err %v, want closed with ErrSlowSubscriber", open, sub.Err())
	}

	// closeAll notifies each stream it ends.
	other := h.add("web", api.AllKinds, func(func(uint64) ([]api.Event, bool)) []api.Event { return nil })
	ended := 0
	other.Notify(func() { ended++ })
	if ended != 0 {
		t.Fatalf("Notify with nothing waiting called back")
	}
	h.closeAll(ErrShutdown)
	if ended != 1 {
		t.Fatalf("closeAll notified %d times, want 1", ended)
	}
	if _, open := other.Take(nil); open || other.Err() != ErrShutdown {
		t.Fatalf("open %v err %v, want closed with ErrShutdown", open, other.Err())
	}
}
