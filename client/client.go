package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/discoverd/discoverd/api"
)

// DefaultServer is the server a Client uses when it is given none and the
// DISCOVERD environment variable is empty.
const DefaultServer = "http://127.0.0.1:1111"

// ServersEnv is the environment variable New reads, as a comma-separated
// list of servers, when it is given none.
const ServersEnv = "DISCOVERD"

// DefaultTTL is the instance TTL a Heartbeater assumes unless told
// otherwise (WithTTL, HeartbeatTTL); it matches the server's default
// --instance-ttl. Heartbeats go out every TTL/2 minus a random jitter.
const DefaultTTL = 10 * time.Second

// DefaultRetryTimeout bounds the retries of one call whose context has no
// deadline (WithRetryTimeout).
const DefaultRetryTimeout = 15 * time.Second

// Backoff between rounds of attempts over every server: jittered, doubling
// from retryBase up to retryCap.
const (
	retryBase = 50 * time.Millisecond
	retryCap  = time.Second
)

// maxBody bounds a JSON response body read in full.
const maxBody = 64 << 20

// Option configures a Client (NewWithOptions).
type Option func(*Client)

// WithTTL sets the instance TTL that Heartbeaters of this client assume; it
// should equal the server's --instance-ttl (default 10s).
func WithTTL(ttl time.Duration) Option {
	return func(c *Client) {
		if ttl > 0 {
			c.ttl = ttl
		}
	}
}

// WithRetryTimeout bounds how long one call keeps retrying across the
// servers when its context has no deadline (default 15s). A context deadline,
// when there is one, is used instead.
func WithRetryTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.retryTimeout = d
		}
	}
}

// WithHTTPClient makes the client send its requests with hc instead of its
// own keep-alive client. hc must not have a Timeout: it would cut event
// streams.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithConsistentReads makes every read (Services, Instances, Leader,
// GetMeta) linearizable: the answering server confirms with the Raft leader
// first (?consistent=true). Reads are served from the local state otherwise.
func WithConsistentReads() Option {
	return func(c *Client) { c.consistent = true }
}

// Client talks to a discoverd cluster. It is safe for concurrent use; create
// one and share it.
type Client struct {
	servers   []string
	hc        *http.Client
	transport *http.Transport // the client's own, closed by Close
	// streams carries event streams over h2c; nil with WithHTTPClient.
	streams      *h2cStreams
	preferred    atomic.Int64 // index in servers of the last one that answered
	ttl          time.Duration
	retryTimeout time.Duration
	consistent   bool

	nats natsConfig
	sec  security

	natsMu   sync.Mutex
	nc       *nats.Conn
	natsErr  error
	closed   bool
	closeErr error
}

// New returns a client of the given servers, each a URL
// ("http://10.0.0.1:1111") or a host:port. With none, it reads the
// DISCOVERD environment variable (a comma-separated list) and falls back to
// DefaultServer.
func New(servers ...string) *Client { return NewWithOptions(servers) }

// NewWithOptions is New with options, e.g. WithNATS or WithTTL.
func NewWithOptions(servers []string, opts ...Option) *Client {
	if len(servers) == 0 {
		servers = strings.Split(os.Getenv(ServersEnv), ",")
	}
	c := &Client{ttl: DefaultTTL, retryTimeout: DefaultRetryTimeout}
	c.securityFromEnv()
	for _, o := range opts {
		o(c)
	}
	c.setupTLS()
	for _, s := range servers {
		if s = strings.TrimSpace(s); s != "" {
			c.servers = append(c.servers, c.normalizeServer(s))
		}
	}
	if len(c.servers) == 0 {
		c.servers = []string{c.normalizeServer(DefaultServer)}
	}
	if c.hc == nil {
		c.transport = &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   2 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       c.sec.tls,
			// HTTP/2 over TLS, which a custom DialContext otherwise
			// turns off.
			ForceAttemptHTTP2: true,
		}
		c.hc = &http.Client{Transport: c.transport}
		c.streams = newH2CStreams()
	}
	return c
}

// NormalizeServer turns a host:port into an http URL and trims a trailing
// slash from a URL.
func NormalizeServer(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return strings.TrimRight(s, "/")
}

