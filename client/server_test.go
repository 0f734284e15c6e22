package client

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/internal/testnode"
)

// testServer is a real single-node discoverd (node + HTTP API) in process.
type testServer struct {
	*testnode.Server
	t *testing.T
}

const (
	testTTL = 500 * time.Millisecond
	// keepAliveTTL is the TTL of the tests that check a Heartbeater keeps an
	// instance alive. They measure no expiry, and with half a second a busy
	// machine that holds the heartbeater up for a quarter of one expires it.
	keepAliveTTL = 2 * time.Second
)

// startServer starts a single-node server with the given instance TTL and
// waits until it leads.
func startServer(t *testing.T, ttl time.Duration) *testServer {
	t.Helper()
	return &testServer{testnode.Start(t, testnode.Options{TTL: ttl}), t}
}

// startServerNATS is startServer with an embedded NATS server on a free
// loopback port, kept across restarts.
func startServerNATS(t *testing.T, ttl time.Duration) *testServer {
	t.Helper()
	return &testServer{testnode.Start(t, testnode.Options{TTL: ttl, NATS: true}), t}
}

// register registers an instance through the node itself (no heartbeats).
func (s *testServer) register(service, addr string) *api.Instance {
	s.t.Helper()
	inst := &api.Instance{Addr: addr, Proto: "tcp"}
	if err := api.PrepareInstance(inst, ""); err != nil {
		s.t.Fatal(err)
	}
	stored, err := s.Node().Heartbeat(context.Background(), service, inst)
	if err != nil {
		s.t.Fatal(err)
	}
	return stored
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventf formats an event for comparison: "kind id@index".
func eventf(ev api.Event) string {
	switch ev.Kind {
	case api.EventUp, api.EventUpdate, api.EventDown, api.EventLeader:
		if ev.Instance == nil {
			return string(ev.Kind) + " -"
		}
		return string(ev.Kind) + " " + ev.Instance.Addr
	case api.EventServiceMeta:
		if ev.ServiceMeta == nil {
			return string(ev.Kind) + " -"
		}
		return string(ev.Kind) + " " + string(ev.ServiceMeta.Data)
	}
	return string(ev.Kind)
}

// nextEvents reads n events from w, failing after timeout.
func nextEvents(t *testing.T, w *Watcher, n int, timeout time.Duration) []string {
	t.Helper()
	var out []string
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watcher ended (err %v) after events %q, wanted %d", w.Err(), out, n)
			}
			out = append(out, eventf(ev))
		case <-deadline.C:
			t.Fatalf("got events %q within %v, wanted %d", out, timeout, n)
		}
	}
	return out
}

// noEvent checks that w sends nothing within d.
func noEvent(t *testing.T, w *Watcher, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.Events():
		t.Fatalf("unexpected event %s", eventf(ev))
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
