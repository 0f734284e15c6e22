package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/api"
)

// request is one prepared HTTP request. wire, when set, is the whole
// HTTP/1.1 request already encoded, so the hot loops write it with one
// syscall and build nothing.
type request struct {
	method, path string
	body         []byte
	wire         []byte
}

// doer sends requests over one keep-alive connection (the raw client) or
// through a shared, tuned http.Transport (the std client). The body it
// returns is valid until the next call.
type doer interface {
	do(r *request) (status int, body []byte, err error)
	close()
}

// encodeWire encodes r as an HTTP/1.1 request to host, with the bearer
// token when there is one.
func encodeWire(dst []byte, host, token string, r *request) []byte {
	dst = append(dst, r.method...)
	dst = append(dst, ' ')
	dst = append(dst, r.path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	if token != "" {
		dst = append(dst, "\r\nAuthorization: Bearer "...)
		dst = append(dst, token...)
	}
	if r.body != nil {
		dst = append(dst, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(r.body)), 10)
	} else if r.method == http.MethodPut || r.method == http.MethodPost {
		dst = append(dst, "\r\nContent-Length: 0"...)
	}
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, r.body...)
}

// rawConn is a minimal HTTP/1.1 keep-alive client for the load loops. The
// standard client spends about as much CPU per request as the server does
// (a goroutine hand-off per request, header maps, allocations); on a 2-core
// machine shared with the server that would make the harness the
// bottleneck. This one writes a pre-encoded request and parses only the
// status line, Content-Length and chunked framing.
type rawConn struct {
	host string // host:port to dial, also the Host header
	// tls, when set, speaks HTTPS; token is sent as the bearer token.
	tls   *tls.Config
	token string
	conn  net.Conn
	br    *bufio.Reader
	buf   []byte
	body  []byte
}

func newRawConn(host string) *rawConn { return &rawConn{host: host} }

func (c *rawConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func (c *rawConn) do(r *request) (int, []byte, error) {
	wire := r.wire
	if wire == nil {
		c.buf = encodeWire(c.buf[:0], c.host, c.token, r)
		wire = c.buf
	}
	reused := c.conn != nil
	st, body, err := c.roundTrip(wire)
	if err != nil && reused && r.method != http.MethodPost {
		// The server may have closed an idle connection; a fresh one decides.
		st, body, err = c.roundTrip(wire)
	}
	return st, body, err
}

func (c *rawConn) roundTrip(wire []byte) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.host, 5*time.Second)
		if err != nil {
			return 0, nil, err
		}
		if c.tls != nil {
			cfg := c.tls
			if cfg.ServerName == "" {
				cfg = cfg.Clone()
				cfg.ServerName, _, _ = net.SplitHostPort(c.host)
			}
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				conn.Close()
				return 0, nil, err
			}
			tc.SetDeadline(time.Time{})
			conn = tc
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	if _, err := c.conn.Write(wire); err != nil {
		c.close()
		return 0, nil, err
	}
	st, body, keep, err := c.readResponse()
	if err != nil || !keep {
		c.close()
	}
	return st, body, err
}

func (c *rawConn) readResponse() (status int, body []byte, keep bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		if len(line) <= 2 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			length, err = strconv.Atoi(string(value))
			if err != nil {
				return 0, nil, false, fmt.Errorf("malformed Content-Length %q", value)
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case asciiEqualFold(name, "connection"):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		}
	}
	c.body = c.body[:0]
	switch {
	case chunked:
		for {
			line, err = c.br.ReadSlice('\n')
			if err != nil {
				return 0, nil, false, err
			}
			if i := bytes.IndexByte(line, ';'); i >= 0 {
				line = line[:i]
			}
			n, perr := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 32)
			if perr != nil {
				return 0, nil, false, fmt.Errorf("malformed chunk size %q", line)
			}
			if n == 0 {
				// Trailers, up to the blank line.
				for {
					line, err = c.br.ReadSlice('\n')
					if err != nil {
						return 0, nil, false, err
					}
					if len(line) <= 2 {
						return status, c.body, keep, nil
					}
				}
			}
			if err = c.readBody(int(n)); err != nil {
				return 0, nil, false, err
			}
			if _, err = c.br.Discard(2); err != nil {
				return 0, nil, false, err
			}
		}
	case length >= 0:
		if err = c.readBody(length); err != nil {
			return 0, nil, false, err
		}
	case status == http.StatusNoContent || status == http.StatusNotModified || status < 200:
	default:
		// No framing: the body runs to the end of the connection.
		b, err := io.ReadAll(c.br)
		return status, b, false, err
	}
	return status, c.body, keep, nil
}

func (c *rawConn) readBody(n int) error {
	start := len(c.body)
	c.body = append(c.body, make([]byte, n)...)
	_, err := io.ReadFull(c.br, c.body[start:])
	return err
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// stdDoer sends through net/http.
type stdDoer struct {
	client *http.Client
	base   string
	token  string
	body   []byte
}

func (d *stdDoer) close() {}

func (d *stdDoer) do(r *request) (int, []byte, error) {
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, d.base+r.path, rd)
	if err != nil {
		return 0, nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	buf := bytes.NewBuffer(d.body[:0])
	_, err = buf.ReadFrom(resp.Body)
	d.body = buf.Bytes()
	return resp.StatusCode, d.body, err
}

// server is one discoverd HTTP endpoint.
type server struct {
	base string // http://host:port, no trailing slash
	host string // host:port
	raw  bool   // the raw client can talk to it (no path prefix)
	tls  bool   // https
}

func parseServer(s string) (server, error) {
	if !hasScheme(s) {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return server{}, fmt.Errorf("--http %q: %v", s, err)
	}
	if u.Host == "" {
		return server{}, fmt.Errorf("--http %q: no host", s)
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			host += ":443"
		} else {
			host += ":80"
		}
	}
	path := trimRightSlash(u.Path)
	return server{base: u.Scheme + "://" + u.Host + path, host: host, raw: path == "", tls: u.Scheme == "https"}, nil
}

func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ':':
			return i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/'
		case !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
			return false
		}
	}
	return false
}

func trimRightSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// newDoer gives worker i a doer on one of the servers (round robin).
func (b *bench) newDoer(i int) doer {
	srv := b.servers[i%len(b.servers)]
	if srv.raw && !b.cfg.stdClient {
		c := newRawConn(srv.host)
		c.token = b.token
		if srv.tls {
			c.tls = b.tlsConf
		}
		return c
	}
	return &stdDoer{client: b.client, base: srv.base, token: b.token}
}

// prepare fills in r.wire for the raw client of worker i (a no-op for the
// std client, which encodes per request anyway).
func (b *bench) prepare(i int, r *request) {
	srv := b.servers[i%len(b.servers)]
	if srv.raw && !b.cfg.stdClient {
		r.wire = encodeWire(nil, srv.host, b.token, r)
	}
}

// httpError turns a non-2xx answer into an error carrying the API error.
func httpError(status int, body []byte) error {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return fmt.Errorf("HTTP %d: %w", status, &e)
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Errorf("HTTP %d: %s", status, bytes.TrimSpace(body))
}

// call sends one request on a fresh std-client request to the first server
// and fails on a non-2xx answer.
func (b *bench) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return b.callAt(ctx, b.servers[0].base, method, path, body)
}

// callAt is call on the server at base.
func (b *bench) callAt(ctx context.Context, base, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return out, fmt.Errorf("%s %s: %w", method, path, httpError(resp.StatusCode, out))
	}
	return out, nil
}

var errStop = errors.New("stopped")
