package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

const (
	// testTTL is the TTL of the expiry tests (newServerTTL); every other
	// server keeps instances for stableTTL, so that a machine busy with
	// other tests cannot expire an instance between two of a test's steps.
	// Two seconds: the instance the expiry test keeps alive must survive
	// its heartbeater being held up by a busy machine for a while.
	testTTL           = 2 * time.Second
	stableTTL         = time.Minute
	testCheckInterval = 100 * time.Millisecond
	testKeepAlive     = 200 * time.Millisecond
)

// testServer is a real single-node discoverd serving the HTTP API.
type testServer struct {
	t    testing.TB
	n    *node.Node
	url  string
	http *http.Client
}

var (
	_ httpapi.Backend = (*node.Node)(nil)
	_ httpapi.Cluster = (*node.Node)(nil)
)

func newServer(t testing.TB) *testServer {
	t.Helper()
	return newServerTTL(t, stableTTL)
}

// newServerTTL starts a server whose instances expire after ttl.
func newServerTTL(t testing.TB, ttl time.Duration) *testServer {
	t.Helper()
	return startServer(t, ttl, func(n *node.Node) httpapi.Backend { return n })
}

// newServerWith starts a node and serves the API over the backend wrap makes
// of it.
func newServerWith(t testing.TB, wrap func(*node.Node) httpapi.Backend) *testServer {
	t.Helper()
	return startServer(t, stableTTL, wrap)
}

func startServer(t testing.TB, ttl time.Duration, wrap func(*node.Node) httpapi.Backend) *testServer {
	t.Helper()
	n, err := node.New(node.Config{
		DataDir:             t.TempDir(),
		Addr:                "127.0.0.1:0",
		InstanceTTL:         ttl,
		ExpiryCheckInterval: testCheckInterval,
		Log:                 zerolog.Nop(),
	})
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	srv := httpapi.NewServer(httpapi.New(wrap(n), httpapi.Options{KeepAlive: testKeepAlive}), httpapi.ServerOptions{})
	go srv.Serve(n.HTTPListener())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		n.Close()
		t.Fatalf("WaitLeader: %v", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	s := &testServer{t: t, n: n, url: "http://" + n.Addr(), http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		n.EndStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		n.Close()
	})
	// The first write may race the node settling into leadership.
	s.eventually(5*time.Second, func() error {
		r := s.do("PUT", "/services/warmup", "", nil)
		if r.status != 200 && r.status != 409 {
			return errors.New(string(r.body))
		}
		return nil
	})
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
	index  uint64
}

// do sends a request and checks what every response must have: a
// Discoverd-Index header, and a JSON error body on every failure.
func (s *testServer) do(method, path, body string, header map[string]string) response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return s.send(req)
}

func (s *testServer) send(req *http.Request) response {
	s.t.Helper()
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	hv := resp.Header.Get(api.IndexHeader)
	if hv == "" {
		s.t.Errorf("%s %s: %d response has no %s header", req.Method, req.URL.Path, resp.StatusCode, api.IndexHeader)
	} else if r.index, err = strconv.ParseUint(hv, 10, 64); err != nil {
		s.t.Errorf("%s %s: bad %s header %q", req.Method, req.URL.Path, api.IndexHeader, hv)
	}
	if resp.StatusCode == 500 {
		s.t.Errorf("%s %s: 500: %s", req.Method, req.URL.Path, b)
	}
	if resp.Header.Get("Content-Type") == "application/json" && len(b) > 0 && b[len(b)-1] != '\n' {
		s.t.Errorf("%s %s: JSON body %q does not end with a newline", req.Method, req.URL.Path, b)
	}
	if resp.StatusCode >= 400 {
		var e api.Error
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			s.t.Errorf("%s %s: error response has Content-Type %q", req.Method, req.URL.Path, ct)
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Message == "" {
			s.t.Errorf("%s %s: error body %q is not an api.Error (%v)", req.Method, req.URL.Path, b, err)
		}
	}
	return r
}

// must sends a request that must answer 200.
func (s *testServer) must(method, path, body string) response {
	s.t.Helper()
	r := s.do(method, path, body, nil)
	if r.status != 200 {
		s.t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	return r
}

func (s *testServer) apiError(r response) api.Error {
	s.t.Helper()
	var e api.Error
	_ = json.Unmarshal(r.body, &e)
	return e
}

func (s *testServer) wantError(r response, status int, code api.ErrorCode) api.Error {
	s.t.Helper()
	e := s.apiError(r)
	if r.status != status || e.Code != code {
		s.t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, code)
	}
	return e
}

