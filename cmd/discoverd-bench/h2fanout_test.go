package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/discoverd/discoverd/httpapi"
)

// The SSE parser finds the same events however DATA frames cut the stream,
// and keeps nothing between frames that end on an event's end.
func TestSSEParser(t *testing.T) {
	type ev struct {
		isError bool
		data    string
	}
	for _, tc := range []struct {
		name    string
		frames  []string
		want    []ev
		pending string // left after the last frame
	}{
		{"one event", []string{"event: leader\ndata: {\"a\":1}\n\n"}, []ev{{false, `{"a":1}`}}, ""},
		{"split in two", []string{"event: leader\ndata: {\"a\"", ":1}\n\n"}, []ev{{false, `{"a":1}`}}, ""},
		{"split in three", []string{"da", "ta: x\n", "\n"}, []ev{{false, "x"}}, ""},
		{"split before the blank line", []string{"event: error\ndata: e\n", "\n", "data: y\n\n"}, []ev{{true, "e"}, {false, "y"}}, ""},
		{"several in one frame", []string{"data: a\n\ndata: b\n\nevent: error\ndata: c\n\n"}, []ev{{false, "a"}, {false, "b"}, {true, "c"}}, ""},
		{"keep-alive comments", []string{":\n\n: ping\n\ndata: a\n\n", ": ping\n\n"}, []ev{{false, "a"}}, ""},
		{"comment inside a split event", []string{": ka\ndata: a", "\n: ka\n", "\n"}, []ev{{false, "a"}}, ""},
		{"data lines joined", []string{"data: a\ndata:b\n", "data: c\n\n"}, []ev{{false, "a\nb\nc"}}, ""},
		{"event name ends with its event", []string{"event: error\n\ndata: a\n\n"}, []ev{{false, "a"}}, ""},
		{"empty data is no event", []string{"data:\n\ndata: a\n\n"}, []ev{{false, "a"}}, ""},
		{"an unfinished event is kept", []string{"data: a\n\ndata: b", "\n"}, []ev{{false, "a"}}, "data: b\n"},
		{"CRLF", []string{"data: a\r\n\r", "\ndata: b\r\n\r\n"}, []ev{{false, "a"}, {false, "b"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p sseParser
			var got []ev
			for _, fr := range tc.frames {
				// A frame's bytes are reused after it is parsed, as the
				// framer's are.
				b := []byte(fr)
				err := p.feed(b, func(e sseEvent) error {
					got = append(got, ev{e.isError, string(e.data)})
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				for i := range b {
					b[i] = '#'
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("events %+v, want %+v", got, tc.want)
			}
			if string(p.pending) != tc.pending || (tc.pending == "" && p.pending != nil) {
				t.Errorf("pending %q (nil %v), want %q", p.pending, p.pending == nil, tc.pending)
			}
		})
	}
}

// An event longer than the bound is an error, not a growing buffer.
func TestSSEParserBound(t *testing.T) {
	var p sseParser
	chunk := []byte("data: " + strings.Repeat("x", 64<<10))
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		err = p.feed(chunk, func(sseEvent) error { return nil })
	}
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("err %v, want an event too long", err)
	}
	if p.pending != nil {
		t.Errorf("%d bytes kept after the error", len(p.pending))
	}
}

// fanout-sse-h2 against a real node: its streams share connections up to
// the server's concurrent-stream limit, from as many source addresses as
// --streams-per-addr asks.
func TestFanoutSSEH2(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		subs, perAddr int
		conns, addrs  int
	}{
		{50, 8, 7, 7},
		{250, 250, (250 + httpapi.MaxConcurrentStreams - 1) / httpapi.MaxConcurrentStreams, 1},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.subs, tc.perAddr), func(t *testing.T) {
			results := runJSON(t, s.smallArgs("--json", "--subscribers", fmt.Sprint(tc.subs),
				"--streams-per-addr", fmt.Sprint(tc.perAddr), "fanout-sse-h2"))
			if len(results) != 1 {
				t.Fatalf("%d results: %+v", len(results), results)
			}
			r := results[0]
			t.Log(r.short())
			checkResult(t, r, true)
			if r.Samples != tc.subs*3 {
				t.Errorf("%d samples, want %d subscribers x 3 rounds", r.Samples, tc.subs)
			}
			want := fmt.Sprintf("h2c, raw frames, %d connections from %d source address(es)", tc.conns, tc.addrs)
			if !strings.Contains(r.Note, want) {
				t.Errorf("note %q lacks %q", r.Note, want)
			}
			if r.BytesPerStream == nil {
				t.Error("no RSS per stream")
			}
		})
	}
}

