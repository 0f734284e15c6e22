package history

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

const ttl = 5 * time.Second

var cfg = Config{TTL: ttl, Timeout: 10 * time.Second}

// reg is a Register of instance id of service "s" over [call, ret] answered
// with index (0: unknown outcome).
func reg(client int, id string, call, ret float64, index uint64) Op {
	op := Op{Client: client, Kind: Register, Service: "s", Instance: id, Reg: "10.0.0.1:80|tcp", Call: at(call), Return: at(ret)}
	if index == 0 {
		op.Outcome, op.Code = Unknown, api.CodeUnavailable
		return op
	}
	op.Outcome, op.Index = OK, index
	op.Instances = []Inst{{ID: id, Index: index, Reg: op.Reg}}
	return op
}

func read(client int, call, ret float64, present ...Inst) Op {
	return Op{Client: client, Kind: ReadInstances, Service: "s", Call: at(call), Return: at(ret), Outcome: OK, Instances: present}
}

func inst(id string, index uint64) Inst { return Inst{ID: id, Index: index, Reg: "10.0.0.1:80|tcp"} }

func setMeta(client int, data string, expect uint64, call, ret float64, outcome Outcome, code api.ErrorCode, index uint64) Op {
	return Op{Client: client, Kind: SetMeta, Service: "s", MetaData: data, MetaExpect: expect, Call: at(call), Return: at(ret), Outcome: outcome, Code: code, Index: index}
}

func getMeta(client int, call, ret float64, data string, index uint64) Op {
	op := Op{Client: client, Kind: GetMeta, Service: "s", Call: at(call), Return: at(ret), Outcome: OK, MetaData: data, Index: index}
	if data == "" {
		op.Outcome, op.Code = Failed, api.CodeNotFound
	}
	return op
}

// heartbeats are acknowledged heartbeats of id every second over [from, to].
func heartbeats(client int, id string, from, to float64, index uint64) []Op {
	var out []Op
	for s := from; s <= to; s++ {
		out = append(out, reg(client, id, s, s+0.1, index))
	}
	return out
}

func mustPass(t *testing.T, ops []Op) {
	t.Helper()
	if rep := Check(ops, cfg); len(rep.Problems) > 0 {
		t.Fatalf("a correct history was rejected:\n%s", strings.Join(rep.Problems, "\n"))
	}
}

func mustFail(t *testing.T, ops []Op, want string) {
	t.Helper()
	rep := Check(ops, cfg)
	if len(rep.Problems) == 0 {
		t.Fatalf("a history that is not linearizable passed")
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), want) {
		t.Fatalf("problems do not mention %q:\n%s", want, strings.Join(rep.Problems, "\n"))
	}
	t.Logf("rejected as expected:\n%s", strings.Join(rep.Problems, "\n"))
}

func TestLinearizableHistoryPasses(t *testing.T) {
	ops := heartbeats(1, "a", 0, 12, 5)
	ops = append(ops, heartbeats(2, "b", 0.5, 12.5, 7)...)
	ops = append(ops,
		// b's registration raced with this read: either answer is fine.
		read(3, 0.4, 0.6, inst("a", 5)),
		read(3, 1, 1.2, inst("a", 5), inst("b", 7)),
		setMeta(4, `{"v":1}`, 0, 1, 1.5, OK, "", 8),
		// A write whose answer was lost, then the retry loses the CAS.
		setMeta(4, `{"v":2}`, 8, 2, 2.5, Unknown, api.CodeUnavailable, 0),
		setMeta(4, `{"v":2}`, 8, 2.6, 2.8, Failed, api.CodePreconditionFailed, 0),
		getMeta(5, 3, 3.1, `{"v":2}`, 9),
		setMeta(4, `{"v":3}`, 9, 4, 4.5, OK, "", 11),
		// Concurrent with the write above: the old value is fine.
		getMeta(5, 4.1, 4.2, `{"v":2}`, 9),
		getMeta(5, 5, 5.1, `{"v":3}`, 11),
		setMeta(6, `{"v":4}`, 0, 5, 5.1, Failed, api.CodeExists, 0),
		read(3, 12.6, 12.7, inst("a", 5), inst("b", 7)),
		getMeta(5, 12.6, 12.7, `{"v":3}`, 11),
	)
	mustPass(t, ops)
}

