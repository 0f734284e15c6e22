package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
)

func TestNewServers(t *testing.T) {
	t.Setenv(ServersEnv, "")
	if got := New().Servers(); !reflect.DeepEqual(got, []string{DefaultServer}) {
		t.Errorf("New() servers = %q", got)
	}
	t.Setenv(ServersEnv, "10.0.0.1:1111, https://d.example:443/ ,")
	want := []string{"http://10.0.0.1:1111", "https://d.example:443"}
	if got := New().Servers(); !reflect.DeepEqual(got, want) {
		t.Errorf("New() with %s servers = %q, want %q", ServersEnv, got, want)
	}
	if got := New("127.0.0.1:2").Servers(); !reflect.DeepEqual(got, []string{"http://127.0.0.1:2"}) {
		t.Errorf("explicit servers = %q", got)
	}
}

func TestServiceCRUDAndErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t, testTTL)
	c := New(s.URL())
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)

	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	err := c.AddService(ctx, "web", nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeExists || !IsExists(err) {
		t.Fatalf("second AddService: %v, want object_exists *api.Error", err)
	}
	if err := c.AddService(ctx, "db", &api.ServiceConfig{LeaderType: api.LeaderTypeManual}); err != nil {
		t.Fatal(err)
	}
	names, err := c.Services(ctx)
	if err != nil || !reflect.DeepEqual(names, []string{"db", "web"}) {
		t.Fatalf("Services = %q, %v", names, err)
	}

	// Unknown service, bad name.
	if _, err := c.Instances(ctx, "nope"); !IsNotFound(err) {
		t.Errorf("Instances(nope) = %v, want object_not_found", err)
	}
	if _, err := c.Leader(ctx, "nope"); !IsNotFound(err) {
		t.Errorf("Leader(nope) = %v, want object_not_found", err)
	}
	if _, err := c.Instances(ctx, "Bad_Name"); !api.IsCode(err, api.CodeValidation) {
		t.Errorf("Instances(Bad_Name) = %v, want validation_error", err)
	}

	// An existing service with no instances: empty list, no leader.
	insts, err := c.Instances(ctx, "web")
	if err != nil || len(insts) != 0 || insts == nil {
		t.Fatalf("Instances(web) = %v, %v; want an empty list", insts, err)
	}
	if l, err := c.Leader(ctx, "web"); l != nil || err != nil {
		t.Fatalf("Leader(web) with no instances = %v, %v; want nil, nil", l, err)
	}

	// Manual leader.
	h1, err := c.Register(ctx, "db", "10.0.0.1:5432", map[string]string{"role": "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	h2, err := c.Register(ctx, "db", "10.0.0.2:5432", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if l, err := c.Leader(ctx, "db"); l != nil || err != nil {
		t.Fatalf("Leader(db) before SetLeader = %v, %v", l, err)
	}
	if err := c.SetLeader(ctx, "db", h2.ID()); err != nil {
		t.Fatal(err)
	}
	l, err := c.Leader(ctx, "db")
	if err != nil || l.ID != h2.ID() || l.Index != h2.Instance().Index || l.Index == 0 {
		t.Fatalf("Leader(db) = %+v, %v; want %+v", l, err, h2.Instance())
	}
	insts, err = c.Instances(ctx, "db")
	if err != nil || len(insts) != 2 || insts[0].ID != h1.ID() || insts[0].Meta["role"] != "x" {
		t.Fatalf("Instances(db) = %v, %v", insts, err)
	}

	// Meta CAS.
	if _, err := c.GetMeta(ctx, "web"); !IsNotFound(err) {
		t.Errorf("GetMeta with no meta = %v, want object_not_found", err)
	}
	m, err := c.SetMeta(ctx, "web", &api.ServiceMeta{Data: json.RawMessage(`{"v":1}`)})
	if err != nil || m.Index == 0 {
		t.Fatalf("SetMeta create = %+v, %v", m, err)
	}
	if _, err := c.SetMeta(ctx, "web", &api.ServiceMeta{Data: json.RawMessage(`{"v":2}`), Index: m.Index + 100}); !IsPreconditionFailed(err) {
		t.Errorf("SetMeta with a wrong index = %v, want precondition_failed", err)
	}
	m2, err := c.SetMeta(ctx, "web", &api.ServiceMeta{Data: json.RawMessage(`{"v":2}`), Index: m.Index})
	if err != nil || m2.Index <= m.Index {
		t.Fatalf("SetMeta update = %+v, %v", m2, err)
	}
	got, err := c.GetMeta(ctx, "web")
	if err != nil || got.Index != m2.Index || string(got.Data) != `{"v":2}` {
		t.Fatalf("GetMeta = %+v, %v", got, err)
	}

	st, err := c.Status(ctx)
	if err != nil || st.Role != "leader" || !st.Healthy || st.AppliedIndex == 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	if err := c.RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveService(ctx, "web"); !IsNotFound(err) {
		t.Errorf("second RemoveService = %v, want object_not_found", err)
	}
}

func TestPeers(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 10*time.Second)
	s := startServer(t, testTTL)
	peers, err := New(s.URL()).Peers(ctx)
	if want := []api.Peer{{Addr: s.Addr(), Leader: true}}; err != nil || !reflect.DeepEqual(peers, want) {
		t.Fatalf("Peers of a single voter = %+v, %v; want %+v", peers, err, want)
	}

	// The shapes of a cluster's answers, from a stand-in server: GET
	// /raft/peers lists addresses, GET /raft/leader names one of them.
	var mu sync.Mutex
	answers := map[string]string{}
	var leaderAsked atomic.Int32
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/raft/leader" {
			leaderAsked.Add(1)
		}
		mu.Lock()
		body, ok := answers[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			body = `{"code":"service_unavailable","message":"no raft leader","retry":true}`
		}
		w.Write([]byte(body))
	}))
	defer fake.Close()
	// Without a deadline on the context, the retry timeout bounds how long
	// a call waits for a leader the stand-in never names.
	ctx = context.Background()
	c := NewWithOptions([]string{fake.URL}, WithRetryTimeout(300*time.Millisecond))
	defer c.Close()
	answer := func(peers, leader string) {
		mu.Lock()
		defer mu.Unlock()
		answers = map[string]string{"/raft/peers": peers}
		if leader != "" {
			answers["/raft/leader"] = leader
		}
	}

	answer(`["10.0.0.1:1111","10.0.0.2:1111","10.0.0.3:1111"]`, `{"host":"10.0.0.2:1111"}`)
	peers, err = c.Peers(ctx)
	want := []api.Peer{{Addr: "10.0.0.1:1111"}, {Addr: "10.0.0.2:1111", Leader: true}, {Addr: "10.0.0.3:1111"}}
	if err != nil || !reflect.DeepEqual(peers, want) {
		t.Errorf("Peers = %+v, %v; want %+v", peers, err, want)
	}

	// No leader known: every voter listed, none leading.
	answer(`["10.0.0.1:1111","10.0.0.2:1111"]`, "")
	peers, err = c.Peers(ctx)
	want = []api.Peer{{Addr: "10.0.0.1:1111"}, {Addr: "10.0.0.2:1111"}}
	if err != nil || !reflect.DeepEqual(peers, want) {
		t.Errorf("Peers without a leader = %+v, %v; want %+v", peers, err, want)
	}

	// No voters: an empty list, and no leader to ask.
	answer(`[]`, "")
	asked := leaderAsked.Load()
	peers, err = c.Peers(ctx)
	if err != nil || peers == nil || len(peers) != 0 || leaderAsked.Load() != asked {
		t.Errorf("Peers with no voters = %#v, %v (leader asked %d times); want an empty list", peers, err, leaderAsked.Load()-asked)
	}

	// Anything but a list of addresses is an error.
	answer(`[{"addr":"10.0.0.1:1111","leader":true}]`, `{"host":"10.0.0.1:1111"}`)
	if peers, err := c.Peers(ctx); !api.IsCode(err, api.CodeUnknown) {
		t.Errorf("Peers of a list of objects = %+v, %v; want unknown_error", peers, err)
	}
}

