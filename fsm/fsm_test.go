package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/api"
	"github.com/hashicorp/raft"
)

// recorder is a Sink that keeps a copy of every event it is given (the FSM
// reuses the slice it passes) and counts the calls.
type recorder struct {
	events []api.Event
	calls  int
}

func (r *recorder) sink(evs []api.Event) {
	r.calls++
	r.events = append(r.events, evs...)
}

// take returns the recorded events, formatted, and forgets them.
func (r *recorder) take() []string {
	out := fmtEvents(r.events)
	r.events = nil
	return out
}

// fmtEvent renders an event with everything a test asserts on:
// "service kind id/instanceIndex @eventIndex" for instance events, "-" for a
// leader event with no instance, and "meta/metaIndex" for service meta.
func fmtEvent(e api.Event) string {
	target := "-"
	switch {
	case e.Instance != nil:
		target = fmt.Sprintf("%s/%d", e.Instance.ID, e.Instance.Index)
	case e.ServiceMeta != nil:
		target = fmt.Sprintf("meta/%d", e.ServiceMeta.Index)
	}
	return fmt.Sprintf("%s %s %s @%d", e.Service, e.Kind, target, e.Index)
}

func fmtEvents(evs []api.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, fmtEvent(e))
	}
	return out
}

// harness applies commands at explicit Raft indexes and checks the rules
// every entry obeys: at most one sink call, none for an entry without events,
// every event carrying the entry's index, no event for a rejected command.
type harness struct {
	t   testing.TB
	f   *FSM
	rec *recorder
}

func newHarness(t testing.TB) *harness {
	h := &harness{t: t, rec: &recorder{}}
	h.f = New(h.rec.sink)
	return h
}

func (h *harness) apply(index uint64, t CommandType, body any) *Result {
	h.t.Helper()
	return h.applyRaw(index, MustEncode(t, body))
}

func (h *harness) applyRaw(index uint64, data []byte) *Result {
	h.t.Helper()
	n, calls := len(h.rec.events), h.rec.calls
	// The revision the entry starts at: its index, unless a batch before
	// put the revisions ahead (batch.go).
	first := h.f.revision(index)
	res := h.f.ApplyCommand(index, data)
	if res == nil {
		h.t.Fatalf("entry %d: nil result", index)
	}
	// A batch of registrations takes a revision for each; anything else
	// one.
	last := first
	if len(res.Batch) > 0 {
		last = first + uint64(len(res.Batch)) - 1
	}
	if res.Index != last {
		h.t.Fatalf("entry %d: result index %d, want %d", index, res.Index, last)
	}
	added := h.rec.events[n:]
	switch {
	case len(added) == 0 && h.rec.calls != calls:
		h.t.Fatalf("entry %d: sink called with no events", index)
	case len(added) > 0 && h.rec.calls != calls+1:
		h.t.Fatalf("entry %d: sink called %d times, want once", index, h.rec.calls-calls)
	}
	prev := first
	for _, e := range added {
		if e.Index < prev || e.Index > last {
			h.t.Fatalf("entry %d: event %s carries index %d, out of order or outside %d-%d", index, fmtEvent(e), e.Index, first, last)
		}
		prev = e.Index
	}
	if res.Err != nil {
		if len(added) > 0 {
			h.t.Fatalf("entry %d: rejected with %v but emitted %v", index, res.Err, fmtEvents(added))
		}
		var ae *api.Error
		if !errors.As(res.Err, &ae) {
			h.t.Fatalf("entry %d: error %v (%T) is not an *api.Error", index, res.Err, res.Err)
		}
	}
	return res
}

// ok applies a command that must succeed.
func (h *harness) ok(index uint64, t CommandType, body any) *Result {
	h.t.Helper()
	res := h.apply(index, t, body)
	if res.Err != nil {
		h.t.Fatalf("entry %d (%s): %v", index, t, res.Err)
	}
	return res
}

// fail applies a command that must be rejected with code, and checks that it
// changed nothing.
func (h *harness) fail(index uint64, code api.ErrorCode, t CommandType, body any) *Result {
	h.t.Helper()
	return h.failRaw(index, code, MustEncode(t, body))
}

func (h *harness) failRaw(index uint64, code api.ErrorCode, data []byte) *Result {
	h.t.Helper()
	before := stateJSON(h.f)
	res := h.applyRaw(index, data)
	if !api.IsCode(res.Err, code) {
		h.t.Fatalf("entry %d: error %v, want %s", index, res.Err, code)
	}
	if after := stateJSON(h.f); after != before {
		h.t.Fatalf("entry %d: rejected command changed the state\nbefore: %s\nafter:  %s", index, before, after)
	}
	return res
}

// expect checks the events recorded since the last take.
func (h *harness) expect(want ...string) {
	h.t.Helper()
	got := h.rec.take()
	if len(want) == 0 {
		want = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		h.t.Fatalf("events:\n  got  %s\n  want %s", strings.Join(got, "\n       "), strings.Join(want, "\n       "))
	}
}

func (h *harness) leader(service string) string {
	h.t.Helper()
	l, err := h.f.Leader(service)
	if err != nil {
		h.t.Fatalf("Leader(%q): %v", service, err)
	}
	if l == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%d", l.ID, l.Index)
}

