package bus

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
)

// hbSetup is a server, a subscriber on its own in-process connection, and a
// TCP client that plays the service.
type hbSetup struct {
	srv    *Server
	subNC  *nats.Conn
	sub    *HeartbeatSubscriber
	h      *fakeHandler
	client *nats.Conn
}

func newHBSetup(t *testing.T, workers int) *hbSetup {
	t.Helper()
	s := startServer(t, ServerConfig{})
	h := newFakeHandler()
	subNC := inProc(t, s)
	sub, err := SubscribeHeartbeats(subNC, "node-a", workers, h, testLogger(t))
	if err != nil {
		t.Fatalf("SubscribeHeartbeats: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return &hbSetup{srv: s, subNC: subNC, sub: sub, h: h, client: dial(t, s)}
}

func (s *hbSetup) request(t *testing.T, subject string, data []byte) []byte {
	t.Helper()
	msg, err := s.client.Request(subject, data, testTimeout)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg.Data
}

func wantErrorBody(t *testing.T, got []byte, code api.ErrorCode) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(got, &e); err != nil {
		t.Fatalf("answer %q is not an error body: %v", got, err)
	}
	if e.Code != code || e.Message == "" {
		t.Fatalf("answer %q: want code %q with a message", got, code)
	}
	return e
}

var testInst = api.Instance{Addr: "10.0.0.1:8080", Proto: "http", Meta: map[string]string{"zone": "a"}}

func TestHeartbeatPublishCallsHandlerWithoutReply(t *testing.T) {
	s := newHBSetup(t, 2)
	inst := testInst
	inst.Index = 99 // a client's index is ignored
	if err := s.client.Publish(HeartbeatSubject("svc"), mustMarshal(t, inst)); err != nil {
		t.Fatal(err)
	}
	c := s.h.next(t)
	want := api.Instance{ID: api.DefaultInstanceID("http", "10.0.0.1:8080"), Addr: inst.Addr, Proto: "http", Meta: inst.Meta}
	if c.service != "svc" || !reflect.DeepEqual(c.inst, want) {
		t.Fatalf("handler got %q %+v, want svc %+v", c.service, c.inst, want)
	}
	if !c.ctxOK {
		t.Fatal("handler context has no deadline or is done")
	}
	// Nothing is sent back: the subscriber's connection published nothing.
	if err := s.subNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if out := s.subNC.Stats().OutMsgs; out != 0 {
		t.Fatalf("subscriber published %d messages for a heartbeat without reply", out)
	}
	if s.sub.Received() != 1 || s.sub.Malformed() != 0 {
		t.Fatalf("received %d malformed %d, want 1 0", s.sub.Received(), s.sub.Malformed())
	}
}

func TestHeartbeatRequestAnswersOK(t *testing.T) {
	s := newHBSetup(t, 1)
	inst := testInst
	inst.ID = "web-1"
	got := s.request(t, HeartbeatSubject("svc"), mustMarshal(t, inst))
	if string(got) != `{"ok":true}` {
		t.Fatalf("answer %q, want {\"ok\":true}", got)
	}
	if c := s.h.next(t); c.inst.ID != "web-1" {
		t.Fatalf("handler got id %q, want web-1", c.inst.ID)
	}
}

func TestHeartbeatHandlerErrorIsAnswered(t *testing.T) {
	s := newHBSetup(t, 1)
	herr := api.Errorf(api.CodeNotFound, "service %q not found", "svc")
	s.h.setErr(herr)
	got := s.request(t, HeartbeatSubject("svc"), mustMarshal(t, testInst))
	if want := mustMarshal(t, herr); string(got) != string(want) {
		t.Fatalf("answer %s, want %s", got, want)
	}
	if s.sub.Failed() != 1 || s.sub.Malformed() != 0 {
		t.Fatalf("failed %d malformed %d, want 1 0", s.sub.Failed(), s.sub.Malformed())
	}
	// A retryable error keeps its retry flag on the wire.
	s.h.setErr(api.Errorf(api.CodeUnavailable, "no leader"))
	e := wantErrorBody(t, s.request(t, HeartbeatSubject("svc"), mustMarshal(t, testInst)), api.CodeUnavailable)
	if !e.Retry {
		t.Fatal("service_unavailable answered without retry: true")
	}
}

func TestHeartbeatMalformed(t *testing.T) {
	s := newHBSetup(t, 2)
	cases := []struct {
		name    string
		subject string
		data    string
	}{
		{"bad json", HeartbeatSubject("svc"), `{"addr": "10.0.0.1:80", "proto":`},
		{"not an object", HeartbeatSubject("svc"), `[1,2]`},
		{"wrong type", HeartbeatSubject("svc"), `{"addr": 5, "proto": "http"}`},
		{"invalid instance", HeartbeatSubject("svc"), `{"addr": "10.0.0.1:80", "proto": "HTTP"}`},
		{"no addr", HeartbeatSubject("svc"), `{"proto": "http"}`},
		{"bad id", HeartbeatSubject("svc"), `{"id": "a b", "addr": "10.0.0.1:80", "proto": "http"}`},
		{"bad subject token", "discoverd.heartbeat.BAD_NAME", string(mustMarshal(t, testInst))},
	}
	var malformed uint64
	for _, c := range cases {
		t.Run(c.name+"/reply", func(t *testing.T) {
			got := s.request(t, c.subject, []byte(c.data))
			wantErrorBody(t, got, api.CodeValidation)
			malformed++
			if m := s.sub.Malformed(); m != malformed {
				t.Fatalf("malformed = %d, want %d", m, malformed)
			}
		})
		t.Run(c.name+"/no reply", func(t *testing.T) {
			if err := s.client.Publish(c.subject, []byte(c.data)); err != nil {
				t.Fatal(err)
			}
			malformed++
			waitFor(t, "the malformed counter", func() bool { return s.sub.Malformed() == malformed })
		})
	}
	if n := s.h.count(); n != 0 {
		t.Fatalf("handler called %d times for malformed heartbeats", n)
	}
	// The subscriber keeps working.
	if got := s.request(t, HeartbeatSubject("svc"), mustMarshal(t, testInst)); string(got) != `{"ok":true}` {
		t.Fatalf("answer after malformed messages: %q", got)
	}
	if s.sub.Received() != malformed+1 {
		t.Fatalf("received %d, want %d", s.sub.Received(), malformed+1)
	}
}

// ErrNoReply: taken, not answered, not counted as a failure.
func TestHeartbeatErrNoReply(t *testing.T) {
	s := newHBSetup(t, 1)
	s.h.setErr(ErrNoReply)
	if _, err := s.client.Request(HeartbeatSubject("svc"), mustMarshal(t, testInst), 200*time.Millisecond); err == nil {
		t.Fatal("a heartbeat left to another node was answered")
	}
	if s.h.count() != 1 || s.sub.Failed() != 0 || s.sub.Malformed() != 0 {
		t.Fatalf("calls %d failed %d malformed %d, want 1 0 0", s.h.count(), s.sub.Failed(), s.sub.Malformed())
	}
	if out := s.subNC.Stats().OutMsgs; out != 0 {
		t.Fatalf("subscriber published %d messages", out)
	}
}

// Within one queue group each heartbeat is handled once, across workers and
// connections; a second queue group (another node) hears every heartbeat too.
func TestHeartbeatQueueGroups(t *testing.T) {
	s := newHBSetup(t, 4)
	// A second connection in the same queue group as s.sub.
	same := newFakeHandler()
	sameSub, err := SubscribeHeartbeats(inProc(t, s.srv), "node-a", 2, same, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sameSub.Close() })
	// Another node.
	other := newFakeHandler()
	otherSub, err := SubscribeHeartbeats(inProc(t, s.srv), "node-b", 3, other, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { otherSub.Close() })

	const n = 500
	data := mustMarshal(t, testInst)
	for range n {
		if err := s.client.Publish(HeartbeatSubject("svc"), data); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every heartbeat on both nodes", func() bool {
		return s.h.count()+same.count() == n && other.count() == n
	})
	if err := s.client.Flush(); err != nil {
		t.Fatal(err)
	}
	// No duplicates show up late.
	if err := s.subNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.h.count() + same.count(); got != n {
		t.Fatalf("queue group node-a handled %d heartbeats, want %d", got, n)
	}
}

