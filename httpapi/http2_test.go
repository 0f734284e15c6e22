package httpapi_test

// The HTTP/2 acceptance suite: what a node's API must do over HTTP/2, in
// clear text with prior knowledge (h2c) and over TLS (ALPN h2), seen from
// the wire only. Go's HTTP/2 client checks what a client sees; raw frames
// (x/net/http2's Framer and hpack) check what the client would hide: the
// protocol's errors, flow control and the concurrent-stream limit.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/integration"
	"github.com/discoverd/discoverd/internal/testnode"
	"github.com/discoverd/discoverd/node"
)

// h2Deadline bounds every wait of these tests: generous, for a busy machine.
const h2Deadline = 30 * time.Second

// h2Node is a real node serving HTTP/2, and how to reach it.
type h2Node struct {
	addr  string
	url   string
	token string // a Secure node's admin token, "" otherwise
	// tls is the client TLS configuration of a Secure node, nil for h2c.
	tls *tls.Config
	n   *node.Node
}

var h2Modes = []struct {
	name   string
	secure bool
}{{"h2c", false}, {"tls", true}}

// startH2 starts a testnode, over TLS when secure. Its instances live for
// a minute, so that none expires between a test's steps.
func startH2(t *testing.T, secure bool) (*h2Node, *testnode.Server) {
	t.Helper()
	s := testnode.Start(t, testnode.Options{TTL: time.Minute, Secure: secure})
	n := &h2Node{addr: s.Addr(), url: s.URL(), n: s.Node()}
	if secure {
		pem, err := os.ReadFile(s.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		n.tls = &tls.Config{RootCAs: roots}
		n.token = testnode.AdminSecret
	}
	return n, s
}

// transport speaks HTTP/2 only (h2c, or h2 over TLS), or HTTP/1.1 only
// when http1. dials, when not nil, counts the connections it opens.
func (n *h2Node) transport(http1 bool, dials *atomic.Int32) *http.Transport {
	var p http.Protocols
	switch {
	case http1:
		p.SetHTTP1(true)
	case n.tls != nil:
		p.SetHTTP2(true)
	default:
		p.SetUnencryptedHTTP2(true)
	}
	d := &net.Dialer{Timeout: h2Deadline}
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	if n.tls != nil {
		tr.TLSClientConfig = n.tls.Clone()
	}
	return tr
}

// oneConn is a transport whose requests all share one HTTP/2 connection.
// MaxConnsPerHost makes that so: without it, a request made right after
// the first one's answer can find the first connection not yet in the
// transport's pool and dial another (see TestHTTP2StreamsCountEachAgainstTheLimit
// in package connlimit).
func (n *h2Node) oneConn(dials *atomic.Int32) *http.Transport {
	tr := n.transport(false, dials)
	tr.MaxConnsPerHost = 1
	return tr
}

// checkH2 is a RoundTripper that adds the node's token to every request and
// fails the test for an answer that did not come over HTTP/2.
type checkH2 struct {
	t     testing.TB
	rt    http.RoundTripper
	token string
	want  int // the protocol's major version
}

func (c checkH2) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.rt.RoundTrip(req)
	if err == nil && resp.ProtoMajor != c.want {
		c.t.Errorf("%s %s answered over %s, want HTTP/%d", req.Method, req.URL.Path, resp.Proto, c.want)
	}
	return resp, err
}

// server wraps the node in package httpapi's testServer, whose requests go
// through tr (and so whose checks of every answer hold): over HTTP/2, or
// over HTTP/1.1 when http1.
func (n *h2Node) server(t testing.TB, tr http.RoundTripper, http1 bool) *testServer {
	want := 2
	if http1 {
		want = 1
	}
	if c, ok := tr.(interface{ CloseIdleConnections() }); ok {
		t.Cleanup(c.CloseIdleConnections)
	}
	return &testServer{t: t, n: n.n, url: n.url, http: &http.Client{
		Transport: checkH2{t: t, rt: tr, token: n.token, want: want},
		Timeout:   h2Deadline,
	}}
}

// nextEvent is sseStream.next with this suite's deadline.
func nextEvent(t testing.TB, st *sseStream) sseEvent {
	t.Helper()
	return st.next(h2Deadline)
}

// expectEvent reads st's next event and checks its kind and instance id.
func expectEvent(t testing.TB, st *sseStream, kind api.EventKind, id string) sseEvent {
	t.Helper()
	e := nextEvent(t, st)
	got := ""
	if e.ev.Instance != nil {
		got = e.ev.Instance.ID
	}
	if e.ev.Kind != kind || got != id {
		t.Fatalf("got event %s, want %s of %q", e.data, kind, id)
	}
	return e
}

func skipToCurrent(t testing.TB, st *sseStream) {
	t.Helper()
	for nextEvent(t, st).ev.Kind != api.EventCurrent {
	}
}

