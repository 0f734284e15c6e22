package h2server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/discoverd/discoverd/h2server"
)

// TestDetachStream: chunks queued while wake is called from many
// goroutines arrive in order, once each; the end of the Source ends the
// body and calls Done once.
func TestDetachStream(t *testing.T) {
	got := make(chan detached, 1)
	ts := startServer(t, detachHandler(got), serverOpts{})
	resp, err := ts.client(t).Get(ts.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || resp.ProtoMajor != 2 {
		t.Fatalf("Content-Type %q over %s", ct, resp.Proto)
	}
	d := recv(t, "the detached stream", got)

	want := pattern(3 << 20)
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		read <- b
	}()
	// The chunks are queued in order by one goroutine; others wake the
	// stream all the while.
	stop := make(chan struct{})
	var wakers sync.WaitGroup
	for range 8 {
		wakers.Add(1)
		go func() {
			defer wakers.Done()
			for {
				select {
				case <-stop:
					return
				default:
					d.wake()
				}
			}
		}()
	}
	for i := 0; i < len(want); i += 1000 {
		d.src.push(want[i:min(i+1000, len(want))])
		d.wake()
	}
	d.src.end()
	d.wake()
	close(stop)
	wakers.Wait()
	b := recv(t, "the end of the body", read)
	if !bytes.Equal(b, want) {
		t.Fatalf("got %d bytes, want %d in order", len(b), len(want))
	}
	d.src.waitDone(t)
	waitUntil(t, "the stream to close", func() bool { return ts.h2.StreamCount() == 0 })
}

// TestDetachDone: Done is called once when the client resets the stream,
// and once for each stream when the connection closes.
func TestDetachDone(t *testing.T) {
	t.Run("client cancel", func(t *testing.T) {
		got := make(chan detached, 1)
		ts := startServer(t, detachHandler(got), serverOpts{})
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+"/", nil)
		resp, err := ts.client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		d := recv(t, "the detached stream", got)
		cancel()
		d.src.waitDone(t)
		// A wake after the end does nothing.
		d.wake()
		waitUntil(t, "the stream to close", func() bool { return ts.h2.StreamCount() == 0 })
		if n := d.src.done.Load(); n != 1 {
			t.Fatalf("Done called %d times", n)
		}
	})
	t.Run("connection close", func(t *testing.T) {
		got := make(chan detached, 10)
		ts := startServer(t, detachHandler(got), serverOpts{})
		rc := dialRaw(t, ts.addr, []http2.Setting{})
		var ds []detached
		for i := range 10 {
			rc.request(uint32(2*i+1), "GET", "/", true)
			ds = append(ds, recv(t, "a detached stream", got))
		}
		rc.c.Close()
		for _, d := range ds {
			d.src.waitDone(t)
		}
		waitUntil(t, "the connection to close", func() bool { return ts.h2.ConnCount() == 0 })
		for _, d := range ds {
			if n := d.src.done.Load(); n != 1 {
				t.Fatalf("Done called %d times", n)
			}
		}
	})
}

// TestDetachAfterWrite: a response with something written can no longer be
// detached, and what was written is sent.
func TestDetachAfterWrite(t *testing.T) {
	cases := []struct {
		name  string
		write func(w http.ResponseWriter)
	}{
		{"written", func(w http.ResponseWriter) { io.WriteString(w, "already") }},
		{"flushed", func(w http.ResponseWriter) { io.WriteString(w, "already"); w.(http.Flusher).Flush() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			oks := make(chan bool, 1)
			ts := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.write(w)
				_, ok := h2server.Detach(w, newTestSource())
				oks <- ok
			}), serverOpts{})
			resp, err := ts.client(t).Get(ts.url + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if recv(t, "Detach's answer", oks) {
				t.Fatal("Detach after a write reported ok")
			}
			if string(b) != "already" {
				t.Fatalf("body %q, want what the handler wrote", b)
			}
		})
	}
}