// The raw HTTP/2 client reports a stream's failure, while it opens and once
// open, with the server's reason; a loopback h2c server stands in for a
// node that fails in each way.
func TestH2StreamErrors(t *testing.T) {
	const current = "event: current\ndata: {\"service\":\"s\",\"kind\":\"current\",\"index\":1}\n\n"
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, release <-chan struct{})
		// opening: the error comes while opening; else on errc.
		opening bool
		want    string
	}{
		{"status", func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":"not_found","message":"no such service","retry":false}`)
		}, true, "HTTP 404: not_found"},
		{"content type", func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
		}, true, `Content-Type "application/json"`},
		{"reset while opening", func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
			panic(http.ErrAbortHandler)
		}, true, "reset by the server"},
		{"error event", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, current)
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "event: error\ndata: {\"code\":\"slow_subscriber\",\"message\":\"too slow\",\"retry\":true}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, false, "stream ended: slow_subscriber"},
		{"reset once open", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, current)
			w.(http.Flusher).Flush()
			<-release
			panic(http.ErrAbortHandler)
		}, false, "reset by the server"},
		{"end once open", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, current)
			w.(http.Flusher).Flush()
			<-release
		}, false, "the server ended the stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor != 2 || r.URL.Path != "/services/s/leader" || r.Header.Get("Accept") != "text/event-stream" {
					http.Error(w, fmt.Sprintf("%s %s Accept %q", r.Proto, r.URL.Path, r.Header.Get("Accept")), http.StatusBadRequest)
					return
				}
				tc.handler(w, r, release)
			}))
			ts.Config.Protocols = new(http.Protocols)
			ts.Config.Protocols.SetUnencryptedHTTP2(true)
			ts.Start()
			defer ts.Close()
			srv, err := parseServer(ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			b := &bench{cfg: &config{streamsPerAddr: 4}, servers: []server{srv}, progress: newProgress(io.Discard, false)}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() {
				cancel()
				wg.Wait()
			}()
			const k = 10
			events := make(chan arrival, k)
			errc := make(chan error, k)
			note, err := b.openH2Streams(ctx, &wg, "s", k, events, errc)
			if tc.opening {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("opening: %v, want an error with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("opening: %v", err)
			}
			if want := "h2c, raw frames, 3 connections from 3 source address(es)"; note != want {
				t.Errorf("note %q, want %q", note, want)
			}
			close(release)
			select {
			case err := <-errc:
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("stream error %v, want %q", err, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no stream error within 30 s")
			}
		})
	}
}

// h2TestServer is a minimal HTTP/2 server written with the framer, for what
// net/http's server does not do on demand: a small concurrent-stream limit,
// events split over DATA frames, PING, and GOAWAY while streams are open.
type h2TestServer struct {
	t          *testing.T
	ln         net.Listener
	maxStreams uint32
	mu         sync.Mutex
	conns      []*h2TestConn
	// pingAcks gets one value for each PING of the server's answered.
	pingAcks chan struct{}
}

type h2TestConn struct {
	wmu     sync.Mutex
	fr      *http2.Framer
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	streams []uint32
}

func startH2TestServer(t *testing.T, maxStreams uint32) *h2TestServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h2TestServer{t: t, ln: ln, maxStreams: maxStreams, pingAcks: make(chan struct{}, 64)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(nc)
			}()
		}
	}()
	return s
}

