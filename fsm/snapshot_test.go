package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/discoverd/discoverd/api"
	"github.com/hashicorp/raft"
)

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	failWrite bool
	closed    bool
	cancelled bool
}

func (s *memSink) ID() string { return "mem" }

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrite {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}

func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// readCloser records whether Restore closed it.
type readCloser struct {
	io.Reader
	closed bool
}

func (r *readCloser) Close() error { r.closed = true; return nil }

func persist(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v, cancelled %v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func restore(t testing.TB, f *FSM, b []byte) error {
	t.Helper()
	rc := &readCloser{Reader: bytes.NewReader(b)}
	err := f.Restore(rc)
	if !rc.closed {
		t.Fatal("Restore did not close its reader")
	}
	return err
}

// fullState is stateJSON with the applied index.
func fullState(f *FSM) string {
	b, err := json.Marshal(f.capture())
	if err != nil {
		panic(err)
	}
	return string(b)
}

func meta(service string, index uint64, data string) SetServiceMeta {
	return SetServiceMeta{Service: service, Meta: api.ServiceMeta{Data: json.RawMessage(data), Index: index}}
}

// buildCommon applies the history the old and the new state of
// TestRestoreDiff share, entries 1-12.
func buildCommon(h *harness) {
	h.ok(1, CmdAddService, addSvc("a", ""))
	h.ok(2, CmdAddInstance, inst("a", "a1", "h:1", nil))
	h.ok(3, CmdAddInstance, inst("a", "a2", "h:2", map[string]string{"k": "v"}))
	h.ok(4, CmdAddInstance, inst("a", "a3", "h:3", nil))
	h.ok(5, CmdAddInstance, inst("a", "a4", "h:4", nil))
	h.ok(6, CmdAddService, addSvc("b", api.LeaderTypeManual))
	h.ok(7, CmdAddInstance, inst("b", "b1", "h:1", nil))
	h.ok(8, CmdAddInstance, inst("b", "b2", "h:2", nil))
	h.ok(9, CmdSetLeader, SetLeader{Service: "b", ID: "b1"})
	h.ok(10, CmdAddService, addSvc("gone", ""))
	h.ok(11, CmdAddInstance, inst("gone", "g1", "h:1", nil))
	h.ok(12, CmdSetServiceMeta, meta("a", 0, `{"v":1}`))
	h.ok(13, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n1:1111", NATSAddr: "n1:4222"}})
	h.ok(14, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n2:1111", NATSAddr: "n2:4222"}})
	h.ok(15, CmdAddService, addSvc("same", ""))
	h.ok(16, CmdAddInstance, inst("same", "s1", "h:1", nil))
	h.ok(17, CmdSetServiceMeta, meta("same", 0, `1`))
	h.ok(18, CmdAddService, addSvc("d", ""))
	h.ok(19, CmdSetServiceMeta, meta("d", 0, `1`))
}

// buildNew moves the shared history on, as a node that was behind would
// find it in the leader's snapshot.
func buildNew(h *harness) {
	h.ok(20, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "a1"})           // a's leader: a2 next
	h.ok(21, CmdAddInstance, inst("a", "a3", "h:33", nil))                        // updated
	h.ok(22, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "a4"})           // re-registered...
	h.ok(23, CmdAddInstance, inst("a", "a4", "h:4", nil))                         // ...at 23
	h.ok(24, CmdAddInstance, inst("a", "a5", "h:5", nil))                         // new
	h.ok(25, CmdSetLeader, SetLeader{Service: "b", ID: "b2"})                     // manual leader moved
	h.ok(26, CmdRemoveService, RemoveService{Service: "gone"})                    // service gone
	h.ok(27, CmdAddService, addSvc("c", ""))                                      // new service
	h.ok(28, CmdAddInstance, inst("c", "c1", "h:1", nil))                         //
	h.ok(29, CmdSetServiceMeta, meta("a", 12, `{"v":2}`))                         // meta changed
	h.ok(30, CmdSetServiceMeta, meta("c", 0, `{}`))                               // meta new
	h.ok(31, CmdRemoveNode, RemoveNode{Addr: "n1:1111"})                          //
	h.ok(32, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n3:1111"}})            //
	h.ok(33, CmdRemoveService, RemoveService{Service: "d"})                       // meta gone with its service
	h.ok(34, CmdAddService, addSvc("d", ""))                                      // and back, without
	h.ok(35, CmdAddInstance, inst("b", "b3", "h:3", nil))                         // a non-leader of a manual service
	h.ok(36, CmdRemoveInstance, RemoveInstance{Service: "b", ID: "b3"})           // came and went: nothing
	h.ok(37, CmdAddService, addSvc("empty", api.LeaderTypeManual))                // new, empty: nothing
	h.ok(38, CmdAddInstance, inst("same", "s1", "h:1", nil))                      // unchanged
	h.ok(39, CmdExpireInstances, ExpireInstances{Instances: nil})                 // nothing
	h.ok(40, CmdAddInstance, inst("a", "a2", "h:2", map[string]string{"k": "v"})) // unchanged
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newHarness(t)
	buildCommon(src)
	buildNew(src)
	snap := persist(t, src.f)

	dst := newHarness(t)
	if err := restore(t, dst.f, snap); err != nil {
		t.Fatal(err)
	}
	if got, want := fullState(dst.f), fullState(src.f); got != want {
		t.Fatalf("restored state differs\n got: %s\nwant: %s", got, want)
	}
	if dst.f.AppliedIndex() != 40 {
		t.Fatalf("applied index %d", dst.f.AppliedIndex())
	}
	// Into an empty FSM: everything is new.
	dst.expect(
		"a up a2/3 @40", "a up a3/4 @40", "a up a4/23 @40", "a up a5/24 @40", "a leader a2/3 @40", "a service_meta meta/29 @40",
		"b up b1/7 @40", "b up b2/8 @40", "b leader b2/8 @40",
		"c up c1/28 @40", "c leader c1/28 @40", "c service_meta meta/30 @40",
		"same up s1/16 @40", "same leader s1/16 @40", "same service_meta meta/17 @40",
	)
	if dst.rec.calls != 1 {
		t.Fatalf("restore called the sink %d times", dst.rec.calls)
	}
	// Every read agrees.
	for _, name := range src.f.Services() {
		if a, b := src.leader(name), dst.leader(name); a != b {
			t.Fatalf("%s: leader %s, restored %s", name, a, b)
		}
		if a, b := src.instances(name), dst.instances(name); !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: instances %v, restored %v", name, a, b)
		}
		ca, _ := src.f.ServiceConfig(name)
		cb, _ := dst.f.ServiceConfig(name)
		if ca != cb {
			t.Fatalf("%s: config %v, restored %v", name, ca, cb)
		}
	}
	if a, b := src.f.Nodes(), dst.f.Nodes(); !reflect.DeepEqual(a, b) {
		t.Fatalf("nodes %v, restored %v", a, b)
	}
	checkAllServices(t, dst.f)

	// Restoring the same state again: no events.
	if err := restore(t, dst.f, snap); err != nil {
		t.Fatal(err)
	}
	dst.expect()
	// And the snapshot of the restored state is the same snapshot.
	if again := persist(t, dst.f); !bytes.Equal(again, snap) {
		t.Fatalf("snapshot of restored state differs\n got: %s\nwant: %s", again, snap)
	}

	// Both go on identically: same events, same state, same CAS answers.
	src.rec.take()
	for _, h := range []*harness{src, dst} {
		h.ok(41, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "a2"})
		h.ok(42, CmdAddInstance, inst("a", "a6", "h:6", nil))
		h.ok(43, CmdRemoveInstance, RemoveInstance{Service: "b", ID: "b2"})
		h.fail(44, api.CodePreconditionFailed, CmdSetServiceMeta, meta("a", 12, `3`))
		h.ok(45, CmdSetServiceMeta, meta("a", 29, `3`))
		h.fail(46, api.CodeExists, CmdAddService, addSvc("c", ""))
		h.ok(47, CmdExpireInstances, ExpireInstances{Instances: []ExpiredInstance{{Service: "a", ID: "a3", Index: 4}, {Service: "c", ID: "c1", Index: 28}}})
		h.expect(
			"a down a2/3 @41", "a leader a3/4 @41",
			"a up a6/42 @42",
			"b down b2/8 @43", "b leader - @43",
			"a service_meta meta/45 @45",
			"a down a3/4 @47", "c down c1/28 @47", "a leader a4/23 @47", "c leader - @47",
		)
	}
	if a, b := fullState(src.f), fullState(dst.f); a != b {
		t.Fatalf("states diverged\n src: %s\n dst: %s", a, b)
	}
}