// Servers returns the servers the client fails over across, as URLs.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// Close releases the client's idle connections and its NATS connection.
// Heartbeaters and Watchers should be closed first.
func (c *Client) Close() error {
	c.natsMu.Lock()
	defer c.natsMu.Unlock()
	if c.closed {
		return c.closeErr
	}
	c.closed = true
	if c.nc != nil {
		c.nc.Close()
	}
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	c.streams.close()
	return nil
}

// IsNotFound reports whether err is an object_not_found api.Error (an
// unknown service or instance, no leader, no meta).
func IsNotFound(err error) bool { return api.IsCode(err, api.CodeNotFound) }

// IsExists reports whether err is an object_exists api.Error.
func IsExists(err error) bool { return api.IsCode(err, api.CodeExists) }

// IsPreconditionFailed reports whether err is a precondition_failed
// api.Error (a compare-and-set lost).
func IsPreconditionFailed(err error) bool { return api.IsCode(err, api.CodePreconditionFailed) }

// IsUnavailable reports whether err is a service_unavailable api.Error: no
// server could be reached or none could serve the request in time.
func IsUnavailable(err error) bool { return api.IsCode(err, api.CodeUnavailable) }

// retryable reports whether another attempt (on this or another server)
// may succeed.
func retryable(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Retry
}

