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
			case ev := <-sub.Events():
				kinds = append(kinds, ev.Kind)
				done = ev.Kind == api.EventCurrent
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