// Close drains: heartbeats already queued are processed, later ones are not
// taken.
func TestHeartbeatClose(t *testing.T) {
	s := newHBSetup(t, 2)
	if got := s.request(t, HeartbeatSubject("svc"), mustMarshal(t, testInst)); string(got) != `{"ok":true}` {
		t.Fatalf("answer %q", got)
	}
	if err := s.sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.client.Request(HeartbeatSubject("svc"), mustMarshal(t, testInst), 200*time.Millisecond); err == nil {
		t.Fatal("a closed subscriber still answers")
	}
}

func TestSubscribeHeartbeatsArgs(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := inProc(t, s)
	if _, err := SubscribeHeartbeats(nc, "", 1, newFakeHandler(), testLogger(t)); err == nil {
		t.Fatal("empty queue accepted")
	}
	if _, err := SubscribeHeartbeats(nc, "q", 1, nil, testLogger(t)); err == nil {
		t.Fatal("nil handler accepted")
	}
	if _, err := SubscribeHeartbeats(nil, "q", 1, newFakeHandler(), testLogger(t)); err == nil {
		t.Fatal("nil connection accepted")
	}
}

// Every voter hears every heartbeat, whichever server (voter or proxy) the
// service sent it to; each voter handles it once.
func TestHeartbeatsReachEveryVoter(t *testing.T) {
	a := startServer(t, ServerConfig{Name: "a", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1"})
	b := startServer(t, ServerConfig{Name: "b", ClusterAddr: "127.0.0.1:-1", LeafAddr: "127.0.0.1:-1", Routes: []string{a.ClusterAddr()}})
	proxy := startServer(t, ServerConfig{Name: "proxy", LeafRemotes: []string{b.LeafAddr(), a.LeafAddr()}})
	waitFor(t, "route and leafnode", func() bool { return a.NumRemotes() == 1 && proxy.NumLeafNodes() == 1 })

	ha, hb := newFakeHandler(), newFakeHandler()
	for _, x := range []struct {
		srv *Server
		h   *fakeHandler
	}{{a, ha}, {b, hb}} {
		sub, err := SubscribeHeartbeats(inProc(t, x.srv), "node-"+x.srv.name(), 2, x.h, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Close() })
	}
	// Interest crosses routes and the leafnode asynchronously: send until
	// both voters have heard one heartbeat, then count exactly.
	client := dial(t, proxy)
	data := mustMarshal(t, testInst)
	waitFor(t, "interest on both voters", func() bool {
		client.Publish(HeartbeatSubject("probe"), data)
		client.Flush()
		return ha.count() > 0 && hb.count() > 0
	})
	// Let the last probes land: two samples 50 ms apart agree.
	baseA, baseB := ha.count(), hb.count()
	waitFor(t, "the probes to settle", func() bool {
		time.Sleep(50 * time.Millisecond)
		pa, pb := baseA, baseB
		baseA, baseB = ha.count(), hb.count()
		return baseA == pa && baseB == pb
	})
	const n = 200
	for _, srv := range []*Server{proxy, a, b} {
		c := dial(t, srv)
		for range n {
			if err := c.Publish(HeartbeatSubject("svc"), data); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every heartbeat on both voters", func() bool {
		return ha.count() == baseA+3*n && hb.count() == baseB+3*n
	})
}