func TestLostAcknowledgedRegistrationFails(t *testing.T) {
	// a heartbeats every second (TTL 5s) and is acknowledged each time,
	// yet a read after its registration does not see it.
	ops := heartbeats(1, "a", 0, 12, 5)
	ops = append(ops, read(2, 6, 6.2), read(2, 12.5, 12.6))
	mustFail(t, ops, "s/instances/a: not linearizable")
}

func TestLostAcknowledgedMetaWriteFails(t *testing.T) {
	ops := []Op{
		setMeta(1, `{"v":1}`, 0, 0, 0.5, OK, "", 6),
		setMeta(1, `{"v":2}`, 6, 1, 1.5, OK, "", 8),
		// The second write was acknowledged, but the cluster forgot it.
		getMeta(2, 2, 2.1, `{"v":1}`, 6),
	}
	mustFail(t, ops, "s/meta: not linearizable")
}

func TestMetaCASThatShouldHaveSucceededFails(t *testing.T) {
	ops := []Op{
		setMeta(1, `{"v":1}`, 0, 0, 0.5, OK, "", 6),
		setMeta(1, `{"v":2}`, 6, 1, 1.5, Failed, api.CodePreconditionFailed, 0),
		getMeta(2, 2, 2.1, `{"v":1}`, 6),
	}
	mustFail(t, ops, "s/meta: not linearizable")
}

func TestStaleReadAfterDeregistrationFails(t *testing.T) {
	ops := heartbeats(1, "a", 0, 2, 5)
	ops = append(ops,
		Op{Client: 1, Kind: Deregister, Service: "s", Instance: "a", Call: at(2.5), Return: at(2.6), Outcome: OK},
		read(2, 3, 3.1, inst("a", 5)),
	)
	mustFail(t, ops, "s/instances/a: not linearizable")
}

func TestExpiryAfterHeartbeatGapPasses(t *testing.T) {
	// a is acknowledged at 0 and 1, then its heartbeats stop: by 6.x the
	// server may have expired it; it comes back with a new index.
	ops := heartbeats(1, "a", 0, 1, 5)
	ops = append(ops,
		read(2, 3, 3.1, inst("a", 5)),
		read(2, 7, 7.1),
		reg(1, "a", 8, 8.1, 12),
		read(2, 9, 9.1, inst("a", 12)),
	)
	mustPass(t, ops)
}

func TestExpiryWithoutGapFails(t *testing.T) {
	// The same, but a kept heartbeating: the server must not expire it.
	ops := heartbeats(1, "a", 0, 10, 5)
	ops = append(ops, read(2, 7, 7.1))
	mustFail(t, ops, "s/instances/a: not linearizable")
	if from := ExpiryFrom(ops, "s", "a", cfg); !from.After(at(10)) {
		t.Fatalf("ExpiryFrom = %v, want after the last heartbeat", from)
	}
}

func TestDiscountedHeartbeatsDoNotProtect(t *testing.T) {
	// Heartbeats answered by a node cut off from the majority do not keep
	// the instance alive there: from 1.5 s on they all went to such a node,
	// so the majority may expire the instance by 6 s.
	ops := heartbeats(1, "a", 0, 6, 5)
	for i := range ops {
		if ops[i].Call.After(at(1.5)) {
			ops[i].Node = "isolated"
		}
	}
	ops = append(ops, read(2, 7, 7.1))
	mustFail(t, ops, "s/instances/a: not linearizable")
	c := cfg
	c.Discount = func(op *Op) bool { return op.Node == "isolated" }
	if rep := Check(ops, c); len(rep.Problems) > 0 {
		t.Fatalf("rejected:\n%s", strings.Join(rep.Problems, "\n"))
	}
}

func TestUnknownRegistrationMayOrMayNotApply(t *testing.T) {
	for _, later := range [][]Inst{nil, {inst("a", 9)}} {
		ops := []Op{reg(1, "a", 0, 0.1, 0), read(2, 1, 1.1, later...)}
		mustPass(t, ops)
	}
	// But once seen, an instance cannot vanish without a gap... here the
	// only registration is unknown, so the server may expire it after a TTL.
	ops := []Op{reg(1, "a", 0, 0.1, 0), read(2, 1, 1.1, inst("a", 9)), read(2, 2, 2.1)}
	mustFail(t, ops, "s/instances/a")
}

