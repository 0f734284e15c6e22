package client

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

// testServer is a real single-node discoverd (node + HTTP API) in process.
type testServer struct {
	t    *testing.T
	dir  string
	addr string
	ttl  time.Duration
	n    *node.Node
	srv  *http.Server
	// applied is the node's applied index when it was last stopped.
	applied uint64
	// natsAddr, when set, runs the node's embedded NATS server there
	// ("127.0.0.1:-1" picks a port, kept across restarts).
	natsAddr string
}

const testTTL = 500 * time.Millisecond

// startServer starts a single-node server with the given instance TTL and
// waits until it leads.
func startServer(t *testing.T, ttl time.Duration) *testServer {
	t.Helper()
	return startServerNATS(t, ttl, "")
}

// startServerNATS is startServer with an embedded NATS server at natsAddr
// (none when empty).
func startServerNATS(t *testing.T, ttl time.Duration, natsAddr string) *testServer {
	t.Helper()
	s := &testServer{t: t, dir: t.TempDir(), addr: "127.0.0.1:0", ttl: ttl, natsAddr: natsAddr}
	s.startNode()
	s.serve()
	t.Cleanup(s.stop)
	return s
}

// startNode starts the node (not the HTTP server) and waits until it leads.
func (s *testServer) startNode() {
	s.t.Helper()
	n, err := node.New(node.Config{
		DataDir:             s.dir,
		Addr:                s.addr,
		InstanceTTL:         s.ttl,
		ExpiryCheckInterval: 100 * time.Millisecond,
		NATS:                s.natsAddr != "",
		NATSAddr:            s.natsAddr,
		Log:                 zerolog.Nop(),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.n = n
	s.addr = n.Addr()
	if s.natsAddr != "" {
		s.natsAddr = strings.TrimPrefix(n.NATSURL(), "nats://")
	}
	// Wait until it leads and has applied everything it held before a
	// restart (a new leader applies its old log only after it leads).
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() || !n.Ready() || n.AppliedIndex() < s.applied {
		if time.Now().After(deadline) {
			s.t.Fatal("server did not become leader within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serve starts answering HTTP.
func (s *testServer) serve() {
	s.srv = &http.Server{Handler: httpapi.New(s.n, httpapi.Options{})}
	go s.srv.Serve(s.n.HTTPListener())
}

func (s *testServer) stop() {
	if s.n == nil {
		return
	}
	s.applied = s.n.AppliedIndex()
	s.n.EndStreams()
	if s.srv != nil {
		s.srv.Close()
	}
	s.n.Close()
	s.n, s.srv = nil, nil
}

// restart stops the server and starts it again on the same data dir and
// address.
func (s *testServer) restart() {
	s.t.Helper()
	s.stop()
	s.startNode()
	s.serve()
}

func (s *testServer) URL() string { return "http://" + s.addr }

func (s *testServer) NATSURL() string { return "nats://" + s.natsAddr }

// stopHTTP stops answering HTTP, keeping the node (and NATS) running.
func (s *testServer) stopHTTP() {
	s.n.EndStreams()
	s.srv.Close()
}

// register registers an instance through the node itself (no heartbeats).
func (s *testServer) register(service, addr string) *api.Instance {
	s.t.Helper()
	inst := &api.Instance{Addr: addr, Proto: "tcp"}
	if err := api.PrepareInstance(inst, ""); err != nil {
		s.t.Fatal(err)
	}
	stored, err := s.n.Heartbeat(context.Background(), service, inst)
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