func (h *harness) instances(service string) []string {
	h.t.Helper()
	insts, err := h.f.Instances(service)
	if err != nil {
		h.t.Fatalf("Instances(%q): %v", service, err)
	}
	out := []string{}
	for _, i := range insts {
		out = append(out, fmt.Sprintf("%s/%d", i.ID, i.Index))
	}
	return out
}

func (h *harness) expectLeader(service, want string) {
	h.t.Helper()
	if got := h.leader(service); got != want {
		h.t.Fatalf("leader of %s = %s, want %s", service, got, want)
	}
}

func (h *harness) expectInstances(service string, want ...string) {
	h.t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := h.instances(service); !reflect.DeepEqual(got, want) {
		h.t.Fatalf("instances of %s = %v, want %v", service, got, want)
	}
}

// stateJSON encodes the whole state except the applied index, which every
// entry advances, rejected or not.
func stateJSON(f *FSM) string {
	st := f.capture()
	st.Index = 0
	b, err := json.Marshal(st)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func addSvc(name string, lt api.LeaderType) AddService {
	return AddService{Service: name, Config: api.ServiceConfig{LeaderType: lt}}
}

func inst(service, id, addr string, meta map[string]string) AddInstance {
	return AddInstance{Service: service, Instance: api.Instance{ID: id, Addr: addr, Proto: "tcp", Meta: meta}}
}

func TestCommandTypeNumbersAreFixed(t *testing.T) {
	// The numbers are on disk in every Raft log: they must never change.
	want := map[CommandType]uint8{
		CmdAddService: 1, CmdRemoveService: 2, CmdSetServiceMeta: 3, CmdSetLeader: 4,
		CmdAddInstance: 5, CmdRemoveInstance: 6, CmdExpireInstances: 7, CmdSetNode: 8, CmdRemoveNode: 9,
		CmdAddInstanceCompact: 10, CmdAddInstances: 11,
	}
	for c, n := range want {
		if uint8(c) != n {
			t.Errorf("%s = %d, want %d", c, uint8(c), n)
		}
		if c.String() == "unknown" {
			t.Errorf("%d has no name", n)
		}
	}
	if CommandType(0).String() != "unknown" || CommandType(12).String() != "unknown" {
		t.Errorf("types 0 and 12 should be unknown")
	}
	b := MustEncode(CmdRemoveNode, RemoveNode{Addr: "x:1"})
	if b[0] != 9 || string(b[1:]) != `{"addr":"x:1"}` {
		t.Errorf("MustEncode = %q", b)
	}
}

func TestMalformedCommands(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "i1", "10.0.0.1:80", nil))
	h.expect("a up i1/2 @2", "a leader i1/2 @2")
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"type 0", []byte{0}},
		{"unknown type", append([]byte{10}, `{}`...)},
		{"type 255", append([]byte{255}, `{}`...)},
		{"no body", []byte{byte(CmdAddService)}},
		{"bad json", append([]byte{byte(CmdAddInstance)}, `{"service":`...)},
		{"trailing data", append([]byte{byte(CmdRemoveInstance)}, `{"service":"a","id":"i1"} x`...)},
		{"wrong field type", append([]byte{byte(CmdRemoveInstance)}, `{"service":"a","id":1}`...)},
		{"array body", append([]byte{byte(CmdExpireInstances)}, `[]`...)},
		{"bad expire list", append([]byte{byte(CmdExpireInstances)}, `{"instances":[{"service":"a","id":"i1","index":"2"}]}`...)},
		{"node without addr", MustEncode(CmdSetNode, SetNode{Node: api.NodeInfo{NATSAddr: "x:1"}})},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			h.failRaw(uint64(10+i), api.CodeValidation, c.data)
			h.expect()
		})
	}
	h.t = t
	// A rejected entry is still applied: the applied index moves on.
	if got := h.f.AppliedIndex(); got != uint64(10+len(cases)-1) {
		t.Fatalf("applied index %d", got)
	}
	h.expectInstances("a", "i1/2")
}