// eventStreams reads the node's discoverd_event_streams gauge.
func eventStreams(t testing.TB, s *testServer) int {
	t.Helper()
	r := s.must("GET", "/metrics", "")
	for _, line := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(line, "discoverd_event_streams "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("discoverd_event_streams %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("/metrics has no discoverd_event_streams")
	return 0
}

// 1. The JSON routes answer over HTTP/2 as they do over HTTP/1.1.
func TestHTTP2JSONRoutes(t *testing.T) {
	t.Parallel()
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			s := n.server(t, n.transport(false, nil), false)
			h1 := n.server(t, n.transport(true, nil), true)

			s.must("PUT", "/services/web", `{}`)
			inst := s.register("web", "a", "10.0.0.1:80", map[string]string{"k": "v"})
			if list := s.instances("web"); len(list) != 1 || list[0].ID != "a" || list[0].Index != inst.Index || list[0].Meta["k"] != "v" {
				t.Fatalf("instances %+v, want a at %d", list, inst.Index)
			}
			s.must("DELETE", "/services/web/instances/a", "")
			if list := s.instances("web"); len(list) != 0 {
				t.Fatalf("instances after the delete: %+v", list)
			}

			// Bad input: the same status and error code as over HTTP/1.1.
			for _, c := range []struct {
				method, path, body string
				status             int
				code               api.ErrorCode
			}{
				{"PUT", "/services/Bad_Name", `{}`, 400, api.CodeValidation},
				{"PUT", "/services/web", `{}`, 409, api.CodeExists},
				{"PUT", "/services/web", `{"leader_type": "newest"}`, 400, api.CodeValidation},
				{"PUT", "/services/web/instances/b", `{"addr": `, 400, api.CodeValidation},
				{"PUT", "/services/web/instances/b", `{"addr": "nohost", "proto": "http"}`, 400, api.CodeValidation},
				{"PUT", "/services/web/instances/b!", `{"addr": "10.0.0.2:80", "proto": "http"}`, 400, api.CodeValidation},
				{"GET", "/services/nosuch/instances", "", 404, api.CodeNotFound},
				{"DELETE", "/services/web/instances/nosuch", "", 404, api.CodeNotFound},
				{"PUT", "/services/web/meta", `{"data": {"a": 1}, "index": 7}`, 412, api.CodePreconditionFailed},
			} {
				for _, srv := range []*testServer{s, h1} {
					srv.wantError(srv.do(c.method, c.path, c.body, nil), c.status, c.code)
				}
			}

			s.must("DELETE", "/services/web", "")
			s.wantError(s.do("GET", "/services/web/instances", "", nil), 404, api.CodeNotFound)
		})
	}
}

// 2. Flow control both ways: request bodies larger than the 64 KiB initial
// window, and an answer larger than 1 MiB, over one connection.
func TestHTTP2FlowControl(t *testing.T) {
	t.Parallel()
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			var dials atomic.Int32
			s := n.server(t, n.oneConn(&dials), false)
			s.must("PUT", "/services/big", `{}`)

			// Service meta of 512 KiB (the body limit is 1 MiB), read back.
			data := strings.Repeat("0123456789abcdef", 32<<10)
			body, _ := json.Marshal(map[string]any{"data": data, "index": 0})
			s.must("PUT", "/services/big/meta", string(body))
			var meta struct {
				Data string `json:"data"`
			}
			if err := json.Unmarshal(s.must("GET", "/services/big/meta", "").body, &meta); err != nil || meta.Data != data {
				t.Fatalf("service meta read back: %d bytes (%v), want the %d written", len(meta.Data), err, len(data))
			}

			// Instances with the largest meta allowed: each PUT's body is
			// over 64 KiB, and the list of them is over 1 MiB.
			const count = 20
			want := map[string]string{}
			for i := range count {
				id := fmt.Sprintf("i%02d", i)
				v := strings.Repeat(string(rune('a'+i)), api.MaxMetaBytes-1)
				want[id] = v
				s.register("big", id, fmt.Sprintf("10.0.1.%d:80", i+1), map[string]string{"m": v})
			}
			r := s.must("GET", "/services/big/instances", "")
			if len(r.body) <= 1<<20 {
				t.Fatalf("the list is %d bytes, want over 1 MiB", len(r.body))
			}
			var list []api.Instance
			if err := json.Unmarshal(r.body, &list); err != nil {
				t.Fatalf("decoding the %d-byte list: %v", len(r.body), err)
			}
			if len(list) != count {
				t.Fatalf("%d instances, want %d", len(list), count)
			}
			for _, inst := range list {
				if inst.Meta["m"] != want[inst.ID] {
					t.Fatalf("instance %s: meta of %d bytes differs from the one written", inst.ID, len(inst.Meta["m"]))
				}
			}
			if d := dials.Load(); d != 1 {
				t.Fatalf("the requests took %d connections, want 1", d)
			}
		})
	}
}