func (s *h2TestServer) serve(nc net.Conn) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != http2.ClientPreface {
		s.t.Errorf("preface %q, %v", preface, err)
		return
	}
	c := &h2TestConn{fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	c.wmu.Lock()
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.maxStreams})
	c.fr.WritePing(false, [8]byte{'p', 'i', 'n', 'g'})
	c.wmu.Unlock()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() { c.fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if f.IsAck() && string(f.Data[:4]) == "ping" {
				s.pingAcks <- struct{}{}
			}
		case *http2.MetaHeadersFrame:
			if f.PseudoValue("path") != "/services/s/leader" || !f.StreamEnded() {
				s.t.Errorf("stream %d: path %q, end stream %v", f.StreamID, f.PseudoValue("path"), f.StreamEnded())
			}
			c.wmu.Lock()
			if c.streams = append(c.streams, f.StreamID); uint32(len(c.streams)) > s.maxStreams {
				s.t.Errorf("%d streams on a connection, more than the %d allowed", len(c.streams), s.maxStreams)
			}
			c.hbuf.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/event-stream"})
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
			// The current state, split over three frames.
			for _, part := range []string{": hello\n\nevent: current\nda", "ta: {\"service\":\"s\",\"kind\":\"cur", "rent\",\"index\":1}\n\n"} {
				c.fr.WriteData(f.StreamID, false, []byte(part))
			}
			c.wmu.Unlock()
		}
	}
}

func (c *h2TestConn) write(fn func()) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	fn()
}

// A server with a small concurrent-stream limit gets no more streams per
// connection than it allows; events split over frames, several in a
// frame, PING and GOAWAY are handled.
func TestH2RawServer(t *testing.T) {
	const k, max = 7, 3
	s := startH2TestServer(t, max)
	srv, err := parseServer("http://" + s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: &config{streamsPerAddr: k}, servers: []server{srv}, progress: newProgress(io.Discard, false)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	events := make(chan arrival, k)
	errc := make(chan error, k)
	note, err := b.openH2Streams(ctx, &wg, "s", k, events, errc)
	if err != nil {
		t.Fatal(err)
	}
	if want := "h2c, raw frames, 3 connections from 1 source address(es)"; note != want {
		t.Errorf("note %q, want %q", note, want)
	}
	// A keep-alive, a leader event of another instance and the one
	// looked for, in one frame per stream.
	const frame = ": ka\n\nevent: leader\ndata: {\"service\":\"s\",\"kind\":\"leader\",\"instance\":{\"id\":\"a\"},\"index\":2}\n\n" +
		"event: leader\ndata: {\"service\":\"s\",\"kind\":\"leader\",\"instance\":{\"id\":\"b\"},\"index\":3}\n\n"
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	for _, c := range conns {
		c.write(func() {
			for _, id := range c.streams {
				c.fr.WriteData(id, false, []byte(frame))
			}
		})
	}
	seen := map[int]bool{}
	deadline := time.After(30 * time.Second)
	for len(seen) < k {
		select {
		case a := <-events:
			if a.id == "b" {
				seen[a.sub] = true
			}
		case err := <-errc:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("%d of %d streams saw b lead within 30 s", len(seen), k)
		}
	}
	// Every connection answered the server's PING (its reader may not
	// have got to the answer yet).
	pingDeadline := time.After(30 * time.Second)
	for acks := 0; acks < len(conns); acks++ {
		select {
		case <-s.pingAcks:
		case <-pingDeadline:
			t.Fatalf("%d PINGs answered, want %d", acks, len(conns))
		}
	}
	// GOAWAY naming the first stream: the connection's others were not
	// served.
	c := conns[0]
	c.write(func() { c.fr.WriteGoAway(c.streams[0], http2.ErrCodeNo, []byte("going")) })
	for i := 1; i < len(c.streams); i++ {
		select {
		case err := <-errc:
			if !strings.Contains(err.Error(), "GOAWAY") {
				t.Errorf("stream error %v, want GOAWAY", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no stream error within 30 s")
		}
	}
	select {
	case err := <-errc:
		t.Errorf("one more stream error: %v", err)
	default:
	}
}
