package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/httpapi"
	"github.com/discoverd/discoverd/node"
)

// TestEndStreamsEndsEveryStream checks that a node ending its streams (as
// on SIGTERM) ends every one, HTTP/1.1 (written by the pool) and HTTP/2
// (many on one connection) alike, each with its error event, and that the
// server then shuts down without waiting for any.
func TestEndStreamsEndsEveryStream(t *testing.T) {
	n, srv := serveNode(t)
	h1 := &http.Transport{MaxIdleConnsPerHost: 16}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	s := &testServer{t: t, n: n, url: "http://" + n.Addr(), http: &http.Client{Transport: h1, Timeout: 10 * time.Second}}
	s.eventually(5*time.Second, func() error {
		if r := s.do("PUT", "/services/web", "", nil); r.status != 200 && r.status != 409 {
			return &api.Error{Message: string(r.body)}
		}
		return nil
	})
	s2 := *s
	s2.http = &http.Client{Transport: h2}

	const each = 40
	var streams []*sseStream
	for range each {
		streams = append(streams, s.stream("/services/web", nil), s2.stream("/services/web/leader", nil))
	}
	for _, st := range streams {
		st.skipPrelude()
		if st.resp.ProtoMajor != 1 && st.resp.ProtoMajor != 2 {
			t.Fatalf("stream over %s", st.resp.Proto)
		}
	}
	if got := streams[1].resp.ProtoMajor; got != 2 {
		t.Fatalf("the h2c stream is HTTP/%d", got)
	}

	n.EndStreams()
	for i, st := range streams {
		endsWithError(t, i, st)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown after every stream ended: %v", err)
	}
}

// endsWithError reads st up to its error event, which must say the node
// is shutting down, and then its end.
func endsWithError(t *testing.T, i int, st *sseStream) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				t.Fatalf("stream %d (%s) ended without an error event", i, st.resp.Proto)
			}
			if e.comment {
				continue
			}
			if e.name != "error" {
				t.Fatalf("stream %d: got %+v, want an error event", i, e)
			}
			var ae api.Error
			if err := json.Unmarshal([]byte(e.data), &ae); err != nil || ae.Code != api.CodeUnavailable || !ae.Retry {
				t.Fatalf("stream %d: error event data %q", i, e.data)
			}
			select {
			case _, ok := <-st.events:
				if ok {
					t.Fatalf("stream %d: events after the error event", i)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("stream %d (%s) not closed after its error event", i, st.resp.Proto)
			}
			return
		case <-timeout:
			t.Fatalf("stream %d (%s): no error event", i, st.resp.Proto)
		}
	}
}

// serveNode starts a node that leads a cluster of its own and serves its
// API, HTTP/2 enabled, on a server of the test's own (with testKeepAlive),
// which the test may shut down as cmd/discoverd does.
func serveNode(t *testing.T) (*node.Node, *http.Server) {
	t.Helper()
	n, err := node.New(node.Config{
		DataDir:             t.TempDir(),
		Addr:                "127.0.0.1:0",
		InstanceTTL:         stableTTL,
		ExpiryCheckInterval: testCheckInterval,
		Log:                 zerolog.Nop(),
	})
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	srv := httpapi.NewServer(httpapi.New(n, httpapi.Options{KeepAlive: testKeepAlive}), httpapi.ServerOptions{})
	httpapi.EnableHTTP2(srv)
	go srv.Serve(n.HTTPListener())
	t.Cleanup(func() {
		srv.Close()
		n.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatalf("WaitLeader: %v", err)
	}
	return n, srv
}