func (s *testServer) register(service, id, addr string, meta map[string]string) api.Instance {
	s.t.Helper()
	body, _ := json.Marshal(api.Instance{Addr: addr, Proto: "http", Meta: meta})
	r := s.must("PUT", "/services/"+service+"/instances/"+id, string(body))
	var inst api.Instance
	if err := json.Unmarshal(r.body, &inst); err != nil {
		s.t.Fatalf("instance body %q: %v", r.body, err)
	}
	if inst.ID != id || inst.Addr != addr || inst.Index == 0 {
		s.t.Fatalf("registered %s, got %s", id, r.body)
	}
	if r.index < inst.Index {
		s.t.Fatalf("%s %d is below the instance's index %d", api.IndexHeader, r.index, inst.Index)
	}
	return inst
}

func (s *testServer) instances(service string) []api.Instance {
	s.t.Helper()
	r := s.must("GET", "/services/"+service+"/instances", "")
	var list []api.Instance
	if err := json.Unmarshal(r.body, &list); err != nil {
		s.t.Fatalf("instances body %q: %v", r.body, err)
	}
	return list
}

// eventually polls fn until it succeeds or the deadline passes.
func (s *testServer) eventually(timeout time.Duration, fn func() error) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sseEvent is one parsed SSE event (or comment).
type sseEvent struct {
	id      string
	name    string
	data    string
	comment bool
	ev      api.Event
}

type sseStream struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
	done   chan struct{}
}

// stream opens an SSE stream; header holds extra request headers.
func (s *testServer) stream(path string, header map[string]string) *sseStream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: s.http.Transport}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		s.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		s.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache"} {
		if got := resp.Header.Get(k); got != want {
			s.t.Errorf("stream %s: %s is %q, want %q", path, k, got, want)
		}
	}
	if resp.Header.Get(api.IndexHeader) == "" {
		s.t.Errorf("stream %s has no %s header", path, api.IndexHeader)
	}
	st := &sseStream{t: s.t, resp: resp, events: make(chan sseEvent, 4096), cancel: cancel, done: make(chan struct{})}
	go st.read()
	s.t.Cleanup(st.close)
	return st
}

func (st *sseStream) read() {
	defer close(st.done)
	defer close(st.events)
	sc := bufio.NewScanner(st.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var cur sseEvent
	var has bool
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if has {
				if !cur.comment && cur.name == "" {
					if err := json.Unmarshal([]byte(cur.data), &cur.ev); err != nil {
						cur.name = "bad-json: " + err.Error()
					}
				}
				st.events <- cur
			}
			cur, has = sseEvent{}, false
		case strings.HasPrefix(line, ":"):
			cur.comment, has = true, true
		case strings.HasPrefix(line, "id: "):
			cur.id, has = line[4:], true
		case strings.HasPrefix(line, "event: "):
			cur.name, has = line[7:], true
		case strings.HasPrefix(line, "data: "):
			if cur.data != "" {
				cur.data += "\n"
			}
			cur.data, has = cur.data+line[6:], true
		default:
			cur.name, has = "unexpected line: "+line, true
		}
	}
}

func (st *sseStream) close() {
	st.cancel()
	st.resp.Body.Close()
	<-st.done
}

// next returns the next event, skipping keep-alive comments.
func (st *sseStream) next(timeout time.Duration) sseEvent {
	st.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				st.t.Fatalf("stream ended while waiting for an event")
			}
			if e.comment {
				continue
			}
			if e.name != "" {
				st.t.Fatalf("unexpected SSE event %q: %s", e.name, e.data)
			}
			if e.id != strconv.FormatUint(e.ev.Index, 10) {
				st.t.Fatalf("SSE id %q differs from the event index %d: %s", e.id, e.ev.Index, e.data)
			}
			return e
		case <-deadline.C:
			st.t.Fatalf("no SSE event within %v", timeout)
		}
	}
}

// expect reads the next event and checks its kind and instance id ("" for
// none).
func (st *sseStream) expect(kind api.EventKind, id string) api.Event {
	st.t.Helper()
	e := st.next(5 * time.Second)
	got := ""
	if e.ev.Instance != nil {
		got = e.ev.Instance.ID
	}
	if e.ev.Kind != kind || got != id {
		st.t.Fatalf("got event %s, want %s of %q", e.data, kind, id)
	}
	return e.ev
}

// skipPrelude reads events up to and including current.
func (st *sseStream) skipPrelude() {
	st.t.Helper()
	for st.next(5*time.Second).ev.Kind != api.EventCurrent {
	}
}

