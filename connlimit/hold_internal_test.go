package connlimit

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// loopConn is a connection from 127.0.0.1 that is never read or written:
// the Limiter only looks at its address.
type loopConn struct{ net.Conn }

func (loopConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (loopConn) Close() error         { return nil }

// A held stream counts once, also while the handler that held it is still
// returning: a request that arrives then, within the limit, is served.
func TestHoldNeverCountsAStreamTwice(t *testing.T) {
	l := New(Config{Max: 2})
	c := l.Conn(loopConn{})
	ctx := l.ConnContext(t.Context(), c)
	var releases []func()
	inHandler := make(chan struct{})
	finish := make(chan struct{})
	h := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			releases = append(releases, Hold(r))
			close(inHandler)
			<-finish // held, and not yet returned
		}
	}))
	serve := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil).WithContext(ctx))
		return rec.Code
	}
	done := make(chan int)
	go func() { done <- serve("/stream") }()
	<-inHandler
	if code := serve("/ping"); code != http.StatusOK {
		t.Fatalf("a second request within the limit of 2, while the first was held: %d, want 200", code)
	}
	close(finish)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("held stream: %d", code)
	}
	if n := l.slots.Load(); n != 1 {
		t.Fatalf("one held stream on one connection holds %d slots, want 1", n)
	}
	// The held stream still counts, as the one request in.
	c.(*conn).mu.Lock()
	active := c.(*conn).active
	c.(*conn).mu.Unlock()
	if active != 1 {
		t.Fatalf("%d requests counted in, want 1 (the held stream)", active)
	}
	releases[0]()
	releases[0]() // a second call does nothing
	c.(*conn).mu.Lock()
	active = c.(*conn).active
	c.(*conn).mu.Unlock()
	if active != 0 || l.slots.Load() != 1 {
		t.Fatalf("after release: %d requests in, %d slots; want 0 and 1 (the connection's own)", active, l.slots.Load())
	}
}
