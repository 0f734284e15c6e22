package h2server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestShutdownDetached: Shutdown sends GOAWAY, refuses new streams, and
// returns once the open detached streams have ended and the connection
// closed.
func TestShutdownDetached(t *testing.T) {
	got := make(chan detached, 2)
	ts := startServer(t, detachHandler(got), serverOpts{})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	rc.request(1, "GET", "/1", true)
	rc.request(3, "GET", "/3", true)
	// The handlers run in either order: ds[0] is stream 1's.
	ds := []detached{recv(t, "a stream", got), recv(t, "a stream", got)}
	if ds[0].r.URL.Path != "/1" {
		ds[0], ds[1] = ds[1], ds[0]
	}
	// The two heads, in either order.
	heads := 0
	rc.until("the response heads", func(f http2.Frame) bool {
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			heads++
		}
		return heads == 2
	})

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		shut <- ts.hs.Shutdown(ctx)
	}()
	ga := rc.goAway()
	if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 3 {
		t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR and 3", ga.ErrCode, ga.LastStreamID)
	}
	// A stream opened after GOAWAY is refused.
	rc.request(5, "GET", "/", true)
	if code := rc.rst(5); code != http2.ErrCodeRefusedStream {
		t.Fatalf("stream 5 after GOAWAY: %v", code)
	}
	// The open streams still work.
	ds[0].src.push([]byte("last words"))
	ds[0].src.end()
	ds[0].wake()
	if _, body := rc.response(1); string(body) != "last words" {
		t.Fatalf("stream 1 ended with %q", body)
	}
	ds[0].src.waitDone(t)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a stream open", err)
	default:
	}
	ds[1].src.end()
	ds[1].wake()
	rc.response(3)
	ds[1].src.waitDone(t)
	rc.ended()
	if err := recv(t, "Shutdown", shut); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestShutdownIdle: Shutdown closes a connection without streams at once.
func TestShutdownIdle(t *testing.T) {
	ts := startServer(t, newBlockingHandler(), serverOpts{})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	rc.ping()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := ts.hs.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ga := rc.goAway(); ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v", ga.ErrCode)
	}
	rc.ended()
}

// TestIdleTimeout: a connection without streams for the http.Server's
// IdleTimeout gets GOAWAY and is closed; one with an open detached stream
// is not, until the stream ends.
func TestIdleTimeout(t *testing.T) {
	// Short: this is a test of the timeout itself.
	const idle = 200 * time.Millisecond
	withIdle := serverOpts{configure: func(hs *http.Server) { hs.IdleTimeout = idle }}
	t.Run("no streams", func(t *testing.T) {
		ts := startServer(t, newBlockingHandler(), withIdle)
		rc := dialRaw(t, ts.addr, []http2.Setting{})
		rc.request(1, "GET", "/", true)
		rc.response(1)
		if ga := rc.goAway(); ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
			t.Fatalf("GOAWAY %v last stream %d", ga.ErrCode, ga.LastStreamID)
		}
		rc.ended()
	})
	t.Run("detached stream open", func(t *testing.T) {
		got := make(chan detached, 1)
		ts := startServer(t, detachHandler(got), withIdle)
		rc := dialRaw(t, ts.addr, []http2.Setting{})
		rc.request(1, "GET", "/", true)
		d := recv(t, "the detached stream", got)
		// Several idle timeouts pass with nothing from the server.
		rc.c.SetReadDeadline(time.Now().Add(5 * idle))
		for {
			f, err := rc.fr.ReadFrame()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatalf("the connection ended: %v", err)
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("GOAWAY %v with a stream open", ga.ErrCode)
			}
		}
		rc.c.SetReadDeadline(time.Now().Add(deadline))
		d.src.end()
		d.wake()
		rc.response(1)
		d.src.waitDone(t)
		if ga := rc.goAway(); ga.ErrCode != http2.ErrCodeNo {
			t.Fatalf("GOAWAY %v", ga.ErrCode)
		}
		rc.ended()
	})
}