func TestServicesLifecycle(t *testing.T) {
	s := newServer(t)

	r := s.must("PUT", "/services/web", "")
	if got := strings.TrimSpace(string(r.body)); got != `{"leader_type":"oldest"}` {
		t.Errorf("PUT service answered %s", got)
	}
	s.must("PUT", "/services/db", `{"leader_type":"manual"}`)
	s.wantError(s.do("PUT", "/services/web", "", nil), 409, api.CodeExists)

	r = s.must("GET", "/services", "")
	var names []string
	if err := json.Unmarshal(r.body, &names); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "db,warmup,web" {
		t.Errorf("services %v", names)
	}

	r = s.must("GET", "/services/web/instances", "")
	if got := strings.TrimSpace(string(r.body)); got != "[]" {
		t.Errorf("instances of an empty service: %q, want []", got)
	}
	s.wantError(s.do("GET", "/services/web/leader", "", nil), 404, api.CodeNotFound)
	e := s.wantError(s.do("GET", "/services/web/meta", "", nil), 404, api.CodeNotFound)
	if !strings.Contains(e.Message, "no meta") {
		t.Errorf("meta 404 message %q", e.Message)
	}

	s.must("DELETE", "/services/web", "")
	for _, path := range []string{"/services/web/instances", "/services/web/leader", "/services/web/meta"} {
		s.wantError(s.do("GET", path, "", nil), 404, api.CodeNotFound)
	}
	s.wantError(s.do("DELETE", "/services/web", "", nil), 404, api.CodeNotFound)
	s.wantError(s.do("PUT", "/services/web/instances/a", `{"addr":"127.0.0.1:1","proto":"http"}`, nil), 404, api.CodeNotFound)

	s.must("GET", "/ping", "")
	r = s.must("GET", "/.well-known/status", "")
	var st api.Status
	if err := json.Unmarshal(r.body, &st); err != nil || st.Role != "leader" || !st.Healthy || st.AppliedIndex == 0 {
		t.Errorf("status %s (%v)", r.body, err)
	}
	// A node's membership routes are served too (raft.go).
	r = s.must("GET", "/raft/leader", "")
	var li api.LeaderInfo
	if err := json.Unmarshal(r.body, &li); err != nil || li.Host != s.n.Advertise() {
		t.Errorf("raft leader %s (%v), want %s", r.body, err, s.n.Advertise())
	}
	s.wantError(s.do("GET", "/raft/peers/x", "", nil), 405, api.CodeValidation)
	r = s.must("GET", "/services?consistent=true", "")
	if r.index < st.AppliedIndex {
		t.Errorf("consistent read index %d below the status's %d", r.index, st.AppliedIndex)
	}
}

func TestRegister(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	a := s.register("web", "a", "10.0.0.1:80", map[string]string{"zone": "x"})
	b := s.register("web", "b", "10.0.0.2:80", nil)
	if b.Index <= a.Index {
		t.Errorf("b index %d not after a's %d", b.Index, a.Index)
	}

	// An instance without an id in the body takes the path's.
	list := s.instances("web")
	if len(list) != 2 || list[0].ID != "a" || list[1].ID != "b" || list[0].Meta["zone"] != "x" {
		t.Fatalf("instances %+v", list)
	}
	// The body's id may repeat the path's; its index is ignored.
	r := s.must("PUT", "/services/web/instances/c", `{"id":"c","addr":"10.0.0.3:80","proto":"http","index":1}`)
	var c api.Instance
	json.Unmarshal(r.body, &c)
	if c.Index <= b.Index {
		t.Errorf("c's index %d was taken from the body", c.Index)
	}
	r = s.must("GET", "/services/web/leader", "")
	var leader api.Instance
	json.Unmarshal(r.body, &leader)
	if leader.ID != "a" || leader.Index != a.Index {
		t.Errorf("leader %s, want a", r.body)
	}
	r = s.must("GET", "/services/web/instances?consistent=true", "")
	if !bytes.HasPrefix(r.body, []byte(`[{"id":"a"`)) {
		t.Errorf("consistent instances %s", r.body)
	}
}

