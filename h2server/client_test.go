package h2server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// basicHandler serves the paths of TestGoClient.
func basicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		// One write, no Content-Type: sniffed, and the length is known.
		w.Write([]byte("<html><body>hello</body></html>"))
	})
	mux.HandleFunc("/sized", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, "hello world")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/flushed", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		p := pattern(1 << 20)
		for i := 0; i < len(p); i += 1 << 10 {
			w.Write(p[i : i+1<<10])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/id/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "id %s", strings.TrimPrefix(r.URL.Path, "/id/"))
	})
	return mux
}

// TestGoClient: Go's HTTP/2 client, in clear text and over TLS, gets
// byte-exact answers with the headers net/http would give.
func TestGoClient(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			ts := startServer(t, basicHandler(), serverOpts{tls: useTLS})
			c := ts.client(t)
			big := pattern(5 << 20)
			cases := []struct {
				name, method, path string
				body               []byte
				status             int
				want               []byte
				wantCT             string
				wantLen            int64 // resp.ContentLength; -1: unknown
			}{
				{"get", "GET", "/small", nil, 200, []byte("<html><body>hello</body></html>"), "text/html; charset=utf-8", 31},
				{"head", "HEAD", "/sized", nil, 200, nil, "text/plain", 11},
				{"head written", "HEAD", "/small", nil, 200, nil, "text/html; charset=utf-8", 31},
				{"post 5MiB echo", "POST", "/echo", big, 200, big, "application/octet-stream", -1},
				{"204", "GET", "/nocontent", nil, 204, nil, "", 0},
				{"flushed 1MiB", "GET", "/flushed", nil, 200, pattern(1 << 20), "application/octet-stream", -1},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var body io.Reader
					if tc.body != nil {
						body = bytes.NewReader(tc.body)
					}
					req, err := http.NewRequest(tc.method, ts.url+tc.path, body)
					if err != nil {
						t.Fatal(err)
					}
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					got, err := io.ReadAll(resp.Body)
					if err != nil {
						t.Fatal(err)
					}
					if resp.ProtoMajor != 2 {
						t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
					}
					if resp.StatusCode != tc.status {
						t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
					}
					if !bytes.Equal(got, tc.want) {
						t.Fatalf("body of %d bytes differs from the %d expected", len(got), len(tc.want))
					}
					if ct := resp.Header.Get("Content-Type"); ct != tc.wantCT {
						t.Fatalf("Content-Type %q, want %q", ct, tc.wantCT)
					}
					if resp.ContentLength != tc.wantLen {
						t.Fatalf("ContentLength %d, want %d", resp.ContentLength, tc.wantLen)
					}
					if resp.Header.Get("Date") == "" {
						t.Fatal("no Date header")
					}
				})
			}
			t.Run("100 concurrent", func(t *testing.T) {
				var wg sync.WaitGroup
				errs := make(chan error, 100)
				for i := range 100 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := c.Get(ts.url + "/id/" + strconv.Itoa(i))
						if err != nil {
							errs <- err
							return
						}
						defer resp.Body.Close()
						b, err := io.ReadAll(resp.Body)
						if err != nil {
							errs <- err
							return
						}
						if want := "id " + strconv.Itoa(i); string(b) != want || resp.ProtoMajor != 2 {
							errs <- fmt.Errorf("got %q over %s, want %q over HTTP/2", b, resp.Proto, want)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
				// One connection served them all.
				if n := ts.h2.ConnCount(); n != 1 {
					t.Fatalf("%d HTTP/2 connections, want 1", n)
				}
			})
		})
	}
}

type ctxKey string

// TestRequestFields: the handler's request carries what the client sent
// and what the http.Server's context hooks added.
func TestRequestFields(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			got := make(chan *http.Request, 1)
			ts := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- r
				io.WriteString(w, "ok")
			}), serverOpts{tls: useTLS, configure: func(hs *http.Server) {
				hs.BaseContext = func(net.Listener) context.Context {
					return context.WithValue(context.Background(), ctxKey("base"), "b")
				}
				hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
					return context.WithValue(ctx, ctxKey("conn"), c.RemoteAddr().String())
				}
			}})
			req, err := http.NewRequest("GET", ts.url+"/a/b?x=1&y=2", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("x-lower-case", "v")
			req.Header.Add("Cookie", "a=1")
			req.Header.Add("Cookie", "b=2")
			resp, err := ts.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			r := recv(t, "the request", got)
			checks := []struct{ name, got, want string }{
				{"method", r.Method, "GET"},
				{"path", r.URL.Path, "/a/b"},
				{"query", r.URL.RawQuery, "x=1&y=2"},
				{"host", r.Host, ts.addr},
				{"header", r.Header.Get("X-Lower-Case"), "v"},
				{"proto", r.Proto, "HTTP/2.0"},
				{"base context", fmt.Sprint(r.Context().Value(ctxKey("base"))), "b"},
				{"conn context", fmt.Sprint(r.Context().Value(ctxKey("conn"))), r.RemoteAddr},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
				}
			}
			if _, ok := r.Header["X-Lower-Case"]; !ok {
				t.Errorf("header keys not canonical: %v", r.Header)
			}
			if cookies := r.Cookies(); len(cookies) != 2 || cookies[0].Value != "1" || cookies[1].Value != "2" {
				t.Errorf("cookies %v (Cookie %q), want a=1 and b=2", cookies, r.Header["Cookie"])
			}
			if h, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || h != "127.0.0.1" {
				t.Errorf("RemoteAddr %q", r.RemoteAddr)
			}
			if (r.TLS != nil) != useTLS {
				t.Errorf("r.TLS %v over tls=%v", r.TLS, useTLS)
			}
			if useTLS && r.TLS.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN %q", r.TLS.NegotiatedProtocol)
			}
		})
	}
}

// TestClientCancel: a request the client cancels (RST_STREAM) has its
// context canceled.
func TestClientCancel(t *testing.T) {
	started := make(chan struct{})
	canceled := make(chan error, 1)
	ts := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		canceled <- r.Context().Err()
	}), serverOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+"/", nil)
	resp, err := ts.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	recv(t, "the handler", started)
	cancel()
	if err := recv(t, "the request's context to end", canceled); err != context.Canceled {
		t.Fatalf("context ended with %v", err)
	}
}