func TestRestoreDiff(t *testing.T) {
	newer := newHarness(t)
	buildCommon(newer)
	buildNew(newer)
	snap := persist(t, newer.f)

	old := newHarness(t)
	buildCommon(old)
	old.rec.take()
	if err := restore(t, old.f, snap); err != nil {
		t.Fatal(err)
	}
	// Services in name order; for each: downs of vanished instances, then
	// ups, updates and down+up of re-registrations in order of index, then
	// the leader change, then meta. All at the snapshot's index.
	old.expect(
		"a down a1/2 @40",
		"a update a3/4 @40",
		"a down a4/5 @40", "a up a4/23 @40",
		"a up a5/24 @40",
		"a leader a2/3 @40",
		"a service_meta meta/29 @40",
		"b leader b2/8 @40",
		"c up c1/28 @40",
		"c leader c1/28 @40",
		"c service_meta meta/30 @40",
		"gone down g1/11 @40",
		"gone leader - @40",
	)
	if a, b := fullState(old.f), fullState(newer.f); a != b {
		t.Fatalf("restored state differs\n got: %s\nwant: %s", a, b)
	}
	if got := old.f.Nodes(); len(got) != 2 || got[0].Addr != "n2:1111" || got[1].Addr != "n3:1111" {
		t.Fatalf("nodes %v", got)
	}
	if m, _ := old.f.ServiceMeta("d"); m != nil {
		t.Fatalf("meta of d survived its service: %v", m)
	}
	checkAllServices(t, old.f)
}

