package h2server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/discoverd/discoverd/h2server"
)

// deadline bounds every wait of these tests: generous, for a busy machine.
const deadline = 30 * time.Second

// testServer is an http.Server on a loopback listener whose HTTP/2 is
// served by an h2server.Server.
type testServer struct {
	hs   *http.Server
	h2   *h2server.Server
	addr string
	url  string
	tls  bool
	// served is closed once Serve returned.
	served chan struct{}
}

type serverOpts struct {
	tls bool
	// maxStreams is h2server.Server's MaxConcurrentStreams.
	maxStreams uint32
	// configure adjusts the http.Server before it serves.
	configure func(*http.Server)
}

func startServer(t testing.TB, h http.Handler, o serverOpts) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	if o.configure != nil {
		o.configure(hs)
	}
	ts := &testServer{hs: hs, h2: &h2server.Server{MaxConcurrentStreams: o.maxStreams}, addr: ln.Addr().String(), tls: o.tls, served: make(chan struct{})}
	ts.h2.Configure(hs)
	scheme := "http"
	if o.tls {
		scheme = "https"
		// tls.NewListener + Serve: net/http looks up TLSNextProto by the
		// protocol ALPN chose, as it does under ServeTLS.
		cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}, NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, cfg)
	}
	ts.url = scheme + "://" + ts.addr
	go func() {
		defer close(ts.served)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-ts.served
	})
	return ts
}

var (
	certOnce sync.Once
	cert     tls.Certificate
	certErr  error
)

// testCert is a self-signed certificate for 127.0.0.1, made once.
func testCert(t testing.TB) tls.Certificate {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			certErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "h2server test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			certErr = err
			return
		}
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	if certErr != nil {
		t.Fatal(certErr)
	}
	return cert
}

// client is Go's HTTP/2 client for ts: prior knowledge in clear text, ALPN
// over TLS. It never falls back to HTTP/1.1.
func (ts *testServer) client(t testing.TB) *http.Client {
	tr := &http.Transport{}
	if ts.tls {
		pool := x509.NewCertPool()
		leaf, err := x509.ParseCertificate(testCert(t).Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(leaf)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		tr.ForceAttemptHTTP2 = true
		var p http.Protocols
		p.SetHTTP2(true)
		tr.Protocols = &p
	} else {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: deadline}
}

// waitUntil polls cond until it holds, failing the test after deadline.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recv waits for a value from ch, failing the test after deadline.
func recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(deadline):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// rawConn is a hand-driven HTTP/2 client connection.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// dialRaw connects to ts in clear text and sends the preface and, unless
// settings is nil, SETTINGS with them.
func dialRaw(t testing.TB, addr string, settings []http2.Setting) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c}
	rc.fr = http2.NewFramer(c, c)
	rc.fr.AllowIllegalWrites = true
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if settings != nil {
		if err := rc.fr.WriteSettings(settings...); err != nil {
			t.Fatal(err)
		}
	}
	return rc
}

// headerBlock HPACK-encodes a request's fields; extra are name, value
// pairs.
func (rc *rawConn) headerBlock(method, path string, extra ...string) []byte {
	rc.hbuf.Reset()
	rc.enc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
	rc.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	rc.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "example.test"})
	rc.enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for i := 0; i+1 < len(extra); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return append([]byte(nil), rc.hbuf.Bytes()...)
}

// request opens stream id.
func (rc *rawConn) request(id uint32, method, path string, end bool, extra ...string) {
	rc.t.Helper()
	err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.headerBlock(method, path, extra...), EndStream: end, EndHeaders: true})
	if err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) check(err error) {
	rc.t.Helper()
	if err != nil {
		rc.t.Fatal(err)
	}
}

// next reads a frame, copying a DATA frame's payload (the Framer reuses
// its buffer). It returns nil at the end of the connection.
func (rc *rawConn) next() (http2.Frame, []byte) {
	rc.t.Helper()
	f, err := rc.fr.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return nil, nil
		}
		rc.t.Fatalf("reading a frame: %v", err)
	}
	if d, ok := f.(*http2.DataFrame); ok {
		return f, append([]byte(nil), d.Data()...)
	}
	return f, nil
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// until reads frames until match accepts one, and returns it; it fails the
// test if the connection ends first.
func (rc *rawConn) until(what string, match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f, _ := rc.next()
		if f == nil {
			rc.t.Fatalf("the connection ended while waiting for %s", what)
		}
		if match(f) {
			return f
		}
	}
}