func TestUnwatchedInstanceMayComeBackUnrecorded(t *testing.T) {
	// a heartbeats over NATS (not recorded): it may expire at any time, and
	// a NATS heartbeat may register it again, seen first in a read.
	ops := []Op{
		reg(1, "a", 0, 0.1, 5),
		read(2, 1, 1.1),
		read(2, 2, 2.1, inst("a", 9)),
		reg(1, "a", 3, 3.1, 9),
		read(2, 4, 4.1, inst("a", 9)),
	}
	mustFail(t, ops, "s/instances/a")
	c := cfg
	c.Unwatched = func(service, id string) bool { return id == "a" }
	if rep := Check(ops, c); len(rep.Problems) > 0 {
		t.Fatalf("rejected:\n%s", strings.Join(rep.Problems, "\n"))
	}
	// But not with an index it had before it was gone, nor with an older
	// one than a later read shows.
	for _, bad := range [][]Op{
		{reg(1, "a", 0, 0.1, 5), read(2, 1, 1.1), read(2, 2, 2.1, inst("a", 5))},
		{reg(1, "a", 0, 0.1, 5), read(2, 1, 1.1), read(2, 2, 2.1, inst("a", 9)), read(2, 3, 3.1, inst("a", 7))},
	} {
		if rep := Check(bad, c); len(rep.Problems) == 0 {
			t.Fatalf("accepted: %v", bad)
		}
	}
}

func TestSharedIndexFails(t *testing.T) {
	ops := append(heartbeats(1, "a", 0, 1, 5), heartbeats(2, "b", 0, 1, 5)...)
	mustFail(t, ops, "index 5 acknowledged for both")
}

func TestMetaIndexesFollowRealTime(t *testing.T) {
	ops := []Op{
		setMeta(1, `{"v":1}`, 0, 0, 0.5, OK, "", 9),
		setMeta(2, `{"v":2}`, 9, 1, 1.5, OK, "", 7),
	}
	mustFail(t, ops, "its index is not lower")
}

func ev(kind api.EventKind, index uint64, id string, instIndex uint64) api.Event {
	e := api.Event{Service: "s", Kind: kind, Index: index}
	if id != "" {
		e.Instance = &api.Instance{ID: id, Addr: "10.0.0.1:80", Proto: "tcp", Index: instIndex}
	}
	return e
}

func TestCheckStream(t *testing.T) {
	good := []api.Event{
		ev(api.EventUp, 10, "a", 5), ev(api.EventUp, 10, "b", 7), ev(api.EventLeader, 10, "a", 5), ev(api.EventCurrent, 10, "", 0),
		ev(api.EventUp, 11, "c", 11),
		// One expiry entry: two downs and the new leader.
		ev(api.EventDown, 12, "a", 5), ev(api.EventDown, 12, "b", 7), ev(api.EventLeader, 12, "c", 11),
		// A reconciliation: c was registered anew while the watcher was away.
		ev(api.EventDown, 20, "c", 11), ev(api.EventUp, 20, "c", 18), ev(api.EventLeader, 20, "c", 18),
	}
	if p := CheckStream(good); len(p) > 0 {
		t.Fatalf("good stream rejected: %v", p)
	}
	bad := map[string][]api.Event{
		"went back":          {ev(api.EventUp, 11, "c", 11), ev(api.EventDown, 10, "c", 11)},
		"a repeated up":      {ev(api.EventUp, 11, "c", 11), ev(api.EventUp, 11, "c", 11)},
		"a second leader":    {ev(api.EventLeader, 11, "c", 11), ev(api.EventLeader, 11, "d", 9)},
		"a second event":     {ev(api.EventUp, 11, "c", 11), ev(api.EventDown, 11, "c", 11)},
		"a repeated down":    {ev(api.EventDown, 11, "c", 11), ev(api.EventLeader, 11, "", 0), ev(api.EventDown, 11, "c", 11)},
		"a repeated current": {ev(api.EventCurrent, 11, "", 0), ev(api.EventCurrent, 11, "", 0)},
		"a second service_meta": {
			{Service: "s", Kind: api.EventServiceMeta, Index: 11, ServiceMeta: &api.ServiceMeta{Data: json.RawMessage(`1`), Index: 11}},
			{Service: "s", Kind: api.EventServiceMeta, Index: 11, ServiceMeta: &api.ServiceMeta{Data: json.RawMessage(`2`), Index: 11}},
		},
	}
	for want, events := range bad {
		p := CheckStream(events)
		if len(p) == 0 || !strings.Contains(p[0], want) {
			t.Errorf("%s: got %v", want, p)
		}
	}
}