// 3. More requests at once than the connection's advertised
// SETTINGS_MAX_CONCURRENT_STREAMS: all are served (Go's client queues them
// or dials more).
func TestHTTP2MoreRequestsThanMaxConcurrentStreams(t *testing.T) {
	t.Parallel()
	n, _ := startH2(t, false)
	c := dialRaw(t, n)
	max, ok := c.settings[http2.SettingMaxConcurrentStreams]
	c.conn.Close()
	if !ok || max == 0 {
		t.Fatalf("the server advertised no SETTINGS_MAX_CONCURRENT_STREAMS (%v)", c.settings)
	}
	var dials atomic.Int32
	s := n.server(t, n.transport(false, &dials), false)
	s.must("PUT", "/services/web", `{}`)
	total := int(max) + int(max)/2 + 1
	defer func() { t.Logf("%d streams and %d requests took %d connections", total, total, dials.Load()) }()

	// Streams, which stay open.
	streams := make([]*sseStream, total)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// stream calls Fatal, which must run on the test's goroutine:
			// open errors are reported through the nil stream instead.
			streams[i] = tryStream(s, "/services/web/instances")
		}()
	}
	wg.Wait()
	for i, st := range streams {
		if st == nil {
			t.Fatalf("stream %d of %d was not opened", i+1, total)
		}
		skipToCurrent(t, st)
	}
	// Short requests, all at once, beside the streams.
	errs := make(chan error, total)
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", n.url+"/services/web/instances", nil)
			resp, err := s.http.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "[]\n" {
				errs <- fmt.Errorf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every stream is live.
	s.register("web", "a", "10.0.0.1:80", nil)
	for _, st := range streams {
		expectEvent(t, st, api.EventUp, "a")
	}
}

// tryStream opens an SSE stream like testServer.stream, but from any
// goroutine: it returns nil where stream would fail.
func tryStream(s *testServer, path string) *sseStream {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.http.Transport.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil
	}
	st := &sseStream{t: s.t, resp: resp, events: make(chan sseEvent, 4096), cancel: cancel, done: make(chan struct{})}
	go st.read()
	s.t.Cleanup(st.close)
	return st
}

// 4. Event streams over HTTP/2: order and ids, resume, two streams on one
// connection, and a stream the client cancels is released.
func TestHTTP2EventStreams(t *testing.T) {
	t.Parallel()
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			var dials atomic.Int32
			s := n.server(t, n.oneConn(&dials), false)
			s.must("PUT", "/services/web", `{}`)
			base := eventStreams(t, s)

			all := s.stream("/services/web", nil)
			leader := s.stream("/services/web/leader", nil)
			skipToCurrent(t, all)
			skipToCurrent(t, leader)
			var ids []string
			var last uint64
			for i := range 5 {
				id := fmt.Sprintf("i%d", i)
				inst := s.register("web", id, fmt.Sprintf("10.0.0.%d:80", i+1), nil)
				e := expectEvent(t, all, api.EventUp, id)
				if e.ev.Index != inst.Index || e.ev.Index <= last {
					t.Fatalf("event %s at %d after %d, want %d", id, e.ev.Index, last, inst.Index)
				}
				last = e.ev.Index
				ids = append(ids, e.id)
				if i == 0 {
					// The oldest instance leads: the leader stream,
					// on the same connection, sees it too.
					expectEvent(t, all, api.EventLeader, id)
					expectEvent(t, leader, api.EventLeader, id)
				}
			}
			if d := dials.Load(); d != 1 {
				t.Fatalf("two streams and the writes took %d connections, want 1", d)
			}

			// Resume after the second event: the third to fifth follow.
			resumed := s.stream("/services/web", map[string]string{api.LastEventIDHeader: ids[1]})
			for i := 2; i < 5; i++ {
				if e := expectEvent(t, resumed, api.EventUp, fmt.Sprintf("i%d", i)); e.id != ids[i] {
					t.Fatalf("resumed event id %s, want %s", e.id, ids[i])
				}
			}

			// Cancelling streams (RST_STREAM; the connection stays)
			// releases them on the node.
			integration.WaitFor(t, h2Deadline, "three open streams in discoverd_event_streams", func() bool { return eventStreams(t, s) == base+3 })
			all.close()
			leader.close()
			resumed.close()
			integration.WaitFor(t, h2Deadline, "the cancelled streams released", func() bool { return eventStreams(t, s) == base })
			if d := dials.Load(); d != 1 {
				t.Fatalf("the streams took %d connections, want 1", d)
			}
		})
	}
}

// ownServer is a node serving the API as cmd/discoverd does (HTTP/2
// enabled), on a server of the test's own: for the keep-alive interval of
// testKeepAlive, and to shut it down as cmd/discoverd does.
func ownServer(t *testing.T) (*h2Node, *http.Server) {
	t.Helper()
	nd, srv := serveNode(t)
	n := &h2Node{addr: nd.Addr(), url: "http://" + nd.Addr(), n: nd}
	s := n.server(t, n.transport(false, nil), false)
	// The first write may race the node settling into leadership.
	s.eventually(h2Deadline, func() error {
		if r := s.do("PUT", "/services/web", `{}`, nil); r.status != 200 && r.status != 409 {
			return errors.New(string(r.body))
		}
		return nil
	})
	return n, srv
}