func TestApplyRaftLog(t *testing.T) {
	h := newHarness(t)
	res, ok := h.f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: MustEncode(CmdAddService, addSvc("a", ""))}).(*Result)
	if !ok || res.Err != nil || res.Index != 3 {
		t.Fatalf("Apply = %#v", res)
	}
	res = h.f.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: MustEncode(CmdAddInstance, inst("a", "x", "h:1", nil))}).(*Result)
	if res.Err != nil || res.Instance == nil || res.Instance.Index != 4 {
		t.Fatalf("Apply add instance = %#v", res)
	}
	h.expect("a up x/4 @4", "a leader x/4 @4")
	if got := h.f.Apply(&raft.Log{Index: 5, Type: raft.LogNoop}); got != nil {
		t.Fatalf("Apply(noop) = %v, want nil", got)
	}
	if h.f.AppliedIndex() != 4 {
		t.Fatalf("applied index %d after a non-command entry", h.f.AppliedIndex())
	}
	// A nil sink is allowed.
	f := New(nil)
	if r := f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("a", ""))); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := f.ApplyCommand(2, MustEncode(CmdAddInstance, inst("a", "x", "h:1", nil))); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestAddService(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name string
		cmd  AddService
		code api.ErrorCode // "" for success
		want api.LeaderType
	}{
		{"default oldest", addSvc("a", ""), "", api.LeaderTypeOldest},
		{"oldest", addSvc("b-2", api.LeaderTypeOldest), "", api.LeaderTypeOldest},
		{"manual", addSvc("m", api.LeaderTypeManual), "", api.LeaderTypeManual},
		{"63 chars", addSvc(strings.Repeat("x", 63), ""), "", api.LeaderTypeOldest},
		{"exists", addSvc("a", ""), api.CodeExists, ""},
		{"exists other type", addSvc("m", api.LeaderTypeOldest), api.CodeExists, ""},
		{"empty name", addSvc("", ""), api.CodeValidation, ""},
		{"upper case", addSvc("A", ""), api.CodeValidation, ""},
		{"dot", addSvc("a.b", ""), api.CodeValidation, ""},
		{"slash", addSvc("a/b", ""), api.CodeValidation, ""},
		{"64 chars", addSvc(strings.Repeat("x", 64), ""), api.CodeValidation, ""},
		{"bad leader type", addSvc("c", "newest"), api.CodeValidation, ""},
		{"leader type case", addSvc("c", "Oldest"), api.CodeValidation, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			idx := uint64(i + 1)
			if c.code != "" {
				h.fail(idx, c.code, CmdAddService, c.cmd)
				return
			}
			h.ok(idx, CmdAddService, c.cmd)
			cfg, err := h.f.ServiceConfig(c.cmd.Service)
			if err != nil || cfg.LeaderType != c.want {
				t.Fatalf("config = %v, %v; want %s", cfg, err, c.want)
			}
			h.expectInstances(c.cmd.Service)
			h.expectLeader(c.cmd.Service, "-")
			if m, _ := h.f.ServiceMeta(c.cmd.Service); m != nil {
				t.Fatalf("new service has meta %v", m)
			}
		})
	}
	h.t = t
	h.expect() // adding a service emits nothing
	if got, want := h.f.Services(), []string{"a", "b-2", "m", strings.Repeat("x", 63)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Services() = %v, want %v", got, want)
	}
	for _, fn := range []func(string) error{
		func(s string) error { _, err := h.f.ServiceConfig(s); return err },
		func(s string) error { _, err := h.f.Instances(s); return err },
		func(s string) error { _, err := h.f.Instance(s, "x"); return err },
		func(s string) error { _, err := h.f.Leader(s); return err },
		func(s string) error { _, err := h.f.ServiceMeta(s); return err },
	} {
		if err := fn("nope"); !api.IsCode(err, api.CodeNotFound) {
			t.Fatalf("read of unknown service: %v", err)
		}
	}
}

func TestRemoveService(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "i1", "h:1", nil))
	h.ok(3, CmdAddInstance, inst("a", "i2", "h:2", nil))
	h.ok(4, CmdAddInstance, inst("a", "i3", "h:3", nil))
	h.ok(5, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i1"})
	h.ok(6, CmdSetServiceMeta, SetServiceMeta{Service: "a", Meta: api.ServiceMeta{Data: json.RawMessage(`{"x":1}`)}})
	h.ok(7, CmdAddService, addSvc("m", api.LeaderTypeManual))
	h.ok(8, CmdAddInstance, inst("m", "m1", "h:1", nil))
	h.ok(9, CmdAddService, addSvc("empty", ""))
	h.ok(10, CmdAddService, addSvc("b", ""))
	h.ok(11, CmdAddInstance, inst("b", "b1", "h:1", nil))
	h.rec.take()

	// Downs in order of index, then a leader event with no instance.
	h.ok(20, CmdRemoveService, RemoveService{Service: "a"})
	h.expect("a down i2/3 @20", "a down i3/4 @20", "a leader - @20")
	// A manual service without a leader: downs, no leader event.
	h.ok(21, CmdRemoveService, RemoveService{Service: "m"})
	h.expect("m down m1/8 @21")
	// No instances: nothing.
	h.ok(22, CmdRemoveService, RemoveService{Service: "empty"})
	h.expect()

	h.fail(23, api.CodeNotFound, CmdRemoveService, RemoveService{Service: "a"})
	h.fail(24, api.CodeNotFound, CmdRemoveService, RemoveService{Service: "never"})
	h.fail(25, api.CodeNotFound, CmdAddInstance, inst("a", "i2", "h:2", nil))
	if got := h.f.Services(); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("services %v", got)
	}
	h.expectInstances("b", "b1/11")

	// Added again, the service starts empty: no instances, meta or leader left over.
	h.ok(30, CmdAddService, addSvc("a", api.LeaderTypeManual))
	h.expectInstances("a")
	h.expectLeader("a", "-")
	if m, err := h.f.ServiceMeta("a"); m != nil || err != nil {
		t.Fatalf("meta of re-added service = %v, %v", m, err)
	}
	h.ok(31, CmdSetServiceMeta, SetServiceMeta{Service: "a", Meta: api.ServiceMeta{Data: json.RawMessage(`1`)}})
	h.ok(32, CmdAddInstance, inst("a", "i2", "h:2", nil))
	h.expect("a service_meta meta/31 @31", "a up i2/32 @32")
	h.expectLeader("a", "-")
}

