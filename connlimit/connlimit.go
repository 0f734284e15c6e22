package connlimit

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discoverd/discoverd/api"
)

// DefaultMax is the default of --max-conns-per-client. Flynn's router opens
// one stream per routed service, from one address, to one node: 1024 leaves
// a router of several hundred services room for its requests, while one
// address still cannot hold more than a sliver of the node's 20,000 files.
const DefaultMax = 1024

// Config configures a Limiter.
type Config struct {
	// Max is the most connections and streams one client address may hold;
	// 0 or less means no limit.
	Max int
	// IsNode reports whether a request comes from another node of the
	// cluster, whose connections are never counted. Nil means FromNode.
	IsNode func(*http.Request) bool
}

// FromNode reports whether r carries the Discoverd-Forwarded or
// Discoverd-Relayed header that every node sets on the requests it sends
// another node. Over TLS the header alone is not believed: nodes present a
// certificate from the cluster's CA (mutual TLS), and a client without one
// that sets the header to escape the limit is counted like any other.
// Without TLS nothing can tell a node's request from a client's that copies
// the header (the README's "Limits" says so): such a cluster is open to
// anyone who can reach it anyway.
func FromNode(r *http.Request) bool {
	if r.Header.Get(api.ForwardedHeader) == "" && r.Header.Get(api.RelayedHeader) == "" {
		return false
	}
	return r.TLS == nil || len(r.TLS.VerifiedChains) > 0
}

// Limiter counts the slots each client address holds.
type Limiter struct {
	max    int
	isNode func(*http.Request) bool

	mu   sync.Mutex
	held map[netip.Addr]int

	slots   atomic.Int64
	refused atomic.Uint64
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	l := &Limiter{max: cfg.Max, isNode: cfg.IsNode, held: map[netip.Addr]int{}}
	if l.isNode == nil {
		l.isNode = FromNode
	}
	return l
}

// Max is the limit, 0 when there is none.
func (l *Limiter) Max() int {
	if l.max < 0 {
		return 0
	}
	return l.max
}

// Refused is how many requests were answered too_many_connections.
func (l *Limiter) Refused() uint64 { return l.refused.Load() }

// Wire puts l in front of srv, which must then serve the returned listener:
// it wraps srv.Handler and srv.ConnContext. With no limit it changes
// nothing.
func (l *Limiter) Wire(srv *http.Server, ln net.Listener) net.Listener {
	if l.Max() == 0 {
		return ln
	}
	l.WireHandler(srv)
	return l.Listener(ln)
}

// WireHandler puts l in front of srv's handler and ConnContext only, for a
// server whose connections were counted with Conn before it got them: a
// TLS port, where net/http must be handed the *tls.Conn itself to see the
// client's certificate and to speak HTTP/2, so the counting wrapper has to
// sit under the TLS layer rather than over it.
func (l *Limiter) WireHandler(srv *http.Server) {
	if l.Max() == 0 {
		return
	}
	srv.Handler = l.Handler(srv.Handler)
	if prev := srv.ConnContext; prev != nil {
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return l.ConnContext(prev(ctx, c), c)
		}
	} else {
		srv.ConnContext = l.ConnContext
	}
}

// Listener counts the connections ln accepts by their remote address.
func (l *Limiter) Listener(ln net.Listener) net.Listener {
	if l.Max() == 0 {
		return ln
	}
	return &listener{Listener: ln, l: l}
}

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	c, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ln.l.Conn(c), nil
}

// Conn counts c against its remote address, as the connections of
// Listener are. A connection opened past the limit is still taken, so
// that its first request can be told why it is refused.
func (l *Limiter) Conn(c net.Conn) net.Conn {
	if l.Max() == 0 {
		return c
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		// Not an IP connection (a pipe in a test): nothing to count by.
		return c
	}
	lc := &conn{Conn: c, l: l, addr: ap.Addr().Unmap()}
	lc.base = l.acquire(lc.addr)
	return lc
}

// NodeConn gives back the slot of a connection from Conn that turned out
// to be another node's (a Raft connection): node-to-node connections do
// not count.
func (l *Limiter) NodeConn(c net.Conn) {
	if lc, ok := c.(*conn); ok {
		lc.mu.Lock()
		lc.becomeNodeLocked()
		lc.mu.Unlock()
	}
}

// acquire takes one slot of addr if it has one left.
func (l *Limiter) acquire(addr netip.Addr) bool {
	l.mu.Lock()
	n := l.held[addr]
	ok := n < l.max
	if ok {
		l.held[addr] = n + 1
	}
	l.mu.Unlock()
	if ok {
		l.slots.Add(1)
	}
	return ok
}

// release gives back n slots of addr.
func (l *Limiter) release(addr netip.Addr, n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	if left := l.held[addr] - n; left > 0 {
		l.held[addr] = left
	} else {
		delete(l.held, addr)
	}
	l.mu.Unlock()
	l.slots.Add(-int64(n))
}