func TestHeartbeatUnchangedIsNoWrite(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	body := `{"addr":"10.0.0.1:80","proto":"http","meta":{"k":"v"}}`
	first := s.must("PUT", "/services/web/instances/a", body)
	// Counted by command type, not read from Discoverd-Index: the node's
	// own entries (its announcement of the command types it applies, made
	// once it leads) may land at any time and move the index.
	writes := instanceWrites(t, s.n)
	for i := 0; i < 20; i++ {
		r := s.must("PUT", "/services/web/instances/a", body)
		if n := instanceWrites(t, s.n); n != writes {
			t.Fatalf("heartbeat %d applied %v instance commands, want none: it went through the Raft log", i, n-writes)
		}
		if r.index < first.index {
			t.Fatalf("heartbeat %d answered %s %d, below the registration's %d", i, api.IndexHeader, r.index, first.index)
		}
		if !bytes.Equal(r.body, first.body) {
			t.Fatalf("heartbeat answered %s, registration %s", r.body, first.body)
		}
	}
}

// instanceWrites is how many instance commands (add_instance and its
// compact and batched forms) n has applied, from its metrics.
func instanceWrites(t *testing.T, n *node.Node) float64 {
	t.Helper()
	fams, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != "discoverd_raft_commands_applied_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "command" && strings.HasPrefix(l.GetValue(), "add_instance") {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func TestUpdate(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	a := s.register("web", "a", "10.0.0.1:80", map[string]string{"v": "1"})
	st := s.stream("/services/web", nil)
	st.skipPrelude()

	r := s.must("PUT", "/services/web/instances/a", `{"addr":"10.0.0.1:80","proto":"http","meta":{"v":"2"}}`)
	var upd api.Instance
	json.Unmarshal(r.body, &upd)
	if upd.Index != a.Index || upd.Meta["v"] != "2" {
		t.Fatalf("update answered %s; want index %d and v=2", r.body, a.Index)
	}
	ev := st.expect(api.EventUpdate, "a")
	if ev.Instance.Index != a.Index || ev.Instance.Meta["v"] != "2" || ev.Index <= a.Index {
		t.Errorf("update event %+v", ev)
	}
	if r.index < ev.Index {
		// Heartbeat returns no write index, so this rests on the backend's
		// AppliedIndex covering every write already answered (the FSM's
		// applied index, not Raft's lastApplied, which can lag it).
		t.Errorf("%s %d is below the update's index %d", api.IndexHeader, r.index, ev.Index)
	}
	// Updating the leader is not a new leadership.
	s.register("web", "b", "10.0.0.2:80", nil)
	st.expect(api.EventUp, "b")
}

func TestDeregister(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)
	s.register("web", "b", "10.0.0.2:80", nil)
	st := s.stream("/services/web/instances", nil)
	st.skipPrelude()
	r := s.must("DELETE", "/services/web/instances/a", "")
	ev := st.expect(api.EventDown, "a")
	if r.index < ev.Index {
		t.Errorf("%s %d below the down's index %d", api.IndexHeader, r.index, ev.Index)
	}
	if list := s.instances("web"); len(list) != 1 || list[0].ID != "b" {
		t.Errorf("instances after deregister: %+v", list)
	}
	s.wantError(s.do("DELETE", "/services/web/instances/a", "", nil), 404, api.CodeNotFound)
}

func TestLeaderOldest(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)
	b := s.register("web", "b", "10.0.0.2:80", nil)
	s.register("web", "c", "10.0.0.3:80", nil)

	ls := s.stream("/services/web/leader", nil)
	ls.expect(api.EventLeader, "a")
	ls.expect(api.EventCurrent, "")

	s.must("DELETE", "/services/web/instances/a", "")
	ev := ls.expect(api.EventLeader, "b")
	if ev.Instance.Index != b.Index {
		t.Errorf("leader event %+v, want b at index %d", ev, b.Index)
	}
	r := s.must("GET", "/services/web/leader", "")
	var leader api.Instance
	json.Unmarshal(r.body, &leader)
	if leader.ID != "b" {
		t.Errorf("leader %s, want b", r.body)
	}
	// A non-leader leaving changes no leadership; the leader stream shows
	// only leader events.
	s.must("DELETE", "/services/web/instances/c", "")
	s.must("DELETE", "/services/web/instances/b", "")
	ls.expect(api.EventLeader, "")
	s.wantError(s.do("GET", "/services/web/leader", "", nil), 404, api.CodeNotFound)
}