// TestRestoreDiffBackwards restores an older snapshot over a newer state, as
// happens when a node's state is replaced wholesale: the same rules apply.
func TestRestoreDiffBackwards(t *testing.T) {
	older := newHarness(t)
	buildCommon(older)
	snap := persist(t, older.f)

	h := newHarness(t)
	buildCommon(h)
	buildNew(h)
	h.rec.take()
	if err := restore(t, h.f, snap); err != nil {
		t.Fatal(err)
	}
	h.expect(
		"a down a5/24 @19",
		"a up a1/2 @19",
		"a update a3/4 @19",
		"a down a4/23 @19", "a up a4/5 @19",
		"a leader a1/2 @19",
		"a service_meta meta/12 @19",
		"b leader b1/7 @19",
		"c down c1/28 @19",
		"c leader - @19",
		// d's meta came back with the old snapshot.
		"d service_meta meta/19 @19",
		"gone up g1/11 @19",
		"gone leader g1/11 @19",
	)
	if a, b := fullState(h.f), fullState(older.f); a != b {
		t.Fatalf("restored state differs\n got: %s\nwant: %s", a, b)
	}
	if got := h.f.Services(); !reflect.DeepEqual(got, []string{"a", "b", "d", "gone", "same"}) {
		t.Fatalf("services %v", got)
	}
}