func TestAddInstance(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))

	res := h.ok(5, CmdAddInstance, inst("a", "i1", "10.0.0.1:80", map[string]string{"k": "v"}))
	if res.Instance == nil || res.Instance.Index != 5 || res.Instance.ID != "i1" {
		t.Fatalf("result instance %#v", res.Instance)
	}
	h.expect("a up i1/5 @5", "a leader i1/5 @5")

	// Re-adding the same registration: nothing, index kept. Any index sent is ignored.
	same := inst("a", "i1", "10.0.0.1:80", map[string]string{"k": "v"})
	same.Instance.Index = 99
	res = h.ok(6, CmdAddInstance, same)
	if res.Instance.Index != 5 {
		t.Fatalf("unchanged re-add: index %d", res.Instance.Index)
	}
	h.expect()

	h.ok(7, CmdAddInstance, inst("a", "i2", "10.0.0.2:80", nil))
	h.expect("a up i2/7 @7")

	cases := []struct {
		name string
		cmd  AddInstance
	}{
		{"addr", inst("a", "i2", "10.0.0.2:81", nil)},
		{"meta added", inst("a", "i2", "10.0.0.2:81", map[string]string{"a": "1"})},
		{"meta value", inst("a", "i2", "10.0.0.2:81", map[string]string{"a": "2"})},
		{"meta key", inst("a", "i2", "10.0.0.2:81", map[string]string{"b": "2"})},
		{"meta removed", inst("a", "i2", "10.0.0.2:81", nil)},
		{"proto", AddInstance{Service: "a", Instance: api.Instance{ID: "i2", Addr: "10.0.0.2:81", Proto: "udp"}}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			idx := uint64(10 + i)
			res := h.ok(idx, CmdAddInstance, c.cmd)
			if res.Instance.Index != 7 || res.Instance.Addr != c.cmd.Instance.Addr || res.Instance.Proto != c.cmd.Instance.Proto {
				t.Fatalf("updated instance %#v", res.Instance)
			}
			// An update of a non-leader: update event, index kept, no leader event.
			h.expect(fmt.Sprintf("a update i2/7 @%d", idx))
			got, _ := h.f.Instance("a", "i2")
			if got != res.Instance {
				t.Fatalf("stored %#v, result %#v", got, res.Instance)
			}
		})
	}
	h.t = t
	h.expectInstances("a", "i1/5", "i2/7")
	h.expectLeader("a", "i1/5")

	// Empty meta is the same registration as no meta.
	h.ok(20, CmdAddInstance, AddInstance{Service: "a", Instance: api.Instance{ID: "i2", Addr: "10.0.0.2:81", Proto: "udp", Meta: map[string]string{}}})
	h.expect()

	// No id: the default one.
	res = h.ok(21, CmdAddInstance, AddInstance{Service: "a", Instance: api.Instance{Addr: "10.0.0.3:80", Proto: "http"}})
	if want := api.DefaultInstanceID("http", "10.0.0.3:80"); res.Instance.ID != want {
		t.Fatalf("default id %q, want %q", res.Instance.ID, want)
	}
	h.expect(fmt.Sprintf("a up %s/21 @21", res.Instance.ID))

	h.fail(22, api.CodeNotFound, CmdAddInstance, inst("nope", "i1", "10.0.0.1:80", nil))
	bad := []struct {
		name string
		inst api.Instance
	}{
		{"no proto", api.Instance{ID: "x", Addr: "h:1"}},
		{"bad proto", api.Instance{ID: "x", Addr: "h:1", Proto: "TCP"}},
		{"proto with dash", api.Instance{ID: "x", Addr: "h:1", Proto: "t-cp"}},
		{"no addr", api.Instance{ID: "x", Proto: "tcp"}},
		{"addr without port", api.Instance{ID: "x", Addr: "h", Proto: "tcp"}},
		{"addr without host", api.Instance{ID: "x", Addr: ":80", Proto: "tcp"}},
		{"port 0", api.Instance{ID: "x", Addr: "h:0", Proto: "tcp"}},
		{"port too big", api.Instance{ID: "x", Addr: "h:65536", Proto: "tcp"}},
		{"port name", api.Instance{ID: "x", Addr: "h:http", Proto: "tcp"}},
		{"bad id", api.Instance{ID: "a b", Addr: "h:1", Proto: "tcp"}},
		{"long id", api.Instance{ID: strings.Repeat("x", 129), Addr: "h:1", Proto: "tcp"}},
		{"empty meta key", api.Instance{ID: "x", Addr: "h:1", Proto: "tcp", Meta: map[string]string{"": "v"}}},
		{"meta too big", api.Instance{ID: "x", Addr: "h:1", Proto: "tcp", Meta: map[string]string{"k": strings.Repeat("v", api.MaxMetaBytes)}}},
		// An invalid update of an existing instance is rejected too.
		{"bad update", api.Instance{ID: "i1", Addr: "10.0.0.1", Proto: "tcp"}},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			h.fail(uint64(30+i), api.CodeValidation, CmdAddInstance, AddInstance{Service: "a", Instance: c.inst})
		})
	}
	h.t = t
	h.expect()
	// The boundaries that are allowed.
	h.ok(50, CmdAddInstance, AddInstance{Service: "a", Instance: api.Instance{ID: strings.Repeat("x", 128), Addr: "[::1]:65535", Proto: "tcp"}})
	h.expect("a up " + strings.Repeat("x", 128) + "/50 @50")
}

