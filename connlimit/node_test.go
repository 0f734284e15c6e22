package connlimit_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/integration"
	"github.com/discoverd/discoverd/internal/testnode"
)

// deadline bounds every wait: generous, for a busy machine.
const deadline = 20 * time.Second

// stream is one raw HTTP/1.1 connection with a request answered on it.
type stream struct {
	conn   net.Conn
	status int
	body   []byte // the whole body of a non-stream answer
}

// openFrom sends one GET over a new connection from the loopback address
// from and reads the status line and headers (and the body unless it is
// an event stream, which stays open).
func openFrom(t *testing.T, from, addr, path string, sse bool) *stream {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: deadline}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s from %s: %v", addr, from, err)
	}
	conn.SetDeadline(time.Now().Add(deadline))
	accept := "application/json"
	if sse {
		accept = "text/event-stream"
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: %s\r\n\r\n", path, addr, accept)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		t.Fatalf("reading the answer to GET %s from %s: %v", path, from, err)
	}
	s := &stream{conn: conn, status: resp.StatusCode}
	if !sse || resp.StatusCode != http.StatusOK {
		s.body, _ = io.ReadAll(resp.Body)
	}
	conn.SetDeadline(time.Time{})
	return s
}

func openStreams(t *testing.T, from, addr string, n int) []*stream {
	t.Helper()
	out := make([]*stream, n)
	for i := range out {
		out[i] = openFrom(t, from, addr, "/services/web", true)
		if out[i].status != http.StatusOK {
			t.Fatalf("stream %d of %d from %s: %d %s", i+1, n, from, out[i].status, out[i].body)
		}
	}
	t.Cleanup(func() {
		for _, s := range out {
			s.conn.Close()
		}
	})
	return out
}

// wantRefused checks s is the 429 too_many_connections answer naming max.
func wantRefused(t *testing.T, s *stream, max int) {
	t.Helper()
	var e api.Error
	if s.status != http.StatusTooManyRequests || json.Unmarshal(s.body, &e) != nil {
		t.Fatalf("got %d %s, want 429 with a JSON error", s.status, s.body)
	}
	if e.Code != api.CodeTooManyConnections || !e.Retry || !strings.Contains(e.Message, " "+strconv.Itoa(max)+" ") {
		t.Fatalf("error %+v: want code too_many_connections, retry true and the limit %d in the message", e, max)
	}
}

func startWeb(t *testing.T, max int) *testnode.Server {
	t.Helper()
	s := testnode.Start(t, testnode.Options{MaxConnsPerClient: max})
	// Created from 127.0.0.9, which no test counts: a connection of
	// 127.0.0.1's own would hold one of its slots until the server saw it
	// close, which on a busy machine can be after the test's first streams.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}, Timeout: deadline}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, _ := http.NewRequest("PUT", s.URL()+"/services/web", strings.NewReader(`{}`))
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("creating the service: %v %v", resp, err)
	}
	resp.Body.Close()
	return s
}

