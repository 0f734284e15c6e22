package client

import (
	"reflect"
	"testing"
	"time"
)

// TestWatchServiceNotYetCreated watches a service before it exists, as
// Flynn's router does: Watch and Leaders accept it and report it empty, and
// its events follow once it is created.
func TestWatchServiceNotYetCreated(t *testing.T) {
	t.Parallel()
	s := startServer(t, time.Minute)
	c := New(s.URL())
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)

	w, err := c.Watch(ctx, "later")
	if err != nil {
		t.Fatalf("Watch of a service not created yet: %v", err)
	}
	defer w.Close()
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"current"}) {
		t.Fatalf("prelude of a service not created yet = %q, want current alone", got)
	}
	leaders, err := c.Leaders(ctx, "later")
	if err != nil {
		t.Fatalf("Leaders of a service not created yet: %v", err)
	}
	select {
	case l := <-leaders:
		if l != nil {
			t.Fatalf("first leader of a service not created yet = %+v, want nil", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Leaders sent no first value for a service not created yet")
	}
	if l, err := c.Leader(ctx, "later"); !IsNotFound(err) {
		t.Fatalf("Leader of a service not created yet = %v, %v; want object_not_found", l, err)
	}

	if err := c.AddService(ctx, "later", nil); err != nil {
		t.Fatal(err)
	}
	inst := s.register("later", "10.0.0.1:80")
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}) {
		t.Fatalf("events once created = %q", got)
	}
	select {
	case l := <-leaders:
		if l == nil || l.ID != inst.ID {
			t.Fatalf("leader once created = %+v, want %s", l, inst.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Leaders sent nothing once the service had a leader")
	}
}