// goAway waits for the server's GOAWAY and returns it.
func (rc *rawConn) goAway() *http2.GoAwayFrame {
	rc.t.Helper()
	return rc.until("GOAWAY", func(f http2.Frame) bool {
		_, ok := f.(*http2.GoAwayFrame)
		return ok
	}).(*http2.GoAwayFrame)
}

// rst waits for RST_STREAM on id and returns its code.
func (rc *rawConn) rst(id uint32) http2.ErrCode {
	rc.t.Helper()
	f := rc.until("RST_STREAM on stream "+strconv.Itoa(int(id)), func(f http2.Frame) bool {
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			rc.t.Fatalf("GOAWAY %v (%q) while waiting for RST_STREAM on %d", ga.ErrCode, ga.DebugData(), id)
		}
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id
	})
	return f.(*http2.RSTStreamFrame).ErrCode
}

// response reads stream id's response to its end: status and body.
func (rc *rawConn) response(id uint32) (string, []byte) {
	rc.t.Helper()
	var status string
	var body []byte
	for {
		f, data := rc.next()
		if f == nil {
			rc.t.Fatalf("the connection ended before stream %d's response did", id)
		}
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if status == "" {
				status = f.PseudoValue("status")
			}
			if f.StreamEnded() {
				return status, body
			}
		case *http2.DataFrame:
			body = append(body, data...)
			if f.StreamEnded() {
				return status, body
			}
		case *http2.RSTStreamFrame:
			rc.t.Fatalf("stream %d reset (%v) before its response ended", id, f.ErrCode)
		}
	}
}

// ended waits for the server to close the connection; frames before are
// skipped.
func (rc *rawConn) ended() {
	rc.t.Helper()
	for {
		f, _ := rc.next()
		if f == nil {
			return
		}
	}
}

// ping sends PING and waits for its acknowledgement: the server's reader
// and writer are both alive.
func (rc *rawConn) ping() {
	rc.t.Helper()
	data := [8]byte{'p', 'i', 'n', 'g', 1, 2, 3, 4}
	rc.check(rc.fr.WritePing(false, data))
	rc.until("PING ack", func(f http2.Frame) bool {
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			rc.t.Fatalf("GOAWAY %v (%q) while waiting for a PING ack", ga.ErrCode, ga.DebugData())
		}
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == data
	})
}

// testSource is a Source that gives the chunks queued with push, in order,
// and closes once end was called and they are out.
type testSource struct {
	mu     sync.Mutex
	chunks [][]byte
	closed bool
	fills  atomic.Int64
	done   atomic.Int64
	doneCh chan struct{}
}

func newTestSource() *testSource { return &testSource{doneCh: make(chan struct{})} }

func (s *testSource) push(b []byte) {
	s.mu.Lock()
	s.chunks = append(s.chunks, b)
	s.mu.Unlock()
}

func (s *testSource) end() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *testSource) Fill(dst []byte) ([]byte, bool) {
	s.fills.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.chunks {
		dst = append(dst, c...)
	}
	s.chunks = nil
	return dst, !s.closed
}

func (s *testSource) Done() {
	if s.done.Add(1) == 1 {
		close(s.doneCh)
	}
}

// waitDone waits for Done, and checks that it came once.
func (s *testSource) waitDone(t testing.TB) {
	t.Helper()
	recv(t, "Source.Done", s.doneCh)
	if n := s.done.Load(); n != 1 {
		t.Fatalf("Done called %d times", n)
	}
}

// detachHandler detaches every request with a new testSource, handed to
// got with its wake.
type detached struct {
	src  *testSource
	wake func()
	r    *http.Request
}

func detachHandler(got chan<- detached) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		src := newTestSource()
		w.Header().Set("Content-Type", "text/event-stream")
		wake, ok := h2server.Detach(w, src)
		if !ok {
			http.Error(w, "not detached", http.StatusInternalServerError)
			return
		}
		got <- detached{src: src, wake: wake, r: r}
	}
}

// pattern is n bytes that differ from one offset to the next, so that
// reordered or repeated bytes show.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}
