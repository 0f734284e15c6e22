package fsm

import (
	"strconv"
	"testing"

	"github.com/discoverd/discoverd/api"
)

// Removing a big service emits an event per instance; the buffer they went
// through must not keep those instances alive afterwards.
func TestEventBufferIsNotKept(t *testing.T) {
	f := New(func([]api.Event) {})
	f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", "")))
	idx := uint64(2)
	for i := 0; i < 3*maxKeptEvents; i++ {
		f.ApplyCommand(idx, EncodeAddInstance("a", &api.Instance{ID: "i" + strconv.Itoa(i), Addr: "h:1", Proto: "tcp"}))
		idx++
	}
	if res := f.ApplyCommand(idx, MustEncode(CmdRemoveService, RemoveService{Service: "a"})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if cap(f.events) > maxKeptEvents {
		t.Fatalf("event buffer of %d kept after a big removal", cap(f.events))
	}
	f.ApplyCommand(idx+1, MustEncode(CmdAddService, addSvc("b", "")))
	f.ApplyCommand(idx+2, EncodeAddInstance("b", &api.Instance{ID: "x", Addr: "h:1", Proto: "tcp"}))
	for i, ev := range f.events[:cap(f.events)] {
		if ev.Instance != nil {
			t.Fatalf("event buffer slot %d still points at %s", i, ev.Instance.ID)
		}
	}
}