// backoff is the jittered wait before round n (from 0) of retries.
func backoff(n int) time.Duration {
	d := retryCap
	if n < 6 {
		d = min(retryBase<<n, retryCap)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryOpts tunes one retried call.
type retryOpts struct {
	// onePass tries each server once, with no wait: the caller has its own
	// retry schedule (heartbeats, reconnecting streams).
	onePass bool
	// attemptTimeout, when set, bounds each attempt on one server, so a
	// server that hangs does not keep the others from being tried. It must
	// not be used for streams, which outlive the attempt.
	attemptTimeout time.Duration
}

// retry calls fn with each server in turn, starting from the one that
// last answered, until fn succeeds, fails with an error that is not
// retryable, or the context's deadline (or, without one, the client's retry
// timeout) passes. After every server failed once it waits a short
// jittered backoff before the next round.
//
// It returns fn's error as it is when it is not retryable; when it gives
// up on retryable errors it returns the last one (a service_unavailable
// *api.Error); when ctx is canceled it returns ctx.Err() wrapped with the
// last error.
func (c *Client) retry(ctx context.Context, o retryOpts, fn func(ctx context.Context, server string) error) error {
	n := len(c.servers)
	start := int(c.preferred.Load())
	var giveUp time.Time
	if dl, ok := ctx.Deadline(); ok {
		giveUp = dl
	} else {
		giveUp = time.Now().Add(c.retryTimeout)
	}
	var last error
	for attempt := 0; ; attempt++ {
		i := (start + attempt) % n
		err := c.attempt(ctx, o, c.servers[i], fn)
		if err == nil {
			if i != start {
				c.preferred.Store(int64(i))
			}
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return ctxError(cerr, last)
		}
		if !retryable(err) {
			return err
		}
		last = err
		if (attempt+1)%n != 0 {
			continue // next server at once
		}
		if o.onePass {
			return last
		}
		wait := backoff((attempt+1)/n - 1)
		if time.Now().Add(wait).After(giveUp) {
			e := *api.AsError(last)
			e.Message += fmt.Sprintf(" (gave up after retrying %d times across %d server(s))", attempt+1, n)
			return &e
		}
		if err := sleep(ctx, wait); err != nil {
			return ctxError(err, last)
		}
	}
}

// attempt calls fn once, within o.attemptTimeout if set. An attempt that
// timed out while ctx has not is a retryable error.
func (c *Client) attempt(ctx context.Context, o retryOpts, server string, fn func(ctx context.Context, server string) error) error {
	if o.attemptTimeout <= 0 {
		return fn(ctx, server)
	}
	actx, cancel := context.WithTimeout(ctx, o.attemptTimeout)
	defer cancel()
	err := fn(actx, server)
	if err != nil && actx.Err() != nil && ctx.Err() == nil {
		return &api.Error{Code: api.CodeUnavailable, Retry: true,
			Message: fmt.Sprintf("discoverd at %s did not answer within %v", server, o.attemptTimeout)}
	}
	return err
}

// ctxError is the error of a call whose context ended during its retries.
func ctxError(cerr, last error) error {
	if last == nil {
		return cerr
	}
	return fmt.Errorf("%w (last error: %v)", cerr, last)
}

// request describes one HTTP call.
type request struct {
	method string
	path   string // escaped
	query  string
	body   []byte
	accept string
	// lastEventID, when set, is sent as Last-Event-ID.
	lastEventID string
}

// newHTTPRequest builds req for server.
func (c *Client) newHTTPRequest(ctx context.Context, server string, r *request) (*http.Request, error) {
	u := server + r.path
	if r.query != "" {
		u += "?" + r.query
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, &api.Error{Code: api.CodeValidation, Message: fmt.Sprintf("bad server address %q: %v", server, err)}
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	if c.sec.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.sec.token)
	}
	if r.lastEventID != "" {
		req.Header.Set(api.LastEventIDHeader, r.lastEventID)
	}
	return req, nil
}

// roundTrip sends r to server and returns the response if its status is
// 2xx. Otherwise it returns the decoded *api.Error: connection failures
// and 502/503/504 without an error body are retryable service_unavailable
// errors. index is the answer's Discoverd-Index, failed or not. On success
// the caller must close the body.
func (c *Client) roundTrip(ctx context.Context, server string, r *request) (resp *http.Response, index uint64, err error) {
	if c.sec.err != nil {
		return nil, 0, c.sec.err
	}
	req, err := c.newHTTPRequest(ctx, server, r)
	if err != nil {
		return nil, 0, err
	}
	if r.accept == sseContentType && c.streams.use(server) {
		resp, err = c.streams.hc.Do(req)
		if err != nil && ctx.Err() == nil {
			// The server may not speak h2c: try HTTP/1.1, and remember
			// it if that answers.
			if req, err = c.newHTTPRequest(ctx, server, r); err != nil {
				return nil, 0, err
			}
			if resp, err = c.hc.Do(req); err == nil {
				c.streams.http1Only(server)
			}
		}
	} else {
		resp, err = c.hc.Do(req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if e := tlsError(server, err); e != nil {
			return nil, 0, e
		}
		return nil, 0, &api.Error{
			Code:    api.CodeUnavailable,
			Message: fmt.Sprintf("cannot reach discoverd at %s: %v", server, unwrapURLError(err)),
			Retry:   true,
		}
	}
	index = headerIndex(resp.Header)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, index, nil
	}
	defer resp.Body.Close()
	return nil, index, decodeError(resp, server, r)
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// decodeError turns a failed response into an *api.Error, from its JSON
// body when it has one.
func decodeError(resp *http.Response, server string, r *request) *api.Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if err := json.Unmarshal(b, &e); err == nil && e.Code != "" {
		if e.Code == api.CodeUnavailable {
			e.Retry = true
		}
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	e = api.Error{Message: fmt.Sprintf("%s %s%s answered %s", r.method, server, r.path, resp.Status)}
	if msg != "" {
		e.Message += ": " + msg
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		e.Code = api.CodeNotFound
	case http.StatusConflict:
		e.Code = api.CodeExists
	case http.StatusPreconditionFailed:
		e.Code = api.CodePreconditionFailed
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed:
		e.Code = api.CodeValidation
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		e.Code, e.Retry = api.CodeUnavailable, true
	default:
		e.Code = api.CodeUnknown
	}
	return &e
}

// do sends r with retries and failover and decodes a JSON answer into out
// (unless out is nil). It returns the answer's Discoverd-Index.
func (c *Client) do(ctx context.Context, o retryOpts, r *request, out any) (uint64, error) {
	var index uint64
	err := c.retry(ctx, o, func(ctx context.Context, server string) error {
		resp, idx, err := c.roundTrip(ctx, server, r)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		index = idx
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &api.Error{Code: api.CodeUnavailable, Retry: true,
				Message: fmt.Sprintf("reading the answer of %s %s%s: %v", r.method, server, r.path, err)}
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return &api.Error{Code: api.CodeUnknown,
				Message: fmt.Sprintf("decoding the answer of %s %s%s: %v", r.method, server, r.path, err)}
		}
		return nil
	})
	return index, err
}

// headerIndex is the Discoverd-Index of a response, 0 when absent.
func headerIndex(h http.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(api.IndexHeader), 10, 64)
	return n
}

// jsonBody encodes v for a request body.
func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &api.Error{Code: api.CodeValidation, Message: fmt.Sprintf("encoding the request body: %v", err)}
	}
	return b, nil
}