// 5. Keep-alive comments reach an idle HTTP/2 stream.
func TestHTTP2KeepAlive(t *testing.T) {
	t.Parallel()
	n, _ := ownServer(t)
	s := n.server(t, n.transport(false, nil), false)
	st := s.stream("/services/web", nil)
	skipToCurrent(t, st)
	timeout := time.After(h2Deadline)
	for comments := 0; comments < 2; {
		select {
		case e, ok := <-st.events:
			if !ok {
				t.Fatal("the stream ended")
			}
			if !e.comment {
				t.Fatalf("unexpected event %+v", e)
			}
			comments++
		case <-timeout:
			t.Fatalf("no two keep-alive comments within %v", h2Deadline)
		}
	}
}

// rawConn is one HTTP/2 connection spoken frame by frame.
type rawConn struct {
	t    testing.TB
	n    *h2Node
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer
	// settings are the server's first SETTINGS.
	settings map[http2.SettingID]uint32
}

// dialRaw opens a connection, sends the preface and an empty SETTINGS, and
// reads and acknowledges the server's SETTINGS. Every read and write on it
// has h2Deadline, so that no test hangs on it.
func dialRaw(t testing.TB, n *h2Node, settings ...http2.Setting) *rawConn {
	t.Helper()
	c := dialRawConn(t, n)
	if _, err := io.WriteString(c.conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	for c.settings == nil {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			c.settings = map[http2.SettingID]uint32{}
			sf.ForeachSetting(func(s http2.Setting) error {
				c.settings[s.ID] = s.Val
				return nil
			})
		}
	}
	if err := c.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return c
}

// dialRawConn opens the connection only (with ALPN h2 over TLS).
func dialRawConn(t testing.TB, n *h2Node) *rawConn {
	t.Helper()
	d := &net.Dialer{Timeout: h2Deadline}
	var conn net.Conn
	var err error
	if n.tls != nil {
		cfg := n.tls.Clone()
		cfg.NextProtos = []string{"h2"}
		conn, err = tls.DialWithDialer(d, "tcp", n.addr, cfg)
		if err == nil && conn.(*tls.Conn).ConnectionState().NegotiatedProtocol != "h2" {
			err = errors.New("ALPN did not choose h2")
		}
	} else {
		conn, err = d.Dial("tcp", n.addr)
	}
	if err != nil {
		t.Fatalf("dialing %s: %v", n.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(h2Deadline))
	c := &rawConn{t: t, n: n, conn: conn}
	c.fr = http2.NewFramer(conn, conn)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	// The robustness cases write what a client must not.
	c.fr.AllowIllegalWrites = true
	c.enc = hpack.NewEncoder(&c.buf)
	return c
}

// block encodes fields with the connection's encoder.
func (c *rawConn) block(fields ...hpack.HeaderField) []byte {
	c.buf.Reset()
	for _, f := range fields {
		if err := c.enc.WriteField(f); err != nil {
			c.t.Fatal(err)
		}
	}
	return bytes.Clone(c.buf.Bytes())
}

// request is a request's pseudo-headers, and Authorization on a Secure
// node.
func (c *rawConn) request(method, path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	scheme := "http"
	if c.n.tls != nil {
		scheme = "https"
	}
	h := []hpack.HeaderField{
		{Name: ":method", Value: method},
		{Name: ":scheme", Value: scheme},
		{Name: ":authority", Value: c.n.addr},
		{Name: ":path", Value: path},
	}
	if c.n.token != "" {
		h = append(h, hpack.HeaderField{Name: "authorization", Value: "Bearer " + c.n.token})
	}
	return append(h, extra...)
}

// headers sends fields as one HEADERS frame that ends the stream (a
// request without a body).
func (c *rawConn) headers(id uint32, fields []hpack.HeaderField) {
	c.t.Helper()
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.block(fields...), EndStream: true, EndHeaders: true,
	}); err != nil {
		c.t.Fatal(err)
	}
}

// rawStream is what came back on one stream.
type rawStream struct {
	status string
	data   []byte
	ended  bool           // END_STREAM seen
	rst    *http2.ErrCode // RST_STREAM seen
}

// rawReader reads a connection's frames and keeps what each stream got.
type rawReader struct {
	c       *rawConn
	streams map[uint32]*rawStream
	goAway  *http2.GoAwayFrame
	pings   [][8]byte // PING ACK payloads
	err     error     // the read error that ended the connection
	// window, when set, gives back the flow-control window of every DATA
	// frame read, as a client that reads its answers does.
	window bool
}

func (c *rawConn) reader(window bool) *rawReader {
	return &rawReader{c: c, streams: map[uint32]*rawStream{}, window: window}
}

func (r *rawReader) stream(id uint32) *rawStream {
	s := r.streams[id]
	if s == nil {
		s = &rawStream{}
		r.streams[id] = s
	}
	return s
}