// metric reads one discoverd_* value from /metrics, asked from 127.0.0.9.
func metric(t *testing.T, addr, name string) string {
	t.Helper()
	s := openFrom(t, "127.0.0.9", addr, "/metrics", false)
	s.conn.Close()
	for _, line := range strings.Split(string(s.body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return ""
}

func TestDefaultLimitRefusesThe1025thConnection(t *testing.T) {
	s := startWeb(t, connlimit.DefaultMax)
	openStreams(t, "127.0.0.1", s.Addr(), connlimit.DefaultMax)
	over := openFrom(t, "127.0.0.1", s.Addr(), "/ping", false)
	defer over.conn.Close()
	wantRefused(t, over, connlimit.DefaultMax)
	// The refused connection is closed by the server.
	over.conn.SetReadDeadline(time.Now().Add(deadline))
	if n, err := over.conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the refused connection stays open (read %d bytes)", n)
	}
	other := openFrom(t, "127.0.0.2", s.Addr(), "/services/web", true)
	defer other.conn.Close()
	if other.status != http.StatusOK {
		t.Fatalf("a stream from another address: %d %s", other.status, other.body)
	}
	if got := metric(t, s.Addr(), "discoverd_http_conns_refused_total"); got != "1" {
		t.Fatalf("discoverd_http_conns_refused_total %s, want 1", got)
	}
}

func TestClosingAStreamFreesASlot(t *testing.T) {
	const max = 4
	s := startWeb(t, max)
	streams := openStreams(t, "127.0.0.1", s.Addr(), max)
	over := openFrom(t, "127.0.0.1", s.Addr(), "/services/web", true)
	over.conn.Close()
	wantRefused(t, over, max)

	streams[0].conn.Close()
	// The server sees the close when its read of the connection ends; then
	// the next stream from the same address is served.
	integration.WaitFor(t, deadline, "a freed slot", func() bool {
		s := openFrom(t, "127.0.0.1", s.Addr(), "/services/web", true)
		if s.status == http.StatusOK {
			streams[0] = s
			return true
		}
		s.conn.Close()
		wantRefused(t, s, max)
		return false
	})
	// The scrape's own connection counts too. The server learns of a closed
	// connection (the creating PUT's, an earlier scrape's) when its read of
	// it ends, which on a busy machine can come after the next scrape: wait
	// for the count to settle rather than read it once.
	integration.WaitFor(t, deadline, "discoverd_http_client_conns "+strconv.Itoa(max+1), func() bool {
		return metric(t, s.Addr(), "discoverd_http_client_conns") == strconv.Itoa(max+1)
	})
}

func TestZeroMeansNoLimit(t *testing.T) {
	s := startWeb(t, 0)
	openStreams(t, "127.0.0.1", s.Addr(), connlimit.DefaultMax+100)
	if got := metric(t, s.Addr(), "discoverd_http_conns_refused_total"); got != "0" {
		t.Fatalf("discoverd_http_conns_refused_total %s, want 0", got)
	}
}

// A spoofed node header is not tested here: without TLS it is trusted (see
// the package doc); Config.IsNode is the place to require more.
func TestProxiesAndVotersAreNotLimitedByEachOther(t *testing.T) {
	const max = 2
	c := integration.NewCluster(t, 3, 1, integration.WithMaxConnsPerClient(max))
	c.WaitForLeader(deadline)
	follower := c.Followers()[0]
	proxy := c.Proxies()[0]
	put := func(url, body string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT %s: %d %s", url, resp.StatusCode, b)
		}
	}
	put(proxy.URL()+"/services/web", `{}`)

	// Four client addresses each hold the most streams they may on the
	// proxy: the proxy relays all eight from its one address to a voter.
	for i := 2; i <= 5; i++ {
		openStreams(t, fmt.Sprintf("127.0.0.%d", i), proxy.Addr, max)
	}
	// Writes a follower forwards to the leader, many at once, from its one
	// address: none is refused.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := fmt.Sprintf("127.0.1.%d", i+1)
			tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
			defer tr.CloseIdleConnections()
			body := fmt.Sprintf(`{"addr":"10.0.0.%d:80","proto":"http"}`, i+1)
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/services/web/instances/i%d", follower.URL(), i), bytes.NewReader([]byte(body)))
			resp, err := (&http.Client{Transport: tr, Timeout: deadline}).Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("register through a follower: %d %s", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every stream through the proxy is live: a new event reaches it.
	// (Their preludes already came through, or openStreams failed.)
	for _, nd := range c.Nodes {
		if got := metric(t, nd.Addr, "discoverd_http_conns_refused_total"); got != "0" {
			t.Fatalf("node %s refused %s requests", nd.Addr, got)
		}
	}
	// The client limit still holds on the proxy.
	over := openFrom(t, "127.0.0.2", proxy.Addr, "/services/web", true)
	over.conn.Close()
	wantRefused(t, over, max)
}

// h2cClient speaks cleartext HTTP/2 from the loopback address from, over
// one connection, and counts the connections it opens.
//
// MaxConnsPerHost keeps its requests on one connection. Without it, Go's
// transport may dial a second connection for a request made right after
// the first one's answer: the goroutine that dialed the first connection
// hands it to the first request and only then puts it in the transport's
// pool, and a request that looks into the pool in between (when that
// goroutine is held up, as on a busy machine) finds nothing there and
// dials. HTTP/2 then drops the new connection unused, as the first can
// take the request; but the dial was made, and the node counted the
// connection until it saw it close. With one connection allowed, such a
// request waits for the first connection to reach the pool.
func h2cClient(from string, dials *atomic.Int32) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: deadline}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       &p,
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func TestHTTP2StreamsCountEachAgainstTheLimit(t *testing.T) {
	const max = 4
	s := startWeb(t, max)
	var dials atomic.Int32
	hc := h2cClient("127.0.0.1", &dials)
	open := func() (*http.Response, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/services/web", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
		}
		return resp, cancel
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := range max {
		resp, cancel := open()
		cancels = append(cancels, cancel)
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i+1, resp.StatusCode)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d streams took %d connections, want 1", max, n)
	}
	resp, cancel := open()
	body, _ := io.ReadAll(resp.Body)
	cancel()
	wantRefused(t, &stream{status: resp.StatusCode, body: body}, max)

	// Ending one stream (an HTTP/2 RST_STREAM, the connection stays) frees
	// its slot.
	cancels[0]()
	integration.WaitFor(t, deadline, "a freed stream slot", func() bool {
		resp, cancel := open()
		if resp.StatusCode == 200 {
			cancels[0] = cancel
			return true
		}
		io.Copy(io.Discard, resp.Body)
		cancel()
		return false
	})
	if n := dials.Load(); n != 1 {
		t.Fatalf("the streams took %d connections, want 1", n)
	}
}

// TestForgedNodeHeaderOverTLSIsCounted: over TLS, the header that marks a
// node's requests counts only with a node certificate. A client without one
// that sends it is limited like any other, and a node that presents one is
// not limited at all.
func TestForgedNodeHeaderOverTLSIsCounted(t *testing.T) {
	const max = 2
	s := testnode.Start(t, testnode.Options{Secure: true, MaxConnsPerClient: max})
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	// HTTP/1.1 only, so that each stream holds a connection of its own.
	client := func(cfg *tls.Config) *http.Client {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	plain := client(&tls.Config{RootCAs: roots})
	node := client(s.PeerTLS())

	req, _ := http.NewRequest("PUT", s.URL()+"/services/web", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+testnode.AdminSecret)
	resp, err := plain.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("creating the service: %v %v", resp, err)
	}
	resp.Body.Close()
	plain.CloseIdleConnections()

	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	open := func(hc *http.Client) (int, []byte) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/services/web", nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+testnode.ReadSecret)
		req.Header.Set(api.ForwardedHeader, "1")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, body
	}

	for i := range max + 2 {
		if code, body := open(node); code != http.StatusOK {
			t.Fatalf("stream %d of a client with a node certificate: %d %s", i+1, code, body)
		}
	}
	for i := range max {
		if code, body := open(plain); code != http.StatusOK {
			t.Fatalf("stream %d of a client without a certificate: %d %s", i+1, code, body)
		}
	}
	code, body := open(plain)
	wantRefused(t, &stream{status: code, body: body}, max)
}