func TestOldestLeader(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddService, addSvc("b", ""))
	h.expectLeader("a", "-")

	h.ok(10, CmdAddInstance, inst("a", "i1", "h:1", nil))
	h.expect("a up i1/10 @10", "a leader i1/10 @10")
	h.ok(11, CmdAddInstance, inst("a", "i2", "h:2", nil))
	h.ok(12, CmdAddInstance, inst("a", "i3", "h:3", nil))
	h.ok(13, CmdAddInstance, inst("b", "i1", "h:1", nil)) // same id, other service
	h.expect("a up i2/11 @11", "a up i3/12 @12", "b up i1/13 @13", "b leader i1/13 @13")

	// Update of the leader: update, no leader event, still the leader (new addr).
	h.ok(14, CmdAddInstance, inst("a", "i1", "h:9", nil))
	h.expect("a update i1/10 @14")
	if l, _ := h.f.Leader("a"); l.Addr != "h:9" || l.Index != 10 {
		t.Fatalf("leader after update %#v", l)
	}

	// Removing a non-leader: down only.
	h.ok(15, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i2"})
	h.expect("a down i2/11 @15")
	h.expectLeader("a", "i1/10")

	// Removing the leader: the next oldest.
	h.ok(16, CmdAddInstance, inst("a", "i4", "h:4", nil))
	h.ok(17, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i1"})
	h.expect("a up i4/16 @16", "a down i1/10 @17", "a leader i3/12 @17")

	// Re-registering the removed one makes it the youngest.
	h.ok(18, CmdAddInstance, inst("a", "i1", "h:1", nil))
	h.expect("a up i1/18 @18")
	h.expectInstances("a", "i3/12", "i4/16", "i1/18")

	h.fail(19, api.CodeNotFound, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i2"})
	h.fail(20, api.CodeNotFound, CmdRemoveInstance, RemoveInstance{Service: "nope", ID: "i1"})
	h.fail(21, api.CodeValidation, CmdSetLeader, SetLeader{Service: "a", ID: "i4"})

	h.ok(22, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i3"})
	h.ok(23, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i1"})
	h.ok(24, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i4"})
	h.expect("a down i3/12 @22", "a leader i4/16 @22", "a down i1/18 @23", "a down i4/16 @24", "a leader - @24")
	h.expectLeader("a", "-")
	h.expectInstances("a")
	h.expectLeader("b", "i1/13")

	// An empty service takes a new first instance as leader again.
	h.ok(25, CmdAddInstance, inst("a", "i5", "h:5", nil))
	h.expect("a up i5/25 @25", "a leader i5/25 @25")
}

func TestManualLeader(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("m", api.LeaderTypeManual))
	h.ok(2, CmdAddInstance, inst("m", "i1", "h:1", nil))
	h.ok(3, CmdAddInstance, inst("m", "i2", "h:2", nil))
	// No leader until one is set.
	h.expect("m up i1/2 @2", "m up i2/3 @3")
	h.expectLeader("m", "-")

	h.fail(4, api.CodeNotFound, CmdSetLeader, SetLeader{Service: "m", ID: "i9"})
	h.fail(5, api.CodeNotFound, CmdSetLeader, SetLeader{Service: "nope", ID: "i1"})
	h.fail(6, api.CodeNotFound, CmdSetLeader, SetLeader{Service: "m", ID: ""})

	h.ok(7, CmdSetLeader, SetLeader{Service: "m", ID: "i2"})
	h.expect("m leader i2/3 @7")
	h.expectLeader("m", "i2/3")
	// Setting the same leader again: nothing.
	h.ok(8, CmdSetLeader, SetLeader{Service: "m", ID: "i2"})
	h.expect()
	h.ok(9, CmdSetLeader, SetLeader{Service: "m", ID: "i1"})
	h.expect("m leader i1/2 @9")

	// Update of the leader: update only.
	h.ok(10, CmdAddInstance, inst("m", "i1", "h:11", nil))
	h.expect("m update i1/2 @10")
	h.expectLeader("m", "i1/2")
	// New instances and removal of a non-leader do not touch the leader.
	h.ok(11, CmdAddInstance, inst("m", "i3", "h:3", nil))
	h.ok(12, CmdRemoveInstance, RemoveInstance{Service: "m", ID: "i2"})
	h.expect("m up i3/11 @11", "m down i2/3 @12")
	h.expectLeader("m", "i1/2")

	// The leader removed: no leader, not the next oldest.
	h.ok(13, CmdRemoveInstance, RemoveInstance{Service: "m", ID: "i1"})
	h.expect("m down i1/2 @13", "m leader - @13")
	h.expectLeader("m", "-")
	// Coming back does not make it the leader again.
	h.ok(14, CmdAddInstance, inst("m", "i1", "h:1", nil))
	h.expect("m up i1/14 @14")
	h.expectLeader("m", "-")

	// The leader expired: the same.
	h.ok(15, CmdSetLeader, SetLeader{Service: "m", ID: "i3"})
	h.ok(16, CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{{Service: "m", ID: "i3", Index: 11}}})
	h.expect("m leader i3/11 @15", "m down i3/11 @16", "m leader - @16")

	// Removing the service with a leader: downs, then no leader.
	h.ok(17, CmdSetLeader, SetLeader{Service: "m", ID: "i1"})
	h.ok(18, CmdRemoveService, RemoveService{Service: "m"})
	h.expect("m leader i1/14 @17", "m down i1/14 @18", "m leader - @18")
}

func TestServiceMeta(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	meta := func(index uint64, data string) SetServiceMeta {
		return SetServiceMeta{Service: "a", Meta: api.ServiceMeta{Data: json.RawMessage(data), Index: index}}
	}

	h.fail(2, api.CodePreconditionFailed, CmdSetServiceMeta, meta(5, `{"v":0}`)) // none yet: only 0 creates
	h.fail(3, api.CodeNotFound, CmdSetServiceMeta, SetServiceMeta{Service: "nope", Meta: api.ServiceMeta{Data: json.RawMessage(`1`)}})
	// Data missing from the body is not JSON.
	h.failRaw(4, api.CodeValidation, append([]byte{byte(CmdSetServiceMeta)}, `{"service":"a","meta":{"index":0}}`...))

	res := h.ok(10, CmdSetServiceMeta, meta(0, `{"v":1}`))
	if res.Meta == nil || res.Meta.Index != 10 || string(res.Meta.Data) != `{"v":1}` {
		t.Fatalf("created meta %#v", res.Meta)
	}
	h.expect("a service_meta meta/10 @10")
	if m, _ := h.f.ServiceMeta("a"); m != res.Meta {
		t.Fatalf("stored meta %v", m)
	}

	h.fail(11, api.CodeExists, CmdSetServiceMeta, meta(0, `{"v":2}`))
	h.fail(12, api.CodePreconditionFailed, CmdSetServiceMeta, meta(9, `{"v":2}`))
	h.fail(13, api.CodePreconditionFailed, CmdSetServiceMeta, meta(11, `{"v":2}`))
	h.failRaw(14, api.CodeValidation, append([]byte{byte(CmdSetServiceMeta)}, `{"service":"a","meta":{"index":10}}`...))

	res = h.ok(15, CmdSetServiceMeta, meta(10, `{"v":2}`))
	if res.Meta.Index != 15 || string(res.Meta.Data) != `{"v":2}` {
		t.Fatalf("written meta %#v", res.Meta)
	}
	h.expect("a service_meta meta/15 @15")
	// The old index no longer matches.
	h.fail(16, api.CodePreconditionFailed, CmdSetServiceMeta, meta(10, `{"v":3}`))
	// Any JSON value is data.
	h.ok(17, CmdSetServiceMeta, meta(15, `null`))
	h.ok(18, CmdSetServiceMeta, meta(17, `"s"`))
	h.expect("a service_meta meta/17 @17", "a service_meta meta/18 @18")
	if m, _ := h.f.ServiceMeta("a"); m.Index != 18 || string(m.Data) != `"s"` {
		t.Fatalf("meta %s/%d", m.Data, m.Index)
	}
}

func TestExpireInstances(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddService, addSvc("b", ""))
	h.ok(3, CmdAddService, addSvc("c", ""))
	h.ok(4, CmdAddInstance, inst("a", "a1", "h:1", nil))
	h.ok(5, CmdAddInstance, inst("a", "a2", "h:2", nil))
	h.ok(6, CmdAddInstance, inst("a", "a3", "h:3", nil))
	h.ok(7, CmdAddInstance, inst("b", "b1", "h:1", nil))
	h.ok(8, CmdAddInstance, inst("b", "b2", "h:2", nil))
	h.ok(9, CmdAddInstance, inst("c", "c1", "h:1", nil))
	h.ok(10, CmdAddInstance, inst("c", "c2", "h:2", nil))
	// b2 re-registered since the check saw it at 8; c2 gone since.
	h.ok(11, CmdRemoveInstance, RemoveInstance{Service: "b", ID: "b2"})
	h.ok(12, CmdAddInstance, inst("b", "b2", "h:2", nil))
	h.ok(13, CmdRemoveInstance, RemoveInstance{Service: "c", ID: "c2"})
	// An updated registration keeps its index, so it still expires.
	h.ok(14, CmdAddInstance, inst("c", "c1", "h:9", nil))
	h.rec.take()
	if svcs, insts := h.f.Size(); svcs != 3 || insts != 6 {
		t.Fatalf("Size before expiry = %d services, %d instances; want 3, 6", svcs, insts)
	}

	res := h.ok(20, CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{
		{Service: "b", ID: "b1", Index: 7},    // b's leader
		{Service: "a", ID: "a2", Index: 5},    // not a's leader
		{Service: "b", ID: "b2", Index: 8},    // re-registered at 12: skipped
		{Service: "c", ID: "c2", Index: 10},   // already gone: skipped
		{Service: "a", ID: "a1", Index: 4},    // a's leader
		{Service: "nope", ID: "x", Index: 3},  // no such service: skipped
		{Service: "a", ID: "a1", Index: 4},    // twice in the batch: skipped the second time
		{Service: "c", ID: "c1", Index: 9},    // c's last
		{Service: "a", ID: "a9", Index: 0},    // never existed
		{Service: "a", ID: "a3", Index: 5000}, // index does not match
	}})
	if res.Instance != nil || res.Meta != nil || res.Expired != 4 {
		t.Fatalf("result %#v, want 4 expired and nothing else", res)
	}
	if svcs, insts := h.f.Size(); svcs != 3 || insts != 2 {
		t.Fatalf("Size after expiry = %d services, %d instances; want 3, 2", svcs, insts)
	}
	// All downs, in batch order, then one leader event per touched service
	// whose leader changed, in order of first touch.
	h.expect(
		"b down b1/7 @20",
		"a down a2/5 @20",
		"a down a1/4 @20",
		"c down c1/9 @20",
		"b leader b2/12 @20",
		"a leader a3/6 @20",
		"c leader - @20",
	)
	h.expectInstances("a", "a3/6")
	h.expectInstances("b", "b2/12")
	h.expectInstances("c")

	// A batch that matches nothing: applied, no events.
	if res := h.ok(21, CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{{Service: "a", ID: "a1", Index: 4}}}); res.Expired != 0 {
		t.Fatalf("a batch that matched nothing expired %d", res.Expired)
	}
	h.ok(22, CmdExpireInstances, ExpireInstances{})
	h.expect()
	// A batch that removes only non-leaders: downs only.
	h.ok(23, CmdAddInstance, inst("a", "a4", "h:4", nil))
	h.ok(24, CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{{Service: "a", ID: "a4", Index: 23}}})
	h.expect("a up a4/23 @23", "a down a4/23 @24")
	h.expectLeader("a", "a3/6")
}