func TestManualLeader(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/db", `{"leader_type":"manual"}`)
	s.register("db", "a", "10.0.0.1:80", nil)
	s.register("db", "b", "10.0.0.2:80", nil)
	s.wantError(s.do("GET", "/services/db/leader", "", nil), 404, api.CodeNotFound)

	ls := s.stream("/services/db/leader", nil)
	ls.expect(api.EventCurrent, "") // no leader: no leader event in the prelude

	r := s.must("PUT", "/services/db/leader", `{"id":"b"}`)
	var leader api.Instance
	json.Unmarshal(r.body, &leader)
	if leader.ID != "b" || leader.Addr != "10.0.0.2:80" {
		t.Errorf("PUT leader answered %s", r.body)
	}
	ev := ls.expect(api.EventLeader, "b")
	if r.index < ev.Index {
		t.Errorf("%s %d below the leader event's %d", api.IndexHeader, r.index, ev.Index)
	}
	r = s.must("GET", "/services/db/leader", "")
	json.Unmarshal(r.body, &leader)
	if leader.ID != "b" {
		t.Errorf("leader %s, want b", r.body)
	}
	s.wantError(s.do("PUT", "/services/db/leader", `{"id":"nope"}`, nil), 404, api.CodeNotFound)

	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)
	s.wantError(s.do("PUT", "/services/web/leader", `{"id":"a"}`, nil), 400, api.CodeValidation)
}

func TestServiceMetaCAS(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	r := s.must("PUT", "/services/web/meta", `{"data": {"a": [1, 2]}, "index": 0}`)
	var m api.ServiceMeta
	if err := json.Unmarshal(r.body, &m); err != nil || m.Index == 0 || string(m.Data) != `{"a":[1,2]}` {
		t.Fatalf("PUT meta answered %s (%v)", r.body, err)
	}
	if r.index < m.Index {
		t.Errorf("%s %d below the meta index %d", api.IndexHeader, r.index, m.Index)
	}
	s.wantError(s.do("PUT", "/services/web/meta", `{"data": 1, "index": 0}`, nil), 409, api.CodeExists)
	s.wantError(s.do("PUT", "/services/web/meta", `{"data": 1, "index": `+strconv.FormatUint(m.Index+100, 10)+`}`, nil), 412, api.CodePreconditionFailed)

	r = s.must("PUT", "/services/web/meta", `{"data": "two", "index": `+strconv.FormatUint(m.Index, 10)+`}`)
	var m2 api.ServiceMeta
	json.Unmarshal(r.body, &m2)
	if m2.Index <= m.Index || string(m2.Data) != `"two"` {
		t.Fatalf("second PUT meta answered %s", r.body)
	}
	s.wantError(s.do("PUT", "/services/web/meta", `{"data": 3, "index": `+strconv.FormatUint(m.Index, 10)+`}`, nil), 412, api.CodePreconditionFailed)
	r = s.must("GET", "/services/web/meta", "")
	if got := strings.TrimSpace(string(r.body)); got != `{"data":"two","index":`+strconv.FormatUint(m2.Index, 10)+`}` {
		t.Errorf("GET meta %s", got)
	}
	s.wantError(s.do("PUT", "/services/nope/meta", `{"data": 1, "index": 0}`, nil), 404, api.CodeNotFound)
}

func TestStreamPreludeAndLive(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	a := s.register("web", "a", "10.0.0.1:80", nil)
	b := s.register("web", "b", "10.0.0.2:80", nil)
	c := s.register("web", "c", "10.0.0.3:80", nil)
	s.must("PUT", "/services/web/meta", `{"data":{"x":1},"index":0}`)

	st := s.stream("/services/web", nil)
	for _, want := range []api.Instance{a, b, c} {
		ev := st.expect(api.EventUp, want.ID)
		if ev.Instance.Index != want.Index {
			t.Errorf("prelude up %+v, want index %d", ev.Instance, want.Index)
		}
	}
	st.expect(api.EventLeader, "a")
	ev := st.expect(api.EventServiceMeta, "")
	if ev.ServiceMeta == nil || string(ev.ServiceMeta.Data) != `{"x":1}` {
		t.Errorf("prelude service_meta %+v", ev)
	}
	cur := st.expect(api.EventCurrent, "")

	d := s.register("web", "d", "10.0.0.4:80", nil)
	ev = st.expect(api.EventUp, "d")
	if ev.Index != d.Index || ev.Index <= cur.Index {
		t.Errorf("live up index %d, want %d (after current %d)", ev.Index, d.Index, cur.Index)
	}
	s.must("DELETE", "/services/web/instances/a", "")
	down := st.expect(api.EventDown, "a")
	lead := st.expect(api.EventLeader, "b")
	if down.Index != lead.Index || down.Index <= ev.Index {
		t.Errorf("down %d and leader %d should share one index after %d", down.Index, lead.Index, ev.Index)
	}
	var m api.ServiceMeta
	json.Unmarshal(s.must("GET", "/services/web/meta", "").body, &m)
	r := s.must("PUT", "/services/web/meta", `{"data":null,"index":`+strconv.FormatUint(m.Index, 10)+`}`)
	json.Unmarshal(r.body, &m)
	ev = st.expect(api.EventServiceMeta, "")
	if ev.Index != m.Index || ev.ServiceMeta.Index != m.Index || string(ev.ServiceMeta.Data) != "null" {
		t.Errorf("service_meta event %+v, want index %d", ev, m.Index)
	}

	// Removing the service ends in downs and a leaderless leader event.
	s.must("DELETE", "/services/web", "")
	for _, id := range []string{"b", "c", "d"} {
		st.expect(api.EventDown, id)
	}
	st.expect(api.EventLeader, "")
}