// TestDetachFlowControl: a detached stream sends at most the client's
// windows allow, holds the rest, and sends it in order after
// WINDOW_UPDATE.
func TestDetachFlowControl(t *testing.T) {
	cases := []struct {
		name string
		// streamWindow is the client's SETTINGS_INITIAL_WINDOW_SIZE;
		// connTake is how much of the connection's window a first stream
		// uses up before the one tested (0: none).
		streamWindow uint32
		connTake     int
		// update is the stream the WINDOW_UPDATE goes to (0: the
		// connection).
		update uint32
	}{
		{name: "stream window", streamWindow: 10, update: 3},
		{name: "connection window", streamWindow: 65535, connTake: 65535 - 10, update: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan detached, 2)
			ts := startServer(t, detachHandler(got), serverOpts{})
			rc := dialRaw(t, ts.addr, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: tc.streamWindow}})
			// Stream 1 takes connTake of the connection's window.
			rc.request(1, "GET", "/", true)
			first := recv(t, "stream 1", got)
			if tc.connTake > 0 {
				first.src.push(pattern(tc.connTake))
				first.wake()
				n := 0
				rc.until("stream 1's data", func(f http2.Frame) bool {
					if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
						n += len(d.Data())
					}
					return n == tc.connTake
				})
			}
			rc.request(3, "GET", "/", true)
			d := recv(t, "stream 3", got)
			want := pattern(100)
			d.src.push(want[:50])
			d.wake()
			d.src.push(want[50:])
			d.wake()
			var body []byte
			// The first 10 bytes come, then nothing until the window
			// grows: a PING's answer comes after all the writer had.
			rc.until("10 bytes", func(f http2.Frame) bool {
				if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 3 {
					body = append(body, df.Data()...)
				}
				return len(body) >= 10
			})
			rc.check(rc.fr.WritePing(false, [8]byte{1}))
			rc.until("PING ack", func(f http2.Frame) bool {
				if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 3 {
					body = append(body, df.Data()...)
				}
				p, ok := f.(*http2.PingFrame)
				return ok && p.IsAck()
			})
			if len(body) != 10 {
				t.Fatalf("%d bytes sent in a window of 10", len(body))
			}
			rc.check(rc.fr.WriteWindowUpdate(tc.update, 1000))
			d.src.end()
			d.wake()
			for {
				f, data := rc.next()
				if f == nil {
					t.Fatal("the connection ended")
				}
				if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 3 {
					body = append(body, data...)
					if df.StreamEnded() {
						break
					}
				}
			}
			if !bytes.Equal(body, want) {
				t.Fatalf("got %v, want %v", body, want)
			}
			d.src.waitDone(t)
		})
	}
}

// blockingSource's Fill waits for release once armed, so that the
// connection can close while it runs; Done records whether it came during
// a Fill.
type blockingSource struct {
	armed   atomic.Bool
	filling chan struct{}
	release chan struct{}
	inFill  atomic.Bool
	overlap atomic.Bool
	done    chan struct{}
}

func (s *blockingSource) Fill(dst []byte) ([]byte, bool) {
	s.inFill.Store(true)
	defer s.inFill.Store(false)
	if s.armed.CompareAndSwap(true, false) {
		close(s.filling)
		<-s.release
	}
	return append(dst, "x"...), true
}

func (s *blockingSource) Done() {
	if s.inFill.Load() {
		s.overlap.Store(true)
	}
	close(s.done)
}

// TestDoneNotDuringFill: when the connection closes while the writer is in
// a Source's Fill, Done waits for Fill to return: a Source is never called
// by two goroutines at once.
func TestDoneNotDuringFill(t *testing.T) {
	src := &blockingSource{filling: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	wakes := make(chan func(), 1)
	ts := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wake, ok := h2server.Detach(w, src)
		if !ok {
			t.Error("not detached")
			return
		}
		wakes <- wake
	}), serverOpts{})
	rc := dialRaw(t, ts.addr, []http2.Setting{})
	rc.request(1, "GET", "/", true)
	wake := recv(t, "the detached stream", wakes)
	src.armed.Store(true)
	wake()
	recv(t, "Fill", src.filling)
	rc.c.Close()
	// The reader sees the end of the connection and closes the streams.
	waitUntil(t, "the streams to close", func() bool { return ts.h2.StreamCount() == 0 })
	select {
	case <-src.done:
	case <-time.After(500 * time.Millisecond):
		// Done waits for Fill, as it should.
	}
	close(src.release)
	recv(t, "Done", src.done)
	if src.overlap.Load() {
		t.Fatal("Done was called while Fill ran")
	}
	waitUntil(t, "the connection to close", func() bool { return ts.h2.ConnCount() == 0 })
}