// TestEventOrderAndIndex runs a mixed log and checks the complete event
// stream: log order, and each event with the index of its own entry.
func TestEventOrderAndIndex(t *testing.T) {
	h := newHarness(t)
	var all []string
	step := func(index uint64, t CommandType, body any, want ...string) {
		h.t.Helper()
		h.ok(index, t, body)
		h.expect(want...)
		all = append(all, want...)
	}
	step(100, CmdAddService, addSvc("s", ""))
	step(101, CmdAddInstance, inst("s", "x", "h:1", nil), "s up x/101 @101", "s leader x/101 @101")
	step(102, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n:1"}})
	step(105, CmdAddInstance, inst("s", "y", "h:2", nil), "s up y/105 @105")
	step(106, CmdSetServiceMeta, SetServiceMeta{Service: "s", Meta: api.ServiceMeta{Data: json.RawMessage(`{}`)}}, "s service_meta meta/106 @106")
	step(110, CmdAddInstance, inst("s", "y", "h:3", nil), "s update y/105 @110")
	step(111, CmdRemoveInstance, RemoveInstance{Service: "s", ID: "x"}, "s down x/101 @111", "s leader y/105 @111")
	step(112, CmdRemoveService, RemoveService{Service: "s"}, "s down y/105 @112", "s leader - @112")
	if len(all) != 9 {
		t.Fatalf("%d events", len(all))
	}
	if h.f.AppliedIndex() != 112 {
		t.Fatalf("applied %d", h.f.AppliedIndex())
	}
}

func TestNodes(t *testing.T) {
	h := newHarness(t)
	n1 := api.NodeInfo{Addr: "10.0.0.2:1111", NATSAddr: "10.0.0.2:4222", NATSCluster: "10.0.0.2:6222"}
	n2 := api.NodeInfo{Addr: "10.0.0.1:1111", NATSLeaf: "10.0.0.1:7422"}
	h.ok(1, CmdSetNode, SetNode{Node: n1})
	h.ok(2, CmdSetNode, SetNode{Node: n2})
	if got := h.f.Nodes(); !reflect.DeepEqual(got, []api.NodeInfo{n2, n1}) {
		t.Fatalf("Nodes() = %v", got)
	}
	// Setting again replaces the announcement.
	n1b := api.NodeInfo{Addr: n1.Addr, NATSAddr: "10.0.0.2:5222"}
	h.ok(3, CmdSetNode, SetNode{Node: n1b})
	if got := h.f.Nodes(); !reflect.DeepEqual(got, []api.NodeInfo{n2, n1b}) {
		t.Fatalf("Nodes() = %v", got)
	}
	h.fail(4, api.CodeValidation, CmdSetNode, SetNode{Node: api.NodeInfo{NATSAddr: "x:1"}})
	h.ok(5, CmdRemoveNode, RemoveNode{Addr: n2.Addr})
	if got := h.f.Nodes(); !reflect.DeepEqual(got, []api.NodeInfo{n1b}) {
		t.Fatalf("Nodes() = %v", got)
	}
	// Removing an unknown node is not an error and changes nothing.
	before := stateJSON(h.f)
	h.ok(6, CmdRemoveNode, RemoveNode{Addr: "nope:1"})
	if stateJSON(h.f) != before {
		t.Fatal("removing an unknown node changed the state")
	}
	h.ok(7, CmdRemoveNode, RemoveNode{Addr: n1.Addr})
	if got := h.f.Nodes(); len(got) != 0 {
		t.Fatalf("Nodes() = %v", got)
	}
	h.expect() // nodes produce no service events
}

func TestReads(t *testing.T) {
	h := newHarness(t)
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "i1", "h:1", nil))
	h.ok(3, CmdAddInstance, inst("a", "i2", "h:2", nil))
	h.ok(4, CmdSetServiceMeta, SetServiceMeta{Service: "a", Meta: api.ServiceMeta{Data: json.RawMessage(`1`)}})
	h.ok(5, CmdAddService, addSvc("b", ""))
	h.ok(6, CmdAddInstance, inst("b", "i1", "h:1", nil))
	h.ok(7, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "i1"})

	if i, err := h.f.Instance("a", "i1"); i != nil || err != nil {
		t.Fatalf("Instance of removed = %v, %v", i, err)
	}
	if i, err := h.f.Instance("a", "i2"); err != nil || i.Index != 3 {
		t.Fatalf("Instance = %v, %v", i, err)
	}

	var prelude []string
	h.f.CurrentState("a", api.AllKinds, func(p []api.Event) { prelude = fmtEvents(p) })
	want := []string{"a up i2/3 @7", "a leader i2/3 @7", "a service_meta meta/4 @7", "a current - @7"}
	if !reflect.DeepEqual(prelude, want) {
		t.Fatalf("prelude %v, want %v", prelude, want)
	}
	h.f.CurrentState("b", api.Mask(api.EventLeader), func(p []api.Event) { prelude = fmtEvents(p) })
	if want := []string{"b leader i1/6 @7", "b current - @7"}; !reflect.DeepEqual(prelude, want) {
		t.Fatalf("prelude %v, want %v", prelude, want)
	}
	// No empty leader or meta in a prelude; an unknown service is current alone.
	h.ok(8, CmdRemoveInstance, RemoveInstance{Service: "b", ID: "i1"})
	h.f.CurrentState("b", api.AllKinds, func(p []api.Event) { prelude = fmtEvents(p) })
	if want := []string{"b current - @8"}; !reflect.DeepEqual(prelude, want) {
		t.Fatalf("prelude of a service with no leader and no meta %v, want %v", prelude, want)
	}
	h.f.CurrentState("nope", api.AllKinds, func(p []api.Event) { prelude = fmtEvents(p) })
	if want := []string{"nope current - @8"}; !reflect.DeepEqual(prelude, want) {
		t.Fatalf("prelude of an unknown service %v, want %v", prelude, want)
	}
}