func TestStreamResume(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)
	st := s.stream("/services/web", nil)
	st.skipPrelude()
	b := s.register("web", "b", "10.0.0.2:80", nil)
	last := st.expect(api.EventUp, "b")
	if last.Index != b.Index {
		t.Fatalf("up index %d, want %d", last.Index, b.Index)
	}
	st.close()

	// Missed while disconnected.
	s.register("web", "c", "10.0.0.3:80", nil)
	s.must("DELETE", "/services/web/instances/a", "")

	st = s.stream("/services/web", map[string]string{api.LastEventIDHeader: strconv.FormatUint(last.Index, 10)})
	up := st.expect(api.EventUp, "c")
	if up.Index <= last.Index {
		t.Errorf("resumed with an event at %d, not after %d", up.Index, last.Index)
	}
	st.expect(api.EventDown, "a")
	st.expect(api.EventLeader, "b")
	s.register("web", "e", "10.0.0.5:80", nil)
	st.expect(api.EventUp, "e")

	// A resume on the instances stream sees only its kinds.
	is := s.stream("/services/web/instances", map[string]string{api.LastEventIDHeader: strconv.FormatUint(last.Index, 10)})
	is.expect(api.EventUp, "c")
	is.expect(api.EventDown, "a")
	is.expect(api.EventUp, "e")
}

func TestStreamKeepAlive(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	st := s.stream("/services/web", nil)
	st.skipPrelude()
	deadline := time.After(10 * testKeepAlive)
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if e.comment {
				return
			}
			t.Fatalf("unexpected event %+v", e)
		case <-deadline:
			t.Fatalf("no keep-alive comment within %v", 10*testKeepAlive)
		}
	}
}

// TestStreamEndsWithError checks that a stream the node ends (here, by
// shutting its streams down) sends a final error event.
func TestStreamEndsWithError(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	st := s.stream("/services/web", nil)
	st.skipPrelude()
	s.n.EndStreams()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				t.Fatal("stream ended without an error event")
			}
			if e.comment {
				continue
			}
			if e.name != "error" {
				t.Fatalf("got %+v, want an error event", e)
			}
			var ae api.Error
			if err := json.Unmarshal([]byte(e.data), &ae); err != nil || ae.Code != api.CodeUnavailable || !ae.Retry {
				t.Fatalf("error event data %q", e.data)
			}
			select {
			case _, ok := <-st.events:
				if ok {
					t.Fatal("events after the error event")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("stream not closed after the error event")
			}
			return
		case <-timeout:
			t.Fatal("no error event")
		}
	}
}