// until reads frames until done holds, the connection ends (r.err) or the
// deadline passes (a failure).
func (r *rawReader) until(what string, done func() bool) {
	r.c.t.Helper()
	for !done() && r.err == nil {
		f, err := r.c.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.c.t.Fatalf("no %s within %v", what, h2Deadline)
			}
			r.err = err
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			s := r.stream(f.StreamID)
			if s.status == "" {
				s.status = f.PseudoValue("status")
			}
			s.ended = s.ended || f.StreamEnded()
		case *http2.DataFrame:
			s := r.stream(f.StreamID)
			s.data = append(s.data, f.Data()...)
			s.ended = s.ended || f.StreamEnded()
			if n := uint32(len(f.Data())); r.window && n > 0 {
				r.c.fr.WriteWindowUpdate(0, n)
				r.c.fr.WriteWindowUpdate(f.StreamID, n)
			}
		case *http2.RSTStreamFrame:
			code := f.ErrCode
			r.stream(f.StreamID).rst = &code
		case *http2.GoAwayFrame:
			r.goAway = f
		case *http2.PingFrame:
			if f.IsAck() {
				r.pings = append(r.pings, f.Data)
			}
		}
	}
	if !done() {
		r.c.t.Fatalf("the connection ended (%v, GOAWAY %v) before %s", r.err, r.goAway, what)
	}
}

// ping checks the connection still serves: GET /ping on stream id answers
// 200.
func (c *rawConn) ping(r *rawReader, id uint32) {
	c.t.Helper()
	c.headers(id, c.request("GET", "/ping"))
	r.until(fmt.Sprintf("the answer to GET /ping on stream %d", id), func() bool {
		s := r.streams[id]
		return s != nil && (s.ended || s.rst != nil)
	})
	if s := r.streams[id]; s.status != "200" {
		c.t.Fatalf("GET /ping on stream %d: status %q, reset %v, body %q", id, s.status, s.rst, s.data)
	}
}

// outcome is how the node answered a bad frame.
type outcome string

func goAwayOutcome(code http2.ErrCode) outcome { return outcome("GOAWAY " + code.String()) }
func rstOutcome(code http2.ErrCode) outcome    { return outcome("RST_STREAM " + code.String()) }

const (
	closedOutcome outcome = "connection closed"
	status431     outcome = "431"
	pingAck       outcome = "PING ACK"
	ignored       outcome = "ignored"
)