// conn is an accepted connection and the slots it holds: base while open,
// and one more per request in flight beyond the first.
type conn struct {
	net.Conn
	l    *Limiter
	addr netip.Addr

	mu sync.Mutex
	// base is set while the connection holds its own slot; a connection
	// accepted past the limit has none and is refused until it gets one.
	base bool
	// node is set once the connection carried a node-to-node request: it
	// then holds no slot.
	node   bool
	active int
	// held is how many requests Hold kept counted beyond their handlers
	// whose handlers have not returned yet.
	held   int
	closed bool
}

// enter counts a request in. It reports false when the client address has
// no slot left for it, and whether the connection should then be closed.
func (c *conn) enter() (ok, closeConn bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, true
	}
	if c.node {
		c.active++
		return true, false
	}
	if !c.base {
		// Accepted past the limit: a slot may have freed up since.
		if !c.l.acquire(c.addr) {
			return false, true
		}
		c.base = true
	}
	if c.active >= 1 && !c.l.acquire(c.addr) {
		return false, false
	}
	c.active++
	return true, false
}

// leave counts a request out.
func (c *conn) leave() {
	c.mu.Lock()
	c.active--
	if !c.node && c.active >= 1 {
		c.l.release(c.addr, 1)
	}
	c.mu.Unlock()
}

// enterNode counts in a request from another node: the connection gives
// back every slot it holds and is never counted again.
func (c *conn) enterNode() {
	c.mu.Lock()
	c.becomeNodeLocked()
	c.active++
	c.mu.Unlock()
}

// becomeNodeLocked marks the connection as another node's and gives back
// every slot it holds. c.mu is held.
func (c *conn) becomeNodeLocked() {
	if c.node {
		return
	}
	c.node = true
	n := max(c.active-1, 0)
	if c.base {
		n++
		c.base = false
	}
	c.l.release(c.addr, n)
}

func (c *conn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		if c.base {
			c.base = false
			c.l.release(c.addr, 1)
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// NetConn is the wrapped connection.
func (c *conn) NetConn() net.Conn { return c.Conn }

type connKey struct{}

// ConnContext remembers the counted connection (under any TLS layer) in
// the context of its requests; it is http.Server.ConnContext.
func (l *Limiter) ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if lc, ok := c.(*conn); ok {
			return context.WithValue(ctx, connKey{}, lc)
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = u.NetConn()
	}
}

// Handler counts each request of a counted connection against its client
// address and answers 429 too_many_connections past the limit.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	if l.Max() == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*conn)
		if c == nil {
			next.ServeHTTP(w, r)
			return
		}
		if l.isNode(r) {
			c.enterNode()
		} else if ok, closeConn := c.enter(); !ok {
			l.refuse(w, c.addr, closeConn)
			return
		}
		defer c.handlerDone()
		next.ServeHTTP(w, r)
	})
}

// Hold keeps the slot of r, a request being served, after its handler
// returns: an HTTP/2 event stream handed to its connection (package
// h2server) stays open without its handler. release gives the slot back,
// once the stream has ended; it may be called once. Without a counted
// connection (no limit) both do nothing.
func Hold(r *http.Request) (release func()) {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		return func() {}
	}
	c.mu.Lock()
	c.held++
	c.mu.Unlock()
	var once sync.Once
	return func() { once.Do(c.leave) }
}

// handlerDone counts a request out as its handler returns, unless a
// request of the connection is held (Hold): the count then stays, and
// release takes it out. Which request's handler keeps it does not matter,
// only how many are in, so Hold needs no state of its own per request (and
// a request that is never held allocates nothing for it), and a held
// stream is never counted twice, not even for a moment.
func (c *conn) handlerDone() {
	c.mu.Lock()
	if c.held > 0 {
		c.held--
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.leave()
}

func (l *Limiter) refuse(w http.ResponseWriter, addr netip.Addr, closeConn bool) {
	l.refused.Add(1)
	body, _ := json.Marshal(&api.Error{
		Code: api.CodeTooManyConnections,
		Message: fmt.Sprintf("client address %s holds %d connections and streams, the most this node allows one address (--max-conns-per-client); close some, spread them over HTTP/2 connections of other addresses, or raise the limit",
			addr, l.max),
		Retry: true,
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "1")
	if closeConn {
		// A connection with no slot of its own must not stay open: over
		// HTTP/1.1 this closes it, over HTTP/2 it sends GOAWAY.
		h.Set("Connection", "close")
	}
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write(append(body, '\n'))
}

var (
	descRefused = prometheus.NewDesc("discoverd_http_conns_refused_total",
		"HTTP requests answered 429 too_many_connections because their client address held --max-conns-per-client connections and streams.", nil, nil)
	descSlots = prometheus.NewDesc("discoverd_http_client_conns",
		"HTTP connections and streams held by client addresses, counted against --max-conns-per-client (node-to-node connections excluded).", nil, nil)
	descMax = prometheus.NewDesc("discoverd_http_max_conns_per_client",
		"The --max-conns-per-client limit, 0 when there is none.", nil, nil)
)

// Describe is part of prometheus.Collector.
func (l *Limiter) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRefused
	ch <- descSlots
	ch <- descMax
}

// Collect is part of prometheus.Collector.
func (l *Limiter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(l.refused.Load()))
	ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(l.slots.Load()))
	ch <- prometheus.MustNewConstMetric(descMax, prometheus.GaugeValue, float64(l.Max()))
}