func TestFoldAndDiff(t *testing.T) {
	events := []api.Event{
		ev(api.EventUp, 10, "a", 5), ev(api.EventLeader, 10, "a", 5), ev(api.EventCurrent, 10, "", 0),
		ev(api.EventUp, 11, "b", 11),
		{Service: "s", Kind: api.EventServiceMeta, Index: 12, ServiceMeta: &api.ServiceMeta{Data: json.RawMessage(`{ "v": 1 }`), Index: 12}},
		ev(api.EventDown, 13, "a", 5), ev(api.EventLeader, 13, "b", 11),
	}
	got := Fold(events)
	b := &api.Instance{ID: "b", Addr: "10.0.0.1:80", Proto: "tcp", Index: 11}
	want := StateView([]*api.Instance{b}, b, &api.ServiceMeta{Data: json.RawMessage(`{"v":1}`), Index: 12})
	if d := got.Diff(want); d != "" {
		t.Fatalf("diff: %s", d)
	}
	want.Leader = nil
	if d := got.Diff(want); !strings.Contains(d, "leader b@11, not none") {
		t.Fatalf("diff: %q", d)
	}
	if d := Fold(events[:4]).Diff(StateView([]*api.Instance{b}, b, nil)); !strings.Contains(d, "has a@5, which is gone") || !strings.Contains(d, "leader a@5, not b@11") {
		t.Fatalf("diff: %q", d)
	}
}

func TestCheckLeaders(t *testing.T) {
	n1 := Segment{Node: "n1", Events: []api.Event{
		ev(api.EventUp, 10, "a", 5), ev(api.EventLeader, 10, "a", 5), ev(api.EventCurrent, 10, "", 0),
		ev(api.EventDown, 14, "a", 5), ev(api.EventLeader, 14, "b", 12), ev(api.EventUp, 16, "c", 16),
	}}
	n2 := Segment{Node: "n2", Events: []api.Event{
		ev(api.EventLeader, 12, "a", 5), ev(api.EventCurrent, 12, "", 0),
		ev(api.EventDown, 14, "a", 5), ev(api.EventLeader, 14, "b", 12),
	}}
	if p := CheckLeaders([]Segment{n1, n2}); len(p) > 0 {
		t.Fatalf("agreeing nodes rejected: %v", p)
	}
	n3 := Segment{Node: "n3", Events: []api.Event{
		ev(api.EventLeader, 15, "c", 16), ev(api.EventCurrent, 15, "", 0),
	}}
	p := CheckLeaders([]Segment{n1, n2, n3})
	if len(p) == 0 || !strings.Contains(strings.Join(p, "\n"), "at index 15 node n3 reports leader c@16, node n1 reports b@12") {
		t.Fatalf("disagreement not found: %v", p)
	}
}