// 6. Robustness: each bad frame gets the protocol's error in time, never a
// hang; afterwards the node serves a new connection, and a stream error
// leaves its connection serving.
func TestHTTP2BadFrames(t *testing.T) {
	t.Parallel()
	pingData := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	cases := []struct {
		name string
		// raw skips the preface and SETTINGS: send writes them itself.
		raw bool
		// send writes the bad frames; it returns the stream whose answer
		// counts (0 for a connection error).
		send func(c *rawConn) uint32
		want []outcome
	}{
		{
			name: "garbage instead of the preface", raw: true,
			send: func(c *rawConn) uint32 {
				io.WriteString(c.conn, "GARBAGE\x00\x01\x02 this is no HTTP/2 preface\r\n\r\n")
				return 0
			},
			// h2c: the node takes it for HTTP/1.1 and answers 400; TLS
			// with ALPN h2: the connection ends.
			want: []outcome{closedOutcome, goAwayOutcome(http2.ErrCodeProtocol), "HTTP/1.1 400"},
		},
		{
			name: "preface with a bad tail", raw: true,
			send: func(c *rawConn) uint32 {
				io.WriteString(c.conn, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
				return 0
			},
			want: []outcome{closedOutcome, goAwayOutcome(http2.ErrCodeProtocol), "HTTP/1.1 400"},
		},
		{
			name: "DATA on stream 0",
			send: func(c *rawConn) uint32 {
				c.fr.WriteData(0, false, []byte("x"))
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeProtocol)},
		},
		{
			name: "invalid HPACK block",
			send: func(c *rawConn) uint32 {
				// An indexed field of index 0, which does not exist.
				c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndStream: true, EndHeaders: true})
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeCompression)},
		},
		{
			name: "HEADERS without :path",
			send: func(c *rawConn) uint32 {
				c.headers(1, c.request("GET", "/ping")[:3])
				return 1
			},
			want: []outcome{rstOutcome(http2.ErrCodeProtocol)},
		},
		{
			name: "uppercase header name",
			send: func(c *rawConn) uint32 {
				c.headers(1, c.request("GET", "/ping", hpack.HeaderField{Name: "X-Upper", Value: "v"}))
				return 1
			},
			want: []outcome{rstOutcome(http2.ErrCodeProtocol)},
		},
		{
			name: "connection-specific header",
			send: func(c *rawConn) uint32 {
				c.headers(1, c.request("GET", "/ping", hpack.HeaderField{Name: "connection", Value: "keep-alive"}))
				return 1
			},
			// A malformed request: the stream is reset, or answered
			// 400 and ended (RFC 9113 8.1.1 allows a response first).
			want: []outcome{rstOutcome(http2.ErrCodeProtocol), "400"},
		},
		{
			name: "DATA on a stream never opened",
			send: func(c *rawConn) uint32 {
				c.fr.WriteData(5, true, []byte("hello"))
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeProtocol)},
		},
		{
			name: "WINDOW_UPDATE past 2^31-1",
			send: func(c *rawConn) uint32 {
				// The connection's window is 65,535: this takes it past
				// the most a window may be.
				c.fr.WriteWindowUpdate(0, 1<<31-1)
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeFlowControl)},
		},
		{
			name: "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1",
			send: func(c *rawConn) uint32 {
				c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeFlowControl)},
		},
		{
			name: "header list over the advertised limit",
			send: func(c *rawConn) uint32 {
				limit, ok := c.settings[http2.SettingMaxHeaderListSize]
				if !ok {
					c.t.Fatalf("the server advertised no SETTINGS_MAX_HEADER_LIST_SIZE (%v)", c.settings)
				}
				frame := uint32(16384) // every peer's least SETTINGS_MAX_FRAME_SIZE
				if v, ok := c.settings[http2.SettingMaxFrameSize]; ok {
					frame = v
				}
				// Several fields, so that none exceeds the HPACK table and
				// the whole list is over the limit.
				var extra []hpack.HeaderField
				for i := 0; i < int(limit)/1000+2; i++ {
					extra = append(extra, hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("v", 1000)})
				}
				block := c.block(c.request("GET", "/ping", extra...)...)
				first := true
				for len(block) > 0 {
					n := min(len(block), int(frame))
					chunk, last := block[:n], n == len(block)
					block = block[n:]
					var err error
					if first {
						err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: chunk, EndStream: true, EndHeaders: last})
						first = false
					} else {
						err = c.fr.WriteContinuation(1, last, chunk)
					}
					if err != nil {
						// The node may have answered and closed already.
						break
					}
				}
				return 1
			},
			want: []outcome{status431, rstOutcome(http2.ErrCodeProtocol), rstOutcome(http2.ErrCodeRefusedStream),
				goAwayOutcome(http2.ErrCodeProtocol), goAwayOutcome(http2.ErrCodeEnhanceYourCalm)},
		},
		{
			name: "even-numbered client stream",
			send: func(c *rawConn) uint32 {
				c.headers(2, c.request("GET", "/ping"))
				return 0
			},
			want: []outcome{goAwayOutcome(http2.ErrCodeProtocol)},
		},
		{
			name: "PING",
			send: func(c *rawConn) uint32 {
				c.fr.WritePing(false, pingData)
				return 0
			},
			want: []outcome{pingAck},
		},
		{
			name: "unknown frame type",
			send: func(c *rawConn) uint32 {
				c.fr.WriteRawFrame(0xfa, 0x5, 0, []byte("ignore me"))
				c.fr.WriteRawFrame(0xfb, 0, 1, nil)
				return 0
			},
			want: []outcome{ignored},
		},
	}
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					var c *rawConn
					if tc.raw {
						c = dialRawConn(t, n)
					} else {
						c = dialRaw(t, n)
					}
					id := tc.send(c)
					got := observe(t, c, id, tc.raw, pingData)
					t.Logf("answered %q", got)
					found := false
					for _, w := range tc.want {
						found = found || got == w
					}
					if !found {
						t.Fatalf("the node answered %q, want one of %q", got, tc.want)
					}
					// A new connection is served.
					fresh := dialRaw(t, n)
					fresh.ping(fresh.reader(true), 1)
				})
			}
		})
	}
}

// observe reads how the node answered: on stream id, or on the connection
// when id is 0. A connection the node ends must then close; a stream
// error, a PING or an ignored frame must leave the connection serving.
func observe(t *testing.T, c *rawConn, id uint32, raw bool, pingData [8]byte) outcome {
	t.Helper()
	if raw {
		// No HTTP/2 yet: what comes back may be HTTP/1.1 or frames.
		b, err := io.ReadAll(c.conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection was neither answered nor closed within %v (read %q)", h2Deadline, b)
		}
		if bytes.HasPrefix(b, []byte("HTTP/1.1 ")) && len(b) >= 12 {
			return outcome(b[:12])
		}
		fr := http2.NewFramer(nil, bytes.NewReader(b))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return closedOutcome
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				return goAwayOutcome(g.ErrCode)
			}
		}
	}
	r := c.reader(true)
	var got outcome
	switch {
	case id != 0:
		r.until(fmt.Sprintf("an answer on stream %d", id), func() bool {
			s := r.streams[id]
			return r.goAway != nil || s != nil && (s.rst != nil || s.ended)
		})
		if s := r.streams[id]; s != nil && s.rst != nil {
			got = rstOutcome(*s.rst)
		} else if s != nil && s.ended {
			got = outcome(s.status)
		} else {
			got = goAwayOutcome(r.goAway.ErrCode)
		}
	default:
		// A PING (the case's, or this one) comes back when the node read
		// on without a word; then a request shows the connection serves.
		const probe = "probe..."
		var mine [8]byte
		copy(mine[:], probe)
		c.fr.WritePing(false, mine)
		r.until("an answer to the frame", func() bool {
			if r.goAway != nil {
				return true
			}
			for _, p := range r.pings {
				if p == pingData || p == mine {
					return true
				}
			}
			return false
		})
		switch {
		case r.goAway != nil:
			got = goAwayOutcome(r.goAway.ErrCode)
		case r.pings[0] == pingData:
			got = pingAck
		default:
			got = ignored
		}
	}
	if r.goAway != nil {
		if r.goAway.ErrCode == http2.ErrCodeNo {
			t.Fatalf("GOAWAY without an error code after a bad frame")
		}
		// The node ends the connection.
		r.until("the connection closed after GOAWAY", func() bool { return r.err != nil })
		return got
	}
	if got == closedOutcome {
		return got
	}
	// The same connection still serves.
	c.ping(r, 3)
	return got
}