func TestRegisterHeartbeatClose(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL))
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A prelude holds no leader event when there is no leader.
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"current"}) {
		t.Fatalf("prelude = %q", got)
	}

	h, err := c.Register(ctx, "web", "10.0.0.1:80", map[string]string{"v": "1"})
	if err != nil {
		t.Fatal(err)
	}
	inst := h.Instance()
	if inst.Index == 0 || inst.ID != api.DefaultInstanceID("tcp", "10.0.0.1:80") || inst.Proto != "tcp" {
		t.Fatalf("registered instance = %+v", inst)
	}
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.1:80", "leader 10.0.0.1:80"}) {
		t.Fatalf("after Register: %q", got)
	}

	// Kept alive past several TTLs: no event at all (no down, no re-up).
	noEvent(t, w, 2*keepAliveTTL)
	if err := h.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	insts, err := c.Instances(ctx, "web")
	if err != nil || len(insts) != 1 || insts[0].Index != inst.Index {
		t.Fatalf("Instances after 2 TTLs = %v, %v", insts, err)
	}

	// SetMeta is sent at once.
	if err := h.SetMeta(ctx, map[string]string{"v": "2"}); err != nil {
		t.Fatal(err)
	}
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"update 10.0.0.1:80"}) {
		t.Fatalf("after SetMeta: %q", got)
	}
	if got := h.Instance(); got.Meta["v"] != "2" || got.Index != inst.Index {
		t.Fatalf("Instance after SetMeta = %+v", got)
	}

	// Close deregisters at once.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"down 10.0.0.1:80", "leader -"}) {
		t.Fatalf("after Close: %q", got)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestHeartbeaterErrAndOnError(t *testing.T) {
	t.Parallel()
	s := startServer(t, testTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(testTTL), WithRetryTimeout(2*time.Second))
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)
	var fired atomic.Int32
	h, err := c.AddServiceAndRegister(ctx, "web", "10.0.0.1:80", nil, OnError(func(error) { fired.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// AddServiceAndRegister on an existing service is fine.
	h2, err := c.AddServiceAndRegister(ctx, "web", "10.0.0.2:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	h2.Stop()

	s.Stop()
	eventually(t, 5*time.Second, "Err after the server went away", func() bool { return h.Err() != nil })
	eventually(t, time.Second, "OnError", func() bool { return fired.Load() == 1 })
	if !IsUnavailable(h.Err()) {
		t.Errorf("Err = %v, want service_unavailable", h.Err())
	}
	s.StartNode()
	s.Serve()
	eventually(t, 5*time.Second, "Err cleared after the server came back", func() bool { return h.Err() == nil })
	if n := fired.Load(); n != 1 {
		t.Errorf("OnError fired %d times, want 1", n)
	}
}

func TestHeartbeaterSurvivesRestart(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL))
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)
	h, err := c.AddServiceAndRegister(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	before := h.Instance()

	s.Restart()

	// Present after the restart, and kept alive for several TTLs: with the
	// same index, so it never expired and came back.
	deadline := time.Now().Add(2 * keepAliveTTL)
	for time.Now().Before(deadline) {
		insts, err := c.Instances(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		if len(insts) != 1 || insts[0].ID != before.ID || insts[0].Index != before.Index {
			t.Fatalf("instances after restart = %v, want %+v", insts, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("Err after restart = %v", err)
	}
}

func TestWatchAcrossRestart(t *testing.T) {
	t.Parallel()
	// A long TTL: only the changes made here happen.
	s := startServer(t, time.Minute)
	c := New(s.URL())
	defer c.Close()
	ctx := testCtx(t, 20*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	s.register("web", "10.0.0.1:80")
	s.register("web", "10.0.0.2:80")
	if _, err := c.SetMeta(ctx, "web", &api.ServiceMeta{Data: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := []string{"up 10.0.0.1:80", "up 10.0.0.2:80", "leader 10.0.0.1:80", "service_meta 1", "current"}
	if got := nextEvents(t, w, len(want), 5*time.Second); !reflect.DeepEqual(got, want) {
		t.Fatalf("prelude = %q, want %q", got, want)
	}

	// Stop the server; restart it and change the state before it serves
	// HTTP again, so the watcher sees the changes only on reconnecting.
	s.Stop()
	s.StartNode()
	s.register("web", "10.0.0.3:80")
	if _, err := s.Node().Deregister(ctx, "web", api.DefaultInstanceID("tcp", "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	m, err := s.Node().ServiceMeta("web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Node().SetServiceMeta(ctx, "web", &api.ServiceMeta{Data: json.RawMessage(`2`), Index: m.Index}); err != nil {
		t.Fatal(err)
	}
	s.Serve()

	want = []string{"down 10.0.0.1:80", "up 10.0.0.3:80", "leader 10.0.0.2:80", "service_meta 2"}
	if got := nextEvents(t, w, len(want), 10*time.Second); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reconnect = %q, want %q", got, want)
	}
	// Nothing else (no duplicates), and the live stream goes on.
	s.register("web", "10.0.0.4:80")
	if got := nextEvents(t, w, 1, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.4:80"}) {
		t.Fatalf("next live event = %q", got)
	}
	noEvent(t, w, 200*time.Millisecond)
	if err := w.Err(); err != nil {
		t.Fatalf("Err while running = %v", err)
	}
	w.Close()
	if err := w.Err(); err != nil {
		t.Fatalf("Err after Close = %v", err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("Events not closed after Close")
	}
}

func TestWatchServiceRemovedAndRecreated(t *testing.T) {
	t.Parallel()
	s := startServer(t, time.Minute)
	c := New(s.URL())
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	s.register("web", "10.0.0.1:80")
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextEvents(t, w, 3, 5*time.Second)
	if err := c.RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"down 10.0.0.1:80", "leader -"}) {
		t.Fatalf("after RemoveService = %q", got)
	}
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	s.register("web", "10.0.0.2:80")
	if got := nextEvents(t, w, 2, 5*time.Second); !reflect.DeepEqual(got, []string{"up 10.0.0.2:80", "leader 10.0.0.2:80"}) {
		t.Fatalf("after re-creating = %q", got)
	}
}

func TestLeadersNextOldest(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	c := NewWithOptions([]string{s.URL()}, WithTTL(keepAliveTTL))
	defer c.Close()
	ctx := testCtx(t, 15*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	leaders, err := c.Leaders(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string) *api.Instance {
		t.Helper()
		select {
		case l, ok := <-leaders:
			if !ok {
				t.Fatalf("Leaders closed waiting for %s", what)
			}
			return l
		case <-time.After(5 * time.Second):
			t.Fatalf("no leader value for %s", what)
		}
		return nil
	}
	if l := next("the initial state"); l != nil {
		t.Fatalf("initial leader = %+v, want nil", l)
	}
	a, err := c.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if l := next("a"); l == nil || l.ID != a.ID() || l.Index != a.Instance().Index {
		t.Fatalf("leader = %+v, want a %+v", l, a.Instance())
	}
	b, err := c.Register(ctx, "web", "10.0.0.2:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cc, err := c.Register(ctx, "web", "10.0.0.3:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	// Close: deregistered at once, the next oldest leads.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	l := next("b")
	if l == nil || l.ID != b.ID() || l.Index <= a.Instance().Index {
		t.Fatalf("leader after a closed = %+v, want b %+v", l, b.Instance())
	}
	// Stop heartbeating: expired after the TTL, the next oldest leads.
	b.Stop()
	start := time.Now()
	l = next("c")
	if l == nil || l.ID != cc.ID() {
		t.Fatalf("leader after b stopped = %+v, want c %+v", l, cc.Instance())
	}
	if d := time.Since(start); d < keepAliveTTL/2 {
		t.Errorf("b lost the lead %v after it stopped, before its TTL", d)
	}
	cc.Stop()
	if l := next("none"); l != nil {
		t.Fatalf("leader after all stopped = %+v, want nil", l)
	}
}

func TestFailover(t *testing.T) {
	t.Parallel()
	s := startServer(t, keepAliveTTL)
	dead := deadAddr(t)
	c := NewWithOptions([]string{dead, s.Addr()}, WithTTL(keepAliveTTL))
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)
	if err := c.AddService(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w, err := c.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextEvents(t, w, 3, 5*time.Second)
	if l, err := c.Leader(ctx, "web"); err != nil || l.ID != h.ID() {
		t.Fatalf("Leader = %v, %v", l, err)
	}
	// The client sticks to the server that answered.
	if got := c.preferred.Load(); got != 1 {
		t.Errorf("preferred server = %d, want 1", got)
	}

	// Only dead servers: a clear, retryable error once the deadline passes.
	c2 := NewWithOptions([]string{dead, deadAddr(t)}, WithRetryTimeout(300*time.Millisecond))
	start := time.Now()
	_, err = c2.Services(context.Background())
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "cannot reach discoverd") {
		t.Fatalf("Services on dead servers = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("gave up after %v, want about 300ms", d)
	}
	// A context that ends is reported as such.
	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c2.Services(cctx); err == nil {
		t.Fatal("Services on dead servers succeeded")
	}
}

// TestFailoverWhenFirstServerStops: the client moves to the second server
// when the one it was using stops, for requests, heartbeats and watches.
func TestFailoverWhenFirstServerStops(t *testing.T) {
	t.Parallel()
	s1 := startServer(t, keepAliveTTL)
	s2 := startServer(t, keepAliveTTL)
	c := NewWithOptions([]string{s1.URL(), s2.URL()}, WithTTL(keepAliveTTL))
	defer c.Close()
	ctx := testCtx(t, 10*time.Second)
	for _, s := range []*testServer{s1, s2} {
		if err := New(s.URL()).AddService(ctx, "web", nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := c.Register(ctx, "web", "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	s1.Stop()
	// Two independent servers: the heartbeater registers on the second.
	eventually(t, 5*time.Second, "instance on the second server", func() bool {
		insts, err := New(s2.URL()).Instances(ctx, "web")
		return err == nil && len(insts) == 1
	})
	if insts, err := c.Instances(ctx, "web"); err != nil || len(insts) != 1 {
		t.Fatalf("Instances after failover = %v, %v", insts, err)
	}
}

func TestSSEReader(t *testing.T) {
	t.Parallel()
	in := ": hello\n\n" +
		"id: 5\ndata: {\"service\":\"a\",\"kind\":\"up\",\"instance\":{\"id\":\"x\",\"addr\":\"h:1\",\"proto\":\"tcp\",\"index\":5},\"index\":5}\n\n" +
		":\n\n" +
		"id: 6\r\ndata: {\"service\":\"a\",\r\ndata: \"kind\":\"current\",\"index\":6}\r\n\r\n" +
		"event: error\ndata: {\"code\":\"service_unavailable\",\"message\":\"the node is shutting down\",\"retry\":true}\n\n"
	var lines int
	r := newSSEReader(strings.NewReader(in), func() { lines++ })
	ev, err := r.next()
	if err != nil || ev.Kind != api.EventUp || ev.Instance.ID != "x" || ev.Index != 5 {
		t.Fatalf("first = %+v, %v", ev, err)
	}
	ev, err = r.next()
	if err != nil || ev.Kind != api.EventCurrent || ev.Index != 6 {
		t.Fatalf("second (two data lines) = %+v, %v", ev, err)
	}
	_, err = r.next()
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("error event = %v", err)
	}
	if _, err := r.next(); err == nil {
		t.Fatal("read past the end")
	}
	if lines == 0 {
		t.Error("activity never reported")
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	inst := func(id string, index uint64, meta string) *api.Instance {
		i := &api.Instance{ID: id, Addr: id + ":1", Proto: "tcp", Index: index}
		if meta != "" {
			i.Meta = map[string]string{"m": meta}
		}
		return i
	}
	a := &view{insts: map[string]*api.Instance{
		"gone": inst("gone", 1, ""), "same": inst("same", 2, ""), "renew": inst("renew", 3, ""), "chg": inst("chg", 4, "a"),
	}, leader: inst("gone", 1, ""), meta: &api.ServiceMeta{Data: json.RawMessage(`1`), Index: 2}}
	b := &view{insts: map[string]*api.Instance{
		"same": inst("same", 2, ""), "renew": inst("renew", 9, ""), "chg": inst("chg", 4, "b"), "new": inst("new", 10, ""),
	}, leader: inst("same", 2, ""), meta: &api.ServiceMeta{Data: json.RawMessage(`1`), Index: 2}}
	var got []string
	for _, ev := range diff("s", api.AllKinds, a, b, 11) {
		if ev.Index != 11 {
			t.Errorf("event %v has index %d, want 11", ev, ev.Index)
		}
		got = append(got, string(ev.Kind)+" "+ev.Instance.ID)
	}
	want := []string{"down gone", "down renew", "update chg", "up renew", "up new", "leader same"}
	if !slices.Equal(got, want) {
		t.Errorf("diff = %q, want %q", got, want)
	}
	if evs := diff("s", api.AllKinds, b, b, 11); len(evs) != 0 {
		t.Errorf("diff of a view with itself = %v", evs)
	}
}

// TestReconcileRefusesStaleServer: a server behind the watcher's view (a
// restarted node still replaying its log) is not believed, for a while.
func TestReconcileRefusesStaleServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Watcher{service: "s", kinds: api.AllKinds, ctx: ctx, events: make(chan api.Event, 16)}
	up := api.Event{Service: "s", Kind: api.EventUp, Instance: &api.Instance{ID: "a", Addr: "h:1", Proto: "tcp", Index: 8}, Index: 10}
	if err := w.reconcile([]api.Event{up}, 10); err != nil {
		t.Fatal(err)
	}
	if got := len(w.events); got != 2 {
		t.Fatalf("first prelude passed %d events, want 2", got)
	}
	if err := w.reconcile(nil, 5); !IsUnavailable(err) || !retryable(err) {
		t.Fatalf("stale prelude: %v, want a retryable error", err)
	}
	if got := len(w.events); got != 2 {
		t.Fatalf("stale prelude sent events")
	}
	w.staleSince = time.Now().Add(-staleAcceptAfter - time.Second)
	if err := w.reconcile(nil, 5); err != nil {
		t.Fatalf("stale prelude after %v: %v", staleAcceptAfter, err)
	}
	<-w.events
	<-w.events
	if ev := <-w.events; ev.Kind != api.EventDown || ev.Instance.ID != "a" || ev.Index != 5 {
		t.Fatalf("after accepting the stale prelude: %+v", ev)
	}
}