// TestRestoreReRegisteredLeader: the leader has the same id in both states
// but is another registration, so subscribers must hear of a new leader
// (its index is the fencing token).
func TestRestoreReRegisteredLeader(t *testing.T) {
	common := func(h *harness) {
		h.ok(1, CmdAddService, addSvc("o", ""))
		h.ok(2, CmdAddInstance, inst("o", "x", "h:1", nil))
		h.ok(3, CmdAddService, addSvc("m", api.LeaderTypeManual))
		h.ok(4, CmdAddInstance, inst("m", "y", "h:1", nil))
		h.ok(5, CmdSetLeader, SetLeader{Service: "m", ID: "y"})
	}
	old := newHarness(t)
	common(old)
	newer := newHarness(t)
	common(newer)
	newer.ok(6, CmdRemoveInstance, RemoveInstance{Service: "o", ID: "x"})
	newer.ok(7, CmdAddInstance, inst("o", "x", "h:1", nil))
	newer.ok(8, CmdRemoveInstance, RemoveInstance{Service: "m", ID: "y"})
	newer.ok(9, CmdAddInstance, inst("m", "y", "h:1", nil))
	newer.ok(10, CmdSetLeader, SetLeader{Service: "m", ID: "y"})
	old.rec.take()
	if err := restore(t, old.f, persist(t, newer.f)); err != nil {
		t.Fatal(err)
	}
	old.expect(
		"m down y/4 @10", "m up y/9 @10", "m leader y/9 @10",
		"o down x/2 @10", "o up x/7 @10", "o leader x/7 @10",
	)
}

func TestRestoreLeaderTypeChange(t *testing.T) {
	// The same service name, now manual with no leader set.
	a := newHarness(t)
	a.ok(1, CmdAddService, addSvc("s", ""))
	a.ok(2, CmdAddInstance, inst("s", "x", "h:1", nil))
	b := newHarness(t)
	b.ok(1, CmdAddService, addSvc("s", api.LeaderTypeManual))
	b.ok(2, CmdAddInstance, inst("s", "x", "h:1", nil))
	b.ok(3, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n:1"}})
	a.rec.take()
	if err := restore(t, a.f, persist(t, b.f)); err != nil {
		t.Fatal(err)
	}
	a.expect("s leader - @3")
	cfg, _ := a.f.ServiceConfig("s")
	if cfg.LeaderType != api.LeaderTypeManual {
		t.Fatalf("config %v", cfg)
	}
}

func TestRestoreHandWritten(t *testing.T) {
	// Instances out of order, a manual leader that is not an instance, and
	// an unknown field: restored in order, the leader dropped.
	snap := `{"index":50,"services":[
		{"name":"m","config":{"leader_type":"manual"},"instances":[
			{"id":"y","addr":"h:2","proto":"tcp","index":30},
			{"id":"x","addr":"h:1","proto":"tcp","index":20}],"manual_leader":"nope"},
		{"name":"o","config":{"leader_type":"oldest"},"instances":[
			{"id":"c","addr":"h:3","proto":"tcp","index":40},
			{"id":"a","addr":"h:1","proto":"tcp","index":10},
			{"id":"b","addr":"h:2","proto":"tcp","index":25}],"future":true}],
		"nodes":[{"addr":"n:1"}]}`
	h := newHarness(t)
	if err := restore(t, h.f, []byte(snap)); err != nil {
		t.Fatal(err)
	}
	h.expect("m up x/20 @50", "m up y/30 @50", "o up a/10 @50", "o up b/25 @50", "o up c/40 @50", "o leader a/10 @50")
	h.expectInstances("o", "a/10", "b/25", "c/40")
	h.expectLeader("m", "-")
	checkAllServices(t, h.f)
	if h.f.AppliedIndex() != 50 {
		t.Fatalf("applied %d", h.f.AppliedIndex())
	}
	// New entries go on from there.
	h.ok(51, CmdAddInstance, inst("o", "d", "h:4", nil))
	h.ok(52, CmdRemoveInstance, RemoveInstance{Service: "o", ID: "a"})
	h.expect("o up d/51 @51", "o down a/10 @52", "o leader b/25 @52")
	checkAllServices(t, h.f)
}

func TestRestoreErrors(t *testing.T) {
	h := newHarness(t)
	buildCommon(h)
	h.rec.take()
	before := fullState(h.f)
	for _, bad := range []string{"", "garbage", `{"index":`, `{"index":"x"}`, `[1,2]`} {
		if err := restore(t, h.f, []byte(bad)); err == nil {
			t.Fatalf("Restore(%q) succeeded", bad)
		}
		h.expect()
		if fullState(h.f) != before {
			t.Fatalf("failed Restore(%q) changed the state", bad)
		}
	}

	// A sink that fails: Persist reports it and cancels the sink.
	snap, _ := h.f.Snapshot()
	sink := &memSink{failWrite: true}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist into a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("failing sink: cancelled %v, closed %v", sink.cancelled, sink.closed)
	}
}

