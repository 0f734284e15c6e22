package h2server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// blockingHandler serves /block/... by waiting for release (a closed
// channel) and then answering "done"; other paths get "ok".
type blockingHandler struct {
	release chan struct{}
	started chan string
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{release: make(chan struct{}), started: make(chan string, 100)}
}

func (h *blockingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/block") {
		h.started <- r.URL.Path
		select {
		case <-h.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "done")
		return
	}
	if r.URL.Path == "/panic" {
		panic("a handler's bug")
	}
	io.WriteString(w, "ok")
}

// TestMaxConcurrentStreams: streams past the limit are refused while those
// open keep working.
func TestMaxConcurrentStreams(t *testing.T) {
	h := newBlockingHandler()
	ts := startServer(t, h, serverOpts{maxStreams: 3})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	for _, id := range []uint32{1, 3, 5} {
		rc.request(id, "GET", "/block", true)
		recv(t, "a handler", h.started)
	}
	rc.request(7, "GET", "/block", true)
	if code := rc.rst(7); code != http2.ErrCodeRefusedStream {
		t.Fatalf("stream 7 reset with %v, want REFUSED_STREAM", code)
	}
	close(h.release)
	got := map[uint32]string{}
	for len(got) < 3 {
		f, data := rc.next()
		if f == nil {
			t.Fatal("the connection ended")
		}
		if d, ok := f.(*http2.DataFrame); ok {
			got[d.StreamID] += string(data)
			if !d.StreamEnded() {
				t.Fatalf("stream %d's answer in more than one frame", d.StreamID)
			}
		}
	}
	for _, id := range []uint32{1, 3, 5} {
		if got[id] != "done" {
			t.Fatalf("stream %d: %q", id, got[id])
		}
	}
	// With the streams ended, a new one is served.
	rc.request(9, "GET", "/", true)
	if status, body := rc.response(9); status != "200" || string(body) != "ok" {
		t.Fatalf("stream 9: %s %q", status, body)
	}
}

// TestHeaderListTooLarge: a header list past the http.Server's
// MaxHeaderBytes gets 431 with a JSON body, and the connection goes on.
func TestHeaderListTooLarge(t *testing.T) {
	ts := startServer(t, newBlockingHandler(), serverOpts{configure: func(hs *http.Server) { hs.MaxHeaderBytes = 4096 }})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	long := strings.Repeat("v", 1500)
	rc.request(1, "GET", "/", true, "x-a", long, "x-b", long, "x-c", long)
	status, body := rc.response(1)
	if status != "431" {
		t.Fatalf("status %s, want 431", status)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	rc.request(3, "GET", "/", true)
	if status, body := rc.response(3); status != "200" || string(body) != "ok" {
		t.Fatalf("after 431: %s %q", status, body)
	}
}

// syncBuffer is a log's destination read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestHandlerPanic: a panicking handler's stream is reset with
// INTERNAL_ERROR, the panic logged, and the connection keeps working.
func TestHandlerPanic(t *testing.T) {
	var logs syncBuffer
	ts := startServer(t, newBlockingHandler(), serverOpts{configure: func(hs *http.Server) {
		hs.ErrorLog = log.New(&logs, "", 0)
	}})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	rc.request(1, "GET", "/panic", true)
	if code := rc.rst(1); code != http2.ErrCodeInternal {
		t.Fatalf("reset with %v, want INTERNAL_ERROR", code)
	}
	rc.request(3, "GET", "/", true)
	if status, body := rc.response(3); status != "200" || string(body) != "ok" {
		t.Fatalf("after the panic: %s %q", status, body)
	}
	if !strings.Contains(logs.String(), "a handler's bug") {
		t.Fatalf("the panic was not logged: %q", logs.String())
	}
}

// TestBodyReadDeadline: a body that stops arriving gives the handler
// os.ErrDeadlineExceeded once the deadline set through
// http.ResponseController passes.
func TestBodyReadDeadline(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	results := make(chan result, 1)
	ts := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Short: this is a test of the deadline itself.
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			results <- result{err: err}
			return
		}
		b, err := io.ReadAll(r.Body)
		results <- result{len(b), err}
		w.WriteHeader(http.StatusRequestTimeout)
	}), serverOpts{})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	rc.request(1, "POST", "/", false)
	rc.check(rc.fr.WriteData(1, false, []byte("hello")))
	res := recv(t, "the handler's read", results)
	if res.n != 5 || !errors.Is(res.err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes and %v, want 5 and a deadline error", res.n, res.err)
	}
	if status, _ := rc.response(1); status != "408" {
		t.Fatalf("status %s", status)
	}
}
