package fsm

import (
	"fmt"
	"slices"
	"testing"

	"github.com/discoverd/discoverd/api"
)

func reg(service, id, addr string) []byte {
	return EncodeAddInstance(service, &api.Instance{ID: id, Addr: addr, Proto: "tcp"})
}

// opResult renders one registration's result of a batch: "id/index @rev"
// or "error code @rev".
func opResult(r Result) string {
	if r.Err != nil {
		return fmt.Sprintf("%s @%d", api.AsError(r.Err).Code, r.Index)
	}
	return fmt.Sprintf("%s/%d %s @%d", r.Instance.ID, r.Instance.Index, r.Instance.Addr, r.Index)
}

func TestAddInstancesBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before are registrations applied one per entry first, from
		// Raft index 2 on (index 1 creates service a).
		before  [][]byte
		batch   [][]byte
		results []string
		events  []string
		// state is service a afterwards, in order of index.
		state []string
	}{
		{
			name:    "each registration takes its own revision",
			batch:   [][]byte{reg("a", "x", "h:1"), reg("a", "y", "h:2"), reg("a", "z", "h:3")},
			results: []string{"x/2 h:1 @2", "y/3 h:2 @3", "z/4 h:3 @4"},
			events:  []string{"a up x/2 @2", "a leader x/2 @2", "a up y/3 @3", "a up z/4 @4"},
			state:   []string{"x/2", "y/3", "z/4"},
		},
		{
			name: "a rejected registration fails alone",
			batch: [][]byte{
				reg("a", "x", "h:1"),
				reg("nosuch", "y", "h:2"),
				reg("a", "bad", "no port"),
				EncodeAddInstance("a", &api.Instance{ID: "w", Addr: "h:4", Proto: "tcp", Meta: map[string]string{"k": "v"}}),
			},
			results: []string{"x/2 h:1 @2", "object_not_found @3", "validation_error @4", "w/5 h:4 @5"},
			events:  []string{"a up x/2 @2", "a leader x/2 @2", "a up w/5 @5"},
			state:   []string{"x/2", "w/5"},
		},
		{
			name:    "registrations of one instance apply in their order",
			batch:   [][]byte{reg("a", "x", "h:1"), reg("a", "x", "h:2"), reg("a", "y", "h:3"), reg("a", "x", "h:2")},
			results: []string{"x/2 h:1 @2", "x/2 h:2 @3", "y/4 h:3 @4", "x/2 h:2 @5"},
			events:  []string{"a up x/2 @2", "a leader x/2 @2", "a update x/2 @3", "a up y/4 @4"},
			state:   []string{"x/2", "y/4"},
		},
		{
			name:    "an update keeps the index of the first registration",
			before:  [][]byte{reg("a", "x", "h:1")},
			batch:   [][]byte{reg("a", "y", "h:2"), reg("a", "x", "h:9")},
			results: []string{"y/3 h:2 @3", "x/2 h:9 @4"},
			events:  []string{"a up y/3 @3", "a update x/2 @4"},
			state:   []string{"x/2", "y/3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			f := New(rec.sink)
			f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", "")))
			idx := uint64(2)
			for _, c := range tc.before {
				if res := f.ApplyCommand(idx, c); res.Err != nil {
					t.Fatal(res.Err)
				}
				idx++
			}
			rec.take()
			calls := rec.calls
			res := f.ApplyCommand(idx, AppendAddInstances(nil, tc.batch))
			if res.Err != nil {
				t.Fatalf("batch rejected as a whole: %v", res.Err)
			}
			var got []string
			for _, r := range res.Batch {
				got = append(got, opResult(r))
			}
			if !slices.Equal(got, tc.results) {
				t.Errorf("results %q, want %q", got, tc.results)
			}
			last := idx + uint64(len(tc.batch)) - 1
			if res.Index != last || f.AppliedIndex() != last {
				t.Errorf("entry index %d, applied %d; want both %d", res.Index, f.AppliedIndex(), last)
			}
			if ev := rec.take(); !slices.Equal(ev, tc.events) {
				t.Errorf("events %q, want %q", ev, tc.events)
			}
			if rec.calls != calls+1 {
				t.Errorf("sink called %d times for one entry, want once", rec.calls-calls)
			}
			insts, _ := f.Instances("a")
			var state []string
			for _, in := range insts {
				state = append(state, fmt.Sprintf("%s/%d", in.ID, in.Index))
			}
			if !slices.Equal(state, tc.state) {
				t.Errorf("state %q, want %q", state, tc.state)
			}
		})
	}
}