func TestExpiry(t *testing.T) {
	s := newServerTTL(t, testTTL)
	s.must("PUT", "/services/web", "")
	body := func(addr string) string { return `{"addr":"` + addr + `","proto":"http"}` }
	s.must("PUT", "/services/web/instances/a", body("10.0.0.1:80"))
	s.must("PUT", "/services/web/instances/b", body("10.0.0.2:80"))
	st := s.stream("/services/web", nil)
	st.skipPrelude()

	// b keeps heartbeating; a heartbeats once more and then stops.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(testTTL / 5)
		defer t.Stop()
		for {
			req, _ := http.NewRequestWithContext(ctx, "PUT", s.url+"/services/web/instances/b", strings.NewReader(body("10.0.0.2:80")))
			if resp, err := s.http.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	// Timed from the sending of a's last heartbeat: the node took it after
	// that, so no down may come sooner than a TTL after.
	lastBeat := time.Now()
	s.must("PUT", "/services/web/instances/a", body("10.0.0.1:80"))
	// How soon after the TTL the down comes is measured by the bench's
	// detect workload; here, a deadline sized for a busy machine.
	down := st.next(testTTL + 10*time.Second)
	took := time.Since(lastBeat)
	if down.ev.Kind != api.EventDown || down.ev.Instance.ID != "a" {
		t.Fatalf("got %s, want down of a", down.data)
	}
	leader := st.next(time.Second)
	if leader.ev.Kind != api.EventLeader || leader.ev.Instance == nil || leader.ev.Instance.ID != "b" || leader.ev.Index != down.ev.Index {
		t.Fatalf("got %s, want leader b at index %d", leader.data, down.ev.Index)
	}
	t.Logf("down %v after the last heartbeat", took)
	if took < testTTL {
		t.Errorf("down came %v after the last heartbeat, before the TTL %v", took, testTTL)
	}
	if list := s.instances("web"); len(list) != 1 || list[0].ID != "b" {
		t.Errorf("instances after expiry: %+v", list)
	}
}

// panicky is a real node whose Status panics, to exercise the last-resort
// recovery.
type panicky struct{ *node.Node }

func (panicky) Status() api.Status { panic("boom") }

func TestPanicIsJSON500(t *testing.T) {
	s := newServerWith(t, func(n *node.Node) httpapi.Backend { return panicky{n} })
	req, _ := http.NewRequest("GET", s.url+"/.well-known/status", nil)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 500 || e.Code != api.CodeUnknown {
		t.Fatalf("got %d %+v (%v)", resp.StatusCode, e, err)
	}
	if resp.Header.Get(api.IndexHeader) == "" {
		t.Errorf("no %s on the panic answer", api.IndexHeader)
	}
	// The server still serves.
	s.must("GET", "/ping", "")
}

func TestBadInput(t *testing.T) {
	s := newServer(t)
	s.must("PUT", "/services/web", "")
	s.register("web", "a", "10.0.0.1:80", nil)
	long := strings.Repeat("a", 64)
	inst := `{"addr":"10.0.0.1:80","proto":"http"}`
	sse := map[string]string{"Accept": "text/event-stream"}

	cases := []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     api.ErrorCode
		msg                      string // a part of the message
	}{
		{"malformed instance JSON", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1:80",`, nil, 400, api.CodeValidation, "malformed JSON in request body: unexpected end of JSON input at byte 22"},
		{"malformed service JSON", "PUT", "/services/new", `{leader_type: oldest}`, nil, 400, api.CodeValidation, "malformed JSON"},
		{"trailing garbage", "PUT", "/services/web/instances/x", inst + ` x`, nil, 400, api.CodeValidation, "malformed JSON"},
		{"instance is an array", "PUT", "/services/web/instances/x", `[1]`, nil, 400, api.CodeValidation, "JSON array"},
		{"meta value not a string", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1:80","proto":"http","meta":{"k":1}}`, nil, 400, api.CodeValidation, `"meta": found a JSON number where a string is expected`},
		{"addr not a string", "PUT", "/services/web/instances/x", `{"addr":1,"proto":"http"}`, nil, 400, api.CodeValidation, `"addr"`},
		{"empty instance body", "PUT", "/services/web/instances/x", "", nil, 400, api.CodeValidation, "empty"},
		{"bad service name", "PUT", "/services/Web_1", "", nil, 400, api.CodeValidation, "service name"},
		{"service name too long", "PUT", "/services/" + long, "", nil, 400, api.CodeValidation, "limit is 63"},
		{"bad service name on instances", "GET", "/services/WEB/instances", "", nil, 400, api.CodeValidation, "service name"},
		{"bad service name on stream", "GET", "/services/WEB", "", sse, 400, api.CodeValidation, "service name"},
		{"bad service name on heartbeat", "PUT", "/services/we.b/instances/x", inst, nil, 400, api.CodeValidation, "service name"},
		{"bad service name on leader", "GET", "/services/we%20b/leader", "", nil, 400, api.CodeValidation, "service name"},
		{"bad service name on meta", "PUT", "/services/we!b/meta", `{"data":1}`, nil, 400, api.CodeValidation, "service name"},
		{"bad instance id", "PUT", "/services/web/instances/a!b", inst, nil, 400, api.CodeValidation, "instance id"},
		{"instance id too long", "PUT", "/services/web/instances/" + strings.Repeat("i", 129), inst, nil, 400, api.CodeValidation, "limit is 128"},
		{"bad instance id on delete", "DELETE", "/services/web/instances/a%20b", "", nil, 400, api.CodeValidation, "instance id"},
		{"id mismatch", "PUT", "/services/web/instances/x", `{"id":"y","addr":"10.0.0.1:80","proto":"http"}`, nil, 400, api.CodeValidation, "differs"},
		{"bad proto", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1:80","proto":"HTTP"}`, nil, 400, api.CodeValidation, "proto"},
		{"no proto", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1:80"}`, nil, 400, api.CodeValidation, "proto"},
		{"bad addr", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1","proto":"http"}`, nil, 400, api.CodeValidation, "host:port"},
		{"bad port", "PUT", "/services/web/instances/x", `{"addr":"10.0.0.1:70000","proto":"http"}`, nil, 400, api.CodeValidation, "port"},
		{"unknown leader_type", "PUT", "/services/new", `{"leader_type":"newest"}`, nil, 400, api.CodeValidation, "leader_type"},
		{"leader_type not a string", "PUT", "/services/new", `{"leader_type":1}`, nil, 400, api.CodeValidation, "leader_type"},
		{"empty set-leader body", "PUT", "/services/web/leader", "", nil, 400, api.CodeValidation, "empty"},
		{"bad set-leader id", "PUT", "/services/web/leader", `{"id":"a b"}`, nil, 400, api.CodeValidation, "instance id"},
		{"meta without data", "PUT", "/services/web/meta", `{"index":0}`, nil, 400, api.CodeValidation, "data"},
		{"meta malformed", "PUT", "/services/web/meta", `{"data":}`, nil, 400, api.CodeValidation, "malformed JSON"},
		{"meta negative index", "PUT", "/services/web/meta", `{"data":1,"index":-1}`, nil, 400, api.CodeValidation, "index"},
		{"bad Last-Event-ID", "GET", "/services/web", "", map[string]string{api.LastEventIDHeader: "abc"}, 400, api.CodeValidation, api.LastEventIDHeader},
		{"bad consistent", "GET", "/services/web/instances?consistent=maybe", "", nil, 400, api.CodeValidation, "consistent"},
		{"unknown route", "GET", "/nope", "", nil, 404, api.CodeNotFound, "no route"},
		{"unknown sub-route", "GET", "/services/web/other", "", nil, 404, api.CodeNotFound, "no route"},
		{"wrong method on service", "POST", "/services/web", "", nil, 405, api.CodeValidation, "not allowed"},
		{"wrong method on services", "DELETE", "/services", "", nil, 405, api.CodeValidation, "not allowed"},
		{"wrong method on instance", "GET", "/services/web/instances/a", "", nil, 405, api.CodeValidation, "not allowed"},
		{"wrong method on ping", "POST", "/ping", "", nil, 405, api.CodeValidation, "not allowed"},
		{"unknown service instances", "GET", "/services/nope/instances", "", nil, 404, api.CodeNotFound, "nope"},
		{"unknown instance delete", "DELETE", "/services/web/instances/zz", "", nil, 404, api.CodeNotFound, "zz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			r := s.do(c.method, c.path, c.body, c.header)
			e := s.wantError(r, c.status, c.code)
			t.Logf("%d %s", r.status, r.body)
			if !strings.Contains(e.Message, c.msg) {
				t.Errorf("message %q does not say %q", e.Message, c.msg)
			}
			if c.status == 405 && r.header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
	s.t = t

	// Bodies over 1 MiB, with and without a Content-Length.
	big := `{"addr":"10.0.0.1:80","proto":"http","meta":{"k":"` + strings.Repeat("x", 1<<20) + `"}}`
	for _, chunked := range []bool{false, true} {
		var rd io.Reader = strings.NewReader(big)
		if chunked {
			rd = io.MultiReader(rd) // hides the length
		}
		req, _ := http.NewRequest("PUT", s.url+"/services/web/instances/x", rd)
		r := s.send(req)
		e := s.apiError(r)
		if r.status != 413 || e.Code != api.CodeValidation || !strings.Contains(e.Message, "limit of 1048576 bytes") {
			t.Errorf("body over 1 MiB (chunked %v): %d %s", chunked, r.status, r.body)
		}
	}

	// Nothing above changed the registry.
	if list := s.instances("web"); len(list) != 1 || list[0].ID != "a" {
		t.Errorf("instances after bad input: %+v", list)
	}
	if names := s.must("GET", "/services", ""); strings.Contains(string(names.body), "new") {
		t.Errorf("a bad PUT created a service: %s", names.body)
	}
}

// A raw connection sending garbage gets a 4xx from net/http, and the
// server keeps serving.
func TestGarbageRequest(t *testing.T) {
	s := newServer(t)
	conn, err := net.Dial("tcp", s.n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("GARBAGE\r\n\r\n"))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if line != "" && !strings.Contains(line, " 4") {
		t.Errorf("garbage request answered %q", line)
	}
	s.must("GET", "/ping", "")
}