// TestStoredValuesImmutable holds on to the instances and meta that events
// and results handed out, as subscribers do, and checks that no later entry,
// compaction or restore modifies them.
func TestStoredValuesImmutable(t *testing.T) {
	h := newHarness(t)
	var held []api.Event
	h.f.sink = func(evs []api.Event) { held = append(held, evs...) }
	h.ok(1, CmdAddService, addSvc("a", ""))
	var results []*Result
	for i := 0; i < 40; i++ {
		results = append(results, h.ok(uint64(10+i), CmdAddInstance, inst("a", fmt.Sprint("x", i), "h:1", map[string]string{"k": "1"})))
	}
	results = append(results, h.ok(60, CmdSetServiceMeta, meta("a", 0, `{"v":1}`)))
	if len(held) != 42 { // 40 ups, 1 leader, 1 meta
		t.Fatalf("%d events", len(held))
	}
	handedOut := func() string {
		b, err := json.Marshal(struct {
			E []api.Event
			R []*Result
		}{held[:42], results})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	want := handedOut()

	for i := 0; i < 40; i++ {
		h.ok(uint64(100+i), CmdAddInstance, inst("a", fmt.Sprint("x", i), "h:2", map[string]string{"k": "2"}))
	}
	h.ok(200, CmdSetServiceMeta, meta("a", 60, `{"v":2}`))
	for i := 0; i < 30; i++ { // enough holes to compact
		h.ok(uint64(300+i), CmdRemoveInstance, RemoveInstance{Service: "a", ID: fmt.Sprint("x", i)})
	}
	other := newHarness(t)
	other.ok(1, CmdAddService, addSvc("a", ""))
	other.ok(2, CmdAddInstance, inst("a", "x35", "h:3", nil))
	if err := restore(t, h.f, persist(t, other.f)); err != nil {
		t.Fatal(err)
	}
	if got := handedOut(); got != want {
		t.Fatalf("values handed out were modified\nbefore: %s\nafter:  %s", want, got)
	}
}
