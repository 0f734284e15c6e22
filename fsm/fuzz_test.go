package fsm

import (
	"reflect"
	"slices"
	"sort"
	"testing"

	"github.com/discoverd/discoverd/api"
)

// fuzzFixture is a small state every fuzz input is applied to: an oldest
// service with a hole in its order, a manual service with a leader, meta,
// an empty service and a node.
func fuzzFixture(t testing.TB) *harness {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "i1", "10.0.0.1:80", nil))
	h.ok(3, CmdAddInstance, inst("a", "i2", "10.0.0.2:80", map[string]string{"k": "v"}))
	h.ok(4, CmdAddInstance, inst("a", "gap", "10.0.0.9:80", nil))
	h.ok(5, CmdAddInstance, inst("a", "i3", "10.0.0.3:80", nil))
	h.ok(6, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "gap"})
	h.ok(7, CmdAddService, addSvc("m", api.LeaderTypeManual))
	h.ok(8, CmdAddInstance, inst("m", "m1", "10.0.1.1:80", nil))
	h.ok(9, CmdAddInstance, inst("m", "m2", "10.0.1.2:80", nil))
	h.ok(10, CmdSetLeader, SetLeader{Service: "m", ID: "m2"})
	h.ok(11, CmdSetServiceMeta, meta("a", 0, `{"v":1}`))
	h.ok(12, CmdAddService, addSvc("e", ""))
	h.ok(13, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n:1111", NATSAddr: "n:4222"}})
	h.rec.take()
	return h
}