// 7. Streams past SETTINGS_MAX_CONCURRENT_STREAMS on one connection are
// refused; the ones open keep working.
func TestHTTP2ConcurrentStreamLimit(t *testing.T) {
	t.Parallel()
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			s := n.server(t, n.transport(false, nil), false)
			s.must("PUT", "/services/web", `{}`)
			c := dialRaw(t, n)
			max, ok := c.settings[http2.SettingMaxConcurrentStreams]
			if !ok || max == 0 {
				t.Fatalf("the server advertised no SETTINGS_MAX_CONCURRENT_STREAMS (%v)", c.settings)
			}
			r := c.reader(true)
			const over = 3
			accept := hpack.HeaderField{Name: "accept", Value: "text/event-stream"}
			// The streams are opened one after another, and each is
			// answered before the next: the node has taken it in.
			id := uint32(1)
			for range max {
				c.headers(id, c.request("GET", "/services/web", accept))
				r.until(fmt.Sprintf("the answer on stream %d", id), func() bool {
					s := r.streams[id]
					return s != nil && (s.status != "" || s.rst != nil)
				})
				if s := r.streams[id]; s.status != "200" {
					t.Fatalf("stream %d of %d: status %q, reset %v", (id+1)/2, max, s.status, s.rst)
				}
				id += 2
			}
			var excess []uint32
			for range over {
				c.headers(id, c.request("GET", "/services/web", accept))
				excess = append(excess, id)
				id += 2
			}
			r.until("the excess streams refused", func() bool {
				for _, id := range excess {
					if s := r.streams[id]; s == nil || s.rst == nil && s.status == "" {
						return false
					}
				}
				return true
			})
			for _, id := range excess {
				s := r.streams[id]
				if s.rst == nil || (*s.rst != http2.ErrCodeRefusedStream && *s.rst != http2.ErrCodeProtocol) {
					t.Fatalf("stream %d past the limit: status %q, reset %v; want RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR", id, s.status, s.rst)
				}
			}
			if r.goAway != nil {
				t.Fatalf("GOAWAY %v after the excess streams", r.goAway)
			}
			// The open streams keep working: an event reaches each.
			s.register("web", "a", "10.0.0.1:80", nil)
			r.until("the event on every open stream", func() bool {
				for id := uint32(1); id < 2*max; id += 2 {
					if !bytes.Contains(r.streams[id].data, []byte(`"kind":"up"`)) {
						return false
					}
				}
				return true
			})
			for id := uint32(1); id < 2*max; id += 2 {
				if s := r.streams[id]; s.ended || s.rst != nil {
					t.Fatalf("open stream %d ended (reset %v)", id, s.rst)
				}
			}
		})
	}
}