// TestSnapshotWhileApplying persists a snapshot while entries keep being
// applied (run with -race): the snapshot holds the state at the moment it
// was taken.
func TestSnapshotWhileApplying(t *testing.T) {
	h := newHarness(t)
	buildCommon(h)
	want := fullState(h.f)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sink := &memSink{}
	var perr error
	start := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		perr = snap.Persist(sink)
	}()
	close(start)
	idx := uint64(100)
	for i := 0; i < 300; i++ {
		h.ok(idx, CmdAddInstance, inst("a", "a1", "h:"+strings.Repeat("1", 1+i%4), map[string]string{"i": string(rune('a' + i%26))}))
		h.ok(idx+1, CmdSetServiceMeta, meta("a", func() uint64 { m, _ := h.f.ServiceMeta("a"); return m.Index }(), `2`))
		h.ok(idx+2, CmdRemoveInstance, RemoveInstance{Service: "a", ID: "a2"})
		h.ok(idx+3, CmdAddInstance, inst("a", "a2", "h:2", nil))
		idx += 4
	}
	wg.Wait()
	if perr != nil {
		t.Fatal(perr)
	}
	got := strings.TrimSuffix(sink.String(), "\n")
	if got != want {
		t.Fatalf("persisted\n %s\nwant\n %s", got, want)
	}
}

// Persist streams the snapshot one instance at a time; the bytes are those
// json.Encoder writes for the whole state, which Restore reads.
func TestPersistStreamsTheEncoding(t *testing.T) {
	h := newHarness(t)
	buildCommon(h)
	idx := uint64(100)
	h.ok(idx, CmdAddService, addSvc("big", ""))
	for i := 0; i < 3000; i++ {
		idx++
		h.ok(idx, CmdAddInstanceCompact, inst("big", fmt.Sprintf("i%d", i), fmt.Sprintf("10.0.%d.%d:80", i/256, i%256),
			map[string]string{"zone": "z<" + strings.Repeat("x", i%50) + ">", "n": fmt.Sprint(i)}))
	}
	h.ok(idx+1, CmdSetNode, SetNode{Node: api.NodeInfo{Addr: "n:1111", NATSAddr: "n:4222"}})
	for _, f := range []*FSM{New(nil), h.f} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(f.capture()); err != nil {
			t.Fatal(err)
		}
		got := persist(t, f)
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("persisted %d bytes, json.Encoder %d; they differ", len(got), want.Len())
		}
		g := New(nil)
		if err := restore(t, g, got); err != nil {
			t.Fatal(err)
		}
		if a, b := fullState(g), fullState(f); a != b {
			t.Fatalf("restored state differs:\n%s\n%s", a, b)
		}
	}
}

// BenchmarkPersist writes a snapshot of 100,000 instances: the streamed
// encoding against encoding the whole state at once (what Persist did
// before), to compare the memory each takes. Run it with -benchtime 1x:
// in a loop, encoding/json reuses its pooled buffer, which between real
// snapshots (minutes apart) the GC has long dropped. Both write into an
// 8 MiB sink buffer.
func BenchmarkPersist(b *testing.B) {
	f := New(nil)
	f.ApplyCommand(1, MustEncode(CmdAddService, addSvc("big", "")))
	for i := 0; i < 100_000; i++ {
		f.ApplyCommand(uint64(2+i), EncodeAddInstance("big", &api.Instance{ID: fmt.Sprintf("m-%d", i), Addr: fmt.Sprintf("10.%d.%d.%d:1024", i>>16&255, i>>8&255, i&255), Proto: "http"}))
	}
	b.Run("streamed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			snap, _ := f.Snapshot()
			if err := snap.Persist(&memSink{Buffer: *bytes.NewBuffer(make([]byte, 0, 8<<20))}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			st := f.capture()
			if err := json.NewEncoder(&memSink{Buffer: *bytes.NewBuffer(make([]byte, 0, 8<<20))}).Encode(st); err != nil {
				b.Fatal(err)
			}
		}
	})
}