func TestTransportRecords(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == "PUT" && strings.HasSuffix(r.URL.Path, "/instances/a"):
			var in api.Instance
			json.Unmarshal(body, &in)
			in.ID, in.Index = "a", 5
			json.NewEncoder(w).Encode(in)
		case r.Method == "PUT" && strings.HasSuffix(r.URL.Path, "/meta"):
			w.WriteHeader(http.StatusPreconditionFailed)
			w.Write([]byte(`{"code":"precondition_failed","message":"no","retry":false}`))
		case r.Method == "DELETE":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"code":"service_unavailable","message":"no leader","retry":true}`))
		case r.URL.Path == "/services/s/instances":
			w.Write([]byte(`[{"id":"a","addr":"10.0.0.1:80","proto":"tcp","index":5}]`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	var rec Recorder
	hc := &http.Client{Transport: rec.Transport(nil, 7)}
	do := func(method, path, body string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	do("PUT", "/services/s/instances/a", `{"addr":"10.0.0.1:80","proto":"tcp","meta":{"z":"1","a":"2"}}`)
	do("PUT", "/services/s/meta", `{"data":{"v": 1},"index":3}`)
	do("DELETE", "/services/s/instances/a", ``)
	do("GET", "/services/s/instances?consistent=true", ``)
	do("GET", "/services/s/instances", ``) // not consistent: not recorded
	// Nothing listens there: never sent, not recorded.
	req, _ := http.NewRequest("PUT", "http://127.0.0.1:1/services/s/instances/a", strings.NewReader(`{}`))
	if _, err := hc.Do(req); err == nil {
		t.Fatal("request to a closed port succeeded")
	}
	ops := rec.Ops()
	if len(ops) != 4 {
		t.Fatalf("recorded %d operations, want 4: %v", len(ops), ops)
	}
	if o := ops[0]; o.Kind != Register || o.Outcome != OK || o.Index != 5 || o.Reg != "10.0.0.1:80|tcp|a=2|z=1" || o.Client != 7 {
		t.Errorf("register: %s", &o)
	}
	if o := ops[1]; o.Kind != SetMeta || o.Outcome != Failed || o.Code != api.CodePreconditionFailed || o.MetaData != `{"v":1}` || o.MetaExpect != 3 {
		t.Errorf("set meta: %s", &o)
	}
	if o := ops[2]; o.Kind != Deregister || o.Outcome != Unknown {
		t.Errorf("deregister: %s", &o)
	}
	if o := ops[3]; o.Kind != ReadInstances || o.Outcome != OK || len(o.Instances) != 1 || o.Instances[0].Index != 5 {
		t.Errorf("read: %s", &o)
	}
}

func TestSettledBoundsUnknownOperations(t *testing.T) {
	ops := []Op{
		setMeta(1, `{"v":1}`, 0, 0, 0.5, OK, "", 6),
		setMeta(1, `{"v":2}`, 6, 1, 1.5, Unknown, api.CodeUnavailable, 0),
		getMeta(2, 6, 6.1, `{"v":1}`, 6),
		// The write whose answer was lost shows up only after the cluster
		// had settled: too late.
		getMeta(2, 7, 7.1, `{"v":2}`, 9),
	}
	mustPass(t, ops) // without Settled the write may take effect any time
	c := cfg
	c.Settled, c.MaxApply = at(5), time.Second
	if rep := Check(ops, c); len(rep.Problems) == 0 {
		t.Fatal("a write of unknown outcome took effect after Settled, and passed")
	}
}

func TestRefusedBeforeApply(t *testing.T) {
	for msg, want := range map[string]bool{
		"no raft leader is known to this node":                                 true,
		"this node is not the raft leader (the leader is voter1.cluster:1111)": true,
		"raft leadership changed during the write: leadership lost":            false,
		"forwarding to leader voter1.cluster:1111: EOF":                        false,
		"no voter answered: voter2.cluster:1111 answered 503":                  false,
	} {
		if got := RefusedBeforeApply(api.CodeUnavailable, msg); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}

// TestCheckFile checks a history saved by the compose tests
// (history.json in their artifacts): HISTORY_FILE=path HISTORY_TTL=5s.
func TestCheckFile(t *testing.T) {
	path := os.Getenv("HISTORY_FILE")
	if path == "" {
		t.Skip("HISTORY_FILE is not set")
	}
	ops, settled, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := time.ParseDuration(os.Getenv("HISTORY_TTL"))
	if err != nil {
		ttl = 5 * time.Second
	}
	rep := Check(ops, Config{TTL: ttl, Settled: settled, Timeout: time.Minute, VisualizeDir: os.Getenv("HISTORY_VISUALIZE")})
	t.Logf("%d operations, %d partitions, %v", rep.Ops, rep.Partitions, rep.Elapsed)
	for _, p := range rep.Problems {
		t.Error(p)
	}
}

func TestMonotonicExplainsStaleAnswers(t *testing.T) {
	// A node answering from stale state: the instance had expired (and was
	// seen gone), then a heartbeat is acknowledged with its old index.
	ops := heartbeats(1, "a", 0, 1, 5)
	ops = append(ops, read(2, 8, 8.1), reg(1, "a", 9, 9.1, 5))
	mustFail(t, ops, "index 5 came back after the instance was gone")
	// Meta read going back.
	mustFail(t, []Op{
		setMeta(1, `{"v":1}`, 0, 0, 0.5, OK, "", 6),
		getMeta(2, 1, 1.1, `{"v":1}`, 6),
		setMeta(1, `{"v":2}`, 6, 2, 2.5, OK, "", 8),
		getMeta(2, 3, 3.1, `{"v":1}`, 6),
	}, "the index went back from 8 to 6")
}