func TestAddInstancesMalformed(t *testing.T) {
	good := AppendAddInstances(nil, [][]byte{reg("a", "x", "h:1")})
	for _, tc := range []struct {
		name string
		cmd  []byte
	}{
		{"no registrations", []byte{byte(CmdAddInstances), 0}},
		{"no count", []byte{byte(CmdAddInstances)}},
		{"truncated", good[:len(good)-1]},
		{"trailing bytes", append(slices.Clone(good), 0)},
		{"more registrations than bytes", []byte{byte(CmdAddInstances), 0xff, 0xff, 0x03, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			f := New(rec.sink)
			f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", "")))
			rec.take()
			res := f.ApplyCommand(2, tc.cmd)
			if !api.IsCode(res.Err, api.CodeValidation) || res.Batch != nil {
				t.Fatalf("result %+v, want a validation error and no registration", res)
			}
			if ev := rec.take(); len(ev) != 0 {
				t.Errorf("events %q", ev)
			}
			if insts, _ := f.Instances("a"); len(insts) != 0 {
				t.Errorf("instances %v", insts)
			}
		})
	}
}

// Revisions run ahead of the Raft index after a batch, and every node
// numbers them alike: one that applies the log, and one restored from a
// snapshot taken after the batch.
func TestRevisionsAfterABatch(t *testing.T) {
	a := New(nil)
	a.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", "")))
	a.ApplyCommand(2, AppendAddInstances(nil, [][]byte{reg("a", "x", "h:1"), reg("a", "y", "h:2"), reg("a", "z", "h:3")}))
	if a.AppliedIndex() != 4 {
		t.Fatalf("applied %d after a batch of 3 at index 2, want 4", a.AppliedIndex())
	}
	b := New(nil)
	if err := restore(t, b, persist(t, a)); err != nil {
		t.Fatal(err)
	}
	if b.AppliedIndex() != 4 {
		t.Fatalf("restored applied %d, want 4", b.AppliedIndex())
	}
	for _, f := range []*FSM{a, b} {
		for _, step := range []struct {
			raftIndex, want uint64
			cmd             []byte
		}{
			{3, 5, reg("a", "v", "h:4")}, // behind the revisions: the next one
			{4, 6, MustEncode(CmdRemoveInstance, RemoveInstance{Service: "a", ID: "x"})},
			{10, 10, reg("a", "u", "h:5")}, // past them: the Raft index again
		} {
			res := f.ApplyCommand(step.raftIndex, step.cmd)
			if res.Err != nil || res.Index != step.want {
				t.Fatalf("entry %d: index %d, %v; want %d", step.raftIndex, res.Index, res.Err, step.want)
			}
		}
		insts, _ := f.Instances("a")
		var got []string
		for _, in := range insts {
			got = append(got, fmt.Sprintf("%s/%d", in.ID, in.Index))
		}
		if want := []string{"y/3", "z/4", "v/5", "u/10"}; !slices.Equal(got, want) {
			t.Errorf("instances %q, want %q", got, want)
		}
		if l, _ := f.Leader("a"); l == nil || l.ID != "y" {
			t.Errorf("leader %v, want y (the oldest)", l)
		}
	}
}

func TestDecodeAddInstances(t *testing.T) {
	cmds := [][]byte{reg("a", "x", "h:1"), EncodeAddInstance("b", &api.Instance{ID: "y", Addr: "h:2", Proto: "http", Meta: map[string]string{"k": "v"}})}
	got, err := DecodeAddInstances(AppendAddInstances(nil, cmds))
	if err != nil || len(got) != 2 || string(got[0]) != string(cmds[0]) || string(got[1]) != string(cmds[1]) {
		t.Fatalf("DecodeAddInstances = %q, %v; want %q", got, err, cmds)
	}
	if _, err := DecodeAddInstances(cmds[0]); err == nil {
		t.Error("a single registration decoded as a batch")
	}
}
