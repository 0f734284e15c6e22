package h2server

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// chunkSource gives each chunk put in ch at the next Fill.
type chunkSource struct {
	mu       sync.Mutex
	next     []byte
	done     chan struct{}
	doneOnce sync.Once
}

func (s *chunkSource) Fill(dst []byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.next...)
	s.next = nil
	return dst, true
}

// Done may come once for each stream the source was given to.
func (s *chunkSource) Done() { s.doneOnce.Do(func() { close(s.done) }) }

func (s *chunkSource) put(b []byte) {
	s.mu.Lock()
	s.next = append(s.next, b...)
	s.mu.Unlock()
}

// internalConn serves one raw client connection with a handler that
// detaches every request with src; it returns the client's framer and the
// server's connection.
func internalConn(t *testing.T, src Source, woken chan<- func(), settings ...http2.Setting) (*http2.Framer, *hpack.Encoder, *serverConn, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wake, ok := Detach(w, src)
		if !ok {
			t.Error("Detach failed")
			return
		}
		woken <- wake
	})}
	h2 := &Server{}
	h2.Configure(hs)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, clientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings(settings...)
	var sc *serverConn
	end := time.Now().Add(30 * time.Second)
	for sc == nil {
		h2.mu.Lock()
		for c := range h2.conns {
			sc = c
		}
		h2.mu.Unlock()
		if time.Now().After(end) {
			t.Fatal("no server connection")
		}
		runtime.Gosched()
	}
	var hbuf bytesBuffer
	enc := hpack.NewEncoder(&hbuf)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "x"})
	enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.b, EndStream: true, EndHeaders: true})
	return fr, enc, sc, h2
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

// TestWokenAtZeroWindowWaits: a detached stream woken when a window is
// spent waits for WINDOW_UPDATE: the writer does not spin on it.
func TestWokenAtZeroWindowWaits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings []http2.Setting
		update   uint32
	}{
		{"stream window", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 10}}, 1},
		// A stream window larger than the connection's leaves the
		// connection's to stop it.
		{"connection window", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &chunkSource{done: make(chan struct{})}
			woken := make(chan func(), 1)
			fr, _, sc, _ := internalConn(t, src, woken, tc.settings...)
			var wake func()
			select {
			case wake = <-woken:
			case <-time.After(30 * time.Second):
				t.Fatal("no detached stream")
			}
			// Exactly the window: nothing is left pending.
			window := 10
			if tc.update == 0 {
				window = initialWindow
			}
			src.put(pattern(window))
			wake()
			n := 0
			for n < window {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				if d, ok := f.(*http2.DataFrame); ok {
					n += len(d.Data())
				}
			}
			// Woken with both windows spent: the stream must wait, off the
			// writer's ready list.
			src.put([]byte("more"))
			wake()
			// Once the writer took the wake, nothing may queue the stream
			// again until the window grows.
			waitIdle(t, sc)
			busy := 0
			for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
				sc.mu.Lock()
				if len(sc.ready) > 0 {
					busy++
				}
				sc.mu.Unlock()
				runtime.Gosched()
			}
			if busy > 0 {
				t.Fatalf("the writer kept the stream ready %d times with no window", busy)
			}
			// Many wakes meanwhile leave it listed once for the
			// connection's WINDOW_UPDATE.
			for range 100 {
				wake()
				waitIdle(t, sc)
			}
			sc.mu.Lock()
			listed := len(sc.connBlocked)
			sc.mu.Unlock()
			if listed > 1 {
				t.Fatalf("the stream is listed %d times for the connection's window", listed)
			}
			fr.WriteWindowUpdate(tc.update, 100)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				if d, ok := f.(*http2.DataFrame); ok {
					if string(d.Data()) != "more" {
						t.Fatalf("got %q after WINDOW_UPDATE", d.Data())
					}
					break
				}
			}
		})
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// waitIdle waits until the writer has taken every queued stream.
func waitIdle(t *testing.T, sc *serverConn) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; runtime.Gosched() {
		sc.mu.Lock()
		idle := len(sc.ready) == 0
		sc.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(end) {
			t.Fatal("the writer did not take the queued streams")
		}
	}
}

// TestMaxClientIDRead: the last stream id is read under the connection's
// lock by GOAWAYs sent from other goroutines (Shutdown, the idle timer, a
// handler's "Connection: close") while the reader opens streams; the race
// detector checks the reader's writes of it are ordered with those reads.
func TestMaxClientIDRead(t *testing.T) {
	src := &chunkSource{done: make(chan struct{})}
	woken := make(chan func(), 1000)
	fr, enc, sc, _ := internalConn(t, src, woken)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// What goAwayLocked does, without sending the GOAWAY.
			sc.mu.Lock()
			_ = sc.maxClientID
			sc.mu.Unlock()
		}
	}()
	go func() {
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hbuf bytesBuffer
	enc = hpack.NewEncoder(&hbuf)
	// The streams stay open (detached): fewer than the limit.
	for id := uint32(3); id < 600; id += 2 {
		hbuf.b = hbuf.b[:0]
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
		enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
		enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "x"})
		enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/"})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.b, EndStream: true, EndHeaders: true})
	}
	// Every stream (1 and 3 to 599) is detached before the test ends.
	for range 300 {
		select {
		case <-woken:
		case <-time.After(30 * time.Second):
			t.Fatal("the streams were not opened")
		}
	}
	close(stop)
	<-readerDone
}

// TestSettingsFirstWhenShuttingDown: a connection that reaches the server
// after Shutdown began still gets SETTINGS first, as the protocol's
// preface requires, then GOAWAY, and is closed.
func TestSettingsFirstWhenShuttingDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.NotFoundHandler()}
	h2 := &Server{}
	h2.Configure(hs)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	// What hs.Shutdown does to h2, with the listener left open.
	h2.shutdown()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, clientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var types []http2.FrameType
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		types = append(types, f.Header().Type)
	}
	goAway := false
	for _, typ := range types {
		goAway = goAway || typ == http2.FrameGoAway
	}
	if len(types) < 2 || types[0] != http2.FrameSettings || !goAway {
		t.Fatalf("frames %v, want SETTINGS first and a GOAWAY", types)
	}
}