func fuzzSeeds() [][]byte {
	enc := MustEncode
	return [][]byte{
		enc(CmdAddService, addSvc("b", "")),
		enc(CmdAddService, addSvc("b", api.LeaderTypeManual)),
		enc(CmdAddService, addSvc("a", "")),
		enc(CmdAddService, addSvc("B", "")),
		enc(CmdAddService, addSvc("b", "x")),
		enc(CmdRemoveService, RemoveService{Service: "a"}),
		enc(CmdRemoveService, RemoveService{Service: "m"}),
		enc(CmdRemoveService, RemoveService{Service: "e"}),
		enc(CmdRemoveService, RemoveService{Service: "nope"}),
		enc(CmdSetServiceMeta, meta("a", 11, `{"v":2}`)),
		enc(CmdSetServiceMeta, meta("a", 0, `{"v":2}`)),
		enc(CmdSetServiceMeta, meta("a", 5, `[]`)),
		enc(CmdSetServiceMeta, meta("e", 0, `"x"`)),
		enc(CmdSetServiceMeta, meta("e", 3, `null`)),
		enc(CmdSetLeader, SetLeader{Service: "m", ID: "m1"}),
		enc(CmdSetLeader, SetLeader{Service: "m", ID: "m2"}),
		enc(CmdSetLeader, SetLeader{Service: "m", ID: "x"}),
		enc(CmdSetLeader, SetLeader{Service: "a", ID: "i1"}),
		enc(CmdAddInstance, inst("a", "i4", "10.0.0.4:80", nil)),
		enc(CmdAddInstance, inst("a", "i1", "10.0.0.1:81", nil)),
		enc(CmdAddInstance, inst("a", "i2", "10.0.0.2:80", map[string]string{"k": "v"})),
		enc(CmdAddInstance, inst("a", "gap", "10.0.0.9:80", nil)),
		enc(CmdAddInstance, inst("m", "m2", "10.0.1.2:80", map[string]string{"x": "y"})),
		enc(CmdAddInstance, inst("e", "x", "[::1]:1", nil)),
		enc(CmdAddInstance, AddInstance{Service: "a", Instance: api.Instance{Addr: "10.0.0.5:80", Proto: "http"}}),
		enc(CmdAddInstance, inst("a", "bad", "10.0.0.5", nil)),
		enc(CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i1"}),
		enc(CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i3"}),
		enc(CmdRemoveInstance, RemoveInstance{Service: "m", ID: "m2"}),
		enc(CmdRemoveInstance, RemoveInstance{Service: "a", ID: "gap"}),
		enc(CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{
			{Service: "a", ID: "i1", Index: 2}, {Service: "m", ID: "m2", Index: 9},
			{Service: "a", ID: "i2", Index: 99}, {Service: "a", ID: "gap", Index: 4}, {Service: "x", ID: "y", Index: 1},
		}}),
		enc(CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{{Service: "a", ID: "i2", Index: 3}}}),
		enc(CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n:1111", NATSLeaf: "n:7422"}}),
		enc(CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "m:1111"}}),
		enc(CmdSetNode, SetNode{}),
		enc(CmdRemoveNode, RemoveNode{Addr: "n:1111"}),
		enc(CmdRemoveNode, RemoveNode{Addr: ""}),
		// The compact add: new, update, meta, default id, bad service,
		// bad addr, and a truncated body.
		EncodeAddInstance("a", &api.Instance{ID: "i5", Addr: "10.0.0.5:80", Proto: "tcp"}),
		EncodeAddInstance("a", &api.Instance{ID: "i1", Addr: "10.0.0.1:81", Proto: "tcp"}),
		EncodeAddInstance("a", &api.Instance{ID: "i2", Addr: "10.0.0.2:80", Proto: "tcp", Meta: map[string]string{"k": "v"}}),
		EncodeAddInstance("m", &api.Instance{ID: "m1", Addr: "10.0.1.1:80", Proto: "tcp", Meta: map[string]string{"a": "1", "b": "2"}}),
		EncodeAddInstance("e", &api.Instance{Addr: "[::1]:1", Proto: "tcp"}),
		EncodeAddInstance("x", &api.Instance{ID: "i1", Addr: "10.0.0.1:80", Proto: "tcp"}),
		EncodeAddInstance("a", &api.Instance{ID: "i6", Addr: "10.0.0.6", Proto: "tcp"}),
		EncodeAddInstance("a", &api.Instance{ID: "i7", Addr: "10.0.0.7:80", Proto: "tcp"})[:12],
		// Batches: good, an update and a rejection among them, one
		// alone, and a truncated one.
		AppendAddInstances(nil, [][]byte{
			EncodeAddInstance("a", &api.Instance{ID: "b1", Addr: "10.0.0.8:80", Proto: "tcp"}),
			EncodeAddInstance("x", &api.Instance{ID: "b2", Addr: "10.0.0.9:80", Proto: "tcp"}),
			EncodeAddInstance("a", &api.Instance{ID: "b1", Addr: "10.0.0.8:81", Proto: "tcp"}),
			EncodeAddInstance("m", &api.Instance{ID: "m1", Addr: "10.0.1.9:80", Proto: "tcp"}),
		}),
		AppendAddInstances(nil, [][]byte{EncodeAddInstance("a", &api.Instance{ID: "i1", Addr: "10.0.0.1:80", Proto: "tcp"})}),
		AppendAddInstances(nil, [][]byte{EncodeAddInstance("a", &api.Instance{ID: "b3", Addr: "10.0.0.3:80", Proto: "tcp"})})[:9],
		{},
		{0},
		{byte(CmdAddService)},
		{byte(CmdAddInstance), 'n', 'u', 'l', 'l'},
		{255, '{', '}'},
	}
}

