package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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