// 8. Shutting the HTTP server down with HTTP/2 streams open ends each, and
// each connection, in time, and the shutdown returns.
func TestHTTP2ShutdownWithOpenStreams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// graceful: the server says GOAWAY (NO_ERROR) and lets each
		// stream end with its error event, rather than cutting the
		// connection.
		graceful bool
		// start returns the node, and how to stop its HTTP server.
		start func(t *testing.T) (*h2Node, func() error)
	}{
		{"testnode StopHTTP", false, func(t *testing.T) (*h2Node, func() error) {
			n, s := startH2(t, false)
			return n, func() error { s.StopHTTP(); return nil }
		}},
		{"testnode StopHTTP over TLS", false, func(t *testing.T) (*h2Node, func() error) {
			n, s := startH2(t, true)
			return n, func() error { s.StopHTTP(); return nil }
		}},
		{"Shutdown as on SIGTERM", true, func(t *testing.T) (*h2Node, func() error) {
			n, srv := ownServer(t)
			return n, func() error {
				// As cmd/discoverd: the streams end, and the server
				// shuts down meanwhile.
				go n.n.EndStreams()
				ctx, cancel := context.WithTimeout(context.Background(), h2Deadline)
				defer cancel()
				return srv.Shutdown(ctx)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, stop := tc.start(t)
			s := n.server(t, n.transport(false, nil), false)
			if r := s.do("PUT", "/services/web", `{}`, nil); r.status != 200 && r.status != 409 {
				t.Fatalf("creating the service: %d %s", r.status, r.body)
			}
			var streams []*sseStream
			for range 4 {
				st := s.stream("/services/web", nil)
				skipToCurrent(t, st)
				streams = append(streams, st)
			}
			// Raw streams, to see the connection's end.
			c := dialRaw(t, n)
			r := c.reader(true)
			accept := hpack.HeaderField{Name: "accept", Value: "text/event-stream"}
			for id := uint32(1); id <= 7; id += 2 {
				c.headers(id, c.request("GET", "/services/web", accept))
			}
			r.until("four raw streams open", func() bool {
				for id := uint32(1); id <= 7; id += 2 {
					if s := r.streams[id]; s == nil || s.status != "200" {
						return false
					}
				}
				return true
			})

			stopped := make(chan error, 1)
			go func() { stopped <- stop() }()
			for i, st := range streams {
				endsOrErrors(t, i, st)
			}
			r.until("the raw connection closed", func() bool { return r.err != nil })
			if tc.graceful {
				if r.goAway == nil || r.goAway.ErrCode != http2.ErrCodeNo {
					t.Fatalf("the connection ended with GOAWAY %v, want GOAWAY NO_ERROR", r.goAway)
				}
				for id := uint32(1); id <= 7; id += 2 {
					if st := r.streams[id]; !st.ended || !bytes.Contains(st.data, []byte("event: error\n")) {
						t.Fatalf("raw stream %d: END_STREAM %v, RST_STREAM %v, %q; want its error event and END_STREAM", id, st.ended, st.rst, st.data)
					}
				}
			}
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatalf("shutdown: %v", err)
				}
			case <-time.After(h2Deadline):
				t.Fatalf("shutdown did not return within %v", h2Deadline)
			}
		})
	}
}

// endsOrErrors reads st to its end, which may follow an error event saying
// the node is shutting down, but no other event.
func endsOrErrors(t *testing.T, i int, st *sseStream) {
	t.Helper()
	timeout := time.After(h2Deadline)
	for {
		select {
		case e, ok := <-st.events:
			if !ok {
				return
			}
			if e.comment {
				continue
			}
			var ae api.Error
			if e.name != "error" || json.Unmarshal([]byte(e.data), &ae) != nil || ae.Code != api.CodeUnavailable {
				t.Fatalf("stream %d: got %+v, want its end or an unavailable error event", i, e)
			}
		case <-timeout:
			t.Fatalf("stream %d did not end within %v", i, h2Deadline)
		}
	}
}

// 9. A client that stops reading one stream holds up nobody else.
func TestHTTP2StalledReaderDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	for _, m := range h2Modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startH2(t, m.secure)
			s := n.server(t, n.transport(false, nil), false)
			s.must("PUT", "/services/web", `{}`)
			base := eventStreams(t, s)

			// A stream whose reader reads nothing and grants no window
			// past the 65,535 bytes every stream starts with.
			stalled := dialRaw(t, n)
			stalled.headers(1, stalled.request("GET", "/services/web", hpack.HeaderField{Name: "accept", Value: "text/event-stream"}))
			integration.WaitFor(t, h2Deadline, "the stalled stream open", func() bool { return eventStreams(t, s) == base+1 })

			// 2 MiB of events, many times that window, while another
			// connection is served.
			watch := s.stream("/services/web", nil)
			skipToCurrent(t, watch)
			value := strings.Repeat("x", 32<<10)
			var slowest time.Duration
			for i := range 64 {
				start := time.Now()
				body, _ := json.Marshal(map[string]string{"m": value, "n": strconv.Itoa(i)})
				s.must("PUT", "/services/web/instances/a", `{"addr": "10.0.0.1:80", "proto": "http", "meta": `+string(body)+`}`)
				s.must("GET", "/ping", "")
				if d := time.Since(start); d > slowest {
					slowest = d
				}
			}
			t.Logf("the slowest write and ping took %v", slowest)
			// The stream of a reading client got all of it, in order: the
			// first write's up (and the leader it makes), then the updates.
			for i := range 64 {
				kind := api.EventUpdate
				if i == 0 {
					kind = api.EventUp
				}
				e := expectEvent(t, watch, kind, "a")
				if got := e.ev.Instance.Meta["n"]; got != strconv.Itoa(i) {
					t.Fatalf("event %d carries write %s", i, got)
				}
				if i == 0 {
					expectEvent(t, watch, api.EventLeader, "a")
				}
			}

			// Closing the stalled connection releases its stream.
			stalled.conn.Close()
			integration.WaitFor(t, h2Deadline, "the stalled stream released", func() bool { return eventStreams(t, s) <= base+1 })
		})
	}
}