// FuzzApply applies arbitrary bytes as a command, twice, to the fixture. It
// must never panic; a rejected command must change nothing but the applied
// index and emit nothing; an accepted one must leave a well-formed state
// whose snapshot round-trips, and emit exactly the events a Restore of the
// new state over the old one would (as a multiset: Restore groups by
// service).
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := fuzzFixture(t)
		twin := fuzzFixture(t)
		for _, idx := range []uint64{100, 101} {
			before := stateJSON(h.f)
			beforeSnap := persist(t, h.f)
			res := h.applyRaw(idx, append([]byte(nil), data...))
			events := h.rec.take()
			if h.f.AppliedIndex() != res.Index {
				t.Fatalf("applied index %d, want the entry's %d", h.f.AppliedIndex(), res.Index)
			}

			// The same entry on another node: the same result.
			tres := twin.applyRaw(idx, append([]byte(nil), data...))
			if tevents := twin.rec.take(); !reflect.DeepEqual(events, tevents) {
				t.Fatalf("nondeterministic events: %v vs %v", events, tevents)
			}
			if (res.Err == nil) != (tres.Err == nil) || fullState(h.f) != fullState(twin.f) {
				t.Fatalf("nondeterministic result: %v vs %v", res.Err, tres.Err)
			}

			if res.Err != nil {
				if e := api.AsError(res.Err); e.Code == api.CodeUnknown {
					t.Fatalf("untyped error %v", res.Err)
				}
				if res.Instance != nil || res.Meta != nil {
					t.Fatalf("rejected command returned %v, %v", res.Instance, res.Meta)
				}
				if after := stateJSON(h.f); after != before {
					t.Fatalf("rejected command (%v) changed the state\nbefore: %s\nafter:  %s", res.Err, before, after)
				}
				continue
			}

			checkAllServices(t, h.f)
			checkLeaders(t, h.f)

			// Round trip.
			afterSnap := persist(t, h.f)
			fresh := New(nil)
			if err := restore(t, fresh, afterSnap); err != nil {
				t.Fatalf("restoring the snapshot: %v", err)
			}
			if a, b := fullState(fresh), fullState(h.f); a != b {
				t.Fatalf("snapshot round trip differs\n got: %s\nwant: %s", a, b)
			}

			// The live events are the difference Restore computes; but a
			// batch's are those of each registration in turn (an up then
			// an update of one instance), which a difference merges.
			if res.Batch != nil {
				continue
			}
			rec := &recorder{}
			g := New(rec.sink)
			if err := restore(t, g, beforeSnap); err != nil {
				t.Fatal(err)
			}
			rec.take()
			if err := restore(t, g, afterSnap); err != nil {
				t.Fatal(err)
			}
			diff := rec.take()
			live := append([]string(nil), events...)
			sort.Strings(live)
			sort.Strings(diff)
			if !slices.Equal(live, diff) {
				t.Fatalf("live events %v\nrestore diff %v", events, diff)
			}
		}
	})
}

// checkLeaders checks the leader rule of every service: an oldest service's
// leader is its lowest-index instance; a manual one's is an instance or none.
func checkLeaders(t testing.TB, f *FSM) {
	t.Helper()
	for _, name := range f.Services() {
		cfg, _ := f.ServiceConfig(name)
		insts, _ := f.Instances(name)
		l, _ := f.Leader(name)
		switch cfg.LeaderType {
		case api.LeaderTypeOldest:
			if len(insts) == 0 {
				if l != nil {
					t.Fatalf("%s: leader %v with no instances", name, l)
				}
				continue
			}
			if l != insts[0] {
				t.Fatalf("%s: leader %v, oldest %v", name, l, insts[0])
			}
		case api.LeaderTypeManual:
			if l != nil {
				if got, _ := f.Instance(name, l.ID); got != l {
					t.Fatalf("%s: leader %v is not the stored instance", name, l)
				}
			}
		default:
			t.Fatalf("%s: leader type %q", name, cfg.LeaderType)
		}
	}
}

// TestFuzzSeeds runs the seed corpus through the fuzz checks' expectations
// explicitly, so that a plain `go test` proves the seeds reach both the
// accepted and the rejected paths.
func TestFuzzSeeds(t *testing.T) {
	accepted, rejected := 0, 0
	for _, s := range fuzzSeeds() {
		h := fuzzFixture(t)
		if res := h.f.ApplyCommand(100, s); res.Err == nil {
			accepted++
		} else {
			rejected++
		}
	}
	if accepted < 20 || rejected < 15 {
		t.Fatalf("seeds: %d accepted, %d rejected", accepted, rejected)
	}
}
