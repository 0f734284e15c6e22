package bus

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
)

const testTimeout = 10 * time.Second

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// startServer starts a server on loopback random ports, shut down at the end
// of the test.
func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:-1"
	}
	if cfg.Name == "" {
		cfg.Name = t.Name()
	}
	cfg.Log = testLogger(t)
	s, err := StartServer(cfg)
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// dial connects a client over TCP, closed at the end of the test (before
// the server shuts down, as cleanups run last-in first-out).
func dial(t testing.TB, s *Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(testTimeout))
	if err != nil {
		t.Fatalf("connect %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// inProc opens an in-process connection, closed at the end of the test.
func inProc(t testing.TB, s *Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatalf("in-process connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type hbCall struct {
	service string
	inst    api.Instance
	ctxOK   bool
}

// fakeHandler records heartbeats and answers err.
type fakeHandler struct {
	mu    sync.Mutex
	calls []hbCall
	err   error
	ch    chan hbCall
}

func newFakeHandler() *fakeHandler { return &fakeHandler{ch: make(chan hbCall, 1024)} }

func (f *fakeHandler) Heartbeat(ctx context.Context, service string, inst *api.Instance) (*api.Instance, error) {
	_, hasDeadline := ctx.Deadline()
	c := hbCall{service: service, inst: *inst, ctxOK: hasDeadline && ctx.Err() == nil}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	err := f.err
	f.mu.Unlock()
	select {
	case f.ch <- c:
	default:
	}
	if err != nil {
		return nil, err
	}
	return inst, nil
}

func (f *fakeHandler) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeHandler) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeHandler) next(t testing.TB) hbCall {
	t.Helper()
	select {
	case c := <-f.ch:
		return c
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a heartbeat")
		return hbCall{}
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
